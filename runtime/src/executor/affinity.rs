//! A task's CPU affinity mask (`cpus_mask` in the kernel's task_struct).
//!
//! Read on every enqueue and pick by the CPU that owns the task, written by
//! `sched_setaffinity` from any task, so it is a set of atomic words rather
//! than a `CpuSet` behind a lock: CPUs 0..128 live inline (no allocation for
//! the common machine), more in a boxed tail sized to the runtime. A reader
//! racing a writer sees, bit by bit, either mask; the scheduler re-checks at
//! every pick, so a task ends up on an allowed CPU within one switch, as the
//! kernel's `set_cpus_allowed_ptr` migrates at the next opportunity.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cpuset::CpuSet;

const INLINE_WORDS: usize = 2;

/// A task's allowed CPUs.
#[derive(Debug)]
pub(crate) struct TaskMask {
    inline: [AtomicU64; INLINE_WORDS],
    /// Words past the inline ones (runtimes of more than 128 CPUs); a
    /// thin pointer, so that the mask costs every task 32 bytes.
    tail: Option<Box<Tail>>,
    /// Number of runtime CPUs (bits past it are never set).
    nr_cpus: u32,
}

/// [`TaskMask`]'s words past the inline ones.
#[derive(Debug)]
struct Tail(Box<[AtomicU64]>);

impl TaskMask {
    /// A mask allowing `set` (all CPUs if `None`), clipped to `nr_cpus`.
    pub(crate) fn new(set: Option<&CpuSet>, nr_cpus: usize) -> TaskMask {
        let nr_cpus = nr_cpus.min(u32::MAX as usize);
        let words = nr_cpus.div_ceil(64);
        // Word `i` with every runtime CPU set (the spawn fast path: no
        // allocation, no per-bit loop).
        let full = |i: usize| -> u64 {
            let bits = nr_cpus.saturating_sub(i * 64).min(64);
            if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            }
        };
        let tail = (words > INLINE_WORDS).then(|| {
            Box::new(Tail(
                (INLINE_WORDS..words)
                    .map(|i| AtomicU64::new(full(i)))
                    .collect(),
            ))
        });
        let m = TaskMask {
            inline: [AtomicU64::new(full(0)), AtomicU64::new(full(1))],
            tail,
            nr_cpus: nr_cpus as u32,
        };
        if let Some(s) = set {
            m.store(s);
        }
        m
    }

    /// A copy of `other` (a child inherits its parent's mask).
    pub(crate) fn inherit(other: &TaskMask) -> TaskMask {
        TaskMask {
            inline: [
                AtomicU64::new(other.inline[0].load(Ordering::Acquire)),
                AtomicU64::new(other.inline[1].load(Ordering::Acquire)),
            ],
            tail: other.tail.as_ref().map(|t| {
                Box::new(Tail(
                    t.0.iter()
                        .map(|w| AtomicU64::new(w.load(Ordering::Acquire)))
                        .collect(),
                ))
            }),
            nr_cpus: other.nr_cpus,
        }
    }

    fn word(&self, i: usize) -> Option<&AtomicU64> {
        if i < INLINE_WORDS {
            Some(&self.inline[i])
        } else {
            self.tail.as_ref().and_then(|t| t.0.get(i - INLINE_WORDS))
        }
    }

    /// Replaces the mask (bits at or above `nr_cpus` are dropped).
    pub(crate) fn store(&self, set: &CpuSet) {
        let nr_cpus = self.nr_cpus as usize;
        let words = nr_cpus.div_ceil(64).max(1);
        for i in 0..words {
            let mut w = 0u64;
            for b in 0..64 {
                let cpu = i * 64 + b;
                if cpu < nr_cpus && set.is_set(cpu) {
                    w |= 1 << b;
                }
            }
            if let Some(a) = self.word(i) {
                a.store(w, Ordering::Release);
            }
        }
    }

    /// Whether `cpu` is allowed.
    #[inline]
    pub(crate) fn allows(&self, cpu: usize) -> bool {
        self.word(cpu / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (cpu % 64)) != 0)
    }

    /// The mask as a `CpuSet`.
    pub(crate) fn load(&self) -> CpuSet {
        (0..self.nr_cpus as usize)
            .filter(|&c| self.allows(c))
            .collect()
    }

    /// The lowest allowed CPU (0 if none, which `store` callers prevent).
    pub(crate) fn first(&self) -> usize {
        (0..self.nr_cpus as usize)
            .find(|&c| self.allows(c))
            .unwrap_or(0)
    }

    /// Whether exactly one CPU is allowed (the task cannot move).
    pub(crate) fn is_single(&self) -> bool {
        let inline: u32 = self
            .inline
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
        let tail: u32 = self
            .tail
            .iter()
            .flat_map(|t| t.0.iter())
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
        inline + tail == 1
    }

    /// Whether every CPU is allowed (word by word: wakeup placement asks
    /// this on every wakeup that needs a decision).
    pub(crate) fn is_all(&self) -> bool {
        let nr_cpus = self.nr_cpus as usize;
        let words = nr_cpus.div_ceil(64);
        (0..words).all(|i| {
            let bits = nr_cpus.saturating_sub(i * 64).min(64);
            let full = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            self.word(i)
                .is_some_and(|w| w.load(Ordering::Relaxed) & full == full)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_tail_words() {
        let set: CpuSet = [0, 63, 64, 130, 199].into_iter().collect();
        let m = TaskMask::new(Some(&set), 200);
        for c in [0, 63, 64, 130, 199] {
            assert!(m.allows(c), "{c}");
        }
        assert!(!m.allows(1) && !m.allows(200) && !m.allows(5000));
        assert_eq!(m.load(), set);
        m.store(&CpuSet::all(3));
        assert_eq!(m.load(), CpuSet::all(3));
        assert_eq!(m.first(), 0);
        assert!(TaskMask::new(None, 4).is_all());
    }
}
