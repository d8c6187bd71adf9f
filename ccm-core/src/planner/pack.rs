//! Time-aware packing: sessions onto workers, each worker a capacity-over-time step function.
//!
//! Sessions are taken by slot start, larger first, then id. Each goes where it adds the least
//! billed cost per copy of it the worker could still hold: a worker already billed through the
//! slot costs nothing (first such worker wins); otherwise running, booting, draining, stopped and
//! planned workers are priced by the billed time they would add (keeping through a short gap,
//! or a relaunch `lead` before the slot), and a new worker of each enabled template by its whole
//! run. Ties keep the existing worker, so a STOPPED worker is restarted rather than a new one
//! launched when both cost the same.

use super::cost::{self, Demand, PriceCap};
use super::plan::{
    Action, Assignment, Plan, PlanInput, PlannedWorker, Run, TemplateVerdict, Unserved,
    WorkerOrigin,
};
use super::policy::Policy;
use super::profile::{copies, Busy, Dims, GapRule, LoadProfile};
use crate::license::LicenseType;
use crate::placement::filter::{
    check_dynamic, check_static, check_template, Rejection, Requirements, StaticView,
};
use crate::resources::Load;
use crate::session::SessionState;
use crate::template::{WorkerTemplate, DEFAULT_COST_PER_HOUR_USD, DEFAULT_STARTUP_MINUTES};
use crate::timeslot::Timestamp;
use crate::version::CmlVersion;
use crate::worker::{Worker, WorkerState};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod improve;

/// Seconds since the epoch.
pub(crate) fn secs(t: Timestamp) -> i64 {
    t.timestamp()
}

/// A timestamp from seconds since the epoch.
pub(crate) fn ts(s: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// The five packed dimensions of a requirement (ports last).
pub(crate) fn need_of(r: &Requirements) -> Dims {
    let d = r.load.dims();
    [d[0], d[1], d[2], d[3], r.ports.len() as u32]
}

/// The five packed dimensions of a template's capacity.
pub(crate) fn cap_of_template(t: &WorkerTemplate) -> Dims {
    let d = t.load_capacity().dims();
    [d[0], d[1], d[2], d[3], t.port_range.len()]
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum StaticKey {
    Worker(String, LicenseType, CmlVersion, BTreeSet<String>, String),
    Template(usize, String),
}

struct Pw {
    id: String,
    template: String,
    region: String,
    origin: WorkerOrigin,
    class: usize,
    cap: Dims,
    price: f64,
    startup: i64,
    lead: i64,
    keep: i64,
    drain_timeout: i64,
    prof: LoadProfile,
    busy: Busy,
    on_now: bool,
    earliest: i64,
    /// No (re)launch before this (the cooldown after a stop).
    not_before: i64,
    draining_since: Option<i64>,
    cancel_drain: bool,
    warm: bool,
    sessions: Vec<usize>,
}

struct Ss<'a> {
    id: &'a str,
    def: &'a str,
    req: &'a Requirements,
    a: i64,
    b: i64,
    need: Dims,
    rclass: usize,
    worker: Option<usize>,
    bound: bool,
}

struct Ctx<'a> {
    now: i64,
    horizon_end: i64,
    policy: &'a Policy,
    templates: &'a [WorkerTemplate],
    workers: Vec<Pw>,
    keys: Vec<StaticKey>,
    key_ids: BTreeMap<StaticKey, usize>,
    rclasses: Vec<&'a Requirements>,
    memo: Vec<Vec<u8>>,
    live: BTreeMap<(usize, String), u32>,
    taken_ids: BTreeSet<String>,
    next_id: u64,
}

impl<'a> Ctx<'a> {
    fn class(&mut self, k: StaticKey) -> usize {
        if let Some(&i) = self.key_ids.get(&k) {
            return i;
        }
        self.keys.push(k.clone());
        self.key_ids.insert(k, self.keys.len() - 1);
        self.keys.len() - 1
    }

