//! The Completely Fair Scheduler's per-CPU run queue, as in Linux 2.6.23 –
//! 6.5 without group scheduling (reference §1.2 – §1.9).
//!
//! See the [`sched`](super) module docs for the calling protocol. This file
//! holds the types ([`Tunables`], [`SchedEntity`], [`EnqueueFlags`],
//! [`CfsRq`]) and the wrap-safe vruntime helpers.
//!
//! # Time and wrap-around
//!
//! Wall-clock values (`now`, `exec_start`, `sum_exec_runtime`) are `u64` ns
//! and do not wrap in 584 years. Virtual time may: it is compared only with
//! the kernel's wrap-safe signed difference ([`entity_before`],
//! [`max_vruntime`], [`min_vruntime`]), except inside the tree, which orders
//! `vruntime as i64` (signed, so that a fresh queue's region around 0 —
//! including migrated entities with a negative relative vruntime — is
//! contiguous). That order disagrees with the wrap-safe one only while the
//! queued vruntimes straddle ±2^63, i.e. after 2^63 virtual ns of
//! `min_vruntime` progress: 292 years of nice-0 execution, 4.3 years if only
//! nice-19 tasks ran (68 v-ns/ns), 313 days if only `SCHED_IDLE` tasks ran
//! (341 v-ns/ns). Even then the failure is a transient mis-ordering for the
//! few milliseconds in which queued vruntimes sit on both sides of the
//! boundary, never a corrupted tree: `i64` order is a total order, and every
//! other comparison stays wrap-safe.

use super::timeline::{Entry, Timeline, TreeKey};
use super::weights::{calc_delta_fair, fair_delta, mul_div, LoadWeight};

/// Whether vruntime `a` is before `b`, wrap-safe: `(a - b) as i64 < 0`
/// (fair.c: `entity_before()`).
#[inline]
pub fn entity_before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

/// The later of two vruntimes, wrap-safe (fair.c: `max_vruntime()`).
#[inline]
pub fn max_vruntime(a: u64, b: u64) -> u64 {
    if entity_before(a, b) {
        b
    } else {
        a
    }
}

/// The earlier of two vruntimes, wrap-safe (fair.c: `min_vruntime()`).
#[inline]
pub fn min_vruntime(a: u64, b: u64) -> u64 {
    if entity_before(b, a) {
        b
    } else {
        a
    }
}

/// Normalized `sched_latency` (one CPU): 6 ms.
pub const NORMALIZED_SCHED_LATENCY_NS: u64 = 6_000_000;
/// Normalized `sched_min_granularity` (one CPU): 0.75 ms.
pub const NORMALIZED_SCHED_MIN_GRANULARITY_NS: u64 = 750_000;
/// Normalized `sched_wakeup_granularity` (one CPU): 1 ms.
pub const NORMALIZED_SCHED_WAKEUP_GRANULARITY_NS: u64 = 1_000_000;
/// `sched_migration_cost`: 0.5 ms, not scaled with the CPU count.
pub const SCHED_MIGRATION_COST_NS: u64 = 500_000;

/// CFS tunables, in ns (reference §1.3; fair.c top of file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    /// Target period in which every runnable entity runs once.
    pub sched_latency_ns: u64,
    /// Minimum slice; also the unit by which the period stretches.
    pub sched_min_granularity_ns: u64,
    /// Virtual-time lead a wakee needs over the current entity to preempt it.
    pub sched_wakeup_granularity_ns: u64,
    /// Runnable count up to which the period is `sched_latency_ns`.
    pub sched_nr_latency: u64,
    /// Cache-hot threshold for the load balancer (not used by this queue).
    pub sched_migration_cost_ns: u64,
    /// START_DEBIT: a forked entity starts one vslice after `min_vruntime`.
    pub start_debit: bool,
    /// GENTLE_FAIR_SLEEPERS: halve the sleeper credit.
    pub gentle_fair_sleepers: bool,
    /// WAKEUP_PREEMPTION: a wakee may preempt the current entity.
    pub wakeup_preemption: bool,
}

impl Tunables {
    /// `1 + ilog2(min(ncpus, 8))`, the kernel's SCHED_TUNABLESCALING_LOG
    /// factor (fair.c: `get_update_sysctl_factor()`); `ncpus == 0` counts
    /// as 1.
    pub fn scaling_factor(ncpus: usize) -> u64 {
        1 + u64::from(ncpus.clamp(1, 8).ilog2())
    }

    /// The kernel defaults for `ncpus` online CPUs (fair.c:
    /// `update_sysctl()`): 6 ms / 0.75 ms / 1 ms times
    /// [`scaling_factor`](Self::scaling_factor), `nr_latency` 8, migration
    /// cost 0.5 ms unscaled, all features on.
    pub fn for_cpus(ncpus: usize) -> Tunables {
        let factor = Self::scaling_factor(ncpus);
        let latency = NORMALIZED_SCHED_LATENCY_NS * factor;
        let min_gran = NORMALIZED_SCHED_MIN_GRANULARITY_NS * factor;
        Tunables {
            sched_latency_ns: latency,
            sched_min_granularity_ns: min_gran,
            sched_wakeup_granularity_ns: NORMALIZED_SCHED_WAKEUP_GRANULARITY_NS * factor,
            // sched_proc_update_handler(): DIV_ROUND_UP(latency, min_gran).
            sched_nr_latency: latency.div_ceil(min_gran),
            sched_migration_cost_ns: SCHED_MIGRATION_COST_NS,
            start_debit: true,
            gentle_fair_sleepers: true,
            wakeup_preemption: true,
        }
    }

