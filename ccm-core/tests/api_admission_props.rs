//! The admission fast path against the full re-plan, on random small worlds: a booking fitted
//! into the kept admission plan is one the full re-plan (the planner on the state plus the
//! booking) admits too, and what the fast path admits never over-commits a worker at any
//! instant — checked by summing the loads afresh, not with the planner's profile code.

use ccm_core::api::admission::{need_of, AdmissionPlan, Carried};
use ccm_core::api::decide::{admit_planned, plan_now};
use ccm_core::api::{Admission, Placement};
use ccm_core::definition::LabletDefinition;
use ccm_core::placement::filter::Requirements;
use ccm_core::resources::Resources;
use ccm_core::runtime::{RuntimeSettings, StateSnapshot};
use ccm_core::session::LabletSession;
use ccm_core::template::{parse_templates, WorkerTemplate};
use ccm_core::timeslot::{Timeslot, Timestamp};
use ccm_core::worker::{Worker, WorkerState};
use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap()
}

fn seed_templates() -> Vec<WorkerTemplate> {
    parse_templates(
        include_str!("../../config/worker-templates.yaml"),
        "worker-templates.yaml",
    )
    .unwrap()
}

#[derive(Debug, Clone)]
struct DefSpec {
    cpu: u32,
    storage: u32,
    nodes: u32,
    ports: usize,
}

#[derive(Debug, Clone)]
struct Booking {
    def: usize,
    /// Start, in quarter hours from `t0` + 30 minutes.
    start_q: i64,
    hours: i64,
}

#[derive(Debug, Clone)]
struct World {
    /// Template index and whether it is RUNNING (else STOPPED an hour ago).
    workers: Vec<(usize, bool)>,
    /// 0: templates disabled (the fleet is all there is), 1: one new worker per template and
    /// region at most, 2: no cap.
    launch: u8,
    defs: Vec<DefSpec>,
    booked: Vec<Booking>,
    candidates: Vec<Booking>,
}

fn def_spec() -> impl Strategy<Value = DefSpec> {
    (
        prop::sample::select(vec![4u32, 8, 12, 16, 24]),
        10u32..120,
        1u32..9,
        1usize..4,
    )
        .prop_map(|(cpu, storage, nodes, ports)| DefSpec {
            cpu,
            storage,
            nodes,
            ports,
        })
}

fn booking(defs: usize) -> impl Strategy<Value = Booking> {
    (0..defs, 0i64..32, 1i64..4).prop_map(|(def, start_q, hours)| Booking {
        def,
        start_q,
        hours,
    })
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec((0usize..2, prop::bool::weighted(0.8)), 0..4),
        0u8..3,
        prop::collection::vec(def_spec(), 1..3),
    )
        .prop_flat_map(|(workers, launch, defs)| {
            let n = defs.len();
            (
                Just(workers),
                Just(launch),
                Just(defs),
                prop::collection::vec(booking(n), 0..14),
                prop::collection::vec(booking(n), 1..14),
            )
        })
        .prop_map(|(workers, launch, defs, booked, candidates)| World {
            workers,
            launch,
            defs,
            booked,
            candidates,
        })
}

fn definitions(w: &World) -> Vec<LabletDefinition> {
    let names = ["ssh", "vnc", "http"];
    w.defs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut def = LabletDefinition::new(
                format!("d{i}"),
                Resources {
                    cpu_cores: d.cpu,
                    memory_gb: d.cpu * 4,
                    storage_gb: d.storage,
                },
                d.nodes,
                &names[..d.ports],
            );
            def.max_duration_minutes = 240;
            def
        })
        .collect()
}

fn templates(w: &World) -> Vec<WorkerTemplate> {
    seed_templates()
        .into_iter()
        .map(|mut t| {
            match w.launch {
                0 => t.enabled = false,
                1 => t.max_workers_per_region = Some(1),
                _ => {}
            }
            t
        })
        .collect()
}

