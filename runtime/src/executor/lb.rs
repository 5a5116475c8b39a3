//! The executor's side of load tracking and balancing: it feeds the pure
//! `sched::pelt` and `sched::balance` with this runtime's state and carries
//! out their decisions (reference/scheduling.md §3, §4).
//!
//! # What this module owns
//!
//! - **PELT** per run queue (`WorkerLocal::avg`) and per task
//!   (`SchedPart::avg`). A task's series is updated at switch-in (the time it
//!   waited queued), at switch-out (the time it ran) and when it wakes (the
//!   time it slept); a queue's series at every switch-out (with the running
//!   task still counted) and at the top of every run-loop turn (idle time,
//!   gaps). A task's averages are attached to a queue when it arrives there
//!   and detached when it leaves: by the owner directly, or, when a waker on
//!   another CPU moves a sleeping task elsewhere, through the old CPU's
//!   [`RemovedWords`] (the kernel's `cfs_rq->removed`), which the owner
//!   subtracts at its next update. RT tasks are tracked in the same series
//!   (the kernel keeps a separate `rt_rq` average; greenos balances only fair
//!   load, so this only makes RT-heavy CPUs look busier, which they are).
//! - The **published statistics** of each CPU (`WorkerShared::{load_avg,
//!   util_avg, runnable_avg, nr_running, idle}`), which other CPUs read
//!   without locks, as the kernel reads remote `rq` fields.
//! - **Wakeup placement** ([`select_wake_cpu`]): `select_task_rq` for a
//!   wakeup by a CPU of the runtime.
//! - **Idle and periodic balance** ([`WorkerLocal::idle_balance`],
//!   [`WorkerLocal::periodic_balance`]): a CPU walks its domains bottom-up,
//!   asks `find_busiest`, and posts a [`PullRequest`] to the busiest CPU.
//!   That CPU — the only one that may touch its run queue — serves it at its
//!   next scheduling point ([`WorkerLocal::serve_pull`]): it detaches what
//!   `pick_tasks` allows (affinity, cache-hot unless the balance failed more
//!   than `cache_nice_tries` times, enough load to close the imbalance) and
//!   sends it to the requester's inbox. This is the kernel's active balance
//!   (the stopper thread on the busiest CPU pushes) used for every pull:
//!   greenos run queues carry no lock for another CPU to take, which keeps
//!   the switch path free of atomics. An idle CPU's request also raises
//!   `need_resched` on the busiest CPU so that it is served within one yield
//!   point, not one slice. New tasks take the cheap, lock-free path: idle
//!   CPUs steal them from staging deques, lowest domain first.
//! - The **in-flight words** of each CPU ([`InFlight`]): a task a pull or
//!   a push has detached and sent to a CPU's inbox is counted in that
//!   CPU's published statistics until the CPU has enqueued it, since
//!   other CPUs' passes would otherwise see it nowhere and pull another.
//!
//! # Invariants
//!
//! - A task's averages are attached to the queue of `task.cpu` exactly when
//!   its `vruntime_relative` is false (both mean "bound to that queue").
//! - Only a queue's owner detaches from it directly; others use `removed`.
//! - A pull never moves a running task or a task against its mask, and a
//!   newly-idle pull never takes the source's last task.
//! - A task that `carry_to` sent is counted in its receiver's `in_flight`
//!   exactly until the receiver has enqueued it and published its own
//!   `nr_running` with it (or has forwarded it on): `in_flight_to` names
//!   that receiver meanwhile, and only the task's owner touches it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::task::{SchedPart, Task, TaskRef};
use super::worker::WorkerLocal;
use super::{bump, Shared, BUSY, SLEEPING, SPINNING};
use crate::cpuset::CpuSet;
use crate::sched::balance::{self, Candidate, CpuStat, MigrationType, Plan};
use crate::sched::domains::{SchedDomain, SdFlags, SCHED_CAPACITY_SCALE};
use crate::sched::pelt::{decay_load, Removed, SchedAvg};
use crate::sched::{EnqueueFlags, SchedClass};

/// Domain levels with their own counters (SMT, cluster, MC, package and up
/// to four NUMA distances fit; deeper levels share the last slot).
pub(crate) const MAX_LEVELS: usize = 8;

