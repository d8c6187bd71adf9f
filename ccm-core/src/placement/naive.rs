//! The reference placer: every filter and the score on every worker, no index.
//!
//! It is the baseline the fast [`Fleet`](super::Fleet) is proven against (property tests) and
//! measured against (benchmarks): both must return exactly the same [`Choice`].

use super::explain::Unschedulable;
use super::filter::{check, Requirements};
use super::score::{Score, Scoring};
use super::Choice;
use crate::worker::Worker;

/// Places `req` on the best of `workers` by filtering and scoring each one.
///
/// Ties in score go to the smallest worker id (the first such worker when ids repeat).
pub fn place(
    workers: &[Worker],
    req: &Requirements,
    scoring: &Scoring,
) -> Result<Choice, Unschedulable> {
    let mut best: Option<(usize, Score)> = None;
    for (i, w) in workers.iter().enumerate() {
        if check(w, req).is_err() {
            continue;
        }
        let s = scoring.score_after(&w.capacity, &w.allocated, &req.load);
        let better = match &best {
            None => true,
            Some((bi, bs)) => match scoring.compare(&s, bs) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => w.id < workers[*bi].id,
                std::cmp::Ordering::Greater => false,
            },
        };
        if better {
            best = Some((i, s));
        }
    }
    match best {
        Some((i, score)) => Ok(Choice::new(&workers[i], i, score, req)),
        None => Err(Unschedulable::explain(workers, req)),
    }
}
