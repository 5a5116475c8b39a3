//! Scheduling policies and the pure permission/validation rules of
//! `sched_setscheduler(2)`, `setpriority(2)` and spawn-time choices.
//!
//! # What this module owns
//!
//! - [`Policy`]: the fair class a whole runtime uses (CFS, EEVDF, O(1),
//!   O(N)).
//! - [`SchedPolicy`]: a task's policy (`SCHED_NORMAL`, `SCHED_BATCH`,
//!   `SCHED_IDLE`, `SCHED_FIFO`, `SCHED_RR`).
//! - [`SchedError`] and the checks: every function here is pure (no task
//!   table, no clock) and returns the errno Linux gives for the same
//!   request, so the API layer only looks the task up and applies.
//!
//! # Rules (Linux defaults, no `CAP_SYS_NICE`, `RLIMIT_NICE` = 0,
//! `RLIMIT_RTPRIO` = 0; syscalls.c: `__sched_setscheduler()`, sys.c:
//! `set_one_prio()`; reference §6)
//!
//! 1. RT priority outside `1..=99` → `EINVAL` (`sched_setscheduler(2)`).
//! 2. Nice outside `-20..=19` → `EINVAL`. (Linux's `setpriority(2)`
//!    clamps instead; greenos rejects, as `task::Builder::nice` always has,
//!    so that a typo is not silently turned into a different priority.)
//! 3. uid 0 may do anything valid.
//! 4. Another user's task → `EPERM` (`check_same_owner()` /
//!    `set_one_prio()`).
//! 5. `sched_setscheduler`: a non-root caller may not switch a task to an RT
//!    policy, nor raise an RT task's priority (`RLIMIT_RTPRIO` 0) → `EPERM`;
//!    it may keep or lower an RT priority, or go back to a fair policy; it
//!    may not leave `SCHED_IDLE` (`can_nice()` fails at `RLIMIT_NICE` 0).
//! 6. `setpriority`: a non-root caller may not lower the nice value below
//!    the current one → `EACCES`, which is what Linux's `setpriority(2)`
//!    returns for this (its `EPERM` is reserved for rule 4); spawning with a
//!    lower nice than the parent → `EPERM` (as `sched_setattr(2)`).

use std::fmt;
use std::io;

use super::weights::{MAX_NICE, MIN_NICE};

/// Lowest real-time priority (`sched_get_priority_min(SCHED_FIFO)`).
pub const MIN_RT_PRIO: u8 = 1;
/// Highest real-time priority (`sched_get_priority_max(SCHED_FIFO)`).
pub const MAX_RT_PRIO: u8 = 99;

/// The fair scheduling class a runtime uses on every CPU (the real-time
/// class always sits above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Policy {
    /// Completely Fair Scheduler (Linux 2.6.23–6.5).
    #[default]
    Cfs,
    /// Earliest Eligible Virtual Deadline First (Linux 6.6+).
    Eevdf,
    /// The O(1) scheduler (Linux 2.6.0–2.6.22).
    O1,
    /// The O(N) scheduler (Linux 2.4).
    ON,
}

impl Policy {
    /// All four, in historical order of the write-up (for benchmarks).
    pub const ALL: [Policy; 4] = [Policy::ON, Policy::O1, Policy::Cfs, Policy::Eevdf];

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Cfs => "CFS",
            Policy::Eevdf => "EEVDF",
            Policy::O1 => "O(1)",
            Policy::ON => "O(N)",
        }
    }
}

/// A task's scheduling policy (`sched_setscheduler(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum SchedPolicy {
    /// `SCHED_NORMAL` (`SCHED_OTHER`): the runtime's fair class, weighted by
    /// nice.
    #[default]
    Normal,
    /// `SCHED_BATCH`: fair, but never preempts on wakeup (and gets no
    /// interactivity bonus under O(1)).
    Batch,
    /// `SCHED_IDLE`: fair at weight 3, runs when nothing else wants to.
    Idle,
    /// `SCHED_FIFO`: real time, runs until it blocks or yields or a higher
    /// priority arrives. `priority` 1–99, higher is more urgent.
    Fifo {
        /// 1–99.
        priority: u8,
    },
    /// `SCHED_RR`: as FIFO, rotating among equal priorities every 100 ms.
    RoundRobin {
        /// 1–99.
        priority: u8,
    },
}

impl SchedPolicy {
    /// Whether this is a real-time policy.
    #[inline]
    pub fn is_rt(self) -> bool {
        matches!(
            self,
            SchedPolicy::Fifo { .. } | SchedPolicy::RoundRobin { .. }
        )
    }

