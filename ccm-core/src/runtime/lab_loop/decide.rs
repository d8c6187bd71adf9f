//! The lab loop's decision: a pure function of one session, its worker, what CML said about
//! the worker's labs and `now`.

use crate::runtime::RuntimeSettings;
use crate::session::{LabStep, LabletSession, SessionState};
use crate::store::{LabDetails, LabError, LabState, LabSummary};
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use std::collections::BTreeSet;

/// What CML said about a session's worker and lab in this pass.
#[derive(Debug, Clone, Copy)]
pub struct LabsKnown<'a> {
    /// The worker's labs (`Err`: the listing failed, with why); `None`: not listed.
    pub labs: Option<&'a Result<Vec<LabSummary>, LabError>>,
    /// The session's own lab (`None`: not asked).
    pub own: Option<&'a Result<LabDetails, LabError>>,
    /// Lab ids on this worker held by other sessions (never reused, never counted as spare).
    pub claimed: &'a BTreeSet<String>,
}

/// What the lab loop asks CML before it decides about a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The list of the worker's labs.
    pub labs: bool,
    /// The session's own lab.
    pub own: bool,
}

/// The next step for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabAction {
    /// Not the lab loop's business (PENDING, ended, no lab to clean up).
    Nothing,
    /// Nothing to do yet.
    Wait {
        /// When something is due (`None`: when CML's answer changes).
        until: Option<Timestamp>,
        /// Why, for logs.
        why: &'static str,
    },
    /// SCHEDULED → INSTANTIATING (its time came and the worker's CML answers).
    Instantiate,
    /// Import the definition's lab YAML, ports filled in, under the session's title.
    Import,
    /// A lab with the session's title exists (imported before a lost answer or a failover):
    /// take it instead of importing again.
    Adopt {
        /// CML's lab id.
        lab_id: String,
    },
    /// A wiped lab of the same definition on the worker, held by nobody: take it.
    Reuse {
        /// CML's lab id.
        lab_id: String,
    },
    /// Write the port tags into the lab's nodes and start it.
    Prepare,
    /// Every node booted: INSTANTIATING → READY.
    Ready,
    /// The slot started (or an ASAP session is ready): READY → RUNNING.
    Run,
    /// The slot ended before the lab was used: → EXPIRED (then stopped).
    Expire {
        /// Why.
        reason: String,
    },
    /// The session's time is up: → STOPPING, capacity and ports released in the same write.
    BeginStop {
        /// Why.
        reason: String,
    },
    /// Stop the lab's nodes.
    StopLab,
    /// Wipe the stopped lab (kept for reuse).
    WipeLab,
    /// Delete the wiped lab (the worker keeps enough spare labs).
    DeleteLab,
    /// The lab is stopped and wiped (or gone): STOPPING → STOPPED (a TERMINATED session only
    /// records it).
    Released,
    /// STOPPED → ARCHIVED.
    Archive,
    /// The session's lab vanished from CML during instantiation: forget it (counts as a failed
    /// attempt) and acquire another.
    Forget {
        /// Why.
        reason: String,
    },
    /// CML failed to answer what the decision needed: a failed attempt, retried after a back-off.
    Failed {
        /// Why.
        reason: String,
    },
    /// The retries are used up: requeue (SCHEDULED → PENDING), end the session (TERMINATED,
    /// capacity and ports released) or, when it already ended, leave the lab alone.
    GiveUp {
        /// Why.
        reason: String,
    },
}

fn is_in_use(s: SessionState) -> bool {
    matches!(
        s,
        SessionState::Running | SessionState::Collecting | SessionState::Grading
    )
}

