//! The EC2 adapter against moto_server (the EC2 one of `scripts/services.sh`: AMI and
//! instance-type validation on, CML AMIs seeded from `scripts/moto-amis.json`): the shared
//! provider behaviour suite, an independent boto3 client checking what ccm launched, paging,
//! idempotent launch, AMI lookup and two regions. Needs CCM_TEST_EC2_ENDPOINT and
//! CCM_TEST_PYTHON (the test venv's python with boto3).
#![cfg(feature = "ec2")]

mod support;

use async_trait::async_trait;
use ccm_adapters::ec2::{
    Ec2Config, Ec2Provider, Secret, StaticCredentials, TAG_MANAGED_BY, TAG_TEMPLATE, TAG_WORKER_ID,
};
use ccm_core::store::{LaunchRequest, ProviderError, WorkerProvider};
use ccm_core::template::WorkerTemplate;
use ccm_core::testkit::provider::{self as suite, Driver};
use std::time::Duration;
use support::{check_script, env};

const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
/// The newest `CML-2.9.*` image of scripts/moto-amis.json (a `CML-2.8.1` image is newer still
/// but does not match the pattern).
const CML_291: &str = "ami-0c0a1e0000000291a";
const CML_281: &str = "ami-0c0a1e0000000288a";

fn endpoint() -> String {
    env("CCM_TEST_EC2_ENDPOINT")
}

fn template() -> WorkerTemplate {
    ccm_core::template::seed_templates().unwrap().remove(0)
}

fn config(page_size: i32) -> Ec2Config {
    let mut cfg = Ec2Config::new(REGIONS);
    cfg.endpoint = Some(endpoint());
    cfg.credentials = Some(StaticCredentials {
        access_key_id: "test".into(),
        secret_access_key: Secret::new("test"),
        session_token: None,
    });
    cfg.page_size = page_size;
    cfg.retry_base = Duration::from_millis(20);
    cfg
}

async fn provider(page_size: i32) -> Ec2Provider {
    Ec2Provider::connect(config(page_size)).await
}

fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// moto changes states at once; nothing to wait for.
struct Moto;

#[async_trait]
impl Driver for Moto {
    async fn settle(&self) {}
}

/// What boto3 sees of a worker's instances in a region.
fn boto3_instances(region: &str, worker_id: &str) -> serde_json::Value {
    check_script(
        "check_ec2.py",
        &["instances", &endpoint(), region, worker_id],
    )
}

fn req(worker_id: &str, t: &WorkerTemplate, region: &str) -> LaunchRequest {
    LaunchRequest {
        worker_id: worker_id.to_string(),
        template: t.clone(),
        region: region.to_string(),
    }
}

#[tokio::test]
async fn ec2_lifecycle() {
    let p = provider(100).await;
    suite::check_lifecycle(&p, &Moto, &template(), "us-east-1", &uid("life")).await;
}