    fn static_rejection(&self, rc: usize, class: usize) -> Option<Rejection> {
        let req = self.rclasses[rc];
        match &self.keys[class] {
            StaticKey::Worker(region, lic, ver, defs, ami) => check_static(
                StaticView {
                    region,
                    license: *lic,
                    cml_version: ver,
                    node_definitions: defs,
                    ami_name: ami,
                },
                req,
            )
            .err(),
            StaticKey::Template(t, region) => template_rejection(&self.templates[*t], region, req),
        }
    }

    fn static_ok(&mut self, rc: usize, class: usize) -> bool {
        match self.memo.get(rc).and_then(|row| row.get(class)) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        let v = self.static_rejection(rc, class).is_none();
        if self.memo.len() <= rc {
            self.memo.resize(rc + 1, Vec::new());
        }
        let row = &mut self.memo[rc];
        if row.len() <= class {
            row.resize(self.keys.len().max(class + 1), 0);
        }
        row[class] = if v { 1 } else { 2 };
        v
    }

    /// Templates (indexes) that could host requirement class `rc` in some region.
    fn fitting_templates(&mut self, rc: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for t in 0..self.templates.len() {
            if !self.templates[t].enabled {
                continue;
            }
            let regions = self.templates[t].regions.clone();
            if regions.into_iter().any(|r| {
                let c = self.class(StaticKey::Template(t, r));
                self.static_ok(rc, c)
            }) {
                out.push(t);
            }
        }
        out
    }

    fn rule(&self, w: &Pw) -> GapRule {
        GapRule {
            now: self.now,
            lead: w.lead,
            keep: w.keep,
        }
    }

