//! Phase 7, emitting the plan: workers with their runs, the scaling actions, the assignments,
//! and the billed cost against the lower bound.
//!
//! * **Runs.** A worker's busy spans are grouped into runs, a gap up to its `keep_idle_secs`
//!   staying inside a run (billed); a warm worker has one run from its first span to the end
//!   of the horizon at least. A run is launched `lead` before its first span (not before the
//!   cooldown allows), or at `now` for the first run of a worker that is up now. A draining
//!   worker's run ends at its drain deadline at the latest; the sessions still on it then are
//!   force-stopped.
//! * **Actions.** Per run: cancel a drain, scale up (a new worker's first run) or restart; then
//!   drain and stop at its end (or force-stop; nothing for a warm worker). Sorted by time,
//!   worker, then force-stop, drain, stop, cancel-drain, restart, scale-up.
//! * **Cost.** Billed from launch to stop of every run ([`cost::report`]), against
//!   [`cost::lower_bound`] for the served sessions.

use super::model::{Packing, SessionSpan};
use super::ts;
use crate::planner::cost::{self, Demand, PriceCap};
use crate::planner::plan::{
    Action, Assignment, Plan, PlannedWorker, PriorAssignment, Run, Unserved, WorkerOrigin,
};
use crate::resources::Load;
use std::collections::BTreeMap;

/// Everything besides the packing that goes into the plan.
pub(super) struct Outcome<'p> {
    /// How many of the packing's workers exist now (emitted even when idle).
    pub(super) existing_workers: usize,
    /// The explanations of the sessions left unserved.
    pub(super) unserved: Vec<Unserved>,
    /// Sessions left out because they start after the horizon.
    pub(super) beyond_horizon: usize,
    /// The previous plan's assignments by session id.
    pub(super) prior: &'p BTreeMap<&'p str, &'p PriorAssignment>,
}

