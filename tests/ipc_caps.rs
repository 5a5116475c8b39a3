//! Capabilities, migrating-thread RPC and the name service through the
//! public facade (`greenos::ipc::{cap, rpc, names}`).
//!
//! Nothing here depends on timing: every ordering the tests need is made
//! with channels and semaphores, and a hang is caught by the watchdog.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos::ipc::cap::{self, Cap, Object, Rights, Transfer};
use greenos::ipc::rpc::{self, IpcMsg, ServerBuilder};
use greenos::ipc::{names, Errno};
use greenos::sync::mpsc;
use greenos::sync::Semaphore;
use greenos::Pid;

use common::Watchdog;

const LIMIT: Duration = Duration::from_secs(120);

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an errno")
}

/// A unique name per test (the name space is per OS process).
fn name(base: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{base}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A server process: registers `dispatcher`, publishes it as `name`, and
/// lives until the returned sender is dropped or sent to. Returns its pid.
fn spawn_server<F>(
    name: &str,
    builder: ServerBuilder,
    dispatcher: F,
) -> (Pid, mpsc::Sender<()>, greenos::JoinHandle<()>)
where
    F: Fn(&mut IpcMsg<'_>) -> u64 + Send + Sync + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<Pid>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let name = name.to_owned();
    let h = greenos::spawn(move || {
        let cap = builder.register(dispatcher).expect("register server");
        names::register(&name, cap).expect("publish server");
        ready_tx.send(greenos::getpid()).unwrap();
        let _ = stop_rx.recv();
    });
    let pid = ready_rx.recv().expect("server ready");
    (pid, stop_tx, h)
}

// ---------------------------------------------------------------------------
// Capability rules.

#[test]
fn rights_are_checked_and_only_shrink() {
    let _w = Watchdog::new("rights_are_checked_and_only_shrink", LIMIT);
    common::rt(2).block_on(|| {
        let ep = greenos::ipc::Endpoint::new().unwrap();
        let send_only = cap::copy(ep.cap(), Rights::SEND).unwrap();
        let info = cap::lookup(send_only).unwrap();
        assert_eq!(info.rights, Rights::SEND);
        assert!(matches!(info.object, Object::Endpoint(_)));
        // No receive right: EPERM.
        let e = greenos::ipc::Endpoint::from_cap(send_only);
        assert_eq!(errno(e.recv()), libc::EPERM);
        assert_eq!(errno(e.call(&greenos::ipc::Msg::new(1, &[]))), libc::EPERM);
        // More rights than held: EPERM.
        assert_eq!(
            errno(cap::copy(send_only, Rights::SEND | Rights::RECV)),
            libc::EPERM
        );
        // A badge sticks: re-badging is EPERM, the same badge or 0 is fine.
        let b = cap::mint(ep.cap(), Rights::SEND, 7).unwrap();
        assert_eq!(cap::lookup(b).unwrap().badge, 7);
        assert_eq!(errno(cap::mint(b, Rights::SEND, 8)), libc::EPERM);
        assert_eq!(
            cap::lookup(cap::mint(b, Rights::SEND, 0).unwrap())
                .unwrap()
                .badge,
            7
        );
        // A server capability without CALL cannot bind a connection.
        let srv = rpc::ipc_register_server(|_m| 0).unwrap();
        let no_call = cap::copy(srv, Rights::SEND).unwrap();
        assert_eq!(errno(rpc::ipc_register_client(no_call)), libc::EPERM);
        assert!(rpc::ipc_register_client(srv).is_ok());
        // Wrong kind of object: EINVAL.
        assert_eq!(errno(rpc::ipc_register_client(ep.cap())), libc::EINVAL);
        // Buffers: read and write rights.
        let buf = cap::create_buffer(16).unwrap();
        let ro = cap::copy(buf, Rights::READ).unwrap();
        cap::buffer_write(buf, 0, b"hello").unwrap();
        let mut out = [0u8; 5];
        cap::buffer_read(ro, 0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert_eq!(errno(cap::buffer_write(ro, 0, b"x")), libc::EPERM);
        assert_eq!(errno(cap::buffer_read(buf, 12, &mut out)), libc::EINVAL);
        // An endpoint call on a buffer capability: EINVAL, also when the
        // lookup cache already holds the buffer (the second call), and
        // the endpoint works again afterwards (the cache moves back).
        let not_ep = greenos::ipc::Endpoint::from_cap(buf);
        assert_eq!(
            errno(not_ep.call(&greenos::ipc::endpoint::Msg::new(1, &[]))),
            libc::EINVAL
        );
        assert_eq!(
            errno(not_ep.call(&greenos::ipc::endpoint::Msg::new(1, &[]))),
            libc::EINVAL
        );
        assert_eq!(
            errno(not_ep.nb_send(&greenos::ipc::endpoint::Msg::new(1, &[]))),
            libc::EINVAL
        );
        assert!(ep
            .nb_send(&greenos::ipc::endpoint::Msg::new(1, &[]))
            .is_ok());
    });
}

#[test]
fn delete_and_stale_indices() {
    let _w = Watchdog::new("delete_and_stale_indices", LIMIT);
    common::rt(1).block_on(|| {
        let a = cap::create_buffer(1).unwrap();
        cap::delete(a).unwrap();
        assert_eq!(errno(cap::lookup(a)), libc::EBADF);
        assert_eq!(errno(cap::delete(a)), libc::EBADF);
        // The slot is reused with a new generation: the old index stays bad.
        let b = cap::create_buffer(1).unwrap();
        assert_eq!(a.index(), b.index());
        assert_ne!(a, b);
        assert_eq!(errno(cap::lookup(a)), libc::EBADF);
        assert!(cap::lookup(b).is_ok());
        // Another process cannot use this process's index.
        let r = greenos::spawn(move || cap::lookup(b).map(|_| ()));
        assert_eq!(errno(r.join().unwrap()), libc::EBADF);
        // Not from a task at all: ESRCH.
        let r = std::thread::spawn(move || cap::lookup(b).map(|_| ()))
            .join()
            .unwrap();
        assert_eq!(errno(r), libc::ESRCH);
    });
}

#[test]
fn revoke_invalidates_every_derived_capability() {
    let _w = Watchdog::new("revoke_invalidates_every_derived_capability", LIMIT);
    common::rt(2).block_on(|| {
        let root = cap::create_buffer(4).unwrap();
        let child = cap::copy(root, Rights::READ | Rights::WRITE).unwrap();
        let grandchild = cap::mint(child, Rights::READ, 5).unwrap();
        // Deleting the middle one does not cut the grandchild off.
        cap::delete(child).unwrap();
        // A copy held by another process, given at spawn.
        let (tx, rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel::<i32>();
        let h = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(root, Rights::READ)],
            move |caps| {
                assert_eq!(caps.len(), 1);
                assert_eq!(cap::list().unwrap(), caps);
                assert_eq!(cap::lookup(caps[0]).unwrap().rights, Rights::READ);
                let mut b = [0u8; 1];
                cap::buffer_read(caps[0], 0, &mut b).unwrap();
                res_tx.send(0).unwrap();
                rx.recv().unwrap();
                res_tx
                    .send(
                        cap::lookup(caps[0])
                            .err()
                            .and_then(|e| e.raw_os_error())
                            .unwrap_or(0),
                    )
                    .unwrap();
            },
        )
        .unwrap();
        assert_eq!(res_rx.recv().unwrap(), 0);
        let n = cap::revoke(root).unwrap();
        assert!(n >= 3, "revoked {n}");
        assert!(
            cap::lookup(root).is_ok(),
            "revoke keeps the capability itself"
        );
        assert_eq!(errno(cap::lookup(grandchild)), libc::EIDRM);
        let mut b = [0u8; 1];
        assert_eq!(errno(cap::buffer_read(grandchild, 0, &mut b)), libc::EIDRM);
        assert_eq!(errno(cap::copy(grandchild, Rights::READ)), libc::EIDRM);
        tx.send(()).unwrap();
        assert_eq!(res_rx.recv().unwrap(), libc::EIDRM);
        h.join().unwrap();
        // New copies after the revoke are fine.
        let again = cap::copy(root, Rights::READ).unwrap();
        assert!(cap::lookup(again).is_ok());
    });
}

#[test]
fn transfer_moves_or_copies_as_asked() {
    let _w = Watchdog::new("transfer_moves_or_copies_as_asked", LIMIT);
    common::rt(2).block_on(|| {
        let n = name("xfer");
        // The server keeps what it receives and reports the rights it got.
        let kept = Arc::new(parking_lot::Mutex::new(Vec::<Cap>::new()));
        let k2 = kept.clone();
        let (_pid, stop, h) = spawn_server(&n, ServerBuilder::new(), move |m| {
            let c = m.cap(0).expect("a capability arrived");
            k2.lock().push(c);
            let info = cap::lookup(c).unwrap();
            // Send back a fresh buffer by move.
            let back = cap::create_buffer(2).unwrap();
            m.set_cap(0, back, Transfer::Move).unwrap();
            info.rights.bits() as u64
        });
        let srv = names::lookup(&n).unwrap();
        let conn = rpc::ipc_register_client(srv).unwrap();
        let buf = cap::create_buffer(8).unwrap();
        // Copy with a mask: the sender keeps its own, the server gets READ.
        let mut m = conn.msg();
        m.set_cap(0, buf, Transfer::Copy(Rights::READ)).unwrap();
        let rights = conn.ipc_call(&mut m).unwrap();
        assert_eq!(rights, Rights::READ.bits() as u64);
        assert_eq!(cap::lookup(buf).unwrap().rights, Rights::ALL);
        let back = m.cap(0).expect("the reply carried a capability");
        assert!(matches!(
            cap::lookup(back).unwrap().object,
            Object::Buffer(_)
        ));
        // Move: the sender's index is gone, the server has the same rights.
        m.set_cap(0, buf, Transfer::Move).unwrap();
        let rights = conn.ipc_call(&mut m).unwrap();
        assert_eq!(rights, Rights::ALL.bits() as u64);
        assert_eq!(errno(cap::lookup(buf)), libc::EBADF);
        drop(m);
        // Without GRANT on the server capability, nothing travels: EPERM.
        let no_grant = cap::copy(srv, Rights::CALL).unwrap();
        let conn2 = rpc::ipc_register_client(no_grant).unwrap();
        let other = cap::create_buffer(1).unwrap();
        let mut m = conn2.msg();
        m.set_cap(0, other, Transfer::Copy(Rights::ALL)).unwrap();
        assert_eq!(errno(conn2.ipc_call(&mut m)), libc::EPERM);
        assert!(cap::lookup(other).is_ok());
        drop(m);
        assert_eq!(kept.lock().len(), 2);
        stop.send(()).unwrap();
        h.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Migrating RPC.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    pid: Pid,
    uid: u32,
    real: Pid,
    client: Option<Pid>,
    depth: usize,
    own_cap_ok: bool,
}

fn seen(own: Option<Cap>) -> Seen {
    Seen {
        pid: greenos::getpid(),
        uid: greenos::getuid(),
        real: greenos::current().pid(),
        client: rpc::ipc_client_pid(),
        depth: rpc::ipc_call_depth(),
        own_cap_ok: own.map(|c| cap::lookup(c).is_ok()).unwrap_or(false),
    }
}

#[test]
fn identity_and_tables_at_every_level_of_a_nested_call() {
    let _w = Watchdog::new("identity_and_tables_at_every_level_of_a_nested_call", LIMIT);
    common::rt(2).block_on(|| {
        let root = greenos::getuid() == 0;
        let (nb, nc) = (name("nest-b"), name("nest-c"));
        let log = Arc::new(parking_lot::Mutex::new(Vec::<(char, Seen)>::new()));

        // C: the innermost server; it owns a buffer only it can see.
        let (c_tx, c_rx) = mpsc::channel::<Pid>();
        let (c_stop, c_stop_rx) = mpsc::channel::<()>();
        let lc = log.clone();
        let ncc = nc.clone();
        let bc = greenos::task::Builder::new().uid(if root { 3000 } else { greenos::getuid() });
        let hc = bc
            .spawn(move || {
                let own = cap::create_buffer(1).unwrap();
                let s = rpc::ipc_register_server(move |_m| {
                    lc.lock().push(('C', seen(Some(own))));
                    3
                })
                .unwrap();
                names::register(&ncc, s).unwrap();
                c_tx.send(greenos::getpid()).unwrap();
                let _ = c_stop_rx.recv();
            })
            .unwrap();
        let c_pid = c_rx.recv().unwrap();

        // B: calls C from inside its dispatcher.
        let (b_tx, b_rx) = mpsc::channel::<Pid>();
        let (b_stop, b_stop_rx) = mpsc::channel::<()>();
        let lb = log.clone();
        let nbb = nb.clone();
        let bb = greenos::task::Builder::new().uid(if root { 2000 } else { greenos::getuid() });
        let hb = bb
            .spawn(move || {
                let own = cap::create_buffer(1).unwrap();
                // B binds to C from its own process (its own table).
                let to_c = rpc::ipc_register_client(names::lookup(&nc).unwrap()).unwrap();
                let s = rpc::ipc_register_server(move |_m| {
                    lb.lock().push(('b', seen(Some(own))));
                    let mut m = to_c.msg();
                    let r = to_c.ipc_call(&mut m).unwrap();
                    lb.lock().push(('B', seen(Some(own))));
                    r + 20
                })
                .unwrap();
                names::register(&nbb, s).unwrap();
                b_tx.send(greenos::getpid()).unwrap();
                let _ = b_stop_rx.recv();
            })
            .unwrap();
        let b_pid = b_rx.recv().unwrap();

        // A: the client, in its own process.
        let a_uid = if root { 1000 } else { greenos::getuid() };
        let la = log.clone();
        let ha = greenos::task::Builder::new()
            .uid(a_uid)
            .spawn(move || {
                let own = cap::create_buffer(1).unwrap();
                let conn = rpc::ipc_register_client(names::lookup(&nb).unwrap()).unwrap();
                la.lock().push(('a', seen(Some(own))));
                let mut m = conn.msg();
                let r = conn.ipc_call(&mut m).unwrap();
                la.lock().push(('A', seen(Some(own))));
                (greenos::getpid(), r)
            })
            .unwrap();
        let (a_pid, r) = ha.join().unwrap();
        assert_eq!(r, 23);
        let log = log.lock().clone();
        let order: String = log.iter().map(|(c, _)| *c).collect();
        assert_eq!(order, "abCBA");
        let get = |c: char| log.iter().find(|(k, _)| *k == c).unwrap().1;
        let (a0, b0, cc, b1, a1) = (get('a'), get('b'), get('C'), get('B'), get('A'));
        // Every level runs on A's task, as its own server.
        for s in [a0, b0, cc, b1, a1] {
            assert_eq!(s.real, a_pid);
            assert!(s.own_cap_ok, "each level sees its own table: {s:?}");
        }
        assert_eq!((a0.pid, a0.client, a0.depth), (a_pid, None, 0));
        assert_eq!((b0.pid, b0.client, b0.depth), (b_pid, Some(a_pid), 1));
        assert_eq!((cc.pid, cc.client, cc.depth), (c_pid, Some(b_pid), 2));
        assert_eq!(b1, b0, "B is restored after its call to C");
        assert_eq!(a1, a0, "A is restored after the whole chain");
        if root {
            assert_eq!((a0.uid, b0.uid, cc.uid), (1000, 2000, 3000));
        }
        b_stop.send(()).unwrap();
        c_stop.send(()).unwrap();
        hb.join().unwrap();
        hc.join().unwrap();
    });
}

#[test]
fn a_panicking_dispatcher_fails_only_that_call() {
    let _w = Watchdog::new("a_panicking_dispatcher_fails_only_that_call", LIMIT);
    common::rt(1).block_on(|| {
        let n = name("panic");
        let (spid, stop, h) = spawn_server(&n, ServerBuilder::new(), |m| {
            if m.label() == 1 {
                panic!("dispatcher fails on purpose");
            }
            m.label() * 2
        });
        let conn = rpc::ipc_register_client(names::lookup(&n).unwrap()).unwrap();
        let me = greenos::getpid();
        assert_ne!(me, spid);
        let mut m = conn.msg();
        m.set_label(1);
        assert_eq!(errno(conn.ipc_call(&mut m)), libc::EFAULT);
        assert_eq!(greenos::getpid(), me, "identity restored after the panic");
        assert_eq!(rpc::ipc_call_depth(), 0);
        m.set_label(21);
        assert_eq!(conn.ipc_call(&mut m).unwrap(), 42);
        drop(m);
        stop.send(()).unwrap();
        h.join().unwrap();
    });
}

#[test]
fn concurrent_calls_from_every_cpu() {
    let _w = Watchdog::new("concurrent_calls_from_every_cpu", LIMIT);
    let workers = 4;
    let rt = common::rt(workers);
    rt.block_on(|| {
        let n = name("conc");
        let calls = Arc::new(AtomicU64::new(0));
        let c2 = calls.clone();
        let (spid, stop, h) = spawn_server(&n, ServerBuilder::new(), move |m| {
            c2.fetch_add(1, Ordering::Relaxed);
            assert_eq!(Some(m.badge()), rpc::ipc_client_badge());
            assert!(rpc::ipc_client_pid().is_some());
            let v = u64::from_le_bytes(m.data()[..8].try_into().unwrap());
            if v % 64 == 0 {
                greenos::yield_now();
            }
            v + 1
        });
        let srv = names::lookup(&n).unwrap();
        const TASKS: usize = 16;
        const CALLS: u64 = 500;
        let handles: Vec<_> = (0..TASKS)
            .map(|t| {
                let set = common::cpus(&[t % workers]);
                let mine = cap::copy(srv, Rights::CALL).unwrap();
                cap::spawn_with_caps(
                    greenos::task::Builder::new().affinity(set),
                    &[(mine, Rights::CALL)],
                    move |caps| {
                        let conn = rpc::ipc_register_client(caps[0]).unwrap();
                        let mut m = conn.msg();
                        for i in 0..CALLS {
                            m.set_data(&i.to_le_bytes()).unwrap();
                            assert_eq!(conn.ipc_call(&mut m).unwrap(), i + 1);
                            assert_ne!(greenos::getpid(), spid);
                        }
                    },
                )
                .unwrap()
            })
            .collect();
        // One connection shared by several tasks: calls are serialized.
        let shared = Arc::new(rpc::ipc_register_client(srv).unwrap());
        let sh: Vec<_> = (0..4)
            .map(|_| {
                let c = shared.clone();
                greenos::spawn(move || {
                    for i in 0..CALLS {
                        let mut m = c.msg();
                        m.set_data(&i.to_le_bytes()).unwrap();
                        assert_eq!(c.ipc_call(&mut m).unwrap(), i + 1);
                    }
                })
            })
            .collect();
        for h in handles.into_iter().chain(sh) {
            h.join().unwrap();
        }
        assert_eq!(calls.load(Ordering::Relaxed), (TASKS as u64 + 4) * CALLS);
        stop.send(()).unwrap();
        h.join().unwrap();
    });
}

#[test]
fn unregistering_fails_later_calls_while_calls_in_flight_finish() {
    let _w = Watchdog::new("unregistering_fails_later_calls", LIMIT);
    common::rt(2).block_on(|| {
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(Semaphore::new(0));
        let (g2, e2) = (gate.clone(), entered.clone());
        let srv = rpc::ipc_register_server(move |m| {
            if m.label() == 1 {
                e2.release();
                g2.acquire();
            }
            7
        })
        .unwrap();
        let conn = rpc::ipc_register_client(srv).unwrap();
        let c2 = conn.clone();
        // A call in flight from another task while the server goes away.
        let inflight = greenos::spawn(move || {
            let mut m = c2.msg();
            m.set_label(1);
            c2.ipc_call(&mut m).map_err(|e| e.raw_os_error())
        });
        entered.acquire();
        rpc::ipc_unregister_server(srv).unwrap();
        // A new binding fails at once.
        assert_eq!(errno(rpc::ipc_register_client(srv)), libc::ESRCH);
        gate.release();
        assert_eq!(inflight.join().unwrap(), Ok(7));
        let mut m = conn.msg();
        assert_eq!(errno(conn.ipc_call(&mut m)), libc::ESRCH);
    });
}

#[test]
fn a_server_whose_process_exits_refuses_calls() {
    let _w = Watchdog::new("a_server_whose_process_exits_refuses_calls", LIMIT);
    common::rt(2).block_on(|| {
        let n = name("exit");
        let (_pid, stop, h) = spawn_server(&n, ServerBuilder::new(), |_m| 1);
        let conn = rpc::ipc_register_client(names::lookup(&n).unwrap()).unwrap();
        let mut m = conn.msg();
        assert_eq!(conn.ipc_call(&mut m).unwrap(), 1);
        stop.send(()).unwrap();
        h.join().unwrap();
        assert_eq!(errno(conn.ipc_call(&mut m)), libc::ESRCH);
    });
}

#[test]
fn stack_budget_is_checked_and_an_own_stack_serves_deep_dispatchers() {
    let _w = Watchdog::new("stack_budget", LIMIT);
    common::rt(1).block_on(|| {
        // Needs more than any task stack here: refused before it runs.
        let ran = Arc::new(AtomicU64::new(0));
        let r2 = ran.clone();
        let big = ServerBuilder::new()
            .stack_need(1 << 30)
            .register(move |_m| {
                r2.fetch_add(1, Ordering::Relaxed);
                0
            })
            .unwrap();
        let conn = rpc::ipc_register_client(big).unwrap();
        let mut m = conn.msg();
        assert_eq!(errno(conn.ipc_call(&mut m)), libc::ENOMEM);
        assert_eq!(ran.load(Ordering::Relaxed), 0);
        drop(m);
        assert!(greenos::task::stack_remaining().is_some());
        // A dispatcher that uses 256 KiB of stack (the caller has 64 KiB)
        // runs on a server-owned stack.
        let deep = ServerBuilder::new()
            .own_stack(1 << 20)
            .register(|m| {
                let mut a = [0u8; 256 << 10];
                a[m.label() as usize] = 9;
                let a = std::hint::black_box(&mut a);
                assert!(greenos::task::stack_remaining().is_none());
                greenos::yield_now();
                a.iter().map(|&b| b as u64).sum::<u64>() + rpc::ipc_call_depth() as u64
            })
            .unwrap();
        let conn = rpc::ipc_register_client(deep).unwrap();
        let mut m = conn.msg();
        for i in 0..3 {
            m.set_label(i);
            assert_eq!(conn.ipc_call(&mut m).unwrap(), 10);
        }
    });
}

#[test]
fn one_message_per_connection_at_a_time() {
    let _w = Watchdog::new("one_message_per_connection_at_a_time", LIMIT);
    common::rt(1).block_on(|| {
        let srv = rpc::ipc_register_server(|m| m.len() as u64).unwrap();
        let conn = rpc::ipc_register_client(srv).unwrap();
        let mut m = conn.msg();
        assert_eq!(errno(conn.try_msg()), libc::EAGAIN);
        m.set_data(b"abc").unwrap();
        assert_eq!(conn.ipc_call(&mut m).unwrap(), 3);
        // A message of another connection is refused.
        let other = rpc::ipc_register_client(srv).unwrap();
        assert_eq!(errno(other.ipc_call(&mut m)), libc::EINVAL);
        assert_eq!(
            errno(m.set_data(&[0u8; rpc::IPC_PER_SHM_SIZE + 1])),
            libc::E2BIG
        );
        drop(m);
        assert!(conn.try_msg().is_ok());
    });
}

// ---------------------------------------------------------------------------
// Names.

#[test]
fn names_register_lookup_and_permissions() {
    let _w = Watchdog::new("names_register_lookup_and_permissions", LIMIT);
    common::rt(2).block_on(|| {
        let n = name("names");
        let ep = greenos::ipc::Endpoint::new().unwrap();
        names::register(&n, ep.cap()).unwrap();
        assert_eq!(errno(names::register(&n, ep.cap())), libc::EEXIST);
        let got = names::lookup(&n).unwrap();
        assert!(matches!(
            cap::lookup(got).unwrap().object,
            Object::Endpoint(_)
        ));
        assert_ne!(got, ep.cap());
        assert_eq!(errno(names::lookup("no-such-name-anywhere")), libc::ENOENT);
        assert_eq!(errno(names::lookup("")), libc::EINVAL);
        assert_eq!(errno(names::lookup(&"x".repeat(300))), libc::ENAMETOOLONG);
        // Revoking the registrant's capability revokes what the name hands out.
        cap::revoke(ep.cap()).unwrap();
        assert_eq!(errno(cap::lookup(got)), libc::EIDRM);
        assert_eq!(errno(names::lookup(&n)), libc::EIDRM);
        names::unregister(&n).unwrap();
        assert_eq!(errno(names::lookup(&n)), libc::ENOENT);
        if greenos::getuid() == 0 {
            // A private name: other users get EACCES, and may not remove it.
            let p = name("private");
            names::register_with_mode(&p, ep.cap(), 0o600).unwrap();
            let p2 = p.clone();
            let h = greenos::task::Builder::new()
                .uid(4242)
                .spawn(move || (errno(names::lookup(&p2)), errno(names::unregister(&p2))))
                .unwrap();
            assert_eq!(h.join().unwrap(), (libc::EACCES, libc::EPERM));
            assert!(names::lookup(&p).is_ok());
            names::unregister(&p).unwrap();
        }
        let _ = Errno::EPERM;
    });
}

#[test]
fn a_killed_caller_unwinds_through_the_dispatcher_not_into_an_error() {
    let _w = Watchdog::new("a_killed_caller_unwinds_through_the_dispatcher", LIMIT);
    common::rt(2).block_on(|| {
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(Semaphore::new(0));
        let (g2, e2) = (gate.clone(), entered.clone());
        let srv = rpc::ipc_register_server(move |m| {
            if m.label() == 1 {
                e2.release();
                // Blocks until the caller is killed.
                g2.acquire();
            }
            5
        })
        .unwrap();
        let conn = rpc::ipc_register_client(srv).unwrap();
        let c2 = conn.clone();
        let returned = Arc::new(AtomicUsize::new(0));
        let r2 = returned.clone();
        let victim = greenos::spawn(move || {
            let mut m = c2.msg();
            m.set_label(1);
            let _ = c2.ipc_call(&mut m);
            // Never reached: the kill unwinds the task.
            r2.fetch_add(1, Ordering::Relaxed);
        });
        entered.acquire();
        greenos::signal::kill(victim.task().pid(), greenos::signal::SIGKILL).unwrap();
        match victim.join() {
            Err(greenos::JoinError::Killed(s)) => assert_eq!(s, greenos::signal::SIGKILL),
            other => panic!("expected the caller killed, got {other:?}"),
        }
        assert_eq!(returned.load(Ordering::Relaxed), 0);
        // The server and the connection still work (the message buffer was
        // released by the unwinding caller).
        let mut m = conn.msg();
        assert_eq!(conn.ipc_call(&mut m).unwrap(), 5);
        assert_eq!(rpc::ipc_call_depth(), 0);
    });
}

/// Mints race with a revoke of an ancestor: every mint either fails with
/// `EIDRM` or produces a capability the revoke reaches. After the revoke
/// and the minters are done, no capability derived from the root is valid.
#[test]
fn revoke_racing_with_mints_leaves_nothing_valid_stress() {
    let _w = Watchdog::new(
        "revoke_racing_with_mints_leaves_nothing_valid_stress",
        LIMIT,
    );
    common::rt(4).block_on(|| {
        for round in 0..20 {
            let root = cap::create_buffer(1).unwrap();
            let start = Arc::new(Semaphore::new(0));
            let revoked = Arc::new(Semaphore::new(0));
            let minters: Vec<_> = (0..4)
                .map(|i| {
                    let s = start.clone();
                    let after = revoked.clone();
                    cap::spawn_with_caps(
                        greenos::task::Builder::new().affinity(common::cpus(&[i % 4])),
                        &[(root, Rights::ALL)],
                        move |caps| {
                            s.acquire();
                            let mut made = Vec::new();
                            let mut from = caps[0];
                            for k in 0..200u64 {
                                match cap::copy(from, Rights::READ | Rights::WRITE) {
                                    Ok(c) => {
                                        made.push(c);
                                        if k % 3 == 0 {
                                            from = c;
                                        }
                                    }
                                    Err(e) => {
                                        assert_eq!(e.raw_os_error(), Some(libc::EIDRM));
                                        break;
                                    }
                                }
                                if k % 16 == 0 {
                                    greenos::yield_now();
                                }
                            }
                            // Wait for the revoke, then check what we made.
                            after.acquire();
                            let valid = made.iter().filter(|c| cap::lookup(**c).is_ok()).count();
                            (made.len(), valid)
                        },
                    )
                    .unwrap()
                })
                .collect();
            for _ in 0..4 {
                start.release();
            }
            if round % 2 == 0 {
                greenos::yield_now();
            }
            cap::revoke(root).unwrap();
            for _ in 0..4 {
                revoked.release();
            }
            for m in minters {
                let (_made, valid) = m.join().unwrap();
                assert_eq!(valid, 0, "a capability escaped the revoke");
            }
            assert!(cap::lookup(root).is_ok());
            cap::delete(root).unwrap();
        }
    });
}
