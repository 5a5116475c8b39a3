//! Scheduling domains: for each runtime CPU, the chain of ever larger CPU
//! sets the load balancer works over, built from the [`Topology`] the way
//! Linux's `build_sched_domains()` builds them (reference/scheduling.md
//! §4.1–§4.3; kernel/sched/topology.c). Pure: no threads, no clock.
//!
//! # Construction
//! 1. **Levels**, bottom up, each giving every CPU a span:
//!    SMT (CPUs on the same core; `SD_SHARE_CPUCAPACITY | SD_SHARE_LLC`),
//!    MC (CPUs sharing the last-level cache, within the NUMA node, as
//!    `cpu_coregroup_mask`; `SD_SHARE_LLC`), PKG (CPUs of the same NUMA
//!    node: Linux's `cpu_cpu_mask`), then one NUMA level per distinct node
//!    distance `d` above the local one (CPUs on nodes within distance `d`;
//!    `SD_NUMA | SD_OVERLAP`). The local-distance NODE level equals PKG and
//!    is left out. A span that does not contain its child's is widened to
//!    it (the kernel's "arch topology borken" repair).
//! 2. **Groups** of a CPU's domain: walking the span from that CPU
//!    (wrapping), each not yet covered CPU contributes its child-level span
//!    (a single CPU at the bottom). Non-NUMA groups partition the span;
//!    NUMA groups may overlap, as `build_overlap_sched_groups()` allows. A
//!    group's capacity is `SCHED_CAPACITY_SCALE` (1024) per CPU: our CPUs
//!    are equal worker threads.
//! 3. **Parameters** (`sd_init()`): `min_interval = span` ms,
//!    `max_interval = 2 × span` ms, `balance_interval = span` ms,
//!    `busy_factor = 16`, `imbalance_pct = 117`; flags `SD_BALANCE_NEWIDLE
//!    | SD_BALANCE_EXEC | SD_BALANCE_FORK | SD_WAKE_AFFINE |
//!    SD_PREFER_SIBLING`. SMT: `imbalance_pct = 110`. LLC:
//!    `cache_nice_tries = 1`. NUMA: `cache_nice_tries = 2`, no
//!    `SD_PREFER_SIBLING`, `SD_SERIALIZE`, and beyond `RECLAIM_DISTANCE`
//!    (30) no `SD_BALANCE_EXEC | SD_BALANCE_FORK | SD_WAKE_AFFINE`.
//!    Others: `cache_nice_tries = 1`.
//! 4. **Degenerate domains removed** (`cpu_attach_domain()`): a parent with
//!    the same span as its child whose flags (less the group-needing ones
//!    when it has one group) the child already has, or a domain of one CPU
//!    or of a single group (unless `SD_WAKE_AFFINE`, which needs no
//!    groups); a removed parent hands `SD_PREFER_SIBLING` down.
//!
//! Besides the kernel's flags, [`SdFlags::SHARE_PKG`] marks domains whose
//! span lies inside one physical package (greenos's own; the kernel's old
//! `SD_SHARE_PKG_RESOURCES` meant the LLC, today's `SD_SHARE_LLC`).

use std::fmt;

use crate::cpuset::CpuSet;
use crate::topology::{Topology, LOCAL_DISTANCE};

/// `SCHED_CAPACITY_SCALE`: the capacity of one full CPU.
pub const SCHED_CAPACITY_SCALE: u64 = 1024;
/// `RECLAIM_DISTANCE` (include/linux/topology.h): NUMA levels farther than
/// this stop fork/exec balancing and affine wakeups.
pub const RECLAIM_DISTANCE: u32 = 30;
/// `busy_factor` of every domain (16 since Linux 5.10; 32 before).
pub const BUSY_FACTOR: u32 = 16;

/// Scheduling domain flags (include/linux/sched/sd_flags.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SdFlags(u32);

