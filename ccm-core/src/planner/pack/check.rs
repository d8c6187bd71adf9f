//! Post-conditions of the phases, checked in debug builds only (`run` calls them under
//! `cfg!(debug_assertions)`); each panics with what broke. They cost O(n log n) in the number
//! of sessions, so the debug-mode tests can afford them on large inputs.
//!
//! | after | holds |
//! |---|---|
//! | [`lowered`] | every span is non-empty and starts at `now` or later; bound spans sit on their worker, all others are to place, in start order; workers have distinct ids |
//! | [`packed`] (placement and improvement) | every session is on exactly one worker (listed there once) or unserved, never both; a placed session passes its worker's static filters and starts once the worker is ready; no worker is over capacity in any dimension (ports included) at an instant a placed session runs |
//! | [`warm`] | at most `min_warm_workers` warm workers, none draining |
//! | [`emitted`] | sessions served at most once and never also unserved; runs ordered and disjoint; every placed session is inside a run of its worker that is ready by its start; warm workers run to the horizon end; cost ≥ lower bound up to rounding, when the workers are what their templates say |
//!
//! Bound sessions are taken as they are (they may exceed a worker's capacity, or sit on a
//! worker that is still booting): the checks only demand that the planner's own choices add no
//! over-commitment.

use super::lower::Lowered;
use super::model::{template_rejection, Packing, SessionSpan};
use crate::planner::plan::{Plan, PlannedWorker};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Relative slack of the cost-over-lower-bound check (float sums in different orders).
const ROUNDING: f64 = 1e-6;

/// After lowering.
pub(super) fn lowered(packing: &Packing<'_>, lowered: &Lowered<'_>) {
    let sessions = &lowered.sessions;
    assert_eq!(lowered.existing_workers, packing.workers.len());
    assert_eq!(
        lowered.worker_by_id.len(),
        packing.workers.len(),
        "worker ids are not distinct"
    );
    for s in sessions {
        assert!(
            packing.now <= s.start && s.start < s.end,
            "session {}: empty span or before now",
            s.id
        );
        assert_eq!(s.bound, s.worker.is_some(), "session {}: bound", s.id);
    }
    let mut listed = vec![false; sessions.len()];
    for (w, pw) in packing.workers.iter().enumerate() {
        for &si in &pw.sessions {
            assert_eq!(sessions[si].worker, Some(w), "session {}", sessions[si].id);
            assert!(!listed[si], "session {} listed twice", sessions[si].id);
            listed[si] = true;
        }
    }
    for &si in &lowered.to_place {
        assert!(
            !sessions[si].bound && !listed[si],
            "session {} bound and to place",
            sessions[si].id
        );
        listed[si] = true;
    }
    assert!(
        listed.iter().all(|&l| l),
        "a session is neither bound nor to place"
    );
    assert!(
        lowered
            .to_place
            .windows(2)
            .all(|p| sessions[p[0]].start <= sessions[p[1]].start),
        "sessions to place are not in start order"
    );
}

/// After placement and after improvement: `unserved` are the sessions nothing took.
pub(super) fn packed(packing: &Packing<'_>, sessions: &[SessionSpan<'_>], unserved: &[usize]) {
    let mut listed = vec![false; sessions.len()];
    for (w, pw) in packing.workers.iter().enumerate() {
        for &si in &pw.sessions {
            let s = &sessions[si];
            assert_eq!(s.worker, Some(w), "session {} listed on {}", s.id, pw.id);
            assert!(!listed[si], "session {} listed twice", s.id);
            listed[si] = true;
            if !s.bound {
                assert!(
                    s.start >= pw.ready_at,
                    "session {} starts before {} is ready",
                    s.id,
                    pw.id
                );
            }
        }
        no_over_commit(pw, sessions);
    }
    let mut static_ok: HashMap<(usize, usize), bool> = HashMap::new();
    for (si, s) in sessions.iter().enumerate() {
        assert_eq!(
            listed[si],
            s.worker.is_some(),
            "session {} on a worker that does not list it",
            s.id
        );
        if let (Some(w), false) = (s.worker, s.bound) {
            let class = packing.workers[w].static_class;
            let ok = *static_ok
                .entry((s.req_class, class))
                .or_insert_with(|| packing.static_rejection(s.req_class, class).is_none());
            assert!(
                ok,
                "session {} fails the static filters of its worker",
                s.id
            );
        }
    }
    for &si in unserved {
        let s = &sessions[si];
        assert!(s.worker.is_none(), "session {} served and unserved", s.id);
        assert!(!listed[si], "session {} unserved twice", s.id);
        listed[si] = true;
    }
    assert!(
        listed.iter().all(|&l| l),
        "a session is neither on a worker nor unserved"
    );
}

