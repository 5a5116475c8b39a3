//! `Semaphore`: a counting semaphore that parks the green thread.
//!
//! A `Semaphore` owns an atomic permit count and a [`WaitQueue`] of tasks
//! waiting for a permit.
//!
//! # Protocol
//! 1. `try_acquire` decrements the count with a CAS if it is positive.
//! 2. `acquire` tries that; if no permit is left it parks with `validate`
//!    = "the count is still zero" (read after the waiter counted itself).
//! 3. `add_permits(n)` adds to the count *first*, then wakes up to `n`
//!    waiters, so a waiter either is woken or sees the permits in
//!    `validate`.
//! 4. A woken waiter retries from step 1. Permits are not reserved for the
//!    woken: a task arriving meanwhile may take one (barging), and the
//!    woken one parks again. The semaphore is therefore not FIFO-fair; a
//!    waiter that keeps losing can in principle wait as long as others keep
//!    arriving with the permits all taken.
//! 5. A waiter that leaves without a permit (timeout, cancellation) after
//!    possibly being woken passes a wakeup on when permits are available
//!    (see the [`sync`](super) module doc).
//!
//! Invariant: the count is the number of permits not held by anyone; it
//! never exceeds [`Semaphore::MAX_PERMITS`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::wait::{WaitQueue, WaitResult};

use super::{poll_cancelled, Deadline};

/// How a slow-path acquire ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum AcquireOutcome {
    Acquired,
    TimedOut,
    Cancelled,
}

/// A counting semaphore for green threads (and OS threads).
///
/// ```
/// use greenos_runtime::sync::Semaphore;
/// let s = Semaphore::new(1);
/// let permit = s.acquire_guard();
/// assert!(!s.try_acquire());
/// drop(permit);
/// assert_eq!(s.available_permits(), 1);
/// ```
pub struct Semaphore {
    permits: AtomicUsize,
    queue: WaitQueue,
}

impl Semaphore {
    /// The most permits a semaphore may hold.
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// A semaphore with `permits` permits. Panics above [`MAX_PERMITS`](Self::MAX_PERMITS).
    pub const fn new(permits: usize) -> Semaphore {
        assert!(
            permits <= Self::MAX_PERMITS,
            "Semaphore::new: too many permits"
        );
        Semaphore {
            permits: AtomicUsize::new(permits),
            queue: WaitQueue::new(),
        }
    }

    /// Takes a permit if one is available; never waits.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut n = self.permits.load(Ordering::Relaxed);
        while n > 0 {
            match self
                .permits
                .compare_exchange_weak(n, n - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(x) => n = x,
            }
        }
        false
    }

    /// Takes a permit, parking the caller until one is available.
    ///
    /// At runtime shutdown a cancelled task polls for
    /// [`CANCEL_GRACE`](super::CANCEL_GRACE), then panics (see the
    /// [`sync`](super) module doc).
    #[inline]
    pub fn acquire(&self) {
        if !self.try_acquire() {
            self.acquire_contended();
        }
    }

    #[cold]
    fn acquire_contended(&self) {
        if self.acquire_slow(Deadline::NEVER) != AcquireOutcome::Acquired {
            poll_cancelled("Semaphore::acquire", || self.try_acquire().then_some(()));
        }
    }

    /// Takes a permit, waiting at most `timeout`. Returns whether it got one
    /// (a cancelled task gets `false`).
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.try_acquire()
            || self.acquire_slow(Deadline::after(timeout)) == AcquireOutcome::Acquired
    }

    /// [`acquire`](Self::acquire), returning a guard that releases the
    /// permit when dropped.
    pub fn acquire_guard(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard { sem: self }
    }

    /// [`try_acquire`](Self::try_acquire) with a guard.
    pub fn try_acquire_guard(&self) -> Option<SemaphoreGuard<'_>> {
        self.try_acquire().then(|| SemaphoreGuard { sem: self })
    }

    /// [`acquire_timeout`](Self::acquire_timeout) with a guard.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.acquire_timeout(timeout)
            .then(|| SemaphoreGuard { sem: self })
    }

    /// Returns one permit.
    #[inline]
    pub fn release(&self) {
        self.add_permits(1);
    }

    /// Adds `n` permits and wakes up to `n` waiters. Panics if the count
    /// would exceed [`MAX_PERMITS`](Self::MAX_PERMITS).
    pub fn add_permits(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut cur = self.permits.load(Ordering::Relaxed);
        loop {
            let new = match cur.checked_add(n) {
                Some(v) if v <= Self::MAX_PERMITS => v,
                _ => panic!("Semaphore::add_permits: more than MAX_PERMITS permits"),
            };
            match self
                .permits
                .compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
        // Step 3: the count is published; wake_n fences before it reads the
        // waiter count (and returns at once when nobody waits).
        self.queue.wake_n(n);
    }

    /// Permits available right now (a hint: it may change at once).
    pub fn available_permits(&self) -> usize {
        self.permits.load(Ordering::Relaxed)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Deadline) -> AcquireOutcome {
        let mut leaving = None;
        loop {
            if self.try_acquire() {
                return AcquireOutcome::Acquired;
            }
            if let Some(why) = leaving {
                // Step 5: we may hold a wakeup that a permit added since
                // was meant to use.
                if self.available_permits() > 0 {
                    self.queue.wake_one();
                }
                return why;
            }
            let left = match deadline.remaining() {
                Ok(left) => left,
                Err(_) => return AcquireOutcome::TimedOut,
            };
            match self
                .queue
                .wait_killable(|| self.permits.load(Ordering::Relaxed) == 0, left)
            {
                WaitResult::Notified | WaitResult::Invalid => {}
                WaitResult::TimedOut => {
                    if deadline.expired() {
                        leaving = Some(AcquireOutcome::TimedOut);
                    }
                }
                WaitResult::Cancelled => leaving = Some(AcquireOutcome::Cancelled),
            }
        }
    }
}

impl Default for Semaphore {
    /// A semaphore with no permits.
    fn default() -> Semaphore {
        Semaphore::new(0)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("permits", &self.available_permits())
            .field("waiters", &self.queue.len())
            .finish()
    }
}

/// A permit taken with [`Semaphore::acquire_guard`]; released on drop.
#[must_use = "if unused the permit is released at once"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit taken for good (it is not released on drop).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("sem", &self.sem)
            .finish()
    }
}
