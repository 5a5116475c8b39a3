//! `greenos::ipc::ShmRing` against its peers (issue "IPC II").
//!
//! Rows (all `--only shmring`):
//!
//! | key | what | greenos column | peer column(s) |
//! |---|---|---|---|
//! | `shmring_tput8_*`, `shmring_tput64_*` | SPSC throughput, 8- and 64-byte messages, producer and consumer OS threads pinned to two CPUs, capacity 1024; ns per message (1e3 / this = M msgs/s) | `ShmRing` `send` / `recv` (blocking API) | OS threads column: `rtrb` (`_rtrb`), crossbeam `ArrayQueue` (`_abq`), crossbeam bounded channel (`_xchan`), std `sync_channel` (`_std`), spinning on full/empty where the peer has no blocking call; tokio column: tokio bounded mpsc on 2 workers (`_tokio`) |
//! | `shmring_tput8b_rtrb` | the same, 8-byte messages moved in chunks of up to 64, written and read in place | `write_chunk` + `fill_from_iter` / `read_chunk` + `commit_all` | rtrb `write_chunk_uninit` + `fill_from_iter` / `read_chunk` + `commit_all` (spinning while full / empty) |
//! | `shmring_pp1` | ping-pong between two green tasks on one worker; ns per round trip | `ShmRing` pair (capacity 1) | the channel ping-pong of `ping_pong.rs` on one worker: tokio, may, std mpsc on two threads pinned to one CPU |
//! | `shmring_pp1_xchan` | the same | the same | OS threads column: crossbeam channel, two threads pinned to one CPU |
//! | `shmring_pp2x` | ping-pong between two OS threads pinned to two CPUs | `ShmRing` pair | OS threads column: `rtrb` pair, spinning |
//! | `shmring_xpp_*` | ping-pong between two OS processes (the kernel places them) | `ShmRing` pair, futex waits | OS threads column: a kernel pipe pair (`_pipe`) or a Unix stream socket pair (`_uds`), 8-byte messages |
//! | `shmring_xtput_*` | throughput 8-byte messages between two OS processes | `ShmRing` | as above, one `write`/`read` of 8 bytes per message |
//!
//! The harness's columns are greenos / tokio / may / OS threads; to keep it
//! unchanged these rows reuse them: the greenos column is always the ring,
//! and the row's key and title name the peer in the other column (each peer
//! gets its own row, so every ratio compares the ring with one named peer,
//! measured in the same run, interleaved). Units are ns per message or per
//! round trip (lower is better), so the harness's ratio column keeps its
//! meaning.
//!
//! The ping-pong rows between threads or green tasks time N round trips
//! after [`warm_up`](crate::harness::warm_up) untimed ones by the same
//! pair, as `ping_pong.rs` does (steady state; for greenos this leaves out
//! the START_DEBIT phase of a new pair).
//!
//! The cross-process rows `fork` the cell's child process while it is
//! single-threaded (checked), so the peer shares the ring's mapping (or the
//! pipe / socket) by inheritance.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use greenos::ipc::{RingKind, ShmRing};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

/// Ring capacity for the throughput rows (rtrb, ArrayQueue and the bounded
/// channels get the same).
const CAP: usize = 1024;

const TPUT: Sizes = Sizes {
    quick: 1_000_000,
    full: 20_000_000,
};
const SLOW_TPUT: Sizes = Sizes {
    quick: 100_000,
    full: 2_000_000,
};
const PP: Sizes = Sizes {
    quick: 100_000,
    full: 1_000_000,
};
const SLOW_PP: Sizes = Sizes {
    quick: 10_000,
    full: 200_000,
};