    fn room(&self, t: usize, region: &str) -> bool {
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

    fn fresh_id(&mut self) -> String {
        loop {
            self.next_id += 1;
            let id = format!("plan-{}", self.next_id);
            if !self.taken_ids.contains(&id) {
                self.taken_ids.insert(id.clone());
                return id;
            }
        }
    }

    fn new_worker(&mut self, id: String, t: usize, region: &str) -> usize {
        let tpl = &self.templates[t];
        let startup = i64::from(tpl.startup_minutes) * 60;
        let class = self.class(StaticKey::Template(t, region.to_string()));
        *self.live.entry((t, region.to_string())).or_insert(0) += 1;
        self.taken_ids.insert(id.clone());
        self.workers.push(Pw {
            id,
            template: tpl.name.clone(),
            region: region.to_string(),
            origin: WorkerOrigin::New,
            class,
            cap: cap_of_template(tpl),
            price: tpl.cost_per_hour_usd,
            startup,
            lead: self.policy.lead_secs(startup),
            keep: self.policy.keep_idle_secs(startup),
            drain_timeout: (tpl.drain_timeout_hours * 3600.0) as i64,
            prof: LoadProfile::default(),
            busy: Busy::default(),
            on_now: false,
            earliest: self.now + startup,
            not_before: self.now,
            draining_since: None,
            cancel_drain: false,
            warm: false,
            sessions: Vec::new(),
        });
        self.workers.len() - 1
    }

    fn place(&mut self, w: usize, s: &Ss<'_>, si: usize) {
        let pw = &mut self.workers[w];
        pw.prof.add(&s.need, s.a, s.b);
        pw.busy.insert(s.a, s.b);
        pw.sessions.push(si);
        if pw.draining_since.is_some() {
            pw.cancel_drain = true;
            pw.draining_since = None;
        }
    }

    /// Whether `s` can go on worker `w` now (static, ready in time, capacity over the slot).
    fn can_take(&mut self, w: usize, s: &Ss<'_>) -> Option<Dims> {
        let (class, earliest) = (self.workers[w].class, self.workers[w].earliest);
        if s.a < earliest || !self.static_ok(s.rclass, class) {
            return None;
        }
        let pw = &self.workers[w];
        pw.prof.fits(&pw.cap, &s.need, s.a, s.b)
    }

    /// Regions a new worker of template `t` may be opened in for `req`, in preference order.
    fn regions_for(&self, t: usize, req: &Requirements) -> Vec<String> {
        let tpl = &self.templates[t];
        match &req.region {
            Some(r) => tpl.regions.iter().filter(|x| *x == r).cloned().collect(),
            None => tpl.regions.clone(),
        }
    }
}

fn template_rejection(t: &WorkerTemplate, region: &str, req: &Requirements) -> Option<Rejection> {
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

enum Choice {
    Existing(usize),
    New(usize, String),
}

/// Computes the plan (see [`crate::planner::plan`]).
pub(crate) fn run(
    input: &PlanInput,
    policy: &Policy,
    progress: &mut dyn FnMut(usize, usize),
) -> Plan {
    let now = secs(input.now);
    let horizon_end = now + policy.horizon_secs();
    let mut ctx = Ctx {
        now,
        horizon_end,
        policy,
        templates: &input.templates,
        workers: Vec::new(),
        keys: Vec::new(),
        key_ids: BTreeMap::new(),
        rclasses: Vec::new(),
        memo: Vec::new(),
        live: BTreeMap::new(),
        taken_ids: BTreeSet::new(),
        next_id: 0,
    };
    let tpl_idx: BTreeMap<&str, usize> = input
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();

    // Existing workers, by id.
    let mut fleet: Vec<&Worker> = input.workers.iter().collect();
    fleet.sort_by(|a, b| a.id.cmp(&b.id));
    for w in &fleet {
        ctx.taken_ids.insert(w.id.clone());
    }
    for p in &input.previous {
        ctx.taken_ids.insert(p.worker_id.clone());
    }
    for w in fleet {
        if w.state != WorkerState::Terminated && w.state != WorkerState::Terminating {
            if let Some(&t) = tpl_idx.get(w.template.as_str()) {
                *ctx.live.entry((t, w.region.clone())).or_insert(0) += 1;
            }
        }
        let usable = matches!(
            w.state,
            WorkerState::Running
                | WorkerState::Draining
                | WorkerState::Pending
                | WorkerState::Provisioning
                | WorkerState::Starting
                | WorkerState::Stopped
                | WorkerState::Stopping
        );
        if !usable {
            continue;
        }
        let tpl = tpl_idx
            .get(w.template.as_str())
            .map(|&i| &input.templates[i]);
        let startup = i64::from(tpl.map_or(DEFAULT_STARTUP_MINUTES, |t| t.startup_minutes)) * 60;
        let on_now = !matches!(w.state, WorkerState::Stopped | WorkerState::Stopping);
        // Cooldown: a worker that stopped (or is stopping now) is not started again before
        // `cooldown_minutes` have passed since its stop.
        let cooldown = i64::from(policy.cooldown_minutes) * 60;
        let not_before = match w.state {
            WorkerState::Stopping => now + cooldown,
            WorkerState::Stopped => w.stopped_at.map_or(now, |t| (secs(t) + cooldown).max(now)),
            _ => now,
        };
        let earliest = match w.state {
            WorkerState::Running | WorkerState::Draining => now,
            WorkerState::Pending | WorkerState::Provisioning | WorkerState::Starting => w
                .boot_started_at
                .or(w.launched_at)
                .map(|l| secs(l) + startup)
                .unwrap_or(now + startup)
                .max(now),
            _ => not_before + startup,
        };
        let class = ctx.class(StaticKey::Worker(
            w.region.clone(),
            w.license_type,
            w.cml_version.clone(),
            w.node_definitions.clone(),
            w.ami_name.clone(),
        ));
        let mut busy = Busy::default();
        if on_now {
            busy.insert(now, earliest);
        }
        let c = w.capacity.dims();
        ctx.workers.push(Pw {
            id: w.id.clone(),
            template: w.template.clone(),
            region: w.region.clone(),
            origin: WorkerOrigin::Existing { state: w.state },
            class,
            cap: [c[0], c[1], c[2], c[3], w.ports.range().len()],
            price: tpl.map_or(DEFAULT_COST_PER_HOUR_USD, |t| t.cost_per_hour_usd),
            startup,
            lead: policy.lead_secs(startup),
            keep: policy.keep_idle_secs(startup),
            drain_timeout: (tpl.map_or(4.0, |t| t.drain_timeout_hours) * 3600.0) as i64,
            prof: LoadProfile::default(),
            busy,
            on_now,
            earliest,
            not_before,
            draining_since: (w.state == WorkerState::Draining)
                .then(|| w.drain_started_at.map(secs).unwrap_or(now)),
            cancel_drain: false,
            warm: false,
            sessions: Vec::new(),
        });
    }
    let by_id: BTreeMap<String, usize> = ctx
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.clone(), i))
        .collect();
    let existing_count = ctx.workers.len();