    /// The RT priority (1–99), 0 for the fair policies.
    #[inline]
    pub fn rt_priority(self) -> u8 {
        match self {
            SchedPolicy::Fifo { priority } | SchedPolicy::RoundRobin { priority } => priority,
            _ => 0,
        }
    }

    /// The Linux policy number (`SCHED_NORMAL` 0, `FIFO` 1, `RR` 2,
    /// `BATCH` 3, `IDLE` 5).
    pub fn linux_number(self) -> i32 {
        match self {
            SchedPolicy::Normal => 0,
            SchedPolicy::Fifo { .. } => 1,
            SchedPolicy::RoundRobin { .. } => 2,
            SchedPolicy::Batch => 3,
            SchedPolicy::Idle => 5,
        }
    }

    /// `EINVAL` unless an RT priority is within 1–99.
    pub fn validate(self) -> Result<(), SchedError> {
        if self.is_rt() && !(MIN_RT_PRIO..=MAX_RT_PRIO).contains(&self.rt_priority()) {
            return Err(SchedError::InvalidArgument);
        }
        Ok(())
    }
}

/// Why a scheduling request was refused; converts into the `io::Error`
/// carrying Linux's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    /// `EINVAL`: a priority or nice value out of range.
    InvalidArgument,
    /// `EPERM`: not allowed for this caller (another user's task, RT without
    /// privilege, raising priority through `sched_setscheduler`).
    PermissionDenied,
    /// `EACCES`: `setpriority` lowering nice without privilege.
    AccessDenied,
    /// `ESRCH`: no such task.
    NoSuchProcess,
}

impl SchedError {
    /// The errno.
    pub fn errno(self) -> i32 {
        match self {
            SchedError::InvalidArgument => libc::EINVAL,
            SchedError::PermissionDenied => libc::EPERM,
            SchedError::AccessDenied => libc::EACCES,
            SchedError::NoSuchProcess => libc::ESRCH,
        }
    }
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            SchedError::InvalidArgument => "invalid scheduling priority or nice value",
            SchedError::PermissionDenied => "operation not permitted",
            SchedError::AccessDenied => "permission denied: lowering nice needs uid 0",
            SchedError::NoSuchProcess => "no such task",
        };
        f.write_str(s)
    }
}

impl std::error::Error for SchedError {}

impl From<SchedError> for io::Error {
    fn from(e: SchedError) -> io::Error {
        io::Error::from_raw_os_error(e.errno())
    }
}

/// `EINVAL` unless `nice` is within `-20..=19`.
pub fn validate_nice(nice: i32) -> Result<(), SchedError> {
    if (MIN_NICE..=MAX_NICE).contains(&nice) {
        Ok(())
    } else {
        Err(SchedError::InvalidArgument)
    }
}

/// The scheduling state of a target task that the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedTarget {
    /// The task's uid.
    pub uid: u32,
    /// Its current policy.
    pub policy: SchedPolicy,
    /// Its current nice value.
    pub nice: i32,
}

/// Whether `caller_uid` may change `target` to `new` with
/// `sched_setscheduler` (module rules 1, 3, 4, 5).
pub fn check_setscheduler(
    caller_uid: u32,
    target: &SchedTarget,
    new: SchedPolicy,
) -> Result<(), SchedError> {
    new.validate()?;
    if caller_uid == 0 {
        return Ok(());
    }
    if caller_uid != target.uid {
        return Err(SchedError::PermissionDenied);
    }
    if new.is_rt() {
        let same_policy = std::mem::discriminant(&new) == std::mem::discriminant(&target.policy);
        // RLIMIT_RTPRIO 0: no policy change into RT, no priority increase.
        if !same_policy || new.rt_priority() > target.policy.rt_priority() {
            return Err(SchedError::PermissionDenied);
        }
    }
    if target.policy == SchedPolicy::Idle && new != SchedPolicy::Idle {
        return Err(SchedError::PermissionDenied);
    }
    Ok(())
}

/// Whether `caller_uid` may set `target`'s nice to `nice` with
/// `setpriority` (module rules 2, 3, 4, 6).
pub fn check_setpriority(
    caller_uid: u32,
    target: &SchedTarget,
    nice: i32,
) -> Result<(), SchedError> {
    validate_nice(nice)?;
    if caller_uid == 0 {
        return Ok(());
    }
    if caller_uid != target.uid {
        return Err(SchedError::PermissionDenied);
    }
    if nice < target.nice {
        return Err(SchedError::AccessDenied);
    }
    Ok(())
}

