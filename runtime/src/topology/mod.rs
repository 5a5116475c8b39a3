//! The machine as a tree: PU → core → last-level cache (LLC) → package, with
//! NUMA nodes attached where their CPUs are, and the NUMA distance matrix.
//!
//! One type, [`Topology`], whatever the source:
//! - Linux sysfs (`/sys/devices/system/{cpu,node}`): [`Topology::from_sysfs`],
//!   the default of [`Topology::detect`] without the `hwloc` feature;
//! - hwloc through the `hwlocality` crate (cargo feature `hwloc`):
//!   `Topology::from_hwloc`, the default of [`Topology::detect`] with it;
//! - a synthetic description in hwloc's synthetic syntax
//!   (`"pack:2 numa:2 l3:1 core:8 pu:2"`): [`Topology::synthetic`], parsed
//!   by hwloc with the feature and by our own parser of the same syntax
//!   otherwise. Synthetic machines may be larger than the real one; the
//!   runtime then pins their CPUs modulo the real PUs.
//!
//! # Invariants
//! - PUs are stored in logical order (hwloc's `L#`): every core, LLC,
//!   package and NUMA node is a contiguous run of PUs, so the tree is
//!   recovered by grouping consecutive PUs (sources sort them this way).
//! - Ids in [`Pu`] are logical indices, dense from 0 in order of first
//!   appearance: `core` ⊂ `llc` ⊂ `package` nest (a cache or core never
//!   straddles its parent; sources key children by their parent to ensure
//!   it). NUMA nodes need not nest with caches or packages (sub-NUMA
//!   clustering splits a package; a node may hold several packages).
//! - A level the source does not know is filled in as Linux's generic
//!   topology code does: no core level ⇒ every PU is its own core; no cache
//!   level ⇒ the LLC is the package (`cpu_coregroup_mask` falls back to the
//!   package siblings); no package level ⇒ each NUMA node is a package.
//!   Such filled-in levels are not printed.
//! - The distance matrix is square over the NUMA nodes (logical order),
//!   with the smallest value of each row on its diagonal (ACPI SLIT style,
//!   10 = local). Sources without distances get [`LOCAL_DISTANCE`] locally,
//!   [`SAME_PACKAGE_DISTANCE`] between nodes of one package and
//!   [`REMOTE_DISTANCE`] otherwise.

mod cgroup;
#[cfg(feature = "hwloc")]
mod hwloc;
mod synthetic;
mod sysfs;

pub(crate) use cgroup::affinity_cpus;
pub use cgroup::{cpu_quota_limit, default_worker_count};

use std::fmt;
use std::io;

use crate::cpuset::CpuSet;

/// NUMA distance of a node to itself (ACPI SLIT `LOCAL_DISTANCE`).
pub const LOCAL_DISTANCE: u32 = 10;
/// Distance assumed between two NUMA nodes of one package when the source
/// gives none (a sub-NUMA-clustering value; real SLITs use 11–12).
pub const SAME_PACKAGE_DISTANCE: u32 = 12;
/// Distance assumed between NUMA nodes of different packages when the
/// source gives none (the usual two-socket SLIT value; Linux's
/// `REMOTE_DISTANCE` is 20).
pub const REMOTE_DISTANCE: u32 = 21;

/// Where a [`Topology`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologySource {
    /// Read from Linux sysfs.
    Sysfs,
    /// Discovered by hwloc on this machine.
    Hwloc,
    /// Built from a synthetic description (hwloc syntax).
    Synthetic(String),
}

/// One processing unit (hardware thread) and the objects it belongs to.
/// All ids are logical indices (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pu {
    /// The OS's number for it (`P#`; for synthetic machines, the logical
    /// index).
    pub os_index: usize,
    /// Logical index of its core.
    pub core: usize,
    /// Logical index of its last-level cache.
    pub llc: usize,
    /// Logical index of its package (socket).
    pub package: usize,
    /// Logical index of its NUMA node.
    pub node: usize,
}

