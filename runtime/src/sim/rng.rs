//! Deterministic randomness for the simulator: SplitMix64 (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", 2014) and the
//! duration distributions workloads draw from. No dependency, no global
//! state: every task owns a stream derived from the run's seed and its id,
//! so a task draws the same bursts and sleeps whatever the policy, and the
//! same seed gives the same run bit for bit.

use std::fmt;

/// SplitMix64: one 64-bit state, full period, passes BigCrush.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The stream for `index` under `seed` (the seed mixed with the index,
    /// so neighbouring streams are unrelated).
    pub fn stream(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        let s = r.next_u64();
        Rng(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `lo..=hi` (`lo` if `hi <= lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant here.
        lo + ((u128::from(self.next_u64()) * u128::from(span + 1)) >> 64) as u64
    }
}

/// A distribution of durations in ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Always this value.
    Const(u64),
    /// Uniform in `lo..=hi`.
    Uniform(u64, u64),
    /// Exponential with this mean (memoryless arrivals, bursty CPU use).
    Exp(u64),
    /// Unbounded: a CPU burst that ends only with the task's work budget
    /// or the end of the run.
    Inf,
}

/// What [`Dist::sample`] returns for [`Dist::Inf`].
pub const INF_NS: u64 = u64::MAX / 4;

impl Dist {
    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match *self {
            Dist::Const(v) => v,
            Dist::Uniform(lo, hi) => rng.range(lo, hi),
            Dist::Exp(mean) => {
                let u = rng.next_f64();
                // -ln(1 - u) is finite for u in [0, 1); cap at 20 means.
                let x = -(1.0 - u).ln() * mean as f64;
                (x.min(20.0 * mean as f64)) as u64
            }
            Dist::Inf => INF_NS,
        }
    }

    /// The mean (for reports; `None` for `Inf`).
    pub fn mean(&self) -> Option<u64> {
        match *self {
            Dist::Const(v) | Dist::Exp(v) => Some(v),
            Dist::Uniform(lo, hi) => Some(lo / 2 + hi / 2),
            Dist::Inf => None,
        }
    }
}

impl fmt::Display for Dist {
    /// The text format's spelling (`const(2ms)`, `exp(500us)`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Dist::Const(v) => write!(f, "const({})", FmtNs(v)),
            Dist::Uniform(a, b) => write!(f, "uniform({}, {})", FmtNs(a), FmtNs(b)),
            Dist::Exp(m) => write!(f, "exp({})", FmtNs(m)),
            Dist::Inf => f.write_str("inf"),
        }
    }
}

/// Formats ns with the largest exact unit (`1500us`, `2ms`, `3s`).
#[derive(Clone, Copy, Debug)]
pub struct FmtNs(pub u64);

impl fmt::Display for FmtNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, name) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
            if v >= unit && v % unit == 0 {
                return write!(f, "{}{name}", v / unit);
            }
        }
        write!(f, "{v}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (the reference C code).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn distributions_stay_in_range_and_have_their_means() {
        let mut r = Rng::stream(7, 3);
        let n = 20_000u64;
        let mut sum = 0u64;
        for _ in 0..n {
            let v = Dist::Uniform(100, 200).sample(&mut r);
            assert!((100..=200).contains(&v));
            sum += Dist::Exp(1000).sample(&mut r);
        }
        let mean = sum / n;
        assert!((900..1100).contains(&mean), "exp mean {mean}");
        assert_eq!(Dist::Const(5).sample(&mut r), 5);
        assert_eq!(Dist::Inf.sample(&mut r), INF_NS);
    }
}
