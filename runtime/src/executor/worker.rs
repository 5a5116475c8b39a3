//! The per-CPU run loop: pick, switch, account; steal and sleep when idle.
//!
//! One `WorkerCell` per CPU lives on its worker thread's stack for the
//! thread's whole life. Its `WorkerLocal` is owned by that thread (see the
//! ownership rules in `executor/mod.rs`).
//!
//! # One turn of the loop (`schedule`)
//! 1. Read the clock; fire due timers (wakeups land in this run queue).
//! 2. Move tasks from the inbox and the staging deque into the run queue
//!    (placing new ones with START_DEBIT, woken ones with sleeper credit).
//! 3. If some CPU is idle and two or more tasks wait here, push the coldest
//!    half to it (the busy CPU's side of "no CPU idles while another has a
//!    backlog"; the idle CPU's side is stealing new tasks from staging).
//! 4. Pick the next task from the run queue (`sched::RunQueue`: RT above
//!    the runtime's fair class; under CFS the leftmost, skipping one that
//!    just yielded as the skip buddy does), switch to it, publish its run
//!    budget for the monitor (classes other than CFS, and RT tasks), and on
//!    return account its run time and act on its request: yield (back in
//!    the queue), park, or exit. A pending `setpriority` /
//!    `sched_setscheduler` is applied there, while the task is off the
//!    queue (dequeue, change, enqueue).
//!
//! # Idle
//! Out of work, the CPU spins for `idle_spin_ns` checking its inbox,
//! stealing from other CPUs' staging deques and watching for being claimed
//! by a CPU that pushes work to it; then it sleeps in the OS until unparked
//! or until its next timer. The spin bound is the price of a wakeup: waking a
//! parked thread on the other vCPU of this VM costs tens of microseconds, so
//! ping-pong traffic between CPUs keeps them spinning instead.

use std::cell::UnsafeCell;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corosensei::CoroutineResult;
use crossbeam_deque::{Steal, Worker as Deque};

use super::monitor::{BUDGET_CFS, BUDGET_NONE};
use super::stack::StackPool;
use super::state::FinishPark;
use super::task::{Coro, Request, Task, TaskRef};
use super::timer::TimerHeap;
use super::{bump, clock, Shared, WorkerShared, BUSY, SLEEPING, SPINNING};
use crate::sched::balance::{MIGRATION_COST_NS, NUMA_IMBALANCE_MIN};
use crate::sched::domains::SdFlags;
use crate::sched::{EnqueueFlags, Policy, RunQueue, SchedClass, TaskEntity};
use crate::trace::EventKind;

/// A worker's private state.
pub(crate) struct WorkerLocal {
    index: usize,
    shared: Arc<Shared>,
    /// `&shared.workers[index]`, resolved once (as `WorkerCell::ws`).
    ws: *const WorkerShared,
    /// The run queue: RT above the runtime's fair class (the current task
    /// is not queued in it).
    pub(crate) rq: RunQueue<TaskRef>,
    /// The runtime's fair class is CFS (the monitor then derives CFS
    /// slices itself; other classes publish a run budget per switch).
    cfs: bool,
    /// The run loop's latest clock reading (for enqueues between tasks).
    now: u64,
    /// New tasks spawned here, stealable by idle CPUs until this CPU next
    /// schedules and takes them into its run queue.
    staging: Deque<TaskRef>,
    timers: TimerHeap,
    /// xorshift state for choosing steal victims.
    rng: u64,
    /// Per CPU: its `inbox_drains`, and the inbox's length, when this CPU
    /// last went through that inbox's whole backlog finding only tasks it
    /// may not run, and gave them back (`u64::MAX`: never). The inbox is
    /// not stolen from again until its owner has drained it since or it
    /// has grown: otherwise idle CPUs would take the same pinned tasks and
    /// hand them back, thousands of times, until the owner next schedules.
    inbox_refused: Box<[(u64, usize)]>,
    /// This CPU's batch of candidate pids: counter values `pid_next..pid_end`.
    pid_next: u64,
    pid_end: u64,
    /// Set by a task that parks to hand the CPU straight to the task it
    /// woke (`park_and_switch_to`); taken when its park completes.
    pub(crate) handoff: Option<super::SwitchTarget>,
    /// A task won by a handoff, already made current on `rq`: the next
    /// task to run, before any pick.
    direct_next: Option<TaskRef>,
    /// A handoff target already won (PARKED -> RUNNABLE) that could not
    /// borrow its waker's scheduling context: the waker's park hands over
    /// to it the ordinary way.
    handoff_won: Option<TaskRef>,
    /// The lender while a scheduling context is lent (see `run_task`):
    /// the parked task whose entity is still `rq`'s current one, charged
    /// for the time the running task (the borrower) runs. Null otherwise.
    /// Code that accounts "the current task" from inside a task (a
    /// wakeup's `update_curr` and preemption check) uses it instead of the
    /// running task.
    lender: *const Task,
    /// A loan the lender made nested (`lend_begin`) that must be settled:
    /// the borrower and how it switched out. Set by the lender just
    /// before it parks; taken by `run_task` when the lender's park
    /// arrives.
    nested_settle: Option<(TaskRef, CoroutineResult<Request, ()>)>,
    /// The task that stopped only for this CPU's own work (`need_service`:
    /// timers, the tick, the inbox, a pull request), not for a resched:
    /// its entity stays `rq`'s current one through the service pass, as a
    /// task interrupted in the kernel stays `curr`, and it runs on
    /// afterwards unless the pass preempts it (see `run_loop`). Wakeups
    /// in the pass are checked against it (`enqueue_wakeup`). The flag is
    /// true for a task whose run goes on, false for a direct switch's
    /// target (`direct_next`) held before it first runs, because the CPU
    /// had work of its own pending when it was handed over.
    held: Option<(TaskRef, bool)>,
    /// The task that ran last here and why it left (0 yield/preempt,
    /// 1 block, 2 exit): the `other`/`arg` of the next switch event.
    last_pid: u64,
    last_reason: u64,
    /// PELT of this queue and the balancer's state (see `executor::lb`).
    pub(crate) lb: super::lb::LbLocal,
    /// Address of a joined task that may still be in this CPU's staging
    /// deque (0: none): when it arrives in the tree this pass, it becomes the
    /// NEXT buddy. Compared, never dereferenced.
    pending_buddy: usize,
    /// Set while a finishing task wakes its joiners: a joiner queued here
    /// becomes the NEXT buddy (see `executor::wake_joiners`).
    pub(crate) buddy_wakeup: bool,
    /// Since the last switch this CPU recorded a trace event, or a task
    /// arrived from another CPU or thread (whose events were stamped by
    /// that one's clock reading): either may be later than the pass's
    /// clock reading, so a traced switch then reads the clock afresh and
    /// comes after them. Otherwise the switch keeps the pass's reading (one
    /// clock read per switch, as untraced).
    pub(crate) trace_fresh: bool,
}

/// A worker's private state plus the shared handle, pinned on its thread.
pub(crate) struct WorkerCell {
    pub(crate) shared: Arc<Shared>,
    index: usize,
    /// `&shared.workers[index]`, resolved once: the switch path reaches
    /// this CPU's shared words a dozen times per switch.
    ws: *const WorkerShared,
    local: UnsafeCell<WorkerLocal>,
    /// The task this CPU runs now (null between tasks); read through
    /// `executor::current_task_ptr`.
    current: std::cell::Cell<*const Task>,
    /// A copy of `current`'s fast task-local word (`TaskBody::fast_local`),
    /// made at every `set_current` and kept equal to it while the task
    /// runs (`Task::set_fast_local`): what `task::LocalKey::with_fast_or`
    /// reads, two dependent loads shorter than through the task.
    current_fast: std::cell::Cell<*const ()>,
}

impl WorkerCell {
    /// The owner-only state.
    ///
    /// # Safety (internal contract)
    /// Only the worker thread calls this, and never while another borrow from
    /// it is alive; the run loop drops its borrow before every `resume`.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) fn local(&self) -> &mut WorkerLocal {
        // SAFETY: see the contract above; all callers are on the owning
        // thread (task code runs on it too, while the loop holds no borrow).
        unsafe { &mut *self.local.get() }
    }

    /// The task this CPU runs now, or null.
    #[inline]
    pub(crate) fn current(&self) -> *const Task {
        self.current.get()
    }

    /// Sets the task this thread runs (the run loop, and the shutdown path
    /// of another runtime cancelling its tasks on this thread).
    #[inline]
    pub(crate) fn set_current(&self, t: *const Task) {
        self.current.set(t);
        let fast = if t.is_null() {
            std::ptr::null()
        } else {
            // SAFETY: a task made current is alive (its runner holds a
            // reference) and has not exited or is exiting on this thread.
            unsafe { (*t).fast_local() }
        };
        self.current_fast.set(fast);
    }

    /// The running task's fast task-local word (see `current_fast`).
    #[inline]
    pub(crate) fn current_fast(&self) -> *const () {
        self.current_fast.get()
    }

    /// Keeps `current_fast` equal to task `t`'s word after `t` changed it,
    /// if `t` runs here.
    #[inline]
    pub(crate) fn fast_local_changed(&self, t: &Task) {
        if std::ptr::eq(self.current.get(), t) {
            self.current_fast.set(t.fast_local());
        }
    }

    #[inline]
    pub(crate) fn worker_shared(&self) -> &WorkerShared {
        // SAFETY: `ws` points into `shared.workers`, a boxed slice that is
        // never reallocated and that `self.shared` keeps alive.
        unsafe { &*self.ws }
    }
}

