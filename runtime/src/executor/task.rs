//! The task control block (`Task`), what the kernel calls `task_struct`.
//!
//! Ownership rules (who may touch which field):
//! - `pid`, `name`, `stack_size`, credentials: immutable after spawn.
//! - `state`: atomic; see [`super::state`].
//! - `sched` (the scheduling entity and the coroutine): only the worker that
//!   currently *owns* the task touches it — the worker whose run queue holds
//!   it, or that runs it. Ownership moves with the task through a run queue,
//!   an inbox or a steal, each of which is a release/acquire hand-off, so
//!   there is never a concurrent access. A parked task is owned by nobody
//!   until the waker that wins `PARKED -> RUNNABLE` enqueues it.
//! - The body (`TaskBody`: the scheduler-owned part, the coroutine slot,
//!   the task-locals, the migrating-call identity and the join target,
//!   more than half of a task's memory) is a separate allocation that its
//!   worker frees when the task exits (`Task::free_body`), as the kernel
//!   frees a dead task's stack and mm while its `task_struct` waits for
//!   the parent's `wait()`: a finished task that is not joined yet (a
//!   zombie, held by its join handle) keeps only the control block. Nothing
//!   reaches the body of an exited task: it is in no queue, its state word
//!   never leaves `RUNNABLE` again (so no wakeup can win it) and its pid is
//!   out of the table (debug builds check it in `Task::sched`).
//! - References: a running or queued task's reference is held by its CPU
//!   (or the queue). When a park completes, the parked task keeps that
//!   reference itself (leaked with `into_raw`), and the waker that wins
//!   `PARKED -> RUNNABLE` takes it over (`take_parked_ref`): a park and its
//!   wakeup touch no reference count. Shutdown takes it back from tasks
//!   that are still parked (`executor::cancel_task`).
//! - `wait_word`: atomic; timed waits (see `crate::wait`).
//! - `locals`: only the task itself, while it runs.

use std::any::Any;
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use corosensei::{Coroutine, Yielder};

use super::stack::PooledStack;
use super::state::TaskState;
use crate::sched::{SchedPolicy, TaskEntity};
use crate::Pid;

/// What a task asks of its worker when it switches out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// `yield_now`: stay runnable, let others run first (CFS skip buddy).
    Yield,
    /// The yield a blocking call makes before it parks
    /// (`wait::before_park`): as `Yield`, but the scheduler passes over the
    /// caller more readily (`SchedClass::yield_blocking`).
    YieldBlocking,
    /// Preempted at a yield point because `need_resched` was set: stay
    /// runnable, no skip buddy.
    Preempt,
    /// Sleep: `begin_park` found no pending wakeup; the worker completes
    /// the park (`finish_park`).
    Park,
}

/// Packs a policy into a word: kind in the low byte, RT priority above.
pub(crate) fn encode_policy(p: SchedPolicy) -> u32 {
    let kind = match p {
        SchedPolicy::Normal => 0,
        SchedPolicy::Batch => 1,
        SchedPolicy::Idle => 2,
        SchedPolicy::Fifo { .. } => 3,
        SchedPolicy::RoundRobin { .. } => 4,
    };
    kind | u32::from(p.rt_priority()) << 8
}

/// Inverse of [`encode_policy`].
pub(crate) fn decode_policy(w: u32) -> SchedPolicy {
    let priority = (w >> 8) as u8;
    match w & 0xff {
        1 => SchedPolicy::Batch,
        2 => SchedPolicy::Idle,
        3 => SchedPolicy::Fifo { priority },
        4 => SchedPolicy::RoundRobin { priority },
        _ => SchedPolicy::Normal,
    }
}

/// The coroutine a started task runs in.
pub(crate) type Coro = Coroutine<(), Request, (), PooledStack>;

/// The yielder handed to a task body; `suspend` switches to the worker.
pub(crate) type TaskYielder = Yielder<(), Request>;

/// The type-erased body of a task: runs the user closure and delivers its
/// result to the join handle. It shares one allocation with the join
/// handle's result slot (the handle holds the same `Arc`).
pub(crate) trait TaskEntry: Send + Sync {
    /// Runs the body on the task's own stack (once).
    fn run(&self);
    /// Drops the body unrun and reports cancellation to the joiner.
    fn cancel(&self);
}

/// A task's body, cancelled if dropped before it ran.
pub(crate) struct Entry(pub(crate) Arc<dyn TaskEntry>);

impl Entry {
    /// Runs the body.
    pub(crate) fn run(self) {
        self.0.run();
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // After `run` this finds the body gone and does nothing.
        self.0.cancel();
    }
}

