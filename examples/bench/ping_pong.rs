//! Channel ping-pong: two tasks bounce a `u64` over two unbounded channels N
//! times (the pinger sends `v`, the ponger answers `v + 1`; after N round
//! trips the pinger must hold N). Figure: ns per round trip. Run on one
//! worker and on two workers:
//!
//! - greenos: `greenos::sync::mpsc::channel`; on two workers the tasks are
//!   placed by the scheduler, like the peers' (row `pingpong2`), and in the
//!   cross-CPU row (`pingpong2x`) pinned to CPU 0 and CPU 1 with
//!   `task::Builder::affinity`, with a note if `current_cpu()` shows the
//!   affinity was not honoured;
//! - tokio: `tokio::sync::mpsc::unbounded_channel` on current_thread (one
//!   worker) or multi_thread(2) (two); tokio cannot pin tasks;
//! - may: `may::sync::mpsc` with one or two workers; may cannot pin tasks;
//! - OS threads: `std::sync::mpsc` between two threads pinned to the same
//!   CPU (one worker) or to two CPUs (two workers).
//!
//! For tokio and may on two workers a note says whether both sides ended the
//! run on the same OS thread (then the figure is really a one-worker one).
//! Neither can pin a task, so the cross-CPU row compares greenos only with
//! OS threads pinned to two CPUs.
//!
//! Steady state: each pair first makes [`warm_up`](crate::harness::warm_up)
//! untimed round trips (as many as N), then N timed ones, in every
//! implementation. For greenos the untimed ones cover the start of a new
//! pair under CFS (the child's START_DEBIT; see `warm_up`).

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

pub fn spec_one_worker() -> Spec {
    Spec {
        key: "pingpong1",
        title: "channel ping-pong, 1 worker",
        unit: "ns/round trip",
        n: Sizes {
            quick: 100_000,
            full: 1_000_000,
        },
        n_override: &[(
            Imp::Threads,
            Sizes {
                quick: 20_000,
                full: 200_000,
            },
        )],
        heavy: false,
        imps: &Imp::ALL,
        run: |imp, p| run(imp, p, 1),
    }
}

pub fn spec_two_workers() -> Spec {
    Spec {
        key: "pingpong2",
        title: "channel ping-pong, 2 workers",
        run: |imp, p| run(imp, p, 2),
        ..spec_one_worker()
    }
}

pub fn spec_cross_cpu() -> Spec {
    Spec {
        key: "pingpong2x",
        title: "channel ping-pong, sides pinned to 2 CPUs",
        imps: &[Imp::Greenos, Imp::Threads],
        run: |imp, p| match imp {
            Imp::Greenos => greenos_on(p, 2, true),
            _ => threads(p, 2),
        },
        ..spec_one_worker()
    }
}

fn run(imp: Imp, p: &Params, workers: usize) -> Sample {
    match imp {
        Imp::Greenos => greenos(p, workers),
        Imp::Tokio => tokio(p, workers),
        Imp::May => may(p, workers),
        Imp::Threads => threads(p, workers),
    }
}

/// One figure from a timed round; `note` as the implementation found it.
fn sample(n: u64, (elapsed, note): (Duration, Option<String>)) -> Sample {
    Sample::ns_per(elapsed, n).with_note(note)
}

fn same_thread_note(pinger: ThreadId, ponger: ThreadId) -> Option<String> {
    (pinger == ponger).then(|| "both sides ended on the same worker thread".to_string())
}

// --- greenos ---------------------------------------------------------------

pub fn greenos(p: &Params, workers: usize) -> Sample {
    greenos_on(p, workers, false)
}

