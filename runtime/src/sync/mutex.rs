//! `Mutex<T>`: a lock that parks the green thread, with parking_lot's shape.
//!
//! A `Mutex` owns its `T` and one state byte plus a [`WaitQueue`] of
//! blocked lockers. The uncontended paths are one compare-and-swap each
//! (`0 -> LOCKED` to lock, `LOCKED -> 0` to unlock); everything else is in
//! `#[cold]` slow paths.
//!
//! # State
//! | bit        | meaning                                                      |
//! |------------|--------------------------------------------------------------|
//! | `LOCKED`   | a guard exists                                               |
//! | `PARKED`   | the queue may hold waiters: unlock must take the slow path   |
//! | `HANDOFF`  | not held, but reserved for a waiter returning from the queue |
//! | `STARVING` | FIFO mode: every unlock reserves the lock for the queue head |
//!
//! | state                        | who may take it          | unlock does                 |
//! |------------------------------|--------------------------|-----------------------------|
//! | `0`                          | anyone (fast path)       | —                           |
//! | `LOCKED`                     | nobody                   | CAS to `0` (fast path)      |
//! | `LOCKED\|PARKED`             | nobody                   | clear both, `wake_one`      |
//! | `LOCKED\|PARKED\|STARVING`   | nobody                   | → `HANDOFF\|STARVING`, `wake_one` |
//! | `HANDOFF\|STARVING[\|PARKED]`| a woken waiter only      | (not held)                  |
//!
//! Invariants:
//! 1. `PARKED` and `STARVING` are only *set* while `LOCKED` is set (by a
//!    waiter's CAS that sees `LOCKED`, or by the holder); `STARVING` implies
//!    `LOCKED` or `HANDOFF`, so the fast path (`state == 0`) never barges in
//!    FIFO mode.
//! 2. A waiter links itself into the queue only if its `validate` sees
//!    `PARKED` together with `LOCKED` or `HANDOFF`, under the wait-queue
//!    lock. Whoever clears `PARKED` afterwards calls `wake_one`, and the
//!    waiter it picks becomes responsible for the others: when it takes the
//!    lock it sets `PARKED` again if the queue is not empty, when it parks
//!    again it sets `PARKED` first, and when it leaves (timeout,
//!    cancellation) it either takes the lock or sets `PARKED`. This is the
//!    subtle rule of parking_lot's `RawMutex` ("parked threads are never
//!    lost"), rebuilt without parking_lot's unpark callback (our
//!    `WaitQueue::wake_one` cannot say whether more waiters remain, so the
//!    woken waiter asks `WaitQueue::is_empty` instead; it over-counts
//!    leaving waiters, which only costs a spare `wake_one`).
//! 3. `HANDOFF` is only set by an unlock in FIFO mode, which then calls
//!    `wake_one`; if that found nobody, the unlocker withdraws the
//!    reservation itself (clearing `HANDOFF`, `STARVING` and `PARKED`, and
//!    waking a waiter that set `PARKED` meanwhile). Only a caller that has
//!    just returned from a wait on this queue may claim a reservation.
//!
//! # Fairness: barging, then FIFO after a waiter was passed over
//! Normally a released lock is free for anyone: the woken waiter competes
//! with tasks that arrive meanwhile (barging). That keeps throughput up —
//! a task on the same CPU can re-lock many times in its slice instead of
//! handing the lock to a task that still has to be switched in — but a
//! waiter could lose every race. So a woken waiter that finds the lock taken
//! *and has waited at least [`STARVE_AFTER_NS`]* sets `STARVING`; from then
//! on every unlock reserves the lock (`HANDOFF`) for the head of the queue,
//! arrivals queue up behind, and the mode ends only when a waiter that takes
//! the lock sees the queue empty. As the passed-over waiter is in the queue
//! until it is served, it is served before FIFO mode ends: no waiter is
//! starved forever. (Go's `sync.Mutex` has the same starvation mode; it
//! leaves it earlier because it can requeue the starving waiter at the
//! front, which our FIFO `WaitQueue` cannot. A reservation can occasionally
//! be taken by another just-woken waiter; that only reorders waiters.)
//!
//! # Spinning
//! Before parking, a locker spins a few rounds (`spin_loop`, at most
//! 14 pauses) while nobody is parked, in case the holder runs on another
//! CPU. It does not `yield_now`: a green task that yields gives its CPU to
//! the scheduler's choice, and a long spin would keep a holder on the same
//! CPU from running at all.
//!
//! # Guards across yields
//! A task may hold a [`MutexGuard`] across any greenos call, including one
//! after which it resumes on another worker thread: unlocking is an atomic
//! operation on the mutex, not an OS call tied to the locking thread (unlike
//! `std::sync::MutexGuard`). So the guard is `Send` when `T: Send` (it is a
//! `&mut T` with an unlock attached) and `Sync` when `T: Sync`.
//!
//! # Not a preemption point
//! The uncontended `lock` never yields (as a futex fast path never enters
//! the kernel); a contended one parks. Preempting a task that just took a
//! lock would only make others wait on it.

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::clock;
use crate::wait::{WaitQueue, WaitResult};

