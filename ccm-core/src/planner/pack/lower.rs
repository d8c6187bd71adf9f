//! Phase 1, lowering: the input's fleet and sessions become [`WorkerTimeline`]s and
//! [`SessionSpan`]s in seconds, both in id order so that the plan does not depend on the input
//! order.
//!
//! * A worker is usable when it is running, draining, booting, stopped or stopping (not when
//!   terminating, terminated, failed or unknown). One up now (running, draining, booting) is
//!   busy from `now` until it is ready; a stopped or stopping one can be relaunched once the
//!   cooldown since its stop has passed. Every worker not terminated counts against its
//!   template's `max_workers_per_region`.
//! * A session that ended is dropped. One that holds capacity on a worker up now is *bound*:
//!   it is put there as it is and never moved. Other pending (or capacity-holding) sessions are
//!   to be placed, unless they start after the horizon (counted, left for a later plan).
//! * The sessions to place are ordered by start, larger first (by their largest share of the
//!   biggest capacity in any dimension), then id.

use super::model::{Packing, SessionSpan, StaticClass, WorkerTimeline};
use super::{cap_of_template, need_of, secs};
use crate::placement::filter::StaticAttrs;
use crate::planner::plan::{PlanInput, PlannedSession, WorkerOrigin};
use crate::planner::profile::{Busy, Dims, LoadProfile};
use crate::session::SessionState;
use crate::template::{DEFAULT_COST_PER_HOUR_USD, DEFAULT_STARTUP_MINUTES};
use crate::worker::{Worker, WorkerState};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

/// What lowering hands to the later phases.
pub(super) struct Lowered<'a> {
    /// Every session still to run, bound or not, in id order.
    pub(super) sessions: Vec<SessionSpan<'a>>,
    /// The sessions to place (indexes into `sessions`), in placement order.
    pub(super) to_place: Vec<usize>,
    /// Sessions left out because they start after the horizon.
    pub(super) beyond_horizon: usize,
    /// How many of the packing's workers exist now (they come first).
    pub(super) existing_workers: usize,
    /// Index of each worker by id.
    pub(super) worker_by_id: BTreeMap<String, usize>,
    /// Index of each template by name.
    pub(super) template_by_name: BTreeMap<&'a str, usize>,
}

/// Lowers `input` into `packing` (which must be empty).
pub(super) fn lower<'a>(packing: &mut Packing<'a>, input: &'a PlanInput) -> Lowered<'a> {
    let template_by_name: BTreeMap<&str, usize> = input
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    lower_fleet(packing, input, &template_by_name);
    let worker_by_id: BTreeMap<String, usize> = packing
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.clone(), i))
        .collect();
    let existing_workers = packing.workers.len();
    let (sessions, mut to_place, beyond_horizon) = lower_sessions(packing, input, &worker_by_id);
    sort_for_placement(packing, &sessions, &mut to_place);
    // Make the template classes now, so that their indexes do not depend on the search.
    for (t, tpl) in input.templates.iter().enumerate() {
        for r in &tpl.regions {
            packing.class(StaticClass::Template {
                template: t,
                region: r.clone(),
            });
        }
    }
    Lowered {
        sessions,
        to_place,
        beyond_horizon,
        existing_workers,
        worker_by_id,
        template_by_name,
    }
}

