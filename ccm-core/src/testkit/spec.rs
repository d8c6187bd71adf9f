//! Behaviour suite for the spec store trait ([`SpecStore`]).
//!
//! Every backend (the in-memory one and the MongoDB adapter) runs the same functions. Each
//! function uses its own definition/template/subject names, so all of them may run against one
//! store; [`run_all`] runs them in sequence. They panic with a message naming what differed.
//!
//! Covered: unique (name, version) with a `Conflict` naming both; semver ordering of versions
//! (`1.9.0` < `1.10.0`, pre-release precedence); registration (first → created, same hash → no-op,
//! changed artifact → next patch of the *semver* latest, a higher draft version → as given);
//! concurrent inserts of one (name, version) (exactly one wins) and concurrent registrations
//! (both land, on distinct versions); template seeding create-if-absent, twice idempotent, never
//! overwriting an operator's edit; audit recording (idempotent per id) and queries by subject,
//! type, `[from, to)` and limit in (time, id) order with exact (nanosecond) timestamps.

use crate::definition::{AmiRequirements, LabletDefinition, PortTemplate, Protocol};
use crate::license::LicenseType;
use crate::resources::Resources;
use crate::store::spec::{AuditEvent, AuditQuery, RegisterOutcome, SpecError, SpecStore};
use crate::template::{PortRange, WorkerTemplate};
use crate::timeslot::Timestamp;
use crate::version::CmlVersion;
use chrono::{Duration, TimeZone, Utc};
use std::collections::BTreeMap;

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap_or_else(|e| panic!("test version {s:?}: {e}"))
}

fn base_time() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0)
        .single()
        .unwrap_or_else(|| panic!("2026-05-04T08:00:00Z is a valid instant"))
}

/// A complete definition (every field set, so a lossy backend shows up) of `name`/`version`
/// whose artifact hash is `hash`.
pub fn sample_definition(name: &str, version: &str, hash: &str) -> LabletDefinition {
    LabletDefinition {
        id: format!("def-{name}-{version}-{hash}"),
        name: name.to_string(),
        version: v(version),
        lab_artifact_uri: format!("s3://lablet-artifacts/definitions/{name}/{version}/cml.yaml"),
        lab_yaml_hash: hash.to_string(),
        resource_requirements: Resources {
            cpu_cores: 4,
            memory_gb: 16,
            storage_gb: 50,
        },
        node_count: 3,
        license_affinity: vec![LicenseType::Personal, LicenseType::Enterprise],
        ami_requirements: AmiRequirements {
            name_pattern: Some("CML-2.9.*".into()),
            cml_version_min: Some(
                "2.8"
                    .parse::<CmlVersion>()
                    .unwrap_or_else(|e| panic!("test CML version 2.8: {e}")),
            ),
            cml_version_max: Some(
                "2.10"
                    .parse::<CmlVersion>()
                    .unwrap_or_else(|e| panic!("test CML version 2.10: {e}")),
            ),
            node_definitions_required: vec!["iosv".into(), "csr1000v".into()],
        },
        port_template: vec![
            PortTemplate {
                name: "router1_ssh".into(),
                protocol: Protocol::Tcp,
                description: "SSH to router 1".into(),
            },
            PortTemplate {
                name: "syslog".into(),
                protocol: Protocol::Udp,
                description: String::new(),
            },
        ],
        max_duration_minutes: 240,
        created_at: Some(base_time() + Duration::nanoseconds(123_456_789)),
        created_by: Some("alice".into()),
    }
}

/// A complete worker template named `name` with `cpu` cores.
pub fn sample_template(name: &str, cpu: u32) -> WorkerTemplate {
    let mut tags = BTreeMap::new();
    tags.insert("team".to_string(), "labs".to_string());
    tags.insert("cost-center".to_string(), "42".to_string());
    WorkerTemplate {
        name: name.to_string(),
        description: format!("template {name}"),
        instance_type: "m5zn.metal".into(),
        capacity: Resources {
            cpu_cores: cpu,
            memory_gb: 192,
            storage_gb: 500,
        },
        license_type: LicenseType::Personal,
        max_nodes: 20,
        ami_pattern: "CML-2.9.*".into(),
        regions: vec!["us-east-1".into(), "eu-west-1".into()],
        port_range: PortRange {
            start: 2000,
            end: 9999,
        },
        drain_timeout_hours: 4.5,
        tags,
        cost_per_hour_usd: 3.9641,
        startup_minutes: 20,
        enabled: true,
        max_workers_per_region: Some(7),
    }
}

