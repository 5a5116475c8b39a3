//! Tasks through the public API: spawn and join at scale, deep nesting,
//! panics, sleep ordering, pids, credentials and argument errors.

mod common;

use std::collections::HashSet;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{panic_text, rt, Watchdog};
use greenos::task::Builder;
use greenos::Pid;

#[test]
fn spawn_join_100k_exact_sum() {
    let _w = Watchdog::new("spawn_join_100k_exact_sum", Duration::from_secs(120));
    const N: u64 = 100_000;
    let rt = rt(2);
    let t = Instant::now();
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..N).map(|i| greenos::spawn(move || i * 3 + 1)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("task failed"))
            .sum::<u64>()
    });
    eprintln!("spawn+join of {N} tasks on 2 workers: {:?}", t.elapsed());
    assert_eq!(sum, 3 * (N * (N - 1) / 2) + N);
    // Every task is gone; only nothing (block_on returned) is left.
    assert!(common::wait_until(Duration::from_secs(10), || rt
        .live_tasks()
        == 0));
    // The CPUs count an exit after the task's stack is released, a moment
    // after its pid is freed.
    assert!(
        common::wait_until(Duration::from_secs(10), || rt
            .metrics()
            .total(|c| c.tasks_exited)
            > N),
        "{:?}",
        rt.metrics()
    );
}

#[test]
fn spawn_from_outside_the_runtime() {
    let _w = Watchdog::new("spawn_from_outside_the_runtime", Duration::from_secs(60));
    let rt = rt(2);
    let handles: Vec<_> = (0..1000u64)
        .map(|i| rt.spawn(move || i + u64::from(greenos::getpid() == Pid(0))))
        .collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 999 * 1000 / 2);
    let h = rt
        .spawn_with(Builder::new().name("outside").nice(3), || {
            (
                greenos::current().name().map(str::to_owned),
                greenos::current().nice(),
            )
        })
        .unwrap();
    assert_eq!(h.task().name(), Some("outside"));
    assert_eq!(h.join().unwrap(), (Some("outside".to_owned()), 3));
}

/// A chain: each task spawns the next and joins it, so every task is
/// alive (parked in `join`) when the last one runs.
fn chain(depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    greenos::spawn(move || chain(depth - 1)).join().unwrap() + 1
}

#[test]
fn nested_chain_10k() {
    let _w = Watchdog::new("nested_chain_10k", Duration::from_secs(120));
    let rt = rt(2);
    let t = Instant::now();
    let depth = rt.block_on(|| chain(10_000));
    eprintln!("chain of 10,000 nested spawn+join: {:?}", t.elapsed());
    assert_eq!(depth, 10_000);
}

/// A binary tree of tasks: returns the number of nodes.
fn tree(depth: u32) -> u64 {
    if depth == 0 {
        return 1;
    }
    let l = greenos::spawn(move || tree(depth - 1));
    let r = greenos::spawn(move || tree(depth - 1));
    l.join().unwrap() + r.join().unwrap() + 1
}

#[test]
fn nested_binary_tree_depth_14() {
    let _w = Watchdog::new("nested_binary_tree_depth_14", Duration::from_secs(120));
    let rt = rt(2);
    let t = Instant::now();
    let nodes = rt.block_on(|| tree(14));
    eprintln!("binary tree of depth 14 (32,767 tasks): {:?}", t.elapsed());
    assert_eq!(nodes, (1 << 15) - 1);
}

