//! `BiasedSpinLock<T>`: a [`SpinLock`](super::SpinLock) that a worker
//! thread which takes it over and over takes without any locked
//! instruction (biased locking, as the JVM's; the asymmetric fence is the
//! kernel's `membarrier`, as in liburcu's "memb" flavour).
//!
//! # Why
//!
//! A locked read-modify-write waits for the CPU's store buffer to drain,
//! and loads after it wait for it: right behind a coroutine switch's
//! stores it costs far more than its 20 cycles alone. An L4 endpoint whose
//! client and server share a CPU takes its lock twice per round trip (the
//! call pops the waiting server, the server's `reply_recv` queues itself
//! again), always on the same worker thread. Measured on the AMD guest,
//! those two swaps were about 7 of the null call's 49 ns (the same build
//! with the swaps made plain loads and stores: 48.9 -> 41.7 ns); with the
//! lock biased the call took 43.6 ns.
//!
//! # Protocol
//!
//! - `bias`: the worker thread the lock is biased to (its `WorkerCell`
//!   address, one live thread per address), [`REVOKING`], or 0.
//!   Written only by a holder of the ordinary lock (`locked`).
//! - The owner's fast path: `owner_in = true`, then `bias` re-read; if it
//!   still names the owner, the owner holds the lock. Unlock: `owner_in =
//!   false`. Plain stores and loads (the compiler keeps their order; the
//!   hardware may not: a store can wait in the store buffer while the
//!   later load runs).
//! - Anyone else takes `locked` (the ordinary swap). Finding the lock
//!   biased to another thread, it revokes: `bias = REVOKING`, then
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which returns only
//!   after every running thread of the process executed a full barrier.
//!   So the owner is in one of three places: its `owner_in` store came
//!   before the barrier (now visible: the revoker waits until the owner
//!   clears it), or its re-read comes after it (it reads `REVOKING` and
//!   backs off to the ordinary lock, which the revoker holds), or it is
//!   not in a fast path at all. Then `bias = 0`.
//! - A thread earns the bias by taking the ordinary lock `threshold` times
//!   in a row with no other thread in between; `threshold` starts at
//!   [`BIAS_AFTER`] and doubles with every revocation (up to
//!   [`BIAS_AFTER_MAX`]), so a lock used from several CPUs stops being
//!   biased rather than paying a `membarrier` (about 9 us on the guest)
//!   again and again. Only worker threads are ever biased to; a lock
//!   taken from a plain thread always takes the ordinary path.
//!
//! Without `membarrier` (a kernel before 4.14, or a sandbox that refuses
//! it) no lock is ever biased, and this is a `SpinLock` with a branch more.
//!
//! As with `SpinLock`, a critical section is short and never contains a
//! call that can switch tasks: a revoker waits for the owner's
//! `owner_in` by spinning, then yielding its thread.
//!
//! # Testing
//!
//! Loom cannot model `membarrier`. The stress test
//! (`exclusion_holds_while_the_bias_moves_between_workers`) moves the
//! bias between two workers 40 times while both hammer the lock with a
//! racy increment: it fails every run with the revoker's wait for
//! `owner_in` removed. A missing re-read of `bias` on the fast path (a
//! window of a few instructions) it does not catch; that step rests on
//! the argument above.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::executor;

/// `bias` while a revoker waits for the owner to leave.
const REVOKING: usize = 1;
/// Ordinary acquisitions in a row by one worker thread before the lock is
/// biased to it.
pub const BIAS_AFTER: u32 = 64;
/// The most that [`BIAS_AFTER`] grows to after revocations.
pub const BIAS_AFTER_MAX: u32 = 1 << 20;

/// A spin lock that the worker thread using it most takes without a
/// locked instruction (see the module doc).
pub struct BiasedSpinLock<T> {
    bias: AtomicUsize,
    /// The bias owner is inside a critical section taken on the fast path.
    owner_in: AtomicBool,
    /// The ordinary lock.
    locked: AtomicBool,
    /// Under `locked`: the thread of the last ordinary acquisition (0: not
    /// a worker) and how many in a row it made.
    streak: UnsafeCell<(usize, u32)>,
    /// Under `locked`: the streak that earns the bias.
    threshold: UnsafeCell<u32>,
    /// Under `locked`: how many times the bias was revoked.
    revocations: UnsafeCell<u64>,
    data: UnsafeCell<T>,
}

// SAFETY: as for `SpinLock`: one holder at a time gets `&mut T` (the
// protocol in the module doc), so `T: Send` suffices; the bookkeeping
// cells are touched only under `locked`.
unsafe impl<T: Send> Sync for BiasedSpinLock<T> {}
// SAFETY: the lock owns its `T`.
unsafe impl<T: Send> Send for BiasedSpinLock<T> {}

