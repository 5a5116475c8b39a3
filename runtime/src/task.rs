//! Tasks: spawning green threads, joining them, and what a task can ask
//! about itself.
//!
//! # Tasks migrate: the thread-local contract
//! A suspended task may resume on another CPU (another OS thread) at any
//! greenos call: `yield_now`, `sleep`, a blocking `sync` or IPC call, even
//! `maybe_yield` and `spawn`. So, as with Boost.Fiber and `may`:
//! - do not hold a reference obtained from a `thread_local!` (or any
//!   thread-bound state: `std::sync::MutexGuard`, `RefCell` borrows of TLS,
//!   `tracing` span guards, `thread::current()`, `gettid`) across a greenos
//!   call — it may belong to another thread when you resume;
//! - use [`task_local!`](crate::task_local) for per-task state: it follows
//!   the task;
//! - use [`Builder::pinned`] for a task that must stay on the CPU where it
//!   first ran.
//!
//! `spawn` stays safe (as `std::thread::spawn` is): Rust cannot check these
//! rules, so they are a documented contract (reference/coroutines.md §2).
//!
//! # Task-locals
//! A task's values live in a vector of slots in its body, one per key,
//! created on first use and dropped as the task ends (before a joiner sees
//! its result). One key per program, the first to use
//! [`LocalKey::with_cx_fast`] or [`LocalKey::with_fast_or`] (the IPC
//! crate's per-task state), is also reachable through a word of the task's
//! body, and the worker running the task keeps a copy of that word, made
//! at every switch-in: an IPC operation reaches its state in three
//! dependent loads from the thread. The word and its copy never outlive
//! the value: both are cleared before each value drops.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cpuset::CpuSet;
use crate::error::{errno, JoinError};
use crate::executor::affinity::TaskMask;
use crate::executor::task::{encode_policy, Task as TaskCb, TaskEntry, TaskInit, TaskRef};
use crate::executor::{self, Shared};
use crate::sched::{check_setpriority, check_setscheduler, SchedPolicy, SchedTarget};
use crate::wait::WaitResult;
use crate::Pid;

/// Smallest stack a task may ask for (bytes).
pub const MIN_STACK_SIZE: usize = 16 << 10;
/// Largest stack a task may ask for (bytes): 1 GiB, Go's maximum.
pub const MAX_STACK_SIZE: usize = 1 << 30;

// ---------------------------------------------------------------------------
// Join handles.

/// Where a task's result waits for its joiner.
///
/// At most one caller waits on a packet at a time (`JoinHandle::join`
/// consumes the handle; `join_timeout` hands it back only when it gives
/// up), so the waiter is a single slot, not a wait queue: a million-task
/// spawn keeps 32 bytes less per unjoined task. (A queue per packet cost
/// 48 bytes; 256 hashed queues shared by every packet, the kernel's
/// `bit_wait_table`, made skynet 1M four times slower: every completion
/// woke every joiner of its bucket.)
///
/// # Protocol
/// `state` holds [`DONE`] and [`WAITING`].
/// - The joiner writes its [`JoinWaiter`] into `waiter` while `WAITING` is
///   clear, then sets `WAITING` (Release). If `DONE` was already set, the
///   completer will not look at `waiter`: the joiner takes its waiter back
///   and returns. Otherwise it parks until `DONE`; to give up (timeout,
///   cancellation) it clears `WAITING` with a compare-exchange from
///   exactly `WAITING` and takes its waiter back; if that fails, `DONE` is
///   set and the completer owns the waiter: the joiner leaves it alone.
/// - The completer writes `result`, then sets `DONE` (AcqRel); if
///   `WAITING` was set it takes the waiter out of `waiter` and wakes it.
///
/// So `waiter` is touched by one side at a time: by the joiner while
/// `WAITING` is clear, by the completer after it saw `WAITING` with its
/// own `DONE`. No wakeup is lost: either the joiner's `WAITING` comes
/// first and the completer wakes it, or the completer's `DONE` comes first
/// and the joiner sees it.
pub(crate) struct Packet<T> {
    state: std::sync::atomic::AtomicU8,
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    waiter: UnsafeCell<Option<JoinWaiter>>,
}

/// [`Packet::state`]: the result is there.
const DONE: u8 = 1;
/// [`Packet::state`]: a joiner is registered in `waiter`.
const WAITING: u8 = 2;

/// Who waits for a packet: a green task (woken by name, as
/// [`wait::park_until`](crate::wait::park_until) expects) or an OS thread.
enum JoinWaiter {
    Task(TaskRef),
    Thread(std::thread::Thread),
}

