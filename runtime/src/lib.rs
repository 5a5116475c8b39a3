//! greenos-runtime: pinned worker threads act as CPUs, stackful coroutines
//! act as processes, and each CPU schedules its own run queue the way Linux
//! does.
//!
//! Layers, bottom up (see `DESIGN.md` in the shared design notes):
//! - [`sched`]: the pure scheduler core (no threads, no clock reads);
//! - `executor`: worker threads, coroutine switching, stacks, timers, the
//!   monitor that raises `need_resched`;
//! - [`wait`]: the wait queue every blocking call goes through;
//! - [`sync`]: `Mutex`, `Condvar`, `Semaphore`, `mpsc` built on it.
#![deny(unused_must_use)]

pub mod sched;
