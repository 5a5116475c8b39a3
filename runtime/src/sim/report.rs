//! What a simulation measured: per-task CPU shares against weights with
//! Jain's fairness index, wakeup latency percentiles, makespan, switches,
//! migrations per domain level, per-CPU utilisation over time; printed as
//! a table ([`Report`]'s `Display`), as JSON ([`Report::to_json`]) and as a
//! per-CPU timeline SVG ([`Report::to_svg`]).

use std::fmt::{self, Write as _};

use super::engine::{Cause, Sim};
use super::rng::FmtNs;
use crate::sched::Policy;
use crate::trace::json_str;

/// A log-linear histogram of ns values: exact below 128, then 64
/// sub-buckets per power of two (≤ 1.6 % relative error), so memory is
/// fixed however many samples arrive. Quantiles report a bucket's upper
/// bound (never more than the exact maximum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
    sum: u128,
}

const SUB: u32 = 6;

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// Empty.
    pub fn new() -> Histogram {
        Histogram {
            counts: Vec::new(),
            n: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let m = (v >> (e - SUB)) & ((1 << SUB) - 1);
        128 + ((e - 7) as usize) * 64 + m as usize
    }

    fn upper(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let e = (i - 128) / 64 + 7;
        let m = ((i - 128) % 64) as u64;
        let shift = e as u32 - SUB;
        ((64 + m) << shift) + (1u64 << shift) - 1
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        let i = Histogram::index(v);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.n == 0 {
            0
        } else {
            (self.sum / u128::from(self.n)) as u64
        }
    }

    /// The `q` quantile (0.0..=1.0); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Histogram::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn summary(&self) -> Latency {
        Latency {
            count: self.n,
            p50_ns: self.quantile(0.5),
            p99_ns: self.quantile(0.99),
            max_ns: self.max,
            mean_ns: self.mean(),
        }
    }
}

/// Per-CPU busy time in fixed time buckets, split by task group.
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    width: u64,
    buckets: usize,
    groups: usize,
    /// `[cpu][bucket][group]` busy ns.
    busy: Vec<u64>,
}

impl Recorder {
    pub(crate) fn new(cpus: usize, buckets: usize, duration: u64, groups: usize) -> Recorder {
        Recorder {
            width: duration.div_ceil(buckets as u64).max(1),
            buckets,
            groups: groups.max(1),
            busy: vec![0; cpus * buckets * groups.max(1)],
        }
    }

    pub(crate) fn busy(&mut self, cpu: usize, group: usize, from: u64, to: u64) {
        let mut a = from;
        while a < to {
            let b = a / self.width;
            if b as usize >= self.buckets {
                break;
            }
            let end = ((b + 1) * self.width).min(to);
            let i = (cpu * self.buckets + b as usize) * self.groups + group;
            self.busy[i] += end - a;
            a = end;
        }
    }

    fn cell(&self, cpu: usize, bucket: usize) -> &[u64] {
        let i = (cpu * self.buckets + bucket) * self.groups;
        &self.busy[i..i + self.groups]
    }
}

/// Wakeup latency percentiles (wake to first run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Wakeups measured.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Maximum, ns.
    pub max_ns: u64,
    /// Mean, ns.
    pub mean_ns: u64,
}

/// One task's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskReport {
    /// Task index (spawn order; fork children follow).
    pub id: usize,
    /// Group index.
    pub group: usize,
    /// Nice value.
    pub nice: i32,
    /// Load weight.
    pub weight: u64,
    /// CPU time including switch and migration penalties, ns.
    pub cpu_ns: u64,
    /// Useful work done, ns.
    pub work_ns: u64,
    /// From spawn to exit or to the end, ns (0 if never spawned).
    pub lifetime_ns: u64,
    /// Exit time, if it exited.
    pub exited_ns: Option<u64>,
    /// Context switches into it.
    pub switches: u64,
    /// Migrations.
    pub migrations: u64,
    /// `cpu_ns` as a fraction of all tasks' CPU time.
    pub share: f64,
    /// Its weight as a fraction of the weights of all tasks.
    pub weight_share: f64,
}

