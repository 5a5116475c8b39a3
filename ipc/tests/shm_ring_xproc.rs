//! A ring between two OS processes: the test binary re-executes itself as
//! a child (not a bare `fork` of a multi-threaded process), hands it two
//! memfds by inheritance, and the two exchange a million messages each
//! way, blocking across the process boundary with futexes on words inside
//! the segments.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use greenos_ipc::shm::shm_fd;
use greenos_ipc::{RingKind, ShmMap, ShmRing};

/// In the child: "DOWN_FD,UP_FD".
const CHILD_ENV: &str = "GREENOS_SHM_RING_CHILD_FDS";
const N: u64 = 1_000_000;

/// The child's side; a no-op in a normal test run.
#[test]
fn child_side() {
    let Ok(fds) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (down, up) = fds.split_once(',').unwrap();
    let open = |s: &str| {
        let fd: i32 = s.parse().unwrap();
        // SAFETY: the parent left this fd open for us (inherited, no
        // close-on-exec) and nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let r = ShmRing::<u64>::open(ShmMap::from_fd(fd, false).unwrap()).unwrap();
        r.set_cross_process(true);
        r
    };
    let (down, up) = (open(down), open(up));
    // A greenos runtime of its own; its task blocks on futexes when a ring
    // is empty or full.
    let rt = greenos_runtime::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let got = rt.block_on(move || {
        let mut got = 0u64;
        loop {
            // A generous watchdog: a parent that died must not leave us
            // blocked forever.
            match down.recv_timeout(Duration::from_secs(120)) {
                Ok(v) => {
                    assert_eq!(v, got, "in order, nothing lost or duplicated");
                    up.send(2 * v + 1).unwrap();
                    got += 1;
                }
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
                    return got;
                }
            }
        }
    });
    assert_eq!(got, N);
}

/// A copy of `fd` that a child inherits.
fn inheritable(fd: &OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD (not F_DUPFD_CLOEXEC) makes a new descriptor without
    // close-on-exec; we own the result.
    unsafe {
        let d = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 3);
        assert!(d >= 0, "dup: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(d)
    }
}

#[test]
fn a_million_messages_each_way_between_two_processes() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let down = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1024).unwrap();
    let up = ShmRing::<u64>::with_capacity(RingKind::Spsc, 1024).unwrap();
    down.set_cross_process(true);
    up.set_cross_process(true);
    let down_fd = inheritable(&shm_fd(down.shm_id().unwrap()).unwrap());
    let up_fd = inheritable(&shm_fd(up.shm_id().unwrap()).unwrap());
    // Take our roles first, so the child never sees "producer gone" early.
    down.take_producer_role().unwrap();
    up.take_consumer_role().unwrap();

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_side", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{},{}", down_fd.as_raw_fd(), up_fd.as_raw_fd()),
        )
        // Captured (it is small: the child harness's few lines), shown on
        // failure only.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop((down_fd, up_fd));

    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            down.send(i).unwrap();
        }
        // Dropping `down` tells the child we are done (EPIPE after drain).
    });
    let mut got = 0u64;
    loop {
        match up.recv_timeout(Duration::from_secs(120)) {
            Ok(v) => {
                assert_eq!(v, 2 * got + 1);
                got += 1;
            }
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EPIPE),
                    "child hung or died: {e}"
                );
                break;
            }
        }
    }
    sender.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(got, N);
    eprintln!(
        "{N} round trips through two cross-process rings in {:?}",
        started.elapsed()
    );
}
