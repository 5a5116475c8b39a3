//! Prints the machine's topology (as `lstopo --of console` would) and the
//! scheduling domains a runtime builds on it (as the kernel logs them).
//!
//! ```text
//! cargo run --example topology                                   # this machine
//! cargo run --example topology -- --synthetic "numa:2 core:4 pu:2"
//! cargo run --example topology -- --synthetic "pack:2 numa:2 l3:1 core:8 pu:2" --workers 8
//! cargo run --example topology -- --compact                      # Placement::Compact
//! cargo run --features hwloc --example topology                  # through hwloc
//! ```
//!
//! A synthetic machine may be larger than this one: its runtime CPUs are
//! pinned round-robin onto the real CPUs, so it still runs.

use greenos::sched::domains::DomainsDebug;
use greenos::{Placement, Runtime, Topology};

fn usage() -> ! {
    eprintln!(
        "usage: topology [--synthetic \"<hwloc synthetic description>\"] [--workers N] [--compact]"
    );
    std::process::exit(2);
}

fn main() {
    let mut synthetic = None;
    let mut workers = None;
    let mut placement = Placement::Spread;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--synthetic" => synthetic = Some(args.next().unwrap_or_else(|| usage())),
            "--workers" => {
                workers = Some(
                    args.next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--compact" => placement = Placement::Compact,
            _ => usage(),
        }
    }
    let topology = match &synthetic {
        Some(d) => Topology::synthetic(d),
        None => Topology::detect(),
    };
    let topology = match topology {
        Ok(t) => t,
        Err(e) => {
            // The typed error says what is wrong with the description.
            eprintln!("topology: {e}");
            std::process::exit(1);
        }
    };
    println!("# Topology ({:?})", topology.source());
    print!("{topology}");

    let mut b = Runtime::builder()
        .topology(topology)
        .placement(placement.clone());
    if let Some(n) = workers {
        b = b.workers(n);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("topology: building the runtime: {e}");
            std::process::exit(1);
        }
    };
    println!();
    println!(
        "# {} runtime CPUs, placement {placement:?} (default count here: {})",
        rt.workers(),
        greenos::topology::default_worker_count()
    );
    for cpu in 0..rt.workers() {
        let pu = rt.cpu_pu(cpu).unwrap_or(0);
        let p = rt.topology().pus()[pu];
        println!(
            "CPU{cpu}: PU L#{pu} (P#{}) core {} LLC {} package {} node {}; worker pinned to OS CPU {}",
            p.os_index,
            p.core,
            p.llc,
            p.package,
            p.node,
            rt.pinned_os_cpu(cpu)
                .map_or_else(|| "-".to_owned(), |c| c.to_string())
        );
    }
    println!();
    println!("# Scheduling domains");
    print!("{}", DomainsDebug::new(&rt.domains(), rt.workers()));

    // The runtime really runs on it: one task per CPU reports where it ran.
    let n = rt.workers();
    let ran = rt.block_on(|| {
        let hs: Vec<_> = (0..n)
            .map(|cpu| {
                let set: greenos::CpuSet = [cpu].into_iter().collect();
                greenos::task::Builder::new()
                    .affinity(set)
                    .spawn(greenos::current_cpu)
                    .expect("spawn")
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("join"))
            .collect::<Vec<_>>()
    });
    assert_eq!(ran, (0..n).collect::<Vec<_>>());
    println!();
    println!("# one task pinned to each of the {n} CPUs ran there");
}
