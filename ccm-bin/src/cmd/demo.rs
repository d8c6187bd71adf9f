//! `ccm demo`: a whole exam day in seconds. The real scheduler and controller loops run on
//! the in-memory backends and a simulated cloud (holding the scenario's fleet), driven by a
//! virtual clock through a scenario of `config/scenarios/`; the controller re-plans every pass
//! (or follows the original's reactive rule with `--scaling reactive`), and the real lab loop
//! drives each session's lab on simulated CML controllers ([`SimulatedLabs`], realistic
//! timings on the virtual clock): instantiated before the slot (a wiped lab of the same
//! definition reused when the worker has one), RUNNING at slot start, stopped and wiped at its
//! end. It prints launches, bindings, drains and stops as they happen, then the report:
//! sessions served, worker-hours and cost against the planner's lower bound, lab reuse and
//! instantiation time.

use ccm_core::definition::LabletDefinition;
use ccm_core::labyaml::placeholder_for;
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::lab::{LabTimings, SimulatedLabs};
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::planner::{load_scenario, plan, Scenario};
use ccm_core::runtime::{
    plan_input, KeyLayout, Runtime, RuntimeSettings, ScalingAction, ScalingMode, StateSnapshot,
    StepReport,
};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::artifact::sha256_hex;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{ArtifactStore, Clock, SpecStore, StateStore, VirtualClock, WriteCondition};
use ccm_core::timeslot::Timestamp;
use ccm_core::worker::{Worker, WorkerState};
use chrono::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `ccm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario file.
    #[arg(
        long,
        default_value = "config/scenarios/exam-day.yaml",
        value_name = "PATH"
    )]
    scenario: PathBuf,
    /// Virtual minutes per step (each step: campaign, controller pass, scheduler pass).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60))]
    step_minutes: u32,
    /// Print only the final report.
    #[arg(long)]
    quiet: bool,
    /// How the controller scales: `planner` (the time-aware planner) or `reactive` (the
    /// original's rule).
    #[arg(long, default_value_t = ScalingMode::Planner, value_parser = |s: &str| s.parse::<ScalingMode>())]
    scaling: ScalingMode,
}

/// What the demo measured.
#[derive(Debug, Default)]
struct Tally {
    sessions: usize,
    served: BTreeSet<String>,
    /// Served, but their lab started after their slot start.
    late: BTreeSet<String>,
    expired: BTreeSet<String>,
    bindings: u64,
    launches: u64,
    starts: u64,
    drains: u64,
    stops: u64,
    worker_seconds: BTreeMap<String, i64>,
    peak_workers: usize,
}

/// Runs `ccm demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = load_scenario(&args.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ok = rt.block_on(demo(scenario, &args))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn hhmm(t: Timestamp) -> String {
    t.format("%H:%M").to_string()
}

async fn demo(scenario: Scenario, args: &Args) -> anyhow::Result<bool> {
    let quiet = args.quiet;
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    let start = scenario.now;
    let clock = VirtualClock::new(start);
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = Arc::new(MemoryStateStore::new(shared_clock.clone()));
    let spec = Arc::new(MemorySpecStore::new());
    spec.seed_templates(&scenario.templates).await?;
    // Each definition's lab YAML in the artifact store, as a registration would leave it.
    let artifacts = Arc::new(MemoryArtifactStore::new());
    let mut definitions = Vec::with_capacity(scenario.definitions.len());
    for d in &scenario.definitions {
        let yaml = lab_yaml(d);
        let key = format!("demo/{}/lab.yaml", d.id);
        artifacts
            .put(
                &key,
                bytes::Bytes::from(yaml.clone()),
                WriteCondition::Always,
            )
            .await?;
        let d = LabletDefinition {
            lab_artifact_uri: key,
            lab_yaml_hash: sha256_hex(yaml.as_bytes()),
            ..d.clone()
        };
        spec.insert_definition(&d).await?;
        definitions.push(d);
    }
    let labs = SimulatedLabs::new(shared_clock.clone(), LabTimings::realistic());
    let keys = KeyLayout::default();
    // The scenario's fleet exists in the simulated cloud and in the store before the loops run.
    let provider = Arc::new(SimulatedProvider::new(shared_clock.clone()));
    let mut fleet = Vec::new();
    for w in &scenario.workers {
        let startup = scenario
            .templates
            .iter()
            .find(|t| t.name == w.template)
            .map_or(20, |t| t.startup_minutes);
        let mut w = w.clone();
        w.provider_id = Some(provider.adopt(&w, startup)?);
        if w.state == WorkerState::Running {
            w.ready_at = Some(start);
        }
        fleet.push(w);
    }
    let sessions = scenario.lablet_sessions();
    let settings = RuntimeSettings {
        candidate: "demo".into(),
        lead_time: Duration::minutes(i64::from(scenario.policy.lead_minutes)),
        scale_down_grace: Duration::minutes(i64::from(scenario.policy.grace_minutes)),
        // One campaign tick per step: the lease must outlive a step of the virtual clock.
        leader_ttl: std::time::Duration::from_secs(u64::from(args.step_minutes) * 60 * 5),
        scaling: args.scaling,
        cooldown: Duration::minutes(i64::from(scenario.policy.cooldown_minutes)),
        min_warm_workers: scenario.policy.min_warm_workers,
        plan_horizon: Duration::hours(i64::from(scenario.policy.horizon_hours)),
        ..RuntimeSettings::default()
    };
    // The reference: one plan made at the start, on the input the controller sees then.
    let planned = plan(
        &plan_input(
            &StateSnapshot::from_values(0, sessions.clone(), fleet.clone(), definitions.clone()),
            &scenario.templates,
            start,
            &settings,
            Vec::new(),
        ),
        &settings.planner_policy(),
    );
    let events = Arc::new(RecordingSink::new());
    let runtime = Runtime::builder()
        .state(store.clone())
        .elector(Arc::new(StoreElector::new(
            store.clone(),
            settings.prefix.clone(),
        )))
        .spec(spec.clone())
        .events(events.clone())
        .clock(shared_clock.clone())
        .provider(provider.clone())
        .artifacts(artifacts)
        .labs(Arc::new(labs.clone()))
        .settings(settings)
        .build()?;
    // The scenario's fleet and bookings, stored through the façade as a migration would.
    for w in &fleet {
        runtime.lablets().put_worker(w).await?;
    }
    let imported = runtime.lablets().import(&sessions).await?;
    anyhow::ensure!(
        imported.existing.is_empty(),
        "sessions already stored: {:?}",
        imported.existing
    );

    let last_end = sessions
        .iter()
        .filter_map(|s| s.timeslot.map(|t| t.end))
        .max()
        .unwrap_or(start);
    // Run past the last session until the fleet has drained and stopped (bounded).
    let hard_end = last_end + Duration::hours(6);
    let step = Duration::minutes(i64::from(args.step_minutes));
    let templates: BTreeMap<String, f64> = scenario
        .templates
        .iter()
        .map(|t| (t.name.clone(), t.cost_per_hour_usd))
        .collect();

    println!(
        "ccm demo — {} ({} sessions of {} definitions, {} templates, {} workers at the start), virtual clock from {} UTC, {} min steps, {} scaling",
        scenario.file,
        sessions.len(),
        scenario.definitions.len(),
        scenario.templates.len(),
        scenario.workers.len(),
        start.format("%Y-%m-%d %H:%M"),
        args.step_minutes,
        args.scaling
    );
    let wall = std::time::Instant::now();
    let mut tally = Tally {
        sessions: sessions.len(),
        ..Tally::default()
    };
    loop {
        let now = clock.now();
        let report = runtime.step().await?;
        narrate(&report, now, &mut tally, &say);
        let workers = list_workers(store.as_ref(), &keys).await?;
        let billed: Vec<&Worker> = workers.iter().filter(|w| w.state.is_billed()).collect();
        tally.peak_workers = tally.peak_workers.max(billed.len());
        let settled = list_sessions(store.as_ref(), &keys)
            .await?
            .iter()
            .all(settled);
        let done = now >= last_end && settled && billed.is_empty();
        if done || now >= hard_end {
            break;
        }
        for w in billed {
            *tally.worker_seconds.entry(w.id.clone()).or_default() += step.num_seconds();
        }
        clock.advance(step);
    }
    let end = clock.now();
    let workers = list_workers(store.as_ref(), &keys).await?;
    let template_of: BTreeMap<&str, &str> = workers
        .iter()
        .map(|w| (w.id.as_str(), w.template.as_str()))
        .collect();
    let worker_hours = tally.worker_seconds.values().sum::<i64>() as f64 / 3600.0;
    let cost: f64 = tally
        .worker_seconds
        .iter()
        .map(|(id, secs)| {
            let price = template_of
                .get(id.as_str())
                .and_then(|t| templates.get(*t))
                .copied()
                .unwrap_or(0.0);
            *secs as f64 / 3600.0 * price
        })
        .sum();
    let metrics = runtime.metrics();
    let final_sessions = list_sessions(store.as_ref(), &keys).await?;
    let mut instantiation: Vec<i64> = Vec::new();
    for s in &final_sessions {
        if let Some(running) = s.entered(SessionState::Running) {
            tally.served.insert(s.id.clone());
            if s.timeslot.is_some_and(|t| running > t.start) {
                tally.late.insert(s.id.clone());
            }
        }
        if let (Some(a), Some(b)) = (
            s.entered(SessionState::Instantiating),
            s.entered(SessionState::Ready),
        ) {
            instantiation.push((b - a).num_seconds());
        }
    }
    instantiation.sort_unstable();
    let unserved = tally.sessions.saturating_sub(tally.served.len());

    println!();
    println!(
        "Report — virtual {} → {} UTC ({:.1} h) in {:.2} s of wall time",
        start.format("%H:%M"),
        end.format("%d %H:%M"),
        (end - start).num_minutes() as f64 / 60.0,
        wall.elapsed().as_secs_f64()
    );
    println!(
        "  sessions served: {}/{} ({} of them late, {} expired unplaced, {} not served)",
        tally.served.len(),
        tally.sessions,
        tally.late.len(),
        tally.expired.len(),
        unserved
    );
    if args.scaling == ScalingMode::Planner {
        println!(
            "  sessions a plan could not serve: {} (warned once each)",
            metrics.unservable_sessions_total
        );
    }
    println!(
        "  bindings: {} (conflicts retried: {}); workers: {} launched, {} restarted, {} drained, {} stopped; peak {} billed at once",
        metrics.bindings_total,
        metrics.conflicts_total,
        tally.launches,
        tally.starts,
        tally.drains,
        tally.stops,
        tally.peak_workers
    );
    println!("  worker-hours: {worker_hours:.1}");
    println!("  cost: ${cost:.2}");
    println!(
        "  one plan made at the start, on the same input: ${:.2} ({} workers, {:.1} worker-hours); lower bound ${:.2}",
        planned.cost.cost_usd,
        planned.cost.workers,
        planned.cost.worker_hours,
        planned.cost.lower_bound_usd
    );
    if planned.cost.lower_bound_usd > 0.0 {
        println!(
            "  the loops spent {:.2}× the lower bound (the plan made at the start: {:.2}×)",
            cost / planned.cost.lower_bound_usd,
            planned.cost.cost_over_lower_bound
        );
    }
    if metrics.plans_total > 0 {
        println!(
            "  the controller re-planned {} times (last plan took {:.1} ms)",
            metrics.plans_total,
            metrics
                .last_plan
                .as_ref()
                .map_or(0.0, |p| p.duration.as_secs_f64() * 1000.0)
        );
    }
    let median = instantiation.get(instantiation.len() / 2).map_or_else(
        || "n/a".to_string(),
        |s| format!("{}m{:02}s", s / 60, s % 60),
    );
    println!(
        "  labs: {} imported, {} reused (lab reuse rate: {:.1} %), {} deleted beyond the keep limit; {} lab steps retried",
        metrics.lab_imports_total,
        metrics.lab_reuses_total,
        metrics.lab_reuse_rate().unwrap_or(0.0) * 100.0,
        metrics.lab_deletes_total,
        metrics.lab_retries_total
    );
    println!(
        "  median instantiation time: {median} (INSTANTIATING → READY, {} labs); simulated CML imports: {}",
        instantiation.len(),
        labs.imports()
    );
    println!("  events published: {}", events.len());
    Ok(unserved == 0)
}

/// Prints what one step did and counts it.
fn narrate(report: &StepReport, now: Timestamp, tally: &mut Tally, say: &impl Fn(String)) {
    let t = hhmm(now);
    if let Some(c) = &report.controller {
        for a in &c.actions {
            match a {
                ScalingAction::Launch {
                    worker_id,
                    template,
                    region,
                    reason,
                    ..
                } => {
                    tally.launches += 1;
                    say(format!(
                        "{t}  launch  {worker_id} ({template}, {region}): {reason}"
                    ));
                }
                ScalingAction::Start { worker_id, reason } => {
                    tally.starts += 1;
                    say(format!("{t}  start   {worker_id}: {reason}"));
                }
                ScalingAction::CancelDrain { worker_id, reason } => {
                    say(format!("{t}  undrain {worker_id}: {reason}"));
                }
                ScalingAction::Drain { worker_id, reason } => {
                    tally.drains += 1;
                    say(format!("{t}  drain   {worker_id}: {reason}"));
                }
                ScalingAction::Stop {
                    worker_id,
                    force,
                    reason,
                } => {
                    tally.stops += 1;
                    let how = if *force { " (forced)" } else { "" };
                    say(format!("{t}  stop    {worker_id}{how}: {reason}"));
                }
                ScalingAction::Terminate { worker_id, reason } => {
                    say(format!("{t}  terminate {worker_id}: {reason}"));
                }
            }
        }
        for (w, state) in &c.applied {
            if *state == WorkerState::Running {
                say(format!("{t}  ready   {w}"));
            }
        }
        for (w, why) in &c.failed {
            say(format!("{t}  FAILED  {w}: {why}"));
        }
    }
    if let Some(s) = &report.scheduler {
        if !s.bound.is_empty() {
            tally.bindings += s.bound.len() as u64;
            let workers: BTreeSet<&str> = s.bound.iter().map(|b| b.worker.as_str()).collect();
            say(format!(
                "{t}  bound   {} sessions onto {} workers ({} waiting, not yet due: {})",
                s.bound.len(),
                workers.len(),
                s.unschedulable.len(),
                s.not_due
            ));
        }
        if !s.expired.is_empty() {
            tally.expired.extend(s.expired.iter().cloned());
            say(format!(
                "{t}  expired {} sessions never placed",
                s.expired.len()
            ));
        }
    }
    if let Some(l) = &report.lab {
        let mut by_state: BTreeMap<SessionState, usize> = BTreeMap::new();
        for (_, st) in &l.transitions {
            *by_state.entry(*st).or_default() += 1;
        }
        if !by_state.is_empty() || !l.reused.is_empty() {
            let parts: Vec<String> = by_state
                .iter()
                .map(|(st, n)| format!("{n} {}", st.to_string().to_lowercase()))
                .collect();
            let reused = if l.reused.is_empty() {
                String::new()
            } else {
                format!(" ({} labs reused)", l.reused.len())
            };
            say(format!("{t}  labs    {}{reused}", parts.join(", ")));
        }
        for (id, why) in &l.gave_up {
            say(format!("{t}  GAVE UP {id}: {why}"));
        }
    }
}

async fn list_workers(store: &dyn StateStore, keys: &KeyLayout) -> anyhow::Result<Vec<Worker>> {
    let l = store.list(&keys.workers()).await?;
    l.kvs
        .iter()
        .map(|kv| Ok(serde_json::from_slice(&kv.value)?))
        .collect()
}

async fn list_sessions(
    store: &dyn StateStore,
    keys: &KeyLayout,
) -> anyhow::Result<Vec<LabletSession>> {
    let l = store.list(&keys.sessions()).await?;
    l.kvs
        .iter()
        .map(|kv| Ok(serde_json::from_slice(&kv.value)?))
        .collect()
}

/// Nothing left to do for the session: archived, ended with its lab torn down, or expired
/// unplaced.
fn settled(s: &LabletSession) -> bool {
    match s.state {
        SessionState::Archived => true,
        SessionState::Terminated => s.lab.as_ref().is_none_or(|p| !p.holds_lab()),
        SessionState::Expired => s.worker_id.is_none(),
        _ => false,
    }
}

/// A CML topology for `def`: `node_count` nodes, its ports spread over them as
/// `tcp:${PORT_<NAME>}` tags (filled in per session by the lab loop).
fn lab_yaml(def: &LabletDefinition) -> String {
    use std::fmt::Write as _;
    let n = def.node_count.max(1) as usize;
    let mut out = format!(
        "# {} {} (generated by ccm demo)\nlab:\n  title: {}\nnodes:\n",
        def.name, def.version, def.name
    );
    for i in 0..n {
        let _ = write!(
            out,
            "  - id: n{i}\n    label: node{i}\n    node_definition: iosv\n"
        );
        let tags: Vec<String> = def
            .port_template
            .iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, p)| format!("      - tcp:{}\n", placeholder_for(&p.name)))
            .collect();
        if !tags.is_empty() {
            out.push_str("    tags:\n");
            for t in tags {
                out.push_str(&t);
            }
        }
    }
    out.push_str("links: []\n");
    out
}
