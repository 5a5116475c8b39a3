//! The per-CPU run queue: the real-time class above one fair class, the
//! fair class chosen per runtime by [`Policy`].
//!
//! # What this module owns
//!
//! - [`FairRq`]: an enum over the four fair classes. A `match` per call
//!   (one well-predicted branch: every queue of a runtime has the same
//!   variant) instead of a `dyn` call, so the CFS pick path stays inlined.
//! - [`RunQueue`]: class order RT > fair (reference §6), RT bandwidth
//!   throttling, and dispatch of every [`SchedClass`] operation to the class
//!   of the entity's policy.
//!
//! # Invariants
//!
//! 1. An entity is accounted in exactly the class its `policy` selects; a
//!    policy changes only while the task is off the queue.
//! 2. At most one current task, in the RT or in the fair class.
//! 3. RT is picked first unless it is throttled **and** a fair task is
//!    waiting. When no fair task wants the CPU a throttled RT task still
//!    runs: throttling exists to let fair tasks through (the 6.12 "fair
//!    server" is likewise only active while fair tasks starve); an idle CPU
//!    with runnable RT work helps nobody.

use super::cfs::{CfsRq, EnqueueFlags, Tunables};
use super::class::{SchedClass, TaskEntity};
use super::eevdf::{EevdfRq, EevdfTunables};
use super::o1::O1Rq;
use super::on::{OnRq, OnTunables};
use super::policy::Policy;
use super::rt::{RtBandwidth, RtRq, RR_TIMESLICE_NS};

/// One of the four fair classes.
#[derive(Debug)]
pub enum FairRq<T> {
    /// CFS (Linux 2.6.23 – 6.5).
    Cfs(CfsRq<T>),
    /// EEVDF (Linux 6.6+).
    Eevdf(EevdfRq<T>),
    /// O(1) (Linux 2.6.0 – 2.6.22).
    O1(O1Rq<T>),
    /// O(N) (Linux 2.4).
    ON(OnRq<T>),
}

impl<T> FairRq<T> {
    /// An empty queue of `policy` with the kernel defaults for `ncpus`
    /// CPUs.
    pub fn new(policy: Policy, ncpus: usize) -> FairRq<T> {
        match policy {
            Policy::Cfs => FairRq::Cfs(CfsRq::new(Tunables::for_cpus(ncpus))),
            Policy::Eevdf => FairRq::Eevdf(EevdfRq::new(EevdfTunables::for_cpus(ncpus))),
            Policy::O1 => FairRq::O1(O1Rq::new()),
            Policy::ON => FairRq::ON(OnRq::new(OnTunables::default())),
        }
    }

    /// Which policy this is.
    pub fn policy(&self) -> Policy {
        match self {
            FairRq::Cfs(_) => Policy::Cfs,
            FairRq::Eevdf(_) => Policy::Eevdf,
            FairRq::O1(_) => Policy::O1,
            FairRq::ON(_) => Policy::ON,
        }
    }
}

macro_rules! fair_dispatch {
    ($self:expr, $q:ident => $e:expr) => {
        match $self {
            FairRq::Cfs($q) => $e,
            FairRq::Eevdf($q) => $e,
            FairRq::O1($q) => $e,
            FairRq::ON($q) => $e,
        }
    };
}