/// One domain level's balance counters of one CPU.
#[derive(Default, Debug)]
pub(crate) struct LevelCounters {
    /// Balance passes at this level (idle and periodic).
    pub(crate) attempts: AtomicU64,
    /// Passes that found an imbalance and asked the busiest CPU for load.
    pub(crate) imbalanced: AtomicU64,
    /// Tasks pulled here by balancing at this level.
    pub(crate) pulled: AtomicU64,
    /// Requests the busiest CPU served without moving anything (all
    /// candidates pinned, running or cache hot).
    pub(crate) failed: AtomicU64,
    /// New tasks stolen from a staging deque at this level.
    pub(crate) steals: AtomicU64,
    /// Tasks that arrived from a CPU whose nearest common domain is this
    /// level (any path: wakeup placement, push, pull, steal).
    pub(crate) migrations_in: AtomicU64,
    /// Tasks that left for a CPU whose nearest common domain with this one
    /// is this level (pushed, pulled away, woken elsewhere, forwarded).
    pub(crate) migrations_out: AtomicU64,
}

/// `cfs_rq->removed` for one CPU: averages of sleeping tasks that a waker
/// on another CPU moved away. Any thread adds; the owner takes.
#[derive(Default, Debug)]
pub(crate) struct RemovedWords {
    load_avg: AtomicU64,
    util_avg: AtomicU64,
    runnable_avg: AtomicU64,
    pending: AtomicBool,
}

impl RemovedWords {
    /// Records that `avg` left this CPU's queue.
    pub(crate) fn add(&self, avg: &SchedAvg) {
        self.load_avg.fetch_add(avg.load_avg, Ordering::Relaxed);
        self.util_avg.fetch_add(avg.util_avg, Ordering::Relaxed);
        self.runnable_avg
            .fetch_add(avg.runnable_avg, Ordering::Relaxed);
        self.pending.store(true, Ordering::Release);
    }

    /// Takes what was added since the last call (owner only).
    fn take(&self) -> Option<Removed> {
        if !self.pending.load(Ordering::Relaxed) {
            return None;
        }
        // Clear the flag first: an add racing with the swaps below sets it
        // again, so its amounts are taken now or next time, never lost.
        self.pending.store(false, Ordering::Relaxed);
        let mut r = Removed::default();
        r.add(&SchedAvg {
            load_avg: self.load_avg.swap(0, Ordering::Acquire),
            util_avg: self.util_avg.swap(0, Ordering::Acquire),
            runnable_avg: self.runnable_avg.swap(0, Ordering::Acquire),
            ..SchedAvg::default()
        });
        Some(r)
    }
}

/// `SchedPart::in_flight_to` of a task no balancing move is carrying.
pub(crate) const NOT_IN_FLIGHT: usize = usize::MAX;

/// What balancing moves are carrying to one CPU: tasks detached from their
/// source queue and pushed into this CPU's inbox, not yet enqueued here.
/// The kernel moves a task between two locked queues in one step
/// (`detach_task` + `attach_task`), so no other CPU's balance pass ever
/// sees it in neither; greenos hands it over through the inbox, and the
/// receiver takes it at its next scheduling point (later still when its
/// thread waits for a core). Counting it here meanwhile keeps the other
/// CPUs' passes from seeing the receiver short of a task and pulling a
/// second one for it (which tests/balance.rs caught as tasks moving
/// between balanced nodes).
#[derive(Default, Debug)]
pub(crate) struct InFlight {
    nr: AtomicU64,
    load_avg: AtomicU64,
    util_avg: AtomicU64,
    runnable_avg: AtomicU64,
}

impl InFlight {
    fn add(&self, avg: &SchedAvg) {
        self.load_avg.fetch_add(avg.load_avg, Ordering::Relaxed);
        self.util_avg.fetch_add(avg.util_avg, Ordering::Relaxed);
        self.runnable_avg
            .fetch_add(avg.runnable_avg, Ordering::Relaxed);
        self.nr.fetch_add(1, Ordering::Release);
    }

    fn sub(&self, avg: &SchedAvg) {
        self.nr.fetch_sub(1, Ordering::Release);
        self.load_avg.fetch_sub(avg.load_avg, Ordering::Relaxed);
        self.util_avg.fetch_sub(avg.util_avg, Ordering::Relaxed);
        self.runnable_avg
            .fetch_sub(avg.runnable_avg, Ordering::Relaxed);
    }

