//! Billed cost of a plan and the lower bound it is measured against.
//!
//! # The lower bound
//!
//! For the same demand (the served sessions, each with the templates that could host it), no
//! policy can pay less than
//!
//! ```text
//! LB = ∫_{t ≥ now} max_{t' ∈ [t, t + lead]} r(t') dt
//! ```
//!
//! where `r(t')` bounds from below the hourly price of the workers busy at `t'`:
//!
//! * **per-dimension share**: for every choice of one dimension `d_T` per template `T`,
//!   `Σ_sessions min_{T fits s} price_T · need_{s,d_T} / cap_{T,d_T}` (a feasible point of the
//!   dual of the fractional covering problem, so a valid bound; the best choice is taken);
//! * **worker count**: `⌈max_d Σ need_d / max cap_d⌉ × cheapest price`;
//! * **own workers**: the sessions only template `T` can host need `m_T = ⌈max_d Σ need_d /
//!   cap_{T,d}⌉` workers of `T` (the ⌈⌉ per template, with its own capacity), so the rate is at
//!   least `Σ_T price_T · m_T + cheapest price · max(0, worker count − Σ_T m_T)`.
//!
//! The window `[t, t + lead]` holds because every worker busy at `t'` was launched (or
//! relaunched) at the latest at `t' − lead` and is billed from then on — this charges one boot
//! per worker at the peak and every idle gap shorter than the lead, which no policy can avoid.
//! The bound ignores host ports and integrality per template, so it is never above the optimum.

use super::plan::PlannedWorker;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// One session of demand for the lower bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// cpu, memory, storage, nodes.
    pub need: [u32; 4],
    /// Start (seconds).
    pub start: i64,
    /// End (seconds).
    pub end: i64,
    /// Indexes (into the `prices` slice) of the templates that could host it.
    pub fits: Vec<usize>,
}

/// Price and capacity of one template, for the lower bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceCap {
    /// USD per hour.
    pub price: f64,
    /// cpu, memory, storage, nodes.
    pub cap: [u32; 4],
}

/// Billed figures of one template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateCost {
    /// Template name.
    pub template: String,
    /// Workers billed at least once.
    pub workers: usize,
    /// Billed hours.
    pub worker_hours: f64,
    /// USD.
    pub cost_usd: f64,
}

/// Average utilisation of billed capacity, per dimension (0–1).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Utilisation {
    /// Cores.
    pub cpu: f64,
    /// Memory.
    pub memory: f64,
    /// Storage.
    pub storage: f64,
    /// CML nodes.
    pub nodes: f64,
}

/// What a plan costs, and how far that is from the lower bound.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CostReport {
    /// Per template, by name.
    pub per_template: Vec<TemplateCost>,
    /// Workers billed at least once.
    pub workers: usize,
    /// Billed worker-hours from `now` on.
    pub worker_hours: f64,
    /// USD.
    pub cost_usd: f64,
    /// Session load × time over billed capacity × time.
    pub utilisation: Utilisation,
    /// The lower bound (USD) for the same demand; see the module docs.
    pub lower_bound_usd: f64,
    /// `cost_usd / lower_bound_usd` (1 when both are zero).
    pub cost_over_lower_bound: f64,
}

/// Billed figures of planned workers; `used` is Σ over sessions of load × seconds per dimension.
pub fn report(workers: &[PlannedWorker], used: [f64; 4], lower_bound_usd: f64) -> CostReport {
    let mut per: BTreeMap<&str, TemplateCost> = BTreeMap::new();
    let mut cap_time = [0f64; 4];
    let mut total_h = 0.0;
    let mut total_usd = 0.0;
    let mut count = 0;
    for w in workers {
        let secs: i64 = w
            .runs
            .iter()
            .map(|r| (r.stop_at - r.launch_at).num_seconds().max(0))
            .sum();
        if w.runs.is_empty() {
            continue;
        }
        count += 1;
        let h = secs as f64 / 3600.0;
        let usd = h * w.cost_per_hour_usd;
        let e = per.entry(w.template.as_str()).or_insert(TemplateCost {
            template: w.template.clone(),
            workers: 0,
            worker_hours: 0.0,
            cost_usd: 0.0,
        });
        e.workers += 1;
        e.worker_hours += h;
        e.cost_usd += usd;
        total_h += h;
        total_usd += usd;
        for (c, d) in cap_time.iter_mut().zip(w.capacity.dims()) {
            *c += f64::from(d) * secs as f64;
        }
    }
    let ratio = |u: f64, c: f64| if c > 0.0 { u / c } else { 0.0 };
    CostReport {
        per_template: per.into_values().collect(),
        workers: count,
        worker_hours: total_h,
        cost_usd: total_usd,
        utilisation: Utilisation {
            cpu: ratio(used[0], cap_time[0]),
            memory: ratio(used[1], cap_time[1]),
            storage: ratio(used[2], cap_time[2]),
            nodes: ratio(used[3], cap_time[3]),
        },
        lower_bound_usd,
        cost_over_lower_bound: if lower_bound_usd > 0.0 {
            total_usd / lower_bound_usd
        } else if total_usd > 0.0 {
            f64::INFINITY
        } else {
            1.0
        },
    }
}

