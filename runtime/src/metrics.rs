//! Runtime metrics: per-CPU counters, cheap enough to leave on.
//!
//! Each counter is written only by its own CPU (no shared read-modify-write
//! on the switch path) and read here with relaxed loads, so a snapshot is a
//! consistent-enough picture, not an atomic one. The balance counters of a
//! domain level are the exception: the CPU that serves a pull request
//! credits the requester (a relaxed `fetch_add`, off the switch path).

use std::sync::atomic::Ordering;

use crate::executor::Shared;

/// Counters of one CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuMetrics {
    /// The CPU's number.
    pub cpu: usize,
    /// Runnable tasks (queued + running) at the last switch.
    pub nr_running: usize,
    /// The run queue's `min_vruntime` (ns of virtual time).
    pub min_vruntime: u64,
    /// Context switches (a task switched out, for any reason).
    pub switches: u64,
    /// Switches the task asked for (yield, block, exit).
    pub voluntary_switches: u64,
    /// Switches forced by `need_resched` at a yield point.
    pub forced_switches: u64,
    /// Wakeups queued locally on this CPU.
    pub wakeups_local: u64,
    /// Wakeups this CPU sent to another CPU (`ttwu` remote).
    pub wakeups_remote: u64,
    /// Times this CPU's thread woke from sleeping in the OS (park/unpark).
    pub unparks: u64,
    /// Tasks this CPU stole from another CPU's staging deque.
    pub steals: u64,
    /// Runnable tasks that arrived here from another CPU.
    pub migrations_in: u64,
    /// Tasks this CPU sent to another CPU (pushes and fork balancing).
    pub migrations_out: u64,
    /// Times a task parked (blocked) on this CPU.
    pub parks: u64,
    /// Tasks that finished on this CPU.
    pub tasks_exited: u64,
    /// Direct process switches: a blocking task handed this CPU straight
    /// to the task it woke, bypassing the run queue (IPC fastpath).
    pub direct_switches: u64,
    /// Time spent running tasks (ns).
    pub busy_ns: u64,
    /// Time spent idle, spinning or asleep (ns).
    pub idle_ns: u64,
    /// PELT `load_avg` of the run queue (weighted; 1024 per always-runnable
    /// nice-0 task).
    pub load_avg: u64,
    /// PELT `util_avg`: 1024 × the fraction of recent time spent running.
    pub util_avg: u64,
    /// PELT `runnable_avg`: 1024 × recent runnable tasks on average.
    pub runnable_avg: u64,
    /// Load-balancing counters per scheduling-domain level of this CPU,
    /// lowest level first.
    pub domains: Vec<DomainMetrics>,
}

/// Load balancing seen from one CPU at one of its domain levels (the
/// kernel's `/proc/schedstat` domain lines, in spirit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainMetrics {
    /// The level (0 = lowest), as in `Runtime::domains`.
    pub level: usize,
    /// The level's kind (`SMT`, `MC`, `PKG`, `NUMA`...).
    pub name: &'static str,
    /// Balance passes at this level (newly idle and periodic).
    pub balance_attempts: u64,
    /// Passes that found an imbalance and asked the busiest CPU for load.
    pub balance_imbalanced: u64,
    /// Tasks pulled (or pushed) to this CPU by balancing at this level.
    pub tasks_pulled: u64,
    /// Requests the busiest CPU served without moving anything (every
    /// candidate pinned, running or cache hot).
    pub balance_failed: u64,
    /// New tasks this CPU stole from a staging deque at this level.
    pub steals: u64,
    /// Tasks that arrived from a CPU whose nearest common domain is this
    /// level, by any path (wakeup placement, balancing, stealing).
    pub migrations_in: u64,
    /// Tasks that left for a CPU whose nearest common domain is this level
    /// (pushed, pulled away, woken elsewhere).
    pub migrations_out: u64,
}

/// A snapshot of a runtime's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One entry per CPU, by CPU number.
    pub cpus: Vec<CpuMetrics>,
    /// Live tasks (spawned, not finished).
    pub live_tasks: usize,
}

