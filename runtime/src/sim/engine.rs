//! The discrete-event engine: virtual CPUs, the event queue, the task
//! programs, and the calls into the `sched` core (see the module docs of
//! [`sim`](super) for the model and what it leaves out).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;

use super::report::{Histogram, Recorder, Report};
use super::rng::{Rng, INF_NS};
use super::workload::{CpuSpec, Group, Op, SimError, Workload};
use crate::cpuset::CpuSet;
use crate::sched::balance::{self, Candidate, CpuStat};
use crate::sched::domains::{self, SchedDomain, SdFlags, SCHED_CAPACITY_SCALE};
use crate::sched::pelt::{Removed, SchedAvg};
use crate::sched::{EnqueueFlags, Policy, RunQueue, SchedClass, TaskEntity};
use crate::topology::Topology;

/// `MAX_PINNED_INTERVAL` (fair.c): the balance interval's cap after
/// all-pinned failures, ms.
const MAX_PINNED_INTERVAL_MS: u64 = 512;
/// `imbalance_pct` used for wakeup placement (`sd_init()`'s default; the
/// kernel takes the affine domain's, 117 above SMT).
const WAKE_IMBALANCE_PCT: u32 = 117;
/// Retries of one balance after an all-pinned failure (fair.c retries
/// while CPUs are left in `env.cpus`; bounded here).
const MAX_PINNED_RETRIES: usize = 4;

/// What the machine charges, in ns. Defaults are round guesses for a
/// current x86 server, not measurements: change them per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costs {
    /// CPU time lost when a CPU switches to a different task (register
    /// save/restore, TLB and cache disturbance), charged to the incoming
    /// task before it makes progress.
    pub context_switch_ns: u64,
    /// Cache refill after a migration between CPUs sharing the LLC
    /// (including SMT siblings).
    pub migrate_llc_ns: u64,
    /// Cache refill after a migration to another LLC of the same node.
    pub migrate_cross_llc_ns: u64,
    /// Cache and remote-memory refill after a migration across NUMA nodes.
    pub migrate_numa_ns: u64,
    /// Delay between a wakeup and the enqueue on another CPU (the IPI and
    /// the remote CPU noticing it).
    pub remote_wakeup_ns: u64,
}

impl Costs {
    /// Everything free: the scheduler's decisions alone.
    pub const ZERO: Costs = Costs {
        context_switch_ns: 0,
        migrate_llc_ns: 0,
        migrate_cross_llc_ns: 0,
        migrate_numa_ns: 0,
        remote_wakeup_ns: 0,
    };
}

impl Default for Costs {
    /// 2 µs switch, 10 µs / 50 µs / 200 µs migration within LLC / across
    /// LLC / across nodes, 5 µs remote wakeup (guesses of the right order
    /// of magnitude: a few µs per switch with its cache effects, a warm
    /// working set of hundreds of KB refilled from L3, from another L3 or
    /// from remote DRAM).
    fn default() -> Costs {
        Costs {
            context_switch_ns: 2_000,
            migrate_llc_ns: 10_000,
            migrate_cross_llc_ns: 50_000,
            migrate_numa_ns: 200_000,
            remote_wakeup_ns: 5_000,
        }
    }
}

/// How to run a simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The fair class of every CPU.
    pub policy: Policy,
    /// Costs the machine charges.
    pub costs: Costs,
    /// Seed of every random draw.
    pub seed: u64,
    /// Scheduler tick, ns (1 ms: HZ = 1000).
    pub tick_ns: u64,
    /// Simulated time limit, ns (the run also ends when every task exited).
    pub duration_ns: u64,
    /// Utilisation samples over the run (the timeline's columns).
    pub buckets: usize,
}

impl SimConfig {
    /// `policy`, default costs, seed 1, 1 ms tick, 1 s, 100 buckets.
    pub fn new(policy: Policy) -> SimConfig {
        SimConfig {
            policy,
            costs: Costs::default(),
            seed: 1,
            tick_ns: 1_000_000,
            duration_ns: 1_000_000_000,
            buckets: 100,
        }
    }
}

/// Why a migration happened (reports count each per domain level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// Periodic or newly-idle load balance.
    Balance,
    /// Active balance after repeated failures.
    Active,
    /// Wakeup placement on another CPU.
    Wakeup,
}

impl Cause {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Balance => "balance",
            Cause::Active => "active",
            Cause::Wakeup => "wakeup",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Unborn,
    Runnable,
    Running,
    Sleeping,
    /// Woken, travelling to a remote CPU.
    Transit,
    Exited,
}

pub(crate) struct Task {
    pub(crate) group: usize,
    depth: u32,
    pub(crate) ent: TaskEntity,
    avg: SchedAvg,
    /// The queue whose PELT sums hold this task's contribution.
    pelt_cpu: Option<usize>,
    pub(crate) allowed: CpuSet,
    /// The CPU it runs, is queued or last ran on.
    pub(crate) cpu: usize,
    pub(crate) state: State,
    ops: Vec<Op>,
    pc: usize,
    iter: u64,
    iters: Option<u64>,
    pub(crate) work_left: Option<u64>,
    burst_left: u64,
    penalty: u64,
    tokens: u32,
    waiting: bool,
    joining: bool,
    live_children: u32,
    parent: Option<usize>,
    partner: Option<usize>,
    rng: Rng,
    acct_from: u64,
    last_ran: u64,
    touch: u64,
    gen: u64,
    woken_at: Option<u64>,
    pub(crate) spawned_at: Option<u64>,
    pub(crate) exited_at: Option<u64>,
    pub(crate) work_done: u64,
    pub(crate) exec_ns: u64,
    pub(crate) switches: u64,
    pub(crate) migrations: u64,
}

