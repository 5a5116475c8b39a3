use super::*;

fn topo(d: &str) -> Topology {
    Topology::synthetic(d).unwrap_or_else(|e| panic!("{d}: {e}"))
}

fn all(t: &Topology) -> Vec<SchedDomain> {
    let map: Vec<usize> = (0..t.nr_pus()).collect();
    let ds = build(t, &map);
    check_invariants(&ds, map.len());
    ds
}

/// (kind, span, group spans) of `cpu`'s chain.
fn chain(ds: &[SchedDomain], cpu: usize) -> Vec<(&'static str, String, Vec<String>)> {
    ds.iter()
        .filter(|d| d.cpu == cpu)
        .map(|d| {
            (
                d.kind.name(),
                d.span.to_string(),
                d.groups.iter().map(|g| g.span.to_string()).collect(),
            )
        })
        .collect()
}

/// What must hold for any topology.
fn check_invariants(ds: &[SchedDomain], n: usize) {
    for cpu in 0..n {
        let mine: Vec<&SchedDomain> = ds.iter().filter(|d| d.cpu == cpu).collect();
        for (i, d) in mine.iter().enumerate() {
            assert_eq!(d.level, i);
            assert!(d.span.is_set(cpu));
            assert!(d.span_weight() > 1, "degenerate kept: {d}");
            assert!(d.groups.len() > 1, "single group kept: {d}");
            assert!(d.groups[0].span.is_set(cpu), "own group first: {d}");
            let mut u = CpuSet::new();
            for g in d.groups.iter() {
                assert!(g.span.is_subset(&d.span));
                assert_eq!(g.capacity, 1024 * g.span.count() as u64);
                if !d.flags.contains(SdFlags::OVERLAP) {
                    assert!(g.span.intersection(&u).is_empty(), "overlap: {d}");
                }
                u.union_with(&g.span);
            }
            assert_eq!(u, d.span, "groups cover the span: {d}");
            if i > 0 {
                assert!(mine[i - 1].span.is_subset(&d.span));
                assert!(mine[i - 1].span != d.span);
            }
            assert_eq!(d.min_interval_ms, d.span_weight() as u64);
            assert_eq!(d.max_interval_ms, 2 * d.span_weight() as u64);
            assert_eq!(d.busy_factor, 16);
        }
    }
}

#[test]
fn smt_only() {
    let ds = all(&topo("core:1 pu:2"));
    assert_eq!(
        chain(&ds, 0),
        vec![("SMT", "0-1".into(), vec!["0".into(), "1".into()])]
    );
    // CPU 1 lists its own group first.
    assert_eq!(
        chain(&ds, 1),
        vec![("SMT", "0-1".into(), vec!["1".into(), "0".into()])]
    );
    let d = &ds[0];
    assert_eq!((d.imbalance_pct, d.cache_nice_tries), (110, 0));
    assert!(d
        .flags
        .contains(SdFlags::SHARE_CPUCAPACITY | SdFlags::SHARE_LLC | SdFlags::SHARE_PKG));
    assert!(d
        .flags
        .contains(SdFlags::PREFER_SIBLING | SdFlags::WAKE_AFFINE));
    assert!(!d.flags.contains(SdFlags::NUMA) && !d.flags.contains(SdFlags::BALANCE_WAKE));
    assert_eq!(
        DomainsDebug::new(&ds, 2).to_string(),
        "\
CPU0 attaching sched-domain(s):
 domain-0: span=0-1 level=SMT
  groups: 0:{ span=0 }, 1:{ span=1 }
  flags=SD_BALANCE_NEWIDLE|SD_BALANCE_EXEC|SD_BALANCE_FORK|SD_WAKE_AFFINE|SD_SHARE_CPUCAPACITY|SD_SHARE_LLC|SD_SHARE_PKG|SD_PREFER_SIBLING imbalance_pct=110 cache_nice_tries=0 interval=2..4ms busy_factor=16
CPU1 attaching sched-domain(s):
 domain-0: span=0-1 level=SMT
  groups: 1:{ span=1 }, 0:{ span=0 }
  flags=SD_BALANCE_NEWIDLE|SD_BALANCE_EXEC|SD_BALANCE_FORK|SD_WAKE_AFFINE|SD_SHARE_CPUCAPACITY|SD_SHARE_LLC|SD_SHARE_PKG|SD_PREFER_SIBLING imbalance_pct=110 cache_nice_tries=0 interval=2..4ms busy_factor=16
"
    );
}

