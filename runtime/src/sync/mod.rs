//! Blocking primitives for green threads: [`Mutex`], [`Condvar`],
//! [`Semaphore`] and the [`mpsc`] channels.
//!
//! Every one of them blocks through [`WaitQueue`](crate::wait::WaitQueue),
//! so a blocked green task parks (its CPU runs other tasks; the worker OS
//! thread never sleeps on a user's lock), and the same value works when it
//! is called from a plain OS thread outside the runtime (the wait queue
//! parks the thread instead). A task may hold a guard across a yield and
//! resume on another CPU: unlocking is a plain atomic operation, not tied to
//! the thread that locked.
//!
//! # Shapes
//! The API follows std and parking_lot: `Mutex::lock` returns the guard
//! directly (no poisoning), `mpsc` has std's `channel`/`sync_channel` with
//! std's error types. Every blocking call has a `_timeout(.., Duration)` form
//! and a non-blocking `try_` form (`shared/API.md`). Timeouts are lower
//! bounds measured on [`std::time::Instant`]: a call never reports a timeout
//! before its duration has passed on that clock.
//!
//! # The common protocol
//! Each primitive keeps its condition in atomics (or under a short
//! spin lock that is never held across a wait or a wake) and parks
//! with `WaitQueue::wait(validate, timeout)`, whose `validate` re-reads the
//! condition under the wait-queue lock after the waiter has counted itself;
//! the waker changes the condition *first* and then calls `wake_*` (which
//! fences and reads the waiter count). So either the waker sees the waiter or
//! the waiter's `validate` sees the new condition: no lost wakeups.
//!
//! A waiter that leaves without a notification (timeout or cancellation) is
//! unlinked in the same wait-queue lock hold that decides it timed out, so
//! a `wake_one` cannot be spent on it. The primitives still pass a wakeup on
//! when a leaving waiter sees the condition it waited for now hold for
//! someone else (`Mutex` re-arms its `PARKED` bit, `Semaphore` and the
//! channels call `wake_one`): the condition may have changed between the
//! timeout and the waiter's exit, and a spurious wakeup is allowed where a
//! lost one is not.
//!
//! # Cancellation at runtime shutdown
//! When a runtime shuts down it unwinds every task that is still alive, one
//! after another on the dropping thread, with the task's `cancelled` flag
//! set; a wait that starts then returns `WaitResult::Cancelled` at once
//! (nothing may park: no worker would ever resume it). That only happens in
//! destructors run by the unwind. What each call does then:
//! - calls with an error in their signature return it: `recv` gives
//!   `RecvError` (`recv_timeout`: `Disconnected`), `SyncSender::send` gives
//!   the value back in `SendError`, `*_timeout` forms report a timeout
//!   (`None` / `false` / `timed_out()`), after one last non-blocking try;
//! - `Condvar::wait` returns (a spurious wakeup) with the mutex re-locked;
//! - `Mutex::lock`, `Semaphore::acquire` and the `Condvar::wait_while`
//!   loops have no error to return. Retrying the wait would spin forever
//!   (it returns `Cancelled` at once), and yielding is a no-op for a
//!   cancelled task. The holder of the lock (or permits) is usually another
//!   task of the same runtime, which will only be unwound *after* this one,
//!   on this same thread, so waiting for it cannot succeed; only a holder
//!   outside the runtime (an OS thread, a task of another runtime) can
//!   still release. So these calls poll the non-blocking form with backoff
//!   (`spin_loop`, then `std::thread::yield_now`) for up to
//!   [`CANCEL_GRACE`], then panic with a message naming the call. The panic
//!   continues the unwind if the caller was not already unwinding; a
//!   destructor running *during* the unwind turns it into an abort, with our
//!   message printed first, which we prefer to a silent hang of the
//!   runtime's `drop`. Destructors that may run at shutdown should use
//!   `try_lock` / `try_acquire`.

mod biased;
mod condvar;
mod linequeue;
pub mod mpsc;
mod mutex;
mod semaphore;
mod spin;

use std::time::{Duration, Instant};

pub(crate) use biased::prepare as biased_prepare;
pub use biased::{BiasedGuard, BiasedSpinLock, BIAS_AFTER, BIAS_AFTER_MAX};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use semaphore::{Semaphore, SemaphoreGuard};
pub use spin::{SpinGuard, SpinLock};

/// How long a blocking call without an error return keeps polling after its
/// task was cancelled at runtime shutdown, before it panics (see the module
/// doc, "Cancellation at runtime shutdown").
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// A deadline on `Instant`, or none (wait forever).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

/// The deadline has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expired;

impl Deadline {
    /// No deadline.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; a timeout too large to represent never expires.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// What to pass to `WaitQueue::wait`: the time left (`None`: forever),
    /// or `Expired`.
    pub(crate) fn remaining(self) -> Result<Option<Duration>, Expired> {
        match self.0 {
            None => Ok(None),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    Err(Expired)
                } else {
                    Ok(Some(d - now))
                }
            }
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(self) -> bool {
        self.remaining().is_err()
    }
}

/// Polls `poll` until it yields a value, for a task that was cancelled at
/// runtime shutdown inside a call with no error return (see the module doc).
/// Panics after [`CANCEL_GRACE`].
#[cold]
pub(crate) fn poll_cancelled<R>(what: &str, mut poll: impl FnMut() -> Option<R>) -> R {
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        if let Some(r) = poll() {
            return r;
        }
        if round < 6 {
            for _ in 0..(1u32 << round) {
                std::hint::spin_loop();
            }
            round += 1;
        } else {
            if start.elapsed() >= CANCEL_GRACE {
                panic!(
                    "greenos::sync::{what}: the calling task is being cancelled at runtime \
                     shutdown and still could not proceed after {CANCEL_GRACE:?}; the holder is \
                     most likely another task of the same runtime, which is unwound only after \
                     this one. Use the try_ form in destructors that may run at shutdown."
                );
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests;
