//! Phase 5, the warm minimum: [`Policy::min_warm_workers`](crate::planner::Policy) workers are
//! kept running through the whole horizon, however idle — those up now first (not draining
//! before draining), then the planned ones with sessions, each group by index. A warm worker
//! that was draining takes sessions again (its drain is cancelled).

use super::model::Packing;

/// Marks the warm workers.
pub(super) fn warm_minimum(packing: &mut Packing<'_>) {
    let mut order: Vec<usize> = (0..packing.workers.len())
        .filter(|&w| packing.workers[w].up_now || !packing.workers[w].sessions.is_empty())
        .collect();
    order.sort_by_key(|&w| {
        let pw = &packing.workers[w];
        (!pw.up_now, pw.draining_since.is_some(), w)
    });
    for &w in order.iter().take(packing.policy.min_warm_workers as usize) {
        let pw = &mut packing.workers[w];
        pw.warm = true;
        if pw.draining_since.take().is_some() {
            pw.cancel_drain = true;
        }
    }
}
