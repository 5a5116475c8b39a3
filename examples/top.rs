//! `top` for a greenos runtime: a terminal view refreshed every second with
//! per-CPU utilisation bars, run-queue length, PELT load and util,
//! switches, steals and migrations, balancing per domain level, and the
//! busiest tasks of the last interval — like `htop`,
//! for green threads.
//!
//! It watches a demo workload running in the same process (CPU hogs at
//! several nice levels, a channel ping-pong pair, sleepers, a fork-join
//! loop, a blocked task). In your own program, call [`render`]-like code on
//! `rt.metrics()` and `rt.task_metrics()` from any thread.
//!
//! Run: `cargo run --release --example top -- [--frames N] [--plain]
//! [--interval-ms MS] [--workers N]`. `--plain` prints frames one after
//! another instead of redrawing the screen (for logs and tests).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::sync::mpsc;
use greenos::{Metrics, Pid, TaskMetrics, TaskState};

struct Options {
    frames: Option<u64>,
    plain: bool,
    interval: Duration,
    workers: usize,
}

fn options() -> Options {
    let mut o = Options {
        frames: None,
        plain: false,
        interval: Duration::from_secs(1),
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--frames" => o.frames = Some(num("--frames")),
            "--plain" => o.plain = true,
            "--interval-ms" => o.interval = Duration::from_millis(num("--interval-ms")),
            "--workers" => o.workers = num("--workers") as usize,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        greenos::maybe_yield();
    }
}

