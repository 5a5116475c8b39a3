//! `greenos::sync` through the public facade: Mutex, Condvar, Semaphore and
//! mpsc channels between green tasks on 2 workers, with plain OS threads,
//! at runtime shutdown, and under a lost-wakeup stress.
//!
//! Time is only ever asserted as a lower bound (a timeout never fires
//! early); nothing here depends on how fast the machine is. A lost wakeup
//! shows up as a hang, so every test body runs under `within`, which fails
//! the test after a generous limit instead of hanging CI.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::sync::mpsc::{
    self, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use greenos::sync::{Condvar, Mutex, Semaphore};
use greenos::JoinError;

/// Generous limit for one test body; only a lost wakeup or a deadlock
/// should ever reach it.
const LIMIT: Duration = Duration::from_secs(60);

fn rt(workers: usize) -> greenos::Runtime {
    greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("building the runtime")
}

/// Runs `f` on its own OS thread and fails the test if it has not finished
/// after `limit` (a hung runtime cannot be cancelled; its thread is left
/// behind and dies with the test process). Panics in `f` propagate.
fn within<T: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let r = f();
            let _ = done_tx.send(());
            r
        })
        .expect("spawning the test thread");
    match done_rx.recv_timeout(limit) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: still running after {limit:?}: a lost wakeup or a deadlock")
        }
    }
}

/// Asserts that `elapsed` is at least `min` (the only kind of time
/// assertion these tests make).
fn assert_at_least(elapsed: Duration, min: Duration, what: &str) {
    assert!(
        elapsed >= min,
        "{what} returned after {elapsed:?}, before {min:?}"
    );
}

// ---------------------------------------------------------------------------
// Mutex.