/// A message type: 8 or 64 bytes, carrying a sequence number.
trait Msg: Copy + Send + 'static {
    fn make(i: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Msg for u64 {
    fn make(i: u64) -> u64 {
        i
    }
    fn seq(&self) -> u64 {
        *self
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct M64([u64; 8]);

impl Msg for M64 {
    fn make(i: u64) -> M64 {
        M64([i; 8])
    }
    fn seq(&self) -> u64 {
        self.0[7]
    }
}

const _: () = assert!(std::mem::size_of::<M64>() == 64);

#[derive(Clone, Copy)]
enum Peer {
    Rtrb,
    Abq,
    XChan,
    Std,
    Tokio,
}

macro_rules! tput_spec {
    ($key:literal, $title:literal, $m:ty, $peer:expr, $imp:expr) => {
        Spec {
            key: $key,
            title: $title,
            unit: "ns/msg",
            n: TPUT,
            n_override: match $peer {
                Peer::Std | Peer::Tokio | Peer::XChan => {
                    &[(Imp::Threads, SLOW_TPUT), (Imp::Tokio, SLOW_TPUT)]
                }
                _ => &[],
            },
            heavy: false,
            imps: &[Imp::Greenos, $imp],
            run: |imp, p| match imp {
                Imp::Greenos => tput_shmring::<$m>(p),
                _ => tput_peer::<$m>(p, $peer),
            },
        }
    };
}

/// Every ShmRing benchmark, in table order.
pub fn specs() -> Vec<Spec> {
    vec![
        tput_spec!("shmring_tput8_rtrb", "ShmRing SPSC 8B throughput vs rtrb (OS threads col)", u64, Peer::Rtrb, Imp::Threads),
        tput_spec!("shmring_tput8_abq", "ShmRing SPSC 8B throughput vs crossbeam ArrayQueue (OS threads col)", u64, Peer::Abq, Imp::Threads),
        tput_spec!("shmring_tput8_xchan", "ShmRing SPSC 8B throughput vs crossbeam channel (OS threads col)", u64, Peer::XChan, Imp::Threads),
        tput_spec!("shmring_tput8_std", "ShmRing SPSC 8B throughput vs std sync_channel (OS threads col)", u64, Peer::Std, Imp::Threads),
        tput_spec!("shmring_tput8_tokio", "ShmRing SPSC 8B throughput vs tokio mpsc (tokio col)", u64, Peer::Tokio, Imp::Tokio),
        tput_spec!("shmring_tput64_rtrb", "ShmRing SPSC 64B throughput vs rtrb (OS threads col)", M64, Peer::Rtrb, Imp::Threads),
        tput_spec!("shmring_tput64_abq", "ShmRing SPSC 64B throughput vs crossbeam ArrayQueue (OS threads col)", M64, Peer::Abq, Imp::Threads),
        tput_spec!("shmring_tput64_xchan", "ShmRing SPSC 64B throughput vs crossbeam channel (OS threads col)", M64, Peer::XChan, Imp::Threads),
        tput_spec!("shmring_tput64_std", "ShmRing SPSC 64B throughput vs std sync_channel (OS threads col)", M64, Peer::Std, Imp::Threads),
        tput_spec!("shmring_tput64_tokio", "ShmRing SPSC 64B throughput vs tokio mpsc (tokio col)", M64, Peer::Tokio, Imp::Tokio),
        Spec {
            key: "shmring_tput8b_rtrb",
            title: "ShmRing SPSC 8B throughput, chunks of 64 in place, vs rtrb chunks of 64 (OS threads col)",
            unit: "ns/msg",
            n: TPUT,
            n_override: &[],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => tput_shmring_batched(p),
                _ => tput_rtrb_chunks(p),
            },
        },
        Spec {
            key: "shmring_pp1",
            title: "ShmRing ping-pong, green tasks on 1 worker vs channels",
            unit: "ns/round trip",
            n: PP,
            n_override: &[(Imp::Threads, SLOW_PP)],
            heavy: false,
            imps: &Imp::ALL,
            run: |imp, p| match imp {
                Imp::Greenos => pp_green_one_worker(p),
                Imp::Tokio => crate::ping_pong::tokio(p, 1),
                Imp::May => crate::ping_pong::may(p, 1),
                Imp::Threads => crate::ping_pong::threads(p, 1),
            },
        },
        Spec {
            key: "shmring_pp1_xchan",
            title: "ShmRing ping-pong, green tasks on 1 worker vs crossbeam channel on 1 CPU (OS threads col)",
            unit: "ns/round trip",
            n: PP,
            n_override: &[(Imp::Threads, SLOW_PP)],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => pp_green_one_worker(p),
                _ => pp_xchan_one_cpu(p),
            },
        },
        Spec {
            key: "shmring_pp2x",
            title: "ShmRing ping-pong, OS threads on 2 CPUs vs rtrb spinning (OS threads col)",
            unit: "ns/round trip",
            n: PP,
            n_override: &[],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => pp_threads_shmring(p),
                _ => pp_threads_rtrb(p),
            },
        },
        Spec {
            key: "shmring_xpp_pipe",
            title: "ShmRing ping-pong between 2 processes vs kernel pipe (OS threads col)",
            unit: "ns/round trip",
            n: SLOW_PP,
            n_override: &[],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => xproc_shmring(p, true),
                _ => xproc_fd(p, true, FdKind::Pipe),
            },
        },
        Spec {
            key: "shmring_xpp_uds",
            title: "ShmRing ping-pong between 2 processes vs Unix socket (OS threads col)",
            unit: "ns/round trip",
            n: SLOW_PP,
            n_override: &[],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => xproc_shmring(p, true),
                _ => xproc_fd(p, true, FdKind::Uds),
            },
        },
        Spec {
            key: "shmring_xtput_pipe",
            title: "ShmRing 8B throughput between 2 processes vs kernel pipe (OS threads col)",
            unit: "ns/msg",
            n: TPUT,
            n_override: &[(Imp::Threads, SLOW_TPUT)],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => xproc_shmring(p, false),
                _ => xproc_fd(p, false, FdKind::Pipe),
            },
        },
        Spec {
            key: "shmring_xtput_uds",
            title: "ShmRing 8B throughput between 2 processes vs Unix socket (OS threads col)",
            unit: "ns/msg",
            n: TPUT,
            n_override: &[(Imp::Threads, SLOW_TPUT)],
            heavy: false,
            imps: &[Imp::Greenos, Imp::Threads],
            run: |imp, p| match imp {
                Imp::Greenos => xproc_shmring(p, false),
                _ => xproc_fd(p, false, FdKind::Uds),
            },
        },
    ]
}

