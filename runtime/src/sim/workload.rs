//! Workloads: groups of synthetic tasks, described in code or in a small
//! TOML-like text format, and the five that ship with the simulator.
//!
//! # The text format
//!
//! A subset of TOML, parsed here by hand (no dependency): `# comments`,
//! top-level `key = value` lines, and one `[[group]]` table per task group.
//! Values are integers, `true`/`false`, or double-quoted strings.
//!
//! ```text
//! name = "mixed_interactive"
//!
//! [[group]]
//! name = "batch"
//! count = "cpus"            # an integer, "cpus", "2*cpus" or "cpus/2"
//! nice = 0
//! policy = "normal"         # normal | batch | idle | fifo:N | rr:N
//! affinity = "all"          # all | node:N | a CPU list such as "0-3,8"
//! start = "node:0"          # optional: place new tasks round-robin here
//! spawn = "const(0)"        # spawn time distribution
//! burst = "inf"             # CPU burst: inf | const(D) | uniform(D, D) | exp(D)
//! sleep = "exp(5ms)"        # optional sleep between bursts
//! work = "500ms"            # optional: exit after this much CPU work
//! iterations = 100          # optional: exit after this many loops
//! pingpong = false          # pairs that wake each other and block
//! fork_fanout = 0           # fork trees: children per node ...
//! fork_depth = 0            # ... and levels below the root
//! ```
//!
//! Durations are integers or decimals with `ns`, `us`, `ms` or `s`.
//!
//! # Task behaviour
//!
//! Each task runs a small program of steps in a loop: run a CPU burst,
//! sleep, post to / wait for its ping-pong partner (a counting token, so no
//! wakeup is lost), fork its children, join them. A task exits when its
//! iterations or its work budget are used up; a task with neither runs
//! until the end of the simulation.

use std::fmt;
use std::io;

use super::rng::Dist;
use crate::cpuset::CpuSet;
use crate::sched::SchedPolicy;

/// An error in a workload description or a simulator argument
/// (`EINVAL` as `io::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The text format could not be parsed (`line` is 1-based).
    Parse {
        /// Line of the problem.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A workload or configuration that cannot run (empty affinity, odd
    /// ping-pong count, unknown name, ...).
    Invalid(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Parse { line, msg } => write!(f, "workload line {line}: {msg}"),
            SimError::Invalid(m) => write!(f, "invalid simulation: {m}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<SimError> for io::Error {
    /// `EINVAL` (the text is lost, as for `TopologyError`: print the
    /// [`SimError`] itself for it).
    fn from(_: SimError) -> io::Error {
        io::Error::from_raw_os_error(libc::EINVAL)
    }
}

/// Which CPUs: all, one NUMA node's, or an explicit list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuSpec {
    /// Every CPU.
    All,
    /// The CPUs of this (logical) NUMA node.
    Node(usize),
    /// These CPUs.
    List(CpuSet),
}

impl fmt::Display for CpuSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuSpec::All => f.write_str("all"),
            CpuSpec::Node(n) => write!(f, "node:{n}"),
            CpuSpec::List(s) => write!(f, "{s}"),
        }
    }
}

/// How many tasks: a number, or a multiple / fraction of the CPU count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Fixed(usize),
    /// `mul × cpus / div` (at least 1).
    PerCpu {
        /// Multiplier.
        mul: usize,
        /// Divisor.
        div: usize,
    },
}

impl Count {
    /// The count on a machine of `cpus` CPUs.
    pub fn resolve(self, cpus: usize) -> usize {
        match self {
            Count::Fixed(n) => n,
            Count::PerCpu { mul, div } => (mul * cpus / div.max(1)).max(1),
        }
    }
}

impl fmt::Display for Count {
    /// The text format's spelling (an integer or a quoted expression).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Count::Fixed(n) => write!(f, "{n}"),
            Count::PerCpu { mul, div } => write!(f, "\"{mul}*cpus/{div}\""),
        }
    }
}

