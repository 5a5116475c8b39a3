//! Pick cost per policy: what one scheduling decision costs as the run
//! queue grows, for the four fair classes — O(N) (Linux 2.4), O(1)
//! (2.6.0–2.6.22), CFS (2.6.23–6.5) and EEVDF (6.6+). greenos only: no peer
//! has interchangeable run queues, so the peer columns read `n/a`.
//!
//! One operation is what a CPU does at every switch, as in
//! `examples/pick_cost.rs`: `pick_next` + `set_next` + `update_curr` +
//! `put_prev` on one queue (`greenos::sched::FairRq`) holding N runnable
//! nice-0 tasks, the run time charged per pick pseudo-random in 1..=201 µs
//! (fixed xorshift seed) so that requeues land all over an ordered tree
//! rather than always at its far end. The queue is driven directly: no
//! threads, no clock reads inside it, so this is the data structures alone.
//! One row per (policy, N), N = 10, 1k, 10k (the workload size `n` is the
//! queue length, `--cell greenos:pick_cfs_1k --n 5000` picks another);
//! each repetition times one batch (about 5–20 ms) after an untimed
//! warm-up batch on the same queue.
//!
//! Expected shape: O(N) grows linearly (goodness over every task), O(1)
//! stays flat (bitmap find-first-set), CFS and EEVDF grow logarithmically.

use greenos::sched::Policy;

use crate::harness::{Imp, Params, Sample, Sizes, Spec};
use crate::pick_ops::{batch, setup};

/// The rows: policy, run-queue length, key.
const ROWS: [(Policy, u64, &str); 12] = [
    (Policy::ON, 10, "pick_on_10"),
    (Policy::ON, 1_000, "pick_on_1k"),
    (Policy::ON, 10_000, "pick_on_10k"),
    (Policy::O1, 10, "pick_o1_10"),
    (Policy::O1, 1_000, "pick_o1_1k"),
    (Policy::O1, 10_000, "pick_o1_10k"),
    (Policy::Cfs, 10, "pick_cfs_10"),
    (Policy::Cfs, 1_000, "pick_cfs_1k"),
    (Policy::Cfs, 10_000, "pick_cfs_10k"),
    (Policy::Eevdf, 10, "pick_eevdf_10"),
    (Policy::Eevdf, 1_000, "pick_eevdf_1k"),
    (Policy::Eevdf, 10_000, "pick_eevdf_10k"),
];

/// One spec per (policy, queue length), O(N) first.
pub fn specs() -> Vec<Spec> {
    ROWS.iter()
        .map(|&(policy, len, key)| Spec {
            key,
            title: title(policy),
            unit: "ns/pick",
            // The queue length: the same in quick and full mode (full mode
            // only repeats more).
            n: Sizes {
                quick: len,
                full: len,
            },
            n_override: &[],
            heavy: false,
            imps: &[Imp::Greenos],
            run: runner(policy),
        })
        .collect()
}

fn title(policy: Policy) -> &'static str {
    match policy {
        Policy::ON => "pick+requeue, O(N), {n} runnable tasks",
        Policy::O1 => "pick+requeue, O(1), {n} runnable tasks",
        Policy::Cfs => "pick+requeue, CFS, {n} runnable tasks",
        Policy::Eevdf => "pick+requeue, EEVDF, {n} runnable tasks",
    }
}

/// `Spec::run` is a plain `fn`: one non-capturing closure per policy.
fn runner(policy: Policy) -> fn(Imp, &Params) -> Sample {
    match policy {
        Policy::ON => |_, p| run(Policy::ON, p),
        Policy::O1 => |_, p| run(Policy::O1, p),
        Policy::Cfs => |_, p| run(Policy::Cfs, p),
        Policy::Eevdf => |_, p| run(Policy::Eevdf, p),
    }
}

fn run(policy: Policy, p: &Params) -> Sample {
    let len = p.n.max(1) as usize;
    let (mut q, mut es) = setup(policy, len);
    let mut now = 0;
    // Keep a batch near 5–20 ms whatever the cost per operation: O(N)
    // scans the whole queue at every pick.
    let iters = match policy {
        Policy::ON => (2_000_000 / len).clamp(50, 100_000),
        _ => 100_000,
    };
    if p.warmup {
        batch(&mut q, &mut es, &mut now, iters);
    }
    let ns = batch(&mut q, &mut es, &mut now, iters);
    Sample {
        value: ns as f64 / iters as f64,
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenos::sched::SchedClass;

    /// Every row has a unique key and measures a positive cost; each
    /// policy's queue keeps all its tasks through the batch.
    #[test]
    fn rows_run() {
        let specs = specs();
        let mut keys: Vec<&str> = specs.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ROWS.len());
        for policy in Policy::ALL {
            let (mut q, mut es) = setup(policy, 7);
            let mut now = 0;
            batch(&mut q, &mut es, &mut now, 100);
            assert_eq!(q.nr_running(), 7, "{}", policy.name());
            let s = run(
                policy,
                &Params {
                    n: 10,
                    warmup: false,
                    workers: None,
                },
            );
            assert!(s.value > 0.0, "{}", policy.name());
        }
    }
}
