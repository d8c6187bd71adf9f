//! The admission fast path: the last admission plan, kept with the state it was made from, and
//! the fit of one more booking into its free capacity over time.
//!
//! An [`AdmissionPlan`] is made from a full plan ([`crate::planner::plan`] on a snapshot) and
//! holds, for each worker of that plan (running, booting, stopped with a planned restart, or a
//! planned launch), its billed runs and its load as a [`LoadProfile`] built from the plan's
//! assignments — the planner's own capacity-over-time code. [`AdmissionPlan::fit`] places a
//! booking on the first worker that passes the planner's static filters, has room for it at
//! every instant of its reservation, and is either billed (RUNNING) through the whole of it —
//! the booking then costs nothing more and moves nobody, where the full re-plan puts such a
//! booking too ("a worker already billed through the slot costs nothing; the first such
//! worker wins") — or RUNNING now and not draining, so it can be kept up for it (the full
//! re-plan may find a cheaper worker; the capacity is there either way). Anything else (no
//! such worker, an ASAP booking, a slot before the plan's instant or beyond its horizon, a
//! plan older than [`MAX_AGE_SECS`]) is left to the full re-plan, which alone refuses
//! bookings and names the constraint and the earliest slot.
//!
//! What keeps the plan true to the store is the caller's transaction (see [`super::Lablets`]):
//! it requires the admission key unchanged since the plan and each worker record a booking
//! goes to at the revision the plan read ([`Host::revision`]).
//!
//! The plan is made at one instant and used for up to [`MAX_AGE_SECS`] after it; the loads
//! that move with `now` are reserved for that long (an ASAP session's slot starts at
//! `now + lead`; a session kept past its slot end holds until `now` plus a minute), and a
//! planned (re)launch whose time has passed is counted as launched now. Everything else only
//! frees capacity as time passes.

use super::types::{Admission, Placement};
use crate::definition::LabletDefinition;
use crate::placement::filter::{check_static, check_template, Requirements, StaticAttrs};
use crate::planner::profile::{Dims, LoadProfile};
use crate::planner::{Plan, PlanInput, PriorAssignment, WorkerOrigin};
use crate::runtime::{RuntimeSettings, StateSnapshot};
use crate::session::{LabletSession, SessionState};
use crate::template::WorkerTemplate;
use crate::timeslot::Timestamp;
use crate::worker::WorkerState;
use std::collections::BTreeMap;

/// How long after it was made a plan may take bookings (seconds).
pub const MAX_AGE_SECS: i64 = 2;

/// A session kept past its slot end holds capacity until `now` plus this long (the planner's
/// hold, see [`crate::runtime::plan_input`]); such loads are reserved [`MAX_AGE_SECS`] longer.
const HOLD_SECS: i64 = 60;

fn secs(t: Timestamp) -> i64 {
    t.timestamp()
}

fn ts(s: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// The packed dimensions of a requirement: cpu, memory, storage, nodes, ports (as the planner
/// packs them).
pub fn need_of(r: &Requirements) -> Dims {
    let d = r.load.dims();
    let ports = u32::try_from(r.ports.len()).unwrap_or(u32::MAX);
    [d[0], d[1], d[2], d[3], ports]
}

#[derive(Debug, Clone)]
enum Kind {
    /// An existing worker, with what its static filters read.
    Existing(StaticAttrs),
    /// A worker the plan launches from this template.
    Planned(Box<WorkerTemplate>),
}

/// One billed run: `(launch_at, ready_at, stop_at)` in seconds, and whether it starts with a
/// (re)launch (not the current run of a worker that is up).
#[derive(Debug, Clone, Copy)]
struct HostRun {
    launch: i64,
    ready: i64,
    stop: i64,
    launches: bool,
}

/// A worker of the plan, as the fast path sees it.
#[derive(Debug, Clone)]
pub struct Host {
    id: String,
    template: String,
    region: String,
    origin: WorkerOrigin,
    cap: Dims,
    runs: Vec<HostRun>,
    prof: LoadProfile,
    kind: Kind,
    /// The `mod_revision` of an existing worker's record in the snapshot.
    revision: Option<crate::store::Revision>,
    /// RUNNING now and not draining: it can be kept up through any slot.
    up: bool,
}

impl Host {
    /// Worker id (`plan-N` for a planned launch).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Capacity: cpu, memory, storage, nodes, ports.
    pub fn capacity(&self) -> Dims {
        self.cap
    }

    /// The `mod_revision` of its record in the snapshot the plan was made from (`None`: a
    /// planned launch, no record yet). A booking placed here is written only if the record is
    /// still at that revision.
    pub fn revision(&self) -> Option<crate::store::Revision> {
        self.revision
    }

    /// Its load over time (the plan's assignments plus what was fitted since).
    pub fn profile(&self) -> &LoadProfile {
        &self.prof
    }

    fn admits(&self, req: &Requirements) -> bool {
        match &self.kind {
            Kind::Existing(attrs) => check_static(attrs.view(), req).is_ok(),
            Kind::Planned(t) => {
                req.region.as_ref().is_none_or(|r| *r == self.region)
                    && check_template(t, &self.region, req).is_ok()
            }
        }
    }
}

/// A booking fitted into an [`AdmissionPlan`]: the answer and what it takes.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The booking's session id.
    pub session_id: String,
    /// The admission answer (always accepted).
    pub admission: Admission,
    /// Index of the host in [`AdmissionPlan::hosts`].
    pub host: usize,
    /// Reserved from (seconds; the slot start less the lab's instantiation)…
    pub from: i64,
    /// …until (seconds; the slot end).
    pub until: i64,
    /// The packed dimensions it takes.
    pub need: Dims,
}

