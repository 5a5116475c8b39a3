//! Dropping a runtime with tasks still alive: every blocked, queued or
//! never-started task is cancelled, its destructors run, the drop returns,
//! and join handles report `Cancelled`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{rt, wait_until, within, DropCount, Watchdog};
use greenos::JoinError;

const HOUR: Duration = Duration::from_secs(3600);
const DROP_LIMIT: Duration = Duration::from_secs(60);

/// Holds `n` drop counters at successive stack depths, then sleeps forever.
fn deep_sleep(n: usize, drops: &Arc<AtomicUsize>, started: &AtomicUsize) {
    let _g = DropCount(drops.clone());
    if n > 1 {
        deep_sleep(n - 1, drops, started);
    } else {
        started.fetch_add(1, Ordering::SeqCst);
        greenos::sleep(HOUR);
    }
    unreachable!("woke from an hour's sleep");
}

#[test]
fn drop_cancels_blocked_tasks_and_runs_their_destructors() {
    let _w = Watchdog::new("drop_cancels_blocked_tasks", Duration::from_secs(120));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let mut handles: Vec<greenos::JoinHandle<()>> = Vec::new();
    let mut expected = 0;
    let mut expected_started = 0;

    // 1. Sleepers: a guard on the stack, asleep for an hour.
    for _ in 0..100 {
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d);
            s.fetch_add(1, Ordering::SeqCst);
            greenos::sleep(HOUR);
            unreachable!("woke from an hour's sleep");
        }));
    }
    expected += 100;
    expected_started += 100;

    // 2. Guards at many stack depths of one task.
    for _ in 0..10 {
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || deep_sleep(50, &d, &s)));
    }
    expected += 10 * 50;
    expected_started += 10;

    // 3. Joiners of tasks that never end (the joined task is moved into its
    //    joiner, so both hold guards and both are blocked).
    for _ in 0..50 {
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d.clone());
            // The child's guard is made here and moved in: the child may
            // not have run yet when the runtime drops.
            let child_guard = DropCount(d);
            let never = greenos::spawn(move || {
                let _g = child_guard;
                greenos::sleep(HOUR);
            });
            s.fetch_add(1, Ordering::SeqCst);
            let r = never.join();
            unreachable!("joined a task that never ends: {r:?}");
        }));
    }
    expected += 50 * 2;
    expected_started += 50;

    // 4. A guard captured by the closure but not yet used (dropped with the
    //    closure's frame when cancelled), in tasks that yield forever.
    for _ in 0..4 {
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let g = DropCount(d);
            s.fetch_add(1, Ordering::SeqCst);
            loop {
                greenos::yield_now();
                std::hint::black_box(&g);
            }
        }));
    }
    expected += 4;
    expected_started += 4;

    assert!(
        wait_until(Duration::from_secs(30), || started.load(Ordering::SeqCst)
            == expected_started),
        "only {} of {expected_started} tasks started",
        started.load(Ordering::SeqCst)
    );
    // Every guard is still alive.
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert!(rt.live_tasks() >= expected_started);

    // 5. Tasks submitted just before the drop: some may never start; their
    //    closures (holding guards) must be dropped all the same.
    for _ in 0..1000 {
        let d = drops.clone();
        let g = DropCount(d);
        handles.push(rt.spawn(move || {
            let _g = g;
            greenos::sleep(HOUR);
        }));
    }
    expected += 1000;

    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), expected);

    // Join handles of cancelled tasks report Cancelled, from this plain
    // thread and from another one.
    let tail = handles.split_off(handles.len() / 2);
    let other = std::thread::spawn(move || {
        tail.into_iter()
            .map(|h| {
                assert!(h.is_finished());
                h.join()
            })
            .filter(|r| matches!(r, Err(JoinError::Cancelled)))
            .count()
    });
    let n = handles.len();
    for h in handles {
        assert!(h.is_finished());
        let e = h.join().unwrap_err();
        assert!(e.is_cancelled(), "{e:?}");
        let io: std::io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(libc::ECANCELED));
    }
    let m = other.join().unwrap();
    assert_eq!(n + m, 100 + 10 + 50 + 4 + 1000);
}