fn fleet(w: &World) -> Vec<Worker> {
    let tpls = seed_templates();
    w.workers
        .iter()
        .enumerate()
        .map(|(i, (t, running))| {
            let state = if *running {
                WorkerState::Running
            } else {
                WorkerState::Stopped
            };
            let mut wk = Worker::from_template(
                format!("w{i}"),
                &tpls[*t],
                "us-east-1",
                state,
                "2.9.0".parse().unwrap(),
                "CML-2.9.0",
            );
            if *running {
                wk.ready_at = Some(t0() - Duration::hours(1));
                wk.launched_at = Some(t0() - Duration::hours(1));
            } else {
                wk.stopped_at = Some(t0() - Duration::hours(1));
            }
            wk
        })
        .collect()
}

fn session(id: String, b: &Booking) -> LabletSession {
    let start = t0() + Duration::minutes(30 + 15 * b.start_q);
    let slot = Timeslot::new(start, start + Duration::hours(b.hours)).unwrap();
    LabletSession::new(
        id,
        format!("d{}", b.def),
        "1.0.0",
        "owner",
        Some(slot),
        t0(),
    )
}

/// One reservation as the test keeps it: worker, from, until (seconds), need.
type Held = (String, i64, i64, [u32; 5]);

/// The reservations of a full plan, from its assignments and the needs of its input.
fn held_by(plan: &ccm_core::planner::Plan, input: &ccm_core::planner::PlanInput) -> Vec<Held> {
    let needs: BTreeMap<&str, [u32; 5]> = input
        .sessions
        .iter()
        .map(|s| (s.id.as_str(), need_of(&s.requirements)))
        .collect();
    plan.assignments
        .iter()
        .map(|a| {
            (
                a.worker_id.clone(),
                a.start.timestamp(),
                a.end.timestamp(),
                needs[a.session_id.as_str()],
            )
        })
        .collect()
}

/// Every worker's load at every instant some reservation starts stays within its capacity.
fn assert_within_capacity(held: &[Held], caps: &BTreeMap<String, [u32; 5]>) {
    for (wid, cap) in caps {
        let mine: Vec<&Held> = held.iter().filter(|h| &h.0 == wid).collect();
        for probe in &mine {
            let t = probe.1;
            let mut load = [0u64; 5];
            for h in mine.iter().filter(|h| h.1 <= t && t < h.2) {
                for (l, n) in load.iter_mut().zip(h.3) {
                    *l += u64::from(n);
                }
            }
            for (d, (l, c)) in load.iter().zip(cap).enumerate() {
                assert!(
                    *l <= u64::from(*c),
                    "worker {wid} over capacity in dimension {d} at {t}: {l} > {c}"
                );
            }
        }
    }
}

/// A random world at `t0`: its definitions, templates, fleet, the snapshot of its booked
/// sessions and the plan of that snapshot.
struct Start {
    settings: RuntimeSettings,
    now: Timestamp,
    defs: Vec<LabletDefinition>,
    tpls: Vec<WorkerTemplate>,
    workers: Vec<Worker>,
    snap: StateSnapshot,
    plan: ccm_core::planner::Plan,
    input: ccm_core::planner::PlanInput,
}