#[test]
fn mutex_counter_many_tasks_two_workers_exact() {
    within("mutex_counter", LIMIT, || {
        const TASKS: usize = 64;
        const ITERS: usize = 2_000;
        let rt = rt(2);
        let total = rt.block_on(|| {
            let m = Arc::new(Mutex::new(0usize));
            let hs: Vec<_> = (0..TASKS)
                .map(|i| {
                    let m = m.clone();
                    greenos::spawn(move || {
                        for k in 0..ITERS {
                            let mut g = m.lock();
                            *g += 1;
                            // Now and then hold the lock across a yield: the
                            // task may resume on the other worker and unlock
                            // there.
                            if (i + k) % 97 == 0 {
                                greenos::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("incrementer");
            }
            let v = *m.lock();
            assert!(!m.is_locked());
            v
        });
        assert_eq!(total, TASKS * ITERS);
    });
}

#[test]
fn mutex_guard_moves_between_workers() {
    within("mutex_guard_moves", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let m = Arc::new(Mutex::new(Vec::new()));
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let m = m.clone();
                    greenos::spawn(move || {
                        for _ in 0..50 {
                            let mut g = m.lock();
                            let before = g.len();
                            g.push(i);
                            // Hold it across sleeps and yields: nobody else
                            // may push meanwhile.
                            greenos::sleep(Duration::from_micros(50));
                            greenos::yield_now();
                            assert_eq!(g.len(), before + 1);
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(m.lock().len(), 400);
        });
    });
}

#[test]
fn mutex_try_lock_and_lock_timeout_in_tasks() {
    within("mutex_timeouts", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let m = Arc::new(Mutex::new(1));
            let held = Arc::new(AtomicBool::new(false));
            let release = Arc::new(Semaphore::new(0));
            let holder = {
                let (m, held, release) = (m.clone(), held.clone(), release.clone());
                greenos::spawn(move || {
                    let g = m.lock();
                    held.store(true, Ordering::SeqCst);
                    release.acquire();
                    drop(g);
                })
            };
            while !held.load(Ordering::SeqCst) {
                greenos::yield_now();
            }
            assert!(m.try_lock().is_none());
            let t = Instant::now();
            assert!(m.lock_timeout(Duration::from_millis(30)).is_none());
            assert_at_least(t.elapsed(), Duration::from_millis(30), "lock_timeout");
            release.release();
            let g = m.lock_timeout(LIMIT).expect("released");
            assert_eq!(*g, 1);
            drop(g);
            holder.join().unwrap();
        });
    });
}

/// One worker; a task re-locks right after unlocking and holds the lock
/// across yields, so a plain barging mutex would never let the waiter in.
#[test]
fn mutex_waiter_not_starved_by_a_barging_holder() {
    within("mutex_not_starved", LIMIT, || {
        let rt = rt(1);
        let served = rt.block_on(|| {
            let m = Arc::new(Mutex::new(()));
            let done = Arc::new(AtomicBool::new(false));
            let hog = {
                let (m, done) = (m.clone(), done.clone());
                greenos::spawn(move || {
                    let start = Instant::now();
                    while !done.load(Ordering::Relaxed) {
                        if start.elapsed() > Duration::from_secs(20) {
                            return false;
                        }
                        let g = m.lock();
                        greenos::yield_now();
                        drop(g);
                    }
                    true
                })
            };
            greenos::yield_now();
            let g = m.lock();
            done.store(true, Ordering::Relaxed);
            drop(g);
            hog.join().unwrap()
        });
        assert!(
            served,
            "the waiter was let in only after the holder gave up"
        );
    });
}

// ---------------------------------------------------------------------------
// Condvar.

#[test]
fn condvar_bounded_buffer_producers_consumers() {
    within("condvar_buffer", LIMIT, || {
        const PRODUCERS: u64 = 4;
        const CONSUMERS: u64 = 3;
        const PER: u64 = 5_000;
        const CAP: usize = 8;
        struct Buf {
            q: VecDeque<u64>,
            producers_left: u64,
        }
        let rt = rt(2);
        let (sum, count) = rt.block_on(|| {
            let state = Arc::new((
                Mutex::new(Buf {
                    q: VecDeque::new(),
                    producers_left: PRODUCERS,
                }),
                Condvar::new(), // not empty
                Condvar::new(), // not full
            ));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let state = state.clone();
                    greenos::spawn(move || {
                        let (m, not_empty, not_full) = &*state;
                        for i in 0..PER {
                            let mut g = m.lock();
                            not_full.wait_while(&mut g, |b| b.q.len() >= CAP);
                            g.q.push_back(p * PER + i);
                            drop(g);
                            not_empty.notify_one();
                        }
                        let mut g = m.lock();
                        g.producers_left -= 1;
                        drop(g);
                        not_empty.notify_all();
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let state = state.clone();
                    greenos::spawn(move || {
                        let (m, not_empty, not_full) = &*state;
                        let (mut sum, mut n) = (0u64, 0u64);
                        loop {
                            let mut g = m.lock();
                            not_empty
                                .wait_while(&mut g, |b| b.q.is_empty() && b.producers_left > 0);
                            match g.q.pop_front() {
                                Some(v) => {
                                    drop(g);
                                    not_full.notify_one();
                                    sum += v;
                                    n += 1;
                                }
                                None => return (sum, n),
                            }
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            consumers
                .into_iter()
                .map(|c| c.join().unwrap())
                .fold((0, 0), |(s, n), (s2, n2)| (s + s2, n + n2))
        });
        let total = PRODUCERS * PER;
        assert_eq!(count, total);
        assert_eq!(sum, total * (total - 1) / 2);
    });
}

#[test]
fn condvar_notify_all_wakes_every_waiter_and_timeouts() {
    within("condvar_notify_all", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let pair = Arc::new((Mutex::new((false, 0usize)), Condvar::new()));
            let hs: Vec<_> = (0..10)
                .map(|_| {
                    let pair = pair.clone();
                    greenos::spawn(move || {
                        let (m, cv) = &*pair;
                        let mut g = m.lock();
                        g.1 += 1;
                        cv.wait_while(&mut g, |s| !s.0);
                    })
                })
                .collect();
            let (m, cv) = &*pair;
            // Wait until all ten are waiting (they count themselves first).
            loop {
                if m.lock().1 == 10 {
                    break;
                }
                greenos::yield_now();
            }
            m.lock().0 = true;
            cv.notify_all();
            for h in hs {
                h.join().unwrap();
            }

            // A timed wait that nobody notifies: a lower bound only.
            let mut g = m.lock();
            let t = Instant::now();
            let r = cv.wait_timeout(&mut g, Duration::from_millis(25));
            assert!(r.timed_out());
            assert_at_least(t.elapsed(), Duration::from_millis(25), "wait_timeout");
            let t = Instant::now();
            let r = cv.wait_timeout_while(&mut g, Duration::from_millis(25), |s| s.1 < 100);
            assert!(r.timed_out());
            assert_at_least(t.elapsed(), Duration::from_millis(25), "wait_timeout_while");
            // Satisfied at once: no wait, not timed out.
            let r = cv.wait_timeout_while(&mut g, Duration::from_millis(25), |s| !s.0);
            assert!(!r.timed_out());
        });
    });
}

// ---------------------------------------------------------------------------
// Semaphore.

#[test]
fn semaphore_limits_concurrency() {
    within("semaphore_limits", LIMIT, || {
        const PERMITS: usize = 3;
        let rt = rt(2);
        let (max, done) = rt.block_on(|| {
            let sem = Arc::new(Semaphore::new(PERMITS));
            let active = Arc::new(AtomicUsize::new(0));
            let max = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..40)
                .map(|i| {
                    let (sem, active, max, done) =
                        (sem.clone(), active.clone(), max.clone(), done.clone());
                    greenos::spawn(move || {
                        for k in 0..20 {
                            let _permit = sem.acquire_guard();
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            max.fetch_max(now, Ordering::SeqCst);
                            if (i + k) % 3 == 0 {
                                greenos::sleep(Duration::from_micros(100));
                            } else {
                                greenos::yield_now();
                            }
                            active.fetch_sub(1, Ordering::SeqCst);
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(sem.available_permits(), PERMITS);
            (max.load(Ordering::SeqCst), done.load(Ordering::SeqCst))
        });
        assert_eq!(done, 40);
        assert!(
            (1..=PERMITS).contains(&max),
            "max concurrent {max} > {PERMITS} permits"
        );
    });
}

#[test]
fn semaphore_timeout_and_try_in_task() {
    within("semaphore_timeout", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let sem = Arc::new(Semaphore::new(0));
            assert!(!sem.try_acquire());
            let t = Instant::now();
            assert!(!sem.acquire_timeout(Duration::from_millis(30)));
            assert_at_least(t.elapsed(), Duration::from_millis(30), "acquire_timeout");
            let s2 = sem.clone();
            let h = greenos::spawn(move || {
                greenos::sleep(Duration::from_millis(5));
                s2.add_permits(2);
            });
            assert!(sem.acquire_timeout(LIMIT));
            sem.acquire();
            h.join().unwrap();
            assert_eq!(sem.available_permits(), 0);
        });
    });
}

// ---------------------------------------------------------------------------
// Channels.

#[test]
fn channel_fifo_order_per_producer() {
    within("channel_fifo", LIMIT, || {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 20_000;
        let rt = rt(2);
        rt.block_on(|| {
            let (tx, rx) = mpsc::channel::<(u64, u64)>();
            let hs: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    greenos::spawn(move || {
                        for i in 0..PER {
                            tx.send((p, i)).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut next = vec![0u64; PRODUCERS as usize];
            for (p, i) in rx.iter() {
                assert_eq!(next[p as usize], i, "producer {p} out of order");
                next[p as usize] += 1;
            }
            assert!(next.iter().all(|&n| n == PER));
            for h in hs {
                h.join().unwrap();
            }

            // One producer: the exact sequence.
            let (tx, rx) = mpsc::sync_channel::<u32>(7);
            let h = greenos::spawn(move || {
                for i in 0..10_000 {
                    tx.send(i).unwrap();
                }
            });
            let got: Vec<u32> = rx.into_iter().collect();
            assert_eq!(got, (0..10_000).collect::<Vec<_>>());
            h.join().unwrap();
        });
    });
}

#[test]
fn channel_disconnection_both_ways() {
    within("channel_disconnect", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            // Receiver gone: send fails and hands the value back.
            let (tx, rx) = mpsc::channel::<String>();
            drop(rx);
            let SendError(v) = tx.send("back".to_owned()).unwrap_err();
            assert_eq!(v, "back");

            // Senders gone: a blocked recv wakes up with an error.
            let (tx, rx) = mpsc::channel::<u8>();
            let tx2 = tx.clone();
            let h = greenos::spawn(move || rx.recv());
            greenos::sleep(Duration::from_millis(5));
            drop(tx);
            drop(tx2);
            assert_eq!(h.join().unwrap(), Err(RecvError));

            // A SyncSender blocked on a full channel wakes up when the
            // receiver goes, with its value.
            let (tx, rx) = mpsc::sync_channel::<u8>(1);
            tx.send(1).unwrap();
            let h = greenos::spawn(move || tx.send(2));
            greenos::sleep(Duration::from_millis(5));
            drop(rx);
            assert_eq!(h.join().unwrap(), Err(SendError(2)));

            // try_ forms.
            let (tx, rx) = mpsc::sync_channel::<u8>(1);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
            tx.try_send(1).unwrap();
            assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
            drop(tx);
            assert_eq!(rx.try_recv(), Ok(1));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(1)),
                Err(RecvTimeoutError::Disconnected)
            );
        });
    });
}

#[test]
fn channel_no_data_lost_when_senders_drop_with_items_queued() {
    within("channel_no_loss", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let (tx, rx) = mpsc::channel::<u64>();
            let (stx, srx) = mpsc::sync_channel::<u64>(1_000);
            let hs: Vec<_> = (0..4u64)
                .map(|p| {
                    let (tx, stx) = (tx.clone(), stx.clone());
                    greenos::spawn(move || {
                        for i in 0..250 {
                            tx.send(p * 1000 + i).unwrap();
                            stx.send(p * 1000 + i).unwrap();
                        }
                        // Senders drop here, with everything still queued.
                    })
                })
                .collect();
            drop((tx, stx));
            for h in hs {
                h.join().unwrap();
            }
            for rx in [rx.try_iter().collect::<Vec<_>>(), srx.iter().collect()] {
                assert_eq!(rx.len(), 1000);
                let mut v = rx;
                v.sort_unstable();
                v.dedup();
                assert_eq!(v.len(), 1000);
            }
            assert_eq!(rx.recv(), Err(RecvError));
            assert_eq!(srx.recv(), Err(RecvError));
        });
    });
}