#[test]
fn drop_cancels_tasks_blocked_on_channels_and_mutexes() {
    let _w = Watchdog::new("drop_blocked_sync", Duration::from_secs(120));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let mut handles = Vec::new();

    // Receivers on channels that never get a message. The senders stay
    // alive on this thread until after the drop, so no receiver sees a
    // disconnect.
    let mut senders = Vec::new();
    for _ in 0..100 {
        let (tx, rx) = greenos::sync::mpsc::channel::<u64>();
        senders.push(tx);
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d);
            s.fetch_add(1, Ordering::SeqCst);
            let r = rx.recv();
            unreachable!("received {r:?} on a silent channel");
        }));
    }
    // A bounded channel whose sender blocks on a full buffer.
    let (full_tx, full_rx) = greenos::sync::mpsc::sync_channel::<u64>(1);
    {
        let (d, s) = (drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d);
            full_tx.send(1).unwrap();
            s.fetch_add(1, Ordering::SeqCst);
            let r = full_tx.send(2);
            unreachable!("sent into a full channel nobody reads: {r:?}");
        }));
    }

    // Lock waiters queued behind a holder that never unlocks. When the
    // runtime cancels the holder, its guard unlocks the mutex and wakes a
    // waiter that is itself being cancelled.
    let m = Arc::new(greenos::sync::Mutex::new(0u64));
    let locked = Arc::new(AtomicBool::new(false));
    {
        let (m, d, s, l) = (m.clone(), drops.clone(), started.clone(), locked.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d);
            let _guard = m.lock();
            l.store(true, Ordering::SeqCst);
            s.fetch_add(1, Ordering::SeqCst);
            greenos::sleep(HOUR);
            unreachable!("woke from an hour's sleep");
        }));
    }
    assert!(wait_until(Duration::from_secs(30), || locked.load(Ordering::SeqCst)));
    for _ in 0..20 {
        let (m, d, s) = (m.clone(), drops.clone(), started.clone());
        handles.push(rt.spawn(move || {
            let _g = DropCount(d);
            s.fetch_add(1, Ordering::SeqCst);
            let _guard = m.lock();
            unreachable!("locked a mutex whose holder never unlocks");
        }));
    }

    let expected = 100 + 1 + 1 + 20;
    assert!(
        wait_until(Duration::from_secs(30), || started.load(Ordering::SeqCst)
            == expected),
        "only {} of {expected} tasks started",
        started.load(Ordering::SeqCst)
    );
    // Give the lock waiters time to block.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), expected);
    for h in handles {
        assert!(h.join().unwrap_err().is_cancelled());
    }
    // The channels still work from plain threads once their tasks are gone.
    drop(senders);
    assert_eq!(full_rx.try_recv(), Ok(1));
    assert!(!m.is_locked());
}

#[test]
fn drop_with_detached_tasks_and_no_handles() {
    let _w = Watchdog::new("drop_detached", Duration::from_secs(120));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let (d, s) = (drops.clone(), started.clone());
    rt.block_on(move || {
        for _ in 0..1000 {
            let (d, s) = (d.clone(), s.clone());
            // Dropping the handle detaches the task.
            drop(greenos::spawn(move || {
                let _g = DropCount(d);
                s.fetch_add(1, Ordering::SeqCst);
                greenos::sleep(HOUR);
            }));
        }
        while s.load(Ordering::SeqCst) < 1000 {
            greenos::sleep(Duration::from_millis(1));
        }
    });
    // (block_on may return a moment before its own task leaves the table.)
    assert!(wait_until(Duration::from_secs(10), || rt.live_tasks() == 1000));
    // The runtime may be dropped by any thread, not only its creator.
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), 1000);
}

greenos::task_local! {
    static LOCAL_GUARD: std::cell::RefCell<Option<DropCount>> = std::cell::RefCell::new(None);
}

#[test]
fn drop_runs_task_local_destructors_of_cancelled_tasks() {
    let _w = Watchdog::new("drop_task_locals", Duration::from_secs(60));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    let mut hs = Vec::new();
    for _ in 0..100 {
        let (d, s) = (drops.clone(), started.clone());
        hs.push(rt.spawn(move || {
            LOCAL_GUARD.with(|g| *g.borrow_mut() = Some(DropCount(d)));
            s.fetch_add(1, Ordering::SeqCst);
            greenos::sleep(HOUR);
        }));
    }
    assert!(wait_until(Duration::from_secs(30), || started
        .load(Ordering::SeqCst)
        == 100));
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), 100);
    for h in hs {
        assert!(h.join().unwrap_err().is_cancelled());
    }
}

/// A guard whose destructor spawns a new task (holding another guard)
/// while the runtime cancels its owner.
struct SpawnOnDrop(Arc<AtomicUsize>);

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        let d = self.0.clone();
        let g = DropCount(d.clone());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            greenos::task::Builder::new().spawn(move || {
                let _g = g;
                greenos::sleep(HOUR);
            })
        }));
        // However the runtime answers (the task is dropped unrun, or spawn
        // refuses), the new closure's guard must not leak.
        if let Ok(Ok(h)) = r {
            drop(h);
        }
        d.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn destructor_that_spawns_during_cancellation() {
    let _w = Watchdog::new("spawn_during_cancel", Duration::from_secs(60));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    for _ in 0..10 {
        let (d, s) = (drops.clone(), started.clone());
        drop(rt.spawn(move || {
            let _g = SpawnOnDrop(d);
            s.fetch_add(1, Ordering::SeqCst);
            greenos::sleep(HOUR);
        }));
    }
    assert!(wait_until(Duration::from_secs(30), || started
        .load(Ordering::SeqCst)
        == 10));
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    // Each SpawnOnDrop counts itself and its spawned closure's guard.
    assert_eq!(drops.load(Ordering::SeqCst), 20);
}