/// When a session's lab must be stopped: its slot end and/or `max_duration_minutes` after it
/// started running (the earlier of the two); `None` = no end known.
pub fn end_of_use(s: &LabletSession, max_duration_minutes: u32) -> Option<Timestamp> {
    let by_slot = s.timeslot.map(|t| t.end);
    let by_max = (max_duration_minutes > 0)
        .then(|| {
            s.entered(SessionState::Running).map(|at| {
                crate::timeslot::saturating_add(
                    at,
                    chrono::Duration::minutes(i64::from(max_duration_minutes)),
                )
            })
        })
        .flatten();
    match (by_slot, by_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When a SCHEDULED session's lab is instantiated: `slot start − instantiation`, at once for an
/// ASAP session.
pub fn instantiate_at(s: &LabletSession, settings: &RuntimeSettings) -> Option<Timestamp> {
    s.timeslot.map(|t| t.start - settings.instantiation())
}

/// Whether the session holds a lab the loop must still tear down (an ended session's lab).
fn tearing_down(s: &LabletSession) -> bool {
    match s.state {
        SessionState::Stopping => true,
        SessionState::Terminated => s.lab.as_ref().is_some_and(|p| p.holds_lab()),
        _ => false,
    }
}

/// What [`decide`] will look at for `s` (so the loop asks CML only that).
pub fn needs(s: &LabletSession, now: Timestamp, settings: &RuntimeSettings) -> Needs {
    let p = s.lab.as_ref();
    if p.is_some_and(|p| p.retry_at.is_some_and(|t| now < t)) {
        return Needs::default();
    }
    match s.state {
        SessionState::Scheduled => Needs {
            labs: instantiate_at(s, settings).is_none_or(|t| now >= t),
            own: false,
        },
        SessionState::Instantiating => match p.and_then(|p| p.lab_id.as_ref()) {
            None => Needs {
                labs: true,
                own: false,
            },
            Some(_) => Needs {
                labs: false,
                own: true,
            },
        },
        _ if tearing_down(s) => Needs {
            labs: p.is_some_and(|p| p.lab_id.is_some()),
            own: p.is_some_and(|p| p.lab_id.is_some()),
        },
        _ => Needs::default(),
    }
}

/// The next step for session `s` on `worker` at `now` (see [`LabAction`]). Pure: the loop
/// gathers `known` as [`needs`] says, then carries the action out.
pub fn decide(
    s: &LabletSession,
    worker: Option<&Worker>,
    known: LabsKnown<'_>,
    max_duration_minutes: u32,
    now: Timestamp,
    settings: &RuntimeSettings,
) -> LabAction {
    let p = s.lab.as_ref();
    let attempts = p.map_or(0, |p| p.attempts);
    let give_up_reason = || {
        let last = p.map_or("", |p| p.last_error.as_str());
        format!("lab step failed {attempts} times; last: {last}")
    };
    let backing_off = p.and_then(|p| p.retry_at).filter(|t| now < *t);
    match s.state {
        SessionState::Pending | SessionState::Archived => LabAction::Nothing,
        SessionState::Scheduled => {
            if let Some(t) = instantiate_at(s, settings).filter(|t| now < *t) {
                return LabAction::Wait {
                    until: Some(t),
                    why: "instantiation not due",
                };
            }
            if worker.is_none() {
                return LabAction::Wait {
                    until: None,
                    why: "worker unknown (the controller requeues)",
                };
            }
            if p.is_some_and(|p| Some(&p.worker_id) == s.worker_id.as_ref())
                && attempts >= settings.lab_max_attempts
            {
                return LabAction::GiveUp {
                    reason: give_up_reason(),
                };
            }
            if let Some(t) = backing_off {
                return LabAction::Wait {
                    until: Some(t),
                    why: "backing off",
                };
            }
            match known.labs {
                Some(Ok(_)) => LabAction::Instantiate,
                Some(Err(e)) => LabAction::Failed {
                    reason: format!("worker CML does not answer: {e}"),
                },
                None => LabAction::Wait {
                    until: None,
                    why: "labs not listed",
                },
            }
        }
        SessionState::Instantiating => {
            if attempts >= settings.lab_max_attempts {
                return LabAction::GiveUp {
                    reason: give_up_reason(),
                };
            }
            if let Some(since) = s.entered(SessionState::Instantiating) {
                let limit = crate::timeslot::saturating_add(since, settings.lab_boot_timeout);
                if now >= limit {
                    return LabAction::GiveUp {
                        reason: format!(
                            "lab not ready {} min after instantiation began",
                            settings.lab_boot_timeout.num_minutes()
                        ),
                    };
                }
            }
            if let Some(end) = end_of_use(s, max_duration_minutes).filter(|e| now >= *e) {
                return LabAction::Expire {
                    reason: format!("slot ended at {end} before the lab was ready"),
                };
            }
            if let Some(t) = backing_off {
                return LabAction::Wait {
                    until: Some(t),
                    why: "backing off",
                };
            }
            let step = p.map_or(LabStep::Acquire, |p| p.step);
            match p.and_then(|p| p.lab_id.as_ref()) {
                None => acquire(s, known, now, settings),
                Some(_) => match known.own {
                    None => LabAction::Wait {
                        until: None,
                        why: "lab not read",
                    },
                    Some(Err(LabError::NotFound { .. })) => LabAction::Forget {
                        reason: "the lab vanished from the worker".into(),
                    },
                    Some(Err(e)) => LabAction::Failed {
                        reason: e.to_string(),
                    },
                    Some(Ok(d)) => {
                        if step == LabStep::Boot && d.is_booted() {
                            LabAction::Ready
                        } else if step == LabStep::Boot && d.state == LabState::Started {
                            LabAction::Wait {
                                until: None,
                                why: "nodes booting",
                            }
                        } else {
                            LabAction::Prepare
                        }
                    }
                },
            }
        }
        SessionState::Ready => {
            if let Some(end) = end_of_use(s, max_duration_minutes).filter(|e| now >= *e) {
                return LabAction::Expire {
                    reason: format!("slot ended at {end} before the owner connected"),
                };
            }
            match s.timeslot {
                Some(t) if now < t.start => LabAction::Wait {
                    until: Some(t.start),
                    why: "slot not started",
                },
                _ => LabAction::Run,
            }
        }
        state if is_in_use(state) => match end_of_use(s, max_duration_minutes) {
            Some(end) if now >= end => LabAction::BeginStop {
                reason: format!("time up at {end}"),
            },
            until => LabAction::Wait {
                until,
                why: "in use",
            },
        },
        SessionState::Expired => {
            if s.worker_id.is_some() {
                LabAction::BeginStop {
                    reason: "expired".into(),
                }
            } else {
                LabAction::Nothing
            }
        }
        SessionState::Stopped => LabAction::Archive,
        _ if tearing_down(s) => teardown(
            s,
            known,
            now,
            attempts,
            settings,
            backing_off,
            give_up_reason,
        ),
        _ => LabAction::Nothing,
    }
}

fn acquire(
    s: &LabletSession,
    known: LabsKnown<'_>,
    now: Timestamp,
    settings: &RuntimeSettings,
) -> LabAction {
    let Some(p) = s.lab.as_ref() else {
        return LabAction::Import;
    };
    // An import sent by an earlier leader whose outcome nobody recorded may still be under
    // way: its lab appears under the title when CML finishes. Import again only after the
    // import timeout.
    let pending_import = p
        .import_started_at
        .map(|at| crate::timeslot::saturating_add(at, settings.lab_import_timeout))
        .filter(|until| now < *until);
    match known.labs {
        None => LabAction::Wait {
            until: None,
            why: "labs not listed",
        },
        Some(Err(e)) => LabAction::Failed {
            reason: e.to_string(),
        },
        Some(Ok(labs)) => {
            if let Some(l) = labs.iter().find(|l| l.title == p.title) {
                return LabAction::Adopt {
                    lab_id: l.id.0.clone(),
                };
            }
            let spare = labs
                .iter()
                .filter(|l| {
                    l.state == LabState::DefinedOnCore
                        && !known.claimed.contains(&l.id.0)
                        && crate::session::LabProgress::definition_of_title(&l.title)
                            == Some(s.definition_id.as_str())
                })
                .min_by(|a, b| a.id.cmp(&b.id));
            if let Some(until) = pending_import {
                return LabAction::Wait {
                    until: Some(until),
                    why: "an earlier import may still be under way",
                };
            }
            match spare {
                Some(l) => LabAction::Reuse {
                    lab_id: l.id.0.clone(),
                },
                None => LabAction::Import,
            }
        }
    }
}

/// An order CML took at `at` and the lab's state does not show yet: wait for it until the
/// order timeout, then order again.
fn awaiting(
    at: Option<Timestamp>,
    now: Timestamp,
    settings: &RuntimeSettings,
    why: &'static str,
) -> Option<LabAction> {
    let deadline = crate::timeslot::saturating_add(at?, settings.lab_order_timeout);
    (now < deadline).then_some(LabAction::Wait {
        until: Some(deadline),
        why,
    })
}

fn teardown(
    s: &LabletSession,
    known: LabsKnown<'_>,
    now: Timestamp,
    attempts: u32,
    settings: &RuntimeSettings,
    backing_off: Option<Timestamp>,
    give_up_reason: impl Fn() -> String,
) -> LabAction {
    let Some(p) = s.lab.as_ref().filter(|p| p.lab_id.is_some()) else {
        return LabAction::Released;
    };
    if attempts >= settings.lab_max_attempts {
        return LabAction::GiveUp {
            reason: give_up_reason(),
        };
    }
    if let Some(t) = backing_off {
        return LabAction::Wait {
            until: Some(t),
            why: "backing off",
        };
    }
    match known.own {
        None => LabAction::Wait {
            until: None,
            why: "lab not read",
        },
        Some(Err(LabError::NotFound { .. })) => LabAction::Released,
        Some(Err(e)) => LabAction::Failed {
            reason: e.to_string(),
        },
        Some(Ok(d)) => match d.state {
            LabState::Stopped => awaiting(p.wipe_ordered_at, now, settings, "wipe under way")
                .unwrap_or(LabAction::WipeLab),
            LabState::DefinedOnCore => {
                let spare = match known.labs {
                    Some(Ok(labs)) => labs
                        .iter()
                        .filter(|l| {
                            Some(&l.id.0) != p.lab_id.as_ref()
                                && l.state == LabState::DefinedOnCore
                                && !known.claimed.contains(&l.id.0)
                                && crate::session::LabProgress::definition_of_title(&l.title)
                                    .is_some()
                        })
                        .count(),
                    // Without a listing, keep the lab (a spare too many is cheap).
                    _ => 0,
                };
                if spare >= settings.lab_keep_per_worker {
                    LabAction::DeleteLab
                } else {
                    LabAction::Released
                }
            }
            _ => awaiting(p.stop_ordered_at, now, settings, "stop under way")
                .unwrap_or(LabAction::StopLab),
        },
    }
}
