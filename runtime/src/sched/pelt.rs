//! PELT, per-entity load tracking (kernel/sched/pelt.c, pelt.h,
//! sched-pelt.h and the attach/detach helpers of fair.c), in exact integer
//! arithmetic so the executor and the simulator get the kernel's numbers.
//!
//! # What this module owns
//!
//! - [`SchedAvg`] (`struct sched_avg`): the three geometric series of one
//!   task or one run queue — `load`, `runnable` and `util` — as sums and
//!   averages, with the position in the current 1024 µs period.
//! - The update ([`SchedAvg::update`], `___update_load_sum` +
//!   `___update_load_avg`), the decay ([`decay_load`]), new-task
//!   initialisation ([`SchedAvg::new_task`], [`SchedAvg::post_init_util`]),
//!   attach / detach on migration ([`SchedAvg::attach`],
//!   [`SchedAvg::detach`]), the lock-free "removed" path
//!   ([`Removed`]) and `util_est` ([`UtilEst`]).
//!
//! # Units and constants (reference/scheduling.md §3.1)
//!
//! Time is ns in, and PELT counts in 1024 ns units (`delta >> 10`); a
//! period is 1024 units (≈ 1.048576 ms). The decay per period is `y` with
//! `y^32 = 1/2`; [`LOAD_AVG_MAX`] = 47742 is the largest sum the integer
//! arithmetic reaches. `util_avg` and `runnable_avg` of one task are in
//! `0..=1024` ([`SCHED_CAPACITY_SCALE`]); `load_avg` is weighted by the
//! entity's weight (1024 for nice 0).
//!
//! # Invariants
//!
//! - `period_contrib < 1024`; averages are recomputed only when a period
//!   boundary is crossed (as the kernel does), so a reading is at most one
//!   period stale.
//! - A run queue's sums are the sums of its entities' (attached) sums, up to
//!   truncation: `detach` clamps at zero and keeps `*_sum ≥ *_avg ×
//!   PELT_MIN_DIVIDER`, as `detach_entity_load_avg` does.
//! - Time never runs backwards: an update with `now` before
//!   `last_update_time` resynchronises the clock and changes nothing else.

/// Periods for the series to halve (`y^LOAD_AVG_PERIOD = 1/2`).
pub const LOAD_AVG_PERIOD: u64 = 32;
/// The maximum of the sum Σ 1024·yⁿ in the kernel's integer arithmetic.
pub const LOAD_AVG_MAX: u32 = 47742;
/// The smallest divider (`get_pelt_divider` at `period_contrib == 0`).
pub const PELT_MIN_DIVIDER: u32 = LOAD_AVG_MAX - 1024;
/// `SCHED_CAPACITY_SHIFT`: util and runnable sums are scaled by 2^10.
pub const SCHED_CAPACITY_SHIFT: u32 = 10;
/// `SCHED_CAPACITY_SCALE`: the capacity of one CPU, and a saturated util.
pub const SCHED_CAPACITY_SCALE: u64 = 1 << SCHED_CAPACITY_SHIFT;

/// `runnable_avg_yN_inv[n] = (2^32 − 1) · yⁿ` for n in 0..32 (sched-pelt.h,
/// generated as Documentation/scheduler/sched-pelt.c does).
const RUNNABLE_AVG_YN_INV: [u32; 32] = [
    0xffffffff, 0xfa83b2da, 0xf5257d14, 0xefe4b99a, 0xeac0c6e6, 0xe5b906e6, 0xe0ccdeeb, 0xdbfbb796,
    0xd744fcc9, 0xd2a81d91, 0xce248c14, 0xc9b9bd85, 0xc5672a10, 0xc12c4cc9, 0xbd08a39e, 0xb8fbaf46,
    0xb504f333, 0xb123f581, 0xad583ee9, 0xa9a15ab4, 0xa5fed6a9, 0xa2704302, 0x9ef5325f, 0x9b8d39b9,
    0x9837f050, 0x94f4efa8, 0x91c3d373, 0x8ea4398a, 0x8b95c1e3, 0x88980e80, 0x85aac367, 0x82cd8698,
];