impl<T> BiasedSpinLock<T> {
    /// An unlocked, unbiased lock holding `value`.
    pub const fn new(value: T) -> BiasedSpinLock<T> {
        BiasedSpinLock {
            bias: AtomicUsize::new(0),
            owner_in: AtomicBool::new(false),
            locked: AtomicBool::new(false),
            streak: UnsafeCell::new((0, 0)),
            threshold: UnsafeCell::new(BIAS_AFTER),
            revocations: UnsafeCell::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    #[inline]
    pub fn lock(&self) -> BiasedGuard<'_, T> {
        self.lock_as(executor::current_worker_ptr() as usize)
    }

    /// [`lock`](Self::lock) with the calling thread's worker in hand.
    ///
    /// # Safety
    /// `here` was made since the running task last switched in (it names
    /// this thread's worker: a stale one could name another thread's and
    /// break the exclusion).
    #[inline]
    pub unsafe fn lock_here(&self, here: crate::wait::Here) -> BiasedGuard<'_, T> {
        self.lock_as(here.w as usize)
    }

    /// Takes the lock as the thread whose worker is `me` (0: not a worker).
    #[inline(always)]
    fn lock_as(&self, me: usize) -> BiasedGuard<'_, T> {
        if me != 0 && self.bias.load(Ordering::Relaxed) == me {
            self.owner_in.store(true, Ordering::Relaxed);
            // Keeps the re-read after the store in the compiled code; the
            // hardware's reordering is the revoker's `membarrier`'s to undo.
            compiler_fence(Ordering::SeqCst);
            if self.bias.load(Ordering::Relaxed) == me {
                // Acquire: what the previous ordinary holder wrote is
                // visible (it released `locked` before this thread took
                // `locked` and biased the lock to itself).
                std::sync::atomic::fence(Ordering::Acquire);
                return BiasedGuard {
                    lock: self,
                    biased: true,
                };
            }
            self.owner_in.store(false, Ordering::Release);
        }
        self.lock_ordinary(me)
    }

    /// The ordinary path: the swap, then revocation or streak keeping.
    #[cold]
    fn lock_ordinary(&self, me: usize) -> BiasedGuard<'_, T> {
        super::spin::acquire(&self.locked);
        let bias = self.bias.load(Ordering::Acquire);
        // SAFETY: we hold `locked`, under which alone the bookkeeping
        // cells are touched; the two borrows are of different cells.
        let (streak, threshold) = unsafe { (&mut *self.streak.get(), &mut *self.threshold.get()) };
        if bias != 0 && bias != me {
            self.revoke();
            *threshold = threshold.saturating_mul(2).min(BIAS_AFTER_MAX);
            // SAFETY: as above (a third cell).
            unsafe { *self.revocations.get() += 1 };
            *streak = (me, 1);
        } else if streak.0 == me {
            streak.1 = streak.1.saturating_add(1);
            if bias == 0 && me != 0 && streak.1 >= *threshold && membarrier_ready() {
                self.bias.store(me, Ordering::Release);
            }
        } else {
            *streak = (me, 1);
        }
        BiasedGuard {
            lock: self,
            biased: false,
        }
    }

    /// Takes the bias away from its owner (we hold `locked`).
    fn revoke(&self) {
        self.bias.store(REVOKING, Ordering::SeqCst);
        membarrier();
        let mut round = 0u32;
        while self.owner_in.load(Ordering::Acquire) {
            super::spin::backoff(&mut round);
        }
        self.bias.store(0, Ordering::Release);
    }

    /// Whether the lock is biased to a worker thread now.
    pub fn is_biased(&self) -> bool {
        self.bias.load(Ordering::Relaxed) > REVOKING
    }

    /// How many times a bias was revoked (read under the lock).
    pub fn revocations(&self) -> u64 {
        let g = self.lock();
        // SAFETY: `revocations` is written only under `locked`; a biased
        // holder excludes every ordinary one, as `locked` does.
        let n = unsafe { *g.lock.revocations.get() };
        drop(g);
        n
    }
}

impl<T> fmt::Debug for BiasedSpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BiasedSpinLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .field("biased", &self.is_biased())
            .finish_non_exhaustive()
    }
}

/// Holds a [`BiasedSpinLock`]; unlocks when dropped.
pub struct BiasedGuard<'a, T> {
    lock: &'a BiasedSpinLock<T>,
    biased: bool,
}

impl<T> Deref for BiasedGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock (either way): no other
        // reference to the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for BiasedGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for BiasedGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.biased {
            self.lock.owner_in.store(false, Ordering::Release);
        } else {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for BiasedGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// The kernel's asymmetric barrier (linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for `membarrier` now rather than at the first
/// bias (`Runtime::build` calls it before starting its workers: the
/// registration waits for an RCU grace period, milliseconds in a VM,
/// unless the process has a single thread).
pub fn prepare() {
    membarrier_ready();
}

/// Whether this process registered for `membarrier`'s private expedited
/// command (once, on first use); without it no lock is biased.
fn membarrier_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        // SAFETY: a system call with integer arguments only.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
        r == 0
    })
}

