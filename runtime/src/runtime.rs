//! `Runtime`: a set of worker CPUs and everything running on them.
//!
//! # Shutdown (on drop)
//! 1. Raise `shutdown`; wake every CPU and the monitor.
//! 2. Each CPU finishes the task it is running (at its next switch; a task
//!    that never reaches a greenos call holds shutdown up, as a thread that
//!    never returns holds up `join`), leaves its loop, and drops its queues'
//!    references. Worker and monitor threads are joined.
//! 3. Every task still alive (queued, sleeping or blocked) is cancelled on
//!    the dropping thread: its `cancelled` flag is set, so nothing it calls
//!    can block or yield, and its coroutine is dropped, which unwinds its
//!    stack (destructors run) through corosensei's forced unwind. Tasks that
//!    never ran just drop their closures. Join handles report `Cancelled`.
//! 4. Repeat step 3 while destructors created new work, then unregister.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;

use crossbeam_deque::{Injector, Worker as Deque};
use crossbeam_utils::CachePadded;

use crate::error::errno;
use crate::executor::{self, monitor, stack, worker, Config, Shared, WorkerShared, BUSY};
use crate::sched::domains::SchedDomain;
use crate::sched::Tunables;
use crate::task::{Builder as TaskBuilder, JoinHandle};
use crate::topology::{Topology, TopologySource};
use crate::Pid;

pub use crate::sched::Policy;

/// How runtime CPUs are laid onto the topology's PUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// One PU of every core before any core's SMT sibling, alternating
    /// between NUMA nodes, packages and LLCs (the default; like hwloc's
    /// `distrib` or OpenMP's `spread`).
    #[default]
    Spread,
    /// PUs in logical order: SMT siblings, then the next core, filling one
    /// LLC / package / node before the next (OpenMP's `close`).
    Compact,
    /// Runtime CPU `i` runs on logical PU `list[i]` (indices into
    /// [`Topology::pus`]); the list's length is the worker count.
    List(Vec<usize>),
}

/// Configures and builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    workers: Option<usize>,
    topology: Option<Topology>,
    placement: Placement,
    pin_workers: bool,
    policy: Policy,
    stack_size: usize,
    idle_spin: std::time::Duration,
    thread_name: String,
    trace: Option<crate::trace::TraceConfig>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: None,
            topology: None,
            placement: Placement::Spread,
            pin_workers: true,
            policy: Policy::Cfs,
            stack_size: stack::DEFAULT_STACK_SIZE,
            // Measured on the 2-vCPU KVM development machine: unparking a
            // sleeping worker costs ~60 µs there, so a worker spins a little
            // longer than that before sleeping.
            idle_spin: std::time::Duration::from_micros(100),
            thread_name: "greenos-cpu".to_owned(),
            trace: None,
        }
    }
}

impl Builder {
    /// Number of worker CPUs. Default: for a detected topology, the CPUs in
    /// the process's affinity mask capped by its cgroup CPU quota
    /// ([`default_worker_count`](crate::topology::default_worker_count),
    /// as Go 1.25 sets GOMAXPROCS); for a synthetic one, its PU count; for
    /// [`Placement::List`], the list's length.
    pub fn workers(mut self, n: usize) -> Builder {
        self.workers = Some(n);
        self
    }

    /// The machine the runtime's CPUs are laid onto (default:
    /// [`Topology::detect`]). A synthetic topology may be larger than the
    /// real machine: its CPUs are then pinned round-robin onto the real
    /// CPUs the process may use (runtime CPU `i` on the `i mod n`-th), so
    /// a 32-CPU two-node machine runs, slowly but correctly, on 2 cores.
    pub fn topology(mut self, topology: Topology) -> Builder {
        self.topology = Some(topology);
        self
    }

    /// How runtime CPUs are laid onto PUs (default [`Placement::Spread`]).
    /// More workers than PUs wrap around the placement order.
    pub fn placement(mut self, placement: Placement) -> Builder {
        self.placement = placement;
        self
    }

    /// Pin each worker thread to the OS CPU of its PU (default true; see
    /// [`Builder::topology`] for synthetic machines).
    pub fn pin_workers(mut self, pin: bool) -> Builder {
        self.pin_workers = pin;
        self
    }

