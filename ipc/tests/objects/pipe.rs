//! pipe(7) rules (ipc.md §1.1–§1.5).

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use greenos_ipc::pipe::{DEFAULT_CAPACITY, PIPE_MAX_SIZE};
use greenos_ipc::{pipe, pipe_nonblocking, pipe_with_capacity, PIPE_BUF};
use greenos_runtime::task::Builder;

use super::common::{errno, rt, WATCHDOG};

#[test]
fn bytes_come_out_in_order_and_reads_return_what_is_there() {
    let (mut r, mut w) = pipe().unwrap();
    assert_eq!(w.write(b"hello ").unwrap(), 6);
    assert_eq!(w.write(b"world").unwrap(), 5);
    assert_eq!(r.available(), 11);
    let mut buf = [0u8; 4];
    assert_eq!(r.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf, b"hell");
    let mut rest = [0u8; 64];
    assert_eq!(r.read(&mut rest).unwrap(), 7);
    assert_eq!(&rest[..7], b"o world");
    assert_eq!(r.read(&mut []).unwrap(), 0, "a zero-length read returns 0");
    assert_eq!(w.write(&[]).unwrap(), 0);
}

#[test]
fn read_exact_and_write_all_keep_std_semantics() {
    let (mut r, mut w) = pipe().unwrap();
    w.write_all(b"abcdef").unwrap();
    let mut buf = [0u8; 4];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abcd");
    drop(w);
    // Two bytes left, then EOF: not enough to fill four.
    let e = r.read_exact(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(&buf[..2], b"ef", "what was there was read");
    r.read_exact(&mut []).unwrap();

    let (r, mut w) = pipe().unwrap();
    drop(r);
    let e = w.write_all(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    w.write_all(&[]).unwrap();
}

#[test]
fn eof_only_after_every_writer_clone_is_dropped() {
    let (r, w) = pipe_nonblocking().unwrap();
    let w2 = w.try_clone().unwrap();
    drop(w);
    assert_eq!(errno(r.try_read(&mut [0; 8])), libc::EAGAIN);
    (&w2).write_all(b"x").unwrap();
    drop(w2);
    let mut buf = [0u8; 8];
    assert_eq!(
        r.try_read(&mut buf).unwrap(),
        1,
        "queued data survives the writer"
    );
    assert_eq!(r.try_read(&mut buf).unwrap(), 0, "then EOF");
}

#[test]
fn epipe_once_every_reader_is_gone_and_zero_writes_still_succeed() {
    let (r, w) = pipe().unwrap();
    let r2 = r.try_clone().unwrap();
    drop(r);
    (&w).write_all(b"still a reader").unwrap();
    drop(r2);
    let e = (&w).write(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(
        (&w).write(&[]).unwrap(),
        0,
        "Linux returns 0 for empty writes first"
    );
}

#[test]
fn every_blocked_reader_wakes_at_eof() {
    // LTP pipe13: green readers on two CPUs plus OS-thread readers.
    let rt = rt();
    let (r, w) = pipe().unwrap();
    let r = std::sync::Arc::new(r);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || (&*r).read(&mut [0u8; 4]).unwrap())
        })
        .collect();
    let got = rt.block_on(|| {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let r = r.clone();
                greenos_runtime::spawn(move || (&*r).read(&mut [0u8; 4]).unwrap())
            })
            .collect();
        greenos_runtime::sleep(Duration::from_millis(20));
        drop(w);
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(got, vec![0; 10]);
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
}

#[test]
fn a_writer_blocked_on_a_full_pipe_gets_epipe_when_readers_leave() {
    let rt = rt();
    rt.block_on(|| {
        let (r, w) = pipe().unwrap();
        (&w).write_all(&vec![1u8; DEFAULT_CAPACITY]).unwrap();
        let h = greenos_runtime::spawn(move || (&w).write(b"more").map_err(|e| e.raw_os_error()));
        greenos_runtime::sleep(Duration::from_millis(10));
        drop(r);
        assert_eq!(h.join().unwrap(), Err(Some(libc::EPIPE)));
    });
}