/// A full barrier on every running thread of this process.
fn membarrier() {
    // A lock is biased only after registration succeeded.
    debug_assert!(membarrier_ready());
    // SAFETY: a system call with integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
    // Registered (checked before any bias was granted), the command
    // cannot fail; if it somehow did, the owner could still be inside:
    // better to stop than to break the exclusion.
    assert_eq!(r, 0, "membarrier failed after registration");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuSet, Runtime};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// One read-modify-write with a window of `pauses` spin-loop hints
    /// between the read and the write: two holders at once lose
    /// increments.
    fn bump_slowly(l: &BiasedSpinLock<u64>, pauses: u32) {
        let mut g = l.lock();
        let v = *g;
        for _ in 0..pauses {
            std::hint::spin_loop();
        }
        *g = std::hint::black_box(v) + 1;
    }

    fn bump(l: &BiasedSpinLock<u64>) {
        bump_slowly(l, 8);
    }

    fn on(cpu: usize) -> crate::task::Builder {
        let mut set = CpuSet::new();
        set.set(cpu);
        crate::task::Builder::new().affinity(set)
    }

    /// Takes the lock on this worker until it is biased here (or, without
    /// `membarrier`, `4 * BIAS_AFTER` times); returns how many increments
    /// it made.
    fn bump_until_biased(l: &BiasedSpinLock<u64>) -> u64 {
        {
            let _g = l.lock();
            // SAFETY: we hold the lock; `threshold` is only read under it.
            // (The test restarts the doubling each round, to keep rounds
            // short.)
            unsafe { *l.threshold.get() = BIAS_AFTER };
        }
        let mut n = 0;
        for _ in 0..BIAS_AFTER * 4 {
            bump(l);
            n += 1;
            if l.is_biased() {
                break;
            }
        }
        n
    }

    /// The bias forms on one worker, is revoked by the other, forms on
    /// that one, and so on, while both hammer the lock: every increment
    /// must survive (a broken exclusion loses some), and the
    /// lock must really have been biased and revoked every round (else
    /// the fast path went untested).
    ///
    /// With the revoker's wait for `owner_in` removed, this test failed
    /// 6 runs in 6.
    #[test]
    fn exclusion_holds_while_the_bias_moves_between_workers() {
        let rt = Runtime::builder().workers(2).build().expect("runtime");
        let l = Arc::new(BiasedSpinLock::new(0u64));
        let rounds = 40u64;
        let together = 200u64;
        let (biased, expected) = {
            let l = l.clone();
            rt.block_on(move || {
                let mut biased = 0u64;
                let mut expected = 0u64;
                for round in 0..rounds {
                    let cpu = (round % 2) as usize;
                    // Alone on one worker until it holds the bias.
                    let l1 = l.clone();
                    let solo = on(cpu)
                        .spawn(move || (bump_until_biased(&l1), l1.is_biased()))
                        .expect("spawn");
                    let (n, b) = solo.join().expect("solo task");
                    biased += u64::from(b);
                    expected += n;
                    // The owner hammers on its fast path; once it is at
                    // it, the other worker takes the lock (revoking) and
                    // hammers too.
                    let progress = Arc::new(AtomicU64::new(0));
                    let stop = Arc::new(AtomicBool::new(false));
                    let owner = {
                        let (l, progress, stop) = (l.clone(), progress.clone(), stop.clone());
                        on(cpu)
                            .spawn(move || {
                                let mut n = 0u64;
                                while !stop.load(Ordering::Relaxed) {
                                    // A section longer than a revoker's
                                    // `membarrier` (~9 us on the guest), so
                                    // that a revocation falls inside one.
                                    bump_slowly(&l, 2_000);
                                    n += 1;
                                    progress.store(n, Ordering::Relaxed);
                                }
                                n
                            })
                            .expect("spawn")
                    };
                    let revoker = {
                        let l = l.clone();
                        on(1 - cpu)
                            .spawn(move || {
                                while progress.load(Ordering::Relaxed) < 64 {
                                    std::hint::spin_loop();
                                }
                                for _ in 0..together {
                                    bump(&l);
                                }
                                stop.store(true, Ordering::Relaxed);
                            })
                            .expect("spawn")
                    };
                    revoker.join().expect("revoking task");
                    expected += owner.join().expect("owning task") + together;
                }
                (biased, expected)
            })
        };
        assert_eq!(*l.lock(), expected, "increments lost: two holders at once");
        if membarrier_ready() {
            assert_eq!(biased, rounds, "a round without the bias");
            assert!(
                l.revocations() >= rounds,
                "revocations: {}",
                l.revocations()
            );
        }
    }

    #[test]
    fn a_plain_thread_never_biases_the_lock() {
        let l = BiasedSpinLock::new(0u64);
        for _ in 0..(BIAS_AFTER * 4) {
            *l.lock() += 1;
        }
        assert!(!l.is_biased());
        assert_eq!(*l.lock(), u64::from(BIAS_AFTER * 4));
    }
}
