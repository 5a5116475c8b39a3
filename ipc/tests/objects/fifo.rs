//! fifo(7) and the open rules (ipc.md §1.6).

use std::io::{Read, Write};
use std::time::Duration;

use greenos_ipc::{mkfifo, unlink, Fifo};
use greenos_runtime::task::Builder;

use super::common::{errno, rt};

fn name(tag: &str) -> String {
    format!("/tmp/greenos-test-fifo-{}-{tag}", std::process::id())
}

#[test]
fn mkfifo_and_unlink_errors() {
    let p = name("errs");
    mkfifo(&p, 0o600).unwrap();
    assert_eq!(errno(mkfifo(&p, 0o600)), libc::EEXIST);
    assert_eq!(errno(mkfifo("", 0o600)), libc::ENOENT);
    assert_eq!(errno(mkfifo(&"x".repeat(5000), 0o600)), libc::ENAMETOOLONG);
    unlink(&p).unwrap();
    assert_eq!(errno(unlink(&p)), libc::ENOENT);
    assert_eq!(errno(Fifo::open_read_nonblocking(&p)), libc::ENOENT);
    assert_eq!(errno(Fifo::open_write_nonblocking(&p)), libc::ENOENT);
}

#[test]
fn nonblocking_open_rules() {
    let p = name("nb");
    mkfifo(&p, 0o600).unwrap();
    assert_eq!(
        errno(Fifo::open_write_nonblocking(&p)),
        libc::ENXIO,
        "no reader"
    );
    let r = Fifo::open_read_nonblocking(&p).unwrap();
    assert_eq!(
        r.try_read(&mut [0; 4]).unwrap(),
        0,
        "no writer ever: reads 0, not EAGAIN"
    );
    let w = Fifo::open_write_nonblocking(&p).unwrap();
    assert_eq!(errno(r.try_read(&mut [0; 4])), libc::EAGAIN);
    (&w).write_all(b"abc").unwrap();
    let mut buf = [0u8; 4];
    assert_eq!((&r).read(&mut buf).unwrap(), 3);
    // Both closed: the pipe and its data are gone.
    (&w).write_all(b"lost").unwrap();
    drop(w);
    drop(r);
    let r = Fifo::open_read_nonblocking(&p).unwrap();
    assert_eq!(
        r.try_read(&mut buf).unwrap(),
        0,
        "data died with the last ends"
    );
    // open_rw never blocks and holds both ends.
    let (r2, w2) = Fifo::open_rw(&p).unwrap();
    (&w2).write_all(b"xy").unwrap();
    assert_eq!(
        r.try_read(&mut buf).unwrap(),
        2,
        "one pipe per name while open"
    );
    drop((r2, w2));
    unlink(&p).unwrap();
}

#[test]
fn blocking_opens_meet() {
    let rt = rt();
    let p = name("meet");
    mkfifo(&p, 0o666).unwrap();
    let p2 = p.clone();
    let got = rt.block_on(move || {
        let reader = greenos_runtime::spawn(move || {
            let mut r = Fifo::open_read(&p2).unwrap();
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        });
        greenos_runtime::sleep(Duration::from_millis(5));
        let mut w = Fifo::open_write(&p).unwrap();
        w.write_all(b"through the fifo").unwrap();
        drop(w);
        reader.join().unwrap()
    });
    assert_eq!(got, "through the fifo");
    // And writer-first, with an OS thread as the reader.
    let p3 = name("meet2");
    mkfifo(&p3, 0o666).unwrap();
    let p4 = p3.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        let mut s = String::new();
        Fifo::open_read(&p4)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    });
    rt.block_on(move || {
        let mut w = Fifo::open_write(&p3).unwrap();
        w.write_all(b"hi").unwrap();
    });
    assert_eq!(t.join().unwrap(), "hi");
}

#[test]
fn a_blocked_open_ends_even_if_the_peer_closes_at_once() {
    let rt = rt();
    let p = name("gen");
    mkfifo(&p, 0o666).unwrap();
    let p2 = p.clone();
    rt.block_on(move || {
        let h = greenos_runtime::spawn(move || Fifo::open_read(&p2).map(|_| ()).is_ok());
        greenos_runtime::sleep(Duration::from_millis(5));
        // A writer that opens only once a reader exists, and closes at once.
        loop {
            match Fifo::open_write_nonblocking(&p) {
                Ok(w) => {
                    drop(w);
                    break;
                }
                Err(_) => greenos_runtime::sleep(Duration::from_millis(1)),
            }
        }
        assert!(h.join().unwrap());
    });
}

#[test]
fn open_timeouts_and_permissions() {
    if !super::common::is_root("open_timeouts_and_permissions") {
        return;
    }
    let rt = rt();
    let p = name("perm");
    rt.block_on(move || {
        assert_eq!(
            errno(Fifo::open_read_timeout(&p, Duration::from_millis(5))),
            libc::ENOENT
        );
        let p2 = p.clone();
        Builder::new()
            .uid(1000)
            .gid(100)
            .spawn(move || mkfifo(&p2, 0o640).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let p3 = p.clone();
        let r = Builder::new()
            .uid(1001)
            .gid(100)
            .spawn(move || {
                (
                    Fifo::open_read_nonblocking(&p3).is_ok(),
                    errno(Fifo::open_write_nonblocking(&p3)),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r, (true, libc::EACCES));
        let p4 = p.clone();
        let other = Builder::new()
            .uid(1002)
            .gid(200)
            .spawn(move || errno(Fifo::open_read_nonblocking(&p4)))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(other, libc::EACCES);
        let e = Fifo::open_read_timeout(&p, Duration::from_millis(5));
        assert_eq!(errno(e), libc::ETIMEDOUT);
        let e = Fifo::open_write_timeout(&p, Duration::from_millis(5));
        assert_eq!(errno(e), libc::ETIMEDOUT);
        // The timed-out opens left no end behind.
        assert_eq!(errno(Fifo::open_write_nonblocking(&p)), libc::ENXIO);
        unlink(&p).unwrap();
    });
}

#[test]
fn rendezvous_stress_peer_that_opens_writes_and_closes_at_once() {
    // The writer may open, write and close before the blocked reader looks
    // again; the reader must still return (and see the data, then EOF).
    let rt = rt();
    let p = name("stress");
    mkfifo(&p, 0o666).unwrap();
    rt.block_on(move || {
        for i in 0..1000u32 {
            let p2 = p.clone();
            let reader = greenos_runtime::spawn(move || {
                let mut s = Vec::new();
                Fifo::open_read(&p2).unwrap().read_to_end(&mut s).unwrap();
                s
            });
            let mut w = Fifo::open_write(&p).unwrap();
            w.write_all(&i.to_le_bytes()).unwrap();
            drop(w);
            assert_eq!(reader.join().unwrap(), i.to_le_bytes());
        }
        unlink(&p).unwrap();
    });
}