    /// `(nr, load_avg, util_avg, runnable_avg)` in flight. The words are
    /// read one by one: a sum caught between an `add` and a `sub` of
    /// another task can be off by that task for this one read, which is
    /// what a lockless reader of the kernel's remote `rq` fields sees too.
    /// Each word wraps at most transiently (a `sub` overtaking its `add`
    /// in a reader's view), so a reading above `u64::MAX / 2` counts as 0.
    fn read(&self) -> (u64, u64, u64, u64) {
        let r = |w: &AtomicU64| {
            let v = w.load(Ordering::Relaxed);
            if v > u64::MAX / 2 {
                0
            } else {
                v
            }
        };
        let nr = self.nr.load(Ordering::Acquire);
        let nr = if nr > u64::MAX / 2 { 0 } else { nr };
        (
            nr,
            r(&self.load_avg),
            r(&self.util_avg),
            r(&self.runnable_avg),
        )
    }
}

/// Hands a task detached from this CPU's queue (by `unbind`) to `dst`'s
/// inbox as a balancing move, counted in `dst`'s [`InFlight`] until `dst`
/// has enqueued it ([`Landing`]).
pub(crate) fn carry_to(shared: &Shared, dst: usize, task: TaskRef, sp: &mut SchedPart) {
    debug_assert!(sp.vruntime_relative && sp.in_flight_to == NOT_IN_FLIGHT);
    let w = &shared.workers[dst];
    w.in_flight.add(&sp.avg);
    sp.in_flight_to = dst;
    // `task.cpu` still names the source CPU: the receiver reads it as
    // where the task came from.
    w.inbox.push(task);
}

/// A task that a balancing move carried, taken out of its inbox: what
/// [`carry_to`] counted, to take back with [`Landing::done`] once the
/// receiver has published its statistics with the task in them (until
/// then it is counted twice rather than nowhere).
#[must_use]
pub(crate) struct Landing {
    to: usize,
    avg: SchedAvg,
}

impl Landing {
    /// The count of a carried task (`None` for any other), taken from
    /// `sp` before its averages change. They are unchanged since
    /// [`carry_to`]: no one touches a task in an inbox.
    #[inline]
    pub(crate) fn take(sp: &mut SchedPart) -> Option<Landing> {
        if sp.in_flight_to == NOT_IN_FLIGHT {
            return None;
        }
        let to = std::mem::replace(&mut sp.in_flight_to, NOT_IN_FLIGHT);
        Some(Landing { to, avg: sp.avg })
    }

    /// Ends the count.
    pub(crate) fn done(self, shared: &Shared) {
        shared.workers[self.to].in_flight.sub(&self.avg);
    }
}

/// A pull request posted to the busiest CPU: move `amount` (in `kind`
/// units) to `dst`, judged by `dst`'s domain at `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PullRequest {
    pub(crate) dst: usize,
    pub(crate) level: usize,
    pub(crate) kind: MigrationType,
    pub(crate) newly_idle: bool,
    pub(crate) amount: u64,
}

impl PullRequest {
    const AMOUNT_MAX: u64 = (1 << 40) - 1;

    /// One word, never 0 (bit 23 is always set).
    pub(crate) fn encode(self) -> u64 {
        let kind = match self.kind {
            MigrationType::Load => 0,
            MigrationType::Util => 1,
            MigrationType::Task => 2,
        };
        (self.amount.min(Self::AMOUNT_MAX) << 24)
            | 1 << 23
            | kind << 21
            | u64::from(self.newly_idle) << 20
            | ((self.level as u64) & 0xf) << 16
            | (self.dst as u64 & 0xffff)
    }

    pub(crate) fn decode(w: u64) -> PullRequest {
        PullRequest {
            dst: (w & 0xffff) as usize,
            level: ((w >> 16) & 0xf) as usize,
            newly_idle: (w >> 20) & 1 == 1,
            kind: match (w >> 21) & 3 {
                0 => MigrationType::Load,
                1 => MigrationType::Util,
                _ => MigrationType::Task,
            },
            amount: w >> 24,
        }
    }
}

/// Per-CPU domain facts computed once at build time.
pub(crate) struct CpuDomains {
    /// The CPU's domains, bottom-up (empty for a lone CPU).
    pub(crate) domains: Box<[SchedDomain]>,
    /// The CPUs sharing its last-level cache (itself at least).
    pub(crate) llc: CpuSet,
    /// For each level, the CPUs first reached at that level, for stealing
    /// nearest first.
    pub(crate) ring: Box<[Box<[usize]>]>,
}