/// Scheduler-owned part of a task (see the module doc for who owns it).
pub(crate) struct SchedPart {
    /// The scheduling entity of every class (`ent.se`: the fair part with
    /// vruntime, weight and exec times).
    pub(crate) ent: TaskEntity,
    /// True while the entity is bound to no run queue (a new or a migrating
    /// task; for CFS, `ent.se.vruntime` is then relative): the next enqueue
    /// calls the queue's `migrate_in` first.
    pub(crate) vruntime_relative: bool,
    /// The body, until the task first runs.
    pub(crate) entry: Option<Entry>,
    /// PELT series of the task (`se->avg`); attached to its CPU's queue
    /// while `vruntime_relative` is false (see `executor::lb`).
    pub(crate) avg: crate::sched::pelt::SchedAvg,
    /// The CPU whose [`InFlight`](super::lb::InFlight) words count this
    /// task while a balancing move carries it there (sent, not yet
    /// enqueued), or [`NOT_IN_FLIGHT`](super::lb::NOT_IN_FLIGHT).
    pub(crate) in_flight_to: usize,
}

/// The part of a task that only a live task needs: the scheduler-owned
/// state, the coroutine and the fields only the task itself uses. Freed at
/// exit (see the module doc).
pub(crate) struct TaskBody {
    /// Scheduler-owned part.
    sched: SchedPart,
    /// The coroutine, from first run until exit. Owned like `sched`, but
    /// reached through its own raw pointer: the worker holds `&mut` to it
    /// across `resume` while the task's own code may reach its scheduling
    /// entity.
    coro: Option<Coro>,
    /// Task-local storage slots (see `crate::task::LocalKey`), each a leaked
    /// `Box` freed when the task ends. Raw pointers, so growing the vector
    /// never retags a value a caller still borrows. The vector itself is
    /// boxed on first use: most tasks never use a task-local. Only the task
    /// itself touches it, while it runs.
    locals: Option<Box<LocalSlots>>,
    /// The value of the fast task-local key (`task::LocalKey::with_cx_fast`),
    /// reached by two loads from the task instead of four, or null. Only
    /// the task itself reads or writes it, while it runs (as `locals`); it
    /// is cleared before each task-local value is dropped (`drop_locals`),
    /// so it never outlives what it points at.
    fast_local: Cell<*const ()>,
    /// The identity the task runs under inside a migrating call
    /// (`crate::task::with_identity`), null outside one. Points into the
    /// task's own stack; only the task reads or writes it.
    ident: Cell<*const crate::task::Identity>,
    /// The task this one is joining (null otherwise): set by
    /// `JoinHandle::join` around its wait, read by the worker when the
    /// joiner parks, to run the joined task next (a directed yield). The
    /// joiner's handle keeps the target alive for as long as it is set.
    join_target: Cell<*const Task>,
    /// The yielder of the running coroutine (valid while the coroutine
    /// lives); read by the task itself when it switches out.
    yielder: Cell<*const TaskYielder>,
    /// Lowest usable address of the task's stack (guard page excluded), set
    /// when the stack is attached at first run; 0 before (see
    /// `crate::task::stack_remaining`). Only the task and its owner touch
    /// it.
    stack_bottom: Cell<usize>,
    /// Top (highest address) of the task's stack; 0 before first run.
    stack_top: Cell<usize>,
}

/// A task's name: a box of a box, so that the control block holds a thin
/// pointer (most tasks have no name; named ones pay one more allocation).
#[derive(Debug)]
struct TaskName(Box<str>);

