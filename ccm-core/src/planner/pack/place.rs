//! Phase 3, greedy placement: each session still to place, in placement order, goes where it
//! adds the least billed cost per copy of it the worker could still hold.
//!
//! * A worker that can take it and is already billed through the slot costs nothing: the first
//!   such worker wins at once.
//! * Any other worker that can take it is priced by the billed time it would add (kept through
//!   a short gap, or relaunched `lead` before the slot; see
//!   [`Busy::marginal`](crate::planner::profile::Busy::marginal)).
//! * A new worker of each enabled template that boots in time is priced by its whole run: lead,
//!   the cooldown (so an existing worker kept through a gap of up to lead + cooldown wins), and
//!   the slot, in the first region of the template where it passes the static filters and the
//!   template has room.
//!
//! Ties keep the earlier candidate, so an existing worker (a STOPPED one restarted) wins over a
//! new one at the same cost. A session nothing can take is left unserved (explained later).

use super::cap_of_template;
use super::model::{Packing, SessionSpan, StaticClass};
use crate::planner::profile::copies;

/// Where a session goes.
enum Choice {
    /// A worker of the packing (index).
    Worker(usize),
    /// A new worker of a template (index) in a region.
    Launch(usize, String),
}

/// What placement leaves.
pub(super) struct Placed {
    /// Sessions nothing could take, in placement order.
    pub(super) unserved: Vec<usize>,
    /// `movable[si]`: placed here, so the improvement phase may move it.
    pub(super) movable: Vec<bool>,
}

/// Places the sessions `order` (indexes into `sessions`), calling `progress(done, total)` every
/// 512 sessions and at the end.
pub(super) fn place(
    packing: &mut Packing<'_>,
    sessions: &mut [SessionSpan<'_>],
    order: &[usize],
    progress: &mut dyn FnMut(usize, usize),
) -> Placed {
    let total = order.len();
    let mut movable = vec![false; sessions.len()];
    let mut unserved = Vec::new();
    for (n, &si) in order.iter().enumerate() {
        if n % 512 == 0 {
            progress(n, total);
        }
        match choose(packing, &sessions[si]) {
            Some(Choice::Worker(w)) => {
                packing.assign(sessions, si, w);
                movable[si] = true;
            }
            Some(Choice::Launch(t, region)) => {
                let id = packing.fresh_id();
                let w = packing.new_worker(id, t, &region);
                packing.assign(sessions, si, w);
                movable[si] = true;
            }
            None => unserved.push(si),
        }
    }
    progress(total, total);
    Placed { unserved, movable }
}

/// The cheapest place for `s`, by the rules of the module docs.
fn choose(packing: &mut Packing<'_>, s: &SessionSpan<'_>) -> Option<Choice> {
    let mut best: Option<(f64, Choice)> = None;
    for w in 0..packing.workers.len() {
        let Some(free) = packing.can_take(w, s) else {
            continue;
        };
        let pw = &packing.workers[w];
        let extra = pw.busy.marginal(s.start, s.end, &packing.gap_rule(pw));
        if extra <= 0 {
            return Some(Choice::Worker(w));
        }
        let k = copies(&free, &s.need).max(1);
        let score = extra as f64 * pw.price_per_hour / f64::from(k);
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, Choice::Worker(w)));
        }
    }
    for t in 0..packing.templates.len() {
        let tpl = &packing.templates[t];
        let startup = i64::from(tpl.startup_minutes) * 60;
        if !tpl.enabled || s.start < packing.now + startup {
            continue;
        }
        let cap = cap_of_template(tpl);
        let lead = packing.policy.lead_secs(startup);
        let k = copies(&cap, &s.need).max(1);
        // A new instance also pays the cooldown: an existing worker that can take the session
        // with an idle gap up to lead + cooldown wins (the same rule that keeps a worker through
        // such a gap), so the plan never stops one worker to launch another minutes later.
        let overhead = i64::from(packing.policy.cooldown_minutes) * 60;
        let score = ((lead.min(s.start - packing.now) + overhead + (s.end - s.start)) as f64
            * tpl.cost_per_hour_usd)
            / f64::from(k);
        if best.as_ref().is_some_and(|(b, _)| score >= *b) {
            continue;
        }
        for region in packing.regions_for(t, s.requirements) {
            let class = packing.class(StaticClass::Template {
                template: t,
                region: region.clone(),
            });
            if !packing.room(t, &region) || !packing.static_ok(s.req_class, class) {
                continue;
            }
            if s.need.iter().zip(cap).any(|(n, c)| *n > c) {
                continue;
            }
            best = Some((score, Choice::Launch(t, region)));
            break;
        }
    }
    best.map(|(_, c)| c)
}