impl CpuDomains {
    /// Splits `build`'s flat list into per-CPU chains.
    pub(crate) fn build_all(all: Vec<SchedDomain>, nr_cpus: usize) -> Box<[CpuDomains]> {
        let mut per: Vec<Vec<SchedDomain>> = (0..nr_cpus).map(|_| Vec::new()).collect();
        for d in all {
            if d.cpu < nr_cpus {
                per[d.cpu].push(d);
            }
        }
        per.into_iter()
            .enumerate()
            .map(|(cpu, mut domains)| {
                domains.sort_by_key(|d| d.level);
                let mut llc = CpuSet::from_iter([cpu]);
                for d in &domains {
                    if d.flags.contains(SdFlags::SHARE_LLC) {
                        llc = d.span.clone();
                    }
                }
                let mut seen = CpuSet::from_iter([cpu]);
                let mut ring: Vec<Box<[usize]>> = Vec::new();
                for d in &domains {
                    let new: Vec<usize> = d.span.iter().filter(|&c| !seen.is_set(c)).collect();
                    for &c in &new {
                        seen.set(c);
                    }
                    ring.push(new.into_boxed_slice());
                }
                // CPUs outside every domain (a degenerate topology) still
                // get stolen from, last.
                let rest: Vec<usize> = (0..nr_cpus).filter(|&c| !seen.is_set(c)).collect();
                if !rest.is_empty() {
                    ring.push(rest.into_boxed_slice());
                }
                CpuDomains {
                    domains: domains.into_boxed_slice(),
                    llc,
                    ring: ring.into_boxed_slice(),
                }
            })
            .collect()
    }

    /// The lowest level whose span holds `other` (its counter slot).
    pub(crate) fn level_of(&self, other: usize) -> usize {
        self.domains
            .iter()
            .position(|d| d.span.is_set(other))
            .unwrap_or(self.domains.len())
            .min(MAX_LEVELS - 1)
    }
}

/// A CPU's published `(load_avg, util_avg, runnable_avg)` as of `now`: an
/// idle CPU's are decayed over the whole periods since it last updated them
/// (it has no running or queued task, so PELT would only decay them).
pub(crate) fn published_avgs(w: &super::WorkerShared, now: u64) -> (u64, u64, u64) {
    let a = (
        w.load_avg.load(Ordering::Relaxed),
        w.util_avg.load(Ordering::Relaxed),
        w.runnable_avg.load(Ordering::Relaxed),
    );
    if w.idle.load(Ordering::Relaxed) == BUSY {
        return a;
    }
    let periods = now.saturating_sub(w.avg_at.load(Ordering::Relaxed)) >> 20;
    (
        decay_load(a.0, periods),
        decay_load(a.1, periods),
        decay_load(a.2, periods),
    )
}

/// Fills `out` with every CPU's published statistics.
pub(crate) fn snapshot_stats(shared: &Shared, out: &mut Vec<CpuStat>) {
    let now = crate::clock::now_ns();
    out.clear();
    out.extend(shared.workers.iter().map(|w| {
        let (nr_in, load_in, util_in, runnable_in) = w.in_flight.read();
        let nr_running = w.nr_running.load(Ordering::Relaxed) as u64 + nr_in;
        let (load_avg, util_avg, runnable_avg) = published_avgs(w, now);
        CpuStat {
            load_avg: load_avg + load_in,
            util_avg: util_avg + util_in,
            runnable_avg: runnable_avg + runnable_in,
            nr_running,
            idle: w.idle.load(Ordering::Relaxed) != BUSY && nr_running == 0,
            capacity: SCHED_CAPACITY_SCALE,
        }
    }));
}

/// Wakeup placement for `task`, woken by CPU `l` (which won its wakeup and
/// owns it): the kernel's `select_task_rq_fair` fast path through
/// `balance::select_task_rq`. RT tasks and tasks allowed on one CPU stay
/// where they were (`forward` moves a task its mask excludes).
pub(crate) fn select_wake_cpu(l: &mut WorkerLocal, task: &Task, prev: usize) -> usize {
    if l.shared().nr_cpus() < 2 {
        // One CPU: nothing to choose (the kernel skips select_task_rq for
        // a task allowed on one CPU).
        return prev;
    }
    let mut stats = std::mem::take(&mut l.lb.stats);
    let target = select_wake_cpu_with(l.shared(), task, prev, Some(l.index()), &mut stats);
    l.lb.stats = stats;
    target
}