#[test]
fn nonblocking_write_rules() {
    // ipc.md §1.3 table, and LTP pipe12's three checks.
    let (r, w) = pipe_nonblocking().unwrap();
    let cap = w.capacity();
    assert_eq!(cap, DEFAULT_CAPACITY);
    // Empty pipe: a write of capacity + 4096 stores exactly capacity.
    assert_eq!((&w).write(&vec![7u8; cap + 4096]).unwrap(), cap);
    // Full: a 1-byte write is EAGAIN.
    assert_eq!(errno((&w).write(b"x")), libc::EAGAIN);
    // Room for 100: a 200-byte (≤ PIPE_BUF) write is all or nothing.
    assert_eq!(r.try_read(&mut [0u8; 100]).unwrap(), 100);
    assert_eq!(errno((&w).write(&[1u8; 200])), libc::EAGAIN);
    assert_eq!((&w).write(&[1u8; 100]).unwrap(), 100);
    // Pipe holding one byte: a large write succeeds with some count.
    let mut sink = vec![0u8; cap];
    assert_eq!(r.try_read(&mut sink).unwrap(), cap);
    (&w).write_all(b"z").unwrap();
    let n = (&w).write(&vec![3u8; cap + 4096]).unwrap();
    assert!(n > 0 && n < cap, "partial large write: {n}");
    // An empty pipe with a writer reads EAGAIN.
    let (r2, _w2) = pipe_nonblocking().unwrap();
    assert_eq!(errno(r2.try_read(&mut [0; 1])), libc::EAGAIN);
}

#[test]
fn nonblocking_flag_is_shared_by_clones() {
    let (r, _w) = pipe().unwrap();
    let r2 = r.try_clone().unwrap();
    r.set_nonblocking(true).unwrap();
    assert!(r2.is_nonblocking());
    assert_eq!(errno((&r2).read(&mut [0; 1])), libc::EAGAIN);
}

#[test]
fn capacity_rounding_and_errors() {
    let (r, w) = pipe().unwrap();
    assert_eq!(r.capacity(), 65536);
    assert_eq!(w.set_capacity(0).unwrap(), 4096);
    assert_eq!(r.capacity(), 4096, "both ends see one capacity");
    assert_eq!(w.set_capacity(5000).unwrap(), 8192);
    assert_eq!(w.set_capacity(70000).unwrap(), 131072);
    assert_eq!(errno(w.set_capacity((1 << 31) + 1)), libc::EINVAL);
    (&w).write_all(&[0u8; 10000]).unwrap();
    assert_eq!(errno(w.set_capacity(8192)), libc::EBUSY);
    assert_eq!(w.set_capacity(16384).unwrap(), 16384);
    assert_eq!(r.available(), 10000, "resizing keeps the data");
    let mut buf = vec![1u8; 10000];
    (&r).read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let (pr, _pw) = pipe_with_capacity(3).unwrap();
    assert_eq!(pr.capacity(), 4096);
}

#[test]
fn unprivileged_callers_cannot_exceed_pipe_max_size() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: check directly.
        let (r, _w) = pipe().unwrap();
        assert_eq!(errno(r.set_capacity(PIPE_MAX_SIZE + 1)), libc::EPERM);
        assert_eq!(r.set_capacity(PIPE_MAX_SIZE).unwrap(), PIPE_MAX_SIZE);
        return;
    }
    let rt = rt();
    rt.block_on(|| {
        let (r, _w) = pipe().unwrap();
        let h = Builder::new()
            .uid(1000)
            .gid(1000)
            .spawn(move || {
                let over = r
                    .set_capacity(PIPE_MAX_SIZE + 1)
                    .map_err(|e| e.raw_os_error());
                let at = r.set_capacity(PIPE_MAX_SIZE).unwrap();
                (over, at)
            })
            .unwrap();
        assert_eq!(h.join().unwrap(), (Err(Some(libc::EPERM)), PIPE_MAX_SIZE));
        let (r, _w) = pipe().unwrap();
        assert_eq!(
            r.set_capacity(PIPE_MAX_SIZE * 2).unwrap(),
            PIPE_MAX_SIZE * 2
        );
    });
}

