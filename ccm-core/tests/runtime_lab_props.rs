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
use ccm_core::store::{ArtifactStore, LabCall, LabState, SpecStore, WriteCondition};
use ccm_core::timeslot::{Timeslot, Timestamp};
use ccm_core::worker::WorkerState;
use chrono::Duration;
use proptest::prelude::*;
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
        self.w.put_session(&s).await;
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
    let s = lw.w.session("s1").await;
    let visited: Vec<SessionState> = std::iter::once(S::Pending)
        .chain(s.state_history.iter().map(|c| c.to))
        .collect();
    assert_eq!(seen.first(), Some(&S::Pending));
    assert_eq!(
        visited,
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
    assert_eq!(
        m.lab_adoptions_total, 0,
        "its own import was recorded, not adopted"
    );
    assert_eq!(m.conflicts_total, 0);
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

/// Steps `rt` until `cond` holds for session `id` (at most `max` steps).
async fn step_until(
    lw: &LabWorld,
    rt: &Runtime,
    id: &str,
    max: usize,
    cond: impl Fn(&LabletSession) -> bool,
) -> LabletSession {
    for _ in 0..max {
        rt.step().await.unwrap();
        settle().await;
        let s = lw.w.session(id).await;
        if cond(&s) {
            return s;
        }
        lw.w.clock.advance(Duration::minutes(1));
    }
    panic!("{id} never got there: {:?}", lw.w.session(id).await);
}

#[tokio::test]
async fn a_standby_adopts_the_lab_a_dead_leader_imported_without_recording_it() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    lw.w.add_session("s1", None).await;
    // The import happens on CML but its answer never reaches the leader.
    lw.labs.lose_next_answers(LabCall::Import, 1);
    let a = lw.runtime(LabWorld::settings("a"));
    let b = lw.runtime(LabWorld::settings("b"));
    step_until(&lw, &a, "s1", 10, |s| {
        s.state == SessionState::Instantiating
    })
    .await;
    a.step().await.unwrap();
    settle().await;
    assert_eq!(
        a.lab_loop().unwrap().imports_in_flight(),
        1,
        "import running"
    );
    // 90 s later the lab exists on CML; then the leader crashes (no resign).
    lw.w.clock.advance(Duration::seconds(91));
    settle().await;
    assert_eq!(lw.labs.imports(), 1);
    assert_eq!(lw.labs.labs_on("w1").len(), 1);
    let before = lw.w.session("s1").await;
    assert!(
        before.lab.as_ref().unwrap().lab_id.is_none(),
        "the lab id never got recorded"
    );
    drop(a);
    // The standby takes over once the lease ran out and finishes the instantiation.
    let s = step_until(&lw, &b, "s1", 30, |s| {
        matches!(s.state, SessionState::Ready | SessionState::Running)
    })
    .await;
    assert!(b.leadership().lab);
    assert_eq!(lw.labs.calls(LabCall::Import), 1, "no second import");
    assert_eq!(lw.labs.imports(), 1);
    assert_eq!(lw.labs.labs_on("w1").len(), 1);
    let p = s.lab.unwrap();
    assert_eq!(
        p.lab_id.as_deref(),
        Some(lw.labs.labs_on("w1")[0].id.0.as_str())
    );
    assert_eq!(b.metrics().lab_adoptions_total, 1);
    check_history(&lw.w.session("s1").await).unwrap();
}

#[tokio::test]
async fn a_standby_waits_for_an_import_a_dead_leader_left_under_way() {
    // A slow import (10 min) outlives the leader's lease (5 min): CML finishes it after the
    // leader died and the standby took over.
    let lw = LabWorld::new(LabTimings {
        import: std::time::Duration::from_secs(600),
        ..LabTimings::realistic()
    })
    .await;
    lw.w.add_worker("w1").await;
    lw.w.add_session("s1", None).await;
    let with_timeout = |c: &str| RuntimeSettings {
        lab_import_timeout: Duration::minutes(15),
        ..LabWorld::settings(c)
    };
    let a = lw.runtime(with_timeout("a"));
    let b = lw.runtime(with_timeout("b"));
    step_until(&lw, &a, "s1", 10, |s| {
        s.lab
            .as_ref()
            .is_some_and(|p| p.import_started_at.is_some())
    })
    .await;
    settle().await;
    assert_eq!(lw.labs.calls(LabCall::Import), 1, "the import was sent");
    // The leader dies 30 s into the import (no resign); CML goes on importing.
    lw.w.clock.advance(Duration::seconds(30));
    settle().await;
    drop(a);
    // The standby leads once the lease ran out, long before the import is done, and must not
    // send a second one while the first may still arrive.
    let mut led = false;
    for _ in 0..30 {
        b.step().await.unwrap();
        settle().await;
        led |= b.leadership().lab;
        let s = lw.w.session("s1").await;
        if matches!(s.state, SessionState::Ready | SessionState::Running) {
            break;
        }
        lw.w.clock.advance(Duration::minutes(1));
    }
    assert!(led, "the standby took the lead");
    let s = lw.w.session("s1").await;
    assert!(
        matches!(s.state, SessionState::Ready | SessionState::Running),
        "{s:?}"
    );
    assert_eq!(lw.labs.calls(LabCall::Import), 1, "no second import");
    assert_eq!(lw.labs.labs_on("w1").len(), 1);
    assert_eq!(b.metrics().lab_adoptions_total, 1, "found by its title");
    assert!(s.lab.unwrap().import_started_at.is_none());
    check_history(&lw.w.session("s1").await).unwrap();
}

