//! `SpinLock<T>`: the lock inside greenos's blocking objects (wait queues,
//! channels, and the IPC crate's pipes, message queues, semaphore sets and
//! endpoints), one atomic swap to lock and a plain release store to unlock.
//!
//! Those critical sections are short (a queue push or pop, a few flags, a
//! bounded copy; a wait queue's `wake_all` wakes its waiters under its
//! lock, a bounded step each) and never contain a greenos call that can
//! switch, so a holder is never *suspended* while holding the lock; only
//! the OS can deschedule its thread. On their fast paths the lock's cost is its atomic operations:
//! `parking_lot::Mutex` pays a compare-and-swap to lock and another to
//! unlock (its unlock must check for parked threads); this lock pays one
//! swap, and unlocking is a `mov`. Measured on the 2-vCPU development VM a
//! locked read-modify-write costs about 8 ns back to back and up to 20 ns
//! behind a switch's stores, so this halves the lock's share of every
//! message and wakeup (see `mpsc`'s module doc).
//!
//! Contended, a locker spins with exponential backoff and then yields its
//! OS thread (`std::thread::yield_now`) between attempts. It never parks the
//! thread: parking a worker thread would stall every green task on that
//! CPU, and the holder is (almost always) running on another CPU and about
//! to unlock. The one bad case is a holder whose thread the OS preempted
//! inside the critical section; the yields hand the core over so it can
//! finish.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins (`2^k` pauses in round `k`) before yielding the OS thread.
const SPIN_ROUNDS: u32 = 6;

/// A test-and-test-and-set lock over a `T`, for critical sections that are
/// short and never block (see the module doc): a waiter spins, then yields
/// its OS thread, and never parks it. Holding it across a greenos call that
/// can switch (a blocking call, `yield_now`) would stall every other task
/// that wants it, including on this CPU: don't.
pub struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one holder at a time, so sharing
// it moves access to `T` between threads: `T: Send` suffices, as for
// `std::sync::Mutex`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: the lock owns its `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        acquire(&self.locked);
        SpinGuard { lock: self }
    }
}

/// Takes the lock word `locked` (true: held): one swap when free, else
/// [`acquire_contended`].
#[inline]
pub(super) fn acquire(locked: &AtomicBool) {
    if locked.swap(true, Ordering::Acquire) {
        acquire_contended(locked);
    }
}

#[cold]
fn acquire_contended(locked: &AtomicBool) {
    let mut round = 0u32;
    loop {
        // Wait for it to look free before trying again (no write traffic
        // on the holder's cache line while it is held).
        while locked.load(Ordering::Relaxed) {
            backoff(&mut round);
        }
        if !locked.swap(true, Ordering::Acquire) {
            return;
        }
    }
}

/// One wait of a spinning locker in its round `round`: `2^round` pauses
/// for the first [`SPIN_ROUNDS`] rounds, then a yield of the OS thread.
pub(super) fn backoff(round: &mut u32) {
    if *round < SPIN_ROUNDS {
        for _ in 0..(1u32 << *round) {
            std::hint::spin_loop();
        }
        *round += 1;
    } else {
        std::thread::yield_now();
    }
}

impl<T> fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Holds a [`SpinLock`]; unlocks when dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T: fmt::Debug> fmt::Debug for SpinGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock: no other reference to
        // the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::SpinLock;
    use std::sync::Arc;

    #[test]
    fn sync_spinlock_counts_exactly_across_threads() {
        let l = Arc::new(SpinLock::new(0u64));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.lock(), 200_000);
    }
}