#[test]
fn drop_while_tasks_spin_with_maybe_yield() {
    let _w = Watchdog::new("drop_busy_maybe_yield", Duration::from_secs(120));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    // One busy task per CPU and a few more: long loops that call
    // maybe_yield, as the docs ask, and never block.
    for _ in 0..4 {
        let (d, s) = (drops.clone(), started.clone());
        drop(rt.spawn(move || {
            let _g = DropCount(d);
            s.fetch_add(1, Ordering::SeqCst);
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
                greenos::maybe_yield();
            }
        }));
    }
    assert!(wait_until(Duration::from_secs(30), || started
        .load(Ordering::SeqCst)
        == 4));
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

#[test]
fn drop_a_single_busy_task_per_cpu_with_maybe_yield() {
    let _w = Watchdog::new("drop_one_busy_per_cpu", Duration::from_secs(120));
    let started = Arc::new(AtomicUsize::new(0));
    let rt = rt(2);
    // Exactly one runnable task per CPU: no slice ever runs out, so nothing
    // but shutdown itself can ask these tasks to yield.
    for cpu in 0..2 {
        let s = started.clone();
        drop(
            rt.spawn_with(
                greenos::task::Builder::new().affinity(common::cpus(&[cpu])),
                move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    loop {
                        std::hint::black_box(0);
                        greenos::maybe_yield();
                    }
                },
            )
            .unwrap(),
        );
    }
    assert!(wait_until(Duration::from_secs(30), || started
        .load(Ordering::SeqCst)
        == 2));
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
}

#[test]
fn build_and_drop_many_runtimes() {
    let _w = Watchdog::new("build_and_drop_many", Duration::from_secs(120));
    for i in 0..50 {
        let rt = rt(2);
        if i % 2 == 0 {
            assert_eq!(rt.block_on(|| greenos::spawn(move || i).join().unwrap()), i);
        }
        within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    }
}

#[test]
fn handle_joined_on_a_plain_thread_while_the_runtime_drops() {
    let _w = Watchdog::new("join_during_drop", Duration::from_secs(60));
    let rt = rt(2);
    let running = Arc::new(AtomicBool::new(false));
    let r = running.clone();
    let h = rt.spawn(move || {
        r.store(true, Ordering::SeqCst);
        greenos::sleep(HOUR);
        1
    });
    assert!(wait_until(Duration::from_secs(30), || running.load(Ordering::SeqCst)));
    // A plain thread blocks in join before the runtime goes away.
    let joiner = std::thread::spawn(move || h.join());
    std::thread::sleep(Duration::from_millis(20));
    within("dropping the runtime", DROP_LIMIT, move || drop(rt));
    let r = within("the blocked join", DROP_LIMIT, move || {
        joiner.join().unwrap()
    });
    assert!(matches!(r, Err(JoinError::Cancelled)), "{r:?}");
}

/// A task of one runtime drops another runtime it owns: the other runtime's
/// blocked tasks are unwound on this CPU, and inside their destructors they
/// are the current task (not the task doing the drop).
#[test]
fn a_task_drops_another_runtime_and_its_tasks_unwind_as_themselves() {
    let _w = Watchdog::new(
        "a_task_drops_another_runtime_and_its_tasks_unwind_as_themselves",
        Duration::from_secs(60),
    );
    /// Records, when dropped, which task it was dropped by.
    struct SeesItself(Arc<std::sync::Mutex<Option<greenos::Pid>>>);
    impl Drop for SeesItself {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(greenos::getpid());
        }
    }
    let outer = greenos::Runtime::builder().workers(1).build().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (inner_pid, dropper_pid) = {
        let seen = seen.clone();
        outer.block_on(move || {
            let inner = greenos::Runtime::builder().workers(1).build().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let s2 = seen.clone();
            let _h = inner.spawn(move || {
                let guard = SeesItself(s2);
                tx.send(greenos::getpid()).unwrap();
                greenos::sleep(Duration::from_secs(3600));
                drop(guard);
            });
            let inner_pid = rx.recv().unwrap();
            drop(inner);
            (inner_pid, greenos::getpid())
        })
    };
    assert_ne!(inner_pid, greenos::Pid(0));
    let saw = seen.lock().unwrap().expect("the guard was dropped");
    assert_eq!(
        saw, inner_pid,
        "destructor ran as pid {saw}, the dropper is {dropper_pid}"
    );
}