/// [`select_wake_cpu`] for a wakeup from outside the runtime's CPUs (an OS
/// thread sending on a channel, say), which won the task's wakeup and owns
/// it. The kernel places every wakeup (`try_to_wake_up` runs
/// `select_task_rq` whoever wakes), so a task whose previous CPU is busy
/// goes to an idle CPU of that CPU's LLC rather than waiting behind the
/// running task; there is no waker CPU for `wake_affine` to weigh.
pub(crate) fn select_wake_cpu_outside(shared: &Shared, task: &Task, prev: usize) -> usize {
    if shared.nr_cpus() < 2 {
        return prev;
    }
    select_wake_cpu_with(shared, task, prev, None, &mut Vec::new())
}

fn select_wake_cpu_with(
    shared: &Shared,
    task: &Task,
    prev: usize,
    waker: Option<usize>,
    stats: &mut Vec<CpuStat>,
) -> usize {
    let n = shared.nr_cpus();
    if n < 2 || prev >= n || task.policy().is_rt() || task.allowed.is_single() {
        return prev;
    }
    // Rule 1 without a snapshot: an idle previous CPU keeps it.
    let pw = &shared.workers[prev];
    if pw.idle.load(Ordering::Relaxed) != BUSY && pw.nr_running.load(Ordering::Relaxed) == 0 {
        return prev;
    }
    // SAFETY: the caller won the task's wakeup; it owns the task.
    let task_load = unsafe { task.sched() }.avg.load_avg;
    let doms = &shared.domains[waker.unwrap_or(prev)];
    let imbalance_pct = doms.domains.first().map_or(117, |d| d.imbalance_pct);
    snapshot_stats(shared, stats);
    let owned;
    let allowed = if task.allowed.is_all() {
        &shared.all_cpus
    } else {
        owned = task.allowed.load();
        &owned
    };
    balance::select_task_rq_in(
        prev,
        waker,
        false,
        task_load,
        allowed,
        stats,
        &shared.domains[prev].llc,
        imbalance_pct,
    )
}

/// Unbinds a sleeping task that a waker moves from `prev` to `target`:
/// its vruntime is re-based from `prev`'s published `min_vruntime` (read
/// without a lock, as `migrate_task_rq_fair` reads `min_vruntime_copy`), its
/// averages go to `prev`'s `removed` words, and `prev` counts a migration
/// out at the level it shares with `target`.
pub(crate) fn wake_migrate(shared: &Shared, sp: &mut SchedPart, prev: usize, target: usize) {
    if sp.vruntime_relative {
        return;
    }
    let w = &shared.workers[prev];
    let lvl = shared.domains[prev].level_of(target);
    w.counters.lb[lvl]
        .migrations_out
        .fetch_add(1, Ordering::Relaxed);
    if !sp.ent.policy.is_rt() {
        let src_min = w.min_vruntime.load(Ordering::Relaxed);
        sp.ent.se.vruntime = sp.ent.se.vruntime.wrapping_sub(src_min);
    }
    w.removed.add(&sp.avg);
    sp.vruntime_relative = true;
}

/// The balancer's owner-side state in `WorkerLocal`.
pub(crate) struct LbLocal {
    /// This CPU's run-queue averages.
    pub(crate) avg: SchedAvg,
    /// Scratch snapshot of every CPU's statistics.
    pub(crate) stats: Vec<CpuStat>,
    /// Per level: when the next periodic balance is due (ns).
    pub(crate) next_at: Vec<u64>,
    /// The earliest of `next_at`.
    pub(crate) next_balance: u64,
    /// Per level: pulls served here that moved nothing since the last one
    /// that did (`sd->nr_balance_failed`, kept by the source since the
    /// source is the CPU that detaches).
    pub(crate) nr_balance_failed: Vec<u32>,
    /// Averages last published.
    published: (u64, u64, u64),
    /// `rq->avg_idle`: moving average of this CPU's idle periods (ns).
    pub(crate) avg_idle: u64,
}