    /// The fair scheduling class (default CFS).
    pub fn policy(mut self, policy: Policy) -> Builder {
        self.policy = policy;
        self
    }

    /// Default usable stack size of tasks (bytes; default 64 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// How long an idle worker spins looking for work before it sleeps in
    /// the OS (default 100 µs).
    pub fn idle_spin(mut self, d: std::time::Duration) -> Builder {
        self.idle_spin = d;
        self
    }

    /// Records scheduler events (switches, wakeups with their waker,
    /// migrations, spawns, exits, blocking) into per-CPU rings of
    /// `cfg.events_per_cpu` events; read them with [`Runtime::trace`].
    /// Off by default (then it costs one branch per hook).
    pub fn trace(mut self, cfg: crate::trace::TraceConfig) -> Builder {
        self.trace = Some(cfg);
        self
    }

    /// Prefix of worker thread names (default `greenos-cpu`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.thread_name = name.into();
        self
    }

    /// Starts the worker threads. Errors: `EINVAL` for zero workers, a
    /// stack size out of range, or a [`Placement::List`] naming a PU the
    /// topology lacks or disagreeing with `workers`; whatever the OS says
    /// when threads cannot start.
    pub fn build(mut self) -> io::Result<Runtime> {
        let layout = Layout::new(
            self.topology.take(),
            &self.placement,
            self.workers,
            self.pin_workers,
        )?;
        let workers = layout.cpu_pu.len();
        if !(crate::task::MIN_STACK_SIZE..=crate::task::MAX_STACK_SIZE).contains(&self.stack_size) {
            return Err(errno(libc::EINVAL));
        }
        crate::clock::init();
        // Before the workers start: registering for `membarrier` waits for
        // an RCU grace period (milliseconds in a VM) unless the process
        // is single-threaded then.
        crate::sync::biased_prepare();
        if let Err(e) = stack::install_overflow_handler() {
            // Overflow still kills the process (guard pages stay); only the
            // report naming the task is lost.
            tracing::warn!(error = %e, "greenos: stack overflow reporting unavailable");
        }
        let config = Config {
            pin_workers: self.pin_workers,
            policy: self.policy,
            default_stack_size: self.stack_size,
            idle_spin_ns: self.idle_spin.as_nanos() as u64,
            monitor_tick_ns: 1_000_000,
            overrun_report_ns: 100_000_000,
            thread_name: self.thread_name,
        };
        let deques: Vec<Deque<_>> = (0..workers).map(|_| Deque::new_fifo()).collect();
        let workers_shared: Box<[CachePadded<WorkerShared>]> = deques
            .iter()
            .enumerate()
            .map(|(index, d)| {
                CachePadded::new(WorkerShared {
                    index,
                    inbox: Injector::new(),
                    stealer: d.stealer(),
                    idle: std::sync::atomic::AtomicU8::new(BUSY),
                    thread: std::sync::OnceLock::new(),
                    need_resched: AtomicBool::new(false),
                    need_service: AtomicBool::new(false),
                    serviced_at: AtomicU64::new(0),
                    curr_pid: AtomicU64::new(0),
                    run_start: AtomicU64::new(0),
                    curr_weight: AtomicU64::new(0),
                    rq_load: AtomicU64::new(0),
                    switch_seq: AtomicU64::new(0),
                    nr_running: AtomicUsize::new(0),
                    min_vruntime: AtomicU64::new(0),
                    run_budget: AtomicU64::new(monitor::BUDGET_CFS),
                    next_timer: AtomicU64::new(u64::MAX),
                    load_avg: AtomicU64::new(0),
                    util_avg: AtomicU64::new(0),
                    runnable_avg: AtomicU64::new(0),
                    avg_at: AtomicU64::new(0),
                    removed: Default::default(),
                    in_flight: Default::default(),
                    inbox_drains: AtomicU64::new(0),
                    pull_request: AtomicU64::new(0),
                    counters: Default::default(),
                })
            })
            .collect();
        static NEXT_RT_ID: AtomicU64 = AtomicU64::new(1);
        let trace = self
            .trace
            .map(|cfg| crate::executor::TraceState::new(workers, cfg));
        let domains = crate::executor::lb::CpuDomains::build_all(
            crate::sched::domains::build(&layout.topology, &layout.cpu_pu),
            workers,
        );
        let shared = Arc::new(Shared {
            domains,
            all_cpus: crate::cpuset::CpuSet::all(workers),
            trace,
            sigchld_caught: AtomicBool::new(false),
            id: NEXT_RT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            workers: workers_shared,
            tunables: Tunables::for_cpus(workers),
            shutdown: AtomicBool::new(false),
            table: executor::pid::PidTable::new(),
            nr_idle: CachePadded::new(AtomicUsize::new(0)),
            outside_cursor: CachePadded::new(AtomicUsize::new(0)),
            monitor: monitor::MonitorShared::default(),
        });
        executor::runtimes()
            .lock()
            .insert(shared.id, Arc::downgrade(&shared));
        let mut threads = Vec::with_capacity(workers);
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
            monitor: None,
            layout,
        };
        for (index, deque) in deques.into_iter().enumerate() {
            let s = shared.clone();
            let core = rt.layout.os_cpu[index]
                .filter(|_| shared.config.pin_workers)
                .map(|id| core_affinity::CoreId { id });
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{index}", shared.config.thread_name))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    if let Err(e) = stack::ensure_sigaltstack() {
                        tracing::warn!(error = %e, "greenos: no alternate signal stack");
                    }
                    let _ = s.workers[index].thread.set(std::thread::current());
                    worker::run_worker(s, index, deque);
                });
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    rt.threads = threads;
                    return Err(e); // `rt` drops: the started workers stop.
                }
            }
        }
        rt.threads = threads;
        let s = shared.clone();
        rt.monitor = Some(
            std::thread::Builder::new()
                .name(format!("{}-monitor", shared.config.thread_name))
                .spawn(move || monitor::run_monitor(s))?,
        );
        Ok(rt)
    }
}

