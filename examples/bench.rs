//! greenos against its peers — tokio, may and OS threads — on four
//! workloads, in one run on one machine:
//!
//! | benchmark            | what is timed                                          |
//! |----------------------|--------------------------------------------------------|
//! | yield switch         | two tasks on one worker yield N times each; ns/switch  |
//! | spawn+join 1M        | one task spawns 1M trivial tasks, joins all; ns/task   |
//! | skynet 1M            | 10-ary task tree down to 1M leaves, sum checked; ms    |
//! | channel ping-pong    | a u64 bounced over two channels, 1 and 2 workers; ns/rt |
//! | shmring_*            | ShmRing vs rtrb, ArrayQueue, channels, pipe, socket (bench/shm_ring.rs) |
//! | ping-pong pairs      | one pair per worker, all workers; ns per round trip    |
//! | pick_*               | greenos only: pick+requeue per policy at 10/1k/10k tasks |
//!
//! Then the scaling runs: the throughput benchmarks (pairs, spawn, skynet)
//! at 1, 2, 4, ... workers (`--workers`), for every implementation, with
//! throughput and scaling efficiency per count (`--plot out.svg` draws the
//! curves; `--csv` / `--json` print everything for machines).
//!
//! ```text
//! cargo run --release --example bench                 # quick: well under 2 minutes on 2 CPUs
//! cargo run --release --example bench -- --full       # more repetitions, larger N
//! cargo run --release --example bench -- --only skynet,pingpong --json
//! cargo run --release --example bench -- --workers 1,2,4,8,16 --plot scaling.svg --csv
//! ```
//!
//! Every repetition of every (implementation, benchmark) cell runs in a
//! fresh child process (this binary re-executed with `--cell`), round-robin
//! over the implementations; see `bench/harness.rs` for why and for the
//! protocol. A child that crashes or times out shows as `failed (...)`.
//! Ratios are printed only where the spreads support them (`~` otherwise).
//! Runtimes are built, and cheap workloads warmed up, outside the timed
//! region; 1M-task workloads are timed cold (first run in a fresh process).

#[path = "bench/harness.rs"]
mod harness;
#[path = "bench/ipc_kernel.rs"]
mod ipc_kernel;
#[path = "bench/machine.rs"]
mod machine;
#[path = "bench/makespan.rs"]
mod makespan;
#[path = "bench/os.rs"]
mod os;
#[path = "bench/pairs.rs"]
mod pairs;
#[path = "bench/pick_cost.rs"]
mod pick_cost;
#[path = "bench/pick_ops.rs"]
mod pick_ops;
#[path = "bench/ping_pong.rs"]
mod ping_pong;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/rpc.rs"]
mod rpc;
#[path = "bench/scaling.rs"]
mod scaling;
#[path = "bench/shm_ring.rs"]
mod shm_ring;
#[path = "bench/skynet.rs"]
mod skynet;
#[path = "bench/spawn_join.rs"]
mod spawn_join;
#[path = "bench/yield_switch.rs"]
mod yield_switch;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{Imp, Outcome, Params, Spec};
use report::BenchResult;

const USAGE: &str = "\
usage: bench [--full] [--only NAME[,NAME..]] [--imps IMP[,IMP..]] [--json] [--csv]
             [--timeout SECS] [--workers N[,N..]] [--no-scaling] [--plot OUT.svg]
  --full        more repetitions (11 / 5 for 1M-task benchmarks) and larger N
  --only NAMES  run only benchmarks whose name contains one of NAMES
                (yield, yield_traced, spawn, skynet, pingpong1, pingpong2, pairs,
                makespan, pick (pick cost per policy: pick_on, pick_o1,
                pick_cfs, pick_eevdf; _10, _1k, _10k runnable tasks),
                rpc, shmring; ipc_ for the IPC rows against the kernel's objects:
                ipc_pipe, ipc_pipebw, ipc_msg, ipc_sem, each 1 = one CPU,
                2x = two CPUs)
  --imps IMPS   run only these implementations (greenos, tokio, may, threads);
                the kernel's IPC peers and greenos-only rows always run
  --json        also print the results as one JSON document
  --timeout S   per-child time limit in seconds (default: 15 / 30 for 1M-task
                benchmarks, 4x that with --full)
  --workers L   worker counts of the scaling runs (default 1,2,4,.. up to all
                usable CPUs); the throughput benchmarks (pairs; with --full or
                --only also spawn and skynet) run at each, for every
                implementation
  --no-scaling  skip the scaling runs
  --csv         also print every figure as CSV
  --plot F      write the scaling curves as an SVG to F
