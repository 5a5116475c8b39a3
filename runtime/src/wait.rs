//! The wait queue: how anything in greenos blocks.
//!
//! A `WaitQueue` is a FIFO of waiters, each a node on the waiter's own stack
//! (like the kernel's on-stack `wait_queue_entry`), linked under a small
//! lock. A waiter is either a green task (it parks: its CPU runs other tasks)
//! or a plain OS thread (it parks the thread), so the same primitives work
//! from inside and outside the runtime.
//!
//! # Protocol
//! 1. `wait(validate, timeout)` takes the queue lock, runs `validate`; if it
//!    returns false the caller does not sleep (the condition it waits for
//!    already holds). Otherwise the node is linked and the lock dropped. This
//!    is parking_lot's `validate` and Go's `gopark` unlock function: the
//!    check and the enqueue are atomic with respect to `wake_*`.
//! 2. The waiter parks until its node says `NOTIFIED`, its timeout fires, or
//!    it is cancelled. Parking may return spuriously; the loop re-checks.
//! 3. `wake_one` / `wake_all` take the lock, unlink nodes, take each node's
//!    waker out, then store `NOTIFIED` (after which the node's owner may
//!    return and its stack frame vanish: the waker never touches the node
//!    again), and wake.
//! 4. A timed-out or cancelled waiter takes the lock: if its node was
//!    notified meanwhile it reports `Notified` (the wakeup is not lost);
//!    otherwise it unlinks itself.
//!
//! A node is unlinked on every exit path, including unwinding (a task
//! cancelled at shutdown unwinds through its wait), by a drop guard.
//!
//! # Fast path
//! Wakers skip the lock when no one waits. A waiter increments the waiter
//! count *before* `validate` reads the condition, and wakers issue a SeqCst
//! fence between publishing the condition and reading the count; so either
//! the waker sees the waiter, or the waiter's `validate` sees the condition.
//!
//! # Switch depth
//! A switch returns through the return-stack predictor of the CPU: the
//! worker enters a task with a `call` and the task leaves with the `ret`
//! that matches it (corosensei's `switch_and_link` / `switch_yield`), so a
//! task whose switch sits in the very frame that loops (every function
//! between inlined) runs its loop with every return predicted. With
//! out-of-line frames between the loop and the switch, the returns out of
//! them after a switch pop the other side's entries, and the predictor
//! misses several returns per switch (measured: `yield_now` in a loop went
//! from 55 to 33 ns on the AMD guest when it was inlined). So the yield a
//! blocking call makes before it parks ([`before_park`]) is split:
//! [`yields_before_park`] asks whether it would yield, the call returns to
//! its `#[inline]` outer function, and that yields with
//! [`yield_before_park`] in the caller's own frame.
//!
//! The `park_until` family is inlined the same way: an untimed park runs
//! its checks in an out-of-line prologue (`park_prologue`) and switches in
//! the caller's frame; anything unusual (a timeout, a pending signal, a
//! spurious return) goes to the out-of-line general path. A call's direct
//! switch then costs two stack switches: the caller resumes the server
//! nested, and the server's hand-back returns to it
//! (`executor::park_and_switch_to`). Measured on the AMD guest, a bare
//! call/hand-back round trip went from 86 to 49 ns with these changes.
//!
//! The switch itself (corosensei's `Yielder::suspend`, generic but not
//! `#[inline]`) is inlined by LLVM's cost model, which gives a call site it
//! estimates cold a quarter of the usual budget (threshold 45 against the
//! switch's cost of 70, `-C remark=inline`). Every untaken branch on the
//! way to the switch halves the estimate, so the rare outcomes on that way
//! (a pending signal, a cancelled or notified park, tracing, a timeout,
//! an error) are marked with [`cold_path`]: without the marks
//! an endpoint server's switch stayed a call, two returns per round trip
//! were mispredicted, and the endpoint's null call took 57 ns instead of
//! 48.6.
//!
//! # Parking by name
//! An object with exactly one waiter that its wakers can name (an L4
//! endpoint's port: seL4 keeps a blocked thread's state in its TCB, not in
//! a queue) needs no queue: [`park_until`] parks the calling task until its
//! condition holds, and a waker publishes the condition, then calls
//! [`Task::unpark`](crate::Task::unpark). The task's state word carries an
//! unpark that arrives before the park (its NOTIFIED bit, as
//! `std::thread::park` keeps a token), so none is lost; the condition is
//! re-checked after every return. [`unpark_and_park_until`] hands the CPU
//! straight to the task it unparks when that task is parked on this CPU
//! (the direct process switch). Timeouts, signals and cancellation behave
//! as in an interruptible [`WaitQueue::wait`].
//!
//! A waker that must finish publishing after it has taken its partner
//! (IPC delivering into a receiver it just dequeued) claims it first:
//! [`Task::try_claim`](crate::Task::try_claim) moves a parked task to
//! runnable without queueing it, and the [`Claimed`] task runs only when
//! the claim is spent, by [`switch_to_and_park_until`] or a wakeup. And a
//! task running on a context lent by a caller ([`lent_by`]) knows that
//! caller cannot run, time out or be killed out of its wait until it
//! switches out.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr;
use std::sync::atomic::{fence, AtomicU8, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::sync::{SpinGuard, SpinLock};

use crate::executor::{self, task::TaskRef, SwitchTarget};

/// Why `wait` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum WaitResult {
    /// A `wake_*` call chose this waiter.
    Notified,
    /// `validate` returned false: the caller did not sleep.
    Invalid,
    /// The timeout passed first.
    TimedOut,
    /// The wait was interrupted: the task is being cancelled (runtime
    /// shutdown), was killed by a signal, or — in an interruptible
    /// [`WaitQueue::wait`] — ran a signal handler without `SA_RESTART`.
    /// IPC calls report it as EINTR.
    Cancelled,
}