// SAFETY: `result` is written once by the finishing task before `DONE` is
// set (Release) and read once by the joiner after it sees `DONE`
// (Acquire); `waiter` is touched by one side at a time (the protocol in
// the type's doc).
unsafe impl<T: Send> Send for Packet<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            state: std::sync::atomic::AtomicU8::new(0),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }

    fn complete(&self, r: Result<T, JoinError>) {
        // SAFETY: only the task's entry completes the packet, once, before
        // `DONE` is published; nobody reads `result` before that.
        unsafe { *self.result.get() = Some(r) };
        if self.state.fetch_or(DONE, Ordering::AcqRel) & WAITING == 0 {
            return;
        }
        // SAFETY: we saw `WAITING` with our `DONE`: the joiner finished
        // writing the waiter (its Release) and will not touch it again.
        let waiter = unsafe { (*self.waiter.get()).take() };
        match waiter {
            Some(JoinWaiter::Task(t)) => {
                executor::wake_joiners(|| executor::unpark_task(&t, false))
            }
            Some(JoinWaiter::Thread(t)) => t.unpark(),
            None => {}
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }

    /// Waits for completion (green: parks the task; OS thread: parks it)
    /// at most `timeout`; whether it completed. A green joiner also
    /// returns when its task is cancelled or killed; signal handlers run
    /// and the wait goes on (a killable wait).
    fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.is_done() {
            return true;
        }
        let me = executor::current_task_ptr();
        let waiter = if me.is_null() {
            JoinWaiter::Thread(std::thread::current())
        } else {
            JoinWaiter::Task(executor::current_task_ref("join"))
        };
        // SAFETY: `WAITING` is clear (we are the only joiner and clear it
        // before leaving): the completer does not touch `waiter`.
        unsafe { *self.waiter.get() = Some(waiter) };
        if self.state.fetch_or(WAITING, Ordering::AcqRel) & DONE != 0 {
            // Done before we registered: the completer never saw us.
            self.unregister_after_done();
            return true;
        }
        let deadline = timeout.map(|d| executor::now().saturating_add(d.as_nanos() as u64));
        let left = |deadline: Option<u64>| {
            deadline.map(|d| Duration::from_nanos(d.saturating_sub(executor::now())))
        };
        /// Gives up the registration if the wait unwinds (a killed task
        /// unwinds out of `park_until`), so the slot does not keep the
        /// dead joiner's reference until the target finishes.
        struct Unregister<'a, T>(&'a Packet<T>);
        impl<T> Drop for Unregister<'_, T> {
            fn drop(&mut self) {
                self.0.give_up();
            }
        }
        let guard = Unregister(self);
        loop {
            if self.is_done() {
                std::mem::forget(guard);
                return true;
            }
            if deadline.is_some_and(|d| executor::now() >= d) {
                break;
            }
            if me.is_null() {
                match left(deadline) {
                    Some(t) => std::thread::park_timeout(t),
                    None => std::thread::park(),
                }
                continue;
            }
            // SAFETY: `me` is the running task (see `current_task`).
            let task = unsafe { &*me };
            let on = (crate::trace::BlockOn::Join, 0);
            let r = crate::wait::park_until(on, || self.is_done(), left(deadline));
            if r == WaitResult::Cancelled
                && (task.cancelled.load(Ordering::Relaxed) || crate::signal::must_die(task))
            {
                break;
            }
        }
        std::mem::forget(guard);
        !self.give_up()
    }

    /// The registered joiner leaves before `DONE`: takes its waiter back
    /// unless the completer has it already; returns whether it did (false:
    /// the packet is done).
    fn give_up(&self) -> bool {
        if self
            .state
            .compare_exchange(WAITING, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: `WAITING` is clear again and `DONE` was not set: the
            // completer never looked at `waiter`.
            drop(unsafe { (*self.waiter.get()).take() });
            true
        } else {
            false
        }
    }

    /// The joiner registered after `DONE`: its waiter is its own again.
    fn unregister_after_done(&self) {
        // SAFETY: the completer set `DONE` before our `WAITING`, so it saw
        // no waiter and never touches `waiter`; `WAITING` stays set, which
        // only the completer (done already) would read.
        drop(unsafe { (*self.waiter.get()).take() });
    }

    fn take(&self) -> Result<T, JoinError> {
        debug_assert!(self.is_done());
        // SAFETY: `DONE` was observed (Acquire); the completer no longer
        // touches `result`; `JoinHandle::join` takes it once (by value).
        unsafe { (*self.result.get()).take() }.unwrap_or(Err(JoinError::Cancelled))
    }
}

/// The body of a spawned task and its result slot, in one allocation shared
/// by the task (as its `TaskEntry`) and the join handle.
struct Spawned<F, T> {
    f: UnsafeCell<Option<F>>,
    packet: Packet<T>,
}

// SAFETY: `f` is taken exactly once, either by `run` on the task's own stack
// or by `cancel` from its owner when the task will never run; both happen
// under task ownership (see executor/task.rs), never concurrently. The
// packet is Sync on its own.
unsafe impl<F: Send, T: Send> Sync for Spawned<F, T> {}

impl<F, T> TaskEntry for Spawned<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self) {
        // SAFETY: see the Sync impl: only the owner of the task takes `f`.
        let Some(f) = (unsafe { (*self.f.get()).take() }) else {
            return;
        };
        let r = catch_unwind(AssertUnwindSafe(f));
        let task = executor::current_task("spawn");
        let r = match r {
            Ok(v) => Ok(v),
            // A killed task unwound itself; a cancelled one was unwound by
            // the runtime. Neither is a panic.
            Err(p) => match task.sig.killed_by() {
                Some(sig) => Err(JoinError::Killed(sig)),
                None if task.cancelled.load(Ordering::Relaxed) => Err(JoinError::Cancelled),
                None => Err(JoinError::Panic(p)),
            },
        };
        // Task-local values die before the joiner sees the result, as a
        // thread's TLS dies before `join` returns.
        // SAFETY: this is the running task, and no local is borrowed here.
        unsafe { task.drop_locals() };
        // The pid is free (and `live_tasks` lower) by the time a joiner
        // sees the result, as a reaped child's pid is after wait(2).
        executor::unregister_exiting(task);
        executor::notify_parent_of_exit(task);
        self.packet.complete(r);
    }

    fn cancel(&self) {
        // SAFETY: see the Sync impl.
        if unsafe { (*self.f.get()).take() }.is_some() {
            // Dropped unrun: the runtime shut down or no stack was available.
            self.packet.complete(Err(JoinError::Cancelled));
        }
    }
}

/// Erases the lifetime of a task body (see the caller's SAFETY comment).
///
/// # Safety
/// The body must not run or be dropped after the data it borrows is gone.
unsafe fn erase_entry<'a>(e: Arc<dyn TaskEntry + 'a>) -> Arc<dyn TaskEntry + 'static> {
    // SAFETY: same layout; the lifetime is the caller's promise.
    unsafe { std::mem::transmute::<Arc<dyn TaskEntry + 'a>, Arc<dyn TaskEntry + 'static>>(e) }
}

/// Erases the lifetime of a result slot (see `erase_entry`).
///
/// # Safety
/// As for `erase_entry`.
unsafe fn erase_slot<'a, T>(s: Arc<dyn ResultSlot<T> + 'a>) -> Arc<dyn ResultSlot<T> + 'static> {
    // SAFETY: same layout; the lifetime is the caller's promise.
    unsafe {
        std::mem::transmute::<Arc<dyn ResultSlot<T> + 'a>, Arc<dyn ResultSlot<T> + 'static>>(s)
    }
}

/// The join handle's view of a `Spawned`.
trait ResultSlot<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
}

impl<F, T> ResultSlot<T> for Spawned<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn packet(&self) -> &Packet<T> {
        &self.packet
    }
}

/// An owned permission to join a task (wait for it and take its result).
/// Dropping it detaches the task.
pub struct JoinHandle<T> {
    slot: Arc<dyn ResultSlot<T>>,
    task: Task,
}

impl<T> JoinHandle<T> {
    fn packet(&self) -> &Packet<T> {
        self.slot.packet()
    }

