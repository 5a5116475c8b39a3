use super::*;

fn synth(d: &str) -> Topology {
    synthetic::parse(d).unwrap_or_else(|e| panic!("{d}: {e}"))
}

#[test]
fn synthetic_counts() {
    let t = synth("pack:2 numa:2 l3:1 core:8 pu:2");
    assert_eq!(
        (
            t.nr_pus(),
            t.nr_cores(),
            t.nr_llcs(),
            t.nr_packages(),
            t.nr_nodes()
        ),
        (64, 32, 4, 2, 4)
    );
    let t = synth("numa:2 core:4 pu:2");
    assert_eq!((t.nr_pus(), t.nr_cores(), t.nr_nodes()), (16, 8, 2));
    // No package level: each node is a package; no cache: the LLC is it.
    assert_eq!((t.nr_packages(), t.nr_llcs()), (2, 2));
    assert!(!t.knows_packages() && t.llc_level().is_none() && t.knows_cores());
    // PU 9 is the second thread of core 4, in node 1.
    assert_eq!(
        t.pus()[9],
        Pu {
            os_index: 9,
            core: 4,
            llc: 1,
            package: 1,
            node: 1
        }
    );
    let t = synth("PU:3");
    assert_eq!((t.nr_pus(), t.nr_cores(), t.nr_nodes()), (3, 3, 1));
    // Attributes are ignored; names are case-insensitive.
    let t = synth("Package:1 L2d:2(size=1MB) Core:1 pu:2");
    assert_eq!((t.nr_llcs(), t.llc_level()), (2, Some(2)));
}

#[test]
fn synthetic_distances() {
    let t = synth("pack:2 numa:2 core:1 pu:1");
    assert_eq!(t.numa_distance(0, 0), Some(LOCAL_DISTANCE));
    assert_eq!(t.numa_distance(0, 1), Some(SAME_PACKAGE_DISTANCE));
    assert_eq!(t.numa_distance(1, 2), Some(REMOTE_DISTANCE));
    assert_eq!(t.numa_distance(0, 4), None);
    let m = vec![vec![10, 16], vec![16, 10]];
    let t = synth("numa:2 pu:1").with_numa_distances(&m).unwrap();
    assert_eq!(t.numa_distance(1, 0), Some(16));
    for bad in [
        vec![vec![10, 16]],
        vec![vec![10, 5], vec![16, 10]],
        vec![vec![0, 16], vec![16, 0]],
    ] {
        let e = synth("numa:2 pu:1").with_numa_distances(&bad).unwrap_err();
        assert!(matches!(e, TopologyError::Distances(_)), "{e}");
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EINVAL));
    }
}

#[test]
fn invalid_synthetic_strings_are_rejected_clearly() {
    for (d, needle) in [
        ("", "empty"),
        ("   ", "empty"),
        ("core:2", "last level"),
        ("pu:2 core:2", "last level"),
        ("core:2 pu:2 pu:2", "last level"),
        ("core", "type:count"),
        ("frob:2 pu:1", "unknown object type"),
        ("core:x pu:1", "not a number"),
        ("core:-1 pu:1", "not a number"),
        ("core:0 pu:1", "at least 1"),
        ("core:2 core:2 pu:1", "more than one core"),
        ("numa:2 numa:2 pu:1", "more than one NUMA"),
        ("core:2 l2:1 pu:1", "below the core"),
        ("l2:2 l3:1 pu:1", "below cache L2"),
        ("l3:1 pack:2 pu:1", "above the package"),
        ("core:2 pack:2 pu:1", "package below"),
        ("machine:1 pu:2", "implicit"),
        ("pack:64 core:64 pu:2", "more than 1024 PUs"),
        (
            "pack:99999999999 core:99999999999 pu:99999999999",
            "more than",
        ),
        ("core:2(size=1 pu:2", "unbalanced"),
        ("l9:1 pu:1", "unknown object type"),
    ] {
        let e = synthetic::parse(d).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, TopologyError::Synthetic { .. }),
            "{d:?}: wrong kind {e:?}"
        );
        assert!(msg.contains(needle), "{d:?}: {msg}");
        assert!(msg.contains("invalid synthetic topology"), "{msg}");
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EINVAL));
    }
    // The public entry point rejects them too (through hwloc or us).
    assert!(Topology::synthetic("frob:2 pu:1").is_err());
}

#[test]
fn display_like_lstopo() {
    let t = synth("pack:1 l3:2 core:2 pu:2");
    let s = t.to_string();
    let expected = "\
Machine (8 PUs, 1 NUMA node)
  Package L#0
    NUMANode L#0 (P#0)
    L3 L#0
      Core L#0
        PU L#0 (P#0)
        PU L#1 (P#1)
      Core L#1
        PU L#2 (P#2)
        PU L#3 (P#3)
    L3 L#1
      Core L#2
        PU L#4 (P#4)
        PU L#5 (P#5)
      Core L#3
        PU L#6 (P#6)
        PU L#7 (P#7)
";
    assert_eq!(s, expected);

    // Single-child chains merge; NUMA nodes without a package get Group0s.
    let t = synth("numa:2 core:2 pu:1");
    let expected = "\
Machine (4 PUs, 2 NUMA nodes)
  Group0 L#0
    NUMANode L#0 (P#0)
    Core L#0 + PU L#0 (P#0)
    Core L#1 + PU L#1 (P#1)
  Group0 L#1
    NUMANode L#1 (P#1)
    Core L#2 + PU L#2 (P#2)
    Core L#3 + PU L#3 (P#3)
NUMA distances (relative latency) by logical index:
  index     0     1
      0    10    21
      1    21    10
";
    assert_eq!(t.to_string(), expected);

    // Sub-NUMA clustering: nodes inside a package.
    let t = synth("pack:1 numa:2 l3:1 core:1 pu:1");
    let s = t.to_string();
    assert!(
        s.contains("  Package L#0\n    Group0 L#0\n      NUMANode L#0 (P#0)\n      L3 L#0 + Core L#0 + PU L#0 (P#0)\n"),
        "{s}"
    );
}