impl SdFlags {
    /// Balance when about to become idle.
    pub const BALANCE_NEWIDLE: SdFlags = SdFlags(1 << 0);
    /// Balance on exec.
    pub const BALANCE_EXEC: SdFlags = SdFlags(1 << 1);
    /// Balance on fork / clone.
    pub const BALANCE_FORK: SdFlags = SdFlags(1 << 2);
    /// Balance on wakeup (never set by default).
    pub const BALANCE_WAKE: SdFlags = SdFlags(1 << 3);
    /// Consider waking a task on the waking CPU.
    pub const WAKE_AFFINE: SdFlags = SdFlags(1 << 4);
    /// Members share CPU capacity (SMT siblings).
    pub const SHARE_CPUCAPACITY: SdFlags = SdFlags(1 << 5);
    /// Members share the last-level cache.
    pub const SHARE_LLC: SdFlags = SdFlags(1 << 6);
    /// Members are in one physical package (greenos; see the module docs).
    pub const SHARE_PKG: SdFlags = SdFlags(1 << 7);
    /// Only one CPU at a time balances this domain.
    pub const SERIALIZE: SdFlags = SdFlags(1 << 8);
    /// Prefer to place tasks in a sibling domain.
    pub const PREFER_SIBLING: SdFlags = SdFlags(1 << 9);
    /// Groups may overlap.
    pub const OVERLAP: SdFlags = SdFlags(1 << 10);
    /// Crosses NUMA nodes.
    pub const NUMA: SdFlags = SdFlags(1 << 11);

    const NAMES: [(SdFlags, &'static str); 12] = [
        (SdFlags::BALANCE_NEWIDLE, "SD_BALANCE_NEWIDLE"),
        (SdFlags::BALANCE_EXEC, "SD_BALANCE_EXEC"),
        (SdFlags::BALANCE_FORK, "SD_BALANCE_FORK"),
        (SdFlags::BALANCE_WAKE, "SD_BALANCE_WAKE"),
        (SdFlags::WAKE_AFFINE, "SD_WAKE_AFFINE"),
        (SdFlags::SHARE_CPUCAPACITY, "SD_SHARE_CPUCAPACITY"),
        (SdFlags::SHARE_LLC, "SD_SHARE_LLC"),
        (SdFlags::SHARE_PKG, "SD_SHARE_PKG"),
        (SdFlags::SERIALIZE, "SD_SERIALIZE"),
        (SdFlags::PREFER_SIBLING, "SD_PREFER_SIBLING"),
        (SdFlags::OVERLAP, "SD_OVERLAP"),
        (SdFlags::NUMA, "SD_NUMA"),
    ];

    /// Flags that only mean something with at least two groups
    /// (`SD_DEGENERATE_GROUPS_MASK`: all but `SD_WAKE_AFFINE`; our
    /// `SHARE_PKG` is descriptive and needs none either).
    const NEEDS_GROUPS: SdFlags = SdFlags(
        SdFlags::BALANCE_NEWIDLE.0
            | SdFlags::BALANCE_EXEC.0
            | SdFlags::BALANCE_FORK.0
            | SdFlags::BALANCE_WAKE.0
            | SdFlags::SHARE_CPUCAPACITY.0
            | SdFlags::SHARE_LLC.0
            | SdFlags::SERIALIZE.0
            | SdFlags::PREFER_SIBLING.0
            | SdFlags::OVERLAP.0
            | SdFlags::NUMA.0,
    );

    /// No flags.
    pub const fn empty() -> SdFlags {
        SdFlags(0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: SdFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    fn remove(&mut self, other: SdFlags) {
        self.0 &= !other.0;
    }
}

impl std::ops::BitOr for SdFlags {
    type Output = SdFlags;
    fn bitor(self, o: SdFlags) -> SdFlags {
        SdFlags(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for SdFlags {
    fn bitor_assign(&mut self, o: SdFlags) {
        self.0 |= o.0;
    }
}

impl fmt::Display for SdFlags {
    /// The kernel's names separated by `|` (as in debugfs `flags`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in SdFlags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                first = false;
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SdFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdFlags({self})")
    }
}

/// The kind of a domain level (the kernel's `sd->name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainLevel {
    /// SMT siblings of one core.
    Smt,
    /// Cores sharing the last-level cache ("multi-core").
    Mc,
    /// The CPUs of one NUMA node / package.
    Pkg,
    /// CPUs within one NUMA distance.
    Numa,
}

impl DomainLevel {
    /// The kernel's name: `SMT`, `MC`, `PKG` or `NUMA`.
    pub fn name(self) -> &'static str {
        match self {
            DomainLevel::Smt => "SMT",
            DomainLevel::Mc => "MC",
            DomainLevel::Pkg => "PKG",
            DomainLevel::Numa => "NUMA",
        }
    }
}

/// One group of a domain: the CPUs balanced as a unit at that level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedGroup {
    /// The group's id as the kernel prints it (`sgc->id`: its first CPU).
    pub id: usize,
    /// The CPUs in the group.
    pub span: CpuSet,
    /// Total capacity (1024 per CPU).
    pub capacity: u64,
}

/// One scheduling domain of one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedDomain {
    /// The CPU whose domain this is.
    pub cpu: usize,
    /// Position in the CPU's chain after degenerate levels were removed
    /// (0 = lowest; the kernel's `domain-N`).
    pub level: usize,
    /// What kind of level it is.
    pub kind: DomainLevel,
    /// The CPUs it covers (includes `cpu`).
    pub span: CpuSet,
    /// Its groups, the CPU's own first; their union is `span`.
    pub groups: Vec<SchedGroup>,
    /// Flags.
    pub flags: SdFlags,
    /// NUMA distance of a NUMA level.
    pub numa_distance: Option<u32>,
    /// Shortest balance interval, ms (`span` weight).
    pub min_interval_ms: u64,
    /// Longest balance interval, ms (`2 × span` weight).
    pub max_interval_ms: u64,
    /// Current balance interval, ms (starts at `min_interval_ms`).
    pub balance_interval_ms: u64,
    /// Interval multiplier while the CPU is busy.
    pub busy_factor: u32,
    /// Imbalance threshold in percent (110 SMT, 117 otherwise).
    pub imbalance_pct: u32,
    /// Failed balance attempts before cache-hot tasks may move.
    pub cache_nice_tries: u32,
}

impl SchedDomain {
    /// Number of CPUs in the span.
    pub fn span_weight(&self) -> usize {
        self.span.count()
    }