/// `decay_load(val, n)`: `val · yⁿ`. Whole half-lives are shifts; the rest
/// is one multiply by the table. Past 63 half-lives everything is 0.
pub fn decay_load(val: u64, n: u64) -> u64 {
    if n > LOAD_AVG_PERIOD * 63 {
        return 0;
    }
    let mut val = val;
    let mut n = n;
    if n >= LOAD_AVG_PERIOD {
        val >>= n / LOAD_AVG_PERIOD;
        n %= LOAD_AVG_PERIOD;
    }
    // mul_u64_u32_shr(val, inv[n], 32), without overflow.
    ((u128::from(val) * u128::from(RUNNABLE_AVG_YN_INV[n as usize])) >> 32) as u64
}

/// `__accumulate_pelt_segments`: the contribution of `d1` units closing the
/// old period (decayed `periods` times), `periods − 1` full periods, and
/// `d3` units of the new one.
fn accumulate_pelt_segments(periods: u64, d1: u32, d3: u32) -> u32 {
    let c1 = decay_load(u64::from(d1), periods) as u32;
    let c2 = LOAD_AVG_MAX - decay_load(u64::from(LOAD_AVG_MAX), periods) as u32 - 1024;
    c1 + c2 + d3
}

/// `struct sched_avg`: the load, runnable and util series of one entity
/// or one run queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedAvg {
    /// Time (ns) up to which the sums are accounted, in whole 1024 ns units.
    pub last_update_time: u64,
    /// Σ decayed (queued-time contributions × load factor).
    pub load_sum: u64,
    /// Σ decayed runnable time × runnable count × 1024.
    pub runnable_sum: u64,
    /// Σ decayed running time × 1024.
    pub util_sum: u64,
    /// Units (0..1024) of the current period already in the sums.
    pub period_contrib: u32,
    /// `weight × load_sum / divider`: the weighted load.
    pub load_avg: u64,
    /// `runnable_sum / divider`: 1024 × the runnable fraction (summed
    /// over entities for a queue).
    pub runnable_avg: u64,
    /// `util_sum / divider`: 1024 × the running fraction.
    pub util_avg: u64,
}

impl SchedAvg {
    /// `get_pelt_divider`: the largest sum reachable at this position in
    /// the period.
    pub fn divider(&self) -> u64 {
        u64::from(PELT_MIN_DIVIDER + self.period_contrib)
    }

    /// `init_entity_runnable_average`: a new task starts as heavy as its
    /// weight (so that it is not ignored by the balancer until its history
    /// speaks), with no utilisation yet (see [`post_init_util`](Self::post_init_util)).
    pub fn new_task(weight: u64) -> SchedAvg {
        SchedAvg {
            load_avg: weight,
            ..SchedAvg::default()
        }
    }

    /// `post_init_entity_util_avg`: a forked task's util is the queue's util
    /// shared by weight, `rq.util_avg × weight / (rq.load_avg + 1)`, capped
    /// at half the queue's spare capacity; half the spare capacity when the
    /// queue has no util. Runnable starts equal to util. (A series of forks on
    /// an empty CPU gets 512, 256, 128, ...)
    pub fn post_init_util(&mut self, rq: &SchedAvg, weight: u64, capacity: u64) {
        let cap = (capacity as i64 - rq.util_avg as i64) / 2;
        if cap > 0 {
            if rq.util_avg != 0 {
                let u = rq.util_avg * weight / (rq.load_avg + 1);
                self.util_avg = u.min(cap as u64);
            } else {
                self.util_avg = cap as u64;
            }
        }
        self.runnable_avg = self.util_avg;
    }

    /// `___update_load_sum` then, if a period boundary was crossed,
    /// `___update_load_avg`. For a task entity: `load` = 1 while queued
    /// (0 while sleeping), `runnable` = 1 while queued, `running` = 1 while
    /// on the CPU, `weight` its weight. For a run queue: `load` = the
    /// queue's total weight, `runnable` = tasks queued, `running` = 1 if a
    /// task runs, `weight` = 1. Returns whether the averages changed.
    #[inline]
    pub fn update(
        &mut self,
        now: u64,
        load: u64,
        runnable: u64,
        running: u64,
        weight: u64,
    ) -> bool {
        // The common case on a switch path: less than one 1024 ns unit
        // since the last update, nothing to do (kept inline; the rest not).
        if now.wrapping_sub(self.last_update_time) < 1024 {
            return false;
        }
        self.update_slow(now, load, runnable, running, weight)
    }

