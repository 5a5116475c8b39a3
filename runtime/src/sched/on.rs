//! The O(N) scheduler of Linux 2.4 (reference §5.2), per CPU.
//!
//! # Model
//!
//! - One list of runnable tasks; the running task stays on it, as in 2.4.
//!   Woken and new tasks go to the head (`add_to_runqueue()` is a
//!   `list_add`).
//! - Every pick computes `goodness()` for **every** runnable task and takes
//!   the maximum, the first one winning ties:
//!   `counter + 20 − nice + PROC_CHANGE_PENALTY (15, if it last ran on this
//!   CPU) + 1 (same mm: all green tasks share one address space)`; 0 once
//!   the counter is spent; −1 for a task that just yielded (once).
//! - The tick takes one from the running task's `counter` per elapsed tick
//!   (time is charged in ns and converted at `hz`); at 0 it must switch.
//! - Epoch: when the best goodness is 0 (every runnable counter spent),
//!   **all** tasks, sleeping ones too, get `counter = counter/2 +
//!   NICE_TO_TICKS(nice)`. A pure queue cannot reach sleeping tasks, so the
//!   queue counts epochs and a waking task applies the recalculations it
//!   missed (the same arithmetic, in the same order; after ~40 of them the
//!   counter has converged, so at most 64 are replayed).
//! - Fork: the child gets half the parent's counter, rounded up; the
//!   parent keeps the other half (`do_fork()`).
//! - Wakeup preemption (`reschedule_idle()`): the wakee's goodness exceeds
//!   the running task's.
//!
//! `SCHED_IDLE` (which 2.4 did not have) is treated as nice 19 here;
//! `SCHED_BATCH` never wakeup-preempts.

use super::cfs::EnqueueFlags;
use super::class::{SchedClass, TaskEntity};
use super::list::{ListHead, Slab, NIL};
use super::policy::SchedPolicy;

/// `PROC_CHANGE_PENALTY` of i386 (2.4 `include/asm-i386/smp.h`): bonus for
/// a task that last ran on this CPU.
pub const PROC_CHANGE_PENALTY: i64 = 15;

/// `NICE_TO_TICKS(nice) = TICK_SCALE(20 − nice) + 1` for a kernel at `hz`
/// (2.4 `kernel/sched.c`): nice 0 is 41 ticks at HZ 1000, 6 at HZ 100.
pub fn nice_to_ticks(nice: i32, hz: u32) -> u32 {
    let x = (20 - nice.clamp(-20, 19)) as u32;
    let scaled = match hz {
        0..=199 => x >> 2,
        200..=399 => x >> 1,
        400..=799 => x,
        800..=1599 => x << 1,
        _ => x << 2,
    };
    scaled + 1
}

/// O(N)'s knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnTunables {
    /// Timer frequency: the tick is `1e9 / hz` ns (default 1000).
    pub hz: u32,
}

impl Default for OnTunables {
    fn default() -> Self {
        OnTunables { hz: 1000 }
    }
}

impl OnTunables {
    fn tick_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.hz.max(1))
    }
}

/// O(N)'s per-task state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnData {
    /// Remaining ticks of the current epoch (valid while off a queue; the
    /// queue's copy rules while on one).
    pub counter: u32,
    /// Ns run since the last whole tick was charged.
    tick_acc: u64,
    /// The queue epoch `counter` is up to date with.
    epoch: u64,
    /// Whether the task last ran on the queue it is on.
    ran_here: bool,
    node: u32,
}

impl OnData {
    /// A task O(N) has not counted yet.
    pub const UNSET: OnData = OnData {
        counter: 0,
        tick_acc: 0,
        epoch: 0,
        ran_here: false,
        node: NIL,
    };
}

impl Default for OnData {
    fn default() -> Self {
        OnData::UNSET
    }
}

#[derive(Debug)]
struct OnNode<T> {
    /// `None` while the task runs.
    task: Option<T>,
    counter: u32,
    nice: i32,
    weight: u64,
    here: bool,
}

/// The O(N) per-CPU queue.
#[derive(Debug)]
pub struct OnRq<T> {
    tunables: OnTunables,
    slab: Slab<OnNode<T>>,
    list: ListHead,
    /// Node of the running task (it stays on the list).
    curr: u32,
    load: u64,
    epoch: u64,
    /// Counter of the task last taken by `pop_coldest`, for `migrate_out`.
    popped: Option<u32>,
}

impl<T> Default for OnRq<T> {
    fn default() -> Self {
        OnRq::new(OnTunables::default())
    }
}

