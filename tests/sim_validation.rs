//! Validation of the simulator against the real executor on 2 CPUs: the
//! same pinned CPU-bound workload gives the same CPU shares (within 5
//! points) in both, under CFS and EEVDF.
//!
//! Shares are measured by the runtime's own accounting
//! (`sum_exec_runtime` from `Runtime::task_metrics`) over a window, as
//! ratios on each CPU, so the result does not depend on how fast the
//! machine is. Placement is fixed by affinity (the executor's balancer is
//! not `sched::balance`, see the `sim` module docs), so this checks the
//! classes and the accounting, which both engines share. The wakeup-latency
//! comparison, which needs real timing, is `examples/sim_validate.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos::sim::{Costs, Sim, SimConfig, Workload};
use greenos::{CpuSet, Policy};

/// `(cpu, nice)` of each always-runnable task.
const TASKS: [(usize, i32); 5] = [(0, 0), (0, 5), (1, 0), (1, 0), (1, 10)];

fn workload() -> Workload {
    let mut text = String::from("name = \"validation\"\n");
    for (i, (cpu, nice)) in TASKS.iter().enumerate() {
        text.push_str(&format!(
            "[[group]]\nname = \"t{i}\"\ncount = 1\nnice = {nice}\naffinity = \"{cpu}\"\nburst = \"inf\"\n"
        ));
    }
    Workload::parse(&text).unwrap()
}

/// Each task's share of its own CPU.
fn per_cpu_shares(cpu_ns: &[u64]) -> Vec<f64> {
    TASKS
        .iter()
        .zip(cpu_ns)
        .map(|(&(cpu, _), &ns)| {
            let total: u64 = TASKS
                .iter()
                .zip(cpu_ns)
                .filter(|((c, _), _)| *c == cpu)
                .map(|(_, &n)| n)
                .sum();
            ns as f64 / total.max(1) as f64
        })
        .collect()
}

fn simulated(policy: Policy) -> Vec<f64> {
    let mut cfg = SimConfig::new(policy);
    cfg.duration_ns = 2_000_000_000;
    cfg.costs = Costs::ZERO;
    let r = Sim::from_desc("core:2 pu:1", &workload(), cfg)
        .unwrap()
        .run();
    per_cpu_shares(&r.tasks.iter().map(|t| t.cpu_ns).collect::<Vec<_>>())
}

fn real(policy: Policy) -> Vec<f64> {
    let rt = greenos::Runtime::builder()
        .workers(2)
        .policy(policy)
        .topology(greenos::Topology::synthetic("core:2 pu:1").unwrap())
        .pin_workers(false)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut pids = Vec::new();
    for (i, &(cpu, nice)) in TASKS.iter().enumerate() {
        let mut set = CpuSet::new();
        set.set(cpu);
        let stop = stop.clone();
        let b = greenos::task::Builder::new()
            .name(format!("t{i}"))
            .nice(nice)
            .affinity(set);
        let h = rt
            .spawn_with(b, move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..200u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(k));
                    }
                    greenos::maybe_yield();
                }
                x
            })
            .unwrap();
        pids.push(h.task().pid());
        handles.push(h);
    }
    let sample = |rt: &greenos::Runtime| -> Vec<u64> {
        let m = rt.task_metrics();
        pids.iter()
            .map(|p| {
                m.iter()
                    .find(|t| t.pid == *p)
                    .map_or(0, |t| t.sum_exec_runtime)
            })
            .collect()
    };
    std::thread::sleep(Duration::from_millis(100));
    let a = sample(&rt);
    std::thread::sleep(Duration::from_millis(800));
    let b = sample(&rt);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let delta: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
    per_cpu_shares(&delta)
}

#[test]
fn shares_match_the_real_executor_on_two_cpus() {
    for policy in [Policy::Cfs, Policy::Eevdf] {
        let sim = simulated(policy);
        // The weights say 0.754 / 0.246 on CPU 0 and 0.475 / 0.475 / 0.051
        // on CPU 1: check the simulator first, then the executor against it.
        let want = [0.7535, 0.2465, 0.4745, 0.4745, 0.0510];
        for (s, w) in sim.iter().zip(want) {
            assert!(
                (s - w).abs() < 0.01,
                "{policy:?}: sim {sim:?} vs weights {want:?}"
            );
        }
        let real = real(policy);
        eprintln!("{policy:?}: per-CPU shares sim {sim:.3?} real {real:.3?}");
        for (i, (s, r)) in sim.iter().zip(&real).enumerate() {
            assert!(
                (s - r).abs() < 0.05,
                "{policy:?} task {i}: sim {s:.3} real {r:.3}\nsim  {sim:?}\nreal {real:?}"
            );
        }
    }
}
