//! The operation both pick-cost measurements time (`examples/pick_cost.rs`
//! and the suite's `pick_*` rows): a queue of N runnable nice-0 tasks, and
//! batches of pick + set_next + update_curr + put_prev with a pseudo-random
//! run time charged per pick (fixed xorshift seed, 1..=201 µs), so that
//! requeues land all over an ordered tree rather than always at its far end.

use std::hint::black_box;
use std::time::Instant;

use greenos::sched::{EnqueueFlags, FairRq, Policy, SchedClass, SchedPolicy, TaskEntity};

/// Largest run time charged per pick, above the 1 µs floor.
const MAX_STEP_NS: u64 = 200_000;

/// A queue of `len` runnable nice-0 tasks.
pub fn setup(policy: Policy, len: usize) -> (FairRq<u32>, Vec<TaskEntity>) {
    let mut q = FairRq::new(policy, 1);
    let mut es: Vec<TaskEntity> = Vec::with_capacity(len);
    for i in 0..len {
        let mut e = TaskEntity::new(0, SchedPolicy::Normal);
        q.task_fork(None, &mut e);
        es.push(e);
        q.enqueue(&mut es[i], i as u32, EnqueueFlags::INITIAL, 0);
    }
    (q, es)
}

/// `iters` pick + requeue operations; returns the elapsed ns.
pub fn batch(q: &mut FairRq<u32>, es: &mut [TaskEntity], now: &mut u64, iters: usize) -> u64 {
    // xorshift64: the same charge sequence for every policy and length.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ *now;
    let start = Instant::now();
    for _ in 0..iters {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let t = q.pick_next(None).expect("tasks are queued") as usize;
        let e = &mut es[t];
        q.set_next(e, *now);
        *now += 1_000 + rng % MAX_STEP_NS;
        q.update_curr(e, *now);
        q.put_prev(e, black_box(t as u32));
    }
    start.elapsed().as_nanos() as u64
}