/// A green thread's control block.
pub(crate) struct Task {
    /// Process id, unique within the runtime.
    pub(crate) pid: Pid,
    /// Id of the runtime the task belongs to (see `executor::runtimes`).
    pub(crate) rt_id: u64,
    /// Name given at spawn (`task::Builder::name`), behind a thin pointer
    /// (8 bytes in every control block; see [`name`](Self::name)).
    name: Option<Box<TaskName>>,
    /// Requested usable stack size in bytes.
    pub(crate) stack_size: u32,
    /// User id (credentials, inherited by spawned tasks).
    pub(crate) uid: u32,
    /// Group id.
    pub(crate) gid: u32,
    /// Nice value, -20..=19 (mirrors `ent.se.nice`, readable by anyone;
    /// `setpriority` writes the requested value here first).
    pub(crate) nice: std::sync::atomic::AtomicI32,
    /// Scheduling policy, encoded (`encode_policy`); mirrors `ent.policy`
    /// as `nice` does.
    pub(crate) policy: AtomicU32,
    /// `nice` or `policy` was changed by `setpriority` /
    /// `sched_setscheduler` and the entity does not reflect it yet: the
    /// owner applies it at the task's next scheduling point (switch-out or
    /// enqueue), when the entity is off its queue.
    pub(crate) sched_dirty: AtomicBool,
    /// Run-ownership state word.
    pub(crate) state: TaskState,
    /// The CPU the task last ran or was queued on.
    pub(crate) cpu: AtomicUsize,
    /// Timed-wait generation and timeout flag: `gen << 1 | timed_out`.
    pub(crate) wait_word: AtomicU64,
    /// CPUs the task may run on.
    pub(crate) allowed: super::affinity::TaskMask,
    /// `Builder::pinned`: narrow `allowed` to the first CPU it runs on.
    pub(crate) pinned: bool,
    /// Total CPU time the task has run (ns), mirrored from its scheduling
    /// entity at every switch-out so anyone may read it.
    pub(crate) sum_exec_ns: AtomicU64,
    /// Set when the runtime cancels the task (shutdown) or a fatal signal
    /// kills it: every wait returns at once.
    pub(crate) cancelled: AtomicBool,
    /// The spawning task's pid (0: spawned from outside the runtime).
    pub(crate) ppid: u64,
    /// Signal state (see `crate::signal`).
    pub(crate) sig: crate::signal::TaskSignals,
    /// Times the task was switched in (written by its owning CPU).
    pub(crate) nr_switches: AtomicU64,
    /// Times the task arrived runnable on another CPU.
    pub(crate) nr_migrations: AtomicU64,
    /// Time spent runnable but waiting for a CPU after a yield or
    /// preemption, or after a wakeup timestamped by its CPU (ns).
    pub(crate) wait_sum_ns: AtomicU64,
    /// When the task was last queued with a timestamp (0: not known).
    pub(crate) queued_at: AtomicU64,
    /// Its `vruntime`, mirrored at every switch-out for readers.
    pub(crate) vruntime_seen: AtomicU64,
    /// The body (`Box::into_raw`), null once freed at exit. Written only
    /// by its owner (see the module doc); atomic only so that `Task` stays
    /// `Sync` without a second `unsafe impl` argument.
    body: AtomicPtr<TaskBody>,
    /// The CPU whose run-queue tree holds this task ([`NOT_QUEUED`]: none;
    /// not in a tree while it runs, sleeps or travels). Only that CPU's
    /// worker writes it, at every insertion into and removal from its tree,
    /// so a worker that reads its own index here owns the task (the check
    /// a directed yield makes before touching a task it did not pick).
    pub(crate) rq_cpu: AtomicU32,
}

/// [`Task::rq_cpu`] of a task in no run-queue tree.
pub(crate) const NOT_QUEUED: u32 = u32::MAX;

impl Drop for Task {
    fn drop(&mut self) {
        // A task that never ran to its exit on a worker (cancelled unrun,
        // or its runtime shut down) still has its body.
        // SAFETY: the last reference is going away: nobody else owns it.
        unsafe { self.free_body() };
    }
}

/// Recycles the allocations of freed task bodies: a magazine cache
/// (Bonwick and Adams, "Magazines and Vmem", 2001). Each thread keeps up to
/// two magazines of free bodies; full magazines go to a process-wide depot
/// and empty threads take them back, one lock per [`MAGAZINE`] bodies.
/// Without it a body spawned on one CPU and freed at exit on another went
/// through glibc's arena lock both ways, which doubled the cost of a
/// spawn+join of a million tasks on two workers.
mod body_cache {
    use std::cell::RefCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::TaskBody;

    /// Bodies per magazine.
    pub(super) const MAGAZINE: usize = 64;
    /// Full magazines the depot keeps (4096 bodies, about 1.2 MB); more
    /// are freed.
    const DEPOT_MAGAZINES: usize = 64;

    /// A free body's allocation (its contents already dropped).
    struct Slot(Box<MaybeUninit<TaskBody>>);

    // SAFETY: a slot holds no value, only uninitialised memory of a
    // `TaskBody`'s layout; moving that between threads moves nothing that
    // is thread-bound.
    unsafe impl Send for Slot {}

    thread_local! {
        static LOCAL: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
    }

    static DEPOT: parking_lot::Mutex<Vec<Vec<Slot>>> = parking_lot::const_mutex(Vec::new());
    /// The depot's length as of its last change (stored under its lock):
    /// an allocation that finds it zero skips the lock. A spawner that
    /// outruns the exits (its magazine empty, the depot too) would
    /// otherwise take and release the lock, two locked instructions, on
    /// every spawn. Stale either way it only costs a lock or a `malloc`.
    static DEPOT_LEN: AtomicUsize = AtomicUsize::new(0);

    /// Free bodies cached by this thread.
    #[cfg(test)]
    pub(super) fn local_len() -> usize {
        LOCAL.with(|l| l.borrow().len())
    }

