//! msgget(2) / msgop(2) / msgctl(2) rules (ipc.md §2).

use std::time::Duration;

use greenos_ipc::msg::{MSGMAX, MSGMNB};
use greenos_ipc::{
    msgctl, msgctl_stat, msgget, msgrcv, msgrcv_timeout, msgsnd, msgsnd_timeout, IpcFlags, Key,
    MsgCtl, MsgFlags, MsqId, MsqSet,
};
use greenos_runtime::task::Builder;

use super::common::{errno, key, rt};

const NW: MsgFlags = MsgFlags::NOWAIT;

fn private() -> MsqId {
    msgget(Key::PRIVATE, IpcFlags::mode(0o600)).unwrap()
}

fn rm(id: MsqId) {
    msgctl(id, MsgCtl::Remove).unwrap();
}

#[test]
fn msgget_key_rules() {
    let k = key(1);
    assert_eq!(errno(msgget(k, IpcFlags::NONE)), libc::ENOENT);
    assert_eq!(errno(msgget(k, IpcFlags::EXCL)), libc::ENOENT);
    let id = msgget(k, IpcFlags::CREAT | IpcFlags::mode(0o640)).unwrap();
    assert_eq!(msgget(k, IpcFlags::mode(0o400)).unwrap(), id);
    assert_eq!(
        errno(msgget(
            k,
            IpcFlags::CREAT | IpcFlags::EXCL | IpcFlags::mode(0o600)
        )),
        libc::EEXIST
    );
    let a = private();
    let b = private();
    assert_ne!(a, b, "IPC_PRIVATE always creates");
    let ds = msgctl_stat(id).unwrap();
    assert_eq!(ds.qbytes, MSGMNB);
    assert_eq!(
        (ds.qnum, ds.lspid, ds.lrpid, ds.stime, ds.rtime),
        (0, 0, 0, 0, 0)
    );
    assert!(ds.ctime > 0);
    assert_eq!(ds.perm.mode, 0o640);
    rm(id);
    assert_eq!(
        errno(msgctl_stat(id)),
        libc::EINVAL,
        "a removed id is EINVAL"
    );
    assert_eq!(errno(msgsnd(id, 1, b"x", NW)), libc::EINVAL);
    rm(a);
    rm(b);
}

#[test]
fn the_three_type_rules_and_except() {
    let id = private();
    for t in [5, 3, 1, 2, 3] {
        msgsnd(id, t, format!("t{t}").as_bytes(), NW).unwrap();
    }
    let mut buf = [0u8; 16];
    // ipc.md §2.4, measured: repeated msgrcv(-3) returns 1, 2, then the first 3.
    assert_eq!(msgrcv(id, &mut buf, -3, NW).unwrap().0, 1);
    assert_eq!(msgrcv(id, &mut buf, -3, NW).unwrap().0, 2);
    let (t, n) = msgrcv(id, &mut buf, -3, NW).unwrap();
    assert_eq!((t, &buf[..n]), (3, &b"t3"[..]));
    // queue: [5, 3]. EXCEPT 5 -> the 3.
    assert_eq!(msgrcv(id, &mut buf, 5, NW | MsgFlags::EXCEPT).unwrap().0, 3);
    assert_eq!(errno(msgrcv(id, &mut buf, 4, NW)), libc::ENOMSG);
    // EXCEPT is ignored for negative types (LTP msgrcv02).
    assert_eq!(
        errno(msgrcv(id, &mut buf, -1, NW | MsgFlags::EXCEPT)),
        libc::ENOMSG
    );
    assert_eq!(msgrcv(id, &mut buf, 0, NW).unwrap().0, 5);
    assert_eq!(errno(msgrcv(id, &mut buf, 0, NW)), libc::ENOMSG);
    // FIFO among equal types.
    msgsnd(id, 7, b"first", NW).unwrap();
    msgsnd(id, 7, b"second", NW).unwrap();
    let (_, n) = msgrcv(id, &mut buf, 7, NW).unwrap();
    assert_eq!(&buf[..n], b"first");
    rm(id);
}

