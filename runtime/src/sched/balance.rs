//! The load balancer's decisions, as pure functions over per-CPU statistics
//! and the scheduling domains (fair.c: `sched_balance_rq` / `load_balance`,
//! `find_busiest_group`, `calculate_imbalance`, `find_busiest_queue`,
//! `can_migrate_task`, `select_task_rq_fair`; reference/scheduling.md §4).
//!
//! # What this module owns
//!
//! - [`CpuStat`]: what the balancer knows of one CPU (PELT load, util and
//!   runnable averages, task count, idleness, capacity).
//! - [`group_stats`] / [`GroupType`]: `update_sg_lb_stats` and the group
//!   classification (`has_spare` < `fully_busy` < `imbalanced` <
//!   `overloaded`; misfit, asymmetric packing and SMT balance have no
//!   counterpart on uniform green CPUs).
//! - [`find_busiest`]: `find_busiest_group` + `calculate_imbalance` +
//!   `find_busiest_queue` for one domain seen from one CPU, returning a
//!   [`Plan`] (which CPU to pull from, what kind of imbalance, how much).
//! - [`can_migrate`]: `can_migrate_task` (affinity, running, cache hot
//!   within 0.5 ms unless `nr_balance_failed > cache_nice_tries`).
//! - [`select_task_rq`]: wakeup placement (previous CPU if idle, an idle CPU
//!   in its LLC, the waker's CPU when `wake_affine` holds, else the least
//!   loaded allowed CPU), always inside the task's mask.
//!
//! Both drivers — the executor's workers and the simulator — call these
//! with their own snapshots, so a decision never depends on which one runs.
//!
//! # Invariants
//!
//! - A plan's source is in the domain's span, in the busiest group, allowed
//!   by `env_cpus` (the CPUs still worth trying), and is not the local CPU.
//! - `select_task_rq` returns a CPU in the task's allowed set whenever that
//!   set meets the runtime's CPUs.

use crate::cpuset::CpuSet;
use crate::sched::domains::{SchedDomain, SdFlags, SCHED_CAPACITY_SCALE};

/// `sysctl_sched_migration_cost`: a task that ran within this is cache hot.
pub const MIGRATION_COST_NS: u64 = 500_000;
/// `sched_nr_migrate`: at most this many tasks inspected per balance.
pub const SCHED_NR_MIGRATE: usize = 32;
/// `NUMA_IMBALANCE_MIN`: a NUMA-level task imbalance this small is
/// forgiven while the destination is lightly loaded.
pub const NUMA_IMBALANCE_MIN: u64 = 2;

/// What the balancer knows about one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// PELT `load_avg` of the CPU's run queue (weighted).
    pub load_avg: u64,
    /// PELT `util_avg` (0..=capacity).
    pub util_avg: u64,
    /// PELT `runnable_avg`.
    pub runnable_avg: u64,
    /// Runnable tasks (queued + running).
    pub nr_running: u64,
    /// Nothing runs there.
    pub idle: bool,
    /// Capacity (1024 for every green CPU).
    pub capacity: u64,
}

impl CpuStat {
    /// An idle CPU of full capacity.
    pub fn idle() -> CpuStat {
        CpuStat {
            idle: true,
            capacity: SCHED_CAPACITY_SCALE,
            ..CpuStat::default()
        }
    }
}

/// `enum group_type`, lowest pull priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupType {
    /// Some CPU has spare capacity.
    HasSpare,
    /// Busy, but not overloaded.
    FullyBusy,
    /// A previous balance failed because of affinity (`sgc->imbalance`).
    Imbalanced,
    /// More tasks than CPUs and out of capacity.
    Overloaded,
}

/// `struct sg_lb_stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStats {
    /// Σ CPU load.
    pub load: u64,
    /// Σ util.
    pub util: u64,
    /// Σ runnable.
    pub runnable: u64,
    /// Σ tasks.
    pub nr_running: u64,
    /// Idle CPUs.
    pub idle_cpus: u64,
    /// Σ capacity.
    pub capacity: u64,
    /// CPUs in the group.
    pub weight: u64,
    /// `load × 1024 / capacity`.
    pub avg_load: u64,
    /// Classification.
    pub kind: GroupType,
}