    /// Moves `body` into a recycled allocation (or a new one).
    pub(super) fn alloc(body: TaskBody) -> *mut TaskBody {
        let slot = LOCAL
            .try_with(|l| {
                let mut l = l.borrow_mut();
                if l.is_empty() && DEPOT_LEN.load(Ordering::Relaxed) != 0 {
                    let mut depot = DEPOT.lock();
                    if let Some(full) = depot.pop() {
                        *l = full;
                    }
                    DEPOT_LEN.store(depot.len(), Ordering::Relaxed);
                }
                l.pop()
            })
            .ok()
            .flatten();
        let mut b = slot.map_or_else(Box::new_uninit, |s| s.0);
        b.write(body);
        // SAFETY: initialised just above.
        Box::into_raw(unsafe { b.assume_init() })
    }

    /// Drops the body and keeps its allocation for reuse.
    ///
    /// # Safety
    /// `body` came from [`alloc`], is freed once, and nothing refers to it.
    pub(super) unsafe fn free(body: *mut TaskBody) {
        // SAFETY: caller contract: a live, unshared body from `alloc`.
        unsafe { std::ptr::drop_in_place(body) };
        // SAFETY: the allocation came from a `Box<TaskBody>`, whose layout
        // `MaybeUninit<TaskBody>` shares; its value was dropped above.
        let slot = Slot(unsafe { Box::from_raw(body.cast::<MaybeUninit<TaskBody>>()) });
        // A thread whose cache is gone (exiting) frees the slot instead.
        let _ = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            if l.len() >= 2 * MAGAZINE {
                let keep = l.len() - MAGAZINE;
                let full = l.split_off(keep);
                let mut depot = DEPOT.lock();
                if depot.len() < DEPOT_MAGAZINES {
                    depot.push(full);
                    DEPOT_LEN.store(depot.len(), Ordering::Relaxed);
                }
            }
            l.push(slot);
        });
    }
}

/// The panic of [`Task::sched`] on an exited task.
#[cold]
#[inline(never)]
fn body_freed(pid: Pid) -> ! {
    panic!("greenos: internal error: scheduler state of exited task {pid:?} used after exit");
}

// SAFETY: the `Cell` field and the body behind `body` follow the ownership
// rules in the module doc: the body's scheduling part and coroutine, and
// `yielder`, are touched only by the single worker that owns the task at
// that moment (ownership is handed over with acquire/release through run
// queues, inboxes and the `state` word); the body's `locals`, `ident` and
// `join_target` only by the task itself while it runs (and `join_target`
// by its worker when it parks). `Box<dyn Any>` in `locals` need not be
// `Send` for the same reason a `thread_local!` need not be: only its own
// task reaches it, on whichever CPU that task runs (the documented
// migration contract).
unsafe impl Send for Task {}
// SAFETY: see `Send`; shared access from other threads only reads immutable
// fields or uses atomics.
unsafe impl Sync for Task {}

/// A task's task-local slots, indexed by `LocalKey` slot number.
pub(crate) type LocalSlots = Vec<Option<NonNull<dyn Any>>>;

/// A counted reference to a task.
pub(crate) type TaskRef = Arc<Task>;

/// Everything a new task needs.
pub(crate) struct TaskInit {
    pub(crate) pid: Pid,
    pub(crate) rt_id: u64,
    pub(crate) name: Option<Box<str>>,
    pub(crate) stack_size: usize,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nice: i32,
    pub(crate) policy: SchedPolicy,
    /// EEVDF slice request (ns; 0: the base slice).
    pub(crate) slice_ns: u64,
    pub(crate) cpu: usize,
    pub(crate) allowed: super::affinity::TaskMask,
    pub(crate) pinned: bool,
    /// The spawning task's pid (0: spawned from outside the runtime).
    pub(crate) ppid: u64,
    /// The inherited signal state.
    pub(crate) sig: crate::signal::TaskSignals,
}

/// A raw pointer to field `$f` of `$task`'s body: pointer arithmetic only,
/// so it is safe to form; dereferencing it needs the body live (the task
/// has not exited) and the field's own access rule.
macro_rules! body_field {
    ($task:expr, $f:ident) => {
        $task
            .body_ptr()
            .cast::<u8>()
            .wrapping_add(std::mem::offset_of!(TaskBody, $f))
            .cast()
    };
}

