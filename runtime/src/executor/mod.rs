//! The real engine: one pinned worker thread per CPU running green tasks.
//!
//! Files, one concept each:
//! - `task`: the task control block; `state`: its run-ownership word;
//! - `stack`: pooled guard-paged stacks and the overflow report;
//! - `worker`: the per-CPU run loop, idle spinning and parking, stealing;
//! - `timer`: per-CPU timer heaps; `monitor`: the scheduler tick, which
//!   raises `need_resched` and `need_service`;
//! - this file: the state shared by all CPUs and the calls the public API
//!   makes (spawn, wake, park, yield).
//!
//! # Who owns what
//! Each worker owns its run queue (a `sched::RunQueue`), its staging deque of
//! new tasks and its timer heap; nobody else touches them. Other threads
//! reach a worker only through its `WorkerShared`: the inbox (an MPMC
//! injector that any thread may push to), the stealer side of the staging
//! deque, and a few atomics (idle state, `need_resched`, `need_service`,
//! what it runs).
//! Task code runs on its worker's OS thread while the worker is suspended in
//! `resume`, so a task may use its own worker's owned state through
//! [`with_local`], which hands out short-lived borrows and is never called
//! while the worker itself holds one.
//!
//! # Wakeup protocol (no lost wakeups, never two CPUs on one stack)
//! 1. A task that blocks registers itself with a wait queue, checks that no
//!    wakeup is pending (its state is `RUNNABLE` without `NOTIFIED`) and
//!    switches out with `Request::Park`.
//! 2. Its worker, after the switch, moves `RUNNABLE -> PARKED`. If a waker
//!    set `NOTIFIED` in between, the worker re-queues the task instead.
//! 3. A waker moves `PARKED -> RUNNABLE` (one CAS; one winner) and enqueues:
//!    locally if it runs on the task's CPU, else into that CPU's inbox,
//!    unparking the CPU only if it sleeps (SeqCst fence on both sides, as in
//!    the Dekker pattern: the sleeper publishes SLEEPING then re-checks its
//!    inbox; the waker publishes the task then checks SLEEPING).

pub(crate) mod affinity;
pub(crate) mod lb;
pub(crate) mod monitor;
pub(crate) mod pid;
pub(crate) mod stack;
pub(crate) mod state;
pub(crate) mod task;
pub(crate) mod timer;
pub(crate) mod worker;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use crossbeam_deque::{Injector, Stealer};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::clock;
use crate::sched::Tunables;
use crate::Pid;
use state::Wake;
use task::{Request, Task, TaskRef};
use worker::WorkerLocal;

/// Worker idle state: running tasks (or about to).
pub(crate) const BUSY: u8 = 0;
/// Worker idle state: out of work, spinning and stealing.
pub(crate) const SPINNING: u8 = 1;
/// Worker idle state: parked in the OS; must be unparked to see its inbox.
pub(crate) const SLEEPING: u8 = 2;

/// Per-CPU counters. Each is written only by its own worker (load + store,
/// no read-modify-write on the switch path) and read by anyone.
#[derive(Default, Debug)]
pub(crate) struct CpuCounters {
    pub(crate) switches: AtomicU64,
    pub(crate) voluntary_switches: AtomicU64,
    pub(crate) forced_switches: AtomicU64,
    pub(crate) wakeups_local: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) migrations_in: AtomicU64,
    pub(crate) migrations_out: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) idle_ns: AtomicU64,
    pub(crate) tasks_exited: AtomicU64,
    pub(crate) direct_switches: AtomicU64,
    /// Wakeups this CPU sent to another CPU's inbox.
    pub(crate) wakeups_remote: AtomicU64,
    /// Times this CPU's thread woke from sleeping in the OS.
    pub(crate) unparks: AtomicU64,
    /// Balance counters per domain level (`lb::MAX_LEVELS`).
    pub(crate) lb: [lb::LevelCounters; lb::MAX_LEVELS],
}

/// Adds to a counter that only the calling worker writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// What other threads may see and do to one worker.
pub(crate) struct WorkerShared {
    /// This CPU's number.
    pub(crate) index: usize,
    /// Tasks sent here by other CPUs and threads (wakeups, pushes, spawns).
    pub(crate) inbox: Injector<TaskRef>,
    /// Steal end of this CPU's staging deque of newly spawned tasks.
    pub(crate) stealer: Stealer<TaskRef>,
    /// `BUSY`, `SPINNING` or `SLEEPING`.
    pub(crate) idle: AtomicU8,
    /// The worker's OS thread, to unpark it.
    pub(crate) thread: OnceLock<Thread>,
    /// `TIF_NEED_RESCHED`: set (by the monitor when the slice is used up,
    /// or by a wakeup that preempts) when the running task should give up
    /// the CPU at its next yield point; the scheduler then picks again.
    pub(crate) need_resched: AtomicBool,
    /// Set (by the monitor or a balancing CPU) when this CPU has work of
    /// its own to do between tasks — a timer due, the scheduler tick, an
    /// inbox to drain, a pull request to serve: the running task stops at
    /// its next yield point, as for an interrupt, and runs on after the
    /// service pass unless that pass preempts it (a wakeup it fired, or
    /// the tick's `check_preempt_tick`). The kernel's tick and interrupts
    /// never switch tasks by themselves either.
    pub(crate) need_service: AtomicBool,
    /// Clock time of this CPU's last scheduling pass (a switch-in, or a
    /// service pass that let the running task run on): the monitor's tick
    /// counts from here, while a slice counts from `run_start`.
    pub(crate) serviced_at: AtomicU64,
    /// Pid of the running task, 0 when none.
    pub(crate) curr_pid: AtomicU64,
    /// Clock time the running task was switched in.
    pub(crate) run_start: AtomicU64,
    /// The running task's weight (for the monitor's slice computation).
    pub(crate) curr_weight: AtomicU64,
    /// The run queue's load weight (queued + running) at switch-in.
    pub(crate) rq_load: AtomicU64,
    /// Context switches so far (also tells the monitor a new run began).
    pub(crate) switch_seq: AtomicU64,
    /// Runnable tasks here (queued + running), published by the owner.
    pub(crate) nr_running: AtomicUsize,
    /// The run queue's `min_vruntime`, published by the owner.
    pub(crate) min_vruntime: AtomicU64,
    /// Counters.
    /// The running task's run budget (ns from `run_start`) for the
    /// monitor; `monitor::BUDGET_CFS`: derive the CFS slice instead.
    pub(crate) run_budget: AtomicU64,
    /// Earliest armed timer of this CPU (`u64::MAX`: none), as of its
    /// last scheduling turn: the monitor preempts the running task once it
    /// is due, so that timers fire on time (they fire in the run loop).
    pub(crate) next_timer: AtomicU64,
    /// PELT averages of the run queue, published by the owner when they
    /// change (once per 1024 µs period at most): the balancer's input.
    pub(crate) load_avg: AtomicU64,
    pub(crate) util_avg: AtomicU64,
    pub(crate) runnable_avg: AtomicU64,
    /// Clock time of the averages above. An idle CPU stops updating them;
    /// readers decay them over the time since (`lb::published_avgs`), as
    /// the kernel's nohz `update_blocked_averages` would.
    pub(crate) avg_at: AtomicU64,
    /// `cfs_rq->removed`: averages of sleeping tasks that wakers on other
    /// CPUs moved away; the owner subtracts them at its next update.
    pub(crate) removed: lb::RemovedWords,
    /// Tasks a balancing move is carrying here (detached from their old
    /// queue, not yet attached to this one): counted in this CPU's
    /// statistics meanwhile, as the kernel's `attach_task` counts them at
    /// once.
    pub(crate) in_flight: lb::InFlight,
    /// How many times the owner has drained its inbox (written only by the
    /// owner; see `WorkerLocal::inbox_refused`).
    pub(crate) inbox_drains: AtomicU64,
    /// A pull request from a CPU that balanced against this one
    /// (`lb::PullRequest`, encoded; 0: none). Served by the owner at its
    /// next scheduling point.
    pub(crate) pull_request: AtomicU64,
    pub(crate) counters: CpuCounters,
}