fn effective_nice(e: &TaskEntity) -> i32 {
    if e.policy == SchedPolicy::Idle {
        19
    } else {
        e.se.nice
    }
}

impl<T> OnRq<T> {
    /// An empty queue.
    pub fn new(tunables: OnTunables) -> OnRq<T> {
        OnRq {
            tunables,
            slab: Slab::default(),
            list: ListHead::EMPTY,
            curr: NIL,
            load: 0,
            epoch: 0,
            popped: None,
        }
    }

    /// Epochs (counter recalculations) so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    #[inline]
    fn goodness(n: &OnNode<T>) -> i64 {
        if n.counter == 0 {
            return 0;
        }
        i64::from(n.counter) + 20 - i64::from(n.nice)
            + if n.here { PROC_CHANGE_PENALTY } else { 0 }
            + 1
    }

    fn recalc(counter: u32, nice: i32, hz: u32) -> u32 {
        (counter >> 1) + nice_to_ticks(nice, hz)
    }

    /// Brings an off-queue counter up to this queue's epoch.
    fn catch_up(&self, e: &mut TaskEntity) {
        let missed = self.epoch.saturating_sub(e.on_mut().epoch).min(64);
        for _ in 0..missed {
            e.on_mut().counter =
                Self::recalc(e.on_mut().counter, effective_nice(e), self.tunables.hz);
        }
        e.on_mut().epoch = self.epoch;
    }

    fn recalculate_all(&mut self) {
        self.epoch += 1;
        let hz = self.tunables.hz;
        let ids: Vec<u32> = self.slab.ids(self.list).collect();
        for id in ids {
            let n = self.slab.get_mut(id);
            n.counter = Self::recalc(n.counter, n.nice, hz);
        }
    }

    fn curr_counter(&self, e: &TaskEntity) -> u32 {
        if self.curr != NIL && e.on().node == self.curr {
            self.slab.get(self.curr).counter
        } else {
            e.on().counter
        }
    }
}

impl<T> SchedClass<T> for OnRq<T> {
    fn task_fork(&mut self, parent: Option<&mut TaskEntity>, child: &mut TaskEntity) {
        *child.on_mut() = OnData {
            epoch: self.epoch,
            ..OnData::default()
        };
        match parent {
            Some(p) => {
                let pc = self.curr_counter(p);
                child.on_mut().counter = (pc + 1) >> 1;
                let keep = pc >> 1;
                p.on_mut().counter = keep;
                if self.curr != NIL && p.on_mut().node == self.curr {
                    self.slab.get_mut(self.curr).counter = keep;
                }
            }
            None => child.on_mut().counter = nice_to_ticks(effective_nice(child), self.tunables.hz),
        }
    }

    fn enqueue(&mut self, e: &mut TaskEntity, task: T, _flags: EnqueueFlags, _now: u64) {
        debug_assert!(!e.se.on_rq, "O(N) enqueue: already queued");
        self.catch_up(e);
        e.on_mut().node = self.slab.push_front(
            &mut self.list,
            OnNode {
                task: Some(task),
                counter: e.on_mut().counter,
                nice: effective_nice(e),
                weight: e.se.load.weight,
                here: e.on_mut().ran_here,
            },
        );
        self.load += e.se.load.weight;
        e.se.on_rq = true;
    }

    fn dequeue(&mut self, e: &mut TaskEntity) -> Option<T> {
        debug_assert!(e.se.on_rq, "O(N) dequeue: not queued");
        if !e.se.on_rq {
            return None;
        }
        e.se.on_rq = false;
        let node = std::mem::replace(&mut e.on_mut().node, NIL);
        if node == self.curr {
            self.curr = NIL;
        }
        let n = self.slab.remove(&mut self.list, node);
        self.load -= n.weight;
        e.on_mut().counter = n.counter;
        e.on_mut().epoch = self.epoch;
        n.task
    }

    fn pick_next(&mut self, skip: Option<&TaskEntity>) -> Option<T> {
        debug_assert!(self.curr == NIL, "O(N) pick: put_prev first");
        let skip = skip.map_or(NIL, |s| s.on().node);
        let best = loop {
            let mut best = NIL;
            let mut c = -1000i64;
            let mut id = self.list.head;
            while id != NIL {
                let n = self.slab.get(id);
                let g = if id == skip { -1 } else { Self::goodness(n) };
                if g > c {
                    c = g;
                    best = id;
                }
                id = self.slab.next(id);
            }
            if best == NIL {
                return None;
            }
            if c == 0 {
                self.recalculate_all();
                continue;
            }
            break best;
        };
        self.curr = best;
        self.slab.get_mut(best).task.take()
    }

