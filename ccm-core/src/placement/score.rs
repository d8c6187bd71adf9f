//! Scoring: how good a feasible worker is for a session, computed exactly.
//!
//! The score of a worker is its weighted utilisation *after* the session is placed:
//! `U = Σ_d w_d · (allocated_d + need_d) / capacity_d` over the dimensions cpu, memory, storage
//! and CML nodes. Bin-packing prefers the highest `U` (fullest feasible worker first), spreading
//! the lowest; equal scores go to the worker with the smallest id.
//!
//! `U` is kept as an exact fraction (numerator up to 163 bits, denominator up to 128 bits) and
//! two fractions are compared by cross-multiplication in 320-bit integers, so every placer that
//! uses these functions makes bit-for-bit the same choice. A dimension whose weight or capacity
//! is zero contributes nothing.

use crate::resources::Load;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Which end of the utilisation scale wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fullest feasible worker first (keeps whole workers free to drain and stop).
    #[default]
    BinPack,
    /// Emptiest feasible worker first.
    Spread,
}

/// Integer weight of each packed dimension in the score (0 = ignore that dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Weights {
    /// Weight of cores.
    pub cpu: u32,
    /// Weight of memory.
    pub memory: u32,
    /// Weight of storage.
    pub storage: u32,
    /// Weight of CML nodes.
    pub nodes: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            cpu: 1,
            memory: 1,
            storage: 1,
            nodes: 1,
        }
    }
}

impl Weights {
    /// The weights in the order of [`Load::dims`].
    pub fn dims(&self) -> [u32; 4] {
        [self.cpu, self.memory, self.storage, self.nodes]
    }
}

/// How workers are ranked: strategy plus weights. The default is bin-packing with weight 1
/// on every dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Scoring {
    /// Bin-pack or spread.
    pub strategy: Strategy,
    /// Per-dimension weights.
    pub weights: Weights,
}

impl Scoring {
    /// Spreading with the default weights.
    pub fn spread() -> Self {
        Scoring {
            strategy: Strategy::Spread,
            weights: Weights::default(),
        }
    }

    /// The exact score of a worker of `capacity` holding `allocated` once `need` is added.
    ///
    /// ```
    /// use ccm_core::placement::score::Scoring;
    /// use ccm_core::resources::Load;
    /// let cap = Load { cpu_cores: 48, memory_gb: 192, storage_gb: 500, nodes: 20 };
    /// let need = Load { cpu_cores: 4, memory_gb: 16, storage_gb: 50, nodes: 2 };
    /// let s = Scoring::default();
    /// let empty = s.score_after(&cap, &Load::default(), &need);
    /// let half = s.score_after(&cap, &Load { cpu_cores: 24, memory_gb: 96, storage_gb: 250, nodes: 10 }, &need);
    /// assert!(s.prefers(&half, &empty)); // bin-packing: the fuller worker wins
    /// assert!(Scoring::spread().prefers(&empty, &half));
    /// ```
    pub fn score_after(&self, capacity: &Load, allocated: &Load, need: &Load) -> Score {
        let basis = Basis::new(capacity, &self.weights);
        // Summed as numerators so `allocated + need` cannot overflow a u32.
        let num = basis.numerator(allocated).add(&basis.numerator(need));
        Score {
            num,
            den: basis.den,
        }
    }

    /// Whether score `a` ranks strictly before score `b` under this strategy.
    pub fn prefers(&self, a: &Score, b: &Score) -> bool {
        self.compare(a, b) == Ordering::Less
    }

    /// Orders scores best first (`Less` = `a` is better).
    pub fn compare(&self, a: &Score, b: &Score) -> Ordering {
        match self.strategy {
            Strategy::BinPack => b.cmp(a),
            Strategy::Spread => a.cmp(b),
        }
    }
}

/// An exact weighted utilisation: a non-negative fraction.
///
/// Equality and order are by value (`1/2 == 2/4`).
#[derive(Debug, Clone, Copy)]
pub struct Score {
    num: U320,
    den: u128,
}