impl WorkerLocal {
    /// This CPU's number.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The runtime.
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    #[inline]
    fn ws(&self) -> &WorkerShared {
        // SAFETY: as in `WorkerCell::worker_shared`: into `shared.workers`,
        // never reallocated, kept alive by `self.shared`.
        unsafe { &*self.ws }
    }

    /// True when nothing but the running task is runnable here.
    #[inline]
    pub(crate) fn runs_only_current(&self) -> bool {
        self.rq.nr_queued() == 0 && self.staging.is_empty() && self.ws().inbox.is_empty()
    }

    /// Allocates a pid from this CPU's batch.
    pub(crate) fn alloc_pid(&mut self) -> std::io::Result<crate::Pid> {
        // Disjoint field borrows: no clone of the runtime's `Arc` per spawn.
        let WorkerLocal {
            shared,
            pid_next,
            pid_end,
            ..
        } = self;
        shared.alloc_pid_from(pid_next, pid_end)
    }

    /// Arms a timer on this CPU.
    pub(crate) fn arm_timer(&mut self, deadline: u64, task: TaskRef, gen: u64) {
        self.timers.arm(deadline, task, gen);
        self.publish_next_timer();
        // This CPU stays busy (the arming task will park, others are
        // queued): only the monitor can interrupt them when the timer is
        // due. (An idle CPU sleeps until its next timer by itself.)
        if self.rq.nr_running() > 1 {
            self.shared.monitor.timer_armed(deadline);
        }
    }

    /// Inserts `task` (whose entity is `ent`) into this CPU's tree and
    /// records that it is there (`Task::rq_cpu`). Every insertion goes
    /// through here or [`rq_put_prev`](Self::rq_put_prev), and every
    /// removal of a queued task through
    /// [`rq_pick_next`](Self::rq_pick_next) or
    /// [`rq_pop_coldest`](Self::rq_pop_coldest), so that the record is
    /// always right.
    pub(super) fn rq_enqueue(
        &mut self,
        ent: &mut TaskEntity,
        task: TaskRef,
        flags: EnqueueFlags,
        now: u64,
    ) {
        task.mark_queued(self.index);
        self.rq.enqueue(ent, task, flags, now);
    }

    /// Puts the task that just ran back into this CPU's tree (see
    /// [`rq_enqueue`](Self::rq_enqueue)).
    #[inline]
    fn rq_put_prev(&mut self, ent: &mut TaskEntity, task: TaskRef) {
        task.mark_queued(self.index);
        self.rq.put_prev(ent, task);
    }

    /// Picks the next task to run out of this CPU's tree (see
    /// [`rq_enqueue`](Self::rq_enqueue)).
    #[inline]
    fn rq_pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<TaskRef> {
        let t = self.rq.pick_next(skip)?;
        t.mark_dequeued();
        Some(t)
    }

    /// Takes the coldest queued task out of this CPU's tree (see
    /// [`rq_enqueue`](Self::rq_enqueue)).
    pub(super) fn rq_pop_coldest(&mut self) -> Option<TaskRef> {
        let t = self.rq.pop_coldest()?;
        t.mark_dequeued();
        Some(t)
    }

    /// Places and queues a task that was woken on this CPU; raises
    /// `need_resched` if it should preempt the running task (CFS wakeup
    /// preemption).
    pub(crate) fn enqueue_wakeup(&mut self, task: TaskRef) {
        if !task.allowed_on(self.index) {
            return self.forward(task);
        }
        // SAFETY: the waker won PARKED -> RUNNABLE (or the task came out of
        // our inbox), so this worker owns the task now.
        let sp = unsafe { task.sched() };
        task.apply_sched_change(sp);
        let mut cur = super::current_task_ptr();
        let now = if cur.is_null() {
            if let Some((h, _)) = &self.held {
                // A service pass: the held task is the current one.
                cur = Arc::as_ptr(h);
            }
            self.now
        } else {
            if !self.lender.is_null() {
                // A borrower runs: the lender's entity is the current one.
                cur = self.lender;
            }
            clock::now_ns()
        };
        if sp.vruntime_relative {
            self.bind_here(sp, false, false, now);
        } else {
            // Asleep on this queue: decay its series over the sleep.
            sp.avg.update(now, 0, 0, 0, sp.ent.se.load.weight);
        }
        let wakee: *const TaskEntity = &sp.ent;
        self.rq_enqueue(&mut sp.ent, task, EnqueueFlags::WAKEUP, now);
        if self.buddy_wakeup {
            // SAFETY: `wakee` is the entity of the task just queued here.
            self.rq.set_next_buddy(unsafe { &*wakee });
        }
        bump(&self.ws().counters.wakeups_local, 1);
        if !cur.is_null() {
            // SAFETY: the running task is owned by this worker; its code is
            // inside this call and does not touch its entity concurrently.
            // `wakee` points into a task we just queued here (still owned).
            unsafe {
                let csp = (*cur).sched();
                self.rq.update_curr(&mut csp.ent, now);
                if self.rq.check_preempt_wakeup(&csp.ent, &*wakee) {
                    self.ws().need_resched.store(true, Ordering::Relaxed);
                } else if !self.cfs || csp.ent.policy.is_rt() {
                    // The queue changed: so may the current task's budget.
                    self.publish_budget(&csp.ent, now);
                }
            }
        }
    }

    /// Queues a task that was just spawned on this CPU: onto the stealable
    /// staging deque, where spinning idle CPUs take it in batches; a CPU
    /// asleep in the OS is woken with the task (fork balancing), since it
    /// would not look.
    pub(crate) fn enqueue_new(&mut self, task: TaskRef) {
        let allowed_here = task.allowed_on(self.index);
        let cpu = if allowed_here {
            self.shared
                .claim_idle_cpu_in(self.index + 1, Some(&task.allowed), true)
        } else {
            self.shared
                .claim_idle_cpu(self.index + 1, Some(&task.allowed))
        };
        if let Some(cpu) = cpu {
            bump(&self.ws().counters.migrations_out, 1);
            send_to_claimed(&self.shared, cpu, task);
        } else if allowed_here {
            task.cpu.store(self.index, Ordering::Relaxed);
            // A new RT task preempts a fair parent at once (kernel
            // wake_up_new_task -> check_preempt_curr); the spawn path's
            // maybe_yield then takes it from staging.
            if task.policy().is_rt() {
                self.ws().need_resched.store(true, Ordering::Relaxed);
            }
            self.staging.push(task);
        } else {
            self.forward(task);
        }
    }

    /// Sends a task this CPU may not run to the first CPU it may.
    fn forward(&mut self, task: TaskRef) {
        let cpu = task.allowed.first();
        // SAFETY: we own the task (it was handed to us to enqueue).
        let sp = unsafe { task.sched() };
        let bound_to = task.cpu.load(Ordering::Relaxed);
        if !sp.vruntime_relative && bound_to != self.index && bound_to < self.shared.nr_cpus() {
            // Still bound to another CPU's queue (taken from that CPU's
            // inbox): detach it there, as a waker moving it would.
            super::lb::wake_migrate(&self.shared, sp, bound_to, cpu);
        } else {
            self.unbind(sp);
        }
        self.shared.send_to(cpu, task);
    }

    /// Sends a task just picked from this queue to a CPU its mask allows.
    fn migrate_picked(&mut self, task: TaskRef) {
        // SAFETY: we picked it from our tree; we own it.
        let sp = unsafe { task.sched() };
        // A picked task is the queue's current one: make it so, then
        // dequeue it as such.
        self.rq.set_next(&mut sp.ent, self.now);
        self.rq.migrate_out(&mut sp.ent);
        self.rq.dequeue(&mut sp.ent);
        self.lb.avg.detach(&sp.avg, sp.ent.se.load.weight);
        sp.vruntime_relative = true;
        bump(&self.ws().counters.migrations_out, 1);
        let cpu = task.allowed.first();
        self.shared.send_to(cpu, task);
    }

