//! Runtime metrics: per-CPU counters, cheap enough to leave on.
//!
//! Each counter is written only by its own CPU (no shared read-modify-write
//! on the switch path) and read here with relaxed loads, so a snapshot is a
//! consistent-enough picture, not an atomic one.

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
        Metrics {
            cpus: shared
                .workers
                .iter()
                .map(|w| {
                    let c = &w.counters;
                    CpuMetrics {
                        cpu: w.index,
                        nr_running: w.nr_running.load(Ordering::Relaxed),
                        min_vruntime: r(&w.min_vruntime),
                        switches: r(&c.switches),
                        voluntary_switches: r(&c.voluntary_switches),
                        forced_switches: r(&c.forced_switches),
                        wakeups_local: r(&c.wakeups_local),
                        steals: r(&c.steals),
                        migrations_in: r(&c.migrations_in),
                        migrations_out: r(&c.migrations_out),
                        parks: r(&c.parks),
                        tasks_exited: r(&c.tasks_exited),
                        direct_switches: r(&c.direct_switches),
                        busy_ns: r(&c.busy_ns),
                        idle_ns: r(&c.idle_ns),
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