#[derive(Clone, Copy, Debug)]
struct DomState {
    last_balance: u64,
    interval_ms: u64,
    nr_balance_failed: u32,
}

pub(crate) struct Cpu {
    rq: RunQueue<usize>,
    avg: SchedAvg,
    removed: Removed,
    pub(crate) curr: Option<usize>,
    last: Option<usize>,
    /// Tasks accounted here (queued and current).
    tasks: Vec<usize>,
    /// Tasks on their way here (remote wakeups in flight).
    pending: u32,
    need_resched: bool,
    doms: Vec<DomState>,
    pub(crate) busy_ns: u64,
    pub(crate) switches: u64,
    idle_overloaded_since: Option<u64>,
}

impl Cpu {
    fn is_idle(&self) -> bool {
        self.curr.is_none() && self.pending == 0 && self.rq.nr_running() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Stop { cpu: usize, task: usize, gen: u64 },
    Timer { task: usize },
    Arrive { task: usize, cpu: usize },
    Spawn { task: usize },
}

/// A simulation: build it with [`Sim::new`], run it with [`Sim::run`].
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) topo_desc: String,
    pub(crate) workload_name: String,
    pub(crate) n: usize,
    doms: Rc<Vec<Vec<SchedDomain>>>,
    llc: Vec<CpuSet>,
    llc_id: Vec<(usize, usize)>,
    node: Vec<usize>,
    pub(crate) cpus: Vec<Cpu>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) groups: Vec<Group>,
    group_affinity: Vec<CpuSet>,
    group_start: Vec<Option<Vec<usize>>>,
    start_rr: Vec<usize>,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    pub(crate) now: u64,
    touch: u64,
    in_step: Option<usize>,
    live: usize,
    pub(crate) makespan: Option<u64>,
    pub(crate) rec: Recorder,
    pub(crate) lat: Vec<Histogram>,
    pub(crate) migrations: BTreeMap<(String, Cause), u64>,
    pub(crate) affinity_violations: u64,
    pub(crate) max_idle_overloaded_ns: u64,
    pub(crate) balance_calls: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("topology", &self.topo_desc)
            .field("workload", &self.workload_name)
            .field("policy", &self.cfg.policy)
            .field("now", &self.now)
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

fn resolve(spec: &CpuSpec, node: &[usize]) -> CpuSet {
    let n = node.len();
    match spec {
        CpuSpec::All => CpuSet::all(n),
        CpuSpec::Node(k) => (0..n).filter(|&c| node[c] == *k).collect(),
        CpuSpec::List(s) => s.iter().filter(|&c| c < n).collect(),
    }
}

impl Sim {
    /// A simulation of `workload` on the synthetic machine `topology`
    /// (hwloc synthetic syntax, e.g. `"pack:2 numa:2 core:8 pu:2"`).
    pub fn from_desc(topology: &str, workload: &Workload, cfg: SimConfig) -> Result<Sim, SimError> {
        let topo = Topology::synthetic(topology).map_err(|e| SimError::Invalid(e.to_string()))?;
        Sim::new(&topo, topology, workload, cfg)
    }

