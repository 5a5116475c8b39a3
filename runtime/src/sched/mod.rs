//! The pure scheduler core: Linux's scheduling classes (CFS, EEVDF, O(1),
//! O(N), real-time FIFO/RR), nice weights and tunables, with no threads, no
//! clock reads and no locks.
//!
//! # What this module owns
//!
//! - [`class`]: the [`SchedClass`] trait every class implements (enqueue,
//!   dequeue, pick next, put previous, set next, update current, tick and
//!   wakeup preemption checks, fork, yield, migrate out/in) and the per-task
//!   [`TaskEntity`] holding every class's state. A new class is one file.
//! - [`rq`]: [`RunQueue`], one per CPU: the RT class above the fair class
//!   the runtime chose ([`Policy`]: [`FairRq`] is an enum, not a `dyn`, so
//!   the CFS path stays inlined), with RT throttling.
//! - [`eevdf`] (Linux 6.6+, augmented treap in `augtree.rs`), [`o1`]
//!   (2.6.0–2.6.22), [`on`] (2.4), [`rt`] (FIFO/RR, bandwidth): the other
//!   classes; `list.rs`: the slab-backed FIFO lists they share.
//! - [`policy`]: [`SchedPolicy`] and the pure, errno-carrying validation of
//!   `sched_setscheduler` / `setpriority` / spawn requests.
//!
//! - [`weights`]: the nice → weight / inverse-weight tables (core.c) and the
//!   weighted time conversion [`calc_delta_fair`].
//! - [`cfs`]: [`Tunables`] (with the kernel's CPU-count scaling),
//!   [`SchedEntity`] (per-task accounting, owned by the caller) and
//!   [`CfsRq`] (one per CPU: the ordered set of queued task handles,
//!   `min_vruntime`, load, and the kernel's decisions — placement, pick,
//!   tick and wakeup preemption, migration re-basing).
//! - [`pelt`]: per-entity load tracking (`SchedAvg`: load, runnable and util
//!   averages with the kernel's integer decay), attach/detach, `util_est`.
//!
//! It does not own tasks, time or threads. Time comes in as `u64` ns from
//! whoever drives it — the executor (one owner thread per queue) or the
//! simulator — and every decision is a function of the inputs, so both
//! drivers get identical answers. The only allocation is the `BTreeMap`
//! behind a queue with more than eight queued entities.
//!
//! # Invariants
//!
//! 1. The running ("current") entity is accounted in its queue's
//!    `nr_running` and `load` but is **not** in the tree, as in the kernel
//!    (`set_next_entity` takes it out, `put_prev_entity` puts it back).
//! 2. `min_vruntime` never decreases (wrap-safe); it follows
//!    `min(current, leftmost)`.
//! 3. The tree is ordered by `(vruntime, insertion sequence)`, so equal
//!    vruntimes run FIFO; the leftmost is found in O(1).
//! 4. A `SchedEntity` is `on_rq` exactly while some queue accounts it.
//!    While it travels between queues its `vruntime` is relative to the
//!    source's `min_vruntime` ([`CfsRq::migrate_out`] /
//!    [`CfsRq::migrate_in`]).
//! 5. All vruntime comparisons are wrap-safe signed differences
//!    ([`entity_before`]); the tree's order is exact for 2^63 virtual ns
//!    (see [`cfs`] for the bound and what happens past it).
//!
//! # Protocol (what the driver calls, in order)
//!
//! `now` is the driver's monotonic ns clock; `curr` is the running task's
//! entity, `h` a task handle (`T`, an `Arc` to the task in the executor).
//!
//! 1. **Spawn**: `child.vruntime = parent.vruntime` (after
//!    `update_curr(parent, now)`), then
//!    `enqueue_entity(child, h, EnqueueFlags::INITIAL)` (START_DEBIT).
//! 2. **Tick** (timer or preemption check): `update_curr(curr, now)`; if
//!    `check_preempt_tick(curr)`, raise `need_resched`.
//! 3. **Switch away from a runnable task** (preempted): `update_curr(curr,
//!    now)`; `put_prev_entity(curr, h)`; `let h2 = pick_next_entity(None)`;
//!    `set_next_entity(next, now)` on the entity behind `h2`.
//! 4. **Yield**: as 3, but `pick_next_entity(Some(curr))` — the yielder is
//!    the SKIP buddy and is passed over once if that is fair enough.
//! 5. **Block / exit**: `update_curr(curr, now)`; `dequeue_entity(curr)`
//!    (returns `None`: the current entity has no tree entry); then pick as
//!    in 3. Do not `put_prev_entity` a blocked entity.
//! 6. **Wakeup**: `update_curr(curr, now)` if a task runs;
//!    `enqueue_entity(se, h, EnqueueFlags::WAKEUP)` (sleeper credit); if
//!    `check_preempt_wakeup(curr, se)`, raise `need_resched`.
//! 7. **Migration** (balancer): pick a handle from the cold end
//!    (`iter().rev()`), then on the source `migrate_out(se)` and
//!    `dequeue_entity(se)` (or `pop_rightmost()`, then `migrate_out`); on the
//!    destination `migrate_in(se)` and `enqueue_entity(se, h, NONE)`. A
//!    waking task placed on another CPU: `migrate_out` against the queue it
//!    slept on, `migrate_in` + `enqueue_entity(.., WAKEUP)` on the new one.
//!
//! # Why not simpler
//!
//! - *Keep the current entity in the tree*: then every tick would re-key it
//!   (its vruntime grows while it runs), an erase plus insert per accounting
//!   point. The kernel leaves it out for this reason and so do we.
//! - *A plain `BTreeMap` as the tree*: put-prev plus pick on every switch
//!   would each cost a B-tree descent and node shuffle even with two tasks,
//!   more than the 35 ns switch budget. The first eight entries live inline
//!   in fixed slots with a packed order list instead (`timeline.rs`); the
//!   map is touched only beyond eight queued entities.
//! - *Store the `SchedEntity` in the queue*: the executor needs the entity
//!   while the task runs (off the tree) and while it sleeps (off every
//!   queue); lending `&mut SchedEntity` in and keeping only `(key, weight,
//!   handle)` in the tree avoids a second owner and any `RefCell`.
//!
//! # Example: two tasks, one switch
//!
//! ```
//! use greenos_runtime::sched::{CfsRq, EnqueueFlags, SchedEntity, Tunables};
//!
//! let mut rq = CfsRq::<&str>::new(Tunables::for_cpus(1));
//! let (mut a, mut b) = (SchedEntity::new(0), SchedEntity::new(0));
//! rq.enqueue_entity(&mut a, "a", EnqueueFlags::NONE);
//! rq.enqueue_entity(&mut b, "b", EnqueueFlags::NONE);
//!
//! assert_eq!(rq.pick_next_entity(None), Some("a"));
//! rq.set_next_entity(&mut a, 0);
//!
//! // 7 ms later the tick finds `a` past its 3 ms slice: switch to `b`.
//! rq.update_curr(&mut a, 7_000_000);
//! assert!(rq.check_preempt_tick(&a));
//! rq.put_prev_entity(&mut a, "a");
//! assert_eq!(rq.pick_next_entity(None), Some("b"));
//! rq.set_next_entity(&mut b, 7_000_000);
//! assert_eq!(rq.nr_running(), 2);
//! assert_eq!(rq.nr_queued(), 1);
//! ```

