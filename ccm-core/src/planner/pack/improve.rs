//! Phase 4, improvement after the greedy placement: local moves that lower the billed cost.
//!
//! The greedy pass places sessions one by one in slot order and never looks back; it leaves
//! workers that run long for one late session, and half-empty workers that others could absorb.
//! This phase tries, in a fixed order and only while each step strictly lowers the total billed
//! cost:
//!
//! * **consolidation** — empty a worker (least billed first) into the others' capacity over
//!   time, each session where it adds the least billed time (as Karpenter does for nodes);
//! * **moves** — take one session off its worker (so that worker stops earlier or skips a run)
//!   and put it where it adds less;
//! * **swaps** — exchange two overlapping sessions between two workers, so that long sessions
//!   end up together and the workers of the short ones stop early.
//!
//! Only sessions this plan placed are touched: bound sessions and sessions kept from the
//! previous plan stay where they are (stable re-planning), and draining workers are left alone.
//! The work is capped by a fixed number of evaluations, so the phase stays deterministic and
//! its cost bounded on large inputs.

use super::model::{Packing, SessionSpan};
use crate::planner::profile::Busy;

/// Work units the phase may spend: a worker cost computation costs one unit per session on the
/// worker (plus one), a capacity check four.
const BUDGET: usize = 4_000_000;
/// Passes over the moves and swaps.
const PASSES: usize = 4;

/// A cost change must beat this (USD·s) to count as an improvement.
const EPS: f64 = 1e-6;

struct State {
    /// Billed cost of each worker (USD·s).
    cost: Vec<f64>,
    /// Workers the phase may change.
    open: Vec<bool>,
    budget: usize,
}

/// Billed seconds of worker `w` if its sessions were `sessions` (in any order), as
/// [`emit`](super::emit) bills it: runs split at gaps longer than `keep_idle_secs`, each
/// launched `lead_secs` before its first span (not before `launch_not_before`; at `now` for a
/// worker up now).
fn billed_secs(ctx: &Packing<'_>, sess: &[SessionSpan<'_>], w: usize, sessions: &[usize]) -> i64 {
    let pw = &ctx.workers[w];
    let mut spans: Vec<(i64, i64)> = Vec::with_capacity(sessions.len() + 1);
    if pw.up_now {
        spans.push((ctx.now, pw.ready_at));
    }
    spans.extend(sessions.iter().map(|&si| (sess[si].start, sess[si].end)));
    if spans.is_empty() {
        return 0;
    }
    spans.sort_unstable();
    // Merge overlapping or touching spans, then group by the keep rule.
    let mut total = 0i64;
    let mut first = true;
    let (mut ga, mut gb) = spans[0];
    let mut close = |ga: i64, gb: i64, first: bool| {
        let launch = if first && pw.up_now {
            ctx.now
        } else {
            (ga - pw.lead_secs).max(pw.launch_not_before)
        };
        total += gb - launch;
    };
    for &(a, b) in &spans[1..] {
        if a - gb <= pw.keep_idle_secs {
            gb = gb.max(b);
        } else {
            close(ga, gb, first);
            first = false;
            ga = a;
            gb = b;
        }
    }
    close(ga, gb, first);
    total
}

fn cost_of(
    ctx: &Packing<'_>,
    sess: &[SessionSpan<'_>],
    st: &mut State,
    w: usize,
    sessions: &[usize],
) -> f64 {
    st.budget = st.budget.saturating_sub(sessions.len() + 1);
    billed_secs(ctx, sess, w, sessions) as f64 * ctx.workers[w].price_per_hour
}

fn without(list: &[usize], si: usize) -> Vec<usize> {
    list.iter().copied().filter(|&x| x != si).collect()
}

fn with(list: &[usize], si: usize) -> Vec<usize> {
    let mut v = list.to_vec();
    v.push(si);
    v
}

fn detach(ctx: &mut Packing<'_>, sess: &mut [SessionSpan<'_>], w: usize, si: usize) {
    let s = &sess[si];
    let pw = &mut ctx.workers[w];
    pw.load.remove(&s.need, s.start, s.end);
    pw.sessions.retain(|&x| x != si);
    rebuild_busy(ctx, sess, w);
    sess[si].worker = None;
}