    /// Waits for the task to finish and returns its result; a panic in the
    /// task comes back as `Err(JoinError::Panic(payload))`. In a green
    /// thread this parks the task (its CPU runs others); on an OS thread it
    /// blocks the thread.
    ///
    /// From a green thread the wait is a directed yield (the kernel's
    /// `yield_to()`): if the joined task waits in this CPU's run queue it
    /// becomes the NEXT buddy and runs next when the scheduling class
    /// finds that fair enough (CFS: within one wakeup granularity of the
    /// leftmost; EEVDF: if it is eligible); when it finishes, the joiner
    /// it wakes here becomes the NEXT buddy in turn. A fork-join tree
    /// therefore runs depth-first under CFS, and only the tasks on the
    /// current path hold stacks.
    pub fn join(self) -> Result<T, JoinError> {
        executor::joining(&self.task.inner, || self.packet().wait(None));
        if !self.packet().is_done() {
            return Err(JoinError::Cancelled);
        }
        self.packet().take()
    }

    /// Like [`join`](Self::join) but gives up after `timeout`, handing the
    /// handle back.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, JoinError>, JoinHandle<T>> {
        if executor::joining(&self.task.inner, || self.packet().wait(Some(timeout))) {
            Ok(self.packet().take())
        } else {
            Err(self)
        }
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.packet().is_done()
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.task)
            .field("finished", &self.is_finished())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Task handles.

/// A handle to a task (what `std::thread::Thread` is to a thread).
#[derive(Clone)]
pub struct Task {
    inner: TaskRef,
}

impl Task {
    /// Wakes the task if it is parked in
    /// [`wait::park_until`](crate::wait::park_until), or makes its next
    /// park there return at once (what `std::thread::Thread::unpark` is to `park`). Publish what
    /// the waiter checks before calling it. A task blocked in anything else
    /// (a wait queue, `sleep`) sees a spurious wakeup and goes back to
    /// sleep; an exited task ignores it.
    #[inline]
    pub fn unpark(&self) {
        executor::unpark_task(&self.inner, false);
    }

    /// [`unpark`](Self::unpark) from a caller that is about to block
    /// itself (the kernel's `WF_SYNC`, as
    /// [`WaitQueue::wake_one_sync`](crate::wait::WaitQueue::wake_one_sync)):
    /// when the caller's CPU runs nothing else, the task is placed there.
    pub fn unpark_sync(&self) {
        executor::unpark_task(&self.inner, true);
    }

    /// Takes the task out of its park if it is parked in
    /// [`wait::park_until`](crate::wait::park_until) (or any other green
    /// wait): the caller then holds it ([`Claimed`](crate::wait::Claimed))
    /// and it runs only when the caller hands it the CPU
    /// ([`switch_to_and_park_until`](crate::wait::switch_to_and_park_until))
    /// or wakes it. `None` (and no
    /// effect at all) if it is not parked: running, queued, or still
    /// switching out.
    ///
    /// This is how a waker may publish what the task waits for *after*
    /// taking it (as the kernel's IPC fastpath dequeues the receiver
    /// first): the claimed task cannot run, and so cannot leave its wait
    /// and end, before the claim is spent.
    #[inline]
    pub fn try_claim(&self) -> Option<crate::wait::Claimed> {
        executor::try_claim(&self.inner).map(crate::wait::Claimed::new)
    }

    /// The runtime's reference behind the handle.
    pub(crate) fn task_ref(&self) -> &TaskRef {
        &self.inner
    }

    /// The task's process id.
    #[inline]
    pub fn pid(&self) -> Pid {
        self.inner.pid
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// The CPU the task last ran or was queued on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.inner.cpu.load(Ordering::Relaxed)
    }

    /// The task's nice value.
    #[inline]
    pub fn nice(&self) -> i32 {
        self.inner.nice.load(Ordering::Relaxed)
    }

    /// Whether a stop signal (SIGSTOP, SIGTSTP, ...) has stopped the task:
    /// it is off every run queue until SIGCONT.
    pub fn is_stopped(&self) -> bool {
        self.inner.sig.is_stopped()
    }

    /// The pid of the task that spawned this one (`Pid(0)` when it was
    /// spawned from outside the runtime).
    pub fn ppid(&self) -> Pid {
        Pid(self.inner.ppid)
    }

    /// The task's scheduling policy.
    pub fn policy(&self) -> SchedPolicy {
        self.inner.policy()
    }

    /// The task's user id.
    pub fn uid(&self) -> u32 {
        self.inner.uid
    }

    /// The task's group id.
    pub fn gid(&self) -> u32 {
        self.inner.gid
    }

    /// CPU time the task has used so far, by the runtime's own accounting
    /// (its `sum_exec_runtime`, updated each time it switches out). Time a
    /// task runs on a scheduling context lent to it by a direct process
    /// switch (an L4 call, `wait::unpark_and_park_until`) is its caller's
    /// (seL4 MCS donation, LRPC).
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.inner.sum_exec_ns.load(Ordering::Relaxed))
    }

    /// The CPUs the task may run on.
    pub fn affinity(&self) -> CpuSet {
        self.inner.allowed.load()
    }

    /// The usable stack size the task asked for (bytes).
    pub fn stack_size(&self) -> usize {
        self.inner.stack_size as usize
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("pid", &self.pid())
            .field("name", &self.name())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Spawning.

/// Task factory, in the style of `std::thread::Builder`.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    nice: Option<i32>,
    stack_size: Option<usize>,
    uid: Option<u32>,
    gid: Option<u32>,
    affinity: Option<CpuSet>,
    pinned: bool,
    policy: Option<SchedPolicy>,
    slice: Option<Duration>,
}

/// What a new task inherits from its parent (or from the process when
/// spawned from outside the runtime).
struct Parent {
    uid: u32,
    gid: u32,
    nice: i32,
    policy: SchedPolicy,
    /// The parent task (alive: it is the caller), if the caller is a task.
    task: *const TaskCb,
}

impl Parent {
    fn current() -> Parent {
        let t = executor::current_task_ptr();
        if t.is_null() {
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            Parent {
                uid,
                gid,
                nice: 0,
                policy: SchedPolicy::Normal,
                task: std::ptr::null(),
            }
        } else {
            // SAFETY: CURRENT is the running task (see current_task).
            let t = unsafe { &*t };
            let id = identity_of(t);
            Parent {
                uid: id.uid,
                gid: id.gid,
                nice: t.nice.load(Ordering::Relaxed),
                policy: t.policy(),
                task: t,
            }
        }
    }
}

