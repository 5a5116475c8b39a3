//! CFS shares on one CPU, measured with the runtime's own accounting
//! (`Task::cpu_time`). The tests compare shares, never absolute times, so
//! machine speed does not matter; they run one at a time so that other tests
//! of this file do not compete with them for the OS CPUs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Watchdog;
use greenos::task::Builder;
use greenos::JoinHandle;

/// Serializes the tests of this file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A CPU-bound loop that stops when `stop` is set, calling `maybe_yield`
/// between small units of work. Returns the number of units done.
fn busy(stop: Arc<AtomicBool>, sink: Arc<AtomicU64>) -> u64 {
    let mut units = 0u64;
    let mut x = units;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..256u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        units += 1;
        greenos::maybe_yield();
    }
    sink.fetch_add(x & 1, Ordering::Relaxed);
    units
}

/// Runs one busy task per nice value on a single worker for `wall` and
/// returns each task's CPU time and work units.
fn run_busy(nices: &[i32], wall: Duration) -> (Vec<(Duration, u64)>, greenos::Metrics) {
    let rt = common::builder(1).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(AtomicU64::new(0));
    let out = rt.block_on(|| {
        let hs: Vec<JoinHandle<u64>> = nices
            .iter()
            .map(|&nice| {
                let (stop, sink) = (stop.clone(), sink.clone());
                Builder::new()
                    .name(format!("nice{nice}"))
                    .nice(nice)
                    .spawn(move || busy(stop, sink))
                    .unwrap()
            })
            .collect();
        // The init task sleeps on the same CPU while they compete; its one
        // wakeup at the end costs it next to nothing.
        greenos::sleep(wall);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| {
                let task = h.task().clone();
                let units = h.join().unwrap();
                (task.cpu_time(), units)
            })
            .collect::<Vec<_>>()
    });
    (out, rt.metrics())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Runs a share measurement up to `tries` times and passes on the first
/// attempt within tolerance. The runtime charges wall-clock run time, so
/// when other processes load the OS CPUs, time the worker thread spends
/// descheduled is charged to whichever green task was running; near the end
/// of a run CFS has no time left to even that out. A broken scheduler fails
/// every attempt; a noisy machine rarely fails three.
fn within_tolerance(what: &str, tries: usize, mut attempt: impl FnMut() -> Result<String, String>) {
    let mut misses = Vec::new();
    for i in 1..=tries {
        match attempt() {
            Ok(report) => {
                eprintln!("{what}: attempt {i}: {report}");
                return;
            }
            Err(report) => {
                eprintln!("{what}: attempt {i} out of tolerance: {report}");
                misses.push(report);
            }
        }
    }
    panic!("{what}: every attempt out of tolerance: {misses:#?}");
}

#[test]
fn weighted_shares_nice0_vs_nice5() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("weighted_shares", Duration::from_secs(120));
    within_tolerance("nice 0 vs nice 5", 3, || {
        let (r, m) = run_busy(&[0, 5], Duration::from_secs(2));
        let (t0, u0) = r[0];
        let (t5, u5) = r[1];
        let expected = 1024.0 / 335.0;
        let got = ratio(t0, t5);
        // Both ran a real share of the 2 s, and the switches between them
        // were the runtime's (slice expiry), not the tasks' own.
        assert!(t5 > Duration::from_millis(100), "nice 5 starved: {t5:?}");
        assert!(m.total(|c| c.forced_switches) > 0);
        let report = format!(
            "nice 0: {t0:?} ({u0} units), nice 5: {t5:?} ({u5} units); \
             cpu_time ratio {got:.3} (expected {expected:.3} +-10%), work ratio {:.3}; \
             forced switches {}",
            u0 as f64 / u5 as f64,
            m.total(|c| c.forced_switches)
        );
        if (got / expected - 1.0).abs() <= 0.10 {
            Ok(report)
        } else {
            Err(report)
        }
    });
}

#[test]
fn equal_nice_gets_equal_shares() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("equal_shares", Duration::from_secs(120));
    within_tolerance("nice 0 vs nice 0", 3, || {
        let (r, _) = run_busy(&[0, 0], Duration::from_secs(2));
        let got = ratio(r[0].0, r[1].0);
        let report = format!(
            "{:?} / {:?}, ratio {got:.3} (expected 1 +-10%)",
            r[0].0, r[1].0
        );
        if (got - 1.0).abs() <= 0.10 {
            Ok(report)
        } else {
            Err(report)
        }
    });
}

#[test]
fn three_weights_share_in_proportion() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _w = Watchdog::new("three_weights", Duration::from_secs(120));
    // Weights 1024, 820, 335 (nice 0, 1, 5): shares 47.0%, 37.6%, 15.4%.
    within_tolerance("nice 0, 1, 5", 3, || {
        let (r, _) = run_busy(&[0, 1, 5], Duration::from_secs(2));
        let total: f64 = r.iter().map(|(t, _)| t.as_secs_f64()).sum();
        let weights = [1024.0, 820.0, 335.0];
        let wsum: f64 = weights.iter().sum();
        let mut ok = true;
        let mut report = String::new();
        for ((t, _), w) in r.iter().zip(weights) {
            let share = t.as_secs_f64() / total;
            let want = w / wsum;
            report += &format!("weight {w}: share {share:.3} (expected {want:.3}); ");
            ok &= (share / want - 1.0).abs() <= 0.10;
        }
        if ok {
            Ok(report)
        } else {
            Err(report)
        }
    });
}