impl WorkerShared {
    /// Whether the scheduler must run before another task does: a resched
    /// or the CPU's own work is pending (`need_resched`, `need_service`).
    /// A direct switch that bypasses the run loop (a lent scheduling
    /// context) must not go ahead then, or timers and the inbox would wait
    /// for as long as the tasks keep handing the CPU to each other.
    #[inline]
    pub(crate) fn needs_scheduler(&self) -> bool {
        self.need_resched.load(Ordering::Relaxed) || self.need_service.load(Ordering::Relaxed)
    }

    /// Unparks the worker if it sleeps. Call after publishing work for it.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) == SLEEPING {
            self.unpark();
        }
    }

    /// Unconditional unpark.
    pub(crate) fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) pin_workers: bool,
    /// The fair scheduling class of every CPU.
    pub(crate) policy: crate::sched::Policy,
    pub(crate) default_stack_size: usize,
    pub(crate) idle_spin_ns: u64,
    pub(crate) monitor_tick_ns: u64,
    pub(crate) overrun_report_ns: u64,
    pub(crate) thread_name: String,
}

/// State shared by all CPUs of one runtime.
///
/// Aligned to 128 bytes (two cache lines, what `CachePadded` uses on
/// x86-64) so that in its `Arc` the reference counts, which change at every
/// clone, sit on lines of their own instead of beside the fields every
/// worker reads at every switch.
#[repr(align(128))]
pub(crate) struct Shared {
    /// Process-unique runtime id (see `runtimes`).
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) workers: Box<[CachePadded<WorkerShared>]>,
    pub(crate) tunables: Tunables,
    pub(crate) shutdown: AtomicBool,
    /// Every live task by pid.
    pub(crate) table: pid::PidTable,
    /// Workers currently `SPINNING` or `SLEEPING`. On its own cache line
    /// (it changes at every idle transition; the fields around it are read
    /// by every worker at every switch).
    pub(crate) nr_idle: CachePadded<AtomicUsize>,
    /// Round-robin cursor for work submitted from outside the runtime.
    pub(crate) outside_cursor: CachePadded<AtomicUsize>,
    pub(crate) monitor: monitor::MonitorShared,
    /// Some task of this runtime has caught SIGCHLD: exits must notify
    /// parents (false: an exit skips the parent lookup).
    pub(crate) sigchld_caught: AtomicBool,
    /// Event recording, when `Builder::trace` asked for it.
    pub(crate) trace: Option<TraceState>,
    /// Each CPU's scheduling domains, LLC and steal order.
    pub(crate) domains: Box<[lb::CpuDomains]>,
    /// Every CPU of the runtime.
    pub(crate) all_cpus: crate::cpuset::CpuSet,
}

/// A runtime's event rings (see `crate::trace`).
pub(crate) struct TraceState {
    /// One per CPU; CPU i's worker thread is its only writer.
    pub(crate) rings: Box<[crate::trace::TraceRing]>,
    /// Events from threads that are not this runtime's CPUs.
    pub(crate) outside: parking_lot::Mutex<crate::trace::TraceRing>,
    /// Names of traced tasks, by pid (kept after they exit).
    pub(crate) names: parking_lot::Mutex<std::collections::HashMap<u64, String>>,
}

/// Some runtime of this process records events: wakeups from threads
/// outside a runtime look their task's runtime up only then.
pub(crate) static ANY_TRACING: AtomicBool = AtomicBool::new(false);

