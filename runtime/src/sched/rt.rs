//! The real-time class: `SCHED_FIFO` and `SCHED_RR` (reference §6), per
//! CPU, and RT bandwidth throttling.
//!
//! # Model
//!
//! - 100 FIFO lists indexed by kernel priority `99 − rt_priority` (0 best)
//!   and a 100-bit bitmap; pick = find-first-set, head of that list, O(1).
//! - A task becoming runnable goes to the tail of its list. A preempted
//!   task goes back to the **head** (it resumes before its equals); a
//!   yielding task, and an RR task whose 100 ms slice ran out, to the tail.
//! - FIFO has no slice. RR refills its slice at expiry and asks to switch
//!   only if another task shares its priority.
//! - Wakeup preemption: strictly higher RT priority.
//! - [`RtBandwidth`]: RT may use `runtime` ns of every `period` (950 ms of
//!   1 s by default, `sched_rt_runtime_us`/`sched_rt_period_us`); once over,
//!   RT is throttled until enough periods pass (`do_sched_rt_period_timer`:
//!   `rt_time −= min(rt_time, overrun × runtime)`). The run queue
//!   ([`RunQueue`](super::RunQueue)) applies it.

use super::cfs::EnqueueFlags;
use super::class::{SchedClass, TaskEntity};
use super::list::{ListHead, Slab, NIL};
use super::policy::SchedPolicy;

/// `RR_TIMESLICE`: 100 ms (`sched_rr_timeslice_ms`).
pub const RR_TIMESLICE_NS: u64 = 100_000_000;
/// `sched_rt_period_us` default: 1 s.
pub const DEFAULT_RT_PERIOD_NS: u64 = 1_000_000_000;
/// `sched_rt_runtime_us` default: 950 ms.
pub const DEFAULT_RT_RUNTIME_NS: u64 = 950_000_000;

const LEVELS: usize = 100;

/// The RT class's per-task state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtData {
    /// Remaining RR slice (ns); refilled at expiry.
    pub time_slice: u64,
    node: u32,
}

impl Default for RtData {
    fn default() -> Self {
        RtData {
            time_slice: RR_TIMESLICE_NS,
            node: NIL,
        }
    }
}

/// `99 − rt_priority`: list index, 0 best.
#[inline]
fn level(e: &TaskEntity) -> usize {
    LEVELS - 1 - usize::from(e.policy.rt_priority().clamp(1, 99))
}

#[derive(Clone, Copy, Debug)]
struct Curr {
    level: usize,
    /// RR slice expired: requeue at the tail.
    rr_expired: bool,
    yielded: bool,
}

/// The RT per-CPU queue.
#[derive(Debug)]
pub struct RtRq<T> {
    slab: Slab<T>,
    lists: Box<[ListHead; LEVELS]>,
    bitmap: [u64; 2],
    nr_queued: usize,
    curr: Option<Curr>,
    rr_timeslice_ns: u64,
}

impl<T> Default for RtRq<T> {
    fn default() -> Self {
        RtRq::new(RR_TIMESLICE_NS)
    }
}

impl<T> RtRq<T> {
    /// An empty queue with an RR slice of `rr_timeslice_ns`.
    pub fn new(rr_timeslice_ns: u64) -> RtRq<T> {
        RtRq {
            slab: Slab::default(),
            lists: Box::new([ListHead::EMPTY; LEVELS]),
            bitmap: [0; 2],
            nr_queued: 0,
            curr: None,
            rr_timeslice_ns,
        }
    }

    fn push(&mut self, e: &mut TaskEntity, task: T, tail: bool) {
        let l = level(e);
        e.rt.node = if tail {
            self.slab.push_back(&mut self.lists[l], task)
        } else {
            self.slab.push_front(&mut self.lists[l], task)
        };
        self.bitmap[l / 64] |= 1 << (l % 64);
        self.nr_queued += 1;
    }

    fn unlink(&mut self, l: usize, node: u32) -> T {
        let t = self.slab.remove(&mut self.lists[l], node);
        if self.lists[l].is_empty() {
            self.bitmap[l / 64] &= !(1 << (l % 64));
        }
        self.nr_queued -= 1;
        t
    }

    #[inline]
    fn first_set(&self) -> Option<usize> {
        if self.bitmap[0] != 0 {
            Some(self.bitmap[0].trailing_zeros() as usize)
        } else if self.bitmap[1] != 0 {
            Some(64 + self.bitmap[1].trailing_zeros() as usize)
        } else {
            None
        }
    }

    /// The best queued RT priority (1–99), if any.
    pub fn best_queued_priority(&self) -> Option<u8> {
        self.first_set().map(|l| (LEVELS - 1 - l) as u8)
    }
}

impl<T> SchedClass<T> for RtRq<T> {
    fn task_fork(&mut self, _parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        child.rt = RtData {
            time_slice: self.rr_timeslice_ns,
            node: NIL,
        };
    }