use super::{poll_cancelled, Deadline};

/// A guard exists.
const LOCKED: u8 = 1;
/// The queue may hold waiters; unlock must wake one.
const PARKED: u8 = 2;
/// Not held, but reserved for a waiter returning from the queue.
const HANDOFF: u8 = 4;
/// FIFO mode: unlocks reserve the lock for the queue (a waiter starved).
const STARVING: u8 = 8;

/// A woken waiter that finds the lock taken after waiting at least this
/// long switches the mutex to FIFO mode (Go uses the same 1 ms).
pub const STARVE_AFTER_NS: u64 = 1_000_000;

/// Spin rounds before parking (round `k` spins `2^(k+1)` pauses).
const SPIN_ROUNDS: u32 = 3;

/// How a slow-path lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum LockOutcome {
    Acquired,
    TimedOut,
    Cancelled,
}

/// The lock without the data: the state byte and the waiters.
pub(crate) struct RawMutex {
    state: AtomicU8,
    queue: WaitQueue,
}

impl RawMutex {
    const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU8::new(0),
            queue: WaitQueue::new(),
        }
    }

    /// Locks, parking the caller while it is held.
    #[inline]
    pub(crate) fn lock(&self) {
        if self
            .state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        match self.lock_slow(Deadline::NEVER) {
            LockOutcome::Acquired => {}
            // Cannot time out without a deadline.
            LockOutcome::TimedOut | LockOutcome::Cancelled => {
                poll_cancelled("Mutex::lock", || self.try_claim().then_some(()))
            }
        }
    }

    /// Locks unless it is held (or reserved, or in FIFO mode with waiters
    /// queued): never waits.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (LOCKED | HANDOFF | STARVING) != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                s | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
    }

    /// Locks, waiting at most `timeout`.
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> bool {
        if self
            .state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        self.lock_slow(Deadline::after(timeout)) == LockOutcome::Acquired
    }

    /// The raw state byte (tests).
    #[cfg(test)]
    pub(crate) fn state_bits(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Whether the mutex is held right now.
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// Takes the lock if it is not held, claiming a reservation too: for
    /// callers that just returned from a wait on the queue (they may be the
    /// waiter it was reserved for).
    fn try_claim(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED != 0 {
                return false;
            }
            let new = (s | LOCKED) & !HANDOFF;
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.after_slow_acquire(new);
                    return true;
                }
                Err(x) => s = x,
            }
        }
    }

    /// The contended lock: spin briefly, then park until woken, taking the
    /// lock when allowed (see the module doc's invariants).
    #[cold]
    fn lock_slow(&self, deadline: Deadline) -> LockOutcome {
        // Whether we just returned from a wait (and so may claim HANDOFF,
        // and must pass a wakeup on if we do not use it).
        let mut woken = false;
        let mut cancelled = false;
        let mut spins = 0;
        // When we first parked (runtime clock), for the starvation rule.
        let mut parked_since: Option<u64> = None;
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            // 1. Take the lock if we may: a free lock outside FIFO mode, or
            //    (after a wait) any lock that is not held.
            let may_take = if woken {
                s & LOCKED == 0
            } else {
                s & (LOCKED | HANDOFF | STARVING) == 0
            };
            if may_take {
                let new = (s | LOCKED) & !HANDOFF;
                match self
                    .state
                    .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {
                        self.after_slow_acquire(new);
                        return LockOutcome::Acquired;
                    }
                    Err(x) => {
                        s = x;
                        continue;
                    }
                }
            }

            // 2. Spin a little while nobody is parked.
            if !woken && s & PARKED == 0 && spins < SPIN_ROUNDS {
                for _ in 0..(2u32 << spins) {
                    std::hint::spin_loop();
                }
                spins += 1;
                s = self.state.load(Ordering::Relaxed);
                continue;
            }

            // 3. Announce a waiter (invariant 2); a woken waiter that was
            //    passed over after a long wait turns on FIFO mode. Only
            //    while the lock is held or reserved (invariant 1).
            let mut want = s | PARKED;
            if woken
                && s & LOCKED != 0
                && parked_since
                    .is_some_and(|t| clock::now_ns().saturating_sub(t) >= STARVE_AFTER_NS)
            {
                want |= STARVING;
            }
            if want != s {
                if s & (LOCKED | HANDOFF) == 0 {
                    // Released meanwhile: go back to step 1.
                    s = self.state.load(Ordering::Relaxed);
                    continue;
                }
                if let Err(x) =
                    self.state
                        .compare_exchange_weak(s, want, Ordering::Relaxed, Ordering::Relaxed)
                {
                    s = x;
                    continue;
                }
            }
            // Any wakeup we held is now passed on: PARKED is set, so the
            // holder's unlock (or the reservation's withdrawal) wakes a
            // waiter.
            woken = false;

            // 4. Leave if we must (we did not take the lock above).
            if cancelled {
                return LockOutcome::Cancelled;
            }
            let left = match deadline.remaining() {
                Ok(left) => left,
                Err(_) => return LockOutcome::TimedOut,
            };

            // 5. Park until an unlock picks us.
            if parked_since.is_none() {
                parked_since = Some(clock::now_ns());
            }
            let r = self.queue.wait_killable(
                || {
                    let s = self.state.load(Ordering::Relaxed);
                    s & PARKED != 0 && s & (LOCKED | HANDOFF) != 0
                },
                left,
            );
            match r {
                WaitResult::Notified => {
                    woken = true;
                    spins = 0;
                }
                WaitResult::Invalid => {}
                // Possibly picked as we left (see the `sync` module doc):
                // one more round as a woken waiter, then step 4 leaves.
                WaitResult::TimedOut => woken = true,
                WaitResult::Cancelled => {
                    woken = true;
                    cancelled = true;
                }
            }
            s = self.state.load(Ordering::Relaxed);
        }
    }

    /// Invariant 2 for a slow-path acquirer: re-arm `PARKED` if others
    /// still wait; end FIFO mode if nobody does.
    #[inline]
    fn after_slow_acquire(&self, new: u8) {
        let queued = !self.queue.is_empty();
        if queued {
            if new & PARKED == 0 {
                self.state.fetch_or(PARKED, Ordering::Relaxed);
            }
        } else if new & STARVING != 0 {
            // A waiter that turns STARVING on between our look at the queue
            // and this store loses it once; it sets it again when passed
            // over again.
            self.state.fetch_and(!STARVING, Ordering::Relaxed);
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The caller holds the lock (it owns the guard being dropped, or is the
    /// condvar releasing the lock its caller's guard holds).
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert!(s & LOCKED != 0, "unlock of an unlocked greenos Mutex");
            if s & STARVING != 0 {
                // FIFO mode: reserve for the queue head (invariant 3).
                let new = (s & !(LOCKED | PARKED)) | HANDOFF;
                match self
                    .state
                    .compare_exchange_weak(s, new, Ordering::Release, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if !self.queue.wake_one() {
                            self.withdraw_handoff();
                        }
                        return;
                    }
                    Err(x) => s = x,
                }
            } else {
                let new = s & !(LOCKED | PARKED);
                match self
                    .state
                    .compare_exchange_weak(s, new, Ordering::Release, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if s & PARKED != 0 {
                            self.queue.wake_one();
                        }
                        return;
                    }
                    Err(x) => s = x,
                }
            }
        }
    }

    /// A FIFO-mode unlock found the queue empty: release the reservation
    /// unless a returning waiter already claimed it (invariant 3).
    #[cold]
    fn withdraw_handoff(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & HANDOFF == 0 {
                return;
            }
            let new = s & !(HANDOFF | STARVING | PARKED);
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if s & PARKED != 0 {
                        self.queue.wake_one();
                    }
                    return;
                }
                Err(x) => s = x,
            }
        }
    }
}

