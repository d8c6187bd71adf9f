//! The scheduler's pure step: which PENDING sessions expire and where each due one binds,
//! decided from one snapshot at `now` (no I/O); [`super::Scheduler`] commits the decision.

use super::super::settings::RuntimeSettings;
use super::super::snapshot::StateSnapshot;
use super::super::RuntimeError;
use crate::placement::filter::Requirements;
use crate::placement::Fleet;
use crate::session::{LabletSession, SessionState};
use crate::store::Revision;
use crate::timeslot::Timestamp;
use crate::worker::Worker;
use std::collections::{BTreeMap, BTreeSet};

/// A binding decided on the working copy of the fleet, not committed yet.
pub(crate) struct Tentative {
    pub session: LabletSession,
    pub expect: Revision,
    pub worker: String,
    pub ports: BTreeMap<String, u16>,
    pub load: crate::resources::Load,
}

/// What one scheduler pass decided.
pub(crate) struct SchedulerDecision {
    /// PENDING sessions whose slot start passed more than the grace ago, already moved to
    /// EXPIRED, with the revision read.
    pub expire: Vec<(LabletSession, Revision)>,
    /// Due sessions placed, in (slot start, id) order.
    pub bind: Vec<Tentative>,
    /// Due sessions that fit nowhere: (session id, why).
    pub unschedulable: Vec<(String, String)>,
    /// PENDING sessions not due yet.
    pub not_due: usize,
}

/// Expire, then place every due session on a working copy of the fleet.
pub(crate) fn decide(
    snap: &StateSnapshot,
    now: Timestamp,
    settings: &RuntimeSettings,
) -> Result<SchedulerDecision, RuntimeError> {
    // 1. Expire PENDING sessions whose slot start passed more than the grace ago.
    let mut expiring = Vec::new();
    for s in snap.sessions.values() {
        let v = &s.value;
        if v.state != SessionState::Pending {
            continue;
        }
        if let Some(slot) = v.timeslot {
            if now > slot.expires_at(settings.pending_grace) {
                let mut e = v.clone();
                e.transition(
                    SessionState::Expired,
                    now,
                    format!("not placed by slot start {} + grace", slot.start),
                )?;
                expiring.push((e, s.mod_revision));
            }
        }
    }
    // Sessions expired (or left out because they moved) are not bound in this pass.
    let expired: BTreeSet<&str> = expiring.iter().map(|(s, _)| s.id.as_str()).collect();

    // 2. Due sessions in a deterministic order: slot start (ASAP: created_at), then id.
    let lead = settings.lead_time;
    let mut due: Vec<&LabletSession> = Vec::new();
    let mut not_due = 0;
    for s in snap.sessions.values() {
        let v = &s.value;
        if v.state != SessionState::Pending || expired.contains(v.id.as_str()) {
            continue;
        }
        if v.due_at(lead).is_none_or(|d| now >= d) {
            due.push(v);
        } else {
            not_due += 1;
        }
    }
    due.sort_by(|a, b| {
        let ka = a.timeslot.map_or(a.created_at, |t| t.start);
        let kb = b.timeslot.map_or(b.created_at, |t| t.start);
        ka.cmp(&kb).then_with(|| a.id.cmp(&b.id))
    });

    // 3. Decide every binding on a working copy of the fleet.
    // A worker named by an undecodable session record has a load nobody can count: it
    // takes no new binding until the record is repaired.
    let workers: Vec<Worker> = snap
        .workers
        .values()
        .filter(|w| !snap.has_unknown_sessions(&w.value.id))
        .map(|w| w.value.clone())
        .collect();
    let mut fleet = Fleet::new(workers, settings.scoring)
        .map_err(|e| RuntimeError::Inconsistent(format!("fleet snapshot: {e}")))?;
    let mut tentative = Vec::new();
    let mut unschedulable = Vec::new();
    for s in due {
        let Some(def) = snap.definitions.get(&s.definition_id) else {
            unschedulable.push((
                s.id.clone(),
                format!("definition: {} not found", s.definition_id),
            ));
            continue;
        };
        let req = Requirements::of(def, s.region.as_deref());
        match fleet.place(&req) {
            Ok(choice) => match fleet.commit(&s.id, &choice) {
                Ok(b) => tentative.push(Tentative {
                    session: s.clone(),
                    expect: snap.sessions.get(&s.id).map_or(0, |v| v.mod_revision),
                    worker: b.worker,
                    ports: b.ports,
                    load: b.load,
                }),
                Err(e) => unschedulable.push((s.id.clone(), format!("commit: {e}"))),
            },
            Err(u) => {
                let reason = u
                    .rejected_by
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map_or("no_workers", |(k, _)| k.as_str());
                unschedulable.push((
                    s.id.clone(),
                    format!("{reason}: {}", u.to_string().replace('\n', ";")),
                ));
            }
        }
    }
    Ok(SchedulerDecision {
        expire: expiring,
        bind: tentative,
        unschedulable,
        not_due,
    })
}
