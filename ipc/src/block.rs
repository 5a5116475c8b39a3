//! How IPC calls block: one helper over `greenos_runtime::wait::WaitQueue`
//! that turns its results into errnos.
//!
//! Every blocking call in this crate has the same shape: lock the object,
//! try the operation, and if it cannot proceed, drop the lock and
//! [`wait_until`] its wait queue with a `ready` check that re-reads the
//! object's state. `ready` runs under the queue lock (the queue's `validate`),
//! so a waker that changes the state and then calls `wake_*` either sees the
//! waiter linked or the waiter's `ready` sees the new state: no lost wakeup.
//! Wakers therefore must drop the object's lock before they call `wake_*`
//! (the waiter takes queue lock → object lock; a waker holding the object
//! lock while waking would invert that order).
//!
//! Before that first wait a call gives a peer on its CPU one chance to act
//! (the runtime's `wait::before_park`). That yield happens in the caller's
//! own frame: the public call is `#[inline(always)]` around
//! [`run_passes`], which calls the out-of-line body (a *pass*) and yields
//! when the pass returns [`Pass::YieldFirst`], so the switch sits at the
//! depth of the caller's loop and the CPU predicts every return (the
//! runtime's `wait` module, "Switch depth").

use std::time::{Duration, Instant};

use greenos_runtime::wait::{WaitQueue, WaitResult};

use crate::errno::Errno;

/// A point in time after which a blocking call gives up, or none.
pub(crate) type Deadline = Option<Instant>;

/// The deadline `timeout` from now.
pub(crate) fn deadline(timeout: Option<Duration>) -> Deadline {
    timeout.map(|d| Instant::now().checked_add(d).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Sleeps on `wq` unless `ready()` holds (checked under the queue lock).
/// `Ok` means "look again" (woken, or ready already); `ETIMEDOUT` once the
/// deadline passed; `EINTR` when the task is interrupted
/// (`WaitResult::Cancelled`: runtime shutdown now, signals later).
pub(crate) fn wait_until(
    wq: &WaitQueue,
    ready: impl FnOnce() -> bool,
    deadline: Deadline,
) -> Result<(), Errno> {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Errno::ETIMEDOUT);
            }
            Some(d - now)
        }
    };
    match wq.wait(|| !ready(), timeout) {
        WaitResult::Notified | WaitResult::Invalid => Ok(()),
        WaitResult::TimedOut => Err(Errno::ETIMEDOUT),
        WaitResult::Cancelled => Err(Errno::EINTR),
    }
}

/// What one pass of a blocking call ends with.
pub(crate) enum Pass<T> {
    /// The call's result.
    Done(Result<T, Errno>),
    /// It would block for the first time and other tasks are runnable on
    /// this CPU: the caller yields once, then runs the pass again with
    /// `tried` set (the pass then waits for real).
    YieldFirst,
}

impl<T> From<Result<Pass<T>, Errno>> for Pass<T> {
    #[inline]
    fn from(r: Result<Pass<T>, Errno>) -> Pass<T> {
        r.unwrap_or_else(|e| Pass::Done(Err(e)))
    }
}

/// Runs `pass(tried)` until it is done, yielding in this frame (inlined
/// into the public call, and so into its caller) each time it asks to.
#[inline(always)]
pub(crate) fn run_passes<T>(mut pass: impl FnMut(bool) -> Pass<T>) -> Result<T, Errno> {
    let mut tried = false;
    loop {
        match pass(tried) {
            Pass::Done(r) => return r,
            Pass::YieldFirst => {
                tried = true;
                greenos_runtime::wait::yield_before_park();
            }
        }
    }
}
