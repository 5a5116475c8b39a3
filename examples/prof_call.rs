//! Profiling aid: null L4-style call round trips between two tasks on one
//! worker, with the direct process switch (`WaitQueue::wake_one_and_wait`)
//! and through the run queue (`wake_one` + `wait`). Prints ns per round trip.
//! Run: `cargo run --release --example prof_call -- [N]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use greenos::wait::WaitQueue;

#[derive(Default)]
struct Ch {
    req: WaitQueue,
    rep: WaitQueue,
    has_req: AtomicBool,
    has_rep: AtomicBool,
}

fn step(wait_q: &WaitQueue, wake_q: &WaitQueue, flag: &AtomicBool, direct: bool) {
    let mut first = true;
    while !flag.load(Ordering::Acquire) {
        if first && direct {
            let _ = wait_q.wake_one_and_wait(wake_q, || !flag.load(Ordering::Acquire), None);
        } else {
            if first {
                wake_q.wake_one();
            }
            let _ = wait_q.wait(|| !flag.load(Ordering::Acquire), None);
        }
        first = false;
    }
    flag.store(false, Ordering::Relaxed);
}

fn run(n: u64, direct: bool) -> f64 {
    let rt = greenos::Runtime::builder().workers(1).build().unwrap();
    rt.block_on(move || {
        let ch = Arc::new(Ch::default());
        let c = ch.clone();
        let server = greenos::spawn(move || {
            while !c.has_req.load(Ordering::Acquire) {
                let _ = c.req.wait(|| !c.has_req.load(Ordering::Acquire), None);
            }
            c.has_req.store(false, Ordering::Relaxed);
            for _ in 1..n {
                c.has_rep.store(true, Ordering::Release);
                step(&c.req, &c.rep, &c.has_req, direct);
            }
            c.has_rep.store(true, Ordering::Release);
            c.rep.wake_one();
        });
        let t = Instant::now();
        for _ in 0..n {
            ch.has_req.store(true, Ordering::Release);
            step(&ch.rep, &ch.req, &ch.has_rep, direct);
        }
        let el = t.elapsed();
        server.join().unwrap();
        el.as_nanos() as f64 / n as f64
    })
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    for _ in 0..3 {
        println!(
            "direct {:.0} ns/rt   run-queue {:.0} ns/rt",
            run(n, true),
            run(n, false)
        );
    }
}
