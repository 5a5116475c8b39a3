//! Makespan under imbalance: `4 × W` CPU-bound tasks (W = workers), all
//! spawned by one task on CPU 0, each doing the same fixed work (a chain of
//! multiply-adds the compiler cannot elide, split into chunks). The figure
//! is the makespan — spawn of the first task to the join of the last — as a
//! percentage of the ideal `N × work / W`. The ideal is measured, not
//! computed, right before and after each run (the shorter counts) and
//! under the same conditions: W OS
//! threads, pinned to distinct CPUs, each doing `N / W` tasks' work back to
//! back (a perfect static partition with no runtime in the way). 100 is perfect balance; the
//! issue's target is greenos within 110.
//!
//! Every implementation does the same work. greenos tasks call
//! `maybe_yield()` between chunks (how CPU-bound greenos code is written: a
//! cheap check that lets the tick preempt it); tokio and may tasks just run,
//! as CPU-bound code on them usually does. greenos's spawner is pinned to
//! CPU 0 and its children may run anywhere; tokio and may spawn from one of
//! their workers (neither can pin).

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

/// Multiply-adds per chunk (about 5 µs on the development VM).
const CHUNK: u64 = 20_000;

pub fn spec() -> Spec {
    Spec {
        key: "makespan",
        title: "makespan, 4/CPU tasks x {n} chunks from CPU 0 (% of ideal)",
        unit: "% ideal",
        n: Sizes {
            quick: 10_000,
            full: 30_000,
        },
        n_override: &[],
        heavy: false,
        imps: &[Imp::Greenos, Imp::Tokio, Imp::May],
        run,
    }
}

fn run(imp: Imp, p: &Params) -> Sample {
    let workers = p.workers();
    let tasks = 4 * workers as u64;
    let chunks = p.n;
    if p.warmup {
        let _ = measure(imp, workers, tasks, (chunks / 10).max(1));
    }
    // The ideal is measured before and after the run and the shorter one
    // kept: a one-off stall of the partition (first touch, a neighbour's
    // burst) must not flatter the runtime.
    let before = time_partitioned(workers, tasks, chunks);
    let makespan = measure(imp, workers, tasks, chunks);
    let after = time_partitioned(workers, tasks, chunks);
    let ideal = before.min(after).as_secs_f64();
    Sample {
        value: 100.0 * makespan.as_secs_f64() / ideal,
        note: None,
    }
    .with_note(Some(format!(
        "{tasks} tasks on {workers} workers: makespan {:.1} ms, ideal {:.1} ms",
        makespan.as_secs_f64() * 1e3,
        ideal * 1e3
    )))
}

/// One task's work: `chunks` chunks, `between` called after each.
fn work(chunks: u64, mut between: impl FnMut()) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15u64);
    for _ in 0..chunks {
        for _ in 0..CHUNK {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        x = black_box(x);
        between();
    }
    x
}

/// The ideal: `workers` OS threads, each doing `tasks / workers` tasks'
/// work in a row.
fn time_partitioned(workers: usize, tasks: u64, chunks: u64) -> Duration {
    let per = tasks / workers as u64;
    let cpus = crate::os::allowed_cpus();
    let t = Instant::now();
    let hs: Vec<_> = (0..workers)
        .map(|i| {
            // One thread per CPU, as the workers are: the OS scheduler must
            // not stack two of them on one CPU.
            let cpu = cpus.get(i % cpus.len().max(1)).copied();
            std::thread::spawn(move || {
                if let Some(c) = cpu {
                    let _ = crate::os::pin_current_thread(c);
                }
                for _ in 0..per {
                    black_box(work(chunks, || {}));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("partition thread");
    }
    t.elapsed()
}

fn measure(imp: Imp, workers: usize, tasks: u64, chunks: u64) -> Duration {
    match imp {
        Imp::Greenos => greenos(workers, tasks, chunks),
        Imp::Tokio => tokio(workers, tasks, chunks),
        Imp::May => may(workers, tasks, chunks),
        Imp::Threads => unreachable!("no OS-thread makespan row"),
    }
}

fn greenos(workers: usize, tasks: u64, chunks: u64) -> Duration {
    let rt = greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("build greenos runtime");
    let all = greenos::CpuSet::all(workers);
    rt.block_on(move || {
        greenos::task::Builder::new()
            .affinity(greenos::CpuSet::from_iter([0]))
            .spawn(move || {
                let start = Instant::now();
                let hs: Vec<_> = (0..tasks)
                    .map(|_| {
                        greenos::task::Builder::new()
                            .affinity(all.clone())
                            .spawn(move || {
                                work(chunks, || {
                                    greenos::maybe_yield();
                                })
                            })
                            .expect("spawn")
                    })
                    .collect();
                for h in hs {
                    black_box(h.join().expect("join"));
                }
                start.elapsed()
            })
            .expect("spawn driver")
            .join()
            .expect("driver")
    })
}

fn tokio(workers: usize, tasks: u64, chunks: u64) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .expect("build tokio runtime");
    rt.block_on(rt.spawn(async move {
        let start = Instant::now();
        let hs: Vec<_> = (0..tasks)
            .map(|_| tokio::spawn(async move { work(chunks, || {}) }))
            .collect();
        for h in hs {
            black_box(h.await.expect("join"));
        }
        start.elapsed()
    }))
    .expect("driver task")
}

fn may(workers: usize, tasks: u64, chunks: u64) -> Duration {
    may::config().set_workers(workers);
    may::go!(move || {
        let start = Instant::now();
        let hs: Vec<_> = (0..tasks)
            .map(|_| may::go!(move || work(chunks, || {})))
            .collect();
        for h in hs {
            black_box(h.join().expect("join"));
        }
        start.elapsed()
    })
    .join()
    .expect("may driver")
}