const WAITING: u8 = 0;
const NOTIFIED: u8 = 1;

enum Waker {
    Task(TaskRef),
    Thread(Thread),
}

impl Waker {
    fn wake(self) {
        match self {
            Waker::Task(t) => executor::wake_task(t),
            Waker::Thread(t) => t.unpark(),
        }
    }
}

struct Node {
    prev: *mut Node,
    next: *mut Node,
    linked: bool,
    status: AtomicU8,
    /// Taken by the waker under the queue lock.
    waker: Option<Waker>,
}

struct List {
    head: *mut Node,
    tail: *mut Node,
}

impl List {
    /// # Safety
    /// `n` is a valid, unlinked node that stays put until unlinked.
    unsafe fn push_back(&mut self, n: *mut Node) {
        // SAFETY: caller contract; list nodes are valid while linked.
        unsafe {
            (*n).prev = self.tail;
            (*n).next = ptr::null_mut();
            (*n).linked = true;
            if self.tail.is_null() {
                self.head = n;
            } else {
                (*self.tail).next = n;
            }
            self.tail = n;
        }
    }

    /// # Safety
    /// `n` is linked in this list.
    unsafe fn unlink(&mut self, n: *mut Node) {
        // SAFETY: caller contract; neighbours are linked, hence valid.
        unsafe {
            let (p, nx) = ((*n).prev, (*n).next);
            if p.is_null() {
                self.head = nx;
            } else {
                (*p).next = nx;
            }
            if nx.is_null() {
                self.tail = p;
            } else {
                (*nx).prev = p;
            }
            (*n).linked = false;
        }
    }

    fn pop_front(&mut self) -> Option<*mut Node> {
        let n = self.head;
        if n.is_null() {
            return None;
        }
        // SAFETY: head is linked.
        unsafe { self.unlink(n) };
        Some(n)
    }
}

/// A queue of blocked tasks and threads (see the module doc).
pub struct WaitQueue {
    list: SpinLock<List>,
    /// Number of linked waiters: the wakers' fast path. Written only under
    /// `list`'s lock (load + store, no read-modify-write), read without it.
    waiters: AtomicUsize,
    /// What the queue belongs to, for block events in traces.
    label: (crate::trace::BlockOn, u64),
}

// SAFETY: the raw node pointers are only dereferenced under `list`'s lock,
// and a node stays valid while linked (its owner unlinks it, under the lock,
// before its frame can go away; see `Unlinker`).
unsafe impl Send for WaitQueue {}
// SAFETY: as for Send.
unsafe impl Sync for WaitQueue {}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new()
    }
}

impl fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueue")
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .finish()
    }
}

/// Unlinks the node if still linked when the wait ends (any path).
struct Unlinker<'a> {
    q: &'a WaitQueue,
    node: *mut Node,
}

impl Drop for Unlinker<'_> {
    fn drop(&mut self) {
        // SAFETY: the node is alive (see below). A NOTIFIED node was unlinked
        // by its waker before the Release store we acquire here, so the
        // common path needs no lock.
        if unsafe { (*self.node).status.load(Ordering::Acquire) } == NOTIFIED {
            // The waker unlinked the node and counted it out.
            return;
        }
        let mut l = self.q.list.lock();
        // SAFETY: the node lives in our caller's frame, which outlives this
        // guard; `linked` is only changed under the lock we hold.
        unsafe {
            if (*self.node).linked {
                l.unlink(self.node);
                (*self.node).waker = None;
                self.q.count_out();
            }
        }
    }
}