/// Producer and consumer CPUs: two different ones when we may use two.
fn two_cpus() -> (usize, usize, Option<String>) {
    let cpus = crate::os::allowed_cpus();
    if cpus.len() > 1 {
        (cpus[0], cpus[1], None)
    } else {
        (
            cpus[0],
            cpus[0],
            Some("only one usable CPU: both sides on it".into()),
        )
    }
}

fn pin(cpu: usize) {
    crate::os::pin_current_thread(cpu).expect("pin thread");
}

fn with_warmup(p: &Params, round: impl Fn(u64) -> Sample) -> Sample {
    if p.warmup {
        round(p.warmup_n());
    }
    round(p.n)
}

/// Runs `prod` and `cons` on two pinned threads, timed from the earlier of
/// their starts (taken on those threads, after a common barrier, so a
/// descheduled main thread cannot shorten the interval) to the consumer's
/// end; the consumer returns the sum of sequence numbers.
fn timed_pair(
    n: u64,
    prod: impl FnOnce() + Send + 'static,
    cons: impl FnOnce() -> u64 + Send + 'static,
) -> Sample {
    let (c0, c1, note) = two_cpus();
    let go = Arc::new(Barrier::new(2));
    let g = go.clone();
    let pt = std::thread::spawn(move || {
        pin(c0);
        g.wait();
        let start = Instant::now();
        prod();
        start
    });
    let ct = std::thread::spawn(move || {
        pin(c1);
        go.wait();
        let start = Instant::now();
        let sum = cons();
        (start, Instant::now(), sum)
    });
    let (cons_start, end, sum) = ct.join().expect("consumer");
    let prod_start = pt.join().expect("producer");
    assert_eq!(sum, n * (n - 1) / 2, "every message once");
    Sample::ns_per(end - cons_start.min(prod_start), n).with_note(note)
}

fn tput_shmring<M: Msg>(p: &Params) -> Sample {
    with_warmup(p, |n| {
        let tx = ShmRing::<M>::with_capacity(RingKind::Spsc, CAP).expect("ring");
        let rx = tx.clone();
        tx.take_producer_role().unwrap();
        rx.take_consumer_role().unwrap();
        timed_pair(
            n,
            move || {
                for i in 0..n {
                    tx.send(M::make(i)).expect("send");
                }
            },
            move || (0..n).map(|_| rx.recv().expect("recv").seq()).sum(),
        )
    })
}

/// Messages per batch in the `_tput8b` row.
const BATCH: usize = 64;

fn tput_shmring_batched(p: &Params) -> Sample {
    with_warmup(p, |n| {
        let mut tx = ShmRing::<u64>::with_capacity(RingKind::Spsc, CAP).expect("ring");
        let mut rx = tx.clone();
        tx.take_producer_role().unwrap();
        rx.take_consumer_role().unwrap();
        timed_pair(
            n,
            move || {
                let mut i = 0;
                while i < n {
                    let chunk = tx.write_chunk(BATCH.min((n - i) as usize)).expect("send");
                    i += chunk.fill_from_iter(i..) as u64;
                }
            },
            move || {
                let (mut got, mut sum) = (0, 0);
                while got < n {
                    let chunk = rx.read_chunk(BATCH).expect("recv");
                    let (a, b) = chunk.as_slices();
                    sum += a.iter().sum::<u64>() + b.iter().sum::<u64>();
                    got += chunk.len() as u64;
                    chunk.commit_all();
                }
                sum
            },
        )
    })
}

