//! The O(1) scheduler of Linux 2.6.0 – 2.6.22 (reference §5.1), per CPU,
//! for the fair (non-RT) priorities. Times are ns; a jiffy is 1 ms (HZ
//! 1000).
//!
//! # Model
//!
//! - 140 priority levels (0–99 belong to RT, which greenos runs in its own
//!   class above this one, so only 100–139 are used here), two
//!   [`PrioArray`]s (`active`, `expired`) each with a 140-bit bitmap and
//!   140 FIFO lists. Pick = find-first-set in the active bitmap, head of
//!   that list; when `active` empties the arrays swap. O(1) in the number
//!   of tasks.
//! - `static_prio = 120 + nice`; the dynamic `prio = static_prio −
//!   (CURRENT_BONUS − 5)`, clamped to 100–139, where `CURRENT_BONUS =
//!   sleep_avg × 10 / 1 s`.
//! - Timeslice from static priority (2.6.8+): `max(base × (140 − sp) / 20,
//!   5 ms)`, base 400 ms below static priority 120, else 100 ms.
//! - `sleep_avg` grows by the sleep time at wakeup (times `10 −
//!   CURRENT_BONUS`, at least 1; capped at 1 s; a sleep longer than
//!   `INTERACTIVE_SLEEP` lifts it only to 900 ms, the 2.6.17+ ceiling) and
//!   shrinks by run time divided by `CURRENT_BONUS` at every switch-out.
//! - Slice end: new prio and slice; back into `active` if
//!   `TASK_INTERACTIVE` and the expired array is not starving
//!   (`EXPIRED_STARVING`: the first expired task waited `STARVATION_LIMIT
//!   (1 s) × nr_running + 1 jiffy`, or the current task's static priority
//!   is worse than the best expired one), else into `expired`. Interactive
//!   tasks are also round-robined among equals every
//!   `TIMESLICE_GRANULARITY` (10 ms × 2^(MAX_BONUS − CURRENT_BONUS − 1)).
//! - A preempted task stays at the head of its list; a yielding task goes
//!   to the expired array (2.6 `sched_yield()`).
//! - Wakeup preemption: the wakee's `prio` is better (lower).
//! - Fork: the parent's remaining slice is split in half with the child;
//!   both `sleep_avg`s are requantised with CHILD_PENALTY 95 % /
//!   PARENT_PENALTY 100 %.
//!
//! Not modelled: the SMP `× CPUs` factor of the granularity, the
//! "activated"/interrupt-wakeup credits, and the exit-time slice return.

use super::cfs::EnqueueFlags;
use super::class::{SchedClass, TaskEntity};
use super::list::{ListHead, Slab, NIL};
use super::policy::SchedPolicy;

/// Priority levels (`MAX_PRIO`).
pub const MAX_PRIO: usize = 140;
/// First non-RT level (`MAX_RT_PRIO`).
pub const MAX_RT_PRIO: u8 = 100;
/// One jiffy at HZ 1000.
pub const JIFFY_NS: u64 = 1_000_000;
/// `DEF_TIMESLICE`: 100 ms.
pub const DEF_TIMESLICE_NS: u64 = 100 * JIFFY_NS;
/// `MIN_TIMESLICE`: 5 ms.
pub const MIN_TIMESLICE_NS: u64 = 5 * JIFFY_NS;
/// `MAX_BONUS`: 10 (40 levels × PRIO_BONUS_RATIO 25 %).
pub const MAX_BONUS: u64 = 10;
/// `MAX_SLEEP_AVG = DEF_TIMESLICE × MAX_BONUS`: 1 s.
pub const MAX_SLEEP_AVG_NS: u64 = DEF_TIMESLICE_NS * MAX_BONUS;
/// `STARVATION_LIMIT` (= MAX_SLEEP_AVG): 1 s.
pub const STARVATION_LIMIT_NS: u64 = MAX_SLEEP_AVG_NS;
/// `GRANULARITY`: 10 ms.
pub const GRANULARITY_NS: u64 = 10 * JIFFY_NS;
/// `CHILD_PENALTY`: 95 %.
pub const CHILD_PENALTY: u64 = 95;
/// `PARENT_PENALTY`: 100 %.
pub const PARENT_PENALTY: u64 = 100;
/// `INTERACTIVE_DELTA`: 2.
pub const INTERACTIVE_DELTA: i32 = 2;

const BITMAP_WORDS: usize = MAX_PRIO.div_ceil(64);