    /// Enqueues a task taken from the inbox, staging or a steal.
    fn enqueue_arrived(&mut self, task: TaskRef) {
        self.trace_fresh = true;
        // SAFETY: the task arrived through a queue hand-off; we own it.
        let landing = super::lb::Landing::take(unsafe { task.sched() });
        if !task.allowed_on(self.index) {
            if let Some(l) = landing {
                l.done(&self.shared);
            }
            return self.forward(task);
        }
        // SAFETY: the task arrived through a queue hand-off; we own it.
        let sp = unsafe { task.sched() };
        task.apply_sched_change(sp);
        let from = task.cpu.swap(self.index, Ordering::Relaxed);
        let flags = if sp.entry.is_some() {
            // New task: START_DEBIT placement.
            EnqueueFlags::INITIAL
        } else if sp.vruntime_relative {
            // Runnable task pushed here by a busy CPU: keep its lag.
            EnqueueFlags::NONE
        } else {
            // Woken by another thread: on its own CPU, or stolen from
            // another CPU's inbox (then still bound to that queue).
            if from != self.index && from < self.shared.nr_cpus() {
                super::lb::wake_migrate(&self.shared, sp, from, self.index);
            }
            EnqueueFlags::WAKEUP
        };
        if sp.vruntime_relative {
            let initial = flags == EnqueueFlags::INITIAL;
            self.bind_here(sp, initial, flags == EnqueueFlags::NONE, self.now);
            if !initial {
                self.count_arrival(from);
                bump(&task.nr_migrations, 1);
                if let Some(tr) = &self.shared.trace {
                    self.trace_push(
                        tr,
                        clock::now_ns(),
                        EventKind::Migrate,
                        task.pid.0,
                        from as u64,
                        self.index as u64,
                    );
                }
            }
        } else {
            // Woken on its own CPU by another thread: decay over the sleep.
            sp.avg.update(self.now, 0, 0, 0, sp.ent.se.load.weight);
        }
        let buddy = self.pending_buddy == Arc::as_ptr(&task) as usize;
        let ent: *const TaskEntity = &sp.ent;
        self.rq_enqueue(&mut sp.ent, task, flags, self.now);
        if buddy {
            self.pending_buddy = 0;
            // SAFETY: `ent` is the entity of the task just queued here.
            self.rq.set_next_buddy(unsafe { &*ent });
        }
        if let Some(l) = landing {
            // `bind_here` published the averages with it; now the count,
            // before the in-flight words let go of it (this worker's
            // thread may wait for a core before its next switch publishes).
            self.publish();
            l.done(&self.shared);
        }
    }

    /// A directed yield (kernel `yield_to()`): the task parking here is
    /// joining `target`, so `target` should run next if it waits in this
    /// CPU's tree, or arrives there from the staging deque this pass.
    fn yield_to(&mut self, target: &Task) {
        if target.queued_on(self.index) {
            // SAFETY: only this worker marks and unmarks tasks in its own
            // tree (`Task::rq_cpu`), and it is here: the task is queued in
            // our tree, so we own it.
            let sp = unsafe { target.sched() };
            self.rq.set_next_buddy(&sp.ent);
        } else if target.cpu.load(Ordering::Relaxed) == self.index {
            self.pending_buddy = target as *const Task as usize;
        }
    }

    fn fire_timers(&mut self, now: u64) {
        let mut fired = false;
        while let Some(t) = self.timers.pop_due(now) {
            fired = true;
            if t.task.fire_timeout(t.gen) {
                super::wake_task(t.task);
            }
        }
        if fired {
            self.publish_next_timer();
            // The monitor, which flagged the timers just fired, chose its
            // sleep before it could see the next one: tell it, if this CPU
            // goes on running tasks (as `arm_timer` does).
            let next = self.ws().next_timer.load(Ordering::Relaxed);
            if next != u64::MAX && self.rq.nr_running() > 0 {
                self.shared.monitor.timer_armed(next);
            }
        }
    }

    /// Publishes the earliest armed timer: the monitor interrupts the
    /// running task when it is due (the timer interrupt's preemption
    /// point). Kept current at arm and fire time; a cancelled wait's entry
    /// stays until due, costing at most one needless switch.
    fn publish_next_timer(&mut self) {
        self.timers.purge_ended();
        let next = self.timers.next_deadline().unwrap_or(u64::MAX);
        self.ws().next_timer.store(next, Ordering::Relaxed);
    }

