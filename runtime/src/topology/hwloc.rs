//! The topology through hwloc (cargo feature `hwloc`, crate `hwlocality`,
//! system library libhwloc ≥ 2.0.4).
//!
//! hwloc's tree is folded into our model PU by PU: a PU's `Core`,
//! `Package` and highest-level data/unified cache ancestors give its core,
//! package and LLC; the NUMA node whose cpuset holds it gives its node;
//! the NUMA distance matrix is hwloc's (synthetic machines have none and
//! get the defaults of the `topology` module docs).

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::Topology as HwTopology;

use super::{Known, RawPu, Topology, TopologyError, TopologySource};

/// This machine, as hwloc discovers it.
pub(crate) fn detect() -> Result<Topology, TopologyError> {
    let t = HwTopology::new().map_err(|e| TopologyError::Hwloc(e.to_string()))?;
    convert(&t, TopologySource::Hwloc)
}

/// A synthetic machine parsed by hwloc.
pub(crate) fn synthetic(description: &str) -> Result<Topology, TopologyError> {
    let err = |reason: String| TopologyError::Synthetic {
        description: description.to_owned(),
        reason,
    };
    let t = HwTopology::builder()
        .from_synthetic(description)
        .map_err(|e| err(format!("hwloc: {e}")))?
        .build()
        .map_err(|e| err(format!("hwloc: {e}")))?;
    convert(&t, TopologySource::Synthetic(description.to_owned()))
}

fn os_or_logical(o: &TopologyObject) -> usize {
    o.os_index().unwrap_or(o.logical_index())
}

fn convert(t: &HwTopology, source: TopologySource) -> Result<Topology, TopologyError> {
    let nodes: Vec<&TopologyObject> = t.objects_with_type(ObjectType::NUMANode).collect();
    let node_os: Vec<usize> = nodes.iter().map(|n| os_or_logical(n)).collect();
    let mut known = Known {
        core: false,
        llc_depth: None,
        package: false,
    };
    let mut raw = Vec::new();
    for pu in t.objects_with_type(ObjectType::PU) {
        let os = os_or_logical(pu);
        let (mut core, mut package, mut llc) = (None, None, None::<(usize, usize)>);
        for a in pu.ancestors() {
            match a.object_type() {
                ObjectType::Core => core = core.or(Some(a.logical_index())),
                ObjectType::Package => package = package.or(Some(a.logical_index())),
                ty if ty.is_cpu_data_cache() => {
                    if let Some(ObjectAttributes::Cache(c)) = a.attributes() {
                        let depth = c.depth();
                        if llc.is_none_or(|(d, _)| depth > d) {
                            llc = Some((depth, a.logical_index()));
                        }
                    }
                }
                _ => {}
            }
        }
        let node = nodes
            .iter()
            .find(|n| n.cpuset().is_some_and(|s| s.is_set(os)))
            .or(nodes.first())
            .map_or(0, |n| os_or_logical(n));
        known.core |= core.is_some();
        known.package |= package.is_some();
        if let Some((d, _)) = llc {
            let d = u8::try_from(d).unwrap_or(u8::MAX);
            known.llc_depth = Some(known.llc_depth.map_or(d, |k| k.max(d)));
        }
        let package = package.unwrap_or(node);
        raw.push(RawPu {
            os_index: os,
            core: core.unwrap_or((1 << 20) + os),
            llc: llc.map_or(package, |(d, l)| (d << 16) + l),
            package,
            node,
        });
    }
    // The NUMA latency matrix, if hwloc has one over the nodes.
    let mut distances = None;
    if let Ok(all) = t.distances(None) {
        for d in all.iter() {
            let objs: Vec<Option<usize>> = d
                .objects()
                .map(|o| {
                    o.filter(|o| o.object_type() == ObjectType::NUMANode)
                        .map(os_or_logical)
                })
                .collect();
            if objs.len() != node_os.len() || objs.iter().any(Option::is_none) {
                continue;
            }
            let n = node_os.len();
            let mut m = vec![0u32; n * n];
            for ((i, j), v) in d.enumerate_distances() {
                let (Some(a), Some(b)) = (
                    node_os.iter().position(|&x| Some(x) == objs[i]),
                    node_os.iter().position(|&x| Some(x) == objs[j]),
                ) else {
                    continue;
                };
                m[a * n + b] = u32::try_from(v).unwrap_or(u32::MAX);
            }
            distances = Some(m);
            break;
        }
    }
    Topology::from_raw(raw, &node_os, distances, known, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwloc_and_sysfs_agree_on_this_machine() {
        let hw = detect().unwrap();
        let fs = Topology::from_sysfs().unwrap();
        // Same PUs, grouped the same way, whatever the numbering.
        let groups = |t: &Topology, f: fn(&super::super::Pu) -> usize| {
            let mut g: Vec<Vec<usize>> = Vec::new();
            let n = t.pus().iter().map(f).max().map_or(0, |m| m + 1);
            for id in 0..n {
                let mut v: Vec<usize> = t
                    .pus()
                    .iter()
                    .filter(|p| f(p) == id)
                    .map(|p| p.os_index)
                    .collect();
                v.sort_unstable();
                g.push(v);
            }
            g.sort();
            g
        };
        let mut a: Vec<usize> = hw.pus().iter().map(|p| p.os_index).collect();
        let mut b: Vec<usize> = fs.pus().iter().map(|p| p.os_index).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "PUs\nhwloc:\n{hw}\nsysfs:\n{fs}");
        assert_eq!(groups(&hw, |p| p.core), groups(&fs, |p| p.core), "cores");
        assert_eq!(groups(&hw, |p| p.llc), groups(&fs, |p| p.llc), "LLCs");
        assert_eq!(
            groups(&hw, |p| p.package),
            groups(&fs, |p| p.package),
            "packages"
        );
        assert_eq!(groups(&hw, |p| p.node), groups(&fs, |p| p.node), "nodes");
        assert_eq!(hw.llc_level(), fs.llc_level());
        assert_eq!(hw.nr_nodes(), fs.nr_nodes());
        for x in 0..hw.nr_nodes() {
            for y in 0..hw.nr_nodes() {
                let (ox, oy) = (hw.node_os_index(x), hw.node_os_index(y));
                let fx = (0..fs.nr_nodes()).find(|&i| fs.node_os_index(i) == ox);
                let fy = (0..fs.nr_nodes()).find(|&i| fs.node_os_index(i) == oy);
                assert_eq!(
                    hw.numa_distance(x, y),
                    fs.numa_distance(fx.unwrap(), fy.unwrap()),
                    "distance {x} {y}"
                );
            }
        }
        // Both print the same tree.
        assert_eq!(hw.to_string(), fs.to_string());
    }

    #[test]
    fn hwloc_and_our_parser_agree_on_synthetic_machines() {
        for d in [
            "pu:1",
            "core:2 pu:2",
            "numa:2 core:4 pu:2",
            "pack:2 numa:2 l3:1 core:8 pu:2",
            "pack:1 l3:2 core:2 pu:2",
            "pack:2 l3:1 l2:2 core:2 pu:1",
            "numa:4 core:2 pu:1",
        ] {
            let ours = super::super::synthetic::parse(d).unwrap();
            let theirs = synthetic(d).unwrap();
            assert_eq!(ours, theirs, "{d}\nours:\n{ours}\nhwloc:\n{theirs}");
        }
    }
}