impl Builder {
    /// A builder with every setting inherited or defaulted.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the task (shown in diagnostics and traces).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Nice value, -20 (most CPU) ..= 19 (least); default: the parent's.
    pub fn nice(mut self, nice: i32) -> Builder {
        self.nice = Some(nice);
        self
    }

    /// Scheduling policy (default: the parent's, as fork does):
    /// `SchedPolicy::{Normal, Batch, Idle}` run in the runtime's fair class,
    /// `Fifo`/`RoundRobin` (priority 1–99) in the real-time class above it.
    /// Errors at spawn: `EINVAL` for an RT priority out of range; `EPERM`
    /// for a non-root parent asking for RT (or a higher RT priority than
    /// its own), as `sched_setscheduler(2)`.
    pub fn policy(mut self, policy: SchedPolicy) -> Builder {
        self.policy = Some(policy);
        self
    }

    /// The task's EEVDF request size (Linux 6.12 `sched_attr.sched_runtime`
    /// for fair tasks), clamped to 0.1–100 ms; a shorter slice means an
    /// earlier virtual deadline, so lower latency at the same share. Only
    /// `Policy::Eevdf` uses it; default: the base slice (0.75 ms × the CPU
    /// factor). Not inherited.
    pub fn slice(mut self, slice: Duration) -> Builder {
        self.slice = Some(slice);
        self
    }

    /// Usable stack size in bytes (rounded up to whole pages); default: the
    /// runtime's (`Runtime::builder().stack_size`, 64 KiB unless changed).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// User id of the new task. Only uid 0 may choose another uid.
    pub fn uid(mut self, uid: u32) -> Builder {
        self.uid = Some(uid);
        self
    }

    /// Group id of the new task. Only uid 0 may choose another gid.
    pub fn gid(mut self, gid: u32) -> Builder {
        self.gid = Some(gid);
        self
    }

    /// CPUs the task may run on (default: the parent's mask).
    pub fn affinity(mut self, set: CpuSet) -> Builder {
        self.affinity = Some(set);
        self
    }

    /// Keeps the task on the CPU where it first runs (its affinity mask
    /// narrows to that CPU then). For tasks that hold thread-bound state
    /// across greenos calls; see the module docs.
    pub fn pinned(mut self) -> Builder {
        self.pinned = true;
        self
    }

    /// Spawns the task on the current runtime. Errors: `EINVAL` for a nice
    /// value outside -20..=19, a stack size outside 16 KiB..=1 GiB, or an
    /// affinity mask with no CPU of this runtime; `EPERM` for a non-root
    /// parent asking for other credentials.
    ///
    /// Panics outside a greenos task (use [`Runtime::spawn`](crate::Runtime::spawn) there).
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let t = executor::current_task("spawn");
        let h = match executor::with_current_shared(|s| s.id == t.rt_id) {
            // On a CPU of the task's runtime (the common case): no counted
            // reference to the runtime is taken.
            Some(true) => executor::with_current_shared(|s| self.spawn_on(s, f))
                .expect("still on the same worker"),
            _ => {
                let shared =
                    executor::runtime_of(t).expect("greenos::spawn: the task's runtime is gone");
                self.spawn_on(&shared, f)
            }
        }?;
        executor::maybe_yield();
        Ok(h)
    }

    /// Spawns on a given runtime (used by `Runtime::spawn`/`block_on` too).
    pub(crate) fn spawn_on<F, T>(self, shared: &Arc<Shared>, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.spawn_with_pid(shared, None, f)
    }

    pub(crate) fn spawn_with_pid<F, T>(
        self,
        shared: &Arc<Shared>,
        pid: Option<Pid>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let parent = Parent::current();
        let nice = self.nice.unwrap_or(parent.nice);
        if !(crate::sched::MIN_NICE..=crate::sched::MAX_NICE).contains(&nice) {
            return Err(errno(libc::EINVAL));
        }
        let stack_size = self.stack_size.unwrap_or(shared.config.default_stack_size);
        if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&stack_size) {
            return Err(errno(libc::EINVAL));
        }
        let uid = self.uid.unwrap_or(parent.uid);
        let gid = self.gid.unwrap_or(parent.gid);
        if parent.uid != 0 && (uid != parent.uid || gid != parent.gid) {
            return Err(errno(libc::EPERM));
        }
        if nice < parent.nice && parent.uid != 0 && self.nice.is_some() {
            // Raising priority needs privilege, as setpriority(2) says.
            return Err(errno(libc::EPERM));
        }
        let policy = match self.policy {
            Some(p) => {
                let me = SchedTarget {
                    uid: parent.uid,
                    policy: parent.policy,
                    nice: parent.nice,
                };
                check_setscheduler(parent.uid, &me, p)?;
                p
            }
            None => parent.policy,
        };
        // SAFETY: a non-null parent is the running caller, alive throughout.
        let parent_task = unsafe { parent.task.as_ref() };
        let allowed = match (&self.affinity, parent_task) {
            (Some(set), _) => {
                if set.iter().all(|c| c >= shared.nr_cpus()) {
                    return Err(errno(libc::EINVAL));
                }
                TaskMask::new(Some(set), shared.nr_cpus())
            }
            // A child inherits its parent's mask (same runtime: same CPUs).
            (None, Some(p)) if p.rt_id == shared.id => TaskMask::inherit(&p.allowed),
            (None, _) => TaskMask::new(None, shared.nr_cpus()),
        };
        let spawned: Arc<Spawned<F, T>> = Arc::new(Spawned {
            f: UnsafeCell::new(Some(f)),
            packet: Packet::new(),
        });
        let entry: Arc<dyn TaskEntry + '_> = spawned.clone();
        let slot: Arc<dyn ResultSlot<T> + '_> = spawned;
        // SAFETY: erasing the lifetime is sound for 'static closures; the
        // only non-'static caller is `Runtime::block_on`, which does not
        // return before the task has finished or its body was dropped
        // (`Packet::wait` until done), like `std::thread::scope`. After that
        // the closure is gone (taken by `run` or `cancel`), so dropping the
        // allocation later touches no borrowed data.
        let (entry, slot) = unsafe { (erase_entry(entry), erase_slot(slot)) };
        let pid = match pid {
            Some(p) => p,
            None => shared.alloc_pid()?,
        };
        let task = TaskCb::new(
            TaskInit {
                pid,
                rt_id: shared.id,
                name: self.name.map(String::into_boxed_str),
                stack_size,
                uid,
                gid,
                nice,
                policy,
                slice_ns: self.slice.map_or(0, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
                }),
                cpu: 0,
                allowed,
                pinned: self.pinned,
                ppid: match parent_task {
                    Some(p) if p.rt_id == shared.id => p.pid.0,
                    _ => 0,
                },
                sig: crate::signal::TaskSignals::inherit(
                    parent_task.filter(|p| p.rt_id == shared.id).map(|p| &p.sig),
                ),
            },
            entry,
        );
        if let Some(p) = parent_task.filter(|p| p.rt_id == shared.id) {
            // Forked by a task of this runtime, on one of its CPUs: the
            // class prepares the child from the parent (task_fork).
            executor::with_local(|l| {
                if Arc::ptr_eq(l.shared(), shared) {
                    l.fork_sched(p, &task);
                }
            });
        }
        let handle = JoinHandle {
            slot,
            task: Task {
                inner: task.clone(),
            },
        };
        executor::submit_new(shared, task);
        Ok(handle)
    }
}