#[test]
fn no_smt_single_llc_is_one_mc_level() {
    // 4 cores, one PU each, sharing an L3: SMT (1 CPU) and PKG (= MC) go.
    let ds = all(&topo("l3:1 core:4 pu:1"));
    assert_eq!(
        chain(&ds, 2),
        vec![(
            "MC",
            "0-3".into(),
            vec!["2".into(), "3".into(), "0".into(), "1".into()]
        )]
    );
    assert_eq!((ds[0].imbalance_pct, ds[0].cache_nice_tries), (117, 1));
    // One CPU: no domain at all.
    let one = build(&topo("pu:1"), &[0]);
    assert!(one.is_empty());
    assert_eq!(
        DomainsDebug::new(&one, 1).to_string(),
        "CPU0 attaching NULL sched-domain.\n"
    );
}

#[test]
fn one_socket_two_llcs() {
    let ds = all(&topo("pack:1 l3:2 core:2 pu:2"));
    assert_eq!(
        chain(&ds, 5),
        vec![
            ("SMT", "4-5".into(), vec!["5".into(), "4".into()]),
            ("MC", "4-7".into(), vec!["4-5".into(), "6-7".into()]),
            ("PKG", "0-7".into(), vec!["4-7".into(), "0-3".into()]),
        ]
    );
    let pkg = ds.iter().find(|d| d.cpu == 5 && d.level == 2).unwrap();
    assert!(!pkg.flags.contains(SdFlags::SHARE_LLC));
    assert!(pkg
        .flags
        .contains(SdFlags::SHARE_PKG | SdFlags::PREFER_SIBLING));
    assert_eq!((pkg.imbalance_pct, pkg.cache_nice_tries), (117, 1));
    let s = pkg.to_string();
    assert!(
        s.starts_with("   domain-2: span=0-7 level=PKG\n    groups: 4:{ span=4-7 cap=4096 }, 0:{ span=0-3 cap=4096 }\n"),
        "{s}"
    );
}

#[test]
fn two_numa_nodes() {
    let t = topo("numa:2 core:4 pu:2");
    let ds = all(&t);
    assert_eq!(
        chain(&ds, 0),
        vec![
            ("SMT", "0-1".into(), vec!["0".into(), "1".into()]),
            (
                "MC",
                "0-7".into(),
                vec!["0-1".into(), "2-3".into(), "4-5".into(), "6-7".into()]
            ),
            ("NUMA", "0-15".into(), vec!["0-7".into(), "8-15".into()]),
        ]
    );
    let numa = ds.iter().find(|d| d.cpu == 0 && d.level == 2).unwrap();
    assert_eq!(numa.numa_distance, Some(crate::topology::REMOTE_DISTANCE));
    assert!(numa
        .flags
        .contains(SdFlags::NUMA | SdFlags::SERIALIZE | SdFlags::OVERLAP));
    // Distance 21 <= RECLAIM_DISTANCE: fork/exec balancing and affine
    // wakeups stay; PREFER_SIBLING goes; different packages.
    assert!(numa
        .flags
        .contains(SdFlags::WAKE_AFFINE | SdFlags::BALANCE_FORK));
    assert!(!numa.flags.contains(SdFlags::PREFER_SIBLING));
    assert!(!numa.flags.contains(SdFlags::SHARE_PKG));
    assert_eq!((numa.imbalance_pct, numa.cache_nice_tries), (117, 2));
    // §4.3's example figures: a 16-CPU span balances every 16 ms idle and
    // every 255 ms busy.
    assert_eq!(numa.interval_ms(false, 16), 16);
    assert_eq!(numa.interval_ms(true, 16), 255);
    // Clamped to online_cpus x 100 ms.
    assert_eq!(numa.interval_ms(true, 2), 200);
}

