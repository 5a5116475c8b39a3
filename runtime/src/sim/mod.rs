//! A deterministic discrete-event simulator of the scheduler on machines
//! larger than the one at hand.
//!
//! # What this module owns
//!
//! - [`engine`]: [`Sim`], the engine. Virtual CPUs of any synthetic
//!   [`Topology`](crate::Topology) (one per PU), each with a real
//!   [`RunQueue`](crate::sched::RunQueue) of the chosen
//!   [`Policy`](crate::sched::Policy) and RT above it; per-entity and
//!   per-queue PELT ([`SchedAvg`](crate::sched::pelt::SchedAvg)) kept here
//!   and attached / detached / removed on migration; scheduling domains from
//!   [`domains::build`](crate::sched::domains::build); every balancing
//!   decision from [`sched::balance`](crate::sched::balance)
//!   (`find_busiest`, `pick_tasks`, `select_task_rq`). [`Costs`] are the
//!   machine's charges, [`SimConfig`] the run's settings.
//! - [`workload`]: [`Workload`] and [`Group`] (count, nice/policy,
//!   affinity, start CPUs, spawn time, burst and sleep distributions, work
//!   budget, ping-pong pairs, fork trees), their text format, and the five
//!   built-in workloads ([`workload::BUILTIN`]).
//! - [`report`]: [`Report`] (table, JSON, SVG timeline).
//! - [`rng`]: SplitMix64 and [`Dist`].
//!
//! # The model
//!
//! 1. **Time** is a `u64` of virtual ns. Events (tick, end of a CPU burst,
//!    sleep timer, remote wakeup arrival, spawn) sit in one binary heap
//!    ordered by `(time, sequence number)`; equal times run in the order
//!    they were scheduled. Nothing reads a clock and nothing iterates a
//!    hash map, so the same seed, workload, topology and config give the
//!    same run bit for bit.
//! 2. **Tasks** run small programs ([`workload`]): a burst keeps the task
//!    on the CPU until its work is done (an event) unless something
//!    preempts it first; the program's other steps (sleep, post, wait,
//!    fork, join, exit) take no time.
//! 3. **The tick** (`tick_ns`, 1 ms = HZ 1000) visits every CPU in order:
//!    `update_curr`, PELT updates, `check_preempt_tick` (slice expiry),
//!    then `rebalance_domains`: each domain, lowest first, whose
//!    `balance_interval` (× `busy_factor` − 1 jiffy when busy) has passed is
//!    balanced by the CPU `should_we_balance` names.
//! 4. **Load balance** (`load_balance`): `find_busiest` over a snapshot of
//!    every CPU's PELT load, util, runnable and task count; candidates are
//!    the source's queued fair tasks, least recently queued or run first
//!    (the tail of `cfs_tasks`); `pick_tasks` applies `can_migrate`
//!    (affinity, cache hot within 0.5 ms unless `nr_balance_failed >
//!    cache_nice_tries`); all-pinned sources are dropped and the balance
//!    retried; `nr_balance_failed > cache_nice_tries + 2` triggers an
//!    active balance (one allowed task moves whatever its cache state);
//!    intervals reset to `min_interval` when imbalanced, double up to
//!    `max_interval` when balanced, up to 512 ms when all pinned.
//!    Migration re-bases vruntime with `migrate_out` / `migrate_in` and
//!    moves PELT with `detach` / `attach`.
//! 5. **Newly idle**: a CPU whose queue empties walks its domains bottom-up
//!    (`SD_BALANCE_NEWIDLE`) and pulls one task, skipped when no CPU has a
//!    second task.
//! 6. **Wakeups** are placed by `select_task_rq` (affinity always
//!    respected); a wakeup that lands on a CPU other than the waker's (or,
//!    for a timer, the sleeper's) arrives after `remote_wakeup_ns`, during
//!    which the target counts the task as pending (not idle). The woken
//!    task's `check_preempt_wakeup` against the running one preempts at
//!    once, or at the end of the running task's step when it is the waker
//!    (a preemption point at syscall exit).
//! 7. **Fork** runs the class's `task_fork` on the parent's queue and
//!    places the child on the least loaded allowed CPU within the largest
//!    `SD_BALANCE_FORK` domain (nearest first); a group's `start` CPUs
//!    override that for its root tasks (how `numa_skewed` starts all on
//!    node 0).
//! 8. **Costs**: a switch to a different task and a migration (by the
//!    distance crossed: LLC, another LLC, another node) add penalty time
//!    that the task must run before its work progresses; so they show in
//!    makespan and CPU shares, and useful work is conserved exactly.
//!
//! # What the model leaves out
//!
//! - Caches and memory are not simulated: a migration costs a fixed
//!   refill time whatever the working set, and a task runs as fast on a
//!   remote node as on its own once that is paid (no NUMA memory
//!   placement, no `task_numa_work` / preferred-node balancing, §4.8).
//! - SMT siblings run at full speed each (no shared-core slowdown);
//!   capacities are uniform 1024 and frequency does not change (no
//!   misfit, asym packing, EAS, `util_est`, frequency invariance).
//! - No cgroups / group scheduling (`task_h_load` is the task's own load),
//!   no RT push/pull between CPUs (RT tasks are placed at wakeup like fair
//!   ones and never balanced), no NOHZ: every CPU ticks, and idle CPUs run
//!   their own periodic balance instead of a nohz idle balancer doing it
//!   for them; no `avg_idle` gate on newly-idle balance; no `wake_wide`
//!   flip counting; no group `imbalanced` flag from child domains.
//! - Preemption is exact: a task overrunning its slice is switched at the
//!   tick, and a wakeup preemption takes effect at once. The real executor
//!   is cooperative (a monitor raises `need_resched`, or `need_service` for
//!   timers and the tick; the task stops at its next greenos call), and its
//!   worker threads are themselves preempted by the host OS.
//! - The real executor places and balances differently today (its own
//!   push/steal of queued and new tasks rather than `sched::balance`), so
//!   agreement with it is expected where placement is fixed by affinity
//!   (see `tests/sim_validation.rs` and `examples/sim_validate.rs`).
//! - Program steps other than bursts take no time; the syscall, the pipe
//!   copy and the wakeup path itself are not charged except as the switch
//!   and remote-wakeup costs.
//! - Ping-pong partners block and wake through the run queue. The
//!   executor's direct process switch and lent scheduling contexts (an L4
//!   endpoint call runs its server on the caller's slice, charged to the
//!   caller, without a pick) are not modelled: a simulated server is
//!   charged for its own time and competes for the CPU at each wakeup.
//! - Timers are exact. On the executor a timer fires when the monitor
//!   thread wakes for it and the running task reaches a yield point
//!   (about 20–30 µs late on the development VM).

pub mod engine;
pub mod report;
pub mod rng;
pub mod workload;

pub use engine::{Cause, Costs, Sim, SimConfig};
pub use report::{jain, GroupReport, Histogram, Latency, Migrations, Report, TaskReport};
pub use rng::{Dist, Rng};
pub use workload::{Count, CpuSpec, Group, SimError, Workload, BUILTIN};

#[cfg(test)]
mod tests;