impl Metrics {
    pub(crate) fn snapshot(shared: &Shared) -> Metrics {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let now = crate::clock::now_ns();
        Metrics {
            cpus: shared
                .workers
                .iter()
                .map(|w| {
                    let c = &w.counters;
                    let avgs = crate::executor::lb::published_avgs(w, now);
                    CpuMetrics {
                        cpu: w.index,
                        nr_running: w.nr_running.load(Ordering::Relaxed),
                        min_vruntime: r(&w.min_vruntime),
                        switches: r(&c.switches),
                        voluntary_switches: r(&c.voluntary_switches),
                        forced_switches: r(&c.forced_switches),
                        wakeups_local: r(&c.wakeups_local),
                        wakeups_remote: r(&c.wakeups_remote),
                        unparks: r(&c.unparks),
                        steals: r(&c.steals),
                        migrations_in: r(&c.migrations_in),
                        migrations_out: r(&c.migrations_out),
                        parks: r(&c.parks),
                        tasks_exited: r(&c.tasks_exited),
                        direct_switches: r(&c.direct_switches),
                        busy_ns: r(&c.busy_ns),
                        idle_ns: r(&c.idle_ns),
                        load_avg: avgs.0,
                        util_avg: avgs.1,
                        runnable_avg: avgs.2,
                        domains: shared.domains[w.index]
                            .domains
                            .iter()
                            .enumerate()
                            .map(|(level, d)| {
                                let lc = &c.lb[level.min(crate::executor::lb::MAX_LEVELS - 1)];
                                DomainMetrics {
                                    level,
                                    name: d.kind.name(),
                                    balance_attempts: r(&lc.attempts),
                                    balance_imbalanced: r(&lc.imbalanced),
                                    tasks_pulled: r(&lc.pulled),
                                    balance_failed: r(&lc.failed),
                                    steals: r(&lc.steals),
                                    migrations_in: r(&lc.migrations_in),
                                    migrations_out: r(&lc.migrations_out),
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
            live_tasks: shared.table.len(),
        }
    }

    /// Sum of a counter over all CPUs.
    pub fn total(&self, f: impl Fn(&CpuMetrics) -> u64) -> u64 {
        self.cpus.iter().map(f).sum()
    }
}

/// What a task is doing, as a snapshot sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// On a CPU now.
    Running,
    /// Queued, waiting for a CPU.
    Runnable,
    /// Blocked in a wait (or switching out to one).
    Blocked,
    /// Stopped by a stop signal until SIGCONT.
    Stopped,
}

/// Counters of one task (`Runtime::task_metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMetrics {
    /// Its pid.
    pub pid: crate::Pid,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// What it is doing.
    pub state: TaskState,
    /// The CPU it runs on, or last ran on.
    pub cpu: usize,
    /// Its nice value.
    pub nice: i32,
    /// Its `vruntime` as of its last switch-out (ns of virtual time).
    pub vruntime: u64,
    /// CPU time it has run (`sum_exec_runtime`, ns, as of its last switch-out).
    pub sum_exec_runtime: u64,
    /// Time it waited runnable for a CPU after a yield or preemption, or
    /// after a timestamped wakeup (ns).
    pub wait_time: u64,
    /// Times it was switched in.
    pub switches: u64,
    /// Times it arrived runnable on another CPU.
    pub migrations: u64,
    /// Scheduling policy.
    pub policy: crate::SchedPolicy,
}

impl TaskMetrics {
    pub(crate) fn snapshot_all(shared: &Shared) -> Vec<TaskMetrics> {
        let running: Vec<u64> = shared
            .workers
            .iter()
            .map(|w| w.curr_pid.load(Ordering::Relaxed))
            .collect();
        shared
            .table
            .snapshot_all()
            .into_iter()
            .map(|t| {
                let base = t.state.load() & 3;
                let state = if t.sig.is_stopped() {
                    TaskState::Stopped
                } else if running.contains(&t.pid.0) {
                    TaskState::Running
                } else if base == crate::executor::state::RUNNABLE {
                    TaskState::Runnable
                } else {
                    TaskState::Blocked
                };
                TaskMetrics {
                    pid: t.pid,
                    name: t.name().map(str::to_string),
                    state,
                    cpu: t.cpu.load(Ordering::Relaxed),
                    nice: t.nice.load(Ordering::Relaxed),
                    vruntime: t.vruntime_seen.load(Ordering::Relaxed),
                    sum_exec_runtime: t.sum_exec_ns.load(Ordering::Relaxed),
                    wait_time: t.wait_sum_ns.load(Ordering::Relaxed),
                    switches: t.nr_switches.load(Ordering::Relaxed),
                    migrations: t.nr_migrations.load(Ordering::Relaxed),
                    policy: t.policy(),
                }
            })
            .collect()
    }
}
