//! `ccm validate-prereqs`: checks that etcd, S3/MinIO and MongoDB answer with the configured
//! addresses and credentials, one ✓/✗ line each, and exits non-zero when one fails. With
//! `CCM_PROVIDER=ec2` it also checks EC2 access in every watched region and that each enabled
//! template's `ami_pattern` matches an image in each of its regions.
//! ccm does not use Redis (the original did); the output says so.

use crate::settings::{ProviderKind, Settings};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `ccm validate-prereqs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long each check may take, in seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

/// The outcome of checking one prerequisite.
#[derive(Debug)]
struct Check {
    /// What was checked (`etcd`, `S3/MinIO`, `MongoDB`).
    name: &'static str,
    /// Where (URLs with passwords redacted).
    target: String,
    /// What was found, or why it failed.
    outcome: Result<String, String>,
}

impl Check {
    fn line(&self) -> String {
        match &self.outcome {
            Ok(detail) => format!("✓ {:<9} {} — {}", self.name, self.target, detail),
            Err(why) => format!("✗ {:<9} {} — {}", self.name, self.target, why),
        }
    }
}

/// Runs `ccm validate-prereqs`.
pub fn run(args: Args, env_file: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(env_file))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let checks = rt.block_on(async {
        let (e, s, m) = tokio::join!(
            bounded(
                timeout,
                "etcd",
                etcd_target(&settings),
                check_etcd(&settings, timeout)
            ),
            bounded(
                timeout,
                "S3/MinIO",
                s3_target(&settings),
                check_s3(&settings)
            ),
            bounded(
                timeout,
                "MongoDB",
                mongo_target(&settings),
                check_mongo(&settings, timeout)
            ),
        );
        let mut checks = vec![e, s, m];
        if settings.provider == ProviderKind::Ec2 {
            // Every region and template is one EC2 call or two; allow for all of them.
            let budget = timeout * 4;
            checks.push(bounded(budget, "EC2", ec2_target(&settings), check_ec2(&settings)).await);
        }
        checks
    });
    // Dropping the runtime would wait for client background tasks; don't.
    rt.shutdown_background();
    println!(
        "ccm prerequisites (settings from the environment and {}):",
        env_file.display()
    );
    for c in &checks {
        println!("{}", c.line());
    }
    println!("- Redis     not needed — ccm does not use Redis (live state and locks are in etcd)");
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    if failed == 0 {
        println!("All {} prerequisites are reachable.", checks.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} of {} prerequisites failed.", checks.len());
        Ok(ExitCode::FAILURE)
    }
}

async fn bounded(
    timeout: Duration,
    name: &'static str,
    target: String,
    check: impl std::future::Future<Output = Result<String, String>>,
) -> Check {
    // A little slack over the clients' own timeouts, so their clearer errors come first.
    let outcome = match tokio::time::timeout(timeout + Duration::from_secs(1), check).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    };
    Check {
        name,
        target,
        outcome,
    }
}

fn ec2_target(s: &Settings) -> String {
    s.ec2
        .endpoint
        .clone()
        .unwrap_or_else(|| "AWS endpoints".to_string())
}

#[cfg(feature = "all-adapters")]
async fn check_ec2(s: &Settings) -> Result<String, String> {
    use ccm_adapters::ec2::Ec2Provider;
    let templates = ccm_core::template::load_templates_file(&s.worker_templates_path)
        .map_err(|e| format!("WORKER_TEMPLATES_CONFIG_PATH: {e}"))?;
    let cfg = crate::cmd::serve::ec2_config(s, &templates);
    if cfg.regions.is_empty() {
        return Err("no region to watch (set CCM_EC2_REGIONS or enable a template)".to_string());
    }
    let p = Ec2Provider::connect(cfg).await;
    let regions: Vec<String> = p.config().regions.keys().cloned().collect();
    for r in &regions {
        p.check_access(r)
            .await
            .map_err(|e| format!("no EC2 access in {r}: {e}"))?;
    }
    let mut images = Vec::new();
    for t in templates.iter().filter(|t| t.enabled) {
        for r in &t.regions {
            let ami = p
                .resolve_ami(r, &t.ami_pattern)
                .await
                .map_err(|e| format!("template {}: {e}", t.name))?;
            images.push(format!("{}@{r}={}", t.name, ami.name));
        }
    }
    Ok(format!(
        "access in {}; images {}",
        regions.join(","),
        images.join(", ")
    ))
}

#[cfg(not(feature = "all-adapters"))]
async fn check_ec2(_s: &Settings) -> Result<String, String> {
    Err("this ccm was built without the EC2 adapter (feature all-adapters)".to_string())
}

fn etcd_target(s: &Settings) -> String {
    s.etcd.endpoints().join(",")
}

fn s3_target(s: &Settings) -> String {
    format!("{} bucket {}", s.artifacts.endpoint, s.artifacts.bucket)
}

fn mongo_target(s: &Settings) -> String {
    s.mongodb_uri
        .as_ref()
        .map_or_else(|| "MONGODB_URI".to_string(), |u| u.redacted())
}

#[cfg(feature = "all-adapters")]
async fn check_etcd(s: &Settings, timeout: Duration) -> Result<String, String> {
    let mut config = crate::cmd::serve::etcd_config(s);
    config.connect_timeout = timeout;
    config.request_timeout = timeout;
    let answer = ccm_adapters::etcd::check(&config)
        .await
        .map_err(|err| format!("cannot reach etcd: {err}"))?;
    Ok(format!("{answer}, key prefix {}", s.etcd.prefix))
}

#[cfg(feature = "all-adapters")]
async fn check_s3(s: &Settings) -> Result<String, String> {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new(
        s.artifacts.access_key.clone(),
        s.artifacts.secret_key.expose().to_string(),
        None,
        None,
        "ccm-settings",
    );
    let mut endpoint = s.artifacts.endpoint.clone();
    if s.artifacts.use_ssl && endpoint.starts_with("http://") {
        endpoint = endpoint.replacen("http://", "https://", 1);
    }
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(s.artifacts.region.clone()))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    match client
        .head_bucket()
        .bucket(&s.artifacts.bucket)
        .send()
        .await
    {
        Ok(_) => Ok(format!(
            "bucket {} exists and is readable",
            s.artifacts.bucket
        )),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            Err(match status {
                Some(404) => format!(
                    "the server answers but bucket {} does not exist (ARTIFACT_STORAGE_BUCKET)",
                    s.artifacts.bucket
                ),
                Some(403) => {
                    "access denied: check ARTIFACT_STORAGE_ACCESS_KEY / ARTIFACT_STORAGE_SECRET_KEY"
                        .to_string()
                }
                Some(code) => format!("HTTP {code} from the server"),
                None => format!(
                    "cannot connect: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            })
        }
    }
}

#[cfg(feature = "all-adapters")]
async fn check_mongo(s: &Settings, timeout: Duration) -> Result<String, String> {
    let Some(uri) = &s.mongodb_uri else {
        return Err("MONGODB_URI is not set (ccm would keep specs in memory)".to_string());
    };
    // Driver errors may quote the URI: show them only with the password redacted.
    let redact = |e: mongodb::error::Error| e.to_string().replace(uri.expose(), &uri.redacted());
    let mut opts = mongodb::options::ClientOptions::parse(uri.expose())
        .await
        .map_err(|e| format!("MONGODB_URI: {}", redact(e)))?;
    opts.server_selection_timeout = Some(timeout);
    opts.connect_timeout = Some(timeout);
    opts.app_name = Some("ccm validate-prereqs".to_string());
    let client = mongodb::Client::with_options(opts).map_err(redact)?;
    let db = client.database(&s.mongodb_database);
    db.run_command(mongodb::bson::doc! { "ping": 1 })
        .await
        .map_err(|e| format!("ping failed: {}", redact(e)))?;
    Ok(format!("ping ok, database {}", s.mongodb_database))
}

#[cfg(not(feature = "all-adapters"))]
async fn check_etcd(_s: &Settings, _t: Duration) -> Result<String, String> {
    Err(NOT_BUILT.to_string())
}

#[cfg(not(feature = "all-adapters"))]
async fn check_s3(_s: &Settings) -> Result<String, String> {
    Err(NOT_BUILT.to_string())
}

#[cfg(not(feature = "all-adapters"))]
async fn check_mongo(_s: &Settings, _t: Duration) -> Result<String, String> {
    Err(NOT_BUILT.to_string())
}

#[cfg(not(feature = "all-adapters"))]
const NOT_BUILT: &str = "this ccm was built without the adapters (feature all-adapters)";
