//! EEVDF, Linux 6.6+'s fair class (reference §2.2 – §2.8), as a per-CPU
//! queue without group scheduling. Delayed dequeue (6.12, §2.7) is modelled
//! by its effect on lag rather than by keeping the sleeper in the tree (see
//! below).
//!
//! # Model
//!
//! - `v_i` = `se.vruntime`, charged as in CFS (`delta * 1024 / w`).
//! - `V` = the weighted average of the queued vruntimes including the
//!   running entity's, kept incrementally around a reference `v0`
//!   (`min_vruntime`, monotone as in CFS): `S = Σ (v_i − v0) w_i`,
//!   `W = Σ w_i` over the tree, the current entity's term added on the fly
//!   (fair.c: `avg_vruntime()`), rounded toward −∞.
//! - Eligible ⇔ `lag ≥ 0` ⇔ `S_total ≥ (v − v0) · W_total`, tested in
//!   `i128` without a division (fair.c: `vruntime_eligible()`).
//! - Virtual deadline `vd = v + slice · 1024 / w`; the slice is the base
//!   slice (0.75 ms × the CPU factor, 6.6 – 6.14) or the task's own request
//!   clamped to 0.1 – 100 ms (6.12 `sched_attr.sched_runtime`).
//! - Pick: the eligible entity with the earliest deadline, from a treap
//!   ordered by deadline and augmented with subtree min vruntime
//!   (`augtree.rs`), O(log n).
//! - Lag `vlag = V − v` is stored at dequeue, clamped to
//!   `max(2·slice, TICK)` in virtual units (6.6), and restored at enqueue
//!   inflated by `(W + w)/W` (PLACE_LAG), so it survives sleep and
//!   migration. New tasks get lag 0 and half a slice (PLACE_DEADLINE_INITIAL).
//! - RUN_TO_PARITY: once picked, the current entity is not preempted by a
//!   wakeup until its request is consumed (6.6 – 6.16: protected while its
//!   deadline is the one it was picked with); PREEMPT_SHORT (6.12) lets an
//!   eligible wakee with a shorter slice and earlier deadline through.
//! - Tick: the only tick preemption is "request consumed" (`update_deadline`).
//! - Yield: the deadline moves one slice later (6.6 `yield_task_fair()`).
//! - DELAY_DEQUEUE + DELAY_ZERO (6.12, on by default): a task that blocks
//!   while ineligible (negative lag) stays in the kernel's tree, competing,
//!   until it becomes eligible — its lag grows with `V` — and then leaves
//!   with lag 0; a wakeup before that requeues it in place. greenos removes
//!   the sleeper at once (its handle must not be picked while it sleeps)
//!   and applies the same arithmetic when it wakes on the same queue:
//!   `vlag = min(0, vlag + (V_now − V_at_sleep))`. What is not modelled: the
//!   sleeper's weight staying in `V`'s average meanwhile, and a delayed task
//!   being kept on its CPU by a wakeup (here it may be placed elsewhere,
//!   keeping its negative lag).
//!
//! The current entity is not in the tree (as in CFS), so a pick after
//! `put_prev` chooses among all runnable entities.

use super::augtree::{AugTree, NodeInfo};
use super::cfs::{entity_before, max_vruntime, min_vruntime, EnqueueFlags, Tunables};
use super::class::{SchedClass, TaskEntity};
use super::list::NIL;
use super::policy::SchedPolicy;
use super::weights::{fair_delta, mul_div, NICE_0_LOAD};

/// Normalized `base_slice` (one CPU), 6.6 – 6.14: 0.75 ms.
pub const NORMALIZED_BASE_SLICE_NS: u64 = 750_000;
/// Smallest per-task slice request: 0.1 ms (6.12 `__setscheduler_params()`).
pub const MIN_SLICE_NS: u64 = 100_000;
/// Largest per-task slice request: 100 ms.
pub const MAX_SLICE_NS: u64 = 100_000_000;
/// `TICK_NSEC` used in the lag clamp: greenos's 1 ms tick (reference §9).
pub const TICK_NS: u64 = 1_000_000;