/// Whether a task with uid `parent_uid` at `parent_nice` may spawn a child
/// with `policy` at `nice` (`task::Builder`): `EINVAL` for bad values,
/// `EPERM` for a non-root parent asking for RT or a lower nice.
pub fn check_spawn(
    parent_uid: u32,
    parent_nice: i32,
    policy: SchedPolicy,
    nice: i32,
) -> Result<(), SchedError> {
    validate_nice(nice)?;
    policy.validate()?;
    if parent_uid != 0 && (policy.is_rt() || nice < parent_nice) {
        return Err(SchedError::PermissionDenied);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uid: u32, policy: SchedPolicy, nice: i32) -> SchedTarget {
        SchedTarget { uid, policy, nice }
    }

    #[test]
    fn rt_priority_range_is_1_to_99() {
        for p in [0u8, 100, 255] {
            assert_eq!(
                SchedPolicy::Fifo { priority: p }.validate(),
                Err(SchedError::InvalidArgument)
            );
            assert_eq!(
                SchedPolicy::RoundRobin { priority: p }.validate(),
                Err(SchedError::InvalidArgument)
            );
        }
        for p in [1u8, 50, 99] {
            assert_eq!(SchedPolicy::Fifo { priority: p }.validate(), Ok(()));
        }
        let e: io::Error = SchedError::InvalidArgument.into();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn nice_range_is_minus_20_to_19() {
        assert_eq!(validate_nice(-21), Err(SchedError::InvalidArgument));
        assert_eq!(validate_nice(20), Err(SchedError::InvalidArgument));
        assert_eq!(validate_nice(-20), Ok(()));
        assert_eq!(validate_nice(19), Ok(()));
    }

    #[test]
    fn setscheduler_permissions_follow_linux_defaults() {
        let normal = t(1000, SchedPolicy::Normal, 0);
        let fifo10 = t(1000, SchedPolicy::Fifo { priority: 10 }, 0);
        let rt = SchedPolicy::Fifo { priority: 10 };
        // Root: anything valid, invalid still EINVAL.
        assert_eq!(check_setscheduler(0, &normal, rt), Ok(()));
        assert_eq!(
            check_setscheduler(0, &normal, SchedPolicy::Fifo { priority: 0 }),
            Err(SchedError::InvalidArgument)
        );
        // Non-root: no RT, no raise, may lower or leave RT, not others' tasks.
        assert_eq!(
            check_setscheduler(1000, &normal, rt),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_setscheduler(1000, &fifo10, SchedPolicy::Fifo { priority: 11 }),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_setscheduler(1000, &fifo10, SchedPolicy::RoundRobin { priority: 5 }),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_setscheduler(1000, &fifo10, SchedPolicy::Fifo { priority: 5 }),
            Ok(())
        );
        assert_eq!(
            check_setscheduler(1000, &fifo10, SchedPolicy::Normal),
            Ok(())
        );
        assert_eq!(
            check_setscheduler(1000, &normal, SchedPolicy::Batch),
            Ok(())
        );
        assert_eq!(check_setscheduler(1000, &normal, SchedPolicy::Idle), Ok(()));
        assert_eq!(
            check_setscheduler(1000, &t(1000, SchedPolicy::Idle, 0), SchedPolicy::Normal),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_setscheduler(1001, &normal, SchedPolicy::Batch),
            Err(SchedError::PermissionDenied)
        );
    }

    #[test]
    fn setpriority_permissions_follow_linux_defaults() {
        let n5 = t(1000, SchedPolicy::Normal, 5);
        assert_eq!(check_setpriority(1000, &n5, 10), Ok(()));
        assert_eq!(check_setpriority(1000, &n5, 5), Ok(()));
        assert_eq!(
            check_setpriority(1000, &n5, 4),
            Err(SchedError::AccessDenied)
        );
        assert_eq!(
            check_setpriority(1001, &n5, 10),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(check_setpriority(0, &n5, -20), Ok(()));
        assert_eq!(
            check_setpriority(0, &n5, 20),
            Err(SchedError::InvalidArgument)
        );
        let e: io::Error = SchedError::AccessDenied.into();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn spawn_permissions() {
        assert_eq!(check_spawn(1000, 0, SchedPolicy::Normal, 1), Ok(()));
        assert_eq!(
            check_spawn(1000, 0, SchedPolicy::Normal, -1),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_spawn(1000, 0, SchedPolicy::RoundRobin { priority: 1 }, 0),
            Err(SchedError::PermissionDenied)
        );
        assert_eq!(
            check_spawn(0, 0, SchedPolicy::RoundRobin { priority: 1 }, -5),
            Ok(())
        );
        assert_eq!(
            check_spawn(0, 0, SchedPolicy::RoundRobin { priority: 100 }, 0),
            Err(SchedError::InvalidArgument)
        );
    }
}