/// One group's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupReport {
    /// Name.
    pub name: String,
    /// Tasks (fork children included).
    pub tasks: usize,
    /// Fraction of all CPU time.
    pub cpu_share: f64,
    /// Fraction of all weight.
    pub weight_share: f64,
    /// Jain's index over its tasks' `cpu / (weight × lifetime)`.
    pub fairness: f64,
    /// Wakeup latency.
    pub latency: Latency,
}

/// Migrations at one domain level for one cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrations {
    /// Domain level name (`SMT`, `MC`, `PKG`, `NUMA`).
    pub level: String,
    /// Why.
    pub cause: &'static str,
    /// How many.
    pub count: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// Topology description.
    pub topology: String,
    /// Fair class.
    pub policy: Policy,
    /// Seed.
    pub seed: u64,
    /// Virtual CPUs.
    pub nr_cpus: usize,
    /// Simulated time, ns.
    pub simulated_ns: u64,
    /// When the last task exited, if all did.
    pub makespan_ns: Option<u64>,
    /// Context switches (all CPUs).
    pub switches: u64,
    /// Migrations by level and cause.
    pub migrations: Vec<Migrations>,
    /// Jain's index over all tasks' `cpu / (weight × lifetime)`.
    pub fairness: f64,
    /// Wakeup latency over all tasks.
    pub latency: Latency,
    /// Per group.
    pub groups: Vec<GroupReport>,
    /// Per task.
    pub tasks: Vec<TaskReport>,
    /// Busy ns per CPU.
    pub cpu_busy_ns: Vec<u64>,
    /// Width of a utilisation bucket, ns.
    pub bucket_ns: u64,
    /// `[cpu][bucket]` utilisation 0..=1.
    pub utilization: Vec<Vec<f64>>,
    /// `[cpu][bucket]` the group that ran most (None: idle).
    pub dominant_group: Vec<Vec<Option<usize>>>,
    /// Times a task ran outside its affinity (must be 0).
    pub affinity_violations: u64,
    /// Longest time a CPU stayed idle while some CPU had a waiting task,
    /// at tick resolution.
    pub max_idle_while_overloaded_ns: u64,
    /// Load balance attempts.
    pub balance_calls: u64,
}

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1 when all equal, 1/n when
/// one takes everything. 1 for an empty or all-zero set.
pub fn jain(xs: &[f64]) -> f64 {
    let s: f64 = xs.iter().sum();
    let s2: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || s2 == 0.0 {
        1.0
    } else {
        s * s / (xs.len() as f64 * s2)
    }
}

