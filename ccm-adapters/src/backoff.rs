//! [`Backoff`]: exponential back-off with equal jitter, shared by the adapters that retry over
//! HTTP (CloudEvents delivery, CML calls); each adapter has its own default.

use std::time::Duration;

/// Exponential back-off with equal jitter between retries.
///
/// The n-th retry waits a random time in `[d/2, d]` with `d = min(max, initial × 2^(n−1))`
/// ("equal jitter": never zero, never above the cap, and retries of many callers spread out).
///
/// ```
/// use ccm_adapters::backoff::Backoff;
/// use std::time::Duration;
/// let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
/// assert_eq!(b.ceiling(3), Duration::from_millis(400));
/// assert!(b.delay(3) >= Duration::from_millis(200) && b.delay(3) <= Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Cap of the first retry's delay.
    pub initial: Duration,
    /// Cap of any delay.
    pub max: Duration,
}

impl Backoff {
    /// The cap `d` of retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `retry` (1-based), with `unit` in `[0, 1]` as the random draw.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let d = self.ceiling(retry);
        let half = d / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before retry `retry` (1-based), with fresh randomness.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, random_unit())
    }

    /// Whether it can work: a first delay above zero and a cap not below it.
    pub fn is_usable(&self) -> bool {
        !self.initial.is_zero() && self.max >= self.initial
    }
}

/// A uniform draw in `[0, 1)` from the OS-seeded UUID v4 generator (no extra dependency).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_needs_a_positive_start_and_a_cap_not_below_it() {
        let ms = Duration::from_millis;
        let b = |initial, max| Backoff { initial, max };
        assert!(b(ms(100), ms(100)).is_usable());
        assert!(!b(Duration::ZERO, ms(100)).is_usable());
        assert!(!b(ms(200), ms(100)).is_usable());
        assert!((0..100)
            .map(|_| random_unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