/// EEVDF's knobs (features.h defaults, reference §2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EevdfTunables {
    /// Default request size (wall ns).
    pub base_slice_ns: u64,
    /// Tick length used in the lag clamp.
    pub tick_ns: u64,
    /// PLACE_LAG: keep lag across sleep and migration.
    pub place_lag: bool,
    /// PLACE_DEADLINE_INITIAL: new tasks start with half a slice.
    pub place_deadline_initial: bool,
    /// RUN_TO_PARITY: no wakeup preemption before the request is consumed.
    pub run_to_parity: bool,
    /// PREEMPT_SHORT: a shorter-slice wakee may cut run-to-parity short.
    pub preempt_short: bool,
    /// WAKEUP_PREEMPTION.
    pub wakeup_preemption: bool,
    /// DELAY_DEQUEUE with DELAY_ZERO (6.12): a sleeper's negative lag is
    /// paid off while it sleeps, as `V` advances (see the module doc).
    pub delay_dequeue: bool,
}

impl EevdfTunables {
    /// Defaults for `ncpus` CPUs: base slice 0.75 ms × `1 + ilog2(min(ncpus,
    /// 8))` (0.75 / 1.5 / 2.25 / 3 ms), every feature on.
    pub fn for_cpus(ncpus: usize) -> EevdfTunables {
        EevdfTunables {
            base_slice_ns: NORMALIZED_BASE_SLICE_NS * Tunables::scaling_factor(ncpus),
            tick_ns: TICK_NS,
            place_lag: true,
            place_deadline_initial: true,
            run_to_parity: true,
            preempt_short: true,
            wakeup_preemption: true,
            delay_dequeue: true,
        }
    }
}

impl Default for EevdfTunables {
    fn default() -> Self {
        EevdfTunables::for_cpus(1)
    }
}

/// EEVDF's per-task state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EevdfData {
    /// Virtual deadline.
    pub deadline: u64,
    /// The request size in force (wall ns).
    pub slice: u64,
    /// A per-task slice request (0.1 – 100 ms), or `None` for the base slice.
    pub custom_slice: Option<std::num::NonZeroU64>,
    /// Virtual lag `V − v` saved at dequeue.
    pub vlag: i64,
    /// Tree node while queued.
    node: u32,
    /// Dequeued to sleep while ineligible: `deadline` then holds `V` at
    /// that moment (a sleeper has no deadline), for DELAY_DEQUEUE.
    delayed: bool,
}

impl EevdfData {
    /// A task EEVDF has not placed yet.
    pub const UNSET: EevdfData = EevdfData {
        deadline: 0,
        slice: 0,
        custom_slice: None,
        vlag: 0,
        node: NIL,
        delayed: false,
    };
}

impl Default for EevdfData {
    fn default() -> Self {
        EevdfData::UNSET
    }
}

impl EevdfData {
    /// Requests a slice of `ns` (clamped to 0.1 – 100 ms), or the base
    /// slice with `0`, as `sched_setattr()`'s `sched_runtime` does for fair
    /// tasks. Takes effect at the next deadline.
    pub fn request_slice(&mut self, ns: u64) {
        self.custom_slice =
            std::num::NonZeroU64::new(ns.clamp(MIN_SLICE_NS, MAX_SLICE_NS)).filter(|_| ns != 0);
    }
}

#[derive(Clone, Copy, Debug)]
struct Curr {
    vruntime: u64,
    deadline: u64,
    weight: u64,
    slice: u64,
    /// RUN_TO_PARITY: the deadline it was picked with.
    picked_deadline: u64,
    /// Its request was consumed since it was picked (tick preemption).
    resched: bool,
}

