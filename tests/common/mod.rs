//! Helpers shared by the `runtime_*` integration tests.
//!
//! Each test file includes this module with `mod common;`; not every file
//! uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default task stack of the runtimes these tests build: the runtime's own
/// default (64 KiB). (Unoptimized frames are larger, but the suite must fit
/// the default in debug builds too: `spawn_and_pid_lookup_fit_the_default_stack`
/// pins that.)
pub const STACK: usize = 64 << 10;

/// A runtime builder with this suite's settings (see [`STACK`]).
pub fn builder(workers: usize) -> greenos::runtime::Builder {
    greenos::Runtime::builder()
        .workers(workers)
        .stack_size(STACK)
}

/// A runtime with `workers` pinned workers (the machine this suite is tuned
/// for has 2 CPUs; more workers than CPUs wrap around).
pub fn rt(workers: usize) -> greenos::Runtime {
    builder(workers).build().expect("building the runtime")
}

/// Aborts the whole test process if it is not disarmed (dropped) within
/// `limit`: a hung runtime cannot be cancelled from outside, and a stalled
/// CI job says less than a failed one. The message names the test.
pub struct Watchdog {
    done: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(name: &'static str, limit: Duration) -> Watchdog {
        let (tx, rx) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("watchdog-{name}"))
            .spawn(move || {
                if let Err(std_mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    eprintln!(
                        "watchdog: test `{name}` still running after {limit:?}; \
                         aborting the test process (a hang is a failure)"
                    );
                    std::process::abort();
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Disarm whether the test passed or is unwinding from a failed
        // assertion: only a hang should abort.
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a fresh OS thread and waits at most `limit` for it; panics
/// (failing the test) if it does not return in time, re-raises its panic if
/// it panics. For steps that may hang, such as dropping a runtime.
pub fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std_mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(std_mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(_) => unreachable!("the thread returned without reporting"),
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(std_mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?} (hang)")
        }
    }
}

/// Polls `cond` (on the calling OS thread) until it holds or `limit` runs
/// out; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Counts its own destruction in a shared counter.
pub struct DropCount(pub Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The OS CPUs this process may run on, lowest first (sched_getaffinity of
/// the calling thread, which the test harness leaves as the process's).
/// With `pin_workers(true)`, `Runtime::pinned_os_cpu(i)` says which one
/// worker `i` is pinned to (placement spreads them over cores).
pub fn allowed_os_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, and
    // sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The OS CPU the calling OS thread is running on.
pub fn os_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    assert!(c >= 0, "sched_getcpu: {}", std::io::Error::last_os_error());
    c as usize
}

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`, ...).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Number of memory mappings (VMAs) of this process.
pub fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A set of runtime CPUs.
pub fn cpus(list: &[usize]) -> greenos::CpuSet {
    list.iter().copied().collect()
}

/// The message of a panic payload, if it is a string.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}

/// Installs a SIGUSR1 handler that does nothing, with `SA_RESTART` when
/// `restart`: the calling task's interruptible waits are then interrupted
/// by a SIGUSR1 (EINTR), or go on.
pub fn catch_sigusr1(restart: bool) {
    use greenos::signal::{sigaction, SaFlags, SigAction, SigHandler, SIGUSR1};
    let flags = if restart {
        SaFlags::RESTART
    } else {
        SaFlags::NONE
    };
    sigaction(
        SIGUSR1,
        Some(SigAction::new(SigHandler::new(|_| {})).flags(flags)),
    )
    .unwrap();
}