#[test]
fn panicking_task_gives_join_error_and_runtime_keeps_running() {
    let _w = Watchdog::new("panicking_task", Duration::from_secs(60));
    let rt = rt(2);
    rt.block_on(|| {
        let e = greenos::spawn(|| -> u32 { panic!("boom from a task") })
            .join()
            .unwrap_err();
        assert!(e.is_panic());
        assert!(!e.is_cancelled());
        assert_eq!(e.panic_message(), Some("boom from a task"));
        assert_eq!(e.to_string(), "task panicked: boom from a task");
        let io: io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(libc::EIO));

        // A formatted message arrives as a String payload.
        let e = greenos::spawn(|| -> u32 { panic!("task {} failed", 7) })
            .join()
            .unwrap_err();
        assert_eq!(e.panic_message(), Some("task 7 failed"));
        let payload = e.into_panic().unwrap();
        assert_eq!(panic_text(&*payload), Some("task 7 failed"));

        // A non-string payload survives too.
        let e = greenos::spawn(|| std::panic::panic_any(42u32))
            .join()
            .unwrap_err();
        assert_eq!(e.panic_message(), None);
        assert_eq!(e.into_panic().unwrap().downcast_ref::<u32>(), Some(&42));

        // Many panics at once, mixed with good tasks.
        let hs: Vec<_> = (0..200u32)
            .map(|i| {
                greenos::spawn(move || {
                    greenos::yield_now();
                    if i % 2 == 0 {
                        panic!("even {i}");
                    }
                    i
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            match h.join() {
                Ok(v) => assert_eq!(v as usize, i),
                Err(e) => assert_eq!(e.panic_message(), Some(format!("even {i}").as_str())),
            }
        }
    });
    // The runtime still runs new work, from inside and outside.
    let sum = rt.block_on(|| {
        (0..100u64)
            .map(|i| greenos::spawn(move || i))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<u64>()
    });
    assert_eq!(sum, 4950);
    assert_eq!(rt.spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn panic_in_block_on_resumes_on_caller() {
    let _w = Watchdog::new("panic_in_block_on", Duration::from_secs(60));
    let rt = rt(2);
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| {
            greenos::yield_now();
            panic!("block_on body panicked");
        })
    }));
    let p = r.unwrap_err();
    assert_eq!(panic_text(&*p), Some("block_on body panicked"));
    // The runtime is still usable.
    assert_eq!(rt.block_on(|| greenos::spawn(|| 11).join().unwrap()), 11);
    let p = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| std::panic::panic_any(String::from("second")))
    }))
    .unwrap_err();
    assert_eq!(panic_text(&*p), Some("second"));
    assert_eq!(rt.spawn(|| 12).join().unwrap(), 12);
}

#[test]
fn sequential_block_on_calls_are_pid_1() {
    let _w = Watchdog::new("sequential_block_on_pid_1", Duration::from_secs(60));
    let rt = rt(2);
    for i in 0..1000 {
        assert_eq!(rt.block_on(greenos::getpid), Pid(1), "block_on #{i}");
    }
}