/// An audit event `offset_ns` nanoseconds after a fixed base time.
pub fn sample_event(id: &str, subject: &str, event_type: &str, offset_ns: i64) -> AuditEvent {
    AuditEvent {
        id: id.to_string(),
        subject: subject.to_string(),
        event_type: event_type.to_string(),
        time: base_time() + Duration::nanoseconds(offset_ns),
        actor: "planner/candidate-1".into(),
        reason: format!("{event_type} for {subject}"),
        data: serde_json::json!({
            "workers": 2,
            "ratio": 0.5,
            "negative": -3,
            "region": "us-east-1",
            "nested": {"ok": true, "list": [1, "two", null]},
        }),
    }
}

/// Insert, get (by name+version and by id) and `Conflict` on a duplicate (name, version).
pub async fn insert_get_and_conflict(store: &dyn SpecStore) {
    let name = "suite-insert";
    let def = sample_definition(name, "1.0.0", "hash-a");
    store
        .insert_definition(&def)
        .await
        .unwrap_or_else(|e| panic!("first insert of {name} 1.0.0 failed: {e}"));
    let got = store
        .get_definition(name, &v("1.0.0"))
        .await
        .unwrap_or_else(|e| panic!("get failed: {e}"));
    assert_eq!(got.as_ref(), Some(&def), "get returns what was stored");
    let by_id = store
        .get_definition_by_id(&def.id)
        .await
        .unwrap_or_else(|e| panic!("get by id failed: {e}"));
    assert_eq!(
        by_id.as_ref(),
        Some(&def),
        "get by id returns what was stored"
    );

    let dup = sample_definition(name, "1.0.0", "hash-b");
    match store.insert_definition(&dup).await {
        Err(SpecError::Conflict { name: n, version }) => {
            assert_eq!(n, name, "conflict names the definition");
            assert_eq!(version, "1.0.0", "conflict names the version");
        }
        other => panic!("duplicate (name, version) must be a Conflict, got {other:?}"),
    }
    let still = store
        .get_definition(name, &v("1.0.0"))
        .await
        .unwrap_or_else(|e| panic!("get failed: {e}"));
    assert_eq!(
        still.map(|d| d.lab_yaml_hash),
        Some("hash-a".to_string()),
        "a conflicting insert leaves the stored version as it was"
    );

    // Same version under another name is no conflict.
    store
        .insert_definition(&sample_definition("suite-insert-other", "1.0.0", "hash-b"))
        .await
        .unwrap_or_else(|e| panic!("same version under another name must be accepted: {e}"));
}

/// Unknown names and ids give empty answers, not errors.
pub async fn unknown_is_empty(store: &dyn SpecStore) {
    let name = "suite-never-stored";
    assert_eq!(
        store.latest_definition(name).await.ok(),
        Some(None),
        "latest of an unknown name"
    );
    assert_eq!(
        store.list_definition_versions(name).await.ok(),
        Some(vec![]),
        "versions of an unknown name"
    );
    assert_eq!(
        store.get_definition(name, &v("1.0.0")).await.ok(),
        Some(None),
        "get of an unknown name"
    );
    assert_eq!(
        store.get_definition_by_id("no-such-id").await.ok(),
        Some(None),
        "get of an unknown id"
    );
    assert_eq!(
        store.get_template("suite-no-such-template").await.ok(),
        Some(None),
        "get of an unknown template"
    );
}

/// Versions are listed and "latest" is chosen in semver order, not string order.
pub async fn versions_ordered_as_semver(store: &dyn SpecStore) {
    let name = "suite-semver";
    // Semver 2.0.0 §11's precedence example plus multi-digit components.
    let sorted = [
        "0.9.12",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.9.0",
        "1.10.0-alpha",
        "1.10.0",
        "1.10.2",
        "2.0.0",
        "10.0.0",
    ];
    let scrambled = [
        "1.10.0",
        "2.0.0",
        "1.0.0-beta.11",
        "1.9.0",
        "0.9.12",
        "1.0.0-alpha.beta",
        "10.0.0",
        "1.0.0",
        "1.0.0-alpha",
        "1.10.2",
        "1.0.0-rc.1",
        "1.2.0",
        "1.0.0-beta.2",
        "1.10.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
    ];
    for s in scrambled {
        store
            .insert_definition(&sample_definition(name, s, &format!("h-{s}")))
            .await
            .unwrap_or_else(|e| panic!("insert {name} {s}: {e}"));
    }
    let listed: Vec<String> = store
        .list_definition_versions(name)
        .await
        .unwrap_or_else(|e| panic!("list versions: {e}"))
        .into_iter()
        .map(|d| d.version.to_string())
        .collect();
    assert_eq!(listed, sorted, "versions oldest first in semver order");
    let latest = store
        .latest_definition(name)
        .await
        .unwrap_or_else(|e| panic!("latest: {e}"));
    assert_eq!(
        latest.map(|d| d.version.to_string()),
        Some("10.0.0".to_string()),
        "latest is the semver maximum (10.0.0 > 2.0.0 > 1.10.0 > 1.9.0)"
    );
}

