//! Message throughput: W independent ping-pong pairs on W workers (W = all
//! usable CPUs, or each count of `--workers` in the scaling runs). Each
//! pair bounces a `u64` N times over two unbounded channels; the figure is
//! wall time over all round trips of all pairs (ns per round trip,
//! aggregate), so its inverse is the machine's round-trip throughput.
//!
//! - greenos: `greenos::sync::mpsc`, tasks placed by the scheduler;
//! - tokio: `tokio::sync::mpsc::unbounded_channel`, multi-thread runtime
//!   (current-thread for one worker);
//! - may: `may::sync::mpsc`;
//! - OS threads: `std::sync::mpsc` between 2W threads (unpinned).
//!
//! Each pinger first makes [`warm_up`](crate::harness::warm_up) untimed
//! round trips; the figure is the window from the first timed start to the
//! last timed end (`timed_window`).

use std::time::{Duration, Instant};

/// From the first pair's timed start to the last pair's end: each pinger
/// times its `n` round trips after [`warm_up`](crate::harness::warm_up)
/// untimed ones (steady state, as in the other ping-pong rows). A pair that
/// starts late only widens the window.
fn timed_window(windows: &[(Instant, Instant)]) -> Duration {
    let start = windows.iter().map(|w| w.0).min().expect("a pair");
    let end = windows.iter().map(|w| w.1).max().expect("a pair");
    end - start
}

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

pub fn spec() -> Spec {
    Spec {
        key: "pairs",
        title: "ping-pong pairs, one per worker, all workers",
        unit: "ns/round trip (all pairs)",
        n: Sizes {
            quick: 50_000,
            full: 400_000,
        },
        n_override: &[(
            Imp::Threads,
            Sizes {
                quick: 10_000,
                full: 50_000,
            },
        )],
        heavy: false,
        imps: &Imp::ALL,
        run,
    }
}

fn run(imp: Imp, p: &Params) -> Sample {
    let w = p.workers();
    let elapsed = match imp {
        Imp::Greenos => greenos(p, w),
        Imp::Tokio => tokio(p, w),
        Imp::May => may(p, w),
        Imp::Threads => threads(p, w),
    };
    Sample::ns_per(elapsed, p.n * w as u64)
}

fn greenos(p: &Params, w: usize) -> Duration {
    use greenos::sync::mpsc;
    let rt = greenos::Runtime::builder()
        .workers(w)
        .build()
        .expect("build greenos runtime");
    let round = |n: u64| {
        rt.block_on(move || {
            let pairs: Vec<_> = (0..w)
                .map(|_| {
                    let (ping_tx, ping_rx) = mpsc::channel::<u64>();
                    let (pong_tx, pong_rx) = mpsc::channel::<u64>();
                    let ponger = greenos::spawn(move || {
                        while let Ok(v) = ping_rx.recv() {
                            if pong_tx.send(v + 1).is_err() {
                                break;
                            }
                        }
                    });
                    let pinger = greenos::spawn(move || {
                        crate::harness::ping_rounds(n, |v| {
                            ping_tx.send(v).expect("ping");
                            pong_rx.recv().expect("pong")
                        })
                    });
                    (pinger, ponger)
                })
                .collect();
            let mut windows = Vec::new();
            for (a, b) in pairs {
                windows.push(a.join().expect("pinger"));
                b.join().expect("ponger");
            }
            timed_window(&windows)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

fn tokio(p: &Params, w: usize) -> Duration {
    use tokio::sync::mpsc;
    let rt = if w == 1 {
        tokio::runtime::Builder::new_current_thread().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(w)
            .build()
    }
    .expect("build tokio runtime");
    let round = |n: u64| {
        rt.block_on(async move {
            let (mut hs, mut pingers) = (Vec::new(), Vec::new());
            for _ in 0..w {
                let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<u64>();
                let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u64>();
                hs.push(tokio::spawn(async move {
                    while let Some(v) = ping_rx.recv().await {
                        if pong_tx.send(v + 1).is_err() {
                            break;
                        }
                    }
                }));
                pingers.push(tokio::spawn(async move {
                    let mut v = 0;
                    for _ in 0..crate::harness::warm_up(n) {
                        ping_tx.send(v).expect("ping");
                        v = pong_rx.recv().await.expect("pong");
                    }
                    let start = Instant::now();
                    for _ in 0..n {
                        ping_tx.send(v).expect("ping");
                        v = pong_rx.recv().await.expect("pong");
                    }
                    assert_eq!(v, n + crate::harness::warm_up(n));
                    (start, Instant::now())
                }));
            }
            let mut windows = Vec::new();
            for h in pingers {
                windows.push(h.await.expect("pinger"));
            }
            for h in hs {
                h.await.expect("ponger");
            }
            timed_window(&windows)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

fn may(p: &Params, w: usize) -> Duration {
    use may::sync::mpsc;
    may::config().set_workers(w);
    let round = |n: u64| {
        let (mut hs, mut pingers) = (Vec::new(), Vec::new());
        for _ in 0..w {
            let (ping_tx, ping_rx) = mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = mpsc::channel::<u64>();
            hs.push(may::go!(move || {
                while let Ok(v) = ping_rx.recv() {
                    if pong_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            }));
            pingers.push(may::go!(move || {
                crate::harness::ping_rounds(n, |v| {
                    ping_tx.send(v).expect("ping");
                    pong_rx.recv().expect("pong")
                })
            }));
        }
        let windows: Vec<_> = pingers
            .into_iter()
            .map(|h| h.join().expect("pinger"))
            .collect();
        for h in hs {
            h.join().expect("ponger");
        }
        timed_window(&windows)
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

fn threads(p: &Params, w: usize) -> Duration {
    use std::sync::mpsc;
    let round = |n: u64| {
        let (mut hs, mut pingers) = (Vec::new(), Vec::new());
        for _ in 0..w {
            let (ping_tx, ping_rx) = mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = mpsc::channel::<u64>();
            hs.push(std::thread::spawn(move || {
                while let Ok(v) = ping_rx.recv() {
                    if pong_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            }));
            pingers.push(std::thread::spawn(move || {
                crate::harness::ping_rounds(n, |v| {
                    ping_tx.send(v).expect("ping");
                    pong_rx.recv().expect("pong")
                })
            }));
        }
        let windows: Vec<_> = pingers
            .into_iter()
            .map(|h| h.join().expect("pinger"))
            .collect();
        for h in hs {
            h.join().expect("ponger");
        }
        timed_window(&windows)
    };
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}