#[test]
fn sleeps_wake_no_earlier_than_their_deadlines() {
    let _w = Watchdog::new("sleeps_wake_no_earlier", Duration::from_secs(60));
    let rt = rt(2);
    let order = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let slept = rt.block_on(|| {
        let hs: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                greenos::spawn(move || {
                    let t = Instant::now();
                    greenos::sleep(Duration::from_millis(ms));
                    let el = t.elapsed();
                    // std's Mutex is fine here: no greenos call while held.
                    order.lock().unwrap().push(ms);
                    (ms, el)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let total = t0.elapsed();
    // Each CPU fires its own timers; which of two CPUs gets to a due timer
    // first depends on the OS scheduling the worker threads (a loaded CI
    // machine can delay one by more than the 10 ms gap), so the order
    // across CPUs is not asserted here. One timer heap's order is checked
    // on the heap itself (`executor::timer::tests`).
    let mut order = order.lock().unwrap().clone();
    order.sort();
    assert_eq!(order, vec![10, 20, 30]);
    for (ms, el) in slept {
        assert!(
            el >= Duration::from_millis(ms),
            "slept {ms} ms but only {el:?} passed"
        );
    }
    assert!(total >= Duration::from_millis(30));
}

#[test]
fn sleep_zero_and_many_sleepers_on_one_worker() {
    let _w = Watchdog::new("sleep_many", Duration::from_secs(60));
    let rt = rt(1);
    let order = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(|| {
        greenos::sleep(Duration::ZERO);
        // Deadlines 2 ms apart, spawned in reverse.
        let hs: Vec<_> = (0..20u64)
            .rev()
            .map(|i| {
                let order = order.clone();
                greenos::spawn(move || {
                    let dur = Duration::from_millis(5 + 2 * i);
                    let start = Instant::now();
                    greenos::sleep(dur);
                    order.lock().unwrap().push((i, start.elapsed(), dur));
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 20);
    // Lower bounds only: each sleeper wakes no earlier than its deadline.
    // (Which finishes first depends on when each one started sleeping, 2 ms
    // apart at most here, so the order is checked on the timer heap itself:
    // `executor::timer::tests`.)
    for (i, slept, dur) in order {
        assert!(slept >= dur, "sleeper {i} slept {slept:?} of {dur:?}");
    }
}

#[test]
fn join_timeout_and_is_finished() {
    let _w = Watchdog::new("join_timeout", Duration::from_secs(60));
    let rt = rt(2);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let h = greenos::spawn(move || {
            while !s.load(Ordering::Acquire) {
                greenos::sleep(Duration::from_millis(1));
            }
            "done"
        });
        assert!(!h.is_finished());
        let t = Instant::now();
        let h = h.join_timeout(Duration::from_millis(20)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(!h.is_finished());
        stop.store(true, Ordering::Release);
        assert_eq!(
            h.join_timeout(Duration::from_secs(3600)).unwrap().unwrap(),
            "done"
        );
    });
    // From a plain OS thread as well.
    let h = rt.spawn(|| {
        greenos::sleep(Duration::from_millis(5));
        1
    });
    let mut h = h;
    let v = loop {
        match h.join_timeout(Duration::from_millis(1)) {
            Ok(r) => break r.unwrap(),
            Err(back) => h = back,
        }
    };
    assert_eq!(v, 1);
}

/// Joins that give up and come back race the joined task's completion, from
/// green tasks on both workers and from an OS thread: every result arrives,
/// none is lost to a wakeup that went to a joiner that had just left (the
/// join slot's protocol in `task.rs`). A lost wakeup shows up as the
/// watchdog firing, not as a slow pass: the joins' own timeouts are tiny.
#[test]
fn join_timeouts_racing_completions_lose_no_result() {
    let _w = Watchdog::new("join_timeout_races", Duration::from_secs(120));
    const N: u64 = 2_000;
    let rt = rt(2);
    let expect: u64 = (0..N).map(|i| i * 7).sum();
    let join_all = |handles: Vec<greenos::JoinHandle<u64>>| {
        let mut sum = 0;
        let mut timeouts = 0u64;
        for mut h in handles {
            sum += loop {
                match h.join_timeout(Duration::from_micros(20)) {
                    Ok(r) => break r.expect("task failed"),
                    Err(back) => {
                        timeouts += 1;
                        h = back;
                    }
                }
            };
        }
        (sum, timeouts)
    };
    let (green_sum, green_timeouts) = rt.block_on(move || {
        let joiners: Vec<_> = (0..4)
            .map(|_| {
                greenos::spawn(move || {
                    let handles: Vec<_> = (0..N / 4)
                        .map(|i| {
                            greenos::spawn(move || {
                                // Finish at scattered times: some before the
                                // join, some during a timed wait.
                                for _ in 0..(i % 5) {
                                    greenos::yield_now();
                                }
                                if i % 7 == 0 {
                                    greenos::sleep(Duration::from_micros(30));
                                }
                                i
                            })
                        })
                        .collect();
                    join_all(handles)
                })
            })
            .collect();
        joiners.into_iter().fold((0, 0), |(s, t), h| {
            let (a, b) = h.join().expect("joiner failed");
            (s + a, t + b)
        })
    });
    // Four joiners, each of tasks returning 0..N/4.
    assert_eq!(green_sum, 4 * (0..N / 4).sum::<u64>());
    // From the OS thread.
    let handles: Vec<_> = (0..N)
        .map(|i| {
            rt.spawn(move || {
                if i % 3 == 0 {
                    greenos::sleep(Duration::from_millis(2 + i % 3));
                }
                i * 7
            })
        })
        .collect();
    let (sum, thread_timeouts) = join_all(handles);
    assert_eq!(sum, expect);
    assert!(
        green_timeouts + thread_timeouts > 0,
        "no join ever timed out: the race was not exercised"
    );
    eprintln!("timed-out joins: green {green_timeouts}, thread {thread_timeouts}");
}

#[test]
fn getpid_unique_among_10k_live_tasks() {
    let _w = Watchdog::new("getpid_unique", Duration::from_secs(120));
    const N: usize = 10_000;
    let rt = rt(2);
    let seen = Arc::new(Mutex::new(Vec::with_capacity(N)));
    let go = Arc::new(AtomicBool::new(false));
    let (pids, handle_pids, live) = rt.block_on(|| {
        let init = greenos::getpid();
        let hs: Vec<_> = (0..N)
            .map(|_| {
                let seen = seen.clone();
                let go = go.clone();
                greenos::spawn(move || {
                    let me = greenos::getpid();
                    assert_eq!(greenos::current().pid(), me);
                    seen.lock().unwrap().push(me);
                    // Stay alive until every task has its pid. (Polling
                    // every 2 ms would overload 2 CPUs with 5M wakeups/s;
                    // CFS's sleeper credit then starves the unstarted
                    // tasks, as Linux would.)
                    while !go.load(Ordering::Acquire) {
                        greenos::sleep(Duration::from_millis(50));
                    }
                    assert_eq!(greenos::getpid(), me);
                    me
                })
            })
            .collect();
        while seen.lock().unwrap().len() < N {
            greenos::sleep(Duration::from_millis(5));
        }
        let live = rt.live_tasks();
        go.store(true, Ordering::Release);
        let handle_pids: Vec<Pid> = hs.iter().map(|h| h.task().pid()).collect();
        let joined: Vec<Pid> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(joined, handle_pids);
        assert!(!handle_pids.contains(&init));
        (seen.lock().unwrap().clone(), handle_pids, live)
    });
    assert!(
        live > N,
        "live_tasks {live} while {N} tasks + init were alive"
    );
    let set: HashSet<Pid> = pids.iter().copied().collect();
    assert_eq!(set.len(), N, "duplicate pids among live tasks");
    assert!(
        !set.contains(&Pid(0)),
        "pid 0 names the caller, never a task"
    );
    assert_eq!(set, handle_pids.into_iter().collect());
}

#[test]
fn block_on_runs_as_pid_1_init() {
    let _w = Watchdog::new("block_on_pid_1", Duration::from_secs(30));
    let rt = rt(2);
    let (pid, name) = rt.block_on(|| {
        (
            greenos::getpid(),
            greenos::current().name().map(str::to_owned),
        )
    });
    assert_eq!(pid, Pid(1));
    assert_eq!(name.as_deref(), Some("init"));
}

#[test]
fn credentials_are_inherited() {
    let _w = Watchdog::new("credentials_inherited", Duration::from_secs(30));
    let rt = rt(2);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    rt.block_on(|| {
        assert_eq!((greenos::getuid(), greenos::getgid()), (uid, gid));
        let h = greenos::spawn(|| {
            let grandchild = greenos::spawn(|| (greenos::getuid(), greenos::getgid()));
            (
                (greenos::getuid(), greenos::getgid()),
                grandchild.join().unwrap(),
            )
        });
        assert_eq!((h.task().uid(), h.task().gid()), (uid, gid));
        let (child, grandchild) = h.join().unwrap();
        assert_eq!(child, (uid, gid));
        assert_eq!(grandchild, (uid, gid));
    });
}

#[test]
fn non_root_task_cannot_become_root() {
    let _w = Watchdog::new("non_root_eperm", Duration::from_secs(30));
    let rt = rt(2);
    rt.block_on(|| {
        let body = || {
            assert_ne!(greenos::getuid(), 0);
            let me = (greenos::getuid(), greenos::getgid());
            // Credentials pass on unchanged ...
            let (u, g) = greenos::spawn(|| (greenos::getuid(), greenos::getgid()))
                .join()
                .unwrap();
            assert_eq!((u, g), me);
            // ... and naming one's own is allowed ...
            let same = Builder::new()
                .uid(me.0)
                .gid(me.1)
                .spawn(greenos::getuid)
                .unwrap();
            assert_eq!(same.join().unwrap(), me.0);
            // ... but becoming root, or anybody else, is not.
            let e = Builder::new().uid(0).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            let e = Builder::new().gid(0).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            let e = Builder::new().uid(me.0 + 1).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            // Raising priority needs privilege too.
            let e = Builder::new().nice(-1).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            // Lowering it is fine.
            assert_eq!(
                Builder::new()
                    .nice(4)
                    .spawn(|| greenos::current().nice())
                    .unwrap()
                    .join()
                    .unwrap(),
                4
            );
        };
        if greenos::getuid() == 0 {
            // Root drops to 1000:1000 first.
            let h = Builder::new().uid(1000).gid(1000).spawn(body).unwrap();
            assert_eq!((h.task().uid(), h.task().gid()), (1000, 1000));
            h.join().unwrap();
        } else {
            body();
        }
    });
}

#[test]
fn nice_and_stack_size_out_of_range_are_einval() {
    let _w = Watchdog::new("nice_einval", Duration::from_secs(30));
    let rt = rt(2);
    rt.block_on(|| {
        for bad in [20, 21, -21, i32::MIN, i32::MAX] {
            let e = Builder::new().nice(bad).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "nice {bad}");
        }
        for ok in [19, 0, -20] {
            let h = Builder::new()
                .nice(ok)
                .spawn(|| greenos::current().nice())
                .unwrap();
            assert_eq!(h.join().unwrap(), ok);
        }
        for bad in [0usize, 1024, (16 << 10) - 1, (1 << 30) + 1] {
            let e = Builder::new().stack_size(bad).spawn(|| ()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "stack {bad}");
        }
        let h = Builder::new()
            .stack_size(16 << 10)
            .spawn(|| greenos::current().stack_size())
            .unwrap();
        assert!(h.join().unwrap() >= 16 << 10);
        // Nice is inherited.
        let h = Builder::new()
            .nice(7)
            .spawn(|| greenos::spawn(|| greenos::current().nice()).join().unwrap())
            .unwrap();
        assert_eq!(h.join().unwrap(), 7);
    });
    let e = rt.spawn_with(Builder::new().nice(20), || ()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn spawn_outside_a_runtime_panics() {
    let r = catch_unwind(|| greenos::spawn(|| 1));
    let p = r.unwrap_err();
    let msg = panic_text(&*p).expect("string panic message");
    assert!(msg.contains("greenos task"), "message: {msg}");
    // The other task-only calls say the same.
    for f in [
        (|| {
            greenos::getpid();
        }) as fn(),
        || greenos::sleep(Duration::from_millis(1)),
        || greenos::yield_now(),
        || {
            greenos::current_cpu();
        },
        || drop(greenos::current()),
    ] {
        let p = catch_unwind(f).unwrap_err();
        let msg = panic_text(&*p).expect("string panic message");
        assert!(msg.contains("greenos task"), "message: {msg}");
    }
    // maybe_yield is a no-op outside a task.
    assert!(!greenos::maybe_yield());
}

#[test]
fn block_on_inside_a_task_panics() {
    let _w = Watchdog::new("block_on_inside", Duration::from_secs(30));
    let rt = Arc::new(rt(2));
    let rt2 = rt.clone();
    let r = rt.block_on(move || {
        let rt3 = rt2.clone();
        greenos::spawn(move || rt3.block_on(|| 1)).join()
    });
    let e = r.unwrap_err();
    assert!(
        e.panic_message()
            .is_some_and(|m| m.contains("inside a greenos task")),
        "{e:?}"
    );
    // Every clone died with its task; the runtime drops here, on this thread.
    let rt = Arc::into_inner(rt).expect("a task kept a clone of the runtime");
    drop(rt);
}

#[test]
fn task_handle_reports_name_affinity_and_cpu_time() {
    let _w = Watchdog::new("task_handle", Duration::from_secs(30));
    let rt = rt(2);
    let counter = Arc::new(AtomicUsize::new(0));
    rt.block_on(|| {
        let c = counter.clone();
        let h = Builder::new()
            .name("worker-a")
            .spawn(move || {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(20) {
                    c.fetch_add(1, Ordering::Relaxed);
                    greenos::maybe_yield();
                }
                greenos::current().name().map(str::to_owned)
            })
            .unwrap();
        let task = h.task().clone();
        assert_eq!(task.name(), Some("worker-a"));
        assert_eq!(task.affinity(), greenos::CpuSet::all(2));
        assert_eq!(h.join().unwrap().as_deref(), Some("worker-a"));
        // It ran ~20 ms of CPU time by the runtime's accounting.
        assert!(
            task.cpu_time() >= Duration::from_millis(10),
            "{:?}",
            task.cpu_time()
        );
        assert!(task.cpu() < 2);
    });
    assert!(counter.load(Ordering::Relaxed) > 0);
}

#[test]
fn spawn_and_pid_lookup_fit_the_default_stack() {
    let _w = Watchdog::new("pid_page_on_stack", Duration::from_secs(60));
    // The runtime's own default stack (64 KiB), not this suite's.
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    let sum = rt.block_on(|| {
        // Looking up a pid in a page never used must not need a new page.
        let e = greenos::task::sched_getaffinity(Pid(987_654)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        // Spawning past the first 4096 pids needs a second page.
        let hs: Vec<_> = (0..5000u64).map(|i| greenos::spawn(move || i)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 4999 * 5000 / 2);
    // A small stack, as a user may ask for.
    let h = rt
        .spawn_with(Builder::new().stack_size(16 << 10), || {
            let e = greenos::task::sched_getaffinity(Pid(1_987_654)).unwrap_err();
            e.raw_os_error()
        })
        .unwrap();
    assert_eq!(h.join().unwrap(), Some(libc::ESRCH));
}

greenos::task_local! {
    static CX_LOCAL: std::cell::Cell<u32> = std::cell::Cell::new(5);
}

/// `task::with_cx` (the running task looked up once) answers as the plain
/// calls do: `None` outside a task; inside, the same identity, identity
/// switch (restored on unwind), stack check and task-locals, also after
/// the task has yielded (the handle is the task, not a thread-local).
#[test]
fn task_cx_matches_the_plain_calls() {
    use greenos::task::{identity, with_cx, Identity};
    assert!(with_cx(|_| ()).is_none(), "not a task");
    let rt = common::rt(2);
    rt.block_on(|| {
        let other = Identity {
            pid: greenos::Pid(7101),
            uid: 1101,
            gid: 2101,
        };
        with_cx(|cx| {
            assert_eq!(cx.identity(), identity());
            let left = cx.stack_remaining().expect("on the task's stack");
            assert!(left > 0 && left <= greenos::current().stack_size());
            CX_LOCAL.with_cx(cx, |v| v.set(v.get() + 1));
            greenos::yield_now();
            assert_eq!(CX_LOCAL.with(|v| v.get()), 6);
            cx.with_identity(other, || {
                assert_eq!(greenos::getpid(), other.pid);
                assert_eq!(cx.identity(), other);
            });
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cx.with_identity(other, || panic!("fails"))
            }));
            assert!(r.is_err());
            assert_eq!(cx.identity(), identity());
            assert_ne!(identity(), other);
        })
        .expect("in a task");
    });
}

/// `with_identity` switches what getpid/getuid/getgid report, nests, and
/// restores every level on return and on unwind; the real pid is unchanged.
#[test]
fn with_identity_nests_and_restores() {
    use greenos::task::{identity, with_identity, Identity};
    let rt = common::rt(1);
    rt.block_on(|| {
        let me = identity();
        let real = greenos::current().pid();
        let b = Identity {
            pid: greenos::Pid(7001),
            uid: 1001,
            gid: 2001,
        };
        let c = Identity {
            pid: greenos::Pid(7002),
            uid: 1002,
            gid: 2002,
        };
        with_identity(b, || {
            assert_eq!(greenos::getpid(), b.pid);
            assert_eq!((greenos::getuid(), greenos::getgid()), (1001, 2001));
            with_identity(c, || {
                assert_eq!(identity(), c);
                assert_eq!(
                    greenos::current().pid(),
                    real,
                    "the task itself is the caller"
                );
                // A non-root identity cannot spawn as root.
                let r = greenos::task::Builder::new().uid(0).spawn(|| ());
                assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::EPERM));
            });
            assert_eq!(identity(), b);
            let r = std::panic::catch_unwind(|| with_identity(c, || panic!("dispatcher failed")));
            assert!(r.is_err());
            assert_eq!(identity(), b, "restored on unwind");
        });
        assert_eq!(identity(), me);
    });
}

/// A task-local value that marks itself dead as it drops, so that a read
/// through a stale pointer (memory freed but not yet reused) shows.
struct Canary(std::cell::Cell<u64>);

const CANARY_DEAD: u64 = 0xdead_dead;

impl Drop for Canary {
    fn drop(&mut self) {
        self.0.set(CANARY_DEAD);
    }
}

/// Reads the fast key as a task ends, from the destructor of a local that
/// drops after the fast key's value (a lower slot: used first).
struct LateReader;

static LATE_READS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

impl Drop for LateReader {
    fn drop(&mut self) {
        let v = greenos::task::with_cx(|cx| FAST_KEY_A.with_cx_fast(cx, |c| c.0.get()));
        let w = FAST_KEY_A.with_fast_or(|c| Some(c.0.get()), || None);
        LATE_READS.lock().unwrap().extend(v.into_iter().chain(w));
    }
}

greenos::task_local! {
    static LATE_READER: LateReader = LateReader;
    static FAST_KEY_A: Canary = Canary(std::cell::Cell::new(0));
    static FAST_KEY_B: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// `LocalKey::with_cx_fast` and `with_fast_or`: the first key that uses
/// them is reached through the task's fast word (or its worker's copy of
/// it), any other the ordinary way; either way each task sees its own
/// values, across yields and moves between CPUs, and what the plain `with`
/// sees. As the task ends, the fast word never outlives the
/// value it names: a destructor that reads the fast key after its value
/// dropped gets a fresh value, not the dropped one.
#[test]
fn the_fast_task_local_is_per_task_and_never_stale() {
    use greenos::task::with_cx;
    let rt = rt(2);
    LATE_READS.lock().unwrap().clear();
    let tasks: Vec<_> = (1..=8u64)
        .map(|i| {
            rt.spawn(move || {
                // The reader first: a lower slot, so it drops after the
                // fast key's value (locals drop from the highest slot).
                LATE_READER.with(|_| ());
                for round in 0..50u64 {
                    with_cx(|cx| {
                        FAST_KEY_A.with_cx_fast(cx, |c| c.0.set(i * 1000 + round));
                        FAST_KEY_B.with_cx_fast(cx, |c| c.set(i + round));
                    })
                    .expect("in a task");
                    greenos::yield_now();
                    let (a, b) = with_cx(|cx| {
                        (
                            FAST_KEY_A.with_cx_fast(cx, |c| c.0.get()),
                            FAST_KEY_B.with_cx_fast(cx, |c| c.get()),
                        )
                    })
                    .expect("in a task");
                    assert_eq!((a, b), (i * 1000 + round, i + round));
                    let through_worker = (
                        FAST_KEY_A.with_fast_or(|c| c.0.get(), || unreachable!("in a task")),
                        FAST_KEY_B.with_fast_or(|c| c.get(), || unreachable!("in a task")),
                    );
                    assert_eq!(through_worker, (a, b));
                    assert_eq!(FAST_KEY_A.with(|c| c.0.get()), a);
                    assert_eq!(FAST_KEY_B.with(|c| c.get()), b);
                }
            })
        })
        .collect();
    for t in tasks {
        t.join().unwrap();
    }
    let late = LATE_READS.lock().unwrap().clone();
    assert_eq!(late.len(), 16, "each task's reader ran, both ways");
    assert!(
        late.iter().all(|&v| v == 0),
        "a late read must see a fresh value, not a dropped one: {late:x?}"
    );
}