/// Registration: created, same hash no-op, changed artifact → next patch of the semver latest,
/// a higher draft version → as given.
pub async fn registration_rules(store: &dyn SpecStore) {
    let name = "suite-register";
    let first = store
        .register_definition(&sample_definition(name, "1.0.0", "h1"))
        .await
        .unwrap_or_else(|e| panic!("first registration: {e}"));
    assert!(
        matches!(&first, RegisterOutcome::Created(d) if d.version == v("1.0.0")),
        "first registration creates the version given, got {first:?}"
    );

    let same = store
        .register_definition(&sample_definition(name, "1.0.0", "h1"))
        .await
        .unwrap_or_else(|e| panic!("same-hash registration: {e}"));
    assert!(
        matches!(&same, RegisterOutcome::Unchanged(d) if d.version == v("1.0.0")),
        "same hash is a no-op, got {same:?}"
    );
    assert_eq!(
        store
            .list_definition_versions(name)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
            .len(),
        1,
        "a same-hash registration stores nothing"
    );

    let changed = store
        .register_definition(&sample_definition(name, "1.0.0", "h2"))
        .await
        .unwrap_or_else(|e| panic!("changed registration: {e}"));
    assert!(
        matches!(&changed, RegisterOutcome::NewVersion(d) if d.version == v("1.0.1") && d.lab_yaml_hash == "h2"),
        "a changed artifact becomes the next patch version, got {changed:?}"
    );
    let stored = store
        .get_definition(name, &v("1.0.1"))
        .await
        .unwrap_or_else(|e| panic!("get 1.0.1: {e}"));
    assert_eq!(
        stored.map(|d| d.lab_yaml_hash),
        Some("h2".to_string()),
        "the next patch version is stored"
    );

    // Semver latest, not string latest: with 1.9.0 and 1.10.0 stored the next patch is 1.10.1.
    store
        .insert_definition(&sample_definition(name, "1.9.0", "h9"))
        .await
        .unwrap_or_else(|e| panic!("insert 1.9.0: {e}"));
    store
        .insert_definition(&sample_definition(name, "1.10.0", "h10"))
        .await
        .unwrap_or_else(|e| panic!("insert 1.10.0: {e}"));
    let next = store
        .register_definition(&sample_definition(name, "1.0.0", "h11"))
        .await
        .unwrap_or_else(|e| panic!("registration after 1.10.0: {e}"));
    assert_eq!(
        next.definition().version,
        v("1.10.1"),
        "next patch follows the semver latest (1.10.0), got {next:?}"
    );

    // Same hash as the latest is a no-op even when the draft names another version.
    let noop = store
        .register_definition(&sample_definition(name, "7.0.0", "h11"))
        .await
        .unwrap_or_else(|e| panic!("same-hash registration: {e}"));
    assert!(
        matches!(&noop, RegisterOutcome::Unchanged(d) if d.version == v("1.10.1")),
        "same hash as the latest is unchanged, got {noop:?}"
    );

    // A draft above the latest is stored as given.
    let major = store
        .register_definition(&sample_definition(name, "2.0.0", "h20"))
        .await
        .unwrap_or_else(|e| panic!("major registration: {e}"));
    assert!(
        matches!(&major, RegisterOutcome::Created(d) if d.version == v("2.0.0")),
        "a draft version above the latest is created as given, got {major:?}"
    );
    let versions: Vec<String> = store
        .list_definition_versions(name)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .map(|d| d.version.to_string())
        .collect();
    assert_eq!(
        versions,
        ["1.0.0", "1.0.1", "1.9.0", "1.10.0", "1.10.1", "2.0.0"],
        "every registration that changed something is listed in semver order"
    );
}

