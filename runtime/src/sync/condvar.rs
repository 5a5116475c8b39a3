//! `Condvar`: wait for a condition protected by a [`Mutex`], parking the
//! green thread.
//!
//! A `Condvar` owns only a [`WaitQueue`] of waiters; it carries no state of
//! its own and may be used with any mutex (even different ones at different
//! times).
//!
//! # No lost wakeups
//! `wait` releases the mutex *inside* the wait queue's `validate` closure,
//! which runs under the queue lock after the waiter has been counted: a
//! notifier must take the mutex to change the condition, and its `notify_*`
//! then either finds the waiter counted (and wakes it) or runs before the
//! waiter released the mutex, i.e. before the condition could change. This
//! is Go's `gopark` unlock function / parking_lot's `validate`. (The mutex
//! unlock may wake one of the *mutex's* waiters from inside `validate`;
//! that takes the mutex's own queue lock, never this one, and nothing takes
//! the two in the other order, so there is no lock-order cycle.)
//!
//! After any wakeup the waiter re-locks the mutex before returning, so the
//! caller always gets its guard back locked. Spurious wakeups are possible
//! (as with every condvar): re-check the condition, or use `wait_while`.
//!
//! A timed-out waiter cannot swallow a `notify_one`: the wait queue decides
//! "timed out" and unlinks the node in one lock hold, so a notification
//! either reached this waiter first (the wait then reports it) or goes to
//! the next one.
//!
//! There is no non-blocking form of `wait`: not waiting is just checking the
//! condition under the lock.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::signal::NoUnwind;
use crate::wait::{WaitQueue, WaitResult};

use super::mutex::{MutexGuard, RawMutex};
use super::{poll_cancelled, Deadline};

/// Whether a timed wait returned because its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the timeout passed (for the `_while`
    /// form: with the condition still true).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// A condition variable for green threads, with parking_lot's shape (`wait`
/// takes `&mut MutexGuard`).
///
/// ```
/// use greenos_runtime::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// let (m, cv) = (Mutex::new(false), Condvar::new());
/// let mut g = m.lock();
/// // Nobody will set it: the timed wait gives up.
/// let r = cv.wait_timeout_while(&mut g, Duration::from_millis(1), |ready| !*ready);
/// assert!(r.timed_out());
/// ```
#[derive(Default)]
pub struct Condvar {
    queue: WaitQueue,
}

impl Condvar {
    /// A condition variable with no waiters.
    pub const fn new() -> Condvar {
        Condvar {
            queue: WaitQueue::new(),
        }
    }

    /// Releases the guard's mutex, parks until notified, and re-locks it.
    /// May wake spuriously.
    pub fn wait<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>) {
        let _ = self.wait_raw(guard.mutex().raw(), Deadline::NEVER);
    }

    /// Waits while `condition` holds (checked under the lock before each
    /// wait); returns with the lock held and `condition` false.
    ///
    /// At runtime shutdown a cancelled task cannot park: it polls
    /// (releasing the lock in between) for
    /// [`CANCEL_GRACE`](super::CANCEL_GRACE), then panics (see the
    /// [`sync`](super) module doc).
    pub fn wait_while<T: ?Sized, F>(&self, guard: &mut MutexGuard<'_, T>, mut condition: F)
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut **guard) {
            if self.wait_raw(guard.mutex().raw(), Deadline::NEVER) == WaitResult::Cancelled {
                let raw = guard.mutex().raw();
                poll_cancelled("Condvar::wait_while", || {
                    if !condition(&mut **guard) {
                        return Some(());
                    }
                    // SAFETY: the guard holds the lock; re-locked below
                    // before the guard is used again.
                    unsafe { raw.unlock() };
                    std::thread::yield_now();
                    raw.lock();
                    None
                });
                return;
            }
        }
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`.
    pub fn wait_timeout<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        let r = self.wait_raw(guard.mutex().raw(), Deadline::after(timeout));
        WaitTimeoutResult(matches!(r, WaitResult::TimedOut | WaitResult::Cancelled))
    }

    /// Like [`wait_while`](Self::wait_while), giving up after `timeout`
    /// (then `timed_out()` is true and `condition` still held at the last
    /// check). A cancelled task reports a timeout.
    pub fn wait_timeout_while<T: ?Sized, F>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
        mut condition: F,
    ) -> WaitTimeoutResult
    where
        F: FnMut(&mut T) -> bool,
    {
        let deadline = Deadline::after(timeout);
        loop {
            if !condition(&mut **guard) {
                return WaitTimeoutResult(false);
            }
            if deadline.expired() {
                return WaitTimeoutResult(true);
            }
            if self.wait_raw(guard.mutex().raw(), deadline) == WaitResult::Cancelled {
                return WaitTimeoutResult(condition(&mut **guard));
            }
        }
    }

    /// Wakes one waiter (the longest waiting). Returns whether there was one.
    pub fn notify_one(&self) -> bool {
        self.queue.wake_one()
    }

    /// Wakes every waiter. Returns how many.
    pub fn notify_all(&self) -> usize {
        self.queue.wake_all()
    }

    /// One wait: unlock `raw` atomically with the enqueue, park, re-lock.
    /// `Cancelled` means the task is being cancelled (the lock is held again
    /// on return either way); `TimedOut` only once `deadline` has passed on
    /// `Instant`.
    fn wait_raw(&self, raw: &RawMutex, deadline: Deadline) -> WaitResult {
        let left = match deadline.remaining() {
            Ok(left) => left,
            Err(_) => return WaitResult::TimedOut,
        };
        let unlocked = Cell::new(false);
        let r = self.queue.wait_killable_no_unwind(
            || {
                // SAFETY: our caller's guard holds `raw`; we re-lock it
                // below before returning to the guard's owner.
                unsafe { raw.unlock() };
                unlocked.set(true);
                true
            },
            left,
        );
        if unlocked.get() {
            // A cancelled task gets here too: `lock` then polls, as
            // documented for `Mutex::lock`. A killed one re-locks normally
            // (no unwinding without the lock its caller's guard owns)...
            let task = crate::executor::current_task_ptr();
            // SAFETY: a non-null current task is the running one.
            let _no_unwind = (!task.is_null()).then(|| NoUnwind::enter(unsafe { &*task }));
            raw.lock();
        }
        // ...and unwinds now, with the guard valid again.
        let task = crate::executor::current_task_ptr();
        if !task.is_null() {
            // SAFETY: as above.
            crate::signal::checkpoint(unsafe { &*task });
        }
        match r {
            WaitResult::TimedOut => {
                if deadline.expired() {
                    WaitResult::TimedOut
                } else {
                    // The queue's clock fired a hair before ours: a
                    // spurious wakeup (callers loop or re-check).
                    WaitResult::Notified
                }
            }
            r => r,
        }
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            .field("waiters", &self.queue.len())
            .finish()
    }
}