    fn pull_inbox(&mut self) {
        // `steal` issues a SeqCst fence even on an empty queue; two loads
        // decide the common case.
        if self.ws().inbox.is_empty() {
            return;
        }
        loop {
            match self.ws().inbox.steal() {
                Steal::Success(t) => self.enqueue_arrived(t),
                Steal::Empty => break,
                Steal::Retry => continue,
            }
        }
        // Only this worker writes it.
        let drains = &self.ws().inbox_drains;
        drains.store(
            drains.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    fn pull_staging(&mut self) {
        while let Some(t) = self.staging.pop() {
            self.enqueue_arrived(t);
        }
    }

    /// Whether the rightmost queued task may move to `cpu`: allowed there and
    /// not cache-hot (fair.c `task_hot`: it last ran at least
    /// `sched_migration_cost` ago; a task that never ran is cold).
    fn rightmost_movable(&self, cpu: Option<usize>, now: u64) -> bool {
        let migration_cost = self.shared.tunables.sched_migration_cost_ns;
        self.rq.coldest().is_some_and(|t| {
            // SAFETY: the task is in our tree; we own it (shared read).
            let se = unsafe { &t.sched().ent.se };
            cpu.is_none_or(|c| t.allowed_on(c))
                && now.saturating_sub(se.exec_start) >= migration_cost
        })
    }

    /// Pushes the coldest half of the queue to an idle CPU, if any, skipping
    /// cache-hot tasks (so that tasks handing the CPU back and forth, like a
    /// ping-pong pair, are not split). Returns whether anything moved.
    fn balance_push(&mut self, now: u64) -> bool {
        if self.rq.nr_queued() < 2
            || self.shared.nr_idle.load(Ordering::Relaxed) == 0
            || !self.rightmost_movable(None, now)
        {
            return false;
        }
        // The nearest idle CPU, domain by domain; across NUMA nodes only
        // for a backlog the kernel would not forgive either
        // (NUMA_IMBALANCE_MIN: keep NUMA-level moves rare).
        let queued = self.rq.nr_queued() as u64;
        let mut claimed = None;
        let shared = self.shared.clone();
        let doms = &shared.domains[self.index];
        self.for_each_near(self.index, |lvl, cpu| {
            let numa = doms
                .domains
                .get(lvl)
                .is_some_and(|d| d.flags.contains(SdFlags::NUMA));
            if numa && queued <= NUMA_IMBALANCE_MIN + 1 {
                return true;
            }
            if cpu != self.index && shared.try_claim(cpu, false) {
                claimed = Some((lvl, cpu));
                return true;
            }
            false
        });
        let Some((lvl, cpu)) = claimed else {
            return false;
        };
        let mut moved = 0;
        // Half the backlog, at most `sched_nr_migrate` tasks per pass (as
        // `detach_tasks` bounds a pull): the rest follows at the next
        // turns if the other CPU is still idle by then.
        let want = (self.rq.nr_queued() / 2).min(crate::sched::balance::SCHED_NR_MIGRATE);
        while moved < want && self.rightmost_movable(Some(cpu), now) {
            let Some(task) = self.rq_pop_coldest() else {
                break;
            };
            // SAFETY: the task was in our tree; we own it.
            let sp = unsafe { task.sched() };
            sp.ent.se.on_rq = false;
            self.unbind(sp);
            super::lb::carry_to(&shared, cpu, task, sp);
            moved += 1;
        }
        if moved > 0 {
            self.publish_avg();
            self.publish();
        }
        bump(&self.ws().counters.migrations_out, moved as u64);
        bump(&self.ws().counters.lb[lvl].migrations_out, moved as u64);
        shared.workers[cpu].counters.lb[lvl]
            .pulled
            .fetch_add(moved as u64, Ordering::Relaxed);
        shared.workers[cpu].unpark();
        moved > 0
    }

    /// Tries to steal new tasks from another CPU's staging deque, nearest
    /// domain first.
    fn steal(&mut self) -> bool {
        if self.shared.nr_cpus() < 2 {
            return false;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let start = self.rng as usize;
        let shared = &self.shared;
        let mut got = None;
        self.for_each_near(start, |lvl, victim| {
            if victim == self.index {
                return false;
            }
            loop {
                match shared.workers[victim]
                    .stealer
                    .steal_batch_and_pop(&self.staging)
                {
                    Steal::Success(t) => {
                        got = Some((lvl, t));
                        return true;
                    }
                    Steal::Empty => return false,
                    Steal::Retry => continue,
                }
            }
        });
        if got.is_none() {
            // Then a woken task waiting in a busy CPU's inbox (the other
            // half of the lock-free path: recently woken tasks). It may
            // still be bound to that CPU's queue; `enqueue_arrived` unbinds
            // it from there.
            let me = self.index;
            let refused = &mut self.inbox_refused;
            super::lb::for_each_near_in(&shared.domains[me], start, |lvl, victim| {
                let w = &shared.workers[victim];
                // Only from a backlog: a single task there is the
                // victim's next pick (and may be pinned to it).
                let backlog = w.inbox.len();
                // Read first: a drain during this pass makes the refusal
                // below stale at once.
                let drains = w.inbox_drains.load(Ordering::Relaxed);
                if victim == me
                    || w.idle.load(Ordering::Relaxed) != BUSY
                    || backlog < 2
                    || (refused[victim].0 == drains && backlog <= refused[victim].1)
                {
                    return false;
                }
                let mut looked = 0;
                loop {
                    match w.inbox.steal() {
                        Steal::Success(t) if t.allowed_on(me) => {
                            got = Some((lvl, t));
                            return true;
                        }
                        Steal::Success(t) => {
                            // Not ours to run (pinned there, most often):
                            // back to the inbox it came from, untouched
                            // (it may still be bound to that queue). Once
                            // the whole backlog was such, leave that inbox
                            // alone until its owner has drained it.
                            shared.send_to(victim, t);
                            looked += 1;
                            if looked >= backlog {
                                refused[victim] = (drains, backlog);
                                return false;
                            }
                        }
                        Steal::Empty => return false,
                        Steal::Retry => continue,
                    }
                }
            });
        }
        let Some((lvl, t)) = got else {
            return false;
        };
        bump(&self.ws().counters.steals, 1);
        bump(&self.ws().counters.lb[lvl].steals, 1);
        self.enqueue_arrived(t);
        self.pull_staging();
        true
    }

    /// Publishes the running task's run budget for the monitor (classes
    /// other than CFS, and RT tasks): the run time after which the tick
    /// should preempt it.
    fn publish_budget(&self, curr: &TaskEntity, now: u64) {
        let ws = self.ws();
        let budget = match self.rq.preempt_budget(curr) {
            Some(b) => now
                .saturating_sub(ws.run_start.load(Ordering::Relaxed))
                .saturating_add(b)
                .min(BUDGET_NONE - 1),
            None => BUDGET_NONE,
        };
        ws.run_budget.store(budget, Ordering::Relaxed);
    }

    /// Prepares a task spawned by the current task on this CPU from its
    /// parent's class state (the class's `task_fork`: O(1) splits the
    /// timeslice, O(N) halves the counter, EEVDF starts at lag 0), and
    /// unbinds it from this queue (it may start on another CPU).
    pub(crate) fn fork_sched(&mut self, parent: &Task, child: &Task) {
        if self.cfs {
            // CFS keeps the executor's own placement: a child starts at
            // relative vruntime 0, then START_DEBIT from the queue's
            // min_vruntime. Inheriting the parent's vruntime as
            // task_fork_fair() does would add the parent's own START_DEBIT
            // (up to a whole period when it ran alone) and change how
            // yields pass between a parent and its children, which the
            // executor's balancing was tuned for (runtime_migration's
            // pinned-task test). The vslice of that START_DEBIT is the
            // fork's, though, as in task_fork_fair(): computed now, with
            // the parent running and the children it forked before (still
            // in staging) counted as queued. Computed at the enqueue, it
            // saw whatever the queue held by then: a pair spawned back to
            // back by a parent that then blocked in `join` started 3 ms
            // apart instead of the kernel's 1 ms (a wakeup granularity),
            // and the one behind had its yields refused for ~10,000 round
            // trips.
            // SAFETY: `child` is new and seen by nobody else yet.
            let cp = unsafe { child.sched() };
            self.rq.set_fork_vslice(&mut cp.ent, self.staging.len());
            let _ = parent;
            return;
        }
        // SAFETY: `parent` is the task running on this CPU (its own code
        // calls this, while the worker holds no borrow of its entity);
        // `child` is new and seen by nobody else yet.
        let (pp, cp) = unsafe { (parent.sched(), child.sched()) };
        self.rq.task_fork(Some(&mut pp.ent), &mut cp.ent);
        self.rq.migrate_out(&mut cp.ent);
        cp.vruntime_relative = true;
    }

    /// Re-queues the switched-out current task whose policy or nice value
    /// changed: dequeue, apply, enqueue (kernel `__sched_setscheduler()`).
    fn requeue_changed(&mut self, task: TaskRef, now: u64) {
        // SAFETY: the task just switched out on this CPU; we own it.
        let sp = unsafe { task.sched() };
        self.rq.dequeue(&mut sp.ent);
        let was_rt = sp.ent.policy.is_rt();
        task.apply_sched_change(sp);
        // Back from RT, a fair class places it as a waking task (its fair
        // state is stale); within a class it keeps its position.
        let flags = if was_rt && !sp.ent.policy.is_rt() {
            EnqueueFlags::WAKEUP
        } else {
            EnqueueFlags::NONE
        };
        self.rq_enqueue(&mut sp.ent, task, flags, now);
    }

    /// Publishes this CPU's `nr_running` (queued + running + staged) and
    /// `min_vruntime` for other CPUs' lockless reads.
    pub(crate) fn publish(&self) {
        let ws = self.ws();
        ws.nr_running
            .store(self.rq.nr_running() + self.staging.len(), Ordering::Relaxed);
        ws.min_vruntime
            .store(self.rq.min_vruntime(), Ordering::Relaxed);
    }
}

/// Sends a task to a CPU this thread claimed from idle, and wakes it.
pub(crate) fn send_to_claimed(shared: &Shared, cpu: usize, task: TaskRef) {
    // SAFETY: the caller owns the (new or runnable) task it hands over.
    let sp = unsafe { task.sched() };
    debug_assert!(sp.vruntime_relative || sp.entry.is_some());
    sp.vruntime_relative = true;
    task.cpu.store(cpu, Ordering::Relaxed);
    let w = &shared.workers[cpu];
    w.inbox.push(task);
    w.unpark();
}

/// Body of a worker thread.
pub(crate) fn run_worker(shared: Arc<Shared>, index: usize, staging: Deque<TaskRef>) {
    // An idle CPU sleeps until its next timer: on time, not 50 µs late.
    super::monitor::precise_timer_sleeps();
    let levels = shared.domains[index].domains.len();
    let ws: *const WorkerShared = &*shared.workers[index];
    let cell = WorkerCell {
        shared: shared.clone(),
        index,
        ws,
        current: std::cell::Cell::new(std::ptr::null()),
        current_fast: std::cell::Cell::new(std::ptr::null()),
        local: UnsafeCell::new(WorkerLocal {
            index,
            ws,
            rq: RunQueue::new(shared.config.policy, shared.nr_cpus()),
            cfs: shared.config.policy == Policy::Cfs,
            now: 0,
            inbox_refused: vec![(u64::MAX, 0); shared.nr_cpus()].into_boxed_slice(),
            shared,
            staging,
            timers: TimerHeap::default(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
            pid_next: 0,
            pid_end: 0,
            handoff: None,
            direct_next: None,
            handoff_won: None,
            lender: std::ptr::null(),
            nested_settle: None,
            held: None,
            last_pid: 0,
            last_reason: 0,
            lb: super::lb::LbLocal::new(levels, clock::now_ns()),
            pending_buddy: 0,
            buddy_wakeup: false,
            trace_fresh: false,
        }),
    };
    super::set_current_worker(&cell);
    cell.run_loop();
    cell.drain_on_shutdown();
    super::set_current_worker(std::ptr::null());
}

impl WorkerCell {
    fn run_loop(&self) {
        let ws = self.worker_shared();
        let mut skip: Option<*const Task> = None;
        // One clock read per switch: the time a task switched out is the
        // time the next one switches in.
        let mut now = clock::now_ns();
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                if let Some((h, ran)) = self.local().held.take() {
                    self.local().preempt_held(h, ran, now);
                }
                break;
            }
            let picked = {
                let l = self.local();
                if let Some(t) = l.direct_next.take() {
                    if !ws.needs_scheduler() {
                        // A direct process switch: the woken task is
                        // already current; run it before anything else
                        // (its waker's remaining slice), as seL4's
                        // fastpath does.
                        (skip, now) = self.run_task(t, now, false);
                        continue;
                    }
                    // The CPU has work of its own pending: the woken task
                    // stays current through this pass, then runs.
                    l.held = Some((t, false));
                }
                l.now = now;
                l.fire_timers(now);
                l.pull_inbox();
                l.pull_staging();
                if ws.pull_request.load(Ordering::Relaxed) != 0 {
                    l.serve_pull(now);
                    skip = None;
                }
                if now >= l.lb.next_balance {
                    l.periodic_balance(now);
                }
                if l.balance_push(now) {
                    skip = None;
                }
                if let Some((h, ran)) = l.held.take() {
                    // The end of an interrupt: the task it stopped runs on
                    // unless the pass raised need_resched (a wakeup that
                    // preempts it) or the tick's check says its turn is
                    // over (`scheduler_tick` -> `check_preempt_tick`).
                    // SAFETY: the held task is this CPU's current one; we
                    // own it.
                    let sp = unsafe { h.sched() };
                    if !ws.need_resched.load(Ordering::Relaxed) && !l.rq.check_preempt_tick(&sp.ent)
                    {
                        (skip, now) = self.run_task(h, now, ran);
                        continue;
                    }
                    l.preempt_held(h, ran, now);
                }
                let skip_se = skip.map(|t| {
                    // SAFETY: a task that yielded was put back into our tree
                    // and nothing took it out since (a push clears `skip`).
                    unsafe { &(*t).sched().ent as *const TaskEntity }
                });
                l.pending_buddy = 0;
                // SAFETY: see above; the entity outlives this call.
                l.rq_pick_next(skip_se.map(|p| unsafe { &*p }))
            };
            skip = None;
            match picked {
                Some(task) if !task.allowed_on(self.index) => {
                    // Its mask changed while it waited here: move it.
                    self.local().migrate_picked(task);
                }
                Some(task) => (skip, now) = self.run_task(task, now, false),
                None => {
                    self.idle(now);
                    let t = clock::now_ns();
                    let l = self.local();
                    l.lb.note_idle(t.saturating_sub(now));
                    // The idle time, in the queue's series.
                    l.update_rq_avg(t, false);
                    now = t;
                }
            }
        }
        ws.curr_pid.store(0, Ordering::Relaxed);
    }

    /// Runs one task until it switches out. Returns the task to skip at the
    /// next pick if it yielded, and the clock time it switched out.
    /// `resumed`: the task is the one a service pass held (`held`): it is
    /// still `rq`'s current entity and its run goes on (no switch: its
    /// slice, switch count and trace carry on).
    fn run_task(&self, task: TaskRef, now: u64, resumed: bool) -> (Option<*const Task>, u64) {
        let ws = self.worker_shared();
        // This run's start (also `run_start`'s unless resumed).
        let start = now;
        {
            let l = self.local();
            // SAFETY: picked from our tree, or held by this CPU: we own it.
            let sp = unsafe { task.sched() };
            if !resumed {
                l.rq.set_next(&mut sp.ent, now);
                // PELT: it waited queued until now.
                sp.avg.update(now, 1, 1, 0, sp.ent.se.load.weight);
                ws.run_start.store(now, Ordering::Relaxed);
                // The monitor derives the slice (period x weight / load)
                // from these, keeping a division off the switch path.
                ws.curr_weight
                    .store(sp.ent.se.load.weight, Ordering::Relaxed);
            }
            // A resumed task's pass may have queued tasks: the slice the
            // monitor derives (and other classes' budgets) see the queue as
            // it is now.
            l.publish();
            ws.curr_pid.store(task.pid.0, Ordering::Relaxed);
            ws.serviced_at.store(now, Ordering::Relaxed);
            ws.rq_load.store(l.rq.load_weight(), Ordering::Relaxed);
            if !l.cfs || sp.ent.policy.is_rt() {
                l.publish_budget(&sp.ent, now);
            } else if !resumed {
                ws.run_budget.store(BUDGET_CFS, Ordering::Relaxed);
            }
            ws.need_resched.store(false, Ordering::Relaxed);
            ws.need_service.store(false, Ordering::Relaxed);
            // A switch (a resumed run carries its switch count and trace
            // on).
            if !resumed {
                bump(&ws.switch_seq, 1);
                task.cpu.store(self.index, Ordering::Relaxed);
                bump(&task.nr_switches, 1);
                let queued = task.queued_at.load(Ordering::Relaxed);
                if queued != 0 {
                    bump(&task.wait_sum_ns, now.saturating_sub(queued));
                    task.queued_at.store(0, Ordering::Relaxed);
                }
                if let Some(tr) = &self.shared.trace {
                    // `now` is when the previous task switched out; events
                    // recorded since (timers fired, wakeups pulled or handed
                    // over in this pass) must come before this switch.
                    let ts = if std::mem::take(&mut l.trace_fresh) {
                        clock::now_ns()
                    } else {
                        now
                    };
                    l.trace_push(
                        tr,
                        ts,
                        EventKind::Switch,
                        task.pid.0,
                        l.last_pid,
                        l.last_reason,
                    );
                }
                // SAFETY: we own the task; the coroutine slot is ours to fill.
                let coro = unsafe { &mut *task.coro_slot() };
                if coro.is_none() {
                    match start_coroutine(&task, sp) {
                        Some(c) => *coro = Some(c),
                        None => {
                            // No stack could be had: the body is dropped unrun
                            // (its join handle reports cancellation).
                            drop(sp.entry.take());
                            l.rq.dequeue(&mut sp.ent);
                            self.shared.table.remove(task.pid);
                            // SAFETY: as at exit: owned, off the queue,
                            // never started; `sp` is not used again.
                            unsafe { task.free_body() };
                            return (None, now);
                        }
                    }
                }
            }
        }
        self.set_current(&*task);
        // A `tracing` span per run of the task, at debug level: what the
        // task logs is inside it, and a subscriber sees each run. Disabled
        // (the default), this is one level check; the fields are not
        // evaluated.
        let span = tracing::debug_span!("task", pid = task.pid.0, name = task.name_or_dash());
        let entered = span.enter();
        // SAFETY: we own the task, the slot holds a live coroutine (filled
        // above), and no other borrow of it exists: the task's own code never
        // touches its coroutine slot.
        let mut result = unsafe { resume(&task) };
        // Lent scheduling contexts (see `try_lend`): while `borrower` runs,
        // `task` stays the accounted one.
        let mut borrower: Option<TaskRef> = None;
        loop {
            match borrower.take() {
                None if self.local().nested_settle.is_some() => {
                    // The task lent its context nested (`lend_begin`) and
                    // parked to have the loan settled: its borrower's
                    // switch-out is the one to process.
                    let (b, r) = self.local().nested_settle.take().expect("checked");
                    borrower = Some(b);
                    result = r;
                    break;
                }
                None => match self.try_lend(&task, &result) {
                    Some(b) => {
                        let l = self.local();
                        l.lender = Arc::as_ptr(&task);
                        if let Some(tr) = &self.shared.trace {
                            // The lender blocked (arg 1); the borrower runs.
                            let ts = clock::now_ns();
                            l.trace_push(tr, ts, EventKind::Switch, b.pid.0, task.pid.0, 1);
                        }
                        ws.curr_pid.store(b.pid.0, Ordering::Relaxed);
                        bump(&b.nr_switches, 1);
                        self.set_current(&*b);
                        // SAFETY: won PARKED -> RUNNABLE: we own `b`, whose
                        // coroutine is suspended in its park (checked).
                        result = unsafe { resume(&b) };
                        borrower = Some(b);
                    }
                    None => break,
                },
                Some(b) => match self.end_loan(&task, b, &result) {
                    Ok(bpid) => {
                        if let Some(tr) = &self.shared.trace {
                            // Woken by the borrower's handoff, which then
                            // blocked.
                            super::trace_wakeup(&task);
                            let ts = clock::now_ns();
                            self.local()
                                .trace_push(tr, ts, EventKind::Switch, task.pid.0, bpid, 1);
                        }
                        ws.curr_pid.store(task.pid.0, Ordering::Relaxed);
                        bump(&task.nr_switches, 1);
                        self.set_current(&*task);
                        // SAFETY: as for the first resume: we own `task`
                        // again (its park was cancelled).
                        result = unsafe { resume(&task) };
                    }
                    Err(b) => {
                        borrower = Some(b);
                        break;
                    }
                },
            }
        }
        drop(entered);
        self.set_current(std::ptr::null());
        ws.curr_pid.store(0, Ordering::Relaxed);
        let now = clock::now_ns();
        let task = match borrower {
            // The borrower took a path of its own: it becomes the
            // accounted task from here, the lender parks.
            Some(b) => self.settle_loan(task, b, now),
            None => task,
        };
        let l = self.local();
        // SAFETY: the task switched out; we own it again.
        let sp = unsafe { task.sched() };
        l.charge_run(&task, sp, now);
        // The queue ran it (still counted).
        l.update_rq_avg(now, true);
        bump(&ws.counters.busy_ns, now.saturating_sub(start));
        let hold = matches!(result, CoroutineResult::Yield(Request::Preempt)) && l.may_hold(&task);
        if !hold {
            l.last_pid = task.pid.0;
            bump(&ws.counters.switches, 1);
        }
        match result {
            CoroutineResult::Yield(req @ (Request::Yield | Request::YieldBlocking)) => {
                bump(&ws.counters.voluntary_switches, 1);
                l.last_reason = 0;
                task.queued_at.store(now, Ordering::Relaxed);
                if task.sched_dirty.load(Ordering::Relaxed) {
                    l.requeue_changed(task, now);
                    return (None, now);
                }
                let p: *const Task = &*task;
                if req == Request::YieldBlocking {
                    l.rq.yield_blocking(&mut sp.ent);
                } else {
                    l.rq.yield_task(&mut sp.ent);
                }
                l.rq_put_prev(&mut sp.ent, task);
                (Some(p), now)
            }
            CoroutineResult::Yield(Request::Preempt) => {
                if hold {
                    // Stopped for the CPU's own work only: it stays
                    // current through the service pass (`held`).
                    l.held = Some((task, true));
                } else {
                    l.put_preempted(task, now);
                }
                (None, now)
            }
            CoroutineResult::Yield(Request::Park) => {
                bump(&ws.counters.voluntary_switches, 1);
                bump(&ws.counters.parks, 1);
                l.last_reason = 1;
                l.rq.dequeue(&mut sp.ent);
                task.apply_sched_change(sp);
                // SAFETY: the task just parked here: we own it, and it is
                // alive.
                let target = unsafe { task.join_target() }.get();
                if !target.is_null() {
                    // SAFETY: the joiner set it inside `JoinHandle::join`,
                    // whose handle keeps the target alive; the joiner cannot
                    // leave that call before `finish_park` below.
                    l.yield_to(unsafe { &*target });
                }
                // Before `finish_park`: until then the parking task cannot
                // run anywhere, so a target it only borrows stays alive.
                if let Some(won) = l.handoff_won.take() {
                    l.take_won_handoff(won, now);
                } else if let Some(target) = l.handoff.take() {
                    l.take_handoff(target, now);
                }
                self.complete_park(task, false);
                (None, now)
            }
            CoroutineResult::Return(()) => {
                l.rq.dequeue(&mut sp.ent);
                // Its averages leave with it (`remove_entity_load_avg`).
                l.lb.avg.detach(&sp.avg, sp.ent.se.load.weight);
                // SAFETY: the coroutine finished; we own the slot.
                let coro = unsafe { (*task.coro_slot()).take() };
                if let Some(c) = coro {
                    let stack = c.into_stack();
                    stack.clear_owner();
                    StackPool::global().release(stack);
                }
                bump(&ws.counters.tasks_exited, 1);
                l.last_reason = 2;
                tracing::debug!(
                    pid = task.pid.0,
                    name = task.name_or_dash(),
                    "greenos: exit"
                );
                if let Some(tr) = &self.shared.trace {
                    l.trace_push(tr, now, EventKind::Exit, task.pid.0, 0, 0);
                }
                self.shared.table.remove(task.pid);
                // The zombie keeps its control block only (until joined).
                // SAFETY: we own the exited task; it is off the queue, its
                // coroutine was taken above, and `sp` is not used again.
                unsafe { task.free_body() };
                (None, now)
            }
        }
    }

    /// Lends the scheduling context of `task`, which just parked handing
    /// its CPU to another task (`park_and_switch_to`, the IPC direct
    /// process switch), to that task: seL4 MCS's scheduling-context
    /// donation and LRPC's "the server runs on the caller's time". The
    /// borrower runs at once without any scheduler work: `task`'s entity
    /// stays `rq`'s current one and is charged for everything the borrower
    /// runs; `task`'s park is left in progress (not `PARKED`), so a wakeup of
    /// it only sets NOTIFIED and nobody else can take it over. The loan
    /// ends in [`end_loan`](Self::end_loan) (the borrower hands the CPU
    /// straight back: `task` resumes, no scheduler work either) or in
    /// [`settle_loan`](Self::settle_loan) (anything else: the books are
    /// made as if the borrower had been switched to the ordinary way).
    ///
    /// Returns the borrower (won PARKED -> RUNNABLE) if all of these hold:
    /// the handoff is a call (`SwitchTarget::lend`; a reply only ends a
    /// loan), no preemption and no work of the CPU's own is pending
    /// (`needs_scheduler`: then the scheduler must run), the lender may lend
    /// ([`may_lend`](WorkerLocal::may_lend): CFS, no RT task queued,
    /// neither task RT, the lender not joining, not shutting down), and the
    /// borrower may borrow ([`placed_here`](WorkerLocal::placed_here) and
    /// [`may_borrow`](WorkerLocal::may_borrow): parked on this CPU, bound
    /// to this queue and allowed here, seL4 fastpath rule 10). A target
    /// won that may not borrow goes to `handoff_won` for the ordinary
    /// direct switch.
    fn try_lend(&self, task: &TaskRef, result: &CoroutineResult<Request, ()>) -> Option<TaskRef> {
        if !matches!(result, CoroutineResult::Yield(Request::Park)) {
            return None;
        }
        let l = self.local();
        if !l.may_lend(task) {
            return None;
        }
        if !l.handoff.as_ref().is_some_and(|t| t.lends()) || self.worker_shared().needs_scheduler()
        {
            // No handoff, a handback (a reply: the replier does not pay
            // for its caller), or the scheduler must choose: then the
            // ordinary direct switch (which checks that the target is fair
            // to run next) or a wakeup.
            return None;
        }
        let target = l.handoff.take()?;
        self.win_borrower(target, false)
    }

    /// Wins a loan's borrower `target` (PARKED -> RUNNABLE) and returns it
    /// if it may borrow here (`placed_here`, `may_borrow`), counted as a
    /// direct switch. A target won that may not borrow goes to
    /// `handoff_won`, for the ordinary direct switch; one that was not
    /// parked goes on by itself. `placed`:
    /// the caller checked `placed_here`'s conditions after the target
    /// was won (a won target cannot move), so only the rest is checked.
    #[inline(always)]
    fn win_borrower(&self, target: super::SwitchTarget, placed: bool) -> Option<TaskRef> {
        let b = target.win_wakeup()?;
        let l = self.local();
        // SAFETY: we won `b`'s PARKED -> RUNNABLE: this worker owns it.
        let bsp = unsafe { b.sched() };
        if !(placed || l.placed_here(&b)) || !l.may_borrow(&b, bsp) {
            l.handoff_won = Some(b);
            return None;
        }
        let ws = self.worker_shared();
        bump(&ws.counters.wakeups_local, 1);
        bump(&ws.counters.direct_switches, 1);
        Some(b)
    }

    /// The nested form of [`try_lend`](Self::try_lend), called by the
    /// running task `me` itself as it parks handing its CPU to `target`
    /// (`executor::park_and_switch_to`, its park begun): if `target` is a
    /// call's target that may borrow (the conditions of `try_lend`, and no
    /// loan made already, and tracing off), wins it and makes it the
    /// running task on `me`'s scheduling context, for `me` to resume
    /// nested. Otherwise leaves the handoff for the worker (`handoff`, or
    /// `handoff_won` for a target won that may not borrow) and returns None:
    /// `me` then switches out the ordinary way.
    ///
    /// A hand-back to the lender (a reply on a loan: `target` does not
    /// lend and lent `me` this context) only leaves the handoff, inline;
    /// the rest is [`lend_begin_slow`](Self::lend_begin_slow).
    #[inline(always)]
    pub(crate) fn lend_begin(&self, me: &Task, target: super::SwitchTarget) -> Option<TaskRef> {
        let l = self.local();
        if !target.lends() && l.lender_is(target.task()) {
            l.handoff = Some(target);
            return None;
        }
        self.lend_begin_slow(me, target)
    }

    /// [`lend_begin`](Self::lend_begin) for anything but a hand-back.
    #[inline(never)]
    fn lend_begin_slow(&self, me: &Task, target: super::SwitchTarget) -> Option<TaskRef> {
        let l = self.local();
        // The placement rule of every direct switch (`can_switch_to`); a
        // hand-back to the lender meets it by construction.
        if !l.lender_is(target.task()) && !self.can_switch_here(target.task()) {
            target.wake();
            return None;
        }
        if !target.lends()
            || self.shared.trace.is_some()
            || l.lends()
            || !l.may_lend(me)
            || self.worker_shared().needs_scheduler()
        {
            l.handoff = Some(target);
            return None;
        }
        // A won target (a claimed call target) was won before the
        // placement check above (which ran: no loan is in progress here,
        // so the target is not a lender), and cannot have moved since.
        let placed = target.is_won();
        let b = self.win_borrower(target, placed)?;
        let ws = self.worker_shared();
        let l = self.local();
        l.lender = me;
        ws.curr_pid.store(b.pid.0, Ordering::Relaxed);
        bump(&b.nr_switches, 1);
        self.set_current(&*b);
        Some(b)
    }

    /// Whether the task running here may hand this CPU straight to `to`
    /// (`executor::can_switch_to`, for a caller that holds the worker).
    #[inline]
    pub(crate) fn can_switch_here(&self, to: &Task) -> bool {
        self.local().placed_here(to)
    }

    /// The borrower `b`, resumed nested by its lender `me`, switched out
    /// with `result`. If it parked handing the CPU straight back to `me`
    /// and the scheduler need not run, the loan ends as in
    /// [`end_loan`](Self::end_loan) and `me` runs on (its park is
    /// cancelled; the caller re-checks what it waits for). Otherwise `me`
    /// parks with the loan to settle (`nested_settle`), and `run_task`
    /// settles it as a loan of its own; `me` returns when woken.
    #[inline(never)]
    pub(crate) fn lend_end(&self, me: &Task, b: TaskRef, result: CoroutineResult<Request, ()>) {
        self.set_current(me);
        let ws = self.worker_shared();
        ws.curr_pid.store(me.pid.0, Ordering::Relaxed);
        if !self.loan_ends(me, &b, &result) {
            self.local().nested_settle = Some((b, result));
            super::suspend(me, Request::Park);
            return;
        }
        self.finish_loan(me, b);
        bump(&me.nr_switches, 1);
    }

    /// Whether the loan the borrower `b` runs on from `lender` ends here:
    /// `b` switched out (`result`) parking with the CPU handed straight
    /// back to the lender, and neither its join nor the scheduler
    /// (`needs_scheduler`) must run first. If not, and `b` still hands the
    /// CPU back to the lender, the hand-back is made counted: the worker
    /// settles the loan and then hands the CPU back, by which time the
    /// lender is an ordinary parked task, and the borrower's target may be
    /// borrowed from a frame that does not count it (a reply on a lent
    /// context, `wait::lent_by`).
    #[inline(always)]
    fn loan_ends(&self, lender: &Task, b: &Task, result: &CoroutineResult<Request, ()>) -> bool {
        let l = self.local();
        let handed_back = l.handoff.as_ref().is_some_and(|t| t.is(lender));
        let ends = handed_back
            && matches!(result, CoroutineResult::Yield(Request::Park))
            // SAFETY: the borrower is ours (we resumed it on loan) and
            // alive (it parked, it did not exit).
            && unsafe { b.join_target() }.get().is_null()
            && !self.worker_shared().needs_scheduler();
        if handed_back && !ends {
            l.handoff = l.handoff.take().map(super::SwitchTarget::into_counted);
        }
        ends
    }

    /// Ends a loan that `loan_ends` let end: completes the borrower `b`'s
    /// park and cancels the lender's, which runs on.
    #[inline(always)]
    fn finish_loan(&self, lender: &Task, b: TaskRef) {
        let l = self.local();
        // The lender is not woken through its state word: its park is
        // cancelled below (the target holds at most a reference).
        if let Some(t) = l.handoff.take() {
            t.release();
        }
        l.lender = std::ptr::null();
        // SAFETY: `b` switched out on this CPU; we own it until its park
        // completes.
        let bsp = unsafe { b.sched() };
        b.apply_sched_change(bsp);
        // Woken meanwhile, it slept in the scheduler's eyes (its run was
        // the lender's): queued as a wakeup.
        self.complete_park(b, true);
        lender.state.cancel_park();
        let ws = self.worker_shared();
        bump(&ws.counters.wakeups_local, 1);
        bump(&ws.counters.direct_switches, 1);
    }

    /// The borrower `b` switched out with `result`: if it parked handing
    /// the CPU straight back to the lender `task` and no preemption is
    /// pending, completes `b`'s park, cancels `task`'s and returns Ok
    /// with `b`'s pid: the loan is over and `task` runs on. Otherwise
    /// gives `b` back (the loan must be settled).
    fn end_loan(
        &self,
        task: &TaskRef,
        b: TaskRef,
        result: &CoroutineResult<Request, ()>,
    ) -> Result<u64, TaskRef> {
        if !self.loan_ends(task, &b, result) {
            return Err(b);
        }
        self.set_current(std::ptr::null());
        let bpid = b.pid.0;
        self.finish_loan(task, b);
        Ok(bpid)
    }

    /// Ends a loan the ordinary way at `now`: the lender `task` is charged
    /// for the whole lent time and parks (completing the park it began),
    /// and the borrower `b` becomes `rq`'s current entity, placed as a
    /// task woken now (its own PELT series saw it asleep: its run was the
    /// lender's). Returns `b`, whose switch-out the caller then processes
    /// like any task's.
    fn settle_loan(&self, task: TaskRef, b: TaskRef, now: u64) -> TaskRef {
        let ws = self.worker_shared();
        let l = self.local();
        l.lender = std::ptr::null();
        {
            // SAFETY: the lender's park is in progress on this CPU; we own it.
            let sp = unsafe { task.sched() };
            l.charge_run(&task, sp, now);
            bump(&ws.counters.switches, 1);
            bump(&ws.counters.voluntary_switches, 1);
            bump(&ws.counters.parks, 1);
            l.rq.dequeue(&mut sp.ent);
            task.apply_sched_change(sp);
        }
        self.complete_park(task, false);
        let l = self.local();
        // SAFETY: won at the loan's start; we own it while it is switched out.
        let bsp = unsafe { b.sched() };
        bsp.avg.update(now, 0, 0, 0, bsp.ent.se.load.weight);
        let made_current = l.rq.enqueue_curr_forced(&mut bsp.ent, now);
        debug_assert!(made_current, "a borrower is a CFS task (try_lend)");
        b
    }

    /// Completes the park of `task`, which switched out on this CPU: if no
    /// wakeup came meanwhile, the parked task keeps this reference and the
    /// waker that wins its PARKED -> RUNNABLE takes it over
    /// (`Task::take_parked_ref`), so a park and its wakeup touch no
    /// reference count. If one came while it was switching out (or while
    /// its park was lent), the waker found no parked task to enqueue and
    /// recorded nothing: the wakeup is recorded here and the task queued
    /// again, as a wakeup if it `slept` in the scheduler's eyes (a
    /// borrower, whose run was its lender's), else keeping its vruntime.
    fn complete_park(&self, task: TaskRef, slept: bool) {
        match task.state.finish_park() {
            FinishPark::Parked => {
                let _ = TaskRef::into_raw(task);
            }
            FinishPark::Notified => {
                if self.shared.trace.is_some() {
                    super::trace_wakeup(&task);
                }
                let l = self.local();
                if slept {
                    l.enqueue_wakeup(task);
                } else {
                    l.enqueue_arrived_woken(task);
                }
            }
        }
    }

    fn idle(&self, now: u64) {
        let ws = self.worker_shared();
        ws.curr_pid.store(0, Ordering::Relaxed);
        if let Some(tr) = &self.shared.trace {
            let l = self.local();
            // After what this pass recorded (see `trace_fresh`).
            let ts = if l.trace_fresh { clock::now_ns() } else { now };
            l.trace_push(tr, ts, EventKind::Idle, 0, l.last_pid, l.last_reason);
            l.last_pid = 0;
        }
        self.local().publish();
        ws.idle.store(SPINNING, Ordering::SeqCst);
        self.shared.nr_idle.fetch_add(1, Ordering::AcqRel);
        // Newly idle: ask the busiest CPU nearby for work, unless this CPU's
        // idle periods are usually too short to pay for a migration
        // (fair.c sched_balance_newidle: `avg_idle < sysctl_sched_migration_cost`).
        if self.local().lb.newidle_worth_it() {
            self.local().idle_balance();
        }
        let spin_until = now + self.shared.config.idle_spin_ns;
        let mut iter = 0u32;
        loop {
            // The cheap checks run every turn: a wakeup lands in the inbox,
            // and `pause` costs ~140 cycles on recent Intel cores, so one
            // per turn keeps the reaction time well under a microsecond.
            if ws.idle.load(Ordering::Acquire) == BUSY {
                // A busy CPU claimed us and pushed work into the inbox.
                bump(&ws.counters.idle_ns, clock::now_ns().saturating_sub(now));
                return;
            }
            if !ws.inbox.is_empty() {
                self.leave_idle(SPINNING);
                bump(&ws.counters.idle_ns, clock::now_ns().saturating_sub(now));
                return;
            }
            iter = iter.wrapping_add(1);
            // Stealing (a SeqCst fence per victim) and the clock are dearer.
            if iter % 8 == 0 {
                let t = clock::now_ns();
                let l = self.local();
                let due = l.timers.next_deadline().is_some_and(|d| d <= t);
                if due || self.shared.shutdown.load(Ordering::Relaxed) || l.steal() {
                    self.leave_idle(SPINNING);
                    bump(&ws.counters.idle_ns, clock::now_ns().saturating_sub(now));
                    return;
                }
                if iter % 1024 == 0 && t.saturating_sub(now) >= MIGRATION_COST_NS {
                    // Idle for longer than a migration costs: ask (again;
                    // a request may have found nothing movable, or the
                    // busiest CPU changed).
                    l.idle_balance();
                }
                if t >= spin_until {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        // Bring the averages up to now before sleeping: readers decay
        // them from here.
        self.local().update_rq_avg(clock::now_ns(), false);
        // Sleep. Publish SLEEPING, then re-check the inbox (Dekker with
        // `WorkerShared::notify`).
        if ws
            .idle
            .compare_exchange(SPINNING, SLEEPING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            bump(&ws.counters.idle_ns, clock::now_ns().saturating_sub(now));
            return; // claimed
        }
        fence(Ordering::SeqCst);
        if ws.inbox.is_empty() && !self.shared.shutdown.load(Ordering::SeqCst) {
            let timers = &mut self.local().timers;
            timers.purge_ended();
            let next = timers.next_deadline();
            match next {
                Some(d) => {
                    let now = clock::now_ns();
                    if d > now {
                        std::thread::park_timeout(Duration::from_nanos(d - now));
                    }
                }
                None => std::thread::park(),
            }
        }
        self.shared.monitor.worker_wakes();
        bump(&ws.counters.unparks, 1);
        self.leave_idle(SLEEPING);
        bump(&ws.counters.idle_ns, clock::now_ns().saturating_sub(now));
    }

    /// Moves `from -> BUSY` unless a claimer already did.
    fn leave_idle(&self, from: u8) {
        let ws = self.worker_shared();
        if ws
            .idle
            .compare_exchange(from, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.shared.nr_idle.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// After the loop ends: drops this CPU's references to queued tasks (the
    /// task table keeps every live task for cancellation).
    fn drain_on_shutdown(&self) {
        let l = self.local();
        drop(l.rq.drain());
        while l.staging.pop().is_some() {}
        let timers: Vec<_> = l.timers.drain().collect();
        drop(timers);
    }
}

impl WorkerLocal {
    /// Records an event at time `ts_ns` in this CPU's ring.
    #[inline]
    fn trace_push(
        &self,
        tr: &super::TraceState,
        ts_ns: u64,
        kind: EventKind,
        pid: u64,
        other: u64,
        arg: u64,
    ) {
        let ev = crate::trace::Event {
            ts_ns,
            kind,
            cpu: self.index as u16,
            pid,
            other,
            arg,
        };
        // SAFETY: this is CPU `index`'s worker thread, the ring's only writer.
        unsafe { tr.rings[self.index].push(&ev) };
    }

    /// Completes a direct process switch to `target`, which the parking
    /// task woke: if this CPU wins `target`'s PARKED -> RUNNABLE and may run
    /// it, it becomes current here without entering the tree and runs next
    /// (`direct_next`). Otherwise `target` is woken the ordinary way.
    /// Called before the parking task's `finish_park` (see
    /// [`super::SwitchTarget`]).
    fn take_handoff(&mut self, target: super::SwitchTarget, now: u64) {
        let Some(target) = target.win_wakeup() else {
            // Not parked yet (its own CPU re-queues it on seeing the
            // notification), or already woken by someone else.
            return;
        };
        // (`win_wakeup` recorded the wakeup.)
        self.take_won_handoff(target, now);
    }

    /// [`take_handoff`](Self::take_handoff) once its target is won.
    fn take_won_handoff(&mut self, target: TaskRef, now: u64) {
        let runnable_here = target.allowed_on(self.index)
            && target.rt_id == self.shared.id
            && self.rq.nr_running() == self.rq.nr_queued()
            && self.direct_next.is_none();
        if !runnable_here {
            return super::enqueue_woken_owned(self, target);
        }
        // SAFETY: we won PARKED -> RUNNABLE: this worker owns `target`.
        let sp = unsafe { target.sched() };
        target.apply_sched_change(sp);
        let prev = target.cpu.load(Ordering::Relaxed);
        if prev != self.index && prev < self.shared.nr_cpus() {
            // Asleep on another queue: unbind it from there first.
            super::lb::wake_migrate(&self.shared, sp, prev, self.index);
        }
        if sp.vruntime_relative {
            self.bind_here(sp, false, false, now);
        } else {
            sp.avg.update(now, 0, 0, 0, sp.ent.se.load.weight);
        }
        if !self.rq.enqueue_curr(&mut sp.ent, now) {
            // The class has no direct switch (or a higher class has work):
            // an ordinary wakeup here.
            return self.enqueue_wakeup(target);
        }
        if prev != self.index {
            self.count_arrival(prev);
            bump(&target.nr_migrations, 1);
        }
        bump(&self.ws().counters.wakeups_local, 1);
        bump(&self.ws().counters.direct_switches, 1);
        self.direct_next = Some(target);
    }

    /// Charges the current task, whose run ends at `now`, for that run:
    /// vruntime and sum_exec (`update_curr`), its PELT series as running,
    /// and the copies other threads read (`Task::cpu_time`, the vruntime
    /// shown by `task_metrics`).
    fn charge_run(&mut self, task: &Task, sp: &mut super::task::SchedPart, now: u64) {
        self.rq.update_curr(&mut sp.ent, now);
        // PELT: it ran until now.
        sp.avg.update(now, 1, 1, 1, sp.ent.se.load.weight);
        task.sum_exec_ns
            .store(sp.ent.se.sum_exec_runtime, Ordering::Relaxed);
        task.vruntime_seen
            .store(sp.ent.se.vruntime, Ordering::Relaxed);
    }

    /// Whether a scheduling context is lent now (the running task borrows).
    pub(crate) fn lends(&self) -> bool {
        !self.lender.is_null()
    }

    /// Whether `t` lent the running task its scheduling context.
    #[inline]
    pub(crate) fn lender_is(&self, t: &Task) -> bool {
        std::ptr::eq(self.lender, t)
    }

    /// Whether `lender`, the task running (or just parked) here, may lend
    /// its scheduling context (see `WorkerCell::try_lend`): CFS (the class
    /// whose current entity can be handed over), no RT task queued, not
    /// shutting down; the lender fair and not joining (its directed yield
    /// needs the scheduler). (`try_lend` also requires no pending
    /// preemption.)
    fn may_lend(&self, lender: &Task) -> bool {
        self.cfs
            && self.rq.rt.nr_running() == 0
            // SAFETY: the lender is this CPU's current task, or parking
            // here: ours, and alive.
            && unsafe { lender.join_target() }.get().is_null()
            && !self.shared.shutdown.load(Ordering::Relaxed)
            // SAFETY: the lender is this CPU's current task (or parking
            // here): its sched part is this worker's to read.
            && !unsafe { lender.sched() }.ent.policy.is_rt()
    }

    /// Whether the owned, runnable `b` may borrow a scheduling context
    /// here, as to placement: same runtime, last ran on this CPU and
    /// allowed here (seL4 fastpath rule 10; the conditions of
    /// `WorkerCell::can_switch_here`). The rest is
    /// [`may_borrow`](Self::may_borrow).
    #[inline]
    fn placed_here(&self, b: &Task) -> bool {
        b.rt_id == self.shared.id
            && b.cpu.load(Ordering::Relaxed) == self.index
            && b.allowed_on(self.index)
    }

    /// Whether the owned, runnable `b` may borrow a scheduling context
    /// here, placement aside ([`placed_here`](Self::placed_here)): bound to
    /// this queue, fair, already started.
    #[inline]
    fn may_borrow(&self, b: &Task, bsp: &super::task::SchedPart) -> bool {
        !bsp.vruntime_relative
            && !bsp.ent.policy.is_rt()
            // SAFETY: the caller owns `b`; only its worker touches the slot.
            && unsafe { (*b.coro_slot()).is_some() }
    }

    /// Whether `task`, which stopped at a yield point (`Request::Preempt`),
    /// stopped only for this CPU's own work (`need_service`) and may stay
    /// the current task through the service pass (`held`): no resched is
    /// pending, its policy or nice value did not change, it may still run
    /// here (an affinity change stops it the same way), and the runtime is
    /// not shutting down.
    fn may_hold(&self, task: &Task) -> bool {
        !self.ws().need_resched.load(Ordering::Relaxed)
            && !task.sched_dirty.load(Ordering::Relaxed)
            && task.allowed_on(self.index)
            && !self.shared.shutdown.load(Ordering::Relaxed)
    }

    /// Puts back a task preempted at `now` (it stays runnable, no skip
    /// buddy), re-queueing it if its policy or nice value changed.
    fn put_preempted(&mut self, task: TaskRef, now: u64) {
        bump(&self.ws().counters.forced_switches, 1);
        self.last_reason = 0;
        task.queued_at.store(now, Ordering::Relaxed);
        if task.sched_dirty.load(Ordering::Relaxed) {
            self.requeue_changed(task, now);
        } else {
            // SAFETY: it switched out on this CPU (or was held here): we
            // own it.
            let sp = unsafe { task.sched() };
            self.rq_put_prev(&mut sp.ent, task);
        }
    }

    /// Ends the hold of a task that a service pass preempted after all:
    /// the switch it stopped for happens now (`ran`), or a direct switch's
    /// target that has not run yet goes into the tree like any runnable
    /// task.
    fn preempt_held(&mut self, task: TaskRef, ran: bool, now: u64) {
        if ran {
            self.last_pid = task.pid.0;
            bump(&self.ws().counters.switches, 1);
            self.put_preempted(task, now);
        } else {
            task.queued_at.store(now, Ordering::Relaxed);
            // SAFETY: won by this CPU's handoff and made current here: we
            // own it.
            let sp = unsafe { task.sched() };
            self.rq_put_prev(&mut sp.ent, task);
        }
    }

    /// Re-queues a task whose park was cancelled by a wakeup during the
    /// switch (it keeps its vruntime: it never slept).
    fn enqueue_arrived_woken(&mut self, task: TaskRef) {
        // SAFETY: finish_park returned Notified: the worker still owns it.
        let sp = unsafe { task.sched() };
        self.rq_enqueue(&mut sp.ent, task, EnqueueFlags::NONE, self.now);
    }
}

/// Creates the coroutine for a task's first run, on a pooled stack.
fn start_coroutine(task: &TaskRef, sp: &mut super::task::SchedPart) -> Option<Coro> {
    let stack = match StackPool::global().alloc(task.stack_size as usize) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(pid = task.pid.0, name = task.name_or_dash(), error = %e,
                "greenos: cannot allocate a stack; the task is dropped unrun");
            return None;
        }
    };
    stack.set_owner(task.pid.0, task.name_or_dash());
    {
        use corosensei::stack::Stack;
        let top = stack.base().get();
        // SAFETY: this worker owns the task (it is starting it); its body
        // is live.
        let (bottom_cell, top_cell) = unsafe { task.stack_bounds() };
        top_cell.set(top);
        bottom_cell.set(top - stack.usable_size());
    }
    if task.pinned {
        let here = crate::cpuset::CpuSet::from_iter([task.cpu.load(Ordering::Relaxed)]);
        task.allowed.store(&here);
    }
    let entry = sp.entry.take()?;
    let tp: *const Task = &**task;
    Some(Coro::with_stack(stack, move |y, ()| {
        // SAFETY: the task outlives its coroutine (the coroutine is stored in
        // the task), and only this coroutine's code runs here.
        let task = unsafe { &*tp };
        // SAFETY: the task itself, running: its body is live.
        unsafe { task.yielder() }.set(y);
        entry.run();
        // Task-local values die with the task, in its own context.
        // SAFETY: this is the task itself, running, with no local borrowed.
        unsafe { task.drop_locals() };
    }))
}

/// Resumes `task`'s coroutine until it switches out.
///
/// # Safety
/// The caller owns `task` (this worker runs it), its slot holds a live
/// coroutine, and no other borrow of the slot exists: the task's own code
/// never touches its coroutine slot.
#[inline(always)]
pub(crate) unsafe fn resume(task: &Task) -> CoroutineResult<Request, ()> {
    // SAFETY: the caller's contract.
    unsafe { (*task.coro_slot()).as_mut().unwrap_unchecked().resume(()) }
}