/// An invalid topology description or an unreadable source.
#[derive(Debug)]
pub enum TopologyError {
    /// A synthetic description hwloc's syntax does not allow.
    Synthetic {
        /// The whole description.
        description: String,
        /// What is wrong, naming the offending item.
        reason: String,
    },
    /// A NUMA distance matrix of the wrong shape or with invalid values.
    Distances(String),
    /// sysfs could not be read or made no sense.
    Sysfs(String),
    /// hwloc failed.
    Hwloc(String),
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Synthetic {
                description,
                reason,
            } => write!(f, "invalid synthetic topology {description:?}: {reason}"),
            TopologyError::Distances(r) => write!(f, "invalid NUMA distances: {r}"),
            TopologyError::Sysfs(r) => write!(f, "reading the topology from sysfs: {r}"),
            TopologyError::Hwloc(r) => write!(f, "hwloc: {r}"),
        }
    }
}

impl std::error::Error for TopologyError {}

impl From<TopologyError> for io::Error {
    /// `EINVAL` for invalid descriptions and distances (the text is lost:
    /// print the [`TopologyError`] itself for it), `EIO` when the machine
    /// could not be read.
    fn from(e: TopologyError) -> io::Error {
        io::Error::from_raw_os_error(match e {
            TopologyError::Synthetic { .. } | TopologyError::Distances(_) => libc::EINVAL,
            TopologyError::Sysfs(_) | TopologyError::Hwloc(_) => libc::EIO,
        })
    }
}

/// Which levels the source actually described (filled-in ones are not
/// printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) core: bool,
    /// Cache depth of the LLC (3 for L3), if any cache is known.
    pub(crate) llc_depth: Option<u8>,
    pub(crate) package: bool,
}

/// The machine: PUs, their cores, LLCs, packages and NUMA nodes, and the
/// NUMA distances. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pus: Vec<Pu>,
    node_os: Vec<usize>,
    /// Row-major `nodes × nodes`.
    distances: Vec<u32>,
    known: Known,
    source: TopologySource,
}

/// A PU as the sources report it, before normalization: OS ids of its
/// groups (any values that are equal exactly for PUs of the same group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawPu {
    pub(crate) os_index: usize,
    pub(crate) core: usize,
    pub(crate) llc: usize,
    pub(crate) package: usize,
    /// OS number of the node.
    pub(crate) node: usize,
}

