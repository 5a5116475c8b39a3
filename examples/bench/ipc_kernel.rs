//! greenos IPC objects against the kernel's own (issue 7 item 9): in these
//! rows the "OS threads" column is the **kernel object** (a `pipe2`, a
//! System V queue or semaphore set through `libc`) between two OS threads,
//! pinned to one CPU or to two. greenos runs the same protocol between two
//! green tasks, on one worker, or on two workers with the tasks pinned to
//! CPU 0 and CPU 1.
//!
//! | row | protocol | figure |
//! |---|---|---|
//! | `ipc_pipe` | 1 byte there over one pipe, 1 byte back over another | ns/round trip |
//! | `ipc_pipebw` | 64 KiB writes through one pipe, read in 64 KiB reads | ns per 64 KiB (GB/s in the note) |
//! | `ipc_msg` | one queue: `msgsnd` type 1, answer type 2 (1-byte texts) | ns/round trip |
//! | `ipc_sem` | a set of two: post 0 / wait 1 against wait 0 / post 1 | ns/round trip |
//!
//! Suffix `1`: one worker / both threads on one CPU; `2x`: two CPUs.
//!
//! The round-trip rows time N round trips after
//! [`warm_up`](crate::harness::warm_up) untimed ones by the same pair, on
//! both sides (steady state, as in the other ping-pong rows).

use std::time::{Duration, Instant};

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

const CHUNK: usize = 64 << 10;

fn base(key: &'static str, title: &'static str, run: fn(Imp, &Params) -> Sample) -> Spec {
    Spec {
        key,
        title,
        unit: "ns/round trip",
        n: Sizes {
            quick: 50_000,
            full: 1_000_000,
        },
        n_override: &[(
            Imp::Threads,
            Sizes {
                quick: 5_000,
                full: 100_000,
            },
        )],
        heavy: false,
        imps: &[Imp::Greenos, Imp::Threads],
        run,
    }
}

/// The eight rows.
pub fn specs() -> Vec<Spec> {
    let bw = |key, title, run| Spec {
        unit: "ns/64KiB",
        n: Sizes {
            quick: 10_000,
            full: 100_000,
        },
        n_override: &[],
        ..base(key, title, run)
    };
    vec![
        base(
            "ipc_pipe1",
            "pipe 1-byte ping-pong, 1 CPU (OS threads = kernel pipe)",
            |i, p| pick(i, p, false, Mech::Pipe),
        ),
        base(
            "ipc_pipe2x",
            "pipe 1-byte ping-pong, 2 CPUs (OS threads = kernel pipe)",
            |i, p| pick(i, p, true, Mech::Pipe),
        ),
        bw(
            "ipc_pipebw1",
            "pipe 64 KiB writes, 1 CPU (OS threads = kernel pipe)",
            |i, p| pick(i, p, false, Mech::PipeBw),
        ),
        bw(
            "ipc_pipebw2x",
            "pipe 64 KiB writes, 2 CPUs (OS threads = kernel pipe)",
            |i, p| pick(i, p, true, Mech::PipeBw),
        ),
        base(
            "ipc_msg1",
            "msg queue ping-pong, 1 CPU (OS threads = kernel msgq)",
            |i, p| pick(i, p, false, Mech::Msg),
        ),
        base(
            "ipc_msg2x",
            "msg queue ping-pong, 2 CPUs (OS threads = kernel msgq)",
            |i, p| pick(i, p, true, Mech::Msg),
        ),
        base(
            "ipc_sem1",
            "SysV sem ping-pong, 1 CPU (OS threads = kernel sem)",
            |i, p| pick(i, p, false, Mech::Sem),
        ),
        base(
            "ipc_sem2x",
            "SysV sem ping-pong, 2 CPUs (OS threads = kernel sem)",
            |i, p| pick(i, p, true, Mech::Sem),
        ),
    ]
}

#[derive(Clone, Copy)]
enum Mech {
    Pipe,
    PipeBw,
    Msg,
    Sem,
}

