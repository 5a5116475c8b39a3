//! Skynet (<https://github.com/atemerev/skynet>): every node spawns 10
//! children down to N leaves (1,111,111 tasks for N = 1M); a leaf returns its
//! number, a parent returns the sum of its children. The root's result must
//! be N(N-1)/2 (499999500000 for 1M) and is asserted. Figure: total ms, on
//! all usable CPUs; the child's peak RSS is reported too.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

const FANOUT: u64 = 10;

pub fn spec() -> Spec {
    Spec {
        key: "skynet",
        title: "skynet {n} leaves, all workers",
        unit: "ms",
        // Must be a power of FANOUT.
        n: Sizes {
            quick: 1_000_000,
            full: 1_000_000,
        },
        n_override: &[],
        heavy: true,
        imps: &[Imp::Greenos, Imp::Tokio, Imp::May],
        run,
    }
}

fn run(imp: Imp, p: &Params) -> Sample {
    assert!(is_power_of_fanout(p.n), "skynet size must be a power of 10");
    let elapsed = match imp {
        Imp::Greenos => greenos(p),
        Imp::Tokio => tokio(p),
        Imp::May => may(p),
        Imp::Threads => unreachable!("no OS-thread skynet"),
    };
    Sample::ms(elapsed)
}

fn is_power_of_fanout(mut n: u64) -> bool {
    while n > 1 && n % FANOUT == 0 {
        n /= FANOUT;
    }
    n == 1
}

fn check(leaves: u64, sum: u64) {
    assert_eq!(sum, leaves * (leaves - 1) / 2, "skynet sum");
}

/// Warm-up size: a tenth, still a power of ten.
fn warmup_leaves(p: &Params) -> u64 {
    (p.n / FANOUT).max(1)
}

// --- greenos ---------------------------------------------------------------

fn greenos_node(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / FANOUT;
    let children: Vec<_> = (0..FANOUT)
        .map(|i| {
            let child = num + i * step;
            greenos::spawn(move || greenos_node(child, step))
        })
        .collect();
    children
        .into_iter()
        .map(|h| h.join().expect("skynet child"))
        .sum()
}

pub fn greenos(p: &Params) -> Duration {
    let rt = greenos::Runtime::builder()
        .workers(p.workers())
        .build()
        .expect("build greenos runtime");
    let round = |leaves: u64| {
        rt.block_on(move || {
            let start = Instant::now();
            let sum = greenos_node(0, leaves);
            let elapsed = start.elapsed();
            check(leaves, sum);
            elapsed
        })
    };
    if p.warmup {
        round(warmup_leaves(p));
    }
    round(p.n)
}

// --- tokio -----------------------------------------------------------------

fn tokio_node(num: u64, size: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let step = size / FANOUT;
        let children: Vec<_> = (0..FANOUT)
            .map(|i| tokio::spawn(tokio_node(num + i * step, step)))
            .collect();
        let mut sum = 0;
        for h in children {
            sum += h.await.expect("skynet child");
        }
        sum
    })
}

pub fn tokio(p: &Params) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.workers())
        .build()
        .expect("build tokio runtime");
    let round = |leaves: u64| {
        rt.block_on(rt.spawn(async move {
            let start = Instant::now();
            let sum = tokio_node(0, leaves).await;
            let elapsed = start.elapsed();
            check(leaves, sum);
            elapsed
        }))
        .expect("driver task")
    };
    if p.warmup {
        round(warmup_leaves(p));
    }
    round(p.n)
}

// --- may -------------------------------------------------------------------

fn may_node(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / FANOUT;
    let children: Vec<_> = (0..FANOUT)
        .map(|i| {
            let child = num + i * step;
            may::go!(move || may_node(child, step))
        })
        .collect();
    children
        .into_iter()
        .map(|h| h.join().expect("skynet child"))
        .sum()
}

pub fn may(p: &Params) -> Duration {
    may::config().set_workers(p.workers());
    let round = |leaves: u64| {
        may::go!(move || {
            let start = Instant::now();
            let sum = may_node(0, leaves);
            let elapsed = start.elapsed();
            check(leaves, sum);
            elapsed
        })
        .join()
        .expect("may driver")
    };
    if p.warmup {
        round(warmup_leaves(p));
    }
    round(p.n)
}