fn tput_rtrb_chunks(p: &Params) -> Sample {
    with_warmup(p, |n| {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAP);
        timed_pair(
            n,
            move || {
                let mut i = 0;
                while i < n {
                    let want = BATCH.min((n - i) as usize).min(tx.slots());
                    if want == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let chunk = tx.write_chunk_uninit(want).expect("slots checked");
                    i += chunk.fill_from_iter(i..) as u64;
                }
            },
            move || {
                let (mut got, mut sum) = (0, 0);
                while got < n {
                    let k = BATCH.min(rx.slots());
                    if k == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let chunk = rx.read_chunk(k).expect("slots checked");
                    let (a, b) = chunk.as_slices();
                    sum += a.iter().sum::<u64>() + b.iter().sum::<u64>();
                    chunk.commit_all();
                    got += k as u64;
                }
                sum
            },
        )
    })
}

fn tput_peer<M: Msg>(p: &Params, peer: Peer) -> Sample {
    with_warmup(p, |n| match peer {
        Peer::Rtrb => {
            let (mut tx, mut rx) = rtrb::RingBuffer::<M>::new(CAP);
            timed_pair(
                n,
                move || {
                    for i in 0..n {
                        let mut v = M::make(i);
                        while let Err(rtrb::PushError::Full(back)) = tx.push(v) {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                },
                move || {
                    let mut sum = 0;
                    for _ in 0..n {
                        loop {
                            match rx.pop() {
                                Ok(v) => {
                                    sum += v.seq();
                                    break;
                                }
                                Err(_) => std::hint::spin_loop(),
                            }
                        }
                    }
                    sum
                },
            )
        }
        Peer::Abq => {
            let q = Arc::new(crossbeam_queue::ArrayQueue::<M>::new(CAP));
            let q2 = q.clone();
            timed_pair(
                n,
                move || {
                    for i in 0..n {
                        let mut v = M::make(i);
                        while let Err(back) = q.push(v) {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                },
                move || {
                    let mut sum = 0;
                    for _ in 0..n {
                        loop {
                            if let Some(v) = q2.pop() {
                                sum += v.seq();
                                break;
                            }
                            std::hint::spin_loop();
                        }
                    }
                    sum
                },
            )
        }
        Peer::XChan => {
            let (tx, rx) = crossbeam_channel::bounded::<M>(CAP);
            timed_pair(
                n,
                move || (0..n).for_each(|i| tx.send(M::make(i)).expect("send")),
                move || (0..n).map(|_| rx.recv().expect("recv").seq()).sum(),
            )
        }
        Peer::Std => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<M>(CAP);
            timed_pair(
                n,
                move || (0..n).for_each(|i| tx.send(M::make(i)).expect("send")),
                move || (0..n).map(|_| rx.recv().expect("recv").seq()).sum(),
            )
        }
        Peer::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("tokio");
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<M>(CAP);
                let start = Instant::now();
                let prod = tokio::spawn(async move {
                    for i in 0..n {
                        tx.send(M::make(i)).await.expect("send");
                    }
                });
                let cons = tokio::spawn(async move {
                    let mut sum = 0;
                    for _ in 0..n {
                        sum += rx.recv().await.expect("recv").seq();
                    }
                    sum
                });
                let sum = cons.await.expect("consumer");
                let elapsed = start.elapsed();
                prod.await.expect("producer");
                assert_eq!(sum, n * (n - 1) / 2);
                Sample::ns_per(elapsed, n)
                    .with_note(Some("tokio: 2 workers, tasks not pinned".into()))
            })
        }
    })
}