impl TraceState {
    pub(crate) fn new(cpus: usize, cfg: crate::trace::TraceConfig) -> TraceState {
        ANY_TRACING.store(true, Ordering::Relaxed);
        TraceState {
            rings: (0..cpus)
                .map(|_| crate::trace::TraceRing::new(cfg.events_per_cpu))
                .collect(),
            outside: parking_lot::Mutex::new(crate::trace::TraceRing::new(cfg.events_per_cpu)),
            names: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

/// Records an event of runtime `shared` from whatever thread this is: into
/// CPU `cpu`'s ring when called on that CPU's worker, else the outside ring.
pub(crate) fn trace_event(
    shared: &Shared,
    kind: crate::trace::EventKind,
    pid: u64,
    other: u64,
    arg: u64,
) {
    let Some(tr) = &shared.trace else {
        return;
    };
    let here = with_local(|l| {
        (l.shared().id == shared.id).then(|| {
            // The next switch on this CPU must be stamped after this.
            l.trace_fresh = true;
            l.index()
        })
    })
    .flatten();
    let ev = |cpu: u16| crate::trace::Event {
        ts_ns: clock::now_ns(),
        kind,
        cpu,
        pid,
        other,
        arg,
    };
    match here {
        // SAFETY: this thread is CPU `i`'s worker, its ring's only writer.
        Some(i) => unsafe { tr.rings[i].push(&ev(i as u16)) },
        None => {
            let g = tr.outside.lock();
            // SAFETY: the lock makes us the outside ring's only writer.
            unsafe { g.push(&ev(crate::trace::OUTSIDE_CPU)) };
        }
    }
}

/// The pid of the task running on this thread, 0 if none.
pub(crate) fn current_pid_or_zero() -> u64 {
    let t = current_task_ptr();
    if t.is_null() {
        0
    } else {
        // SAFETY: see current_task.
        unsafe { (*t).pid.0 }
    }
}

/// Records a wakeup of `task` (called by `wake_task` once it won the wake).
#[cold]
fn trace_wakeup(task: &Task) {
    let record = |s: &Shared| {
        trace_event(
            s,
            crate::trace::EventKind::Wakeup,
            task.pid.0,
            current_pid_or_zero(),
            task.cpu.load(Ordering::Relaxed) as u64,
        )
    };
    // On a CPU of the task's runtime, without the registry's lock.
    let done = with_local(|l| (l.shared().id == task.rt_id).then(|| record(l.shared())));
    if done.flatten().is_none() {
        if let Some(s) = task_runtime(task) {
            record(&s);
        }
    }
}

/// Records that the running task `task` blocks on an object, if its
/// runtime records events.
#[cold]
pub(crate) fn trace_block(task: &Task, kind: crate::trace::BlockOn, id: u64) {
    with_local(|l| {
        if l.shared().id == task.rt_id {
            trace_event(
                l.shared(),
                crate::trace::EventKind::Block,
                task.pid.0,
                kind as u64,
                id,
            );
        }
    });
}

impl Shared {
    pub(crate) fn nr_cpus(&self) -> usize {
        self.workers.len()
    }

    /// Allocates and reserves a pid from a batch of candidates starting at
    /// counter value `*next` (up to `end`), refilling from the shared counter
    /// when the batch runs out. Fails with EAGAIN when every pid is in use
    /// (fork(2)'s error for the same condition).
    pub(crate) fn alloc_pid_from(&self, next: &mut u64, end: &mut u64) -> std::io::Result<Pid> {
        for _ in 0..pid::PID_MAX {
            if *next == *end {
                *next = self.table.take_batch();
                *end = *next + pid::PID_BATCH;
            }
            let pid = Pid(pid::PidTable::counter_to_pid(*next));
            *next += 1;
            if self.table.try_reserve(pid) {
                return Ok(pid);
            }
        }
        Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Allocates and reserves a pid (from this CPU's batch when called on one
    /// of this runtime's workers).
    pub(crate) fn alloc_pid(self: &Arc<Self>) -> std::io::Result<Pid> {
        let r = with_local(|l| {
            if Arc::ptr_eq(l.shared(), self) {
                Some(l.alloc_pid())
            } else {
                None
            }
        });
        match r {
            Some(Some(p)) => p,
            _ => {
                let (mut next, mut end) = (0, 0);
                self.alloc_pid_from(&mut next, &mut end)
            }
        }
    }

    /// Finds an idle CPU in `allowed` (all if `None`), scanning from `from`,
    /// and claims it (`SPINNING|SLEEPING -> BUSY`). The caller must then give
    /// it work and call `unpark` on it (a claimed sleeper does not wake by
    /// itself).
    pub(crate) fn claim_idle_cpu(
        &self,
        from: usize,
        allowed: Option<&affinity::TaskMask>,
    ) -> Option<usize> {
        self.claim_idle_cpu_in(from, allowed, false)
    }

    /// [`claim_idle_cpu`](Self::claim_idle_cpu), optionally only among
    /// sleeping CPUs (spinning ones find work by stealing).
    pub(crate) fn claim_idle_cpu_in(
        &self,
        from: usize,
        allowed: Option<&affinity::TaskMask>,
        sleeping_only: bool,
    ) -> Option<usize> {
        if self.nr_idle.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let n = self.workers.len();
        for k in 0..n {
            let cpu = (from + k) % n;
            if allowed.is_some_and(|m| !m.allows(cpu)) {
                continue;
            }
            if self.try_claim(cpu, sleeping_only) {
                return Some(cpu);
            }
        }
        None
    }

    /// Sends a runnable task to `cpu`'s inbox and wakes that CPU if needed.
    /// Claims CPU `cpu` if it is idle (only if asleep, with
    /// `sleeping_only`): it is then BUSY and the claimer must send it work.
    pub(crate) fn try_claim(&self, cpu: usize, sleeping_only: bool) -> bool {
        let w = &self.workers[cpu];
        let cur = w.idle.load(Ordering::Relaxed);
        let wanted = if sleeping_only {
            cur == SLEEPING
        } else {
            cur != BUSY
        };
        if wanted
            && w.idle
                .compare_exchange(cur, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.nr_idle.fetch_sub(1, Ordering::AcqRel);
            return true;
        }
        false
    }

    /// Queues a runnable task in CPU `cpu`'s inbox and wakes that CPU.
    /// `task.cpu` is left as it is: the receiver swaps in its own number on
    /// arrival and reads the old one as where the task came from.
    pub(crate) fn send_to(&self, cpu: usize, task: TaskRef) {
        let w = &self.workers[cpu];
        w.inbox.push(task);
        w.notify();
    }
}

// ---------------------------------------------------------------------------
// Thread-local context. Reached only through the non-inlined accessors below,
// never through a reference held across a switch (reference/coroutines.md
// §2.2(3): the compiler may cache a TLS address across the switch, and a
// migrated task would then read its old worker's slot).

thread_local! {
    static WORKER: Cell<*const worker::WorkerCell> = const { Cell::new(std::ptr::null()) };
    static CURRENT: Cell<*const Task> = const { Cell::new(std::ptr::null()) };
}

/// The worker running on this OS thread, if any.
#[inline(never)]
pub(crate) fn current_worker_ptr() -> *const worker::WorkerCell {
    WORKER.with(|w| w.get())
}

#[inline(never)]
pub(crate) fn set_current_worker(w: *const worker::WorkerCell) {
    WORKER.with(|c| c.set(w));
}

/// The task running on this OS thread, if any: a worker keeps it in its
/// `WorkerCell` (set on every switch without touching TLS); other threads
/// (the shutdown path cancelling tasks) in the `CURRENT` thread-local.
#[inline(never)]
pub(crate) fn current_task_ptr() -> *const Task {
    let w = WORKER.with(|w| w.get());
    if !w.is_null() {
        // SAFETY: a non-null WORKER points at the live WorkerCell of this
        // thread (see current_shared).
        let t = unsafe { (*w).current() };
        if !t.is_null() {
            return t;
        }
    }
    CURRENT.with(|c| c.get())
}

/// The worker running on this thread (null if none) and the task running
/// on it, as [`current_task_ptr`] finds it: one call for both, for a park
/// that will switch (`park_and_switch_to_on`). The worker pointer is valid
/// only until the running task next switches out.
#[inline(never)]
pub(crate) fn current_ptrs() -> (*const worker::WorkerCell, *const Task) {
    let w = WORKER.with(|w| w.get());
    if !w.is_null() {
        // SAFETY: as in `current_task_ptr`.
        let t = unsafe { (*w).current() };
        if !t.is_null() {
            return (w, t);
        }
    }
    (w, CURRENT.with(|c| c.get()))
}

/// The worker running on this thread (null if none) and the fast
/// task-local word of its running task (`WorkerCell::current_fast`; null
/// if not a worker, no task, or no word set): one call for
/// `LocalKey::with_fast_or`, and for an IPC operation's capability
/// lookup, its endpoint lock and its park (`wait::Here`).
#[inline(never)]
pub(crate) fn current_worker_and_fast() -> (*const worker::WorkerCell, *const ()) {
    let w = WORKER.with(|w| w.get());
    if w.is_null() {
        return (w, std::ptr::null());
    }
    // SAFETY: a non-null WORKER is this thread's live WorkerCell.
    (w, unsafe { (*w).current_fast() })
}

/// Sets the current task of a thread that is not a worker (shutdown).
#[inline(never)]
pub(crate) fn set_current_task(t: *const Task) {
    CURRENT.with(|c| c.set(t));
}

const OUTSIDE: &str = "must be called from a greenos task (inside Runtime::block_on or a task it spawned); this thread is not running one";

/// The panic of a call that needs a running task, made outside one.
#[cold]
#[inline(never)]
pub(crate) fn not_in_task(what: &str) -> ! {
    panic!("greenos::{what} {OUTSIDE}");
}

/// The running task; panics outside a green thread.
#[inline]
pub(crate) fn current_task(what: &str) -> &'static Task {
    let t = current_task_ptr();
    if t.is_null() {
        not_in_task(what);
    }
    // SAFETY: a non-null CURRENT points at the task running on this thread;
    // the worker (or the shutdown path) holds a counted reference to it for
    // the whole time it is set, and the returned borrow is used only by this
    // task's own code while it runs. 'static is a lie bounded by that use:
    // callers never store it.
    unsafe { &*t }
}

/// A counted reference to the running task.
pub(crate) fn current_task_ref(what: &str) -> TaskRef {
    let t = current_task(what) as *const Task;
    // SAFETY: `t` came from an `Arc<Task>` that is alive (see current_task);
    // bumping the strong count before from_raw yields a new owned reference.
    unsafe {
        Arc::increment_strong_count(t);
        Arc::from_raw(t)
    }
}

/// Runs `f` with the runtime of the worker this thread is (without taking
/// a counted reference: the worker's own keeps it alive), or returns None.
#[inline]
pub(crate) fn with_current_shared<R>(f: impl FnOnce(&Arc<Shared>) -> R) -> Option<R> {
    with_local(|l| {
        let s: *const Arc<Shared> = l.shared();
        s
    })
    // SAFETY: the Arc lives in the worker's local state, which lives as long
    // as the worker thread; `f` runs on this thread before any switch.
    .map(|s| f(unsafe { &*s }))
}

/// The runtime the current thread belongs to (worker or running task).
pub(crate) fn current_shared() -> Option<Arc<Shared>> {
    let w = current_worker_ptr();
    if w.is_null() {
        None
    } else {
        // SAFETY: a non-null WORKER points at the WorkerCell that the worker
        // thread keeps alive for as long as it is set.
        Some(unsafe { (*w).shared.clone() })
    }
}

/// Runs `f` with the calling thread's worker-owned state, if this thread is
/// a worker. Task code may call it: the worker is suspended in `resume` and
/// holds no borrow of its local state across that call.
#[inline]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut WorkerLocal) -> R) -> Option<R> {
    let w = current_worker_ptr();
    if w.is_null() {
        return None;
    }
    // SAFETY: see the function doc; the borrow ends when `f` returns, and `f`
    // never switches (callers pass closures that only touch queues).
    Some(f(unsafe { (*w).local() }))
}

/// Like [`with_local`], for callers that must keep ownership of a value when
/// this thread is not a worker: returns `Err(v)` untouched then.
#[inline]
pub(crate) fn with_local_or<V, R>(v: V, f: impl FnOnce(&mut WorkerLocal, V) -> R) -> Result<R, V> {
    let w = current_worker_ptr();
    if w.is_null() {
        return Err(v);
    }
    // SAFETY: as in with_local.
    Ok(f(unsafe { (*w).local() }, v))
}

// ---------------------------------------------------------------------------
// The calls tasks make.

/// Switches the running task out with `req`. Returns when it runs again.
#[inline(always)]
fn suspend(task: &Task, req: Request) {
    // SAFETY: the running task itself: its body is live.
    let y = unsafe { task.yielder() }.get();
    debug_assert!(!y.is_null());
    // SAFETY: `yielder` was set by the coroutine body of this very task and
    // stays valid while the coroutine lives; we are running on that
    // coroutine's stack (current_task is this task), so suspending is legal.
    unsafe { (*y).suspend(req) };
}

/// `yield_now`: give the CPU to other runnable tasks.
#[inline(always)]
pub(crate) fn yield_now() {
    yield_as(Request::Yield);
}

/// The yield a blocking call makes before it parks (see
/// `Request::YieldBlocking`); inlined like [`yield_now`].
#[inline(always)]
pub(crate) fn yield_blocking() {
    yield_as(Request::YieldBlocking);
}

/// A yield of either kind: stays runnable, a delivery point for signals
/// after it (a cancelled task unwinds instead). Inlined, so the switch
/// sits in the caller's frame (the `wait` module doc, "Switch depth").
#[inline(always)]
fn yield_as(req: Request) {
    let task = current_task("yield_now");
    if task.cancelled.load(Ordering::Relaxed) {
        crate::signal::unwind_if_killed(task);
        return;
    }
    suspend(task, req);
    crate::signal::checkpoint(task);
}

/// Switches out so the worker re-checks the running task's affinity.
pub(crate) fn yield_to_migrate() {
    let task = current_task("sched_setaffinity");
    if !task.cancelled.load(Ordering::Relaxed) {
        suspend(task, Request::Preempt);
        crate::signal::checkpoint(task);
    }
}

/// Records that a task of its runtime catches SIGCHLD (see
/// `Shared::sigchld_caught`).
pub(crate) fn note_sigchld_handler(task: &Task) {
    if let Some(s) = task_runtime(task) {
        s.sigchld_caught.store(true, Ordering::Relaxed);
    }
}

/// Sends SIGCHLD to an exiting task's parent if some task of its runtime
/// catches it (the default action is to ignore it).
///
/// Every exit passes here: on the task's own CPU (the normal case) the
/// check is one relaxed load of the runtime's flag; the global runtime
/// registry (a process-wide lock) is consulted only off the workers.
pub(crate) fn notify_parent_of_exit(task: &Task) {
    if task.ppid == 0 {
        return;
    }
    let here = with_local(|l| {
        (l.shared().id == task.rt_id).then(|| l.shared().sigchld_caught.load(Ordering::Relaxed))
    })
    .flatten();
    if here == Some(false) {
        return;
    }
    let Some(s) = task_runtime(task) else {
        return;
    };
    if !s.sigchld_caught.load(Ordering::Relaxed) {
        return;
    }
    if let Some(parent) = s.table.get(Pid(task.ppid)) {
        crate::signal::send(&parent, crate::signal::SIGCHLD);
    }
}

/// Stops at this yield point if `need_resched` or `need_service` is set on
/// this CPU. Returns whether it stopped (after a service pass the task may
/// have run on without another task running in between).
#[inline]
pub(crate) fn maybe_yield() -> bool {
    let w = current_worker_ptr();
    if w.is_null() {
        return false;
    }
    // SAFETY: see current_shared.
    let ws = unsafe { (*w).worker_shared() };
    if !ws.needs_scheduler() {
        return false;
    }
    let t = current_task_ptr();
    if t.is_null() {
        return false;
    }
    // SAFETY: see current_task.
    let task = unsafe { &*t };
    if task.cancelled.load(Ordering::Relaxed) {
        crate::signal::unwind_if_killed(task);
        return false;
    }
    suspend(task, Request::Preempt);
    crate::signal::checkpoint(task);
    true
}

/// Parks the running task until a wakeup (possibly one that already
/// arrived). May return spuriously; callers re-check their condition.
#[inline(always)]
pub(crate) fn park_current(task: &Task) {
    if task.cancelled.load(Ordering::Relaxed) {
        return;
    }
    match task.state.begin_park() {
        state::BeginPark::Notified => {}
        state::BeginPark::Switch => suspend(task, Request::Park),
    }
}

/// Parks the running task and hands its CPU straight to `target`, a task
/// it has just made runnable in the protocol's terms (it notified
/// `target`'s wait node) but not woken: the direct process switch of IPC.
/// If the caller need not sleep after all (a wakeup of its own already
/// arrived) or cannot switch, `target` is woken the ordinary way. May
/// return spuriously, like `park_current`.
///
/// A call (`target.lends()`) whose target may borrow the caller's scheduling
/// context runs the target *nested*: the caller resumes the target's
/// coroutine itself, on this CPU, without switching to its worker first
/// (`WorkerCell::lend_begin`), and the target's next switch out comes
/// straight back here (`WorkerCell::lend_end`): a reply that hands the CPU
/// back costs two stack switches and no scheduler work, as seL4's
/// fastpath costs two kernel entries. Anything else the target does is
/// settled by the worker, as for a loan it made itself (`run_task`).
#[inline(always)]
pub(crate) fn park_and_switch_to(task: &Task, target: SwitchTarget) {
    park_and_switch_to_on(current_worker_ptr(), task, target)
}

/// [`park_and_switch_to`] with this thread's worker `w` (null: none) in
/// hand (`current_ptrs`, taken since the task last switched in).
///
/// Unlike [`park_current`], it does not check `task.cancelled`: both
/// callers (`wait::park_until_inner` and `park_until_slow`) have just
/// checked it, and a cancellation after that check is no different from
/// one after this point (the canceller's wakeup ends the park either way).
#[inline(always)]
pub(crate) fn park_and_switch_to_on(
    w: *const worker::WorkerCell,
    task: &Task,
    target: SwitchTarget,
) {
    if w.is_null() {
        crate::wait::cold_path();
        return target.wake();
    }
    match task.state.begin_park() {
        state::BeginPark::Notified => {
            crate::wait::cold_path();
            target.wake()
        }
        state::BeginPark::Switch => {
            // SAFETY: a non-null WORKER is this thread's live WorkerCell,
            // and `task` runs on it.
            let cell = unsafe { &*w };
            match cell.lend_begin(task, target) {
                Some(b) => {
                    // SAFETY: `lend_begin` won `b`'s PARKED -> RUNNABLE and
                    // checked that its slot holds a suspended coroutine: this
                    // CPU owns it, and nothing else resumes it meanwhile.
                    let result = unsafe { worker::resume(&b) };
                    cell.lend_end(task, b, result);
                }
                None => suspend(task, Request::Park),
            }
        }
    }
}

/// Whether the running task may hand its CPU straight to `to` (see
/// `park_and_switch_to`): same runtime, `to` last ran on this CPU and may
/// run here. The seL4 fastpath's conditions, restated for green threads:
/// the receiver is blocked (checked when the switch completes: the CPU
/// must win its PARKED -> RUNNABLE), it is on this core (no cross-CPU
/// switch), and its affinity allows this CPU. Priority and domain checks
/// have no counterpart: CFS places the wakee by its vruntime next time.
pub(crate) fn can_switch_to(to: &Task) -> bool {
    let w = current_worker_ptr();
    if w.is_null() {
        return false;
    }
    // SAFETY: a non-null WORKER is this thread's live WorkerCell.
    unsafe { &*w }.can_switch_here(to)
}

/// `enqueue_woken` for a task this worker already owns (it won the wake).
pub(crate) fn enqueue_woken_owned(l: &mut worker::WorkerLocal, task: TaskRef) {
    let prev = task.cpu.load(Ordering::Relaxed);
    if l.shared().id != task.rt_id {
        // A worker of another runtime: go through the registry.
        if let Some(s) = task_runtime(&task) {
            s.send_to(prev, task);
        }
        return;
    }
    // Wakeup placement (select_task_rq_fair's fast path).
    let target = lb::select_wake_cpu(l, &task, prev);
    if target != prev {
        // SAFETY: we won the task's wakeup: we own it.
        let sp = unsafe { task.sched() };
        lb::wake_migrate(l.shared(), sp, prev, target);
    }
    if l.index() == target {
        if target != prev {
            l.count_arrival(prev);
            bump(&task.nr_migrations, 1);
            task.cpu.store(target, Ordering::Relaxed);
        }
        l.enqueue_wakeup(task);
    } else {
        bump(&l.shared().workers[l.index()].counters.wakeups_remote, 1);
        // No Arc clone here: the runtime's count is one shared cache
        // line that every CPU would bounce on each remote wakeup.
        l.shared().send_to(target, task);
    }
}

/// Runs `wait` (the running green task waiting for `target` to finish)
/// with `target` recorded as the task it joins: each time the caller parks,
/// its CPU runs `target` next if `target` waits in its run queue and the
/// class finds that fair enough (a directed yield, the kernel's
/// `yield_to()`, which sets the NEXT buddy). With the joiner woken as the
/// NEXT buddy when `target` finishes ([`wake_joiners`]), a fork-join tree
/// runs depth-first: only the tasks on the current path hold stacks, not
/// every started node of the tree. Outside a task this just runs `wait`.
pub(crate) fn joining<R>(target: &Task, wait: impl FnOnce() -> R) -> R {
    let cur = current_task_ptr();
    if cur.is_null() || std::ptr::eq(cur, target) {
        return wait();
    }
    /// Clears the record even if the wait unwinds (a killed task).
    struct Clear<'a>(&'a Task);
    impl Drop for Clear<'_> {
        fn drop(&mut self) {
            // SAFETY: `self.0` is the task running this code (see below).
            unsafe { self.0.join_target() }.set(std::ptr::null());
        }
    }
    // SAFETY: `cur` is the task running this code; it lives while it runs.
    let cur = unsafe { &*cur };
    // SAFETY: the calling task itself, running.
    unsafe { cur.join_target() }.set(target);
    let _clear = Clear(cur);
    wait()
}

/// Runs `wake` (a finishing task waking its joiners) so that a joiner
/// queued on this CPU becomes the NEXT buddy: the parent resumes at once
/// and joins its next child (see [`joining`]).
pub(crate) fn wake_joiners(wake: impl FnOnce()) {
    if current_task_ptr().is_null() || with_local(|l| l.buddy_wakeup = true).is_none() {
        return wake();
    }
    wake();
    with_local(|l| l.buddy_wakeup = false);
}

/// The task a direct process switch hands the CPU to
/// (`park_and_switch_to`): a counted reference the waker holds (a wait
/// queue node's, or the parked reference of a target the waker already
/// won), or one borrowed from the parking task's frame (a task named by a
/// handle, `wait::unpark_and_park_until`). A borrowed target stays alive
/// while the parking task cannot run, that is until its worker completes
/// the park (`finish_park`), which is why the worker takes the handoff
/// first.
///
/// One word: the target's address with the flags below in its low bits
/// (a `Task` is at least 8-aligned). A target is created, moved through
/// the park's out-of-line steps and returned from them many times per
/// switch: as one word it travels in a register, where a struct with a
/// flag byte would be stored and reloaded through memory (and a byte
/// store followed by a wider load of the same bytes defeats store-to-load
/// forwarding, a stall perf put at 16% of a handoff round trip).
pub(crate) struct SwitchTarget(std::num::NonZeroUsize);

impl SwitchTarget {
    /// The parking task lends the target its scheduling context (a call);
    /// clear for a handback (a reply), which only ends a loan the target
    /// made (see `WorkerCell::try_lend`).
    const LEND: usize = 1;
    /// The word holds a counted reference (`Arc::into_raw`): the waker's
    /// own, or with `WON` the parked reference.
    const COUNTED: usize = 2;
    /// The target was already won (PARKED -> RUNNABLE) by the parking task
    /// (`SwitchTarget::won`).
    const WON: usize = 4;
    const FLAGS: usize = 7;