    // Sessions, by id.
    let mut order: Vec<&super::plan::PlannedSession> = input.sessions.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let mut rclass_of: HashMap<&Requirements, usize> = HashMap::new();
    let mut sess: Vec<Ss<'_>> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut beyond_horizon = 0;
    for s in order {
        let (a, b) = (secs(s.slot.start), secs(s.slot.end));
        if b <= now {
            continue;
        }
        let rc = *rclass_of.entry(&s.requirements).or_insert_with(|| {
            ctx.rclasses.push(&s.requirements);
            ctx.rclasses.len() - 1
        });
        let bound_to = if s.state.holds_capacity() {
            s.worker_id
                .as_ref()
                .and_then(|id| by_id.get(id).copied())
                .filter(|&w| ctx.workers[w].on_now)
        } else {
            None
        };
        if bound_to.is_none() && !(s.state == SessionState::Pending || s.state.holds_capacity()) {
            continue;
        }
        if bound_to.is_none() && a >= horizon_end {
            beyond_horizon += 1;
            continue;
        }
        let si = sess.len();
        sess.push(Ss {
            id: &s.id,
            def: &s.definition_id,
            req: &s.requirements,
            a: a.max(now),
            b,
            need: need_of(&s.requirements),
            rclass: rc,
            worker: None,
            bound: bound_to.is_some(),
        });
        match bound_to {
            Some(w) => {
                let pw = &mut ctx.workers[w];
                pw.prof.add(&sess[si].need, sess[si].a, b);
                pw.busy.insert(sess[si].a, b);
                pw.sessions.push(si);
                sess[si].worker = Some(w);
            }
            None => pending.push(si),
        }
    }

    // Placement order: start, larger first, id.
    let mut max_cap = [1u32; 5];
    for c in ctx
        .workers
        .iter()
        .map(|w| w.cap)
        .chain(input.templates.iter().map(cap_of_template))
    {
        for (m, x) in max_cap.iter_mut().zip(c) {
            *m = (*m).max(x);
        }
    }
    let size = |n: &Dims| -> u64 {
        n.iter()
            .zip(max_cap)
            .map(|(x, m)| u64::from(*x) * 1_000_000 / u64::from(m.max(1)))
            .max()
            .unwrap_or(0)
    };
    pending.sort_by_key(|&i| (sess[i].a, Reverse(size(&sess[i].need)), i));

    // Pre-create template classes so the memo is warm in a stable order.
    for (t, tpl) in input.templates.iter().enumerate() {
        for r in &tpl.regions {
            ctx.class(StaticKey::Template(t, r.clone()));
        }
    }

    // Keep earlier assignments that still fit.
    let prior: BTreeMap<&str, &super::plan::PriorAssignment> = input
        .previous
        .iter()
        .map(|p| (p.session_id.as_str(), p))
        .collect();
    let mut by_id = by_id;
    let mut rest = Vec::with_capacity(pending.len());
    let mut movable = vec![false; sess.len()];
    for &si in &pending {
        let Some(p) = prior.get(sess[si].id) else {
            rest.push(si);
            continue;
        };
        let w = match by_id.get(&p.worker_id) {
            Some(&w) => Some(w),
            None => match tpl_idx.get(p.template.as_str()) {
                Some(&t)
                    if input.templates[t].enabled
                        && input.templates[t].regions.contains(&p.region)
                        && ctx.room(t, &p.region) =>
                {
                    let w = ctx.new_worker(p.worker_id.clone(), t, &p.region);
                    by_id.insert(p.worker_id.clone(), w);
                    Some(w)
                }
                _ => None,
            },
        };
        match w.filter(|&w| ctx.can_take(w, &sess[si]).is_some()) {
            Some(w) => {
                ctx.place(w, &sess[si], si);
                sess[si].worker = Some(w);
            }
            None => rest.push(si),
        }
    }