fn attach(ctx: &mut Packing<'_>, sess: &mut [SessionSpan<'_>], w: usize, si: usize) {
    let s = &sess[si];
    let pw = &mut ctx.workers[w];
    pw.load.add(&s.need, s.start, s.end);
    pw.busy.insert(s.start, s.end);
    pw.sessions.push(si);
    sess[si].worker = Some(w);
}

fn rebuild_busy(ctx: &mut Packing<'_>, sess: &[SessionSpan<'_>], w: usize) {
    let now = ctx.now;
    let pw = &mut ctx.workers[w];
    let mut busy = Busy::default();
    if pw.up_now {
        busy.insert(now, pw.ready_at);
    }
    for &si in &pw.sessions {
        busy.insert(sess[si].start, sess[si].end);
    }
    pw.busy = busy;
}

/// Runs the phase; `movable[si]` marks the sessions it may move.
pub(super) fn improve(ctx: &mut Packing<'_>, sess: &mut [SessionSpan<'_>], movable: &[bool]) {
    let n = ctx.workers.len();
    let open: Vec<bool> = ctx
        .workers
        .iter()
        .map(|w| w.draining_since.is_none() && !w.cancel_drain)
        .collect();
    let mut st = State {
        cost: vec![0.0; n],
        open,
        budget: BUDGET,
    };
    for w in 0..n {
        let list = ctx.workers[w].sessions.clone();
        st.cost[w] = cost_of(ctx, sess, &mut st, w, &list);
    }
    consolidate(ctx, sess, movable, &mut st);
    for _ in 0..PASSES {
        let moved = moves(ctx, sess, movable, &mut st);
        let swapped = swaps(ctx, sess, movable, &mut st);
        if (!moved && !swapped) || st.budget == 0 {
            break;
        }
        consolidate(ctx, sess, movable, &mut st);
    }
}

/// Sessions on worker `w` sorted by (start, index).
fn sessions_of(ctx: &Packing<'_>, sess: &[SessionSpan<'_>], w: usize) -> Vec<usize> {
    let mut v = ctx.workers[w].sessions.clone();
    v.sort_by_key(|&si| (sess[si].start, si));
    v
}

/// Cheapest other open worker that can take `si` now: (worker, added cost).
fn best_target(
    ctx: &mut Packing<'_>,
    sess: &[SessionSpan<'_>],
    st: &mut State,
    si: usize,
    skip: usize,
) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for w in 0..ctx.workers.len() {
        let idle = ctx.workers[w].sessions.is_empty() && !ctx.workers[w].up_now;
        if w == skip || !st.open[w] || idle {
            continue;
        }
        if st.budget == 0 {
            break;
        }
        st.budget = st.budget.saturating_sub(4);
        if ctx.can_take(w, &sess[si]).is_none() {
            continue;
        }
        let list = with(&ctx.workers[w].sessions, si);
        let add = cost_of(ctx, sess, st, w, &list) - st.cost[w];
        if best.is_none_or(|(_, b)| add < b - EPS) {
            best = Some((w, add));
            if add <= EPS {
                break;
            }
        }
    }
    best
}