impl<T> SchedClass<T> for FairRq<T> {
    #[inline]
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        fair_dispatch!(self, q => q.task_fork(parent, child))
    }
    #[inline]
    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, now: u64) {
        fair_dispatch!(self, q => q.enqueue(e, task, flags, now))
    }
    #[inline]
    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        fair_dispatch!(self, q => q.dequeue(e))
    }
    #[inline(always)]
    fn pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<T> {
        fair_dispatch!(self, q => q.pick_next(skip))
    }
    #[inline(always)]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        fair_dispatch!(self, q => q.set_next(e, now))
    }
    #[inline(always)]
    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        fair_dispatch!(self, q => q.put_prev(e, task))
    }
    #[inline]
    fn yield_task(&mut self, e: &mut TaskEntity) {
        fair_dispatch!(self, q => q.yield_task(e))
    }
    #[inline]
    fn yield_blocking(&mut self, e: &mut TaskEntity) {
        fair_dispatch!(self, q => SchedClass::yield_blocking(q, e))
    }
    #[inline]
    fn set_next_buddy(&mut self, e: &TaskEntity) {
        fair_dispatch!(self, q => SchedClass::set_next_buddy(q, e))
    }
    #[inline(always)]
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        fair_dispatch!(self, q => SchedClass::update_curr(q, e, now))
    }
    #[inline]
    fn check_preempt_tick(&self, curr: &TaskEntity) -> bool {
        fair_dispatch!(self, q => SchedClass::check_preempt_tick(q, curr))
    }
    #[inline]
    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        fair_dispatch!(self, q => SchedClass::check_preempt_wakeup(q, curr, wakee))
    }
    #[inline]
    fn migrate_out(&mut self, e: &mut TaskEntity) {
        fair_dispatch!(self, q => SchedClass::migrate_out(q, e))
    }
    #[inline]
    fn migrate_in(&mut self, e: &mut TaskEntity) {
        fair_dispatch!(self, q => SchedClass::migrate_in(q, e))
    }
    #[inline]
    fn pop_coldest(&mut self) -> Option<T> {
        fair_dispatch!(self, q => q.pop_coldest())
    }
    #[inline]
    fn drain(&mut self) -> Vec<T> {
        fair_dispatch!(self, q => SchedClass::drain(q))
    }
    #[inline]
    fn coldest(&self) -> Option<&T> {
        fair_dispatch!(self, q => q.coldest())
    }
    #[inline]
    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        fair_dispatch!(self, q => q.preempt_budget(curr))
    }
    #[inline]
    fn nr_running(&self) -> usize {
        fair_dispatch!(self, q => SchedClass::nr_running(q))
    }
    #[inline]
    fn nr_queued(&self) -> usize {
        fair_dispatch!(self, q => SchedClass::nr_queued(q))
    }
    #[inline]
    fn load_weight(&self) -> u64 {
        fair_dispatch!(self, q => SchedClass::load_weight(q))
    }
}

/// A CPU's run queue: RT above the runtime's fair class.
///
/// It implements [`SchedClass`] itself, dispatching on each entity's
/// policy, so a driver calls it exactly as it would call one class.
#[derive(Debug)]
pub struct RunQueue<T> {
    /// The real-time class.
    pub rt: RtRq<T>,
    /// The fair class.
    pub fair: FairRq<T>,
    /// RT bandwidth (950 ms / 1 s by default).
    pub rt_bandwidth: RtBandwidth,
}

impl<T> RunQueue<T> {
    /// An empty queue with `policy` as the fair class, the kernel defaults
    /// for `ncpus` CPUs, RR slice 100 ms and RT throttling 950 ms / 1 s.
    pub fn new(policy: Policy, ncpus: usize) -> RunQueue<T> {
        RunQueue {
            rt: RtRq::new(RR_TIMESLICE_NS),
            fair: FairRq::new(policy, ncpus),
            rt_bandwidth: RtBandwidth::default(),
        }
    }

    /// Replaces the RT bandwidth (`None` runtime: no throttling).
    pub fn with_rt_bandwidth(mut self, bw: RtBandwidth) -> RunQueue<T> {
        self.rt_bandwidth = bw;
        self
    }

    /// The fair policy.
    pub fn policy(&self) -> Policy {
        self.fair.policy()
    }

    /// For a CFS queue, records in the new `child` the START_DEBIT vslice
    /// its fork computes now ([`CfsRq::set_fork_vslice`]; `staged`: earlier
    /// children not queued yet). The other classes place a child from its
    /// parent in `task_fork`.
    pub fn set_fork_vslice(&self, child: &mut TaskEntity, staged: usize) {
        if let FairRq::Cfs(q) = &self.fair {
            q.set_fork_vslice(&mut child.se, staged);
        }
    }