fn pick(imp: Imp, p: &Params, two: bool, m: Mech) -> Sample {
    let run = |n: u64| match imp {
        Imp::Greenos => greenos(n, two, m),
        _ => kernel(n, two, m),
    };
    if p.warmup {
        run(p.warmup_n());
    }
    let (elapsed, note) = run(p.n);
    let s = Sample::ns_per(elapsed, p.n);
    let note = match m {
        Mech::PipeBw => {
            let gbs = CHUNK as f64 / s.value;
            Some(format!("{gbs:.2} GB/s").to_string()).map(|g| match note {
                Some(n) => format!("{g}; {n}"),
                None => g,
            })
        }
        _ => note,
    };
    s.with_note(note)
}

/// Untimed round trips before the timed ones, as in every ping-pong row
/// ([`crate::harness::warm_up`]); none for the bandwidth row (its sides
/// end with an acknowledgement).
fn warm_up(n: u64, m: Mech) -> u64 {
    match m {
        Mech::PipeBw => 0,
        _ => crate::harness::warm_up(n),
    }
}

// --- greenos ---------------------------------------------------------------

fn greenos(n: u64, two: bool, m: Mech) -> (Duration, Option<String>) {
    use greenos::ipc;
    use std::io::{Read, Write};

    let rt = greenos::Runtime::builder()
        .workers(if two { 2 } else { 1 })
        .build()
        .expect("build greenos runtime");
    rt.block_on(move || {
        let on = |cpu: usize| {
            let mut set = greenos::CpuSet::new();
            set.set(if two { cpu } else { 0 });
            greenos::task::Builder::new().affinity(set)
        };
        type Side = Box<dyn FnMut(u64) + Send>;
        type Cleanup = Box<dyn FnOnce() + Send>;
        let (mut ping, mut pong, cleanup): (Side, Side, Cleanup) = match m {
            Mech::Pipe => {
                let (r1, w1) = ipc::pipe().unwrap();
                let (r2, w2) = ipc::pipe().unwrap();
                (
                    Box::new(move |n| {
                        let mut b = [0u8; 1];
                        for _ in 0..n {
                            (&w1).write_all(&b).unwrap();
                            (&r2).read_exact(&mut b).unwrap();
                        }
                    }),
                    Box::new(move |n| {
                        let mut b = [0u8; 1];
                        for _ in 0..n {
                            (&r1).read_exact(&mut b).unwrap();
                            (&w2).write_all(&b).unwrap();
                        }
                    }),
                    Box::new(|| {}),
                )
            }
            Mech::PipeBw => {
                let (r, w) = ipc::pipe().unwrap();
                let (ar, aw) = ipc::pipe().unwrap();
                (
                    Box::new(move |n| {
                        let buf = vec![7u8; CHUNK];
                        for _ in 0..n {
                            (&w).write_all(&buf).unwrap();
                        }
                        (&ar).read_exact(&mut [0u8; 1]).unwrap();
                    }),
                    Box::new(move |n| {
                        let mut buf = vec![0u8; CHUNK];
                        let mut left = n as usize * CHUNK;
                        while left > 0 {
                            let k = (&r).read(&mut buf[..CHUNK.min(left)]).unwrap();
                            assert!(k > 0);
                            left -= k;
                        }
                        (&aw).write_all(b"a").unwrap();
                    }),
                    Box::new(|| {}),
                )
            }
            Mech::Msg => {
                let q = ipc::msgget(ipc::Key::PRIVATE, ipc::IpcFlags::mode(0o600)).unwrap();
                let f = ipc::MsgFlags::NONE;
                (
                    Box::new(move |n| {
                        let mut b = [0u8; 1];
                        for _ in 0..n {
                            ipc::msgsnd(q, 1, &b, f).unwrap();
                            ipc::msgrcv(q, &mut b, 2, f).unwrap();
                        }
                    }),
                    Box::new(move |n| {
                        let mut b = [0u8; 1];
                        for _ in 0..n {
                            ipc::msgrcv(q, &mut b, 1, f).unwrap();
                            ipc::msgsnd(q, 2, &b, f).unwrap();
                        }
                    }),
                    Box::new(move || {
                        ipc::msgctl(q, ipc::MsgCtl::Remove).unwrap();
                    }),
                )
            }
            Mech::Sem => {
                let s = ipc::semget(ipc::Key::PRIVATE, 2, ipc::IpcFlags::mode(0o600)).unwrap();
                let op = |num, o| [ipc::Sembuf::new(num, o, ipc::SemFlags::NONE)];
                (
                    Box::new(move |n| {
                        for _ in 0..n {
                            ipc::semop(s, &op(0, 1)).unwrap();
                            ipc::semop(s, &op(1, -1)).unwrap();
                        }
                    }),
                    Box::new(move |n| {
                        for _ in 0..n {
                            ipc::semop(s, &op(0, -1)).unwrap();
                            ipc::semop(s, &op(1, 1)).unwrap();
                        }
                    }),
                    Box::new(move || {
                        ipc::semctl(s, ipc::SemCtl::Remove).unwrap();
                    }),
                )
            }
        };
        let warm = warm_up(n, m);
        let ponger = on(1)
            .spawn(move || {
                let first = greenos::current_cpu();
                pong(warm + n);
                (first, greenos::current_cpu())
            })
            .expect("spawn ponger");
        let pinger = on(0)
            .spawn(move || {
                let first = greenos::current_cpu();
                if warm > 0 {
                    ping(warm);
                }
                let start = Instant::now();
                ping(n);
                (start.elapsed(), first, greenos::current_cpu())
            })
            .expect("spawn pinger");
        let (elapsed, a0, a1) = pinger.join().expect("pinger");
        let (b0, b1) = ponger.join().expect("ponger");
        cleanup();
        let want = if two { (0, 0, 1, 1) } else { (0, 0, 0, 0) };
        let note = ((a0, a1, b0, b1) != want)
            .then(|| format!("affinity not honoured: {a0}->{a1}, {b0}->{b1}"));
        (elapsed, note)
    })
}