    fn set_next(&mut self, e: &mut TaskEntity, now: u64) {
        e.se.exec_start = now;
        e.se.prev_sum_exec_runtime = e.se.sum_exec_runtime;
        e.on_mut().ran_here = true;
        if self.curr != NIL {
            let n = self.slab.get_mut(self.curr);
            n.here = true;
            e.on_mut().counter = n.counter;
        }
    }

    fn put_prev(&mut self, e: &mut TaskEntity, task: T) {
        debug_assert!(e.on_mut().node == self.curr, "O(N) put_prev: not current");
        let n = self.slab.get_mut(self.curr);
        n.task = Some(task);
        e.on_mut().counter = n.counter;
        self.curr = NIL;
    }

    fn update_curr(&mut self, e: &mut TaskEntity, now: u64) {
        let delta = match now.checked_sub(e.se.exec_start) {
            Some(d) if d > 0 => d,
            _ => return,
        };
        e.se.exec_start = now;
        e.se.sum_exec_runtime = e.se.sum_exec_runtime.wrapping_add(delta);
        let tick = self.tunables.tick_ns();
        e.on_mut().tick_acc += delta;
        let ticks = e.on_mut().tick_acc / tick;
        e.on_mut().tick_acc %= tick;
        if ticks > 0 && e.se.on_rq && self.curr != NIL && e.on_mut().node == self.curr {
            let n = self.slab.get_mut(self.curr);
            n.counter = n
                .counter
                .saturating_sub(u32::try_from(ticks).unwrap_or(u32::MAX));
            e.on_mut().counter = n.counter;
        }
    }

    fn check_preempt_tick(&self, _curr: &TaskEntity) -> bool {
        self.curr != NIL && self.slab.get(self.curr).counter == 0
    }

    fn check_preempt_wakeup(&self, curr: &TaskEntity, wakee: &TaskEntity) -> bool {
        if wakee.policy == SchedPolicy::Batch || self.curr == NIL || wakee.on().node == NIL {
            return false;
        }
        let _ = curr;
        Self::goodness(self.slab.get(wakee.on().node)) > Self::goodness(self.slab.get(self.curr))
    }

    fn migrate_out(&mut self, e: &mut TaskEntity) {
        // Only an entity just taken by pop_coldest (off the queue, still
        // naming its old node) picks up the counter saved there.
        if e.se.on_rq || e.on_mut().node == NIL {
            return;
        }
        if let Some(c) = self.popped.take() {
            e.on_mut().counter = c;
            e.on_mut().epoch = self.epoch;
            e.on_mut().node = NIL;
        }
    }

    fn migrate_in(&mut self, e: &mut TaskEntity) {
        // Counters do not depend on the queue; the epoch count does.
        e.on_mut().epoch = self.epoch;
        e.on_mut().ran_here = false;
    }

    fn pop_coldest(&mut self) -> Option<T> {
        let mut id = self.list.tail;
        if id == self.curr && id != NIL {
            id = self.slab.prev(id);
        }
        if id == NIL {
            return None;
        }
        let n = self.slab.remove(&mut self.list, id);
        self.load -= n.weight;
        self.popped = Some(n.counter);
        n.task
    }

    fn drain(&mut self) -> Vec<T> {
        let ids: Vec<u32> = self
            .slab
            .ids(self.list)
            .filter(|&i| i != self.curr)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let n = self.slab.remove(&mut self.list, id);
            self.load -= n.weight;
            out.extend(n.task);
        }
        out
    }

    fn coldest(&self) -> Option<&T> {
        let mut id = self.list.tail;
        if id == self.curr && id != NIL {
            id = self.slab.prev(id);
        }
        (id != NIL)
            .then(|| self.slab.get(id).task.as_ref())
            .flatten()
    }

    fn preempt_budget(&self, curr: &TaskEntity) -> Option<u64> {
        if self.curr == NIL || self.slab.len() <= 1 {
            return None;
        }
        let counter = u64::from(self.slab.get(self.curr).counter);
        Some((counter * self.tunables.tick_ns()).saturating_sub(curr.on().tick_acc))
    }

    fn nr_running(&self) -> usize {
        self.slab.len()
    }

    fn nr_queued(&self) -> usize {
        self.slab.len() - usize::from(self.curr != NIL)
    }

    fn load_weight(&self) -> u64 {
        self.load
    }
}