    #[inline]
    fn pack(t: *const Task, flags: usize) -> SwitchTarget {
        debug_assert_eq!(t as usize & Self::FLAGS, 0);
        // A pointer to a live task is not null.
        SwitchTarget(std::num::NonZeroUsize::new(t as usize | flags).expect("a task address"))
    }

    fn ptr(&self) -> *const Task {
        (self.0.get() & !Self::FLAGS) as *const Task
    }

    fn has(&self, flag: usize) -> bool {
        self.0.get() & flag != 0
    }

    /// A target the waker holds a reference to.
    pub(crate) fn owned(t: TaskRef) -> SwitchTarget {
        Self::pack(Arc::into_raw(t), Self::LEND | Self::COUNTED)
    }

    /// A target borrowed from the caller of `park_and_switch_to`, whose
    /// frame outlives the handoff (see the type doc).
    #[inline]
    pub(crate) fn named(t: &TaskRef, lend: bool) -> SwitchTarget {
        Self::pack(Arc::as_ptr(t), if lend { Self::LEND } else { 0 })
    }

    /// A target the parking task already won (`wait::Claimed`): `t` is
    /// the parked reference, now owned; the target runs only when this
    /// target is switched to or woken (dropping it wakes it).
    #[inline]
    pub(crate) fn won(t: TaskRef, lend: bool) -> SwitchTarget {
        let lend = if lend { Self::LEND } else { 0 };
        Self::pack(Arc::into_raw(t), lend | Self::COUNTED | Self::WON)
    }