impl LbLocal {
    /// The state of a CPU starting at clock time `now` (its series starts
    /// empty there, not at time 0).
    pub(crate) fn new(levels: usize, now: u64) -> LbLocal {
        LbLocal {
            avg: SchedAvg {
                last_update_time: now & !1023,
                ..SchedAvg::default()
            },
            stats: Vec::new(),
            next_at: vec![0; levels],
            next_balance: 0,
            nr_balance_failed: vec![0; levels],
            published: (0, 0, 0),
            avg_idle: 2 * balance::MIGRATION_COST_NS,
        }
    }

    /// Folds an idle period into `avg_idle` (`update_avg`: 1/8 weight,
    /// capped at twice the migration cost, as `sched_ttwu_pending` caps it).
    pub(crate) fn note_idle(&mut self, ns: u64) {
        let diff = ns as i64 - self.avg_idle as i64;
        self.avg_idle =
            ((self.avg_idle as i64 + diff / 8).max(0) as u64).min(2 * balance::MIGRATION_COST_NS);
    }

    /// Whether a newly-idle balance may pay off: idle periods here last
    /// longer than a migration costs.
    pub(crate) fn newidle_worth_it(&self) -> bool {
        self.avg_idle >= balance::MIGRATION_COST_NS
    }
}

impl WorkerLocal {
    /// This CPU's domain facts.
    #[inline]
    pub(crate) fn doms(&self) -> &CpuDomains {
        &self.shared().domains[self.index()]
    }

    /// Brings the queue's averages up to `now` (`running`: a task ran since
    /// the last update) after subtracting what wakers moved away, and
    /// publishes them when they changed.
    #[inline]
    pub(crate) fn update_rq_avg(&mut self, now: u64, running: bool) {
        // Within the current 1024 ns unit there is nothing to add: one
        // compare on the switch path.
        if now.wrapping_sub(self.lb.avg.last_update_time) >= 1024 {
            self.update_rq_avg_slow(now, running);
        }
    }

    #[inline(never)]
    fn update_rq_avg_slow(&mut self, now: u64, running: bool) {
        let ws = &self.shared().workers[self.index()];
        if let Some(mut r) = ws.removed.take() {
            self.lb.avg.apply_removed(&mut r);
        }
        let load = self.rq.load_weight();
        let nr = self.rq.nr_running() as u64;
        if self.lb.avg.update(now, load, nr, u64::from(running), 1) {
            self.publish_avg();
        }
    }

    /// Publishes this queue's averages (and their time) for other CPUs.
    pub(crate) fn publish_avg(&mut self) {
        let a = &self.lb.avg;
        let now = (a.load_avg, a.util_avg, a.runnable_avg);
        let ws = &self.shared().workers[self.index()];
        ws.avg_at.store(a.last_update_time, Ordering::Relaxed);
        if now != self.lb.published {
            ws.load_avg.store(now.0, Ordering::Relaxed);
            ws.util_avg.store(now.1, Ordering::Relaxed);
            ws.runnable_avg.store(now.2, Ordering::Relaxed);
            self.lb.published = now;
        }
    }

    /// Binds an arriving task to this queue: `migrate_in` (vruntime), then
    /// its averages brought to now and attached (`post_init_util` first for
    /// a task that never ran). `runnable`: it was queued elsewhere, not
    /// asleep.
    pub(crate) fn bind_here(
        &mut self,
        sp: &mut SchedPart,
        initial: bool,
        runnable: bool,
        now: u64,
    ) {
        self.rq.migrate_in(&mut sp.ent);
        sp.vruntime_relative = false;
        let w = sp.ent.se.load.weight;
        if initial {
            sp.avg.post_init_util(&self.lb.avg, w, SCHED_CAPACITY_SCALE);
        } else if runnable {
            sp.avg.update(now, 1, 1, 0, w);
        } else {
            sp.avg.update(now, 0, 0, 0, w);
        }
        self.lb.avg.attach(&mut sp.avg, w);
        self.publish_avg();
    }

    /// Unbinds a task this CPU owns and sends away: `migrate_out` and the
    /// averages detached.
    pub(crate) fn unbind(&mut self, sp: &mut SchedPart) {
        if sp.vruntime_relative {
            return;
        }
        self.rq.migrate_out(&mut sp.ent);
        self.lb.avg.detach(&sp.avg, sp.ent.se.load.weight);
        sp.vruntime_relative = true;
    }

