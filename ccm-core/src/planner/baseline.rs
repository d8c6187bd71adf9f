//! The original's reactive policy, replayed on a plan's input for comparison.
//!
//! Every `cycle_seconds` (30 s) the original scheduler looked at the sessions that were *due*
//! (`now ≥ start − lead`), bound each to the first RUNNING worker with room, and for every
//! session it could not bind asked for one new worker (the cheapest enabled template that fits)
//! — booting workers were not counted as capacity, so each unplaced session got its own
//! request. We are generous to it: a session keeps one outstanding request until that worker is
//! up, instead of one per cycle. A RUNNING worker idle for `baseline_idle_stop_minutes` (30) is
//! stopped. STOPPED workers are never restarted. Billing runs from the request to the stop.

use super::cost::TemplateCost;
use super::pack::{cap_of_template, need_of, secs};
use super::plan::PlanInput;
use super::policy::Policy;
use super::profile::{add, Dims};
use crate::placement::filter::{check_static, check_template, Requirements, StaticView};
use crate::session::SessionState;
use crate::template::DEFAULT_COST_PER_HOUR_USD;
use crate::worker::{Worker, WorkerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the original policy would have paid and served.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BaselineReport {
    /// New workers requested.
    pub workers_launched: usize,
    /// Most workers billed at once.
    pub peak_workers: usize,
    /// Billed worker-hours from `now` on.
    pub worker_hours: f64,
    /// USD.
    pub cost_usd: f64,
    /// Per template, by name.
    pub per_template: Vec<TemplateCost>,
    /// Sessions bound to a worker.
    pub served: usize,
    /// Of those, bound after their slot had started.
    pub served_late: usize,
    /// Sessions never bound before their slot ended.
    pub unserved: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum St {
    Booting(i64),
    Running,
    Stopped,
}

struct Bw<'a> {
    template: String,
    tpl: Option<usize>,
    existing: Option<&'a Worker>,
    region: String,
    cap: Dims,
    load: Dims,
    state: St,
    billed_from: i64,
    billed: i64,
    price: f64,
    idle_since: Option<i64>,
    sessions: Vec<(i64, Dims)>,
}

struct Bs<'a> {
    req: &'a Requirements,
    a: i64,
    b: i64,
    need: Dims,
    request: Option<usize>,
}

fn fits_worker(w: &Bw<'_>, tpls: &[crate::template::WorkerTemplate], req: &Requirements) -> bool {
    match (w.existing, w.tpl) {
        (Some(x), _) => check_static(StaticView::of(x), req).is_ok(),
        (None, Some(t)) => {
            req.region.as_ref().is_none_or(|r| *r == w.region)
                && check_template(&tpls[t], &w.region, req).is_ok()
        }
        (None, None) => false,
    }
}