    /// Scheduling period for `nr` runnable entities: `sched_latency_ns` up
    /// to `sched_nr_latency`, else `nr * sched_min_granularity_ns` (fair.c:
    /// `__sched_period()`).
    #[inline]
    pub fn sched_period(&self, nr: usize) -> u64 {
        let nr = nr as u64;
        if nr > self.sched_nr_latency {
            nr.saturating_mul(self.sched_min_granularity_ns)
        } else {
            self.sched_latency_ns
        }
    }
}

impl Default for Tunables {
    /// [`Tunables::for_cpus(1)`](Tunables::for_cpus).
    fn default() -> Self {
        Tunables::for_cpus(1)
    }
}

/// What [`CfsRq::enqueue_entity`] does besides queueing (kernel:
/// `ENQUEUE_WAKEUP`, and the `place_entity(se, 1)` of `task_fork_fair()`).
///
/// Neither flag: the entity keeps its vruntime as is (a migrated entity
/// after [`CfsRq::migrate_in`], a reweight, a test). If both are set,
/// `initial` wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnqueueFlags {
    /// The entity was sleeping: place it with sleeper credit (§1.7).
    pub wakeup: bool,
    /// The entity is new (fork/spawn): place it with START_DEBIT (§1.7).
    pub initial: bool,
}

impl EnqueueFlags {
    /// No placement: keep the vruntime.
    pub const NONE: EnqueueFlags = EnqueueFlags {
        wakeup: false,
        initial: false,
    };
    /// Wakeup placement (sleeper credit).
    pub const WAKEUP: EnqueueFlags = EnqueueFlags {
        wakeup: true,
        initial: false,
    };
    /// Fork placement (START_DEBIT).
    pub const INITIAL: EnqueueFlags = EnqueueFlags {
        wakeup: false,
        initial: true,
    };
}

/// One schedulable entity (a task) as CFS sees it (kernel: `struct
/// sched_entity`).
///
/// The caller owns it (in the executor, inside the task) and lends it to
/// the [`CfsRq`] methods; the queue itself stores only a key, the accounted
/// weight and the task handle.
#[derive(Clone, Debug)]
pub struct SchedEntity {
    /// Load weight; change it with [`set_nice`](Self::set_nice),
    /// [`set_idle_policy`](Self::set_idle_policy) or
    /// [`CfsRq::reweight_entity`], not directly.
    pub load: LoadWeight,
    /// Nice value, `MIN_NICE..=MAX_NICE`.
    pub nice: i32,
    /// Virtual runtime in v-ns: absolute on a queue, relative to
    /// `min_vruntime` while migrating (see [`CfsRq::migrate_out`]).
    pub vruntime: u64,
    /// Clock value at which the entity last started being accounted.
    pub exec_start: u64,
    /// Total wall-clock ns run.
    pub sum_exec_runtime: u64,
    /// `sum_exec_runtime` when the entity was last picked to run.
    pub prev_sum_exec_runtime: u64,
    /// Accounted on a queue (queued in its tree or running as its current).
    pub on_rq: bool,
    /// `SCHED_IDLE` policy: weight 3 whatever the nice value, preempted by
    /// any normal wakee, never wakeup-preempts. Change it with
    /// [`set_idle_policy`](Self::set_idle_policy) or
    /// [`CfsRq::reweight_entity`], which also fix `load`.
    pub idle_policy: bool,
    /// Key of the entity's latest insertion into a queue's tree: finds the
    /// entry on dequeue and identifies the current entity (which keeps the
    /// key it was picked with). Stale once dequeued or popped; harmless,
    /// because keys carry a per-queue unique sequence number.
    rq_key: Option<TreeKey>,
    /// START_DEBIT's vslice as computed at fork time, or 0 if the fork did
    /// not compute it ([`CfsRq::set_fork_vslice`]): the INITIAL placement
    /// then uses it instead of the vslice of the queue it is enqueued on
    /// later, as `task_fork_fair()` places a child while its parent runs.
    /// Used once. (A plain word, not an `Option`, to keep the entity at
    /// 160 bytes; a computed vslice of 0 falls back to the enqueue's.)
    fork_vslice: u64,
}

impl SchedEntity {
    /// A `SCHED_NORMAL` entity at `nice`, vruntime 0, never run.
    ///
    /// # Panics
    ///
    /// If `nice` is outside `MIN_NICE..=MAX_NICE` (see
    /// [`LoadWeight::from_nice`]).
    pub fn new(nice: i32) -> SchedEntity {
        SchedEntity {
            load: LoadWeight::from_nice(nice),
            nice,
            vruntime: 0,
            exec_start: 0,
            sum_exec_runtime: 0,
            prev_sum_exec_runtime: 0,
            on_rq: false,
            idle_policy: false,
            rq_key: None,
            fork_vslice: 0,
        }
    }