impl Topology {
    /// The machine this process runs on: through hwloc with the `hwloc`
    /// feature, from sysfs otherwise.
    pub fn detect() -> Result<Topology, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            Topology::from_hwloc()
        }
        #[cfg(not(feature = "hwloc"))]
        {
            Topology::from_sysfs()
        }
    }

    /// The machine as Linux sysfs describes it (`/sys/devices/system`).
    pub fn from_sysfs() -> Result<Topology, TopologyError> {
        sysfs::read_tree(std::path::Path::new("/sys/devices/system"))
    }

    /// The machine described by a sysfs-like tree rooted at `root` (a copy
    /// of `/sys/devices/system` with `cpu/` and optionally `node/`); for
    /// tests and for inspecting other machines' dumps.
    pub fn from_sysfs_at(root: impl AsRef<std::path::Path>) -> Result<Topology, TopologyError> {
        sysfs::read_tree(root.as_ref())
    }

    /// The machine as hwloc discovers it.
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc() -> Result<Topology, TopologyError> {
        hwloc::detect()
    }

    /// A machine built from a description in hwloc's synthetic syntax:
    /// space-separated `type:count` items from the top of the tree down,
    /// ending with `pu:N`; types `pack`/`package`/`socket`, `numa`/`node`,
    /// `l1`..`l5` (optionally `d`/`u` suffixed), `core`, `pu`, and the
    /// pass-through `group`/`die`; `(attributes)` after a count are
    /// ignored. Example: `"pack:2 numa:2 l3:1 core:8 pu:2"` is 64 PUs.
    ///
    /// Parsed by hwloc with the `hwloc` feature, by an equivalent parser
    /// otherwise; invalid strings are a [`TopologyError::Synthetic`].
    pub fn synthetic(description: &str) -> Result<Topology, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            // Our parser first: it checks the rules the tree model needs
            // (e.g. at most one NUMA level) and gives the clearer message.
            synthetic::parse(description)?;
            hwloc::synthetic(description)
        }
        #[cfg(not(feature = "hwloc"))]
        {
            synthetic::parse(description)
        }
    }

    /// A machine of independent CPUs (each its own core, one NUMA node):
    /// what is assumed when the topology cannot be read.
    pub(crate) fn flat(os_cpus: &CpuSet) -> Topology {
        let raw: Vec<RawPu> = os_cpus
            .iter()
            .map(|c| RawPu {
                os_index: c,
                core: c,
                llc: c,
                package: 0,
                node: 0,
            })
            .collect();
        let known = Known {
            core: false,
            llc_depth: None,
            package: false,
        };
        Topology::from_raw(raw, &[0], None, known, TopologySource::Sysfs)
            .or_else(|_| synthetic::parse("pu:1"))
            .expect("a one-PU machine is valid")
    }

    /// Builds a topology from raw per-PU group ids (sources call this).
    /// Sorts PUs into logical order and renumbers ids densely. `distances`
    /// is indexed by position in `node_os` (OS node numbers); `None` gives
    /// the default distances.
    pub(crate) fn from_raw(
        mut raw: Vec<RawPu>,
        node_os: &[usize],
        distances: Option<Vec<u32>>,
        known: Known,
        source: TopologySource,
    ) -> Result<Topology, TopologyError> {
        if raw.is_empty() {
            return Err(TopologyError::Sysfs("no processing units".into()));
        }
        // Key children by their parents so that the tree nests.
        for p in raw.iter_mut() {
            p.llc = pair(p.package, p.llc);
            p.core = pair(p.llc, p.core);
        }
        // The smallest OS PU of each group orders the groups (hwloc orders
        // siblings by their cpusets' first bit).
        let first_of = |f: &dyn Fn(&RawPu) -> usize| {
            let mut m = std::collections::HashMap::new();
            for p in raw.iter() {
                let e = m.entry(f(p)).or_insert(p.os_index);
                *e = (*e).min(p.os_index);
            }
            m
        };
        let (f_pkg, f_node, f_llc, f_core) = (
            first_of(&|p| p.package),
            first_of(&|p| p.node),
            first_of(&|p| p.llc),
            first_of(&|p| p.core),
        );
        // Does a NUMA node hold whole packages (node above package) or do
        // packages hold nodes? Sort by the bigger one first.
        let node_above_pkg = raw.iter().all(|a| {
            raw.iter()
                .all(|b| a.package != b.package || a.node == b.node)
        });
        raw.sort_by_key(|p| {
            let (pk, nd) = (f_pkg[&p.package], f_node[&p.node]);
            let (hi, lo) = if node_above_pkg { (nd, pk) } else { (pk, nd) };
            (hi, lo, f_llc[&p.llc], f_core[&p.core], p.os_index)
        });
        if raw.windows(2).any(|w| w[0].os_index == w[1].os_index) {
            return Err(TopologyError::Sysfs("a PU is listed twice".into()));
        }
        let dense = |f: &dyn Fn(&RawPu) -> usize| -> Vec<usize> {
            let mut ids: Vec<usize> = Vec::new();
            let mut seen = std::collections::HashMap::new();
            for p in raw.iter() {
                let n = seen.len();
                ids.push(*seen.entry(f(p)).or_insert(n));
            }
            ids
        };
        let (core, llc, package, node) = (
            dense(&|p| p.core),
            dense(&|p| p.llc),
            dense(&|p| p.package),
            dense(&|p| p.node),
        );
        let nr_nodes = node.iter().max().map_or(0, |m| m + 1);
        // OS numbers of the nodes in logical order.
        let mut logical_node_os = vec![0; nr_nodes];
        for (i, p) in raw.iter().enumerate() {
            logical_node_os[node[i]] = p.node;
        }
        let pus: Vec<Pu> = raw
            .iter()
            .enumerate()
            .map(|(i, p)| Pu {
                os_index: p.os_index,
                core: core[i],
                llc: llc[i],
                package: package[i],
                node: node[i],
            })
            .collect();
        let distances = match distances {
            Some(d) => {
                let n = node_os.len();
                if d.len() != n * n {
                    return Err(TopologyError::Distances(format!(
                        "{} values for {n} nodes",
                        d.len()
                    )));
                }
                let pos = |os: usize| node_os.iter().position(|&o| o == os);
                let mut out = Vec::with_capacity(nr_nodes * nr_nodes);
                for &a in logical_node_os.iter() {
                    for &b in logical_node_os.iter() {
                        match (pos(a), pos(b)) {
                            (Some(i), Some(j)) => out.push(d[i * n + j]),
                            _ => out.push(if a == b {
                                LOCAL_DISTANCE
                            } else {
                                REMOTE_DISTANCE
                            }),
                        }
                    }
                }
                out
            }
            None => default_distances(&pus, nr_nodes),
        };
        let t = Topology {
            pus,
            node_os: logical_node_os,
            distances,
            known,
            source,
        };
        check_distances(&t.distances, nr_nodes)?;
        Ok(t)
    }

    /// Replaces the NUMA distance matrix (`matrix[a][b]`: from node `a` to
    /// node `b`, logical order). Errors unless it is square over the nodes,
    /// every value is positive and each diagonal entry is its row's minimum.
    pub fn with_numa_distances(mut self, matrix: &[Vec<u32>]) -> Result<Topology, TopologyError> {
        let n = self.nr_nodes();
        if matrix.len() != n || matrix.iter().any(|r| r.len() != n) {
            return Err(TopologyError::Distances(format!(
                "expected a {n}x{n} matrix for {n} NUMA nodes"
            )));
        }
        let flat: Vec<u32> = matrix.iter().flatten().copied().collect();
        check_distances(&flat, n)?;
        self.distances = flat;
        Ok(self)
    }

    /// The PUs in logical order.
    pub fn pus(&self) -> &[Pu] {
        &self.pus
    }

    /// Number of PUs.
    pub fn nr_pus(&self) -> usize {
        self.pus.len()
    }

    /// Number of cores.
    pub fn nr_cores(&self) -> usize {
        self.count(|p| p.core)
    }

    /// Number of last-level caches.
    pub fn nr_llcs(&self) -> usize {
        self.count(|p| p.llc)
    }

    /// Number of packages.
    pub fn nr_packages(&self) -> usize {
        self.count(|p| p.package)
    }

    /// Number of NUMA nodes.
    pub fn nr_nodes(&self) -> usize {
        self.node_os.len()
    }

    fn count(&self, f: impl Fn(&Pu) -> usize) -> usize {
        self.pus.iter().map(f).max().map_or(0, |m| m + 1)
    }

    /// OS number of NUMA node `node` (logical index).
    pub fn node_os_index(&self, node: usize) -> Option<usize> {
        self.node_os.get(node).copied()
    }

    /// NUMA distance from node `a` to node `b` (logical indices).
    pub fn numa_distance(&self, a: usize, b: usize) -> Option<u32> {
        let n = self.nr_nodes();
        (a < n && b < n).then(|| self.distances[a * n + b])
    }

    /// Whether the source described cores (SMT siblings).
    pub fn knows_cores(&self) -> bool {
        self.known.core
    }

    /// Level of the last-level cache (3 for L3) if the source described
    /// caches.
    pub fn llc_level(&self) -> Option<u8> {
        self.known.llc_depth
    }

    /// Whether the source described packages.
    pub fn knows_packages(&self) -> bool {
        self.known.package
    }

    /// Where this topology came from.
    pub fn source(&self) -> &TopologySource {
        &self.source
    }

    /// The logical PUs whose OS index is in `os_cpus` (e.g. the process's
    /// affinity mask).
    pub fn pus_in(&self, os_cpus: &CpuSet) -> Vec<usize> {
        (0..self.pus.len())
            .filter(|&i| os_cpus.is_set(self.pus[i].os_index))
            .collect()
    }

    /// The logical PUs in "spread" order: one PU of every core before any
    /// core's second PU, and consecutive picks alternate between NUMA
    /// nodes, packages and LLCs as far as they can (hwloc_distrib-like
    /// round-robin over the tree, top level first).
    pub fn spread_order(&self) -> Vec<usize> {
        // The distinct (node, package, llc, core) groups, in logical order,
        // as a tree; interleave children round-robin, level by level.
        fn interleave(lists: Vec<Vec<usize>>) -> Vec<usize> {
            let mut out = Vec::new();
            let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
            for i in 0..longest {
                for l in lists.iter() {
                    if let Some(&x) = l.get(i) {
                        out.push(x);
                    }
                }
            }
            out
        }
        // Cores grouped by key prefix: recursion over [node, package, llc].
        fn order(t: &Topology, cores: &[usize], depth: usize) -> Vec<usize> {
            let key = |c: usize| -> usize {
                let p = t.pus.iter().find(|p| p.core == c).expect("core has a PU");
                match depth {
                    0 => p.node,
                    1 => p.package,
                    _ => p.llc,
                }
            };
            if depth > 2 {
                return cores.to_vec();
            }
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
            for &c in cores {
                let k = key(c);
                match groups.iter_mut().find(|(g, _)| *g == k) {
                    Some((_, v)) => v.push(c),
                    None => groups.push((k, vec![c])),
                }
            }
            interleave(
                groups
                    .into_iter()
                    .map(|(_, v)| order(t, &v, depth + 1))
                    .collect(),
            )
        }
        let cores: Vec<usize> = (0..self.nr_cores()).collect();
        let core_order = order(self, &cores, 0);
        // PUs of each core in logical order; take rank 0 of every core,
        // then rank 1, ...
        let per_core: Vec<Vec<usize>> = core_order
            .iter()
            .map(|&c| {
                (0..self.pus.len())
                    .filter(|&i| self.pus[i].core == c)
                    .collect()
            })
            .collect();
        interleave(per_core)
    }
}

