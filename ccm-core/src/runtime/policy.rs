//! The reactive scaling rule ([`super::ScalingMode::Reactive`], kept to compare with the
//! planner): launch the cheapest fitting template only for due sessions that fit nowhere,
//! counting booting workers, draining workers (cancel the drain) and stopped workers (start
//! them) as capacity first; drain idle RUNNING workers after the grace; stop empty draining
//! workers; force-stop after the drain timeout; terminate failed workers.

use super::settings::RuntimeSettings;
use super::snapshot::StateSnapshot;
use crate::placement::filter::{
    check_static, check_template, template_ami_name, template_cml_version, Requirements, StaticView,
};
use crate::placement::{Choice, Fleet, Scoring};
use crate::session::{LabletSession, SessionState};
use crate::template::WorkerTemplate;
use crate::timeslot::{saturating_add, Timestamp};
use crate::worker::{Worker, WorkerState};
use std::collections::{BTreeMap, BTreeSet};

/// One thing the controller does to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalingAction {
    /// Launch a new worker.
    Launch {
        /// New worker id.
        worker_id: String,
        /// Template name.
        template: String,
        /// Region.
        region: String,
        /// Node definitions its image is chosen for.
        node_definitions: BTreeSet<String>,
        /// Why.
        reason: String,
    },
    /// Start a STOPPED worker.
    Start {
        /// Worker id.
        worker_id: String,
        /// Why.
        reason: String,
    },
    /// Put a DRAINING worker back to RUNNING.
    CancelDrain {
        /// Worker id.
        worker_id: String,
        /// Why.
        reason: String,
    },
    /// Stop accepting sessions on an idle RUNNING worker.
    Drain {
        /// Worker id.
        worker_id: String,
        /// Why.
        reason: String,
    },
    /// Stop a DRAINING worker (its remaining sessions are terminated when `force`).
    Stop {
        /// Worker id.
        worker_id: String,
        /// Sessions still on it are terminated (drain timeout).
        force: bool,
        /// Why.
        reason: String,
    },
    /// Terminate a FAILED worker.
    Terminate {
        /// Worker id.
        worker_id: String,
        /// Why.
        reason: String,
    },
}

impl ScalingAction {
    /// The worker acted on.
    pub fn worker_id(&self) -> &str {
        match self {
            ScalingAction::Launch { worker_id, .. }
            | ScalingAction::Start { worker_id, .. }
            | ScalingAction::CancelDrain { worker_id, .. }
            | ScalingAction::Drain { worker_id, .. }
            | ScalingAction::Stop { worker_id, .. }
            | ScalingAction::Terminate { worker_id, .. } => worker_id,
        }
    }
}

/// PENDING sessions due at `now` (not past the expiry grace), in binding order.
pub(crate) fn due_sessions<'a>(
    snap: &'a StateSnapshot,
    now: Timestamp,
    settings: &RuntimeSettings,
) -> Vec<&'a LabletSession> {
    let mut due: Vec<&LabletSession> = snap
        .sessions
        .values()
        .map(|s| &s.value)
        .filter(|s| s.state == SessionState::Pending)
        .filter(|s| {
            s.timeslot.is_none_or(|t| {
                now >= t.due_at(settings.lead_time) && now <= t.expires_at(settings.pending_grace)
            })
        })
        .collect();
    due.sort_by(|a, b| {
        let ka = a.timeslot.map_or(a.created_at, |t| t.start);
        let kb = b.timeslot.map_or(b.created_at, |t| t.start);
        ka.cmp(&kb).then_with(|| a.id.cmp(&b.id))
    });
    due
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ready,
    Draining,
    Stopped,
    Planned,
}

fn idle_since(w: &Worker) -> Option<Timestamp> {
    [w.last_activity_at, w.ready_at, w.launched_at]
        .into_iter()
        .flatten()
        .max()
}

type Due<'a> = (&'a LabletSession, Requirements);

/// How the rule places due sessions on its working copy of the fleet: bin-packing with
/// every dimension weighted 1 (fullest feasible worker after placement first, ties by
/// worker id), whatever the binder's [`RuntimeSettings::scoring`].
const SCORING: Scoring = Scoring {
    strategy: crate::placement::Strategy::BinPack,
    weights: crate::placement::Weights {
        cpu: 1,
        memory: 1,
        storage: 1,
        nodes: 1,
    },
};

/// A copy of `w` the working fleet may place on: a booting, draining or stopped worker is
/// counted as RUNNING capacity.
fn as_running(w: &Worker) -> Worker {
    let mut c = w.clone();
    c.state = WorkerState::Running;
    c
}

/// Places and commits one due session on the working fleet; whether it fit. The chosen
/// worker's index is noted in `used`.
fn bind(fleet: &mut Fleet, used: &mut BTreeSet<usize>, (s, req): &Due<'_>) -> bool {
    match fleet.place(req) {
        Ok(c) if fleet.commit(&s.id, &c).is_ok() => {
            used.insert(c.worker_index);
            true
        }
        _ => false,
    }
}