/// `static_prio` of a fair task (`NICE_TO_PRIO`); `SCHED_IDLE`, which
/// O(1) did not have, is the lowest level.
pub fn static_prio(nice: i32, policy: SchedPolicy) -> u8 {
    if policy == SchedPolicy::Idle {
        139
    } else {
        (120 + nice.clamp(-20, 19)) as u8
    }
}

/// `task_timeslice()` (2.6.8+): `max(base × (140 − sp) / 20, 5 ms)`, base
/// 400 ms if `sp < 120` else 100 ms → nice −20: 800 ms, 0: 100 ms, +19:
/// 5 ms.
pub fn task_timeslice(static_prio: u8) -> u64 {
    let base = if static_prio < 120 {
        4 * DEF_TIMESLICE_NS
    } else {
        DEF_TIMESLICE_NS
    };
    (base * (MAX_PRIO as u64 - u64::from(static_prio)) / 20).max(MIN_TIMESLICE_NS)
}

/// `CURRENT_BONUS`: `NS_TO_JIFFIES(sleep_avg) × MAX_BONUS / MAX_SLEEP_AVG`, 0–10.
pub fn current_bonus(sleep_avg_ns: u64) -> u64 {
    (sleep_avg_ns / JIFFY_NS) * MAX_BONUS / (MAX_SLEEP_AVG_NS / JIFFY_NS)
}

/// `effective_prio()`: `static_prio − (bonus − 5)` clamped to 100–139.
pub fn effective_prio(static_prio: u8, sleep_avg_ns: u64) -> u8 {
    let bonus = current_bonus(sleep_avg_ns) as i32 - (MAX_BONUS / 2) as i32;
    (i32::from(static_prio) - bonus).clamp(100, 139) as u8
}

/// `DELTA(p) = nice × MAX_BONUS / 40 + INTERACTIVE_DELTA` (C truncation).
pub fn interactive_delta(nice: i32) -> i32 {
    nice * MAX_BONUS as i32 / 40 + INTERACTIVE_DELTA
}

/// `INTERACTIVE_SLEEP(p)`: `MAX_SLEEP_AVG × (MAX_BONUS/2 + DELTA + 1) /
/// MAX_BONUS − 1` jiffies (799 ms at nice 0).
pub fn interactive_sleep_ns(nice: i32) -> u64 {
    let msa = (MAX_SLEEP_AVG_NS / JIFFY_NS) as i64;
    let j = msa * (MAX_BONUS as i64 / 2 + i64::from(interactive_delta(nice)) + 1)
        / MAX_BONUS as i64
        - 1;
    j.max(0) as u64 * JIFFY_NS
}

/// `TIMESLICE_GRANULARITY(p)`: 10 ms × 2^((MAX_BONUS − bonus or 1) − 1).
pub fn timeslice_granularity(sleep_avg_ns: u64) -> u64 {
    let d = (MAX_BONUS - current_bonus(sleep_avg_ns)).max(1);
    GRANULARITY_NS << (d - 1)
}

/// O(1)'s per-task state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct O1Data {
    /// `120 + nice`.
    pub static_prio: u8,
    /// Dynamic priority (100–139).
    pub prio: u8,
    /// Remaining timeslice, ns.
    pub time_slice: u64,
    /// Interactivity estimate, 0 – 1 s.
    pub sleep_avg: u64,
    /// Last switch-in or sleep start (ns).
    pub timestamp: u64,
    /// The child's first slice after fork.
    pub first_time_slice: bool,
    /// `SCHED_BATCH`/`SCHED_IDLE`: no sleep bonus.
    pub no_bonus: bool,
    nice: i32,
    node: u32,
    array: u8,
}

impl O1Data {
    /// The state of a new task at `nice` with `policy`: full slice, no
    /// sleep average (so `prio = static_prio + 5`).
    pub fn new(nice: i32, policy: SchedPolicy) -> O1Data {
        let sp = static_prio(nice, policy);
        O1Data {
            static_prio: sp,
            prio: effective_prio(sp, 0),
            time_slice: task_timeslice(sp),
            sleep_avg: 0,
            timestamp: 0,
            first_time_slice: false,
            no_bonus: matches!(policy, SchedPolicy::Batch | SchedPolicy::Idle),
            nice,
            node: NIL,
            array: 0,
        }
    }

    /// Re-derives the static priority (and the no-bonus rule) after a nice
    /// or policy change; the dynamic priority follows at the next wakeup or
    /// slice end.
    pub fn set_nice(&mut self, nice: i32, policy: SchedPolicy) {
        self.nice = nice;
        self.static_prio = static_prio(nice, policy);
        self.no_bonus = matches!(policy, SchedPolicy::Batch | SchedPolicy::Idle);
        self.prio = effective_prio(self.static_prio, self.sleep_avg);
    }

