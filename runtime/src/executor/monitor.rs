//! The monitor thread: the runtime's scheduler tick.
//!
//! Green tasks cannot be interrupted (cooperative preemption; see DESIGN.md),
//! so the tick is emulated: every `monitor_tick_ns` the monitor looks at each
//! CPU that runs a task. It raises the CPU's `need_resched` flag (the task
//! gives up the CPU and the scheduler picks again) when the running task
//! has run longer than its ideal slice while others wait (CFS
//! `check_preempt_tick`, reference/scheduling.md §1.8), or, under the other
//! classes and for RT tasks, past the run budget its CPU published at the
//! switch (`SchedClass::preempt_budget`: EEVDF request consumed, O(1)
//! timeslice or granularity, O(N) counter, RR slice, RT throttling).
//!
//! It raises `need_service` instead — the interrupt: the task stops at its
//! next yield point, the CPU does its own work, and the task runs on unless
//! that work preempts it — when
//! - one of the CPU's timers is due (timers fire in the service pass; a
//!   woken task then preempts only by its class's wakeup rule, as from the
//!   kernel's hrtimer interrupt; the monitor sleeps until the earliest such
//!   timer if that comes before its tick, and a busy CPU that arms an
//!   earlier one wakes it, so a timer fires within a thread wakeup of its
//!   deadline), or
//! - `SCHED_TICK_NS` passed since the CPU's last pass (the tick's own work:
//!   PELT of the queue, periodic balance, and `check_preempt_tick`, which
//!   may preempt), or
//! - a wakeup is waiting in the CPU's inbox, or another CPU posted a pull
//!   request, and `sched_min_granularity` passed since the last pass (a
//!   pair of tasks that hand the CPU to each other faster than that never
//!   trigger it, so sync wakeups keep communicating tasks together).
//!
//! `maybe_yield()` and every greenos call honour both flags.
//!
//! It also reports, through `tracing`, a task that has run for
//! `overrun_report_ns` (100 ms) without reaching a yield point: such a task
//! holds its CPU hostage (tokio#4730, may#85 in reference/scheduling.md §8).
//!
//! With every CPU asleep the monitor sleeps too (no tick, ~0% CPU); the first
//! CPU to wake unparks it.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::{clock, Shared, BUSY, SLEEPING};

/// `WorkerShared::run_budget` value: the running task is a CFS task; the
/// monitor derives its slice from `curr_weight`, `rq_load` and
/// `nr_running` (no division on the switch path).
pub(crate) const BUDGET_CFS: u64 = u64::MAX;
/// `WorkerShared::run_budget` value: nothing bounds the running task (it
/// runs alone, or it is FIFO).
pub(crate) const BUDGET_NONE: u64 = u64::MAX - 1;

/// The monitor's side of its sleep protocol.
pub(crate) struct MonitorShared {
    parked: AtomicBool,
    thread: OnceLock<Thread>,
    /// When the monitor's current sleep ends (runtime clock, ns; `u64::MAX`
    /// while it is parked with every CPU asleep). A CPU that arms a timer
    /// due earlier wakes it (`timer_armed`), so that the timer fires within
    /// a thread wakeup of its deadline, as an hrtimer would, not up to a
    /// tick late.
    wake_at: AtomicU64,
}

impl Default for MonitorShared {
    fn default() -> MonitorShared {
        MonitorShared {
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
            wake_at: AtomicU64::new(0),
        }
    }
}