    /// The fair queue's monotone virtual clock floor (CFS `min_vruntime`,
    /// EEVDF's `v0`; 0 for the classes without virtual time), for
    /// re-basing a CFS vruntime read by another CPU.
    pub fn min_vruntime(&self) -> u64 {
        match &self.fair {
            FairRq::Cfs(q) => q.min_vruntime(),
            FairRq::Eevdf(q) => q.min_vruntime(),
            FairRq::O1(_) | FairRq::ON(_) => 0,
        }
    }

    /// Direct process switch (IPC fastpath): accounts the woken fair task
    /// `e` and makes it the current task at once, without queueing it, if
    /// the fair class supports that (CFS) and nothing of a higher class is
    /// runnable — seL4's fastpath requires the receiver to be the highest
    /// priority runnable thread — and the leftmost queued fair task is not
    /// owed the CPU first (see [`CfsRq::enqueue_curr`]). Returns false
    /// otherwise, leaving `e` unqueued (the caller then enqueues it as a
    /// wakeup). No task may be current.
    pub fn enqueue_curr(&mut self, e: &mut TaskEntity, now: u64) -> bool {
        if e.policy.is_rt() || self.rt.nr_running() > 0 {
            return false;
        }
        match &mut self.fair {
            FairRq::Cfs(q) => q.enqueue_curr(&mut e.se, now),
            _ => false,
        }
    }

    /// Makes the fair entity `e`, which is running already (a borrower of
    /// a lent scheduling context), the current one whatever is queued; see
    /// [`CfsRq::enqueue_curr_forced`]. CFS only (the only class that lends;
    /// false, changing nothing, otherwise). No task may be current.
    pub fn enqueue_curr_forced(&mut self, e: &mut TaskEntity, now: u64) -> bool {
        if e.policy.is_rt() {
            return false;
        }
        match &mut self.fair {
            FairRq::Cfs(q) => {
                q.enqueue_curr_forced(&mut e.se, now);
                true
            }
            _ => false,
        }
    }

    /// Whether RT must step aside now: throttled with a fair task waiting.
    #[inline]
    fn rt_held_back(&self) -> bool {
        self.rt_bandwidth.throttled() && self.fair.nr_queued() > 0
    }
}