/// The demo workload; runs until `stop`.
fn workload(rt: &greenos::Runtime, stop: Arc<AtomicBool>) {
    let b = greenos::task::Builder::new;
    for (name, nice) in [("hog-n0", 0), ("hog-n5", 5), ("hog-n10", 10)] {
        let s = stop.clone();
        let _ = rt.spawn(move || {
            b().name(name)
                .nice(nice)
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        spin(Duration::from_millis(1));
                    }
                })
                .unwrap()
                .join()
        });
    }
    let (tx, rx) = mpsc::channel::<u64>();
    let (tx2, rx2) = mpsc::channel::<u64>();
    let s = stop.clone();
    rt.spawn(move || {
        let pong = b()
            .name("pong")
            .spawn(move || {
                while let Ok(v) = rx.recv() {
                    if tx2.send(v + 1).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        b().name("ping")
            .spawn(move || {
                let mut v = 0;
                while !s.load(Ordering::Relaxed) {
                    tx.send(v).unwrap();
                    v = rx2.recv().unwrap();
                }
                drop(tx);
            })
            .unwrap()
            .join()
            .unwrap();
        pong.join().unwrap();
    });
    let s = stop.clone();
    rt.spawn(move || {
        b().name("forker")
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let kids: Vec<_> = (0..8)
                        .map(|_| greenos::spawn(|| spin(Duration::from_micros(200))))
                        .collect();
                    for k in kids {
                        k.join().unwrap();
                    }
                    greenos::sleep(Duration::from_millis(5));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    let s = stop;
    rt.spawn(move || {
        b().name("sleeper")
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    greenos::sleep(Duration::from_millis(3));
                    spin(Duration::from_micros(300));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
}

fn bar(frac: f64, width: usize) -> String {
    let n = ((frac.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "|".repeat(n), " ".repeat(width - n))
}

/// One frame from two snapshots `dt` apart.
fn render(
    frame: u64,
    dt: Duration,
    prev: &Metrics,
    now: &Metrics,
    prev_tasks: &HashMap<Pid, TaskMetrics>,
    tasks: &[TaskMetrics],
) -> String {
    let mut s = String::new();
    let dt_ns = dt.as_nanos().max(1) as f64;
    let _ = writeln!(
        s,
        "greenos top — frame {frame}, interval {:.0} ms, {} live tasks",
        dt.as_secs_f64() * 1e3,
        now.live_tasks
    );
    let _ = writeln!(
        s,
        "CPU  busy                            run  load  util  switches/s  steals  migr in/out  direct"
    );
    for (c, p) in now.cpus.iter().zip(&prev.cpus) {
        let busy = (c.busy_ns - p.busy_ns) as f64 / dt_ns;
        let _ = writeln!(
            s,
            "{:>3}  {} {:>5.1}% {:>4} {:>5} {:>5} {:>11.0} {:>7} {:>6}/{:<5} {:>7}",
            c.cpu,
            bar(busy, 20),
            busy * 100.0,
            c.nr_running,
            c.load_avg,
            c.util_avg,
            (c.switches - p.switches) as f64 / dt.as_secs_f64(),
            c.steals - p.steals,
            c.migrations_in - p.migrations_in,
            c.migrations_out - p.migrations_out,
            c.direct_switches - p.direct_switches,
        );
    }
    // Balancing per domain level, summed over CPUs, this interval.
    let mut levels: Vec<(&str, u64, u64, u64, u64)> = Vec::new();
    for (c, p) in now.cpus.iter().zip(&prev.cpus) {
        for (d, pd) in c.domains.iter().zip(&p.domains) {
            let row = (
                d.balance_attempts - pd.balance_attempts,
                d.balance_imbalanced - pd.balance_imbalanced,
                d.tasks_pulled - pd.tasks_pulled,
                d.migrations_in - pd.migrations_in,
            );
            match levels.iter_mut().find(|l| l.0 == d.name) {
                Some(l) => {
                    l.1 += row.0;
                    l.2 += row.1;
                    l.3 += row.2;
                    l.4 += row.3;
                }
                None => levels.push((d.name, row.0, row.1, row.2, row.3)),
            }
        }
    }
    if !levels.is_empty() {
        let _ = write!(s, "balance");
        for (name, attempts, imbalanced, pulled, migr) in levels {
            let _ = write!(
                s,
                "  {name}: {attempts} passes, {imbalanced} imbalanced, {pulled} pulled, \
                 {migr} migrated in"
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  PID NAME            STATE     CPU NICE   CPU%  SWITCH   MIGR   WAIT ms"
    );
    let mut rows: Vec<(f64, &TaskMetrics)> = tasks
        .iter()
        .map(|t| {
            let before = prev_tasks.get(&t.pid).map_or(0, |p| p.sum_exec_runtime);
            (t.sum_exec_runtime.saturating_sub(before) as f64 / dt_ns, t)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.pid.cmp(&b.1.pid)));
    for (share, t) in rows.iter().take(12) {
        let state = match t.state {
            TaskState::Running => "running",
            TaskState::Runnable => "runnable",
            TaskState::Blocked => "blocked",
            TaskState::Stopped => "stopped",
        };
        let _ = writeln!(
            s,
            "{:>5} {:<15} {:<9} {:>3} {:>4} {:>6.1} {:>7} {:>6} {:>9.2}",
            t.pid.0,
            t.name.as_deref().unwrap_or("-"),
            state,
            t.cpu,
            t.nice,
            share * 100.0,
            t.switches,
            t.migrations,
            t.wait_time as f64 / 1e6,
        );
    }
    s
}

fn main() -> std::io::Result<()> {
    let o = options();
    let rt = greenos::Runtime::builder().workers(o.workers).build()?;
    let stop = Arc::new(AtomicBool::new(false));
    workload(&rt, stop.clone());
    let mut prev = rt.metrics();
    let mut prev_tasks: HashMap<Pid, TaskMetrics> =
        rt.task_metrics().into_iter().map(|t| (t.pid, t)).collect();
    let mut last = Instant::now();
    let mut frame = 0;
    loop {
        std::thread::sleep(o.interval);
        frame += 1;
        let now = rt.metrics();
        let tasks = rt.task_metrics();
        let dt = last.elapsed();
        last = Instant::now();
        let text = render(frame, dt, &prev, &now, &prev_tasks, &tasks);
        if o.plain {
            println!("{text}");
        } else {
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{text}");
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        prev = now;
        prev_tasks = tasks.into_iter().map(|t| (t.pid, t)).collect();
        if o.frames.is_some_and(|n| frame >= n) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}