/// A deadline on the runtime clock, or none.
fn deadline_ns(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|d| executor::now().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> WaitQueue {
        WaitQueue {
            list: SpinLock::new(List {
                head: ptr::null_mut(),
                tail: ptr::null_mut(),
            }),
            waiters: AtomicUsize::new(0),
            label: (crate::trace::BlockOn::WaitQueue, 0),
        }
    }

    /// An empty queue labelled as belonging to an object of kind `kind`
    /// with id `id` (an IPC id, or 0 for "use the queue's address"): block
    /// events in traces name it.
    pub const fn with_label(kind: crate::trace::BlockOn, id: u64) -> WaitQueue {
        let mut q = WaitQueue::new();
        q.label = (kind, id);
        q
    }

    /// One more waiter (caller holds the list lock).
    #[inline]
    fn count_in(&self) {
        let w = self.waiters.load(Ordering::Relaxed);
        self.waiters.store(w + 1, Ordering::Relaxed);
    }

    /// One waiter fewer (caller holds the list lock).
    #[inline]
    fn count_out(&self) {
        let w = self.waiters.load(Ordering::Relaxed);
        self.waiters.store(w - 1, Ordering::Relaxed);
    }

    /// Number of waiters right now.
    #[inline]
    pub fn len(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// True if nobody waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks the caller (a green task, or an OS thread outside the runtime)
    /// until a `wake_*` call picks it, `timeout` passes, or the task is
    /// interrupted. `validate` runs under the queue lock before sleeping; if it
    /// returns false the call returns `Invalid` at once. `validate` must not
    /// block or call into this queue.
    ///
    /// The sleep is interruptible (the kernel's `TASK_INTERRUPTIBLE`): a
    /// signal with a handler wakes the task, the handler runs, and the wait
    /// returns `Cancelled` (EINTR) — or goes on, if the action has
    /// `SA_RESTART`. A fatal signal returns `Cancelled`, then unwinds the
    /// task (see `crate::signal`).
    pub fn wait<F: FnOnce() -> bool>(&self, validate: F, timeout: Option<Duration>) -> WaitResult {
        self.wait_inner(validate, timeout, true, true, None).1
    }

    /// Wakes the longest waiter of `wake` and waits on this queue, as one
    /// step — L4's `Call` and `ReplyRecv`: the caller is queued here (if
    /// `validate`, run under this queue's lock, says so) *before* the wakee
    /// can run, so its answer cannot be missed.
    ///
    /// **Direct process switch.** If the wakee is a task of this runtime
    /// that last ran on the caller's CPU and may run there, the caller hands
    /// the CPU straight to it: the wakee becomes the running task without
    /// entering the run queue and runs on the rest of the caller's turn
    /// (the seL4 fastpath; see `executor::park_and_switch_to`). Otherwise it
    /// is woken where it is, as `wake_one` does.
    ///
    /// Returns whether a waiter of `wake` was woken, and how the wait ended
    /// (as [`wait`](Self::wait); interruptible). With `validate` false the
    /// wakee is still woken and the result is `Invalid`.
    pub fn wake_one_and_wait<F: FnOnce() -> bool>(
        &self,
        wake: &WaitQueue,
        validate: F,
        timeout: Option<Duration>,
    ) -> (bool, WaitResult) {
        self.wait_inner(validate, timeout, true, true, Some(wake))
    }

    /// As [`wait`](Self::wait), but handled signals do not interrupt it
    /// (the kernel's `TASK_KILLABLE`): they stay pending until the task's
    /// next scheduling point. Only cancellation and fatal signals end it
    /// early. For waits with no error to report (`Mutex::lock`, `join`).
    pub fn wait_killable<F: FnOnce() -> bool>(
        &self,
        validate: F,
        timeout: Option<Duration>,
    ) -> WaitResult {
        self.wait_inner(validate, timeout, false, true, None).1
    }

    /// As [`wait_killable`](Self::wait_killable), but a kill only ends the
    /// wait (`Cancelled`) and leaves the unwinding to the caller, which has
    /// state to restore first (a condition variable re-locks its mutex).
    pub(crate) fn wait_killable_no_unwind<F: FnOnce() -> bool>(
        &self,
        validate: F,
        timeout: Option<Duration>,
    ) -> WaitResult {
        self.wait_inner(validate, timeout, false, false, None).1
    }

    fn wait_inner<F: FnOnce() -> bool>(
        &self,
        validate: F,
        timeout: Option<Duration>,
        interruptible: bool,
        unwind_on_kill: bool,
        handoff: Option<&WaitQueue>,
    ) -> (bool, WaitResult) {
        let wake_plain = |q: Option<&WaitQueue>| q.is_some_and(|q| q.wake_one());
        let task = executor::current_task_ptr();
        if !task.is_null() {
            // SAFETY: CURRENT is the running task (see current_task).
            let t = unsafe { &*task };
            // A blocking call is a delivery point: handlers run, a killed
            // task unwinds here, before anything is queued.
            if unwind_on_kill {
                // A handler that runs on entry to an interruptible wait
                // interrupts it as one during the sleep would (Linux:
                // signal_pending() before schedule() gives EINTR).
                if interruptible
                    && crate::signal::deliverable_pending(t)
                    && crate::signal::deliver(t) == crate::signal::Delivered::Interrupt
                {
                    crate::signal::unwind_if_killed(t);
                    return (wake_plain(handoff), WaitResult::Cancelled);
                }
                crate::signal::checkpoint(t);
            }
            if t.cancelled.load(Ordering::Relaxed) || crate::signal::must_die(t) {
                return (wake_plain(handoff), WaitResult::Cancelled);
            }
        }
        let waker = if task.is_null() {
            Waker::Thread(std::thread::current())
        } else {
            Waker::Task(executor::current_task_ref("wait"))
        };
        let node = UnsafeCell::new(Node {
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
            linked: false,
            status: AtomicU8::new(WAITING),
            waker: Some(waker),
        });
        let np = node.get();
        {
            let mut l = self.list.lock();
            self.count_in();
            // Dekker with the wakers' fast path: count in, then read the
            // condition; wakers publish the condition, then read the count.
            fence(Ordering::SeqCst);
            if !validate() {
                self.count_out();
                drop(l);
                return (wake_plain(handoff), WaitResult::Invalid);
            }
            // SAFETY: `node` is a fresh local that is not moved until the
            // Unlinker below (declared after it, so dropped before it) has
            // unlinked it.
            unsafe { l.push_back(np) };
        }
        let _unlink = Unlinker { q: self, node: np };
        let notified = || {
            // SAFETY: the node is alive in this frame; `status` is atomic and
            // the waker stores it last.
            unsafe { (*np).status.load(Ordering::Acquire) == NOTIFIED }
        };
        // Queued: now wake the other side. A task that sleeps on this CPU
        // gets the CPU directly (it runs before anything queued here).
        let mut woke = false;
        let mut direct = None;
        if let Some(q) = handoff {
            // The fence above (after counting in, before `validate`) comes
            // after whatever the caller published for `q`'s waiters and
            // before this read of `q`'s count: it is the wakers' fence of
            // `q`'s fast path too, so `take_one` need not issue another.
            if let Some(w) = q.take_one_fenced() {
                woke = true;
                match w {
                    Some(Waker::Task(t)) if !task.is_null() && executor::can_switch_to(&t) => {
                        direct = Some(t);
                    }
                    Some(w) => w.wake(),
                    None => {}
                }
            }
        }
        if task.is_null() {
            (woke, self.wait_thread(np, notified, timeout))
        } else {
            // SAFETY: see above; CURRENT is alive while it runs.
            let t = unsafe { &*task };
            let r = self.wait_task(np, t, notified, timeout, interruptible, direct);
            if r == WaitResult::Cancelled && unwind_on_kill {
                // Unlinked, timer disarmed, nothing handed to us: a killed
                // task may unwind from here. `_unlink` runs as it does.
                crate::signal::unwind_if_killed(t);
            }
            (woke, r)
        }
    }

    fn wait_task(
        &self,
        node: *mut Node,
        task: &executor::task::Task,
        notified: impl Fn() -> bool,
        timeout: Option<Duration>,
        interruptible: bool,
        direct: Option<TaskRef>,
    ) -> WaitResult {
        let id = match self.label.1 {
            0 => self as *const WaitQueue as u64,
            id => id,
        };
        // Handlers run with the node still queued, so a wakeup that comes
        // meanwhile is kept (and wins in `finish_early`).
        park_task_until(
            task,
            &notified,
            timeout,
            interruptible,
            (self.label.0, id),
            direct.map(SwitchTarget::owned),
            |why| self.finish_early(node, &notified, why),
        )
    }

    fn wait_thread(
        &self,
        node: *mut Node,
        notified: impl Fn() -> bool,
        timeout: Option<Duration>,
    ) -> WaitResult {
        let deadline = timeout.map(|d| Instant::now() + d);
        loop {
            if notified() {
                return WaitResult::Notified;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return self.finish_early(node, notified, WaitResult::TimedOut);
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// A waiter leaving without a notification: decide under the lock
    /// whether a notification raced in (then it wins: nothing is lost).
    ///
    /// The node is unlinked under the same lock hold that decides: a
    /// `wake_one` that comes after this cannot pick the leaving waiter (and
    /// so cannot be lost on it), and one that came before set NOTIFIED.
    fn finish_early(
        &self,
        node: *mut Node,
        notified: impl Fn() -> bool,
        why: WaitResult,
    ) -> WaitResult {
        let mut l = self.list.lock();
        if notified() {
            return WaitResult::Notified;
        }
        // SAFETY: the node lives in the caller's frame; `linked` and the
        // list are only touched under the lock we hold.
        unsafe {
            if (*node).linked {
                l.unlink(node);
                (*node).waker = None;
                self.count_out();
            }
        }
        why
    }

    /// Wakes the longest waiter. Returns whether there was one.
    pub fn wake_one(&self) -> bool {
        self.wake_one_inner(false)
    }

    /// Like [`wake_one`](Self::wake_one), for a waker that is about to block
    /// itself (the kernel's `WF_SYNC`, as pipes and channels use it): when
    /// the waker's CPU runs nothing else, the wakee is placed on that CPU
    /// rather than woken on its old one (`wake_affine_idle`).
    pub fn wake_one_sync(&self) -> bool {
        self.wake_one_inner(true)
    }

    /// Picks the longest waiter and marks it notified, without waking it:
    /// `None` if there was no waiter, else its waker (which the caller must
    /// wake, or hand the CPU to).
    fn take_one(&self) -> Option<Option<Waker>> {
        fence(Ordering::SeqCst);
        self.take_one_fenced()
    }

    /// [`take_one`](Self::take_one) for a caller that has issued a SeqCst
    /// fence since it published the condition its waiters wait for.
    fn take_one_fenced(&self) -> Option<Option<Waker>> {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.pop_notified(&mut self.list.lock())
    }

    /// Unlinks the longest waiter from `l` (this queue's list, locked),
    /// counts it out and marks it notified: `None` if there was none, else
    /// its waker, for the caller to wake.
    fn pop_notified(&self, l: &mut List) -> Option<Option<Waker>> {
        let n = l.pop_front()?;
        self.count_out();
        // SAFETY: a node popped under the lock is valid until we store
        // NOTIFIED (its owner cannot leave before seeing NOTIFIED or taking
        // this lock).
        unsafe {
            let w = (*n).waker.take();
            (*n).status.store(NOTIFIED, Ordering::Release);
            Some(w)
        }
    }

    fn wake_one_inner(&self, sync: bool) -> bool {
        let Some(waker) = self.take_one() else {
            return false;
        };
        wake_waker(waker, sync);
        true
    }

    /// Wakes every waiter. Returns how many.
    pub fn wake_all(&self) -> usize {
        self.wake_n(usize::MAX)
    }

    /// Wakes every waiter, like [`wake_all`](Self::wake_all); when exactly
    /// one waits (counted under the queue lock), wakes it as
    /// [`wake_one_sync`](Self::wake_one_sync) does. For objects whose
    /// waiters wait for different conditions (message types, semaphore
    /// values), where waking only the longest waiter could wake the wrong
    /// one: deciding from [`len`](Self::len) before taking the lock could
    /// miss a waiter linked meanwhile and lose its wakeup.
    pub fn wake_all_sync(&self) -> usize {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        let mut l = self.list.lock();
        // The count changes only under the lock we hold.
        if self.waiters.load(Ordering::Relaxed) != 1 {
            return self.wake_locked(l, usize::MAX);
        }
        let waker = self.pop_notified(&mut l);
        drop(l);
        match waker {
            Some(w) => {
                wake_waker(w, true);
                1
            }
            None => 0,
        }
    }

    /// Wakes up to `n` waiters, longest first. Returns how many.
    pub fn wake_n(&self, n: usize) -> usize {
        fence(Ordering::SeqCst);
        if n == 0 || self.waiters.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        self.wake_locked(self.list.lock(), n)
    }

    /// The loop of [`wake_n`](Self::wake_n), under the list lock `l`.
    fn wake_locked(&self, mut l: SpinGuard<'_, List>, n: usize) -> usize {
        let mut woken = 0;
        while woken < n {
            let Some(w) = self.pop_notified(&mut l) else {
                break;
            };
            // Waking under the lock is fine: waking never takes a
            // wait-queue lock.
            wake_waker(w, false);
            woken += 1;
        }
        woken
    }
}

/// Wakes a popped waiter: with `sync`, a task as a sync wakeup
/// (`executor::wake_task_sync`); a thread, or without `sync`, plainly.
fn wake_waker(waker: Option<Waker>, sync: bool) {
    match waker {
        Some(Waker::Task(t)) if sync => executor::wake_task_sync(t),
        Some(w) => w.wake(),
        None => {}
    }
}

/// Gives the peer of a blocking call one chance to make `ready()` true
/// before the caller parks on a wait queue: the receive-side protocol of
/// [`sync::mpsc`](crate::sync::mpsc) (its module doc, "Receiving"), for
/// blocking objects outside this crate (the IPC crate's pipes, message
/// queues and semaphores). When other tasks are runnable on this CPU, yields
/// once (the peer is usually among them and can then act without a
/// wakeup); when none is and the caller cannot move (a pinned task, or an
/// OS thread), spins for at most
/// [`RECV_SPIN_NS`](crate::sync::mpsc::RECV_SPIN_NS) watching `ready`
/// (a cross-CPU wakeup of a sleeping CPU costs far more); otherwise returns
/// at once, so that the caller parks and a sync wakeup can bring it to the
/// waker's CPU. `ready` must be cheap and must not block (an atomic load).
/// The caller re-checks its condition under its lock afterwards, as always.
#[inline]
pub fn before_park(ready: impl Fn() -> bool) {
    if executor::cpu_has_other_runnable() {
        executor::yield_blocking();
        return;
    }
    spin_before_park(ready);
}

/// The yield of [`before_park`]: like [`yield_now`](crate::task::yield_now),
/// but it tells the scheduler that the caller is about to block, so that
/// CFS passes over it whenever the next task is within one scheduling
/// period, not only within one wakeup granularity
/// (`CfsRq::yield_blocking`): had the caller blocked at once, that task
/// would run now. (Refused, the caller parked, the other task ran anyway,
/// and the pair paid a park and a wakeup per hand-off: two ping-pong pairs
/// on two workers ran one fast and one parking, 111 against 230 ns per
/// round trip, depending on the pair's vruntime gap at fork.) Inlined, so
/// the switch sits in the caller's frame (module doc, "Switch depth").
#[inline(always)]
pub fn yield_before_park() {
    executor::yield_blocking();
}

/// Marks the branch that calls it as rarely taken, for LLVM's block
/// frequencies (the module doc, "Switch depth"): what
/// `std::hint::cold_path` does, which is stable only from Rust 1.95 (this
/// crate's MSRV is 1.85). A call to an empty `#[cold]` function is the
/// stable form of the hint (hashbrown's `cold`): the call is seen, and
/// its block weighted cold, before it is inlined away.
#[cold]
#[inline]
pub fn cold_path() {}

/// Whether [`before_park`] would yield (other tasks are runnable on this
/// CPU): a blocking call that then returns to its caller's frame and yields
/// there keeps its switch at the caller's depth (the module doc's "Switch
/// depth"); otherwise it calls [`spin_before_park`] where it is. False off
/// the workers.
#[inline]
pub fn yields_before_park() -> bool {
    executor::cpu_has_other_runnable()
}

/// The spinning half of [`before_park`], without its yield: when nothing
/// else is runnable on this CPU and the caller cannot move (a pinned task,
/// or an OS thread), spins for at most
/// [`RECV_SPIN_NS`](crate::sync::mpsc::RECV_SPIN_NS) watching `ready`;
/// otherwise returns at once. For blocking calls whose partner on this
/// CPU is woken another way (an L4 endpoint's direct switch or run-queue
/// wakeup): a partner on another CPU usually answers within the spin, and
/// the caller's CPU then neither sleeps nor needs a cross-CPU wakeup.
#[inline(never)]
pub fn spin_before_park(ready: impl Fn() -> bool) {
    if executor::on_worker()
        && (executor::cpu_has_other_runnable()
            || !executor::current_task_cannot_move()
            || executor::runs_on_loan())
    {
        return;
    }
    let start = crate::clock::now_ns();
    loop {
        for _ in 0..8 {
            std::hint::spin_loop();
        }
        if ready()
            || crate::clock::now_ns().saturating_sub(start) >= crate::sync::mpsc::RECV_SPIN_NS
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Parking by name: one known waiter, no queue.

/// Blocks the calling task until `done()` holds, without a wait queue.
///
/// For objects with exactly one waiter that its wakers know by name — an
/// IPC port (an L4 endpoint's caller waiting for its reply, seL4's thread
/// state in the TCB), a completion owned by one task. A waker publishes
/// what `done` reads (Release, or under a lock), then calls
/// [`Task::unpark`](crate::Task::unpark) on the waiter. No lost wakeup: the
/// task's state word keeps an unpark that arrives before the task parks,
/// and the park that follows returns at once (the protocol
/// `std::thread::park` has); `done` is checked after every return, so
/// spurious returns are harmless.
///
/// Returns as an interruptible [`WaitQueue::wait`] does: `Invalid` if
/// `done()` held on entry, `Notified` once it holds, `TimedOut`, or
/// `Cancelled` (shutdown, a kill, or a signal handler that interrupts).
/// `on` labels the wait in traces and the `top` view (what, and which
/// object).
///
/// # Panics
/// Outside a greenos task (a plain thread has no task state to park on).
#[inline(always)]
pub fn park_until<F: Fn() -> bool>(
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    park_until_inner(on, done, timeout, None)
}

/// [`park_until`], first handing the CPU to `to` — a task parked in
/// `park_until` whose condition the caller has just made true, but not
/// yet woken: the direct process switch of synchronous IPC (seL4's
/// fastpath). When `to` last ran on this CPU and may run here, it runs
/// next, on the rest of the caller's turn, without passing through the run
/// queue; otherwise it is unparked the ordinary way. Either way `to` is
/// woken exactly as by [`Task::unpark`](crate::Task::unpark), also when
/// the caller does not sleep after all.
///
/// This is the *call* form: under CFS `to` runs on the caller's
/// scheduling context (seL4 MCS donation, LRPC): the caller stays the
/// scheduler's running entity and is charged for `to`'s time until `to`
/// hands the CPU back ([`hand_back_and_park_until`]) or does anything else
/// (then the books are settled as for an ordinary switch).
///
/// # Panics
/// Outside a greenos task.
#[inline(always)]
pub fn unpark_and_park_until<F: Fn() -> bool>(
    to: &crate::Task,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    park_until_inner(
        on,
        done,
        timeout,
        Some(SwitchTarget::named(to.task_ref(), true)),
    )
}

/// Where the calling task runs, read once for an operation that looks up
/// its task-local state, takes a lock and then parks (an L4 endpoint's
/// call and `reply_recv`): the worker thread, so that the lock's bias
/// ([`BiasedSpinLock::lock_here`](crate::sync::BiasedSpinLock::lock_here))
/// and the park ([`switch_to_and_park_until_here`]) need no thread-local
/// read of their own. Handed out by
/// [`LocalKey::with_fast_here_or`](crate::task::LocalKey::with_fast_here_or).
///
/// Valid only until the task next switches out: a task may resume on
/// another worker thread. Hence the functions that take one are `unsafe`.
#[derive(Clone, Copy, Debug)]
pub struct Here {
    /// This thread's worker, or null (a thread that is not a worker).
    pub(crate) w: *const executor::worker::WorkerCell,
}

impl Here {
    /// The running task's worker and the task, as `executor::current_ptrs`
    /// finds them.
    ///
    /// # Safety
    /// `self` was made since the running task last switched in.
    #[inline(always)]
    unsafe fn ptrs(
        self,
    ) -> (
        *const executor::worker::WorkerCell,
        *const executor::task::Task,
    ) {
        if self.w.is_null() {
            return executor::current_ptrs();
        }
        // SAFETY: the caller's contract: `w` is this thread's live worker.
        let t = unsafe { (*self.w).current() };
        if t.is_null() {
            return executor::current_ptrs();
        }
        (self.w, t)
    }
}

/// [`lent_by`] with [`Here`] in hand.
///
/// # Safety
/// `here` was made since the running task last switched in.
#[inline]
pub unsafe fn lent_by_here(here: Here, task: &crate::Task) -> bool {
    if here.w.is_null() {
        return false;
    }
    // SAFETY: the caller's contract; the borrow of the worker's local
    // state ends here and nothing switches meanwhile.
    unsafe { (*here.w).local() }.lender_is(task.task_ref())
}

/// [`switch_to_and_park_until`] with [`Here`] in hand.
///
/// # Safety
/// `here` was made since the running task last switched in.
#[inline(always)]
pub unsafe fn switch_to_and_park_until_here<F: Fn() -> bool>(
    here: Here,
    to: Claimed,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    // SAFETY: the caller's contract.
    unsafe {
        park_until_here(
            here,
            on,
            done,
            timeout,
            Some(SwitchTarget::won(to.take(), true)),
        )
    }
}

/// [`hand_back_and_park_until`] with [`Here`] in hand.
///
/// # Safety
/// `here` was made since the running task last switched in.
#[inline(always)]
pub unsafe fn hand_back_and_park_until_here<F: Fn() -> bool>(
    here: Here,
    to: &crate::Task,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    // SAFETY: the caller's contract.
    unsafe {
        park_until_here(
            here,
            on,
            done,
            timeout,
            Some(SwitchTarget::named(to.task_ref(), false)),
        )
    }
}

/// [`unpark_and_park_until`] for a target the caller already took out of
/// its park ([`Task::try_claim`](crate::Task::try_claim)): no second
/// wakeup is attempted, and the target, which cannot run before this
/// call hands it the CPU or wakes it, may be switched to even though the
/// caller made its condition true only after claiming it.
///
/// # Panics
/// Outside a greenos task.
#[inline(always)]
pub fn switch_to_and_park_until<F: Fn() -> bool>(
    to: Claimed,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    park_until_inner(on, done, timeout, Some(SwitchTarget::won(to.take(), true)))
}

/// Whether the running task runs on a scheduling context that `task` lent
/// it: a call's direct switch ([`unpark_and_park_until`],
/// [`switch_to_and_park_until`]) from `task`, not yet ended. Until the
/// running task switches out, `task` cannot run, be woken into a run
/// queue, or give up its wait (a timeout or a signal only marks it), so
/// what it waits for may be completed without locked instructions, and a
/// handle on it need not be counted. False off the workers.
#[inline]
pub fn lent_by(task: &crate::Task) -> bool {
    executor::lent_by(task.task_ref())
}

/// A task taken out of its park by [`Task::try_claim`](crate::Task::try_claim):
/// it is runnable but in no run queue, and only the holder may make it
/// run: by handing it the CPU ([`switch_to_and_park_until`]) or by
/// waking it ([`wake`](Self::wake), or dropping the claim). A claim is
/// what lets a waker finish publishing what the task waits for *after*
/// taking it, with no reference count: the task cannot run, and so
/// cannot end, before the claim is spent.
#[must_use = "a claimed task runs only when the claim is spent (dropping it wakes the task)"]
pub struct Claimed {
    task: Option<TaskRef>,
}

impl Claimed {
    pub(crate) fn new(task: TaskRef) -> Claimed {
        Claimed { task: Some(task) }
    }

    #[inline]
    fn take(mut self) -> TaskRef {
        self.task.take().expect("a claim is spent once")
    }

    /// Wakes the task the ordinary way (through its CPU's run queue).
    pub fn wake(self) {
        executor::enqueue_claimed(self.take(), false);
    }

    /// [`wake`](Self::wake) from a caller about to block itself
    /// ([`Task::unpark_sync`](crate::Task::unpark_sync)).
    pub fn wake_sync(self) {
        executor::enqueue_claimed(self.take(), true);
    }
}

impl Drop for Claimed {
    #[inline]
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            executor::enqueue_claimed(t, false);
        }
    }
}

impl fmt::Debug for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimed")
            .field("pid", &self.task.as_ref().map(|t| t.pid))
            .finish()
    }
}

/// [`unpark_and_park_until`] for the *reply*: hands the CPU straight to
/// `to` without lending it this task's scheduling context. If `to` lent
/// its context to this task (it called it), the loan ends and `to` runs on
/// at once; otherwise `to` becomes the running task with its own
/// accounting (the direct switch). Use it where `to` is the caller being
/// answered, so that a server never pays for its clients' time.
///
/// # Panics
/// Outside a greenos task.
#[inline(always)]
pub fn hand_back_and_park_until<F: Fn() -> bool>(
    to: &crate::Task,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
) -> WaitResult {
    park_until_inner(
        on,
        done,
        timeout,
        Some(SwitchTarget::named(to.task_ref(), false)),
    )
}

/// The common body of the `park_until` family, inlined into its caller
/// so that the switch sits in the caller's frame (the module doc, "Switch
/// depth"): an untimed wait whose prologue finds nothing to do but sleep
/// (no signal, not cancelled, not done yet) parks right here and, when
/// its condition holds on the first return, leaves with no further call.
/// Everything else (a timeout, a signal, a spurious return) goes through
/// the out-of-line [`park_until_slow`].
#[inline(always)]
fn park_until_inner<F: Fn() -> bool>(
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
    handoff: Option<SwitchTarget>,
) -> WaitResult {
    // One lookup for the task and its worker (the worker is used before
    // the task first switches out, while it is still this thread's).
    let (w, t) = executor::current_ptrs();
    park_until_on(w, t, on, done, timeout, handoff)
}

/// [`park_until_on`] with the worker and task [`Here`] names.
///
/// # Safety
/// `here` was made since the running task last switched in.
#[inline(always)]
unsafe fn park_until_here<F: Fn() -> bool>(
    here: Here,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
    handoff: Option<SwitchTarget>,
) -> WaitResult {
    // SAFETY: the caller's contract.
    let (w, t) = unsafe { here.ptrs() };
    park_until_on(w, t, on, done, timeout, handoff)
}

/// [`park_until_inner`] with the worker `w` and the running task `t` in
/// hand (`executor::current_ptrs`, or [`Here`], made since the task last
/// switched in).
#[inline(always)]
fn park_until_on<F: Fn() -> bool>(
    w: *const executor::worker::WorkerCell,
    t: *const executor::task::Task,
    on: (crate::trace::BlockOn, u64),
    done: F,
    timeout: Option<Duration>,
    handoff: Option<SwitchTarget>,
) -> WaitResult {
    if t.is_null() {
        executor::not_in_task("park_until");
    }
    // SAFETY: as in `executor::current_task`.
    let t = unsafe { &*t };
    let mut handoff = handoff;
    if timeout.is_none() {
        // A handoff's checks are inlined (a few call sites: the IPC call
        // and reply, `wake_one_and_wait`), a plain park's stay out of line
        // (every blocking call has one).
        let (next, h) = if handoff.is_some() {
            park_prologue_inline(t, on, &done, handoff)
        } else {
            park_prologue(t, on, &done, handoff)
        };
        match next {
            Prologue::Park => {
                match h {
                    Some(to) => executor::park_and_switch_to_on(w, t, to),
                    None => executor::park_current(t),
                }
                if done() {
                    return WaitResult::Notified;
                }
                cold_path();
                // The handoff is spent: the rest is an ordinary wait.
                return park_until_slow(t, on, &done, None, None);
            }
            Prologue::Slow => {
                cold_path();
                handoff = h
            }
            Prologue::Cancelled => {
                cold_path();
                return WaitResult::Cancelled;
            }
            Prologue::Invalid => {
                cold_path();
                return WaitResult::Invalid;
            }
        }
    }
    park_until_slow(t, on, &done, timeout, handoff)
}

/// What [`park_prologue`] found. Returned with the handoff as a pair of
/// scalars, in registers (an enum carrying the handoff would go through
/// memory).
enum Prologue {
    /// Nothing pending: park once, handing the CPU to the target if given.
    Park,
    /// A signal is pending: take the general path (with the handoff).
    Slow,
    /// Leave with `Cancelled` (the handoff target was woken).
    Cancelled,
    /// Leave with `Invalid`: the condition holds already (the handoff
    /// target was woken).
    Invalid,
}

/// The checks an untimed park makes before it switches out, as
/// [`park_until_slow`] makes them: out of line, so that only the switch
/// itself is inlined into the caller. Whether the handoff target may run
/// here is left to the switch (`executor::park_and_switch_to`), which
/// holds the worker already.
#[inline(never)]
fn park_prologue<F: Fn() -> bool>(
    t: &executor::task::Task,
    on: (crate::trace::BlockOn, u64),
    done: &F,
    handoff: Option<SwitchTarget>,
) -> (Prologue, Option<SwitchTarget>) {
    park_prologue_inline(t, on, done, handoff)
}

/// [`park_prologue`], inlined into its caller.
#[inline(always)]
fn park_prologue_inline<F: Fn() -> bool>(
    t: &executor::task::Task,
    on: (crate::trace::BlockOn, u64),
    done: &F,
    handoff: Option<SwitchTarget>,
) -> (Prologue, Option<SwitchTarget>) {
    if t.sig.any_pending() {
        cold_path();
        // A delivery point's work (`signal::checkpoint`): the slow path.
        return (Prologue::Slow, handoff);
    }
    let handoff = match no_sleep(t, done, handoff) {
        Ok(handoff) => handoff,
        Err(WaitResult::Cancelled) => return (Prologue::Cancelled, None),
        Err(_) => return (Prologue::Invalid, None),
    };
    if executor::ANY_TRACING.load(Ordering::Relaxed) {
        cold_path();
        executor::trace_block(t, on.0, on.1);
    }
    (Prologue::Park, handoff)
}

/// The checks every park makes before it sleeps: a cancelled task (or one
/// that must die) leaves with `Cancelled`, a condition that already holds
/// with `Invalid`, and either way the handoff target is woken. Otherwise
/// the handoff is given back, to park with.
#[inline(always)]
fn no_sleep<F: Fn() -> bool + ?Sized>(
    t: &executor::task::Task,
    done: &F,
    handoff: Option<SwitchTarget>,
) -> Result<Option<SwitchTarget>, WaitResult> {
    let r = if t.cancelled.load(Ordering::Relaxed) || crate::signal::must_die(t) {
        WaitResult::Cancelled
    } else if done() {
        WaitResult::Invalid
    } else {
        return Ok(handoff);
    };
    cold_path();
    if let Some(h) = handoff {
        h.wake();
    }
    Err(r)
}

/// The general `park_until`: signals, cancellation, timeouts and repeated
/// parks (see [`park_task_until`]).
#[inline(never)]
fn park_until_slow(
    t: &executor::task::Task,
    on: (crate::trace::BlockOn, u64),
    done: &dyn Fn() -> bool,
    timeout: Option<Duration>,
    handoff: Option<SwitchTarget>,
) -> WaitResult {
    // This path may switch before it hands the CPU over (a signal
    // handler that blocks or yields), and a target borrowed from the
    // caller may be valid only until the caller first switches out (a
    // reply on a lent context: `lent_by`): from here on it is counted.
    let handoff = handoff.map(SwitchTarget::into_counted);
    let wake_plain = |to: Option<SwitchTarget>| {
        if let Some(h) = to {
            h.wake();
        }
    };
    // A blocking call is a delivery point, as in `WaitQueue::wait_inner`.
    if crate::signal::deliverable_pending(t)
        && crate::signal::deliver(t) == crate::signal::Delivered::Interrupt
    {
        wake_plain(handoff);
        crate::signal::unwind_if_killed(t);
        return WaitResult::Cancelled;
    }
    crate::signal::checkpoint(t);
    let handoff = match no_sleep(t, done, handoff) {
        Ok(handoff) => handoff,
        Err(r) => return r,
    };
    // Whether the target may run here is the switch's to check
    // (`executor::park_and_switch_to`).
    let direct = handoff;
    // A wakeup that raced with leaving early wins, as in `finish_early`.
    let result = park_task_until(t, done, timeout, true, on, direct, |why| {
        if done() {
            WaitResult::Notified
        } else {
            why
        }
    });
    if result == WaitResult::Cancelled {
        crate::signal::unwind_if_killed(t);
    }
    result
}

/// The sleep every green wait shares (`WaitQueue`'s and `park_until`'s):
/// arms the timeout, records the block for tracing (`on`: what, which
/// object), then parks, handing the CPU to `direct` the first time when
/// given, until `notified()` holds, the task is cancelled or must die, the
/// timeout passes, or (`interruptible`) a signal handler interrupts.
/// `leave_early(why)` settles a departure that is not a notification (a
/// wakeup that raced in wins there). A `direct` target not switched to is
/// woken plainly. Does not unwind a killed task: the caller does, once its
/// own state is tidy.
fn park_task_until(
    task: &executor::task::Task,
    notified: impl Fn() -> bool,
    timeout: Option<Duration>,
    interruptible: bool,
    on: (crate::trace::BlockOn, u64),
    mut direct: Option<SwitchTarget>,
    leave_early: impl Fn(WaitResult) -> WaitResult,
) -> WaitResult {
    let deadline = deadline_ns(timeout);
    let gen = deadline.map(|d| {
        let gen = task.begin_timed_wait();
        if !executor::arm_timer(task, d, gen) {
            // Not on a worker (cancellation path): cannot time out.
            task.end_timed_wait(gen);
        }
        gen
    });
    let mut signalled = interruptible && crate::signal::deliverable_pending(task);
    if executor::ANY_TRACING.load(Ordering::Relaxed) {
        executor::trace_block(task, on.0, on.1);
    }
    let result = loop {
        if notified() {
            break WaitResult::Notified;
        }
        if task.cancelled.load(Ordering::Relaxed) || crate::signal::must_die(task) {
            break leave_early(WaitResult::Cancelled);
        }
        if gen.is_some_and(|g| task.timed_out(g)) {
            break leave_early(WaitResult::TimedOut);
        }
        if signalled {
            match crate::signal::deliver(task) {
                crate::signal::Delivered::Interrupt => {
                    break leave_early(WaitResult::Cancelled);
                }
                crate::signal::Delivered::Restart | crate::signal::Delivered::Nothing => {}
            }
        } else {
            match direct.take() {
                Some(to) => executor::park_and_switch_to(task, to),
                None => executor::park_current(task),
            }
        }
        signalled = interruptible && crate::signal::deliverable_pending(task);
    };
    if let Some(to) = direct {
        // Left before switching (cancelled, timed out): wake it plainly.
        to.wake();
    }
    if let Some(g) = gen {
        task.end_timed_wait(g);
    }
    result
}