    fn enqueue(&mut self, e: &mut TaskEntity, task: T, _flags: EnqueueFlags, _now: u64) {
        debug_assert!(!e.se.on_rq, "rt enqueue: already queued");
        self.push(e, task, true);
        e.se.on_rq = true;
    }

    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        debug_assert!(e.se.on_rq, "rt dequeue: not queued");
        if !e.se.on_rq {
            return None;
        }
        e.se.on_rq = false;
        let node = std::mem::replace(&mut e.rt.node, NIL);
        if node == NIL {
            self.curr = None;
            None
        } else {
            Some(self.unlink(level(e), node))
        }
    }

    #[inline]
    fn pick_next(&mut self, _skip: Option<&TaskEntity>) -> Option<T> {
        debug_assert!(self.curr.is_none(), "rt pick: put_prev first");
        let l = self.first_set()?;
        let head = self.lists[l].head;
        let t = self.unlink(l, head);
        self.curr = Some(Curr {
            level: l,
            rr_expired: false,
            yielded: false,
        });
        Some(t)
    }

    #[inline]
    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        e.rt.node = NIL;
        e.se.exec_start = now;
        e.se.prev_sum_exec_runtime = e.se.sum_exec_runtime;
    }

    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        let c = self.curr.take();
        let tail = c.is_some_and(|c| c.rr_expired || c.yielded);
        self.push(e, task, tail);
    }

    fn yield_task(&mut self, _e: &mut TaskEntity) {
        if let Some(c) = &mut self.curr {
            c.yielded = true;
        }
    }

    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        let delta = match now.checked_sub(e.se.exec_start) {
            Some(d) if d > 0 => d,
            _ => return,
        };
        e.se.exec_start = now;
        e.se.sum_exec_runtime = e.se.sum_exec_runtime.wrapping_add(delta);
        if !matches!(e.policy, SchedPolicy::RoundRobin { .. }) || e.rt.node != NIL {
            return;
        }
        // task_tick_rt(): RR slice accounting.
        let mut left = e.rt.time_slice.saturating_sub(delta);
        if left == 0 {
            left = self.rr_timeslice_ns;
            if let Some(c) = &mut self.curr {
                c.rr_expired = true;
            }
        }
        e.rt.time_slice = left;
    }

    fn check_preempt_tick(&self, _curr: &TaskEntity) -> bool {
        // An expired RR task yields only to equals.
        self.curr
            .is_some_and(|c| c.rr_expired && !self.lists[c.level].is_empty())
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        wakee.policy.rt_priority() > curr.policy.rt_priority()
    }

    fn migrate_out(&mut self, _e: &mut TaskEntity) {}

    fn migrate_in(&mut self, _e: &mut TaskEntity) {}

    fn pop_coldest(&mut self) -> Option<T> {
        // The lowest priority queued task, from the tail.
        let l = (0..LEVELS).rev().find(|&l| !self.lists[l].is_empty())?;
        let tail = self.lists[l].tail;
        Some(self.unlink(l, tail))
    }

    fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.nr_queued);
        for l in 0..LEVELS {
            while let Some(t) = self.slab.pop_front(&mut self.lists[l]) {
                out.push(t);
            }
        }
        self.bitmap = [0; 2];
        self.nr_queued = 0;
        out
    }

    fn coldest(&self) -> Option<&T> {
        let l = (0..LEVELS).rev().find(|&l| !self.lists[l].is_empty())?;
        Some(self.slab.get(self.lists[l].tail))
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        let c = self.curr?;
        if c.rr_expired && !self.lists[c.level].is_empty() {
            return Some(0);
        }
        let rr = matches!(curr.policy, SchedPolicy::RoundRobin { .. });
        (rr && !self.lists[c.level].is_empty()).then_some(curr.rt.time_slice)
    }

    fn nr_running(&self) -> usize {
        self.nr_queued + usize::from(self.curr.is_some())
    }

    fn nr_queued(&self) -> usize {
        self.nr_queued
    }

    fn load_weight(&self) -> u64 {
        // RT tasks carry no fair load.
        0
    }
}

/// RT bandwidth control (`sched_rt_runtime_us` / `sched_rt_period_us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtBandwidth {
    /// RT runtime allowed per period; `None` disables throttling (`-1`).
    pub runtime_ns: Option<u64>,
    /// Period length.
    pub period_ns: u64,
    period_start: Option<u64>,
    rt_time: u64,
    throttled: bool,
    /// The latest `now` seen by [`account`](Self::account).
    last_now: u64,
}

impl Default for RtBandwidth {
    /// 950 ms per 1 s.
    fn default() -> Self {
        RtBandwidth::new(Some(DEFAULT_RT_RUNTIME_NS), DEFAULT_RT_PERIOD_NS)
    }
}

impl RtBandwidth {
    /// `runtime_ns` of RT per `period_ns` (`None`: unlimited).
    pub fn new(runtime_ns: Option<u64>, period_ns: u64) -> RtBandwidth {
        RtBandwidth {
            runtime_ns,
            period_ns: period_ns.max(1),
            period_start: None,
            rt_time: 0,
            throttled: false,
            last_now: 0,
        }
    }

    /// Ns from the latest accounted `now` to the end of the current
    /// period (when a throttled RT class is replenished).
    pub fn until_period_end(&self) -> u64 {
        let start = self.period_start.unwrap_or(self.last_now);
        (start + self.period_ns).saturating_sub(self.last_now)
    }

    /// Whether RT is throttled now.
    #[inline]
    pub fn throttled(&self) -> bool {
        self.throttled
    }

    /// RT time consumed in the current period (after replenishment).
    pub fn rt_time(&self) -> u64 {
        self.rt_time
    }

    /// Advances to `now` (replenishing whole elapsed periods) and charges
    /// `rt_delta` ns of RT execution (`update_curr_rt()` +
    /// `sched_rt_runtime_exceeded()` + the period timer).
    pub fn account(&mut self, now: u64, rt_delta: u64) {
        let Some(runtime) = self.runtime_ns else {
            return;
        };
        self.last_now = self.last_now.max(now);
        let start = *self.period_start.get_or_insert(now);
        if now >= start + self.period_ns {
            let overrun = (now - start) / self.period_ns;
            self.period_start = Some(start + overrun * self.period_ns);
            self.rt_time = self.rt_time.saturating_sub(overrun.saturating_mul(runtime));
            if self.rt_time < runtime {
                self.throttled = false;
            }
        }
        self.rt_time += rt_delta;
        if self.rt_time > runtime {
            self.throttled = true;
        }
    }
}