/// One group of identical tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Name (reports aggregate by group).
    pub name: String,
    /// How many tasks (pairs count as two tasks).
    pub count: Count,
    /// Nice value, -20..=19.
    pub nice: i32,
    /// Scheduling policy.
    pub policy: SchedPolicy,
    /// Where the tasks may run.
    pub affinity: CpuSpec,
    /// Where new tasks are put (round-robin), bypassing fork placement;
    /// `None`: fork placement (the idlest allowed CPU).
    pub start: Option<CpuSpec>,
    /// When each task is spawned (ns from the start).
    pub spawn: Dist,
    /// CPU burst length.
    pub burst: Dist,
    /// Sleep after each burst.
    pub sleep: Option<Dist>,
    /// Total CPU work before exiting.
    pub work: Option<u64>,
    /// Loops before exiting.
    pub iterations: Option<u64>,
    /// Tasks come in pairs that post to and wait for each other.
    pub pingpong: bool,
    /// Children each node of a fork tree forks (0: no fork tree).
    pub fork_fanout: Count,
    /// Levels of the fork tree below the root.
    pub fork_depth: u32,
}

impl Group {
    /// `count` always-runnable nice-0 tasks, everything else default.
    pub fn new(name: &str, count: Count) -> Group {
        Group {
            name: name.to_owned(),
            count,
            nice: 0,
            policy: SchedPolicy::Normal,
            affinity: CpuSpec::All,
            start: None,
            spawn: Dist::Const(0),
            burst: Dist::Inf,
            sleep: None,
            work: None,
            iterations: None,
            pingpong: false,
            fork_fanout: Count::Fixed(0),
            fork_depth: 0,
        }
    }

    /// The program of a task of this group at fork depth `depth` (0 is a
    /// root) and position `index` (ping-pong: even tasks start, odd ones
    /// wait).
    pub(crate) fn program(&self, depth: u32, index: usize) -> Vec<Op> {
        if self.pingpong {
            return if index % 2 == 0 {
                vec![Op::Run(self.burst), Op::Post, Op::Wait]
            } else {
                vec![Op::Wait, Op::Run(self.burst), Op::Post]
            };
        }
        let mut ops = Vec::new();
        if self.forks() && depth < self.fork_depth {
            ops.push(Op::Fork);
            ops.push(Op::Run(self.burst));
            ops.push(Op::Join);
        } else {
            ops.push(Op::Run(self.burst));
        }
        if let Some(s) = self.sleep {
            ops.push(Op::Sleep(s));
        }
        ops
    }

    /// Whether tasks of this group fork children.
    pub fn forks(&self) -> bool {
        self.fork_fanout != Count::Fixed(0) && self.fork_depth > 0
    }

    fn check(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Invalid(format!("group {:?}: {m}", self.name)));
        if !(-20..=19).contains(&self.nice) {
            return bad("nice outside -20..=19");
        }
        if let SchedPolicy::Fifo { priority } | SchedPolicy::RoundRobin { priority } = self.policy {
            if !(1..=99).contains(&priority) {
                return bad("RT priority outside 1..=99");
            }
        }
        if self.pingpong && self.forks() {
            return bad("a group is either ping-pong pairs or a fork tree");
        }
        if self.burst == Dist::Inf
            && (self.pingpong || self.sleep.is_some() || self.forks())
            && self.work.is_none()
        {
            return bad(
                "an endless burst never reaches the next step: give work or a finite burst",
            );
        }
        Ok(())
    }
}

/// One step of a task's program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Op {
    /// Run on the CPU for a drawn time.
    Run(Dist),
    /// Block for a drawn time.
    Sleep(Dist),
    /// Give the partner a token, waking it if it waits.
    Post,
    /// Take a token, blocking until the partner posts one.
    Wait,
    /// Fork this node's children.
    Fork,
    /// Block until every child has exited.
    Join,
}

/// A named set of task groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Name.
    pub name: String,
    /// Groups, in spawn order.
    pub groups: Vec<Group>,
}

/// Names of the built-in workloads.
pub const BUILTIN: [&str; 5] = [
    "cpu_bound",
    "mixed_interactive",
    "pingpong_pairs",
    "fork_join",
    "numa_skewed",
];

impl Workload {
    /// A built-in workload by name (its text is in `sim/workloads/`).
    pub fn builtin(name: &str) -> Result<Workload, SimError> {
        let text = match name {
            "cpu_bound" => include_str!("workloads/cpu_bound.toml"),
            "mixed_interactive" => include_str!("workloads/mixed_interactive.toml"),
            "pingpong_pairs" => include_str!("workloads/pingpong_pairs.toml"),
            "fork_join" => include_str!("workloads/fork_join.toml"),
            "numa_skewed" => include_str!("workloads/numa_skewed.toml"),
            _ => {
                return Err(SimError::Invalid(format!(
                    "unknown workload {name:?} (built in: {})",
                    BUILTIN.join(", ")
                )))
            }
        };
        Workload::parse(text)
    }