fn start(w: &World) -> Start {
    let settings = RuntimeSettings::default();
    let now = t0();
    let defs = definitions(w);
    let tpls = templates(w);
    let workers = fleet(w);
    let booked: Vec<LabletSession> = w
        .booked
        .iter()
        .enumerate()
        .map(|(i, b)| session(format!("b{i:02}"), b))
        .collect();
    let snap = StateSnapshot::from_values(1, booked, workers.clone(), defs.clone());
    let (plan, input) = plan_now(&snap, &tpls, now, &settings);
    Start {
        settings,
        now,
        defs,
        tpls,
        workers,
        snap,
        plan,
        input,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_admits_only_what_the_full_re_plan_admits_and_never_over_commits(w in world()) {
        let Start { settings, now, defs, tpls, workers, snap, plan, input } = start(&w);
        let mut snap = snap;
        let mut kept = AdmissionPlan::new(&plan, &input, &snap);
        let mut held = held_by(&plan, &input);
        for (i, b) in w.candidates.iter().enumerate() {
            let c = session(format!("c{i:02}"), b);
            let def = &defs[b.def];
            // The full re-plan as `book` runs it: keeping the kept plan's placements.
            let (full, full_plan, full_input) =
                admit_planned(&snap, &tpls, now, &settings, &c, def, kept.prior());
            match kept.fit(&c, def, now, &settings) {
                Some(fit) => {
                    prop_assert!(
                        full.accepted(),
                        "the fast path admitted {} on {}, the full re-plan refuses it: {:?}",
                        c.id,
                        kept.hosts()[fit.host].id(),
                        full
                    );
                    let Admission::Accepted { ready_by, start, end, placement } = &fit.admission else {
                        unreachable!("a fit is an acceptance")
                    };
                    let slot = c.timeslot.unwrap();
                    prop_assert_eq!((*start, *end), (slot.start, slot.end));
                    prop_assert!(*ready_by <= slot.start - settings.instantiation());
                    let host = &kept.hosts()[fit.host];
                    match placement {
                        Placement::Worker { worker_id, .. } | Placement::Launch { worker_id, .. } => {
                            prop_assert_eq!(worker_id.as_str(), host.id())
                        }
                        other => prop_assert!(false, "placement {:?}", other),
                    }
                    let req = Requirements::of(def, None);
                    prop_assert_eq!(fit.need, need_of(&req));
                    held.push((host.id().to_string(), fit.from, fit.until, fit.need));
                    kept.take(&fit);
                    snap = StateSnapshot::from_values(
                        1,
                        snap.sessions.values().map(|s| s.value.clone()).chain([c]),
                        workers.clone(),
                        defs.clone(),
                    );
                }
                None => {
                    // The full re-plan decides, and its plan is the one kept next (as `book`
                    // does after a full admission).
                    if full.accepted() {
                        let mut with = StateSnapshot::from_values(
                            1,
                            snap.sessions.values().map(|s| s.value.clone()).chain([c.clone()]),
                            workers.clone(),
                            defs.clone(),
                        );
                        kept = AdmissionPlan::new(&full_plan, &full_input, &with);
                        held = held_by(&full_plan, &full_input);
                        std::mem::swap(&mut snap, &mut with);
                    }
                }
            }
            // What the kept plan holds never exceeds a worker's capacity, at any instant.
            let caps: BTreeMap<String, [u32; 5]> = kept
                .hosts()
                .iter()
                .map(|h| (h.id().to_string(), h.capacity()))
                .collect();
            assert_within_capacity(&held, &caps);
        }
        // The capacities the kept plan packs against are the fleet's own.
        for h in kept.hosts() {
            if let Some(wk) = workers.iter().find(|x| x.id == h.id()) {
                let c = wk.capacity.dims();
                prop_assert_eq!(h.capacity(), [c[0], c[1], c[2], c[3], wk.ports.range().len()]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A refresh: bookings fitted into the kept plan (and committed) while a newer plan was
    /// made from a state without them are carried into it; what the newer plan then holds —
    /// its own assignments plus the carried ones — never over-commits a worker, and every
    /// carried booking is held once.
    #[test]
    fn bookings_carried_into_a_newer_plan_never_over_commit(w in world()) {
        let Start { settings, now, defs, tpls, snap, plan, input, .. } = start(&w);
        let mut kept = AdmissionPlan::new(&plan, &input, &snap);
        let mut carried = Vec::new();
        for (i, b) in w.candidates.iter().enumerate() {
            let c = session(format!("c{i:02}"), b);
            let def = &defs[b.def];
            if let Some(fit) = kept.fit(&c, def, now, &settings) {
                kept.take(&fit);
                carried.push(Carried {
                    host: kept.hosts()[fit.host].id().to_string(),
                    session: c,
                    def: def.clone(),
                    now,
                });
            }
        }
        // The newer plan: the same state a moment later, keeping the kept plan's placements.
        let later = now + Duration::milliseconds(500);
        let (newer, newer_input) =
            ccm_core::api::decide::plan_keeping(&snap, &tpls, later, &settings, kept.prior());
        let mut fresh = AdmissionPlan::new(&newer, &newer_input, &snap);
        if let Some(fits) = fresh.carry(&carried, &settings) {
            prop_assert_eq!(fits.len(), carried.len());
            let mut held = held_by(&newer, &newer_input);
            for (f, c) in fits.iter().zip(&carried) {
                prop_assert_eq!(&f.session_id, &c.session.id);
                held.push((fresh.hosts()[f.host].id().to_string(), f.from, f.until, f.need));
            }
            let caps: BTreeMap<String, [u32; 5]> = fresh
                .hosts()
                .iter()
                .map(|h| (h.id().to_string(), h.capacity()))
                .collect();
            assert_within_capacity(&held, &caps);
            let ids: std::collections::BTreeSet<&str> =
                fresh.prior().iter().map(|p| p.session_id.as_str()).collect();
            prop_assert_eq!(ids.len(), fresh.prior().len(), "a session held twice");
            for c in &carried {
                prop_assert!(ids.contains(c.session.id.as_str()));
            }
        }
    }
}

/// The random worlds do reach the fast path (the property above is not vacuous): one running
/// worker with room for many small labs takes a row of them without re-planning.
#[test]
fn a_booking_that_fits_the_kept_plan_is_fitted_there() {
    let settings = RuntimeSettings::default();
    let now = t0();
    let w = World {
        workers: vec![(0, true)],
        launch: 0,
        defs: vec![DefSpec {
            cpu: 4,
            storage: 20,
            nodes: 1,
            ports: 1,
        }],
        booked: vec![Booking {
            def: 0,
            start_q: 4,
            hours: 2,
        }],
        candidates: vec![],
    };
    let defs = definitions(&w);
    let tpls = templates(&w);
    let snap = StateSnapshot::from_values(
        1,
        [session("b".into(), &w.booked[0])],
        fleet(&w),
        defs.clone(),
    );
    let (plan, input) = plan_now(&snap, &tpls, now, &settings);
    let mut kept = AdmissionPlan::new(&plan, &input, &snap);
    // 48 cores, 4 each, one already there: 11 more fit over the same slot, the 12th does not.
    for i in 0..11 {
        let c = session(format!("c{i}"), &w.booked[0]);
        let fit = kept
            .fit(&c, &defs[0], now, &settings)
            .unwrap_or_else(|| panic!("booking {i} fits"));
        kept.take(&fit);
    }
    let c = session("c11".into(), &w.booked[0]);
    assert!(kept.fit(&c, &defs[0], now, &settings).is_none());
    // Carried into a newer plan of the state without them (a refresh), the eleven fit again,
    // on the worker they went to, and the twelfth still does not.
    let carried: Vec<Carried> = (0..11)
        .map(|i| Carried {
            session: session(format!("c{i}"), &w.booked[0]),
            def: defs[0].clone(),
            host: kept.hosts()[0].id().to_string(),
            now,
        })
        .collect();
    let (newer, newer_input) = plan_now(&snap, &tpls, now + Duration::seconds(1), &settings);
    let mut fresh = AdmissionPlan::new(&newer, &newer_input, &snap);
    let fits = fresh
        .carry(&carried, &settings)
        .expect("all eleven carried");
    assert!(fits.iter().all(|f| f.host == 0));
    assert!(fresh
        .fit(&c, &defs[0], now + Duration::seconds(1), &settings)
        .is_none());
    let mut fresh = AdmissionPlan::new(&newer, &newer_input, &snap);
    let mut twelve = carried.clone();
    twelve.push(Carried {
        session: c.clone(),
        def: defs[0].clone(),
        host: "w0".into(),
        now,
    });
    assert!(
        fresh.carry(&twelve, &settings).is_none(),
        "a twelfth carried"
    );
    // And a plan older than its shelf life takes nothing.
    let c = session(
        "old".into(),
        &Booking {
            def: 0,
            start_q: 4,
            hours: 1,
        },
    );
    let mut kept = AdmissionPlan::new(&plan, &input, &snap);
    assert!(kept.fit(&c, &defs[0], now, &settings).is_some());
    let stale = now + Duration::seconds(ccm_core::api::admission::MAX_AGE_SECS + 1);
    assert!(kept.fit(&c, &defs[0], stale, &settings).is_none());
    kept.take(&kept.fit(&c, &defs[0], now, &settings).unwrap());
}
