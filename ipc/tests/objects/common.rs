//! Shared helpers.

use std::io;
use std::time::Duration;

use greenos_runtime::Runtime;

/// A watchdog: long enough that only a hang (a lost wakeup) reaches it.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// A two-CPU runtime.
pub fn rt() -> Runtime {
    Runtime::builder().workers(2).build().expect("runtime")
}

/// The errno inside an io::Error result.
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an errno")
}

/// Spins (yielding) until `f` holds; panics after the watchdog.
pub fn wait_for(mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WATCHDOG, "condition never became true");
        if greenos_runtime::try_current().is_some() {
            greenos_runtime::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A unique System V key for this test process and call site.
pub fn key(n: i32) -> greenos_ipc::Key {
    greenos_ipc::Key(0x5000_0000 | ((std::process::id() as i32 & 0xfff) << 12) | n)
}

/// Whether the test process runs as uid 0. Tests that create tasks with
/// other credentials (only uid 0 may) or rely on uid 0 bypassing checks
/// return early otherwise, saying so.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{test}: skipped, needs uid 0 to create tasks with other credentials");
    }
    root
}