/// A booking fitted into an [`AdmissionPlan`] and committed, to be carried into a newer plan
/// ([`AdmissionPlan::carry`]).
#[derive(Debug, Clone)]
pub struct Carried {
    /// The session as committed (PENDING).
    pub session: LabletSession,
    /// Its definition.
    pub def: LabletDefinition,
    /// The worker (or planned launch) it was fitted to.
    pub host: String,
    /// When it was fitted.
    pub now: Timestamp,
}

/// The last admission plan with the free capacity over time of its workers (see the module
/// docs). Pure data: made from a plan and its snapshot, no I/O.
#[derive(Debug, Clone)]
pub struct AdmissionPlan {
    now: i64,
    horizon_end: i64,
    hosts: Vec<Host>,
    /// The plan's placements plus what was fitted since (the next full re-plan keeps them
    /// where they still fit, as the controller keeps its own).
    prior: Vec<PriorAssignment>,
}

impl AdmissionPlan {
    /// The fast-path view of `plan`, made by the planner from `input` (from `snap`). Workers
    /// that stay draining, and workers the snapshot or the templates do not describe, take no
    /// booking here.
    pub fn new(plan: &Plan, input: &PlanInput, snap: &StateSnapshot) -> Self {
        let now = secs(plan.now);
        let needs: BTreeMap<&str, Dims> = input
            .sessions
            .iter()
            .map(|s| (s.id.as_str(), need_of(&s.requirements)))
            .collect();
        let mut by_worker: BTreeMap<&str, Vec<&crate::planner::Assignment>> = BTreeMap::new();
        for a in &plan.assignments {
            by_worker.entry(a.worker_id.as_str()).or_default().push(a);
        }
        let mut hosts = Vec::new();
        for w in &plan.workers {
            if w.runs.is_empty() {
                continue;
            }
            let (kind, revision) = match w.origin {
                WorkerOrigin::Existing { .. } => match snap.workers.get(&w.id) {
                    Some(v) => (
                        Kind::Existing(StaticAttrs::of(&v.value)),
                        Some(v.mod_revision),
                    ),
                    None => continue,
                },
                WorkerOrigin::New => match input.templates.iter().find(|t| t.name == w.template) {
                    Some(t) => (Kind::Planned(Box::new(t.clone())), None),
                    None => continue,
                },
            };
            let on_now = match w.origin {
                WorkerOrigin::Existing { state } => {
                    !matches!(state, WorkerState::Stopped | WorkerState::Stopping)
                }
                WorkerOrigin::New => false,
            };
            // A worker that stays draining: its runs end at its drain deadline; keep off it.
            let draining = w.draining_since.is_some();
            let runs = w
                .runs
                .iter()
                .enumerate()
                .map(|(i, r)| HostRun {
                    launch: secs(r.launch_at),
                    ready: secs(r.ready_at),
                    stop: if draining { now } else { secs(r.stop_at) },
                    launches: !(i == 0 && on_now),
                })
                .collect();
            let c = w.capacity.dims();
            let mut prof = LoadProfile::default();
            for a in by_worker.get(w.id.as_str()).into_iter().flatten() {
                let Some(need) = needs.get(a.session_id.as_str()) else {
                    continue;
                };
                let (from, until) = (secs(a.start), secs(a.end));
                prof.add(need, from, until);
                // Loads that move later with `now`: reserve them for the plan's lifetime.
                let moves = match snap.sessions.get(&a.session_id).map(|s| &s.value) {
                    Some(s) if s.state == SessionState::Pending => s.timeslot.is_none(),
                    Some(_) => until <= now.saturating_add(HOLD_SECS),
                    None => false,
                };
                if moves {
                    prof.add(need, until, until.saturating_add(MAX_AGE_SECS));
                }
            }
            hosts.push(Host {
                id: w.id.clone(),
                template: w.template.clone(),
                region: w.region.clone(),
                origin: w.origin,
                cap: [c[0], c[1], c[2], c[3], w.ports],
                runs,
                prof,
                kind,
                revision,
                up: !draining
                    && w.origin
                        == (WorkerOrigin::Existing {
                            state: WorkerState::Running,
                        }),
            });
        }
        AdmissionPlan {
            now,
            horizon_end: secs(plan.horizon_end),
            hosts,
            prior: plan.prior_assignments(),
        }
    }

