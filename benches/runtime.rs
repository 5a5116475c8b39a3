//! Criterion benchmarks of the greenos runtime against tokio and may, on the
//! four workloads of `examples/bench.rs` at smaller sizes. Each group holds
//! `greenos`, `tokio` and `may`, so criterion prints them side by side:
//!
//! | group                 | one iteration is                                   |
//! |-----------------------|----------------------------------------------------|
//! | `yield_switch_1worker`| one `yield_now` (two tasks yielding in turn)       |
//! | `spawn_join_10k`      | spawn 10,000 trivial tasks from a task, join all   |
//! | `skynet_10k`          | skynet with 10,000 leaves (11,111 tasks), sum checked |
//! | `pingpong_1worker`    | one channel round trip, both tasks on one worker   |
//! | `pingpong_2workers`   | one channel round trip, tasks on two workers       |
//!
//! ```text
//! cargo bench --bench runtime                # default: 20 samples, 3 s per bench
//! cargo bench --bench runtime -- --quick     # until 5% significance, 100 ms..3 s
//! cargo bench --bench runtime -- skynet      # criterion's regex filter
//! ```
//!
//! Runtimes are built before, and dropped after, each benchmark; only the
//! workload is timed (inside the runtime: the clock starts and stops in the
//! driving task). Per-group worker counts: yield and ping-pong on one worker
//! use one worker, `pingpong_2workers` two, spawn and skynet every usable
//! CPU. may fixes its worker count at first use for the whole process, so the
//! may entries of the one- and two-worker groups run in a child process (this
//! binary re-executed with `GREENOS_BENCH_MAY_CHILD=<group>:<workers>` and the
//! same arguments); their lines appear in place in the output.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput};

/// Set in the child that runs may's entry of one group.
const MAY_CHILD_ENV: &str = "GREENOS_BENCH_MAY_CHILD";

const SPAWN_TASKS: u64 = 10_000;
/// 10,000, not 100,000: at 100,000 leaves may runs out of mappings for its
/// coroutine stacks at the default `vm.max_map_count` (65530) and panics,
/// which would end the whole bench process.
const SKYNET_LEAVES: u64 = 10_000;

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn greenos_rt(workers: usize) -> greenos::Runtime {
    greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("build greenos runtime")
}

fn tokio_rt(workers: usize) -> tokio::runtime::Runtime {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
    }
    .expect("build tokio runtime")
}

fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

fn main() {
    if let Ok(spec) = std::env::var(MAY_CHILD_ENV) {
        may_child(&spec);
        return;
    }
    may::config().set_workers(usable_cpus());
    let mut c = criterion();
    yield_switch(&mut c);
    spawn_join(&mut c);
    skynet(&mut c);
    pingpong(&mut c, 1);
    pingpong(&mut c, 2);
    c.final_summary();
}

// --- may in a child process ------------------------------------------------

/// Runs may's entry of `group` in a child with `workers` may workers; the
/// child inherits stdout/stderr, so its criterion lines follow the others.
fn may_in_child(group: &str, workers: usize) {
    let exe = std::env::current_exe().expect("current_exe");
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MAY_CHILD_ENV, format!("{group}:{workers}"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!("{group}/may: child process failed ({s})"),
        Err(e) => println!("{group}/may: cannot start child process ({e})"),
    }
}