impl Task {
    pub(crate) fn new(init: TaskInit, entry: Arc<dyn TaskEntry>) -> TaskRef {
        Arc::new(Task {
            pid: init.pid,
            rt_id: init.rt_id,
            name: init.name.map(|n| Box::new(TaskName(n))),
            // Spawn checked it against `MAX_STACK_SIZE` (1 GiB).
            stack_size: u32::try_from(init.stack_size).unwrap_or(u32::MAX),
            uid: init.uid,
            gid: init.gid,
            nice: std::sync::atomic::AtomicI32::new(init.nice),
            policy: AtomicU32::new(encode_policy(init.policy)),
            sched_dirty: AtomicBool::new(false),
            state: TaskState::new(),
            cpu: AtomicUsize::new(init.cpu),
            wait_word: AtomicU64::new(0),
            allowed: init.allowed,
            pinned: init.pinned,
            sum_exec_ns: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            ppid: init.ppid,
            sig: init.sig,
            nr_switches: AtomicU64::new(0),
            nr_migrations: AtomicU64::new(0),
            wait_sum_ns: AtomicU64::new(0),
            queued_at: AtomicU64::new(0),
            vruntime_seen: AtomicU64::new(0),
            body: AtomicPtr::new(body_cache::alloc(TaskBody {
                sched: SchedPart {
                    ent: {
                        let mut e = TaskEntity::new(init.nice, init.policy);
                        e.eevdf_mut().request_slice(init.slice_ns);
                        e
                    },
                    vruntime_relative: true,
                    in_flight_to: super::lb::NOT_IN_FLIGHT,
                    entry: Some(Entry(entry)),
                    avg: crate::sched::pelt::SchedAvg::new_task(
                        crate::sched::LoadWeight::from_nice(init.nice).weight,
                    ),
                },
                coro: None,
                locals: None,
                fast_local: Cell::new(std::ptr::null()),
                ident: Cell::new(std::ptr::null()),
                join_target: Cell::new(std::ptr::null()),
                yielder: Cell::new(std::ptr::null()),
                stack_bottom: Cell::new(0),
                stack_top: Cell::new(0),
            })),
            rq_cpu: AtomicU32::new(NOT_QUEUED),
        })
    }

    /// The scheduler-owned part.
    ///
    /// # Safety
    /// The caller must own the task in the sense of the module doc (it is the
    /// worker that holds it in its run queue, runs it, or has just won it from
    /// an inbox, steal or wakeup), must not let two returned references live
    /// at once, and must keep the task alive for `'a` (the lifetime is not
    /// tied to `&self` so that the owning `Arc` may move into a queue while
    /// the entity is still being updated; the queue then keeps it alive).
    /// The task must not have exited (its body is freed then; debug builds
    /// panic instead of reading freed memory).
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn sched<'a>(&self) -> &'a mut SchedPart {
        let body = self.body_ptr();
        // SAFETY: the body is live and exclusivity is the caller's contract
        // (see above); the reference covers the `sched` field only, never
        // the coroutine beside it.
        unsafe { &mut (*body).sched }
    }

    /// The body (checked live in debug builds; see `sched`'s contract).
    #[inline(always)]
    fn body_ptr(&self) -> *mut TaskBody {
        let body = self.body.load(Ordering::Relaxed);
        if cfg!(debug_assertions) && body.is_null() {
            body_freed(self.pid);
        }
        body
    }

    /// Frees the body of a task that exited (see the module doc): its
    /// scheduling entity, its (finished, emptied) coroutine slot and its
    /// (emptied) task-local vector.
    ///
    /// # Safety
    /// The caller owns the task (`sched`'s contract), the task has exited
    /// (its coroutine returned and was taken, or never started) and is in
    /// no run queue, and no pointer or reference from `sched`,
    /// `coro_slot`, `locals_slot`, `ident` or `join_target` is used after
    /// this call.
    pub(crate) unsafe fn free_body(&self) {
        let body = self.body.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !body.is_null() {
            // SAFETY: from `body_cache::alloc` in `new`, freed once
            // (swapped out); no borrow of it outlives this call (caller
            // contract).
            unsafe { body_cache::free(body) };
        }
    }

    /// The reference a parked task kept when its worker completed the park
    /// (`FinishPark::Parked`), taken over by the waker that won the task's
    /// PARKED -> RUNNABLE: a park and its wakeup touch no reference count.
    ///
    /// # Safety
    /// The caller's [`TaskState::wake`] returned `Enqueue` for this task
    /// (or, at shutdown, the caller otherwise took the task out of
    /// PARKED), and it takes the reference exactly once.
    #[inline]
    pub(crate) unsafe fn take_parked_ref(&self) -> TaskRef {
        // SAFETY: the worker leaked exactly this `Arc` (`TaskRef::into_raw`)
        // when the park completed; winning PARKED -> RUNNABLE makes the
        // caller its only taker.
        unsafe { Arc::from_raw(self as *const Task) }
    }

    /// Whether the task may run on `cpu`.
    #[inline]
    pub(crate) fn allowed_on(&self, cpu: usize) -> bool {
        self.allowed.allows(cpu)
    }

    /// The coroutine slot; same contract as [`Task::sched`].
    #[inline]
    pub(crate) fn coro_slot(&self) -> *mut Option<Coro> {
        body_field!(self, coro)
    }