    /// `TASK_INTERACTIVE(p)`: `prio ≤ static_prio − DELTA(p)`.
    pub fn interactive(&self) -> bool {
        i32::from(self.prio) <= i32::from(self.static_prio) - interactive_delta(self.nice)
    }
}

/// One priority array: bitmap + 140 FIFO lists.
#[derive(Debug)]
pub struct PrioArray {
    bitmap: [u64; BITMAP_WORDS],
    lists: [ListHead; MAX_PRIO],
    nr_active: usize,
}

impl Default for PrioArray {
    fn default() -> Self {
        PrioArray {
            bitmap: [0; BITMAP_WORDS],
            lists: [ListHead::EMPTY; MAX_PRIO],
            nr_active: 0,
        }
    }
}

impl PrioArray {
    /// `sched_find_first_bit()`: the best non-empty level.
    #[inline]
    fn first_set(&self) -> Option<usize> {
        self.bitmap
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Curr {
    /// The timeslice ran out.
    expired: bool,
    /// Round-robin among equals (TIMESLICE_GRANULARITY).
    rr: bool,
    /// `sched_yield()`.
    yielded: bool,
}

/// The O(1) per-CPU queue.
#[derive(Debug)]
pub struct O1Rq<T> {
    arrays: Box<[PrioArray; 2]>,
    active: usize,
    /// Queued handles with their load weight.
    slab: Slab<(T, u64)>,
    expired_timestamp: Option<u64>,
    best_expired_prio: u8,
    nr_running: usize,
    load: u64,
    clock: u64,
    curr: Option<Curr>,
}

impl<T> Default for O1Rq<T> {
    fn default() -> Self {
        O1Rq::new()
    }
}

impl<T> O1Rq<T> {
    /// An empty queue.
    pub fn new() -> O1Rq<T> {
        O1Rq {
            arrays: Box::default(),
            active: 0,
            slab: Slab::default(),
            expired_timestamp: None,
            best_expired_prio: MAX_PRIO as u8,
            nr_running: 0,
            load: 0,
            clock: 0,
            curr: None,
        }
    }

    fn push(&mut self, e: &mut TaskEntity, task: T, array: usize, tail: bool) {
        let prio = usize::from(e.o1_mut().prio);
        let a = &mut self.arrays[array];
        let list = &mut a.lists[prio];
        let val = (task, e.se.load.weight);
        e.o1_mut().node = if tail {
            self.slab.push_back(list, val)
        } else {
            self.slab.push_front(list, val)
        };
        a.bitmap[prio / 64] |= 1 << (prio % 64);
        a.nr_active += 1;
        e.o1_mut().array = array as u8;
    }

    fn unlink(&mut self, array: usize, prio: usize, node: u32) -> (T, u64) {
        let a = &mut self.arrays[array];
        let t = self.slab.remove(&mut a.lists[prio], node);
        if a.lists[prio].is_empty() {
            a.bitmap[prio / 64] &= !(1 << (prio % 64));
        }
        a.nr_active -= 1;
        t
    }

    /// `recalc_task_prio()` at wakeup.
    fn recalc_task_prio(&self, e: &mut TaskEntity, now: u64) {
        let o = &mut e.o1_mut();
        let sleep = now.saturating_sub(o.timestamp).min(MAX_SLEEP_AVG_NS);
        if sleep > 0 && !o.no_bonus {
            if sleep > interactive_sleep_ns(o.nice) {
                let ceiling = MAX_SLEEP_AVG_NS - DEF_TIMESLICE_NS;
                o.sleep_avg = o.sleep_avg.max(ceiling);
            } else {
                let mult = (MAX_BONUS - current_bonus(o.sleep_avg)).max(1);
                o.sleep_avg = (o.sleep_avg + sleep * mult).min(MAX_SLEEP_AVG_NS);
            }
        }
        o.prio = effective_prio(o.static_prio, o.sleep_avg);
    }

    /// `schedule()`'s charge of the previous task: `sleep_avg −= run_time /
    /// max(CURRENT_BONUS, 1)`.
    fn charge_run(&self, e: &mut TaskEntity) {
        let run =
            e.se.sum_exec_runtime
                .wrapping_sub(e.se.prev_sum_exec_runtime)
                .min(MAX_SLEEP_AVG_NS);
        let run = run / current_bonus(e.o1_mut().sleep_avg).max(1);
        e.o1_mut().sleep_avg = e.o1_mut().sleep_avg.saturating_sub(run);
        e.o1_mut().timestamp = self.clock;
    }

    /// `EXPIRED_STARVING(rq)` for the current task `e`.
    fn expired_starving(&self, e: &TaskEntity) -> bool {
        let waited = self.expired_timestamp.is_some_and(|ts| {
            self.clock.saturating_sub(ts) >= STARVATION_LIMIT_NS * self.nr_running as u64 + JIFFY_NS
        });
        waited || e.o1().static_prio > self.best_expired_prio
    }

    /// Tasks in the active and the expired array.
    pub fn array_lens(&self) -> (usize, usize) {
        (
            self.arrays[self.active].nr_active,
            self.arrays[1 - self.active].nr_active,
        )
    }
}

impl<T> SchedClass<T> for O1Rq<T> {
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        *child.o1_mut() = O1Data::new(child.se.nice, child.policy);
        let Some(p) = parent else {
            return;
        };
        // sched_fork(): split the parent's remaining slice.
        child.o1_mut().time_slice = (p.o1_mut().time_slice + 1) >> 1;
        p.o1_mut().time_slice = (p.o1_mut().time_slice >> 1).max(1);
        child.o1_mut().first_time_slice = true;
        // wake_up_new_task(): requantise both sleep averages.
        let requant = |bonus: u64, pct: u64| {
            bonus * pct / 100 * (MAX_SLEEP_AVG_NS / JIFFY_NS) / MAX_BONUS * JIFFY_NS
        };
        let bonus = current_bonus(p.o1_mut().sleep_avg);
        child.o1_mut().sleep_avg = requant(bonus, CHILD_PENALTY);
        p.o1_mut().sleep_avg = requant(bonus, PARENT_PENALTY);
        child.o1_mut().prio = effective_prio(child.o1_mut().static_prio, child.o1_mut().sleep_avg);
    }

    fn enqueue(&mut self, e: &mut TaskEntity, task: T, flags: EnqueueFlags, now: u64) {
        debug_assert!(!e.se.on_rq, "O(1) enqueue: already queued");
        self.clock = self.clock.max(now);
        if flags.wakeup && !flags.initial {
            self.recalc_task_prio(e, now);
        }
        if flags.wakeup || flags.initial {
            e.o1_mut().timestamp = now;
        }
        self.push(e, task, self.active, true);
        self.nr_running += 1;
        self.load += e.se.load.weight;
        e.se.on_rq = true;
    }

    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        debug_assert!(e.se.on_rq, "O(1) dequeue: not queued");
        if !e.se.on_rq {
            return None;
        }
        e.se.on_rq = false;
        self.nr_running -= 1;
        self.load -= e.se.load.weight;
        let node = std::mem::replace(&mut e.o1_mut().node, NIL);
        if node == NIL {
            // The current task goes to sleep.
            self.curr = None;
            self.charge_run(e);
            None
        } else {
            Some(
                self.unlink(
                    usize::from(e.o1_mut().array),
                    usize::from(e.o1_mut().prio),
                    node,
                )
                .0,
            )
        }
    }

