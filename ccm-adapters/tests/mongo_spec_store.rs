//! The MongoDB spec store against a real MongoDB-wire server (SecantusDB started by
//! `scripts/services.sh`; URI in `CCM_TEST_MONGODB_URI`). Every test uses its own database.
#![cfg(feature = "mongodb")]

mod support;

use ccm_adapters::mongo::{
    MongoOptions, MongoSpecStore, AUDIT_EVENTS, AUDIT_TTL_INDEX, DEFINITIONS, TEMPLATES,
};
use ccm_core::store::spec::{AuditQuery, SpecError, SpecStore};
use ccm_core::testkit::spec as suite;
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::IndexModel;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use support::{check_script, env, repo_root};

fn uri() -> String {
    env("CCM_TEST_MONGODB_URI")
}

fn unique_db(tag: &str) -> String {
    format!("ccm_t_{tag}_{}", uuid::Uuid::new_v4().simple())
}

fn options() -> MongoOptions {
    MongoOptions::default().with_timeouts(Duration::from_secs(5))
}

async fn fresh(tag: &str) -> (MongoSpecStore, String) {
    let db = unique_db(tag);
    let store = MongoSpecStore::connect(&uri(), &db, options())
        .await
        .unwrap_or_else(|e| panic!("connect to {} / {db}: {e}", uri()));
    (store, db)
}

async fn drop_db(store: &MongoSpecStore) {
    store
        .database()
        .drop()
        .await
        .unwrap_or_else(|e| panic!("drop test database: {e}"));
}

async fn indexes(store: &MongoSpecStore, coll: &str) -> Vec<IndexModel> {
    store
        .database()
        .collection::<mongodb::bson::Document>(coll)
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn index_named<'a>(ixs: &'a [IndexModel], name: &str) -> &'a IndexModel {
    ixs.iter()
        .find(|ix| ix.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name))
        .unwrap_or_else(|| panic!("index {name} missing: {ixs:?}"))
}

// ---- the shared behaviour suite ----

