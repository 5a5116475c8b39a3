//! One million live sleeping tasks in one process, at the default
//! `vm.max_map_count`. Heavy (GiBs of RSS, tens of seconds): release only,
//! and alone in this file so that it runs in its own process.
//!
//! `cargo test --release --test runtime_scale -- --nocapture` prints the
//! timings and the peak RSS.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{map_count, proc_status_kib, Watchdog};

const N: usize = 1_000_000;

#[test]
#[cfg_attr(debug_assertions, ignore = "release only: heavy")]
fn million_live_sleeping_tasks() {
    let _w = Watchdog::new("million_live_sleeping_tasks", Duration::from_secs(600));
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let rt = common::builder(2).build().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let (sum, peak_live, spawned_in, all_started_in, peak_maps) = rt.block_on(|| {
        let mut hs = Vec::with_capacity(N);
        for i in 0..N {
            let (go, started) = (go.clone(), started.clone());
            hs.push(greenos::spawn(move || {
                started.fetch_add(1, Ordering::Relaxed);
                // Asleep until released. The period is long so that tasks
                // that started early do not flood the CPUs with wakeups
                // while the rest are still being spawned.
                while !go.load(Ordering::Acquire) {
                    greenos::sleep(Duration::from_secs(2));
                }
                i as u64
            }));
        }
        let spawned_in = t0.elapsed();
        // Every task has run up to its first sleep (so has its own stack).
        while started.load(Ordering::Relaxed) < N {
            greenos::sleep(Duration::from_millis(20));
        }
        let all_started_in = t0.elapsed();
        // All are alive at once: the N sleepers and this task.
        let peak_live = rt.live_tasks();
        let peak_maps = map_count();
        go.store(true, Ordering::Release);
        let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        (sum, peak_live, spawned_in, all_started_in, peak_maps)
    });
    let total = t0.elapsed();
    let hwm = proc_status_kib("VmHWM").unwrap_or(0);
    let rss_after = proc_status_kib("VmRSS").unwrap_or(0);
    println!(
        "1M sleeping tasks: spawned in {spawned_in:?}, all started (own stacks) by \
         {all_started_in:?}, all joined by {total:?}"
    );
    println!(
        "peak live_tasks {peak_live}; peak RSS (VmHWM) {:.2} GiB = {:.1} KiB/task; \
         RSS after join {:.2} GiB; {peak_maps} mappings at peak (vm.max_map_count {:?})",
        hwm as f64 / (1 << 20) as f64,
        hwm as f64 / N as f64,
        rss_after as f64 / (1 << 20) as f64,
        max_map_count
    );
    assert!(peak_live > N, "live_tasks peaked at {peak_live}");
    assert_eq!(sum, (N as u64) * (N as u64 - 1) / 2);
    if let Some(max) = max_map_count {
        assert!(peak_maps < max, "{peak_maps} mappings vs max {max}");
    }
    assert!(common::wait_until(Duration::from_secs(30), || rt
        .live_tasks()
        == 0));
    let t = Instant::now();
    common::within(
        "dropping the runtime",
        Duration::from_secs(120),
        move || drop(rt),
    );
    println!("runtime dropped in {:?}", t.elapsed());
}