impl fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMutex")
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("queue", &self.queue)
            .finish()
    }
}

/// A mutual-exclusion lock for green threads (and OS threads), like
/// `parking_lot::Mutex`: `lock` parks the calling task while another holds
/// it, and returns the guard directly (no poisoning: a panic while holding
/// the lock just unlocks it).
///
/// Fairness: a released lock is open to anyone (barging, for throughput),
/// but a waiter that is passed over after waiting 1 ms switches the mutex
/// to FIFO hand-off until the queue drains, so no waiter starves. The
/// protocol and its state table are in the module source
/// (`runtime/src/sync/mutex.rs`).
///
/// ```
/// use greenos_runtime::sync::Mutex;
/// let m = Mutex::new(1);
/// *m.lock() += 1;
/// assert_eq!(m.into_inner(), 2);
/// ```
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex owns its `T`; moving it moves the `T`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: `&Mutex` only hands out `&mut T` through a guard, and the lock
// makes guards exclusive; so sharing the mutex moves access to `T` between
// threads, which needs `T: Send` (not `Sync`), as for std's `Mutex`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex and returns the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, parking the calling task (or blocking the calling OS
    /// thread) while another holds it. Locking a mutex the caller already
    /// holds deadlocks.
    ///
    /// At runtime shutdown, a cancelled task that calls this on a held mutex
    /// polls for [`CANCEL_GRACE`](super::CANCEL_GRACE) and then panics (see
    /// the [`sync`](super) module doc).
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { mutex: self }
    }

    /// Locks the mutex if that needs no waiting; `None` otherwise.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.raw.try_lock() {
            Some(MutexGuard { mutex: self })
        } else {
            None
        }
    }

    /// Locks the mutex, waiting at most `timeout`; `None` if it stayed held
    /// that long (or the task is being cancelled). The lock may be granted
    /// slightly after the deadline if it became free just as the wait ended.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<MutexGuard<'_, T>> {
        if self.raw.lock_timeout(timeout) {
            Some(MutexGuard { mutex: self })
        } else {
            None
        }
    }

    /// A mutable reference to the value; no locking needed, the borrow
    /// proves exclusivity.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Whether the mutex is locked right now (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// Access to a [`Mutex`]'s value; unlocks when dropped. May be held across
/// yields and moved between tasks and threads (see the module doc).
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
}

// SAFETY: a guard is exclusive access to `T` (like `&mut T`) plus the duty
// to unlock, which any thread may do (an atomic on the mutex). So moving it
// to another thread needs only `T: Send`.
unsafe impl<T: ?Sized + Send> Send for MutexGuard<'_, T> {}
// SAFETY: `&MutexGuard` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard locks.
    pub(crate) fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by its owner, so no
        // `&mut T` exists elsewhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its lock is held.
        unsafe { self.mutex.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
