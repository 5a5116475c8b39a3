//! Nice levels, load weights and the weighted time conversion used by every
//! fair scheduler (reference §1.1, §1.2).
//!
//! The tables are Linux's `sched_prio_to_weight[]` and
//! `sched_prio_to_wmult[]` (kernel/sched/core.c), in their unscaled form
//! (`scale_load_down`; 64-bit kernels keep weights shifted left by
//! `SCHED_FIXEDPOINT_SHIFT = 10` internally, which we do not need).
//!
//! Design rule from the comment above the table in core.c: one nice step is
//! about 10 % of CPU, so adjacent weights differ by a factor of about 1.25.
//! Two tasks at nice 0 and nice 1 share a CPU 1024/(1024+820) = 55.5 % to
//! 44.5 %.
//!
//! Arithmetic: the kernel turns `delta * w / lw` into a multiply and shift
//! with a cached `2^32 / lw` (`__calc_delta`). We divide exactly instead
//! (`u64` when the product fits, `u128` otherwise), as the reference allows:
//! results are the exact floor, deterministic, and independent of the cached
//! inverse. `inv_weight` is still carried for callers that want the
//! kernel's form.

/// Weight of a nice-0 entity; the unit of virtual time (`NICE_0_LOAD`).
pub const NICE_0_LOAD: u64 = 1024;

/// Lowest (most favoured) nice value.
pub const MIN_NICE: i32 = -20;

/// Highest (least favoured) nice value.
pub const MAX_NICE: i32 = 19;

/// Weight of a `SCHED_IDLE` entity, whatever its nice value (sched.h:
/// `WEIGHT_IDLEPRIO`).
pub const WEIGHT_IDLEPRIO: u64 = 3;

/// `2^32 / WEIGHT_IDLEPRIO` (sched.h: `WMULT_IDLEPRIO`).
pub const WMULT_IDLEPRIO: u32 = 1_431_655_765;

/// Nice → weight, indexed by `nice + 20` (core.c: `sched_prio_to_weight[]`).
#[rustfmt::skip]
pub static SCHED_PRIO_TO_WEIGHT: [u64; 40] = [
    /* -20 */ 88761, 71755, 56483, 46273, 36291,
    /* -15 */ 29154, 23254, 18705, 14949, 11916,
    /* -10 */ 9548, 7620, 6100, 4904, 3906,
    /*  -5 */ 3121, 2501, 1991, 1586, 1277,
    /*   0 */ 1024, 820, 655, 526, 423,
    /*   5 */ 335, 272, 215, 172, 137,
    /*  10 */ 110, 87, 70, 56, 45,
    /*  15 */ 36, 29, 23, 18, 15,
];

/// Nice → `2^32 / weight` (rounded as the kernel rounds), indexed by
/// `nice + 20` (core.c: `sched_prio_to_wmult[]`).
#[rustfmt::skip]
pub static SCHED_PRIO_TO_WMULT: [u32; 40] = [
    /* -20 */ 48388, 59856, 76040, 92818, 118348,
    /* -15 */ 147320, 184698, 229616, 287308, 360437,
    /* -10 */ 449829, 563644, 704093, 875809, 1099582,
    /*  -5 */ 1376151, 1717300, 2157191, 2708050, 3363326,
    /*   0 */ 4194304, 5237765, 6557202, 8165337, 10153587,
    /*   5 */ 12820798, 15790321, 19976592, 24970740, 31350126,
    /*  10 */ 39045157, 49367440, 61356676, 76695844, 95443717,
    /*  15 */ 119304647, 148102320, 186737708, 238609294, 286331153,
];

/// A load weight and its cached inverse (kernel: `struct load_weight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadWeight {
    /// Unscaled weight (1024 at nice 0).
    pub weight: u64,
    /// `2^32 / weight`, the kernel's multiply-shift inverse.
    pub inv_weight: u32,
}

impl LoadWeight {
    /// The weight of a `SCHED_NORMAL`/`SCHED_BATCH` entity at `nice`.
    ///
    /// Callers validate `nice` (the syscall layer clamps or rejects, as
    /// `setpriority(2)` does); this is checked with a `debug_assert!`.
    ///
    /// # Panics
    ///
    /// If `nice` is outside `MIN_NICE..=MAX_NICE` (the table index is out
    /// of bounds).
    pub fn from_nice(nice: i32) -> LoadWeight {
        debug_assert!(
            (MIN_NICE..=MAX_NICE).contains(&nice),
            "nice {nice} outside {MIN_NICE}..={MAX_NICE}"
        );
        let idx = (nice - MIN_NICE) as usize;
        LoadWeight {
            weight: SCHED_PRIO_TO_WEIGHT[idx],
            inv_weight: SCHED_PRIO_TO_WMULT[idx],
        }
    }

    /// The weight of a `SCHED_IDLE` entity (3, `WEIGHT_IDLEPRIO`).
    pub const fn idle() -> LoadWeight {
        LoadWeight {
            weight: WEIGHT_IDLEPRIO,
            inv_weight: WMULT_IDLEPRIO,
        }
    }
}

/// `a * b / c`, exact floor, saturating at `u64::MAX`; `u64` arithmetic when
/// the product fits (the common case: `a` below about 2^54 for `b <= 1024`),
/// `u128` otherwise.
#[inline]
pub(crate) fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    debug_assert!(c != 0, "division by a zero weight");
    match a.checked_mul(b) {
        Some(p) => p / c,
        None => u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX),
    }
}

/// Wall-clock `delta_exec` ns → virtual ns of an entity with weight `lw`:
/// `delta * NICE_0_LOAD / lw.weight` (fair.c: `calc_delta_fair()`).
///
/// Identity for a nice-0 entity. A nice -5 entity (3121) ages about
/// 0.33 v-ns per ns, a nice 19 entity (15) about 68.
#[inline]
pub fn calc_delta_fair(delta_exec: u64, lw: &LoadWeight) -> u64 {
    fair_delta(delta_exec, lw.weight)
}

/// [`calc_delta_fair`] for a bare weight (the run queue stores weights, not
/// [`LoadWeight`]s, in its tree entries).
#[inline]
pub(crate) fn fair_delta(delta_exec: u64, weight: u64) -> u64 {
    if weight == NICE_0_LOAD {
        delta_exec
    } else {
        mul_div(delta_exec, NICE_0_LOAD, weight)
    }
}

/// `delta * weight / lw.weight`, exact floor, saturating at `u64::MAX`
/// (fair.c: `__calc_delta()`, without its multiply-shift approximation).
#[inline]
pub fn calc_delta(delta: u64, weight: u64, lw: &LoadWeight) -> u64 {
    if weight == lw.weight {
        delta
    } else {
        mul_div(delta, weight, lw.weight)
    }
}
