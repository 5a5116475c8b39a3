//! Load tracking and balancing on the real executor: PELT averages in the
//! metrics, a pinned task that is never moved while an idle CPU gets work,
//! and a two-node synthetic machine whose nodes carry equal load but node
//! 0 is imbalanced inside: once balanced, no task crosses nodes.
//!
//! Nothing here is timed: each test waits for progress (work done, a
//! counter moving) under a watchdog, so a slow machine only makes it slower.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{builder, wait_until, Watchdog};
use greenos::task::{sched_setaffinity, Builder};
use greenos::{CpuSet, Metrics};

/// A chunk of CPU work the compiler cannot remove.
fn chunk(x: &mut u64) {
    for _ in 0..20_000 {
        *x = std::hint::black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
}

/// Sum of a per-level counter over every CPU, for levels named `name`.
fn level_total(m: &Metrics, name: &str, f: impl Fn(&greenos::DomainMetrics) -> u64) -> u64 {
    m.cpus
        .iter()
        .flat_map(|c| c.domains.iter())
        .filter(|d| d.name == name)
        .map(f)
        .sum()
}

#[test]
fn pelt_follows_a_busy_cpu_and_decays_on_an_idle_one() {
    let _w = Watchdog::new("pelt_follows", Duration::from_secs(120));
    let rt = builder(2).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let busy = rt.block_on(|| {
        Builder::new()
            .affinity(CpuSet::from_iter([1]))
            .spawn(move || {
                let mut x = 1;
                while !s.load(Ordering::Relaxed) {
                    chunk(&mut x);
                    greenos::maybe_yield();
                }
                x
            })
            .unwrap()
    });
    // A task that never blocks keeps its CPU's util rising towards 1024
    // (reference: 907 after 100 periods); CPU 0 runs nothing.
    assert!(
        wait_until(Duration::from_secs(60), || rt.metrics().cpus[1].util_avg
            > 800),
        "CPU 1 util_avg stayed at {} while a task ran there",
        rt.metrics().cpus[1].util_avg
    );
    let m = rt.metrics();
    assert!(m.cpus[1].load_avg > 800, "load_avg {}", m.cpus[1].load_avg);
    assert!(
        m.cpus[1].runnable_avg > 800,
        "runnable {}",
        m.cpus[1].runnable_avg
    );
    assert!(
        m.cpus[0].util_avg < 300,
        "idle CPU 0 util {}: {:?}",
        m.cpus[0].util_avg,
        m.cpus[0]
    );
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    // Idle now: the series decays (halving every 32 periods).
    assert!(
        wait_until(Duration::from_secs(60), || rt.metrics().cpus[1].util_avg
            < 100),
        "CPU 1 util_avg stayed at {} after its task ended",
        rt.metrics().cpus[1].util_avg
    );
}

#[test]
fn a_pinned_task_is_never_moved_and_an_idle_cpu_gets_work() {
    let _w = Watchdog::new("pinned_and_idle", Duration::from_secs(180));
    let rt = builder(2).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let wrong_cpu = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let ran_on_0 = Arc::new(AtomicUsize::new(0));
    let on1 = CpuSet::from_iter([1]);

    let (s, wrong) = (stop.clone(), wrong_cpu.clone());
    let pinned = rt.block_on(|| {
        Builder::new()
            .name("pinned")
            .affinity(on1.clone())
            .spawn(move || {
                let mut x = 1;
                while !s.load(Ordering::Relaxed) {
                    if greenos::current_cpu() != 1 {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    chunk(&mut x);
                    greenos::maybe_yield();
                }
                x
            })
            .unwrap()
    });
    // Five more CPU-bound tasks start on CPU 1 too, so they sit in its
    // run queue; then they may go anywhere and CPU 0 is idle.
    let movers: Vec<_> = (0..5)
        .map(|_| {
            let (s, st, r0) = (stop.clone(), started.clone(), ran_on_0.clone());
            rt.block_on(|| {
                Builder::new()
                    .affinity(on1.clone())
                    .spawn(move || {
                        st.fetch_add(1, Ordering::SeqCst);
                        let mut x = 1;
                        while !s.load(Ordering::Relaxed) {
                            if greenos::current_cpu() == 0 {
                                r0.fetch_add(1, Ordering::Relaxed);
                            }
                            chunk(&mut x);
                            greenos::maybe_yield();
                        }
                        x
                    })
                    .unwrap()
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || started
        .load(Ordering::SeqCst)
        == 5));
    let all = CpuSet::all(2);
    let pids: Vec<_> = movers.iter().map(|h| h.task().pid()).collect();
    rt.block_on(|| {
        for &pid in &pids {
            sched_setaffinity(pid, &all).unwrap();
        }
    });
    assert!(
        wait_until(Duration::from_secs(60), || ran_on_0.load(Ordering::Relaxed)
            > 100),
        "no task moved to the idle CPU 0: {:?}",
        rt.metrics()
    );
    let pinned_pid = pinned.task().pid();
    let pinned_metrics = rt
        .task_metrics()
        .into_iter()
        .find(|t| t.pid == pinned_pid)
        .expect("pinned task is live");
    let m = rt.metrics();
    stop.store(true, Ordering::Relaxed);
    pinned.join().unwrap();
    for h in movers {
        h.join().unwrap();
    }
    assert_eq!(
        wrong_cpu.load(Ordering::Relaxed),
        0,
        "the pinned task ran off CPU 1"
    );
    assert_eq!(pinned_metrics.migrations, 0, "the pinned task migrated");
    assert_eq!(pinned_metrics.cpu, 1);
    // Balancing, not chance, moved the work: CPU 0's balance counters saw
    // it (a newly-idle pull or a push from the busy CPU).
    let c0 = &m.cpus[0];
    let pulled: u64 = c0.domains.iter().map(|d| d.tasks_pulled).sum();
    let attempts: u64 = c0.domains.iter().map(|d| d.balance_attempts).sum();
    assert!(pulled > 0, "CPU 0 pulled nothing: {c0:?}");
    let sent: u64 = m.cpus[1].domains.iter().map(|d| d.migrations_out).sum();
    assert!(sent > 0, "CPU 1 counted no migration out: {:?}", m.cpus[1]);
    assert!(attempts > 0, "CPU 0 never balanced: {c0:?}");
}

#[test]
fn balanced_nodes_see_no_cross_node_migrations() {
    let _w = Watchdog::new("numa_balance", Duration::from_secs(240));
    // Two nodes of two CPUs each; the four workers share this machine's
    // cores (pinned modulo the real CPUs), which changes speed, not the
    // balancer's view.
    let topo = greenos::topology::Topology::synthetic("numa:2 core:2 pu:1").unwrap();
    let rt = builder(4).topology(topo).build().unwrap();
    let names: Vec<&str> = rt.domains().iter().map(|d| d.kind.name()).collect();
    assert!(names.contains(&"NUMA"), "domains: {names:?}");
    // Node 0 (CPUs 0, 1) gets 3 + 1 tasks, node 1 (CPUs 2, 3) 2 + 2: the
    // nodes carry the same load, node 0 is imbalanced inside.
    let placement = [0, 0, 0, 1, 2, 2, 3, 3];
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let handles: Vec<_> = placement
        .iter()
        .enumerate()
        .map(|(i, &cpu)| {
            let (s, st, p) = (stop.clone(), started.clone(), progress.clone());
            rt.block_on(|| {
                Builder::new()
                    .affinity(CpuSet::from_iter([cpu]))
                    .spawn(move || {
                        st.fetch_add(1, Ordering::SeqCst);
                        let mut x = 1;
                        while !s.load(Ordering::Relaxed) {
                            chunk(&mut x);
                            p[i].fetch_add(1, Ordering::Relaxed);
                            greenos::maybe_yield();
                        }
                        x
                    })
                    .unwrap()
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || started
        .load(Ordering::SeqCst)
        == 8));
    // Each task may now run on any CPU of its node... or of the other one:
    // the mask allows everything; the balancer decides.
    let all = CpuSet::all(4);
    let pids: Vec<_> = handles.iter().map(|h| h.task().pid()).collect();
    rt.block_on(|| {
        for &pid in &pids {
            sched_setaffinity(pid, &all).unwrap();
        }
    });
    // Node 0 gets balanced (3 + 1 -> 2 + 2). While the new tasks' PELT
    // averages ramp up, loads differ by more than imbalance_pct and tasks
    // may move between nodes too, as in the kernel; that is not steady
    // state.
    assert!(
        wait_until(Duration::from_secs(90), || rt
            .metrics()
            .cpus
            .iter()
            .all(|c| c.nr_running == 2)),
        "the CPUs never balanced: {:?}",
        rt.metrics()
    );
    let advance = |by: u64| {
        let floor: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        assert!(
            wait_until(Duration::from_secs(120), || progress
                .iter()
                .zip(&floor)
                .all(|(p, f)| p.load(Ordering::Relaxed) >= f + by)),
            "some task stopped progressing"
        );
    };
    // Let the PELT averages settle (new tasks start at their weight and
    // ramp; while they do, loads differ by more than imbalance_pct and the
    // kernel too moves tasks), then watch a steady stretch.
    advance(1_000);
    let before = rt.metrics();
    advance(4_000);
    let m = rt.metrics();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    // Counted where each move was decided (the sender's migrations out,
    // at the level it shares with the receiver), not where it landed: a
    // move decided before the window can land inside it when the
    // receiving worker's thread waits for a core (four workers share two
    // vCPUs here). One such late arrival, counted at the receiver, failed
    // this test once in CI although the senders had counted the move
    // before the window.
    let crossed = level_total(&m, "NUMA", |d| d.migrations_out)
        - level_total(&before, "NUMA", |d| d.migrations_out);
    let pulled = level_total(&m, "NUMA", |d| d.tasks_pulled)
        - level_total(&before, "NUMA", |d| d.tasks_pulled);
    let attempts = level_total(&m, "NUMA", |d| d.balance_attempts)
        - level_total(&before, "NUMA", |d| d.balance_attempts);
    assert!(
        attempts > 0,
        "no NUMA-level balance ran in the window: {m:?}"
    );
    assert_eq!(
        (crossed, pulled),
        (0, 0),
        "tasks crossed nodes in steady state although the nodes were balanced: \
         before {before:?} after {m:?}"
    );
}

#[test]
fn remote_wakeups_unparks_and_policies_are_counted() {
    let _w = Watchdog::new("remote_wakeups", Duration::from_secs(120));
    let rt = builder(2).build().unwrap();
    rt.block_on(|| {
        let (to_b, from_a) = greenos::sync::mpsc::channel::<u32>();
        let (to_a, from_b) = greenos::sync::mpsc::channel::<u32>();
        let b = Builder::new()
            .affinity(CpuSet::from_iter([1]))
            .spawn(move || {
                while let Ok(v) = from_a.recv() {
                    if to_a.send(v).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        let a = Builder::new()
            .affinity(CpuSet::from_iter([0]))
            .spawn(move || {
                for i in 0..50 {
                    to_b.send(i).unwrap();
                    assert_eq!(from_b.recv().unwrap(), i);
                    // Long enough for the other CPU to go to sleep in the
                    // OS (its idle spin is 100 µs).
                    greenos::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    let m = rt.metrics();
    let remote: u64 = m.cpus.iter().map(|c| c.wakeups_remote).sum();
    let unparks: u64 = m.cpus.iter().map(|c| c.unparks).sum();
    assert!(remote >= 1, "no remote wakeup counted: {m:?}");
    assert!(unparks >= 1, "no unpark counted: {m:?}");
    // Per-task metrics carry the policy.
    let t = rt.block_on(|| {
        let h = Builder::new()
            .policy(greenos::SchedPolicy::Batch)
            .spawn(|| greenos::sleep(Duration::from_millis(50)))
            .unwrap();
        let pid = h.task().pid();
        (h, pid)
    });
    let (h, pid) = t;
    let seen = rt
        .task_metrics()
        .into_iter()
        .find(|x| x.pid == pid)
        .map(|x| x.policy);
    h.join().unwrap();
    assert_eq!(seen, Some(greenos::SchedPolicy::Batch));
}