    /// A simulation of `workload` on `topology` (one virtual CPU per PU);
    /// `desc` names the machine in reports.
    pub fn new(
        topology: &Topology,
        desc: &str,
        workload: &Workload,
        cfg: SimConfig,
    ) -> Result<Sim, SimError> {
        workload.check()?;
        let n = topology.nr_pus();
        if n == 0 {
            return Err(SimError::Invalid("the topology has no PU".into()));
        }
        if cfg.tick_ns == 0 || cfg.duration_ns == 0 {
            return Err(SimError::Invalid(
                "tick and duration must be positive".into(),
            ));
        }
        let pus = topology.pus();
        let cpu_pu: Vec<usize> = (0..n).collect();
        let flat = domains::build(topology, &cpu_pu);
        let mut doms: Vec<Vec<SchedDomain>> = vec![Vec::new(); n];
        for d in flat {
            let c = d.cpu;
            doms[c].push(d);
        }
        let llc_id: Vec<(usize, usize)> = pus.iter().map(|p| (p.llc, p.node)).collect();
        let node: Vec<usize> = pus.iter().map(|p| p.node).collect();
        let llc = (0..n)
            .map(|c| (0..n).filter(|&d| llc_id[d] == llc_id[c]).collect())
            .collect();
        let cpus = (0..n)
            .map(|c| Cpu {
                rq: RunQueue::new(cfg.policy, n),
                avg: SchedAvg::default(),
                removed: Removed::default(),
                curr: None,
                last: None,
                tasks: Vec::new(),
                pending: 0,
                need_resched: false,
                doms: doms[c]
                    .iter()
                    .map(|sd| DomState {
                        last_balance: 0,
                        interval_ms: sd.balance_interval_ms,
                        nr_balance_failed: 0,
                    })
                    .collect(),
                busy_ns: 0,
                switches: 0,
                idle_overloaded_since: None,
            })
            .collect();
        let mut group_affinity = Vec::new();
        let mut group_start = Vec::new();
        for g in &workload.groups {
            let aff = resolve(&g.affinity, &node);
            if aff.is_empty() {
                return Err(SimError::Invalid(format!(
                    "group {:?}: affinity {} holds no CPU of this machine",
                    g.name, g.affinity
                )));
            }
            let start = match &g.start {
                None => None,
                Some(s) => {
                    let set = resolve(s, &node).intersection(&aff);
                    if set.is_empty() {
                        return Err(SimError::Invalid(format!(
                            "group {:?}: start {s} holds no allowed CPU",
                            g.name
                        )));
                    }
                    Some(set.iter().collect())
                }
            };
            group_affinity.push(aff);
            group_start.push(start);
        }
        let buckets = cfg.buckets.max(1);
        let mut sim = Sim {
            rec: Recorder::new(n, buckets, cfg.duration_ns, workload.groups.len()),
            lat: vec![Histogram::new(); workload.groups.len()],
            cfg,
            topo_desc: desc.to_owned(),
            workload_name: workload.name.clone(),
            n,
            doms: Rc::new(doms),
            llc,
            llc_id,
            node,
            cpus,
            tasks: Vec::new(),
            groups: workload.groups.clone(),
            group_affinity,
            group_start,
            start_rr: vec![0; workload.groups.len()],
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            touch: 0,
            in_step: None,
            live: 0,
            makespan: None,
            migrations: BTreeMap::new(),
            affinity_violations: 0,
            max_idle_overloaded_ns: 0,
            balance_calls: 0,
        };
        for gi in 0..sim.groups.len() {
            let g = &sim.groups[gi];
            let count = g.count.resolve(n);
            if g.pingpong && count % 2 != 0 {
                return Err(SimError::Invalid(format!(
                    "group {:?}: ping-pong needs an even count, got {count}",
                    g.name
                )));
            }
            for i in 0..count {
                let partner = sim.groups[gi].pingpong.then(|| {
                    let base = sim.tasks.len() - i;
                    base + (i ^ 1)
                });
                let t = sim.new_task(gi, 0, i, None);
                sim.tasks[t].partner = partner;
                let at = {
                    let task = &mut sim.tasks[t];
                    sim.groups[gi].spawn.sample(&mut task.rng)
                };
                sim.push(at, Ev::Spawn { task: t });
            }
        }
        let tick = sim.cfg.tick_ns;
        sim.push(tick, Ev::Tick);
        Ok(sim)
    }

