//! One mixed workload under each fair policy (CFS, EEVDF, O(1), O(N)), on
//! one worker CPU:
//!
//! - four CPU-bound tasks at nice −5, 0, 5, 10 (they call `maybe_yield`
//!   between small units of work), and
//! - one interactive task that sleeps 9 ms, then runs 1 ms, in a loop.
//!
//! Printed per policy: each CPU-bound task's share of the CPU-bound time
//! (the runtime's own accounting, `Task::cpu_time`) next to its weight share
//! (what CFS and EEVDF aim for), the interactive task's latency p50/p99
//! measured two ways — from the end of its 9 ms sleep to running again
//! (what the task sees: the timer's delivery plus the wait in the run
//! queue) and, from the runtime's trace, from its wakeup to its switch-in
//! (the scheduler's part alone, `perf sched latency`'s measure) — its CPU
//! time, and the CPU's context switches. The `EEVDF*` row repeats EEVDF with the
//! interactive task requesting a 0.1 ms slice (`Builder::slice`).
//!
//! Run: `cargo run --release --example policies [-- SECONDS [SLEEP_US
//! RUN_US]]` (default 3 s per policy and the 9 ms / 1 ms cycle above;
//! `-- 2 500 50` runs a task that sleeps 0.5 ms and runs 50 µs, within
//! its slice). Wall-clock measurements on a shared machine: other load
//! shows up as latency and is charged to whichever task was running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::task::Builder;
use greenos::trace::TraceConfig;
use greenos::Policy;

const NICES: [i32; 4] = [-5, 0, 5, 10];

struct Outcome {
    hog_ns: Vec<u64>,
    lat_us: Vec<f64>,
    interactive_ns: u64,
    /// Wakeup (timer fired) to switch-in of the interactive task, from the
    /// runtime's trace.
    wake_us: Vec<f64>,
    switches: u64,
}

/// The interactive task's cycle: it sleeps `sleep`, then runs `burst`.
#[derive(Clone, Copy)]
struct Cycle {
    sleep: Duration,
    burst: Duration,
}

fn run(policy: Policy, slice: Option<Duration>, wall: Duration, cycle: Cycle) -> Outcome {
    let rt = greenos::Runtime::builder()
        .workers(1)
        .policy(policy)
        .trace(TraceConfig::new(1 << 20))
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let (hog_ns, lat_us, interactive_ns, ipid) = rt.block_on(|| {
        let hogs: Vec<_> = NICES
            .iter()
            .map(|&nice| {
                let stop = stop.clone();
                Builder::new()
                    .name(format!("hog{nice}"))
                    .nice(nice)
                    .spawn(move || {
                        let mut x = 1u64;
                        while !stop.load(Ordering::Relaxed) {
                            for i in 0..256u64 {
                                x = std::hint::black_box(x.wrapping_mul(6364136223846793005) ^ i);
                            }
                            greenos::maybe_yield();
                        }
                        x
                    })
                    .expect("spawn")
            })
            .collect();
        let s = stop.clone();
        let mut ib = Builder::new().name("interactive");
        if let Some(sl) = slice {
            ib = ib.slice(sl);
        }
        let interactive = ib
            .spawn(move || {
                let mut lat = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    let due = Instant::now() + cycle.sleep;
                    greenos::sleep(cycle.sleep);
                    lat.push(Instant::now().saturating_duration_since(due).as_secs_f64() * 1e6);
                    let until = Instant::now() + cycle.burst;
                    while Instant::now() < until {
                        greenos::maybe_yield();
                    }
                }
                lat
            })
            .expect("spawn");
        greenos::sleep(wall);
        stop.store(true, Ordering::Relaxed);
        let itask = interactive.task().clone();
        let lat = interactive.join().expect("interactive");
        let hog_ns = hogs
            .into_iter()
            .map(|h| {
                let t = h.task().clone();
                h.join().expect("hog");
                t.cpu_time().as_nanos() as u64
            })
            .collect::<Vec<_>>();
        (hog_ns, lat, itask.cpu_time().as_nanos() as u64, itask.pid())
    });
    let tr = rt.trace().expect("tracing on");
    let wake_us = tr
        .wakeup_latencies()
        .into_iter()
        .filter(|w| w.pid == ipid.0)
        .map(|w| w.latency_ns as f64 / 1e3)
        .collect();
    let switches = rt.metrics().cpus.iter().map(|c| c.switches).sum();
    Outcome {
        hog_ns,
        lat_us,
        interactive_ns,
        wake_us,
        switches,
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let wall = Duration::from_secs_f64(secs);
    let arg_us = |i: usize, default: u64| {
        Duration::from_micros(
            std::env::args()
                .nth(i)
                .and_then(|s| s.parse().ok())
                .unwrap_or(default),
        )
    };
    let cycle = Cycle {
        sleep: arg_us(2, 9_000),
        burst: arg_us(3, 1_000),
    };
    let weights: Vec<f64> = NICES
        .iter()
        .map(|&n| greenos::sched::SCHED_PRIO_TO_WEIGHT[(n + 20) as usize] as f64)
        .collect();
    let wsum: f64 = weights.iter().sum();
    println!(
        "one worker, {secs} s per policy; the interactive task sleeps {} us, runs {} us; \
         shares of the CPU-bound tasks' time",
        cycle.sleep.as_micros(),
        cycle.burst.as_micros()
    );
    print!("{:<7}", "policy");
    for (n, w) in NICES.iter().zip(&weights) {
        print!("{:>18}", format!("nice {n} ({:.1}%)", 100.0 * w / wsum));
    }
    println!(
        "{:>12}{:>12}{:>12}{:>12}{:>14}{:>10}",
        "lat p50 us", "lat p99 us", "w->r p50", "w->r p99", "interact. ms", "switches"
    );
    let rows = [
        (Policy::Cfs, None, "CFS"),
        (Policy::Eevdf, None, "EEVDF"),
        (Policy::Eevdf, Some(Duration::from_micros(100)), "EEVDF*"),
        (Policy::O1, None, "O(1)"),
        (Policy::ON, None, "O(N)"),
    ];
    for (policy, slice, name) in rows {
        let mut o = run(policy, slice, wall, cycle);
        let total: u64 = o.hog_ns.iter().sum();
        print!("{name:<7}");
        for ns in &o.hog_ns {
            print!("{:>17.1}%", 100.0 * *ns as f64 / total.max(1) as f64);
        }
        let p50 = percentile(&mut o.lat_us, 0.5);
        let p99 = percentile(&mut o.lat_us, 0.99);
        let w50 = percentile(&mut o.wake_us, 0.5);
        let w99 = percentile(&mut o.wake_us, 0.99);
        println!(
            "{:>12.0}{:>12.0}{:>12.0}{:>12.0}{:>14.1}{:>10}",
            p50,
            p99,
            w50,
            w99,
            o.interactive_ns as f64 / 1e6,
            o.switches
        );
    }
    println!("EEVDF*: the interactive task requests a 0.1 ms slice (Builder::slice)");
}