/// Spawns a green thread running `f` and returns its join handle. The task
/// inherits its parent's credentials, nice value and affinity.
///
/// # Tasks migrate
/// The task may be moved to another CPU (another OS thread) at any greenos
/// call it makes. Do not hold a reference obtained from a `thread_local!`,
/// a `RefCell` borrow of one, a `std::sync::MutexGuard`, a `tracing` span
/// guard or anything else tied to the OS thread across such a call: after
/// the call it may belong to another thread (and the compiler may even keep
/// a thread-local's address from before the switch). Use
/// [`task_local!`](crate::task_local), which follows the task, or spawn with
/// [`Builder::pinned`] to stay on one CPU. This is a contract, like
/// Boost.Fiber's, not something the compiler checks; see the module docs.
///
/// Panics outside a greenos task (use [`Runtime::spawn`](crate::Runtime::spawn)
/// from an OS thread).
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .spawn(f)
        .expect("greenos::spawn: spawning with inherited settings failed")
}

// ---------------------------------------------------------------------------
// Asking about oneself.

/// Gives up the CPU to other runnable tasks (CFS `yield`: the caller is
/// passed over once if another task is runnable).
#[inline]
pub fn yield_now() {
    executor::yield_now();
}

/// Yields if the runtime asked this task to (its slice ran out, or a woken
/// task should preempt it). Long CPU loops should call it now and then.
/// Returns whether it yielded. Outside a task it returns false.
pub fn maybe_yield() -> bool {
    executor::maybe_yield()
}

/// Puts the task to sleep for at least `dur` (its CPU runs other tasks).
pub fn sleep(dur: Duration) {
    let task = executor::current_task("sleep");
    let deadline =
        executor::now().saturating_add(u64::try_from(dur.as_nanos()).unwrap_or(u64::MAX));
    let gen = task.begin_timed_wait();
    if !executor::arm_timer(task, deadline, gen) {
        return;
    }
    // An interruptible sleep: handlers run in it and it goes on (greenos's
    // sleep has no EINTR to report); a fatal signal ends it and unwinds.
    let mut pending = crate::signal::deliverable_pending(task);
    if executor::ANY_TRACING.load(Ordering::Relaxed) {
        executor::trace_block(task, crate::trace::BlockOn::Sleep, 0);
    }
    while !task.timed_out(gen)
        && !task.cancelled.load(Ordering::Relaxed)
        && !crate::signal::must_die(task)
    {
        if pending {
            let _ = crate::signal::deliver(task);
        } else {
            executor::park_current(task);
        }
        pending = crate::signal::deliverable_pending(task);
    }
    task.end_timed_wait(gen);
    crate::signal::checkpoint(task);
}

/// The calling task's pid (inside [`with_identity`], the identity's).
pub fn getpid() -> Pid {
    identity_of(executor::current_task("getpid")).pid
}

/// Who a task acts as: the pid and credentials that `getpid`, `getuid`,
/// `getgid` and every permission check see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Process id.
    pub pid: Pid,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The identity of `t`, which must be the calling task (every caller passes
/// the running task: its identity record lives in its body).
#[inline]
pub(crate) fn identity_of(t: &executor::task::Task) -> Identity {
    // SAFETY: `t` is the calling task, running (see above).
    let p = unsafe { t.ident() }.get();
    if p.is_null() {
        Identity {
            pid: t.pid,
            uid: t.uid,
            gid: t.gid,
        }
    } else {
        // SAFETY: a non-null `ident` points at the Identity of a live
        // `with_identity` frame of this very task (it is reset before that
        // frame ends), and only this task reads it.
        unsafe { *p }
    }
}

/// The calling task's identity now (its own, or the one a migrating call
/// runs it under). Panics outside a greenos task.
pub fn identity() -> Identity {
    identity_of(executor::current_task("identity"))
}

/// Runs `f` with the calling task acting as `id` — the migrating-thread
/// model (LRPC, ChCore): a server's code runs on the client's coroutine
/// and stack, but as the server. `getpid`, `getuid`, `getgid` and the
/// permission checks that use them see `id` until `f` returns or unwinds;
/// then the previous identity is back. Calls nest: each frame is the
/// linkage record of one level. The task's scheduling, signals and
/// affinity stay the caller's (`current().pid()` is the real pid).
/// Panics outside a greenos task.
pub fn with_identity<R>(id: Identity, f: impl FnOnce() -> R) -> R {
    with_identity_on(executor::current_task("with_identity"), id, f)
}

/// [`with_identity`] on `task`, which must be the calling task.
#[inline]
fn with_identity_on<R>(task: &TaskCb, id: Identity, f: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        task: &'a executor::task::Task,
        prev: *const Identity,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            // SAFETY: the calling task itself (see `with_identity_on`).
            unsafe { self.task.ident() }.set(self.prev);
        }
    }
    let frame = id;
    let _restore = Restore {
        task,
        // SAFETY: `task` is the calling task, running.
        prev: unsafe { task.ident() }.replace(&frame),
    };
    f()
}