impl Report {
    pub(crate) fn build(sim: &Sim) -> Report {
        let end = sim.now;
        let total_cpu: u64 = sim.tasks.iter().map(|t| t.exec_ns).sum();
        let spawned: Vec<usize> = (0..sim.tasks.len())
            .filter(|&i| sim.tasks[i].spawned_at.is_some())
            .collect();
        let total_w: u64 = spawned
            .iter()
            .map(|&i| sim.tasks[i].ent.se.load.weight)
            .sum();
        let frac = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let tasks: Vec<TaskReport> = spawned
            .iter()
            .map(|&i| {
                let t = &sim.tasks[i];
                let w = t.ent.se.load.weight;
                let start = t.spawned_at.unwrap_or(end);
                TaskReport {
                    id: i,
                    group: t.group,
                    nice: t.ent.se.nice,
                    weight: w,
                    cpu_ns: t.exec_ns,
                    work_ns: t.work_done,
                    lifetime_ns: t.exited_at.unwrap_or(end).saturating_sub(start),
                    exited_ns: t.exited_at,
                    switches: t.switches,
                    migrations: t.migrations,
                    share: frac(t.exec_ns, total_cpu),
                    weight_share: frac(w, total_w),
                }
            })
            .collect();
        let norm = |t: &TaskReport| {
            if t.lifetime_ns == 0 {
                0.0
            } else {
                t.cpu_ns as f64 / (t.weight as f64 * t.lifetime_ns as f64)
            }
        };
        let mut all_lat = Histogram::new();
        let groups = sim
            .groups
            .iter()
            .enumerate()
            .map(|(g, spec)| {
                let mine: Vec<&TaskReport> = tasks.iter().filter(|t| t.group == g).collect();
                let cpu: u64 = mine.iter().map(|t| t.cpu_ns).sum();
                let w: u64 = mine.iter().map(|t| t.weight).sum();
                all_lat.merge(&sim.lat[g]);
                GroupReport {
                    name: spec.name.clone(),
                    tasks: mine.len(),
                    cpu_share: frac(cpu, total_cpu),
                    weight_share: frac(w, total_w),
                    fairness: jain(&mine.iter().map(|t| norm(t)).collect::<Vec<_>>()),
                    latency: sim.lat[g].summary(),
                }
            })
            .collect();
        let fairness = jain(&tasks.iter().map(norm).collect::<Vec<_>>());
        let migrations = sim
            .migrations
            .iter()
            .map(|((level, cause), &count)| Migrations {
                level: level.clone(),
                cause: cause.name(),
                count,
            })
            .collect();
        let rec = &sim.rec;
        let nb = (end.div_ceil(rec_width(rec)) as usize).clamp(1, rec_buckets(rec));
        let mut utilization = Vec::with_capacity(sim.n);
        let mut dominant = Vec::with_capacity(sim.n);
        for c in 0..sim.n {
            let mut u = Vec::with_capacity(nb);
            let mut d = Vec::with_capacity(nb);
            for b in 0..nb {
                let cell = rec.cell(c, b);
                let busy: u64 = cell.iter().sum();
                let width = rec_width(rec)
                    .min(end.saturating_sub(b as u64 * rec_width(rec)))
                    .max(1);
                u.push((busy as f64 / width as f64).min(1.0));
                d.push(
                    (busy > 0)
                        .then(|| (0..cell.len()).max_by_key(|&g| (cell[g], usize::MAX - g)))
                        .flatten(),
                );
            }
            utilization.push(u);
            dominant.push(d);
        }
        Report {
            workload: sim.workload_name.clone(),
            topology: sim.topo_desc.clone(),
            policy: sim.cfg.policy,
            seed: sim.cfg.seed,
            nr_cpus: sim.n,
            simulated_ns: end,
            makespan_ns: sim.makespan,
            switches: sim.cpus.iter().map(|c| c.switches).sum(),
            migrations,
            fairness,
            latency: all_lat.summary(),
            groups,
            tasks,
            cpu_busy_ns: sim.cpus.iter().map(|c| c.busy_ns).collect(),
            bucket_ns: rec_width(rec),
            utilization,
            dominant_group: dominant,
            affinity_violations: sim.affinity_violations,
            max_idle_while_overloaded_ns: sim.max_idle_overloaded_ns,
            balance_calls: sim.balance_calls,
        }
    }

    /// Migrations at `level` (all causes).
    pub fn migrations_at(&self, level: &str) -> u64 {
        self.migrations
            .iter()
            .filter(|m| m.level == level)
            .map(|m| m.count)
            .sum()
    }

    /// Migrations of all levels and causes.
    pub fn total_migrations(&self) -> u64 {
        self.migrations.iter().map(|m| m.count).sum()
    }

    /// Mean utilisation of all CPUs over the run.
    pub fn mean_utilization(&self) -> f64 {
        let busy: u64 = self.cpu_busy_ns.iter().sum();
        if self.simulated_ns == 0 {
            return 0.0;
        }
        busy as f64 / (self.simulated_ns as f64 * self.nr_cpus as f64)
    }