/// `update_sg_lb_stats` + `group_classify` for the CPUs of `span`.
/// `imbalanced` is the group's "a pinned task defeated the last balance"
/// flag.
pub fn group_stats(
    span: &CpuSet,
    stats: &[CpuStat],
    imbalance_pct: u32,
    imbalanced: bool,
) -> GroupStats {
    let mut g = GroupStats {
        load: 0,
        util: 0,
        runnable: 0,
        nr_running: 0,
        idle_cpus: 0,
        capacity: 0,
        weight: 0,
        avg_load: 0,
        kind: GroupType::HasSpare,
    };
    for cpu in span.iter().filter(|&c| c < stats.len()) {
        let s = &stats[cpu];
        g.load += s.load_avg;
        g.util += s.util_avg;
        g.runnable += s.runnable_avg;
        g.nr_running += s.nr_running;
        g.idle_cpus += u64::from(s.idle && s.nr_running == 0);
        g.capacity += s.capacity.max(1);
        g.weight += 1;
    }
    let pct = u64::from(imbalance_pct);
    let overloaded = g.nr_running > g.weight
        && (g.capacity * 100 < g.util * pct || g.capacity * pct < g.runnable * 100);
    let has_capacity = g.nr_running < g.weight
        || (g.capacity * pct >= g.runnable * 100 && g.capacity * 100 > g.util * pct);
    g.kind = if overloaded {
        GroupType::Overloaded
    } else if imbalanced {
        GroupType::Imbalanced
    } else if has_capacity {
        GroupType::HasSpare
    } else {
        GroupType::FullyBusy
    };
    if g.kind >= GroupType::FullyBusy || g.capacity > 0 {
        g.avg_load = g.load * SCHED_CAPACITY_SCALE / g.capacity.max(1);
    }
    g
}

/// What the imbalance is measured in (`enum migration_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MigrationType {
    /// Move this much PELT load.
    Load,
    /// Move this much utilisation.
    Util,
    /// Move this many tasks.
    Task,
}

/// A balance decision for one domain: pull `amount` (in `kind` units)
/// from `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The busiest CPU, to pull from.
    pub src: usize,
    /// The unit of `amount`.
    pub kind: MigrationType,
    /// How much to move.
    pub amount: u64,
    /// The busiest group's type (for metrics and tests).
    pub busiest_type: GroupType,
}

/// `should_we_balance` for a periodic pass of `this_cpu` over `sd`: in
/// the local group only the first idle CPU (or, with none idle, the
/// group's first CPU) balances this level, so that the CPUs of one group
/// do not all pull from the same busiest CPU at once (reference
/// scheduling.md §4, step 1). A newly-idle pass always may.
///
/// `idle(cpu)`: the CPU is idle and balances (the kernel's idle CPUs all
/// do, through nohz idle balancing). `balances(cpu)`: the CPU balances at
/// all; the fallback is the group's first such CPU (the kernel's: its
/// first CPU). A driver whose sleeping CPUs balance nothing passes that
/// here, so that a group is never left to a CPU that will not look.
pub fn should_we_balance(
    sd: &SchedDomain,
    this_cpu: usize,
    idle: impl Fn(usize) -> bool,
    balances: impl Fn(usize) -> bool,
) -> bool {
    let Some(local) = sd.groups.iter().find(|g| g.span.is_set(this_cpu)) else {
        return true;
    };
    match local.span.iter().find(|&c| idle(c)) {
        Some(c) => c == this_cpu,
        None => local.span.iter().find(|&c| balances(c)).unwrap_or(this_cpu) == this_cpu,
    }
}