    /// Counts a task that arrived from CPU `from`: in the CPU's total and
    /// at the domain level the two CPUs share.
    pub(crate) fn count_arrival(&self, from: usize) {
        if from == self.index() || from >= self.shared().nr_cpus() {
            return;
        }
        bump(&self.ws_counters().migrations_in, 1);
        let lvl = self.doms().level_of(from);
        bump(&self.ws_counters().lb[lvl].migrations_in, 1);
    }

    fn ws_counters(&self) -> &super::CpuCounters {
        &self.shared().workers[self.index()].counters
    }

    /// Newly-idle balance: walks the domains bottom-up and asks the busiest
    /// CPU of the first imbalanced one for load. Returns whether a request
    /// was posted.
    pub(crate) fn idle_balance(&mut self) -> bool {
        self.balance(true, u64::MAX)
    }

    /// Periodic balance at each domain's interval (`sched_balance_domains`).
    pub(crate) fn periodic_balance(&mut self, now: u64) {
        self.balance(false, now);
    }

    fn balance(&mut self, newly_idle: bool, now: u64) -> bool {
        let shared = self.shared().clone();
        let me = self.index();
        let doms = &shared.domains[me];
        if doms.domains.is_empty() {
            self.lb.next_balance = u64::MAX;
            return false;
        }
        let mut stats = std::mem::take(&mut self.lb.stats);
        snapshot_stats(&shared, &mut stats);
        if newly_idle {
            stats[me].idle = true;
            stats[me].nr_running = 0;
        }
        let busy = !stats[me].idle;
        let mut posted = false;
        // Cleared when this CPU is not the one its group balances with at
        // some level: the higher levels are then skipped too, as the
        // kernel's `sched_balance_domains` stops at `!continue_balancing`
        // (their intervals restart as if they had run, so the run loop
        // does not come back for them at every turn).
        let mut continue_balancing = true;
        for (lvl, sd) in doms.domains.iter().enumerate() {
            if newly_idle {
                if !sd.flags.contains(SdFlags::BALANCE_NEWIDLE) {
                    continue;
                }
            } else {
                if now < self.lb.next_at[lvl] {
                    continue;
                }
                let ms = sd.interval_ms(busy, shared.nr_cpus());
                self.lb.next_at[lvl] = now + ms * 1_000_000;
                if !continue_balancing {
                    continue;
                }
            }
            let slot = lvl.min(MAX_LEVELS - 1);
            bump(&self.ws_counters().lb[slot].attempts, 1);
            // An idle CPU balances only while it spins (newly-idle passes);
            // one asleep in the OS balances nothing (greenos has no nohz
            // idle balancer to do it on its behalf), so it is passed over.
            let state = |c: usize| shared.workers[c].idle.load(Ordering::Relaxed);
            if !newly_idle
                && !balance::should_we_balance(
                    sd,
                    me,
                    |c| stats[c].idle && state(c) == SPINNING,
                    |c| c == me || state(c) != SLEEPING,
                )
            {
                continue_balancing = false;
                continue;
            }
            let Some(plan) = balance::find_busiest(sd, me, &stats, &sd.span, &[], newly_idle)
            else {
                continue;
            };
            if plan.src == me || plan.src >= shared.nr_cpus() {
                continue;
            }
            let req = PullRequest {
                dst: me,
                level: lvl,
                kind: plan.kind,
                newly_idle,
                amount: plan.amount,
            };
            let src = &shared.workers[plan.src];
            if src
                .pull_request
                .compare_exchange(0, req.encode(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                bump(&self.ws_counters().lb[slot].imbalanced, 1);
                if newly_idle {
                    // Serve it at the busiest CPU's next yield point, not
                    // at the end of its slice.
                    src.need_service.store(true, Ordering::Relaxed);
                }
                posted = true;
                break;
            }
        }
        if !newly_idle {
            self.lb.next_balance = self.lb.next_at.iter().copied().min().unwrap_or(u64::MAX);
        }
        self.lb.stats = stats;
        posted
    }

    /// Serves a pull request posted to this CPU (`detach_tasks` +
    /// `attach_tasks`): looks at up to `SCHED_NR_MIGRATE` tasks from the
    /// cold end of the fair queue, moves those `pick_tasks` chooses to the
    /// requester and puts the rest back where they were.
    pub(crate) fn serve_pull(&mut self, now: u64) {
        let shared = self.shared().clone();
        let w = shared.workers[self.index()]
            .pull_request
            .swap(0, Ordering::AcqRel);
        if w == 0 {
            return;
        }
        let req = PullRequest::decode(w);
        if req.dst >= shared.nr_cpus() || req.dst == self.index() {
            return;
        }
        let dst_doms = &shared.domains[req.dst];
        let Some(sd) = dst_doms.domains.get(req.level) else {
            return;
        };
        let slot = req.level.min(MAX_LEVELS - 1);
        let nr_running = self.rq.nr_running() as u64;
        let mut popped: Vec<TaskRef> = Vec::new();
        while popped.len() < balance::SCHED_NR_MIGRATE {
            match self.rq_pop_coldest() {
                Some(t) => popped.push(t),
                None => break,
            }
        }
        let masks: Vec<CpuSet> = popped
            .iter()
            .map(|t| {
                if t.allowed_on(req.dst) {
                    CpuSet::from_iter([req.dst])
                } else {
                    CpuSet::new()
                }
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = popped
            .iter()
            .zip(&masks)
            .map(|(t, m)| {
                // SAFETY: popped from our queue: we own it.
                let sp = unsafe { t.sched() };
                Candidate {
                    allowed: m,
                    running: false,
                    last_ran_ns: sp.ent.se.exec_start,
                    load: sp.avg.load_avg,
                    util: sp.avg.util_avg,
                }
            })
            .collect();
        let plan = Plan {
            src: self.index(),
            kind: req.kind,
            amount: req.amount,
            busiest_type: balance::GroupType::Overloaded,
        };
        let failed = self
            .lb
            .nr_balance_failed
            .get(req.level)
            .copied()
            .unwrap_or(0);
        let (picked, _refusal) = balance::pick_tasks(
            &plan,
            &candidates,
            req.dst,
            now,
            sd,
            failed,
            nr_running,
            req.newly_idle,
        );
        drop(candidates);
        let mut take = vec![false; popped.len()];
        for i in picked {
            take[i] = true;
        }
        let mut moved = 0u64;
        // Put back in reverse (hottest first) so the queue's order holds.
        for (i, task) in popped.into_iter().enumerate().rev() {
            // SAFETY: popped from our queue: we own it.
            let sp = unsafe { task.sched() };
            sp.ent.se.on_rq = false;
            if take[i] {
                self.unbind(sp);
                carry_to(&shared, req.dst, task, sp);
                moved += 1;
            } else {
                self.rq.migrate_out(&mut sp.ent);
                self.rq.migrate_in(&mut sp.ent);
                self.rq_enqueue(&mut sp.ent, task, EnqueueFlags::NONE, now);
            }
        }
        let dst_counters = &shared.workers[req.dst].counters.lb[slot];
        if moved == 0 {
            if let Some(f) = self.lb.nr_balance_failed.get_mut(req.level) {
                *f = f.saturating_add(1);
            }
            dst_counters.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            if let Some(f) = self.lb.nr_balance_failed.get_mut(req.level) {
                *f = 0;
            }
            dst_counters.pulled.fetch_add(moved, Ordering::Relaxed);
            // This queue's statistics without them, at once (the kernel's
            // `detach_task` updates the source queue under its lock).
            self.publish_avg();
            self.publish();
            bump(&self.ws_counters().migrations_out, moved);
            let out_lvl = self.doms().level_of(req.dst);
            bump(&self.ws_counters().lb[out_lvl].migrations_out, moved);
            shared.workers[req.dst].notify();
        }
    }

    /// The domain-ordered list of CPUs to try for stealing or pushing:
    /// nearest first, rotated by `start` within each level.
    pub(crate) fn for_each_near(&self, start: usize, f: impl FnMut(usize, usize) -> bool) {
        for_each_near_in(self.doms(), start, f);
    }
}

/// [`WorkerLocal::for_each_near`] over `doms` (for callers that hold a
/// mutable borrow of other `WorkerLocal` fields meanwhile): calls `f(level
/// slot, cpu)` until it returns true.
pub(crate) fn for_each_near_in(
    doms: &CpuDomains,
    start: usize,
    mut f: impl FnMut(usize, usize) -> bool,
) {
    for (lvl, ring) in doms.ring.iter().enumerate() {
        let n = ring.len();
        for k in 0..n {
            if f(lvl.min(MAX_LEVELS - 1), ring[(start + k) % n]) {
                return;
            }
        }
    }
}