#[test]
fn rendezvous_channel_hands_off() {
    within("rendezvous", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let (tx, rx) = mpsc::sync_channel::<u32>(0);
            // No receiver waiting: try_send cannot hand off.
            assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
            // send_timeout gives the value back.
            let t = Instant::now();
            match tx.send_timeout(2, Duration::from_millis(20)) {
                Err(SendTimeoutError::Timeout(2)) => {}
                other => panic!("{other:?}"),
            }
            assert_at_least(t.elapsed(), Duration::from_millis(20), "send_timeout");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "withdrawn");

            // send returns only once the receiver has taken the value.
            let sent = Arc::new(AtomicBool::new(false));
            let h = {
                let (tx, sent) = (tx.clone(), sent.clone());
                greenos::spawn(move || {
                    tx.send(3).unwrap();
                    sent.store(true, Ordering::SeqCst);
                })
            };
            greenos::sleep(Duration::from_millis(20));
            assert!(
                !sent.load(Ordering::SeqCst),
                "send completed with no receiver"
            );
            // A blocked sender's value can be taken without blocking.
            let v = loop {
                match rx.try_recv() {
                    Ok(v) => break v,
                    Err(TryRecvError::Empty) => greenos::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            };
            assert_eq!(v, 3);
            h.join().unwrap();
            assert!(sent.load(Ordering::SeqCst));

            // A receiver blocked in recv: try_send hands off.
            let h = greenos::spawn(move || rx.recv().unwrap());
            let mut v = 4;
            loop {
                match tx.try_send(v) {
                    Ok(()) => break,
                    Err(TrySendError::Full(x)) => {
                        v = x;
                        greenos::yield_now();
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(h.join().unwrap(), 4);
            // The receiver is gone now.
            assert_eq!(tx.send(5), Err(SendError(5)));

            // Many senders, one receiver: every value exactly once.
            let (tx, rx) = mpsc::sync_channel::<u32>(0);
            let hs: Vec<_> = (0..6)
                .map(|p| {
                    let tx = tx.clone();
                    greenos::spawn(move || {
                        for i in 0..500 {
                            tx.send(p * 1000 + i).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut got: Vec<u32> = rx.iter().collect();
            for h in hs {
                h.join().unwrap();
            }
            got.sort_unstable();
            let want: Vec<u32> = (0..6)
                .flat_map(|p| (0..500).map(move |i| p * 1000 + i))
                .collect();
            assert_eq!(got, want);
        });
    });
}

#[test]
fn channel_timeouts_are_lower_bounds() {
    within("channel_timeouts", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let (tx, rx) = mpsc::channel::<u8>();
            let t = Instant::now();
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(30)),
                Err(RecvTimeoutError::Timeout)
            );
            assert_at_least(t.elapsed(), Duration::from_millis(30), "recv_timeout");
            let h = greenos::spawn(move || {
                greenos::sleep(Duration::from_millis(5));
                tx.send(9).unwrap();
                tx
            });
            assert_eq!(rx.recv_timeout(LIMIT), Ok(9));
            drop(h.join().unwrap());

            let (tx, _rx) = mpsc::sync_channel::<u8>(1);
            tx.send(1).unwrap();
            let t = Instant::now();
            assert_eq!(
                tx.send_timeout(2, Duration::from_millis(30)).unwrap_err(),
                SendTimeoutError::Timeout(2)
            );
            assert_at_least(t.elapsed(), Duration::from_millis(30), "send_timeout");
        });
    });
}