/// `find_busiest_group` + `calculate_imbalance` + `find_busiest_queue`
/// for `sd` as seen from `this_cpu`. `stats` has one entry per CPU;
/// `env_cpus` are the CPUs still worth pulling from (a retry after an
/// all-pinned failure drops the source); `imbalanced_groups` flags groups
/// by index in `sd.groups`; `newly_idle` is set for the newly-idle pass.
/// Returns `None` when the domain is balanced enough.
pub fn find_busiest(
    sd: &SchedDomain,
    this_cpu: usize,
    stats: &[CpuStat],
    env_cpus: &CpuSet,
    imbalanced_groups: &[bool],
    newly_idle: bool,
) -> Option<Plan> {
    let pct = sd.imbalance_pct;
    let mut local: Option<GroupStats> = None;
    let mut busiest: Option<(usize, GroupStats)> = None;
    let mut total_load = 0;
    let mut total_cap = 0;
    for (i, g) in sd.groups.iter().enumerate() {
        let st = group_stats(
            &g.span,
            stats,
            pct,
            imbalanced_groups.get(i).copied().unwrap_or(false),
        );
        total_load += st.load;
        total_cap += st.capacity;
        if g.span.is_set(this_cpu) {
            local = Some(st);
            continue;
        }
        if g.span.intersection(env_cpus).is_empty() {
            continue;
        }
        let better = match &busiest {
            None => true,
            Some((_, b)) => update_sd_pick_busiest(&st, b),
        };
        if better {
            busiest = Some((i, st));
        }
    }
    let local = local?;
    let (bi, b) = busiest?;
    if b.nr_running == 0 {
        return None;
    }
    // Decision: is the domain balanced (step 3 of §4.4)?
    if b.kind == GroupType::Imbalanced {
        // Forced: pull a task.
    } else {
        if local.kind > b.kind {
            return None;
        }
        if local.kind == GroupType::Overloaded {
            let sds_avg = total_load * SCHED_CAPACITY_SCALE / total_cap.max(1);
            if local.avg_load >= b.avg_load
                || local.avg_load >= sds_avg
                || 100 * b.avg_load <= u64::from(pct) * local.avg_load
            {
                return None;
            }
        }
        if b.kind != GroupType::Overloaded {
            let this_busy = !stats[this_cpu].idle;
            let prefer_sibling =
                sd.flags.contains(SdFlags::PREFER_SIBLING) && b.nr_running > local.nr_running + 1;
            if !prefer_sibling
                && (this_busy && !newly_idle
                    || (b.weight > 1 && local.idle_cpus <= b.idle_cpus + 1)
                    || b.nr_running <= 1)
            {
                return None;
            }
        }
    }
    let (kind, amount) = calculate_imbalance(sd, &local, &b, total_load, total_cap, newly_idle);
    if amount == 0 {
        return None;
    }
    let group_span = &sd.groups[bi].span;
    let src = find_busiest_queue(group_span, env_cpus, this_cpu, stats, kind, amount)?;
    Some(Plan {
        src,
        kind,
        amount,
        busiest_type: b.kind,
    })
}

/// `update_sd_pick_busiest`: whether `sg` beats the current `busiest`.
fn update_sd_pick_busiest(sg: &GroupStats, busiest: &GroupStats) -> bool {
    if sg.kind != busiest.kind {
        return sg.kind > busiest.kind;
    }
    match sg.kind {
        GroupType::Overloaded | GroupType::FullyBusy => sg.avg_load > busiest.avg_load,
        GroupType::Imbalanced => false,
        GroupType::HasSpare => {
            sg.idle_cpus < busiest.idle_cpus
                || (sg.idle_cpus == busiest.idle_cpus && sg.nr_running > busiest.nr_running)
        }
    }
}

/// `calculate_imbalance` (step 4 of §4.4).
fn calculate_imbalance(
    sd: &SchedDomain,
    local: &GroupStats,
    busiest: &GroupStats,
    total_load: u64,
    total_cap: u64,
    newly_idle: bool,
) -> (MigrationType, u64) {
    if busiest.kind == GroupType::Imbalanced {
        return (MigrationType::Task, 1);
    }
    if local.kind == GroupType::HasSpare {
        if busiest.kind == GroupType::Overloaded
            && !sd.flags.contains(SdFlags::SHARE_LLC)
            && local.weight > 1
        {
            let spare = local.capacity.saturating_sub(local.util);
            let amount = if newly_idle { spare.max(1) } else { spare };
            return (MigrationType::Util, amount);
        }
        // Even out task counts (single-CPU groups, prefer_sibling) or idle
        // CPUs; the amount is half the difference.
        let raw = if busiest.weight == 1 || sd.flags.contains(SdFlags::PREFER_SIBLING) {
            busiest.nr_running.saturating_sub(local.nr_running)
        } else {
            local.idle_cpus.saturating_sub(busiest.idle_cpus)
        };
        let mut raw = raw;
        if sd.flags.contains(SdFlags::NUMA) {
            // adjust_numa_imbalance: a small imbalance is allowed while the
            // destination runs few tasks, so communicating pairs stay on
            // their node (`imb_numa_nr`: a quarter of the local group).
            let imb_numa_nr = (local.weight / 4).max(1);
            if local.nr_running < imb_numa_nr && raw <= NUMA_IMBALANCE_MIN {
                raw = 0;
            }
        }
        let mut imb = raw >> 1;
        if imb == 0 && raw > 0 && newly_idle && busiest.nr_running > 1 {
            imb = 1;
        }
        return (MigrationType::Task, imb);
    }
    // migrate_load: towards the domain average.
    let avg = total_load * SCHED_CAPACITY_SCALE / total_cap.max(1);
    if local.avg_load >= avg {
        return (MigrationType::Load, 0);
    }
    let amount = ((busiest.avg_load.saturating_sub(avg)) * busiest.capacity)
        .min((avg - local.avg_load) * local.capacity)
        / SCHED_CAPACITY_SCALE;
    (MigrationType::Load, amount)
}