#[test]
fn four_numa_nodes_with_distances() {
    // A square: each node has two neighbours at 16 and one far node at 32
    // (beyond RECLAIM_DISTANCE).
    let m = vec![
        vec![10, 16, 16, 32],
        vec![16, 10, 32, 16],
        vec![16, 32, 10, 16],
        vec![32, 16, 16, 10],
    ];
    let t = topo("numa:4 core:2 pu:1").with_numa_distances(&m).unwrap();
    let ds = all(&t);
    // CPU 0 (node 0): MC = its node, NUMA-16 = nodes 0,1,2, NUMA-32 = all.
    assert_eq!(
        chain(&ds, 0),
        vec![
            ("MC", "0-1".into(), vec!["0".into(), "1".into()]),
            (
                "NUMA",
                "0-5".into(),
                vec!["0-1".into(), "2-3".into(), "4-5".into()]
            ),
            // Overlapping groups: node 3's 16-neighbourhood is 1,2,3.
            ("NUMA", "0-7".into(), vec!["0-5".into(), "2-7".into()]),
        ]
    );
    let near = ds.iter().find(|d| d.cpu == 0 && d.level == 1).unwrap();
    let far = ds.iter().find(|d| d.cpu == 0 && d.level == 2).unwrap();
    assert_eq!(
        (near.numa_distance, far.numa_distance),
        (Some(16), Some(32))
    );
    assert!(near
        .flags
        .contains(SdFlags::WAKE_AFFINE | SdFlags::BALANCE_EXEC));
    for f in [
        SdFlags::WAKE_AFFINE,
        SdFlags::BALANCE_EXEC,
        SdFlags::BALANCE_FORK,
    ] {
        assert!(!far.flags.contains(f), "{far}");
    }
    assert!(far
        .flags
        .contains(SdFlags::BALANCE_NEWIDLE | SdFlags::SERIALIZE));
    // CPU 6 (node 3) sees its own neighbourhood.
    assert_eq!(chain(&ds, 6)[1].1, "2-7");
}

#[test]
fn sub_numa_clusters_give_two_numa_levels() {
    let t = topo("pack:2 numa:2 l3:1 core:8 pu:2");
    let ds = all(&t);
    let c = chain(&ds, 0);
    let kinds: Vec<_> = c.iter().map(|x| (x.0, x.1.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            ("SMT", "0-1"),
            ("MC", "0-15"),
            ("NUMA", "0-31"),
            ("NUMA", "0-63")
        ]
    );
    let mine: Vec<_> = ds.iter().filter(|d| d.cpu == 0).collect();
    assert_eq!(
        mine[2].numa_distance,
        Some(crate::topology::SAME_PACKAGE_DISTANCE)
    );
    assert!(mine[2].flags.contains(SdFlags::SHARE_PKG));
    assert!(!mine[3].flags.contains(SdFlags::SHARE_PKG));
}

#[test]
fn placed_subset_and_shared_pus() {
    let t = topo("numa:2 core:4 pu:2");
    // Two CPUs, one per node (as Placement::Spread puts them).
    let ds = build(&t, &[0, 8]);
    check_invariants(&ds, 2);
    assert_eq!(
        chain(&ds, 0),
        vec![("NUMA", "0-1".into(), vec!["0".into(), "1".into()])]
    );
    // Three CPUs on one single-PU machine: they share it, like SMT.
    let ds = build(&topo("pu:1"), &[0, 0, 0]);
    check_invariants(&ds, 3);
    assert_eq!(chain(&ds, 1)[0].0, "SMT");
    assert_eq!(chain(&ds, 1)[0].1, "0-2");
}

#[test]
fn flags_print_with_kernel_names() {
    let f = SdFlags::NUMA | SdFlags::SERIALIZE;
    assert_eq!(f.to_string(), "SD_SERIALIZE|SD_NUMA");
    assert_eq!(format!("{f:?}"), "SdFlags(SD_SERIALIZE|SD_NUMA)");
    assert!(SdFlags::empty().to_string().is_empty());
}