    /// Checks every group.
    pub fn check(&self) -> Result<(), SimError> {
        if self.groups.is_empty() {
            return Err(SimError::Invalid(format!(
                "workload {:?} has no group",
                self.name
            )));
        }
        self.groups.iter().try_for_each(Group::check)
    }

    /// Parses the text format (see the module docs).
    pub fn parse(text: &str) -> Result<Workload, SimError> {
        let mut w = Workload {
            name: String::from("workload"),
            groups: Vec::new(),
        };
        let mut in_group = false;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let perr = |msg: String| SimError::Parse { line: line_no, msg };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if line == "[[group]]" {
                w.groups
                    .push(Group::new(&format!("g{}", w.groups.len()), Count::Fixed(1)));
                in_group = true;
                continue;
            }
            if line.starts_with('[') {
                return Err(perr(format!("unknown table {line}")));
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| perr(format!("expected key = value, got {line:?}")))?;
            let key = key.trim();
            let value = Value::parse(value.trim()).map_err(perr)?;
            if !in_group {
                match key {
                    "name" => w.name = value.string().map_err(perr)?,
                    _ => return Err(perr(format!("unknown top-level key {key:?}"))),
                }
                continue;
            }
            let g = w.groups.last_mut().expect("in a group");
            apply_group_key(g, key, &value).map_err(perr)?;
        }
        w.check()?;
        Ok(w)
    }
}

impl fmt::Display for Workload {
    /// The workload in the text format ([`Workload::parse`] reads it back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "name = {:?}", self.name)?;
        for g in &self.groups {
            writeln!(f, "\n[[group]]")?;
            writeln!(f, "name = {:?}", g.name)?;
            writeln!(f, "count = {}", g.count)?;
            writeln!(f, "nice = {}", g.nice)?;
            let pol = match g.policy {
                SchedPolicy::Normal => "normal".to_owned(),
                SchedPolicy::Batch => "batch".to_owned(),
                SchedPolicy::Idle => "idle".to_owned(),
                SchedPolicy::Fifo { priority } => format!("fifo:{priority}"),
                SchedPolicy::RoundRobin { priority } => format!("rr:{priority}"),
            };
            writeln!(f, "policy = \"{pol}\"")?;
            writeln!(f, "affinity = \"{}\"", g.affinity)?;
            if let Some(s) = &g.start {
                writeln!(f, "start = \"{s}\"")?;
            }
            writeln!(f, "spawn = \"{}\"", g.spawn)?;
            writeln!(f, "burst = \"{}\"", g.burst)?;
            if let Some(s) = g.sleep {
                writeln!(f, "sleep = \"{s}\"")?;
            }
            if let Some(wk) = g.work {
                writeln!(f, "work = \"{}\"", super::rng::FmtNs(wk))?;
            }
            if let Some(it) = g.iterations {
                writeln!(f, "iterations = {it}")?;
            }
            if g.pingpong {
                writeln!(f, "pingpong = true")?;
            }
            if g.forks() {
                writeln!(f, "fork_fanout = {}", g.fork_fanout)?;
                writeln!(f, "fork_depth = {}", g.fork_depth)?;
            }
        }
        Ok(())
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    fn parse(v: &str) -> Result<Value, String> {
        if let Some(rest) = v.strip_prefix('"') {
            let s = rest
                .strip_suffix('"')
                .ok_or_else(|| format!("unterminated string {v}"))?;
            if s.contains('"') || s.contains('\\') {
                return Err(format!("escapes are not supported: {v}"));
            }
            return Ok(Value::Str(s.to_owned()));
        }
        match v {
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        v.replace('_', "")
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("not an integer, boolean or \"string\": {v}"))
    }

    fn string(&self) -> Result<String, String> {
        match self {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            Value::Bool(_) => Err("expected a string".into()),
        }
    }

    fn int(&self) -> Result<i64, String> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("not an integer: {s:?}")),
            Value::Bool(_) => Err("expected an integer".into()),
        }
    }

    fn boolean(&self) -> Result<bool, String> {
        match self {
            Value::Bool(b) => Ok(*b),
            _ => Err("expected true or false".into()),
        }
    }
}