/// Short texts are stored inline in the queue entry and long ones boxed
/// (`Text`): every length on both sides of the boundary, and the largest
/// message, come back byte for byte, in order, with `cbytes` counting them.
#[test]
fn texts_of_every_size_come_back_exactly() {
    let id = private();
    let lens = [0usize, 1, 29, 30, 31, 32, 100, 4096, MSGMAX];
    let text = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 + len) as u8).collect() };
    // Two passes so that the queue never holds more than MSGMNB bytes.
    for pass in lens.chunks(5) {
        for &len in pass {
            msgsnd(id, len as i64 + 1, &text(len), NW).unwrap();
        }
        let queued: usize = pass.iter().sum();
        assert_eq!(msgctl_stat(id).unwrap().cbytes, queued);
        for &len in pass {
            let mut buf = vec![0xAAu8; MSGMAX];
            let (mtype, n) = msgrcv(id, &mut buf, 0, NW).unwrap();
            assert_eq!((mtype, n), (len as i64 + 1, len));
            assert_eq!(&buf[..n], &text(len)[..], "text of {len} bytes");
            assert!(
                buf[n..].iter().all(|&b| b == 0xAA),
                "nothing written past it"
            );
        }
    }
    // Truncation (NOERROR) of an inline and of a boxed text.
    for len in [30usize, 31] {
        msgsnd(id, 1, &text(len), NW).unwrap();
        let mut small = [0u8; 5];
        assert_eq!(
            msgrcv(id, &mut small, 0, NW | MsgFlags::NOERROR).unwrap(),
            (1, 5)
        );
        assert_eq!(&small[..], &text(len)[..5]);
    }
    rm(id);
}

#[test]
fn too_long_messages_stay_queued_unless_noerror() {
    let id = private();
    msgsnd(id, 1, b"0123456789", NW).unwrap();
    let mut small = [0u8; 4];
    assert_eq!(errno(msgrcv(id, &mut small, 0, NW)), libc::E2BIG);
    assert_eq!(msgctl_stat(id).unwrap().qnum, 1, "E2BIG leaves it queued");
    assert_eq!(
        msgrcv(id, &mut small, 0, NW | MsgFlags::NOERROR).unwrap(),
        (1, 4)
    );
    assert_eq!(&small, b"0123");
    assert_eq!(msgctl_stat(id).unwrap().qnum, 0, "the rest is lost");
    rm(id);
}

#[test]
fn argument_errors() {
    let id = private();
    assert_eq!(errno(msgsnd(id, 0, b"x", NW)), libc::EINVAL);
    assert_eq!(errno(msgsnd(id, -1, b"x", NW)), libc::EINVAL);
    assert_eq!(errno(msgsnd(id, 1, &vec![0; MSGMAX + 1], NW)), libc::EINVAL);
    msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
    msgsnd(id, 1, &[], NW).unwrap();
    assert_eq!(errno(msgsnd(MsqId(-1), 1, b"x", NW)), libc::EINVAL);
    assert_eq!(errno(msgrcv(MsqId(-1), &mut [], 0, NW)), libc::EINVAL);
    assert_eq!(errno(msgctl_stat(MsqId(i32::MAX))), libc::EINVAL);
    rm(id);
}

#[test]
fn qbytes_limits_bytes_and_message_count() {
    let id = private();
    // Two full-size messages fit in MSGMNB, the third does not.
    msgsnd(id, 1, &vec![1; MSGMAX], NW).unwrap();
    msgsnd(id, 1, &vec![1; MSGMAX], NW).unwrap();
    assert_eq!(errno(msgsnd(id, 1, b"x", NW)), libc::EAGAIN);
    let ds = msgctl_stat(id).unwrap();
    assert_eq!((ds.qnum, ds.cbytes), (2, 2 * MSGMAX));
    rm(id);
    // ipc.md §2.3, measured: 16384 empty messages fit, the next blocks.
    let id = private();
    for _ in 0..MSGMNB {
        msgsnd(id, 1, &[], NW).unwrap();
    }
    assert_eq!(errno(msgsnd(id, 1, &[], NW)), libc::EAGAIN);
    rm(id);
}