/// `find_busiest_queue` (step 5 of §4.4).
fn find_busiest_queue(
    group: &CpuSet,
    env_cpus: &CpuSet,
    this_cpu: usize,
    stats: &[CpuStat],
    kind: MigrationType,
    amount: u64,
) -> Option<usize> {
    let mut best: Option<(usize, u128)> = None;
    for cpu in group.iter() {
        if cpu == this_cpu || cpu >= stats.len() || !env_cpus.is_set(cpu) {
            continue;
        }
        let s = &stats[cpu];
        if s.nr_running == 0 {
            continue;
        }
        let key: u128 = match kind {
            MigrationType::Load => {
                // A CPU with one task heavier than the imbalance: moving it
                // would only move the imbalance.
                if s.nr_running == 1 && s.load_avg > amount {
                    continue;
                }
                u128::from(s.load_avg) * u128::from(SCHED_CAPACITY_SCALE)
                    / u128::from(s.capacity.max(1))
            }
            MigrationType::Util => {
                if s.nr_running <= 1 {
                    continue;
                }
                u128::from(s.util_avg)
            }
            MigrationType::Task => u128::from(s.nr_running),
        };
        if best.is_none_or(|(_, k)| key > k) {
            best = Some((cpu, key));
        }
    }
    best.map(|(c, _)| c)
}

/// What `can_migrate_task` needs to know about a candidate task.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// CPUs the task may run on.
    pub allowed: &'a CpuSet,
    /// It is running now (only active balance moves a running task).
    pub running: bool,
    /// When it last started running (`exec_start`), ns.
    pub last_ran_ns: u64,
    /// Its PELT load (`task_h_load`).
    pub load: u64,
    /// Its util estimate.
    pub util: u64,
}

/// Why a task may not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The destination is outside its mask (`LBF_SOME_PINNED`).
    Pinned,
    /// It is running.
    Running,
    /// It ran within `MIGRATION_COST_NS` and the balance has not failed
    /// often enough yet.
    CacheHot,
}

/// `can_migrate_task` + `task_hot` for moving `t` to `dst` at `now`. SMT
/// levels share caches, so nothing is hot there.
pub fn can_migrate(
    t: &Candidate<'_>,
    dst: usize,
    now: u64,
    sd: &SchedDomain,
    nr_balance_failed: u32,
) -> Result<(), Refusal> {
    if !t.allowed.is_set(dst) {
        return Err(Refusal::Pinned);
    }
    if t.running {
        return Err(Refusal::Running);
    }
    let shares_cache = sd.flags.contains(SdFlags::SHARE_CPUCAPACITY);
    let hot = !shares_cache && now.saturating_sub(t.last_ran_ns) < MIGRATION_COST_NS;
    if hot && nr_balance_failed <= sd.cache_nice_tries {
        return Err(Refusal::CacheHot);
    }
    Ok(())
}