/// EEVDF per-CPU queue.
#[derive(Debug)]
pub struct EevdfRq<T> {
    tunables: EevdfTunables,
    tree: AugTree<T>,
    curr: Option<Curr>,
    /// `v0`: monotone reference of the `S` sum (6.6 `min_vruntime`).
    min_vruntime: u64,
    /// `Σ (v − v0) w` over the tree.
    avg_sum: i128,
    /// `Σ w` over the tree.
    avg_load: u64,
    /// `Σ w` over tree and current.
    load: u64,
    /// The NEXT buddy's tree node (NIL: none): picked before the earliest
    /// eligible deadline if it is eligible itself (PICK_BUDDY, §2.4 step 2).
    /// Cleared when that node leaves the tree, so a reused node id never
    /// names another entity.
    next: u32,
}

impl<T> Default for EevdfRq<T> {
    fn default() -> Self {
        EevdfRq::new(EevdfTunables::default())
    }
}

impl<T> EevdfRq<T> {
    /// An empty queue.
    pub fn new(tunables: EevdfTunables) -> EevdfRq<T> {
        EevdfRq {
            tunables,
            tree: AugTree::default(),
            curr: None,
            min_vruntime: 0,
            avg_sum: 0,
            avg_load: 0,
            load: 0,
            next: NIL,
        }
    }

    /// The tunables.
    pub fn tunables(&self) -> &EevdfTunables {
        &self.tunables
    }

    #[inline]
    fn key(&self, v: u64) -> i128 {
        i128::from(v.wrapping_sub(self.min_vruntime) as i64)
    }

    /// `S` and `W` including the current entity.
    #[inline]
    fn totals(&self) -> (i128, i128) {
        let mut s = self.avg_sum;
        let mut w = i128::from(self.avg_load);
        if let Some(c) = self.curr {
            s += self.key(c.vruntime) * i128::from(c.weight);
            w += i128::from(c.weight);
        }
        (s, w)
    }

    /// `V`, the weighted average vruntime, floored (fair.c: `avg_vruntime()`).
    pub fn avg_vruntime(&self) -> u64 {
        let (mut s, w) = self.totals();
        if w > 0 {
            if s < 0 {
                s -= w - 1;
            }
            s /= w;
        }
        self.min_vruntime.wrapping_add(s as i64 as u64)
    }

    /// Whether an entity at `v` is eligible: `S ≥ (v − v0)·W`, no division
    /// (fair.c: `vruntime_eligible()`).
    #[inline]
    pub fn vruntime_eligible(&self, v: u64) -> bool {
        let (s, w) = self.totals();
        s >= self.key(v) * w
    }

    /// [`vruntime_eligible`](Self::vruntime_eligible) with `S` and `W`
    /// computed once, for the tree descent.
    #[inline]
    fn eligible_test(&self) -> impl Fn(u64) -> bool {
        let (s, w) = self.totals();
        let v0 = self.min_vruntime;
        move |v| s >= i128::from(v.wrapping_sub(v0) as i64) * w
    }

    /// The monotone reference `v0`.
    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    fn update_min_vruntime(&mut self) {
        let mut v = self.min_vruntime;
        let curr = self.curr.map(|c| c.vruntime);
        let left = self.tree.min_vruntime();
        match (curr, left) {
            (Some(c), Some(l)) => v = min_vruntime(c, l),
            (Some(c), None) => v = c,
            (None, Some(l)) => v = l,
            (None, None) => {}
        }
        let new = max_vruntime(self.min_vruntime, v);
        let delta = new.wrapping_sub(self.min_vruntime) as i64;
        // avg_vruntime_update(): moving v0 by d shifts every key by −d.
        self.avg_sum -= i128::from(delta) * i128::from(self.avg_load);
        self.min_vruntime = new;
    }

    fn slice_of(&self, e: &TaskEntity) -> u64 {
        e.eevdf()
            .custom_slice
            .map_or(self.tunables.base_slice_ns, std::num::NonZeroU64::get)
    }

    fn tree_insert(&mut self, e: &mut TaskEntity, task: T) {
        let w = e.se.load.weight;
        self.avg_sum += self.key(e.se.vruntime) * i128::from(w);
        self.avg_load += w;
        e.eevdf_mut().node = self.tree.insert(
            NodeInfo {
                deadline: e.eevdf_mut().deadline,
                vruntime: e.se.vruntime,
                weight: w,
            },
            task,
        );
    }

