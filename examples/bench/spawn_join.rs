//! Spawn + join: one task, itself running on a worker, spawns N trivial
//! tasks (task `i` returns `i`) on a runtime with all usable CPUs as workers,
//! then joins them all in spawn order and checks the sum. Figure: ns per
//! task; the child's peak RSS is reported too. All N handles are alive at
//! once, so this also measures how cheaply a runtime holds N finished (or
//! not yet started) tasks.
//!
//! OS threads run the same thing at a much smaller N (labelled in the table).

use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

pub fn spec() -> Spec {
    Spec {
        key: "spawn",
        title: "spawn+join {n} tasks, all workers",
        unit: "ns/task",
        n: Sizes {
            quick: 1_000_000,
            full: 1_000_000,
        },
        n_override: &[(
            Imp::Threads,
            Sizes {
                quick: 10_000,
                full: 10_000,
            },
        )],
        heavy: true,
        imps: &Imp::ALL,
        run,
    }
}

fn run(imp: Imp, p: &Params) -> Sample {
    let elapsed = match imp {
        Imp::Greenos => greenos(p),
        Imp::Tokio => tokio(p),
        Imp::May => may(p),
        Imp::Threads => threads(p),
    };
    Sample::ns_per(elapsed, p.n)
}

fn expected_sum(n: u64) -> u64 {
    n * (n - 1) / 2
}

pub fn greenos(p: &Params) -> Duration {
    let rt = greenos::Runtime::builder()
        .workers(p.workers())
        .build()
        .expect("build greenos runtime");
    let round = |n: u64| {
        rt.block_on(move || {
            let start = Instant::now();
            let handles: Vec<_> = (0..n).map(|i| greenos::spawn(move || i)).collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
            let elapsed = start.elapsed();
            assert_eq!(sum, expected_sum(n));
            elapsed
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

pub fn tokio(p: &Params) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.workers())
        .build()
        .expect("build tokio runtime");
    let round = |n: u64| {
        // `block_on` runs its future on this (non-worker) thread; spawn the
        // driver so that it, like the others, spawns from a worker.
        rt.block_on(rt.spawn(async move {
            let start = Instant::now();
            let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i })).collect();
            let mut sum = 0;
            for h in handles {
                sum += h.await.expect("join");
            }
            let elapsed = start.elapsed();
            assert_eq!(sum, expected_sum(n));
            elapsed
        }))
        .expect("driver task")
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

pub fn may(p: &Params) -> Duration {
    may::config().set_workers(p.workers());
    let round = |n: u64| {
        may::go!(move || {
            let start = Instant::now();
            let handles: Vec<_> = (0..n).map(|i| may::go!(move || i)).collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
            let elapsed = start.elapsed();
            assert_eq!(sum, expected_sum(n));
            elapsed
        })
        .join()
        .expect("may driver")
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

pub fn threads(p: &Params) -> Duration {
    let round = |n: u64| {
        let start = Instant::now();
        let handles: Vec<_> = (0..n).map(|i| std::thread::spawn(move || i)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
        let elapsed = start.elapsed();
        assert_eq!(sum, expected_sum(n));
        elapsed
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}