/// The running task, looked up once and handed to a closure (see
/// [`with_cx`]): for hot paths that would otherwise look the current task
/// up several times (migrating RPC asks for the stack left, the identity,
/// a task-local and an identity switch on every call). Each lookup goes
/// through a non-inlined thread-local read (reference/coroutines.md §2.2:
/// a TLS *address* must not be cached across a switch); the task itself,
/// unlike the thread-local, stays the same across a switch, so holding it
/// is sound for as long as the task's own code runs — which the lifetime
/// `'a` (bound to one [`with_cx`] call) and `!Send` enforce.
#[derive(Clone, Copy)]
pub struct TaskCx<'a> {
    task: &'a TaskCb,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for TaskCx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCx")
            .field("pid", &self.task.pid)
            .finish_non_exhaustive()
    }
}

/// Runs `f` with a handle on the calling task ([`TaskCx`]), or returns
/// `None` outside a greenos task (without running `f`).
#[inline(always)]
pub fn with_cx<R>(f: impl for<'a> FnOnce(TaskCx<'a>) -> R) -> Option<R> {
    let t = executor::current_task_ptr();
    if t.is_null() {
        return None;
    }
    // SAFETY: a non-null current task pointer is the task running this
    // code; a counted reference to it is held (by its worker, or the
    // shutdown path) while it runs, and `f` runs as this task. The borrow
    // cannot leave `f` (higher-ranked lifetime, `TaskCx` is `!Send` and
    // not `'static`), so it is never used by another task.
    let task = unsafe { &*t };
    Some(f(TaskCx {
        task,
        _not_send: PhantomData,
    }))
}

/// [`with_cx`], returning `outside()` outside a greenos task: the result
/// of `f` is returned as it is, not wrapped in an `Option` (a large result
/// is then built in place rather than moved once more).
#[inline(always)]
pub fn with_cx_or_else<R>(
    f: impl for<'a> FnOnce(TaskCx<'a>) -> R,
    outside: impl FnOnce() -> R,
) -> R {
    let t = executor::current_task_ptr();
    if t.is_null() {
        return outside();
    }
    // SAFETY: as in `with_cx`.
    let task = unsafe { &*t };
    f(TaskCx {
        task,
        _not_send: PhantomData,
    })
}

impl<'a> TaskCx<'a> {
    /// [`identity`] for this task.
    #[inline]
    pub fn identity(self) -> Identity {
        identity_of(self.task)
    }

    /// [`with_identity`] for this task.
    #[inline]
    pub fn with_identity<R>(self, id: Identity, f: impl FnOnce() -> R) -> R {
        with_identity_on(self.task, id, f)
    }

    /// [`stack_remaining`] for this task, measured at the caller's frame
    /// (this is inlined into it).
    #[inline(always)]
    pub fn stack_remaining(self) -> Option<usize> {
        stack_left(self.task)
    }
}

/// Whether the caller is a greenos task (the cheap form of
/// `try_current().is_some()`: no reference is taken).
#[inline]
pub fn in_task() -> bool {
    !executor::current_task_ptr().is_null()
}

/// Bytes of stack left below the caller's current frame on its green
/// task's stack (down to the guard page), or `None` outside a task or when
/// running on a stack that is not the task's own (e.g. inside
/// `corosensei::on_stack`). Used by calls that run foreign code on the
/// caller's stack (migrating RPC) to fail cleanly instead of overflowing.
#[inline(never)]
pub fn stack_remaining() -> Option<usize> {
    let t = executor::current_task_ptr();
    if t.is_null() {
        return None;
    }
    // SAFETY: CURRENT is the running task (see current_task).
    stack_left(unsafe { &*t })
}

/// Bytes of stack left below the caller's frame on `t`'s stack (`t` is the
/// calling task); see [`stack_remaining`].
#[inline(always)]
fn stack_left(t: &TaskCb) -> Option<usize> {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: `t` is the calling task, running: its body is live.
    let (bottom, top) = unsafe { t.stack_bounds() };
    let (bottom, top) = (bottom.get(), top.get());
    if bottom == 0 || sp <= bottom || sp > top {
        return None;
    }
    Some(sp - bottom)
}

/// The calling task.
pub fn current() -> Task {
    Task {
        inner: executor::current_task_ref("current"),
    }
}

/// The calling task, or `None` when called from a thread that is not running
/// a greenos task (the non-panicking form of [`current`]).
pub fn try_current() -> Option<Task> {
    if executor::current_task_ptr().is_null() {
        return None;
    }
    Some(current())
}

/// The CPU (worker index) the calling task is running on now. It may differ
/// after any greenos call.
pub fn current_cpu() -> usize {
    let w = executor::current_worker_ptr();
    if w.is_null() || executor::current_task_ptr().is_null() {
        panic!("greenos::current_cpu must be called from a greenos task");
    }
    executor::current_cpu_index()
}

/// The calling task's user id.
pub fn getuid() -> u32 {
    identity_of(executor::current_task("getuid")).uid
}

/// The calling task's group id.
pub fn getgid() -> u32 {
    identity_of(executor::current_task("getgid")).gid
}

// ---------------------------------------------------------------------------
// Task-local storage.

/// A key for task-local storage; declare with [`task_local!`](crate::task_local).
/// Each task sees its own value, created on first access, dropped when the
/// task ends. Unlike a `thread_local!`, it follows the task across CPUs.
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
    slot: AtomicUsize,
    _not_send: PhantomData<*const T>,
}

// SAFETY: the key itself only holds an init fn pointer and a slot index.
unsafe impl<T: 'static> Sync for LocalKey<T> {}

static NEXT_LOCAL_SLOT: AtomicUsize = AtomicUsize::new(1);