// ---------------------------------------------------------------------------
// Plain OS threads.

#[test]
fn os_thread_and_green_tasks_share_channels_and_locks() {
    within("os_threads", LIMIT, || {
        let rt = rt(2);
        // OS thread -> green task.
        let (tx, rx) = mpsc::channel::<u64>();
        let consumer = rt.spawn(move || rx.iter().sum::<u64>());
        let producer = std::thread::spawn(move || {
            for i in 0..10_000 {
                tx.send(i).unwrap();
            }
        });
        producer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), 10_000 * 9_999 / 2);

        // Green task -> OS thread, through a bounded channel (the task
        // parks when the thread is slow; the thread blocks when it is
        // fast).
        let (tx, rx) = mpsc::sync_channel::<u64>(4);
        let producer = rt.spawn(move || {
            for i in 0..10_000 {
                tx.send(i).unwrap();
            }
        });
        let got: u64 = rx.iter().sum();
        producer.join().unwrap();
        assert_eq!(got, 10_000 * 9_999 / 2);

        // A mutex and condvar shared by OS threads and tasks.
        let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let pair = pair.clone();
                rt.spawn(move || {
                    for _ in 0..2_000 {
                        let (m, cv) = &*pair;
                        *m.lock() += 1;
                        cv.notify_all();
                    }
                })
            })
            .collect();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let pair = pair.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let (m, cv) = &*pair;
                        *m.lock() += 1;
                        cv.notify_all();
                    }
                })
            })
            .collect();
        {
            let (m, cv) = &*pair;
            let mut g = m.lock();
            cv.wait_while(&mut g, |n| *n < 12_000);
            assert_eq!(*g, 12_000);
        }
        for t in tasks {
            t.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }

        // Semaphore: an OS thread releases what a task waits for.
        let sem = Arc::new(Semaphore::new(0));
        let s2 = sem.clone();
        let waiter = rt.spawn(move || {
            for _ in 0..100 {
                s2.acquire();
            }
        });
        for _ in 0..100 {
            sem.release();
        }
        waiter.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Shutdown.

