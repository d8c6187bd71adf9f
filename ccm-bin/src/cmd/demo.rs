//! `ccm demo`: a whole exam day in seconds. The real scheduler and controller loops run on
//! the in-memory backends and a simulated cloud (holding the scenario's fleet), driven by a
//! virtual clock through a scenario of `config/scenarios/`; the controller re-plans every pass
//! (or follows the original's reactive rule with `--scaling reactive`), and a small lab
//! simulator plays the sessions (they start at their slot and stop at its end). It prints
//! launches, bindings, drains and stops as they happen, then the report: sessions served,
//! worker-hours and cost, against the planner's lower bound.

use ccm_core::memory::events::RecordingSink;
use ccm_core::memory::provider::SimulatedProvider;
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::memory::state::MemoryStateStore;
use ccm_core::planner::{load_scenario, plan, Scenario};
use ccm_core::runtime::{
    plan_input, KeyLayout, Runtime, RuntimeSettings, ScalingAction, ScalingMode, StateSnapshot,
    StepReport,
};
use ccm_core::session::{LabletSession, SessionState};
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{Clock, Compare, SpecStore, StateStore, Txn, VirtualClock};
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
    for d in &scenario.definitions {
        spec.insert_definition(d).await?;
    }
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
        store
            .put(&keys.worker(&w.id), serde_json::to_vec(&w)?, None)
            .await?;
        fleet.push(w);
    }
    let sessions = scenario.lablet_sessions();
    for s in &sessions {
        store
            .put(&keys.session(&s.id), serde_json::to_vec(s)?, None)
            .await?;
    }
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
            &StateSnapshot::from_values(0, sessions.clone(), fleet, scenario.definitions.clone()),
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
        .settings(settings)
        .build()?;

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
    let mut lab = LabSimulator::new(&sessions);
    loop {
        let now = clock.now();
        let report = runtime.step().await?;
        narrate(&report, now, &mut tally, &say);
        lab.play(store.as_ref(), &keys, now, &mut tally).await?;
        let workers = list_workers(store.as_ref(), &keys).await?;
        let billed: Vec<&Worker> = workers.iter().filter(|w| w.state.is_billed()).collect();
        tally.peak_workers = tally.peak_workers.max(billed.len());
        let done = now >= last_end && lab.finished() && billed.is_empty();
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
    let unserved = tally.sessions - tally.served.len();

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
}

async fn list_workers(store: &dyn StateStore, keys: &KeyLayout) -> anyhow::Result<Vec<Worker>> {
    let l = store.list(&keys.workers()).await?;
    l.kvs
        .iter()
        .map(|kv| Ok(serde_json::from_slice(&kv.value)?))
        .collect()
}

/// Plays the lab side: a bound session starts at its slot and stops at its end. Each change is
/// one guarded write (a concurrent change by the loops wins, and is retried next step).
struct LabSimulator {
    /// Sessions to start, by slot start.
    starts: BTreeMap<Timestamp, Vec<String>>,
    /// Sessions to stop, by slot end.
    ends: BTreeMap<Timestamp, Vec<String>>,
    /// Each session's slot start (a lab started after it is late).
    slot_start: BTreeMap<String, Timestamp>,
}

impl LabSimulator {
    fn new(sessions: &[LabletSession]) -> Self {
        let mut starts: BTreeMap<Timestamp, Vec<String>> = BTreeMap::new();
        let mut slot_start = BTreeMap::new();
        for s in sessions {
            if let Some(slot) = s.timeslot {
                starts.entry(slot.start).or_default().push(s.id.clone());
                slot_start.insert(s.id.clone(), slot.start);
            }
        }
        LabSimulator {
            starts,
            ends: BTreeMap::new(),
            slot_start,
        }
    }

    fn finished(&self) -> bool {
        self.starts.is_empty() && self.ends.is_empty()
    }

    async fn play(
        &mut self,
        store: &dyn StateStore,
        keys: &KeyLayout,
        now: Timestamp,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let due: Vec<Timestamp> = self.starts.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            let ids = self.starts.remove(&t).unwrap_or_default();
            let mut later = Vec::new();
            for id in ids {
                match self.advance(store, keys, &id, now, true).await? {
                    Advance::Done(end) => {
                        if self.slot_start.get(&id).is_some_and(|&start| now > start) {
                            tally.late.insert(id.clone());
                        }
                        tally.served.insert(id.clone());
                        self.ends.entry(end).or_default().push(id);
                    }
                    Advance::NotYet => later.push(id),
                    Advance::Gone => {}
                }
            }
            if !later.is_empty() {
                // Not bound yet (or a write raced): look again next step.
                self.starts.entry(now).or_default().extend(later);
            }
        }
        let due: Vec<Timestamp> = self.ends.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            let ids = self.ends.remove(&t).unwrap_or_default();
            let mut later = Vec::new();
            for id in ids {
                if let Advance::NotYet = self.advance(store, keys, &id, now, false).await? {
                    later.push(id);
                }
            }
            if !later.is_empty() {
                self.ends.entry(now).or_default().extend(later);
            }
        }
        Ok(())
    }

    /// Starts (`start`) or stops a session with one guarded write.
    async fn advance(
        &self,
        store: &dyn StateStore,
        keys: &KeyLayout,
        id: &str,
        now: Timestamp,
        start: bool,
    ) -> anyhow::Result<Advance> {
        let key = keys.session(id);
        let Some(kv) = store.get(&key).await? else {
            return Ok(Advance::Gone);
        };
        let mut s: LabletSession = serde_json::from_slice(&kv.value)?;
        let path: &[SessionState] = match (start, s.state) {
            (true, SessionState::Scheduled) => &[
                SessionState::Instantiating,
                SessionState::Ready,
                SessionState::Running,
            ],
            (true, SessionState::Pending) => return Ok(Advance::NotYet),
            (false, SessionState::Running) => &[SessionState::Stopping, SessionState::Stopped],
            // Expired, terminated, requeued-and-lost, already stopped: nothing to play.
            _ => return Ok(Advance::Gone),
        };
        for to in path {
            s.transition(*to, now, "lab simulator (ccm demo)")?;
        }
        let txn = Txn::new()
            .when(Compare::unchanged_since(key.clone(), kv.mod_revision))
            .put(key, serde_json::to_vec(&s)?);
        if !store.txn(txn).await?.succeeded {
            return Ok(Advance::NotYet);
        }
        let end = s.timeslot.map_or(now, |t| t.end);
        Ok(Advance::Done(end))
    }
}

/// The outcome of one lab-side change.
enum Advance {
    /// Written; for a start, the slot end to stop at.
    Done(Timestamp),
    /// Not possible yet; retry next step.
    NotYet,
    /// Nothing to do for this session any more.
    Gone,
}