/// The lower bound (USD) of the module docs, from `now` on, with launch lead `lead` seconds.
pub fn lower_bound(now: i64, demands: &[Demand], prices: &[PriceCap], lead: i64) -> f64 {
    // Group sessions into classes of equal need and fit set.
    let mut class_of: BTreeMap<(&[u32; 4], &[usize]), usize> = BTreeMap::new();
    let mut classes: Vec<(&[u32; 4], &[usize])> = Vec::new();
    let mut events: Vec<(i64, usize, i32)> = Vec::new();
    for d in demands.iter().filter(|d| !d.fits.is_empty()) {
        let (s, e) = (d.start.max(now), d.end);
        if e <= s {
            continue;
        }
        let key = (&d.need, d.fits.as_slice());
        let c = *class_of.entry(key).or_insert_with(|| {
            classes.push(key);
            classes.len() - 1
        });
        events.push((s, c, 1));
        events.push((e, c, -1));
    }
    if events.is_empty() {
        return 0.0;
    }
    events.sort_unstable();
    // Templates that appear in some fit set, and the dimension choices to try.
    let mut used_t: Vec<usize> = classes.iter().flat_map(|c| c.1.iter().copied()).collect();
    used_t.sort_unstable();
    used_t.dedup();
    let k = used_t.len();
    let combos: Vec<Vec<usize>> = if k <= 4 {
        (0..4usize.pow(k as u32))
            .map(|mut x| {
                (0..k)
                    .map(|_| {
                        let d = x % 4;
                        x /= 4;
                        d
                    })
                    .collect()
            })
            .collect()
    } else {
        (0..4).map(|d| vec![d; k]).collect()
    };
    let pos = |t: usize| used_t.binary_search(&t).unwrap_or(0);
    // value[class][combo]: cheapest per-session share under that dimension choice.
    let value: Vec<Vec<f64>> = classes
        .iter()
        .map(|(need, fits)| {
            combos
                .iter()
                .map(|combo| {
                    fits.iter()
                        .map(|&t| {
                            let p = prices[t];
                            let d = combo[pos(t)];
                            if p.cap[d] == 0 {
                                0.0
                            } else {
                                p.price * f64::from(need[d]) / f64::from(p.cap[d])
                            }
                        })
                        .fold(f64::INFINITY, f64::min)
                })
                .collect()
        })
        .collect();
    let mut max_cap = [0u32; 4];
    let mut min_price = f64::INFINITY;
    for &t in &used_t {
        for (m, c) in max_cap.iter_mut().zip(prices[t].cap) {
            *m = (*m).max(c);
        }
        min_price = min_price.min(prices[t].price);
    }
    // Sweep: piecewise-constant rate r on segments.
    let mut counts = vec![0i64; classes.len()];
    let mut segs: Vec<(i64, i64, f64)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0 == t {
            counts[events[i].1] += i64::from(events[i].2);
            i += 1;
        }
        let Some(&(next, _, _)) = events.get(i) else {
            break;
        };
        let mut best = 0f64;
        for ci in 0..combos.len() {
            let s: f64 = counts
                .iter()
                .zip(&value)
                .filter(|(n, _)| **n > 0)
                .map(|(n, v)| *n as f64 * v[ci])
                .sum();
            best = best.max(s);
        }
        let mut load = [0f64; 4];
        for (n, (need, _)) in counts.iter().zip(&classes) {
            for (l, x) in load.iter_mut().zip(need.iter()) {
                *l += *n as f64 * f64::from(*x);
            }
        }
        let workers = (0..4)
            .filter(|&d| max_cap[d] > 0)
            .map(|d| (load[d] / f64::from(max_cap[d]) - 1e-9).ceil())
            .fold(0f64, f64::max);
        // Sessions only one template can host need their own workers of it.
        let mut only = vec![[0f64; 4]; prices.len()];
        for (n, (need, fits)) in counts.iter().zip(&classes) {
            if let [t] = fits {
                for (l, x) in only[*t].iter_mut().zip(need.iter()) {
                    *l += *n as f64 * f64::from(*x);
                }
            }
        }
        let mut own = 0f64;
        let mut own_usd = 0f64;
        for (t, l) in only.iter().enumerate() {
            let m = (0..4)
                .filter(|&d| prices[t].cap[d] > 0)
                .map(|d| (l[d] / f64::from(prices[t].cap[d]) - 1e-9).ceil())
                .fold(0f64, f64::max);
            own += m;
            own_usd += m * prices[t].price;
        }
        best = best.max(workers * min_price);
        best = best.max(own_usd + (workers - own).max(0.0) * min_price);
        segs.push((t, next, best));
    }
    window_max_integral(&segs, now, lead) / 3600.0
}