internal: --cell IMP:NAME --n N [--reps R] [--warmup] [--workers-n W]";

/// All benchmarks, in table order.
fn specs() -> Vec<Spec> {
    let mut specs = vec![
        yield_switch::spec(),
        yield_switch::spec_traced(),
        spawn_join::spec(),
        skynet::spec(),
        ping_pong::spec_one_worker(),
        ping_pong::spec_two_workers(),
        ping_pong::spec_cross_cpu(),
        pairs::spec(),
        makespan::spec(),
    ];
    specs.extend(pick_cost::specs());
    specs.extend(rpc::specs());
    specs.extend(shm_ring::specs());
    specs.extend(ipc_kernel::specs());
    specs
}

#[derive(Debug, Default)]
struct Options {
    full: bool,
    only: Vec<String>,
    /// `--imps`: the implementations to run (empty: all).
    imps: Vec<Imp>,
    json: bool,
    timeout: Option<u64>,
    /// Child mode: run this cell and print its `RESULT` line.
    cell: Option<(Imp, String)>,
    n: Option<u64>,
    reps: Option<u32>,
    warmup: bool,
    workers: Vec<usize>,
    no_scaling: bool,
    csv: bool,
    plot: Option<String>,
    /// Child mode: the scaling run's worker count.
    workers_n: Option<usize>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--full" => o.full = true,
                "--json" => o.json = true,
                "--warmup" => o.warmup = true,
                "--csv" => o.csv = true,
                "--no-scaling" => o.no_scaling = true,
                "--plot" => o.plot = Some(value("--plot")?),
                "--workers-n" => o.workers_n = Some(parse_num(&value("--workers-n")?)?),
                "--workers" => {
                    for w in value("--workers")?.split(',').filter(|s| !s.is_empty()) {
                        let w: usize = parse_num(w)?;
                        if w == 0 {
                            return Err("--workers: counts start at 1".into());
                        }
                        o.workers.push(w);
                    }
                }
                "--only" => o.only.extend(
                    value("--only")?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                "--imps" => {
                    for name in value("--imps")?.split(',').filter(|s| !s.is_empty()) {
                        o.imps.push(
                            Imp::parse(name)
                                .ok_or_else(|| format!("--imps: unknown implementation {name}"))?,
                        );
                    }
                }
                "--timeout" => o.timeout = Some(parse_num(&value("--timeout")?)?),
                "--n" => o.n = Some(parse_num(&value("--n")?)?),
                "--reps" => o.reps = Some(parse_num(&value("--reps")?)?),
                "--cell" => {
                    let v = value("--cell")?;
                    let (imp, bench) = v
                        .split_once(':')
                        .ok_or_else(|| format!("--cell wants IMP:NAME, got {v}"))?;
                    let imp =
                        Imp::parse(imp).ok_or_else(|| format!("unknown implementation {imp}"))?;
                    o.cell = Some((imp, bench.to_string()));
                }
                // `cargo bench` passes --bench to every bench target and
                // example it builds; accept and ignore it.
                "--bench" => {}
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(o)
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match &opts.cell {
        Some((imp, bench)) => child(&opts, *imp, bench),
        None => parent(&opts),
    }
}

/// Child mode: one cell, one `RESULT` line.
fn child(opts: &Options, imp: Imp, bench: &str) -> ExitCode {
    let Some(spec) = specs().into_iter().find(|s| s.key == bench) else {
        eprintln!("bench: unknown benchmark {bench}");
        return ExitCode::from(2);
    };
    if !spec.imps.contains(&imp) {
        eprintln!("bench: {bench} has no {} version", imp.key());
        return ExitCode::from(2);
    }
    let params = Params {
        n: opts.n.unwrap_or_else(|| spec.n_for(imp, opts.full)),
        warmup: opts.warmup,
        workers: opts.workers_n,
    };
    harness::child_main(&spec, imp, params, opts.reps.unwrap_or(1));
    ExitCode::SUCCESS
}

fn parent(opts: &Options) -> ExitCode {
    let selected: Vec<Spec> = specs()
        .into_iter()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| s.key.contains(o.as_str())))
        .map(|mut s| {
            if !opts.imps.is_empty() {
                // Greenos-only rows keep their one implementation.
                let kept: Vec<Imp> = s
                    .imps
                    .iter()
                    .copied()
                    .filter(|i| opts.imps.contains(i) || s.imps.len() == 1)
                    .collect();
                s.imps = Box::leak(kept.into_boxed_slice());
            }
            s
        })
        .filter(|s| !s.imps.is_empty())
        .collect();
    if selected.is_empty() {
        eprintln!("bench: --only matched no benchmark\n{USAGE}");
        return ExitCode::from(2);
    }

    let machine = machine::Machine::detect();
    let mode = if opts.full { "full" } else { "quick" };
    println!("greenos peer benchmarks ({mode} mode)");
    println!("{}", report::machine_line(&machine));
    println!();

    let started = Instant::now();
    let results: Vec<BenchResult> = selected
        .iter()
        .map(|spec| run_benchmark(spec, opts, started))
        .collect();

    println!("{}", report::render(&results));

    let scalable: Vec<&Spec> = selected
        .iter()
        .filter(|s| {
            if opts.full || !opts.only.is_empty() {
                scaling::SCALABLE.contains(&s.key)
            } else {
                scaling::SCALABLE_QUICK.contains(&s.key)
            }
        })
        .collect();
    let mut points = Vec::new();
    let counts = if opts.workers.is_empty() {
        scaling::default_counts(machine.usable_cpus)
    } else {
        opts.workers.clone()
    };
    if !opts.no_scaling && !scalable.is_empty() {
        let reps = if opts.full { 5 } else { 3 };
        let timeout = Duration::from_secs(opts.timeout.unwrap_or(if opts.full { 120 } else { 30 }));
        points = scaling::run(&scalable, &counts, reps, opts.full, timeout);
        println!("{}", scaling::render(&points, &counts));
        if let Some(path) = &opts.plot {
            let title = format!("greenos scaling — {}", report::machine_line(&machine));
            match std::fs::write(path, scaling::svg(&points, &counts, &title)) {
                Ok(()) => println!("scaling plot written to {path}"),
                Err(e) => eprintln!("bench: cannot write {path}: {e}"),
            }
        }
    }
    let wall = started.elapsed();
    if opts.csv {
        println!("{}", report::to_csv(&results));
        if !points.is_empty() {
            println!("{}", scaling::csv(&points));
        }
    }
    println!("Wall time of the whole run: {:.1} s", wall.as_secs_f64());
    if opts.json {
        println!();
        println!(
            "{}",
            report::to_json(&machine, mode, wall.as_secs_f64(), &results)
        );
        if !points.is_empty() {
            println!("{}", scaling::json(&points));
        }
    }
    ExitCode::SUCCESS
}

