//! Compares the simulator with the real executor on 2 CPUs: CPU shares of
//! pinned CPU-bound tasks, and the ordering of the four policies by the
//! wakeup latency of sleepers running beside a CPU hog.
//!
//! ```text
//! cargo run --release --example sim_validate [-- --ms 1000]
//! ```
//!
//! The real side depends on wall-clock timing (the sleepers' bursts are
//! timed busy loops) and on how loaded the host is, so this is a report,
//! not a test; `tests/sim_validation.rs` asserts the shares part.
//! Latency is compared as the mean delay from a sleeper's wakeup to its
//! running again — the simulator's wakeup latency, and on the executor the
//! same quantity from the runtime's trace (`Trace::wakeup_latencies`:
//! wakeup event to switch-in, `perf sched latency`'s measure). The
//! executor's oversleep (`elapsed − requested`) is printed beside it: it
//! adds the executor's timer delivery (timers fire at scheduling points;
//! the monitor interrupts a busy CPU for a due timer), which the
//! simulator's exact timers do not model.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::sim::{Costs, Sim, SimConfig, Workload};
use greenos::trace::TraceConfig;
use greenos::{CpuSet, Policy};

const BURST_US: u64 = 300;
const SLEEP_US: u64 = 2_000;

fn workload() -> Workload {
    let mut text = String::from("name = \"latency\"\n");
    for cpu in 0..2 {
        text.push_str(&format!(
            "[[group]]\nname = \"hog{cpu}\"\ncount = 1\naffinity = \"{cpu}\"\nburst = \"inf\"\n\
             [[group]]\nname = \"sleepers{cpu}\"\ncount = 2\naffinity = \"{cpu}\"\n\
             burst = \"const({BURST_US}us)\"\nsleep = \"const({SLEEP_US}us)\"\n"
        ));
    }
    Workload::parse(&text).unwrap()
}

/// Mean sleeper latency, ns.
fn simulated(policy: Policy, ms: u64) -> f64 {
    let mut cfg = SimConfig::new(policy);
    cfg.duration_ns = ms * 1_000_000;
    cfg.costs = Costs::default();
    let r = Sim::from_desc("core:2 pu:1", &workload(), cfg)
        .unwrap()
        .run();
    let (mut sum, mut n) = (0.0, 0u64);
    for g in r.groups.iter().filter(|g| g.name.starts_with("sleepers")) {
        sum += g.latency.mean_ns as f64 * g.latency.count as f64;
        n += g.latency.count;
    }
    sum / n.max(1) as f64
}

/// Mean sleeper wakeup latency from the trace and mean oversleep, ns.
fn real(policy: Policy, ms: u64) -> (f64, f64) {
    let rt = greenos::Runtime::builder()
        .workers(2)
        .policy(policy)
        .trace(TraceConfig::new(1 << 18))
        .topology(greenos::Topology::synthetic("core:2 pu:1").unwrap())
        .pin_workers(false)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut sleepers = Vec::new();
    let late = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false)));
    for cpu in 0..2 {
        let mut set = CpuSet::new();
        set.set(cpu);
        let s = stop.clone();
        let hog = greenos::task::Builder::new().affinity(set.clone());
        handles.push(
            rt.spawn_with(hog, move || {
                while !s.load(Ordering::Relaxed) {
                    for _ in 0..200 {
                        std::hint::black_box(0u64);
                    }
                    greenos::maybe_yield();
                }
            })
            .unwrap(),
        );
        for _ in 0..2 {
            let s = stop.clone();
            let late = late.clone();
            let b = greenos::task::Builder::new().affinity(set.clone());
            let h = rt
                .spawn_with(b, move || {
                    while !s.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(BURST_US) {
                            greenos::maybe_yield();
                        }
                        let want = Duration::from_micros(SLEEP_US);
                        let t = Instant::now();
                        greenos::sleep(want);
                        let over = t.elapsed().saturating_sub(want).as_nanos() as u64;
                        if late.2.load(Ordering::Relaxed) {
                            late.0.fetch_add(over, Ordering::Relaxed);
                            late.1.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .unwrap();
            sleepers.push(h.task().pid().0);
            handles.push(h);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    late.2.store(true, Ordering::Relaxed);
    let from = greenos::clock::now_ns();
    std::thread::sleep(Duration::from_millis(ms));
    let to = greenos::clock::now_ns();
    late.2.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let lat: Vec<u64> = rt
        .trace()
        .expect("tracing on")
        .wakeup_latencies()
        .into_iter()
        .filter(|w| sleepers.contains(&w.pid) && (from..to).contains(&w.woken_ns))
        .map(|w| w.latency_ns)
        .collect();
    let wake = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64;
    let over = late.0.load(Ordering::Relaxed) as f64 / late.1.load(Ordering::Relaxed).max(1) as f64;
    (wake, over)
}

fn rank(v: &[(Policy, f64)]) -> Vec<&'static str> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    v.iter().map(|(p, _)| p.name()).collect()
}

fn main() {
    let mut ms = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--ms" {
            ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(ms);
        }
    }
    println!(
        "2 CPUs, per CPU: 1 hog + 2 sleepers ({BURST_US} us burst, {SLEEP_US} us sleep), {ms} ms"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>18}",
        "policy", "sim mean us", "real mean us", "real oversleep us"
    );
    let (mut s, mut r) = (Vec::new(), Vec::new());
    for p in [Policy::Cfs, Policy::Eevdf, Policy::O1, Policy::ON] {
        let a = simulated(p, ms);
        let (b, over) = real(p, ms);
        println!(
            "{:<8} {:>16.1} {:>16.1} {:>18.1}",
            p.name(),
            a / 1e3,
            b / 1e3,
            over / 1e3
        );
        s.push((p, a));
        r.push((p, b));
    }
    let (rs, rr) = (rank(&s), rank(&r));
    println!("order by latency, sim:  {}", rs.join(" < "));
    println!("order by latency, real: {}", rr.join(" < "));
    println!("same order: {}", if rs == rr { "yes" } else { "no" });
}