    /// The periodic balance interval in ms (fair.c
    /// `get_sd_balance_interval()`, HZ = 1000): `balance_interval`, times
    /// `busy_factor` minus one jiffy when busy, clamped to
    /// `[1, max_load_balance_interval = online_cpus × 100 ms]`.
    pub fn interval_ms(&self, busy: bool, online_cpus: usize) -> u64 {
        let mut i = self.balance_interval_ms;
        if busy {
            i = (i * self.busy_factor as u64).saturating_sub(1);
        }
        let max = (online_cpus as u64 * 100).max(1);
        i.clamp(1, max)
    }
}

/// A raw (unpruned) level: its kind, per-CPU spans and flags.
struct RawLevel {
    kind: DomainLevel,
    spans: Vec<CpuSet>,
    topo_flags: SdFlags,
    distance: Option<u32>,
}

/// Builds every CPU's domains. `cpu_pu[c]` is the logical PU (index into
/// `topology.pus()`) runtime CPU `c` runs on; several CPUs on one PU count
/// as SMT siblings. Returns the domains of CPU 0 bottom-up, then CPU 1's,
/// and so on (a CPU alone in the machine has none). Out-of-range PU
/// indices are taken modulo the topology's PU count.
pub fn build(topology: &Topology, cpu_pu: &[usize]) -> Vec<SchedDomain> {
    let n = cpu_pu.len();
    if n == 0 || topology.nr_pus() == 0 {
        return Vec::new();
    }
    let pus = topology.pus();
    let pu = |c: usize| pus[cpu_pu[c] % pus.len()];
    let span_where = |f: &dyn Fn(usize, usize) -> bool| -> Vec<CpuSet> {
        (0..n)
            .map(|c| (0..n).filter(|&d| f(c, d)).collect())
            .collect()
    };
    let mut levels = vec![
        RawLevel {
            kind: DomainLevel::Smt,
            spans: span_where(&|a, b| pu(a).core == pu(b).core),
            topo_flags: SdFlags::SHARE_CPUCAPACITY | SdFlags::SHARE_LLC,
            distance: None,
        },
        RawLevel {
            kind: DomainLevel::Mc,
            spans: span_where(&|a, b| pu(a).llc == pu(b).llc && pu(a).node == pu(b).node),
            topo_flags: SdFlags::SHARE_LLC,
            distance: None,
        },
        RawLevel {
            kind: DomainLevel::Pkg,
            spans: span_where(&|a, b| pu(a).node == pu(b).node),
            topo_flags: SdFlags::empty(),
            distance: None,
        },
    ];
    // One NUMA level per distinct distance above the local one, over the
    // nodes that hold CPUs.
    let dist = |a: usize, b: usize| {
        topology
            .numa_distance(pu(a).node, pu(b).node)
            .unwrap_or(LOCAL_DISTANCE)
    };
    let mut distances: Vec<u32> = (0..n)
        .flat_map(|a| (0..n).map(move |b| (a, b)))
        .filter(|&(a, b)| pu(a).node != pu(b).node)
        .map(|(a, b)| dist(a, b))
        .collect();
    distances.sort_unstable();
    distances.dedup();
    for d in distances {
        levels.push(RawLevel {
            kind: DomainLevel::Numa,
            spans: span_where(&|a, b| pu(a).node == pu(b).node || dist(a, b) <= d),
            topo_flags: SdFlags::NUMA | SdFlags::OVERLAP,
            distance: Some(d),
        });
    }
    // Every span contains its child's.
    for l in 1..levels.len() {
        for c in 0..n {
            let child = levels[l - 1].spans[c].clone();
            levels[l].spans[c].union_with(&child);
        }
    }

    let mut out = Vec::new();
    for cpu in 0..n {
        let mut chain: Vec<SchedDomain> = (0..levels.len())
            .map(|l| raw_domain(&levels, l, cpu, n, |c| pu(c).package))
            .collect();
        prune(&mut chain);
        for (i, d) in chain.iter_mut().enumerate() {
            d.level = i;
        }
        out.extend(chain);
    }
    out
}

fn raw_domain(
    levels: &[RawLevel],
    l: usize,
    cpu: usize,
    n: usize,
    package_of: impl Fn(usize) -> usize,
) -> SchedDomain {
    let lvl = &levels[l];
    let span = lvl.spans[cpu].clone();
    // Groups: walk the span from `cpu`, wrapping.
    let mut covered = CpuSet::new();
    let mut groups = Vec::new();
    for j in (cpu..n).chain(0..cpu).filter(|&j| span.is_set(j)) {
        if covered.is_set(j) {
            continue;
        }
        let g = if l == 0 {
            [j].into_iter().collect()
        } else {
            levels[l - 1].spans[j].clone()
        };
        covered.union_with(&g);
        groups.push(SchedGroup {
            id: g.first().unwrap_or(j),
            capacity: SCHED_CAPACITY_SCALE * g.count() as u64,
            span: g,
        });
    }
    // sd_init().
    let mut flags = SdFlags::BALANCE_NEWIDLE
        | SdFlags::BALANCE_EXEC
        | SdFlags::BALANCE_FORK
        | SdFlags::WAKE_AFFINE
        | SdFlags::PREFER_SIBLING
        | lvl.topo_flags;
    let first_pkg = span.first().map(&package_of);
    if span.iter().all(|c| Some(package_of(c)) == first_pkg) {
        flags |= SdFlags::SHARE_PKG;
    }
    let (imbalance_pct, cache_nice_tries);
    if flags.contains(SdFlags::SHARE_CPUCAPACITY) {
        imbalance_pct = 110;
        cache_nice_tries = 0;
    } else if flags.contains(SdFlags::SHARE_LLC) {
        imbalance_pct = 117;
        cache_nice_tries = 1;
    } else if flags.contains(SdFlags::NUMA) {
        imbalance_pct = 117;
        cache_nice_tries = 2;
        flags.remove(SdFlags::PREFER_SIBLING);
        flags |= SdFlags::SERIALIZE;
        if lvl.distance.is_some_and(|d| d > RECLAIM_DISTANCE) {
            flags.remove(SdFlags::BALANCE_EXEC | SdFlags::BALANCE_FORK | SdFlags::WAKE_AFFINE);
        }
    } else {
        imbalance_pct = 117;
        cache_nice_tries = 1;
    }
    let w = span.count() as u64;
    SchedDomain {
        cpu,
        level: l,
        kind: lvl.kind,
        span,
        groups,
        flags,
        numa_distance: lvl.distance,
        min_interval_ms: w,
        max_interval_ms: 2 * w,
        balance_interval_ms: w,
        busy_factor: BUSY_FACTOR,
        imbalance_pct,
        cache_nice_tries,
    }
}

/// `sd_degenerate()`.
fn degenerate(d: &SchedDomain) -> bool {
    if d.span.count() == 1 {
        return true;
    }
    if d.flags.bits() & SdFlags::NEEDS_GROUPS.bits() != 0 && d.groups.len() > 1 {
        return false;
    }
    !d.flags.contains(SdFlags::WAKE_AFFINE)
}

/// `sd_parent_degenerate()`.
fn parent_degenerate(child: &SchedDomain, parent: &SchedDomain) -> bool {
    if degenerate(parent) {
        return true;
    }
    if child.span != parent.span {
        return false;
    }
    let mut pflags = parent.flags.bits();
    if parent.groups.len() == 1 {
        pflags &= !SdFlags::NEEDS_GROUPS.bits();
    }
    // SHARE_PKG is descriptive: a parent differing only in it adds nothing.
    pflags &= !SdFlags::SHARE_PKG.bits();
    !child.flags.bits() & pflags == 0
}

/// `cpu_attach_domain()`'s removal of degenerate domains.
fn prune(chain: &mut Vec<SchedDomain>) {
    let mut i = 0;
    while i + 1 < chain.len() {
        if parent_degenerate(&chain[i], &chain[i + 1]) {
            let parent = chain.remove(i + 1);
            if parent.flags.contains(SdFlags::PREFER_SIBLING) {
                chain[i].flags |= SdFlags::PREFER_SIBLING;
            }
        } else {
            i += 1;
        }
    }
    while chain.first().is_some_and(degenerate) {
        chain.remove(0);
    }
}

impl fmt::Display for SchedDomain {
    /// This domain as the kernel's `sched_domain_debug_one()` prints it
    /// (indented by level), plus a line of parameters:
    ///
    /// ```text
    ///  domain-0: span=0-1 level=SMT
    ///   groups: 0:{ span=0 }, 1:{ span=1 }
    ///   flags=SD_BALANCE_NEWIDLE|... imbalance_pct=110 cache_nice_tries=0 interval=2..4ms busy_factor=16
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.level;
        writeln!(
            f,
            "{:l$} domain-{l}: span={} level={}",
            "",
            self.span,
            self.kind.name()
        )?;
        write!(f, "{:w$} groups:", "", w = l + 1)?;
        for (i, g) in self.groups.iter().enumerate() {
            write!(f, " {}:{{ span={}", g.id, g.span)?;
            if g.capacity != SCHED_CAPACITY_SCALE {
                write!(f, " cap={}", g.capacity)?;
            }
            f.write_str(" }")?;
            if i + 1 < self.groups.len() {
                f.write_str(",")?;
            }
        }
        writeln!(f)?;
        write!(
            f,
            "{:w$} flags={} imbalance_pct={} cache_nice_tries={} interval={}..{}ms busy_factor={}",
            "",
            self.flags,
            self.imbalance_pct,
            self.cache_nice_tries,
            self.min_interval_ms,
            self.max_interval_ms,
            self.busy_factor,
            w = l + 1
        )?;
        if let Some(d) = self.numa_distance {
            write!(f, " distance={d}")?;
        }
        writeln!(f)
    }
}

/// Every CPU's domains as the kernel logs them when it attaches them
/// (`CPU0 attaching sched-domain(s):` then each domain; `CPU0 attaching
/// NULL sched-domain.` for a CPU without any).
#[derive(Debug, Clone, Copy)]
pub struct DomainsDebug<'a> {
    domains: &'a [SchedDomain],
    nr_cpus: usize,
}

impl<'a> DomainsDebug<'a> {
    /// Formats `domains` (as [`build`] returns them) for `nr_cpus` CPUs.
    pub fn new(domains: &'a [SchedDomain], nr_cpus: usize) -> DomainsDebug<'a> {
        DomainsDebug { domains, nr_cpus }
    }
}

impl fmt::Display for DomainsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for cpu in 0..self.nr_cpus {
            let mine: Vec<&SchedDomain> = self.domains.iter().filter(|d| d.cpu == cpu).collect();
            if mine.is_empty() {
                writeln!(f, "CPU{cpu} attaching NULL sched-domain.")?;
                continue;
            }
            writeln!(f, "CPU{cpu} attaching sched-domain(s):")?;
            for d in mine {
                write!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
