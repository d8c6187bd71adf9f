//! The packing model: workers as capacity-over-time timelines, sessions as spans to put on them,
//! and the [`Packing`] state the phases share.
//!
//! Indexes stand for references throughout: a session names its worker by its index in
//! [`Packing::workers`], a worker its sessions by their index in the phases' session list, and
//! static filter results are cached per (requirement class, static class) pair.

use crate::placement::filter::{
    check_static, check_template, Rejection, Requirements, StaticAttrs,
};
use crate::planner::plan::WorkerOrigin;
use crate::planner::policy::Policy;
use crate::planner::profile::{Busy, Dims, GapRule, LoadProfile};
use crate::template::WorkerTemplate;
use std::collections::{BTreeMap, BTreeSet};

use super::cap_of_template;

/// What the static filters (region, licence, CML version, node definitions, AMI) see of a
/// worker, or of a new worker of a template in a region. Workers that look alike share one
/// class, so each static check runs once per (requirement class, static class).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum StaticClass {
    /// An existing worker, as it is.
    Worker(StaticAttrs),
    /// A new worker of a template.
    Template {
        /// Index into the input's templates.
        template: usize,
        /// Region it would be opened in.
        region: String,
    },
}

/// One worker of the plan (existing or new) and everything placed on it so far.
pub(super) struct WorkerTimeline {
    /// Worker id (`plan-N` for a new one).
    pub(super) id: String,
    /// Template name.
    pub(super) template: String,
    /// Region.
    pub(super) region: String,
    /// Existing (with its state now) or new.
    pub(super) origin: WorkerOrigin,
    /// Its static class (index into the packing's classes).
    pub(super) static_class: usize,
    /// Capacity in the five packed dimensions.
    pub(super) capacity: Dims,
    /// USD per billed hour.
    pub(super) price_per_hour: f64,
    /// Seconds from launch to ready.
    pub(super) startup_secs: i64,
    /// Seconds a (re)launch precedes the first session of a run.
    pub(super) lead_secs: i64,
    /// Idle gaps up to this long (seconds) are kept running and billed; longer ones stop it.
    pub(super) keep_idle_secs: i64,
    /// Seconds a drain may take before the worker is stopped anyway.
    pub(super) drain_timeout_secs: i64,
    /// Load of its sessions over time (bound sessions included).
    pub(super) load: LoadProfile,
    /// Busy spans billing is derived from: its sessions, and `[now, ready_at]` for a worker up
    /// now.
    pub(super) busy: Busy,
    /// Up now (running, draining or booting): billed from `now` without a relaunch.
    pub(super) up_now: bool,
    /// Earliest instant (seconds) it can host a session: booted, or relaunched and booted.
    pub(super) ready_at: i64,
    /// No (re)launch before this (the cooldown after a stop).
    pub(super) launch_not_before: i64,
    /// Draining since then (seconds), if it is and takes no new sessions.
    pub(super) draining_since: Option<i64>,
    /// It was draining and the plan takes it back (a session was put on it, or it is warm).
    pub(super) cancel_drain: bool,
    /// Kept running through the horizon (the warm minimum).
    pub(super) warm: bool,
    /// Sessions on it (indexes into the session list), in the order they were put there.
    pub(super) sessions: Vec<usize>,
}

/// One session to plan: its slot as seconds, and where it went.
pub(super) struct SessionSpan<'a> {
    /// Session id.
    pub(super) id: &'a str,
    /// Lab definition id.
    pub(super) definition_id: &'a str,
    /// What it needs of a worker.
    pub(super) requirements: &'a Requirements,
    /// Slot start (seconds), not before `now`.
    pub(super) start: i64,
    /// Slot end (seconds).
    pub(super) end: i64,
    /// `requirements` in the five packed dimensions.
    pub(super) need: Dims,
    /// Its requirement class (index into [`Packing::req_classes`]).
    pub(super) req_class: usize,
    /// The worker it is on (index into [`Packing::workers`]), if any yet.
    pub(super) worker: Option<usize>,
    /// Already bound to a worker that is up now: it stays there and is not planned.
    pub(super) bound: bool,
}