#[test]
fn writes_up_to_pipe_buf_never_interleave() {
    // Four writers race 4096-byte records through an 8 KiB pipe; every
    // record must come out whole.
    const RECORDS: usize = 200;
    let rt = rt();
    let (r, w) = pipe_with_capacity(8192).unwrap();
    let seen = rt.block_on(move || {
        let hs: Vec<_> = (0..4u8)
            .map(|id| {
                let w = w.try_clone().unwrap();
                greenos_runtime::spawn(move || {
                    for _ in 0..RECORDS {
                        (&w).write_all(&[id + 1; PIPE_BUF]).unwrap();
                    }
                })
            })
            .collect();
        drop(w);
        let mut all = Vec::new();
        (&r).read_to_end(&mut all).unwrap();
        for h in hs {
            h.join().unwrap();
        }
        all
    });
    assert_eq!(seen.len(), 4 * RECORDS * PIPE_BUF);
    let mut counts = [0usize; 4];
    for rec in seen.chunks(PIPE_BUF) {
        assert!(rec.iter().all(|&b| b == rec[0]), "a record was interleaved");
        counts[(rec[0] - 1) as usize] += 1;
    }
    assert_eq!(counts, [RECORDS; 4]);
}

#[test]
fn large_blocking_writes_arrive_whole_across_cpus() {
    let rt = rt();
    let (r, w) = pipe().unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expect = data.clone();
    let got = rt.block_on(move || {
        let h = greenos_runtime::spawn(move || {
            for chunk in data.chunks(65536 + 123) {
                assert_eq!(
                    (&w).write(chunk).unwrap(),
                    chunk.len(),
                    "blocking writes are whole"
                );
            }
        });
        let mut got = Vec::new();
        (&r).read_to_end(&mut got).unwrap();
        h.join().unwrap();
        got
    });
    assert!(got == expect);
}

#[test]
fn timeouts() {
    let rt = rt();
    rt.block_on(|| {
        let (r, w) = pipe().unwrap();
        let e = r
            .read_timeout(&mut [0; 1], Duration::from_millis(5))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        (&w).write_all(&vec![0u8; DEFAULT_CAPACITY - 10]).unwrap();
        // A 100-byte write needs room for all 100 (atomic): times out.
        let e = w
            .write_timeout(&[0; 100], Duration::from_millis(5))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
        // A large write stores what fits, then reports that count.
        assert_eq!(
            w.write_timeout(&[0; 5000], Duration::from_millis(5))
                .unwrap(),
            10
        );
        assert_eq!(r.read_timeout(&mut [0; 10], WATCHDOG).unwrap(), 10);
    });
}

#[test]
fn os_threads_and_green_tasks_talk_both_ways() {
    let rt = rt();
    let (r1, w1) = pipe().unwrap();
    let (r2, w2) = pipe().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        for i in 0..200u64 {
            (&r1).read_exact(&mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), i);
            (&w2).write_all(&(i + 1).to_le_bytes()).unwrap();
        }
    });
    rt.block_on(move || {
        let mut buf = [0u8; 8];
        for i in 0..200u64 {
            (&w1).write_all(&i.to_le_bytes()).unwrap();
            (&r2).read_exact(&mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), i + 1);
        }
    });
    t.join().unwrap();
}

#[test]
fn ends_owned_by_an_exiting_task_are_closed() {
    // Issue 7 item 6: a green process that returns or panics closes its ends.
    let rt = rt();
    rt.block_on(|| {
        let (r, w) = pipe().unwrap();
        let h = greenos_runtime::spawn(move || {
            (&w).write_all(b"bye").unwrap();
        });
        h.join().unwrap();
        let mut s = String::new();
        (&r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "bye");
    });
    rt.block_on(|| {
        let (r, w) = pipe().unwrap();
        let h = greenos_runtime::spawn(move || {
            let _keep = w;
            panic!("dies holding the write end");
        });
        assert!(h.join().is_err());
        assert_eq!(
            (&r).read(&mut [0; 4]).unwrap(),
            0,
            "EOF after the owner died"
        );
    });
}