    #[inline(never)]
    fn update_slow(
        &mut self,
        now: u64,
        load: u64,
        runnable: u64,
        running: u64,
        weight: u64,
    ) -> bool {
        let Some(delta) = now.checked_sub(self.last_update_time) else {
            // The clock went backwards (a migrated entity aligned to an
            // older queue clock): resynchronise, as the kernel does.
            self.last_update_time = now;
            return false;
        };
        let delta = delta >> 10;
        if delta == 0 {
            return false;
        }
        self.last_update_time += delta << 10;
        let (runnable, running) = if load == 0 {
            (0, 0)
        } else {
            (runnable, running)
        };
        if self.accumulate_sum(delta, load, runnable, running) == 0 {
            return false;
        }
        let divider = self.divider();
        self.load_avg = weight * self.load_sum / divider;
        self.runnable_avg = self.runnable_sum / divider;
        self.util_avg = self.util_sum / divider;
        true
    }

    /// `accumulate_sum`: adds `delta` units; returns periods crossed.
    fn accumulate_sum(&mut self, delta: u64, load: u64, runnable: u64, running: u64) -> u64 {
        // With no boundary crossed delta < 1024 and the contribution is delta.
        let mut contrib = delta as u32;
        let d = delta + u64::from(self.period_contrib);
        let periods = d / 1024;
        let rest = (d % 1024) as u32;
        if periods > 0 {
            self.load_sum = decay_load(self.load_sum, periods);
            self.runnable_sum = decay_load(self.runnable_sum, periods);
            self.util_sum = decay_load(self.util_sum, periods);
            if load != 0 {
                // Step 4 of §3.2: the three segments. (Without load the
                // kernel skips them: nothing is added below.)
                contrib = accumulate_pelt_segments(periods, 1024 - self.period_contrib, rest);
            }
        }
        self.period_contrib = if periods > 0 { rest } else { d as u32 };
        let contrib = u64::from(contrib);
        if load != 0 {
            self.load_sum += load * contrib;
        }
        if runnable != 0 {
            self.runnable_sum += (runnable * contrib) << SCHED_CAPACITY_SHIFT;
        }
        if running != 0 {
            self.util_sum += contrib << SCHED_CAPACITY_SHIFT;
        }
        periods
    }

    /// `attach_entity_load_avg`: `se` (with weight `weight`) joins this
    /// queue. It is aligned to the queue's PELT window, its sums rebuilt
    /// from its averages, and its averages and sums added to the queue's.
    pub fn attach(&mut self, se: &mut SchedAvg, weight: u64) {
        let divider = self.divider();
        se.last_update_time = self.last_update_time;
        se.period_contrib = self.period_contrib;
        se.util_sum = se.util_avg * divider;
        se.runnable_sum = se.runnable_avg * divider;
        let load_sum = se.load_avg * divider;
        // The entity's load_sum is unweighted: divide the weight back out.
        se.load_sum = if weight < load_sum {
            load_sum / weight.max(1)
        } else {
            1
        };
        self.load_avg += se.load_avg;
        self.load_sum += weight * se.load_sum;
        self.util_avg += se.util_avg;
        self.util_sum += se.util_sum;
        self.runnable_avg += se.runnable_avg;
        self.runnable_sum += se.runnable_sum;
    }

    /// `detach_entity_load_avg`: `se` leaves this queue (migration away).
    /// Subtractions clamp at zero, and each sum stays at least its average
    /// × `PELT_MIN_DIVIDER` (the kernel's guard against truncation drift).
    pub fn detach(&mut self, se: &SchedAvg, weight: u64) {
        self.subtract(
            se.load_avg,
            weight * se.load_sum,
            se.util_avg,
            se.util_sum,
            se.runnable_avg,
            se.runnable_sum,
        );
    }