#[test]
fn blocked_tasks_are_cancelled_at_shutdown() {
    within("shutdown", LIMIT, || {
        let rt = rt(2);
        let (tx, rx) = mpsc::channel::<u8>();
        let (_stx, srx) = mpsc::sync_channel::<u8>(0);
        let m = Arc::new(Mutex::new(()));
        let sem = Arc::new(Semaphore::new(0));
        let in_drop = Arc::new(std::sync::Mutex::new(Vec::new()));

        /// Runs blocking calls from a destructor during the unwind.
        struct OnDrop {
            rx: mpsc::Receiver<u8>,
            log: Arc<std::sync::Mutex<Vec<String>>>,
        }
        impl Drop for OnDrop {
            fn drop(&mut self) {
                let r = self.rx.recv();
                let t = self.rx.recv_timeout(Duration::from_secs(3600));
                self.log.lock().unwrap().push(format!("{r:?} {t:?}"));
            }
        }

        let g = m.lock();
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        {
            let (log, started) = (in_drop.clone(), started.clone());
            handles.push(rt.spawn(move || {
                let _d = OnDrop { rx, log };
                started.fetch_add(1, Ordering::SeqCst);
                // Parks forever: nobody sends, and `tx` outlives the runtime.
                greenos::sleep(Duration::from_secs(3600));
            }));
        }
        {
            let (m, started) = (m.clone(), started.clone());
            handles.push(rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                drop(m.lock());
            }));
        }
        {
            let (sem, started) = (sem.clone(), started.clone());
            handles.push(rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                sem.acquire();
            }));
        }
        {
            let started = started.clone();
            handles.push(rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = srx.recv();
            }));
        }
        // Every task has started (a started task runs on to its blocking
        // call even if shutdown begins first: a CPU stops at the running
        // task's next switch). No time bound.
        while started.load(Ordering::SeqCst) < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(rt);
        for h in handles {
            assert!(matches!(h.join(), Err(JoinError::Cancelled)));
        }
        assert_eq!(
            in_drop.lock().unwrap().as_slice(),
            ["Err(RecvError) Err(Disconnected)"]
        );
        // The objects still work from OS threads afterwards.
        drop(g);
        drop(m.lock());
        sem.release();
        assert!(sem.try_acquire());
        drop(tx);
    });
}