#[test]
fn spread_order_covers_cores_first_and_alternates_nodes() {
    let t = synth("numa:2 core:2 pu:2");
    // Cores: 0,1 on node 0; 2,3 on node 1. PUs 2c, 2c+1.
    assert_eq!(t.spread_order(), vec![0, 4, 2, 6, 1, 5, 3, 7]);
    let t = synth("core:3 pu:2");
    assert_eq!(t.spread_order(), vec![0, 2, 4, 1, 3, 5]);
    let t = synth("pack:2 numa:2 l3:1 core:8 pu:2");
    let o = t.spread_order();
    let mut sorted = o.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..64).collect::<Vec<_>>());
    // The first 32 picks use 32 distinct cores; the first 4 four nodes.
    let cores: std::collections::HashSet<_> = o[..32].iter().map(|&p| t.pus()[p].core).collect();
    assert_eq!(cores.len(), 32);
    let nodes: std::collections::HashSet<_> = o[..4].iter().map(|&p| t.pus()[p].node).collect();
    assert_eq!(nodes.len(), 4);
}

/// Writes a fake `/sys/devices/system` tree.
struct FakeSysfs(std::path::PathBuf);

impl FakeSysfs {
    fn new(name: &str) -> FakeSysfs {
        let p = std::env::temp_dir().join(format!(
            "greenos-sysfs-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        FakeSysfs(p)
    }
    fn write(&self, rel: &str, content: &str) {
        let f = self.0.join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sysfs_two_sockets_with_smt() {
    // 2 packages x 2 cores x 2 threads, Intel numbering: the SMT sibling of
    // CPU c is c+4; package 0 = {0,1,4,5}; node n = package n.
    let fs = FakeSysfs::new("2s");
    fs.write("cpu/online", "0-7\n");
    for cpu in 0..8usize {
        let core = cpu % 4;
        let pkg = core / 2;
        let d = format!("cpu/cpu{cpu}");
        fs.write(
            &format!("{d}/topology/physical_package_id"),
            &format!("{pkg}\n"),
        );
        fs.write(
            &format!("{d}/topology/thread_siblings_list"),
            &format!("{core},{}\n", core + 4),
        );
        fs.write(&format!("{d}/cache/index0/level"), "1\n");
        fs.write(&format!("{d}/cache/index0/type"), "Data\n");
        fs.write(
            &format!("{d}/cache/index0/shared_cpu_list"),
            &format!("{core},{}\n", core + 4),
        );
        fs.write(&format!("{d}/cache/index1/level"), "3\n");
        fs.write(&format!("{d}/cache/index1/type"), "Unified\n");
        let l3 = if pkg == 0 { "0-1,4-5" } else { "2-3,6-7" };
        fs.write(&format!("{d}/cache/index1/shared_cpu_list"), l3);
    }
    fs.write("node/online", "0-1\n");
    fs.write("node/node0/cpulist", "0-1,4-5\n");
    fs.write("node/node1/cpulist", "2-3,6-7\n");
    fs.write("node/node0/distance", "10 21\n");
    fs.write("node/node1/distance", "21 10\n");
    let t = Topology::from_sysfs_at(&fs.0).unwrap();
    assert_eq!(*t.source(), TopologySource::Sysfs);
    assert_eq!(
        (
            t.nr_pus(),
            t.nr_cores(),
            t.nr_llcs(),
            t.nr_packages(),
            t.nr_nodes()
        ),
        (8, 4, 2, 2, 2)
    );
    assert_eq!(t.llc_level(), Some(3));
    // Logical order: package 0's cores first, siblings adjacent.
    let os: Vec<usize> = t.pus().iter().map(|p| p.os_index).collect();
    assert_eq!(os, vec![0, 4, 1, 5, 2, 6, 3, 7]);
    assert_eq!(t.pus()[1].core, 0);
    assert_eq!(t.numa_distance(0, 1), Some(21));
    let s = t.to_string();
    assert!(
        s.contains("Core L#0\n        PU L#0 (P#0)\n        PU L#1 (P#4)\n"),
        "{s}"
    );
    assert_eq!(t.pus_in(&[0, 1].into_iter().collect()), vec![0, 2]);
}

#[test]
fn sysfs_minimal_tree_falls_back() {
    // Only cpuN directories: one node, each CPU its own core.
    let fs = FakeSysfs::new("min");
    fs.write("cpu/cpu0/uevent", "");
    fs.write("cpu/cpu1/uevent", "");
    let t = Topology::from_sysfs_at(&fs.0).unwrap();
    assert_eq!((t.nr_pus(), t.nr_cores(), t.nr_nodes()), (2, 2, 1));
    assert!(!t.knows_cores());
    let empty = FakeSysfs::new("empty");
    std::fs::create_dir_all(&empty.0).unwrap();
    let e = Topology::from_sysfs_at(&empty.0).unwrap_err();
    assert!(matches!(e, TopologyError::Sysfs(_)), "{e}");
}

#[test]
fn this_machine_from_sysfs() {
    let t = Topology::from_sysfs().unwrap();
    assert!(t.nr_pus() >= 1);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(
        t.nr_pus(),
        crate::CpuSet::from_list(&online).unwrap().count()
    );
    assert!(t.to_string().starts_with("Machine ("));
}
