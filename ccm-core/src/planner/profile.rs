//! Per-worker capacity over time: a sorted step function of the load, and the union of busy
//! intervals that billing is derived from. Time is `i64` seconds.

/// The packed dimensions plus host ports: cpu, memory, storage, CML nodes, ports.
pub type Dims = [u32; 5];

/// Adds `b` to `a` component-wise (saturating).
pub fn add(a: &Dims, b: &Dims) -> Dims {
    let mut r = *a;
    for (x, y) in r.iter_mut().zip(b.iter()) {
        *x = x.saturating_add(*y);
    }
    r
}

/// How many copies of `need` fit into `free` (`u32::MAX` when `need` is all zero).
pub fn copies(free: &Dims, need: &Dims) -> u32 {
    free.iter()
        .zip(need.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| f / n)
        .min()
        .unwrap_or(u32::MAX)
}

/// Load of one worker as a step function: `steps[i] = (t, load)` holds from `t` until the next
/// step; before the first step and after the last the load is zero (the last step always
/// carries zero load).
#[derive(Debug, Clone, Default)]
pub struct LoadProfile {
    steps: Vec<(i64, Dims)>,
}

impl LoadProfile {
    /// Index of the step that holds at `t` (None: before the first step).
    fn at(&self, t: i64) -> Option<usize> {
        let i = self.steps.partition_point(|(s, _)| *s <= t);
        i.checked_sub(1)
    }

    /// The highest load in each dimension during `[a, b)`.
    pub fn peak(&self, a: i64, b: i64) -> Dims {
        let mut peak = [0u32; 5];
        let start = self.at(a).unwrap_or(0);
        for (t, load) in self.steps.iter().skip(start) {
            if *t >= b {
                break;
            }
            for (p, l) in peak.iter_mut().zip(load.iter()) {
                *p = (*p).max(*l);
            }
        }
        peak
    }

    /// Whether `need` fits under `cap` during all of `[a, b)`; returns the free room at the
    /// tightest instant when it does.
    pub fn fits(&self, cap: &Dims, need: &Dims, a: i64, b: i64) -> Option<Dims> {
        let mut free = *cap;
        let start = self.at(a).unwrap_or(0);
        for (t, load) in self.steps.iter().skip(start) {
            if *t >= b {
                break;
            }
            for (((c, l), n), fr) in cap.iter().zip(load).zip(need).zip(free.iter_mut()) {
                let f = c.checked_sub(*l)?;
                if *n > f {
                    return None;
                }
                *fr = (*fr).min(f);
            }
        }
        if need.iter().zip(cap).any(|(n, c)| n > c) {
            return None;
        }
        Some(free)
    }

    fn split(&mut self, t: i64) -> usize {
        let i = self.steps.partition_point(|(s, _)| *s < t);
        if i < self.steps.len() && self.steps[i].0 == t {
            return i;
        }
        let load = if i == 0 { [0; 5] } else { self.steps[i - 1].1 };
        self.steps.insert(i, (t, load));
        i
    }

    /// Adds `need` during `[a, b)`.
    pub fn add(&mut self, need: &Dims, a: i64, b: i64) {
        if b <= a {
            return;
        }
        let i = self.split(a);
        let j = self.split(b);
        for (_, load) in &mut self.steps[i..j] {
            *load = add(load, need);
        }
    }

    /// Takes `need` off again during `[a, b)` (undoes an [`add`](Self::add) of the same span).
    pub fn remove(&mut self, need: &Dims, a: i64, b: i64) {
        if b <= a {
            return;
        }
        let i = self.split(a);
        let j = self.split(b);
        for (_, load) in &mut self.steps[i..j] {
            for (x, y) in load.iter_mut().zip(need.iter()) {
                *x = x.saturating_sub(*y);
            }
        }
    }

    /// The steps, for checks and pictures.
    pub fn steps(&self) -> &[(i64, Dims)] {
        &self.steps
    }
}

/// Disjoint, sorted busy intervals `[start, end]` of one worker (touching ones are merged).
#[derive(Debug, Clone, Default)]
pub struct Busy {
    spans: Vec<(i64, i64)>,
}

/// Billing rules for gaps between busy spans.
#[derive(Debug, Clone, Copy)]
pub struct GapRule {
    /// `now`: nothing is launched before it.
    pub now: i64,
    /// Seconds a launch precedes the first session of a run.
    pub lead: i64,
    /// Gaps up to this long are kept running (billed); longer ones stop and relaunch.
    pub keep: i64,
}

impl GapRule {
    /// Billed seconds of an idle gap of `g` seconds between two busy spans.
    pub fn gap_cost(&self, g: i64) -> i64 {
        if g <= self.keep {
            g.max(0)
        } else {
            self.lead
        }
    }