/// Runs every repetition of one benchmark, one child per (rep, impl),
/// rotating which implementation goes first.
fn run_benchmark(spec: &Spec, opts: &Options, started: Instant) -> BenchResult {
    let reps = match (spec.heavy, opts.full) {
        (false, false) => 5,
        (true, false) => 3,
        (false, true) => 11,
        (true, true) => 5,
    };
    let base_timeout = if spec.heavy { 30 } else { 15 };
    let timeout = Duration::from_secs(opts.timeout.unwrap_or(if opts.full {
        4 * base_timeout
    } else {
        base_timeout
    }));
    let mut result = BenchResult::new(spec, opts.full, reps);
    let count = result.cells.len();
    for rep in 0..reps as usize {
        eprint!(
            "[{:>6.1}s] {} rep {}/{}:",
            started.elapsed().as_secs_f64(),
            spec.key,
            rep + 1,
            reps
        );
        for k in 0..count {
            let cell = &mut result.cells[(k + rep) % count];
            if cell.failure.is_some() {
                continue;
            }
            let params = Params {
                n: cell.n,
                warmup: !spec.heavy,
                workers: None,
            };
            match harness::run_child(spec, cell.imp, params, timeout) {
                Outcome::Ok(r) => {
                    eprint!("  {} {}", cell.imp.key(), report::fmt_val(r.values[0]));
                    cell.values.extend(&r.values);
                    cell.rss_kb.extend(r.vmhwm_kb);
                    if let Some(note) = r.note {
                        cell.add_note(note);
                    }
                }
                Outcome::Failed { why, detail } => {
                    eprint!("  {} FAILED ({why})", cell.imp.key());
                    cell.failure = Some((why, detail));
                }
            }
        }
        eprintln!();
    }
    result
}