    fn tree_remove(&mut self, node: u32) -> T {
        if node == self.next {
            // clear_buddies()
            self.next = NIL;
        }
        let (info, task) = self.tree.remove(node);
        self.avg_sum -= self.key(info.vruntime) * i128::from(info.weight);
        self.avg_load -= info.weight;
        task
    }

    /// Places `e` before it is queued (fair.c: `place_entity()`, §2.6).
    fn place_entity(&mut self, e: &mut TaskEntity, initial: bool) {
        let v_avg = self.avg_vruntime();
        e.eevdf_mut().slice = self.slice_of(e);
        let w = e.se.load.weight;
        let mut vslice = fair_delta(e.eevdf_mut().slice, w);
        let mut lag: i128 = 0;
        if self.tunables.place_lag && self.nr_running_inner() > 0 {
            let (_, load) = self.totals();
            lag = i128::from(e.eevdf_mut().vlag) * (load + i128::from(w));
            lag /= load.max(1);
        }
        e.se.vruntime = v_avg.wrapping_sub(lag as i64 as u64);
        if initial && self.tunables.place_deadline_initial {
            vslice /= 2;
        }
        e.eevdf_mut().deadline = e.se.vruntime.wrapping_add(vslice);
    }

    /// Saves `vlag = V − v`, clamped to `max(2·slice, tick)` in `e`'s
    /// virtual units (6.6 `update_entity_lag()`).
    fn update_entity_lag(&self, e: &mut TaskEntity) {
        let lag = self.avg_vruntime().wrapping_sub(e.se.vruntime) as i64;
        let limit = fair_delta(
            (2 * e.eevdf_mut().slice).max(self.tunables.tick_ns),
            e.se.load.weight,
        )
        .min(i64::MAX as u64) as i64;
        e.eevdf_mut().vlag = lag.clamp(-limit, limit);
    }

    #[inline]
    fn nr_running_inner(&self) -> usize {
        self.tree.len() + usize::from(self.curr.is_some())
    }

    /// `pick_eevdf()` with the current entity considered (for the wakeup
    /// check): returns `None` for "curr", `Some(node)` for a queued one.
    fn pick_with_curr(&self, wakee_short: Option<u64>) -> Option<Option<u32>> {
        let curr = self.curr.filter(|c| self.vruntime_eligible(c.vruntime));
        if let Some(c) = curr {
            let protected = self.tunables.run_to_parity && c.deadline == c.picked_deadline;
            // PREEMPT_SHORT: a shorter-slice wakee cancels the protection.
            let cancelled = wakee_short.is_some_and(|s| s < c.slice);
            if protected && !cancelled {
                return Some(None);
            }
        }
        let best = self.tree.pick_eligible(self.eligible_test());
        match (best, curr) {
            (Some(b), Some(c)) => {
                if entity_before(c.deadline, self.tree.info(b).deadline) {
                    Some(None)
                } else {
                    Some(Some(b))
                }
            }
            (Some(b), None) => Some(Some(b)),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        }
    }

    /// The per-CPU virtual clock `V` and reference for tests and tracing.
    pub fn nr_queued_tree(&self) -> usize {
        self.tree.len()
    }

    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        self.tree.assert_invariants();
        let mut s = 0i128;
        let mut w = 0u64;
        for id in self.tree.ids() {
            let i = self.tree.info(id);
            s += self.key(i.vruntime) * i128::from(i.weight);
            w += i.weight;
        }
        assert_eq!((s, w), (self.avg_sum, self.avg_load), "S and W sums");
        assert_eq!(self.load, w + self.curr.map_or(0, |c| c.weight));
    }
}

