//! The placement the loops use: a working copy of the fleet that decides and commits
//! bindings one at a time (bin-packing: fullest feasible worker first, ties by worker id).

use crate::placement::filter::{check, FilterKind, Requirements};
use crate::ports::PortError;
use crate::worker::Worker;
use std::collections::BTreeMap;

/// Why a session fits no worker: the filter that rejected the most workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unfit {
    /// Metric label (`cpu`, `license`, …, or `no_workers`).
    pub reason: String,
    /// Human text with per-filter counts.
    pub detail: String,
}

/// Workers that accept sessions, with their load updated as bindings are committed.
pub(crate) struct Placer {
    workers: Vec<Worker>,
}

impl Placer {
    /// A placer over `workers` (only RUNNING ones will ever be chosen).
    pub fn new(workers: Vec<Worker>) -> Self {
        let mut workers = workers;
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Placer { workers }
    }

    /// Adds a worker (e.g. a planned one).
    pub fn add(&mut self, w: Worker) -> usize {
        self.workers.push(w);
        self.workers.len() - 1
    }

    /// Chooses the best worker for `req` without taking anything.
    pub fn place(&self, req: &Requirements) -> Result<usize, Unfit> {
        let mut best: Option<(Fill, usize)> = None;
        let mut rejected: BTreeMap<FilterKind, usize> = BTreeMap::new();
        for (i, w) in self.workers.iter().enumerate() {
            match check(w, req) {
                Ok(()) => {
                    // Fullest after placement first: compare the summed utilisation
                    // Σ (allocated + need) / capacity exactly as a fraction over a common
                    // denominator (product of capacities), then by id (lower index = lower id).
                    let fill = fill_after(w, req);
                    let better = match &best {
                        None => true,
                        Some((b, _)) => fill.fuller_than(b),
                    };
                    if better {
                        best = Some((fill, i));
                    }
                }
                Err(r) => *rejected.entry(r.kind()).or_default() += 1,
            }
        }
        if let Some((_, i)) = best {
            return Ok(i);
        }
        let reason = rejected
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, _)| k.as_str().to_string())
            .unwrap_or_else(|| "no_workers".to_string());
        let detail = if rejected.is_empty() {
            "no worker to try".to_string()
        } else {
            rejected
                .iter()
                .map(|(k, n)| format!("{k}: {n} workers"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Unfit { reason, detail })
    }

    /// Takes capacity and ports on worker `i` for `session`.
    pub fn commit(
        &mut self,
        i: usize,
        session: &str,
        req: &Requirements,
    ) -> Result<BTreeMap<String, u16>, PortError> {
        let w = &mut self.workers[i];
        let ports = w.ports.allocate(session, &req.ports)?;
        w.allocated = w.allocated.saturating_add(&req.load);
        Ok(ports)
    }
}

/// Summed utilisation after placement, Σ used/capacity: exact as `num / den` while the
/// integers fit in `u128`, with an `f64` value for capacities so large they do not.
#[derive(Debug, Clone, Copy)]
struct Fill {
    exact: Option<(u128, u128)>,
    approx: f64,
}

impl Fill {
    /// Strictly fuller than `other`: exact cross-multiplication when it fits, else the floats.
    fn fuller_than(&self, other: &Fill) -> bool {
        if let (Some((n, d)), Some((bn, bd))) = (self.exact, other.exact) {
            if let (Some(l), Some(r)) = (n.checked_mul(bd), bn.checked_mul(d)) {
                return l > r;
            }
        }
        self.approx > other.approx
    }
}

fn fill_after(w: &Worker, req: &Requirements) -> Fill {
    let cap = w.capacity.dims();
    let used = w.allocated.saturating_add(&req.load).dims();
    let approx = used
        .iter()
        .zip(cap.iter())
        .map(|(u, c)| f64::from(*u) / f64::from((*c).max(1)))
        .sum();
    let exact = (|| {
        let den = cap
            .iter()
            .try_fold(1u128, |a, c| a.checked_mul(u128::from((*c).max(1))))?;
        let mut num: u128 = 0;
        for (d, u) in used.iter().enumerate() {
            let others = (0..4)
                .filter(|o| *o != d)
                .try_fold(1u128, |a, o| a.checked_mul(u128::from(cap[o].max(1))))?;
            num = num.checked_add(u128::from(*u).checked_mul(others)?)?;
        }
        Some((num, den))
    })();
    Fill { exact, approx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_comparison_never_overflows_and_stays_exact_when_it_can() {
        let huge = Fill {
            exact: Some((u128::MAX / 2, u128::MAX / 3)),
            approx: 1.5,
        };
        let other = Fill {
            exact: Some((u128::MAX / 4, u128::MAX / 3)),
            approx: 0.75,
        };
        // The cross products overflow: the floats decide, without a panic.
        assert!(huge.fuller_than(&other));
        assert!(!other.fuller_than(&huge));
        // Small values: exact (1/3 vs 0.333... as floats would tie).
        let third = Fill {
            exact: Some((1, 3)),
            approx: 1.0 / 3.0,
        };
        let a_bit_more = Fill {
            exact: Some((333_333_333_333_333_334, 1_000_000_000_000_000_000)),
            approx: 1.0 / 3.0,
        };
        assert!(a_bit_more.fuller_than(&third));
        assert!(!third.fuller_than(&a_bit_more));
    }
}