fn apply_group_key(g: &mut Group, key: &str, v: &Value) -> Result<(), String> {
    let nonneg = |i: i64, what: &str| -> Result<u64, String> {
        u64::try_from(i).map_err(|_| format!("{what} must not be negative"))
    };
    match key {
        "name" => g.name = v.string()?,
        "count" => g.count = parse_count(v)?,
        "nice" => g.nice = i32::try_from(v.int()?).map_err(|_| "nice out of range")?,
        "policy" => g.policy = parse_policy(&v.string()?)?,
        "affinity" => g.affinity = parse_cpus(&v.string()?)?,
        "start" => g.start = Some(parse_cpus(&v.string()?)?),
        "spawn" => g.spawn = parse_dist(&v.string()?)?,
        "burst" => g.burst = parse_dist(&v.string()?)?,
        "sleep" => {
            let s = v.string()?;
            g.sleep = if s == "none" {
                None
            } else {
                Some(parse_dist(&s)?)
            };
        }
        "work" => g.work = Some(parse_duration(&v.string()?)?),
        "iterations" => g.iterations = Some(nonneg(v.int()?, "iterations")?),
        "pingpong" => g.pingpong = v.boolean()?,
        "fork_fanout" => g.fork_fanout = parse_count(v)?,
        "fork_depth" => {
            g.fork_depth = u32::try_from(v.int()?).map_err(|_| "fork_depth out of range")?
        }
        _ => return Err(format!("unknown group key {key:?}")),
    }
    Ok(())
}

fn parse_count(v: &Value) -> Result<Count, String> {
    if let Value::Int(i) = v {
        return usize::try_from(*i)
            .map(Count::Fixed)
            .map_err(|_| "count must not be negative".into());
    }
    let s = v.string()?.replace(' ', "");
    let num = |t: &str| t.parse::<usize>().map_err(|_| format!("bad count {s:?}"));
    let (mul, rest) = match s.split_once("*cpus") {
        Some((m, r)) => (num(m)?, r),
        None => match s.strip_prefix("cpus") {
            Some(r) => (1, r),
            None => return Ok(Count::Fixed(num(&s)?)),
        },
    };
    let div = match rest.strip_prefix('/') {
        Some(d) => num(d)?.max(1),
        None if rest.is_empty() => 1,
        None => return Err(format!("bad count {s:?}")),
    };
    Ok(Count::PerCpu { mul, div })
}

fn parse_policy(s: &str) -> Result<SchedPolicy, String> {
    let prio = |p: &str| {
        p.parse::<u8>()
            .ok()
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(|| format!("RT priority must be 1..=99: {s:?}"))
    };
    Ok(match s {
        "normal" | "other" => SchedPolicy::Normal,
        "batch" => SchedPolicy::Batch,
        "idle" => SchedPolicy::Idle,
        _ => {
            if let Some(p) = s.strip_prefix("fifo:") {
                SchedPolicy::Fifo { priority: prio(p)? }
            } else if let Some(p) = s.strip_prefix("rr:") {
                SchedPolicy::RoundRobin { priority: prio(p)? }
            } else {
                return Err(format!("unknown policy {s:?}"));
            }
        }
    })
}

/// `all`, `node:N` or a CPU list (`0-3,8`).
pub fn parse_cpus(s: &str) -> Result<CpuSpec, String> {
    if s == "all" {
        return Ok(CpuSpec::All);
    }
    if let Some(n) = s.strip_prefix("node:") {
        return n
            .parse()
            .map(CpuSpec::Node)
            .map_err(|_| format!("bad node {s:?}"));
    }
    CpuSet::from_list(s)
        .map(CpuSpec::List)
        .map_err(|e| format!("bad CPU list {s:?}: {e}"))
}

/// A duration: `250us`, `1.5ms`, `2s`, `100ns`, or a bare ns integer.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 || v * mul > 1e18 {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok((v * mul).round() as u64)
}

/// `inf`, `const(D)`, `uniform(D, D)`, `exp(D)`, or a bare duration.
pub fn parse_dist(s: &str) -> Result<Dist, String> {
    let s = s.trim();
    if s == "inf" {
        return Ok(Dist::Inf);
    }
    let Some(open) = s.find('(') else {
        return parse_duration(s).map(Dist::Const);
    };
    let inner = s[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("missing ')' in {s:?}"))?;
    let args: Vec<&str> = inner.split(',').map(str::trim).collect();
    match (&s[..open], args.as_slice()) {
        ("const", [a]) => Ok(Dist::Const(parse_duration(a)?)),
        ("exp", [a]) => Ok(Dist::Exp(parse_duration(a)?)),
        ("uniform", [a, b]) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if a > b {
                return Err(format!("uniform bounds reversed in {s:?}"));
            }
            Ok(Dist::Uniform(a, b))
        }
        _ => Err(format!("unknown distribution {s:?}")),
    }
}
