//! Yield switch: two tasks on ONE worker each call `yield_now()` N times.
//! Every yield should hand the CPU to the other task, so total time / 2N is
//! the cost of one task switch.
//!
//! A scheduler may legally return from a yield without switching (e.g. when
//! the caller is still the best candidate), which would make this a benchmark
//! of a no-op. So each task also counts how often the other task ran since
//! its own last yield (a relaxed load and store on a shared word, the same in
//! every implementation); if fewer than 95% of the yields switched, the cell
//! carries a note saying so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

pub fn spec() -> Spec {
    Spec {
        key: "yield",
        title: "yield switch, 1 worker",
        unit: "ns/switch",
        // Yields per task.
        n: Sizes {
            quick: 200_000,
            full: 2_000_000,
        },
        // sched_yield costs a syscall and a kernel switch.
        n_override: &[(
            Imp::Threads,
            Sizes {
                quick: 50_000,
                full: 500_000,
            },
        )],
        heavy: false,
        imps: &Imp::ALL,
        run,
    }
}

/// The same yield switch with event recording on (`Builder::trace`): the
/// tracing overhead is this row over the greenos cell of `yield`.
pub fn spec_traced() -> Spec {
    Spec {
        key: "yield_traced",
        title: "yield switch, 1 worker, tracing on",
        imps: &[Imp::Greenos],
        run: |_, p| greenos_with(p, true),
        ..spec()
    }
}

fn run(imp: Imp, p: &Params) -> Sample {
    match imp {
        Imp::Greenos => greenos(p),
        Imp::Tokio => tokio(p),
        Imp::May => may(p),
        Imp::Threads => threads(p),
    }
}

/// Who ran last; each task compares it with its own id after every yield.
#[derive(Default)]
struct Turn(AtomicUsize);

impl Turn {
    /// Records that `me` is running; true if the other task ran since.
    #[inline]
    fn switched_to(&self, me: usize) -> bool {
        if self.0.load(Ordering::Relaxed) != me {
            self.0.store(me, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Builds the figure from the elapsed time and the per-task switch counts.
fn sample(elapsed: Duration, n: u64, switched: u64) -> Sample {
    let yields = 2 * n;
    let pct = 100.0 * switched as f64 / yields as f64;
    // Rounded to 5% so that the notes of different runs can be merged.
    let note = (pct < 95.0).then(|| {
        format!(
            "only ~{:.0}% of yields switched to the other task",
            (pct / 5.0).round() * 5.0
        )
    });
    Sample::ns_per(elapsed, yields).with_note(note)
}

pub fn greenos(p: &Params) -> Sample {
    greenos_with(p, false)
}

fn greenos_with(p: &Params, trace: bool) -> Sample {
    let mut b = greenos::Runtime::builder().workers(1);
    if trace {
        b = b.trace(greenos::trace::TraceConfig::default());
    }
    let rt = b.build().expect("build greenos runtime");
    let round = |n: u64| {
        rt.block_on(move || {
            let turn = Arc::new(Turn::default());
            let task = |me: usize| {
                let turn = Arc::clone(&turn);
                move || {
                    let mut switched = 0u64;
                    for _ in 0..n {
                        greenos::yield_now();
                        switched += u64::from(turn.switched_to(me));
                    }
                    switched
                }
            };
            let start = Instant::now();
            let a = greenos::spawn(task(1));
            let b = greenos::spawn(task(2));
            let switched = a.join().expect("task a") + b.join().expect("task b");
            (start.elapsed(), switched)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    let (elapsed, switched) = round(p.n);
    sample(elapsed, p.n, switched)
}

pub fn tokio(p: &Params) -> Sample {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build tokio runtime");
    let round = |n: u64| {
        rt.block_on(async move {
            let turn = Arc::new(Turn::default());
            let task = |me: usize| {
                let turn = Arc::clone(&turn);
                async move {
                    let mut switched = 0u64;
                    for _ in 0..n {
                        tokio::task::yield_now().await;
                        switched += u64::from(turn.switched_to(me));
                    }
                    switched
                }
            };
            let start = Instant::now();
            let a = tokio::spawn(task(1));
            let b = tokio::spawn(task(2));
            let switched = a.await.expect("task a") + b.await.expect("task b");
            (start.elapsed(), switched)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    let (elapsed, switched) = round(p.n);
    sample(elapsed, p.n, switched)
}

pub fn may(p: &Params) -> Sample {
    may::config().set_workers(1);
    let round = |n: u64| {
        let turn = Arc::new(Turn::default());
        let task = move |me: usize| {
            let turn = Arc::clone(&turn);
            move || {
                let mut switched = 0u64;
                for _ in 0..n {
                    may::coroutine::yield_now();
                    switched += u64::from(turn.switched_to(me));
                }
                switched
            }
        };
        // The driver is itself a coroutine, so both tasks are spawned from the
        // worker as in the other implementations.
        may::go!(move || {
            let start = Instant::now();
            let a = may::go!(task(1));
            let b = may::go!(task(2));
            let switched = a.join().expect("task a") + b.join().expect("task b");
            (start.elapsed(), switched)
        })
        .join()
        .expect("may driver")
    };
    if p.warmup {
        round(p.warmup_n());
    }
    let (elapsed, switched) = round(p.n);
    sample(elapsed, p.n, switched)
}

/// Two OS threads pinned to the same CPU calling `sched_yield`.
pub fn threads(p: &Params) -> Sample {
    let cpu = crate::os::allowed_cpus()[0];
    let round = |n: u64| {
        let turn = Arc::new(Turn::default());
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let spawn = |me: usize| {
            let turn = Arc::clone(&turn);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                crate::os::pin_current_thread(cpu).expect("pin thread");
                barrier.wait();
                let mut switched = 0u64;
                for _ in 0..n {
                    std::thread::yield_now();
                    switched += u64::from(turn.switched_to(me));
                }
                switched
            })
        };
        let a = spawn(1);
        let b = spawn(2);
        barrier.wait();
        let start = Instant::now();
        let switched = a.join().expect("thread a") + b.join().expect("thread b");
        (start.elapsed(), switched)
    };
    if p.warmup {
        round(p.warmup_n());
    }
    let (elapsed, switched) = round(p.n);
    sample(elapsed, p.n, switched)
}