/// The state the phases share: the workers with their timelines, and the caches of the static
/// filters.
pub(super) struct Packing<'a> {
    /// The instant of the plan (seconds): nothing is launched before it.
    pub(super) now: i64,
    /// End of the horizon (seconds): sessions starting later are left for a later plan.
    pub(super) horizon_end: i64,
    /// The planner's knobs.
    pub(super) policy: &'a Policy,
    /// Templates new workers may be made from (the input's, in input order).
    pub(super) templates: &'a [WorkerTemplate],
    /// Every worker the plan may use: existing ones by id first, then new ones as opened.
    pub(super) workers: Vec<WorkerTimeline>,
    /// Static classes, by index.
    classes: Vec<StaticClass>,
    /// Index of each static class.
    class_ids: BTreeMap<StaticClass, usize>,
    /// Distinct requirements, by index (sessions with equal requirements share one).
    pub(super) req_classes: Vec<&'a Requirements>,
    /// `static_fit[req_class][static_class]`: whether the static filters pass (None: not
    /// checked yet).
    static_fit: Vec<Vec<Option<bool>>>,
    /// Workers not terminated per (template index, region), against `max_workers_per_region`.
    pub(super) live: BTreeMap<(usize, String), u32>,
    /// Worker ids in use (existing, in the previous plan, or opened here).
    pub(super) taken_ids: BTreeSet<String>,
    /// Last number used for a `plan-N` id.
    next_id: u64,
}

impl<'a> Packing<'a> {
    /// An empty packing at `now` (seconds).
    pub(super) fn new(now: i64, policy: &'a Policy, templates: &'a [WorkerTemplate]) -> Self {
        Packing {
            now,
            horizon_end: now + policy.horizon_secs(),
            policy,
            templates,
            workers: Vec::new(),
            classes: Vec::new(),
            class_ids: BTreeMap::new(),
            req_classes: Vec::new(),
            static_fit: Vec::new(),
            live: BTreeMap::new(),
            taken_ids: BTreeSet::new(),
            next_id: 0,
        }
    }

    /// The index of static class `k`, made on first use.
    pub(super) fn class(&mut self, k: StaticClass) -> usize {
        if let Some(&i) = self.class_ids.get(&k) {
            return i;
        }
        self.classes.push(k.clone());
        self.class_ids.insert(k, self.classes.len() - 1);
        self.classes.len() - 1
    }

    /// Whether static class `class` stands for a new worker of a template.
    pub(super) fn is_template_class(&self, class: usize) -> bool {
        matches!(self.classes[class], StaticClass::Template { .. })
    }

    /// Why requirement class `rc` cannot run on static class `class` (None: it can).
    pub(super) fn static_rejection(&self, rc: usize, class: usize) -> Option<Rejection> {
        let req = self.req_classes[rc];
        match &self.classes[class] {
            StaticClass::Worker(attrs) => check_static(attrs.view(), req).err(),
            StaticClass::Template { template, region } => {
                template_rejection(&self.templates[*template], region, req)
            }
        }
    }

    /// [`static_rejection`](Self::static_rejection) is None, cached.
    pub(super) fn static_ok(&mut self, rc: usize, class: usize) -> bool {
        if let Some(Some(v)) = self.static_fit.get(rc).and_then(|row| row.get(class)) {
            return *v;
        }
        let v = self.static_rejection(rc, class).is_none();
        if self.static_fit.len() <= rc {
            self.static_fit.resize(rc + 1, Vec::new());
        }
        let row = &mut self.static_fit[rc];
        if row.len() <= class {
            row.resize(self.classes.len().max(class + 1), None);
        }
        row[class] = Some(v);
        v
    }

    /// Templates (indexes) that could host requirement class `rc` in some region.
    pub(super) fn fitting_templates(&mut self, rc: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for t in 0..self.templates.len() {
            if !self.templates[t].enabled {
                continue;
            }
            let regions = self.templates[t].regions.clone();
            if regions.into_iter().any(|region| {
                let c = self.class(StaticClass::Template {
                    template: t,
                    region,
                });
                self.static_ok(rc, c)
            }) {
                out.push(t);
            }
        }
        out
    }