    /// Applies what [`Removed`] gathered for this queue
    /// (`update_cfs_rq_load_avg`'s `removed` block).
    pub fn apply_removed(&mut self, removed: &mut Removed) {
        if *removed == Removed::default() {
            return;
        }
        let divider = self.divider();
        let r = std::mem::take(removed);
        self.subtract(
            r.load_avg,
            r.load_avg * divider,
            r.util_avg,
            r.util_avg * divider,
            r.runnable_avg,
            r.runnable_avg * divider,
        );
    }

    fn subtract(
        &mut self,
        load_avg: u64,
        load_sum: u64,
        util_avg: u64,
        util_sum: u64,
        runnable_avg: u64,
        runnable_sum: u64,
    ) {
        let min = u64::from(PELT_MIN_DIVIDER);
        self.load_avg = self.load_avg.saturating_sub(load_avg);
        self.load_sum = self
            .load_sum
            .saturating_sub(load_sum)
            .max(self.load_avg * min);
        self.util_avg = self.util_avg.saturating_sub(util_avg);
        self.util_sum = self
            .util_sum
            .saturating_sub(util_sum)
            .max(self.util_avg * min);
        self.runnable_avg = self.runnable_avg.saturating_sub(runnable_avg);
        self.runnable_sum = self
            .runnable_sum
            .saturating_sub(runnable_sum)
            .max(self.runnable_avg * min);
    }
}

/// `cfs_rq->removed`: averages of entities that left a queue without its
/// lock (a wakeup migration); the queue subtracts them at its next update
/// ([`SchedAvg::apply_removed`]). The driver keeps it behind whatever lock
/// its remote writers share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Σ removed `load_avg`.
    pub load_avg: u64,
    /// Σ removed `util_avg`.
    pub util_avg: u64,
    /// Σ removed `runnable_avg`.
    pub runnable_avg: u64,
}

impl Removed {
    /// `remove_entity_load_avg`: records `se` (already synced to the queue's
    /// last update) as gone.
    pub fn add(&mut self, se: &SchedAvg) {
        self.load_avg += se.load_avg;
        self.util_avg += se.util_avg;
        self.runnable_avg += se.runnable_avg;
    }
}

/// `UTIL_EST_MARGIN`: 1% of capacity; smaller changes are not recorded.
pub const UTIL_EST_MARGIN: u64 = SCHED_CAPACITY_SCALE / 100;
/// `UTIL_EST_WEIGHT_SHIFT`: the EWMA moves down by a quarter of the gap.
pub const UTIL_EST_WEIGHT_SHIFT: u32 = 2;

/// `util_est`: a task's utilisation remembered across sleeps (PELT decays
/// while it sleeps; this does not), so that a periodic task is placed by
/// what it needs when it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtilEst {
    /// The exponentially weighted moving average of util at dequeue.
    pub ewma: u64,
}

impl UtilEst {
    /// `util_est_update` at a dequeue to sleep, with the task's `util_avg`
    /// and `runnable_avg` then and the CPU's `capacity`. Ramps up at once,
    /// decays by a quarter of the gap; skips changes under 1% of capacity,
    /// samples of a task that did not get the CPU it wanted (util + margin <
    /// runnable, 6.8+) and samples above the capacity.
    pub fn update(&mut self, util_avg: u64, runnable_avg: u64, capacity: u64) {
        let s = util_avg;
        if s.abs_diff(self.ewma) < UTIL_EST_MARGIN {
            return;
        }
        if s > self.ewma {
            self.ewma = s;
            return;
        }
        if s + UTIL_EST_MARGIN < runnable_avg || s > capacity {
            return;
        }
        // ewma += (s - ewma) / 4, with s < ewma.
        self.ewma -= (self.ewma - s) >> UTIL_EST_WEIGHT_SHIFT;
    }