/// `detach_tasks`' choice: given candidates from the cold end of the
/// source queue (at most [`SCHED_NR_MIGRATE`] are looked at), the indices
/// to move so the plan's amount is met. Load candidates heavier than what
/// is left (`load >> nr_balance_failed > remaining`) are skipped, as are
/// those `can_migrate` refuses. Never empties the source when
/// `keep_one` (idle balance must not pull the last task).
#[allow(clippy::too_many_arguments)]
pub fn pick_tasks(
    plan: &Plan,
    candidates: &[Candidate<'_>],
    dst: usize,
    now: u64,
    sd: &SchedDomain,
    nr_balance_failed: u32,
    src_nr_running: u64,
    keep_one: bool,
) -> (Vec<usize>, Option<Refusal>) {
    let mut remaining = plan.amount;
    let mut picked = Vec::new();
    let mut last_refusal = None;
    let mut left = src_nr_running;
    for (i, t) in candidates.iter().enumerate().take(SCHED_NR_MIGRATE) {
        if remaining == 0 || (keep_one && left <= 1) {
            break;
        }
        if let Err(r) = can_migrate(t, dst, now, sd, nr_balance_failed) {
            last_refusal = Some(r);
            continue;
        }
        match plan.kind {
            MigrationType::Load => {
                let l = t.load.max(1);
                if l >> nr_balance_failed.min(63) > remaining {
                    continue;
                }
                remaining = remaining.saturating_sub(l);
            }
            MigrationType::Util => {
                if t.util > remaining {
                    continue;
                }
                remaining -= t.util;
            }
            MigrationType::Task => remaining -= 1,
        }
        picked.push(i);
        left -= 1;
    }
    (picked, last_refusal)
}

/// Wakeup placement (`select_task_rq_fair`, fast path): the previous CPU if
/// idle; else an idle CPU sharing its LLC (scanning from `prev`); else the
/// waker's CPU when `wake_affine` says so (this CPU idle, or a sync wakeup
/// from a CPU running only the waker, or its load lower once scaled by half
/// the imbalance margin); else the least loaded allowed CPU of prev's LLC
/// (prev unless another is lighter by `imbalance_pct`); only a task that may
/// not run on prev goes to the least loaded allowed CPU anywhere. `llc_of(cpu)`
/// gives the CPUs sharing `cpu`'s last-level cache. Always inside `allowed`
/// (falling back to its first CPU below `stats.len()`).
#[allow(clippy::too_many_arguments)]
pub fn select_task_rq(
    prev: usize,
    waker: Option<usize>,
    sync: bool,
    task_load: u64,
    allowed: &CpuSet,
    stats: &[CpuStat],
    llc_of: impl Fn(usize) -> CpuSet,
    imbalance_pct: u32,
) -> usize {
    let llc = if prev < stats.len() {
        llc_of(prev)
    } else {
        CpuSet::new()
    };
    select_task_rq_in(
        prev,
        waker,
        sync,
        task_load,
        allowed,
        stats,
        &llc,
        imbalance_pct,
    )
}

/// [`select_task_rq`] with `prev`'s LLC given as a set (`prev_llc`), for
/// drivers that keep the spans and must not allocate per wakeup.
#[allow(clippy::too_many_arguments)]
pub fn select_task_rq_in(
    prev: usize,
    waker: Option<usize>,
    sync: bool,
    task_load: u64,
    allowed: &CpuSet,
    stats: &[CpuStat],
    prev_llc: &CpuSet,
    imbalance_pct: u32,
) -> usize {
    let ok = |c: usize| c < stats.len() && allowed.is_set(c);
    let is_idle = |c: usize| stats[c].idle && stats[c].nr_running == 0;
    if ok(prev) && is_idle(prev) {
        return prev;
    }
    if prev < stats.len() {
        let llc = prev_llc;
        let n = stats.len();
        for k in 1..n {
            let c = (prev + k) % n;
            if llc.is_set(c) && ok(c) && is_idle(c) {
                return c;
            }
        }
    }
    if let Some(w) = waker.filter(|&w| ok(w)) {
        if wake_affine(w, prev, sync, task_load, stats, imbalance_pct) {
            return w;
        }
    }
    if ok(prev) {
        // The kernel's fast path keeps prev when nothing better is idle
        // and never leaves prev's LLC (select_idle_sibling); here the least
        // loaded allowed CPU of that LLC takes the task when prev is clearly
        // heavier. Spreading across LLCs and nodes is the balancer's job.
        let in_llc = allowed.intersection(prev_llc);
        let least = least_loaded(&in_llc, stats).unwrap_or(prev);
        let pct = u64::from(imbalance_pct);
        if stats[least].load_avg * pct < stats[prev].load_avg * 100 {
            return least;
        }
        return prev;
    }
    least_loaded(allowed, stats)
        .or_else(|| allowed.first())
        .unwrap_or(0)
}

/// `wake_affine_idle` then `wake_affine_weight`: should the wakee run on
/// the waker's CPU `this` rather than `prev`?
fn wake_affine(
    this: usize,
    prev: usize,
    sync: bool,
    task_load: u64,
    stats: &[CpuStat],
    imbalance_pct: u32,
) -> bool {
    let ts = &stats[this];
    if ts.idle && ts.nr_running == 0 {
        return true;
    }
    if sync && ts.nr_running == 1 {
        return true;
    }
    if prev >= stats.len() {
        return true;
    }
    let ps = &stats[prev];
    if ps.idle && ps.nr_running == 0 {
        return false;
    }
    // wake_affine_weight.
    let mut this_eff = ts.load_avg + task_load;
    if sync {
        this_eff = this_eff.saturating_sub(
            ts.load_avg
                .min(task_load.max(ts.load_avg / ts.nr_running.max(1))),
        );
    }
    let prev_eff = ps.load_avg.saturating_sub(task_load);
    let this_side = u128::from(this_eff) * u128::from(ps.capacity.max(1)) * 100;
    let prev_side = u128::from(prev_eff)
        * u128::from(ts.capacity.max(1))
        * u128::from(100 + (imbalance_pct.saturating_sub(100)) / 2);
    this_side < prev_side
}

fn least_loaded(allowed: &CpuSet, stats: &[CpuStat]) -> Option<usize> {
    allowed
        .iter()
        .filter(|&c| c < stats.len())
        .min_by_key(|&c| {
            (
                stats[c].load_avg * SCHED_CAPACITY_SCALE / stats[c].capacity.max(1),
                stats[c].nr_running,
                c,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::domains;
    use crate::topology::Topology;

    fn busy(load: u64, nr: u64) -> CpuStat {
        CpuStat {
            load_avg: load,
            util_avg: 1024.min(load),
            runnable_avg: 1024 * nr.min(4),
            nr_running: nr,
            idle: false,
            capacity: 1024,
        }
    }

    fn doms(desc: &str) -> (Vec<SchedDomain>, usize) {
        let t = Topology::synthetic(desc).unwrap();
        let n = t.nr_pus();
        let pus: Vec<usize> = (0..n).collect();
        (domains::build(&t, &pus), n)
    }

    fn dom_of(d: &[SchedDomain], cpu: usize, level: usize) -> &SchedDomain {
        d.iter().find(|s| s.cpu == cpu && s.level == level).unwrap()
    }

    #[test]
    fn group_classification() {
        let span = CpuSet::all(2);
        let idle = [CpuStat::idle(), CpuStat::idle()];
        assert_eq!(
            group_stats(&span, &idle, 117, false).kind,
            GroupType::HasSpare
        );
        let over = [busy(3072, 3), busy(2048, 2)];
        let g = group_stats(&span, &over, 117, false);
        assert_eq!(g.kind, GroupType::Overloaded);
        assert_eq!(g.avg_load, 5120 * 1024 / 2048);
        let full = [busy(1024, 1), busy(1024, 1)];
        assert_eq!(
            group_stats(&span, &full, 117, false).kind,
            GroupType::FullyBusy
        );
        assert_eq!(
            group_stats(&span, &full, 117, true).kind,
            GroupType::Imbalanced
        );
    }

    /// An idle CPU next to one running four tasks pulls half of them.
    #[test]
    fn idle_cpu_pulls_from_overloaded_sibling() {
        let (d, n) = doms("core:2 pu:1");
        assert_eq!(n, 2);
        let sd = dom_of(&d, 1, 0);
        let stats = [busy(4096, 4), CpuStat::idle()];
        let plan = find_busiest(sd, 1, &stats, &CpuSet::all(2), &[], true).expect("imbalanced");
        assert_eq!(plan.src, 0);
        assert_eq!(plan.kind, MigrationType::Task);
        assert_eq!(plan.amount, 2);
        assert_eq!(plan.busiest_type, GroupType::Overloaded);
        // Balanced: nothing to do.
        let even = [busy(2048, 2), busy(2048, 2)];
        assert_eq!(
            find_busiest(sd, 1, &even, &CpuSet::all(2), &[], false),
            None
        );
        // A busy CPU does not pull from a non-overloaded group.
        let light = [busy(1024, 1), busy(512, 1)];
        assert_eq!(
            find_busiest(sd, 1, &light, &CpuSet::all(2), &[], false),
            None
        );
        // Excluded sources are not chosen.
        let mut env = CpuSet::all(2);
        env.clear(0);
        assert_eq!(find_busiest(sd, 1, &stats, &env, &[], true), None);
    }

    /// One CPU per group balances a level: the first idle one, else the
    /// first one (the first that balances at all, for a driver whose
    /// sleeping CPUs do not); a single-CPU group always balances itself.
    #[test]
    fn should_we_balance_names_one_cpu_per_group() {
        let (d, n) = doms("numa:2 core:2 pu:1");
        assert_eq!(n, 4);
        // Nodes {0, 1} and {2, 3}: at the NUMA level the local group of
        // CPUs 0 and 1 is their node.
        let numa = |cpu| dom_of(&d, cpu, 1);
        let all = |_: usize| true;
        let none = |_: usize| false;
        assert!(should_we_balance(numa(0), 0, none, all));
        assert!(!should_we_balance(numa(1), 1, none, all));
        assert!(should_we_balance(numa(2), 2, none, all));
        assert!(!should_we_balance(numa(3), 3, none, all));
        // CPU 1 idle: it balances the node, CPU 0 does not.
        let one_idle = |c: usize| c == 1;
        assert!(should_we_balance(numa(1), 1, one_idle, all));
        assert!(!should_we_balance(numa(0), 0, one_idle, all));
        // CPU 0 asleep and balancing nothing: CPU 1 takes its turn.
        let not_0 = |c: usize| c != 0;
        assert!(should_we_balance(numa(1), 1, none, not_0));
        // At the MC level each group is one CPU: each balances.
        for cpu in 0..4 {
            assert!(should_we_balance(dom_of(&d, cpu, 0), cpu, one_idle, all));
        }
    }

    /// Both sides overloaded: move load toward the domain average.
    #[test]
    fn overloaded_both_sides_moves_load_to_the_average() {
        let (d, _) = doms("core:2 pu:1");
        let sd = dom_of(&d, 1, 0);
        let stats = [busy(6 * 1024, 6), busy(2 * 1024, 2)];
        let plan = find_busiest(sd, 1, &stats, &CpuSet::all(2), &[], false).expect("imbalanced");
        assert_eq!(plan.kind, MigrationType::Load);
        // Average 4096 per CPU: move 2048.
        assert_eq!(plan.amount, 2048);
        assert_eq!(plan.src, 0);
        // Within imbalance_pct: balanced.
        let close = [busy(2300, 3), busy(2048, 3)];
        assert_eq!(
            find_busiest(sd, 1, &close, &CpuSet::all(2), &[], false),
            None
        );
    }

    /// On a two-node machine a node-local pair is not pulled across the
    /// NUMA level while the destination node is lightly loaded.
    #[test]
    fn numa_level_forgives_small_imbalance() {
        let (d, n) = doms("numa:2 core:2 pu:1");
        assert_eq!(n, 4);
        let top = d
            .iter()
            .filter(|s| s.cpu == 2)
            .max_by_key(|s| s.level)
            .unwrap();
        assert!(top.flags.contains(SdFlags::NUMA), "{top:?}");
        let stats = [
            busy(1024, 1),
            busy(1024, 1),
            CpuStat::idle(),
            CpuStat::idle(),
        ];
        assert_eq!(
            find_busiest(top, 2, &stats, &CpuSet::all(4), &[], true),
            None
        );
        // A real overload crosses nodes.
        let heavy = [
            busy(4096, 4),
            busy(4096, 4),
            CpuStat::idle(),
            CpuStat::idle(),
        ];
        let plan = find_busiest(top, 2, &heavy, &CpuSet::all(4), &[], true).expect("pull");
        assert!(plan.src < 2);
    }

    #[test]
    fn can_migrate_rules() {
        let (d, _) = doms("core:2 pu:2");
        let mc = d
            .iter()
            .find(|s| s.cpu == 0 && !s.flags.contains(SdFlags::SHARE_CPUCAPACITY))
            .unwrap();
        let smt = d
            .iter()
            .find(|s| s.cpu == 0 && s.flags.contains(SdFlags::SHARE_CPUCAPACITY))
            .unwrap();
        let only0 = {
            let mut s = CpuSet::new();
            s.set(0);
            s
        };
        let all = CpuSet::all(4);
        let now = 10_000_000;
        let c = |allowed, running, last| Candidate {
            allowed,
            running,
            last_ran_ns: last,
            load: 1024,
            util: 512,
        };
        assert_eq!(
            can_migrate(&c(&only0, false, 0), 2, now, mc, 0),
            Err(Refusal::Pinned)
        );
        assert_eq!(
            can_migrate(&c(&all, true, 0), 2, now, mc, 0),
            Err(Refusal::Running)
        );
        assert_eq!(
            can_migrate(&c(&all, false, now - 100_000), 2, now, mc, 0),
            Err(Refusal::CacheHot)
        );
        assert_eq!(
            can_migrate(
                &c(&all, false, now - 100_000),
                2,
                now,
                mc,
                mc.cache_nice_tries + 1
            ),
            Ok(()),
            "hot tasks move after cache_nice_tries failures"
        );
        assert_eq!(
            can_migrate(&c(&all, false, now - 100_000), 1, now, smt, 0),
            Ok(()),
            "SMT shares caches"
        );
        assert_eq!(
            can_migrate(&c(&all, false, now - 600_000), 2, now, mc, 0),
            Ok(())
        );
    }

    #[test]
    fn pick_tasks_meets_the_amount_and_keeps_one() {
        let (d, _) = doms("core:2 pu:1");
        let sd = dom_of(&d, 1, 0);
        let all = CpuSet::all(2);
        let cands: Vec<Candidate<'_>> = (0..4)
            .map(|_| Candidate {
                allowed: &all,
                running: false,
                last_ran_ns: 0,
                load: 1024,
                util: 256,
            })
            .collect();
        let plan = Plan {
            src: 0,
            kind: MigrationType::Task,
            amount: 2,
            busiest_type: GroupType::Overloaded,
        };
        let (p, _) = pick_tasks(&plan, &cands, 1, 10_000_000, sd, 0, 4, true);
        assert_eq!(p, vec![0, 1]);
        let plan = Plan {
            kind: MigrationType::Load,
            amount: 2500,
            ..plan
        };
        let (p, _) = pick_tasks(&plan, &cands, 1, 10_000_000, sd, 0, 4, true);
        assert_eq!(p, vec![0, 1], "the third would overshoot: 1024 > 452 left");
        let (p, _) = pick_tasks(
            &Plan {
                amount: 100_000,
                ..plan
            },
            &cands,
            1,
            10_000_000,
            sd,
            0,
            4,
            true,
        );
        assert_eq!(p.len(), 3, "never the source's last task");
        let only0 = {
            let mut s = CpuSet::new();
            s.set(0);
            s
        };
        let pinned = [Candidate {
            allowed: &only0,
            ..cands[0]
        }];
        let (p, why) = pick_tasks(&plan, &pinned, 1, 10_000_000, sd, 0, 2, true);
        assert!(p.is_empty());
        assert_eq!(why, Some(Refusal::Pinned));
    }

    #[test]
    fn wakeup_placement() {
        let llc = |_c: usize| CpuSet::all(4);
        let all = CpuSet::all(4);
        let mut stats = [busy(1024, 1), busy(1024, 1), CpuStat::idle(), busy(1024, 1)];
        // prev idle -> prev.
        assert_eq!(
            select_task_rq(2, Some(0), false, 512, &all, &stats, llc, 117),
            2
        );
        // prev busy, an idle CPU in its LLC -> that one.
        assert_eq!(
            select_task_rq(1, Some(0), false, 512, &all, &stats, llc, 117),
            2
        );
        // Never outside the mask.
        let mut only3 = CpuSet::new();
        only3.set(3);
        assert_eq!(
            select_task_rq(1, Some(0), false, 512, &only3, &stats, llc, 117),
            3
        );
        // Nothing idle: a sync wakeup from a CPU running only the waker
        // comes to the waker.
        stats[2] = busy(1024, 1);
        assert_eq!(
            select_task_rq(1, Some(0), true, 512, &all, &stats, llc, 117),
            0
        );
        // Not sync, waker's CPU heavier: stay on prev.
        stats[0] = busy(4096, 4);
        assert_eq!(
            select_task_rq(1, Some(0), false, 512, &all, &stats, llc, 117),
            1
        );
        // Separate LLCs: the idle CPU in another LLC is not taken by the
        // fast path, the waker's idle CPU is (wake_affine_idle).
        let split = |c: usize| {
            let mut s = CpuSet::new();
            s.set(c);
            s
        };
        let stats2 = [CpuStat::idle(), busy(2048, 2)];
        assert_eq!(
            select_task_rq(1, Some(0), false, 512, &CpuSet::all(2), &stats2, split, 117),
            0
        );
        // Nothing idle, wake_affine says no: a much lighter CPU in another
        // LLC does not take the wakee (the balancer spreads across LLCs),
        // a lighter one in prev's LLC does.
        let two_llcs = |c: usize| {
            if c < 2 {
                CpuSet::from_iter([0, 1])
            } else {
                CpuSet::from_iter([2, 3])
            }
        };
        let stats3 = [busy(8192, 8), busy(4096, 4), busy(1024, 1), busy(1024, 1)];
        assert_eq!(
            select_task_rq(1, Some(0), false, 512, &all, &stats3, two_llcs, 117),
            1
        );
        let stats4 = [busy(8192, 8), busy(4096, 4), busy(1024, 1), busy(1024, 1)];
        assert_eq!(
            select_task_rq(0, Some(0), false, 512, &all, &stats4, two_llcs, 117),
            1
        );
    }
}