impl<T> SchedClass<T> for RunQueue<T> {
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        // Each class prepares its own part (a child may change policy
        // before it is first queued).
        let parent_fair = parent.filter(|p| !p.policy.is_rt());
        self.fair.task_fork(parent_fair, child);
        self.rt.task_fork(None, child);
    }

    #[inline]
    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, now: u64) {
        if e.policy.is_rt() {
            self.rt.enqueue(e, task, flags, now)
        } else {
            self.fair.enqueue(e, task, flags, now)
        }
    }

    #[inline]
    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        if e.policy.is_rt() {
            self.rt.dequeue(e)
        } else {
            self.fair.dequeue(e)
        }
    }

    #[inline(always)]
    fn pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<T> {
        if self.rt.nr_queued() > 0 && !self.rt_held_back() {
            let skip_rt = skip.filter(|s| s.policy.is_rt());
            if let Some(t) = self.rt.pick_next(skip_rt) {
                return Some(t);
            }
        }
        let skip_fair = skip.filter(|s| !s.policy.is_rt());
        self.fair.pick_next(skip_fair)
    }

    #[inline(always)]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        if e.policy.is_rt() {
            self.rt_bandwidth.account(now, 0);
            self.rt.set_next(e, now)
        } else {
            self.fair.set_next(e, now)
        }
    }

    #[inline(always)]
    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        if e.policy.is_rt() {
            self.rt.put_prev(e, task)
        } else {
            self.fair.put_prev(e, task)
        }
    }

    #[inline]
    fn yield_task(&mut self, e: &mut TaskEntity) {
        if e.policy.is_rt() {
            self.rt.yield_task(e)
        } else {
            self.fair.yield_task(e)
        }
    }

    #[inline]
    fn yield_blocking(&mut self, e: &mut TaskEntity) {
        if e.policy.is_rt() {
            self.rt.yield_blocking(e)
        } else {
            self.fair.yield_blocking(e)
        }
    }

    #[inline]
    fn set_next_buddy(&mut self, e: &TaskEntity) {
        if !e.policy.is_rt() {
            self.fair.set_next_buddy(e)
        }
    }

    #[inline(always)]
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        if e.policy.is_rt() {
            let before = e.se.sum_exec_runtime;
            self.rt.update_curr(e, now);
            let ran = e.se.sum_exec_runtime.wrapping_sub(before);
            if e.se.on_rq {
                self.rt_bandwidth.account(now, ran);
            }
        } else {
            self.fair.update_curr(e, now);
            // Only a throttled RT class needs the clock while fair tasks
            // run (to replenish); otherwise the next RT charge replenishes
            // the elapsed periods itself.
            if self.rt_bandwidth.throttled() {
                self.rt_bandwidth.account(now, 0);
            }
        }
    }

    fn check_preempt_tick(&self, curr: &TaskEntity) -> bool {
        if curr.policy.is_rt() {
            self.rt_held_back() || self.rt.check_preempt_tick(curr)
        } else {
            (self.rt.nr_queued() > 0 && !self.rt_bandwidth.throttled())
                || self.fair.check_preempt_tick(curr)
        }
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        match (curr.policy.is_rt(), wakee.policy.is_rt()) {
            // check_preempt_curr(): a higher class always preempts.
            (false, true) => !self.rt_bandwidth.throttled(),
            (true, false) => false,
            (true, true) => self.rt.check_preempt_wakeup(curr, wakee),
            (false, false) => self.fair.check_preempt_wakeup(curr, wakee),
        }
    }

    fn migrate_out(&mut self, e: &mut TaskEntity) {
        if e.policy.is_rt() {
            self.rt.migrate_out(e)
        } else {
            self.fair.migrate_out(e)
        }
    }

    fn migrate_in(&mut self, e: &mut TaskEntity) {
        if e.policy.is_rt() {
            self.rt.migrate_in(e)
        } else {
            self.fair.migrate_in(e)
        }
    }

    /// The fair class's coldest task (RT tasks are placed by push/pull in
    /// Linux, not by the fair balancer).
    fn pop_coldest(&mut self) -> Option<T> {
        self.fair.pop_coldest()
    }

    fn drain(&mut self) -> Vec<T> {
        let mut v = self.rt.drain();
        v.extend(self.fair.drain());
        v
    }

    fn coldest(&self) -> Option<&T> {
        self.fair.coldest()
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        if curr.policy.is_rt() {
            let own = self.rt.preempt_budget(curr);
            if self.fair.nr_queued() == 0 {
                return own;
            }
            // Throttling: RT may run until rt_time exceeds the runtime. This
            // ignores a period ending first (which replenishes), so it may
            // be early, never late: an early check only costs a re-pick.
            let bw = self
                .rt_bandwidth
                .runtime_ns
                .map(|r| (r + 1).saturating_sub(self.rt_bandwidth.rt_time()));
            match (own, bw) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else if self.rt.nr_queued() > 0 && !self.rt_bandwidth.throttled() {
            Some(0)
        } else if self.rt.nr_queued() > 0 {
            // Throttled RT returns when the period ends (`update_curr`
            // replenishes it then).
            let end = self.rt_bandwidth.until_period_end() + 1;
            Some(self.fair.preempt_budget(curr).map_or(end, |b| b.min(end)))
        } else {
            self.fair.preempt_budget(curr)
        }
    }

    fn nr_running(&self) -> usize {
        self.rt.nr_running() + self.fair.nr_running()
    }

    fn nr_queued(&self) -> usize {
        self.rt.nr_queued() + self.fair.nr_queued()
    }

    fn load_weight(&self) -> u64 {
        self.fair.load_weight()
    }
}