    fn new_task(&mut self, group: usize, depth: u32, index: usize, parent: Option<usize>) -> usize {
        let id = self.tasks.len();
        let g = &self.groups[group];
        let ent = TaskEntity::new(g.nice, g.policy);
        let weight = ent.se.load.weight;
        self.tasks.push(Task {
            group,
            depth,
            ent,
            avg: SchedAvg::new_task(weight),
            pelt_cpu: None,
            allowed: self.group_affinity[group].clone(),
            cpu: 0,
            state: State::Unborn,
            ops: g.program(depth, index),
            pc: 0,
            iter: 0,
            iters: if depth > 0 { Some(1) } else { g.iterations },
            work_left: g.work,
            burst_left: 0,
            penalty: 0,
            tokens: 0,
            waiting: false,
            joining: false,
            live_children: 0,
            parent,
            partner: None,
            rng: Rng::stream(self.cfg.seed, id as u64),
            acct_from: 0,
            last_ran: 0,
            touch: 0,
            gen: 0,
            woken_at: None,
            spawned_at: None,
            exited_at: None,
            work_done: 0,
            exec_ns: 0,
            switches: 0,
            migrations: 0,
        });
        self.live += 1;
        id
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    /// Runs to the end (every task exited, or the time limit) and reports.
    pub fn run(mut self) -> Report {
        self.run_until(self.cfg.duration_ns);
        self.finish()
    }

    /// Runs events up to `until` ns (at most the configured duration).
    pub fn run_until(&mut self, until: u64) {
        let until = until.min(self.cfg.duration_ns);
        while self.live > 0 {
            let Some(Reverse((at, _, ev))) = self.heap.peek().copied() else {
                break;
            };
            if at > until {
                break;
            }
            self.heap.pop();
            self.now = at;
            self.dispatch(ev);
        }
        if self.live > 0 {
            self.now = self.now.max(until);
        }
    }

    /// Charges the running tasks up to now and builds the report.
    pub fn finish(mut self) -> Report {
        for c in 0..self.n {
            self.charge(c);
        }
        Report::build(&self)
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                for c in 0..self.n {
                    self.tick(c);
                }
                self.watch_overload();
                let next = self.now + self.cfg.tick_ns;
                self.push(next, Ev::Tick);
            }
            Ev::Stop { cpu, task, gen } => {
                if self.cpus[cpu].curr == Some(task) && self.tasks[task].gen == gen {
                    self.charge(cpu);
                    self.step(cpu, task);
                }
            }
            Ev::Timer { task } => {
                if self.tasks[task].state == State::Sleeping {
                    self.wake(task, None, false);
                }
            }
            Ev::Arrive { task, cpu } => self.arrive(task, cpu),
            Ev::Spawn { task } => self.spawn(task, None),
        }
    }

    // ---- accounting -------------------------------------------------

    /// `update_curr` plus the task's progress: the penalty first, then
    /// the burst and the work budget.
    fn charge(&mut self, cpu: usize) {
        let Some(t) = self.cpus[cpu].curr else {
            return;
        };
        let now = self.now;
        let task = &mut self.tasks[t];
        self.cpus[cpu].rq.update_curr(&mut task.ent, now);
        let ran = now.saturating_sub(task.acct_from);
        if ran == 0 {
            return;
        }
        let from = task.acct_from;
        task.acct_from = now;
        let p = ran.min(task.penalty);
        task.penalty -= p;
        let useful = ran - p;
        task.burst_left = task.burst_left.saturating_sub(useful);
        if let Some(w) = &mut task.work_left {
            *w = w.saturating_sub(useful);
        }
        task.work_done += useful;
        task.exec_ns += ran;
        let g = task.group;
        self.cpus[cpu].busy_ns += ran;
        self.rec.busy(cpu, g, from, now);
    }

    fn update_task_pelt(&mut self, t: usize) {
        let task = &mut self.tasks[t];
        if task.pelt_cpu.is_none() && task.avg.last_update_time == 0 {
            // A new task is attached as initialised (attach_entity_load_avg
            // without an update, as post_init_entity_util_avg leaves it).
            return;
        }
        let queued = u64::from(matches!(task.state, State::Runnable | State::Running));
        let running = u64::from(task.state == State::Running);
        let w = task.ent.se.load.weight;
        task.avg.update(self.now, queued, queued, running, w);
    }

    fn update_rq_pelt(&mut self, cpu: usize) {
        let c = &mut self.cpus[cpu];
        c.avg.apply_removed(&mut c.removed);
        let running = u64::from(c.curr.is_some_and(|t| !self.tasks[t].ent.policy.is_rt()));
        let fair = &c.rq.fair;
        c.avg.update(
            self.now,
            fair.load_weight(),
            fair.nr_running() as u64,
            running,
            1,
        );
    }

    fn bump_touch(&mut self, t: usize) {
        self.touch += 1;
        self.tasks[t].touch = self.touch;
    }

    // ---- queue operations -------------------------------------------

    /// Accounts and queues `t` on `cpu` (attaching its PELT contribution
    /// there if it is not yet).
    fn activate(&mut self, t: usize, cpu: usize, flags: EnqueueFlags) {
        self.update_task_pelt(t);
        self.update_rq_pelt(cpu);
        if self.tasks[t].pelt_cpu != Some(cpu) {
            if let Some(old) = self.tasks[t].pelt_cpu {
                self.cpus[old].removed.add(&self.tasks[t].avg);
            }
            let task = &mut self.tasks[t];
            let w = task.ent.se.load.weight;
            self.cpus[cpu].avg.attach(&mut task.avg, w);
            task.pelt_cpu = Some(cpu);
        }
        self.charge(cpu);
        let now = self.now;
        let task = &mut self.tasks[t];
        self.cpus[cpu].rq.enqueue(&mut task.ent, t, flags, now);
        task.state = State::Runnable;
        task.cpu = cpu;
        self.cpus[cpu].tasks.push(t);
        self.bump_touch(t);
    }

    /// After `t` was queued on `cpu`: run it if the CPU idles, else the
    /// wakeup preemption check (immediately, or at the end of the
    /// current task's step when that task caused the wakeup).
    fn after_enqueue(&mut self, cpu: usize, t: usize) {
        match self.cpus[cpu].curr {
            None => self.pick(cpu),
            Some(c) => {
                let rq = &self.cpus[cpu].rq;
                if rq.check_preempt_wakeup(&self.tasks[c].ent, &self.tasks[t].ent) {
                    if self.in_step == Some(cpu) {
                        self.cpus[cpu].need_resched = true;
                    } else {
                        self.preempt(cpu);
                    }
                }
            }
        }
    }

    fn remove_from(&mut self, cpu: usize, t: usize) {
        let v = &mut self.cpus[cpu].tasks;
        if let Some(i) = v.iter().position(|&x| x == t) {
            v.swap_remove(i);
        }
    }

    /// Takes the current task off `cpu`: back to the queue, to sleep, or
    /// gone. The caller charged it and picks next.
    fn switch_out(&mut self, cpu: usize, how: State) {
        let t = self.cpus[cpu].curr.expect("a running task");
        self.update_task_pelt(t);
        self.update_rq_pelt(cpu);
        self.cpus[cpu].curr = None;
        self.cpus[cpu].need_resched = false;
        let now = self.now;
        let task = &mut self.tasks[t];
        task.last_ran = now;
        task.gen += 1;
        let rq = &mut self.cpus[cpu].rq;
        match how {
            State::Runnable => {
                rq.put_prev(&mut task.ent, t);
                task.state = State::Runnable;
            }
            State::Sleeping | State::Exited => {
                rq.dequeue(&mut task.ent);
                task.state = how;
                if how == State::Exited {
                    // remove_entity_load_avg for a dead task.
                    self.cpus[cpu].removed.add(&task.avg);
                    task.pelt_cpu = None;
                }
                self.remove_from(cpu, t);
            }
            _ => unreachable!("switch_out to {how:?}"),
        }
    }

    fn preempt(&mut self, cpu: usize) {
        self.charge(cpu);
        self.switch_out(cpu, State::Runnable);
        self.pick(cpu);
    }

    /// The scheduler proper: pick the next task, balancing newly idle
    /// first if nothing is queued.
    fn pick(&mut self, cpu: usize) {
        if self.cpus[cpu].curr.is_some() {
            debug_assert!(false, "pick on a busy CPU");
            return;
        }
        if self.cpus[cpu].rq.nr_running() == 0 {
            self.newidle_balance(cpu);
        }
        let Some(t) = self.cpus[cpu].rq.pick_next(None) else {
            return;
        };
        self.update_task_pelt(t);
        self.update_rq_pelt(cpu);
        let now = self.now;
        let task = &mut self.tasks[t];
        self.cpus[cpu].rq.set_next(&mut task.ent, now);
        task.state = State::Running;
        if !task.allowed.is_set(cpu) {
            self.affinity_violations += 1;
        }
        if self.cpus[cpu].last != Some(t) {
            task.penalty += self.cfg.costs.context_switch_ns;
            task.switches += 1;
            self.cpus[cpu].switches += 1;
        }
        if let Some(w) = task.woken_at.take() {
            self.lat[task.group].record(now - w);
        }
        task.acct_from = now;
        task.cpu = cpu;
        self.cpus[cpu].curr = Some(t);
        self.cpus[cpu].last = Some(t);
        self.bump_touch(t);
        self.arm_stop(cpu, t);
    }

    fn arm_stop(&mut self, cpu: usize, t: usize) {
        let task = &mut self.tasks[t];
        task.gen += 1;
        let mut left = task.burst_left;
        if let Some(w) = task.work_left {
            left = left.min(w);
        } else if left >= INF_NS {
            return;
        }
        let at = self.now + task.penalty + left;
        let gen = task.gen;
        self.push(at, Ev::Stop { cpu, task: t, gen });
    }

    // ---- task programs ----------------------------------------------

    /// The running task `t` finished its burst: run its program's
    /// zero-time steps up to the next burst, sleep, block or exit.
    fn step(&mut self, cpu: usize, t: usize) {
        self.in_step = Some(cpu);
        loop {
            let task = &mut self.tasks[t];
            if task.work_left == Some(0) {
                self.exit(cpu, t);
                break;
            }
            if task.burst_left > 0 {
                // Charged before its burst was done (a tick at the same
                // instant): keep running.
                self.continue_or_preempt(cpu, t);
                break;
            }
            if task.pc == task.ops.len() {
                task.pc = 0;
                task.iter += 1;
                if task.iters.is_some_and(|n| task.iter >= n) {
                    self.exit(cpu, t);
                    break;
                }
            }
            let op = task.ops[task.pc];
            task.pc += 1;
            match op {
                Op::Run(d) => {
                    task.burst_left = d.sample(&mut task.rng).max(1);
                    self.continue_or_preempt(cpu, t);
                    break;
                }
                Op::Sleep(d) => {
                    let dur = d.sample(&mut task.rng);
                    self.block(cpu);
                    self.push(self.now + dur, Ev::Timer { task: t });
                    break;
                }
                Op::Post => {
                    if let Some(p) = task.partner {
                        self.post(p, cpu);
                    }
                }
                Op::Wait => {
                    let partner_gone = task
                        .partner
                        .is_some_and(|p| self.tasks[p].state == State::Exited);
                    let task = &mut self.tasks[t];
                    if task.tokens > 0 {
                        task.tokens -= 1;
                    } else if partner_gone {
                        // EOF: nobody will post again.
                    } else {
                        task.waiting = true;
                        self.block(cpu);
                        break;
                    }
                }
                Op::Fork => self.fork_children(cpu, t),
                Op::Join => {
                    if task.live_children > 0 {
                        task.joining = true;
                        self.block(cpu);
                        break;
                    }
                }
            }
        }
        self.in_step = None;
    }

    /// The task goes on running its next burst, unless a wakeup it caused
    /// asked for a reschedule (taken now: the preemption point at the end
    /// of its step).
    fn continue_or_preempt(&mut self, cpu: usize, t: usize) {
        if self.cpus[cpu].need_resched {
            self.in_step = None;
            self.preempt(cpu);
        } else {
            self.arm_stop(cpu, t);
        }
    }

    fn block(&mut self, cpu: usize) {
        self.switch_out(cpu, State::Sleeping);
        self.pick(cpu);
    }

    /// `do_exit`: wake the waiting partner and the joining parent while
    /// the task still runs here (so placement sees this CPU busy), then
    /// switch away for good.
    fn exit(&mut self, cpu: usize, t: usize) {
        if let Some(p) = self.tasks[t].partner {
            // The partner sees EOF: a waiting one wakes and goes on alone.
            let partner = &mut self.tasks[p];
            if partner.waiting && partner.state == State::Sleeping {
                partner.waiting = false;
                self.wake(p, Some(cpu), false);
            }
        }
        if let Some(p) = self.tasks[t].parent {
            let parent = &mut self.tasks[p];
            parent.live_children -= 1;
            if parent.live_children == 0 && parent.joining {
                parent.joining = false;
                self.wake(p, Some(cpu), false);
            }
        }
        self.switch_out(cpu, State::Exited);
        self.tasks[t].exited_at = Some(self.now);
        self.live -= 1;
        if self.live == 0 {
            self.makespan = Some(self.now);
        }
        self.pick(cpu);
    }

    fn post(&mut self, p: usize, from: usize) {
        let partner = &mut self.tasks[p];
        if partner.state == State::Exited {
            return;
        }
        if partner.waiting && partner.state == State::Sleeping {
            partner.waiting = false;
            self.wake(p, Some(from), true);
        } else {
            partner.tokens += 1;
        }
    }

    fn fork_children(&mut self, cpu: usize, parent: usize) {
        let g = self.tasks[parent].group;
        let depth = self.tasks[parent].depth + 1;
        let fanout = self.groups[g].fork_fanout.resolve(self.n);
        for i in 0..fanout {
            let child = self.new_task(g, depth, i, Some(parent));
            self.tasks[parent].live_children += 1;
            self.spawn(child, Some(cpu));
        }
    }

    // ---- placement --------------------------------------------------

    pub(crate) fn cpu_stats(&self) -> Vec<CpuStat> {
        self.cpus
            .iter()
            .map(|c| CpuStat {
                load_avg: c.avg.load_avg,
                util_avg: c.avg.util_avg,
                runnable_avg: c.avg.runnable_avg,
                nr_running: (c.rq.nr_running() + c.pending as usize) as u64,
                idle: c.curr.is_none() && c.pending == 0,
                capacity: SCHED_CAPACITY_SCALE,
            })
            .collect()
    }

    /// Fork/exec placement (the slow path of `select_task_rq_fair`,
    /// simplified): within the largest domain of `from` that has
    /// `SD_BALANCE_FORK`, the allowed CPU with the fewest tasks, then the
    /// nearest (same LLC, same node), then the lightest, then the lowest
    /// number after `from`.
    fn fork_place(&self, from: usize, allowed: &CpuSet) -> usize {
        let span = self.doms[from]
            .iter()
            .rev()
            .find(|sd| sd.flags.contains(SdFlags::BALANCE_FORK))
            .map(|sd| sd.span.clone())
            .unwrap_or_else(|| [from].into_iter().collect());
        let mut cand = span.intersection(allowed);
        if cand.is_empty() {
            cand = allowed.clone();
        }
        let n = self.n;
        cand.iter()
            .min_by_key(|&c| {
                let s = &self.cpus[c];
                let nr = s.rq.nr_running() + s.pending as usize;
                (
                    nr,
                    self.distance_class(from, c),
                    s.avg.load_avg,
                    (c + n - from) % n,
                )
            })
            .unwrap_or(from)
    }

    /// 0 same CPU, 1 same LLC, 2 same node, 3 another node.
    fn distance_class(&self, a: usize, b: usize) -> u8 {
        if a == b {
            0
        } else if self.llc_id[a] == self.llc_id[b] {
            1
        } else if self.node[a] == self.node[b] {
            2
        } else {
            3
        }
    }

    fn spawn(&mut self, t: usize, parent_cpu: Option<usize>) {
        let g = self.tasks[t].group;
        let target = match (&self.group_start[g], parent_cpu) {
            (Some(list), None) => {
                let c = list[self.start_rr[g] % list.len()];
                self.start_rr[g] += 1;
                c
            }
            (_, Some(from)) => self.fork_place(from, &self.tasks[t].allowed),
            (None, None) => {
                let from = self.start_rr[g] % self.n;
                self.start_rr[g] += 1;
                self.fork_place(from, &self.tasks[t].allowed)
            }
        };
        let mut ent = std::mem::replace(
            &mut self.tasks[t].ent,
            TaskEntity::new(0, Default::default()),
        );
        match (parent_cpu, self.tasks[t].parent) {
            (Some(origin), Some(p)) => {
                self.charge(origin);
                let rq = &mut self.cpus[origin].rq;
                rq.task_fork(Some(&mut self.tasks[p].ent), &mut ent);
                if target != origin {
                    rq.migrate_out(&mut ent);
                    self.cpus[target].rq.migrate_in(&mut ent);
                }
            }
            _ => self.cpus[target].rq.task_fork(None, &mut ent),
        }
        let w = ent.se.load.weight;
        self.tasks[t].ent = ent;
        let rq_avg = self.cpus[target].avg;
        let task = &mut self.tasks[t];
        task.avg.post_init_util(&rq_avg, w, SCHED_CAPACITY_SCALE);
        task.spawned_at = Some(self.now);
        task.cpu = target;
        task.last_ran = self.now;
        self.activate(t, target, EnqueueFlags::INITIAL);
        self.after_enqueue(target, t);
    }

    /// `try_to_wake_up`: place (`select_task_rq`), then enqueue there now
    /// or after the remote wakeup latency.
    fn wake(&mut self, t: usize, waker: Option<usize>, sync: bool) {
        let prev = self.tasks[t].cpu;
        let task = &self.tasks[t];
        let target = if task.allowed.count() == 1 {
            task.allowed.first().unwrap_or(prev)
        } else {
            let stats = self.cpu_stats();
            let llc = &self.llc;
            balance::select_task_rq(
                prev,
                waker,
                sync,
                task.avg.load_avg,
                &task.allowed,
                &stats,
                |c| llc[c].clone(),
                WAKE_IMBALANCE_PCT,
            )
        };
        let task = &mut self.tasks[t];
        task.woken_at = Some(self.now);
        task.state = State::Transit;
        self.cpus[target].pending += 1;
        let origin = waker.unwrap_or(prev);
        let lat = self.cfg.costs.remote_wakeup_ns;
        if target != origin && lat > 0 {
            self.push(
                self.now + lat,
                Ev::Arrive {
                    task: t,
                    cpu: target,
                },
            );
        } else {
            self.arrive(t, target);
        }
    }

    fn arrive(&mut self, t: usize, cpu: usize) {
        self.cpus[cpu].pending -= 1;
        let prev = self.tasks[t].cpu;
        if prev != cpu {
            let task = &mut self.tasks[t];
            self.cpus[prev].rq.migrate_out(&mut task.ent);
            self.cpus[cpu].rq.migrate_in(&mut task.ent);
            self.count_migration(t, prev, cpu, Cause::Wakeup);
        }
        self.activate(t, cpu, EnqueueFlags::WAKEUP);
        self.after_enqueue(cpu, t);
    }

    fn count_migration(&mut self, t: usize, src: usize, dst: usize, cause: Cause) {
        let level = self.doms[src]
            .iter()
            .find(|sd| sd.span.is_set(dst))
            .map_or("none", |sd| sd.kind.name());
        *self
            .migrations
            .entry((level.to_owned(), cause))
            .or_insert(0) += 1;
        let costs = self.cfg.costs;
        let cost = match self.distance_class(src, dst) {
            0 => 0,
            1 => costs.migrate_llc_ns,
            2 => costs.migrate_cross_llc_ns,
            _ => costs.migrate_numa_ns,
        };
        let task = &mut self.tasks[t];
        task.penalty += cost;
        task.migrations += 1;
    }

    /// Moves the queued (not running) task `t` from `src` to `dst`.
    fn move_task(&mut self, t: usize, src: usize, dst: usize, cause: Cause) {
        self.update_task_pelt(t);
        self.update_rq_pelt(src);
        let task = &mut self.tasks[t];
        let w = task.ent.se.load.weight;
        self.cpus[src].avg.detach(&task.avg, w);
        task.pelt_cpu = None;
        let rq = &mut self.cpus[src].rq;
        rq.migrate_out(&mut task.ent);
        rq.dequeue(&mut task.ent);
        self.remove_from(src, t);
        self.cpus[dst].rq.migrate_in(&mut self.tasks[t].ent);
        self.count_migration(t, src, dst, cause);
        self.activate(t, dst, EnqueueFlags::NONE);
    }

    // ---- ticks and balancing ----------------------------------------

    fn tick(&mut self, cpu: usize) {
        if let Some(t) = self.cpus[cpu].curr {
            self.charge(cpu);
            self.update_task_pelt(t);
        }
        self.update_rq_pelt(cpu);
        if let Some(t) = self.cpus[cpu].curr {
            if self.cpus[cpu].rq.check_preempt_tick(&self.tasks[t].ent) {
                self.preempt(cpu);
            }
        }
        self.periodic_balance(cpu);
    }

    /// Tracks, per CPU, how long it has been idle while some CPU had a
    /// task waiting (the property tests bound it by the balance interval).
    fn watch_overload(&mut self) {
        let overloaded = self.cpus.iter().any(|c| c.rq.nr_running() >= 2);
        let now = self.now;
        let mut worst = self.max_idle_overloaded_ns;
        for c in &mut self.cpus {
            let idle = c.curr.is_none() && c.pending == 0 && c.rq.nr_running() == 0;
            if idle && overloaded {
                let since = *c.idle_overloaded_since.get_or_insert(now);
                worst = worst.max(now - since);
            } else {
                c.idle_overloaded_since = None;
            }
        }
        self.max_idle_overloaded_ns = worst;
    }

    /// `sched_balance_domains` / `rebalance_domains` for one CPU's tick.
    fn periodic_balance(&mut self, cpu: usize) {
        let doms = Rc::clone(&self.doms);
        for (l, sd) in doms[cpu].iter().enumerate() {
            let busy = self.cpus[cpu].curr.is_some();
            let st = self.cpus[cpu].doms[l];
            let mut interval = st.interval_ms;
            if busy {
                interval = (interval * u64::from(sd.busy_factor)).saturating_sub(1);
            }
            let interval = interval.clamp(1, (self.n as u64 * 100).max(1));
            if self.now < st.last_balance + interval * 1_000_000 {
                continue;
            }
            self.cpus[cpu].doms[l].last_balance = self.now;
            if self.should_we_balance(cpu, sd) {
                self.load_balance(cpu, l, sd, false);
            }
        }
    }

    /// `should_we_balance`: in the local group only the first idle CPU
    /// (or, with none idle, the group's first CPU) balances this level.
    fn should_we_balance(&self, cpu: usize, sd: &SchedDomain) -> bool {
        crate::sched::balance::should_we_balance(sd, cpu, |c| self.cpus[c].is_idle(), |_| true)
    }

    /// `sched_balance_newidle`: walk the domains bottom-up with
    /// `SD_BALANCE_NEWIDLE` until one pull succeeds; skipped when no CPU
    /// has a second task (the root domain is not overloaded).
    fn newidle_balance(&mut self, cpu: usize) {
        if !self.cpus.iter().any(|c| c.rq.nr_running() >= 2) {
            return;
        }
        let doms = Rc::clone(&self.doms);
        for (l, sd) in doms[cpu].iter().enumerate() {
            if !sd.flags.contains(SdFlags::BALANCE_NEWIDLE) {
                continue;
            }
            if self.load_balance(cpu, l, sd, true) > 0 {
                break;
            }
        }
    }

    /// Queued fair tasks of `cpu`, least recently queued or run first
    /// (the tail of the kernel's `cfs_tasks`).
    fn candidates(&self, cpu: usize) -> Vec<usize> {
        let c = &self.cpus[cpu];
        let mut v: Vec<usize> = c
            .tasks
            .iter()
            .copied()
            .filter(|&t| Some(t) != c.curr && !self.tasks[t].ent.policy.is_rt())
            .collect();
        v.sort_unstable_by_key(|&t| self.tasks[t].touch);
        v.truncate(balance::SCHED_NR_MIGRATE);
        v
    }

    /// `sched_balance_rq` / `load_balance` of `this` at level `l`.
    /// Returns the number of tasks pulled.
    fn load_balance(&mut self, this: usize, l: usize, sd: &SchedDomain, newly_idle: bool) -> usize {
        self.balance_calls += 1;
        let mut env = sd.span.clone();
        for _ in 0..MAX_PINNED_RETRIES {
            let stats = self.cpu_stats();
            let failed = self.cpus[this].doms[l].nr_balance_failed;
            let Some(plan) = balance::find_busiest(sd, this, &stats, &env, &[], newly_idle) else {
                // out_balanced.
                let st = &mut self.cpus[this].doms[l];
                st.nr_balance_failed = 0;
                if !newly_idle && st.interval_ms < sd.max_interval_ms {
                    st.interval_ms = (st.interval_ms * 2).min(sd.max_interval_ms);
                }
                return 0;
            };
            let src = plan.src;
            let ids = self.candidates(src);
            let cands: Vec<Candidate<'_>> = ids
                .iter()
                .map(|&t| {
                    let task = &self.tasks[t];
                    Candidate {
                        allowed: &task.allowed,
                        running: false,
                        last_ran_ns: task.last_ran,
                        load: task.avg.load_avg,
                        util: task.avg.util_avg,
                    }
                })
                .collect();
            let (picked, _why) = balance::pick_tasks(
                &plan,
                &cands,
                this,
                self.now,
                sd,
                failed,
                stats[src].nr_running,
                true,
            );
            let all_pinned =
                !ids.is_empty() && ids.iter().all(|&t| !self.tasks[t].allowed.is_set(this));
            let mut moved: Vec<usize> = picked.iter().map(|&i| ids[i]).collect();
            if newly_idle {
                moved.truncate(1);
            }
            if !moved.is_empty() {
                for &t in &moved {
                    self.move_task(t, src, this, Cause::Balance);
                    if !newly_idle {
                        self.after_enqueue(this, t);
                    }
                }
                let st = &mut self.cpus[this].doms[l];
                st.nr_balance_failed = 0;
                st.interval_ms = sd.min_interval_ms;
                return moved.len();
            }
            if all_pinned {
                env.clear(src);
                continue;
            }
            if !newly_idle {
                let st = &mut self.cpus[this].doms[l];
                st.nr_balance_failed += 1;
                if st.nr_balance_failed > sd.cache_nice_tries + 2 {
                    // Active balance: the stopper on `src` hands over one
                    // allowed task whatever its cache state.
                    st.nr_balance_failed = sd.cache_nice_tries + 1;
                    st.interval_ms = sd.min_interval_ms;
                    if let Some(&t) = ids.iter().find(|&&t| self.tasks[t].allowed.is_set(this)) {
                        self.move_task(t, src, this, Cause::Active);
                        self.after_enqueue(this, t);
                        return 1;
                    }
                    return 0;
                }
                st.interval_ms = sd.min_interval_ms;
            }
            return 0;
        }
        if !newly_idle {
            let st = &mut self.cpus[this].doms[l];
            if st.interval_ms < MAX_PINNED_INTERVAL_MS {
                st.interval_ms *= 2;
            }
        }
        0
    }

    /// The domains of every CPU, lowest level first.
    pub fn domains(&self) -> &[Vec<SchedDomain>] {
        &self.doms
    }

    /// Number of virtual CPUs.
    pub fn nr_cpus(&self) -> usize {
        self.n
    }
}
