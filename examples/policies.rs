//! One mixed workload under each fair policy (CFS, EEVDF, O(1), O(N)), on
//! one worker CPU:
//!
//! - four CPU-bound tasks at nice −5, 0, 5, 10 (they call `maybe_yield`
//!   between small units of work), and
//! - one interactive task that sleeps 9 ms, then runs 1 ms, in a loop.
//!
//! Printed per policy: each CPU-bound task's share of the CPU-bound time
//! (the runtime's own accounting, `Task::cpu_time`) next to its weight share
//! (what CFS and EEVDF aim for), the interactive task's latency p50/p99
//! measured two ways — from the end of its 9 ms sleep to running again
//! (what the task sees: the timer's delivery plus the wait in the run
//! queue) and, from the runtime's trace, from its wakeup to its switch-in
//! (the scheduler's part alone, `perf sched latency`'s measure) — its CPU
//! time, and the CPU's context switches. The `EEVDF*` row repeats EEVDF with the
//! interactive task requesting a 0.1 ms slice (`Builder::slice`).
//!
//! The `Linux` rows run the same workload on OS threads pinned to one CPU
//! under the kernel's own fair scheduler (EEVDF since 6.6), `Linux*` with
//! the interactive thread requesting a 0.1 ms slice through
//! `sched_setattr(sched_runtime)` (6.12+): the reference the greenos EEVDF
//! rows can be held against. Setting nice −5 needs `CAP_SYS_NICE`; without
//! it (or where `sched_setattr` refuses) the row says why it was skipped.
//! The wakeup → switch-in columns need the runtime's trace and stay empty
//! there; switches are the threads' voluntary plus involuntary context
//! switches (`getrusage(RUSAGE_THREAD)`).
//!
//! Run: `cargo run --release --example policies [-- SECONDS [SLEEP_US
//! RUN_US]]` (default 3 s per policy and the 9 ms / 1 ms cycle above;
//! `-- 2 500 50` runs a task that sleeps 0.5 ms and runs 50 µs, within
//! its slice). Wall-clock measurements on a shared machine: other load
//! shows up as latency and is charged to whichever task was running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::task::Builder;
use greenos::trace::TraceConfig;
use greenos::Policy;

const NICES: [i32; 4] = [-5, 0, 5, 10];

struct Outcome {
    hog_ns: Vec<u64>,
    lat_us: Vec<f64>,
    interactive_ns: u64,
    /// Wakeup (timer fired) to switch-in of the interactive task, from the
    /// runtime's trace.
    wake_us: Vec<f64>,
    switches: u64,
}

/// The interactive task's cycle: it sleeps `sleep`, then runs `burst`.
#[derive(Clone, Copy)]
struct Cycle {
    sleep: Duration,
    burst: Duration,
}

fn run(policy: Policy, slice: Option<Duration>, wall: Duration, cycle: Cycle) -> Outcome {
    let rt = greenos::Runtime::builder()
        .workers(1)
        .policy(policy)
        .trace(TraceConfig::new(1 << 20))
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let (hog_ns, lat_us, interactive_ns, ipid) = rt.block_on(|| {
        let hogs: Vec<_> = NICES
            .iter()
            .map(|&nice| {
                let stop = stop.clone();
                Builder::new()
                    .name(format!("hog{nice}"))
                    .nice(nice)
                    .spawn(move || {
                        let mut x = 1u64;
                        while !stop.load(Ordering::Relaxed) {
                            for i in 0..256u64 {
                                x = std::hint::black_box(x.wrapping_mul(6364136223846793005) ^ i);
                            }
                            greenos::maybe_yield();
                        }
                        x
                    })
                    .expect("spawn")
            })
            .collect();
        let s = stop.clone();
        let mut ib = Builder::new().name("interactive");
        if let Some(sl) = slice {
            ib = ib.slice(sl);
        }
        let interactive = ib
            .spawn(move || {
                let mut lat = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    let due = Instant::now() + cycle.sleep;
                    greenos::sleep(cycle.sleep);
                    lat.push(Instant::now().saturating_duration_since(due).as_secs_f64() * 1e6);
                    let until = Instant::now() + cycle.burst;
                    while Instant::now() < until {
                        greenos::maybe_yield();
                    }
                }
                lat
            })
            .expect("spawn");
        greenos::sleep(wall);
        stop.store(true, Ordering::Relaxed);
        let itask = interactive.task().clone();
        let lat = interactive.join().expect("interactive");
        let hog_ns = hogs
            .into_iter()
            .map(|h| {
                let t = h.task().clone();
                h.join().expect("hog");
                t.cpu_time().as_nanos() as u64
            })
            .collect::<Vec<_>>();
        (hog_ns, lat, itask.cpu_time().as_nanos() as u64, itask.pid())
    });
    let tr = rt.trace().expect("tracing on");
    let wake_us = tr
        .wakeup_latencies()
        .into_iter()
        .filter(|w| w.pid == ipid.0)
        .map(|w| w.latency_ns as f64 / 1e3)
        .collect();
    let switches = rt.metrics().cpus.iter().map(|c| c.switches).sum();
    Outcome {
        hog_ns,
        lat_us,
        interactive_ns,
        wake_us,
        switches,
    }
}

