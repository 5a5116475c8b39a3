//! ShmRing: semantics (blocking, try, timeouts, roles, closing, layout
//! checks) and stress tests of both index protocols that would catch a lost
//! or duplicated element or a lost wakeup (a lost wakeup hangs: the
//! watchdog turns that into a failure).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos_ipc::{shmat, shmctl, shmget, IpcFlags, Key, RingKind, ShmCtl, ShmFlags, ShmRing};
use greenos_runtime::Runtime;

/// Aborts the test process if a test hangs (a lost wakeup) for `limit`.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(name: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let step = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while waited < limit {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            eprintln!("watchdog: {name} hung for {limit:?} (lost wakeup?)");
            std::process::abort();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

const LIMIT: Duration = Duration::from_secs(300);

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap()
}

fn rt(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

#[test]
fn non_blocking_and_timeout_forms() {
    for kind in [RingKind::Spsc, RingKind::Mpmc] {
        let r = ShmRing::<u32>::with_capacity(kind, 2).unwrap();
        assert_eq!(errno(r.try_recv().unwrap_err()), libc::EAGAIN);
        assert_eq!(
            errno(r.recv_timeout(Duration::from_millis(5)).unwrap_err()),
            libc::ETIMEDOUT
        );
        r.try_send(1).unwrap();
        r.send(2).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(errno(r.try_send(3).unwrap_err()), libc::EAGAIN);
        assert_eq!(
            errno(r.send_timeout(3, Duration::from_millis(5)).unwrap_err()),
            libc::ETIMEDOUT
        );
        assert_eq!(r.recv().unwrap(), 1);
        assert_eq!(r.recv_timeout(Duration::from_secs(1)).unwrap(), 2);
        // Batches.
        assert_eq!(r.try_send_slice(&[10, 11, 12]).unwrap(), 2);
        let mut out = [0u32; 8];
        assert_eq!(r.try_recv_into(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], &[10, 11]);
        assert_eq!(errno(r.try_recv_into(&mut out).unwrap_err()), libc::EAGAIN);
        assert_eq!(r.try_send_slice(&[]).unwrap(), 0);
    }
}

#[test]
fn every_attach_opens_the_same_ring() {
    let size = ShmRing::<[u64; 8]>::required_size(RingKind::Spsc, 16).unwrap();
    let id = shmget(Key::PRIVATE, size, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
    let a = ShmRing::<[u64; 8]>::create(shmat(id, ShmFlags::NONE).unwrap(), RingKind::Spsc, 16)
        .unwrap();
    let b = ShmRing::<[u64; 8]>::open(shmat(id, ShmFlags::NONE).unwrap()).unwrap();
    assert_ne!(
        a.map().as_ptr(),
        b.map().as_ptr(),
        "two attaches, two addresses"
    );
    for i in 0..100u64 {
        a.send([i; 8]).unwrap();
        assert_eq!(b.recv().unwrap(), [i; 8]);
    }
    // Layout checks.
    assert_eq!(
        errno(ShmRing::<u64>::open(shmat(id, ShmFlags::NONE).unwrap()).unwrap_err()),
        libc::EINVAL,
        "another element type"
    );
    assert_eq!(
        errno(ShmRing::<[u64; 8]>::open(shmat(id, ShmFlags::RDONLY).unwrap()).unwrap_err()),
        libc::EACCES
    );
    assert_eq!(
        errno(
            ShmRing::<[u64; 8]>::create(shmat(id, ShmFlags::NONE).unwrap(), RingKind::Spsc, 16)
                .unwrap_err()
        ),
        libc::EEXIST
    );
    let small = shmget(Key::PRIVATE, 1000, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
    assert_eq!(
        errno(ShmRing::<u8>::open(shmat(small, ShmFlags::NONE).unwrap()).unwrap_err()),
        libc::EINVAL,
        "no ring there"
    );
    assert_eq!(
        errno(
            ShmRing::<u64>::create(shmat(small, ShmFlags::NONE).unwrap(), RingKind::Mpmc, 1024)
                .unwrap_err()
        ),
        libc::EINVAL,
        "does not fit"
    );
    shmctl(small, ShmCtl::Remove).unwrap();
    shmctl(id, ShmCtl::Remove).unwrap();
}

#[test]
fn chunks_lend_slots_in_place() {
    let mut r = ShmRing::<u32>::with_capacity(RingKind::Spsc, 4).unwrap();
    assert_eq!(errno(r.try_read_chunk(4).unwrap_err()), libc::EAGAIN);
    assert_eq!(
        errno(
            r.read_chunk_timeout(4, Duration::from_millis(5))
                .unwrap_err()
        ),
        libc::ETIMEDOUT
    );
    // A chunk dropped without a commit sends nothing.
    assert_eq!(r.write_chunk(3).unwrap().len(), 3);
    assert!(r.is_empty());
    // Three in, two out: the next chunk of 4 wraps around the end.
    assert_eq!(r.write_chunk(3).unwrap().fill_from_iter([1, 2, 3]), 3);
    assert_eq!(r.recv().unwrap(), 1);
    assert_eq!(r.recv().unwrap(), 2);
    let mut w = r.write_chunk(8).unwrap();
    assert_eq!(w.len(), 3, "capacity 4, one element queued");
    let (a, b) = w.as_mut_slices();
    assert_eq!((a.len(), b.len()), (1, 2), "slot 3, then slots 0 and 1");
    a[0].write(4);
    b[0].write(5);
    // SAFETY: the first two slots of the chunk were written just above.
    unsafe { w.commit(2) };
    assert_eq!(r.len(), 3);
    // A chunk that goes out of scope without a commit consumes nothing; a
    // partial commit consumes the oldest.
    {
        let c = r.read_chunk(8).unwrap();
        assert_eq!(c.as_slices(), (&[3, 4][..], &[5][..]));
    }
    r.read_chunk(8).unwrap().commit(1);
    assert_eq!(
        r.try_read_chunk(1).unwrap().as_slices(),
        (&[4][..], &[][..])
    );
    let c = r.try_read_chunk(8).unwrap();
    assert_eq!(c.len(), 2);
    c.commit_all();
    assert!(r.is_empty());
    // Full: the write forms wait or fail.
    assert_eq!(r.write_chunk(9).unwrap().fill_from_iter(10..), 4);
    assert_eq!(errno(r.try_write_chunk(1).unwrap_err()), libc::EAGAIN);
    assert_eq!(
        errno(
            r.write_chunk_timeout(1, Duration::from_millis(5))
                .unwrap_err()
        ),
        libc::ETIMEDOUT
    );
    assert_eq!(r.write_chunk(0).unwrap().len(), 0, "max 0 never waits");
    // MPMC slots are claimed one at a time: no chunks.
    let mut m = ShmRing::<u32>::with_capacity(RingKind::Mpmc, 4).unwrap();
    assert_eq!(errno(m.try_write_chunk(1).unwrap_err()), libc::EINVAL);
    assert_eq!(errno(m.try_read_chunk(1).unwrap_err()), libc::EINVAL);
}

#[test]
fn chunks_block_wake_and_see_the_peer_leave() {
    let _w = Watchdog::new("chunks", LIMIT);
    rt(1).block_on(|| {
        let mut rx = ShmRing::<u64>::with_capacity(RingKind::Spsc, 2).unwrap();
        let mut tx = rx.clone();
        tx.take_producer_role().unwrap();
        let h = greenos_runtime::spawn(move || {
            // Fills the ring, then waits in write_chunk until the consumer
            // commits, then leaves with one element unread.
            assert_eq!(tx.write_chunk(2).unwrap().fill_from_iter([1, 2]), 2);
            assert_eq!(tx.write_chunk(2).unwrap().fill_from_iter([3]), 1);
        });
        // Waits for the producer (an empty ring, the task not run yet).
        let c = rx.read_chunk(8).unwrap();
        assert_eq!(c.as_slices(), (&[1, 2][..], &[][..]));
        c.commit_all();
        h.join().unwrap();
        // The producer is gone: what it sent is drained first, then EPIPE.
        assert_eq!(rx.read_chunk(8).unwrap().as_slices().0, &[3]);
        rx.read_chunk(8).unwrap().commit_all();
        assert_eq!(errno(rx.read_chunk(8).unwrap_err()), libc::EPIPE);
        // And a producer whose consumer left gets EPIPE.
        let mut tx2 = ShmRing::<u64>::with_capacity(RingKind::Spsc, 2).unwrap();
        let rx2 = tx2.clone();
        rx2.take_consumer_role().unwrap();
        drop(rx2);
        assert_eq!(errno(tx2.write_chunk(1).unwrap_err()), libc::EPIPE);
    });
}

#[test]
fn spsc_allows_one_producer_and_one_consumer() {
    let a = ShmRing::<u8>::with_capacity(RingKind::Spsc, 4).unwrap();
    let b = a.clone();
    a.send(1).unwrap();
    assert_eq!(errno(b.try_send(2).unwrap_err()), libc::EBUSY);
    assert_eq!(b.recv().unwrap(), 1);
    assert_eq!(errno(a.try_recv().unwrap_err()), libc::EBUSY);
    // A role is free again once its holder is gone.
    drop(a);
    let c = b.clone();
    c.send(3).unwrap();
    assert_eq!(b.recv().unwrap(), 3);
}

#[test]
fn close_and_disconnect_are_seen_by_the_peer() {
    for kind in [RingKind::Spsc, RingKind::Mpmc] {
        // Close: sends fail, receives drain then fail.
        let r = ShmRing::<u16>::with_capacity(kind, 8).unwrap();
        r.send(1).unwrap();
        r.send(2).unwrap();
        r.close();
        assert!(r.is_disconnected());
        assert_eq!(errno(r.try_send(3).unwrap_err()), libc::EPIPE);
        assert_eq!(r.recv().unwrap(), 1);
        assert_eq!(r.recv().unwrap(), 2);
        assert_eq!(errno(r.recv().unwrap_err()), libc::EPIPE);

        // A blocked receiver sees its producer leave (green tasks).
        let rt = rt(2);
        rt.block_on(move || {
            let prod = ShmRing::<u16>::with_capacity(kind, 8).unwrap();
            let cons = prod.clone();
            prod.send(7).unwrap();
            let h = greenos_runtime::spawn(move || {
                let first = cons.recv().unwrap();
                (first, cons.recv().map_err(errno))
            });
            greenos_runtime::sleep(Duration::from_millis(10));
            drop(prod);
            assert_eq!(h.join().unwrap(), (7, Err(libc::EPIPE)));

            // A blocked sender sees its consumer leave (OS thread and task).
            let prod = ShmRing::<u16>::with_capacity(kind, 2).unwrap();
            let cons = prod.clone();
            assert_eq!(cons.try_recv().map_err(errno), Err(libc::EAGAIN));
            let t = std::thread::spawn(move || {
                let mut sent = 0;
                loop {
                    match prod.send(sent) {
                        Ok(()) => sent += 1,
                        Err(e) => return (sent, errno(e)),
                    }
                }
            });
            greenos_runtime::sleep(Duration::from_millis(10));
            drop(cons);
            assert_eq!(t.join().unwrap(), (2, libc::EPIPE));
        });
    }
}

struct RecvOnDrop(ShmRing<u8>, std::sync::mpsc::Sender<i32>);

impl Drop for RecvOnDrop {
    fn drop(&mut self) {
        let r = self.0.recv().map(|_| 0).unwrap_or_else(errno);
        self.1.send(r).unwrap();
    }
}

#[test]
fn a_cancelled_waiter_gets_eintr() {
    let ring = ShmRing::<u8>::with_capacity(RingKind::Mpmc, 2).unwrap();
    let keep = ring.clone();
    keep.try_send(0).unwrap();
    keep.try_recv().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = rt(1);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let _h = rt.spawn(move || {
        let _d = RecvOnDrop(ring, tx);
        started_tx.send(()).unwrap();
        greenos_runtime::sleep(Duration::from_secs(3600));
    });
    started_rx.recv().unwrap();
    drop(rt);
    assert_eq!(rx.recv().unwrap(), libc::EINTR);
    drop(keep);
}

/// 4 producers and 4 consumers; every element is seen exactly once.
fn mpmc_stress(green: bool, capacity: usize, per_producer: u64) {
    const P: u64 = 4;
    const C: usize = 4;
    let ring = ShmRing::<u64>::with_capacity(RingKind::Mpmc, capacity).unwrap();
    let run = move || {
        let mut prods = Vec::new();
        for p in 0..P {
            let r = ring.clone();
            // Before the task starts: consumers must not see "every
            // producer has gone" while some have not begun.
            r.take_producer_role().unwrap();
            let f = move || {
                let mut batch = Vec::new();
                for i in 0..per_producer {
                    let v = (p << 32) | i;
                    if i % 3 == 0 {
                        // Mix in batches.
                        batch.push(v);
                        if batch.len() == 5 {
                            r.send_all(&batch).unwrap();
                            batch.clear();
                        }
                    } else {
                        r.send(v).unwrap();
                    }
                }
                r.send_all(&batch).unwrap();
            };
            prods.push(spawn(green, f));
        }
        let mut cons = Vec::new();
        for c in 0..C {
            let r = ring.clone();
            r.take_consumer_role().unwrap();
            cons.push(spawn(green, move || {
                let mut got = Vec::new();
                let mut buf = [0u64; 7];
                loop {
                    let res = if c % 2 == 0 {
                        r.recv().map(|v| {
                            got.push(v);
                        })
                    } else {
                        r.recv_into(&mut buf)
                            .map(|n| got.extend_from_slice(&buf[..n]))
                    };
                    match res {
                        Ok(()) => {}
                        Err(e) => {
                            assert_eq!(errno(e), libc::EPIPE);
                            return got;
                        }
                    }
                }
            }));
        }
        for p in prods {
            p.join();
        }
        drop(ring);
        let mut all: Vec<u64> = cons.into_iter().flat_map(|c| c.join()).collect();
        assert_eq!(
            all.len() as u64,
            P * per_producer,
            "lost or duplicated elements"
        );
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len() as u64, P * per_producer, "duplicated elements");
        for (k, v) in all.iter().enumerate() {
            let (p, i) = (k as u64 / per_producer, k as u64 % per_producer);
            assert_eq!(*v, (p << 32) | i);
        }
    };
    if green {
        rt(2).block_on(run);
    } else {
        run();
    }
}

enum Joiner<T> {
    Green(greenos_runtime::JoinHandle<T>),
    Thread(std::thread::JoinHandle<T>),
}

impl<T> Joiner<T> {
    fn join(self) -> T {
        match self {
            Joiner::Green(h) => h.join().unwrap(),
            Joiner::Thread(h) => h.join().unwrap(),
        }
    }
}

fn spawn<T: Send + 'static>(green: bool, f: impl FnOnce() -> T + Send + 'static) -> Joiner<T> {
    if green {
        Joiner::Green(greenos_runtime::spawn(f))
    } else {
        Joiner::Thread(std::thread::spawn(f))
    }
}

#[test]
fn mpmc_stress_4p4c_green_tasks() {
    let _w = Watchdog::new("mpmc green", LIMIT);
    mpmc_stress(true, 4, 20_000);
    mpmc_stress(true, 64, 20_000);
}

#[test]
fn mpmc_stress_4p4c_os_threads() {
    let _w = Watchdog::new("mpmc threads", LIMIT);
    mpmc_stress(false, 2, 20_000);
    mpmc_stress(false, 256, 20_000);
}

/// One producer, one consumer, in order, single and batched, tiny ring.
fn spsc_stress(green: bool, capacity: usize, n: u64) {
    let ring = ShmRing::<u64>::with_capacity(RingKind::Spsc, capacity).unwrap();
    let run = move || {
        let mut r = ring.clone();
        let mut ring = ring;
        let prod = spawn(green, move || {
            let mut i = 0;
            while i < n {
                if i % 7 == 0 {
                    let batch: Vec<u64> = (i..(i + 13).min(n)).collect();
                    r.send_all(&batch).unwrap();
                    i += batch.len() as u64;
                } else if i % 5 == 0 {
                    // Zero-copy: as many as the ring lends, up to 9.
                    let chunk = r.write_chunk(9.min((n - i) as usize)).unwrap();
                    i += chunk.fill_from_iter(i..) as u64;
                } else {
                    r.send(i).unwrap();
                    i += 1;
                }
            }
        });
        let cons = spawn(green, move || {
            let mut next = 0u64;
            let mut buf = [0u64; 5];
            loop {
                let got = if next % 3 == 1 {
                    // Zero-copy: read in place, consume all but the last
                    // (it is read again next time).
                    ring.read_chunk(6).map(|chunk| {
                        let (a, b) = chunk.as_slices();
                        let k = a.len() + b.len();
                        assert_eq!(k, chunk.len());
                        let keep = (k - 1).max(1);
                        for (slot, v) in buf.iter_mut().zip(a.iter().chain(b)).take(keep.min(5)) {
                            *slot = *v;
                        }
                        chunk.commit(keep.min(5));
                        keep.min(5)
                    })
                } else if next % 2 == 0 {
                    ring.recv_into(&mut buf)
                } else {
                    ring.recv().map(|v| {
                        buf[0] = v;
                        1
                    })
                };
                match got {
                    Ok(k) => {
                        for v in &buf[..k] {
                            assert_eq!(*v, next, "out of order, lost or duplicated");
                            next += 1;
                        }
                    }
                    Err(e) => {
                        assert_eq!(errno(e), libc::EPIPE);
                        return next;
                    }
                }
            }
        });
        prod.join();
        assert_eq!(cons.join(), n);
    };
    if green {
        rt(2).block_on(run);
    } else {
        run();
    }
}

#[test]
fn spsc_stress_green_and_threads() {
    let _w = Watchdog::new("spsc", LIMIT);
    spsc_stress(true, 1, 50_000);
    spsc_stress(true, 16, 200_000);
    spsc_stress(false, 1, 50_000);
    spsc_stress(false, 16, 200_000);
}

#[test]
fn green_ping_pong_on_one_worker() {
    let _w = Watchdog::new("ping-pong", LIMIT);
    rt(1).block_on(|| {
        let a = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).unwrap();
        let b = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).unwrap();
        let (a2, b2) = (a.clone(), b.clone());
        let h = greenos_runtime::spawn(move || {
            while let Ok(v) = a2.recv() {
                b2.send(v + 1).unwrap();
            }
        });
        for i in 0..10_000u64 {
            a.send(i).unwrap();
            assert_eq!(b.recv().unwrap(), i + 1);
        }
        drop(a);
        h.join().unwrap();
    });
}

/// The same SPSC stress with full fences on both sides of the wakeup
/// protocol (`GREENOS_RING_SYMMETRIC`, what a kernel without
/// `membarrier` gets): the test binary re-executes itself for it, since the
/// mode is chosen once per process.
#[test]
fn spsc_stress_with_symmetric_fences() {
    if std::env::var_os("GREENOS_RING_SYMMETRIC").is_some() {
        return;
    }
    let _w = Watchdog::new("spsc symmetric", LIMIT);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spsc_stress_green_and_threads", "--nocapture"])
        .env("GREENOS_RING_SYMMETRIC", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