/// `pin`: put the pinger on CPU 0 and the ponger on CPU 1.
pub fn greenos_on(p: &Params, workers: usize, pin: bool) -> Sample {
    use greenos::sync::mpsc;

    let rt = greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("build greenos runtime");
    let round = |n: u64| {
        rt.block_on(move || {
            let (ping_tx, ping_rx) = mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = mpsc::channel::<u64>();
            // Pinned: pinger on CPU 0, ponger on CPU 1.
            let spawn_on = |cpu: usize| {
                let mut b = greenos::task::Builder::new();
                if pin {
                    let mut set = greenos::CpuSet::new();
                    set.set(cpu);
                    b = b.affinity(set);
                }
                b
            };
            let ponger = spawn_on(1)
                .spawn(move || {
                    let first = greenos::current_cpu();
                    for _ in 0..n + crate::harness::warm_up(n) {
                        let v = ping_rx.recv().expect("ping");
                        pong_tx.send(v + 1).expect("pong");
                    }
                    (first, greenos::current_cpu())
                })
                .expect("spawn ponger");
            let pinger = spawn_on(0)
                .spawn(move || {
                    let first = greenos::current_cpu();
                    let (start, end) = crate::harness::ping_rounds(n, |v| {
                        ping_tx.send(v).expect("ping");
                        pong_rx.recv().expect("pong")
                    });
                    let elapsed = end - start;
                    (elapsed, first, greenos::current_cpu())
                })
                .expect("spawn pinger");
            let (elapsed, ping_first, ping_last) = pinger.join().expect("pinger");
            let (pong_first, pong_last) = ponger.join().expect("ponger");
            let note = (pin && (ping_first, ping_last, pong_first, pong_last) != (0, 0, 1, 1))
                .then(|| {
                    format!(
                        "affinity not honoured: pinger on cpu {ping_first}->{ping_last}, \
                         ponger on cpu {pong_first}->{pong_last}"
                    )
                });
            (elapsed, note)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    sample(p.n, round(p.n))
}

// --- tokio -----------------------------------------------------------------

pub fn tokio(p: &Params, workers: usize) -> Sample {
    use tokio::sync::mpsc;

    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
    }
    .expect("build tokio runtime");
    let round = |n: u64| {
        rt.block_on(async move {
            let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<u64>();
            let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u64>();
            let ponger = tokio::spawn(async move {
                for _ in 0..n + crate::harness::warm_up(n) {
                    let v = ping_rx.recv().await.expect("ping");
                    pong_tx.send(v + 1).expect("pong");
                }
                std::thread::current().id()
            });
            let pinger = tokio::spawn(async move {
                let mut v = 0;
                // Untimed warm-up round trips by the same pair: the
                // figure is the steady state (module doc).
                for _ in 0..crate::harness::warm_up(n) {
                    ping_tx.send(v).expect("ping");
                    v = pong_rx.recv().await.expect("pong");
                }
                let start = Instant::now();
                for _ in 0..n {
                    ping_tx.send(v).expect("ping");
                    v = pong_rx.recv().await.expect("pong");
                }
                let elapsed = start.elapsed();
                assert_eq!(v, n + crate::harness::warm_up(n));
                (elapsed, std::thread::current().id())
            });
            let (elapsed, ping_thread) = pinger.await.expect("pinger");
            let pong_thread = ponger.await.expect("ponger");
            let note = if workers > 1 {
                same_thread_note(ping_thread, pong_thread)
            } else {
                None
            };
            (elapsed, note)
        })
    };
    if p.warmup {
        round(p.warmup_n());
    }
    sample(p.n, round(p.n))
}

// --- may -------------------------------------------------------------------

pub fn may(p: &Params, workers: usize) -> Sample {
    use may::sync::mpsc;

    may::config().set_workers(workers);
    let round = |n: u64| {
        may::go!(move || {
            let (ping_tx, ping_rx) = mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = mpsc::channel::<u64>();
            let ponger = may::go!(move || {
                for _ in 0..n + crate::harness::warm_up(n) {
                    let v = ping_rx.recv().expect("ping");
                    pong_tx.send(v + 1).expect("pong");
                }
                std::thread::current().id()
            });
            let pinger = may::go!(move || {
                let (start, end) = crate::harness::ping_rounds(n, |v| {
                    ping_tx.send(v).expect("ping");
                    pong_rx.recv().expect("pong")
                });
                let elapsed = end - start;
                (elapsed, std::thread::current().id())
            });
            let (elapsed, ping_thread) = pinger.join().expect("pinger");
            let pong_thread = ponger.join().expect("ponger");
            let note = if workers > 1 {
                same_thread_note(ping_thread, pong_thread)
            } else {
                None
            };
            (elapsed, note)
        })
        .join()
        .expect("may driver")
    };
    if p.warmup {
        round(p.warmup_n());
    }
    sample(p.n, round(p.n))
}

// --- OS threads ------------------------------------------------------------

pub fn threads(p: &Params, workers: usize) -> Sample {
    use std::sync::mpsc;

    let cpus = crate::os::allowed_cpus();
    let (ping_cpu, pong_cpu) = if workers > 1 && cpus.len() > 1 {
        (cpus[0], cpus[1])
    } else {
        (cpus[0], cpus[0])
    };
    let setup_note = (workers > 1 && cpus.len() < 2)
        .then(|| "only one usable CPU: both threads on it".to_string());
    let round = |n: u64| {
        let (ping_tx, ping_rx) = mpsc::channel::<u64>();
        let (pong_tx, pong_rx) = mpsc::channel::<u64>();
        let ponger = std::thread::spawn(move || {
            crate::os::pin_current_thread(pong_cpu).expect("pin ponger");
            for _ in 0..n + crate::harness::warm_up(n) {
                let v = ping_rx.recv().expect("ping");
                pong_tx.send(v + 1).expect("pong");
            }
            crate::os::current_os_cpu()
        });
        let pinger = std::thread::spawn(move || {
            crate::os::pin_current_thread(ping_cpu).expect("pin pinger");
            let (start, end) = crate::harness::ping_rounds(n, |v| {
                ping_tx.send(v).expect("ping");
                pong_rx.recv().expect("pong")
            });
            let elapsed = end - start;
            (elapsed, crate::os::current_os_cpu())
        });
        let (elapsed, ping_on) = pinger.join().expect("pinger");
        let pong_on = ponger.join().expect("ponger");
        let pin_note = (ping_on != Some(ping_cpu) || pong_on != Some(pong_cpu))
            .then(|| format!("pinning not honoured: {ping_on:?}/{pong_on:?}"));
        (elapsed, setup_note.clone().or(pin_note))
    };
    if p.warmup {
        round(p.warmup_n());
    }
    sample(p.n, round(p.n))
}
