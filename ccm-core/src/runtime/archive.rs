//! Archiving ended sessions: a session in an end state for longer than the retention
//! (`CONTROLLER_SESSION_RETENTION_HOURS`) is written to the spec store's history (an audit event
//! [`ARCHIVED_EVENT`] holding the whole record) and then deleted from the state store in a
//! fenced transaction guarded by the revision it was read at, so the live store (and every
//! pass that lists it) stays small.
//!
//! [`decide`] is pure (a snapshot and `now`); [`apply`] writes; [`sweep`] is both, run by the
//! controller after each pass while it leads.

use super::context::{Commit, Ctx, Write};
use super::snapshot::{self, StateSnapshot};
use super::RuntimeError;
use crate::session::{LabletSession, SessionState};
use crate::store::{AuditEvent, Fence, Revision};
use crate::timeslot::Timestamp;
use std::collections::BTreeSet;

/// The audit event type of an archived session (its record is the event's `data`).
pub const ARCHIVED_EVENT: &str = "ccm.session.archived";

/// Most sessions archived by one sweep (the rest wait for the next pass).
pub const MAX_PER_SWEEP: usize = 256;

/// One session to archive: the record and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Archival {
    /// The session as read.
    pub session: LabletSession,
    /// Its key's `mod_revision` (the delete is guarded by it).
    pub revision: Revision,
    /// When it reached its end state.
    pub ended_at: Timestamp,
}