#[tokio::test]
async fn a_standby_resumes_a_booting_lab_without_importing_again() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    lw.w.add_session("s1", None).await;
    let a = lw.runtime(LabWorld::settings("a"));
    let b = lw.runtime(LabWorld::settings("b"));
    // The leader imported and started the lab, then dies while the nodes boot.
    let s = step_until(&lw, &a, "s1", 20, |s| {
        s.lab.as_ref().is_some_and(|p| p.step == LabStep::Boot)
    })
    .await;
    assert_eq!(s.state, SessionState::Instantiating);
    assert_eq!(lw.labs.labs_on("w1")[0].state, LabState::Started, "booting");
    a.resign().await;
    drop(a);
    let s = step_until(&lw, &b, "s1", 30, |s| s.state == SessionState::Running).await;
    assert_eq!(lw.labs.calls(LabCall::Import), 1);
    assert_eq!(lw.labs.imports(), 1);
    assert_eq!(
        lw.labs.calls(LabCall::Start),
        1,
        "started once, by the dead leader"
    );
    check_history(&s).unwrap();
}

#[tokio::test]
async fn a_launched_worker_is_running_only_once_its_cml_answers() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_session("s1", None).await;
    let rt = lw.runtime(RuntimeSettings {
        leader_ttl: std::time::Duration::from_secs(300),
        ..World::settings("a")
    });
    let mut wid = None;
    for _ in 0..5 {
        lw.step(&rt).await;
        if let Some(w) = lw.w.workers().await.first() {
            wid = Some(w.id.clone());
            break;
        }
    }
    let wid = wid.expect("a worker was launched for the ASAP session");
    lw.labs.set_down(&wid, true);
    // Well past the template's boot time the cloud says running; CML still does not answer.
    for _ in 0..40 {
        lw.step(&rt).await;
    }
    assert_eq!(
        lw.w.provider.instances().get(&wid),
        Some(&WorkerState::Running)
    );
    let w = lw.w.worker(&wid).await.unwrap();
    assert_eq!(
        w.state,
        WorkerState::Starting,
        "not RUNNING while CML is down"
    );
    assert_eq!(lw.w.session("s1").await.state, SessionState::Pending);
    lw.labs.set_down(&wid, false);
    for _ in 0..2 {
        lw.step(&rt).await;
    }
    assert_eq!(lw.w.worker(&wid).await.unwrap().state, WorkerState::Running);
    assert_ne!(lw.w.session("s1").await.state, SessionState::Pending);
}

/// Failures injected into the simulated CML controllers (each: the next n calls of a kind).
#[derive(Debug, Clone)]
struct Faults {
    import_fail: u32,
    import_lost: u32,
    tags_fail: u32,
    start_fail: u32,
    start_refused: u32,
    stop_fail: u32,
    wipe_fail: u32,
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        0u32..4,
        0u32..2,
        0u32..2,
        0u32..4,
        0u32..2,
        0u32..4,
        0u32..3,
    )
        .prop_map(
            |(
                import_fail,
                import_lost,
                tags_fail,
                start_fail,
                start_refused,
                stop_fail,
                wipe_fail,
            )| {
                Faults {
                    import_fail,
                    import_lost,
                    tags_fail,
                    start_fail,
                    start_refused,
                    stop_fail,
                    wipe_fail,
                }
            },
        )
}

/// A booking: slot start in minutes from t0 (`None` = ASAP) and its length.
fn bookings() -> impl Strategy<Value = Vec<(Option<i64>, i64)>> {
    prop::collection::vec((prop::option::weighted(0.8, 0i64..150), 20i64..60), 1..7)
}