/// Replays the original policy on `input` (see the module docs).
pub fn simulate_baseline(input: &PlanInput, policy: &Policy) -> BaselineReport {
    let now = secs(input.now);
    let horizon_end = now + policy.horizon_secs();
    let cycle = i64::from(policy.cycle_seconds.max(1));
    let lead = i64::from(policy.lead_minutes) * 60;
    let idle_stop = i64::from(policy.baseline_idle_stop_minutes) * 60;
    let tpls = &input.templates;
    let tpl_idx: BTreeMap<&str, usize> = tpls
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut fleet: Vec<&Worker> = input.workers.iter().collect();
    fleet.sort_by(|a, b| a.id.cmp(&b.id));
    let mut workers: Vec<Bw<'_>> = Vec::new();
    let mut live: BTreeMap<(usize, String), u32> = BTreeMap::new();
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for w in fleet {
        let tpl = tpl_idx.get(w.template.as_str()).copied();
        if let Some(t) = tpl {
            if !matches!(w.state, WorkerState::Terminated | WorkerState::Terminating) {
                *live.entry((t, w.region.clone())).or_insert(0) += 1;
            }
        }
        let startup = i64::from(tpl.map_or(20, |t| tpls[t].startup_minutes)) * 60;
        let state = match w.state {
            WorkerState::Running | WorkerState::Draining => St::Running,
            WorkerState::Pending | WorkerState::Provisioning | WorkerState::Starting => {
                St::Booting(w.launched_at.map_or(now + startup, |l| secs(l) + startup))
            }
            _ => continue,
        };
        let c = w.capacity.dims();
        ids.insert(w.id.as_str(), workers.len());
        workers.push(Bw {
            template: w.template.clone(),
            tpl,
            existing: Some(w),
            region: w.region.clone(),
            cap: [c[0], c[1], c[2], c[3], w.ports.range().len()],
            load: [0; 5],
            state,
            billed_from: now,
            billed: 0,
            price: tpl.map_or(DEFAULT_COST_PER_HOUR_USD, |t| tpls[t].cost_per_hour_usd),
            idle_since: (state == St::Running).then_some(now),
            sessions: Vec::new(),
        });
    }
    let mut order: Vec<_> = input.sessions.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let mut sess: Vec<Bs<'_>> = Vec::new();
    let mut last_end = now;
    for s in order {
        let (a, b) = (secs(s.slot.start), secs(s.slot.end));
        if b <= now {
            continue;
        }
        let bound = s
            .worker_id
            .as_deref()
            .and_then(|id| ids.get(id).copied())
            .filter(|_| s.state.holds_capacity());
        if let Some(w) = bound {
            let need = need_of(&s.requirements);
            let bw = &mut workers[w];
            bw.load = add(&bw.load, &need);
            bw.sessions.push((b, need));
            bw.idle_since = None;
            last_end = last_end.max(b);
            continue;
        }
        if !(s.state == SessionState::Pending || s.state.holds_capacity()) || a >= horizon_end {
            continue;
        }
        last_end = last_end.max(b);
        sess.push(Bs {
            req: &s.requirements,
            a,
            b,
            need: need_of(&s.requirements),
            request: None,
        });
    }
    sess.sort_by_key(|s| (s.a - lead, s.a));
    let mut report = BaselineReport::default();
    let mut next_due = 0usize;
    let mut waiting: Vec<usize> = Vec::new();
    let mut t = now;
    let mut dirty = true;
    let grid = |x: i64| now + (x - now + cycle - 1).div_euclid(cycle) * cycle;
    loop {
        // 1. Boots finish.
        for w in workers.iter_mut() {
            if let St::Booting(r) = w.state {
                if r <= t {
                    w.state = St::Running;
                    w.idle_since = w.sessions.is_empty().then_some(t);
                    dirty = true;
                }
            }
        }
        // 2. Sessions end.
        for w in workers.iter_mut().filter(|w| w.state == St::Running) {
            let before = w.sessions.len();
            w.sessions.retain(|(end, _)| *end > t);
            if w.sessions.len() != before {
                w.load = w.sessions.iter().fold([0; 5], |acc, (_, n)| add(&acc, n));
                if w.sessions.is_empty() {
                    w.idle_since = Some(t);
                }
                dirty = true;
            }
        }
        // 3. Sessions become due.
        while next_due < sess.len() && sess[next_due].a - lead <= t {
            waiting.push(next_due);
            next_due += 1;
            dirty = true;
        }
        // 4. Sessions whose slot ended unbound are lost.
        waiting.retain(|&i| {
            let keep = sess[i].b > t;
            if !keep {
                report.unserved += 1;
            }
            keep
        });
        // 5. Bind, or request one worker per unplaced session.
        if dirty {
            let mut still = Vec::with_capacity(waiting.len());
            for &i in &waiting {
                let s = &sess[i];
                let found = workers.iter().position(|w| {
                    w.state == St::Running
                        && add(&w.load, &s.need)
                            .iter()
                            .zip(w.cap)
                            .all(|(l, c)| *l <= c)
                        && fits_worker(w, tpls, s.req)
                });
                if let Some(w) = found {
                    let bw = &mut workers[w];
                    bw.load = add(&bw.load, &s.need);
                    bw.sessions.push((s.b, s.need));
                    bw.idle_since = None;
                    report.served += 1;
                    if t > s.a {
                        report.served_late += 1;
                    }
                    continue;
                }
                still.push(i);
                let outstanding = s
                    .request
                    .is_some_and(|w| matches!(workers[w].state, St::Booting(_)));
                if outstanding {
                    continue;
                }
                let mut pick: Option<(usize, String)> = None;
                for (ti, tpl) in tpls.iter().enumerate() {
                    if !tpl.enabled
                        || pick.as_ref().is_some_and(|(p, _)| {
                            tpls[*p].cost_per_hour_usd <= tpl.cost_per_hour_usd
                        })
                    {
                        continue;
                    }
                    let region = tpl.regions.iter().find(|r| {
                        s.req.region.as_ref().is_none_or(|x| x == *r)
                            && tpl.max_workers_per_region.is_none_or(|m| {
                                live.get(&(ti, (*r).clone())).copied().unwrap_or(0) < m
                            })
                            && check_template(tpl, r, s.req).is_ok()
                    });
                    if let Some(r) = region {
                        pick = Some((ti, r.clone()));
                    }
                }
                if let Some((ti, region)) = pick {
                    *live.entry((ti, region.clone())).or_insert(0) += 1;
                    let tpl = &tpls[ti];
                    sess[i].request = Some(workers.len());
                    workers.push(Bw {
                        template: tpl.name.clone(),
                        tpl: Some(ti),
                        existing: None,
                        region,
                        cap: cap_of_template(tpl),
                        load: [0; 5],
                        state: St::Booting(t + i64::from(tpl.startup_minutes) * 60),
                        billed_from: t,
                        billed: 0,
                        price: tpl.cost_per_hour_usd,
                        idle_since: None,
                        sessions: Vec::new(),
                    });
                    report.workers_launched += 1;
                }
            }
            waiting = still;
            dirty = false;
        }
        // 6. Idle workers stop.
        for w in workers.iter_mut().filter(|w| w.state == St::Running) {
            if let Some(since) = w.idle_since {
                if w.sessions.is_empty() && since + idle_stop <= t {
                    w.state = St::Stopped;
                    w.billed += t - w.billed_from;
                }
            }
        }
        let billed_now = workers.iter().filter(|w| w.state != St::Stopped).count();
        report.peak_workers = report.peak_workers.max(billed_now);
        // Next cycle with something to do.
        let mut next = i64::MAX;
        if let Some(s) = sess.get(next_due) {
            next = next.min(s.a - lead);
        }
        for w in &workers {
            match w.state {
                St::Booting(r) => next = next.min(r),
                St::Running => {
                    if let Some(e) = w.sessions.iter().map(|(e, _)| *e).min() {
                        next = next.min(e);
                    }
                    if let Some(since) = w.idle_since.filter(|_| w.sessions.is_empty()) {
                        next = next.min(since + idle_stop);
                    }
                }
                St::Stopped => {}
            }
        }
        if let Some(e) = waiting.iter().map(|&i| sess[i].b).min() {
            next = next.min(e);
        }
        if next == i64::MAX {
            break;
        }
        t = grid(next.max(t + 1));
        if t > last_end + horizon_end - now + idle_stop + cycle {
            break;
        }
    }
    for w in workers.iter_mut().filter(|w| w.state != St::Stopped) {
        w.billed += t - w.billed_from;
    }
    let mut per: BTreeMap<&str, TemplateCost> = BTreeMap::new();
    for w in &workers {
        if w.billed <= 0 && w.existing.is_some() {
            continue;
        }
        let h = w.billed as f64 / 3600.0;
        let e = per.entry(w.template.as_str()).or_insert(TemplateCost {
            template: w.template.clone(),
            workers: 0,
            worker_hours: 0.0,
            cost_usd: 0.0,
        });
        e.workers += 1;
        e.worker_hours += h;
        e.cost_usd += h * w.price;
        report.worker_hours += h;
        report.cost_usd += h * w.price;
    }
    report.per_template = per.into_values().collect();
    report
}