// ------------------------------------------------------------ fork-join order

/// Started-but-unfinished nodes of a fork-join tree, and the most seen.
struct Live {
    now: AtomicU64,
    max: AtomicU64,
}

/// A skynet node: spawns `FANOUT` children down to single leaves and joins
/// them in order; counts itself live while it runs (it holds a stack).
fn fork_join_node(live: &Arc<Live>, size: u64) -> u64 {
    let n = live.now.fetch_add(1, Ordering::Relaxed) + 1;
    live.max.fetch_max(n, Ordering::Relaxed);
    let sum = if size == 1 {
        1
    } else {
        let children: Vec<_> = (0..10)
            .map(|_| {
                let live = live.clone();
                greenos::spawn(move || fork_join_node(&live, size / 10))
            })
            .collect();
        children.into_iter().map(|h| h.join().unwrap()).sum()
    };
    live.now.fetch_sub(1, Ordering::Relaxed);
    sum
}

/// A join is a directed yield (the joined task is the NEXT buddy) and a
/// finishing task makes its joiner the NEXT buddy, so a fork-join tree runs
/// depth-first on one CPU: about one started node per level is live at a
/// time, not every started node of the tree (breadth-first, as plain
/// START_DEBIT placement orders it, would start all 1,111 inner nodes
/// before the first leaf level finishes). The bound leaves room for a
/// few tick preemptions, each of which may start one more path.
///
/// CFS only: EEVDF honours the buddy only while it is eligible (PICK_BUDDY),
/// and a child placed at the average V turns ineligible when its parent,
/// which ran past V, blocks and leaves the average. (The kernel's
/// DELAY_DEQUEUE keeps such a parent in the tree, and V with it; greenos
/// models DELAY_DEQUEUE by its effect on lag only, so under EEVDF a
/// fork-join tree still runs breadth-first.)
#[test]
fn fork_join_trees_run_depth_first() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = Watchdog::new("fork_join_trees_run_depth_first", Duration::from_secs(120));
    let policy = greenos::Policy::Cfs;
    let rt = common::builder(1).policy(policy).build().unwrap();
    let live = Arc::new(Live {
        now: AtomicU64::new(0),
        max: AtomicU64::new(0),
    });
    let l = live.clone();
    let leaves = rt.block_on(move || fork_join_node(&l, 10_000));
    assert_eq!(leaves, 10_000);
    let max = live.max.load(Ordering::Relaxed);
    // Depth 5 (root + 4 levels): one path is 5 nodes.
    assert!(
        max <= 40,
        "{policy:?}: {max} tree nodes were live at once (depth-first keeps ~5)"
    );
}

/// The CPU's own work — a timer firing, the scheduler tick — does not
/// switch tasks by itself: as in the kernel, the interrupted task runs on
/// unless a wakeup preempts it (`check_preempt_wakeup`) or the tick finds
/// its slice used up (`check_preempt_tick`). Two nice-0 CPU hogs share one
/// CPU with a nice-19 task that sleeps 100 µs at a time. The light
/// sleeper's wakeups never preempt a hog (CFS scales the wakeup
/// granularity by the wakee's weight: 1 ms × 1024 / 15 ≈ 68 ms of its
/// virtual time, far more than the 3 ms sleeper credit), so each hog keeps
/// the CPU for its whole slice (6 ms × 1024 / 2063 ≈ 3 ms): about one
/// switch per 3 ms of its CPU time. When every timer and tick re-picked,
/// the hogs switched every ~1.3 ms. Counts against the runtime's own CPU
/// time, so a slow or loaded machine only lengthens the slices.
#[test]
fn timers_and_ticks_do_not_switch_tasks_by_themselves() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = Watchdog::new(
        "timers_and_ticks_do_not_switch_tasks_by_themselves",
        Duration::from_secs(120),
    );
    let rt = common::builder(1).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 0..2 {
        let (stop, sink) = (stop.clone(), sink.clone());
        let b = Builder::new().name(format!("hog{i}"));
        hs.push(rt.spawn_with(b, move || busy(stop, sink)).unwrap());
    }
    let s = stop.clone();
    let sleeper = Builder::new().name("sleeper").nice(19);
    hs.push(
        rt.spawn_with(sleeper, move || {
            let mut naps = 0;
            while !s.load(Ordering::Relaxed) {
                greenos::sleep(Duration::from_micros(100));
                naps += 1;
            }
            naps
        })
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(400));
    let m = rt.task_metrics();
    stop.store(true, Ordering::Relaxed);
    let naps = hs.pop().unwrap().join().unwrap();
    for h in hs {
        h.join().unwrap();
    }
    // The timers did fire all along (the sleeper ran between slices).
    assert!(naps >= 20, "the sleeper woke only {naps} times");
    for name in ["hog0", "hog1"] {
        let t = m
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .expect("the hog's metrics");
        let cpu_ms = t.sum_exec_runtime as f64 / 1e6;
        let per_ms = t.switches as f64 / cpu_ms;
        eprintln!(
            "{name}: {} switches in {cpu_ms:.1} ms of CPU ({per_ms:.2}/ms); sleeper {naps} naps",
            t.switches
        );
        assert!(cpu_ms > 50.0, "{name} hardly ran: {cpu_ms:.1} ms");
        assert!(
            per_ms < 0.5,
            "{name} switched {per_ms:.2} times per ms of CPU: something other than its \
             slice (~3 ms) switched it"
        );
    }
}