mod augtree;
pub mod balance;
pub mod cfs;
pub mod class;
pub mod eevdf;
mod list;
pub mod o1;
pub mod on;
pub mod pelt;
pub mod policy;
pub mod rq;
pub mod rt;
mod spill;
mod timeline;
pub mod weights;

pub use cfs::{
    entity_before, max_vruntime, min_vruntime, CfsRq, EnqueueFlags, SchedEntity, Tunables,
};
pub use class::{SchedClass, TaskEntity};
pub use eevdf::{EevdfRq, EevdfTunables};
pub use o1::O1Rq;
pub use on::{OnRq, OnTunables};
pub use policy::{
    check_setpriority, check_setscheduler, check_spawn, validate_nice, Policy, SchedError,
    SchedPolicy, SchedTarget,
};
pub use rq::{FairRq, RunQueue};
pub use rt::{RtBandwidth, RtRq};
pub use weights::{
    calc_delta, calc_delta_fair, LoadWeight, MAX_NICE, MIN_NICE, NICE_0_LOAD, SCHED_PRIO_TO_WEIGHT,
    SCHED_PRIO_TO_WMULT, WEIGHT_IDLEPRIO, WMULT_IDLEPRIO,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_classes;

/// Deterministic randomness for the scheduler's tests (no dependency).
#[cfg(test)]
pub(crate) mod test_rng {
    /// xorshift64*.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}
pub mod domains;