// ---------------------------------------------------------------------------
// Lost-wakeup stress.

#[test]
fn stress_many_producers_one_consumer_no_lost_wakeups() {
    within("stress_unbounded", LIMIT, || {
        const PRODUCERS: u64 = 8;
        const PER: u64 = 50_000;
        let rt = rt(2);
        let (n, sum) = rt.block_on(|| {
            let (tx, rx) = mpsc::channel::<u64>();
            let hs: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    greenos::spawn(move || {
                        for i in 0..PER {
                            tx.send(p * PER + i).unwrap();
                            if i % 1024 == 0 {
                                greenos::yield_now();
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let consumer = greenos::spawn(move || {
                let (mut n, mut sum) = (0u64, 0u64);
                for v in rx {
                    n += 1;
                    sum += v;
                }
                (n, sum)
            });
            for h in hs {
                h.join().unwrap();
            }
            consumer.join().unwrap()
        });
        let total = PRODUCERS * PER;
        assert_eq!(n, total);
        assert_eq!(sum, total * (total - 1) / 2);
    });
}

#[test]
fn stress_bounded_and_ping_pong_no_lost_wakeups() {
    within("stress_bounded", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            // Small bound: producers and the consumer park all the time.
            let (tx, rx) = mpsc::sync_channel::<u64>(2);
            let hs: Vec<_> = (0..8u64)
                .map(|p| {
                    let tx = tx.clone();
                    greenos::spawn(move || {
                        for i in 0..10_000 {
                            tx.send(p * 10_000 + i).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let c = greenos::spawn(move || rx.iter().count());
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(c.join().unwrap(), 80_000);

            // Ping-pong across the two workers: each side parks every time.
            let (a_tx, a_rx) = mpsc::channel::<u64>();
            let (b_tx, b_rx) = mpsc::channel::<u64>();
            let ponger = greenos::spawn(move || {
                for v in a_rx {
                    if b_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let mut v = 0;
            for _ in 0..50_000 {
                a_tx.send(v).unwrap();
                v = b_rx.recv().unwrap();
            }
            assert_eq!(v, 50_000);
            drop(a_tx);
            ponger.join().unwrap();

            // Semaphore and mutex/condvar ping-pong.
            let sems = Arc::new((Semaphore::new(0), Semaphore::new(0)));
            let s2 = sems.clone();
            let other = greenos::spawn(move || {
                for _ in 0..20_000 {
                    s2.0.acquire();
                    s2.1.release();
                }
            });
            for _ in 0..20_000 {
                sems.0.release();
                sems.1.acquire();
            }
            other.join().unwrap();

            let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
            let p2 = pair.clone();
            let other = greenos::spawn(move || {
                let (m, cv) = &*p2;
                let mut g = m.lock();
                for i in 0..10_000u64 {
                    cv.wait_while(&mut g, |n| *n != 2 * i + 1);
                    *g += 1;
                    cv.notify_one();
                }
            });
            {
                let (m, cv) = &*pair;
                let mut g = m.lock();
                for i in 0..10_000u64 {
                    cv.wait_while(&mut g, |n| *n != 2 * i);
                    *g += 1;
                    cv.notify_one();
                }
            }
            other.join().unwrap();
            assert_eq!(*pair.0.lock(), 20_000);
        });
    });
}

/// Timed and untimed lockers, tasks and OS threads, with the lock held
/// across yields: waiters leave by timeout all the time, racing unlocks
/// and FIFO hand-offs. A waiter stranded by a lost wakeup hangs the test.
#[test]
fn stress_mutex_and_semaphore_with_timeouts() {
    within("stress_timeouts", LIMIT, || {
        let rt = rt(2);
        let m = Arc::new(Mutex::new(0u64));
        let sem = Arc::new(Semaphore::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..12u64 {
            let (m, sem) = (m.clone(), sem.clone());
            tasks.push(rt.spawn(move || {
                let mut got = 0u64;
                while got < 2_000 {
                    let g = if i % 2 == 0 {
                        Some(m.lock())
                    } else {
                        m.lock_timeout(Duration::from_micros(20 + i))
                    };
                    if let Some(mut g) = g {
                        *g += 1;
                        got += 1;
                        // A critical section long enough to be contended.
                        for _ in 0..200 {
                            std::hint::spin_loop();
                        }
                        if got % 64 == 0 {
                            greenos::yield_now();
                        }
                    }
                    if i % 3 == 0 {
                        if sem.acquire_timeout(Duration::from_micros(10)) {
                            greenos::yield_now();
                            sem.release();
                        }
                    } else if got % 16 == 0 {
                        sem.acquire();
                        sem.release();
                    }
                }
                got
            }));
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (m, sem, done) = (m.clone(), sem.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut got = 0u64;
                    while got < 2_000 {
                        if let Some(mut g) = m.lock_timeout(Duration::from_micros(30)) {
                            *g += 1;
                            got += 1;
                        }
                        if got % 8 == 0 {
                            let _p = sem.acquire_guard();
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    got
                })
            })
            .collect();
        let mut total: u64 = tasks.into_iter().map(|h| h.join().unwrap()).sum();
        total += threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>();
        assert_eq!(total, 14 * 2_000);
        assert_eq!(*m.lock(), total);
        assert_eq!(sem.available_permits(), 2);
        assert!(!m.is_locked());
    });
}

/// Bounded and rendezvous channels where both sides time out all the time
/// and retry: every value arrives exactly once and nobody is stranded.
#[test]
fn stress_channels_with_timeouts() {
    within("stress_channel_timeouts", LIMIT, || {
        let rt = rt(2);
        for bound in [0usize, 1, 4] {
            let (n, sum) = rt.block_on(move || {
                let (tx, rx) = mpsc::sync_channel::<u64>(bound);
                let hs: Vec<_> = (0..6u64)
                    .map(|p| {
                        let tx = tx.clone();
                        greenos::spawn(move || {
                            for i in 0..1_500 {
                                let mut v = p * 10_000 + i;
                                loop {
                                    let r = if p % 2 == 0 {
                                        tx.send_timeout(v, Duration::from_micros(15 + p))
                                    } else {
                                        tx.send(v).map_err(SendTimeoutError::from)
                                    };
                                    match r {
                                        Ok(()) => break,
                                        Err(SendTimeoutError::Timeout(back)) => v = back,
                                        Err(e) => panic!("{e:?}"),
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                drop(tx);
                let consumer = greenos::spawn(move || {
                    let (mut n, mut sum) = (0u64, 0u64);
                    loop {
                        match rx.recv_timeout(Duration::from_micros(25)) {
                            Ok(v) => {
                                n += 1;
                                sum += v;
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return (n, sum),
                        }
                    }
                });
                for h in hs {
                    h.join().unwrap();
                }
                consumer.join().unwrap()
            });
            let want: u64 = (0..6u64)
                .flat_map(|p| (0..1_500).map(move |i| p * 10_000 + i))
                .sum();
            assert_eq!((n, sum), (6 * 1_500, want), "bound {bound}");
        }
    });
}