/// A greenos runtime: worker threads acting as CPUs, each with its own
/// scheduler, and the green threads running on them.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<ThreadHandle<()>>,
    monitor: Option<ThreadHandle<()>>,
    layout: Layout,
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime with the defaults.
    pub fn new() -> io::Result<Runtime> {
        Builder::default().build()
    }

    /// Number of worker CPUs.
    pub fn workers(&self) -> usize {
        self.shared.nr_cpus()
    }

    /// Runs `f` as a green thread (pid 1, "init", when no other `block_on`
    /// is running) and blocks the calling OS thread until it returns. A panic
    /// in `f` is resumed on the caller. `f` may borrow from the caller, as a
    /// scoped thread may.
    ///
    /// Panics when called from inside a greenos task (blocking a CPU's
    /// thread on its own runtime would deadlock it); spawn and join instead.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        assert!(
            executor::current_task_ptr().is_null(),
            "greenos::Runtime::block_on called from inside a greenos task; \
             use greenos::spawn(..).join() there"
        );
        // Pid 1 is free unless another block_on task holds it.
        let init = self.shared.table.try_reserve(Pid(1));
        let pid = if init { Some(Pid(1)) } else { None };
        let builder = TaskBuilder::new().name(if init { "init" } else { "block_on" });
        let handle = match builder.spawn_with_pid(&self.shared, pid, f) {
            Ok(h) => h,
            Err(e) => {
                if init {
                    self.shared.table.unreserve(Pid(1));
                }
                panic!("greenos::Runtime::block_on: spawning the task failed: {e}");
            }
        };
        let r = handle.join();
        match r {
            Ok(v) => v,
            Err(crate::JoinError::Panic(p)) => std::panic::resume_unwind(p),
            Err(crate::JoinError::Cancelled) => {
                panic!("greenos::Runtime::block_on: the task was cancelled")
            }
            Err(crate::JoinError::Killed(sig)) => {
                panic!("greenos::Runtime::block_on: the task was killed by {sig}")
            }
        }
    }

    /// Spawns a task from outside the runtime (from any OS thread).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        TaskBuilder::new()
            .spawn_on(&self.shared, f)
            .expect("greenos::Runtime::spawn: spawning with default settings failed")
    }

    /// Spawns a task with settings from outside the runtime.
    pub fn spawn_with<F, T>(&self, builder: TaskBuilder, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        builder.spawn_on(&self.shared, f)
    }

    /// Number of live tasks (spawned and not yet finished).
    pub fn live_tasks(&self) -> usize {
        self.shared.table.len()
    }

    /// Sends `sig` to task `pid` from outside the runtime's tasks (an OS
    /// thread), with the OS process's effective uid as the sender's, like
    /// kill(1) from a shell. Errors as [`crate::signal::kill`].
    pub fn kill(&self, pid: crate::Pid, sig: crate::signal::Signal) -> std::io::Result<()> {
        crate::signal::kill_from_os(&self.shared, pid, sig)
    }

    /// A snapshot of the recorded events, merged in time order (`None`
    /// unless built with [`Builder::trace`]). Can be taken while the runtime
    /// runs; the rings keep the newest events.
    pub fn trace(&self) -> Option<crate::trace::Trace> {
        let tr = self.shared.trace.as_ref()?;
        let outside = tr.outside.lock();
        let mut rings: Vec<&crate::trace::TraceRing> = tr.rings.iter().collect();
        rings.push(&outside);
        let mut names = tr.names.lock().clone();
        names.entry(1).or_insert_with(|| "init".to_string());
        Some(crate::trace::Trace::from_rings(
            &rings,
            self.shared.nr_cpus(),
            names,
        ))
    }

    /// Per-task metrics of every live task, by pid (walks the pid table:
    /// meant for a monitor refreshing now and then, not a hot loop).
    pub fn task_metrics(&self) -> Vec<crate::metrics::TaskMetrics> {
        crate::metrics::TaskMetrics::snapshot_all(&self.shared)
    }

    /// A snapshot of the per-CPU counters.
    pub fn metrics(&self) -> crate::Metrics {
        crate::Metrics::snapshot(&self.shared)
    }

    /// The topology the runtime's CPUs are laid onto.
    pub fn topology(&self) -> &Topology {
        &self.layout.topology
    }

    /// The logical PU (index into [`Topology::pus`]) runtime CPU `cpu`
    /// stands for.
    pub fn cpu_pu(&self, cpu: usize) -> Option<usize> {
        self.layout.cpu_pu.get(cpu).copied()
    }

    /// The OS CPU worker `cpu` is pinned to (`None` if unpinned or out of
    /// range).
    pub fn pinned_os_cpu(&self, cpu: usize) -> Option<usize> {
        self.layout.os_cpu.get(cpu).copied().flatten()
    }

    /// Every CPU's scheduling domains, CPU 0's first, each CPU's lowest
    /// level first (see [`crate::sched::domains`]; print them with
    /// [`DomainsDebug`](crate::sched::domains::DomainsDebug)).
    pub fn domains(&self) -> Vec<SchedDomain> {
        crate::sched::domains::build(&self.layout.topology, &self.layout.cpu_pu)
    }
}

