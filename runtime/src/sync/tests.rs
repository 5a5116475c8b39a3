//! Unit tests of the `sync` internals: state words, OS-thread use, and the
//! mutex's FIFO mode. Behaviour through the public facade is covered by the
//! workspace's `tests/sync.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mpsc::{self, SendTimeoutError, TryRecvError, TrySendError};
use super::{Condvar, Deadline, Mutex, Semaphore};
use crate::Runtime;

fn rt(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .build()
        .expect("building the runtime")
}

#[test]
fn sync_mutex_fast_paths_leave_state_clean() {
    let m = Mutex::new(5);
    assert!(!m.is_locked());
    {
        let mut g = m.lock();
        *g += 1;
        assert!(m.is_locked());
        assert!(m.try_lock().is_none());
        assert!(m.lock_timeout(Duration::from_millis(1)).is_none());
    }
    assert!(!m.is_locked());
    assert_eq!(m.raw().state_bits(), 0);
    assert_eq!(*m.try_lock().expect("free"), 6);
    let mut m = m;
    *m.get_mut() += 1;
    assert_eq!(m.into_inner(), 7);
}

#[test]
fn sync_mutex_os_threads_contend() {
    const THREADS: usize = 4;
    const ITERS: usize = 20_000;
    let m = Arc::new(Mutex::new(0usize));
    let hs: Vec<_> = (0..THREADS)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..ITERS {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*m.lock(), THREADS * ITERS);
    assert_eq!(m.raw().state_bits(), 0, "no bit left behind");
}

#[test]
fn sync_mutex_lock_timeout_lower_bound_os_thread() {
    let m = Arc::new(Mutex::new(()));
    let g = m.lock();
    let m2 = m.clone();
    let h = std::thread::spawn(move || {
        let t = Instant::now();
        let r = m2.lock_timeout(Duration::from_millis(30)).is_none();
        (r, t.elapsed())
    });
    let (timed_out, elapsed) = h.join().unwrap();
    assert!(timed_out);
    assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
    drop(g);
    // The waiter left PARKED behind at most; the next lock/unlock clears it.
    drop(m.lock());
    assert_eq!(m.raw().state_bits(), 0);
}

/// One worker, a task that re-locks right after unlocking (barging, holding
/// the guard across yields) and a waiter: the waiter can only win through
/// FIFO mode, which it must turn on after `STARVE_AFTER_NS`.
#[test]
fn sync_mutex_fifo_mode_serves_a_passed_over_waiter() {
    let rt = rt(1);
    let (got_it, (rounds, served)) = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let done = Arc::new(AtomicBool::new(false));
        let hog = {
            let (m, done) = (m.clone(), done.clone());
            crate::spawn(move || {
                let mut rounds = 0u64;
                let start = Instant::now();
                // Without FIFO mode the waiter never gets in: the hog gives
                // up after a while (no time bound is asserted on success).
                while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
                    let mut g = m.lock();
                    *g += 1;
                    crate::yield_now();
                    drop(g);
                    rounds += 1;
                }
                (rounds, done.load(Ordering::Relaxed))
            })
        };
        crate::yield_now();
        let waiter = {
            let (m, done) = (m.clone(), done.clone());
            crate::spawn(move || {
                let g = m.lock();
                done.store(true, Ordering::Relaxed);
                drop(g);
                true
            })
        };
        let got = waiter.join().unwrap();
        (got, hog.join().unwrap())
    });
    assert!(got_it);
    assert!(
        served,
        "the waiter got the lock only after the hog gave up ({rounds} rounds)"
    );
    assert!(rounds > 0);
}

#[test]
fn sync_condvar_os_threads() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let h = std::thread::spawn(move || {
        let (m, cv) = &*p2;
        let mut g = m.lock();
        cv.wait_while(&mut g, |ready| !*ready);
        assert!(*g);
    });
    std::thread::sleep(Duration::from_millis(5));
    {
        let (m, cv) = &*pair;
        *m.lock() = true;
        cv.notify_all();
    }
    h.join().unwrap();
    let (m, cv) = &*pair;
    let mut g = m.lock();
    let t = Instant::now();
    let r = cv.wait_timeout(&mut g, Duration::from_millis(20));
    assert!(r.timed_out());
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert!(m.is_locked(), "the guard is locked again after a wait");
}

#[test]
fn sync_semaphore_accounting() {
    let s = Semaphore::new(2);
    assert!(s.try_acquire());
    let g = s.acquire_guard();
    assert_eq!(s.available_permits(), 0);
    assert!(!s.try_acquire());
    assert!(s.try_acquire_guard().is_none());
    let t = Instant::now();
    assert!(!s.acquire_timeout(Duration::from_millis(10)));
    assert!(t.elapsed() >= Duration::from_millis(10));
    drop(g);
    assert_eq!(s.available_permits(), 1);
    s.add_permits(3);
    assert_eq!(s.available_permits(), 4);
    s.acquire_guard().forget();
    assert_eq!(s.available_permits(), 3);
}

#[test]
#[should_panic(expected = "MAX_PERMITS")]
fn sync_semaphore_overflow_panics() {
    let s = Semaphore::new(Semaphore::MAX_PERMITS);
    s.release();
}

#[test]
fn sync_semaphore_wakes_os_thread() {
    let s = Arc::new(Semaphore::new(0));
    let s2 = s.clone();
    let h = std::thread::spawn(move || {
        s2.acquire();
        s2.acquire();
    });
    std::thread::sleep(Duration::from_millis(5));
    s.add_permits(2);
    h.join().unwrap();
    assert_eq!(s.available_permits(), 0);
}

#[test]
fn sync_channel_os_threads_and_errors() {
    let (tx, rx) = mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
    });
    let got: Vec<u32> = rx.iter().collect();
    h.join().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

    let (tx, rx) = mpsc::sync_channel::<u32>(1);
    tx.try_send(1).unwrap();
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    let t = Instant::now();
    match tx.send_timeout(3, Duration::from_millis(10)) {
        Err(SendTimeoutError::Timeout(3)) => {}
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(10));
    drop(rx);
    assert_eq!(tx.try_send(4), Err(TrySendError::Disconnected(4)));
    let e = tx.send_timeout(5, Duration::from_millis(1)).unwrap_err();
    assert_eq!(e.to_string(), "sending on a disconnected channel");
    assert_eq!(e.into_inner(), 5);
}

#[test]
fn sync_rendezvous_try_send_needs_a_blocked_receiver() {
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    let h = std::thread::spawn(move || rx.recv().unwrap());
    // Retry until the receiver is blocked in recv (no upper time bound).
    let mut v = 7;
    loop {
        match tx.try_send(v) {
            Ok(()) => break,
            Err(TrySendError::Full(x)) => {
                v = x;
                std::thread::yield_now();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(h.join().unwrap(), 7);
}

#[test]
fn sync_deadline_never_expires_on_huge_timeouts() {
    assert!(!Deadline::after(Duration::MAX).expired());
    assert!(Deadline::NEVER.remaining().unwrap().is_none());
    assert!(Deadline::after(Duration::ZERO).expired());
}

#[test]
fn sync_channel_green_stress_small() {
    let rt = rt(2);
    let n = rt.block_on(|| {
        let (tx, rx) = mpsc::channel::<usize>();
        let count = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let tx = tx.clone();
                crate::spawn(move || {
                    for i in 0..5_000 {
                        tx.send(i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for _ in rx.iter() {
            count.fetch_add(1, Ordering::Relaxed);
        }
        for h in hs {
            h.join().unwrap();
        }
        count.load(Ordering::Relaxed)
    });
    assert_eq!(n, 20_000);
}