impl<T> SchedClass<T> for EevdfRq<T> {
    fn task_fork(&mut self, _parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        // sched_fork() zeroes vlag; the INITIAL enqueue places at V with
        // half a slice.
        child.eevdf_mut().vlag = 0;
    }

    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, _now: u64) {
        debug_assert!(!e.se.on_rq, "eevdf enqueue: already queued");
        if std::mem::take(&mut e.eevdf_mut().delayed) && flags.wakeup {
            // DELAY_DEQUEUE: the lag it would have earned in the tree while
            // V moved on, capped at 0 (DELAY_ZERO).
            let v_sleep = e.eevdf().deadline;
            let earned = (self.avg_vruntime().wrapping_sub(v_sleep) as i64).max(0);
            let d = e.eevdf_mut();
            d.vlag = d.vlag.saturating_add(earned).min(0);
        }
        // 6.6 enqueue_entity(): every enqueue (wakeup, fork, migration,
        // requeue) is placed from the saved lag.
        self.place_entity(e, flags.initial);
        self.tree_insert(e, task);
        self.load += e.se.load.weight;
        e.se.on_rq = true;
    }

    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        debug_assert!(e.se.on_rq, "eevdf dequeue: not queued");
        if !e.se.on_rq {
            return None;
        }
        self.update_entity_lag(e);
        if self.tunables.delay_dequeue && e.eevdf().vlag < 0 {
            let v = self.avg_vruntime();
            let d = e.eevdf_mut();
            d.deadline = v;
            d.delayed = true;
        }
        e.se.on_rq = false;
        let task = if e.eevdf_mut().node == NIL {
            // The current entity.
            if let Some(c) = self.curr.take() {
                self.load -= c.weight;
            }
            None
        } else {
            let node = std::mem::replace(&mut e.eevdf_mut().node, NIL);
            let t = self.tree_remove(node);
            self.load -= e.se.load.weight;
            Some(t)
        };
        self.update_min_vruntime();
        task
    }

    #[inline]
    fn pick_next(&mut self, _skip: Option<&TaskEntity>) -> Option<T> {
        debug_assert!(self.curr.is_none(), "eevdf pick: put_prev first");
        let node = if self.tree.len() == 1 {
            self.tree.first()
        } else if self.next != NIL && self.vruntime_eligible(self.tree.info(self.next).vruntime) {
            Some(self.next)
        } else {
            // V's own position is always eligible, so this finds one; the
            // fallback only guards against a rounding surprise.
            self.tree
                .pick_eligible(self.eligible_test())
                .or_else(|| self.tree.first())
        }?;
        // The buddy lasts one pick (clear_buddies() in set_next_entity()).
        self.next = NIL;
        let info = self.tree.info(node);
        let task = self.tree_remove(node);
        self.curr = Some(Curr {
            vruntime: info.vruntime,
            deadline: info.deadline,
            weight: info.weight,
            slice: 0,
            picked_deadline: info.deadline,
            resched: false,
        });
        Some(task)
    }

    #[inline]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        e.eevdf_mut().node = NIL;
        e.se.exec_start = now;
        e.se.prev_sum_exec_runtime = e.se.sum_exec_runtime;
        if let Some(c) = &mut self.curr {
            c.vruntime = e.se.vruntime;
            c.deadline = e.eevdf_mut().deadline;
            c.picked_deadline = e.eevdf_mut().deadline;
            c.slice = e.eevdf_mut().slice;
            c.resched = false;
        }
    }

    #[inline]
    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        debug_assert!(e.se.on_rq, "eevdf put_prev: dequeued");
        self.curr = None;
        self.tree_insert(e, task);
    }

    fn set_next_buddy(&mut self, e: &TaskEntity) {
        let node = e.eevdf().node;
        if e.se.on_rq && node != NIL {
            self.next = node;
        }
    }

    fn yield_task(&mut self, e: &mut TaskEntity) {
        // 6.6 yield_task_fair(): push the deadline one slice out.
        e.eevdf_mut().deadline = e
            .eevdf_mut()
            .deadline
            .wrapping_add(fair_delta(e.eevdf_mut().slice, e.se.load.weight));
        if let Some(c) = &mut self.curr {
            c.deadline = e.eevdf_mut().deadline;
        }
    }

    #[inline]
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        let delta = match now.checked_sub(e.se.exec_start) {
            Some(d) if d > 0 => d,
            _ => return,
        };
        e.se.exec_start = now;
        e.se.sum_exec_runtime = e.se.sum_exec_runtime.wrapping_add(delta);
        e.se.vruntime =
            e.se.vruntime
                .wrapping_add(fair_delta(delta, e.se.load.weight));
        // update_deadline(): request consumed → new request, resched.
        let mut renewed = false;
        if !entity_before(e.se.vruntime, e.eevdf_mut().deadline) {
            e.eevdf_mut().slice = self.slice_of(e);
            e.eevdf_mut().deadline =
                e.se.vruntime
                    .wrapping_add(fair_delta(e.eevdf_mut().slice, e.se.load.weight));
            renewed = true;
        }
        if e.se.on_rq && e.eevdf_mut().node == NIL {
            if let Some(c) = &mut self.curr {
                c.vruntime = e.se.vruntime;
                c.deadline = e.eevdf_mut().deadline;
                c.slice = e.eevdf_mut().slice;
                c.resched |= renewed;
            }
        }
        self.update_min_vruntime();
    }

    #[inline]
    fn check_preempt_tick(&self, curr: &TaskEntity) -> bool {
        let _ = curr;
        self.tree.len() > 0 && self.curr.is_some_and(|c| c.resched)
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        if curr.se.idle_policy && !wakee.se.idle_policy {
            return true;
        }
        if wakee.policy != SchedPolicy::Normal || !self.tunables.wakeup_preemption {
            return false;
        }
        if wakee.eevdf().node == NIL {
            return false;
        }
        let short = (self.tunables.preempt_short
            && self.vruntime_eligible(wakee.se.vruntime)
            && self
                .curr
                .is_some_and(|c| entity_before(wakee.eevdf().deadline, c.deadline)))
        .then_some(wakee.eevdf().slice);
        self.pick_with_curr(short) == Some(Some(wakee.eevdf().node))
    }

    fn migrate_out(&mut self, e: &mut TaskEntity) {
        // Lag is relative to V: nothing else to re-base. A queued entity
        // saves it at dequeue; one taken with pop_coldest saves it here.
        if !e.se.on_rq && e.eevdf_mut().node != NIL {
            e.eevdf_mut().node = NIL;
            self.update_entity_lag(e);
        }
    }

    fn migrate_in(&mut self, e: &mut TaskEntity) {
        // Another queue's V means nothing here: a migrating sleeper keeps
        // its lag as it was.
        e.eevdf_mut().delayed = false;
    }

    fn pop_coldest(&mut self) -> Option<T> {
        let node = self.tree.last()?;
        let w = self.tree.info(node).weight;
        let t = self.tree_remove(node);
        self.load -= w;
        self.update_min_vruntime();
        Some(t)
    }

    fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.tree.len());
        while let Some(t) = self.pop_coldest() {
            out.push(t);
        }
        out.reverse();
        out
    }

    fn coldest(&self) -> Option<&T> {
        self.tree.last().map(|id| self.tree.task(id))
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        if self.tree.len() == 0 {
            return None;
        }
        if self.curr.is_some_and(|c| c.resched) {
            return Some(0);
        }
        // Wall time until v reaches the deadline: Δv · w / 1024.
        let dv = curr.eevdf().deadline.wrapping_sub(curr.se.vruntime) as i64;
        Some(if dv <= 0 {
            0
        } else {
            mul_div(dv as u64, curr.se.load.weight, NICE_0_LOAD)
        })
    }

    #[inline]
    fn nr_running(&self) -> usize {
        self.nr_running_inner()
    }

    #[inline]
    fn nr_queued(&self) -> usize {
        self.tree.len()
    }

    #[inline]
    fn load_weight(&self) -> u64 {
        self.load
    }
}