impl Archival {
    /// The history event's id: one per session and revision, so a retried sweep records the
    /// same event once, and a record changed since is recorded again.
    pub fn event_id(&self) -> String {
        format!("archive:{}@{}", self.session.id, self.revision)
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Sessions written to the history and deleted from the state store.
    pub archived: Vec<String>,
    /// Sessions left for the next pass because their record changed since it was read.
    pub skipped: Vec<String>,
}

/// Whether a session has ended for good as far as the live store is concerned: STOPPED,
/// ARCHIVED, TERMINATED, or EXPIRED without a worker; holding no capacity, no port and no lab.
pub fn has_ended(s: &LabletSession) -> bool {
    let end = s.state.is_final() || (s.state == SessionState::Expired && s.worker_id.is_none());
    end && !s.holds_capacity()
        && s.allocated_ports.is_empty()
        && !s.lab.as_ref().is_some_and(|p| p.holds_lab())
}

/// When a session reached its current state: its last recorded change, else `updated_at`.
pub fn ended_at(s: &LabletSession) -> Timestamp {
    s.state_history
        .last()
        .filter(|c| c.to == s.state)
        .map_or(s.updated_at, |c| c.at)
}

/// The sessions to archive at `now`: ended (see [`has_ended`]) at least `retention` ago, not
/// named in any worker's port table, oldest first, at most `max`.
pub fn decide(
    snap: &StateSnapshot,
    now: Timestamp,
    retention: chrono::Duration,
    max: usize,
) -> Vec<Archival> {
    let booked: BTreeSet<&str> = snap
        .workers
        .values()
        .flat_map(|w| w.value.ports.owners().keys().map(String::as_str))
        .collect();
    let mut out: Vec<Archival> = snap
        .sessions
        .values()
        .filter(|v| has_ended(&v.value) && !booked.contains(v.value.id.as_str()))
        .filter_map(|v| {
            let ended = ended_at(&v.value);
            // Overflow (an end near chrono's maximum) means "not yet".
            let due = ended.checked_add_signed(retention)?;
            (due <= now).then(|| Archival {
                session: v.value.clone(),
                revision: v.mod_revision,
                ended_at: ended,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.ended_at, a.session.id.as_str()).cmp(&(b.ended_at, b.session.id.as_str()))
    });
    out.truncate(max);
    out
}

/// Writes each archival to the history, then deletes the sessions in fenced transactions, each
/// delete guarded by the revision it was read at. A session changed since is left out (and
/// reported in `skipped`); the rest of its batch is committed.
pub(crate) async fn apply(
    ctx: &Ctx,
    fence: &Fence,
    archivals: &[Archival],
    now: Timestamp,
) -> Result<ArchiveReport, RuntimeError> {
    let mut report = ArchiveReport::default();
    let mut rest: &[Archival] = archivals;
    while !rest.is_empty() {
        // One operation of each transaction is the fence.
        let n = ctx.txn_limit().saturating_sub(1).max(1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        for a in chunk {
            ctx.spec
                .record_audit(&event(a, &ctx.settings.candidate, now)?)
                .await?;
        }
        let mut dropped: BTreeSet<String> = BTreeSet::new();
        loop {
            let writes: Vec<Write> = chunk
                .iter()
                .filter(|a| !dropped.contains(&a.session.id))
                .map(|a| Write {
                    key: ctx.keys.session(&a.session.id),
                    value: None,
                    expect: a.revision,
                })
                .collect();
            if writes.is_empty() {
                break;
            }
            match ctx.commit(fence, writes).await? {
                Commit::Done(_) => {
                    report.archived.extend(
                        chunk
                            .iter()
                            .filter(|a| !dropped.contains(&a.session.id))
                            .map(|a| a.session.id.clone()),
                    );
                    break;
                }
                // Smaller batches next time round; this one is retried whole.
                Commit::TooLarge => {
                    return Ok(merge(report, Box::pin(apply(ctx, fence, rest, now)).await?));
                }
                Commit::Conflict { changed } => {
                    let before = dropped.len();
                    for a in chunk {
                        if changed.contains(&ctx.keys.session(&a.session.id)) {
                            dropped.insert(a.session.id.clone());
                        }
                    }
                    if dropped.len() == before {
                        // The store did not say which key moved: leave the whole batch.
                        dropped.extend(chunk.iter().map(|a| a.session.id.clone()));
                    }
                }
            }
        }
        report.skipped.extend(dropped);
        rest = tail;
    }
    Ok(report)
}

fn merge(mut a: ArchiveReport, b: ArchiveReport) -> ArchiveReport {
    a.archived.extend(b.archived);
    a.skipped.extend(b.skipped);
    a
}

fn event(a: &Archival, candidate: &str, now: Timestamp) -> Result<AuditEvent, RuntimeError> {
    let data = serde_json::to_value(&a.session).map_err(|e| {
        RuntimeError::Config(format!("session {} cannot be archived: {e}", a.session.id))
    })?;
    Ok(AuditEvent {
        id: a.event_id(),
        subject: a.session.id.clone(),
        event_type: ARCHIVED_EVENT.to_string(),
        time: now,
        actor: format!("controller/{candidate}"),
        reason: format!("{} since {}", a.session.state, a.ended_at),
        data,
    })
}

/// One sweep while leading: when a retention is set, reads a snapshot, decides and applies.
/// Only a lost leadership is an error; any other failure is logged and left to the next pass.
pub(crate) async fn sweep(
    ctx: &Ctx,
    fence: &Fence,
    now: Timestamp,
) -> Result<ArchiveReport, RuntimeError> {
    let Some(retention) = ctx.settings.session_retention else {
        return Ok(ArchiveReport::default());
    };
    let run = async {
        let snap = snapshot::load(ctx).await?;
        let due = decide(&snap, now, retention, MAX_PER_SWEEP);
        if due.is_empty() {
            return Ok(ArchiveReport::default());
        }
        apply(ctx, fence, &due, now).await
    };
    match run.await {
        Ok(r) => {
            if !r.archived.is_empty() {
                tracing::info!(
                    archived = r.archived.len(),
                    skipped = r.skipped.len(),
                    "ended sessions archived to the history"
                );
            }
            Ok(r)
        }
        Err(e @ RuntimeError::NotLeader { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "archiving ended sessions failed; retried next pass");
            Ok(ArchiveReport::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::LabletSession;
    use chrono::{Duration, TimeZone, Utc};

    fn at(h: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    fn ended(id: &str, to: SessionState, when: Timestamp) -> LabletSession {
        let mut s = LabletSession::new(id, "d", "1.0.0", "o", None, at(0));
        s.transition(to, when, "test").unwrap();
        s
    }

    #[test]
    fn only_ended_sessions_past_the_retention_oldest_first() {
        let mut bound = LabletSession::new("bound", "d", "1.0.0", "o", None, at(0));
        bound
            .transition(SessionState::Scheduled, at(1), "")
            .unwrap();
        bound.worker_id = Some("w".into());
        let mut expired_bound = bound.clone();
        expired_bound.id = "expired-bound".into();
        expired_bound
            .transition(SessionState::Expired, at(1), "")
            .unwrap();
        let snap = StateSnapshot::from_values(
            7,
            [
                ended("t-late", SessionState::Terminated, at(3)),
                ended("t-early", SessionState::Terminated, at(1)),
                ended("e-pending", SessionState::Expired, at(2)),
                ended("t-recent", SessionState::Terminated, at(30)),
                LabletSession::new("pending", "d", "1.0.0", "o", None, at(0)),
                bound,
                expired_bound,
            ],
            [],
            [],
        );
        let ids = |v: Vec<Archival>| v.into_iter().map(|a| a.session.id).collect::<Vec<_>>();
        assert_eq!(
            ids(decide(&snap, at(30), Duration::hours(24), 10)),
            ["t-early", "e-pending", "t-late"]
        );
        assert_eq!(
            ids(decide(&snap, at(30), Duration::hours(24), 2)),
            ["t-early", "e-pending"]
        );
        assert_eq!(
            ids(decide(&snap, at(25), Duration::hours(24), 10)),
            ["t-early"]
        );
        assert!(decide(&snap, at(24), Duration::hours(24), 10).is_empty());
        assert!(decide(&snap, at(10), Duration::hours(24), 10).is_empty());
        // A retention that overflows chrono never archives.
        assert!(decide(&snap, at(30), Duration::MAX, 10).is_empty());
    }

    #[test]
    fn a_session_still_holding_a_lab_or_ports_is_kept() {
        let mut with_lab = ended("lab", SessionState::Terminated, at(0));
        with_lab.lab = Some(crate::session::LabProgress {
            lab_id: Some("l1".into()),
            step: crate::session::LabStep::Teardown,
            ..crate::session::LabProgress::new("w", "t")
        });
        let mut with_ports = ended("ports", SessionState::Terminated, at(0));
        with_ports.allocated_ports.insert("ssh".into(), 2000);
        assert!(!has_ended(&with_lab));
        assert!(!has_ended(&with_ports));
        assert!(has_ended(&ended("plain", SessionState::Terminated, at(0))));
    }
}