/// Two concurrent inserts of one (name, version): exactly one wins, the other is a `Conflict`;
/// two concurrent registrations of changed artifacts both land, on distinct versions.
pub async fn concurrent_writers(store: &dyn SpecStore) {
    let name = "suite-concurrent";
    let a = sample_definition(name, "3.0.0", "writer-a");
    let b = sample_definition(name, "3.0.0", "writer-b");
    let (ra, rb) = futures::join!(store.insert_definition(&a), store.insert_definition(&b));
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "exactly one concurrent insert wins: {ra:?} / {rb:?}"
    );
    let loser = if ra.is_ok() { &rb } else { &ra };
    assert!(
        matches!(loser, Err(SpecError::Conflict { name: n, version }) if n == name && version == "3.0.0"),
        "the other concurrent insert is a Conflict, got {loser:?}"
    );
    let winner_hash = if ra.is_ok() { "writer-a" } else { "writer-b" };
    let stored = store
        .get_definition(name, &v("3.0.0"))
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(
        stored.map(|d| d.lab_yaml_hash),
        Some(winner_hash.to_string()),
        "the stored version is the winner's"
    );

    let reg = "suite-concurrent-register";
    let da = sample_definition(reg, "1.0.0", "reg-a");
    let db = sample_definition(reg, "1.0.0", "reg-b");
    let (oa, ob) = futures::join!(
        store.register_definition(&da),
        store.register_definition(&db)
    );
    let oa = oa.unwrap_or_else(|e| panic!("concurrent registration a: {e}"));
    let ob = ob.unwrap_or_else(|e| panic!("concurrent registration b: {e}"));
    let mut versions = vec![
        oa.definition().version.to_string(),
        ob.definition().version.to_string(),
    ];
    versions.sort();
    assert_eq!(
        versions,
        ["1.0.0", "1.0.1"],
        "concurrent registrations of changed artifacts land on distinct versions"
    );
    let listed = store
        .list_definition_versions(reg)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(listed.len(), 2, "both registrations are stored: {listed:?}");
}

