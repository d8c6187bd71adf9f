//! `ccm serve`: the daemon. Backends come from the settings (`CCM_BACKEND`, `MONGODB_URI`,
//! `CLOUDEVENTS_SINK_URL`); `--embedded` runs everything in-process. SIGINT/SIGTERM stop the
//! loops and resign leadership (the leases are revoked) so a standby takes over at once.

use crate::http::{self, Probe};
use crate::metrics::{DaemonStatus, LoopStatus};
use crate::settings::{Backend, LabRuntimeKind, ProviderKind, Settings};
use ccm_core::memory::events::LogSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::runtime::{Runtime, RuntimeSettings, CONTROLLER, LAB, SCHEDULER};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{
    Clock, EventSink, LabRuntime, LeaderElector, SpecStore, StateStore, SystemClock, WorkerProvider,
};
use ccm_core::template::WorkerTemplate;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `ccm serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run everything in-process (memory stores, simulated provider), whatever CCM_BACKEND and
    /// CCM_PROVIDER say.
    #[arg(long)]
    embedded: bool,
}

/// `n` minutes (settings are whole minutes, hours or seconds).
fn minutes(n: u32) -> chrono::Duration {
    chrono::Duration::minutes(i64::from(n))
}

/// `n` hours.
fn hours(n: u32) -> chrono::Duration {
    chrono::Duration::hours(i64::from(n))
}

/// `n` seconds.
fn seconds(n: u32) -> chrono::Duration {
    chrono::Duration::seconds(i64::from(n))
}

/// The runtime settings the loops get from ccm's settings.
pub fn runtime_settings(s: &Settings) -> RuntimeSettings {
    RuntimeSettings {
        prefix: s.etcd.prefix.clone(),
        candidate: s.candidate_id.clone(),
        scheduler_enabled: s.scheduler.enabled,
        controller_enabled: s.controller.enabled,
        scheduler_interval: s.scheduler.reconcile_interval,
        controller_interval: s.controller.reconcile_interval,
        leader_ttl: s.scheduler.leader_lease_ttl,
        lead_time: minutes(s.scheduler.lead_time_minutes),
        scale_down_grace: minutes(s.controller.scale_down_grace_minutes),
        scaling: s.controller.scaling,
        min_warm_workers: s.controller.min_warm_workers,
        cooldown: minutes(s.controller.cooldown_minutes),
        plan_horizon: hours(s.controller.plan_horizon_hours),
        max_pass_duration: minutes(s.max_pass_minutes),
        fleet_resync_interval: minutes(s.controller.fleet_resync_minutes),
        lab_order_timeout: minutes(s.lablet.order_timeout_minutes),
        session_retention: (s.controller.session_retention_hours > 0)
            .then(|| hours(s.controller.session_retention_hours)),
        instantiation_time: minutes(s.lablet.instantiation_minutes),
        lab_enabled: s.lablet.enabled,
        lab_interval: s.lablet.reconcile_interval,
        lab_retry_backoff: seconds(s.lablet.retry_backoff_seconds),
        lab_retry_backoff_max: seconds(s.lablet.retry_backoff_max_seconds),
        lab_max_attempts: s.lablet.max_attempts,
        lab_boot_timeout: minutes(s.lablet.boot_timeout_minutes),
        lab_import_timeout: chrono::Duration::from_std(s.cml.import_timeout)
            .unwrap_or(chrono::Duration::seconds(180)),
        lab_keep_per_worker: usize::try_from(s.lablet.keep_wiped_labs_per_worker)
            .unwrap_or(usize::MAX),
        lab_url_template: s.lablet.cml_url_template.clone(),
        orphan_policy: match s.ec2.orphan_policy {
            crate::settings::OrphanPolicy::Adopt => ccm_core::runtime::OrphanPolicy::Adopt,
            crate::settings::OrphanPolicy::Terminate => ccm_core::runtime::OrphanPolicy::Terminate,
            crate::settings::OrphanPolicy::Ignore => ccm_core::runtime::OrphanPolicy::Ignore,
        },
        ..RuntimeSettings::default()
    }
}

/// What `/readyz` and `/metrics` read.
struct ServeProbe {
    runtime: Arc<Runtime>,
    status: Arc<DaemonStatus>,
    enabled: [bool; 2],
}

impl Probe for ServeProbe {
    fn ready(&self) -> bool {
        self.status.ready()
    }

    fn loops(&self) -> BTreeMap<String, LoopStatus> {
        let m = self.runtime.metrics();
        let lead = self.runtime.leadership();
        let mut out = BTreeMap::new();
        out.insert(
            SCHEDULER.to_string(),
            LoopStatus {
                enabled: self.enabled[0],
                is_leader: lead.scheduler,
                runs: m.scheduler_runs,
                last_duration_seconds: m.scheduler_last_duration.as_secs_f64(),
            },
        );
        out.insert(
            CONTROLLER.to_string(),
            LoopStatus {
                enabled: self.enabled[1],
                is_leader: lead.controller,
                runs: m.controller_runs,
                last_duration_seconds: m.controller_last_duration.as_secs_f64(),
            },
        );
        out.insert(
            LAB.to_string(),
            LoopStatus {
                enabled: self.runtime.lab_loop().is_some(),
                is_leader: lead.lab,
                runs: m.lab_runs,
                last_duration_seconds: m.lab_last_duration.as_secs_f64(),
            },
        );
        out
    }

    fn metrics_text(&self) -> String {
        let mut text = self.runtime.metrics().to_prometheus();
        text.push_str(&self.status.render());
        text
    }

    fn last_plan(&self) -> Option<serde_json::Value> {
        let p = self.runtime.metrics().last_plan?;
        Some(serde_json::json!({
            "at": p.at,
            "cost_usd": p.cost_usd,
            "lower_bound_usd": p.lower_bound_usd,
            "cost_over_lower_bound": if p.lower_bound_usd > 0.0 { Some(p.cost_usd / p.lower_bound_usd) } else { None },
            "workers": p.workers,
            "worker_hours": p.worker_hours,
            "sessions_assigned": p.assigned,
            "kept": p.kept,
            "moved": p.moved,
            "duration_ms": p.duration.as_secs_f64() * 1000.0,
            "unserved": p.unserved.iter().map(|(session, reason)| serde_json::json!({
                "session": session,
                "reason": reason,
            })).collect::<Vec<_>>(),
            "unavailable": p.unavailable.iter().map(|(template, region, until)| serde_json::json!({
                "template": template,
                "region": region,
                "until": until,
                "reason": "the region refused a launch of the template for lack of capacity",
            })).collect::<Vec<_>>(),
        }))
    }
}

/// Runs `ccm serve`.
pub fn run(args: Args, env_file: &Path) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(Some(env_file))?;
    if args.embedded {
        settings.provider = ProviderKind::Simulated;
    }
    let backend = if args.embedded {
        Backend::Embedded
    } else {
        settings.backend
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(settings, backend))?;
    Ok(ExitCode::SUCCESS)
}

/// The live-state store and elector of `backend`.
async fn state_backend(
    settings: &Settings,
    backend: Backend,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn LeaderElector>, String)> {
    match backend {
        Backend::Embedded => {
            let store = Arc::new(MemoryStateStore::new(clock));
            let elector = Arc::new(StoreElector::new(
                store.clone(),
                settings.etcd.prefix.clone(),
            ));
            Ok((store, elector, "embedded".to_string()))
        }
        Backend::Etcd => etcd_backend(settings).await,
    }
}

/// The etcd adapter's settings from ccm's: endpoints, key prefix, credentials, TLS files.
#[cfg(feature = "all-adapters")]
pub fn etcd_config(settings: &Settings) -> ccm_adapters::etcd::EtcdConfig {
    let e = &settings.etcd;
    let mut config =
        ccm_adapters::etcd::EtcdConfig::new(e.endpoints()).with_prefix(e.prefix.clone());
    config.username.clone_from(&e.username);
    config.password = e.password.as_ref().map(|p| p.expose().to_string());
    config.ca_cert.clone_from(&e.ca_cert);
    config.client_cert.clone_from(&e.client_cert);
    config.client_key.clone_from(&e.client_key);
    config
}

#[cfg(feature = "all-adapters")]
async fn etcd_backend(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn LeaderElector>, String)> {
    use ccm_adapters::etcd::EtcdStateStore;
    let config = etcd_config(settings);
    config
        .validate()
        .map_err(|err| anyhow::anyhow!("etcd settings: {err}"))?;
    let endpoints = config.endpoints.join(",");
    let store = Arc::new(
        EtcdStateStore::connect(config)
            .await
            .map_err(|err| anyhow::anyhow!("cannot connect to etcd at {endpoints}: {err}"))?,
    );
    let elector = Arc::new(store.elector());
    Ok((store, elector, format!("etcd {endpoints}")))
}

#[cfg(not(feature = "all-adapters"))]
async fn etcd_backend(
    _settings: &Settings,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn LeaderElector>, String)> {
    anyhow::bail!(
        "CCM_BACKEND=etcd: this ccm was built without the etcd adapter (feature all-adapters)"
    )
}

/// The spec store: MongoDB when `MONGODB_URI` is set (and `embedded` is false), else memory.
pub async fn spec_backend(
    settings: &Settings,
    embedded: bool,
) -> anyhow::Result<(Arc<dyn SpecStore>, String)> {
    match (&settings.mongodb_uri, embedded) {
        (Some(uri), false) => mongo_backend(uri, &settings.mongodb_database).await,
        _ => Ok((Arc::new(MemorySpecStore::new()), "in-memory".to_string())),
    }
}

#[cfg(feature = "all-adapters")]
async fn mongo_backend(
    uri: &crate::settings::SecretUri,
    database: &str,
) -> anyhow::Result<(Arc<dyn SpecStore>, String)> {
    use ccm_adapters::mongo::{MongoOptions, MongoSpecStore};
    let store = MongoSpecStore::connect(uri.expose(), database, MongoOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("MongoDB {}: {e}", uri.redacted()))?;
    Ok((
        Arc::new(store),
        format!("MongoDB {} database {database}", uri.redacted()),
    ))
}

#[cfg(not(feature = "all-adapters"))]
async fn mongo_backend(
    _uri: &crate::settings::SecretUri,
    _database: &str,
) -> anyhow::Result<(Arc<dyn SpecStore>, String)> {
    anyhow::bail!("MONGODB_URI is set but this ccm was built without the MongoDB adapter (feature all-adapters)")
}

#[cfg(feature = "all-adapters")]
fn event_backend(settings: &Settings) -> anyhow::Result<Arc<dyn EventSink>> {
    use ccm_adapters::cloudevents::{CloudEventsConfig, CloudEventsSink};
    match &settings.cloudevents_sink_url {
        None => Ok(Arc::new(LogSink::new())),
        Some(url) => {
            let mut c = CloudEventsConfig::new(url.expose());
            c.source.clone_from(&settings.cloudevents_source);
            let sink = CloudEventsSink::new(c)
                .map_err(|e| anyhow::anyhow!("CLOUDEVENTS_SINK_URL {}: {e}", url.redacted()))?;
            Ok(Arc::new(sink))
        }
    }
}

#[cfg(not(feature = "all-adapters"))]
fn event_backend(settings: &Settings) -> anyhow::Result<Arc<dyn EventSink>> {
    if settings.cloudevents_sink_url.is_some() {
        anyhow::bail!("CLOUDEVENTS_SINK_URL is set but this ccm was built without the CloudEvents adapter (feature all-adapters)");
    }
    Ok(Arc::new(LogSink::new()))
}

/// The regions the EC2 provider watches: `CCM_EC2_REGIONS`, else every enabled template's.
pub fn ec2_regions(settings: &Settings, templates: &[WorkerTemplate]) -> Vec<String> {
    if !settings.ec2.regions.is_empty() {
        return settings.ec2.regions.clone();
    }
    let regions: std::collections::BTreeSet<String> = templates
        .iter()
        .filter(|t| t.enabled)
        .flat_map(|t| t.regions.iter().cloned())
        .collect();
    regions.into_iter().collect()
}

/// The EC2 adapter's settings from ccm's.
#[cfg(feature = "all-adapters")]
pub fn ec2_config(
    settings: &Settings,
    templates: &[WorkerTemplate],
) -> ccm_adapters::ec2::Ec2Config {
    use ccm_adapters::ec2::{Ec2Config, RegionSettings, Secret, StaticCredentials};
    let e = &settings.ec2;
    let mut cfg = Ec2Config::new(ec2_regions(settings, templates));
    for (region, net) in cfg.regions.iter_mut() {
        *net = RegionSettings {
            subnet_id: e.subnets.get(region).cloned(),
            security_group_ids: e.security_groups.get(region).cloned().unwrap_or_default(),
            key_name: e.key_names.get(region).cloned(),
            instance_profile: e.instance_profiles.get(region).cloned(),
        };
    }
    cfg.endpoint.clone_from(&e.endpoint);
    cfg.credentials = match (&e.access_key_id, &e.secret_access_key) {
        (Some(id), Some(secret)) => Some(StaticCredentials {
            access_key_id: id.clone(),
            secret_access_key: Secret::new(secret.expose()),
            session_token: e.session_token.as_ref().map(|t| Secret::new(t.expose())),
        }),
        _ => None,
    };
    cfg.fleet.clone_from(&e.fleet);
    cfg.ami_owners.clone_from(&e.ami_owners);
    cfg.ami_cache_ttl = e.ami_cache_ttl;
    cfg
}

/// The worker provider of `CCM_PROVIDER`.
async fn provider_backend(
    settings: &Settings,
    templates: &[WorkerTemplate],
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn WorkerProvider>, String)> {
    match settings.provider {
        // Workers are simulated: a boot takes the template's startup minutes of real time.
        ProviderKind::Simulated => Ok((
            Arc::new(SimulatedProvider::new(clock)),
            "simulated".to_string(),
        )),
        ProviderKind::Ec2 => ec2_backend(settings, templates).await,
    }
}

#[cfg(feature = "all-adapters")]
async fn ec2_backend(
    settings: &Settings,
    templates: &[WorkerTemplate],
) -> anyhow::Result<(Arc<dyn WorkerProvider>, String)> {
    let cfg = ec2_config(settings, templates);
    if cfg.regions.is_empty() {
        anyhow::bail!(
            "CCM_PROVIDER=ec2: no region to watch (set CCM_EC2_REGIONS or enable a template)"
        );
    }
    let name = format!(
        "ec2 {} ({})",
        cfg.regions.keys().cloned().collect::<Vec<_>>().join(","),
        cfg.endpoint.as_deref().unwrap_or("AWS endpoints")
    );
    let provider = ccm_adapters::ec2::Ec2Provider::connect(cfg).await;
    Ok((Arc::new(provider), name))
}

#[cfg(not(feature = "all-adapters"))]
async fn ec2_backend(
    _settings: &Settings,
    _templates: &[WorkerTemplate],
) -> anyhow::Result<(Arc<dyn WorkerProvider>, String)> {
    anyhow::bail!(
        "CCM_PROVIDER=ec2: this ccm was built without the EC2 adapter (feature all-adapters)"
    )
}

/// The lab side of `CCM_LAB_RUNTIME`: none, simulated CML controllers (realistic timings on
/// the real clock), or the workers' CML controllers over their API.
fn lab_backend(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<(Arc<dyn LabRuntime>, String)>> {
    match settings.cml.runtime {
        LabRuntimeKind::None => Ok(None),
        LabRuntimeKind::Simulated => Ok(Some((
            Arc::new(ccm_core::memory::lab::SimulatedLabs::new(
                clock,
                ccm_core::memory::lab::LabTimings::realistic(),
            )),
            "simulated CML".to_string(),
        ))),
        LabRuntimeKind::Cml => cml_backend(settings).map(Some),
    }
}

/// The CML adapter's settings from ccm's (per-worker credentials read from their file).
#[cfg(feature = "all-adapters")]
pub fn cml_config(settings: &Settings) -> anyhow::Result<ccm_adapters::cml::CmlConfig> {
    use ccm_adapters::cml::{CmlConfig, CmlCredentials, CmlTls};
    let c = &settings.cml;
    if c.username.is_none() && c.worker_credentials_file.is_none() {
        anyhow::bail!(
            "CML_USERNAME: expected a value (or CML_WORKER_CREDENTIALS_FILE) when the lab runtime is cml (CCM_LAB_RUNTIME, default cml with CCM_PROVIDER=ec2)"
        );
    }
    let mut cfg = CmlConfig::new(CmlCredentials::new("", ""));
    cfg.credentials = match (&c.username, &c.password) {
        (Some(u), Some(p)) => Some(CmlCredentials::new(u.clone(), p.expose())),
        _ => None,
    };
    if let Some(path) = &c.worker_credentials_file {
        for (worker, cred) in crate::settings::load_cml_worker_credentials(path)? {
            cfg.worker_credentials.insert(
                worker,
                CmlCredentials::new(cred.username, cred.password.expose()),
            );
        }
    }
    cfg.tls = match (&c.ca_file, c.insecure_skip_verify) {
        (Some(ca), _) => CmlTls::VerifyWithCa(ca.clone()),
        (None, true) => CmlTls::InsecureSkipVerify,
        (None, false) => CmlTls::Verify,
    };
    cfg.allow_http = c.allow_http;
    cfg.request_timeout = c.request_timeout;
    cfg.import_timeout = c.import_timeout;
    cfg.retries = c.retries;
    Ok(cfg)
}

#[cfg(feature = "all-adapters")]
fn cml_backend(settings: &Settings) -> anyhow::Result<(Arc<dyn LabRuntime>, String)> {
    let cfg = cml_config(settings)?;
    let labs = ccm_adapters::cml::CmlLabRuntime::new(cfg)
        .map_err(|e| anyhow::anyhow!("CML settings: {e}"))?;
    Ok((
        Arc::new(labs),
        format!("CML at {}", settings.lablet.cml_url_template),
    ))
}

#[cfg(not(feature = "all-adapters"))]
fn cml_backend(_settings: &Settings) -> anyhow::Result<(Arc<dyn LabRuntime>, String)> {
    anyhow::bail!(
        "CCM_LAB_RUNTIME=cml: this ccm was built without the CML adapter (feature all-adapters)"
    )
}

/// Resolves on SIGINT or SIGTERM (or Ctrl-C where there are no Unix signals).
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

async fn serve(settings: Settings, backend: Backend) -> anyhow::Result<()> {
    let embedded = backend == Backend::Embedded;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (state, elector, backend_name) = state_backend(&settings, backend, clock.clone()).await?;
    let (spec, spec_name) = spec_backend(&settings, embedded).await?;
    let templates = ccm_core::template::load_templates_file(&settings.worker_templates_path)
        .map_err(|e| anyhow::anyhow!("WORKER_TEMPLATES_CONFIG_PATH: {e}"))?;
    let seeded = spec
        .seed_templates(&templates)
        .await
        .map_err(|e| anyhow::anyhow!("seeding templates into {spec_name}: {e}"))?;
    tracing::info!(
        created = seeded.created.len(),
        kept = seeded.kept.len(),
        store = %spec_name,
        "worker templates seeded (create if absent)"
    );
    let events = event_backend(&settings)?;
    let auth = crate::api::Auth::new(
        settings.api_token.as_ref().map(|t| t.expose()),
        settings.api_reads_open,
    );
    auth.check_listen(settings.http_addr)
        .map_err(|e| anyhow::anyhow!(e))?;
    if !auth.has_token() {
        tracing::warn!("CCM_API_TOKEN is not set: the /api/v1 endpoints are open (loopback only)");
    }
    let artifacts: Arc<dyn ccm_core::store::ArtifactStore> = if embedded {
        Arc::new(ccm_core::memory::artifact::MemoryArtifactStore::new())
    } else {
        crate::api::artifacts::s3(&settings.artifacts)
    };
    let (provider, provider_name) = provider_backend(&settings, &templates, clock.clone()).await?;
    tracing::info!(provider = %provider_name, "worker provider");
    let labs = lab_backend(&settings, clock.clone())?;
    let labs_name = labs
        .as_ref()
        .map_or_else(|| "none".to_string(), |(_, n)| n.clone());
    tracing::info!(labs = %labs_name, "lab runtime");
    let mut builder = Runtime::builder()
        .state(state)
        .elector(elector)
        .spec(spec)
        .events(events)
        .clock(clock)
        .provider(provider)
        .artifacts(artifacts)
        .settings(runtime_settings(&settings));
    if let Some((labs, _)) = labs {
        builder = builder.labs(labs);
    }
    let runtime = Arc::new(builder.build()?);
    let status = Arc::new(DaemonStatus::default());
    let probe = Arc::new(ServeProbe {
        runtime: runtime.clone(),
        status: status.clone(),
        enabled: [settings.scheduler.enabled, settings.controller.enabled],
    });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, http_task) = http::serve(
        settings.http_addr,
        http::router(probe, settings.candidate_id.clone(), backend_name.clone())
            .merge(crate::api::router(runtime.lablets().clone(), auth)),
        async {
            let _ = http_stopped.await;
        },
    )
    .await?;
    let mut handle = runtime.clone().spawn();
    // The first bookings find an admission plan ready (the fast path) instead of each
    // planning the whole horizon; bookings keep it fresh from then on.
    let lablets = runtime.lablets().clone();
    tokio::spawn(async move {
        match lablets.warm().await {
            Ok(kept) => tracing::debug!(kept, "admission plan made"),
            Err(e) => {
                tracing::warn!(error = %e, "no admission plan at start-up; the first booking makes one")
            }
        }
    });
    status.set_ready(true);
    // One line on stdout that scripts and tests can wait for.
    println!(
        "ccm serving on http://{addr} (candidate {}, state {backend_name}, specs {spec_name}, provider {provider_name}, labs {labs_name})",
        settings.candidate_id
    );
    // A signal stops the daemon; so does a loop that died (panicked or stalled): its
    // leadership is already resigned, and a daemon without its loops must not linger as if
    // healthy — it exits non-zero so its supervisor starts a fresh one.
    let outcome = tokio::select! {
        signal = shutdown_signal() => Ok(signal),
        why = handle.failed() => Err(why),
    };
    match &outcome {
        Ok(signal) => tracing::info!(
            signal,
            "shutting down: stopping the loops and resigning leadership"
        ),
        Err(why) => tracing::error!(error = %why, "a loop died: stopping the daemon"),
    }
    status.set_ready(false);
    handle.shutdown().await;
    let _ = stop_http.send(());
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    match outcome {
        Ok(signal) => {
            println!("ccm stopped ({signal}); leadership resigned");
            Ok(())
        }
        Err(why) => anyhow::bail!("a loop died ({why}); leadership resigned"),
    }
}