    /// The report as a JSON object (written by hand: the runtime has no
    /// serde dependency).
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let lat = |l: &Latency| {
            format!(
                "{{\"count\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"mean_ns\":{}}}",
                l.count, l.p50_ns, l.p99_ns, l.max_ns, l.mean_ns
            )
        };
        let _ = write!(
            s,
            "{{\"workload\":{},\"topology\":{},\"policy\":{},\"seed\":{},\"nr_cpus\":{},\
             \"simulated_ns\":{},\"makespan_ns\":{},\"switches\":{},\"fairness\":{},\
             \"latency\":{},\"affinity_violations\":{},\"max_idle_while_overloaded_ns\":{},\
             \"balance_calls\":{},\"bucket_ns\":{},",
            json_str(&self.workload),
            json_str(&self.topology),
            json_str(self.policy.name()),
            self.seed,
            self.nr_cpus,
            self.simulated_ns,
            self.makespan_ns
                .map_or("null".to_owned(), |m| m.to_string()),
            self.switches,
            json_f(self.fairness),
            lat(&self.latency),
            self.affinity_violations,
            self.max_idle_while_overloaded_ns,
            self.balance_calls,
            self.bucket_ns,
        );
        s.push_str("\"migrations\":[");
        for (i, m) in self.migrations.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"level\":{},\"cause\":{},\"count\":{}}}",
                json_str(&m.level),
                json_str(m.cause),
                m.count
            );
        }
        s.push_str("],\"groups\":[");
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"name\":{},\"tasks\":{},\"cpu_share\":{},\"weight_share\":{},\"fairness\":{},\"latency\":{}}}",
                json_str(&g.name),
                g.tasks,
                json_f(g.cpu_share),
                json_f(g.weight_share),
                json_f(g.fairness),
                lat(&g.latency)
            );
        }
        s.push_str("],\"tasks\":[");
        for (i, t) in self.tasks.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"id\":{},\"group\":{},\"nice\":{},\"weight\":{},\"cpu_ns\":{},\"work_ns\":{},\
                 \"lifetime_ns\":{},\"exited_ns\":{},\"switches\":{},\"migrations\":{},\
                 \"share\":{},\"weight_share\":{}}}",
                t.id,
                t.group,
                t.nice,
                t.weight,
                t.cpu_ns,
                t.work_ns,
                t.lifetime_ns,
                t.exited_ns.map_or("null".to_owned(), |e| e.to_string()),
                t.switches,
                t.migrations,
                json_f(t.share),
                json_f(t.weight_share)
            );
        }
        s.push_str("],\"cpu_busy_ns\":[");
        for (i, b) in self.cpu_busy_ns.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{b}");
        }
        s.push_str("],\"utilization\":[");
        for (i, row) in self.utilization.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            for (j, u) in row.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{:.3}", u);
            }
            s.push(']');
        }
        s.push_str("]}");
        s
    }

    /// A per-CPU timeline: one row per CPU, one cell per bucket, coloured
    /// by the group that ran most there, opacity by utilisation.
    pub fn to_svg(&self) -> String {
        const PALETTE: [&str; 8] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        ];
        let rows = self.nr_cpus;
        let cols = self.utilization.first().map_or(0, Vec::len).max(1);
        let row_h = if rows > 64 { 6 } else { 12 };
        let left = 60;
        let top = 40;
        let width = 1000;
        let cell_w = (width - left - 20) as f64 / cols as f64;
        let legend_h = 20 * self.groups.len() + 20;
        let height = top + rows * row_h + 30 + legend_h;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">"
        );
        let _ = writeln!(
            s,
            "<text x=\"{left}\" y=\"20\">{} on {} ({}), {} simulated, seed {}</text>",
            xml(&self.workload),
            xml(&self.topology),
            self.policy.name(),
            FmtNs(self.simulated_ns),
            self.seed
        );
        for (c, row) in self.utilization.iter().enumerate() {
            let y = top + c * row_h;
            if rows <= 64 || c % 8 == 0 {
                let _ = writeln!(s, "<text x=\"4\" y=\"{}\">cpu{c}</text>", y + row_h - 2);
            }
            for (b, &u) in row.iter().enumerate() {
                if u <= 0.0 {
                    continue;
                }
                let g = self.dominant_group[c][b].unwrap_or(0);
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.2}\" y=\"{y}\" width=\"{:.2}\" height=\"{}\" fill=\"{}\" fill-opacity=\"{:.2}\"/>",
                    left as f64 + b as f64 * cell_w,
                    cell_w,
                    row_h - 1,
                    PALETTE[g % PALETTE.len()],
                    u.max(0.05)
                );
            }
        }
        let axis_y = top + rows * row_h + 14;
        for k in 0..=4 {
            let x = left as f64 + k as f64 * (cols as f64 * cell_w) / 4.0;
            let t = self.bucket_ns * cols as u64 * k / 4;
            let _ = writeln!(
                s,
                "<text x=\"{x:.0}\" y=\"{axis_y}\">{:.1}ms</text>",
                t as f64 / 1e6
            );
        }
        for (g, grp) in self.groups.iter().enumerate() {
            let y = axis_y + 20 + g * 20;
            let _ = writeln!(
                s,
                "<rect x=\"{left}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                y - 10,
                PALETTE[g % PALETTE.len()],
                left + 18,
                y,
                xml(&grp.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn rec_width(r: &Recorder) -> u64 {
    r.width
}

fn rec_buckets(r: &Recorder) -> usize {
    r.buckets
}

fn json_f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".to_owned()
    }
}

/// `s` escaped for XML text and attribute values.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl fmt::Display for Report {
    /// The summary table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "workload {} | topology \"{}\" ({} CPUs) | policy {} | seed {}",
            self.workload,
            self.topology,
            self.nr_cpus,
            self.policy.name(),
            self.seed
        )?;
        let ms = |ns: u64| ns as f64 / 1e6;
        writeln!(
            f,
            "simulated {:.1} ms | makespan {} | utilisation {:.1}% | switches {} | migrations {} | fairness (Jain) {:.4}",
            ms(self.simulated_ns),
            self.makespan_ns
                .map_or("- (not all tasks exited)".to_owned(), |m| format!("{:.1} ms", ms(m))),
            100.0 * self.mean_utilization(),
            self.switches,
            self.total_migrations(),
            self.fairness
        )?;
        writeln!(
            f,
            "\n{:<16} {:>6} {:>9} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10}",
            "group", "tasks", "cpu%", "weight%", "jain", "wakeups", "p50 us", "p99 us", "max us"
        )?;
        let us = |ns: u64| ns as f64 / 1e3;
        for g in &self.groups {
            writeln!(
                f,
                "{:<16} {:>6} {:>9.2} {:>9.2} {:>8.4} {:>9} {:>10.1} {:>10.1} {:>10.1}",
                g.name,
                g.tasks,
                100.0 * g.cpu_share,
                100.0 * g.weight_share,
                g.fairness,
                g.latency.count,
                us(g.latency.p50_ns),
                us(g.latency.p99_ns),
                us(g.latency.max_ns)
            )?;
        }
        writeln!(
            f,
            "{:<16} {:>6} {:>9} {:>9} {:>8.4} {:>9} {:>10.1} {:>10.1} {:>10.1}",
            "all",
            self.tasks.len(),
            "100.00",
            "100.00",
            self.fairness,
            self.latency.count,
            us(self.latency.p50_ns),
            us(self.latency.p99_ns),
            us(self.latency.max_ns)
        )?;
        writeln!(f, "\nmigrations per domain level:")?;
        let mut levels: Vec<&str> = self.migrations.iter().map(|m| m.level.as_str()).collect();
        levels.dedup();
        let order = ["SMT", "MC", "PKG", "NUMA", "none"];
        levels.sort_by_key(|l| order.iter().position(|o| o == l).unwrap_or(9));
        levels.dedup();
        if levels.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for l in levels {
            let by = |c: Cause| {
                self.migrations
                    .iter()
                    .filter(|m| m.level == l && m.cause == c.name())
                    .map(|m| m.count)
                    .sum::<u64>()
            };
            writeln!(
                f,
                "  {:<5} {:>8} (balance {}, active {}, wakeup {})",
                l,
                self.migrations_at(l),
                by(Cause::Balance),
                by(Cause::Active),
                by(Cause::Wakeup)
            )?;
        }
        Ok(())
    }
}