/// Seeding creates absent templates only; seeding twice is idempotent and never overwrites an
/// operator's edit; `put_template` replaces; listing is by name.
pub async fn template_seeding(store: &dyn SpecStore) {
    let a = sample_template("suite-seed-a", 48);
    let mut b = sample_template("suite-seed-b", 96);
    b.max_workers_per_region = None;
    b.license_type = LicenseType::Enterprise;
    b.max_nodes = 500;
    let first = store
        .seed_templates(&[a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("first seed: {e}"));
    assert_eq!(
        first.created,
        ["suite-seed-a", "suite-seed-b"],
        "first seed creates"
    );
    assert!(first.kept.is_empty(), "first seed keeps nothing: {first:?}");
    assert_eq!(
        store.get_template("suite-seed-b").await.ok(),
        Some(Some(b.clone())),
        "seeded template reads back unchanged (incl. absent max_workers_per_region)"
    );

    let second = store
        .seed_templates(&[a.clone(), b.clone()])
        .await
        .unwrap_or_else(|e| panic!("second seed: {e}"));
    assert!(
        second.created.is_empty(),
        "seeding twice creates nothing: {second:?}"
    );
    assert_eq!(
        second.kept,
        ["suite-seed-a", "suite-seed-b"],
        "seeding twice keeps both"
    );

    // An operator edits `a` in the store.
    let mut edited = a.clone();
    edited.capacity.cpu_cores = 12;
    edited.enabled = false;
    edited.description = "edited by operator".into();
    edited.tags.insert("edited".into(), "yes".into());
    store
        .put_template(&edited)
        .await
        .unwrap_or_else(|e| panic!("put_template: {e}"));

    let c = sample_template("suite-seed-c", 24);
    let third = store
        .seed_templates(&[a.clone(), c.clone()])
        .await
        .unwrap_or_else(|e| panic!("third seed: {e}"));
    assert_eq!(
        third.created,
        ["suite-seed-c"],
        "only the absent template is created"
    );
    assert_eq!(third.kept, ["suite-seed-a"], "the edited template is kept");
    assert_eq!(
        store.get_template("suite-seed-a").await.ok(),
        Some(Some(edited.clone())),
        "re-seeding never overwrites an operator's edit"
    );

    let names: Vec<String> = store
        .list_templates()
        .await
        .unwrap_or_else(|e| panic!("list templates: {e}"))
        .into_iter()
        .map(|t| t.name)
        .filter(|n| n.starts_with("suite-seed-"))
        .collect();
    assert_eq!(
        names,
        ["suite-seed-a", "suite-seed-b", "suite-seed-c"],
        "templates listed by name"
    );
}

/// Audit events: idempotent per id, queried by subject, type, `[from, to)` and limit, in
/// (time, id) order, with exact timestamps and data.
pub async fn audit_queries(store: &dyn SpecStore) {
    let s1 = "suite-audit-worker-1";
    let s2 = "suite-audit-session-9";
    let up = "ccm.scaling.up.requested";
    let st = "ccm.session.state.changed";
    // (id, subject, type, ns offset): recorded out of order; "e-b"/"e-a" share a time.
    let events = [
        sample_event("e-c", s1, up, 3_000_000_001),
        sample_event("e-b", s2, st, 2_000_000_000),
        sample_event("e-a", s1, st, 2_000_000_000),
        sample_event("e-d", s2, up, 1),
        sample_event("e-e", s1, up, 5_000_000_007),
    ];
    for e in &events {
        store
            .record_audit(e)
            .await
            .unwrap_or_else(|err| panic!("record {}: {err}", e.id));
    }
    // Recording the same id again is a no-op.
    store
        .record_audit(&events[0])
        .await
        .unwrap_or_else(|err| panic!("re-record: {err}"));

    let ids = |evs: Vec<AuditEvent>| evs.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let q = |subject: Option<&str>, event_type: Option<&str>| AuditQuery {
        subject: subject.map(String::from),
        event_type: event_type.map(String::from),
        ..AuditQuery::default()
    };

    let all_s1 = store
        .query_audit(&q(Some(s1), None))
        .await
        .unwrap_or_else(|e| panic!("query by subject: {e}"));
    assert_eq!(
        all_s1.first(),
        Some(&events[2]),
        "events read back exactly (time to the nanosecond, data)"
    );
    assert_eq!(
        ids(all_s1),
        ["e-a", "e-c", "e-e"],
        "by subject, in time order"
    );

    let ups = store
        .query_audit(&q(None, Some(up)))
        .await
        .unwrap_or_else(|e| panic!("query by type: {e}"));
    let ups: Vec<String> = ids(ups)
        .into_iter()
        .filter(|i| i.starts_with("e-"))
        .collect();
    assert_eq!(ups, ["e-d", "e-c", "e-e"], "by type, in time order");

    let both = store
        .query_audit(&q(Some(s1), Some(up)))
        .await
        .unwrap_or_else(|e| panic!("query by subject and type: {e}"));
    assert_eq!(ids(both), ["e-c", "e-e"], "subject and type together");

    let t0 = base_time();
    let range = AuditQuery {
        from: Some(t0 + Duration::nanoseconds(2_000_000_000)),
        to: Some(t0 + Duration::nanoseconds(5_000_000_007)),
        ..AuditQuery::default()
    };
    let in_range: Vec<String> = ids(store
        .query_audit(&range)
        .await
        .unwrap_or_else(|e| panic!("query by range: {e}")))
    .into_iter()
    .filter(|i| i.starts_with("e-"))
    .collect();
    assert_eq!(
        in_range,
        ["e-a", "e-b", "e-c"],
        "[from, to): from inclusive, to exclusive (to the nanosecond), ties by id"
    );

    let narrow = AuditQuery {
        from: Some(t0 + Duration::nanoseconds(3_000_000_001)),
        to: Some(t0 + Duration::nanoseconds(3_000_000_002)),
        subject: Some(s1.into()),
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store
            .query_audit(&narrow)
            .await
            .unwrap_or_else(|e| panic!("narrow range: {e}"))),
        ["e-c"],
        "a one-nanosecond window finds the event inside it"
    );

    let limited = AuditQuery {
        subject: Some(s1.into()),
        limit: Some(2),
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store
            .query_audit(&limited)
            .await
            .unwrap_or_else(|e| panic!("limited: {e}"))),
        ["e-a", "e-c"],
        "limit keeps the earliest"
    );

    let dup_count = store
        .query_audit(&q(Some(s1), Some(up)))
        .await
        .unwrap_or_else(|e| panic!("query: {e}"))
        .len();
    assert_eq!(dup_count, 2, "recording an id twice stores it once");

    assert_eq!(
        store
            .query_audit(&q(Some("suite-audit-nobody"), None))
            .await
            .ok(),
        Some(vec![]),
        "unknown subject gives no events"
    );
}

/// Runs every function of the suite against one store.
pub async fn run_all(store: &dyn SpecStore) {
    unknown_is_empty(store).await;
    insert_get_and_conflict(store).await;
    versions_ordered_as_semver(store).await;
    registration_rules(store).await;
    concurrent_writers(store).await;
    template_seeding(store).await;
    audit_queries(store).await;
}