/// The slot of the fast key (`LocalKey::with_cx_fast`); `usize::MAX` until
/// one is chosen. Read by every endpoint operation, on a cache line of its
/// own: a refactor that only moved statics around put it next to the
/// runtime registry's mutex in the bench binary, and with the same
/// machine code (callgrind: the same 849 instructions per round trip) the
/// endpoint's null call took 60 ns instead of 40.
static FAST_KEY: crossbeam_utils::CachePadded<AtomicUsize> =
    crossbeam_utils::CachePadded::new(AtomicUsize::new(usize::MAX));

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> LocalKey<T> {
        LocalKey {
            init,
            slot: AtomicUsize::new(0),
            _not_send: PhantomData,
        }
    }

    #[inline(always)]
    fn slot(&self) -> usize {
        let s = self.slot.load(Ordering::Acquire);
        if s != 0 {
            return s - 1;
        }
        self.assign_slot()
    }

    /// First use of the key anywhere: takes the next free slot index.
    #[cold]
    #[inline(never)]
    fn assign_slot(&self) -> usize {
        let new = NEXT_LOCAL_SLOT.fetch_add(1, Ordering::Relaxed);
        match self
            .slot
            .compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => new - 1,
            Err(won) => won - 1,
        }
    }

    /// Runs `f` with this task's value. Panics outside a greenos task.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.with_on(executor::current_task("task_local::with"), f)
    }

    /// [`with`](Self::with) for the task `cx` names (no second lookup of
    /// the current task).
    #[inline(always)]
    pub fn with_cx<R>(&'static self, cx: TaskCx<'_>, f: impl FnOnce(&T) -> R) -> R {
        self.with_on(cx.task, f)
    }

    /// [`with_cx`](Self::with_cx) for the hottest key of a program: the
    /// first key that uses this method becomes the *fast key*, whose value
    /// each task then reaches with two loads from its control block
    /// (against four through the task's slot vector). Any other key using
    /// it is served as by `with_cx`. For per-task state that every
    /// operation of a layer reads first (the IPC crate's): there, the
    /// chain of dependent loads from the running task to that state is the
    /// latency of the whole operation.
    #[inline(always)]
    pub fn with_cx_fast<R>(&'static self, cx: TaskCx<'_>, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: the running task's own body (as in `with_on`).
        let fast = unsafe { (*cx.task.fast_local_slot()).get() };
        if !fast.is_null() && FAST_KEY.load(Ordering::Relaxed) == self.slot() {
            // SAFETY: the fast word is set only to the fast key's value of
            // this task (`fast_slot`), which lives until its locals are
            // dropped, and `drop_locals` clears the word before each drop;
            // the key is `FAST_KEY`'s, so the value is a `T`.
            return f(unsafe { &*(fast as *const T) });
        }
        let p = self.fast_slot(cx.task);
        // SAFETY: as in `with_on`: a live, boxed value of this task.
        f(unsafe { &*p })
    }

    /// [`with_cx_fast`](Self::with_cx_fast) without a [`TaskCx`]: the
    /// fast key's value is read from the running worker's copy of the
    /// word, three dependent loads from the thread (against five through
    /// the task); `outside()` is returned outside a greenos task.
    #[inline(always)]
    pub fn with_fast_or<R>(
        &'static self,
        f: impl FnOnce(&T) -> R,
        outside: impl FnOnce() -> R,
    ) -> R {
        self.with_fast_here_or(
            #[inline(always)]
            |v, _| f(v),
            outside,
        )
    }

    /// [`with_fast_or`](Self::with_fast_or), also handing `f` a
    /// [`Here`](crate::wait::Here) read in the same thread-local access:
    /// for an operation that then takes a `BiasedSpinLock` and parks.
    #[inline(always)]
    pub fn with_fast_here_or<R>(
        &'static self,
        f: impl FnOnce(&T, crate::wait::Here) -> R,
        outside: impl FnOnce() -> R,
    ) -> R {
        let (w, fast) = executor::current_worker_and_fast();
        let mut p = fast as *const T;
        if p.is_null() || FAST_KEY.load(Ordering::Relaxed) != self.slot() {
            p = self.fast_ptr_slow();
            if p.is_null() {
                return outside();
            }
        }
        // SAFETY: `p` is this task's value of this key: the worker's copy
        // of the running task's fast word (`WorkerCell::current_fast`,
        // the fast key's value while the task lives, as in `with_cx_fast`)
        // or found by `fast_ptr_slow`; it lives until the task ends, after
        // `f` returns. (`f` is called from one place: it is inlined once.)
        f(unsafe { &*p }, crate::wait::Here { w })
    }

    /// [`with_fast_or`](Self::with_fast_or)'s value the long way (the
    /// current task, then its fast word or slot vector), or null outside
    /// a greenos task.
    #[inline(never)]
    fn fast_ptr_slow(&'static self) -> *const T {
        with_cx_or_else(
            |cx| self.with_cx_fast(cx, |v| v as *const T),
            std::ptr::null,
        )
    }

    /// [`with_cx_fast`](Self::with_cx_fast) when the fast word is not set
    /// for this key: finds the value the ordinary way, and makes this key
    /// the fast key if there is none yet, filling the word.
    #[inline(never)]
    fn fast_slot(&'static self, task: &TaskCb) -> *const T {
        let p = self.with_on(task, |v| v as *const T);
        let slot = self.slot();
        let owner =
            match FAST_KEY.compare_exchange(usize::MAX, slot, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => slot,
                Err(o) => o,
            };
        if owner == slot {
            // SAFETY: the running task itself (as in `with_on`).
            unsafe { task.set_fast_local(p as *const ()) };
        }
        p
    }

    /// [`with`](Self::with) on `task`, which must be the calling task.
    /// Inlined whole (`f` included: an IPC call's switch runs inside it,
    /// and must sit in the caller's frame); the first use's set-up is out
    /// of line (`init_slot`).
    #[inline(always)]
    fn with_on<R>(&'static self, task: &TaskCb, f: impl FnOnce(&T) -> R) -> R {
        let slot = self.slot();
        let locals = task.locals_slot();
        // SAFETY: only the running task touches its locals; values are boxed
        // and never moved or freed before the task ends, so the reference we
        // hand out stays valid even if `f` touches other keys (which may grow
        // the vector of pointers, not the values).
        let existing = unsafe {
            (*locals)
                .as_ref()
                .and_then(|v| v.get(slot).copied().flatten())
        };
        let ptr = match existing {
            Some(p) => p,
            None => self.init_slot(task, slot),
        };
        // The slot is this key's alone (`slot` hands each key its own index)
        // and only this key stores into it, always a `Box<T>`: the data
        // pointer of that `dyn Any` is a `T`, so no type check (a `type_id`
        // call through the vtable) is needed.
        // SAFETY: as just said, `ptr` points at a live `T`, alive until the
        // task ends (see above).
        unsafe {
            debug_assert!((*ptr.as_ptr()).is::<T>());
            f(&*(ptr.as_ptr() as *const T))
        }
    }

    /// First use of this key by `task` (the calling task): creates the
    /// value and stores it in slot `slot`.
    #[cold]
    #[inline(never)]
    fn init_slot(&'static self, task: &TaskCb, slot: usize) -> NonNull<dyn Any> {
        // `init` may itself use task-locals, so no borrow of the vector is
        // held across it.
        let v: Box<dyn Any> = Box::new((self.init)());
        // SAFETY: Box::into_raw is never null.
        let p = unsafe { NonNull::new_unchecked(Box::into_raw(v)) };
        // SAFETY: only the running task (the caller) touches its locals, and
        // no borrow of the vector is alive here.
        let v = unsafe { (*task.locals_slot()).get_or_insert_with(Box::default) };
        if v.len() <= slot {
            v.resize(slot + 1, None);
        }
        v[slot] = Some(p);
        p
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

/// Declares task-local statics, like `thread_local!`:
///
/// ```
/// use std::cell::Cell;
/// greenos_runtime::task_local! {
///     static COUNTER: Cell<u32> = Cell::new(0);
/// }
/// ```
#[macro_export]
macro_rules! task_local {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])* $vis static $name: $crate::task::LocalKey<$t> =
            $crate::task::LocalKey::new(|| $init);
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::task_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
    () => {};
}

