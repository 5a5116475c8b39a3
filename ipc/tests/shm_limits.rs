//! SHMMNI: the segment table holds 4096 segments (ipc.md §3.1); one more is
//! ENOSPC, and a removed segment's slot can be used again. Its own test
//! binary, so that no other test's segments share the table.

use greenos_ipc::shm::{shm_ids, SHMMNI};
use greenos_ipc::{shmctl, shmget, IpcFlags, Key, ShmCtl};

/// Each segment holds a memfd: make sure we may open enough descriptors.
fn enough_fds(n: u64) -> bool {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return false;
        }
        if r.rlim_cur >= n {
            return true;
        }
        if r.rlim_max < n {
            return false;
        }
        r.rlim_cur = n;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0
    }
}

#[test]
fn shmmni_segments_then_enospc() {
    if !enough_fds(SHMMNI as u64 + 256) {
        eprintln!("skipped: RLIMIT_NOFILE too low for {SHMMNI} memfds");
        return;
    }
    assert_eq!(SHMMNI, 4096);
    let flags = IpcFlags::CREAT | IpcFlags::mode(0o600);
    let mut ids = Vec::new();
    for _ in 0..SHMMNI {
        ids.push(shmget(Key::PRIVATE, 1, flags).unwrap());
    }
    assert_eq!(shm_ids().len(), SHMMNI);
    let e = shmget(Key::PRIVATE, 1, flags).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    // A key that names nothing cannot be created either.
    let e = shmget(Key(0x5eed_0001), 1, flags).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    // Free one slot: creation works again, with a new id.
    let freed = ids.pop().unwrap();
    shmctl(freed, ShmCtl::Remove).unwrap();
    let again = shmget(Key::PRIVATE, 1, flags).unwrap();
    assert_ne!(again, freed, "a reused slot gets a new sequence number");
    ids.push(again);
    for id in ids {
        shmctl(id, ShmCtl::Remove).unwrap();
    }
    assert!(shm_ids().is_empty());
}