/// Ping-pong between two green tasks on a one-worker runtime, over two
/// capacity-1 SPSC rings.
fn pp_green_one_worker(p: &Params) -> Sample {
    let rt = greenos::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    with_warmup(p, |n| {
        rt.block_on(move || {
            let ping = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).expect("ring");
            let pong = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).expect("ring");
            let (ping_rx, pong_tx) = (ping.clone(), pong.clone());
            ping_rx.take_consumer_role().unwrap();
            pong_tx.take_producer_role().unwrap();
            // Both sides are spawned tasks, as in the channel ping-pong
            // this row compares with (`ping_pong.rs`).
            let ponger = greenos::spawn(move || {
                for _ in 0..n + crate::harness::warm_up(n) {
                    let v = ping_rx.recv().expect("ping");
                    pong_tx.send(v + 1).expect("pong");
                }
            });
            let pinger = greenos::spawn(move || {
                let (start, end) = crate::harness::ping_rounds(n, |v| {
                    ping.send(v).expect("ping");
                    pong.recv().expect("pong")
                });
                end - start
            });
            let elapsed = pinger.join().expect("pinger");
            ponger.join().expect("ponger");
            Sample::ns_per(elapsed, n)
        })
    })
}

fn pp_xchan_one_cpu(p: &Params) -> Sample {
    let cpu = crate::os::allowed_cpus()[0];
    with_warmup(p, |n| {
        let (ping_tx, ping_rx) = crossbeam_channel::bounded::<u64>(1);
        let (pong_tx, pong_rx) = crossbeam_channel::bounded::<u64>(1);
        let ponger = std::thread::spawn(move || {
            pin(cpu);
            for _ in 0..n + crate::harness::warm_up(n) {
                let v = ping_rx.recv().expect("ping");
                pong_tx.send(v + 1).expect("pong");
            }
        });
        pin(cpu);
        let (start, end) = crate::harness::ping_rounds(n, |v| {
            ping_tx.send(v).expect("ping");
            pong_rx.recv().expect("pong")
        });
        let elapsed = end - start;
        ponger.join().expect("ponger");
        Sample::ns_per(elapsed, n)
    })
}

fn pp_threads_shmring(p: &Params) -> Sample {
    let (c0, c1, note) = two_cpus();
    with_warmup(p, |n| {
        let ping = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).expect("ring");
        let pong = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).expect("ring");
        let (ping_rx, pong_tx) = (ping.clone(), pong.clone());
        ping_rx.take_consumer_role().unwrap();
        pong_tx.take_producer_role().unwrap();
        let ponger = std::thread::spawn(move || {
            pin(c1);
            for _ in 0..n + crate::harness::warm_up(n) {
                let v = ping_rx.recv().expect("ping");
                pong_tx.send(v + 1).expect("pong");
            }
        });
        pin(c0);
        let (start, end) = crate::harness::ping_rounds(n, |v| {
            ping.send(v).expect("ping");
            pong.recv().expect("pong")
        });
        let elapsed = end - start;
        ponger.join().expect("ponger");
        Sample::ns_per(elapsed, n).with_note(note.clone())
    })
}

fn pp_threads_rtrb(p: &Params) -> Sample {
    let (c0, c1, note) = two_cpus();
    fn pop_spin(c: &mut rtrb::Consumer<u64>) -> u64 {
        loop {
            if let Ok(v) = c.pop() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
    with_warmup(p, |n| {
        let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<u64>::new(1);
        let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<u64>::new(1);
        let ponger = std::thread::spawn(move || {
            pin(c1);
            for _ in 0..n + crate::harness::warm_up(n) {
                let v = pop_spin(&mut ping_rx);
                pong_tx.push(v + 1).expect("capacity 1, drained");
            }
        });
        pin(c0);
        let (start, end) = crate::harness::ping_rounds(n, |v| {
            ping_tx.push(v).expect("capacity 1, drained");
            pop_spin(&mut pong_rx)
        });
        let elapsed = end - start;
        ponger.join().expect("ponger");
        Sample::ns_per(elapsed, n).with_note(note.clone())
    })
}

// --- between two OS processes ----------------------------------------------

/// Forks a peer process running `f` (its exit status: 0 if `f` returns,
/// 101 if it panics). Only called while this process has one thread, so
/// the child inherits no lock held by another thread.
fn fork_peer(f: impl FnOnce()) -> libc::pid_t {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|s| s.trim().to_string());
    assert_eq!(
        threads.as_deref(),
        Some("1"),
        "fork only a single-threaded process"
    );
    // SAFETY: this process has one thread (checked above), so the child
    // starts in a consistent state; it leaves with `_exit`, running no
    // destructor or atexit handler of the parent's.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
                libc::_exit(if ok { 0 } else { 101 });
            }
            pid => {
                // The closure's captures (ring handles) belong to the child
                // now; dropping our copy here would give up their roles in
                // the shared header.
                std::mem::forget(f);
                pid
            }
        }
    }
}

fn wait_peer(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `pid` is our own child; status is a local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "peer process failed: status {status:#x}"
    );
}