/// The plan of `packing`.
pub(super) fn emit(
    packing: &mut Packing<'_>,
    sessions: &[SessionSpan<'_>],
    outcome: Outcome<'_>,
) -> Plan {
    let (workers, mut actions) = workers_and_actions(packing, sessions, outcome.existing_workers);
    sort_actions(&mut actions);
    let served = served(packing, sessions, &workers, outcome.prior);
    let lb = lower_bound(packing, &served.demands);
    let cost = cost::report(&workers, served.used, lb);
    Plan {
        now: ts(packing.now),
        horizon_end: ts(packing.horizon_end),
        workers,
        assignments: served.assignments,
        actions,
        unserved: outcome.unserved,
        beyond_horizon: outcome.beyond_horizon,
        kept: served.kept,
        moved: served.moved,
        cost,
    }
}

/// The planned workers (existing ones, and new ones with sessions) with their runs, and the
/// actions of those runs (unsorted).
fn workers_and_actions(
    packing: &Packing<'_>,
    sess: &[SessionSpan<'_>],
    existing_workers: usize,
) -> (Vec<PlannedWorker>, Vec<Action>) {
    let now = packing.now;
    let mut workers = Vec::new();
    let mut actions = Vec::new();
    for (wi, pw) in packing.workers.iter().enumerate() {
        if wi >= existing_workers && pw.sessions.is_empty() {
            continue;
        }
        // Group busy spans into runs: (first span start, last span end).
        let mut groups: Vec<(i64, i64)> = Vec::new();
        for &(a, b) in pw.busy.spans() {
            match groups.last_mut() {
                Some(g) if a - g.1 <= pw.keep_idle_secs => g.1 = g.1.max(b),
                _ => groups.push((a, b)),
            }
        }
        if pw.warm {
            if let (Some(first), Some(last)) = (groups.first().copied(), groups.last().copied()) {
                groups = vec![(first.0, last.1.max(packing.horizon_end))];
            }
        }
        let mut runs = Vec::new();
        let mut sessions_sorted: Vec<usize> = pw.sessions.clone();
        sessions_sorted.sort_by_key(|&si| (sess[si].start, si));
        for (gi, &(ga, gb)) in groups.iter().enumerate() {
            let (launch, ready) = if gi == 0 && pw.up_now {
                (now, pw.ready_at)
            } else {
                let l = (ga - pw.lead_secs).max(pw.launch_not_before);
                (l, l + pw.startup_secs)
            };
            let in_run: Vec<String> = sessions_sorted
                .iter()
                .filter(|&&si| sess[si].start >= ga && sess[si].start <= gb && !sess[si].bound)
                .map(|&si| sess[si].id.to_string())
                .collect();
            let mut stop = gb;
            let mut forced = Vec::new();
            if let Some(since) = pw.draining_since {
                let deadline = since + pw.drain_timeout_secs;
                if gb > deadline {
                    stop = deadline.max(now);
                    forced = sessions_sorted
                        .iter()
                        .filter(|&&si| sess[si].end > stop)
                        .map(|&si| sess[si].id.to_string())
                        .collect();
                }
            }
            runs.push(Run {
                launch_at: ts(launch),
                ready_at: ts(ready),
                stop_at: ts(stop),
            });
            if gi == 0 && pw.up_now {
                if pw.cancel_drain {
                    actions.push(Action::CancelDrain {
                        worker_id: pw.id.clone(),
                        at: ts(now),
                    });
                }
            } else if gi == 0 && pw.origin == WorkerOrigin::New {
                actions.push(Action::ScaleUp {
                    worker_id: pw.id.clone(),
                    template: pw.template.clone(),
                    region: pw.region.clone(),
                    launch_at: ts(launch),
                    ready_by: ts(ready),
                    sessions: in_run,
                });
            } else {
                actions.push(Action::Restart {
                    worker_id: pw.id.clone(),
                    launch_at: ts(launch),
                    ready_by: ts(ready),
                    sessions: in_run,
                });
            }
            if pw.warm {
                continue;
            }
            if !forced.is_empty() {
                actions.push(Action::ForceStop {
                    worker_id: pw.id.clone(),
                    at: ts(stop),
                    sessions: forced,
                });
            } else {
                if pw.draining_since.is_none() {
                    actions.push(Action::Drain {
                        worker_id: pw.id.clone(),
                        at: ts(stop),
                    });
                }
                actions.push(Action::Stop {
                    worker_id: pw.id.clone(),
                    at: ts(stop),
                });
            }
        }
        if pw.up_now && groups.is_empty() {
            runs.push(Run {
                launch_at: ts(now),
                ready_at: ts(now),
                stop_at: ts(now),
            });
        }
        let c = pw.capacity;
        workers.push(PlannedWorker {
            id: pw.id.clone(),
            template: pw.template.clone(),
            region: pw.region.clone(),
            origin: pw.origin,
            capacity: Load::from_dims([c[0], c[1], c[2], c[3]]),
            ports: c[4],
            cost_per_hour_usd: pw.price_per_hour,
            runs,
            draining_since: pw.draining_since.map(ts),
            warm: pw.warm,
        });
    }
    (workers, actions)
}

/// Sorts actions by time, worker, then kind (stops before starts).
fn sort_actions(actions: &mut [Action]) {
    let rank = |a: &Action| match a {
        Action::ForceStop { .. } => 0,
        Action::Drain { .. } => 1,
        Action::Stop { .. } => 2,
        Action::CancelDrain { .. } => 3,
        Action::Restart { .. } => 4,
        Action::ScaleUp { .. } => 5,
    };
    actions.sort_by(|x, y| (x.at(), x.worker_id(), rank(x)).cmp(&(y.at(), y.worker_id(), rank(y))));
}

/// The served sessions, as the plan and the cost report see them.
struct Served {
    /// The assignments, in session id order.
    assignments: Vec<Assignment>,
    /// Σ load × seconds of the served sessions, per dimension (cpu, memory, storage, nodes).
    used: [f64; 4],
    /// The served sessions as demand for the lower bound.
    demands: Vec<Demand>,
    /// Sessions of the previous plan still on the same worker.
    kept: usize,
    /// Sessions of the previous plan now elsewhere or unserved.
    moved: usize,
}

/// Assignments, used load and demand of the served sessions; kept and moved against `prior`.
fn served(
    packing: &mut Packing<'_>,
    sess: &[SessionSpan<'_>],
    workers: &[PlannedWorker],
    prior: &BTreeMap<&str, &PriorAssignment>,
) -> Served {
    let now = packing.now;
    let mut out = Served {
        assignments: Vec::new(),
        used: [0f64; 4],
        demands: Vec::new(),
        kept: 0,
        moved: 0,
    };
    let mut fits_of: Vec<Option<Vec<usize>>> = vec![None; packing.req_classes.len()];
    let billed_until: BTreeMap<&str, i64> = workers
        .iter()
        .map(|w| {
            let until = w
                .runs
                .iter()
                .map(|r| r.stop_at.timestamp())
                .max()
                .unwrap_or(now);
            (w.id.as_str(), until)
        })
        .collect();
    for s in sess {
        if let Some(p) = prior.get(s.id) {
            match s.worker {
                Some(w) if packing.workers[w].id == p.worker_id => out.kept += 1,
                _ => out.moved += 1,
            }
        }
        let Some(w) = s.worker else { continue };
        let pw = &packing.workers[w];
        out.assignments.push(Assignment {
            session_id: s.id.to_string(),
            definition_id: s.definition_id.to_string(),
            worker_id: pw.id.clone(),
            start: ts(s.start),
            end: ts(s.end),
            bound: s.bound,
        });
        for (u, n) in out.used.iter_mut().zip(s.need) {
            *u += f64::from(n) * (s.end - s.start) as f64;
        }
        let mut fits = match &fits_of[s.req_class] {
            Some(f) => f.clone(),
            None => {
                let f = packing.fitting_templates(s.req_class);
                fits_of[s.req_class] = Some(f.clone());
                f
            }
        };
        let pw = &packing.workers[w];
        if fits.is_empty() {
            if let Some(t) = packing.templates.iter().position(|t| t.name == pw.template) {
                fits.push(t);
            }
        }
        // A bound session on a worker that is stopped before it ends (a drain past its
        // timeout) is billed only while that worker runs: the bound must not charge more.
        let end = if s.bound {
            billed_until
                .get(pw.id.as_str())
                .map_or(s.end, |&until| s.end.min(until))
        } else {
            s.end
        };
        out.demands.push(Demand {
            need: [s.need[0], s.need[1], s.need[2], s.need[3]],
            start: s.start,
            end,
            fits,
        });
    }
    out
}

/// The lower bound (USD) for `demands` over the templates' prices and capacities.
fn lower_bound(packing: &Packing<'_>, demands: &[Demand]) -> f64 {
    let prices: Vec<PriceCap> = packing
        .templates
        .iter()
        .map(|t| PriceCap {
            price: t.cost_per_hour_usd,
            cap: t.load_capacity().dims(),
        })
        .collect();
    // Before a session, a worker that was not up is billed at least its boot, not the
    // whole launch lead: a restarted stopped worker may come up just in time.
    let boot = packing
        .templates
        .iter()
        .map(|t| t.startup_minutes)
        .min()
        .unwrap_or(0)
        .min(packing.policy.lead_minutes);
    cost::lower_bound(packing.now, demands, &prices, i64::from(boot) * 60)
}
