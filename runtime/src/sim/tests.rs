//! Unit tests of the simulator: determinism, the text format, accounting
//! identities, affinity, the programs (ping-pong, fork/join).

use super::*;
use crate::sched::Policy;

fn run(topo: &str, w: &Workload, policy: Policy, secs_ms: u64, seed: u64) -> Report {
    let mut cfg = SimConfig::new(policy);
    cfg.duration_ns = secs_ms * 1_000_000;
    cfg.seed = seed;
    Sim::from_desc(topo, w, cfg).expect("valid").run()
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    let w = Workload::builtin("mixed_interactive").unwrap();
    for policy in [Policy::Cfs, Policy::Eevdf, Policy::O1, Policy::ON] {
        let a = run("numa:2 core:4 pu:2", &w, policy, 300, 7);
        let b = run("numa:2 core:4 pu:2", &w, policy, 300, 7);
        assert_eq!(a, b, "{policy:?}");
        assert_eq!(a.to_json(), b.to_json());
        assert!(a.latency.count > 100, "{policy:?}: {:?}", a.latency);
        let c = run("numa:2 core:4 pu:2", &w, policy, 300, 8);
        assert_ne!(a.tasks, c.tasks, "{policy:?}: another seed, another run");
    }
}

#[test]
fn builtins_parse_and_round_trip_through_the_text_format() {
    for name in BUILTIN {
        let w = Workload::builtin(name).unwrap();
        assert_eq!(w.name, name);
        let text = w.to_string();
        assert_eq!(Workload::parse(&text).unwrap(), w, "{text}");
    }
    assert!(Workload::builtin("nope").is_err());
}

#[test]
fn text_format_errors_name_the_line_and_map_to_einval() {
    let bad = "name = \"x\"\n\n[[group]]\ncount = 2\nburst = \"exp(2ms\"\n";
    match Workload::parse(bad) {
        Err(SimError::Parse { line, .. }) => assert_eq!(line, 5),
        other => panic!("{other:?}"),
    }
    for text in [
        "[[group]]\nfoo = 1\n",
        "[[group]]\nnice = 40\n",
        "[[group]]\npolicy = \"fifo:0\"\n",
        "[[group]]\ncount = -1\n",
        "[[group]]\naffinity = \"3-1\"\n",
        "[[group]]\nburst = \"uniform(3ms, 1ms)\"\n",
        "[[group]]\ncount = 3\npingpong = true\nburst = \"inf\"\n",
        "[group]\n",
        "name\n",
        "",
    ] {
        let e = Workload::parse(text).expect_err(text);
        let io: std::io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(libc::EINVAL), "{text}");
    }
    let ok = "# c\nname = \"t\" # trailing\n[[group]]\ncount = \"cpus/2\"\nwork = \"1.5ms\"\n\
              sleep = \"none\"\nspawn = \"uniform(0, 1ms)\"\naffinity = \"node:1\"\npolicy = \"rr:5\"\n";
    let w = Workload::parse(ok).unwrap();
    let g = &w.groups[0];
    assert_eq!(g.count.resolve(8), 4);
    assert_eq!(g.work, Some(1_500_000));
    assert_eq!(g.affinity, CpuSpec::Node(1));
    assert_eq!(g.spawn, Dist::Uniform(0, 1_000_000));
}

#[test]
fn bad_machine_or_affinity_is_an_error_not_a_panic() {
    let w = Workload::builtin("cpu_bound").unwrap();
    let cfg = SimConfig::new(Policy::Cfs);
    assert!(Sim::from_desc("core:0", &w, cfg.clone()).is_err());
    let pinned = Workload::parse("[[group]]\naffinity = \"node:3\"\n").unwrap();
    assert!(Sim::from_desc("numa:2 core:2 pu:1", &pinned, cfg.clone()).is_err());
    let odd =
        Workload::parse("[[group]]\ncount = \"cpus\"\npingpong = true\nburst = \"1ms\"\n").unwrap();
    assert!(Sim::from_desc("core:3 pu:1", &odd, cfg).is_err());
}

/// Every ns a CPU was busy is charged to a task, every task does exactly
/// the work it asked for, and what it ran beyond that is exactly the
/// modelled switch and migration penalties.
#[test]
fn work_and_penalties_are_conserved_exactly() {
    let w = Workload::builtin("numa_skewed").unwrap();
    for policy in [Policy::Cfs, Policy::Eevdf] {
        let mut cfg = SimConfig::new(policy);
        cfg.duration_ns = 3_000_000_000;
        let costs = cfg.costs;
        let r = Sim::from_desc("numa:2 core:4 pu:2", &w, cfg).unwrap().run();
        assert!(r.makespan_ns.is_some(), "{r}");
        assert!(r.tasks.iter().all(|t| t.work_ns == 500_000_000), "{r}");
        let busy: u64 = r.cpu_busy_ns.iter().sum();
        let cpu: u64 = r.tasks.iter().map(|t| t.cpu_ns).sum();
        assert_eq!(busy, cpu);
        let work: u64 = r.tasks.iter().map(|t| t.work_ns).sum();
        let local = r.migrations_at("SMT") + r.migrations_at("MC");
        let expected = r.switches * costs.context_switch_ns
            + local * costs.migrate_llc_ns
            + r.migrations_at("NUMA") * costs.migrate_numa_ns;
        assert_eq!(cpu - work, expected, "{r}");
        assert!(
            r.migrations_at("NUMA") >= 4,
            "half the tasks must cross: {r}"
        );
        // Ideal: 500 ms; all on node 0 without balancing: 1 s.
        assert!(r.makespan_ns.unwrap() < 800_000_000, "{r}");
    }
}

