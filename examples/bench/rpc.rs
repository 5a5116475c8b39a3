//! Null-call round trips: the seed's comparison of L4 direct switch,
//! LRPC / ChCore migrating threads and message passing (reference/ipc.md
//! §4, §5, §7). Every row times N calls that carry one word and return one
//! word; the figure is ns per round trip.
//!
//! | row | what one round trip is |
//! |---|---|
//! | `rpc-dynfn` | a plain call of a `Box<dyn Fn(u64) -> u64>` (the floor) |
//! | `rpc-migrate` | `Connection::ipc_call`: the dispatcher runs on the caller's stack, identity and capability table switched |
//! | `rpc-ep-direct` | `Endpoint::call` / `reply_recv` between two tasks on one worker, direct process switch |
//! | `rpc-ep-lazy` | the same through the run queue (`SwitchMode::Lazy`) |
//! | `rpc-ep-cross` | endpoint call with client and server pinned to two CPUs |
//! | `rpc-chan` | request and response over two channels on one worker: greenos `mpsc`; tokio (current_thread) task answering through a `oneshot` per request |
//! | `rpc-pipe` | the kernel: two OS threads pinned to one CPU, one byte each way over two pipes |
//!
//! Only the columns an implementation has are filled; the rows compare
//! against each other (and against the `yield` row's switch cost: a call
//! round trip is two switches). Not here yet: request/response over a
//! System V message queue (the `msg` module is being written on another
//! branch; add a row once `ipc::msgsnd` / `msgrcv` land).

use std::time::Instant;

use crate::harness::{Imp, Params, Sample, Sizes, Spec};

fn base(key: &'static str, title: &'static str, run: fn(Imp, &Params) -> Sample) -> Spec {
    Spec {
        key,
        title,
        unit: "ns/round trip",
        n: Sizes {
            quick: 200_000,
            full: 2_000_000,
        },
        n_override: &[],
        heavy: false,
        imps: &[Imp::Greenos],
        run,
    }
}

pub fn specs() -> Vec<Spec> {
    vec![
        Spec {
            n: Sizes {
                quick: 10_000_000,
                full: 100_000_000,
            },
            ..base("rpc-dynfn", "null call: dyn Fn", |_, p| dyn_fn(p))
        },
        Spec {
            n: Sizes {
                quick: 2_000_000,
                full: 20_000_000,
            },
            ..base("rpc-migrate", "null call: migrating RPC", |_, p| {
                migrating(p)
            })
        },
        base(
            "rpc-ep-direct",
            "null call: endpoint, direct switch, 1 CPU",
            |_, p| endpoint(p, 1, greenos::ipc::endpoint::SwitchMode::Direct),
        ),
        base(
            "rpc-ep-lazy",
            "null call: endpoint, run queue, 1 CPU",
            |_, p| endpoint(p, 1, greenos::ipc::endpoint::SwitchMode::Lazy),
        ),
        Spec {
            n: Sizes {
                quick: 50_000,
                full: 500_000,
            },
            ..base("rpc-ep-cross", "null call: endpoint, 2 CPUs", |_, p| {
                endpoint(p, 2, greenos::ipc::endpoint::SwitchMode::Direct)
            })
        },
        Spec {
            imps: &[Imp::Greenos, Imp::Tokio],
            ..base(
                "rpc-chan",
                "null call: channel request/response, 1 CPU",
                |imp, p| match imp {
                    Imp::Tokio => tokio_oneshot(p),
                    _ => greenos_channels(p),
                },
            )
        },
        Spec {
            n: Sizes {
                quick: 20_000,
                full: 200_000,
            },
            imps: &[Imp::Threads],
            ..base(
                "rpc-pipe",
                "null call: kernel pipe, 2 threads on 1 CPU",
                |_, p| pipe(p),
            )
        },
    ]
}

fn timed(p: &Params, mut round: impl FnMut(u64) -> std::time::Duration) -> Sample {
    if p.warmup {
        round(p.warmup_n());
    }
    Sample::ns_per(round(p.n), p.n)
}

fn dyn_fn(p: &Params) -> Sample {
    let rt = greenos::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    let f: Box<dyn Fn(u64) -> u64 + Send + Sync> = Box::new(|x| x + 1);
    let f = std::hint::black_box(f);
    timed(p, |n| {
        rt.block_on(|| {
            let start = Instant::now();
            let mut v = 0u64;
            for _ in 0..n {
                v = std::hint::black_box(&f)(std::hint::black_box(v));
            }
            let e = start.elapsed();
            assert_eq!(v, n);
            e
        })
    })
}