#[test]
fn stat_fields_follow_send_and_receive() {
    let rt = rt();
    let id = private();
    let (spid, rpid) = rt.block_on(move || {
        let s = greenos_runtime::spawn(move || {
            msgsnd(id, 3, b"abc", NW).unwrap();
            greenos_runtime::getpid().0
        })
        .join()
        .unwrap();
        let r = greenos_runtime::spawn(move || {
            let ds = msgctl_stat(id).unwrap();
            assert_eq!((ds.qnum, ds.cbytes, ds.lspid), (1, 3, s));
            assert!(ds.stime > 0 && ds.rtime == 0);
            msgrcv(id, &mut [0; 8], 0, NW).unwrap();
            greenos_runtime::getpid().0
        })
        .join()
        .unwrap();
        (s, r)
    });
    let ds = msgctl_stat(id).unwrap();
    assert_eq!((ds.qnum, ds.cbytes, ds.lspid, ds.lrpid), (0, 0, spid, rpid));
    assert!(ds.rtime > 0);
    rm(id);
}

#[test]
fn blocking_send_and_receive_between_tasks() {
    let rt = rt();
    let id = private();
    rt.block_on(move || {
        let consumer = greenos_runtime::spawn(move || {
            let mut buf = [0u8; 8];
            let mut sum = 0u64;
            for _ in 0..1000 {
                let (t, n) = msgrcv(id, &mut buf, 2, MsgFlags::NONE).unwrap();
                assert_eq!((t, n), (2, 8));
                sum += u64::from_le_bytes(buf);
            }
            sum
        });
        // A type-1 message nobody receives takes half the room, so the
        // type-2 sender blocks whenever the consumer falls behind.
        msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
        for i in 0..1000u64 {
            msgsnd(id, 2, &i.to_le_bytes(), MsgFlags::NONE).unwrap();
        }
        assert_eq!(consumer.join().unwrap(), 999 * 1000 / 2);
    });
    rm(id);
}

#[test]
fn timeouts_report_etimedout() {
    let id = private();
    let e = msgrcv_timeout(id, &mut [0; 4], 0, MsgFlags::NONE, Duration::from_millis(5));
    assert_eq!(errno(e), libc::ETIMEDOUT);
    msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
    msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
    let e = msgsnd_timeout(id, 1, b"x", MsgFlags::NONE, Duration::from_millis(5));
    assert_eq!(errno(e), libc::ETIMEDOUT);
    rm(id);
}

#[test]
fn removal_wakes_every_blocked_caller_with_eidrm() {
    let rt = rt();
    let id = private();
    msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
    msgsnd(id, 1, &vec![0; MSGMAX], NW).unwrap();
    let results = rt.block_on(move || {
        let mut hs = Vec::new();
        for _ in 0..3 {
            hs.push(greenos_runtime::spawn(move || {
                errno(msgrcv(id, &mut [0; 4], 9, MsgFlags::NONE))
            }));
            hs.push(greenos_runtime::spawn(move || {
                errno(msgsnd(id, 1, b"x", MsgFlags::NONE))
            }));
        }
        // An OS thread blocked too.
        let t = std::thread::spawn(move || errno(msgrcv(id, &mut [0; 4], 9, MsgFlags::NONE)));
        greenos_runtime::sleep(Duration::from_millis(20));
        msgctl(id, MsgCtl::Remove).unwrap();
        let mut v: Vec<i32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        v.push(t.join().unwrap());
        v
    });
    assert_eq!(results, vec![libc::EIDRM; 7]);
}