    /// The target.
    pub(crate) fn task(&self) -> &Task {
        // SAFETY: the target is alive: the word counts a reference to it,
        // or the parking task's frame borrows it (type doc).
        unsafe { &*self.ptr() }
    }

    /// Whether the parking task lends the target its scheduling context.
    #[inline]
    pub(crate) fn lends(&self) -> bool {
        self.has(Self::LEND)
    }

    /// Whether the parking task won the target already (`won`): it cannot
    /// run, move or park again until this target is spent.
    #[inline]
    pub(crate) fn is_won(&self) -> bool {
        self.has(Self::WON)
    }

    /// The same target holding a counted reference: a borrowed one takes a
    /// count now, while the borrow is still valid.
    pub(crate) fn into_counted(self) -> SwitchTarget {
        if self.has(Self::COUNTED) {
            return self;
        }
        let this = std::mem::ManuallyDrop::new(self);
        let ptr = this.ptr();
        // SAFETY: a borrowed target is alive while its borrow lasts (type
        // doc), and every task lives in an `Arc` (`TaskRef`): one more
        // count, released by the target.
        unsafe { Arc::increment_strong_count(ptr) };
        SwitchTarget(std::num::NonZeroUsize::new(this.0.get() | Self::COUNTED).expect("nonzero"))
    }