#[test]
fn a_task_cancelled_at_shutdown_closes_its_ends_and_its_destructors_get_eintr() {
    // Issue 7 item 6 ("or is cancelled at shutdown") and the Cancelled →
    // EINTR mapping: a wait started while the task unwinds returns EINTR.
    struct Probe {
        r: greenos_ipc::PipeReader,
        tx: std::sync::mpsc::Sender<Option<i32>>,
    }
    impl Drop for Probe {
        fn drop(&mut self) {
            let e = (&self.r)
                .read(&mut [0u8; 1])
                .err()
                .and_then(|e| e.raw_os_error());
            let _ = self.tx.send(e);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (out_r, out_w) = pipe().unwrap();
    let (blk_r, _blk_w) = pipe().unwrap();
    let rt = rt();
    rt.block_on(move || {
        let (started_r, started_w) = pipe().unwrap();
        greenos_runtime::spawn(move || {
            let _probe = Probe {
                r: blk_r.try_clone().unwrap(),
                tx,
            };
            let _owned = out_w;
            drop(started_w);
            // Blocks for ever: the writer stays open outside.
            let _ = (&blk_r).read(&mut [0u8; 1]);
        });
        // EOF once the task runs (it dropped its end).
        assert_eq!((&started_r).read(&mut [0u8; 1]).unwrap(), 0);
    });
    drop(rt);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Some(libc::EINTR));
    assert_eq!(
        (&out_r).read(&mut [0u8; 1]).unwrap(),
        0,
        "the cancelled task's end closed"
    );
}

#[test]
fn no_lost_wakeups_in_a_ring_of_pipes_across_cpus_and_threads() {
    // Task A (CPU 0) -> task B (CPU 1) -> an OS thread -> A, one 8-byte
    // token per round, plus bursts that fill a one-page pipe so that
    // writers sleep too. Every blocking step has only the watchdog as its
    // timeout: a lost wakeup (reader or writer) fails with ETIMEDOUT.
    const ROUNDS: u64 = 3000;
    let w = WATCHDOG;
    let (ra, wa) = pipe_with_capacity(4096).unwrap();
    let (rb, wb) = pipe_with_capacity(4096).unwrap();
    let (rc, wc) = pipe_with_capacity(4096).unwrap();
    let read8 = move |r: &greenos_ipc::PipeReader| {
        let mut b = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            got += r.read_timeout(&mut b[got..], w).unwrap();
        }
        u64::from_le_bytes(b)
    };
    let write_all = move |wr: &greenos_ipc::PipeWriter, mut d: &[u8]| {
        while !d.is_empty() {
            let n = wr.write_timeout(d, w).unwrap();
            d = &d[n..];
        }
    };
    let burst = vec![0u8; 6000];
    let t = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            let v = read8(&rc);
            write_all(&wa, &v.to_le_bytes());
        }
    });
    let rt = rt();
    rt.block_on(move || {
        let on = |cpu: usize| {
            let mut set = greenos_runtime::CpuSet::new();
            set.set(cpu);
            Builder::new().affinity(set)
        };
        let b = on(1)
            .spawn(move || {
                let mut sink = vec![0u8; 6000];
                for i in 0..ROUNDS {
                    if i % 100 == 0 {
                        // The burst: A's writer sleeps on a full pipe.
                        let mut got = 0;
                        while got < sink.len() {
                            got += rb.read_timeout(&mut sink[got..], w).unwrap();
                        }
                    }
                    let v = read8(&rb);
                    write_all(&wc, &v.to_le_bytes());
                }
            })
            .unwrap();
        let a = on(0)
            .spawn(move || {
                for i in 0..ROUNDS {
                    if i % 100 == 0 {
                        write_all(&wb, &burst);
                    }
                    write_all(&wb, &i.to_le_bytes());
                    assert_eq!(read8(&ra), i);
                }
            })
            .unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    t.join().unwrap();
}
