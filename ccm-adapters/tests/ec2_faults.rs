//! EC2 error paths moto cannot produce (capacity, throttling, an AMI vanishing between lookup
//! and launch), on canned answers from `aws-smithy-mocks`.
#![cfg(feature = "ec2")]

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesError, RunInstancesOutput};
use aws_sdk_ec2::types::{Image, Instance, InstanceState, InstanceStateName, Reservation, Tag};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use ccm_adapters::ec2::{Ec2Config, Ec2Provider};
use ccm_core::store::{LaunchRequest, ProviderError, WorkerProvider};
use ccm_core::template::WorkerTemplate;
use std::collections::BTreeMap;
use std::time::Duration;

fn template() -> WorkerTemplate {
    ccm_core::template::seed_templates().unwrap().remove(0)
}

fn req(worker_id: &str) -> LaunchRequest {
    LaunchRequest {
        worker_id: worker_id.to_string(),
        template: template(),
        region: "us-east-1".to_string(),
    }
}

fn no_instances() -> Rule {
    mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build())
}

fn images() -> Rule {
    mock!(Client::describe_images).then_output(|| {
        DescribeImagesOutput::builder()
            .images(
                Image::builder()
                    .image_id("ami-0000000000000291a")
                    .name("CML-2.9.1-ubuntu")
                    .creation_date("2025-09-01T00:00:00.000Z")
                    .build(),
            )
            .build()
    })
}

fn launched() -> RunInstancesOutput {
    RunInstancesOutput::builder()
        .instances(Instance::builder().instance_id("i-0mock").build())
        .build()
}

fn ec2_error(code: &'static str) -> impl Fn() -> RunInstancesError {
    move || {
        RunInstancesError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message(format!("{code} (canned)"))
                .build(),
        )
    }
}

fn provider(rules: &[&Rule]) -> Ec2Provider {
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |b| b
        .retry_config(RetryConfig::disabled()));
    let mut cfg = Ec2Config::new(["us-east-1"]);
    cfg.retry_base = Duration::from_millis(5);
    cfg.retry_max = Duration::from_millis(20);
    cfg.max_attempts = 4;
    Ec2Provider::with_clients(cfg, BTreeMap::from([("us-east-1".to_string(), client)]))
}

#[tokio::test]
async fn capacity_errors_name_region_template_and_reason() {
    for code in [
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "Unsupported",
    ] {
        let run = mock!(Client::run_instances).then_error(ec2_error(code));
        let (d, i) = (no_instances(), images());
        let p = provider(&[&d, &i, &run]);
        let e = p.launch(req("w-cap")).await.unwrap_err();
        match &e {
            ProviderError::Capacity {
                region,
                template,
                reason,
            } => {
                assert_eq!(region, "us-east-1");
                assert_eq!(template, "personal-standard");
                assert!(reason.contains(code), "{reason}");
            }
            other => panic!("{code} must be a capacity error, got {other:?}"),
        }
        assert!(e.is_capacity());
        assert_eq!(run.num_calls(), 1, "a capacity error is not retried here");
        assert_eq!(p.run_instances_calls(), 0);
    }
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let run = mock!(Client::run_instances)
        .sequence()
        .error(ec2_error("RequestLimitExceeded"))
        .times(2)
        .output(launched)
        .build();
    let (d, i) = (no_instances(), images());
    let p = provider(&[&d, &i, &run]);
    let id = p.launch(req("w-throttle")).await.unwrap();
    assert_eq!(id, "i-0mock");
    assert_eq!(
        run.num_calls(),
        3,
        "two throttled attempts, then the launch"
    );
    assert_eq!(p.run_instances_calls(), 1);
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_bounded_attempts() {
    let run = mock!(Client::run_instances)
        .sequence()
        .error(ec2_error("RequestLimitExceeded"))
        .repeatedly()
        .build();
    let (d, i) = (no_instances(), images());
    let p = provider(&[&d, &i, &run]);
    let e = p.launch(req("w-slow")).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Throttled { attempts: 4, reason, .. } if reason.contains("RequestLimitExceeded")),
        "{e:?}"
    );
    assert_eq!(run.num_calls(), 4);
}

#[tokio::test]
async fn a_vanished_ami_is_looked_up_again() {
    let run = mock!(Client::run_instances)
        .sequence()
        .error(ec2_error("InvalidAMIID.NotFound"))
        .output(launched)
        .build();
    let (d, i) = (no_instances(), images());
    let p = provider(&[&d, &i, &run]);
    assert_eq!(p.launch(req("w-ami")).await.unwrap(), "i-0mock");
    assert_eq!(
        i.num_calls(),
        2,
        "the cached image was dropped and looked up again"
    );
    assert_eq!(run.num_calls(), 2);
}

#[tokio::test]
async fn a_live_instance_with_the_worker_tag_is_not_launched_again() {
    let d = mock!(Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id("i-0existing")
                            .state(
                                InstanceState::builder()
                                    .name(InstanceStateName::Running)
                                    .build(),
                            )
                            .tags(Tag::builder().key("ccm:worker-id").value("w-dup").build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let run = mock!(Client::run_instances).then_output(launched);
    let i = images();
    let p = provider(&[&d, &i, &run]);
    assert_eq!(p.launch(req("w-dup")).await.unwrap(), "i-0existing");
    assert_eq!(run.num_calls(), 0, "RunInstances never called");
}
