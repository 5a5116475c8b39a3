//! greenos-runtime: pinned worker threads act as CPUs, stackful coroutines
//! act as processes, and each CPU schedules its own run queue the way Linux
//! does.
//!
//! Layers, bottom up (the shared `DESIGN.md` is the map):
//! - [`sched`]: the pure scheduler core (no threads, no clock reads);
//! - `executor`: worker threads, coroutine switching, pooled stacks, timers,
//!   the monitor that raises `need_resched` and `need_service`;
//! - [`wait`]: the wait queue every blocking call goes through;
//! - [`sync`]: `Mutex`, `Condvar`, `Semaphore`, `mpsc` built on it;
//! - [`sim`]: the deterministic simulator that drives the same [`sched`]
//!   core on virtual CPUs of any synthetic topology.
//!
//! Users reach all of it through the `greenos` facade crate.
#![deny(unused_must_use)]

pub mod clock;
pub mod cpuset;
pub mod error;
mod executor;
pub mod metrics;
pub mod runtime;
pub mod sched;
pub mod signal;
pub mod sim;
pub mod sync;
pub mod task;
pub mod topology;
pub mod trace;
pub mod wait;

use std::fmt;

pub use cpuset::CpuSet;
pub use error::JoinError;
pub use metrics::{CpuMetrics, DomainMetrics, Metrics, TaskMetrics, TaskState};
pub use runtime::{Builder, Placement, Policy, Runtime};
pub use sched::SchedPolicy;
pub use task::{
    current, current_cpu, getgid, getpid, getpriority, getuid, maybe_yield, sched_getaffinity,
    sched_getscheduler, sched_setaffinity, sched_setscheduler, setpriority, sleep, spawn,
    try_current, yield_now, JoinHandle, Task,
};

/// A process id: names a green thread within its runtime. `Pid(0)` means the
/// caller in calls that take a pid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Pid(pub u64);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub use sched::domains::{DomainLevel, DomainsDebug, SchedDomain, SchedGroup, SdFlags};
pub use topology::{Topology, TopologyError};