async fn day(workers: usize, books: Vec<(Option<i64>, i64)>, f: Faults) -> Result<(), String> {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    for i in 0..workers {
        lw.w.add_worker(&format!("w{i}")).await;
    }
    for (i, (start, len)) in books.iter().enumerate() {
        let id = format!("s{i}");
        match start {
            Some(m) => {
                lw.add_slot(&id, t0() + Duration::minutes(*m), *len).await;
            }
            None => {
                lw.w.add_session(&id, None).await;
            }
        }
    }
    let l = &lw.labs;
    l.fail_next(LabCall::Import, f.import_fail);
    l.lose_next_answers(LabCall::Import, f.import_lost);
    l.fail_next(LabCall::SetNodeTags, f.tags_fail);
    l.fail_next(LabCall::Start, f.start_fail);
    l.refuse_next(LabCall::Start, f.start_refused);
    l.fail_next(LabCall::Stop, f.stop_fail);
    l.fail_next(LabCall::Wipe, f.wipe_fail);
    let rt = lw.runtime(RuntimeSettings {
        lab_max_attempts: 3,
        ..LabWorld::settings("a")
    });
    let finished = |s: &LabletSession| match s.state {
        SessionState::Archived => true,
        SessionState::Terminated => s.lab.as_ref().is_none_or(|p| !p.holds_lab()),
        SessionState::Expired => s.worker_id.is_none(),
        _ => false,
    };
    let mut done = false;
    for _ in 0..400 {
        lw.step(&rt).await;
        check_release(&lw.w).await?;
        if lw.w.sessions().await.iter().all(finished) {
            done = true;
            break;
        }
    }
    let sessions = lw.w.sessions().await;
    if !done {
        return Err(format!(
            "not every session ended: {:?}",
            sessions
                .iter()
                .filter(|s| !finished(s))
                .map(|s| (&s.id, s.state, &s.lab))
                .collect::<Vec<_>>()
        ));
    }
    let mut instantiated = 0u64;
    for s in &sessions {
        check_history(s)?;
        let got_worker = s
            .state_history
            .iter()
            .any(|c| c.to == SessionState::Scheduled);
        if got_worker && !ended(s.state) {
            return Err(format!("{} got a worker and ended {}", s.id, s.state));
        }
        if matches!(s.state, SessionState::Expired | SessionState::Terminated) {
            let why = s.state_history.last().map_or("", |c| c.reason.as_str());
            if why.is_empty() {
                return Err(format!("{} is {} without a reason", s.id, s.state));
            }
        }
        if s.state_history
            .iter()
            .any(|c| c.to == SessionState::Instantiating)
        {
            instantiated += 1;
        }
    }
    if lw.labs.imports() > instantiated {
        return Err(format!(
            "{} imports for {instantiated} instantiated sessions",
            lw.labs.imports()
        ));
    }
    // Every lab left on a worker is wiped (kept for reuse) unless its session gave it up.
    for i in 0..workers {
        for lab in lw.labs.labs_on(&format!("w{i}")) {
            let abandoned = sessions.iter().any(|s| {
                s.lab.as_ref().is_some_and(|p| {
                    p.step == LabStep::Abandoned && p.lab_id.as_deref() == Some(lab.id.0.as_str())
                })
            });
            if lab.state != LabState::DefinedOnCore && !abandoned {
                return Err(format!("lab {} left {:?}", lab.id, lab.state));
            }
        }
    }
    // Reuse: with no failures and one worker, sessions that never overlapped share labs.
    let m = rt.metrics();
    if m.lab_imports_total + m.lab_reuses_total + m.lab_adoptions_total < instantiated
        && m.lab_retries_total == 0
    {
        return Err(format!("labs acquired {m:?} < {instantiated} instantiated"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_session_ends_released_with_its_history_in_the_table(
        workers in 1usize..3,
        books in bookings(),
        f in faults(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(day(workers, books, f));
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// A stop and a wipe that take minutes (a big lab) are ordered once each: the loop records the
/// order and waits for CML's state to show it, passes of this leader and of a new one alike.
#[tokio::test]
async fn a_slow_stop_and_wipe_are_ordered_once_across_a_failover() {
    let lw = LabWorld::new(LabTimings {
        // Longer than the lease (5 min): the new leader finds the stop still under way.
        stop: std::time::Duration::from_secs(8 * 60),
        wipe: std::time::Duration::from_secs(3 * 60),
        ..LabTimings::realistic()
    })
    .await;
    lw.w.add_worker("w1").await;
    let start = t0() + Duration::minutes(40);
    lw.add_slot("s1", start, 30).await;
    let settings = |c: &str| RuntimeSettings {
        lab_order_timeout: Duration::minutes(15),
        ..LabWorld::settings(c)
    };
    let a = lw.runtime(settings("a"));
    let b = lw.runtime(settings("b"));
    step_until(&lw, &a, "s1", 120, |s| s.state == SessionState::Stopping).await;
    // A few passes of the leader while the stop is under way, then it dies.
    for _ in 0..2 {
        lw.step(&a).await;
    }
    assert_eq!(lw.labs.calls(LabCall::Stop), 1, "one stop while it runs");
    drop(a);
    let s = step_until(&lw, &b, "s1", 60, |s| s.state == SessionState::Archived).await;
    check_history(&s).unwrap();
    assert_eq!(
        lw.labs.calls(LabCall::Stop),
        1,
        "no stop from the new leader"
    );
    assert_eq!(lw.labs.calls(LabCall::Wipe), 1, "one wipe");
    let labs = lw.labs.labs_on("w1");
    assert_eq!(labs.len(), 1);
    assert_eq!(labs[0].state, LabState::DefinedOnCore, "kept, wiped");
    check_release(&lw.w).await.unwrap();
}

/// A stop CML took but never carried out is ordered again after the order timeout.
#[tokio::test]
async fn a_stop_that_never_shows_is_ordered_again_after_the_timeout() {
    let lw = LabWorld::new(LabTimings {
        stop: std::time::Duration::from_secs(20 * 60),
        ..LabTimings::realistic()
    })
    .await;
    lw.w.add_worker("w1").await;
    lw.add_slot("s1", t0() + Duration::minutes(40), 30).await;
    let settings = LabWorld::settings("a");
    let timeout = settings.lab_order_timeout;
    let a = lw.runtime(settings);
    let s = step_until(&lw, &a, "s1", 120, |s| {
        s.lab.as_ref().is_some_and(|p| p.stop_ordered_at.is_some())
    })
    .await;
    let ordered = s.lab.unwrap().stop_ordered_at.unwrap();
    while lw.w.clock_now() < ordered + timeout {
        lw.step(&a).await;
        assert_eq!(
            lw.labs.calls(LabCall::Stop),
            1,
            "waiting for the first stop"
        );
    }
    lw.step(&a).await;
    lw.step(&a).await;
    assert_eq!(
        lw.labs.calls(LabCall::Stop),
        2,
        "ordered again after the timeout"
    );
}

/// One worker, sessions one after another, no failures: every lab after the first is reused.
#[tokio::test]
async fn back_to_back_sessions_import_once() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    for i in 0..4 {
        lw.add_slot(&format!("s{i}"), t0() + Duration::minutes(40 + i * 60), 30)
            .await;
    }
    let rt = lw.runtime(LabWorld::settings("a"));
    for _ in 0..300 {
        lw.step(&rt).await;
    }
    assert!(lw
        .w
        .sessions()
        .await
        .iter()
        .all(|s| s.state == SessionState::Archived));
    assert_eq!(lw.labs.imports(), 1);
    assert_eq!(rt.metrics().lab_reuses_total, 3);
}

/// The lab loop is watch-driven: with every interval an hour long and the virtual clock
/// standing still, a session booked after the loops' first passes is bound (the scheduler wakes
/// on the PENDING put) and instantiated (the lab loop wakes on the binding) at the same instant.
#[tokio::test]
async fn a_watched_change_wakes_the_lab_loop_before_its_interval() {
    let lw = LabWorld::new(LabTimings::realistic()).await;
    lw.w.add_worker("w1").await;
    let hour = std::time::Duration::from_secs(3600);
    let settings = RuntimeSettings {
        scheduler_interval: hour,
        controller_interval: hour,
        lab_interval: hour,
        ..LabWorld::settings("a")
    };
    let h = lw.runtime(settings).spawn();
    eventually("the lab loop leads and ran its first pass", || async {
        h.runtime().leadership().lab && h.runtime().metrics().lab_runs >= 1
    })
    .await;
    settle().await;
    let before = h.runtime().metrics().lab_runs;
    let now = lw.w.clock_now();
    lw.add_slot("s1", now + Duration::minutes(10), 60).await;
    eventually("s1 instantiating without the clock moving", || async {
        lw.w.session("s1").await.state == SessionState::Instantiating
    })
    .await;
    assert_eq!(lw.w.clock_now(), now, "no interval ran out");
    assert!(
        h.runtime().metrics().lab_runs > before,
        "the lab loop ran again on the watch"
    );
    let s = lw.w.session("s1").await;
    assert_eq!(
        s.lab.map(|p| p.worker_id),
        Some("w1".to_string()),
        "the import started on the bound worker"
    );
    h.shutdown().await;
}