/// No dimension of `pw` is over capacity at an instant when one of its placed (not bound)
/// sessions runs: a sweep over the sessions' starts and ends (ends first at equal times).
fn no_over_commit(pw: &super::model::WorkerTimeline, sessions: &[SessionSpan<'_>]) {
    let mut events: Vec<(i64, bool, usize)> = Vec::with_capacity(pw.sessions.len() * 2);
    for &si in &pw.sessions {
        events.push((sessions[si].start, true, si));
        events.push((sessions[si].end, false, si));
    }
    events.sort_unstable();
    let mut load = [0u64; 5];
    let mut placed_running = 0usize;
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0 == t {
            let (_, starts, si) = events[i];
            let s = &sessions[si];
            for (l, n) in load.iter_mut().zip(s.need) {
                if starts {
                    *l += u64::from(n);
                } else {
                    *l -= u64::from(n);
                }
            }
            if !s.bound {
                if starts {
                    placed_running += 1;
                } else {
                    placed_running -= 1;
                }
            }
            i += 1;
        }
        if placed_running > 0 {
            for (d, (l, c)) in load.iter().zip(pw.capacity).enumerate() {
                assert!(
                    *l <= u64::from(c),
                    "worker {} over capacity in dimension {d} at {t}: {l} > {c}",
                    pw.id
                );
            }
        }
    }
}

/// After the warm minimum.
pub(super) fn warm(packing: &Packing<'_>) {
    let warm: Vec<_> = packing.workers.iter().filter(|w| w.warm).collect();
    assert!(warm.len() <= packing.policy.min_warm_workers as usize);
    for w in warm {
        assert!(w.draining_since.is_none(), "warm worker {} drains", w.id);
        assert!(
            w.up_now || !w.sessions.is_empty(),
            "warm worker {} idle",
            w.id
        );
    }
}

/// After emitting `plan`.
pub(super) fn emitted(packing: &Packing<'_>, sessions: &[SessionSpan<'_>], plan: &Plan) {
    let mut served = BTreeSet::new();
    for a in &plan.assignments {
        assert!(
            served.insert(a.session_id.as_str()),
            "{} served twice",
            a.session_id
        );
    }
    for u in &plan.unserved {
        assert!(
            !served.contains(u.session_id.as_str()),
            "{} served and unserved",
            u.session_id
        );
    }
    let workers: BTreeMap<&str, &PlannedWorker> =
        plan.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    for w in &plan.workers {
        assert!(
            w.runs
                .windows(2)
                .all(|p| p[0].launch_at <= p[0].ready_at && p[0].stop_at <= p[1].launch_at),
            "{}: runs out of order or overlapping",
            w.id
        );
        if w.warm {
            assert!(
                w.runs.last().is_some_and(|r| r.stop_at >= plan.horizon_end),
                "warm worker {} stops before the horizon end",
                w.id
            );
        }
    }
    for a in plan.assignments.iter().filter(|a| !a.bound) {
        let w = workers.get(a.worker_id.as_str());
        let Some(w) = w else {
            panic!("{} on unknown worker {}", a.session_id, a.worker_id)
        };
        // The latest run ready by the start is the only one that can hold the session.
        let i = w.runs.partition_point(|r| r.ready_at <= a.start);
        let run = i.checked_sub(1).map(|i| &w.runs[i]);
        assert!(
            run.is_some_and(|r| r.launch_at <= r.ready_at
                && r.stop_at >= a.end
                && r.launch_at >= plan.now),
            "{} on {} is not inside a run ready by its start: {:?}",
            a.session_id,
            w.id,
            w.runs
        );
    }
    if bound_applies(packing, sessions) {
        let (cost, lb) = (plan.cost.cost_usd, plan.cost.lower_bound_usd);
        assert!(
            cost + ROUNDING * (1.0 + lb) >= lb,
            "cost {cost} below the lower bound {lb}"
        );
    }
}

/// Whether the lower bound holds for this packing: every worker with a session is what its
/// template says (a known, enabled template; capacity no larger than the template's) and every
/// served session could run on a new worker of its worker's template in that region. A fleet
/// that departs from its templates may beat a bound computed from the templates.
fn bound_applies(packing: &Packing<'_>, sessions: &[SessionSpan<'_>]) -> bool {
    let mut template_of = Vec::with_capacity(packing.workers.len());
    for pw in &packing.workers {
        let t = packing
            .templates
            .iter()
            .position(|t| t.name == pw.template && t.enabled);
        let conforms = t.filter(|&t| {
            let cap = packing.templates[t].load_capacity().dims();
            pw.capacity.iter().zip(cap).all(|(c, tc)| *c <= tc)
        });
        if conforms.is_none() && !pw.sessions.is_empty() {
            return false;
        }
        template_of.push(conforms);
    }
    let mut fits: HashMap<(usize, usize), bool> = HashMap::new();
    sessions.iter().all(|s| {
        let Some(w) = s.worker else { return true };
        let Some(t) = template_of[w] else {
            return false;
        };
        *fits.entry((s.req_class, w)).or_insert_with(|| {
            let tpl = &packing.templates[t];
            let region = &packing.workers[w].region;
            tpl.regions.contains(region)
                && template_rejection(tpl, region, s.requirements).is_none()
        })
    })
}