    /// The task-local slots (the task itself, while it runs; see
    /// `TaskBody::locals`). Dereferencing needs the body live (the task has
    /// not exited), as for [`Task::sched`].
    #[inline]
    pub(crate) fn locals_slot(&self) -> *mut Option<Box<LocalSlots>> {
        body_field!(self, locals)
    }

    /// The fast task-local word (`TaskBody::fast_local`); same contract
    /// as [`locals_slot`](Self::locals_slot).
    #[inline]
    pub(crate) fn fast_local_slot(&self) -> *const Cell<*const ()> {
        body_field!(self, fast_local)
    }

    /// The fast task-local word, or null (also once the body is freed).
    #[inline]
    pub(crate) fn fast_local(&self) -> *const () {
        if self.body.load(Ordering::Relaxed).is_null() {
            return std::ptr::null();
        }
        // SAFETY: the body is live (checked just now; only its owner
        // frees it, and the owner is the one asking or holds the task).
        unsafe { (*self.fast_local_slot()).get() }
    }

    /// Sets the fast task-local word (the task itself, running), keeping
    /// its worker's copy equal (`WorkerCell::current_fast`).
    ///
    /// # Safety
    /// As for [`drop_locals`](Self::drop_locals): the running task itself.
    pub(crate) unsafe fn set_fast_local(&self, p: *const ()) {
        // SAFETY: caller contract.
        unsafe { (*self.fast_local_slot()).set(p) };
        let w = super::current_worker_ptr();
        if !w.is_null() {
            // SAFETY: a non-null WORKER is this thread's live WorkerCell.
            unsafe { (*w).fast_local_changed(self) };
        }
    }

    /// The identity record of a migrating call (see `TaskBody::ident`).
    ///
    /// # Safety
    /// The caller is the task itself, running (its body is live).
    #[inline]
    pub(crate) unsafe fn ident<'a>(&self) -> &'a Cell<*const crate::task::Identity> {
        // SAFETY: the body is live (caller contract); a shared reference to
        // one `Cell` field, disjoint from any `sched` borrow.
        unsafe { &*body_field!(self, ident) }
    }

    /// The running coroutine's yielder (see `TaskBody::yielder`).
    ///
    /// # Safety
    /// The caller is the task itself, running, or its owner (the body is
    /// live).
    #[inline]
    pub(crate) unsafe fn yielder<'a>(&self) -> &'a Cell<*const TaskYielder> {
        // SAFETY: as for `ident`.
        unsafe { &*body_field!(self, yielder) }
    }