/// Where each runtime CPU sits: its PU in the topology and the OS CPU its
/// worker thread is pinned to.
#[derive(Debug)]
struct Layout {
    topology: Topology,
    /// Logical PU of each runtime CPU.
    cpu_pu: Vec<usize>,
    /// OS CPU of each worker (`None`: unpinned).
    os_cpu: Vec<Option<usize>>,
}

impl Layout {
    fn new(
        topology: Option<Topology>,
        placement: &Placement,
        workers: Option<usize>,
        pin: bool,
    ) -> io::Result<Layout> {
        let allowed = crate::topology::affinity_cpus();
        let topology = match topology {
            Some(t) => t,
            None => {
                // Read once per process: the machine does not change under
                // us (CPU hotplug aside), and runtimes are built often in
                // tests.
                static DETECTED: std::sync::OnceLock<Option<Topology>> = std::sync::OnceLock::new();
                let detected = DETECTED.get_or_init(|| {
                    Topology::detect()
                        .map_err(|e| {
                            tracing::warn!(error = %e, "greenos: topology unknown; assuming flat CPUs");
                        })
                        .ok()
                });
                match detected {
                    Some(t) => t.clone(),
                    None => Topology::flat(&allowed),
                }
            }
        };
        let real = !matches!(topology.source(), TopologySource::Synthetic(_));
        // The PUs this process may run on (all of a synthetic machine's).
        let mut usable: Vec<usize> = if real {
            topology.pus_in(&allowed)
        } else {
            (0..topology.nr_pus()).collect()
        };
        if usable.is_empty() {
            usable = (0..topology.nr_pus()).collect();
        }
        let order: Vec<usize> = match placement {
            Placement::Spread => topology
                .spread_order()
                .into_iter()
                .filter(|p| usable.contains(p))
                .collect(),
            Placement::Compact => usable.clone(),
            Placement::List(l) => {
                if l.is_empty()
                    || l.iter().any(|&p| p >= topology.nr_pus())
                    || workers.is_some_and(|n| n != l.len())
                {
                    return Err(errno(libc::EINVAL));
                }
                l.clone()
            }
        };
        let n = match workers {
            Some(0) => return Err(errno(libc::EINVAL)),
            Some(n) => n,
            None if matches!(placement, Placement::List(_)) => order.len(),
            None if real => crate::topology::default_worker_count().min(usable.len().max(1)),
            None => usable.len(),
        };
        let cpu_pu: Vec<usize> = (0..n).map(|i| order[i % order.len()]).collect();
        let real_cpus: Vec<usize> = allowed.iter().collect();
        let os_cpu = (0..n)
            .map(|i| {
                if !pin || real_cpus.is_empty() {
                    None
                } else if real {
                    Some(topology.pus()[cpu_pu[i]].os_index)
                } else {
                    Some(real_cpus[i % real_cpus.len()])
                }
            })
            .collect();
        Ok(Layout {
            topology,
            cpu_pu,
            os_cpu,
        })
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .field("live_tasks", &self.live_tasks())
            .finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        let monitor = self.monitor.take();
        let shared = self.shared.clone();
        let on_own_cpu = executor::current_shared().is_some_and(|s| Arc::ptr_eq(&s, &self.shared));
        if on_own_cpu {
            // Dropped by one of its own tasks: this thread is one of the
            // CPUs to be joined, so the teardown runs on a thread of its own
            // (detached) and this CPU finishes its task and stops.
            shared.shutdown.store(true, Ordering::SeqCst);
            let _ = std::thread::Builder::new()
                .name("greenos-shutdown".to_owned())
                .spawn(move || shutdown(shared, threads, monitor));
        } else {
            shutdown(shared, threads, monitor);
        }
    }
}