/// Combines two ids into one that is equal iff both are.
fn pair(a: usize, b: usize) -> usize {
    // Cantor pairing would overflow for large OS ids; ids are small (CPU
    // and node numbers below 2^20), so shift instead.
    (a << 24) ^ b
}

fn default_distances(pus: &[Pu], nr_nodes: usize) -> Vec<u32> {
    let pkgs_of = |n: usize| -> Vec<usize> {
        let mut v: Vec<usize> = pus
            .iter()
            .filter(|p| p.node == n)
            .map(|p| p.package)
            .collect();
        v.dedup();
        v
    };
    let mut d = Vec::with_capacity(nr_nodes * nr_nodes);
    for a in 0..nr_nodes {
        let pa = pkgs_of(a);
        for b in 0..nr_nodes {
            d.push(if a == b {
                LOCAL_DISTANCE
            } else if pkgs_of(b).iter().any(|p| pa.contains(p)) {
                SAME_PACKAGE_DISTANCE
            } else {
                REMOTE_DISTANCE
            });
        }
    }
    d
}

fn check_distances(d: &[u32], n: usize) -> Result<(), TopologyError> {
    if d.len() != n * n {
        return Err(TopologyError::Distances(format!(
            "{} values for {n} nodes",
            d.len()
        )));
    }
    for a in 0..n {
        let row = &d[a * n..(a + 1) * n];
        if row.contains(&0) {
            return Err(TopologyError::Distances(format!("row {a} has a zero")));
        }
        if row.iter().any(|&x| x < row[a]) {
            return Err(TopologyError::Distances(format!(
                "node {a} is closer to another node than to itself"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Display: the tree as `lstopo --of console` prints it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Machine,
    Package,
    Group,
    Llc(u8),
    Core,
    Pu,
}

/// A node of the printed tree: a run of PUs `lo..hi`.
#[derive(Debug)]
struct Obj {
    kind: Kind,
    logical: usize,
    os: Option<usize>,
    lo: usize,
    hi: usize,
    /// NUMA nodes attached here (logical ids).
    memory: Vec<usize>,
    children: Vec<Obj>,
}

/// A printed level: its kind and the id of a PU's object at that level.
type Level = (Kind, fn(&Pu) -> usize);

impl Topology {
    /// The normal levels below Machine that are printed, top down, each
    /// with the id function.
    fn printed_levels(&self) -> Vec<Level> {
        let mut v: Vec<Level> = Vec::new();
        if self.known.package {
            v.push((Kind::Package, |p| p.package));
        }
        if let Some(d) = self.known.llc_depth {
            v.push((Kind::Llc(d), |p| p.llc));
        }
        if self.known.core {
            v.push((Kind::Core, |p| p.core));
        }
        v
    }

    fn build_tree(&self) -> Obj {
        let levels = self.printed_levels();
        fn build(t: &Topology, levels: &[Level], lo: usize, hi: usize) -> Vec<Obj> {
            let Some(&(kind, id)) = levels.first() else {
                return (lo..hi)
                    .map(|i| Obj {
                        kind: Kind::Pu,
                        logical: i,
                        os: Some(t.pus[i].os_index),
                        lo: i,
                        hi: i + 1,
                        memory: Vec::new(),
                        children: Vec::new(),
                    })
                    .collect();
            };
            let mut out = Vec::new();
            let mut s = lo;
            while s < hi {
                let g = id(&t.pus[s]);
                let mut e = s + 1;
                while e < hi && id(&t.pus[e]) == g {
                    e += 1;
                }
                out.push(Obj {
                    kind,
                    logical: g,
                    os: None,
                    lo: s,
                    hi: e,
                    memory: Vec::new(),
                    children: build(t, &levels[1..], s, e),
                });
                s = e;
            }
            out
        }
        let mut root = Obj {
            kind: Kind::Machine,
            logical: 0,
            os: None,
            lo: 0,
            hi: self.pus.len(),
            memory: Vec::new(),
            children: build(self, &levels, 0, self.pus.len()),
        };
        // Attach each NUMA node to the deepest Machine/Package whose PUs
        // are exactly the node's, or under a Group0 made for it inside the
        // deepest one containing it (as hwloc 2 does).
        let mut groups = 0;
        for n in 0..self.nr_nodes() {
            let idx: Vec<usize> = (0..self.pus.len())
                .filter(|&i| self.pus[i].node == n)
                .collect();
            let (lo, hi) = (idx[0], idx[idx.len() - 1] + 1);
            let contiguous = idx.len() == hi - lo;
            attach(&mut root, n, lo, hi, contiguous, &mut groups);
        }
        root
    }
}

fn attach(o: &mut Obj, node: usize, lo: usize, hi: usize, contiguous: bool, groups: &mut usize) {
    // Descend into a Package child containing the node.
    if let Some(c) = o
        .children
        .iter_mut()
        .find(|c| c.kind == Kind::Package && c.lo <= lo && hi <= c.hi)
    {
        return attach(c, node, lo, hi, contiguous, groups);
    }
    if (o.lo == lo && o.hi == hi) || !contiguous {
        o.memory.push(node);
        return;
    }
    // The children wholly inside the node go under a new Group0.
    let inside = |c: &Obj| lo <= c.lo && c.hi <= hi;
    if !o.children.iter().any(inside)
        || o.children
            .iter()
            .any(|c| c.lo < hi && lo < c.hi && !inside(c))
    {
        o.memory.push(node);
        return;
    }
    let first = o.children.iter().position(inside).unwrap_or(0);
    let moved: Vec<Obj> = {
        let mut keep = Vec::new();
        let mut moved = Vec::new();
        for c in o.children.drain(..) {
            if inside(&c) {
                moved.push(c);
            } else {
                keep.push(c);
            }
        }
        o.children = keep;
        moved
    };
    let g = Obj {
        kind: Kind::Group,
        logical: *groups,
        os: None,
        lo,
        hi,
        memory: vec![node],
        children: moved,
    };
    *groups += 1;
    o.children.insert(first, g);
}

impl fmt::Display for Topology {
    /// The tree as `lstopo --of console` prints it (without memory and
    /// cache sizes, which we do not track), then the NUMA distances when
    /// there is more than one node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.build_tree();
        fn label(t: &Topology, o: &Obj) -> String {
            match o.kind {
                Kind::Machine => format!(
                    "Machine ({} PUs, {} NUMA node{})",
                    t.nr_pus(),
                    t.nr_nodes(),
                    if t.nr_nodes() == 1 { "" } else { "s" }
                ),
                Kind::Package => format!("Package L#{}", o.logical),
                Kind::Group => format!("Group0 L#{}", o.logical),
                Kind::Llc(d) => format!("L{d} L#{}", o.logical),
                Kind::Core => format!("Core L#{}", o.logical),
                Kind::Pu => format!("PU L#{} (P#{})", o.logical, o.os.unwrap_or(0)),
            }
        }
        fn print(t: &Topology, o: &Obj, indent: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            // Merge single-child chains without memory onto one line.
            let mut line = label(t, o);
            let mut cur = o;
            while cur.kind != Kind::Machine && cur.memory.is_empty() && cur.children.len() == 1 {
                cur = &cur.children[0];
                line.push_str(" + ");
                line.push_str(&label(t, cur));
            }
            writeln!(f, "{:indent$}{line}", "", indent = indent)?;
            for &n in cur.memory.iter() {
                writeln!(
                    f,
                    "{:indent$}NUMANode L#{n} (P#{})",
                    "",
                    t.node_os[n],
                    indent = indent + 2
                )?;
            }
            for c in cur.children.iter() {
                print(t, c, indent + 2, f)?;
            }
            Ok(())
        }
        print(self, &root, 0, f)?;
        let n = self.nr_nodes();
        if n > 1 {
            writeln!(f, "NUMA distances (relative latency) by logical index:")?;
            write!(f, "  index")?;
            for b in 0..n {
                write!(f, " {b:>5}")?;
            }
            writeln!(f)?;
            for a in 0..n {
                write!(f, "  {a:>5}")?;
                for b in 0..n {
                    write!(f, " {:>5}", self.distances[a * n + b])?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