    /// The task's stack bounds `(bottom, top)` (see
    /// `TaskBody::stack_bottom`): `(0, 0)` before its first run.
    ///
    /// # Safety
    /// As for [`yielder`](Self::yielder).
    #[inline]
    pub(crate) unsafe fn stack_bounds<'a>(&self) -> (&'a Cell<usize>, &'a Cell<usize>) {
        // SAFETY: as for `ident`; two disjoint `Cell` fields.
        unsafe {
            (
                &*body_field!(self, stack_bottom),
                &*body_field!(self, stack_top),
            )
        }
    }

    /// The task this one is joining (see `TaskBody::join_target`).
    ///
    /// # Safety
    /// The caller is the task itself or its owning worker, and the task has
    /// not exited (its body is live).
    #[inline]
    pub(crate) unsafe fn join_target<'a>(&self) -> &'a Cell<*const Task> {
        // SAFETY: as for `ident`.
        unsafe { &*body_field!(self, join_target) }
    }

    /// Frees the task-local values (called by the task itself as it ends).
    ///
    /// # Safety
    /// Only the running task itself may call it, and no borrow of a local
    /// may be alive.
    pub(crate) unsafe fn drop_locals(&self) {
        loop {
            // The fast key's value may be the next to go (and a destructor
            // may have looked it up again since the last round).
            // SAFETY: caller contract (the running task itself).
            unsafe { self.set_fast_local(std::ptr::null()) };
            // SAFETY: caller contract; values are taken out one at a time, so
            // a destructor that touches another local sees a valid vector.
            let next = unsafe { (*self.locals_slot()).as_mut().and_then(|v| v.pop()) };
            match next {
                None => break,
                // SAFETY: each pointer came from Box::into_raw and is freed
                // exactly once, here.
                Some(Some(p)) => drop(unsafe { Box::from_raw(p.as_ptr()) }),
                Some(None) => {}
            }
        }
    }

    /// The name given at spawn.
    #[inline]
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref().map(|n| &*n.0)
    }

    /// The policy as last set (readable by anyone).
    pub(crate) fn policy(&self) -> SchedPolicy {
        decode_policy(self.policy.load(Ordering::Relaxed))
    }

    /// Applies a pending `setpriority` / `sched_setscheduler` to the
    /// entity, if any. The caller owns the task and the entity is off every
    /// queue.
    #[inline]
    pub(crate) fn apply_sched_change(&self, sp: &mut SchedPart) {
        if !self.sched_dirty.load(Ordering::Relaxed)
            || !self.sched_dirty.swap(false, Ordering::Acquire)
        {
            return;
        }
        debug_assert!(!sp.ent.on_rq());
        let nice = self.nice.load(Ordering::Relaxed);
        let policy = self.policy();
        if sp.ent.se.nice != nice {
            sp.ent.set_nice(nice);
        }
        if sp.ent.policy != policy {
            sp.ent.set_policy(policy);
        }
    }

    /// The name, or `"-"`.
    pub(crate) fn name_or_dash(&self) -> &str {
        self.name().unwrap_or("-")
    }

    /// Starts a new timed wait: bumps the generation, clears the timeout
    /// flag, and returns the generation a timer must present.
    pub(crate) fn begin_timed_wait(&self) -> u64 {
        let gen = (self.wait_word.load(Ordering::Relaxed) >> 1) + 1;
        self.wait_word.store(gen << 1, Ordering::Release);
        gen
    }

    /// Called by a timer: marks wait `gen` timed out if it is still the
    /// current one. Returns whether it did (then the caller wakes the task).
    pub(crate) fn fire_timeout(&self, gen: u64) -> bool {
        self.wait_word
            .compare_exchange(gen << 1, gen << 1 | 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Records that the task is now in CPU `cpu`'s run-queue tree (see
    /// [`rq_cpu`](Self::rq_cpu); only that CPU's worker calls this).
    #[inline]
    pub(crate) fn mark_queued(&self, cpu: usize) {
        self.rq_cpu.store(cpu as u32, Ordering::Relaxed);
    }

    /// Whether the task is in CPU `cpu`'s run-queue tree: read by that
    /// CPU's worker, for which a yes means it owns the task.
    #[inline]
    pub(crate) fn queued_on(&self, cpu: usize) -> bool {
        self.rq_cpu.load(Ordering::Relaxed) == cpu as u32
    }

    /// Records that the task left its CPU's run-queue tree.
    #[inline]
    pub(crate) fn mark_dequeued(&self) {
        self.rq_cpu.store(NOT_QUEUED, Ordering::Relaxed);
    }

    /// Whether wait `gen` is still the current timed wait, not yet timed
    /// out (its timer may still matter).
    pub(crate) fn timed_wait_pending(&self, gen: u64) -> bool {
        self.wait_word.load(Ordering::Acquire) == gen << 1
    }

    /// Whether wait `gen` has timed out.
    pub(crate) fn timed_out(&self, gen: u64) -> bool {
        self.wait_word.load(Ordering::Acquire) == (gen << 1 | 1)
    }

    /// Ends the timed wait `gen` so a late timer cannot fire for it.
    pub(crate) fn end_timed_wait(&self, gen: u64) {
        let _ = self.wait_word.compare_exchange(
            gen << 1,
            (gen + 1) << 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("pid", &self.pid)
            .field("name", &self.name())
            .field("cpu", &self.cpu.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    /// The runtime's shared state starts on its own pair of cache lines, so
    /// the `Arc`'s reference counts in front of it share no line with it.
    #[test]
    fn runtime_state_is_line_aligned() {
        assert!(std::mem::align_of::<super::super::Shared>() >= 128);
    }

    /// The control block is allocated once per task and touched at every
    /// switch: a million live tasks pay for each byte (the spawn benchmark's
    /// page faults grew with it once, when every class kept its own state
    /// in every task). Growing it past this budget should be a decision.
    /// (64 B for the task's PELT series, the kernel's `struct sched_avg`
    /// size too; then 16 B for the directed yield of a join, `rq_cpu` and
    /// `join_target`, which keeps fork-join trees depth-first and so cut
    /// skynet's peak RSS by far more than 16 B per task.)
    /// A parked task keeps its worker's reference, and the waker that wins
    /// its wakeup takes it over (`Task::take_parked_ref`). Off by one
    /// either way is a leak or a use after free; these count.
    #[test]
    fn parked_references_are_handed_over_not_leaked() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        const ON: (crate::trace::BlockOn, u64) = (crate::trace::BlockOn::WaitQueue, 0);
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let (cycled, parked_forever) = rt.block_on(|| {
            // Parked and woken many times (plain, direct-switch and wait
            // queue wakeups), then exits.
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let me = crate::current();
            let worker = crate::spawn(move || {
                for _ in 0..1000 {
                    let _ = crate::wait::park_until(ON, || f.swap(false, Ordering::SeqCst), None);
                    me.unpark();
                }
            });
            let w = worker.task().clone();
            for i in 0..1000 {
                flag.store(true, Ordering::SeqCst);
                if i % 2 == 0 {
                    w.unpark();
                    let _ = crate::wait::park_until(ON, || !flag.load(Ordering::SeqCst), None);
                } else {
                    let _ = crate::wait::unpark_and_park_until(
                        &w,
                        ON,
                        || !flag.load(Ordering::SeqCst),
                        None,
                    );
                }
            }
            let cycled = Arc::downgrade(w.task_ref());
            drop(w);
            worker.join().unwrap();
            // Parked for good when the runtime shuts down.
            let forever = crate::spawn(|| {
                let _ = crate::wait::park_until(ON, || false, None);
            });
            for _ in 0..100 {
                crate::yield_now();
            }
            let parked_forever = Arc::downgrade(forever.task().task_ref());
            drop(forever);
            (cycled, parked_forever)
        });
        // After the workers stopped: an exiting task's last references are
        // dropped by its worker after the joiner may already run.
        drop(rt);
        assert!(cycled.upgrade().is_none(), "a woken task's block leaked");
        assert!(
            parked_forever.upgrade().is_none(),
            "a task parked at shutdown leaked its block"
        );
    }

    #[test]
    fn control_block_stays_small() {
        let task = std::mem::size_of::<super::Task>();
        let body = std::mem::size_of::<super::TaskBody>();
        let entity = std::mem::size_of::<crate::sched::TaskEntity>();
        eprintln!("Task {task} B, TaskBody {body} B, TaskEntity {entity} B");
        assert!(entity <= 160, "TaskEntity is {entity} B");
        // What a zombie keeps (the body is freed at exit). 216 B plus the
        // `Arc`'s two counts is 232 B, glibc's 240-byte chunk class: every
        // 4 KiB page a million-task spawn touches costs (about 0.85 ns per
        // byte per task measured on the AMD guest, page faults and heap
        // growth).
        assert!(task <= 216, "Task is {task} B");
        // Bodies are recycled (`body_cache`); their size matters less.
        assert!(body <= 352, "TaskBody is {body} B");
    }

    /// A task that exited keeps its control block until it is joined, but
    /// not its body (scheduler state and coroutine slot): a million
    /// finished, unjoined tasks hold half the memory they used to.
    #[test]
    fn exited_task_frees_its_body_before_join() {
        use std::sync::atomic::Ordering;
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        rt.block_on(|| {
            let h = crate::spawn(|| 7);
            let task = h.task().task_ref().clone();
            assert!(
                !task.body.load(Ordering::Relaxed).is_null(),
                "a live task has a body"
            );
            // One worker: the child runs, exits and is reaped by the worker
            // before this task runs again.
            while !h.is_finished() {
                crate::yield_now();
            }
            crate::yield_now();
            assert!(
                task.body.load(Ordering::Relaxed).is_null(),
                "the zombie still holds its body"
            );
            assert_eq!(task.pid, h.task().pid());
            assert_eq!(h.join().unwrap(), 7);
        });
    }

    /// A freed body's allocation is reused by the next task created on the
    /// same thread (the magazine cache), and the cache stays bounded.
    #[test]
    fn body_allocations_are_recycled() {
        fn body() -> super::TaskBody {
            struct Nop;
            impl super::TaskEntry for Nop {
                fn run(&self) {}
                fn cancel(&self) {}
            }
            super::TaskBody {
                sched: super::SchedPart {
                    ent: crate::sched::TaskEntity::new(0, crate::sched::SchedPolicy::Normal),
                    vruntime_relative: true,
                    in_flight_to: crate::executor::lb::NOT_IN_FLIGHT,
                    entry: Some(super::Entry(std::sync::Arc::new(Nop))),
                    avg: crate::sched::pelt::SchedAvg::new_task(1024),
                },
                coro: None,
                locals: None,
                fast_local: std::cell::Cell::new(std::ptr::null()),
                ident: std::cell::Cell::new(std::ptr::null()),
                join_target: std::cell::Cell::new(std::ptr::null()),
                yielder: std::cell::Cell::new(std::ptr::null()),
                stack_bottom: std::cell::Cell::new(0),
                stack_top: std::cell::Cell::new(0),
            }
        }
        let a = super::body_cache::alloc(body());
        // SAFETY: from alloc, freed once, unshared.
        unsafe { super::body_cache::free(a) };
        let b = super::body_cache::alloc(body());
        assert_eq!(a, b, "the freed allocation is reused");
        // SAFETY: as above.
        unsafe { super::body_cache::free(b) };
        // Many frees keep at most two magazines here; the rest go to the
        // depot (or back to the allocator).
        let many: Vec<_> = (0..1000)
            .map(|_| super::body_cache::alloc(body()))
            .collect();
        for p in many {
            // SAFETY: as above.
            unsafe { super::body_cache::free(p) };
        }
        assert!(super::body_cache::local_len() <= 2 * super::body_cache::MAGAZINE);
    }
}