    /// Whether the target is `t`.
    pub(crate) fn is(&self, t: &Task) -> bool {
        std::ptr::eq(self.ptr(), t)
    }

    /// Tries PARKED -> RUNNABLE on the target (a won target is won
    /// already): on success returns the reference the parked task kept,
    /// now the caller's to enqueue.
    #[inline]
    fn win_wakeup(self) -> Option<TaskRef> {
        if self.has(Self::WON) {
            let this = std::mem::ManuallyDrop::new(self);
            // SAFETY: the word holds the parked reference (`won`), taken
            // out exactly once here (`this` is not dropped).
            return Some(unsafe { TaskRef::from_raw(this.ptr()) });
        }
        self.win_wakeup_parked()
    }

    /// [`win_wakeup`](Self::win_wakeup) for a target not won yet (out of
    /// line: a won one, an endpoint call's server, is the hot case).
    #[inline(never)]
    fn win_wakeup_parked(self) -> Option<TaskRef> {
        let this = std::mem::ManuallyDrop::new(self);
        let (ptr, counted) = (this.ptr(), this.has(Self::COUNTED));
        // SAFETY: the target is alive (type doc).
        let t = unsafe { &*ptr };
        let won = t.state.wake() == Wake::Enqueue;
        if won && ANY_TRACING.load(Ordering::Relaxed) {
            trace_wakeup(t);
        }
        // SAFETY: we won PARKED -> RUNNABLE just now (and `t` is alive:
        // the parked reference itself holds it from here).
        let parked = won.then(|| unsafe { t.take_parked_ref() });
        if counted {
            // The waker's own reference is not needed any more.
            // SAFETY: the word holds it (`owned`); released once here.
            drop(unsafe { TaskRef::from_raw(ptr) });
        }
        parked
    }