// --- the kernel's objects between two OS threads -----------------------------

fn check(rc: isize, what: &str) -> isize {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    rc
}

/// Closes the fds on drop.
struct Fds(Vec<i32>);

impl Drop for Fds {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: closing fds this struct owns, once.
            unsafe { libc::close(fd) };
        }
    }
}

fn kpipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is an array of two ints.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) } as isize, "pipe");
    (fds[0], fds[1])
}

fn kwrite_all(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: b is a live buffer of b.len() bytes.
        let k = check(
            unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) },
            "write",
        );
        b = &b[k as usize..];
    }
}

fn kread(fd: i32, b: &mut [u8]) -> usize {
    // SAFETY: b is a live buffer of b.len() bytes.
    check(
        unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) },
        "read",
    ) as usize
}

/// `struct msgbuf` with a one-byte text.
#[repr(C)]
struct MsgBuf {
    mtype: libc::c_long,
    text: [u8; 1],
}

fn ksemop(id: i32, num: u16, op: i16) {
    let mut b = libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: 0,
    };
    // SAFETY: one valid sembuf.
    check(unsafe { libc::semop(id, &mut b, 1) } as isize, "semop");
}

fn kernel(n: u64, two: bool, m: Mech) -> (Duration, Option<String>) {
    let cpus = crate::os::allowed_cpus();
    let (ping_cpu, pong_cpu) = if two && cpus.len() > 1 {
        (cpus[0], cpus[1])
    } else {
        (cpus[0], cpus[0])
    };
    type Side = Box<dyn FnMut(u64) + Send>;
    let (mut ping, mut pong, cleanup): (Side, Side, Box<dyn FnOnce()>) = match m {
        Mech::Pipe => {
            let (r1, w1) = kpipe();
            let (r2, w2) = kpipe();
            let fds = Fds(vec![r1, w1, r2, w2]);
            (
                Box::new(move |n| {
                    let mut b = [0u8; 1];
                    for _ in 0..n {
                        kwrite_all(w1, &b);
                        assert_eq!(kread(r2, &mut b), 1);
                    }
                }),
                Box::new(move |n| {
                    let mut b = [0u8; 1];
                    for _ in 0..n {
                        assert_eq!(kread(r1, &mut b), 1);
                        kwrite_all(w2, &b);
                    }
                }),
                Box::new(move || drop(fds)),
            )
        }
        Mech::PipeBw => {
            let (r, w) = kpipe();
            let (ar, aw) = kpipe();
            let fds = Fds(vec![r, w, ar, aw]);
            (
                Box::new(move |n| {
                    let buf = vec![7u8; CHUNK];
                    for _ in 0..n {
                        kwrite_all(w, &buf);
                    }
                    assert_eq!(kread(ar, &mut [0u8; 1]), 1);
                }),
                Box::new(move |n| {
                    let mut buf = vec![0u8; CHUNK];
                    let mut left = n as usize * CHUNK;
                    while left > 0 {
                        let k = kread(r, &mut buf[..CHUNK.min(left)]);
                        assert!(k > 0);
                        left -= k;
                    }
                    kwrite_all(aw, b"a");
                }),
                Box::new(move || drop(fds)),
            )
        }
        Mech::Msg => {
            // SAFETY: a fresh private queue.
            let q = check(
                unsafe { libc::msgget(libc::IPC_PRIVATE, 0o600) } as isize,
                "msgget",
            ) as i32;
            let snd = move |t: libc::c_long| {
                let b = MsgBuf {
                    mtype: t,
                    text: [1],
                };
                // SAFETY: b is a msgbuf with one text byte.
                check(
                    unsafe { libc::msgsnd(q, (&b as *const MsgBuf).cast(), 1, 0) } as isize,
                    "msgsnd",
                );
            };
            let rcv = move |t: libc::c_long| {
                let mut b = MsgBuf {
                    mtype: 0,
                    text: [0],
                };
                // SAFETY: b has room for a long and one byte.
                check(
                    unsafe { libc::msgrcv(q, (&mut b as *mut MsgBuf).cast(), 1, t, 0) },
                    "msgrcv",
                );
            };
            (
                Box::new(move |n| {
                    for _ in 0..n {
                        snd(1);
                        rcv(2);
                    }
                }),
                Box::new(move |n| {
                    for _ in 0..n {
                        rcv(1);
                        snd(2);
                    }
                }),
                // SAFETY: IPC_RMID ignores the buffer.
                Box::new(move || unsafe {
                    libc::msgctl(q, libc::IPC_RMID, std::ptr::null_mut());
                }),
            )
        }
        Mech::Sem => {
            // SAFETY: a fresh private set of two.
            let s = check(
                unsafe { libc::semget(libc::IPC_PRIVATE, 2, 0o600) } as isize,
                "semget",
            ) as i32;
            (
                Box::new(move |n| {
                    for _ in 0..n {
                        ksemop(s, 0, 1);
                        ksemop(s, 1, -1);
                    }
                }),
                Box::new(move |n| {
                    for _ in 0..n {
                        ksemop(s, 0, -1);
                        ksemop(s, 1, 1);
                    }
                }),
                // SAFETY: IPC_RMID takes no argument.
                Box::new(move || unsafe {
                    libc::semctl(s, 0, libc::IPC_RMID);
                }),
            )
        }
    };
    let warm = warm_up(n, m);
    let ponger = std::thread::spawn(move || {
        crate::os::pin_current_thread(pong_cpu).expect("pin ponger");
        pong(warm + n);
        crate::os::current_os_cpu()
    });
    let pinger = std::thread::spawn(move || {
        crate::os::pin_current_thread(ping_cpu).expect("pin pinger");
        if warm > 0 {
            ping(warm);
        }
        let start = Instant::now();
        ping(n);
        (start.elapsed(), crate::os::current_os_cpu())
    });
    let (elapsed, ping_on) = pinger.join().expect("pinger");
    let pong_on = ponger.join().expect("ponger");
    cleanup();
    let note = if two && cpus.len() < 2 {
        Some("only one usable CPU: both threads on it".to_string())
    } else {
        (ping_on != Some(ping_cpu) || pong_on != Some(pong_cpu))
            .then(|| format!("pinning not honoured: {ping_on:?}/{pong_on:?}"))
    };
    (elapsed, note)
}
