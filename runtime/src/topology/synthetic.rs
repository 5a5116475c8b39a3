//! Our parser of hwloc's synthetic topology syntax (used without the
//! `hwloc` feature, and with it as a first check).
//!
//! A description lists levels from the top of the tree down, each as
//! `type:count` = how many such objects each object of the level above
//! holds; the root Machine is implicit and the last level is `pu`. Rules
//! checked here (each violation is a [`TopologyError::Synthetic`] naming
//! the item): a known type; a count ≥ 1; `pu` last and once; at most one
//! `core`, `package` and NUMA level; caches above `core`, below `package`,
//! in decreasing level order; at most [`CPU_SETSIZE`] PUs.

use super::{Known, RawPu, Topology, TopologyError, TopologySource};
use crate::cpuset::CPU_SETSIZE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Package,
    Numa,
    /// A data or unified cache of this depth.
    Cache(u8),
    /// Levels that only multiply (group, die, instruction caches).
    PassThrough,
    Core,
    Pu,
}

fn level_of(name: &str) -> Option<Level> {
    let n = name.to_ascii_lowercase();
    Some(match n.as_str() {
        "pack" | "package" | "socket" | "sock" => Level::Package,
        "numa" | "node" | "numanode" => Level::Numa,
        "core" => Level::Core,
        "pu" => Level::Pu,
        "group" | "die" | "cluster" => Level::PassThrough,
        _ => {
            let rest = n.strip_prefix('l')?;
            let (digit, suffix) = rest.split_at(1);
            let d: u8 = digit.parse().ok().filter(|d| (1..=5).contains(d))?;
            match suffix {
                "" | "d" | "u" | "cache" | "dcache" | "ucache" => Level::Cache(d),
                "i" | "icache" => Level::PassThrough,
                _ => return None,
            }
        }
    })
}

/// Parses `description` into a topology.
pub(crate) fn parse(description: &str) -> Result<Topology, TopologyError> {
    let err = |reason: String| TopologyError::Synthetic {
        description: description.to_owned(),
        reason,
    };
    let mut levels: Vec<(Level, usize)> = Vec::new();
    for item in description.split_whitespace() {
        // `(attributes)` after the count are allowed and ignored.
        let core_part = match item.find('(') {
            Some(i) if item.ends_with(')') => &item[..i],
            Some(_) => return Err(err(format!("unbalanced '(' in {item:?}"))),
            None => item,
        };
        let Some((name, count)) = core_part.split_once(':') else {
            return Err(err(format!("{item:?} is not of the form type:count")));
        };
        if name.eq_ignore_ascii_case("machine") {
            return Err(err(
                "the root Machine is implicit; start with the level below it".into(),
            ));
        }
        let level = level_of(name).ok_or_else(|| {
            err(format!(
                "unknown object type {name:?} (known: pack, numa, l1..l5, group, die, core, pu)"
            ))
        })?;
        let count: usize = count
            .parse()
            .map_err(|_| err(format!("count {count:?} of {name:?} is not a number")))?;
        if count == 0 {
            return Err(err(format!("count of {name:?} must be at least 1")));
        }
        levels.push((level, count));
    }
    if levels.is_empty() {
        return Err(err(
            "empty description (expected e.g. \"core:2 pu:2\")".into()
        ));
    }
    // Order rules.
    let pos = |l: Level| levels.iter().position(|&(x, _)| x == l);
    let count_of = |f: &dyn Fn(Level) -> bool| levels.iter().filter(|&&(x, _)| f(x)).count();
    if count_of(&|l| l == Level::Pu) != 1 || levels.last().map(|l| l.0) != Some(Level::Pu) {
        return Err(err("the last level, and only it, must be \"pu\"".into()));
    }
    for (l, name) in [
        (Level::Core, "core"),
        (Level::Package, "package"),
        (Level::Numa, "NUMA"),
    ] {
        if count_of(&|x| x == l) > 1 {
            return Err(err(format!("more than one {name} level")));
        }
    }
    let core = pos(Level::Core);
    let package = pos(Level::Package);
    let mut last_cache: Option<(usize, u8)> = None;
    for (i, &(l, _)) in levels.iter().enumerate() {
        if let Level::Cache(d) = l {
            if core.is_some_and(|c| i > c) {
                return Err(err(format!("cache L{d} below the core level")));
            }
            if package.is_some_and(|p| i < p) {
                return Err(err(format!("cache L{d} above the package level")));
            }
            if let Some((_, prev)) = last_cache {
                if d >= prev {
                    return Err(err(format!("cache L{d} below cache L{prev}")));
                }
            }
            last_cache = Some((i, d));
        }
        if l == Level::Package && core.is_some_and(|c| i > c) {
            return Err(err("package below the core level".into()));
        }
        if l == Level::Numa && core.is_some_and(|c| i > c) {
            return Err(err("NUMA level below the core level".into()));
        }
    }
    let mut total: usize = 1;
    for &(_, c) in levels.iter() {
        total = total
            .checked_mul(c)
            .filter(|&t| t <= CPU_SETSIZE)
            .ok_or_else(|| err(format!("more than {CPU_SETSIZE} PUs")))?;
    }

    // below[k]: PUs under one object of level k.
    let mut below = vec![1usize; levels.len()];
    for k in (0..levels.len().saturating_sub(1)).rev() {
        below[k] = below[k + 1] * levels[k + 1].1;
    }
    let id_at = |pu: usize, k: Option<usize>| k.map(|k| pu / below[k]);
    let llc = levels
        .iter()
        .enumerate()
        .filter_map(|(i, &(l, _))| matches!(l, Level::Cache(_)).then_some(i))
        .next();
    let numa = pos(Level::Numa);
    let raw: Vec<RawPu> = (0..total)
        .map(|pu| {
            let node = id_at(pu, numa).unwrap_or(0);
            let package = id_at(pu, package).unwrap_or(node);
            RawPu {
                os_index: pu,
                core: id_at(pu, core).unwrap_or(pu),
                llc: id_at(pu, llc).unwrap_or(package),
                package,
                node,
            }
        })
        .collect();
    let nr_nodes = numa.map_or(1, |k| total / below[k]);
    let node_os: Vec<usize> = (0..nr_nodes).collect();
    let known = Known {
        core: core.is_some(),
        llc_depth: llc.map(|k| match levels[k].0 {
            Level::Cache(d) => d,
            _ => 0,
        }),
        package: package.is_some(),
    };
    Topology::from_raw(
        raw,
        &node_os,
        None,
        known,
        TopologySource::Synthetic(description.to_owned()),
    )
}