    // Greedy placement.
    let total = rest.len();
    let mut unserved_idx = Vec::new();
    for (n, &si) in rest.iter().enumerate() {
        if n % 512 == 0 {
            progress(n, total);
        }
        match choose(&mut ctx, &sess[si]) {
            Some(Choice::Existing(w)) => {
                ctx.place(w, &sess[si], si);
                sess[si].worker = Some(w);
                movable[si] = true;
            }
            Some(Choice::New(t, region)) => {
                let id = ctx.fresh_id();
                let w = ctx.new_worker(id, t, &region);
                ctx.place(w, &sess[si], si);
                sess[si].worker = Some(w);
                movable[si] = true;
            }
            None => unserved_idx.push(si),
        }
    }
    progress(total, total);

    // Local improvement of what the greedy pass placed (kept and bound sessions stay).
    improve::improve(&mut ctx, &mut sess, &movable);

    // Minimum warm workers: those up now first, then the busiest planned ones.
    let mut warm_order: Vec<usize> = (0..ctx.workers.len())
        .filter(|&w| ctx.workers[w].on_now || !ctx.workers[w].sessions.is_empty())
        .collect();
    warm_order.sort_by_key(|&w| {
        let pw = &ctx.workers[w];
        (!pw.on_now, pw.draining_since.is_some(), w)
    });
    for &w in warm_order.iter().take(policy.min_warm_workers as usize) {
        let pw = &mut ctx.workers[w];
        pw.warm = true;
        // A warm worker that was draining takes sessions again.
        if pw.draining_since.take().is_some() {
            pw.cancel_drain = true;
        }
    }

    let unserved: Vec<Unserved> = unserved_idx
        .iter()
        .map(|&si| explain(&mut ctx, &sess[si]))
        .collect();
    build_plan(
        &mut ctx,
        &sess,
        existing_count,
        unserved,
        beyond_horizon,
        &prior,
    )
}

fn choose(ctx: &mut Ctx<'_>, s: &Ss<'_>) -> Option<Choice> {
    let mut best: Option<(f64, Choice)> = None;
    for w in 0..ctx.workers.len() {
        let Some(free) = ctx.can_take(w, s) else {
            continue;
        };
        let pw = &ctx.workers[w];
        let extra = pw.busy.marginal(s.a, s.b, &ctx.rule(pw));
        if extra <= 0 {
            return Some(Choice::Existing(w));
        }
        let k = copies(&free, &s.need).max(1);
        let score = extra as f64 * pw.price / f64::from(k);
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, Choice::Existing(w)));
        }
    }
    for t in 0..ctx.templates.len() {
        let tpl = &ctx.templates[t];
        let startup = i64::from(tpl.startup_minutes) * 60;
        if !tpl.enabled || s.a < ctx.now + startup {
            continue;
        }
        let cap = cap_of_template(tpl);
        let lead = ctx.policy.lead_secs(startup);
        let k = copies(&cap, &s.need).max(1);
        // A new instance also pays the cooldown: an existing worker that can take the session
        // with an idle gap up to lead + cooldown wins (the same rule that keeps a worker through
        // such a gap), so the plan never stops one worker to launch another minutes later.
        let overhead = i64::from(ctx.policy.cooldown_minutes) * 60;
        let score = ((lead.min(s.a - ctx.now) + overhead + (s.b - s.a)) as f64
            * tpl.cost_per_hour_usd)
            / f64::from(k);
        if best.as_ref().is_some_and(|(b, _)| score >= *b) {
            continue;
        }
        for region in ctx.regions_for(t, s.req) {
            let class = ctx.class(StaticKey::Template(t, region.clone()));
            if !ctx.room(t, &region) || !ctx.static_ok(s.rclass, class) {
                continue;
            }
            if s.need.iter().zip(cap).any(|(n, c)| *n > c) {
                continue;
            }
            best = Some((score, Choice::New(t, region)));
            break;
        }
    }
    best.map(|(_, c)| c)
}

