//! semget(2) / semop(2) / semctl(2) rules (ipc.md §3.5).

use std::time::Duration;

use greenos_ipc::sem::{SEMMSL, SEMOPM, SEMVMX};
use greenos_ipc::{
    semctl, semget, semop, semtimedop, IpcFlags, Key, SemCtl, SemCtlOut, SemFlags, SemId,
    SemSetPerm, Sembuf,
};
use greenos_runtime::task::Builder;

use super::common::{errno, key, rt, wait_for};

const NW: SemFlags = SemFlags::NOWAIT;
const UNDO: SemFlags = SemFlags::UNDO;

fn op(n: u16, o: i16, f: SemFlags) -> Sembuf {
    Sembuf::new(n, o, f)
}

fn set(n: i32) -> SemId {
    semget(Key::PRIVATE, n, IpcFlags::mode(0o600)).unwrap()
}

fn val(id: SemId, n: i32) -> i64 {
    semctl(id, SemCtl::GetVal(n)).unwrap().value().unwrap()
}

fn count(id: SemId, c: SemCtl) -> i64 {
    semctl(id, c).unwrap().value().unwrap()
}

fn rm(id: SemId) {
    semctl(id, SemCtl::Remove).unwrap();
}

#[test]
fn semget_rules() {
    assert_eq!(
        errno(semget(Key::PRIVATE, -1, IpcFlags::mode(0o600))),
        libc::EINVAL
    );
    assert_eq!(
        errno(semget(Key::PRIVATE, SEMMSL + 1, IpcFlags::mode(0o600))),
        libc::EINVAL
    );
    assert_eq!(
        errno(semget(Key::PRIVATE, 0, IpcFlags::mode(0o600))),
        libc::EINVAL
    );
    let k = key(2);
    let id = semget(k, 3, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
    assert_eq!(semget(k, 2, IpcFlags::NONE).unwrap(), id);
    assert_eq!(semget(k, 0, IpcFlags::NONE).unwrap(), id);
    assert_eq!(errno(semget(k, 4, IpcFlags::NONE)), libc::EINVAL);
    assert_eq!(
        errno(semget(
            k,
            3,
            IpcFlags::CREAT | IpcFlags::EXCL | IpcFlags::mode(0o600)
        )),
        libc::EEXIST
    );
    assert_eq!(
        semctl(id, SemCtl::GetAll).unwrap(),
        SemCtlOut::All(vec![0, 0, 0])
    );
    rm(id);
    assert_eq!(errno(semget(k, 3, IpcFlags::NONE)), libc::ENOENT);
    assert_eq!(
        errno(semop(id, &[op(0, 1, NW)])),
        libc::EINVAL,
        "removed id"
    );
}

#[test]
fn operation_arrays_are_all_or_nothing() {
    let id = set(2);
    semctl(id, SemCtl::SetAll(vec![1, 0])).unwrap();
    assert_eq!(
        errno(semop(id, &[op(0, -1, NW), op(1, -1, NW)])),
        libc::EAGAIN
    );
    assert_eq!(val(id, 0), 1, "the first op was not applied");
    assert_eq!(
        errno(semop(
            id,
            &[op(0, -1, NW), op(1, SEMVMX as i16, NW), op(1, 1, NW)]
        )),
        libc::ERANGE
    );
    assert_eq!(val(id, 0), 1);
    // Duplicates see the earlier ops of the same array.
    semop(
        id,
        &[op(1, 2, NW), op(1, -1, NW), op(1, -1, NW), op(1, 0, NW)],
    )
    .unwrap();
    assert_eq!(
        semctl(id, SemCtl::GetAll).unwrap(),
        SemCtlOut::All(vec![1, 0])
    );
    semop(id, &[op(1, 0, NW)]).unwrap();
    assert_eq!(
        errno(semop(id, &[op(0, 0, NW)])),
        libc::EAGAIN,
        "wait-for-zero, NOWAIT"
    );
    rm(id);
}

#[test]
fn argument_errors() {
    let id = set(2);
    assert_eq!(errno(semop(id, &[])), libc::EINVAL);
    let many = vec![op(0, 0, NW); SEMOPM + 1];
    assert_eq!(errno(semop(id, &many)), libc::E2BIG);
    assert_eq!(errno(semop(id, &[op(2, 1, NW)])), libc::EFBIG);
    assert_eq!(errno(semop(id, &[op(u16::MAX, 1, NW)])), libc::EFBIG);
    assert_eq!(errno(semop(SemId(-5), &[op(0, 1, NW)])), libc::EINVAL);
    assert_eq!(
        errno(semctl(id, SemCtl::SetVal(0, SEMVMX + 1))),
        libc::ERANGE
    );
    assert_eq!(errno(semctl(id, SemCtl::SetVal(0, -1))), libc::ERANGE);
    assert_eq!(errno(semctl(id, SemCtl::SetVal(2, 1))), libc::EINVAL);
    assert_eq!(errno(semctl(id, SemCtl::GetVal(-1))), libc::EINVAL);
    assert_eq!(errno(semctl(id, SemCtl::SetAll(vec![1]))), libc::EINVAL);
    assert_eq!(
        errno(semctl(id, SemCtl::SetAll(vec![40000, 0]))),
        libc::ERANGE
    );
    rm(id);
}

#[test]
fn blocking_until_the_whole_array_applies_with_counts() {
    let rt = rt();
    let id = set(2);
    rt.block_on(move || {
        let h = greenos_runtime::spawn(move || {
            semop(id, &[op(0, -1, SemFlags::NONE), op(1, -1, SemFlags::NONE)]).unwrap();
            greenos_runtime::getpid().0
        });
        wait_for(|| count(id, SemCtl::GetNcnt(0)) == 1);
        semctl(id, SemCtl::SetVal(0, 1)).unwrap();
        // Still blocked, now on semaphore 1.
        wait_for(|| count(id, SemCtl::GetNcnt(1)) == 1);
        assert_eq!(count(id, SemCtl::GetNcnt(0)), 0);
        assert!(!h.is_finished());
        semop(id, &[op(1, 1, NW)]).unwrap();
        let pid = h.join().unwrap();
        assert_eq!(
            semctl(id, SemCtl::GetAll).unwrap(),
            SemCtlOut::All(vec![0, 0])
        );
        assert_eq!(count(id, SemCtl::GetPid(0)), pid as i64);
        assert_eq!(count(id, SemCtl::GetNcnt(1)), 0);
    });
    rm(id);
}

#[test]
fn five_zero_waiters_and_five_decrementers() {
    // LTP semctl01: 5 sleepers give GETNCNT == 5 and GETZCNT == 5.
    let rt = rt();
    let id = set(1);
    semctl(id, SemCtl::SetVal(0, 1)).unwrap();
    rt.block_on(move || {
        let zs: Vec<_> = (0..5)
            .map(|_| {
                greenos_runtime::spawn(move || semop(id, &[op(0, 0, SemFlags::NONE)]).unwrap())
            })
            .collect();
        let ns: Vec<_> = (0..5)
            .map(|_| {
                greenos_runtime::spawn(move || semop(id, &[op(0, -2, SemFlags::NONE)]).unwrap())
            })
            .collect();
        wait_for(|| count(id, SemCtl::GetZcnt(0)) == 5 && count(id, SemCtl::GetNcnt(0)) == 5);
        semop(id, &[op(0, -1, NW)]).unwrap();
        for z in zs {
            z.join().unwrap();
        }
        assert_eq!(count(id, SemCtl::GetZcnt(0)), 0);
        semop(id, &[op(0, 10, NW)]).unwrap();
        for n in ns {
            n.join().unwrap();
        }
        assert_eq!(val(id, 0), 0);
    });
    rm(id);
}

#[test]
fn semtimedop_times_out_with_eagain_and_applies_nothing() {
    let id = set(2);
    semctl(id, SemCtl::SetVal(0, 5)).unwrap();
    let e = semtimedop(
        id,
        &[op(0, -1, SemFlags::NONE), op(1, -1, SemFlags::NONE)],
        Some(Duration::from_millis(5)),
    );
    assert_eq!(errno(e), libc::EAGAIN);
    assert_eq!(
        semctl(id, SemCtl::GetAll).unwrap(),
        SemCtlOut::All(vec![5, 0])
    );
    assert_eq!(count(id, SemCtl::GetNcnt(1)), 0);
    rm(id);
}

#[test]
fn removal_gives_eidrm_to_every_waiter() {
    let rt = rt();
    let id = set(2);
    semctl(id, SemCtl::SetVal(1, 1)).unwrap();
    let r = rt.block_on(move || {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                greenos_runtime::spawn(move || {
                    let o = if i % 2 == 0 {
                        op(0, -1, SemFlags::NONE)
                    } else {
                        op(1, 0, SemFlags::NONE)
                    };
                    errno(semop(id, &[o]))
                })
            })
            .collect();
        wait_for(|| count(id, SemCtl::GetNcnt(0)) == 3 && count(id, SemCtl::GetZcnt(1)) == 3);
        semctl(id, SemCtl::Remove).unwrap();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(r, vec![libc::EIDRM; 6]);
}

#[test]
fn sem_undo_is_applied_when_the_process_exits() {
    let rt = rt();
    let id = set(2);
    semctl(id, SemCtl::SetVal(0, 1)).unwrap();
    rt.block_on(move || {
        // Takes the "lock" with UNDO and returns without releasing it.
        greenos_runtime::spawn(move || semop(id, &[op(0, -1, UNDO)]).unwrap())
            .join()
            .unwrap();
        assert_eq!(val(id, 0), 1, "released at exit");
        // A panicking process is undone too.
        let h = greenos_runtime::spawn(move || {
            semop(id, &[op(0, -1, UNDO), op(1, 3, UNDO)]).unwrap();
            panic!("dies holding it");
        });
        assert!(h.join().is_err());
        assert_eq!(
            semctl(id, SemCtl::GetAll).unwrap(),
            SemCtlOut::All(vec![1, 0])
        );
        // A waiter blocked on the semaphore is woken by the undo.
        let (release_r, release_w) = greenos_ipc::pipe().unwrap();
        let holder = greenos_runtime::spawn(move || {
            semop(id, &[op(0, -1, UNDO)]).unwrap();
            // Holds it until told to exit.
            std::io::Read::read(&mut &release_r, &mut [0u8; 1]).unwrap();
        });
        wait_for(|| val(id, 0) == 0);
        let waiter =
            greenos_runtime::spawn(move || semop(id, &[op(0, -1, SemFlags::NONE)]).unwrap());
        wait_for(|| count(id, SemCtl::GetNcnt(0)) == 1);
        drop(release_w);
        holder.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(val(id, 0), 0);
        // SETVAL clears the semadj: nothing is undone afterwards.
        semctl(id, SemCtl::SetVal(0, 2)).unwrap();
        greenos_runtime::spawn(move || {
            semop(id, &[op(0, -2, UNDO)]).unwrap();
            semctl(id, SemCtl::SetVal(0, 7)).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(val(id, 0), 7);
        // Undo is clamped at 0 (Linux exit_sem).
        greenos_runtime::spawn(move || {
            semop(id, &[op(0, 5, UNDO)]).unwrap();
            semctl(id, SemCtl::SetAll(vec![2, 0])).unwrap_or(SemCtlOut::Done);
        })
        .join()
        .unwrap();
        assert_eq!(val(id, 0), 2, "SETALL cleared it");
        greenos_runtime::spawn(move || {
            semop(id, &[op(0, 5, UNDO)]).unwrap();
            semop(id, &[op(0, -6, NW)]).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(val(id, 0), 0, "1 - 5 clamps at 0");
    });
    rm(id);
}

#[test]
fn semadj_range_is_checked() {
    let id = set(1);
    let rt = rt();
    rt.block_on(move || {
        greenos_runtime::spawn(move || {
            semop(id, &[op(0, SEMVMX as i16, UNDO)]).unwrap();
            semctl(id, SemCtl::SetVal(0, SEMVMX)).unwrap();
            // semadj was cleared by SETVAL; build it up again to -SEMAEM.
            semop(id, &[op(0, -(SEMVMX as i16), UNDO)]).unwrap();
            semop(id, &[op(0, 1, UNDO)]).unwrap();
            semop(id, &[op(0, -1, UNDO)]).unwrap();
            // semadj = SEMVMX now; one more decrement would take it past.
            semop(id, &[op(0, 1, NW)]).unwrap();
            errno(semop(id, &[op(0, -1, UNDO | NW)]))
        })
        .join()
        .map(|e| assert_eq!(e, libc::ERANGE))
        .unwrap();
    });
    rm(id);
}

#[test]
fn permissions_read_for_zero_alter_for_others() {
    if !super::common::is_root("permissions_read_for_zero_alter_for_others") {
        return;
    }
    let rt = rt();
    rt.block_on(|| {
        let id = Builder::new()
            .uid(1000)
            .gid(100)
            .spawn(|| semget(Key::PRIVATE, 1, IpcFlags::mode(0o640)).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let r = Builder::new()
            .uid(1001)
            .gid(100)
            .spawn(move || {
                (
                    semop(id, &[op(0, 0, NW)]).is_ok(),
                    errno(semop(id, &[op(0, 1, NW)])),
                    errno(semctl(id, SemCtl::SetVal(0, 1))),
                    errno(semctl(
                        id,
                        SemCtl::Set(SemSetPerm {
                            uid: 1001,
                            gid: 100,
                            mode: 0o666,
                        }),
                    )),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r, (true, libc::EACCES, libc::EACCES, libc::EPERM));
        let r = Builder::new()
            .uid(1000)
            .gid(100)
            .spawn(move || {
                let zero = semget(Key::PRIVATE, 1, IpcFlags::mode(0)).unwrap();
                let e = errno(semop(zero, &[op(0, 1, NW)]));
                semctl(zero, SemCtl::Remove).unwrap();
                semctl(
                    id,
                    SemCtl::Set(SemSetPerm {
                        uid: 1000,
                        gid: 100,
                        mode: 0o600,
                    }),
                )
                .unwrap();
                e
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r, libc::EACCES, "mode 0 refuses the creator");
        match semctl(id, SemCtl::Stat).unwrap() {
            SemCtlOut::Stat(ds) => {
                assert_eq!((ds.perm.mode, ds.nsems, ds.perm.cuid), (0o600, 1, 1000));
                assert!(ds.otime > 0, "the wait-for-zero op set sem_otime");
            }
            other => panic!("{other:?}"),
        }
        semctl(id, SemCtl::Remove).unwrap();
    });
}

#[test]
fn sem_undo_is_applied_when_the_process_is_cancelled_at_shutdown() {
    let id = set(1);
    semctl(id, SemCtl::SetVal(0, 1)).unwrap();
    let (blk_r, _blk_w) = greenos_ipc::pipe().unwrap();
    let rt = rt();
    rt.block_on(move || {
        greenos_runtime::spawn(move || {
            semop(id, &[op(0, -1, UNDO)]).unwrap();
            let _ = std::io::Read::read(&mut &blk_r, &mut [0u8; 1]);
        });
        wait_for(|| val(id, 0) == 0);
    });
    drop(rt);
    assert_eq!(val(id, 0), 1, "undone when the task was unwound");
    rm(id);
}

#[test]
fn no_lost_wakeups_in_a_ping_pong_across_cpus_and_threads() {
    // Post/wait handoffs between two green tasks on two CPUs and an OS
    // thread; every wait has only a watchdog, so a lost wakeup fails the
    // test (EAGAIN from semtimedop) instead of passing slowly.
    const ROUNDS: usize = 5000;
    let id = set(3);
    let rt = rt();
    let t = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            semtimedop(
                id,
                &[op(2, -1, SemFlags::NONE)],
                Some(super::common::WATCHDOG),
            )
            .unwrap();
            semop(id, &[op(0, 1, NW)]).unwrap();
        }
    });
    rt.block_on(move || {
        let a = greenos_runtime::spawn(move || {
            for _ in 0..ROUNDS {
                semop(id, &[op(1, 1, NW)]).unwrap();
                semtimedop(
                    id,
                    &[op(0, -1, SemFlags::NONE)],
                    Some(super::common::WATCHDOG),
                )
                .unwrap();
            }
        });
        let b = greenos_runtime::spawn(move || {
            for _ in 0..ROUNDS {
                semtimedop(
                    id,
                    &[op(1, -1, SemFlags::NONE)],
                    Some(super::common::WATCHDOG),
                )
                .unwrap();
                semop(id, &[op(2, 1, NW)]).unwrap();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
    });
    t.join().unwrap();
    assert_eq!(
        semctl(id, SemCtl::GetAll).unwrap(),
        SemCtlOut::All(vec![0, 0, 0])
    );
    rm(id);
}

#[test]
fn semget_checks_nsems_before_permission_as_linux_does() {
    if !super::common::is_root("semget_checks_nsems_before_permission_as_linux_does") {
        return;
    }
    // Measured on the kernel: a set of 1 with mode 0600 owned by root,
    // `semget(key, 2, 0400)` by uid 65534 gives EINVAL, with 1 EACCES.
    let k = key(3);
    let id = semget(k, 1, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
    let rt = rt();
    let r = rt.block_on(move || {
        Builder::new()
            .uid(65534)
            .gid(65534)
            .spawn(move || {
                (
                    errno(semget(k, 2, IpcFlags::mode(0o400))),
                    errno(semget(k, 1, IpcFlags::mode(0o400))),
                )
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(r, (libc::EINVAL, libc::EACCES));
    rm(id);
}

/// A task's cached set lookup never outlives a removal (as for queues):
/// EINVAL once another task removed the set.
#[test]
fn a_cached_lookup_sees_removal_by_another_task() {
    rt().block_on(|| {
        let id = semget(Key::PRIVATE, 1, IpcFlags::mode(0o600)).unwrap();
        semop(id, &[op(0, 1, SemFlags::NONE)]).unwrap();
        assert_eq!(val(id, 0), 1);
        greenos_runtime::spawn(move || rm(id)).join().unwrap();
        assert_eq!(errno(semop(id, &[op(0, 1, SemFlags::NONE)])), libc::EINVAL);
        assert_eq!(errno(semctl(id, SemCtl::GetVal(0))), libc::EINVAL);
    });
}