    #[inline]
    fn pick_next(&mut self, _skip: Option<&TaskEntity>) -> Option<T> {
        debug_assert!(self.curr.is_none(), "O(1) pick: put_prev first");
        if self.arrays[self.active].nr_active == 0 {
            if self.arrays[1 - self.active].nr_active == 0 {
                return None;
            }
            self.active = 1 - self.active;
            self.expired_timestamp = None;
            self.best_expired_prio = MAX_PRIO as u8;
        }
        let a = &mut self.arrays[self.active];
        let idx = a.first_set()?;
        let list = &mut a.lists[idx];
        let (task, _) = self.slab.pop_front(list)?;
        if list.is_empty() {
            a.bitmap[idx / 64] &= !(1 << (idx % 64));
        }
        a.nr_active -= 1;
        self.curr = Some(Curr::default());
        Some(task)
    }

    #[inline]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        self.clock = self.clock.max(now);
        e.o1_mut().node = NIL;
        e.o1_mut().timestamp = now;
        e.se.exec_start = now;
        e.se.prev_sum_exec_runtime = e.se.sum_exec_runtime;
    }

    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        let c = self.curr.take().unwrap_or_default();
        let active = self.active;
        if c.expired {
            // scheduler_tick() at slice end.
            e.o1_mut().prio = effective_prio(e.o1_mut().static_prio, e.o1_mut().sleep_avg);
            e.o1_mut().time_slice = task_timeslice(e.o1_mut().static_prio);
            e.o1_mut().first_time_slice = false;
            if self.expired_timestamp.is_none() {
                self.expired_timestamp = Some(self.clock);
            }
            let to_expired = !e.o1_mut().interactive() || self.expired_starving(e);
            self.charge_run(e);
            if to_expired {
                self.best_expired_prio = self.best_expired_prio.min(e.o1_mut().static_prio);
                self.push(e, task, 1 - active, true);
            } else {
                self.push(e, task, active, true);
            }
        } else {
            self.charge_run(e);
            if c.yielded {
                self.push(e, task, 1 - active, true);
            } else {
                // RR among equals goes to the tail; a preempted task keeps
                // its place at the head.
                self.push(e, task, active, c.rr);
            }
        }
    }

    fn yield_task(&mut self, _e: &mut TaskEntity) {
        if let Some(c) = &mut self.curr {
            c.yielded = true;
        }
    }

    #[inline]
    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        let delta = match now.checked_sub(e.se.exec_start) {
            Some(d) if d > 0 => d,
            _ => return,
        };
        self.clock = self.clock.max(now);
        e.se.exec_start = now;
        e.se.sum_exec_runtime = e.se.sum_exec_runtime.wrapping_add(delta);
        if !e.se.on_rq || e.o1_mut().node != NIL {
            return;
        }
        let before = e.o1_mut().time_slice;
        let after = before.saturating_sub(delta);
        e.o1_mut().time_slice = after;
        let Some(c) = &mut self.curr else {
            return;
        };
        if after == 0 {
            c.expired = true;
        } else if e.o1_mut().interactive() {
            let full = task_timeslice(e.o1_mut().static_prio);
            let gran = timeslice_granularity(e.o1_mut().sleep_avg);
            let used_before = full.saturating_sub(before) / gran;
            let used_after = full.saturating_sub(after) / gran;
            if used_after != used_before && after >= gran {
                c.rr = true;
            }
        }
    }

    #[inline]
    fn check_preempt_tick(&self, _curr: &TaskEntity) -> bool {
        self.curr
            .is_some_and(|c| c.expired || (c.rr && self.nr_running > 1))
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        wakee.policy != SchedPolicy::Batch && wakee.o1().prio < curr.o1().prio
    }

    fn migrate_out(&mut self, _e: &mut TaskEntity) {}

    fn migrate_in(&mut self, _e: &mut TaskEntity) {}

    fn pop_coldest(&mut self) -> Option<T> {
        // move_tasks(): expired array first (cache-cold), best level, tail.
        for array in [1 - self.active, self.active] {
            if let Some(idx) = self.arrays[array].first_set() {
                let tail = self.arrays[array].lists[idx].tail;
                let (t, w) = self.unlink(array, idx, tail);
                self.nr_running -= 1;
                self.load -= w;
                return Some(t);
            }
        }
        None
    }

    fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for array in 0..2 {
            for idx in 0..MAX_PRIO {
                while let Some((t, w)) = self.slab.pop_front(&mut self.arrays[array].lists[idx]) {
                    self.load -= w;
                    out.push(t);
                }
            }
            self.arrays[array].bitmap = [0; BITMAP_WORDS];
            self.arrays[array].nr_active = 0;
        }
        self.nr_running = usize::from(self.curr.is_some());
        out
    }

    fn coldest(&self) -> Option<&T> {
        for array in [1 - self.active, self.active] {
            if let Some(idx) = self.arrays[array].first_set() {
                let tail = self.arrays[array].lists[idx].tail;
                return Some(&self.slab.get(tail).0);
            }
        }
        None
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        let c = self.curr?;
        if c.expired || c.rr {
            return Some(0);
        }
        if self.nr_running <= 1 {
            return None;
        }
        let mut left = curr.o1().time_slice;
        if curr.o1().interactive() {
            // Time to the next TIMESLICE_GRANULARITY boundary.
            let full = task_timeslice(curr.o1().static_prio);
            let gran = timeslice_granularity(curr.o1().sleep_avg);
            let used = full.saturating_sub(curr.o1().time_slice);
            let to_boundary = gran - used % gran;
            // update_curr() requeues there only if a granule is left (a
            // charge ending 1 ns past the boundary must leave one).
            if curr.o1().time_slice.saturating_sub(to_boundary) > gran {
                left = left.min(to_boundary);
            }
        }
        Some(left)
    }

    fn nr_running(&self) -> usize {
        self.nr_running
    }

    fn nr_queued(&self) -> usize {
        self.nr_running - usize::from(self.curr.is_some())
    }

    fn load_weight(&self) -> u64 {
        self.load
    }
}