#[test]
fn permissions_owner_group_other_and_mode_zero() {
    if !super::common::is_root("permissions_owner_group_other_and_mode_zero") {
        return;
    }
    let rt = rt();
    rt.block_on(|| {
        let as_user = |uid: u32, gid: u32, f: fn() -> Vec<i32>| {
            Builder::new()
                .uid(uid)
                .gid(gid)
                .spawn(f)
                .unwrap()
                .join()
                .unwrap()
        };
        // Created by uid 1000 with mode 0: the creator itself is refused.
        let r = as_user(1000, 100, || {
            let id = msgget(Key::PRIVATE, IpcFlags::mode(0)).unwrap();
            let v = vec![
                errno(msgsnd(id, 1, b"x", NW)),
                errno(msgrcv(id, &mut [0; 1], 0, NW)),
                errno(msgctl_stat(id)),
            ];
            msgctl(id, MsgCtl::Remove).unwrap(); // owner may remove
            v
        });
        assert_eq!(r, vec![libc::EACCES; 3]);
        // Mode 0640 by uid 1000, group 100.
        let id = Builder::new()
            .uid(1000)
            .gid(100)
            .spawn(|| msgget(Key::PRIVATE, IpcFlags::mode(0o640)).unwrap())
            .unwrap()
            .join()
            .unwrap();
        msgsnd(id, 1, b"a", NW).unwrap(); // root bypasses
        let group = Builder::new()
            .uid(1001)
            .gid(100)
            .spawn(move || {
                let send = msgsnd(id, 1, b"x", NW).map_err(|e| e.raw_os_error().unwrap());
                let recv = msgrcv(id, &mut [0; 4], 0, NW).map(|(t, _)| t);
                let set = errno(msgctl(id, MsgCtl::Remove));
                (send, recv.unwrap(), set)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(group, (Err(libc::EACCES), 1, libc::EPERM));
        let other = Builder::new()
            .uid(1002)
            .gid(200)
            .spawn(move || errno(msgctl_stat(id)))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(other, libc::EACCES);
        msgctl(id, MsgCtl::Remove).unwrap();
    });
}

#[test]
fn ipc_set_changes_owner_mode_and_qbytes() {
    if !super::common::is_root("ipc_set_changes_owner_mode_and_qbytes") {
        return;
    }
    let rt = rt();
    rt.block_on(|| {
        let id = Builder::new()
            .uid(1000)
            .gid(100)
            .spawn(move || {
                let id = msgget(Key::PRIVATE, IpcFlags::mode(0o600)).unwrap();
                let ds = msgctl_stat(id).unwrap();
                let mut set = MsqSet::from(ds);
                set.qbytes = MSGMNB + 1;
                assert_eq!(errno(msgctl(id, MsgCtl::Set(set))), libc::EPERM);
                set.qbytes = 10;
                set.mode = 0o644;
                msgctl(id, MsgCtl::Set(set)).unwrap();
                id
            })
            .unwrap()
            .join()
            .unwrap();
        let ds = msgctl_stat(id).unwrap();
        assert_eq!((ds.qbytes, ds.perm.mode, ds.perm.cuid), (10, 0o644, 1000));
        msgsnd(id, 1, b"0123456789", NW).unwrap();
        // Full at 10 bytes: a blocked sender goes on when root raises qbytes.
        let h = greenos_runtime::spawn(move || msgsnd(id, 1, b"more", MsgFlags::NONE).is_ok());
        greenos_runtime::sleep(Duration::from_millis(10));
        let mut set = MsqSet::from(ds);
        set.qbytes = MSGMNB * 2;
        msgctl(id, MsgCtl::Set(set)).unwrap();
        assert!(h.join().unwrap());
        assert_eq!(msgctl_stat(id).unwrap().qnum, 2);
        msgctl(id, MsgCtl::Remove).unwrap();
    });
}

#[test]
fn no_lost_wakeups_in_a_typed_ping_pong_across_cpus_and_threads() {
    // Type 1 goes to task B, type 2 to an OS thread, type 3 back to task A;
    // only watchdog timeouts, so a lost wakeup fails (ETIMEDOUT).
    const ROUNDS: u64 = 3000;
    let id = private();
    let rt = rt();
    let w = super::common::WATCHDOG;
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 8];
        for _ in 0..ROUNDS {
            let (_, n) = msgrcv_timeout(id, &mut b, 2, MsgFlags::NONE, w).unwrap();
            msgsnd(id, 3, &b[..n], MsgFlags::NONE).unwrap();
        }
    });
    rt.block_on(move || {
        let a = greenos_runtime::spawn(move || {
            let mut b = [0u8; 8];
            for i in 0..ROUNDS {
                msgsnd(id, 1, &i.to_le_bytes(), MsgFlags::NONE).unwrap();
                msgrcv_timeout(id, &mut b, 3, MsgFlags::NONE, w).unwrap();
                assert_eq!(u64::from_le_bytes(b), i);
            }
        });
        let bt = greenos_runtime::spawn(move || {
            let mut b = [0u8; 8];
            for _ in 0..ROUNDS {
                let (_, n) = msgrcv_timeout(id, &mut b, 1, MsgFlags::NONE, w).unwrap();
                msgsnd(id, 2, &b[..n], MsgFlags::NONE).unwrap();
            }
        });
        a.join().unwrap();
        bt.join().unwrap();
    });
    t.join().unwrap();
    rm(id);
}