    fn weight_for(nice: i32, idle_policy: bool) -> LoadWeight {
        if idle_policy {
            LoadWeight::idle()
        } else {
            LoadWeight::from_nice(nice)
        }
    }

    /// Sets the nice value and reweights (kernel: `set_user_nice()` →
    /// `set_load_weight()`); a `SCHED_IDLE` entity keeps weight 3.
    ///
    /// Only for an entity that is not `on_rq`: for a queued or running one,
    /// use [`CfsRq::reweight_entity`] (or dequeue, set, enqueue with
    /// [`EnqueueFlags::NONE`] for a queued one), or the queue's load goes
    /// stale.
    pub fn set_nice(&mut self, nice: i32) {
        debug_assert!(!self.on_rq, "set_nice on a queued entity");
        self.nice = nice;
        self.load = Self::weight_for(nice, self.idle_policy);
    }

    /// Switches `SCHED_IDLE` on or off and reweights; same `on_rq` rule as
    /// [`set_nice`](Self::set_nice).
    pub fn set_idle_policy(&mut self, idle: bool) {
        debug_assert!(!self.on_rq, "set_idle_policy on a queued entity");
        self.idle_policy = idle;
        self.load = Self::weight_for(self.nice, idle);
    }
}

/// What the queue remembers of its current (running) entity.
#[derive(Clone, Copy, Debug)]
struct Curr {
    /// The key it was picked with (its identity).
    key: TreeKey,
    /// Its vruntime as of the last `set_next_entity` / `update_curr`.
    vruntime: u64,
    /// The weight it is accounted with in `load`.
    weight: u64,
}

/// The per-CPU fair run queue (kernel: `struct cfs_rq`), holding opaque
/// task handles `T`.
///
/// Invariants (checked after every step by the tests):
/// 1. `load` = Σ weights of the queued entries + the current entity's
///    weight; `nr_running()` = queued + (1 if there is a current entity).
/// 2. The current entity is not in the tree.
/// 3. `min_vruntime` never decreases (wrap-safe).
/// 4. Tree order is `(vruntime as i64, insertion seq)`: FIFO among equal
///    vruntimes.
///
/// One owner thread per queue; no locking inside.
#[derive(Debug)]
pub struct CfsRq<T> {
    tunables: Tunables,
    /// Monotone floor of the queue's virtual clock (§1.5).
    min_vruntime: u64,
    /// Σ weight of everything accounted (queued + current).
    load: u64,
    /// The running entity, if it is accounted here.
    curr: Option<Curr>,
    /// Queued entities, leftmost first.
    tree: Timeline<T>,
    /// Next insertion sequence number (unique per queue).
    next_seq: u64,
    /// The NEXT buddy (fair.c `cfs_rq->next`): the tree key of a queued
    /// entity that should run next if that is fair enough (see
    /// [`set_next_buddy`](Self::set_next_buddy)). Keys are unique per
    /// insertion, so a key that left the tree can never name another
    /// entity; it is simply not found.
    next: Option<TreeKey>,
    /// The yielder the next pick passes over is about to block (see
    /// [`yield_blocking`](Self::yield_blocking)); lasts one pick.
    skip_blocking: bool,
}

impl<T> Default for CfsRq<T> {
    fn default() -> Self {
        CfsRq::new(Tunables::default())
    }
}

impl<T> CfsRq<T> {
    /// An empty queue with `min_vruntime` 0; allocates nothing.
    pub fn new(tunables: Tunables) -> CfsRq<T> {
        CfsRq {
            tunables,
            min_vruntime: 0,
            load: 0,
            curr: None,
            tree: Timeline::new(),
            next_seq: 0,
            next: None,
            skip_blocking: false,
        }
    }

    /// The current entity yields because it is about to block (greenos's
    /// yield before parking: `wait::before_park`), not by `sched_yield()`.
    /// The next [`pick_next_entity`](Self::pick_next_entity) passes over it
    /// if the second-leftmost is within one scheduling period
    /// (`sched_latency_ns`) of it, instead of one wakeup granularity: had
    /// it blocked at once, the second would run now, so refusing the yield
    /// only makes it park and the second run anyway, at the cost of a park
    /// and a wakeup. Lasts one pick; call it before
    /// [`put_prev_entity`](Self::put_prev_entity).
    #[inline]
    pub fn yield_blocking(&mut self) {
        self.skip_blocking = true;
    }

    /// The tunables in force.
    #[inline]
    pub fn tunables(&self) -> &Tunables {
        &self.tunables
    }

    /// Replaces the tunables (CPU hot-plug, sysctl writes); takes effect at
    /// the next slice or placement computation.
    pub fn set_tunables(&mut self, tunables: Tunables) {
        self.tunables = tunables;
    }

    /// The queue's monotone virtual clock floor (`cfs_rq->min_vruntime`).
    #[inline]
    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    /// Entities accounted here: queued plus the current one
    /// (`cfs_rq->nr_running`).
    #[inline]
    pub fn nr_running(&self) -> usize {
        self.tree.len() + usize::from(self.curr.is_some())
    }

    /// Entities waiting in the tree (excludes the current one).
    #[inline]
    pub fn nr_queued(&self) -> usize {
        self.tree.len()
    }

