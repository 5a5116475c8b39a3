//! The scheduling-class interface: one trait every class implements, the
//! per-task entity all classes share, and the CFS adapter.
//!
//! # What this module owns
//!
//! - [`TaskEntity`]: everything any class keeps per task, as the kernel's
//!   `task_struct` holds `se` (fair), `rt` and, in 2.4/2.6, the O(N)/O(1)
//!   fields side by side. The driver owns it (inside the task) and lends it.
//! - [`SchedClass`]: the kernel's `struct sched_class` for one per-CPU
//!   queue: enqueue, dequeue, pick next, put previous, set next, update
//!   current (the tick's accounting), the tick and wakeup preemption checks,
//!   fork, yield, and migrate out/in.
//! - The [`SchedClass`] implementation of [`CfsRq`] (a thin adapter: the
//!   CFS fast path is unchanged).
//!
//! # Adding a class
//!
//! Write `myclass.rs` with a queue type implementing [`SchedClass`] and, if
//! it needs per-task state, a `MyData` struct added as one field of
//! [`TaskEntity`]; add a [`FairRq`](super::FairRq) variant and a
//! [`Policy`](super::Policy) variant. The unit tests in `tests_classes.rs`
//! show the calling protocol.
//!
//! # Protocol (same for every class; `now` is the driver's ns clock)
//!
//! 1. Spawn: [`task_fork`](SchedClass::task_fork)`(parent, child)` then
//!    [`enqueue`](SchedClass::enqueue)`(child, h, INITIAL, now)`.
//! 2. Tick: [`update_curr`](SchedClass::update_curr)`(curr, now)`; if
//!    [`check_preempt_tick`](SchedClass::check_preempt_tick)`(curr)`, switch
//!    at the next scheduling point.
//! 3. Switch away from a runnable task: `update_curr`, then (for a yield
//!    [`yield_task`](SchedClass::yield_task)) [`put_prev`](SchedClass::put_prev),
//!    [`pick_next`](SchedClass::pick_next)`(skip)`, [`set_next`](SchedClass::set_next)
//!    on the picked task's entity.
//! 4. Block or exit: `update_curr`, [`dequeue`](SchedClass::dequeue), pick.
//! 5. Wakeup: `update_curr(curr)` if one runs; `enqueue(se, h, WAKEUP,
//!    now)`; if [`check_preempt_wakeup`](SchedClass::check_preempt_wakeup),
//!    switch.
//! 6. Migration: `migrate_out` + `dequeue` on the source (or
//!    [`pop_coldest`](SchedClass::pop_coldest), clear `se.on_rq`,
//!    `migrate_out`), then `migrate_in` + `enqueue(.., NONE, now)` on the
//!    destination.

use super::cfs::{CfsRq, EnqueueFlags, SchedEntity};
use super::eevdf::EevdfData;
use super::o1::O1Data;
use super::on::OnData;
use super::policy::SchedPolicy;
use super::rt::RtData;

/// Everything the scheduling classes keep per task.
///
/// `se` carries what all fair classes share (weight, nice, exec times,
/// `on_rq`, and CFS's vruntime); `rt` the real-time class's state; `fair`
/// the state of the one other fair class the task's runtime uses (EEVDF,
/// O(1) or O(N)) — only one, since a runtime runs one fair class, so the
/// classes share the space instead of each task carrying all three.
#[derive(Clone, Debug)]
pub struct TaskEntity {
    /// Fair accounting shared by every class (and all of CFS's state).
    pub se: SchedEntity,
    /// The task's policy. Change it only while the task is off every queue
    /// (dequeue, change, enqueue), as `__sched_setscheduler()` does.
    pub policy: SchedPolicy,
    /// The real-time class's timeslice and queue position.
    pub rt: RtData,
    /// The state of the fair class that last touched the task.
    fair: FairData,
}

/// The per-task state of the fair class in use; `Unset` until that class
/// first reaches the task (at fork, enqueue or a slice request).
#[derive(Clone, Debug)]
enum FairData {
    /// No class beyond CFS has touched the task yet.
    Unset,
    /// EEVDF's deadline, slice and lag.
    Eevdf(EevdfData),
    /// O(1)'s priority, timeslice and sleep average.
    O1(O1Data),
    /// O(N)'s counter.
    On(OnData),
}

