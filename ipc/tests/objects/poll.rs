//! poll(2) over pipe ends, FIFO ends and message queues.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos_ipc::{
    msgctl, msgget, msgrcv, msgsnd, pipe, poll, IpcFlags, Key, MsgCtl, MsgFlags, PollEvents, PollFd,
};

use super::common::{rt, WATCHDOG};

const IN: PollEvents = PollEvents::IN;
const OUT: PollEvents = PollEvents::OUT;

#[test]
fn readiness_of_each_kind() {
    let (r, w) = pipe().unwrap();
    let q = msgget(Key::PRIVATE, IpcFlags::mode(0o600)).unwrap();
    let mut fds = [
        PollFd::new(&r, IN),
        PollFd::new(&w, OUT),
        PollFd::new(q, IN | OUT),
    ];
    assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 2);
    assert_eq!(fds[0].revents, PollEvents::NONE);
    assert_eq!(fds[1].revents, OUT);
    assert_eq!(fds[2].revents, OUT);
    (&w).write_all(b"x").unwrap();
    msgsnd(q, 1, b"m", MsgFlags::NOWAIT).unwrap();
    assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 3);
    assert_eq!(fds[0].revents, IN);
    assert_eq!(fds[2].revents, IN | OUT);
    msgctl(q, MsgCtl::Remove).unwrap();
    let mut fds = [PollFd::new(q, IN)];
    assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(fds[0].revents, PollEvents::NVAL);
    // Hang-up and error are reported even when not asked for.
    let (r2, w2) = pipe().unwrap();
    drop(w2);
    let mut fds = [PollFd::new(&r2, PollEvents::NONE)];
    poll(&mut fds, Some(Duration::ZERO)).unwrap();
    assert_eq!(fds[0].revents, PollEvents::HUP);
    drop(r);
    let mut fds = [PollFd::new(&w, PollEvents::NONE)];
    poll(&mut fds, Some(Duration::ZERO)).unwrap();
    assert_eq!(fds[0].revents, PollEvents::ERR);
}

#[test]
fn full_pipe_is_not_writable_and_timeout_returns_zero() {
    let (r, w) = pipe().unwrap();
    (&w).write_all(&vec![0u8; w.capacity()]).unwrap();
    let mut fds = [PollFd::new(&w, OUT), PollFd::new(&r, PollEvents::NONE)];
    assert_eq!(poll(&mut fds, Some(Duration::from_millis(5))).unwrap(), 0);
}

#[test]
fn a_blocked_poll_wakes_for_the_object_that_becomes_ready() {
    let rt = rt();
    rt.block_on(|| {
        let (r1, _w1) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        let q = msgget(Key::PRIVATE, IpcFlags::mode(0o600)).unwrap();
        let (go_r, go_w) = pipe().unwrap();
        let h = greenos_runtime::spawn(move || {
            greenos_runtime::sleep(Duration::from_millis(5));
            msgsnd(q, 4, b"wake", MsgFlags::NONE).unwrap();
            // Hang up only once the poller has seen the message.
            std::io::Read::read(&mut &go_r, &mut [0u8; 1]).unwrap();
            greenos_runtime::sleep(Duration::from_millis(5));
            drop(w2);
        });
        let mut fds = [
            PollFd::new(&r1, IN),
            PollFd::new(q, IN),
            PollFd::new(&r2, IN),
        ];
        assert_eq!(poll(&mut fds, Some(WATCHDOG)).unwrap(), 1);
        assert_eq!(fds[1].revents, IN);
        msgrcv(q, &mut [0; 8], 0, MsgFlags::NONE).unwrap();
        (&go_w).write_all(b"g").unwrap();
        assert_eq!(poll(&mut fds, Some(WATCHDOG)).unwrap(), 1);
        assert_eq!(fds[2].revents, PollEvents::HUP);
        h.join().unwrap();
        msgctl(q, MsgCtl::Remove).unwrap();
    });
}

#[test]
fn no_lost_wakeups_under_races() {
    // A poller on one CPU and a writer on the other, racing thousands of
    // times; the poll has only a watchdog timeout, so a lost wakeup is a
    // 0 return (and a failed assertion), never a pass. OS threads join in.
    const ROUNDS: usize = 3000;
    let rt = rt();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let t2 = timeouts.clone();
    rt.block_on(move || {
        let (r, w) = pipe().unwrap();
        let (ack_r, ack_w) = pipe().unwrap();
        let writer = greenos_runtime::spawn(move || {
            let mut b = [0u8; 1];
            for _ in 0..ROUNDS {
                (&w).write_all(b"x").unwrap();
                std::io::Read::read_exact(&mut &ack_r, &mut b).unwrap();
            }
        });
        for _ in 0..ROUNDS {
            let mut fds = [PollFd::new(&r, IN)];
            if poll(&mut fds, Some(WATCHDOG)).unwrap() == 0 {
                t2.fetch_add(1, Ordering::Relaxed);
            }
            r.try_read(&mut [0; 1]).unwrap();
            (&ack_w).write_all(b"a").unwrap();
        }
        writer.join().unwrap();
    });
    assert_eq!(
        timeouts.load(Ordering::Relaxed),
        0,
        "a poll missed its wakeup"
    );

    // Plain OS threads, same protocol.
    let (r, w) = pipe().unwrap();
    let (ack_r, ack_w) = pipe().unwrap();
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        for _ in 0..500 {
            (&w).write_all(b"x").unwrap();
            std::io::Read::read_exact(&mut &ack_r, &mut b).unwrap();
        }
    });
    for _ in 0..500 {
        let mut fds = [PollFd::new(&r, IN)];
        assert_eq!(poll(&mut fds, Some(WATCHDOG)).unwrap(), 1);
        r.try_read(&mut [0; 1]).unwrap();
        (&ack_w).write_all(b"a").unwrap();
    }
    t.join().unwrap();
}