    /// When the plan was made.
    pub fn made_at(&self) -> Timestamp {
        ts(self.now)
    }

    /// Where the plan and the bookings fitted since put each session, as the `previous` of
    /// the next full re-plan ([`super::decide::admit_planned`]).
    pub fn prior(&self) -> &[PriorAssignment] {
        &self.prior
    }

    /// Its workers.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Fits PENDING `candidate` (of definition `def`) at `now` into the free capacity of a
    /// worker billed through its whole reservation (see the module docs); `None`: ask the full
    /// re-plan.
    pub fn fit(
        &self,
        candidate: &LabletSession,
        def: &LabletDefinition,
        now: Timestamp,
        settings: &RuntimeSettings,
    ) -> Option<Fit> {
        self.fit_preferring(candidate, def, now, settings, None)
    }

    /// As [`fit`](Self::fit), trying the worker with id `prefer` first (a booking fitted into
    /// an older plan, carried over into a newer one where it can stay).
    pub fn fit_preferring(
        &self,
        candidate: &LabletSession,
        def: &LabletDefinition,
        now: Timestamp,
        settings: &RuntimeSettings,
        prefer: Option<&str>,
    ) -> Option<Fit> {
        let t = candidate.timeslot?;
        if candidate.state != SessionState::Pending || candidate.definition_id != def.id {
            return None;
        }
        let now_s = secs(now);
        if now_s < self.now || now_s - self.now > MAX_AGE_SECS {
            return None;
        }
        let from = secs(t.start.checked_sub_signed(settings.instantiation())?);
        let until = secs(t.end);
        if from < now_s || from >= self.horizon_end || until <= from {
            return None;
        }
        let region = candidate
            .region
            .as_deref()
            .or(settings.default_region.as_deref());
        let req = Requirements::of(def, region);
        let need = need_of(&req);
        let first = prefer.and_then(|id| self.hosts.iter().position(|h| h.id == id));
        let order = first
            .into_iter()
            .chain((0..self.hosts.len()).filter(|&i| Some(i) != first));
        for i in order {
            let Some(h) = self.hosts.get(i) else {
                continue;
            };
            if !h.admits(&req) {
                continue;
            }
            let run = h.runs.iter().find_map(|r| {
                // A (re)launch planned before `now` has not happened: it happens now.
                let late = if r.launches {
                    now_s.saturating_sub(r.launch).max(0)
                } else {
                    0
                };
                let ready = r.ready.saturating_add(late);
                (ready <= from && until <= r.stop).then_some((r.launch, ready))
            });
            // Not billed through the slot, but RUNNING now: it can be kept up (or stopped and
            // started again in time) for it; RUNNING by the reservation's start either way.
            let run = run.or_else(|| h.up.then_some((now_s, from)));
            let Some((launch, ready)) = run else {
                continue;
            };
            if h.prof.fits(&h.cap, &need, from, until).is_none() {
                continue;
            }
            let placement = match h.origin {
                WorkerOrigin::Existing { state } => Placement::Worker {
                    worker_id: h.id.clone(),
                    state,
                },
                WorkerOrigin::New => Placement::Launch {
                    worker_id: h.id.clone(),
                    template: h.template.clone(),
                    region: h.region.clone(),
                    launch_at: ts(launch.max(now_s)),
                },
            };
            return Some(Fit {
                session_id: candidate.id.clone(),
                admission: Admission::Accepted {
                    placement,
                    ready_by: ts(ready.max(now_s)),
                    start: t.start,
                    end: t.end,
                },
                host: i,
                from,
                until,
                need,
            });
        }
        None
    }

    /// Carries bookings fitted into an older plan (and committed) into this one, made from a
    /// state that does not hold them yet: each goes to the worker it went to where it still
    /// fits there, else wherever [`fit`](Self::fit) puts it; returns what each takes. `None`:
    /// one fits nowhere, and this plan must not take bookings.
    pub fn carry<'a>(
        &mut self,
        bookings: impl IntoIterator<Item = &'a Carried>,
        settings: &RuntimeSettings,
    ) -> Option<Vec<Fit>> {
        let mut fits = Vec::new();
        for b in bookings {
            let now = b.now.max(self.made_at());
            let fit = self.fit_preferring(&b.session, &b.def, now, settings, Some(&b.host))?;
            self.take(&fit);
            fits.push(fit);
        }
        Some(fits)
    }

    /// Takes what `fit` (made by [`fit`](Self::fit) on this plan) reserves.
    pub fn take(&mut self, fit: &Fit) {
        if let Some(h) = self.hosts.get_mut(fit.host) {
            h.prof.add(&fit.need, fit.from, fit.until);
            self.prior.push(PriorAssignment {
                session_id: fit.session_id.clone(),
                worker_id: h.id.clone(),
                template: h.template.clone(),
                region: h.region.clone(),
            });
        }
    }
}