/// ∫ max_{t' ∈ [t, t+lead]} r(t') dt over t ≥ now, for r piecewise constant on `segs`
/// (zero outside), in value × seconds.
fn window_max_integral(segs: &[(i64, i64, f64)], now: i64, lead: i64) -> f64 {
    let mut points: Vec<i64> = Vec::with_capacity(segs.len() * 4);
    for &(a, b, _) in segs {
        for p in [a, b, a - lead, b - lead] {
            points.push(p.max(now));
        }
    }
    points.sort_unstable();
    points.dedup();
    let mut total = 0.0;
    let mut dq: VecDeque<usize> = VecDeque::new();
    let mut hi = 0usize; // next segment to enter the window
    for w in points.windows(2) {
        let (p, q) = (w[0], w[1]);
        // Midpoint m (doubled to stay in integers): window (m, m + lead).
        let m2 = p + q;
        while hi < segs.len() && 2 * segs[hi].0 < m2 + 2 * lead {
            while dq.back().is_some_and(|&j| segs[j].2 <= segs[hi].2) {
                dq.pop_back();
            }
            dq.push_back(hi);
            hi += 1;
        }
        while dq.front().is_some_and(|&j| 2 * segs[j].1 <= m2) {
            dq.pop_front();
        }
        if let Some(&j) = dq.front() {
            total += segs[j].2 * (q - p) as f64;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_template_counts_workers_with_lead() {
        // 3 sessions of a third of a worker for one hour: one worker for 1 h + 10 min lead.
        let prices = [PriceCap {
            price: 6.0,
            cap: [48, 192, 500, 20],
        }];
        let d = |i: i64| Demand {
            need: [16, 64, 10, 5],
            start: 3600 + i,
            end: 7200,
            fits: vec![0],
        };
        let lb = lower_bound(0, &[d(0), d(0), d(0)], &prices, 600);
        assert!((lb - 6.0 * (3600.0 + 600.0) / 3600.0).abs() < 1e-9, "{lb}");
        // A fourth session needs a second worker.
        let lb4 = lower_bound(0, &[d(0), d(0), d(0), d(0)], &prices, 600);
        assert!((lb4 - 2.0 * 6.0 * 4200.0 / 3600.0).abs() < 1e-9, "{lb4}");
    }

    #[test]
    fn short_gaps_are_charged_long_gaps_are_not() {
        let prices = [PriceCap {
            price: 3600.0,
            cap: [1, 1, 1, 1],
        }];
        let s = |a, b| Demand {
            need: [1, 1, 1, 1],
            start: a,
            end: b,
            fits: vec![0],
        };
        // Gap 5 < lead 10: charged; lead charged once before the first session.
        let lb = lower_bound(0, &[s(100, 200), s(205, 300)], &prices, 10);
        assert!((lb - 210.0).abs() < 1e-9, "{lb}");
        // Gap 50 > lead 10: only the relaunch lead is charged.
        let lb = lower_bound(0, &[s(100, 200), s(250, 300)], &prices, 10);
        assert!((lb - (10.0 + 100.0 + 10.0 + 50.0)).abs() < 1e-9, "{lb}");
    }

    #[test]
    fn cheaper_template_per_dimension_is_used() {
        // Small personal box (20 nodes) vs big box: a 5-node, 4-core session is cheaper on the big one.
        let prices = [
            PriceCap {
                price: 4.0,
                cap: [48, 192, 500, 20],
            },
            PriceCap {
                price: 5.0,
                cap: [48, 192, 1000, 500],
            },
        ];
        let ds: Vec<Demand> = (0..12)
            .map(|_| Demand {
                need: [4, 16, 20, 5],
                start: 0,
                end: 3600,
                fits: vec![0, 1],
            })
            .collect();
        let lb = lower_bound(0, &ds, &prices, 0);
        // 12 sessions fill one big box (cpu 48/48) at 5.0/h; the bound may not exceed that.
        assert!(lb <= 5.0 + 1e-9, "{lb}");
        assert!(lb >= 4.0 - 1e-9, "{lb}");
    }
}
