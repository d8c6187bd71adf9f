//! Phase 6, explanations: why each session placement left unserved cannot be served, and the
//! earliest start at which it could be.
//!
//! The explanation counts, per rejection kind, the workers that could not take it (new workers
//! without sessions are left out), gives a verdict per template, and sums that up in one
//! sentence: nothing can ever run it, every fitting template is at its cap, the slot starts too
//! soon to boot a new worker, or no worker has room and no template may be launched.

use super::model::{template_rejection, Packing, SessionSpan};
use super::ts;
use crate::placement::filter::{check_dynamic, Rejection};
use crate::planner::plan::{TemplateVerdict, Unserved};
use crate::resources::Load;
use std::collections::{BTreeMap, BTreeSet};

/// Candidate starts tried for the earliest start, at most.
const MAX_PROBES: usize = 4000;

/// The explanation of each of `unserved` (indexes into `sessions`), in that order.
pub(super) fn explain_all(
    packing: &mut Packing<'_>,
    sessions: &[SessionSpan<'_>],
    unserved: &[usize],
) -> Vec<Unserved> {
    unserved
        .iter()
        .map(|&si| explain(packing, &sessions[si]))
        .collect()
}

/// Why `s` cannot be served.
fn explain(packing: &mut Packing<'_>, s: &SessionSpan<'_>) -> Unserved {
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut static_ok_workers = Vec::new();
    for w in 0..packing.workers.len() {
        let class = packing.workers[w].static_class;
        if packing.is_template_class(class) && packing.workers[w].sessions.is_empty() {
            continue;
        }
        let key = match packing.static_rejection(s.req_class, class) {
            Some(r) => r.kind().as_str().to_string(),
            None => {
                static_ok_workers.push(w);
                let pw = &packing.workers[w];
                if s.start < pw.ready_at {
                    "not_ready_in_time".to_string()
                } else {
                    let peak = pw.load.peak(s.start, s.end);
                    let c = pw.capacity;
                    let cap = Load::from_dims([c[0], c[1], c[2], c[3]]);
                    let used = Load::from_dims([peak[0], peak[1], peak[2], peak[3]]);
                    match check_dynamic(&cap, &used, c[4].saturating_sub(peak[4]), s.requirements) {
                        Err(r) => r.kind().as_str().to_string(),
                        Ok(()) => "capacity_over_time".to_string(),
                    }
                }
            }
        };
        *rejected.entry(key).or_insert(0) += 1;
    }
    let mut verdicts = Vec::new();
    let mut fitting: Vec<(usize, String)> = Vec::new();
    let mut capped: Vec<String> = Vec::new();
    let mut first_rejection: Option<String> = None;
    for (t, tpl) in packing.templates.iter().enumerate() {
        let verdict = if !tpl.enabled {
            Some("disabled".to_string())
        } else {
            let regions = packing.regions_for(t, s.requirements);
            if regions.is_empty() {
                Some(
                    Rejection::Region {
                        wanted: s.requirements.region.clone().unwrap_or_default(),
                        actual: tpl.regions.join("|"),
                    }
                    .to_string(),
                )
            } else {
                let mut v = None;
                let mut any_room = false;
                for r in &regions {
                    match template_rejection(tpl, r, s.requirements) {
                        Some(rej) => {
                            v = Some(rej.to_string());
                            break;
                        }
                        None if packing.room(t, r) => {
                            any_room = true;
                            fitting.push((t, r.clone()));
                        }
                        None => {}
                    }
                }
                match v {
                    Some(v) => Some(v),
                    None if !any_room => {
                        let msg = format!(
                            "max_workers_per_region {} reached in {}",
                            tpl.max_workers_per_region.unwrap_or(0),
                            regions.join(", ")
                        );
                        capped.push(format!("{} ({msg})", tpl.name));
                        Some(msg)
                    }
                    None => {
                        let ready = packing.now + i64::from(tpl.startup_minutes) * 60;
                        (s.start < ready).then(|| {
                            format!(
                                "boots in {} min: ready {} after the session needs its worker",
                                tpl.startup_minutes,
                                ts(ready)
                            )
                        })
                    }
                }
            }
        };
        if first_rejection.is_none() && tpl.enabled {
            first_rejection.clone_from(&verdict);
        }
        verdicts.push(TemplateVerdict {
            template: tpl.name.clone(),
            rejection: verdict,
        });
    }
    let earliest = earliest_start(packing, s, &static_ok_workers, &fitting);
    let reason = if static_ok_workers.is_empty() && fitting.is_empty() && capped.is_empty() {
        let first = first_rejection
            .or_else(|| rejected.keys().next().cloned())
            .unwrap_or_else(|| "no templates".to_string());
        format!("no worker or template can ever run it: {first}")
    } else if fitting.is_empty() && !capped.is_empty() && static_ok_workers.is_empty() {
        format!(
            "every fitting template is at its cap: {}",
            capped.join("; ")
        )
    } else {
        let mut parts: Vec<String> = rejected.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        if parts.is_empty() {
            parts.push("no workers".into());
        }
        let boot = fitting
            .iter()
            .map(|(t, _)| packing.templates[*t].startup_minutes)
            .min();
        match boot {
            Some(m) => format!(
                "slot starts too soon to boot a new worker ({m} min) and no worker that is up has room (workers rejected by {})",
                parts.join(", ")
            ),
            None => format!(
                "no worker has room over the slot and no template may be launched (workers rejected by {})",
                parts.join(", ")
            ),
        }
    };
    Unserved {
        session_id: s.id.to_string(),
        definition_id: s.definition_id.to_string(),
        reason,
        workers_rejected: rejected,
        templates: verdicts,
        earliest_start: earliest.map(ts),
    }
}

/// The earliest start within the horizon at which `s` (same length) could be served: on one of
/// `workers` (which pass its static filters) as they are planned, or on a new worker of one of
/// `fitting` once it can have booted. Tries the slot start, the boot times, the workers' ready
/// times and every step of their load, in order, up to [`MAX_PROBES`] of them.
fn earliest_start(
    packing: &mut Packing<'_>,
    s: &SessionSpan<'_>,
    workers: &[usize],
    fitting: &[(usize, String)],
) -> Option<i64> {
    let dur = s.end - s.start;
    let mut cands: BTreeSet<i64> = BTreeSet::new();
    cands.insert(s.start);
    for (t, _) in fitting {
        cands.insert(packing.now + i64::from(packing.templates[*t].startup_minutes) * 60);
    }
    for &w in workers {
        let pw = &packing.workers[w];
        cands.insert(pw.ready_at);
        cands.extend(pw.load.steps().iter().map(|(t, _)| *t));
    }
    let horizon_end = packing.horizon_end;
    for t in cands
        .into_iter()
        .filter(|&t| t >= s.start && t < horizon_end)
        .take(MAX_PROBES)
    {
        let probe = SessionSpan {
            start: t,
            end: t + dur,
            worker: None,
            bound: false,
            ..*s
        };
        if workers
            .iter()
            .any(|&w| packing.can_take(w, &probe).is_some())
        {
            return Some(t);
        }
        if fitting.iter().any(|(tpl, _)| {
            t >= packing.now + i64::from(packing.templates[*tpl].startup_minutes) * 60
        }) {
            return Some(t);
        }
    }
    None
}
