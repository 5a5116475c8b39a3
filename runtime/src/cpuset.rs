//! `CpuSet`: an affinity mask over the runtime's CPUs (worker indices), with
//! the operations of `CPU_ZERO / CPU_SET / CPU_CLR / CPU_ISSET / CPU_COUNT`.
//!
//! Invariant: bit `i` of word `i / 64` stands for runtime CPU `i`; words past
//! the highest set bit may or may not exist (comparisons ignore them).

use std::fmt;

/// Upper bound on runtime CPUs a set can name, like the kernel's
/// `CPU_SETSIZE` (1024).
pub const CPU_SETSIZE: usize = 1024;

/// A set of runtime CPUs (worker indices).
#[derive(Clone, Default)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl CpuSet {
    /// The empty set (`CPU_ZERO`).
    pub fn new() -> CpuSet {
        CpuSet { words: Vec::new() }
    }

    /// The set `{0, 1, .., n-1}`.
    pub fn all(n: usize) -> CpuSet {
        let mut s = CpuSet::new();
        for cpu in 0..n {
            s.set(cpu);
        }
        s
    }

    /// Adds `cpu` (`CPU_SET`). CPUs at or above [`CPU_SETSIZE`] are ignored,
    /// as the kernel macro ignores them.
    pub fn set(&mut self, cpu: usize) {
        if cpu >= CPU_SETSIZE {
            return;
        }
        let w = cpu / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (cpu % 64);
    }

    /// Removes `cpu` (`CPU_CLR`).
    pub fn clear(&mut self, cpu: usize) {
        if let Some(word) = self.words.get_mut(cpu / 64) {
            *word &= !(1 << (cpu % 64));
        }
    }

    /// Whether `cpu` is in the set (`CPU_ISSET`).
    pub fn is_set(&self, cpu: usize) -> bool {
        self.words
            .get(cpu / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// Number of CPUs in the set (`CPU_COUNT`).
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True if no CPU is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }

    /// The lowest CPU in the set.
    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }
}

impl PartialEq for CpuSet {
    fn eq(&self, other: &CpuSet) -> bool {
        let n = self.words.len().max(other.words.len());
        (0..n).all(|i| self.words.get(i).unwrap_or(&0) == other.words.get(i).unwrap_or(&0))
    }
}

impl Eq for CpuSet {}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        let mut s = CpuSet::new();
        for cpu in iter {
            s.set(cpu);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_operations() {
        let mut s = CpuSet::new();
        assert_eq!(s.count(), 0);
        s.set(0);
        s.set(2);
        s.set(130);
        assert!(s.is_set(0) && s.is_set(2) && s.is_set(130));
        assert!(!s.is_set(1));
        assert_eq!(s.count(), 3);
        s.clear(2);
        assert!(!s.is_set(2));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 130]);
        s.set(CPU_SETSIZE);
        assert_eq!(s.count(), 2);
        assert_eq!(CpuSet::all(3), [0, 1, 2].into_iter().collect());
    }
}