/// A task's cached lookup never outlives a removal: a task that used a
/// queue (so its lookup is cached) gets EINVAL once another task removed
/// it, and a new queue under the same key is a different object.
#[test]
fn a_cached_lookup_sees_removal_by_another_task() {
    rt().block_on(|| {
        let k = key(60);
        let id = msgget(k, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
        msgsnd(id, 1, b"a", NW).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(msgrcv(id, &mut buf, 0, NW).unwrap(), (1, 1));
        // Another task removes it (and an unrelated queue is removed too).
        let other = private();
        greenos_runtime::spawn(move || {
            rm(id);
            rm(other);
        })
        .join()
        .unwrap();
        assert_eq!(errno(msgsnd(id, 1, b"x", NW)), libc::EINVAL);
        assert_eq!(errno(msgrcv(id, &mut buf, 0, NW)), libc::EINVAL);
        let id2 = msgget(k, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
        assert_ne!(id2, id);
        msgsnd(id2, 2, b"b", NW).unwrap();
        assert_eq!(msgrcv(id2, &mut buf, 0, NW).unwrap(), (2, 1));
        assert_eq!(errno(msgrcv(id, &mut buf, 0, NW)), libc::EINVAL);
        rm(id2);
    });
}

/// A signal handler runs inside its task's blocked `msgrcv`, which holds
/// its queue borrowed from the task's lookup cache (no reference count):
/// the handler still looks up and uses other queues, and that queue too,
/// and with SA_RESTART the receive then gets its message.
#[test]
fn a_signal_handler_uses_queues_while_its_task_is_blocked_in_msgrcv() {
    use greenos_runtime::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SIGUSR1};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    rt().block_on(|| {
        let (a, b) = (private(), private());
        let armed = Arc::new(AtomicBool::new(false));
        let armed2 = armed.clone();
        let receiver = greenos_runtime::spawn(move || {
            let handler = SigHandler::new(move |_| {
                msgsnd(b, 7, b"h", NW).expect("send from the handler");
                assert!(msgctl_stat(a).expect("stat from the handler").qnum <= 1);
            });
            sigaction(
                SIGUSR1,
                Some(SigAction::new(handler).flags(SaFlags::RESTART)),
            )
            .unwrap();
            armed2.store(true, Ordering::SeqCst);
            let mut buf = [0u8; 4];
            msgrcv(a, &mut buf, 0, MsgFlags::NONE).map(|(t, n)| (t, buf[..n].to_vec()))
        });
        while !armed.load(Ordering::SeqCst) {
            greenos_runtime::yield_now();
        }
        // Most likely blocked in `msgrcv` by now (the test holds either way).
        for _ in 0..100 {
            greenos_runtime::yield_now();
        }
        kill(receiver.task().pid(), SIGUSR1).unwrap();
        let mut buf = [0u8; 4];
        // The handler ran (wherever the receiver was): its message arrives.
        assert_eq!(msgrcv(b, &mut buf, 0, MsgFlags::NONE).unwrap(), (7, 1));
        msgsnd(a, 1, b"ok", NW).unwrap();
        assert_eq!(receiver.join().unwrap().unwrap(), (1, b"ok".to_vec()));
        rm(a);
        rm(b);
    });
}