fn migrating(p: &Params) -> Sample {
    use greenos::ipc::{names, rpc};
    let rt = greenos::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    timed(p, |n| {
        rt.block_on(|| {
            let (ready_tx, ready_rx) = greenos::sync::mpsc::channel::<()>();
            let (stop_tx, stop_rx) = greenos::sync::mpsc::channel::<()>();
            let name = format!("bench-rpc-{}", greenos::getpid());
            let nm = name.clone();
            let server = greenos::spawn(move || {
                let cap = rpc::ipc_register_server(|m| m.label() + 1).expect("server");
                names::register(&nm, cap).expect("name");
                ready_tx.send(()).unwrap();
                let _ = stop_rx.recv();
                names::unregister(&nm).expect("unregister");
            });
            ready_rx.recv().unwrap();
            let conn = rpc::ipc_register_client(names::lookup(&name).unwrap()).unwrap();
            let mut m = conn.msg();
            let start = Instant::now();
            let mut v = 0u64;
            for _ in 0..n {
                m.set_label(v);
                v = conn.ipc_call(&mut m).expect("call");
            }
            let e = start.elapsed();
            assert_eq!(v, n);
            drop(m);
            stop_tx.send(()).unwrap();
            server.join().unwrap();
            e
        })
    })
}

fn endpoint(p: &Params, workers: usize, mode: greenos::ipc::endpoint::SwitchMode) -> Sample {
    use greenos::ipc::cap::{self, Rights};
    use greenos::ipc::endpoint::{Endpoint, Msg};
    let rt = greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime");
    let on = |cpu: usize| {
        let mut set = greenos::CpuSet::new();
        set.set(cpu.min(workers - 1));
        greenos::task::Builder::new().affinity(set)
    };
    timed(p, |n| {
        rt.block_on(|| {
            let ep = Endpoint::with_mode(mode).unwrap();
            let server = cap::spawn_with_caps(on(1), &[(ep.cap(), Rights::ALL)], |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                let (mut m, mut reply) = ep.recv().unwrap();
                while m.tag.label != 0 {
                    let out = Msg::new(1, &[m.mr[0] + 1]);
                    (m, reply) = ep.reply_recv(reply.unwrap(), &out).unwrap();
                }
                reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
            })
            .unwrap();
            let client = cap::spawn_with_caps(on(0), &[(ep.cap(), Rights::ALL)], move |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                let start = Instant::now();
                let mut v = 0u64;
                for _ in 0..n {
                    v = ep.call(&Msg::new(1, &[v])).unwrap().mr[0];
                }
                let e = start.elapsed();
                assert_eq!(v, n);
                ep.call(&Msg::new(0, &[])).unwrap();
                e
            })
            .unwrap();
            let e = client.join().unwrap();
            server.join().unwrap();
            e
        })
    })
}

fn greenos_channels(p: &Params) -> Sample {
    use greenos::sync::mpsc;
    let rt = greenos::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    timed(p, |n| {
        rt.block_on(|| {
            let (req_tx, req_rx) = mpsc::channel::<u64>();
            let (resp_tx, resp_rx) = mpsc::channel::<u64>();
            let server = greenos::spawn(move || {
                while let Ok(v) = req_rx.recv() {
                    if resp_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            let mut v = 0u64;
            for _ in 0..n {
                req_tx.send(v).unwrap();
                v = resp_rx.recv().unwrap();
            }
            let e = start.elapsed();
            assert_eq!(v, n);
            drop(req_tx);
            server.join().unwrap();
            e
        })
    })
}

fn tokio_oneshot(p: &Params) -> Sample {
    use tokio::sync::{mpsc, oneshot};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio");
    timed(p, |n| {
        rt.block_on(async move {
            let (tx, mut rx) = mpsc::unbounded_channel::<(u64, oneshot::Sender<u64>)>();
            let server = tokio::spawn(async move {
                while let Some((v, reply)) = rx.recv().await {
                    let _ = reply.send(v + 1);
                }
            });
            let start = Instant::now();
            let mut v = 0u64;
            for _ in 0..n {
                let (otx, orx) = oneshot::channel();
                tx.send((v, otx)).unwrap();
                v = orx.await.unwrap();
            }
            let e = start.elapsed();
            assert_eq!(v, n);
            drop(tx);
            server.await.unwrap();
            e
        })
    })
}

fn pipe(p: &Params) -> Sample {
    fn pipe2() -> (i32, i32) {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
        let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "pipe");
        (fds[0], fds[1])
    }
    fn write1(fd: i32, b: u8) {
        // SAFETY: writes one byte from a valid local to an open pipe end.
        let rc = unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
        assert_eq!(rc, 1, "write");
    }
    fn read1(fd: i32) -> u8 {
        let mut b = 0u8;
        // SAFETY: reads one byte into a valid local from an open pipe end.
        let rc = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        assert_eq!(rc, 1, "read");
        b
    }
    let cpu = crate::os::allowed_cpus()[0];
    timed(p, |n| {
        let (req_r, req_w) = pipe2();
        let (resp_r, resp_w) = pipe2();
        let server = std::thread::spawn(move || {
            crate::os::pin_current_thread(cpu).expect("pin");
            for _ in 0..n {
                let b = read1(req_r);
                write1(resp_w, b.wrapping_add(1));
            }
        });
        crate::os::pin_current_thread(cpu).expect("pin");
        let start = Instant::now();
        let mut b = 0u8;
        for _ in 0..n {
            write1(req_w, b);
            b = read1(resp_r);
        }
        let e = start.elapsed();
        assert_eq!(b, n as u8);
        server.join().unwrap();
        for fd in [req_r, req_w, resp_r, resp_w] {
            // SAFETY: each fd is an open pipe end we own, closed once.
            unsafe { libc::close(fd) };
        }
        e
    })
}