#[test]
fn affinity_is_never_violated() {
    let text = "[[group]]\nname = \"n1\"\ncount = \"2*cpus\"\naffinity = \"node:1\"\n\
                start = \"node:1\"\nburst = \"exp(1ms)\"\nsleep = \"exp(1ms)\"\n\
                [[group]]\nname = \"odd\"\ncount = 6\naffinity = \"1,3,5\"\nburst = \"inf\"\n";
    let w = Workload::parse(text).unwrap();
    let r = run("numa:2 core:4 pu:1", &w, Policy::Eevdf, 500, 3);
    assert_eq!(r.affinity_violations, 0);
    for (c, row) in r.utilization.iter().enumerate() {
        let busy: f64 = row.iter().sum();
        let allowed = c >= 4 || c % 2 == 1;
        assert!(allowed || busy == 0.0, "cpu{c} ran something: {row:?}");
    }
}

#[test]
fn pingpong_pairs_never_lose_a_wakeup() {
    let w = Workload::builtin("pingpong_pairs").unwrap();
    let r = run("core:4 pu:1", &w, Policy::Cfs, 200, 1);
    assert_eq!(r.tasks.len(), 8);
    // Every task keeps making progress to the end.
    for t in &r.tasks {
        assert!(t.work_ns > 50_000_000, "{t:?}");
        assert!(t.switches > 100, "{t:?}");
    }
    assert!(r.latency.count > 1000);
}

#[test]
fn fork_join_finishes_every_round() {
    let w = Workload::builtin("fork_join").unwrap();
    let r = run("core:4 pu:2", &w, Policy::Eevdf, 5_000, 1);
    assert_eq!(
        r.tasks.len(),
        1 + 20 * 16,
        "root + 20 rounds of 2*cpus children"
    );
    assert!(r.makespan_ns.is_some());
    assert!(r.tasks.iter().all(|t| t.exited_ns.is_some()));
    // 20 joins woke the root.
    assert_eq!(r.groups[0].latency.count, 20);
}

#[test]
fn weights_decide_shares_on_one_cpu() {
    let text = "[[group]]\nname=\"a\"\ncount=1\nnice=0\n[[group]]\nname=\"b\"\ncount=1\nnice=5\n";
    let w = Workload::parse(text).unwrap();
    for policy in [Policy::Cfs, Policy::Eevdf] {
        let r = run("core:1 pu:1", &w, policy, 2_000, 1);
        // 1024 / (1024 + 335).
        let want = 1024.0 / 1359.0;
        assert!(
            (r.groups[0].cpu_share - want).abs() < 0.01,
            "{policy:?} {r}"
        );
    }
}

#[test]
fn histogram_quantiles_are_within_two_percent() {
    let mut h = Histogram::new();
    for v in 1..=100_000u64 {
        h.record(v * 10);
    }
    assert_eq!(h.count(), 100_000);
    assert_eq!(h.max(), 1_000_000);
    let p50 = h.quantile(0.5) as f64;
    assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
    let p99 = h.quantile(0.99) as f64;
    assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
    assert_eq!(Histogram::new().quantile(0.5), 0);
    let mut small = Histogram::new();
    small.record(3);
    assert_eq!(small.quantile(0.99), 3);
}

#[test]
fn jain_index_bounds() {
    assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
    assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    assert_eq!(jain(&[]), 1.0);
}

#[test]
fn json_and_svg_are_well_formed_enough() {
    let w = Workload::builtin("cpu_bound").unwrap();
    let r = run("core:2 pu:2", &w, Policy::Cfs, 50, 1);
    let j = r.to_json();
    assert!(j.starts_with('{') && j.ends_with('}'));
    assert_eq!(j.matches('{').count(), j.matches('}').count());
    assert_eq!(j.matches('[').count(), j.matches(']').count());
    assert!(j.contains("\"policy\":\"CFS\""));
    let s = r.to_svg();
    assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    assert!(s.contains("<rect"));
    let table = r.to_string();
    assert!(table.contains("nice0") && table.contains("migrations"));
}