/// The fleet, by id, as worker timelines; counts live workers per template and region.
fn lower_fleet(
    packing: &mut Packing<'_>,
    input: &PlanInput,
    template_by_name: &BTreeMap<&str, usize>,
) {
    let now = packing.now;
    let policy = packing.policy;
    let mut fleet: Vec<&Worker> = input.workers.iter().collect();
    fleet.sort_by(|a, b| a.id.cmp(&b.id));
    for w in &fleet {
        packing.taken_ids.insert(w.id.clone());
    }
    for p in &input.previous {
        packing.taken_ids.insert(p.worker_id.clone());
    }
    for w in fleet {
        if w.state != WorkerState::Terminated && w.state != WorkerState::Terminating {
            if let Some(&t) = template_by_name.get(w.template.as_str()) {
                *packing.live.entry((t, w.region.clone())).or_insert(0) += 1;
            }
        }
        let usable = matches!(
            w.state,
            WorkerState::Running
                | WorkerState::Draining
                | WorkerState::Pending
                | WorkerState::Provisioning
                | WorkerState::Starting
                | WorkerState::Stopped
                | WorkerState::Stopping
        );
        if !usable {
            continue;
        }
        let tpl = template_by_name
            .get(w.template.as_str())
            .map(|&i| &input.templates[i]);
        let startup_secs =
            i64::from(tpl.map_or(DEFAULT_STARTUP_MINUTES, |t| t.startup_minutes)) * 60;
        let up_now = !matches!(w.state, WorkerState::Stopped | WorkerState::Stopping);
        // Cooldown: a worker that stopped (or is stopping now) is not started again before
        // `cooldown_minutes` have passed since its stop.
        let cooldown = i64::from(policy.cooldown_minutes) * 60;
        let launch_not_before = match w.state {
            WorkerState::Stopping => now + cooldown,
            WorkerState::Stopped => w.stopped_at.map_or(now, |t| (secs(t) + cooldown).max(now)),
            _ => now,
        };
        let ready_at = match w.state {
            WorkerState::Running | WorkerState::Draining => now,
            WorkerState::Pending | WorkerState::Provisioning | WorkerState::Starting => w
                .boot_started_at
                .or(w.launched_at)
                .map(|l| secs(l) + startup_secs)
                .unwrap_or(now + startup_secs)
                .max(now),
            _ => launch_not_before + startup_secs,
        };
        let static_class = packing.class(StaticClass::Worker(StaticAttrs::of(w)));
        let mut busy = Busy::default();
        if up_now {
            busy.insert(now, ready_at);
        }
        let c = w.capacity.dims();
        packing.workers.push(WorkerTimeline {
            id: w.id.clone(),
            template: w.template.clone(),
            region: w.region.clone(),
            origin: WorkerOrigin::Existing { state: w.state },
            static_class,
            capacity: [c[0], c[1], c[2], c[3], w.ports.range().len()],
            price_per_hour: tpl.map_or(DEFAULT_COST_PER_HOUR_USD, |t| t.cost_per_hour_usd),
            startup_secs,
            lead_secs: policy.lead_secs(startup_secs),
            keep_idle_secs: policy.keep_idle_secs(startup_secs),
            drain_timeout_secs: (tpl.map_or(4.0, |t| t.drain_timeout_hours) * 3600.0) as i64,
            load: LoadProfile::default(),
            busy,
            up_now,
            ready_at,
            launch_not_before,
            draining_since: (w.state == WorkerState::Draining)
                .then(|| w.drain_started_at.map(secs).unwrap_or(now)),
            cancel_drain: false,
            warm: false,
            sessions: Vec::new(),
        });
    }
}

/// The sessions, by id, as spans: bound ones put on their worker, the others listed to place.
/// Returns (sessions, to place, left beyond the horizon).
fn lower_sessions<'a>(
    packing: &mut Packing<'a>,
    input: &'a PlanInput,
    worker_by_id: &BTreeMap<String, usize>,
) -> (Vec<SessionSpan<'a>>, Vec<usize>, usize) {
    let now = packing.now;
    let mut order: Vec<&PlannedSession> = input.sessions.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let mut req_class_of: HashMap<&crate::placement::filter::Requirements, usize> = HashMap::new();
    let mut sessions: Vec<SessionSpan<'_>> = Vec::new();
    let mut to_place: Vec<usize> = Vec::new();
    let mut beyond_horizon = 0;
    for s in order {
        let (start, end) = (secs(s.slot.start), secs(s.slot.end));
        if end <= now {
            continue;
        }
        let req_class = *req_class_of.entry(&s.requirements).or_insert_with(|| {
            packing.req_classes.push(&s.requirements);
            packing.req_classes.len() - 1
        });
        let bound_to = if s.state.holds_capacity() {
            s.worker_id
                .as_ref()
                .and_then(|id| worker_by_id.get(id).copied())
                .filter(|&w| packing.workers[w].up_now)
        } else {
            None
        };
        if bound_to.is_none() && !(s.state == SessionState::Pending || s.state.holds_capacity()) {
            continue;
        }
        if bound_to.is_none() && start >= packing.horizon_end {
            beyond_horizon += 1;
            continue;
        }
        let si = sessions.len();
        sessions.push(SessionSpan {
            id: &s.id,
            definition_id: &s.definition_id,
            requirements: &s.requirements,
            start: start.max(now),
            end,
            need: need_of(&s.requirements),
            req_class,
            worker: None,
            bound: bound_to.is_some(),
        });
        match bound_to {
            Some(w) => {
                // Bound: on its worker as it is (no capacity check, a drain stays a drain).
                let span = &sessions[si];
                let pw = &mut packing.workers[w];
                pw.load.add(&span.need, span.start, end);
                pw.busy.insert(span.start, end);
                pw.sessions.push(si);
                sessions[si].worker = Some(w);
            }
            None => to_place.push(si),
        }
    }
    (sessions, to_place, beyond_horizon)
}

/// Orders `to_place` by start, larger first, then index (= id order).
fn sort_for_placement(packing: &Packing<'_>, sessions: &[SessionSpan<'_>], to_place: &mut [usize]) {
    let mut max_cap = [1u32; 5];
    for c in packing
        .workers
        .iter()
        .map(|w| w.capacity)
        .chain(packing.templates.iter().map(cap_of_template))
    {
        for (m, x) in max_cap.iter_mut().zip(c) {
            *m = (*m).max(x);
        }
    }
    // The largest share of the biggest capacity, in millionths.
    let size = |n: &Dims| -> u64 {
        n.iter()
            .zip(max_cap)
            .map(|(x, m)| u64::from(*x) * 1_000_000 / u64::from(m.max(1)))
            .max()
            .unwrap_or(0)
    };
    to_place.sort_by_key(|&i| (sessions[i].start, Reverse(size(&sessions[i].need)), i));
}