    /// Drops the target without waking it: for a hand-back whose target
    /// runs on at once anyway (the lender a loan returns to).
    #[inline]
    pub(crate) fn release(self) {
        let this = std::mem::ManuallyDrop::new(self);
        debug_assert!(!this.has(Self::WON), "a won target must run or be woken");
        if this.has(Self::COUNTED) {
            // SAFETY: the word holds a counted reference (`owned`,
            // `counted`), released once here (`this` is not dropped).
            drop(unsafe { TaskRef::from_raw(this.ptr()) });
        }
    }

    /// Wakes the target the ordinary way.
    pub(crate) fn wake(self) {
        if let Some(t) = self.win_wakeup() {
            enqueue_woken(t);
        }
    }
}

impl Drop for SwitchTarget {
    /// A target dropped unused: its counted reference is released, and a
    /// won target is woken (it would never run otherwise).
    fn drop(&mut self) {
        if self.has(Self::COUNTED) {
            // `wake` consumes the copy without dropping it again.
            SwitchTarget(self.0).wake();
        }
    }
}

/// Wakes a task (any thread may call it). The caller's reference is
/// dropped: a parked task is enqueued with the reference it kept.
pub(crate) fn wake_task(task: TaskRef) {
    unpark_task(&task, false);
}

/// [`wake_task`] for a task named by a borrowed reference: no reference
/// count changes (the parked task's own reference is enqueued).
/// With `sync`, as [`wake_task_sync`].
pub(crate) fn unpark_task(task: &TaskRef, sync: bool) {
    if task.state.wake() != Wake::Enqueue {
        return;
    }
    if ANY_TRACING.load(Ordering::Relaxed) {
        trace_wakeup(task);
    }
    // SAFETY: we won PARKED -> RUNNABLE just now.
    let parked = unsafe { task.take_parked_ref() };
    if sync {
        enqueue_woken_sync(parked);
    } else {
        enqueue_woken(parked);
    }
}

/// A wakeup from a task that is about to block (`WF_SYNC`): if the waker's
/// CPU runs nothing but the waker, the wakee joins it there
/// (fair.c `wake_affine_idle`: `sync && nr_running == 1` picks this CPU).
///
/// The kernel would still prefer an idle previous CPU sharing the cache
/// (`select_idle_sibling`); greenos does not for sync wakeups, because its
/// cost model differs: handing a task to another CPU costs several cache
/// line transfers (about 1.5 µs per hop between the vCPUs of the
/// development VM, where a local switch costs ~0.1 µs), while the kernel
/// pays that anyway for every wakeup. Tasks whose mask excludes this CPU are
/// woken where they were.
pub(crate) fn wake_task_sync(task: TaskRef) {
    unpark_task(&task, true);
}

/// The enqueue half of [`wake_task_sync`], for the waker that won.
/// Takes `task` out of its park if it is parked (PARKED -> RUNNABLE, one
/// CAS, no other effect when it is not): the claim of
/// [`crate::Task::try_claim`]. Returns the parked reference, now the
/// caller's to run or enqueue.
#[inline]
pub(crate) fn try_claim(task: &Task) -> Option<TaskRef> {
    if !task.state.try_claim() {
        return None;
    }
    if ANY_TRACING.load(Ordering::Relaxed) {
        trace_wakeup(task);
    }
    // SAFETY: we won PARKED -> RUNNABLE just now.
    Some(unsafe { task.take_parked_ref() })
}

/// Wakes a claimed task (`wait::Claimed`): enqueues it as a woken one.
pub(crate) fn enqueue_claimed(task: TaskRef, sync: bool) {
    if sync {
        enqueue_woken_sync(task);
    } else {
        enqueue_woken(task);
    }
}

fn enqueue_woken_sync(task: TaskRef) {
    let r = with_local_or(task, |l, task| {
        let here = l.index();
        if l.shared().id != task.rt_id || !task.allowed_on(here) || !l.runs_only_current() {
            return Some(task);
        }
        let prev = task.cpu.load(Ordering::Relaxed);
        if prev != here {
            // Wakeup migration: re-base the sleeper's vruntime from its old
            // queue's min_vruntime (read locklessly, as the kernel's
            // migrate_task_rq_fair does) to this one's at enqueue, and hand
            // its averages to the old queue's `removed`.
            // SAFETY: we won PARKED -> RUNNABLE: we own the task.
            let sp = unsafe { task.sched() };
            lb::wake_migrate(l.shared(), sp, prev, here);
            task.cpu.store(here, Ordering::Relaxed);
            l.count_arrival(prev);
        }
        l.enqueue_wakeup(task);
        None
    });
    match r {
        Ok(None) => {}
        Ok(Some(t)) | Err(t) => enqueue_woken(t),
    }
}

/// Puts a task that just became runnable on a run queue.
fn enqueue_woken(task: TaskRef) {
    if let Err(task) = with_local_or(task, enqueue_woken_owned) {
        // Not on a worker (an OS thread, or the shutdown path): placed as
        // the kernel places any wakeup, then sent to that CPU's inbox.
        let prev = task.cpu.load(Ordering::Relaxed);
        if let Some(s) = task_runtime(&task) {
            let target = lb::select_wake_cpu_outside(&s, &task, prev);
            if target != prev {
                // SAFETY: the caller won the task's wakeup: we own it.
                let sp = unsafe { task.sched() };
                lb::wake_migrate(&s, sp, prev, target);
            }
            s.send_to(target, task);
        }
    }
}

/// The runtime a task belongs to, for wakeups from outside any worker (an
/// OS thread sending on a channel, say). Tasks carry their runtime's id, not
/// a counted reference, so that spawning touches no shared counter.
fn task_runtime(task: &Task) -> Option<Arc<Shared>> {
    runtimes().lock().get(&task.rt_id).and_then(|w| w.upgrade())
}

/// All live runtimes by id.
pub(crate) fn runtimes() -> &'static Mutex<HashMap<u64, std::sync::Weak<Shared>>> {
    static RUNTIMES: OnceLock<Mutex<HashMap<u64, std::sync::Weak<Shared>>>> = OnceLock::new();
    RUNTIMES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Arms a timer on this CPU for wait `gen` of the running task.
pub(crate) fn arm_timer(task: &Task, deadline: u64, gen: u64) -> bool {
    let t = task as *const Task;
    with_local(|l| {
        // SAFETY: `t` is the running task (alive; see current_task_ref).
        let r = unsafe {
            Arc::increment_strong_count(t);
            Arc::from_raw(t)
        };
        l.arm_timer(deadline, r, gen);
    })
    .is_some()
}

/// The current time on the runtime clock.
#[inline]
pub(crate) fn now() -> u64 {
    clock::now_ns()
}

/// The runtime a task belongs to.
pub(crate) fn runtime_of(task: &Task) -> Option<Arc<Shared>> {
    task_runtime(task)
}

/// Takes a finishing task out of its runtime's pid table (the worker or the
/// shutdown path holds the task until its stack is released).
pub(crate) fn unregister_exiting(task: &Task) {
    let done = with_local(|l| {
        if l.shared().id == task.rt_id {
            drop(l.shared().table.remove(task.pid));
            true
        } else {
            false
        }
    });
    if done != Some(true) {
        if let Some(s) = task_runtime(task) {
            drop(s.table.remove(task.pid));
        }
    }
}

/// Whether tasks other than the running one are runnable on this CPU
/// (false off the workers).
#[inline]
pub(crate) fn cpu_has_other_runnable() -> bool {
    with_local(|l| !l.runs_only_current()).unwrap_or(false)
}

/// Whether the running task runs on a lent scheduling context: its lender
/// waits on this very CPU for it, so spinning for a peer elsewhere would
/// only hold the lender up. False off the workers.
pub(crate) fn runs_on_loan() -> bool {
    with_local(|l| l.lends()).unwrap_or(false)
}

/// Whether the running task runs on a scheduling context `task` lent it
/// (see `wait::lent_by`).
#[inline]
pub(crate) fn lent_by(task: &Task) -> bool {
    with_local(|l| l.lender_is(task)).unwrap_or(false)
}

/// Whether this thread is a worker (CPU) of some runtime.
pub(crate) fn on_worker() -> bool {
    !current_worker_ptr().is_null()
}

/// Whether the running task may run on one CPU only (pinned by its mask).
/// False off the workers.
pub(crate) fn current_task_cannot_move() -> bool {
    let t = current_task_ptr();
    // SAFETY: see current_task.
    !t.is_null() && !current_worker_ptr().is_null() && unsafe { (*t).allowed.is_single() }
}

/// The index of the CPU this thread runs (a worker thread only).
pub(crate) fn current_cpu_index() -> usize {
    let w = current_worker_ptr();
    assert!(!w.is_null(), "not on a greenos worker");
    // SAFETY: see current_shared.
    unsafe { (*w).worker_shared().index }
}

/// Makes a freshly created task runnable.
pub(crate) fn submit_new(shared: &Arc<Shared>, task: TaskRef) {
    shared.table.insert(task.clone());
    tracing::debug!(
        pid = task.pid.0,
        ppid = task.ppid,
        name = task.name_or_dash(),
        "greenos: spawn"
    );
    if let Some(tr) = &shared.trace {
        if let Some(n) = task.name() {
            tr.names.lock().insert(task.pid.0, n.to_string());
        }
        trace_event(
            shared,
            crate::trace::EventKind::Spawn,
            task.pid.0,
            task.ppid,
            0,
        );
    }
    if shared.shutdown.load(Ordering::Acquire) {
        // Too late to run: drop the body unrun (the join handle reports
        // cancellation).
        shared.table.remove(task.pid);
        // SAFETY: nobody else has seen the task yet.
        drop(unsafe { task.sched() }.entry.take());
        return;
    }
    let task = match with_local_or(task, |l, task| {
        if Arc::ptr_eq(l.shared(), shared) {
            l.enqueue_new(task);
            None
        } else {
            Some(task)
        }
    }) {
        Ok(None) => return,
        Ok(Some(t)) => t,
        Err(t) => t,
    };
    // From outside this runtime's CPUs: an idle allowed CPU if there is one,
    // else round robin over the allowed ones.
    let n = shared.nr_cpus();
    let start = shared.outside_cursor.fetch_add(1, Ordering::Relaxed) % n;
    if let Some(cpu) = shared.claim_idle_cpu(start, Some(&task.allowed)) {
        worker::send_to_claimed(shared, cpu, task);
        return;
    }
    let cpu = (0..n)
        .map(|k| (start + k) % n)
        .find(|&c| task.allowed_on(c))
        .unwrap_or(start);
    shared.send_to(cpu, task);
}

/// Cancels a task at shutdown (all workers have stopped): unwinds its stack
/// on this thread so destructors run, or drops its unrun body.
pub(crate) fn cancel_task(task: TaskRef) {
    task.cancelled.store(true, Ordering::SeqCst);
    // A parked task still holds the reference its worker left it
    // (`Task::take_parked_ref`): nobody will wake it now, so take it back
    // here, or its control block would leak.
    if task.state.wake() == Wake::Enqueue {
        // SAFETY: we won PARKED -> RUNNABLE just now.
        drop(unsafe { task.take_parked_ref() });
    }
    // SAFETY: every worker has stopped; the shutdown thread is the only one
    // touching tasks now.
    let coro = unsafe { (*task.coro_slot()).take() };
    match coro {
        Some(mut c) => {
            // The unwinding task is "current" on this thread, which may be a
            // plain thread or a CPU of another runtime (a task dropping a
            // runtime it owns).
            let w = current_worker_ptr();
            let prev = current_task_ptr();
            if w.is_null() {
                set_current_task(&*task);
            } else {
                // SAFETY: a non-null WORKER is this thread's live WorkerCell.
                unsafe { (*w).set_current(&*task) };
            }
            // Resumes the task with corosensei's unwind payload: every frame
            // on its stack is dropped. Nothing it calls may block or yield
            // (its `cancelled` flag is set), so the unwind runs to the root.
            c.force_unwind();
            if w.is_null() {
                set_current_task(prev);
            } else {
                // SAFETY: as above.
                unsafe { (*w).set_current(prev) };
            }
            if c.done() {
                let stack = c.into_stack();
                stack.clear_owner();
                stack::StackPool::global().release(stack);
            }
        }
        None => {
            // SAFETY: as above.
            drop(unsafe { task.sched() }.entry.take());
        }
    }
}