fn may_child(spec: &str) {
    let (group, workers) = spec
        .split_once(':')
        .and_then(|(g, w)| Some((g, w.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("bad {MAY_CHILD_ENV}={spec}"));
    may::config().set_workers(workers);
    let mut c = criterion();
    {
        let mut g = c.benchmark_group(group);
        match group {
            "yield_switch_1worker" => g.bench_function("may", may_yield),
            "pingpong_1worker" | "pingpong_2workers" => g.bench_function("may", may_pingpong),
            other => panic!("no may child bench for {other}"),
        };
        g.finish();
    }
    c.final_summary();
}

// --- yield switch ----------------------------------------------------------

/// One iteration = one yield; two tasks take turns, `iters / 2` each.
fn yield_switch(c: &mut Criterion) {
    const GROUP: &str = "yield_switch_1worker";
    let mut g = c.benchmark_group(GROUP);
    {
        let rt = greenos_rt(1);
        g.bench_function("greenos", |b| {
            b.iter_custom(|iters| {
                let each = iters.div_ceil(2);
                rt.block_on(move || {
                    let start = Instant::now();
                    let tasks = [(); 2].map(|()| {
                        greenos::spawn(move || {
                            for _ in 0..each {
                                greenos::yield_now();
                            }
                        })
                    });
                    for t in tasks {
                        t.join().expect("yield task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    {
        let rt = tokio_rt(1);
        g.bench_function("tokio", |b| {
            b.iter_custom(|iters| {
                let each = iters.div_ceil(2);
                rt.block_on(async move {
                    let start = Instant::now();
                    let tasks = [(); 2].map(|()| {
                        tokio::spawn(async move {
                            for _ in 0..each {
                                tokio::task::yield_now().await;
                            }
                        })
                    });
                    for t in tasks {
                        t.await.expect("yield task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    may_in_child(GROUP, 1);
}

fn may_yield(b: &mut criterion::Bencher<'_>) {
    b.iter_custom(|iters| {
        let each = iters.div_ceil(2);
        may::go!(move || {
            let start = Instant::now();
            let tasks = [(); 2].map(|()| {
                may::go!(move || {
                    for _ in 0..each {
                        may::coroutine::yield_now();
                    }
                })
            });
            for t in tasks {
                t.join().expect("yield task");
            }
            start.elapsed()
        })
        .join()
        .expect("may driver")
    })
}

// --- spawn + join ----------------------------------------------------------

fn spawn_sum_expected(n: u64) -> u64 {
    n * (n - 1) / 2
}

/// One iteration = a task spawns `SPAWN_TASKS` tasks and joins them.
fn spawn_join(c: &mut Criterion) {
    let workers = usable_cpus();
    let mut g = c.benchmark_group("spawn_join_10k");
    g.throughput(Throughput::Elements(SPAWN_TASKS));
    {
        let rt = greenos_rt(workers);
        g.bench_function("greenos", |b| {
            b.iter(|| {
                rt.block_on(|| {
                    let handles: Vec<_> = (0..black_box(SPAWN_TASKS))
                        .map(|i| greenos::spawn(move || i))
                        .collect();
                    let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
                    assert_eq!(sum, spawn_sum_expected(SPAWN_TASKS));
                })
            })
        });
    }
    {
        let rt = tokio_rt(workers);
        g.bench_function("tokio", |b| {
            b.iter(|| {
                // Spawned, so the spawning happens on a worker as for the others.
                rt.block_on(rt.spawn(async {
                    let handles: Vec<_> = (0..black_box(SPAWN_TASKS))
                        .map(|i| tokio::spawn(async move { i }))
                        .collect();
                    let mut sum = 0;
                    for h in handles {
                        sum += h.await.expect("join");
                    }
                    assert_eq!(sum, spawn_sum_expected(SPAWN_TASKS));
                }))
                .expect("driver task")
            })
        });
    }
    g.bench_function("may", |b| {
        b.iter(|| {
            may::go!(|| {
                let handles: Vec<_> = (0..black_box(SPAWN_TASKS))
                    .map(|i| may::go!(move || i))
                    .collect();
                let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
                assert_eq!(sum, spawn_sum_expected(SPAWN_TASKS));
            })
            .join()
            .expect("may driver")
        })
    });
    g.finish();
}

// --- skynet ----------------------------------------------------------------

fn skynet_check(sum: u64) {
    assert_eq!(sum, SKYNET_LEAVES * (SKYNET_LEAVES - 1) / 2, "skynet sum");
}

fn greenos_skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: Vec<_> = (0..10)
        .map(|i| greenos::spawn(move || greenos_skynet(num + i * step, step)))
        .collect();
    children.into_iter().map(|h| h.join().expect("child")).sum()
}

fn tokio_skynet(num: u64, size: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if size == 1 {
            return num;
        }
        let step = size / 10;
        let children: Vec<_> = (0..10)
            .map(|i| tokio::spawn(tokio_skynet(num + i * step, step)))
            .collect();
        let mut sum = 0;
        for h in children {
            sum += h.await.expect("child");
        }
        sum
    })
}

fn may_skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: Vec<_> = (0..10)
        .map(|i| may::go!(move || may_skynet(num + i * step, step)))
        .collect();
    children.into_iter().map(|h| h.join().expect("child")).sum()
}

/// One iteration = a whole skynet run with `SKYNET_LEAVES` leaves.
fn skynet(c: &mut Criterion) {
    let workers = usable_cpus();
    let mut g = c.benchmark_group("skynet_10k");
    g.sample_size(10);
    {
        let rt = greenos_rt(workers);
        g.bench_function("greenos", |b| {
            b.iter(|| skynet_check(rt.block_on(|| greenos_skynet(0, black_box(SKYNET_LEAVES)))))
        });
    }
    {
        let rt = tokio_rt(workers);
        g.bench_function("tokio", |b| {
            b.iter(|| {
                let sum = rt
                    .block_on(rt.spawn(tokio_skynet(0, black_box(SKYNET_LEAVES))))
                    .expect("driver task");
                skynet_check(sum)
            })
        });
    }
    g.bench_function("may", |b| {
        b.iter(|| {
            let sum = may::go!(|| may_skynet(0, black_box(SKYNET_LEAVES)))
                .join()
                .expect("may driver");
            skynet_check(sum)
        })
    });
    g.finish();
}

// --- channel ping-pong -----------------------------------------------------

/// One iteration = one round trip; on two workers greenos pins the sides to
/// CPU 0 and CPU 1 (tokio and may cannot pin tasks).
fn pingpong(c: &mut Criterion, workers: usize) {
    let group = if workers == 1 {
        "pingpong_1worker"
    } else {
        "pingpong_2workers"
    };
    let mut g = c.benchmark_group(group);
    greenos_pingpong(&mut g, workers);
    tokio_pingpong(&mut g, workers);
    g.finish();
    may_in_child(group, workers);
}

fn greenos_pingpong(g: &mut Group<'_>, workers: usize) {
    use greenos::sync::mpsc;

    let rt = greenos_rt(workers);
    let on_cpu = move |cpu: usize| {
        let b = greenos::task::Builder::new();
        if workers > 1 {
            let mut set = greenos::CpuSet::new();
            set.set(cpu);
            b.affinity(set)
        } else {
            b
        }
    };
    g.bench_function("greenos", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let (ping_tx, ping_rx) = mpsc::channel::<u64>();
                let (pong_tx, pong_rx) = mpsc::channel::<u64>();
                let ponger = on_cpu(1)
                    .spawn(move || {
                        for _ in 0..iters {
                            let v = ping_rx.recv().expect("ping");
                            pong_tx.send(v + 1).expect("pong");
                        }
                    })
                    .expect("spawn ponger");
                let pinger = on_cpu(0)
                    .spawn(move || {
                        let start = Instant::now();
                        let mut v = 0;
                        for _ in 0..iters {
                            ping_tx.send(v).expect("ping");
                            v = pong_rx.recv().expect("pong");
                        }
                        let elapsed = start.elapsed();
                        assert_eq!(v, iters);
                        elapsed
                    })
                    .expect("spawn pinger");
                ponger.join().expect("ponger");
                pinger.join().expect("pinger")
            })
        })
    });
}

fn tokio_pingpong(g: &mut Group<'_>, workers: usize) {
    use tokio::sync::mpsc;

    let rt = tokio_rt(workers);
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<u64>();
                let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<u64>();
                let ponger = tokio::spawn(async move {
                    for _ in 0..iters {
                        let v = ping_rx.recv().await.expect("ping");
                        pong_tx.send(v + 1).expect("pong");
                    }
                });
                let pinger = tokio::spawn(async move {
                    let start = Instant::now();
                    let mut v = 0;
                    for _ in 0..iters {
                        ping_tx.send(v).expect("ping");
                        v = pong_rx.recv().await.expect("pong");
                    }
                    let elapsed = start.elapsed();
                    assert_eq!(v, iters);
                    elapsed
                });
                ponger.await.expect("ponger");
                pinger.await.expect("pinger")
            })
        })
    });
}

fn may_pingpong(b: &mut criterion::Bencher<'_>) {
    use may::sync::mpsc;

    b.iter_custom(|iters| {
        may::go!(move || {
            let (ping_tx, ping_rx) = mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = mpsc::channel::<u64>();
            let ponger = may::go!(move || {
                for _ in 0..iters {
                    let v = ping_rx.recv().expect("ping");
                    pong_tx.send(v + 1).expect("pong");
                }
            });
            let pinger = may::go!(move || {
                let start = Instant::now();
                let mut v = 0;
                for _ in 0..iters {
                    ping_tx.send(v).expect("ping");
                    v = pong_rx.recv().expect("pong");
                }
                let elapsed = start.elapsed();
                assert_eq!(v, iters);
                elapsed
            });
            ponger.join().expect("ponger");
            pinger.join().expect("pinger")
        })
        .join()
        .expect("may driver")
    })
}