/// Places each item; returns the ones that fit nowhere.
fn try_all<'a, 'b>(
    fleet: &mut Fleet,
    used: &mut BTreeSet<usize>,
    list: Vec<&'b Due<'a>>,
) -> Vec<&'b Due<'a>> {
    list.into_iter()
        .filter(|item| !bind(fleet, used, item))
        .collect()
}

/// The highest number used so far in worker ids `<template>-NNNN`, per template (new workers
/// are numbered on from there).
pub(crate) fn worker_numbering(snap: &StateSnapshot) -> BTreeMap<String, u32> {
    let mut next_index: BTreeMap<String, u32> = BTreeMap::new();
    for w in snap.workers.values().map(|v| &v.value) {
        if let Some(n) =
            w.id.strip_prefix(&format!("{}-", w.template))
                .and_then(|n| n.parse::<u32>().ok())
        {
            let e = next_index.entry(w.template.clone()).or_insert(0);
            *e = (*e).max(n);
        }
    }
    next_index
}

/// The actions of the reactive rule for `snap` at `now`.
pub(crate) fn decide(
    now: Timestamp,
    snap: &StateSnapshot,
    templates: &[WorkerTemplate],
    settings: &RuntimeSettings,
) -> Vec<ScalingAction> {
    let mut actions = Vec::new();
    let due = due_sessions(snap, now, settings);
    let by_name: BTreeMap<&str, &WorkerTemplate> =
        templates.iter().map(|t| (t.name.as_str(), t)).collect();

    // Tier 1: RUNNING and booting workers (booting ones count as capacity: no double launch).
    // `kinds[i]` is the worker at index `i` of the working fleet.
    let mut kinds: Vec<(String, Kind)> = Vec::new();
    let mut ready: Vec<Worker> = Vec::new();
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for w in snap.workers.values().map(|v| &v.value) {
        if (w.state == WorkerState::Running || w.state.is_coming_up()) && ids.insert(&w.id) {
            ready.push(as_running(w));
            kinds.push((w.id.clone(), Kind::Ready));
        }
    }
    let mut fleet = match Fleet::new(ready, SCORING) {
        Ok(f) => f,
        // Unreachable: the ids were made unique above.
        Err(e) => {
            tracing::warn!(error = %e, "reactive rule: no working fleet");
            return actions;
        }
    };
    // Adds a later tier's worker; a worker whose id is already in the fleet is left out.
    let add = |fleet: &mut Fleet, kinds: &mut Vec<(String, Kind)>, w: Worker, k: Kind| {
        let id = w.id.clone();
        match fleet.add_worker(w) {
            Ok(i) => {
                kinds.push((id, k));
                Some(i)
            }
            Err(e) => {
                tracing::debug!(error = %e, "reactive rule: worker left out");
                None
            }
        }
    };
    let reqs: Vec<(&LabletSession, Requirements)> = due
        .iter()
        .filter_map(|s| {
            snap.definitions
                .get(&s.definition_id)
                .map(|d| (*s, Requirements::of(d, s.region.as_deref())))
        })
        .collect();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut unfit: Vec<&(&LabletSession, Requirements)> = Vec::new();
    unfit.extend(try_all(&mut fleet, &mut used, reqs.iter().collect()));

    // Tier 2: cancel drains.  Tier 3: start stopped workers of enabled templates.
    for (state, kind) in [
        (WorkerState::Draining, Kind::Draining),
        (WorkerState::Stopped, Kind::Stopped),
    ] {
        if unfit.is_empty() {
            break;
        }
        for w in snap.workers.values().map(|v| &v.value) {
            let enabled = by_name.get(w.template.as_str()).is_none_or(|t| t.enabled);
            if w.state == state && enabled {
                add(&mut fleet, &mut kinds, as_running(w), kind);
            }
        }
        unfit = try_all(&mut fleet, &mut used, unfit);
    }

    // Tier 4: new workers of the cheapest enabled template that fits.
    let node_defs: BTreeSet<String> = unfit
        .iter()
        .flat_map(|(_, r)| r.node_definitions.iter().cloned())
        .collect();
    let mut next_index = worker_numbering(snap);
    let mut live: BTreeMap<(String, String), u32> = BTreeMap::new();
    for w in snap.workers.values().map(|v| &v.value) {
        if !matches!(w.state, WorkerState::Terminated | WorkerState::Stopped) {
            *live
                .entry((w.template.clone(), w.region.clone()))
                .or_default() += 1;
        }
    }
    for item in unfit {
        if bind(&mut fleet, &mut used, item) {
            continue;
        }
        let (s, req) = item;
        let mut best: Option<(&WorkerTemplate, String)> = None;
        for t in templates.iter().filter(|t| t.enabled) {
            let regions: Vec<String> =
                match s.region.clone().or_else(|| settings.default_region.clone()) {
                    Some(r) => vec![r],
                    None => t.regions.clone(),
                };
            let Some(region) = regions.into_iter().find(|r| {
                check_template(t, r, req).is_ok()
                    && t.max_workers_per_region.is_none_or(|m| {
                        live.get(&(t.name.clone(), r.clone())).copied().unwrap_or(0) < m
                    })
            }) else {
                continue;
            };
            let cheaper = best.as_ref().is_none_or(|(b, _)| {
                t.cost_per_hour_usd < b.cost_per_hour_usd
                    || (t.cost_per_hour_usd == b.cost_per_hour_usd && t.name < b.name)
            });
            if cheaper {
                best = Some((t, region));
            }
        }
        let Some((t, region)) = best else {
            tracing::debug!(session = %s.id, "no enabled template fits");
            continue;
        };
        let n = next_index.entry(t.name.clone()).or_insert(0);
        *n += 1;
        let id = format!("{}-{:04}", t.name, n);
        let mut w = Worker::from_template(
            id.clone(),
            t,
            region.clone(),
            WorkerState::Running,
            template_cml_version(t),
            template_ami_name(t),
        );
        w.node_definitions = node_defs.clone();
        *live.entry((t.name.clone(), region.clone())).or_default() += 1;
        // The session goes to the worker launched for it (its template was checked above).
        let score = SCORING.score_after(&w.capacity, &w.allocated, &req.load);
        if let Some(i) = add(&mut fleet, &mut kinds, w, Kind::Planned) {
            let choice = Choice::new(&fleet.workers()[i], i, score, req);
            if fleet.commit(&s.id, &choice).is_ok() {
                used.insert(i);
            }
        }
        actions.push(ScalingAction::Launch {
            worker_id: id,
            template: t.name.clone(),
            region,
            node_definitions: node_defs.clone(),
            reason: format!("session {} is due and fits no worker", s.id),
        });
    }
    for i in &used {
        let (id, kind) = &kinds[*i];
        match kind {
            Kind::Draining => actions.push(ScalingAction::CancelDrain {
                worker_id: id.clone(),
                reason: "due sessions need its capacity".into(),
            }),
            Kind::Stopped => actions.push(ScalingAction::Start {
                worker_id: id.clone(),
                reason: "due sessions need its capacity".into(),
            }),
            Kind::Ready | Kind::Planned => {}
        }
    }
    let wanted: BTreeSet<&str> = used.iter().map(|i| kinds[*i].0.as_str()).collect();

    // Scale down.
    let soon: Vec<Requirements> = snap
        .sessions
        .values()
        .map(|s| &s.value)
        .filter(|s| s.state == SessionState::Pending)
        .filter(|s| {
            s.timeslot.is_none_or(|t| {
                t.due_at(settings.lead_time) <= saturating_add(now, settings.scale_down_grace)
                    && now <= t.expires_at(settings.pending_grace)
            })
        })
        .filter_map(|s| {
            snap.definitions
                .get(&s.definition_id)
                .map(|d| Requirements::of(d, s.region.as_deref()))
        })
        .collect();
    for w in snap.workers.values().map(|v| &v.value) {
        if wanted.contains(w.id.as_str()) {
            continue;
        }
        let busy = snap.busy(&w.id);
        match w.state {
            WorkerState::Running if !busy => {
                let idle_long = idle_since(w).is_none_or(|t| now - t >= settings.scale_down_grace);
                let needed = soon.iter().any(|r| {
                    check_static(StaticView::of(w), r).is_ok() && r.load.fits_in(&w.capacity)
                });
                if idle_long && !needed {
                    actions.push(ScalingAction::Drain {
                        worker_id: w.id.clone(),
                        reason: format!(
                            "idle for at least {} min and nothing due within the grace",
                            settings.scale_down_grace.num_minutes()
                        ),
                    });
                }
            }
            WorkerState::Draining if !busy => actions.push(ScalingAction::Stop {
                worker_id: w.id.clone(),
                force: false,
                reason: "drained: no session left".into(),
            }),
            WorkerState::Draining | WorkerState::Failed => {
                actions.extend(past_its_end(w, &by_name, now));
            }
            _ => {}
        }
    }
    actions
}

/// The end of a worker whatever a plan says: a forced stop once its drain timeout passed
/// (terminating what is left), a terminate once it FAILED.
pub(crate) fn past_its_end(
    w: &Worker,
    templates: &BTreeMap<&str, &WorkerTemplate>,
    now: Timestamp,
) -> Option<ScalingAction> {
    match w.state {
        WorkerState::Draining => {
            let hours = templates
                .get(w.template.as_str())
                .map_or(4.0, |t| t.drain_timeout_hours);
            let limit = crate::template::drain_timeout(hours);
            w.drain_started_at
                .is_some_and(|d| now - d >= limit)
                .then(|| ScalingAction::Stop {
                    worker_id: w.id.clone(),
                    force: true,
                    reason: format!("drain timeout of {hours} h passed"),
                })
        }
        WorkerState::Failed => Some(ScalingAction::Terminate {
            worker_id: w.id.clone(),
            reason: "worker failed".into(),
        }),
        _ => None,
    }
}
