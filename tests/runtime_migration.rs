//! Placement: affinity masks, migration on `sched_setaffinity`, pinned
//! tasks, task-locals across CPUs, cross-CPU ping-pong, and the OS CPU each
//! worker is pinned to.

mod common;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{allowed_os_cpus, cpus, os_cpu, rt, wait_until, DropCount, Watchdog};
use greenos::sync::mpsc;
// API.md names these `greenos::sched_*affinity`; the crate root does not
// re-export them yet, so they are reached through `greenos::task`.
use greenos::task::{sched_getaffinity, sched_setaffinity, Builder};
use greenos::{CpuSet, Pid};

/// Scales an iteration count down in debug builds.
fn scaled(release: usize) -> usize {
    if cfg!(debug_assertions) {
        release / 10
    } else {
        release
    }
}

/// The OS CPU each of the `n` pinned workers of `rt` runs on (where its
/// placement put them), or `None` (with a message) when this machine
/// cannot give `n` workers CPUs of their own.
fn worker_os_cpus(rt: &greenos::Runtime, n: usize) -> Option<Vec<usize>> {
    let os = allowed_os_cpus();
    if os.len() < n {
        eprintln!("skipped: needs {n} CPUs to pin {n} workers apart, this process may use {os:?}");
        return None;
    }
    let pinned: Option<Vec<usize>> = (0..n).map(|i| rt.pinned_os_cpu(i)).collect();
    let pinned = pinned.expect("pinned workers");
    assert!(
        (1..n).all(|i| !pinned[..i].contains(&pinned[i])),
        "{pinned:?}"
    );
    Some(pinned)
}