#[tokio::test]
async fn mongo_unknown_is_empty() {
    let (s, _) = fresh("unknown").await;
    suite::unknown_is_empty(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_insert_get_and_conflict() {
    let (s, _) = fresh("insert").await;
    suite::insert_get_and_conflict(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_versions_ordered_as_semver() {
    let (s, _) = fresh("semver").await;
    suite::versions_ordered_as_semver(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_registration_rules() {
    let (s, _) = fresh("register").await;
    suite::registration_rules(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_concurrent_writers() {
    let (s, _) = fresh("concurrent").await;
    suite::concurrent_writers(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_template_seeding() {
    let (s, _) = fresh("seed").await;
    suite::template_seeding(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_audit_queries() {
    let (s, _) = fresh("audit").await;
    suite::audit_queries(&s).await;
    drop_db(&s).await;
}

#[tokio::test]
async fn mongo_whole_suite_on_one_database() {
    let (s, _) = fresh("all").await;
    suite::run_all(&s).await;
    drop_db(&s).await;
}

// ---- adapter-specific proofs ----

/// Two independent clients (two connection pools) race to insert the same (name, version),
/// twenty times: each time exactly one wins and the other gets `Conflict`.
#[tokio::test]
async fn mongo_two_clients_racing_on_one_version_one_wins() {
    let (a, db) = fresh("race").await;
    let b = MongoSpecStore::connect(&uri(), &db, options())
        .await
        .unwrap();
    for round in 0..20 {
        let version = format!("1.{round}.0");
        let da = suite::sample_definition("raced", &version, "from-a");
        let db_ = suite::sample_definition("raced", &version, "from-b");
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.insert_definition(&da).await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.insert_definition(&db_).await }
            })
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "round {round}: exactly one wins: {ra:?} / {rb:?}");
        let loser = if ra.is_ok() { &rb } else { &ra };
        assert_eq!(
            loser,
            &Err(SpecError::Conflict {
                name: "raced".into(),
                version: version.clone()
            }),
            "round {round}: the loser gets a Conflict naming name and version"
        );
    }
    assert_eq!(a.list_definition_versions("raced").await.unwrap().len(), 20);
    drop_db(&a).await;
}

fn templates_file() -> PathBuf {
    repo_root().join("config/worker-templates.yaml")
}

/// The real templates file is seeded; an operator edits a template directly in the database;
/// re-seeding (also from a new connection, as after a restart) keeps the edit.
#[tokio::test]
async fn mongo_reseed_keeps_an_operator_edit_made_in_the_database() {
    let templates = ccm_core::template::load_templates_file(&templates_file()).unwrap();
    assert!(templates.len() >= 2, "the config file has templates");
    let (s, db) = fresh("opedit").await;
    let first = s.seed_templates(&templates).await.unwrap();
    assert_eq!(first.created.len(), templates.len());

    let target = templates[0].name.clone();
    let raw = s
        .database()
        .collection::<mongodb::bson::Document>(TEMPLATES);
    let upd = raw
        .update_one(
            doc! { "_id": &target },
            doc! { "$set": { "capacity.cpu_cores": 8_i64, "enabled": false } },
        )
        .await
        .unwrap();
    assert_eq!(upd.modified_count, 1, "operator edit applied");

    let restarted = MongoSpecStore::connect(&uri(), &db, options())
        .await
        .unwrap();
    for store in [&s, &restarted] {
        let again = store.seed_templates(&templates).await.unwrap();
        assert!(
            again.created.is_empty(),
            "re-seed creates nothing: {again:?}"
        );
        assert_eq!(again.kept.len(), templates.len());
        let got = store.get_template(&target).await.unwrap().unwrap();
        assert_eq!(got.capacity.cpu_cores, 8, "operator's cpu edit kept");
        assert!(!got.enabled, "operator's enabled edit kept");
    }
    let others: Vec<_> = restarted.list_templates().await.unwrap();
    assert_eq!(others.len(), templates.len());
    for t in &templates[1..] {
        assert!(
            others.contains(t),
            "untouched template {} reads back as seeded",
            t.name
        );
    }
    drop_db(&s).await;
}

fn field<'a>(doc: &'a Value, name: &str) -> (&'a str, &'a Value) {
    let f = doc
        .get(name)
        .unwrap_or_else(|| panic!("field {name} missing in {doc}"));
    (f["type"].as_str().unwrap(), &f["value"])
}

/// pymongo (not ccm's code) reads what ccm wrote, in the documented schema.
#[tokio::test]
async fn mongo_independent_pymongo_reader_sees_the_documented_schema() {
    let (s, db) = fresh("pymongo").await;
    for v in ["1.9.0", "1.10.0", "1.2.0"] {
        s.insert_definition(&suite::sample_definition("lab-x", v, &format!("h{v}")))
            .await
            .unwrap();
    }
    let mut t = suite::sample_template("tmpl-a", 48);
    t.max_workers_per_region = None;
    s.seed_templates(&[t.clone()]).await.unwrap();
    let e1 = suite::sample_event(
        "ev-1",
        "worker-1",
        "ccm.scaling.up.requested",
        1_500_000_123,
    );
    let e2 = suite::sample_event("ev-2", "worker-1", "ccm.worker.state.changed", 7);
    s.record_audit(&e1).await.unwrap();
    s.record_audit(&e2).await.unwrap();

    let report = check_script("check_mongo.py", &[&uri(), &db]);

    // lablet_definitions
    let defs = report["collections"][DEFINITIONS].as_array().unwrap();
    assert_eq!(defs.len(), 3);
    let d = defs
        .iter()
        .find(|d| d["version"]["value"] == "1.10.0")
        .unwrap();
    assert_eq!(field(d, "_id"), ("string", &Value::from("lab-x@1.10.0")));
    assert_eq!(field(d, "name"), ("string", &Value::from("lab-x")));
    assert_eq!(field(d, "version_key").0, "string");
    assert_eq!(
        field(d, "lab_yaml_hash"),
        ("string", &Value::from("h1.10.0"))
    );
    assert_eq!(field(d, "node_count"), ("long", &Value::from(3)));
    assert_eq!(
        field(d, "max_duration_minutes"),
        ("long", &Value::from(240))
    );
    let (ty, rr) = field(d, "resource_requirements");
    assert_eq!(ty, "object");
    assert_eq!(
        rr,
        &serde_json::json!({"cpu_cores": 4, "memory_gb": 16, "storage_gb": 50})
    );
    assert_eq!(
        field(d, "license_affinity"),
        ("array", &serde_json::json!(["PERSONAL", "ENTERPRISE"]))
    );
    let (ty, ports) = field(d, "port_template");
    assert_eq!(ty, "array");
    assert_eq!(ports[1]["protocol"], "udp");
    let (ty, ami) = field(d, "ami_requirements");
    assert_eq!(ty, "object");
    assert_eq!(ami["cml_version_max"], "2.10");
    assert_eq!(field(d, "created_at").0, "string");
    assert!(field(d, "created_at")
        .1
        .as_str()
        .unwrap()
        .contains(".123456789"));
    assert_eq!(
        report["latest_by_version_key"]["lab-x"], "1.10.0",
        "sorting by version_key in the database gives the semver latest"
    );

    // worker_templates
    let ts = report["collections"][TEMPLATES].as_array().unwrap();
    assert_eq!(ts.len(), 1);
    let td = &ts[0];
    assert_eq!(field(td, "_id"), ("string", &Value::from("tmpl-a")));
    assert_eq!(field(td, "name"), ("string", &Value::from("tmpl-a")));
    assert_eq!(
        field(td, "license_type"),
        ("string", &Value::from("PERSONAL"))
    );
    assert_eq!(field(td, "max_nodes"), ("long", &Value::from(20)));
    assert_eq!(
        field(td, "cost_per_hour_usd"),
        ("double", &Value::from(3.9641))
    );
    assert_eq!(
        field(td, "drain_timeout_hours"),
        ("double", &Value::from(4.5))
    );
    assert_eq!(field(td, "enabled"), ("bool", &Value::from(true)));
    assert_eq!(field(td, "capacity").1["cpu_cores"], 48);
    assert_eq!(
        field(td, "port_range"),
        ("object", &serde_json::json!({"start": 2000, "end": 9999}))
    );
    assert_eq!(field(td, "regions").0, "array");
    assert_eq!(field(td, "tags").1["team"], "labs");
    assert!(
        td.get("max_workers_per_region").is_none(),
        "an unlimited template has no max_workers_per_region field"
    );

    // audit_events
    let evs = report["collections"][AUDIT_EVENTS].as_array().unwrap();
    assert_eq!(evs.len(), 2);
    let ev = evs.iter().find(|e| e["_id"]["value"] == "ev-1").unwrap();
    assert_eq!(field(ev, "subject"), ("string", &Value::from("worker-1")));
    assert_eq!(
        field(ev, "event_type"),
        ("string", &Value::from("ccm.scaling.up.requested"))
    );
    assert_eq!(field(ev, "time").0, "date");
    assert_eq!(
        field(ev, "time").1.as_str().unwrap(),
        "2026-05-04T08:00:01.500000+00:00",
        "time is a BSON date (millisecond precision)"
    );
    assert_eq!(
        field(ev, "time_ns"),
        ("long", &Value::from(e1.time.timestamp_nanos_opt().unwrap()))
    );
    assert_eq!(field(ev, "actor").0, "string");
    assert_eq!(field(ev, "reason").0, "string");
    assert_eq!(field(ev, "data"), ("object", &e1.data));
    assert_eq!(
        report["audit_by_subject"]["worker-1"],
        serde_json::json!(["ev-2", "ev-1"]),
        "time_ns orders events in the database"
    );

    // indexes
    let ix = |coll: &str, name: &str| -> Value {
        report["indexes"][coll]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("index {name} on {coll} missing: {report}"))
    };
    let u = ix(DEFINITIONS, "name_version_unique");
    assert_eq!(u["unique"], true);
    assert_eq!(u["key"], serde_json::json!({"name": 1, "version": 1}));
    assert_eq!(ix(TEMPLATES, "template_name_unique")["unique"], true);
    assert_eq!(
        ix(AUDIT_EVENTS, AUDIT_TTL_INDEX)["expireAfterSeconds"],
        180 * 86_400,
        "default retention is 180 days"
    );
    assert_eq!(
        ix(AUDIT_EVENTS, "audit_subject_time")["key"],
        serde_json::json!({"subject": 1, "time_ns": 1, "_id": 1})
    );
    drop_db(&s).await;
}

/// Retention: validated to 90–365 days; connecting with a new retention updates the TTL index.
#[tokio::test]
async fn mongo_audit_retention_is_validated_and_applied_to_the_ttl_index() {
    for bad in [0, 30, 89, 366, 1000] {
        let err = MongoOptions::default()
            .with_audit_retention_days(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{bad} days")) && err.contains("90–365"),
            "error names the value and the range: {err}"
        );
        let opts = MongoOptions {
            audit_retention_days: bad,
            ..options()
        };
        let err = MongoSpecStore::connect(&uri(), &unique_db("badret"), opts)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("{bad} days")), "{err}");
    }

    let (s, db) = fresh("ttl").await;
    assert!(s.ttl_index_active(), "SecantusDB accepts the TTL index");
    let ixs = indexes(&s, AUDIT_EVENTS).await;
    let ttl = index_named(&ixs, AUDIT_TTL_INDEX);
    assert_eq!(ttl.keys, doc! { "time": 1 });
    assert_eq!(
        ttl.options.as_ref().unwrap().expire_after,
        Some(Duration::from_secs(180 * 86_400))
    );

    for days in [90, 365] {
        let opts = options().with_audit_retention_days(days).unwrap();
        let again = MongoSpecStore::connect(&uri(), &db, opts).await.unwrap();
        assert!(again.ttl_index_active());
        let ixs = indexes(&again, AUDIT_EVENTS).await;
        assert_eq!(
            index_named(&ixs, AUDIT_TTL_INDEX)
                .options
                .as_ref()
                .unwrap()
                .expire_after,
            Some(Duration::from_secs(u64::from(days) * 86_400)),
            "TTL index follows the configured retention of {days} days"
        );
        let ttl_count = ixs
            .iter()
            .filter(|ix| ix.keys == doc! { "time": 1 })
            .count();
        assert_eq!(ttl_count, 1, "one TTL index, updated in place");
    }
    drop_db(&s).await;
}

/// Connecting again creates no duplicate indexes and fails on nothing.
#[tokio::test]
async fn mongo_indexes_are_created_idempotently() {
    let (s, db) = fresh("idem").await;
    let before: Vec<Vec<IndexModel>> =
        futures::future::join_all([DEFINITIONS, TEMPLATES, AUDIT_EVENTS].map(|c| indexes(&s, c)))
            .await;
    for _ in 0..2 {
        MongoSpecStore::connect(&uri(), &db, options())
            .await
            .unwrap();
    }
    let after: Vec<Vec<IndexModel>> =
        futures::future::join_all([DEFINITIONS, TEMPLATES, AUDIT_EVENTS].map(|c| indexes(&s, c)))
            .await;
    assert_eq!(
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        after.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(
        after[0].len(),
        4,
        "_id + 3 definition indexes: {:?}",
        after[0]
    );
    assert_eq!(
        after[2].len(),
        5,
        "_id + 3 query indexes + TTL: {:?}",
        after[2]
    );
    drop_db(&s).await;
}

/// The purge fallback deletes exactly the events older than the retention.
#[tokio::test]
async fn mongo_purge_expired_audit_deletes_only_expired_events() {
    let (s, _) = fresh("purge").await;
    let now = chrono::Utc::now();
    let mut old = suite::sample_event("old", "w", "t", 0);
    old.time = now - chrono::Duration::days(181);
    let mut recent = suite::sample_event("recent", "w", "t", 0);
    recent.time = now - chrono::Duration::days(179);
    s.record_audit(&old).await.unwrap();
    s.record_audit(&recent).await.unwrap();
    assert_eq!(s.purge_expired_audit(now).await.unwrap(), 1);
    let left = s.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(left, vec![recent]);
    drop_db(&s).await;
}

const SECRET: &str = "Sup3rS3cretPw";

/// An unreachable server: `Unavailable`, naming the host, never the password.
#[tokio::test]
async fn mongo_unreachable_server_names_the_host_not_the_password() {
    let uri = format!("mongodb://ccm:{SECRET}@127.0.0.1:1/?directConnection=true");
    let err = MongoSpecStore::connect(
        &uri,
        "ccm_unreachable",
        MongoOptions::default().with_timeouts(Duration::from_millis(800)),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SpecError::Unavailable(_)), "{err:?}");
    assert!(msg.contains("127.0.0.1:1"), "names the host: {msg}");
    assert!(msg.contains("cannot reach"), "says what failed: {msg}");
    assert!(!msg.contains(SECRET), "never shows the password: {msg}");
    assert!(!format!("{err:?}").contains(SECRET), "not in Debug either");
}

/// Failed authentication against the real server: `Unavailable`, naming host and user, never
/// the password (as written or percent-decoded).
#[tokio::test]
async fn mongo_failed_auth_names_the_host_not_the_password() {
    let base = uri();
    let rest = base
        .strip_prefix("mongodb://")
        .unwrap_or_else(|| panic!("CCM_TEST_MONGODB_URI must start with mongodb://: {base}"));
    let host = rest.split(['/', '?']).next().unwrap().to_string();
    let encoded = format!("{SECRET}%21x");
    let decoded = format!("{SECRET}!x");
    let bad = format!("mongodb://ccm_nobody:{encoded}@{rest}");
    let err = MongoSpecStore::connect(&bad, &unique_db("auth"), options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SpecError::Unavailable(_)), "{err:?}");
    assert!(msg.contains(&host), "names the host {host}: {msg}");
    assert!(msg.contains("authentication"), "says auth failed: {msg}");
    assert!(msg.contains("ccm_nobody"), "names the user: {msg}");
    assert!(
        !msg.contains(&encoded) && !msg.contains(&decoded) && !msg.contains(SECRET),
        "{msg}"
    );
}

/// A malformed connection string or database name is a clear `Backend` error.
#[tokio::test]
async fn mongo_bad_connection_string_or_database_is_named() {
    let err = MongoSpecStore::connect("postgres://u:pw123456@h:1", "x", options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("invalid MongoDB connection string"), "{msg}");
    assert!(!msg.contains("pw123456"), "{msg}");
    let err = MongoSpecStore::connect(&uri(), "bad.name", options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"bad.name\""), "{err}");
}