impl MonitorShared {
    /// Called by a worker that woke: restarts the tick if it stopped.
    pub(crate) fn worker_wakes(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.parked.store(false, Ordering::SeqCst);
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Called by a CPU that armed a timer due at `deadline` while it has
    /// other work to run (an idle CPU sleeps until its own next timer): if
    /// the monitor would sleep past the deadline, wake it now so that it
    /// interrupts the running task in time.
    ///
    /// While the monitor looks at the CPUs, `wake_at` is `u64::MAX`: an arm
    /// then always unparks it, and the token makes its next sleep return
    /// at once, so a timer published after the monitor read its CPU is
    /// not missed.
    #[inline]
    pub(crate) fn timer_armed(&self, deadline: u64) {
        if deadline < self.wake_at.load(Ordering::Relaxed) {
            // Now it wakes for this one; later arms at or after it do not
            // unpark again.
            self.wake_at.store(deadline, Ordering::Relaxed);
            self.unpark();
        }
    }

    /// Wakes the monitor (shutdown).
    pub(crate) fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The scheduler tick as the run loop sees it: a task that has run this
/// long without a switch is asked to yield, so that its CPU updates its
/// PELT averages, balances and serves pull requests (the kernel's
/// `sched_tick` at HZ = 250; one extra switch per 4 ms costs nothing
/// measurable).
pub(crate) const SCHED_TICK_NS: u64 = 4_000_000;

/// The shortest monitor sleep: below this the OS cannot wake a thread
/// reliably anyway, and the monitor must not spin.
const MIN_SLEEP: Duration = Duration::from_micros(20);

/// Body of the monitor thread.
pub(crate) fn run_monitor(shared: Arc<Shared>) {
    let _ = shared.monitor.thread.set(std::thread::current());
    precise_timer_sleeps();
    let tick = Duration::from_nanos(shared.config.monitor_tick_ns);
    let min_gran = shared.tunables.sched_min_granularity_ns;
    let report = shared.config.overrun_report_ns;
    // Per CPU: the switch_seq we last reported an overrun for.
    let mut reported = vec![u64::MAX; shared.workers.len()];
    while !shared.shutdown.load(Ordering::Acquire) {
        // Awake: a timer armed while this pass reads the CPUs must wake
        // the monitor again (`timer_armed` compares with `wake_at`), or it
        // could be missed until the next tick.
        shared.monitor.wake_at.store(u64::MAX, Ordering::Relaxed);
        let now = clock::now_ns();
        // The earliest timer of a CPU that runs a task: the monitor wakes
        // for it instead of waiting for its next tick, so that a timer
        // fires within a thread wakeup of its deadline, not a tick.
        let mut next_due = u64::MAX;
        for (cpu, w) in shared.workers.iter().enumerate() {
            let pid = w.curr_pid.load(Ordering::Relaxed);
            let timer = w.next_timer.load(Ordering::Relaxed);
            // Also a busy CPU between two tasks: a task that arms a timer
            // and parks wakes the monitor (`timer_armed`) just as its CPU
            // runs no task, and that CPU then runs the next one for a whole
            // slice. (An idle CPU sleeps until its own timers.)
            if timer > now && (pid != 0 || w.idle.load(Ordering::Relaxed) == BUSY) {
                next_due = next_due.min(timer);
            }
            if pid == 0 {
                continue;
            }
            let start = w.run_start.load(Ordering::Relaxed);
            let ran = now.saturating_sub(start);
            let budget = w.run_budget.load(Ordering::Relaxed);
            let over = if budget == BUDGET_CFS {
                // CFS check_preempt_tick's first test: ran past the ideal
                // slice (sched_period(nr) x weight / load), when others are
                // waiting.
                let nr = w.nr_running.load(Ordering::Relaxed);
                let slice = if nr > 1 {
                    let period = shared.tunables.sched_period(nr);
                    let weight = u128::from(w.curr_weight.load(Ordering::Relaxed));
                    let load = u128::from(w.rq_load.load(Ordering::Relaxed)).max(1);
                    (u128::from(period) * weight / load) as u64
                } else {
                    0
                };
                slice != 0 && ran > slice.max(min_gran)
            } else {
                // Other classes (and RT tasks) publish when their own tick
                // check would fire (`SchedClass::preempt_budget`).
                ran > budget
            };
            if over {
                w.need_resched.store(true, Ordering::Relaxed);
            }
            // The CPU's own work between tasks (`need_service`): a timer
            // due fires at the next yield point; the scheduler tick (PELT
            // of the queue, periodic balance, `check_preempt_tick`) and a
            // pull request or an inbox to drain are served once per period.
            // The task runs on afterwards unless that work preempts it.
            let since = now.saturating_sub(w.serviced_at.load(Ordering::Relaxed));
            let timer_due = now >= timer;
            let tick_due = since > SCHED_TICK_NS
                || (since > min_gran && w.pull_request.load(Ordering::Relaxed) != 0);
            if timer_due || tick_due || (since > min_gran && !w.inbox.is_empty()) {
                w.need_service.store(true, Ordering::Relaxed);
            }
            let seq = w.switch_seq.load(Ordering::Relaxed);
            if ran > report && reported[cpu] != seq {
                reported[cpu] = seq;
                let name = shared
                    .table
                    .get(crate::Pid(pid))
                    .map(|t| t.name_or_dash().to_owned())
                    .unwrap_or_else(|| "-".to_owned());
                tracing::warn!(
                    pid,
                    name = %name,
                    cpu,
                    ran_ms = ran / 1_000_000,
                    "greenos: task has run without reaching a yield point; it holds its CPU \
                     (call greenos::maybe_yield() in long loops)"
                );
            }
        }
        let all_asleep = shared
            .workers
            .iter()
            .all(|w| w.idle.load(Ordering::SeqCst) == SLEEPING);
        if all_asleep {
            shared.monitor.wake_at.store(u64::MAX, Ordering::Relaxed);
            shared.monitor.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let still = shared
                .workers
                .iter()
                .all(|w| w.idle.load(Ordering::SeqCst) == SLEEPING);
            if still && !shared.shutdown.load(Ordering::SeqCst) {
                while shared.monitor.parked.load(Ordering::SeqCst)
                    && !shared.shutdown.load(Ordering::SeqCst)
                {
                    std::thread::park();
                }
            }
            shared.monitor.parked.store(false, Ordering::SeqCst);
        } else {
            let until_due = Duration::from_nanos(next_due.saturating_sub(now));
            let nap = tick.min(until_due).max(MIN_SLEEP);
            shared
                .monitor
                .wake_at
                .store(now.saturating_add(nap.as_nanos() as u64), Ordering::Relaxed);
            // Woken early by `timer_armed` (or a stale token): the loop
            // just looks again.
            std::thread::park_timeout(nap);
        }
    }
}

/// Asks the kernel to wake this thread's timed sleeps on time: a thread's
/// default timer slack (`prctl(PR_SET_TIMERSLACK)`, 50 µs) lets the kernel
/// defer its timer expiry to batch wakeups, and every sleep of the monitor
/// (the emulated timer interrupt) and of an idle CPU waiting for its next
/// timer would inherit that lateness. 1 ns is the smallest slack `prctl`
/// accepts (0 means "reset to the default"). Best effort: an error leaves
/// the default.
pub(crate) fn precise_timer_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long by value and only
    // changes the calling thread's timer slack.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}