    /// Billed seconds before the first busy span that starts at `s` (launch then boot).
    pub fn lead_in(&self, s: i64) -> i64 {
        self.lead.min(s - self.now).max(0)
    }
}

impl Busy {
    /// The spans.
    pub fn spans(&self) -> &[(i64, i64)] {
        &self.spans
    }

    /// True when there is no busy span.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn range(&self, a: i64, b: i64) -> (usize, usize) {
        let i = self.spans.partition_point(|(_, e)| *e < a);
        let j = self.spans.partition_point(|(s, _)| *s <= b);
        (i, j.max(i))
    }

    /// Extra billed seconds if `[a, b]` became busy, under `rule`.
    pub fn marginal(&self, a: i64, b: i64, rule: &GapRule) -> i64 {
        let (i, j) = self.range(a, b);
        let prev = i.checked_sub(1).map(|k| self.spans[k]);
        let next = self.spans.get(j).copied();
        let lead_or_gap = |s: i64| match prev {
            Some(p) => rule.gap_cost(s - p.1),
            None => rule.lead_in(s),
        };
        let tail = |e: i64| next.map(|n| rule.gap_cost(n.0 - e)).unwrap_or(0);
        let before = if i < j {
            let inner: i64 = self.spans[i..j].iter().map(|(s, e)| e - s).sum::<i64>()
                + self.spans[i..j]
                    .windows(2)
                    .map(|w| rule.gap_cost(w[1].0 - w[0].1))
                    .sum::<i64>();
            inner + lead_or_gap(self.spans[i].0) + tail(self.spans[j - 1].1)
        } else {
            match (prev, next) {
                (Some(p), Some(n)) => rule.gap_cost(n.0 - p.1),
                (None, Some(n)) => rule.lead_in(n.0),
                _ => 0,
            }
        };
        let (ns, ne) = if i < j {
            (a.min(self.spans[i].0), b.max(self.spans[j - 1].1))
        } else {
            (a, b)
        };
        let after = (ne - ns) + lead_or_gap(ns) + tail(ne);
        after - before
    }

    /// Marks `[a, b]` busy.
    pub fn insert(&mut self, a: i64, b: i64) {
        let (i, j) = self.range(a, b);
        if i < j {
            let s = a.min(self.spans[i].0);
            let e = b.max(self.spans[j - 1].1);
            self.spans.drain(i + 1..j);
            self.spans[i] = (s, e);
        } else {
            self.spans.insert(i, (a, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_fits_and_peaks() {
        let mut p = LoadProfile::default();
        let cap = [10, 10, 10, 10, 10];
        p.add(&[4, 0, 0, 0, 0], 0, 100);
        p.add(&[4, 0, 0, 0, 0], 50, 150);
        assert_eq!(p.peak(0, 200)[0], 8);
        assert_eq!(p.peak(100, 150)[0], 4);
        assert!(p.fits(&cap, &[3, 0, 0, 0, 0], 0, 200).is_none());
        assert_eq!(
            p.fits(&cap, &[3, 0, 0, 0, 0], 100, 200).map(|f| f[0]),
            Some(6)
        );
        assert!(p.fits(&cap, &[2, 0, 0, 0, 0], 0, 200).is_some());
        assert!(p.fits(&cap, &[11, 0, 0, 0, 0], 500, 600).is_none());
        p.remove(&[4, 0, 0, 0, 0], 0, 100);
        assert_eq!(p.peak(0, 200)[0], 4);
        assert_eq!(p.peak(0, 50)[0], 0);
        assert!(p.fits(&cap, &[6, 0, 0, 0, 0], 0, 200).is_some());
    }

    #[test]
    fn busy_marginal_counts_gaps_and_leads() {
        let rule = GapRule {
            now: 0,
            lead: 35,
            keep: 45,
        };
        let mut b = Busy::default();
        // First span on a stopped worker: lead + length.
        assert_eq!(b.marginal(100, 200, &rule), 135);
        b.insert(100, 200);
        // Inside: free.
        assert_eq!(b.marginal(120, 180, &rule), 0);
        // After a short gap: gap + length.
        assert_eq!(b.marginal(230, 300, &rule), 30 + 70);
        // After a long gap: relaunch lead + length.
        assert_eq!(b.marginal(400, 500, &rule), 35 + 100);
        b.insert(400, 500);
        // Bridging the two spans turns a relaunch (35) into kept time.
        assert_eq!(b.marginal(220, 380, &rule), (160 + 20 + 20) - 35);
        b.insert(220, 380);
        assert_eq!(b.spans(), &[(100, 200), (220, 380), (400, 500)]);
        b.insert(200, 400);
        assert_eq!(b.spans(), &[(100, 500)]);
    }
}