/// The shutdown sequence (see the module doc).
fn shutdown(s: Arc<Shared>, threads: Vec<ThreadHandle<()>>, monitor: Option<ThreadHandle<()>>) {
    s.shutdown.store(true, Ordering::SeqCst);
    s.monitor.unpark();
    // Until every CPU has left its loop: ask the running task to yield (a
    // task looping on `maybe_yield` would otherwise never let its CPU see
    // the flag: with one task per CPU no slice ever expires, and a CPU that
    // switches a task in clears the flag) and wake sleeping CPUs.
    while !threads.iter().all(|t| t.is_finished()) {
        for w in s.workers.iter() {
            w.need_resched.store(true, Ordering::SeqCst);
            w.unpark();
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    for t in threads {
        let _ = t.join();
    }
    if let Some(m) = monitor {
        let _ = m.join();
    }
    // Cancel whatever is left, until nothing is.
    loop {
        let tasks = s.table.drain_all();
        let mut inboxed = 0;
        for w in s.workers.iter() {
            loop {
                match w.inbox.steal() {
                    crossbeam_deque::Steal::Success(t) => {
                        inboxed += 1;
                        drop(t);
                    }
                    crossbeam_deque::Steal::Retry => {}
                    crossbeam_deque::Steal::Empty => break,
                }
            }
        }
        if tasks.is_empty() && inboxed == 0 {
            break;
        }
        for t in tasks {
            executor::cancel_task(t);
        }
    }
    executor::runtimes().lock().remove(&s.id);
}