/// The kernel's side: the same workload on OS threads pinned to one CPU
/// (the last one this process may use), the interactive thread optionally
/// requesting `slice` through `sched_setattr`. `Err` says why it could not
/// run.
fn run_kernel(slice: Option<Duration>, wall: Duration, cycle: Cycle) -> Result<Outcome, String> {
    let cpu = kernel::last_allowed_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    // Each thread reports (its CPU time, its context switches) or an error.
    let hogs: Vec<_> = NICES
        .iter()
        .map(|&nice| {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                kernel::pin(cpu)?;
                kernel::set_nice(nice)?;
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..256u64 {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005) ^ i);
                    }
                }
                std::hint::black_box(x);
                Ok((kernel::thread_cpu_ns(), kernel::thread_switches()))
            })
        })
        .collect();
    let s = stop.clone();
    let interactive = std::thread::spawn(move || -> Result<(Vec<f64>, u64, u64), String> {
        kernel::pin(cpu)?;
        // As the runtime's threads do (`greenos::sleep` ends on time).
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        if let Some(sl) = slice {
            kernel::request_slice(sl)?;
        }
        let mut lat = Vec::new();
        while !s.load(Ordering::Relaxed) {
            let due = Instant::now() + cycle.sleep;
            kernel::sleep_until(cycle.sleep);
            lat.push(Instant::now().saturating_duration_since(due).as_secs_f64() * 1e6);
            let until = Instant::now() + cycle.burst;
            while Instant::now() < until {}
        }
        Ok((lat, kernel::thread_cpu_ns(), kernel::thread_switches()))
    });
    std::thread::sleep(wall);
    stop.store(true, Ordering::Relaxed);
    let (lat_us, interactive_ns, mut switches) = interactive.join().expect("interactive")?;
    let mut hog_ns = Vec::new();
    for h in hogs {
        let (ns, sw) = h.join().expect("hog")?;
        hog_ns.push(ns);
        switches += sw;
    }
    Ok(Outcome {
        hog_ns,
        lat_us,
        interactive_ns,
        wake_us: Vec::new(),
        switches,
    })
}

/// The calls the kernel rows make on their own threads.
mod kernel {
    use std::io;
    use std::time::Duration;

    /// `struct sched_attr`, SCHED_ATTR_SIZE_VER1 (include/uapi/linux/sched/types.h).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }

    pub fn last_allowed_cpu() -> usize {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes
        // at most its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .rev()
                .find(|&c| libc::CPU_ISSET(c, &set))
                .unwrap_or(0)
        }
    }

    pub fn pin(cpu: usize) -> Result<(), String> {
        // SAFETY: as above; the set outlives the call.
        let r = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(format!("sched_setaffinity: {}", io::Error::last_os_error()))
        }
    }

    pub fn set_nice(nice: i32) -> Result<(), String> {
        // SAFETY: plain syscalls on this thread's own id.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, nice) };
        if r == 0 {
            Ok(())
        } else {
            Err(format!(
                "setpriority({nice}): {}",
                io::Error::last_os_error()
            ))
        }
    }

    /// `sched_setattr(SCHED_OTHER, sched_runtime = slice)`: the 6.12+
    /// per-task slice request.
    pub fn request_slice(slice: Duration) -> Result<(), String> {
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_runtime: slice.as_nanos() as u64,
            ..SchedAttr::default()
        };
        // SAFETY: `attr` is a valid sched_attr of the size it declares.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(format!("sched_setattr: {}", io::Error::last_os_error()))
        }
    }

    /// Sleeps `d` on CLOCK_MONOTONIC (an absolute deadline: no drift from
    /// an interrupted sleep).
    pub fn sleep_until(d: Duration) {
        let mut ts = clock(libc::CLOCK_MONOTONIC);
        let ns = ts.tv_nsec as u64 + u64::from(d.subsec_nanos());
        ts.tv_sec += d.as_secs() as libc::time_t + (ns / 1_000_000_000) as libc::time_t;
        ts.tv_nsec = (ns % 1_000_000_000) as _;
        // SAFETY: `ts` is a valid timespec; no remainder is asked for.
        while unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        } == libc::EINTR
        {}
    }

    fn clock(id: libc::clockid_t) -> libc::timespec {
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(id, &mut ts);
            ts
        }
    }

    pub fn thread_cpu_ns() -> u64 {
        let ts = clock(libc::CLOCK_THREAD_CPUTIME_ID);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Voluntary plus involuntary context switches of the calling thread.
    pub fn thread_switches() -> u64 {
        // SAFETY: getrusage writes the rusage it is given.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
            ru
        };
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let wall = Duration::from_secs_f64(secs);
    let arg_us = |i: usize, default: u64| {
        Duration::from_micros(
            std::env::args()
                .nth(i)
                .and_then(|s| s.parse().ok())
                .unwrap_or(default),
        )
    };
    let cycle = Cycle {
        sleep: arg_us(2, 9_000),
        burst: arg_us(3, 1_000),
    };
    let weights: Vec<f64> = NICES
        .iter()
        .map(|&n| greenos::sched::SCHED_PRIO_TO_WEIGHT[(n + 20) as usize] as f64)
        .collect();
    let wsum: f64 = weights.iter().sum();
    println!(
        "one worker, {secs} s per policy; the interactive task sleeps {} us, runs {} us; \
         shares of the CPU-bound tasks' time",
        cycle.sleep.as_micros(),
        cycle.burst.as_micros()
    );
    print!("{:<7}", "policy");
    for (n, w) in NICES.iter().zip(&weights) {
        print!("{:>18}", format!("nice {n} ({:.1}%)", 100.0 * w / wsum));
    }
    println!(
        "{:>12}{:>12}{:>12}{:>12}{:>14}{:>10}",
        "lat p50 us", "lat p99 us", "w->r p50", "w->r p99", "interact. ms", "switches"
    );
    let short = Some(Duration::from_micros(100));
    let rows = [
        (Some(Policy::Cfs), None, "CFS"),
        (Some(Policy::Eevdf), None, "EEVDF"),
        (Some(Policy::Eevdf), short, "EEVDF*"),
        (Some(Policy::O1), None, "O(1)"),
        (Some(Policy::ON), None, "O(N)"),
        (None, None, "Linux"),
        (None, short, "Linux*"),
    ];
    for (policy, slice, name) in rows {
        let mut o = match policy {
            Some(policy) => run(policy, slice, wall, cycle),
            None => match run_kernel(slice, wall, cycle) {
                Ok(o) => o,
                Err(why) => {
                    println!("{name:<7}skipped: {why}");
                    continue;
                }
            },
        };
        let total: u64 = o.hog_ns.iter().sum();
        print!("{name:<7}");
        for ns in &o.hog_ns {
            print!("{:>17.1}%", 100.0 * *ns as f64 / total.max(1) as f64);
        }
        let p50 = percentile(&mut o.lat_us, 0.5);
        let p99 = percentile(&mut o.lat_us, 0.99);
        let w50 = percentile(&mut o.wake_us, 0.5);
        let w99 = percentile(&mut o.wake_us, 0.99);
        let or_dash = |x: f64| {
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{x:.0}")
            }
        };
        println!(
            "{:>12.0}{:>12.0}{:>12}{:>12}{:>14.1}{:>10}",
            p50,
            p99,
            or_dash(w50),
            or_dash(w99),
            o.interactive_ns as f64 / 1e6,
            o.switches
        );
    }
    println!("EEVDF*: the interactive task requests a 0.1 ms slice (Builder::slice)");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Linux: OS threads on one CPU under this kernel's own scheduler ({}); \
         Linux*: the interactive thread requests a 0.1 ms slice (sched_setattr)",
        release.trim()
    );
}
