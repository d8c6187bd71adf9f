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
        let mut best: Option<(u128, u128, usize)> = None;
        let mut rejected: BTreeMap<FilterKind, usize> = BTreeMap::new();
        for (i, w) in self.workers.iter().enumerate() {
            match check(w, req) {
                Ok(()) => {
                    // Fullest after placement first: compare the summed utilisation
                    // Σ (allocated + need) / capacity exactly as a fraction over a common
                    // denominator (product of capacities), then by id (lower index = lower id).
                    let (num, den) = fill_after(w, req);
                    let better = match best {
                        None => true,
                        Some((bn, bd, _)) => num * bd > bn * den,
                    };
                    if better {
                        best = Some((num, den, i));
                    }
                }
                Err(r) => *rejected.entry(r.kind()).or_default() += 1,
            }
        }
        if let Some((_, _, i)) = best {
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

fn fill_after(w: &Worker, req: &Requirements) -> (u128, u128) {
    let cap = w.capacity.dims();
    let used = w.allocated.saturating_add(&req.load).dims();
    let den: u128 = cap.iter().map(|c| u128::from((*c).max(1))).product();
    let mut num: u128 = 0;
    for (d, u) in used.iter().enumerate() {
        let others: u128 = (0..4)
            .filter(|o| *o != d)
            .map(|o| u128::from(cap[o].max(1)))
            .product();
        num += u128::from(*u) * others;
    }
    (num, den)
}
