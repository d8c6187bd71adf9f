//! Phase 2, reuse: a session the previous plan put on a worker stays there when that worker
//! can still take it (stable re-planning). A worker of the previous plan that does not exist
//! yet is opened again under the same id, if its template is still enabled in that region and
//! has room there.

use super::lower::Lowered;
use super::model::{Packing, SessionSpan};
use crate::planner::plan::PriorAssignment;
use std::collections::BTreeMap;

/// Puts the sessions of `lowered.to_place` that keep their previous worker there; returns the
/// others, still in placement order.
pub(super) fn reuse(
    packing: &mut Packing<'_>,
    lowered: &mut Lowered<'_>,
    prior: &BTreeMap<&str, &PriorAssignment>,
) -> Vec<usize> {
    let sessions: &mut [SessionSpan<'_>] = &mut lowered.sessions;
    let mut rest = Vec::with_capacity(lowered.to_place.len());
    for &si in &lowered.to_place {
        let Some(p) = prior.get(sessions[si].id) else {
            rest.push(si);
            continue;
        };
        let w = match lowered.worker_by_id.get(&p.worker_id) {
            Some(&w) => Some(w),
            None => match lowered.template_by_name.get(p.template.as_str()) {
                Some(&t)
                    if packing.templates[t].enabled
                        && packing.templates[t].regions.contains(&p.region)
                        && packing.room(t, &p.region) =>
                {
                    let w = packing.new_worker(p.worker_id.clone(), t, &p.region);
                    lowered.worker_by_id.insert(p.worker_id.clone(), w);
                    Some(w)
                }
                _ => None,
            },
        };
        match w.filter(|&w| packing.can_take(w, &sessions[si]).is_some()) {
            Some(w) => packing.assign(sessions, si, w),
            None => rest.push(si),
        }
    }
    rest
}

/// The previous plan's assignments by session id.
pub(super) fn prior_by_session(previous: &[PriorAssignment]) -> BTreeMap<&str, &PriorAssignment> {
    previous
        .iter()
        .map(|p| (p.session_id.as_str(), p))
        .collect()
}