    /// Σ weights of queued entities and the current one
    /// (`cfs_rq->load.weight`).
    #[inline]
    pub fn load_weight(&self) -> u64 {
        self.load
    }

    /// vruntime of the leftmost queued entity (`__pick_first_entity()`).
    #[inline]
    pub fn leftmost_vruntime(&self) -> Option<u64> {
        self.tree.first().map(|(k, _)| k.vruntime())
    }

    /// Whether nothing is accounted here: no queued and no current entity.
    /// (Nothing to pick is `nr_queued() == 0`.)
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.nr_running() == 0
    }

    /// Whether a current entity is accounted (picked, not yet put back or
    /// dequeued).
    #[inline]
    pub fn has_curr(&self) -> bool {
        self.curr.is_some()
    }

    /// Whether `se` is the current entity (it keeps the key it was picked
    /// with).
    #[inline]
    fn is_curr(&self, se: &SchedEntity) -> bool {
        self.is_curr_key(se.rq_key)
    }

    #[inline]
    fn next_key(&mut self, vruntime: u64) -> TreeKey {
        let key = TreeKey::new(vruntime, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        key
    }

    /// Raises `min_vruntime` to the smaller of the current entity's and the
    /// leftmost's vruntime, never lowering it (fair.c:
    /// `update_min_vruntime()`).
    fn update_min_vruntime(&mut self) {
        let curr = self.curr.map(|c| c.vruntime);
        let left = self.leftmost_vruntime();
        let candidate = match (curr, left) {
            (Some(c), Some(l)) => min_vruntime(c, l),
            (Some(c), None) => c,
            (None, Some(l)) => l,
            (None, None) => return,
        };
        self.min_vruntime = max_vruntime(self.min_vruntime, candidate);
    }

    /// Charges the running entity for the time since `exec_start`:
    /// `sum_exec_runtime += delta`, `vruntime += delta * 1024 / weight`,
    /// then advances `min_vruntime` (fair.c: `update_curr()`, §1.2).
    ///
    /// `now <= exec_start` charges nothing. Call it before every other
    /// operation that reads vruntimes (enqueue, dequeue, put-prev, tick and
    /// wakeup checks), as the kernel does. Charging an entity that has
    /// already been dequeued (it blocked) is allowed: the queue then only
    /// re-evaluates `min_vruntime`.
    #[inline]
    pub fn update_curr(&mut self, curr: &mut SchedEntity, now: u64) {
        debug_assert!(
            !curr.on_rq || self.is_curr(curr),
            "update_curr on a queued entity that is not the current one"
        );
        let delta = match now.checked_sub(curr.exec_start) {
            Some(d) if d > 0 => d,
            _ => return,
        };
        curr.exec_start = now;
        curr.sum_exec_runtime = curr.sum_exec_runtime.wrapping_add(delta);
        curr.vruntime = curr
            .vruntime
            .wrapping_add(calc_delta_fair(delta, &curr.load));
        if let Some(c) = &mut self.curr {
            if Some(c.key) == curr.rq_key {
                c.vruntime = curr.vruntime;
            }
        }
        self.update_min_vruntime();
    }

    /// Places `se` relative to `min_vruntime` before it is queued (fair.c:
    /// `place_entity()`, §1.7).
    ///
    /// `initial` (fork): `min_vruntime + vslice` with START_DEBIT. Otherwise
    /// (wakeup): `min_vruntime - thresh`, thresh = latency (min_granularity
    /// for `SCHED_IDLE`), halved with GENTLE_FAIR_SLEEPERS. Either way
    /// `se.vruntime = max(se.vruntime, target)` (wrap-safe): never placed
    /// backwards. The kernel's ≥ 6.0 long-sleeper escape (ignore the old
    /// vruntime after ~104 days asleep) needs a clock here and is omitted;
    /// wrap-safe comparison is exact for gaps below 2^63 v-ns.
    pub fn place_entity(&self, se: &mut SchedEntity, initial: bool) {
        let mut target = self.min_vruntime;
        if initial {
            let at_fork = std::mem::take(&mut se.fork_vslice);
            if self.tunables.start_debit {
                let vslice = if at_fork != 0 {
                    at_fork
                } else {
                    self.sched_vslice(se)
                };
                target = target.wrapping_add(vslice);
            }
        } else {
            let mut thresh = if se.idle_policy {
                self.tunables.sched_min_granularity_ns
            } else {
                self.tunables.sched_latency_ns
            };
            if self.tunables.gentle_fair_sleepers {
                thresh >>= 1;
            }
            target = target.wrapping_sub(thresh);
        }
        se.vruntime = max_vruntime(se.vruntime, target);
    }

    /// Accounts `se` on this queue and inserts `task` into the tree,
    /// placing it first as `flags` say; sets `se.on_rq` (fair.c:
    /// `enqueue_entity()`).
    ///
    /// For a fork, set `se.vruntime` to the parent's (after charging the
    /// parent with [`update_curr`](Self::update_curr)) and pass
    /// [`EnqueueFlags::INITIAL`], as `task_fork_fair()` does.
    pub fn enqueue_entity(&mut self, se: &mut SchedEntity, task: T, flags: EnqueueFlags) {
        debug_assert!(!se.on_rq, "enqueue_entity: entity already on a queue");
        if flags.initial {
            self.place_entity(se, true);
        } else if flags.wakeup {
            self.place_entity(se, false);
        }
        let key = self.next_key(se.vruntime);
        let weight = se.load.weight;
        self.tree.insert(key, weight, task);
        self.load += weight;
        se.rq_key = Some(key);
        se.on_rq = true;
    }

    /// Accounts a woken `se` and makes it the current entity at once, never
    /// entering the tree: a direct process switch (the woken task runs next,
    /// as seL4's IPC fastpath runs the receiver without the scheduler). It
    /// is placed like a wakeup (sleeper credit) and marked running from
    /// `now`. The previous current entity must have been put back or
    /// dequeued. The driver then runs it exactly as a picked entity.
    ///
    /// Refused (false; `se` is placed but not queued: enqueue it as a
    /// wakeup) when the leftmost queued entity is owed the CPU: when `se`
    /// is more than one wakeup granularity ahead of it
    /// (`wakeup_preempt_entity(se, leftmost) == 1`, the NEXT-buddy rule of
    /// §1.9, which is how the kernel lets a sync wakee run next). seL4's
    /// fastpath likewise switches only to a receiver the scheduler would
    /// choose; without this test two tasks calling each other would keep
    /// the CPU from everything else queued here.
    pub fn enqueue_curr(&mut self, se: &mut SchedEntity, now: u64) -> bool {
        debug_assert!(!se.on_rq, "enqueue_curr: entity already on a queue");
        debug_assert!(self.curr.is_none(), "enqueue_curr: a current entity exists");
        self.place_entity(se, false);
        if let Some((left, left_weight)) = self.tree.first() {
            if self.wakeup_preempt_raw(se.vruntime, left.vruntime(), left_weight) > 0 {
                return false;
            }
        }
        self.set_curr_placed(se, now);
        true
    }

    /// [`enqueue_curr`](Self::enqueue_curr) without the fairness test: for
    /// an entity that is running already and must become the accounted
    /// one (the executor ending a lent scheduling context: the borrower
    /// takes over as the current entity).
    pub fn enqueue_curr_forced(&mut self, se: &mut SchedEntity, now: u64) {
        debug_assert!(!se.on_rq, "enqueue_curr: entity already on a queue");
        debug_assert!(self.curr.is_none(), "enqueue_curr: a current entity exists");
        self.place_entity(se, false);
        self.set_curr_placed(se, now);
    }

    #[inline]
    fn set_curr_placed(&mut self, se: &mut SchedEntity, now: u64) {
        let key = self.next_key(se.vruntime);
        self.load += se.load.weight;
        se.rq_key = Some(key);
        se.on_rq = true;
        self.curr = Some(Curr {
            key,
            vruntime: se.vruntime,
            weight: se.load.weight,
        });
        se.exec_start = now;
        se.prev_sum_exec_runtime = se.sum_exec_runtime;
    }

    /// Un-accounts `se` and clears `se.on_rq` (fair.c: `dequeue_entity()`):
    /// a queued entity leaves the tree and its handle is returned; the
    /// current entity (blocking or exiting) is only un-accounted and `None`
    /// is returned. Then `min_vruntime` is advanced.
    ///
    /// An entity that is neither queued nor current here is a caller bug:
    /// debug builds panic; release builds clear `se.on_rq`, return `None`
    /// and leave the queue unchanged.
    pub fn dequeue_entity(&mut self, se: &mut SchedEntity) -> Option<T> {
        debug_assert!(se.on_rq, "dequeue_entity: entity not on a queue");
        if !se.on_rq {
            return None;
        }
        let key = se.rq_key.take();
        se.on_rq = false;
        let task = if self.is_curr_key(key) {
            let curr = self.curr.take().expect("is_curr_key checked curr");
            self.load -= curr.weight;
            None
        } else {
            let entry = key.and_then(|k| self.tree.remove(k));
            debug_assert!(
                entry.is_some(),
                "dequeue_entity: entity neither queued nor current here"
            );
            let entry = entry?;
            self.load -= entry.weight;
            Some(entry.task)
        };
        self.update_min_vruntime();
        task
    }

    #[inline]
    fn is_curr_key(&self, key: Option<TreeKey>) -> bool {
        matches!((self.curr, key), (Some(c), Some(k)) if c.key == k)
    }

    /// Takes the leftmost entity out of the tree and makes it the current
    /// one; returns its handle (fair.c: `pick_next_entity()`; the caller
    /// then calls [`set_next_entity`](Self::set_next_entity)).
    ///
    /// `skip` is the SKIP buddy (a yielder already put back with
    /// [`put_prev_entity`](Self::put_prev_entity)): if it is the leftmost,
    /// the second-leftmost runs instead when
    /// `wakeup_preempt_entity(second, leftmost) < 1`, i.e. when that costs
    /// the yielder at most one wakeup granularity of unfairness (§1.9).
    ///
    /// The previous current entity must have been put back or dequeued.
    #[inline]
    pub fn pick_next_entity(&mut self, skip: Option<&SchedEntity>) -> Option<T> {
        debug_assert!(
            self.curr.is_none(),
            "pick_next_entity: put_prev_entity or dequeue_entity the current entity first"
        );
        let (left_key, left_weight) = self.tree.first()?;
        // NEXT buddy: preferred over the leftmost (or the second) if that
        // costs at most one wakeup granularity of unfairness
        // (`wakeup_preempt_entity(next, left) < 1`, §1.9).
        if let Some(next) = self.next.take() {
            if next != left_key
                && self.wakeup_preempt_raw(next.vruntime(), left_key.vruntime(), left_weight) < 1
            {
                if let Some(entry) = self.tree.remove(next) {
                    return Some(self.take_as_curr(entry));
                }
            }
            // Otherwise it is the leftmost (picked below), too far ahead,
            // or gone; either way the buddy is spent (clear_buddies()).
        }
        // SKIP buddy: pass over a yielding leftmost if the second is within
        // the wakeup granularity. One pop for both outcomes, so the entry
        // goes from the tree's slots straight into `curr` (merging two
        // paths' entries through the stack cost a store-forwarding stall
        // per switch).
        let blocking = std::mem::take(&mut self.skip_blocking);
        let pos = match skip {
            Some(s) if s.rq_key == Some(left_key) => {
                usize::from(self.skip_takes_second(left_key, left_weight, blocking))
            }
            _ => 0,
        };
        let entry = self.tree.pop_at(pos).expect("tree has a leftmost");
        Some(self.take_as_curr(entry))
    }

    /// Makes a tree entry just taken out the current one; returns its handle.
    #[inline(always)]
    fn take_as_curr(&mut self, entry: Entry<T>) -> T {
        self.curr = Some(Curr {
            key: entry.key,
            vruntime: entry.key.vruntime(),
            weight: entry.weight,
        });
        entry.task
    }

    /// Makes the queued `se` the NEXT buddy: the next
    /// [`pick_next_entity`](Self::pick_next_entity) takes it instead of the
    /// leftmost if it is at most one wakeup granularity behind it (fair.c:
    /// `set_next_buddy()`, as `yield_to_task_fair()` uses it for a directed
    /// yield, §1.9). The buddy lasts one pick; an entity that is current or
    /// not queued here is ignored.
    pub fn set_next_buddy(&mut self, se: &SchedEntity) {
        if !se.on_rq || self.is_curr_key(se.rq_key) {
            return;
        }
        // A key that left the tree since is not found at the pick.
        self.next = se.rq_key;
    }

    /// The SKIP-buddy test of [`pick_next_entity`](Self::pick_next_entity):
    /// the leftmost (`left_key`, `left_weight`) is the yielder; take the
    /// second if `wakeup_preempt_entity(second, left) < 1`, or, for a
    /// yielder about to block (`blocking`, see
    /// [`yield_blocking`](Self::yield_blocking)), if the second is at most
    /// one period (`sched_latency_ns`, scaled to the yielder's weight)
    /// ahead of it.
    #[inline]
    fn skip_takes_second(&self, left_key: TreeKey, left_weight: u64, blocking: bool) -> bool {
        match self.tree.second() {
            Some((second_key, _)) if blocking => {
                let ahead = second_key.vruntime().wrapping_sub(left_key.vruntime()) as i64;
                ahead <= fair_delta(self.tunables.sched_latency_ns, left_weight) as i64
            }
            Some((second_key, _)) => {
                self.wakeup_preempt_raw(second_key.vruntime(), left_key.vruntime(), left_weight) < 1
            }
            None => false,
        }
    }

    /// Marks the picked entity as running from `now`: `exec_start = now`,
    /// `prev_sum_exec_runtime = sum_exec_runtime` (fair.c:
    /// `set_next_entity()`).
    #[inline]
    pub fn set_next_entity(&mut self, se: &mut SchedEntity, now: u64) {
        debug_assert!(se.on_rq, "set_next_entity: entity not on a queue");
        debug_assert!(
            self.is_curr(se),
            "set_next_entity: entity is not the one pick_next_entity returned"
        );
        se.exec_start = now;
        se.prev_sum_exec_runtime = se.sum_exec_runtime;
        if let Some(c) = &mut self.curr {
            c.vruntime = se.vruntime;
        }
    }

    /// Puts the still-runnable current entity back into the tree at its
    /// vruntime, without placement (fair.c: `put_prev_entity()`). Charge it
    /// with [`update_curr`](Self::update_curr) first. A current entity that
    /// blocked is [`dequeue_entity`](Self::dequeue_entity)'d instead.
    #[inline]
    pub fn put_prev_entity(&mut self, se: &mut SchedEntity, task: T) {
        debug_assert!(se.on_rq, "put_prev_entity: entity was dequeued");
        debug_assert!(
            self.is_curr(se),
            "put_prev_entity: entity is not the current one"
        );
        let weight = self.curr.take().map_or(se.load.weight, |c| c.weight);
        let key = self.next_key(se.vruntime);
        self.tree.insert(key, weight, task);
        se.rq_key = Some(key);
    }

    /// Scheduling period for `nr` runnable entities (fair.c:
    /// `__sched_period()`, §1.4).
    #[inline]
    pub fn sched_period(&self, nr: usize) -> u64 {
        self.tunables.sched_period(nr)
    }

    /// Wall-clock slice of `se`: `period * w_se / W` with `se` counted in
    /// `nr` and `W` if it is not `on_rq` (fair.c: `sched_slice()`, §1.4;
    /// the classic form, without the 5.13+ BASE_SLICE floor).
    pub fn sched_slice(&self, se: &SchedEntity) -> u64 {
        let (nr, load) = if se.on_rq {
            (self.nr_running(), self.load)
        } else {
            (self.nr_running() + 1, self.load + se.load.weight)
        };
        let period = self.sched_period(nr);
        if load == 0 {
            return period;
        }
        mul_div(period, se.load.weight, load)
    }

    /// START_DEBIT's vslice for `se` forked now, while this queue's current
    /// entity (the parent) runs, with `staged` earlier children that are
    /// not queued yet counted as queued at `se`'s weight: what
    /// `task_fork_fair()` computes at fork, when those siblings are already
    /// on the run queue (`wake_up_new_task`). Recorded in `se` for its
    /// INITIAL placement, which may happen later, here or on another queue
    /// (relative to that queue's `min_vruntime`, as the kernel's relative
    /// vruntime of a new task is).
    pub fn set_fork_vslice(&self, se: &mut SchedEntity, staged: usize) {
        let w = se.load.weight;
        let extra = staged as u64 + 1;
        let nr = self.nr_running() + staged + 1;
        let load = self.load + w.saturating_mul(extra);
        let period = self.sched_period(nr);
        let slice = if load == 0 {
            period
        } else {
            mul_div(period, w, load)
        };
        se.fork_vslice = calc_delta_fair(slice, &se.load);
    }

    /// [`sched_slice`](Self::sched_slice) in `se`'s virtual time:
    /// `slice * 1024 / w_se` (fair.c: `sched_vslice()`).
    #[inline]
    pub fn sched_vslice(&self, se: &SchedEntity) -> u64 {
        calc_delta_fair(self.sched_slice(se), &se.load)
    }

    /// Whether the running `curr` should be preempted at a tick (fair.c:
    /// `check_preempt_tick()`, §1.8): it ran more than its slice since it
    /// was picked, or — having run at least min_granularity — its vruntime
    /// leads the leftmost's by more than its (wall-clock) slice, the kernel's
    /// own unit mix. `false` when nothing else is queued (the kernel only
    /// checks with `nr_running > 1`). Charge `curr` first.
    pub fn check_preempt_tick(&self, curr: &SchedEntity) -> bool {
        let Some((left_key, _)) = self.tree.first() else {
            return false;
        };
        let ideal = self.sched_slice(curr);
        let ran = curr
            .sum_exec_runtime
            .wrapping_sub(curr.prev_sum_exec_runtime);
        if ran > ideal {
            return true;
        }
        if ran < self.tunables.sched_min_granularity_ns {
            return false;
        }
        let delta = curr.vruntime.wrapping_sub(left_key.vruntime()) as i64;
        delta > 0 && delta as u64 > ideal
    }

    /// Wakeup granularity in `se`'s virtual time: `wakeup_gran * 1024 /
    /// w_se` (fair.c: `wakeup_gran()`); light wakees need a bigger lead.
    #[inline]
    pub fn wakeup_gran(&self, se: &SchedEntity) -> u64 {
        calc_delta_fair(self.tunables.sched_wakeup_granularity_ns, &se.load)
    }

    fn wakeup_preempt_raw(&self, curr_vruntime: u64, se_vruntime: u64, se_weight: u64) -> i32 {
        let vdiff = curr_vruntime.wrapping_sub(se_vruntime) as i64;
        if vdiff <= 0 {
            return -1;
        }
        let gran = fair_delta(self.tunables.sched_wakeup_granularity_ns, se_weight);
        if vdiff as u64 > gran {
            1
        } else {
            0
        }
    }

    /// Should `se` run instead of an entity at `curr_vruntime`: -1 if `se`
    /// is not behind it, 1 if it is behind by more than
    /// [`wakeup_gran`](Self::wakeup_gran), else 0 (fair.c:
    /// `wakeup_preempt_entity()`).
    #[inline]
    pub fn wakeup_preempt_entity(&self, curr_vruntime: u64, se: &SchedEntity) -> i32 {
        self.wakeup_preempt_raw(curr_vruntime, se.vruntime, se.load.weight)
    }

    /// Whether the just-enqueued `wakee` should preempt the running `curr`
    /// (fair.c: `check_preempt_wakeup()`, §1.9): yes if `curr` is
    /// `SCHED_IDLE` and `wakee` is not; no if `wakee` is `SCHED_IDLE` or
    /// WAKEUP_PREEMPTION is off; else `wakeup_preempt_entity == 1`.
    ///
    /// The caller handles the kernel's other early exits (wakee is curr,
    /// resched already pending) and charges `curr` first.
    pub fn check_preempt_wakeup(&self, curr: &SchedEntity, wakee: &SchedEntity) -> bool {
        if curr.idle_policy && !wakee.idle_policy {
            return true;
        }
        if wakee.idle_policy || !self.tunables.wakeup_preemption {
            return false;
        }
        self.wakeup_preempt_entity(curr.vruntime, wakee) == 1
    }

    /// Makes `se.vruntime` relative to this (source) queue:
    /// `vruntime -= min_vruntime`, wrapping (pre-6.6 `dequeue_entity()`
    /// without DEQUEUE_SLEEP, `migrate_task_rq_fair()`).
    ///
    /// An entity in flight between queues holds this relative vruntime
    /// (possibly "negative", i.e. wrapped) until
    /// [`migrate_in`](Self::migrate_in) on the destination. Call it before
    /// [`dequeue_entity`](Self::dequeue_entity), as the kernel does, so that
    /// the entity's own removal cannot have advanced `min_vruntime` first
    /// (the tree entry is found by its key, so changing `se.vruntime` of a
    /// queued entity is safe here), or after
    /// [`pop_rightmost`](Self::pop_rightmost).
    #[inline]
    pub fn migrate_out(&self, se: &mut SchedEntity) {
        se.vruntime = se.vruntime.wrapping_sub(self.min_vruntime);
    }

    /// Makes a relative `se.vruntime` absolute on this (destination) queue:
    /// `vruntime += min_vruntime`, wrapping (pre-6.6 `enqueue_entity()` with
    /// ENQUEUE_MIGRATED). Then enqueue it ([`EnqueueFlags::NONE`] for a
    /// runnable entity, [`EnqueueFlags::WAKEUP`] for a waking one).
    #[inline]
    pub fn migrate_in(&self, se: &mut SchedEntity) {
        se.vruntime = se.vruntime.wrapping_add(self.min_vruntime);
    }

    /// Changes `se`'s nice value and policy, keeping this queue's load right
    /// whether `se` is queued, current or off the queue (fair.c:
    /// `reweight_entity()`). The vruntime is kept; charge a current `se`
    /// with [`update_curr`](Self::update_curr) first.
    pub fn reweight_entity(&mut self, se: &mut SchedEntity, nice: i32, idle_policy: bool) {
        let new = SchedEntity::weight_for(nice, idle_policy);
        let old_weight = se.load.weight;
        se.nice = nice;
        se.idle_policy = idle_policy;
        se.load = new;
        if !se.on_rq {
            return;
        }
        let accounted = if self.is_curr(se) {
            self.curr.as_mut().map(|c| &mut c.weight)
        } else {
            se.rq_key.and_then(|k| self.tree.weight_mut(k))
        };
        debug_assert!(
            accounted.is_some(),
            "reweight_entity: entity neither queued nor current here"
        );
        let old = match accounted {
            Some(w) => std::mem::replace(w, new.weight),
            None => return,
        };
        debug_assert_eq!(old, old_weight);
        self.load = self.load - old + new.weight;
    }

    /// Removes the rightmost (coldest: most virtual runtime) queued entity
    /// and un-accounts it; returns its vruntime and handle. For the load
    /// balancer, which takes from the cold end.
    ///
    /// The entity behind the handle still says `on_rq` (the queue cannot
    /// reach it): the caller sets `se.on_rq = false`, then either migrates
    /// it ([`migrate_out`](Self::migrate_out), and `migrate_in` +
    /// `enqueue_entity` on the destination) or, if it may not move after
    /// all, puts it back with `enqueue_entity(se, h, EnqueueFlags::NONE)`.
    /// Not [`put_prev_entity`](Self::put_prev_entity): that is for the
    /// current entity only. To check a task before taking it, walk
    /// [`iter`](Self::iter)`().rev()` and [`dequeue_entity`](Self::dequeue_entity)
    /// the chosen one instead.
    pub fn pop_rightmost(&mut self) -> Option<(u64, T)> {
        let entry = self.tree.pop_last()?;
        self.load -= entry.weight;
        self.update_min_vruntime();
        Some((entry.key.vruntime(), entry.task))
    }

    /// Queued entities in tree order (leftmost first) as `(vruntime,
    /// handle)`; `.rev()` walks from the coldest. Excludes the current one.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &T)> + '_ {
        self.tree.iter().map(|(k, _, t)| (k.vruntime(), t))
    }

    /// Removes and un-accounts every queued entity, yielding `(vruntime,
    /// handle)` in tree order (shutdown). The current entity, if any, stays
    /// accounted. As with [`pop_rightmost`](Self::pop_rightmost), the caller
    /// clears `on_rq` on the entities behind the handles.
    pub fn drain(&mut self) -> impl DoubleEndedIterator<Item = (u64, T)> {
        let tree = std::mem::take(&mut self.tree);
        let queued: u64 = tree.iter().map(|(_, w, _)| w).sum();
        self.load -= queued;
        tree.into_entries().map(|e| (e.key.vruntime(), e.task))
    }

    /// Panics unless the queue's invariants hold (tests only).
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        self.tree.assert_invariants();
        let queued: u64 = self.tree.iter().map(|(_, w, _)| w).sum();
        let curr = self.curr.map_or(0, |c| c.weight);
        assert_eq!(self.load, queued + curr, "load = queued + current");
        if let Some(c) = self.curr {
            assert!(!self.tree.contains(c.key), "current entity is in the tree");
        }
    }
}
