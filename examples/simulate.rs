//! Runs the deterministic scheduler simulator (`greenos::sim`) and prints
//! its report.
//!
//! ```text
//! cargo run --release --example simulate -- --topology "pack:2 numa:2 core:8 pu:2" \
//!     --policy eevdf --workload mixed_interactive --seconds 10
//! ```
//!
//! Options: `--topology DESC` (hwloc synthetic syntax), `--policy
//! cfs|eevdf|o1|on`, `--workload NAME|FILE` (a built-in name or a file in
//! the workload text format), `--seconds S` (simulated time limit),
//! `--seed N`, `--tick-us N`, `--buckets N`, `--cost-switch-ns N`,
//! `--cost-llc-ns N`, `--cost-cross-llc-ns N`, `--cost-numa-ns N`,
//! `--cost-wakeup-ns N`, `--no-costs`, `--json FILE`, `--svg FILE`,
//! `--tasks` (print every task), `--print-workload`.

use std::io;
use std::process::ExitCode;

use greenos::sim::{Costs, Sim, SimConfig, Workload, BUILTIN};
use greenos::Policy;

fn usage() -> String {
    format!(
        "usage: simulate [--topology DESC] [--policy cfs|eevdf|o1|on] [--workload NAME|FILE] \
         [--seconds S] [--seed N] [--tick-us N] [--buckets N] [--cost-switch-ns N] \
         [--cost-llc-ns N] [--cost-cross-llc-ns N] [--cost-numa-ns N] [--cost-wakeup-ns N] \
         [--no-costs] [--json FILE] [--svg FILE] [--tasks] [--print-workload]\n\
         built-in workloads: {}",
        BUILTIN.join(", ")
    )
}

fn parse_policy(s: &str) -> Option<Policy> {
    Some(match s.to_ascii_lowercase().as_str() {
        "cfs" => Policy::Cfs,
        "eevdf" => Policy::Eevdf,
        "o1" | "o(1)" => Policy::O1,
        "on" | "o(n)" => Policy::ON,
        _ => return None,
    })
}

fn run() -> io::Result<()> {
    let mut topology = String::from("pack:2 numa:2 core:8 pu:2");
    let mut workload = String::from("mixed_interactive");
    let mut cfg = SimConfig::new(Policy::Eevdf);
    cfg.duration_ns = 10_000_000_000;
    let mut json = None;
    let mut svg = None;
    let mut tasks = false;
    let mut print_workload = false;
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{m}\n{}", usage()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| bad(format!("{a} needs a value")));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("bad number {v:?}")))
        };
        match a.as_str() {
            "--topology" => topology = val()?,
            "--policy" => {
                let v = val()?;
                cfg.policy =
                    parse_policy(&v).ok_or_else(|| bad(format!("unknown policy {v:?}")))?;
            }
            "--workload" => workload = val()?,
            "--seconds" => {
                let v = val()?;
                let s: f64 = v.parse().map_err(|_| bad(format!("bad seconds {v:?}")))?;
                if !(s > 0.0 && s < 1e6) {
                    return Err(bad(format!("seconds out of range: {v}")));
                }
                cfg.duration_ns = (s * 1e9) as u64;
            }
            "--seed" => cfg.seed = num(val()?)?,
            "--tick-us" => cfg.tick_ns = num(val()?)? * 1_000,
            "--buckets" => cfg.buckets = num(val()?)? as usize,
            "--cost-switch-ns" => cfg.costs.context_switch_ns = num(val()?)?,
            "--cost-llc-ns" => cfg.costs.migrate_llc_ns = num(val()?)?,
            "--cost-cross-llc-ns" => cfg.costs.migrate_cross_llc_ns = num(val()?)?,
            "--cost-numa-ns" => cfg.costs.migrate_numa_ns = num(val()?)?,
            "--cost-wakeup-ns" => cfg.costs.remote_wakeup_ns = num(val()?)?,
            "--no-costs" => cfg.costs = Costs::ZERO,
            "--json" => json = Some(val()?),
            "--svg" => svg = Some(val()?),
            "--tasks" => tasks = true,
            "--print-workload" => print_workload = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            _ => return Err(bad(format!("unknown argument {a:?}"))),
        }
    }
    let w = if BUILTIN.contains(&workload.as_str()) {
        Workload::builtin(&workload)
    } else {
        let text = std::fs::read_to_string(&workload)?;
        Workload::parse(&text)
    }
    .map_err(|e| bad(e.to_string()))?;
    if print_workload {
        println!("{w}");
    }
    let sim = Sim::from_desc(&topology, &w, cfg).map_err(|e| bad(e.to_string()))?;
    let report = sim.run();
    print!("{report}");
    if tasks {
        println!(
            "\n{:>5} {:>5} {:>5} {:>7} {:>10} {:>8} {:>8} {:>6} {:>6}",
            "task", "group", "nice", "weight", "cpu ms", "share%", "wshare%", "migr", "sw"
        );
        for t in &report.tasks {
            println!(
                "{:>5} {:>5} {:>5} {:>7} {:>10.2} {:>8.3} {:>8.3} {:>6} {:>6}",
                t.id,
                t.group,
                t.nice,
                t.weight,
                t.cpu_ns as f64 / 1e6,
                100.0 * t.share,
                100.0 * t.weight_share,
                t.migrations,
                t.switches
            );
        }
    }
    if let Some(p) = json {
        std::fs::write(&p, report.to_json())?;
        println!("wrote {p}");
    }
    if let Some(p) = svg {
        std::fs::write(&p, report.to_svg())?;
        println!("wrote {p}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::FAILURE
        }
    }
}
