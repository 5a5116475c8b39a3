//! Compares the simulator with the real executor on 2 CPUs: CPU shares of
//! pinned CPU-bound tasks, and the ordering of the four policies by the
//! wakeup latency of sleepers running beside a CPU hog.
//!
//! ```text
//! cargo run --release --example sim_validate [-- --ms 1000 --runs 3]
//! ```
//!
//! Each policy runs `--runs` times on each side, interleaved (the
//! simulator with seeds 1, 2, ...; the sleepers' sleeps are drawn
//! uniformly from 1.5–2.5 ms on both sides, so no run depends on the
//! sleepers falling into lockstep, as exact periods made them in the
//! simulator). Two policies are ordered on a side only when their ranges
//! over the runs do not overlap; otherwise they are tied there (the runs
//! cannot tell them apart). The orders agree when no pair is ordered one
//! way in the simulator and the other way on the executor.
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
/// The sleepers' sleep is drawn uniformly from this range on both sides.
const SLEEP_LO_US: u64 = 1_500;
const SLEEP_HI_US: u64 = 2_500;

fn workload() -> Workload {
    let mut text = String::from("name = \"latency\"\n");
    for cpu in 0..2 {
        text.push_str(&format!(
            "[[group]]\nname = \"hog{cpu}\"\ncount = 1\naffinity = \"{cpu}\"\nburst = \"inf\"\n\
             [[group]]\nname = \"sleepers{cpu}\"\ncount = 2\naffinity = \"{cpu}\"\n\
             burst = \"const({BURST_US}us)\"\nsleep = \"uniform({SLEEP_LO_US}us, {SLEEP_HI_US}us)\"\n"
        ));
    }
    Workload::parse(&text).unwrap()
}

/// Mean sleeper latency, ns.
fn simulated(policy: Policy, ms: u64, seed: u64) -> f64 {
    let mut cfg = SimConfig::new(policy);
    cfg.seed = seed;
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
fn real(policy: Policy, ms: u64, run: u64) -> (f64, f64) {
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
        for k in 0..2u64 {
            // A sleeper's own xorshift stream (never 0).
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(run * 4 + cpu as u64 * 2 + k + 1) | 1;
            let s = stop.clone();
            let late = late.clone();
            let b = greenos::task::Builder::new().affinity(set.clone());
            let h = rt
                .spawn_with(b, move || {
                    let mut rng = seed;
                    while !s.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(BURST_US) {
                            greenos::maybe_yield();
                        }
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let want = Duration::from_micros(
                            SLEEP_LO_US + rng % (SLEEP_HI_US - SLEEP_LO_US + 1),
                        );
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

/// Min, median and max of `v` (not empty).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// `a` is below `b` beyond the spread of the runs: the whole of `a`'s range
/// lies under `b`'s.
fn below(a: &[f64], b: &[f64]) -> bool {
    spread(a).2 < spread(b).0
}

/// The policies by median, grouped into tiers: neighbours whose ranges
/// overlap are tied ("CFS = O(N) < EEVDF < O(1)").
fn tiers(v: &[(Policy, Vec<f64>)]) -> String {
    let mut v: Vec<&(Policy, Vec<f64>)> = v.iter().collect();
    v.sort_by(|a, b| spread(&a.1).1.total_cmp(&spread(&b.1).1));
    let mut out = String::from(v[0].0.name());
    let mut top = spread(&v[0].1).2;
    for w in v.windows(2) {
        let (lo, _, hi) = spread(&w[1].1);
        out.push_str(if top < lo { " < " } else { " = " });
        out.push_str(w[1].0.name());
        top = top.max(hi);
    }
    out
}

fn main() {
    let mut ms = 1000;
    let mut runs = 3u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ms" => ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(ms),
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(runs)
                    .max(1)
            }
            _ => {}
        }
    }
    println!(
        "2 CPUs, per CPU: 1 hog + 2 sleepers ({BURST_US} us burst, {SLEEP_LO_US}-{SLEEP_HI_US} us \
         sleep), {ms} ms, {runs} runs per policy and side; median (min-max) of the runs' means"
    );
    println!(
        "{:<7} {:>24} {:>24} {:>20}",
        "policy", "sim latency us", "real latency us", "real oversleep us"
    );
    let policies = [Policy::Cfs, Policy::Eevdf, Policy::O1, Policy::ON];
    let (mut sim, mut exe, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for p in policies {
        sim.push((p, Vec::new()));
        exe.push((p, Vec::new()));
        over.push(Vec::new());
    }
    for run in 0..runs {
        for (i, &p) in policies.iter().enumerate() {
            sim[i].1.push(simulated(p, ms, run + 1) / 1e3);
            let (l, o) = real(p, ms, run);
            exe[i].1.push(l / 1e3);
            over[i].push(o / 1e3);
        }
    }
    let cell = |v: &[f64]| {
        let (lo, mid, hi) = spread(v);
        format!("{mid:.1} ({lo:.1}-{hi:.1})")
    };
    for (i, p) in policies.iter().enumerate() {
        println!(
            "{:<7} {:>24} {:>24} {:>20}",
            p.name(),
            cell(&sim[i].1),
            cell(&exe[i].1),
            cell(&over[i])
        );
    }
    println!("order by latency, sim:  {}", tiers(&sim));
    println!("order by latency, real: {}", tiers(&exe));
    let (mut both, mut one, mut against) = (0, 0, Vec::new());
    for i in 0..policies.len() {
        for j in i + 1..policies.len() {
            let order = |v: &[(Policy, Vec<f64>)]| {
                if below(&v[i].1, &v[j].1) {
                    Some(true)
                } else if below(&v[j].1, &v[i].1) {
                    Some(false)
                } else {
                    None
                }
            };
            match (order(&sim), order(&exe)) {
                (Some(a), Some(b)) if a == b => both += 1,
                (Some(a), Some(_)) => {
                    let (lo, hi) = if a { (i, j) } else { (j, i) };
                    against.push(format!("{} < {}", policies[lo].name(), policies[hi].name()));
                }
                (Some(_), None) | (None, Some(_)) => one += 1,
                (None, None) => {}
            }
        }
    }
    println!(
        "pairs ordered the same way on both sides: {both}; ordered on one side, tied on the \
         other: {one}; ordered the opposite way: {}",
        against.len()
    );
    println!(
        "same order: {}",
        if against.is_empty() {
            "yes".to_owned()
        } else {
            format!("no (the simulator has {})", against.join(", "))
        }
    );
}