#[tokio::test]
async fn ec2_two_regions() {
    let p = provider(100).await;
    let prefix = uid("two");
    suite::check_two_regions(&p, &Moto, &template(), REGIONS, &prefix).await;
    let a = boto3_instances("us-east-1", &format!("{prefix}-a"));
    let b_east = boto3_instances("us-east-1", &format!("{prefix}-b"));
    let b_west = boto3_instances("us-west-2", &format!("{prefix}-b"));
    assert_eq!(a["instances"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(b_east["instances"].as_array().unwrap().len(), 0, "{b_east}");
    assert_eq!(b_west["instances"].as_array().unwrap().len(), 1, "{b_west}");
}

#[tokio::test]
async fn ec2_paging_over_many_instances() {
    let p = provider(5).await;
    suite::check_many(&p, &Moto, &template(), "us-west-2", &uid("many"), 30).await;
    // 30 instances in pages of 5: every full listing took at least 6 pages.
    assert!(
        p.pages_fetched() >= 12,
        "listing 30 instances in pages of 5 fetched only {} pages",
        p.pages_fetched()
    );
}

#[tokio::test]
async fn ec2_launch_tags_seen_by_boto3() {
    let p = provider(100).await;
    let t = template();
    let w = uid("tags");
    let pid = p.launch(req(&w, &t, "us-east-1")).await.unwrap();
    let seen = boto3_instances("us-east-1", &w);
    assert_eq!(seen["live"], 1, "{seen}");
    let i = &seen["instances"][0];
    assert_eq!(i["id"], pid.as_str());
    assert_eq!(i["type"], "m5zn.metal", "the template's instance type");
    assert_eq!(
        i["image"], CML_291,
        "the newest image matching CML-2.9.*, not the newer CML-2.8.1"
    );
    let tags = &i["tags"];
    assert_eq!(tags[TAG_MANAGED_BY], "ccm");
    assert_eq!(tags[TAG_WORKER_ID], w.as_str());
    assert_eq!(tags[TAG_TEMPLATE], "personal-standard");
    assert_eq!(tags["Environment"], "production", "the template's own tags");
    assert_eq!(tags["Name"], format!("ccm-{w}").as_str());
    p.terminate(&w).await.unwrap();
    assert_eq!(boto3_instances("us-east-1", &w)["live"], 0);
}

#[tokio::test]
async fn ec2_launch_is_idempotent_under_retry_and_failover() {
    let p = provider(100).await;
    let t = template();
    let w = uid("again");
    let pid = suite::check_idempotent_launch(&p, &Moto, &t, "us-east-1", &w).await;
    assert_eq!(
        p.run_instances_calls(),
        1,
        "one RunInstances for three launches"
    );
    // A new leader knows nothing of the old one's memory: the tag still finds the instance.
    let standby = provider(100).await;
    assert_eq!(standby.launch(req(&w, &t, "us-east-1")).await.unwrap(), pid);
    assert_eq!(standby.run_instances_calls(), 0);
    let seen = boto3_instances("us-east-1", &w);
    assert_eq!(
        seen["live"], 1,
        "boto3 counts one instance for the worker: {seen}"
    );
    p.terminate(&w).await.unwrap();
}

#[tokio::test]
async fn ec2_no_matching_ami_is_a_clear_error() {
    let p = provider(100).await;
    let mut t = template();
    t.ami_pattern = "CML-9.9.*".into();
    let w = uid("noami");
    let e = p.launch(req(&w, &t, "us-west-2")).await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::NoImage {
            region: "us-west-2".into(),
            pattern: "CML-9.9.*".into()
        }
    );
    assert!(e.to_string().contains("CML-9.9.*"), "{e}");
    assert_eq!(
        boto3_instances("us-west-2", &w)["live"],
        0,
        "nothing launched"
    );
}

#[tokio::test]
async fn ec2_ami_lookup_per_region_with_version() {
    let p = provider(100).await;
    for region in REGIONS {
        let ami = p.resolve_ami(region, "CML-2.9.*").await.unwrap();
        assert_eq!(ami.image_id, CML_291, "{region}");
        assert_eq!(ami.cml_version, Some(semver::Version::new(2, 9, 1)));
        let old = p.resolve_ami(region, "CML-2.8.*").await.unwrap();
        assert_eq!(old.image_id, CML_281);
        assert_eq!(old.cml_version, Some(semver::Version::new(2, 8, 1)));
    }
    p.check_access("us-east-1").await.unwrap();
}

#[tokio::test]
async fn ec2_unknown_instance_type_is_refused() {
    let p = provider(100).await;
    let mut t = template();
    t.instance_type = "m5zn.enormous".into();
    let w = uid("badtype");
    let e = p.launch(req(&w, &t, "us-east-1")).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Refused { reason, .. } if reason.contains("InvalidInstanceType")),
        "{e:?}"
    );
    assert_eq!(boto3_instances("us-east-1", &w)["live"], 0);
}

#[tokio::test]
async fn ec2_instance_terminated_behind_our_back_is_reported() {
    let p = provider(100).await;
    let w = uid("gone");
    let pid = p.launch(req(&w, &template(), "us-west-2")).await.unwrap();
    let _ = p.poll_events().await;
    check_script("check_ec2.py", &["terminate", &endpoint(), "us-west-2", &w]);
    let events = p.poll_events().await;
    let mine: Vec<_> = events.iter().filter(|e| e.worker_id == w).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].provider_id, pid);
    assert_eq!(mine[0].state, ccm_core::worker::WorkerState::Terminated);
    assert!(p
        .list_managed()
        .await
        .unwrap()
        .iter()
        .all(|m| m.worker_id != w));
}