    /// `task_util_est`: what placement uses, `max(util_avg, ewma)`.
    pub fn estimate(&self, util_avg: u64) -> u64 {
        util_avg.max(self.ewma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD_NS: u64 = 1024 * 1024;

    fn close(got: u64, want: u64, what: &str) {
        assert!(
            got.abs_diff(want) <= 1,
            "{what}: got {got}, want {want} ± 1"
        );
    }

    /// The table is (2^32 − 1)·yⁿ with y^32 = 1/2, and two known entries.
    #[test]
    fn decay_table_and_half_life() {
        assert_eq!(RUNNABLE_AVG_YN_INV[1], 0xfa83b2da);
        assert_eq!(RUNNABLE_AVG_YN_INV[16], 0xb504f333, "2^32/sqrt(2)");
        let y = 0.5f64.powf(1.0 / 32.0);
        for (n, &v) in RUNNABLE_AVG_YN_INV.iter().enumerate() {
            let want = (u32::MAX as f64 * y.powi(n as i32)) as u32;
            assert!(v.abs_diff(want) <= 1, "entry {n}");
        }
        // inv[0] is 2^32 − 1, so even a whole half-life truncates by one,
        // exactly as in the kernel.
        assert_eq!(decay_load(1024, 32), 511);
        assert_eq!(decay_load(1024, 64), 255);
        assert_eq!(decay_load(1024, 1), 1002);
        assert_eq!(decay_load(u64::MAX, 32 * 63 + 1), 0);
        // The analytic sum is 47788; the integer one is LOAD_AVG_MAX.
        let mut sum = 0u64;
        for _ in 0..2000 {
            sum = decay_load(sum, 1) + 1024;
        }
        assert!(sum.abs_diff(u64::from(LOAD_AVG_MAX)) <= 16, "{sum}");
    }

    /// A task running all the time, updated at every period boundary
    /// (reference §3.6 test vectors).
    #[test]
    fn always_running_ramps_like_the_kernel() {
        let mut sa = SchedAvg::default();
        let util = [
            (1, 21),
            (2, 43),
            (4, 85),
            (8, 163),
            (16, 300),
            (32, 512),
            (48, 662),
            (64, 768),
            (100, 907),
            (128, 960),
            (200, 1011),
            (256, 1020),
            (345, 1024),
        ];
        let load = [(8, 162), (200, 1010), (345, 1023)];
        let mut n = 0;
        for &(until, want) in &util {
            while n < until {
                n += 1;
                sa.update(n * PERIOD_NS, 1, 1, 1, 1024);
            }
            close(sa.util_avg, want, &format!("util_avg after {n} periods"));
            close(
                sa.runnable_avg,
                want,
                &format!("runnable_avg after {n} periods"),
            );
            if let Some(&(_, l)) = load.iter().find(|(p, _)| *p == n) {
                close(sa.load_avg, l, &format!("load_avg after {n} periods"));
            }
            if n == 32 {
                assert_eq!(
                    sa.util_sum, 23_941_816,
                    "stepwise util_sum after 32 periods"
                );
            }
        }
    }

    /// One 32-period update truncates differently but lands on 512 too.
    #[test]
    fn one_long_update_matches_stepwise_within_one() {
        let mut sa = SchedAvg::default();
        sa.update(32 * PERIOD_NS, 1, 1, 1, 1024);
        assert_eq!(sa.util_sum, 23_919_616);
        close(sa.util_avg, 512, "util_avg");
    }

    /// Sleeping from saturation: 1002, 861, 724, 512, 256, 64 after 1, 8,
    /// 16, 32, 64, 128 periods.
    #[test]
    fn decay_while_sleeping() {
        let mut sa = SchedAvg::default();
        let mut t = 0;
        for _ in 0..1000 {
            t += PERIOD_NS;
            sa.update(t, 1, 1, 1, 1024);
        }
        close(sa.util_avg, 1024, "saturated");
        let mut n = 0;
        for (until, want) in [
            (1, 1002),
            (8, 861),
            (16, 724),
            (32, 512),
            (64, 256),
            (128, 64),
        ] {
            while n < until {
                n += 1;
                t += PERIOD_NS;
                sa.update(t, 0, 0, 0, 1024);
            }
            close(
                sa.util_avg,
                want,
                &format!("util_avg after {n} sleeping periods"),
            );
            close(
                sa.load_avg,
                want,
                &format!("load_avg after {n} sleeping periods"),
            );
        }
    }

    /// Running the first half of each period: 256 @32, 384 @64, 505 @200,
    /// 512 @400 (sampled at the boundaries).
    #[test]
    fn half_duty_cycle() {
        let mut sa = SchedAvg::default();
        let mut n = 0u64;
        for (until, want) in [(32, 256), (64, 384), (200, 505), (400, 512)] {
            while n < until {
                sa.update(n * PERIOD_NS + PERIOD_NS / 2, 1, 1, 1, 1024);
                // Asleep for the second half: queued no more.
                n += 1;
                sa.update(n * PERIOD_NS, 0, 0, 0, 1024);
            }
            close(sa.util_avg, want, &format!("util_avg after {n} periods"));
        }
    }

    #[test]
    fn sub_unit_and_backwards_updates_change_nothing() {
        let mut sa = SchedAvg::default();
        sa.update(10 * PERIOD_NS, 1, 1, 1, 1024);
        let before = sa;
        assert!(!sa.update(10 * PERIOD_NS + 1000, 1, 1, 1, 1024));
        assert_eq!(sa, before, "under 1024 ns is not a unit");
        assert!(!sa.update(5, 1, 1, 1, 1024));
        assert_eq!(sa.last_update_time, 5, "backwards: resync only");
        assert_eq!(sa.util_sum, before.util_sum);
    }

    /// Forks on an empty CPU get half the spare capacity each time:
    /// 512, 256, 128, ... and the queue sums 512, 768, 896, 960.
    #[test]
    fn fork_series_on_an_empty_cpu() {
        let mut rq = SchedAvg::default();
        let mut queue = Vec::new();
        for want_rq in [512, 768, 896, 960] {
            let mut se = SchedAvg::new_task(1024);
            assert_eq!(se.load_avg, 1024);
            se.post_init_util(&rq, 1024, SCHED_CAPACITY_SCALE);
            rq.attach(&mut se, 1024);
            queue.push(se);
            assert_eq!(rq.util_avg, want_rq);
        }
        let utils: Vec<u64> = queue.iter().map(|s| s.util_avg).collect();
        assert_eq!(utils, vec![512, 256, 128, 64]);
        assert_eq!(rq.load_avg, 4 * 1024);
    }

    /// Attach then detach leaves a queue where it was; detach clamps at 0.
    #[test]
    fn attach_detach_round_trip() {
        let mut rq = SchedAvg::default();
        let mut t = 0;
        for _ in 0..100 {
            t += PERIOD_NS;
            rq.update(t, 1024, 1, 1, 1);
        }
        let base = rq;
        let mut se = SchedAvg {
            load_avg: 300,
            util_avg: 200,
            runnable_avg: 250,
            ..SchedAvg::default()
        };
        rq.attach(&mut se, 1024);
        assert_eq!(
            se.last_update_time, rq.last_update_time,
            "aligned to the queue"
        );
        assert_eq!(rq.util_avg, base.util_avg + 200);
        assert_eq!(rq.load_avg, base.load_avg + 300);
        rq.detach(&se, 1024);
        assert_eq!(rq.util_avg, base.util_avg);
        assert_eq!(rq.load_avg, base.load_avg);
        assert_eq!(rq.runnable_avg, base.runnable_avg);
        let mut empty = SchedAvg::default();
        empty.detach(&se, 1024);
        assert_eq!((empty.load_avg, empty.util_avg, empty.util_sum), (0, 0, 0));
        // The removed path: gather remotely, apply at the next update.
        let mut removed = Removed::default();
        let mut rq2 = base;
        let mut se2 = se;
        rq2.attach(&mut se2, 1024);
        removed.add(&se2);
        rq2.apply_removed(&mut removed);
        assert_eq!(removed, Removed::default());
        assert_eq!(rq2.util_avg, base.util_avg);
    }

    #[test]
    fn util_est_ramps_up_at_once_and_down_slowly() {
        let mut e = UtilEst::default();
        e.update(400, 400, 1024);
        assert_eq!(e.ewma, 400);
        e.update(405, 405, 1024);
        assert_eq!(e.ewma, 400, "under the 1% margin");
        e.update(200, 200, 1024);
        assert_eq!(e.ewma, 350, "a quarter of the way down");
        e.update(100, 300, 1024);
        assert_eq!(
            e.ewma, 350,
            "starved sample (util + margin < runnable) skipped"
        );
        assert_eq!(e.estimate(100), 350);
        assert_eq!(e.estimate(600), 600);
    }
}
