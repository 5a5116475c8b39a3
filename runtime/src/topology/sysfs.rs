//! The topology from Linux sysfs, rooted at `/sys/devices/system` (or a
//! copy of it, for tests):
//! - `cpu/online`: the CPUs (else every `cpu/cpuN` directory);
//! - `cpu/cpuN/topology/{physical_package_id, core_cpus_list or
//!   thread_siblings_list}`: package and SMT siblings;
//! - `cpu/cpuN/cache/indexK/{level, type, shared_cpu_list}`: the LLC is the
//!   highest-level Data or Unified cache;
//! - `node/online` (else every `node/nodeN`), `node/nodeN/cpulist`,
//!   `node/nodeN/distance` (one row, over the online nodes in order).
//!
//! A missing file falls back as the module docs of `topology` say; a CPU
//! in no node goes to the first node.

use std::fs;
use std::path::Path;

use super::{Known, RawPu, Topology, TopologyError, TopologySource};
use crate::cpuset::CpuSet;

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_list(path: &Path) -> Option<CpuSet> {
    CpuSet::from_list(&read(path)?).ok()
}

/// Numbers `N` of the entries `prefixN` of `dir`, sorted.
fn numbered(dir: &Path, prefix: &str) -> Vec<usize> {
    let mut v: Vec<usize> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(prefix)?
                .parse::<usize>()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

pub(crate) fn read_tree(root: &Path) -> Result<Topology, TopologyError> {
    let cpu_dir = root.join("cpu");
    let cpus: Vec<usize> = match read_list(&cpu_dir.join("online")) {
        Some(s) if !s.is_empty() => s.iter().collect(),
        _ => numbered(&cpu_dir, "cpu"),
    };
    if cpus.is_empty() {
        return Err(TopologyError::Sysfs(format!(
            "no CPUs under {}",
            cpu_dir.display()
        )));
    }
    // NUMA nodes.
    let node_dir = root.join("node");
    let nodes: Vec<usize> = match read_list(&node_dir.join("online")) {
        Some(s) if !s.is_empty() => s.iter().collect(),
        _ => numbered(&node_dir, "node"),
    };
    let node_cpus: Vec<CpuSet> = nodes
        .iter()
        .map(|n| read_list(&node_dir.join(format!("node{n}/cpulist"))).unwrap_or_default())
        .collect();
    let mut distances: Option<Vec<u32>> = None;
    if !nodes.is_empty() {
        let mut d = Vec::with_capacity(nodes.len() * nodes.len());
        for n in nodes.iter() {
            let row: Option<Vec<u32>> =
                read(&node_dir.join(format!("node{n}/distance"))).and_then(|s| {
                    s.split_whitespace()
                        .map(|x| x.parse().ok())
                        .collect::<Option<Vec<u32>>>()
                });
            match row {
                Some(r) if r.len() == nodes.len() => d.extend(r),
                _ => {
                    d.clear();
                    break;
                }
            }
        }
        if !d.is_empty() {
            distances = Some(d);
        }
    }

    let mut known = Known {
        core: false,
        llc_depth: None,
        package: false,
    };
    let mut raw = Vec::with_capacity(cpus.len());
    for &cpu in cpus.iter() {
        let dir = cpu_dir.join(format!("cpu{cpu}"));
        let topo = dir.join("topology");
        let package = read(&topo.join("physical_package_id"))
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|p| {
                known.package = true;
                p.max(0) as usize
            })
            .unwrap_or(0);
        let core = read_list(&topo.join("core_cpus_list"))
            .or_else(|| read_list(&topo.join("thread_siblings_list")))
            .and_then(|s| s.first())
            .inspect(|_| known.core = true)
            .unwrap_or(cpu);
        // The highest-level data/unified cache and the CPUs sharing it.
        let mut llc: Option<(u8, usize)> = None;
        for k in numbered(&dir.join("cache"), "index") {
            let idx = dir.join(format!("cache/index{k}"));
            let level = read(&idx.join("level")).and_then(|s| s.trim().parse::<u8>().ok());
            let kind = read(&idx.join("type")).unwrap_or_default();
            let shared = read_list(&idx.join("shared_cpu_list")).and_then(|s| s.first());
            if let (Some(level), Some(first)) = (level, shared) {
                if matches!(kind.trim(), "Data" | "Unified") && llc.is_none_or(|(l, _)| level > l) {
                    llc = Some((level, first));
                }
            }
        }
        if let Some((level, _)) = llc {
            known.llc_depth = Some(known.llc_depth.map_or(level, |d| d.max(level)));
        }
        let node = nodes
            .iter()
            .zip(node_cpus.iter())
            .find(|(_, s)| s.is_set(cpu))
            .map_or_else(|| nodes.first().copied().unwrap_or(0), |(&n, _)| n);
        raw.push(RawPu {
            os_index: cpu,
            core,
            llc: llc.map_or(package, |(_, first)| first),
            package,
            node,
        });
    }
    let node_os: Vec<usize> = if nodes.is_empty() { vec![0] } else { nodes };
    if node_os.len() == 1 {
        distances = distances.filter(|d| d.len() == 1);
    }
    Topology::from_raw(raw, &node_os, distances, known, TopologySource::Sysfs)
}