/// What an entity's EEVDF state reads as before EEVDF first touched it.
static EEVDF_UNSET: EevdfData = EevdfData::UNSET;
/// The same for O(N).
static ON_UNSET: OnData = OnData::UNSET;

impl TaskEntity {
    /// A task at `nice` with `policy`, never run.
    ///
    /// # Panics
    ///
    /// If `nice` is outside `-20..=19` (validate first with
    /// [`validate_nice`](super::validate_nice)).
    pub fn new(nice: i32, policy: SchedPolicy) -> TaskEntity {
        let mut se = SchedEntity::new(nice);
        if policy == SchedPolicy::Idle {
            se.set_idle_policy(true);
        }
        TaskEntity {
            se,
            policy,
            rt: RtData::default(),
            fair: FairData::Unset,
        }
    }

    /// EEVDF's deadline, slice and lag (its defaults if EEVDF never ran
    /// the task).
    #[inline]
    pub fn eevdf(&self) -> &EevdfData {
        match &self.fair {
            FairData::Eevdf(d) => d,
            _ => &EEVDF_UNSET,
        }
    }

    /// EEVDF's state, made EEVDF's if another class held the space.
    #[inline]
    pub fn eevdf_mut(&mut self) -> &mut EevdfData {
        if !matches!(self.fair, FairData::Eevdf(_)) {
            self.fair = FairData::Eevdf(EevdfData::default());
        }
        match &mut self.fair {
            FairData::Eevdf(d) => d,
            _ => unreachable!("just set to EEVDF"),
        }
    }

    /// O(1)'s priority, timeslice and sleep average.
    ///
    /// # Panics
    ///
    /// If O(1) never reached the task: its class initialises the state at
    /// `task_fork` and `enqueue`, before any read.
    #[inline]
    pub fn o1(&self) -> &O1Data {
        match &self.fair {
            FairData::O1(d) => d,
            _ => panic!("O(1) state read before the O(1) class reached the task"),
        }
    }

    /// O(1)'s state, initialised from the task's nice value and policy if
    /// another class held the space.
    #[inline]
    pub fn o1_mut(&mut self) -> &mut O1Data {
        if !matches!(self.fair, FairData::O1(_)) {
            self.fair = FairData::O1(O1Data::new(self.se.nice, self.policy));
        }
        match &mut self.fair {
            FairData::O1(d) => d,
            _ => unreachable!("just set to O(1)"),
        }
    }

    /// O(N)'s counter (its defaults if O(N) never ran the task).
    #[inline]
    pub fn on(&self) -> &OnData {
        match &self.fair {
            FairData::On(d) => d,
            _ => &ON_UNSET,
        }
    }

    /// O(N)'s state, made O(N)'s if another class held the space.
    #[inline]
    pub fn on_mut(&mut self) -> &mut OnData {
        if !matches!(self.fair, FairData::On(_)) {
            self.fair = FairData::On(OnData::default());
        }
        match &mut self.fair {
            FairData::On(d) => d,
            _ => unreachable!("just set to O(N)"),
        }
    }

    /// Whether the task is on a queue (queued or running there).
    #[inline]
    pub fn on_rq(&self) -> bool {
        self.se.on_rq
    }

    /// Total wall-clock ns run.
    #[inline]
    pub fn sum_exec_runtime(&self) -> u64 {
        self.se.sum_exec_runtime
    }

    /// Changes the nice value (`setpriority`): weight, O(1) static
    /// priority. Only while off every queue (dequeue, change, enqueue), as
    /// `set_user_nice()` does.
    pub fn set_nice(&mut self, nice: i32) {
        debug_assert!(!self.se.on_rq, "set_nice on a queued entity");
        let old = self.se.load.weight;
        self.se.set_nice(nice);
        if let FairData::O1(o) = &mut self.fair {
            o.set_nice(nice, self.policy);
        }
        self.rescale_lag(old);
    }