fn explain(ctx: &mut Ctx<'_>, s: &Ss<'_>) -> Unserved {
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut static_ok_workers = Vec::new();
    for w in 0..ctx.workers.len() {
        let class = ctx.workers[w].class;
        if let StaticKey::Template(..) = ctx.keys[class] {
            if ctx.workers[w].sessions.is_empty() {
                continue;
            }
        }
        let key = match ctx.static_rejection(s.rclass, class) {
            Some(r) => r.kind().as_str().to_string(),
            None => {
                static_ok_workers.push(w);
                let pw = &ctx.workers[w];
                if s.a < pw.earliest {
                    "not_ready_in_time".to_string()
                } else {
                    let peak = pw.prof.peak(s.a, s.b);
                    let cap = Load::from_dims([pw.cap[0], pw.cap[1], pw.cap[2], pw.cap[3]]);
                    let used = Load::from_dims([peak[0], peak[1], peak[2], peak[3]]);
                    match check_dynamic(&cap, &used, pw.cap[4].saturating_sub(peak[4]), s.req) {
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
    for (t, tpl) in ctx.templates.iter().enumerate() {
        let verdict = if !tpl.enabled {
            Some("disabled".to_string())
        } else {
            let regions = ctx.regions_for(t, s.req);
            if regions.is_empty() {
                Some(
                    Rejection::Region {
                        wanted: s.req.region.clone().unwrap_or_default(),
                        actual: tpl.regions.join("|"),
                    }
                    .to_string(),
                )
            } else {
                let mut v = None;
                let mut any_room = false;
                for r in &regions {
                    match template_rejection(tpl, r, s.req) {
                        Some(rej) => {
                            v = Some(rej.to_string());
                            break;
                        }
                        None if ctx.room(t, r) => {
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
                        let ready = ctx.now + i64::from(tpl.startup_minutes) * 60;
                        (s.a < ready).then(|| {
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
    let earliest = earliest_start(ctx, s, &static_ok_workers, &fitting);
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
            .map(|(t, _)| ctx.templates[*t].startup_minutes)
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
        definition_id: s.def.to_string(),
        reason,
        workers_rejected: rejected,
        templates: verdicts,
        earliest_start: earliest.map(ts),
    }
}

fn earliest_start(
    ctx: &mut Ctx<'_>,
    s: &Ss<'_>,
    workers: &[usize],
    fitting: &[(usize, String)],
) -> Option<i64> {
    let dur = s.b - s.a;
    let mut cands: BTreeSet<i64> = BTreeSet::new();
    cands.insert(s.a);
    for (t, _) in fitting {
        cands.insert(ctx.now + i64::from(ctx.templates[*t].startup_minutes) * 60);
    }
    for &w in workers {
        let pw = &ctx.workers[w];
        cands.insert(pw.earliest);
        cands.extend(pw.prof.steps().iter().map(|(t, _)| *t));
    }
    let horizon_end = ctx.horizon_end;
    for t in cands
        .into_iter()
        .filter(|&t| t >= s.a && t < horizon_end)
        .take(4000)
    {
        let probe = Ss {
            id: s.id,
            def: s.def,
            req: s.req,
            a: t,
            b: t + dur,
            need: s.need,
            rclass: s.rclass,
            worker: None,
            bound: false,
        };
        if workers.iter().any(|&w| ctx.can_take(w, &probe).is_some()) {
            return Some(t);
        }
        if fitting
            .iter()
            .any(|(tpl, _)| t >= ctx.now + i64::from(ctx.templates[*tpl].startup_minutes) * 60)
        {
            return Some(t);
        }
    }
    None
}

fn build_plan(
    ctx: &mut Ctx<'_>,
    sess: &[Ss<'_>],
    existing_count: usize,
    unserved: Vec<Unserved>,
    beyond_horizon: usize,
    prior: &BTreeMap<&str, &super::plan::PriorAssignment>,
) -> Plan {
    let now = ctx.now;
    let mut workers = Vec::new();
    let mut actions = Vec::new();
    for (wi, pw) in ctx.workers.iter().enumerate() {
        if wi >= existing_count && pw.sessions.is_empty() {
            continue;
        }
        let spans = pw.busy.spans();
        // Group spans into runs.
        let mut groups: Vec<(i64, i64)> = Vec::new();
        for &(a, b) in spans {
            match groups.last_mut() {
                Some(g) if a - g.1 <= pw.keep => g.1 = g.1.max(b),
                _ => groups.push((a, b)),
            }
        }
        if pw.warm {
            if let (Some(first), Some(last)) = (groups.first().copied(), groups.last().copied()) {
                groups = vec![(first.0, last.1.max(ctx.horizon_end))];
            }
        }
        let mut runs = Vec::new();
        let mut sessions_sorted: Vec<usize> = pw.sessions.clone();
        sessions_sorted.sort_by_key(|&si| (sess[si].a, si));
        for (gi, &(ga, gb)) in groups.iter().enumerate() {
            let (launch, ready) = if gi == 0 && pw.on_now {
                (now, pw.earliest)
            } else {
                let l = (ga - pw.lead).max(pw.not_before);
                (l, l + pw.startup)
            };
            let in_run: Vec<String> = sessions_sorted
                .iter()
                .filter(|&&si| sess[si].a >= ga && sess[si].a <= gb && !sess[si].bound)
                .map(|&si| sess[si].id.to_string())
                .collect();
            let mut stop = gb;
            let mut forced = Vec::new();
            if let Some(since) = pw.draining_since {
                let deadline = since + pw.drain_timeout;
                if gb > deadline {
                    stop = deadline.max(now);
                    forced = sessions_sorted
                        .iter()
                        .filter(|&&si| sess[si].b > stop)
                        .map(|&si| sess[si].id.to_string())
                        .collect();
                }
            }
            runs.push(Run {
                launch_at: ts(launch),
                ready_at: ts(ready),
                stop_at: ts(stop),
            });
            if gi == 0 && pw.on_now {
                if pw.cancel_drain {
                    actions.push(Action::CancelDrain {
                        worker_id: pw.id.clone(),
                        at: ts(now),
                    });
                }
            } else if gi == 0 && pw.origin == WorkerOrigin::New {
                actions.push(Action::ScaleUp {
                    worker_id: pw.id.clone(),
                    template: pw.template.clone(),
                    region: pw.region.clone(),
                    launch_at: ts(launch),
                    ready_by: ts(ready),
                    sessions: in_run,
                });
            } else {
                actions.push(Action::Restart {
                    worker_id: pw.id.clone(),
                    launch_at: ts(launch),
                    ready_by: ts(ready),
                    sessions: in_run,
                });
            }
            if pw.warm {
                continue;
            }
            if !forced.is_empty() {
                actions.push(Action::ForceStop {
                    worker_id: pw.id.clone(),
                    at: ts(stop),
                    sessions: forced,
                });
            } else {
                if pw.draining_since.is_none() {
                    actions.push(Action::Drain {
                        worker_id: pw.id.clone(),
                        at: ts(stop),
                    });
                }
                actions.push(Action::Stop {
                    worker_id: pw.id.clone(),
                    at: ts(stop),
                });
            }
        }
        if pw.on_now && groups.is_empty() {
            runs.push(Run {
                launch_at: ts(now),
                ready_at: ts(now),
                stop_at: ts(now),
            });
        }
        workers.push(PlannedWorker {
            id: pw.id.clone(),
            template: pw.template.clone(),
            region: pw.region.clone(),
            origin: pw.origin,
            capacity: Load::from_dims([pw.cap[0], pw.cap[1], pw.cap[2], pw.cap[3]]),
            ports: pw.cap[4],
            cost_per_hour_usd: pw.price,
            runs,
            draining_since: pw.draining_since.map(ts),
            warm: pw.warm,
        });
    }
    let rank = |a: &Action| match a {
        Action::ForceStop { .. } => 0,
        Action::Drain { .. } => 1,
        Action::Stop { .. } => 2,
        Action::CancelDrain { .. } => 3,
        Action::Restart { .. } => 4,
        Action::ScaleUp { .. } => 5,
    };
    actions.sort_by(|x, y| (x.at(), x.worker_id(), rank(x)).cmp(&(y.at(), y.worker_id(), rank(y))));

    let mut assignments = Vec::new();
    let mut used = [0f64; 4];
    let mut demands = Vec::new();
    let mut kept = 0;
    let mut moved = 0;
    let served: BTreeSet<&str> = sess
        .iter()
        .filter(|s| s.worker.is_some())
        .map(|s| s.id)
        .collect();
    let mut fits_of: Vec<Option<Vec<usize>>> = vec![None; ctx.rclasses.len()];
    let billed_until: BTreeMap<&str, i64> = workers
        .iter()
        .map(|w| {
            let until = w
                .runs
                .iter()
                .map(|r| r.stop_at.timestamp())
                .max()
                .unwrap_or(now);
            (w.id.as_str(), until)
        })
        .collect();
    for s in sess {
        if let Some(p) = prior.get(s.id) {
            match s.worker {
                Some(w) if ctx.workers[w].id == p.worker_id => kept += 1,
                _ => moved += 1,
            }
        }
        let Some(w) = s.worker else { continue };
        let pw = &ctx.workers[w];
        assignments.push(Assignment {
            session_id: s.id.to_string(),
            definition_id: s.def.to_string(),
            worker_id: pw.id.clone(),
            start: ts(s.a),
            end: ts(s.b),
            bound: s.bound,
        });
        for (u, n) in used.iter_mut().zip(s.need) {
            *u += f64::from(n) * (s.b - s.a) as f64;
        }
        let mut fits = match &fits_of[s.rclass] {
            Some(f) => f.clone(),
            None => {
                let f = ctx.fitting_templates(s.rclass);
                fits_of[s.rclass] = Some(f.clone());
                f
            }
        };
        let pw = &ctx.workers[w];
        if fits.is_empty() {
            if let Some(t) = ctx.templates.iter().position(|t| t.name == pw.template) {
                fits.push(t);
            }
        }
        // A bound session on a worker that is stopped before it ends (a drain past its
        // timeout) is billed only while that worker runs: the bound must not charge more.
        let end = if s.bound {
            billed_until
                .get(pw.id.as_str())
                .map_or(s.b, |&until| s.b.min(until))
        } else {
            s.b
        };
        demands.push(Demand {
            need: [s.need[0], s.need[1], s.need[2], s.need[3]],
            start: s.a,
            end,
            fits,
        });
    }
    debug_assert_eq!(served.len(), assignments.len());
    let prices: Vec<PriceCap> = ctx
        .templates
        .iter()
        .map(|t| {
            let d = t.load_capacity().dims();
            PriceCap {
                price: t.cost_per_hour_usd,
                cap: d,
            }
        })
        .collect();
    // Before a session, a worker that was not up is billed at least its boot, not the
    // whole launch lead: a restarted stopped worker may come up just in time.
    let boot = ctx
        .templates
        .iter()
        .map(|t| t.startup_minutes)
        .min()
        .unwrap_or(0)
        .min(ctx.policy.lead_minutes);
    let lb = cost::lower_bound(now, &demands, &prices, i64::from(boot) * 60);
    let cost = cost::report(&workers, used, lb);
    Plan {
        now: ts(now),
        horizon_end: ts(ctx.horizon_end),
        workers,
        assignments,
        actions,
        unserved,
        beyond_horizon,
        kept,
        moved,
        cost,
    }
}
