//! # greenos
//!
//! A userspace operating system for green threads. Pinned OS worker threads
//! act as CPUs; stackful coroutines act as processes. Each CPU runs its own
//! Linux-style scheduler, and processes talk through kernel-style IPC.
//!
//! ```
//! let rt = greenos::Runtime::builder().workers(2).build()?;
//! let sum = rt.block_on(|| {
//!     let handles: Vec<_> = (0..10u64).map(|i| greenos::spawn(move || i * i)).collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! });
//! assert_eq!(sum, 285);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! See the README's "Caveats" for the rules green threads impose (no
//! thread-blocking calls, no thread-local references across greenos calls,
//! `maybe_yield` in long loops, stack size).

pub use greenos_runtime::*;

/// Inter-process communication between green processes.
pub use greenos_ipc as ipc;