    /// EEVDF `reweight_entity()` for a sleeping entity: `vlag × w_old /
    /// w_new`, so that the real lag (`w × vlag`) is conserved (§2.6).
    fn rescale_lag(&mut self, old_weight: u64) {
        let new = self.se.load.weight;
        if let FairData::Eevdf(d) = &mut self.fair {
            if new != old_weight && new != 0 {
                let l = i128::from(d.vlag) * i128::from(old_weight) / i128::from(new);
                d.vlag = l.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            }
        }
    }

    /// Changes the policy (`sched_setscheduler`); same rule as
    /// [`set_nice`](Self::set_nice). An RT task keeps its nice value for
    /// when it returns to a fair policy.
    pub fn set_policy(&mut self, policy: SchedPolicy) {
        debug_assert!(!self.se.on_rq, "set_policy on a queued entity");
        let old = self.se.load.weight;
        self.policy = policy;
        self.se.set_idle_policy(policy == SchedPolicy::Idle);
        if let FairData::O1(o) = &mut self.fair {
            o.set_nice(self.se.nice, policy);
        }
        self.rescale_lag(old);
    }
}

/// One scheduling class's per-CPU queue (kernel: `struct sched_class` plus
/// its `*_rq`). `T` is the task handle the queue stores (an `Arc` in the
/// executor, an index in the simulator and tests).
///
/// The queue stores handles and whatever keys it needs; the entity stays
/// with the caller, who lends it to every call. See the module docs for the
/// calling order.
pub trait SchedClass<T> {
    /// Prepares a new task's class state from its parent's (kernel:
    /// `sched_fork()` + the class's `task_fork`); `parent` is charged first
    /// with [`update_curr`](Self::update_curr) if it runs. `None` for a task
    /// with no scheduled parent.
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity);

    /// Accounts `e` here and queues `task`, placing it as `flags` say
    /// (wakeup, fork, or neither: migration/requeue); sets `e.se.on_rq`.
    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, now: u64);

    /// Un-accounts `e`, queued or current, and clears `e.se.on_rq`; returns
    /// its handle if it was queued (`None` for the current task).
    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T>;

    /// Chooses the next task, takes it out of the queue and makes it the
    /// current one. `skip` is a task that just yielded (already put back).
    fn pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<T>;

    /// Marks the picked `e` as running from `now`.
    fn set_next(&mut self, e: &mut TaskEntity, now: u64);

    /// Puts the still-runnable current task back (charge it first).
    fn put_prev(&mut self, e: &mut TaskEntity, task: T);

    /// The current task yields: adjust its class state before
    /// [`put_prev`](Self::put_prev). Classes that handle yield through the
    /// `skip` argument of [`pick_next`](Self::pick_next) do nothing.
    fn yield_task(&mut self, _e: &mut TaskEntity) {}

    /// The current task yields because it is about to block (greenos's
    /// yield before parking), not by `sched_yield()`: classes that can,
    /// pass over it more readily (CFS: [`CfsRq::yield_blocking`]). By
    /// default a plain [`yield_task`](Self::yield_task).
    fn yield_blocking(&mut self, e: &mut TaskEntity) {
        self.yield_task(e);
    }

    /// Asks that the queued `e` run next, if the class finds that fair
    /// enough (the kernel's NEXT buddy, set by `yield_to()`). Classes
    /// without buddies (O(1), O(N), RT) ignore it; the hint lasts one pick.
    fn set_next_buddy(&mut self, _e: &TaskEntity) {}

    /// Charges the current task for the time since it was last charged
    /// (the tick's accounting: vruntime, counters, timeslices).
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64);

    /// Whether the (charged) current task should give up the CPU now.
    fn check_preempt_tick(&self, curr: &TaskEntity) -> bool;

    /// Whether the just-enqueued `wakee` should preempt the running `curr`
    /// (both of this class; charge `curr` first).
    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool;

    /// Makes `e`'s state independent of this (source) queue before it moves.
    fn migrate_out(&mut self, e: &mut TaskEntity);

    /// Binds a migrating `e` to this (destination) queue before enqueue.
    fn migrate_in(&mut self, e: &mut TaskEntity);

    /// Removes the queued task the load balancer should take first (the
    /// coldest) and un-accounts it. The caller then clears `e.se.on_rq` on
    /// its entity and calls [`migrate_out`](Self::migrate_out).
    fn pop_coldest(&mut self) -> Option<T>;

    /// Removes every queued task (shutdown); the current one stays. The
    /// caller clears `on_rq` on the entities behind the handles.
    fn drain(&mut self) -> Vec<T>;

    /// The task [`pop_coldest`](Self::pop_coldest) would take, left queued
    /// (the balancer checks it first).
    fn coldest(&self) -> Option<&T>;

    /// Wall-clock ns the (charged) current task may still run before
    /// [`check_preempt_tick`](Self::check_preempt_tick) would fire, if
    /// nothing else changes; `None` when nothing bounds it (it runs alone,
    /// or it is FIFO). For drivers whose tick is coarse or remote (the
    /// executor's monitor thread). Exact for the classes; the run queue's
    /// RT-throttling bound may be early (see [`RunQueue`](super::RunQueue)).
    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64>;

    /// Tasks accounted here: queued plus current.
    fn nr_running(&self) -> usize;

    /// Tasks queued (not counting the current one).
    fn nr_queued(&self) -> usize;

    /// Sum of the accounted tasks' load weights.
    fn load_weight(&self) -> u64;
}