    /// How idle gaps on worker `w` are billed.
    pub(super) fn gap_rule(&self, w: &WorkerTimeline) -> GapRule {
        GapRule {
            now: self.now,
            lead: w.lead_secs,
            keep: w.keep_idle_secs,
        }
    }

    /// Whether one more worker of template `t` may be opened in `region`.
    pub(super) fn room(&self, t: usize, region: &str) -> bool {
        match self.templates[t].max_workers_per_region {
            None => true,
            Some(max) => {
                self.live
                    .get(&(t, region.to_string()))
                    .copied()
                    .unwrap_or(0)
                    < max
            }
        }
    }

    /// The next `plan-N` id no worker uses.
    pub(super) fn fresh_id(&mut self) -> String {
        loop {
            self.next_id += 1;
            let id = format!("plan-{}", self.next_id);
            if !self.taken_ids.contains(&id) {
                self.taken_ids.insert(id.clone());
                return id;
            }
        }
    }

    /// Opens a new worker `id` of template `t` in `region`; returns its index.
    pub(super) fn new_worker(&mut self, id: String, t: usize, region: &str) -> usize {
        let tpl = &self.templates[t];
        let startup_secs = i64::from(tpl.startup_minutes) * 60;
        let static_class = self.class(StaticClass::Template {
            template: t,
            region: region.to_string(),
        });
        *self.live.entry((t, region.to_string())).or_insert(0) += 1;
        self.taken_ids.insert(id.clone());
        self.workers.push(WorkerTimeline {
            id,
            template: tpl.name.clone(),
            region: region.to_string(),
            origin: WorkerOrigin::New,
            static_class,
            capacity: cap_of_template(tpl),
            price_per_hour: tpl.cost_per_hour_usd,
            startup_secs,
            lead_secs: self.policy.lead_secs(startup_secs),
            keep_idle_secs: self.policy.keep_idle_secs(startup_secs),
            drain_timeout_secs: (tpl.drain_timeout_hours * 3600.0) as i64,
            load: LoadProfile::default(),
            busy: Busy::default(),
            up_now: false,
            ready_at: self.now + startup_secs,
            launch_not_before: self.now,
            draining_since: None,
            cancel_drain: false,
            warm: false,
            sessions: Vec::new(),
        });
        self.workers.len() - 1
    }

    /// Puts session `si` on worker `w` (a draining worker takes sessions again).
    pub(super) fn assign(&mut self, sessions: &mut [SessionSpan<'_>], si: usize, w: usize) {
        let s = &sessions[si];
        let pw = &mut self.workers[w];
        pw.load.add(&s.need, s.start, s.end);
        pw.busy.insert(s.start, s.end);
        pw.sessions.push(si);
        if pw.draining_since.is_some() {
            pw.cancel_drain = true;
            pw.draining_since = None;
        }
        sessions[si].worker = Some(w);
    }

    /// Whether `s` can go on worker `w` now (static filters, ready in time, capacity over the
    /// slot); the free room at the tightest instant when it can.
    pub(super) fn can_take(&mut self, w: usize, s: &SessionSpan<'_>) -> Option<Dims> {
        let (class, ready_at) = (self.workers[w].static_class, self.workers[w].ready_at);
        if s.start < ready_at || !self.static_ok(s.req_class, class) {
            return None;
        }
        let pw = &self.workers[w];
        pw.load.fits(&pw.capacity, &s.need, s.start, s.end)
    }

    /// Regions a new worker of template `t` may be opened in for `req`, in preference order.
    pub(super) fn regions_for(&self, t: usize, req: &Requirements) -> Vec<String> {
        let tpl = &self.templates[t];
        match &req.region {
            Some(r) => tpl.regions.iter().filter(|x| *x == r).cloned().collect(),
            None => tpl.regions.clone(),
        }
    }
}

/// Why `req` cannot run on a new worker of `t` in `region` (None: it can).
pub(super) fn template_rejection(
    t: &WorkerTemplate,
    region: &str,
    req: &Requirements,
) -> Option<Rejection> {
    if let Some(r) = &req.region {
        if r != region {
            return Some(Rejection::Region {
                wanted: r.clone(),
                actual: region.to_string(),
            });
        }
    }
    check_template(t, region, req).err()
}