// ---------------------------------------------------------------------------
// Placement.

/// The task `pid` names (`Pid(0)`: the caller), checked for permission the
/// way the kernel checks `sched_setaffinity` / `setpriority`: the caller must
/// be root or have the target's uid (EPERM); an unknown pid is ESRCH.
fn target_task(pid: Pid, what: &str) -> io::Result<(TaskRef, bool)> {
    let me = executor::current_task_ref(what);
    if pid.0 == 0 || pid == me.pid {
        return Ok((me, true));
    }
    let shared = executor::runtime_of(&me).ok_or_else(|| errno(libc::ESRCH))?;
    let t = shared.table.get(pid).ok_or_else(|| errno(libc::ESRCH))?;
    if identity_of(&me).uid != 0 && identity_of(&me).uid != t.uid {
        return Err(errno(libc::EPERM));
    }
    Ok((t, false))
}

/// Sets the CPUs task `pid` may run on (`Pid(0)`: the caller), like
/// sched_setaffinity(2). A task never runs on a CPU outside its mask; a
/// caller that narrows its own mask away from its current CPU moves before
/// it runs again, and a queued task moves when its CPU next looks at it.
/// Errors: EINVAL if `set` has no CPU of this runtime, ESRCH for an unknown
/// pid, EPERM without permission. Panics outside a greenos task.
pub fn sched_setaffinity(pid: Pid, set: &CpuSet) -> io::Result<()> {
    let (task, is_self) = target_task(pid, "sched_setaffinity")?;
    let n = executor::runtime_of(&task)
        .map(|s| s.nr_cpus())
        .ok_or_else(|| errno(libc::ESRCH))?;
    if set.iter().all(|c| c >= n) {
        return Err(errno(libc::EINVAL));
    }
    task.allowed.store(set);
    if is_self && !task.allowed_on(executor::current_cpu_index()) {
        executor::yield_to_migrate();
    }
    Ok(())
}

/// The caller's uid (`target` itself when it is the caller).
fn caller_uid(target: &TaskRef, is_self: bool, what: &str) -> u32 {
    if is_self {
        target.uid
    } else {
        executor::current_task_ref(what).uid
    }
}

fn sched_target(t: &TaskRef) -> SchedTarget {
    SchedTarget {
        uid: t.uid,
        policy: t.policy(),
        nice: t.nice.load(Ordering::Relaxed),
    }
}

/// Sets the scheduling policy of task `pid` (`Pid(0)`: the caller), like
/// sched_setscheduler(2). The caller's own change applies at once (it
/// switches out and back in under the new policy); another task's applies
/// at its next scheduling point (when it next switches out or wakes up),
/// since its run queue belongs to its CPU. Errors: EINVAL for an RT
/// priority outside 1–99, ESRCH for an unknown pid, EPERM for another
/// user's task, or when a non-root caller asks for RT, a higher RT
/// priority, or to leave `SchedPolicy::Idle` (Linux's defaults:
/// `RLIMIT_RTPRIO` and `RLIMIT_NICE` 0). Panics outside a greenos task.
pub fn sched_setscheduler(pid: Pid, policy: SchedPolicy) -> io::Result<()> {
    const WHAT: &str = "sched_setscheduler";
    let (task, is_self) = target_task(pid, WHAT)?;
    check_setscheduler(
        caller_uid(&task, is_self, WHAT),
        &sched_target(&task),
        policy,
    )?;
    task.policy.store(encode_policy(policy), Ordering::Relaxed);
    task.sched_dirty.store(true, Ordering::Release);
    if is_self {
        executor::yield_to_migrate();
    }
    Ok(())
}

/// The scheduling policy of task `pid` (`Pid(0)`: the caller), like
/// sched_getscheduler(2) + sched_getparam(2). Errors: ESRCH.
pub fn sched_getscheduler(pid: Pid) -> io::Result<SchedPolicy> {
    let (task, _) = target_task(pid, "sched_getscheduler")?;
    Ok(task.policy())
}

/// Sets the nice value of task `pid` (`Pid(0)`: the caller), like
/// setpriority(PRIO_PROCESS, ..). Applies like
/// [`sched_setscheduler`]. Errors: EINVAL for a nice outside -20..=19
/// (Linux clamps; greenos rejects, as `Builder::nice` does), ESRCH, EPERM
/// for another user's task, EACCES when a non-root caller lowers the value
/// (as setpriority(2) says). Panics outside a greenos task.
pub fn setpriority(pid: Pid, nice: i32) -> io::Result<()> {
    const WHAT: &str = "setpriority";
    let (task, is_self) = target_task(pid, WHAT)?;
    check_setpriority(caller_uid(&task, is_self, WHAT), &sched_target(&task), nice)?;
    task.nice.store(nice, Ordering::Relaxed);
    task.sched_dirty.store(true, Ordering::Release);
    if is_self {
        executor::yield_to_migrate();
    }
    Ok(())
}

/// The nice value of task `pid` (`Pid(0)`: the caller), like
/// getpriority(PRIO_PROCESS, ..) (but the value itself, not `20 - nice`).
/// Errors: ESRCH.
pub fn getpriority(pid: Pid) -> io::Result<i32> {
    let (task, _) = target_task(pid, "getpriority")?;
    Ok(task.nice.load(Ordering::Relaxed))
}

/// The CPUs task `pid` may run on (`Pid(0)`: the caller), like
/// sched_getaffinity(2). Errors: ESRCH for an unknown pid.
pub fn sched_getaffinity(pid: Pid) -> io::Result<CpuSet> {
    let (task, _) = target_task(pid, "sched_getaffinity")?;
    Ok(task.allowed.load())
}
