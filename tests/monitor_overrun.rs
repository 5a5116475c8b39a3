//! A task that runs without reaching a yield point for 100 ms is reported
//! through `tracing` with its pid, name and CPU; and the monitor's
//! `need_resched` makes `maybe_yield` switch a long-running task out when
//! another task waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Collects the fields of every event, one line per event.
struct Collect(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut l = Line(String::new());
        e.record(&mut l);
        self.0.lock().unwrap().push(l.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn overrunning_task_is_reported_with_pid_name_and_cpu() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(Collect(lines.clone())).unwrap();
    let rt = greenos::Runtime::builder().workers(1).build().unwrap();
    let seen = lines.clone();
    let (pid, cpu) = rt.block_on(move || {
        let h = greenos::task::Builder::new()
            .name("hog")
            .spawn(move || {
                // Spin without any greenos call until the report shows up
                // (or give up after 60 s: the assertion below then fails).
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(60) {
                    // The overrun report (not the debug-level spawn event,
                    // which names the task too).
                    if seen
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|l| l.contains("hog") && l.contains("yield point"))
                    {
                        break;
                    }
                    std::hint::spin_loop();
                }
                (greenos::getpid(), greenos::current_cpu())
            })
            .unwrap();
        h.join().unwrap()
    });
    let lines = lines.lock().unwrap();
    let report = lines
        .iter()
        .find(|l| l.contains("hog") && l.contains("yield point"))
        .unwrap_or_else(|| panic!("no report; events: {lines:?}"));
    assert!(report.contains(&format!("pid={pid}")), "{report}");
    assert!(report.contains(&format!("cpu={cpu}")), "{report}");
    assert!(report.contains("yield point"), "{report}");
}

#[test]
fn need_resched_switches_a_busy_task_out() {
    // One CPU, a task that computes and calls maybe_yield, and a second task
    // that only needs to run once: the monitor must get it the CPU.
    let rt = greenos::Runtime::builder().workers(1).build().unwrap();
    let forced = rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let yields = Arc::new(AtomicU64::new(0));
        let (s, y, st) = (stop.clone(), yields.clone(), started.clone());
        let busy = greenos::spawn(move || {
            st.store(true, Ordering::Relaxed);
            let mut x = 0u64;
            while !s.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if greenos::maybe_yield() {
                    y.fetch_add(1, Ordering::Relaxed);
                }
            }
            x
        });
        // Let the busy task start; it then holds the CPU until the monitor
        // tells it to yield, which is the only way this task runs again.
        while !started.load(Ordering::Relaxed) {
            greenos::yield_now();
        }
        let s = stop.clone();
        let other = greenos::spawn(move || s.store(true, Ordering::Relaxed));
        other.join().unwrap();
        busy.join().unwrap();
        yields.load(Ordering::Relaxed)
    });
    assert!(forced >= 1, "the busy task was never preempted");
    let m = rt.metrics();
    assert!(m.total(|c| c.forced_switches) >= 1);
}