/// Ping-pong (`pp`) or throughput through two rings shared with a forked
/// process; every wait is a futex wait on the segment.
fn xproc_shmring(p: &Params, pp: bool) -> Sample {
    with_warmup(p, |n| {
        let down =
            ShmRing::<u64>::with_capacity(RingKind::Spsc, if pp { 1 } else { CAP }).expect("ring");
        let up = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1).expect("ring");
        let (peer_down, peer_up) = (down.clone(), up.clone());
        for r in [&down, &up, &peer_down, &peer_up] {
            r.set_cross_process(true);
        }
        down.take_producer_role().unwrap();
        up.take_consumer_role().unwrap();
        peer_down.take_consumer_role().unwrap();
        peer_up.take_producer_role().unwrap();
        let child = fork_peer(move || {
            let mut sum = 0;
            for _ in 0..n {
                let v = peer_down.recv().expect("recv");
                if pp {
                    peer_up.send(v + 1).expect("send");
                } else {
                    sum += v;
                }
            }
            if !pp {
                peer_up.send(sum).expect("send sum");
            }
        });
        let start = Instant::now();
        if pp {
            let mut v = 0;
            for _ in 0..n {
                down.send(v).expect("send");
                v = up.recv().expect("recv");
            }
            assert_eq!(v, n);
        } else {
            for i in 0..n {
                down.send(i).expect("send");
            }
            assert_eq!(up.recv().expect("sum"), n * (n - 1) / 2);
        }
        let elapsed = start.elapsed();
        wait_peer(child);
        Sample::ns_per(elapsed, n)
    })
}

#[derive(Clone, Copy)]
enum FdKind {
    Pipe,
    Uds,
}

fn write_u64(fd: i32, v: u64) {
    let b = v.to_ne_bytes();
    // SAFETY: writes from a local 8-byte buffer.
    let r = unsafe { libc::write(fd, b.as_ptr().cast(), 8) };
    assert_eq!(r, 8, "write: {}", std::io::Error::last_os_error());
}

fn read_u64(fd: i32) -> u64 {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        // SAFETY: reads into the rest of a local 8-byte buffer.
        let r = unsafe { libc::read(fd, b[got..].as_mut_ptr().cast(), 8 - got) };
        assert!(r > 0, "read: {}", std::io::Error::last_os_error());
        got += r as usize;
    }
    u64::from_ne_bytes(b)
}

/// (parent reads, parent writes, child reads, child writes) descriptors.
fn fd_pairs(kind: FdKind) -> [i32; 4] {
    match kind {
        FdKind::Pipe => {
            let (mut a, mut b) = ([0; 2], [0; 2]);
            // SAFETY: pipe fills the two-element arrays.
            unsafe {
                assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
                assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
            }
            // down = a (parent writes a[1], child reads a[0]); up = b.
            [b[0], a[1], a[0], b[1]]
        }
        FdKind::Uds => {
            let mut s = [0; 2];
            // SAFETY: socketpair fills the two-element array.
            unsafe {
                assert_eq!(
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()),
                    0
                );
            }
            [s[0], s[0], s[1], s[1]]
        }
    }
}

fn close_all(fds: &[i32]) {
    let mut seen = Vec::new();
    for &fd in fds {
        if !seen.contains(&fd) {
            // SAFETY: our own descriptors, closed once.
            unsafe { libc::close(fd) };
            seen.push(fd);
        }
    }
}

fn xproc_fd(p: &Params, pp: bool, kind: FdKind) -> Sample {
    with_warmup(p, |n| {
        let [p_rd, p_wr, c_rd, c_wr] = fd_pairs(kind);
        let child = fork_peer(move || {
            let mut sum = 0;
            for _ in 0..n {
                let v = read_u64(c_rd);
                if pp {
                    write_u64(c_wr, v + 1);
                } else {
                    sum += v;
                }
            }
            if !pp {
                write_u64(c_wr, sum);
            }
        });
        let start = Instant::now();
        if pp {
            let mut v = 0;
            for _ in 0..n {
                write_u64(p_wr, v);
                v = read_u64(p_rd);
            }
            assert_eq!(v, n);
        } else {
            for i in 0..n {
                write_u64(p_wr, i);
            }
            assert_eq!(read_u64(p_rd), n * (n - 1) / 2);
        }
        let elapsed = start.elapsed();
        wait_peer(child);
        close_all(&[p_rd, p_wr, c_rd, c_wr]);
        Sample::ns_per(elapsed, n)
    })
}