/// CFS as a class: every call forwards to the [`CfsRq`] method of the same
/// meaning on `e.se` (no extra work on the pick path).
impl<T> SchedClass<T> for CfsRq<T> {
    #[inline]
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        // task_fork_fair(): the child starts at the parent's vruntime; the
        // INITIAL enqueue then applies START_DEBIT against min_vruntime.
        if let Some(p) = parent {
            child.se.vruntime = p.se.vruntime;
        }
    }

    #[inline]
    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, _now: u64) {
        self.enqueue_entity(&mut e.se, task, flags);
    }

    #[inline]
    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        self.dequeue_entity(&mut e.se)
    }

    #[inline]
    fn yield_blocking(&mut self, _e: &mut TaskEntity) {
        CfsRq::yield_blocking(self);
    }

    #[inline(always)]
    fn pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<T> {
        self.pick_next_entity(skip.map(|s| &s.se))
    }

    #[inline(always)]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        self.set_next_entity(&mut e.se, now);
    }

    #[inline(always)]
    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        self.put_prev_entity(&mut e.se, task);
    }

    #[inline]
    fn set_next_buddy(&mut self, e: &TaskEntity) {
        CfsRq::set_next_buddy(self, &e.se);
    }

    #[inline(always)]
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        CfsRq::update_curr(self, &mut e.se, now);
    }

    #[inline]
    fn check_preempt_tick(&self, curr: &TaskEntity) -> bool {
        CfsRq::check_preempt_tick(self, &curr.se)
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        // §1.9: an idle curr is preempted by any non-idle wakee; a BATCH
        // (or IDLE) wakee never preempts otherwise.
        if wakee.policy == SchedPolicy::Batch {
            return curr.se.idle_policy;
        }
        CfsRq::check_preempt_wakeup(self, &curr.se, &wakee.se)
    }

    #[inline]
    fn migrate_out(&mut self, e: &mut TaskEntity) {
        CfsRq::migrate_out(self, &mut e.se);
    }

    #[inline]
    fn migrate_in(&mut self, e: &mut TaskEntity) {
        CfsRq::migrate_in(self, &mut e.se);
    }

    fn pop_coldest(&mut self) -> Option<T> {
        self.pop_rightmost().map(|(_, t)| t)
    }

    fn drain(&mut self) -> Vec<T> {
        CfsRq::drain(self).map(|(_, t)| t).collect()
    }

    fn coldest(&self) -> Option<&T> {
        self.iter().next_back().map(|(_, t)| t)
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        if CfsRq::nr_queued(self) == 0 {
            return None;
        }
        // check_preempt_tick()'s first test: the slice since the pick.
        let ran = curr
            .se
            .sum_exec_runtime
            .wrapping_sub(curr.se.prev_sum_exec_runtime);
        Some(self.sched_slice(&curr.se).saturating_sub(ran))
    }

    #[inline]
    fn nr_running(&self) -> usize {
        CfsRq::nr_running(self)
    }

    #[inline]
    fn nr_queued(&self) -> usize {
        CfsRq::nr_queued(self)
    }

    #[inline]
    fn load_weight(&self) -> u64 {
        CfsRq::load_weight(self)
    }
}