impl Score {
    /// The utilisation as a float, for display only (comparisons use the exact value).
    pub fn to_f64(&self) -> f64 {
        self.num.to_f64() / self.den as f64
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // Fast path: both numerators and denominators below 2^64, products fit in u128.
        if let (Some(a), Some(b)) = (self.num.as_u64(), other.num.as_u64()) {
            if let (Ok(da), Ok(db)) = (u64::try_from(self.den), u64::try_from(other.den)) {
                return (u128::from(a) * u128::from(db)).cmp(&(u128::from(b) * u128::from(da)));
            }
        }
        self.num
            .mul_u128(other.den)
            .cmp(&other.num.mul_u128(self.den))
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}", self.to_f64())
    }
}

impl Serialize for Score {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.to_f64())
    }
}

/// The common denominator of one capacity and the factor each dimension's numerator gets.
///
/// For the active dimensions (weight and capacity non-zero) `den = Π c_d` and
/// `factor_d = w_d · Π_{e≠d} c_e`, so `Σ w_d u_d / c_d = Σ u_d · factor_d / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Basis {
    /// Per-dimension factor (0 for inactive dimensions); fits since `w_d < 2^32` and three
    /// capacities are `< 2^96`, so the product is `< 2^128`.
    factor: [u128; 4],
    /// Common denominator (1 when no dimension is active).
    pub(crate) den: u128,
}

impl Basis {
    /// The basis of a worker of `capacity` under `weights`.
    pub(crate) fn new(capacity: &Load, weights: &Weights) -> Self {
        let c = capacity.dims();
        let w = weights.dims();
        let active: [bool; 4] = std::array::from_fn(|d| w[d] > 0 && c[d] > 0);
        let den = (0..4)
            .filter(|d| active[*d])
            .fold(1u128, |acc, d| acc * u128::from(c[d]));
        let factor = std::array::from_fn(|d| {
            if !active[d] {
                return 0;
            }
            let others = (0..4)
                .filter(|e| *e != d && active[*e])
                .fold(1u128, |acc, e| acc * u128::from(c[e]));
            others * u128::from(w[d])
        });
        Basis { factor, den }
    }

    /// `Σ u_d · factor_d` for the dimensions of `used`: the score numerator over `den`.
    pub(crate) fn numerator(&self, used: &Load) -> U320 {
        let u = used.dims();
        // Fast path: the whole sum fits in 128 bits (always, for realistic capacities).
        let mut small = Some(0u128);
        for (d, f) in self.factor.iter().enumerate() {
            small = small.and_then(|acc| {
                f.checked_mul(u128::from(u[d]))
                    .and_then(|t| acc.checked_add(t))
            });
        }
        if let Some(v) = small {
            return U320::from_u128(v);
        }
        let mut acc = U320::ZERO;
        for (d, f) in self.factor.iter().enumerate() {
            if u[d] != 0 {
                acc = acc.add(&U320::from_u128(*f).mul_u128(u128::from(u[d])));
            }
        }
        acc
    }

    /// The score whose numerator is `num` over this basis.
    pub(crate) fn score(&self, num: U320) -> Score {
        Score { num, den: self.den }
    }
}

/// A 320-bit unsigned integer (little-endian 64-bit limbs); enough for every product the
/// score needs (numerator < 2^163 times denominator < 2^128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct U320([u64; 5]);

impl U320 {
    /// Zero.
    pub(crate) const ZERO: U320 = U320([0; 5]);

    fn as_u64(&self) -> Option<u64> {
        (self.0[1] == 0 && self.0[2] == 0 && self.0[3] == 0 && self.0[4] == 0).then_some(self.0[0])
    }

    fn from_u128(v: u128) -> Self {
        U320([v as u64, (v >> 64) as u64, 0, 0, 0])
    }

    /// Wrapping sum (the bounds above keep it exact).
    pub(crate) fn add(&self, o: &U320) -> U320 {
        let mut out = [0u64; 5];
        let mut carry = 0u128;
        for (i, slot) in out.iter_mut().enumerate() {
            let s = u128::from(self.0[i]) + u128::from(o.0[i]) + carry;
            *slot = s as u64;
            carry = s >> 64;
        }
        U320(out)
    }