/// Empties workers, least billed first, when the others absorb their sessions for less.
fn consolidate(
    ctx: &mut Packing<'_>,
    sess: &mut [SessionSpan<'_>],
    movable: &[bool],
    st: &mut State,
) {
    let mut order: Vec<usize> = (0..ctx.workers.len())
        .filter(|&w| st.open[w] && !ctx.workers[w].sessions.is_empty())
        .collect();
    order.sort_by(|&x, &y| st.cost[x].total_cmp(&st.cost[y]).then(x.cmp(&y)));
    // The least billed quarter: a busy worker is rarely emptied into the others.
    let tries = order.len() / 4 + 2;
    for w in order.into_iter().take(tries) {
        if st.budget == 0 {
            return;
        }
        let mut list = sessions_of(ctx, sess, w);
        if list.is_empty() || list.iter().any(|&si| !movable[si]) {
            continue;
        }
        // Larger sessions first, then by start.
        list.sort_by_key(|&si| (std::cmp::Reverse(sess[si].need[0]), sess[si].start, si));
        st.open[w] = false;
        let empty = cost_of(ctx, sess, st, w, &[]);
        let saved = st.cost[w] - empty;
        let mut placed: Vec<(usize, usize)> = Vec::new();
        let mut added = 0.0;
        let mut ok = true;
        for &si in &list {
            match best_target(ctx, sess, st, si, w) {
                Some((to, add)) if added + add < saved - EPS => {
                    detach(ctx, sess, w, si);
                    attach(ctx, sess, to, si);
                    let l = ctx.workers[to].sessions.clone();
                    st.cost[to] = cost_of(ctx, sess, st, to, &l);
                    added += add;
                    placed.push((si, to));
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            st.cost[w] = empty;
        } else {
            // Undo, newest first.
            for &(si, to) in placed.iter().rev() {
                detach(ctx, sess, to, si);
                attach(ctx, sess, w, si);
                let l = ctx.workers[to].sessions.clone();
                st.cost[to] = cost_of(ctx, sess, st, to, &l);
            }
        }
        st.open[w] = true;
    }
}

/// Moves single sessions where that lowers the total; true when any moved.
fn moves(
    ctx: &mut Packing<'_>,
    sess: &mut [SessionSpan<'_>],
    movable: &[bool],
    st: &mut State,
) -> bool {
    let mut any = false;
    let mut order: Vec<usize> = (0..sess.len())
        .filter(|&si| movable[si] && sess[si].worker.is_some())
        .collect();
    order.sort_by_key(|&si| (sess[si].start, si));
    for si in order {
        if st.budget == 0 {
            break;
        }
        let Some(from) = sess[si].worker else {
            continue;
        };
        if !st.open[from] {
            continue;
        }
        let rest = without(&ctx.workers[from].sessions, si);
        let saved = st.cost[from] - cost_of(ctx, sess, st, from, &rest);
        if saved <= EPS {
            continue;
        }
        if let Some((to, add)) = best_target(ctx, sess, st, si, from) {
            if add < saved - EPS {
                detach(ctx, sess, from, si);
                attach(ctx, sess, to, si);
                st.cost[from] -= saved;
                st.cost[to] += add;
                any = true;
            }
        }
    }
    any
}

/// Whether `si` fits on `w` once `out` is taken off it.
fn fits_instead(
    ctx: &mut Packing<'_>,
    sess: &[SessionSpan<'_>],
    w: usize,
    out: usize,
    si: usize,
) -> bool {
    let o = &sess[out];
    ctx.workers[w].load.remove(&o.need, o.start, o.end);
    let ok = ctx.can_take(w, &sess[si]).is_some();
    ctx.workers[w].load.add(&o.need, o.start, o.end);
    ok
}

/// Swaps pairs of overlapping sessions between workers; true when any swapped.
fn swaps(
    ctx: &mut Packing<'_>,
    sess: &mut [SessionSpan<'_>],
    movable: &[bool],
    st: &mut State,
) -> bool {
    let mut any = false;
    let mut order: Vec<usize> = (0..sess.len())
        .filter(|&si| movable[si] && sess[si].worker.is_some_and(|w| st.open[w]))
        .collect();
    order.sort_by_key(|&si| (sess[si].start, si));
    for x in 0..order.len() {
        let s1 = order[x];
        for &s2 in &order[x + 1..] {
            if st.budget == 0 {
                return any;
            }
            if sess[s2].start >= sess[s1].end {
                break; // sorted by start: no later one overlaps s1
            }
            let (Some(w1), Some(w2)) = (sess[s1].worker, sess[s2].worker) else {
                continue;
            };
            // Only a swap of sessions that end apart can change when a worker stops.
            if w1 == w2 || sess[s1].end == sess[s2].end {
                continue;
            }
            let l1 = with(&without(&ctx.workers[w1].sessions, s1), s2);
            let l2 = with(&without(&ctx.workers[w2].sessions, s2), s1);
            let c1 = cost_of(ctx, sess, st, w1, &l1);
            let c2 = cost_of(ctx, sess, st, w2, &l2);
            if c1 + c2 >= st.cost[w1] + st.cost[w2] - EPS {
                continue;
            }
            if !fits_instead(ctx, sess, w1, s1, s2) || !fits_instead(ctx, sess, w2, s2, s1) {
                continue;
            }
            detach(ctx, sess, w1, s1);
            detach(ctx, sess, w2, s2);
            attach(ctx, sess, w1, s2);
            attach(ctx, sess, w2, s1);
            st.cost[w1] = c1;
            st.cost[w2] = c2;
            any = true;
        }
    }
    any
}