#[test]
fn cross_worker_pingpong_100k_over_mpsc() {
    let _w = Watchdog::new("pingpong_mpsc", Duration::from_secs(300));
    const N: u64 = 100_000;
    let rt = rt(2);
    let wrong_cpu = Arc::new(AtomicUsize::new(0));
    let t = std::time::Instant::now();
    let (a_rounds, b_rounds) = rt.block_on(|| {
        let (to_b, from_a) = mpsc::channel::<u64>();
        let (to_a, from_b) = mpsc::channel::<u64>();
        let wc = wrong_cpu.clone();
        let b = Builder::new()
            .name("pong")
            .affinity(cpus(&[1]))
            .spawn(move || {
                let mut rounds = 0u64;
                // Ends when the ping side drops its sender.
                while let Ok(v) = from_a.recv() {
                    if greenos::current_cpu() != 1 {
                        wc.fetch_add(1, Ordering::Relaxed);
                    }
                    to_a.send(v + 1).unwrap();
                    rounds += 1;
                }
                rounds
            })
            .unwrap();
        let wc = wrong_cpu.clone();
        let a = Builder::new()
            .name("ping")
            .affinity(cpus(&[0]))
            .spawn(move || {
                let mut v = 0u64;
                let mut rounds = 0u64;
                for _ in 0..N {
                    to_b.send(v).unwrap();
                    let back = from_b.recv().unwrap();
                    assert_eq!(back, v + 1);
                    v = back;
                    if greenos::current_cpu() != 0 {
                        wc.fetch_add(1, Ordering::Relaxed);
                    }
                    rounds += 1;
                }
                assert_eq!(v, N);
                rounds
            })
            .unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "{N} cross-CPU round trips over mpsc: {:?} ({:?}/round trip)",
        t.elapsed(),
        t.elapsed() / N as u32
    );
    assert_eq!(a_rounds, N);
    assert_eq!(b_rounds, N);
    assert_eq!(wrong_cpu.load(Ordering::Relaxed), 0);
}

#[test]
fn cross_worker_pingpong_100k_over_join_handles() {
    let _w = Watchdog::new("pingpong_join", Duration::from_secs(300));
    const N: u64 = 100_000;
    let rt = rt(2);
    let t = std::time::Instant::now();
    // Each round: the CPU-0 side spawns a one-shot task pinned to CPU 1 and
    // joins it; each side checks its CPU every time.
    let count = rt.block_on(|| {
        Builder::new()
            .affinity(cpus(&[0]))
            .spawn(|| {
                let mut v = 0u64;
                for _ in 0..N {
                    let h = Builder::new()
                        .affinity(cpus(&[1]))
                        .spawn(move || {
                            assert_eq!(greenos::current_cpu(), 1);
                            v + 1
                        })
                        .unwrap();
                    v = h.join().unwrap();
                    assert_eq!(greenos::current_cpu(), 0);
                }
                v
            })
            .unwrap()
            .join()
            .unwrap()
    });
    eprintln!("{N} cross-CPU spawn+join round trips: {:?}", t.elapsed());
    assert_eq!(count, N);
}

#[test]
fn migrate_back_and_forth_with_sched_setaffinity() {
    let _w = Watchdog::new("migrate_back_and_forth", Duration::from_secs(300));
    let n = scaled(20_000);
    let rt = common::builder(2).pin_workers(true).build().unwrap();
    let Some(os) = worker_os_cpus(&rt, 2) else {
        return;
    };
    let t = std::time::Instant::now();
    let os2 = os.clone();
    let moved = rt.block_on(move || {
        // Two tasks migrate at once, in opposite phase, so both CPUs send
        // and receive.
        let hs: Vec<_> = (0..2usize)
            .map(|phase| {
                let os = os2.clone();
                greenos::spawn(move || {
                    for i in 0..n {
                        let target = (i + phase) % 2;
                        sched_setaffinity(Pid(0), &cpus(&[target])).unwrap();
                        assert_eq!(greenos::current_cpu(), target, "round {i}");
                        // No greenos call since: still on the same OS thread.
                        assert_eq!(os_cpu(), os[target], "round {i}: OS CPU");
                        if i % 64 == 0 {
                            assert_eq!(sched_getaffinity(Pid(0)).unwrap(), cpus(&[target]));
                            greenos::yield_now();
                            assert_eq!(greenos::current_cpu(), target);
                        }
                    }
                    sched_setaffinity(Pid(0), &CpuSet::all(2)).unwrap();
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    eprintln!(
        "2 x {n} affinity migrations: {:?}; metrics {:?}",
        t.elapsed(),
        rt.metrics()
            .cpus
            .iter()
            .map(|c| (c.migrations_in, c.migrations_out))
            .collect::<Vec<_>>()
    );
    assert_eq!(moved, 2 * n);
    let m = rt.metrics();
    assert!(
        m.total(|c| c.migrations_out) as usize >= n,
        "migrations not counted: {m:?}"
    );
}

#[test]
fn every_worker_runs_on_its_pinned_os_cpu() {
    let _w = Watchdog::new("pinned_os_cpu", Duration::from_secs(120));
    let rt = common::builder(2).pin_workers(true).build().unwrap();
    let Some(os) = worker_os_cpus(&rt, 2) else {
        return;
    };
    let seen = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let s = seen.clone();
    rt.block_on(move || {
        let hs: Vec<_> = (0..200)
            .map(|_| {
                let os = os.clone();
                let s = s.clone();
                greenos::spawn(move || {
                    // At least 50 rounds, and on until both workers have run
                    // some task (under load the OS may run the second worker
                    // thread late; the watchdog bounds the wait).
                    let mut rounds = 0;
                    while rounds < 50 || s.iter().any(|c| c.load(Ordering::Relaxed) == 0) {
                        let cpu = greenos::current_cpu();
                        assert_eq!(os_cpu(), os[cpu], "worker {cpu}");
                        s[cpu].fetch_add(1, Ordering::Relaxed);
                        greenos::yield_now();
                        rounds += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    // Both workers ran some of them (fork balancing / stealing).
    assert!(
        seen.iter().all(|c| c.load(Ordering::Relaxed) > 0),
        "{seen:?}"
    );
}

#[test]
fn set_affinity_of_another_task_moves_it() {
    let _w = Watchdog::new("set_affinity_other", Duration::from_secs(120));
    let rt = rt(2);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let cpu_now = Arc::new(AtomicUsize::new(usize::MAX));
        let (st, c) = (stop.clone(), cpu_now.clone());
        let h = Builder::new()
            .affinity(cpus(&[0]))
            .spawn(move || {
                while !st.load(Ordering::Acquire) {
                    c.store(greenos::current_cpu(), Ordering::Release);
                    greenos::sleep(Duration::from_micros(200));
                }
            })
            .unwrap();
        let pid = h.task().pid();
        for &target in [1usize, 0, 1, 0, 1].iter() {
            sched_setaffinity(pid, &cpus(&[target])).unwrap();
            assert_eq!(sched_getaffinity(pid).unwrap(), cpus(&[target]));
            assert_eq!(h.task().affinity(), cpus(&[target]));
            // It moves once its CPU next looks at it; from then on it stays.
            let mut ok = false;
            for _ in 0..20_000 {
                greenos::sleep(Duration::from_micros(100));
                if cpu_now.load(Ordering::Acquire) == target {
                    ok = true;
                    break;
                }
            }
            assert!(ok, "task never moved to CPU {target}");
            for _ in 0..20 {
                greenos::sleep(Duration::from_micros(300));
                assert_eq!(cpu_now.load(Ordering::Acquire), target);
            }
        }
        stop.store(true, Ordering::Release);
        h.join().unwrap();
    });
}

greenos::task_local! {
    static TAG: Cell<u64> = Cell::new(0);
    static TRAIL: RefCell<Vec<usize>> = RefCell::new(Vec::new());
    static GUARD: RefCell<Option<DropCount>> = RefCell::new(None);
}

#[test]
fn task_locals_follow_the_task_across_migrations() {
    let _w = Watchdog::new("task_locals_migrate", Duration::from_secs(300));
    let rounds = scaled(5_000);
    let rt = rt(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    rt.block_on(move || {
        // The init task has its own values.
        TAG.with(|t| t.set(u64::MAX));
        let hs: Vec<_> = (1..=4u64)
            .map(|id| {
                let d = d.clone();
                greenos::spawn(move || {
                    // Fresh task: the initial value, not another task's.
                    assert_eq!(TAG.with(Cell::get), 0);
                    assert!(TRAIL.with(|t| t.borrow().is_empty()));
                    TAG.with(|t| t.set(id));
                    GUARD.with(|g| *g.borrow_mut() = Some(DropCount(d)));
                    for i in 0..rounds {
                        let target = (i + id as usize) % 2;
                        sched_setaffinity(Pid(0), &cpus(&[target])).unwrap();
                        let cpu = greenos::current_cpu();
                        assert_eq!(cpu, target);
                        TRAIL.with(|t| t.borrow_mut().push(cpu));
                        greenos::yield_now();
                        assert_eq!(TAG.with(Cell::get), id, "round {i}");
                    }
                    let trail = TRAIL.with(|t| t.borrow().clone());
                    assert_eq!(trail.len(), rounds);
                    assert!(trail
                        .iter()
                        .enumerate()
                        .all(|(i, &c)| c == (i + id as usize) % 2));
                    TAG.with(Cell::get)
                })
            })
            .collect();
        for (h, id) in hs.into_iter().zip(1u64..) {
            assert_eq!(h.join().unwrap(), id);
        }
        // A task's locals die before its joiner sees the result.
        assert_eq!(d.load(Ordering::SeqCst), 4);
        assert_eq!(TAG.with(Cell::get), u64::MAX);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

#[test]
fn pinned_task_stays_on_its_first_cpu_with_the_other_idle() {
    let _w = Watchdog::new("pinned_alone", Duration::from_secs(120));
    let rt = rt(2);
    let os = worker_os_cpus(&rt, 2);
    let n = scaled(50_000);
    rt.block_on(|| {
        let os = os.clone();
        let h = Builder::new()
            .pinned()
            .spawn(move || {
                let first = greenos::current_cpu();
                assert_eq!(greenos::current().affinity(), cpus(&[first]));
                for i in 0..n {
                    greenos::yield_now();
                    assert_eq!(greenos::current_cpu(), first, "yield {i}");
                    if let Some(os) = &os {
                        assert_eq!(os_cpu(), os[first]);
                    }
                    if i % 1000 == 0 {
                        greenos::sleep(Duration::from_micros(50));
                        assert_eq!(greenos::current_cpu(), first, "sleep {i}");
                    }
                }
                first
            })
            .unwrap();
        let first = h.join().unwrap();
        assert!(first < 2);
    });
}

#[test]
fn pinned_task_stays_while_its_cpu_sheds_load() {
    let _w = Watchdog::new("pinned_busy", Duration::from_secs(120));
    let rt = rt(2);
    let n = scaled(20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    rt.block_on(move || {
        let h = Builder::new()
            .pinned()
            .spawn(move || {
                let first = greenos::current_cpu();
                // Companions spawned here queue on this CPU; the idle CPU
                // steals or is pushed some of them, never the pinned task.
                // (Children inherit the narrowed mask, as forked processes
                // inherit affinity, so they are given the full one.)
                // Set by a companion running on the other CPU. The pinned
                // task yields at least `n` times and until this is set (how
                // soon the idle CPU steals depends on the host scheduling
                // its thread; the watchdog bounds the wait).
                let moved = Arc::new(AtomicBool::new(false));
                let companions: Vec<_> = (0..16)
                    .map(|_| {
                        let st = st.clone();
                        let moved = moved.clone();
                        Builder::new().affinity(CpuSet::all(2)).spawn(move || {
                            let mut cpus_seen = [false; 2];
                            while !st.load(Ordering::Acquire) {
                                let cpu = greenos::current_cpu();
                                cpus_seen[cpu] = true;
                                if cpu != first {
                                    moved.store(true, Ordering::Release);
                                }
                                greenos::yield_now();
                            }
                            cpus_seen
                        })
                    })
                    .collect::<std::io::Result<Vec<_>>>()
                    .unwrap();
                let mut i = 0usize;
                while i < n || !moved.load(Ordering::Acquire) {
                    greenos::yield_now();
                    assert_eq!(greenos::current_cpu(), first, "yield {i}");
                    i += 1;
                }
                st.store(true, Ordering::Release);
                let seen = companions
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>();
                (first, seen)
            })
            .unwrap();
        let (first, seen) = h.join().unwrap();
        let elsewhere = seen.iter().filter(|s| s[1 - first]).count();
        assert!(elsewhere > 0, "no companion ever ran on the idle CPU");
        eprintln!("pinned on CPU {first}; {elsewhere} of 16 companions ran on the other CPU");
    });
}

#[test]
fn affinity_one_holds_while_others_are_stolen() {
    let _w = Watchdog::new("affinity_one", Duration::from_secs(120));
    let rt = rt(2);
    let n = scaled(50_000);
    rt.block_on(|| {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let h = Builder::new()
            .affinity(cpus(&[1]))
            .spawn(move || {
                // A child inherits the mask.
                let child =
                    greenos::spawn(|| (greenos::current().affinity(), greenos::current_cpu()));
                assert_eq!(child.join().unwrap(), (cpus(&[1]), 1));
                for i in 0..n {
                    assert_eq!(greenos::current_cpu(), 1, "yield {i}");
                    greenos::yield_now();
                    if i % 64 == 0 {
                        // Leave CPU 1 idle now and then, so it steals.
                        greenos::sleep(Duration::from_micros(20));
                        assert_eq!(greenos::current_cpu(), 1, "sleep {i}");
                    }
                }
                d.store(true, Ordering::Release);
            })
            .unwrap();
        // Meanwhile: waves of short tasks spawned from both CPUs, so the
        // CPUs keep stealing from each other's staging deques.
        // At least one wave, however soon the pinned task finishes (the
        // host may run this CPU's thread late).
        let mut waves = 0;
        loop {
            let hs: Vec<_> = (0..500)
                .map(|i| {
                    greenos::spawn(move || {
                        let inner: Vec<_> = (0..4).map(|k| greenos::spawn(move || i * k)).collect();
                        greenos::yield_now();
                        inner.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
                    })
                })
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), 6 * i);
            }
            waves += 1;
            if done.load(Ordering::Acquire) {
                break;
            }
        }
        h.join().unwrap();
        assert!(waves > 0);
    });
    let m = rt.metrics();
    eprintln!(
        "steals {} migrations in {} out {}",
        m.total(|c| c.steals),
        m.total(|c| c.migrations_in),
        m.total(|c| c.migrations_out)
    );
}

#[test]
fn sched_affinity_errors() {
    let _w = Watchdog::new("affinity_errors", Duration::from_secs(60));
    let rt = rt(2);
    rt.block_on(|| {
        // Empty set, or only CPUs this runtime lacks: EINVAL.
        for bad in [CpuSet::new(), cpus(&[2]), cpus(&[5, 100])] {
            let e = sched_setaffinity(Pid(0), &bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
            let e = Builder::new()
                .affinity(bad.clone())
                .spawn(|| ())
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        // The mask is unchanged by the failed calls.
        assert_eq!(sched_getaffinity(Pid(0)).unwrap(), CpuSet::all(2));
        // A set naming some valid CPUs is accepted.
        sched_setaffinity(Pid(0), &cpus(&[1, 7])).unwrap();
        assert_eq!(greenos::current_cpu(), 1);
        sched_setaffinity(Pid(0), &CpuSet::all(2)).unwrap();

        // Unknown pid: ESRCH.
        let ghost = Pid(987_654);
        let e = sched_setaffinity(ghost, &cpus(&[0])).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        let e = sched_getaffinity(ghost).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));

        // A finished task's pid is unknown too.
        let h = greenos::spawn(greenos::getpid);
        let pid = h.join().unwrap();
        assert!(wait_until_green(|| sched_getaffinity(pid).is_err()));
        let e = sched_getaffinity(pid).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));

        // Pid(0) and one's own pid name the caller.
        let me = greenos::getpid();
        sched_setaffinity(me, &cpus(&[0])).unwrap();
        assert_eq!(sched_getaffinity(Pid(0)).unwrap(), cpus(&[0]));
        assert_eq!(greenos::current_cpu(), 0);
        sched_setaffinity(Pid(0), &CpuSet::all(2)).unwrap();

        // Another user's task: EPERM for a non-root caller.
        if greenos::getuid() == 0 {
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let root_task = greenos::spawn(move || {
                while !st.load(Ordering::Acquire) {
                    greenos::sleep(Duration::from_millis(1));
                }
            });
            let target = root_task.task().pid();
            let r = Builder::new()
                .uid(1000)
                .gid(1000)
                .spawn(move || {
                    let e = sched_setaffinity(target, &cpus(&[0])).unwrap_err();
                    e.raw_os_error()
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(r, Some(libc::EPERM));
            // Root may move anybody's task.
            sched_setaffinity(target, &cpus(&[1])).unwrap();
            stop.store(true, Ordering::Release);
            root_task.join().unwrap();
        }
    });
    // Outside a task these calls panic.
    let p = std::panic::catch_unwind(|| sched_getaffinity(Pid(0))).unwrap_err();
    let msg = common::panic_text(&*p).unwrap_or("");
    assert!(msg.contains("greenos task"), "{msg}");
}

/// Polls `cond` from a task, sleeping between tries (up to ~10 s).
fn wait_until_green(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if cond() {
            return true;
        }
        greenos::sleep(Duration::from_millis(1));
    }
    cond()
}

#[test]
fn unpinned_workers_still_honour_affinity() {
    let _w = Watchdog::new("unpinned_workers", Duration::from_secs(60));
    let rt = common::builder(3).pin_workers(false).build().unwrap();
    let hs: Vec<_> = (0..3usize)
        .map(|cpu| {
            rt.spawn_with(Builder::new().affinity(cpus(&[cpu])), move || {
                for _ in 0..1000 {
                    assert_eq!(greenos::current_cpu(), cpu);
                    greenos::yield_now();
                }
                cpu
            })
            .unwrap()
        })
        .collect();
    for (cpu, h) in hs.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), cpu);
    }
    assert!(wait_until(Duration::from_secs(5), || rt.live_tasks() == 0));
}