    /// Truncating product with a 128-bit value.
    fn mul_u128(&self, m: u128) -> U320 {
        let ml = [m as u64, (m >> 64) as u64];
        let mut out = [0u64; 5];
        for (j, mj) in ml.iter().enumerate() {
            if *mj == 0 {
                continue;
            }
            let mut carry = 0u128;
            for i in 0..5 - j {
                let cur = u128::from(out[i + j]) + u128::from(self.0[i]) * u128::from(*mj) + carry;
                out[i + j] = cur as u64;
                carry = cur >> 64;
            }
        }
        U320(out)
    }

    fn to_f64(self) -> f64 {
        self.0.iter().rev().fold(0.0f64, |acc, limb| {
            acc * 18_446_744_073_709_551_616.0 + *limb as f64
        })
    }
}

impl PartialOrd for U320 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for U320 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(c: u32, m: u32, s: u32, n: u32) -> Load {
        Load {
            cpu_cores: c,
            memory_gb: m,
            storage_gb: s,
            nodes: n,
        }
    }

    #[test]
    fn big_arithmetic_is_exact() {
        let a = U320::from_u128(u128::MAX);
        let sq = a.mul_u128(u128::MAX);
        // (2^128 - 1)^2 = 2^256 - 2^129 + 1
        assert_eq!(sq.0, [1, 0, u64::MAX - 1, u64::MAX, 0]);
        assert_eq!(
            U320::from_u128(3).add(&U320::from_u128(u128::MAX)).0,
            [2, 0, 1, 0, 0]
        );
        assert!(sq > a);
    }

    #[test]
    fn equal_fractions_compare_equal() {
        let s = Scoring::default();
        let a = s.score_after(
            &load(48, 192, 500, 20),
            &load(24, 96, 250, 10),
            &load(0, 0, 0, 0),
        );
        let b = s.score_after(
            &load(96, 384, 1000, 40),
            &load(48, 192, 500, 20),
            &load(0, 0, 0, 0),
        );
        assert_eq!(a, b);
        assert!((a.to_f64() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn weights_change_the_winner() {
        let cap = load(10, 10, 10, 10);
        let cpu_heavy = load(8, 1, 1, 1);
        let mem_heavy = load(1, 8, 1, 1);
        let zero = Load::default();
        let by_cpu = Scoring {
            strategy: Strategy::BinPack,
            weights: Weights {
                cpu: 3,
                memory: 1,
                storage: 0,
                nodes: 0,
            },
        };
        let (a, b) = (
            by_cpu.score_after(&cap, &cpu_heavy, &zero),
            by_cpu.score_after(&cap, &mem_heavy, &zero),
        );
        assert!(by_cpu.prefers(&a, &b));
        let by_mem = Scoring {
            weights: Weights {
                cpu: 1,
                memory: 3,
                storage: 0,
                nodes: 0,
            },
            ..by_cpu
        };
        let (a, b) = (
            by_mem.score_after(&cap, &cpu_heavy, &zero),
            by_mem.score_after(&cap, &mem_heavy, &zero),
        );
        assert!(by_mem.prefers(&b, &a));
    }

    #[test]
    fn tiny_differences_are_not_rounded_away() {
        // a − b = 1/(big−1) − 1/big = 1/(big·(big−1)) ≈ 5e-20: below f64 resolution near 1.
        let big = u32::MAX;
        let s = Scoring::default();
        let cap = load(big, big - 1, 0, 0);
        let a = s.score_after(&cap, &load(big - 2, 1, 0, 0), &Load::default());
        let b = s.score_after(&cap, &load(big - 1, 0, 0, 0), &Load::default());
        assert!(a > b);
        assert!(s.prefers(&a, &b));
        assert!(Scoring::spread().prefers(&b, &a));
    }

    #[test]
    fn zero_capacity_or_weight_dimension_is_ignored() {
        let s = Scoring::default();
        let a = s.score_after(&load(10, 10, 0, 10), &load(5, 5, 0, 5), &Load::default());
        assert!((a.to_f64() - 1.5).abs() < 1e-12);
    }
}
