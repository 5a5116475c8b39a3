//! L4-style endpoints through the public facade: call/reply on one CPU and
//! across CPUs, in direct-switch and lazy modes (same results), long
//! messages in the IPC buffer, capability transfer and unwrapping,
//! `nb_send` dropping, timeouts and stale replies.
//!
//! Orderings are made with channels; timeouts are used only where the test
//! is *about* a timeout (and then only "it did time out" is asserted), and a
//! hang is caught by the watchdog.

mod common;

use std::time::Duration;

use greenos::ipc::cap::{self, Rights, Transfer};
use greenos::ipc::endpoint::{self, Endpoint, Msg, SwitchMode, MAX_MSG_LENGTH};
use greenos::sync::mpsc;

use common::Watchdog;

const LIMIT: Duration = Duration::from_secs(120);

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an errno")
}

/// Calls `ep` with `label` and a short timeout until a call is delivered
/// (the server may not be waiting yet), each call timing out unanswered.
/// A moved capability tells: it leaves the caller's table only if the
/// message was delivered.
fn call_until_delivered_then_give_up(ep: &Endpoint, label: u64) {
    loop {
        let token = cap::create_buffer(1).unwrap();
        let mut m = Msg::new(label, &[]);
        m.set_cap(0, token, Transfer::Move).unwrap();
        let r = ep.call_timeout(&m, Duration::from_millis(20));
        assert_eq!(errno(r), libc::ETIMEDOUT);
        if cap::lookup(token).is_err() {
            return;
        }
        cap::delete(token).unwrap();
    }
}

/// Echo server loop: replies `label + 1` and `mr[i] * 2`, and the buffer
/// registers doubled, until a message with label 0.
fn serve(ep: Endpoint) -> u64 {
    let (mut msg, mut reply) = ep.recv().unwrap();
    let mut served = 0;
    loop {
        if msg.tag.label == 0 {
            if let Some(r) = reply {
                r.reply(&Msg::new(0, &[])).unwrap();
            }
            return served;
        }
        served += 1;
        let mut out = Msg::new(msg.tag.label + 1, &[]);
        out.tag.length = msg.tag.length;
        for i in 0..4 {
            out.mr[i] = msg.mr[i] * 2;
        }
        for k in 4..msg.tag.length as usize {
            endpoint::set_mr(k, endpoint::mr(k).unwrap() * 2).unwrap();
        }
        out.badge = 0;
        let r = reply.take().expect("a call");
        (msg, reply) = ep.reply_recv(r, &out).unwrap();
    }
}

/// `rounds` calls from a client task on `client_cpu` to a server task on
/// `server_cpu`, with every message length up to the maximum.
fn ping_pong(workers: usize, server_cpu: usize, client_cpu: usize, mode: SwitchMode) -> (u64, u64) {
    common::rt(workers).block_on(move || {
        let ep = Endpoint::with_mode(mode).unwrap();
        let recv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let call_cap = cap::mint(ep.cap(), Rights::CALL, 99).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new().affinity(common::cpus(&[server_cpu])),
            &[(recv_cap, Rights::ALL)],
            |caps| serve(Endpoint::from_cap(caps[0])),
        )
        .unwrap();
        let client = cap::spawn_with_caps(
            greenos::task::Builder::new().affinity(common::cpus(&[client_cpu])),
            &[(call_cap, Rights::ALL)],
            |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                let mut sum = 0u64;
                for round in 1..=300u64 {
                    let len = (round as usize) % (MAX_MSG_LENGTH + 1);
                    let mut m = Msg::new(round, &[round, round + 1, round + 2, round + 3]);
                    m.tag.length = len as u8;
                    for k in 4..len {
                        endpoint::set_mr(k, round * 1000 + k as u64).unwrap();
                    }
                    let r = ep.call(&m).unwrap();
                    assert_eq!(r.tag.label, round + 1);
                    assert_eq!(r.tag.length as usize, len);
                    assert_eq!(
                        r.mr,
                        [2 * round, 2 * round + 2, 2 * round + 4, 2 * round + 6]
                    );
                    for k in 4..len {
                        assert_eq!(endpoint::mr(k).unwrap(), 2 * (round * 1000 + k as u64));
                    }
                    sum = sum.wrapping_add(r.mr[0]);
                }
                ep.call(&Msg::new(0, &[])).unwrap();
                let switched = ep.direct_switches().unwrap();
                (sum, switched)
            },
        )
        .unwrap();
        let (sum, switched) = client.join().unwrap();
        assert_eq!(server.join().unwrap(), 300);
        (sum, switched)
    })
}

#[test]
fn call_reply_on_one_cpu_and_across_cpus_in_both_modes() {
    let _w = Watchdog::new("call_reply_on_one_cpu_and_across_cpus", LIMIT);
    let expect: u64 = (1..=300u64).map(|r| 2 * r).sum();
    let (one_direct, switched) = ping_pong(1, 0, 0, SwitchMode::Direct);
    assert_eq!(one_direct, expect);
    // On one CPU, calls with short messages to a waiting server take the
    // fastpath (at least one did: the first call finds the server waiting).
    assert!(switched > 0, "no direct switch on one CPU");
    let (one_lazy, switched) = ping_pong(1, 0, 0, SwitchMode::Lazy);
    assert_eq!(one_lazy, expect);
    assert_eq!(switched, 0, "lazy mode never switches directly");
    let (cross_direct, _) = ping_pong(2, 1, 0, SwitchMode::Direct);
    assert_eq!(cross_direct, expect);
    let (cross_lazy, _) = ping_pong(2, 1, 0, SwitchMode::Lazy);
    assert_eq!(cross_lazy, expect);
}

#[test]
fn send_recv_badges_and_nb_send() {
    let _w = Watchdog::new("send_recv_badges_and_nb_send", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        // Nobody waits: nb_send drops silently and counts.
        ep.nb_send(&Msg::new(5, &[1])).unwrap();
        assert_eq!(ep.dropped().unwrap(), 1);
        assert_eq!(errno(ep.nb_recv()), libc::EAGAIN);
        let badged = cap::mint(ep.cap(), Rights::SEND, 0xbad).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let sender = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(badged, Rights::ALL)],
            move |caps| {
                let e = Endpoint::from_cap(caps[0]);
                e.send(&Msg::new(11, &[1, 2])).unwrap();
                tx.send(()).unwrap();
                e.send(&Msg::new(12, &[3])).unwrap();
            },
        )
        .unwrap();
        let (m, reply) = ep.recv().unwrap();
        assert!(reply.is_none(), "a send carries no reply capability");
        assert_eq!((m.tag.label, m.tag.length, m.badge), (11, 2, 0xbad));
        assert_eq!(&m.mr[..2], &[1, 2]);
        rx.recv().unwrap();
        let (m, _) = ep.recv().unwrap();
        assert_eq!((m.tag.label, m.mr[0]), (12, 3));
        sender.join().unwrap();
        // Too long: EINVAL; bad register index: EINVAL.
        let mut m = Msg::new(1, &[]);
        m.tag.length = MAX_MSG_LENGTH as u8 + 1;
        assert_eq!(errno(ep.nb_send(&m)), libc::EINVAL);
        assert_eq!(errno(endpoint::set_mr(MAX_MSG_LENGTH, 1)), libc::EINVAL);
        assert_eq!(errno(endpoint::mr(3)), libc::EINVAL);
    });
}

#[test]
fn timeouts_withdraw_cleanly_and_late_replies_are_refused() {
    let _w = Watchdog::new("timeouts_withdraw_cleanly", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        assert_eq!(
            errno(ep.recv_timeout(Duration::from_millis(5))),
            libc::ETIMEDOUT
        );
        assert_eq!(
            errno(ep.call_timeout(&Msg::new(1, &[]), Duration::from_millis(5))),
            libc::ETIMEDOUT
        );
        assert_eq!(
            errno(ep.send_timeout(&Msg::new(1, &[]), Duration::from_millis(5))),
            libc::ETIMEDOUT
        );
        // The timed-out sender and caller left the queue.
        assert_eq!(errno(ep.nb_recv()), libc::EAGAIN);
        // A server holds the reply of a caller that gave up.
        let (gave_up_tx, gave_up_rx) = mpsc::channel::<()>();
        let server_cap = cap::copy(ep.cap(), Rights::ALL).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(server_cap, Rights::ALL)],
            move |caps| {
                let e = Endpoint::from_cap(caps[0]);
                let (m, reply) = e.recv().unwrap();
                assert_eq!(m.tag.label, 7);
                gave_up_rx.recv().unwrap();
                errno(reply.unwrap().reply(&Msg::new(8, &[])))
            },
        )
        .unwrap();
        call_until_delivered_then_give_up(&ep, 7);
        gave_up_tx.send(()).unwrap();
        assert_eq!(server.join().unwrap(), libc::ESRCH);
    });
}

#[test]
fn capabilities_travel_and_unwrap() {
    let _w = Watchdog::new("capabilities_travel_and_unwrap", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let buf = cap::create_buffer(4).unwrap();
        let moved = cap::create_buffer(4).unwrap();
        let badged_self = cap::mint(ep.cap(), Rights::SEND, 31).unwrap();
        let server_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(server_cap, Rights::ALL)],
            |caps| {
                let e = Endpoint::from_cap(caps[0]);
                let (m, reply) = e.recv().unwrap();
                assert_eq!(m.tag.extra_caps, 3);
                let a = cap::lookup(m.cap(0).unwrap()).unwrap();
                let b = cap::lookup(m.cap(1).unwrap()).unwrap();
                // Slot 2 named this endpoint: only its badge arrived.
                assert_eq!(m.cap(2), None);
                assert_eq!(m.unwrapped_badge(2), Some(31));
                assert_eq!(m.tag.caps_unwrapped, 0b100);
                reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
                (a.rights, b.rights)
            },
        )
        .unwrap();
        let mut m = Msg::new(1, &[]);
        m.set_cap(0, buf, Transfer::Copy(Rights::READ)).unwrap();
        m.set_cap(1, moved, Transfer::Move).unwrap();
        m.set_cap(2, badged_self, Transfer::Copy(Rights::ALL))
            .unwrap();
        assert_eq!(errno(m.set_cap(3, buf, Transfer::Move)), libc::EINVAL);
        ep.call(&m).unwrap();
        assert_eq!(server.join().unwrap(), (Rights::READ, Rights::ALL));
        assert!(cap::lookup(buf).is_ok(), "copy: the sender keeps its own");
        assert_eq!(
            errno(cap::lookup(moved)),
            libc::EBADF,
            "move: gone from the sender"
        );
        // Without GRANT nothing travels.
        let no_grant =
            Endpoint::from_cap(cap::copy(ep.cap(), Rights::SEND | Rights::CALL).unwrap());
        let mut m = Msg::new(1, &[]);
        m.set_cap(0, buf, Transfer::Move).unwrap();
        assert_eq!(errno(no_grant.nb_send(&m)), libc::EPERM);
        assert!(cap::lookup(buf).is_ok());
    });
}

#[test]
fn many_clients_one_server_across_cpus_stress() {
    let _w = Watchdog::new("many_clients_one_server_across_cpus_stress", LIMIT);
    for mode in [SwitchMode::Direct, SwitchMode::Lazy] {
        common::rt(2).block_on(move || {
            let ep = Endpoint::with_mode(mode).unwrap();
            let srv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
            let server = cap::spawn_with_caps(
                greenos::task::Builder::new(),
                &[(srv_cap, Rights::ALL)],
                |caps| {
                    let e = Endpoint::from_cap(caps[0]);
                    let (mut m, mut reply) = e.recv().unwrap();
                    let mut n = 0u64;
                    loop {
                        if m.tag.label == 0 {
                            reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
                            return n;
                        }
                        n += 1;
                        let out = Msg::new(m.tag.label, &[m.mr[0] + m.badge]);
                        (m, reply) = e.reply_recv(reply.unwrap(), &out).unwrap();
                    }
                },
            )
            .unwrap();
            const CLIENTS: u64 = 6;
            const CALLS: u64 = 2000;
            let clients: Vec<_> = (1..=CLIENTS)
                .map(|c| {
                    let mine = cap::mint(ep.cap(), Rights::CALL, c).unwrap();
                    cap::spawn_with_caps(
                        greenos::task::Builder::new(),
                        &[(mine, Rights::ALL)],
                        move |caps| {
                            let e = Endpoint::from_cap(caps[0]);
                            for i in 0..CALLS {
                                let r = e.call(&Msg::new(1, &[i])).unwrap();
                                assert_eq!(r.mr[0], i + c, "reply went to the wrong caller");
                            }
                        },
                    )
                    .unwrap()
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            ep.call(&Msg::new(0, &[])).unwrap();
            assert_eq!(server.join().unwrap(), CLIENTS * CALLS);
        });
    }
}

#[test]
fn a_dropped_reply_fails_the_call_instead_of_leaving_it_blocked() {
    let _w = Watchdog::new("a_dropped_reply_fails_the_call", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let srv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        // The server takes two calls: drops the first reply, and exits
        // holding the second (its task ends; the reply dies with it).
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(srv_cap, Rights::ALL)],
            |caps| {
                let e = Endpoint::from_cap(caps[0]);
                let (_m, reply) = e.recv().unwrap();
                drop(reply);
                let (_m, reply) = e.recv().unwrap();
                let _held = reply;
            },
        )
        .unwrap();
        assert_eq!(errno(ep.call(&Msg::new(1, &[]))), libc::ESRCH);
        assert_eq!(errno(ep.call(&Msg::new(2, &[]))), libc::ESRCH);
        server.join().unwrap();
    });
}

#[test]
fn a_killed_receiver_leaves_the_queue_and_fails_the_call_it_held() {
    let _w = Watchdog::new("a_killed_receiver_leaves_the_queue", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let srv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let victim = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(srv_cap, Rights::ALL)],
            move |caps| {
                let e = Endpoint::from_cap(caps[0]);
                tx.send(()).unwrap();
                let _ = e.recv();
                unreachable!("killed while waiting");
            },
        )
        .unwrap();
        rx.recv().unwrap();
        // Wait until the victim is blocked in recv.
        while ep.queued().unwrap() != (0, 1) {
            greenos::yield_now();
        }
        greenos::signal::kill(victim.task().pid(), greenos::signal::SIGKILL).unwrap();
        assert!(matches!(victim.join(), Err(greenos::JoinError::Killed(_))));
        // The dead receiver is not in the queue: nb_send finds nobody.
        assert_eq!(ep.queued().unwrap(), (0, 0));
        ep.nb_send(&Msg::new(1, &[])).unwrap();
        assert_eq!(ep.dropped().unwrap(), 1);
    });
}

/// Callers giving up (tiny timeouts) race servers replying, across two
/// CPUs: a reply is accepted exactly when its call returns it. A reply
/// that wins the race is never lost and a call that gave up never gets a
/// late reply (the port's `AwaitReply` is claimed by exactly one side).
#[test]
fn racing_timeouts_and_replies_agree() {
    let _w = Watchdog::new("racing_timeouts_and_replies_agree", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let srv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new().affinity(common::cpus(&[1])),
            &[(srv_cap, Rights::ALL)],
            |caps| {
                let e = Endpoint::from_cap(caps[0]);
                let (mut accepted, mut refused) = (0u64, 0u64);
                loop {
                    let (m, reply) = e.recv().unwrap();
                    if m.tag.label == 0 {
                        reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
                        return (accepted, refused);
                    }
                    // Vary the service time so that some replies come
                    // before the caller's deadline and some after.
                    for _ in 0..(m.mr[0] % 7) {
                        greenos::yield_now();
                    }
                    match reply.unwrap().reply(&Msg::new(m.tag.label + 1, &[m.mr[0]])) {
                        Ok(()) => accepted += 1,
                        Err(e) => {
                            assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
                            refused += 1;
                        }
                    }
                }
            },
        )
        .unwrap();
        let clients: Vec<_> = (0..4u64)
            .map(|c| {
                let cl_cap = cap::copy(ep.cap(), Rights::CALL).unwrap();
                cap::spawn_with_caps(
                    greenos::task::Builder::new().affinity(common::cpus(&[(c % 2) as usize])),
                    &[(cl_cap, Rights::ALL)],
                    move |caps| {
                        let e = Endpoint::from_cap(caps[0]);
                        let (mut ok, mut timed_out) = (0u64, 0u64);
                        for i in 0..2_000u64 {
                            let t = Duration::from_micros(1 + (i * 37 + c) % 200);
                            match e.call_timeout(&Msg::new(5, &[i]), t) {
                                Ok(m) => {
                                    assert_eq!((m.tag.label, m.mr[0]), (6, i));
                                    ok += 1;
                                }
                                Err(err) => {
                                    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
                                    timed_out += 1;
                                }
                            }
                        }
                        (ok, timed_out)
                    },
                )
                .unwrap()
            })
            .collect();
        let (mut ok, mut timed_out) = (0, 0);
        for c in clients {
            let (o, t) = c.join().unwrap();
            ok += o;
            timed_out += t;
        }
        assert_eq!(ok + timed_out, 8_000);
        ep.call(&Msg::new(0, &[])).unwrap();
        let (accepted, refused) = server.join().unwrap();
        assert_eq!(accepted, ok, "accepted replies vs calls that got one");
        // A refused reply belongs to a call that timed out after delivery.
        assert!(
            refused <= timed_out,
            "{refused} refused > {timed_out} timed out"
        );
    });
}

/// A signal handler interrupts a blocked `recv` with EINTR; with
/// SA_RESTART the receive goes on and gets the message.
#[test]
fn a_handled_signal_interrupts_recv_unless_restart() {
    use greenos::signal::{kill, SIGUSR1};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _w = Watchdog::new("a_handled_signal_interrupts_recv", LIMIT);
    common::rt(2).block_on(|| {
        for restart in [false, true] {
            let ep = Endpoint::new().unwrap();
            let srv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
            let armed = Arc::new(AtomicBool::new(false));
            let a = armed.clone();
            let receiver = cap::spawn_with_caps(
                greenos::task::Builder::new(),
                &[(srv_cap, Rights::ALL)],
                move |caps| {
                    common::catch_sigusr1(restart);
                    a.store(true, Ordering::SeqCst);
                    Endpoint::from_cap(caps[0]).recv().map(|(m, _)| m.mr[0])
                },
            )
            .unwrap();
            while !armed.load(Ordering::SeqCst) || ep.queued().unwrap() != (0, 1) {
                greenos::yield_now();
            }
            kill(receiver.task().pid(), SIGUSR1).unwrap();
            if restart {
                // Still (or again) waiting: the message reaches it.
                ep.send(&Msg::new(1, &[42])).unwrap();
                assert_eq!(receiver.join().unwrap().unwrap(), 42);
            } else {
                let e = receiver.join().unwrap().unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINTR), "{e}");
                // It left the queue.
                assert_eq!(ep.queued().unwrap(), (0, 0));
            }
        }
    });
}

/// A signal handler runs inside its task's blocked `recv`, while that
/// receive holds the lookup of its endpoint (borrowed from the task's
/// lookup cache, not counted): the handler still resolves and uses other
/// capabilities (a send on a second endpoint, a lookup), and with
/// SA_RESTART the interrupted receive then gets its message.
#[test]
fn a_signal_handler_uses_endpoints_while_its_task_is_blocked_in_one() {
    use greenos::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SIGUSR1};
    let _w = Watchdog::new("a_signal_handler_uses_endpoints", LIMIT);
    common::rt(2).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let ep2 = Endpoint::new().unwrap();
        let recv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let send_cap = cap::copy(ep2.cap(), Rights::SEND).unwrap();
        let receiver = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(recv_cap, Rights::ALL), (send_cap, Rights::ALL)],
            move |caps| {
                let (mine, other) = (caps[0], caps[1]);
                let handler = SigHandler::new(move |_| {
                    // The blocked receive's endpoint is still looked up...
                    assert!(cap::lookup(mine).is_ok());
                    // ...and another capability resolves and works.
                    Endpoint::from_cap(other)
                        .send(&Msg::new(7, &[1]))
                        .expect("send from the handler");
                });
                sigaction(
                    SIGUSR1,
                    Some(SigAction::new(handler).flags(SaFlags::RESTART)),
                )
                .unwrap();
                Endpoint::from_cap(mine).recv().map(|(m, _)| m.mr[0])
            },
        )
        .unwrap();
        // A receiver on the second endpoint, for the handler's send.
        let second = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(ep2.cap(), Rights::RECV)],
            |caps| Endpoint::from_cap(caps[0]).recv().map(|(m, _)| m.tag.label),
        )
        .unwrap();
        while ep.queued().unwrap() != (0, 1) || ep2.queued().unwrap() != (0, 1) {
            greenos::yield_now();
        }
        kill(receiver.task().pid(), SIGUSR1).unwrap();
        assert_eq!(second.join().unwrap().unwrap(), 7);
        ep.send(&Msg::new(1, &[42])).unwrap();
        assert_eq!(receiver.join().unwrap().unwrap(), 42);
    });
}

/// A client and a server calling each other by direct process switch on
/// one CPU do not keep that CPU from a third task queued there: the
/// fastpath hands over only when the scheduler would pick the partner
/// anyway. The client calls until the spinner has run (at most until the
/// watchdog's limit: without the check, it never would).
#[test]
fn direct_switch_ping_pong_leaves_the_cpu_to_other_tasks() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let _w = Watchdog::new("direct_switch_ping_pong_leaves_the_cpu", LIMIT);
    common::rt(1).block_on(|| {
        let ep = Endpoint::with_mode(SwitchMode::Direct).unwrap();
        let spins = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (spins.clone(), stop.clone());
        let spinner = greenos::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                s2.fetch_add(1, Ordering::Relaxed);
                greenos::maybe_yield();
            }
        });
        let recv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(recv_cap, Rights::ALL)],
            |caps| serve(Endpoint::from_cap(caps[0])),
        )
        .unwrap();
        // Let both start and the server block in recv.
        greenos::yield_now();
        greenos::yield_now();
        let before = spins.load(Ordering::Relaxed);
        let mut calls = 0u64;
        while spins.load(Ordering::Relaxed) < before + 100 {
            let r = ep.call(&Msg::new(1, &[calls])).unwrap();
            assert_eq!(r.mr[0], 2 * calls);
            calls += 1;
        }
        assert!(calls > 0);
        ep.call(&Msg::new(0, &[])).unwrap();
        assert_eq!(server.join().unwrap(), calls);
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        // The calls did switch directly while the spinner waited its turn.
        assert!(ep.direct_switches().unwrap() > 0);
    });
}

/// Labels of the lending tests' server: what its handler does before it
/// replies, each while running on its caller's lent scheduling context.
const PLAIN: u64 = 1;
const YIELD: u64 = 2;
const SLEEP: u64 = 3;
const SPAWN_JOIN: u64 = 4;
const NESTED: u64 = 5;
const WAKE_LOCAL: u64 = 6;
const PANIC: u64 = 7;

/// The lending tests' server: answers `mr[0] + label`, after doing what the
/// label says; `inner` is a second server for nested calls, `local` a
/// channel to a task parked on the same CPU.
fn lending_server(ep: Endpoint, inner: Endpoint, local: mpsc::Sender<u64>) {
    let (mut msg, mut reply) = ep.recv().unwrap();
    while msg.tag.label != 0 {
        let v = msg.mr[0];
        let answer = match msg.tag.label {
            PLAIN => v + PLAIN,
            YIELD => {
                greenos::yield_now();
                v + YIELD
            }
            SLEEP => {
                greenos::sleep(Duration::from_micros(200));
                v + SLEEP
            }
            SPAWN_JOIN => greenos::spawn(move || v + SPAWN_JOIN).join().unwrap(),
            // The inner server doubles: 2v - v.
            NESTED => inner.call(&Msg::new(PLAIN, &[v])).unwrap().mr[0] - v + NESTED,
            WAKE_LOCAL => {
                local.send(v).unwrap();
                v + WAKE_LOCAL
            }
            PANIC => panic!("the handler fails on purpose"),
            other => unreachable!("label {other}"),
        };
        let r = reply.take().expect("a call");
        (msg, reply) = ep.reply_recv(r, &Msg::new(1, &[answer])).unwrap();
    }
    if let Some(r) = reply {
        r.reply(&Msg::new(0, &[])).unwrap();
    }
}

/// On one CPU a server runs its handlers on the caller's lent scheduling
/// context (the direct switch's fastpath) and may do anything there:
/// yield, sleep, spawn and join, call another server (which then runs on
/// its context), wake a task queued on the same CPU, or die. Every call
/// gets its answer (a dead server's caller gets ESRCH), in an interleaving
/// that exercises every way a loan ends.
#[test]
fn a_server_on_a_lent_context_may_block_yield_spawn_nest_and_die() {
    let _w = Watchdog::new("a_server_on_a_lent_context", LIMIT);
    common::rt(1).block_on(|| {
        let ep = Endpoint::with_mode(SwitchMode::Direct).unwrap();
        let inner = Endpoint::with_mode(SwitchMode::Direct).unwrap();
        let inner_server = {
            let c = cap::copy(inner.cap(), Rights::RECV).unwrap();
            cap::spawn_with_caps(greenos::task::Builder::new(), &[(c, Rights::ALL)], |caps| {
                serve(Endpoint::from_cap(caps[0]))
            })
            .unwrap()
        };
        let (tx, rx) = mpsc::channel::<u64>();
        let listener = greenos::spawn(move || rx.iter().sum::<u64>());
        let start_server = |tx: mpsc::Sender<u64>| {
            let c = cap::copy(ep.cap(), Rights::RECV).unwrap();
            let i = cap::copy(inner.cap(), Rights::CALL).unwrap();
            cap::spawn_with_caps(
                greenos::task::Builder::new(),
                &[(c, Rights::ALL), (i, Rights::ALL)],
                move |caps| {
                    lending_server(Endpoint::from_cap(caps[0]), Endpoint::from_cap(caps[1]), tx)
                },
            )
            .unwrap()
        };
        let mut server = start_server(tx.clone());
        let mut woken = 0;
        for round in 0..2_000u64 {
            // Mostly plain calls (the loans that end by the reply), the
            // other handlers in a fixed pseudo-random order.
            let label = match (round * 2_654_435_761) % 23 {
                0 => YIELD,
                1 => SLEEP,
                2 => SPAWN_JOIN,
                3 => NESTED,
                4 => WAKE_LOCAL,
                5 if round % 5 == 0 => PANIC,
                _ => PLAIN,
            };
            let r = ep.call(&Msg::new(label, &[round]));
            if label == PANIC {
                assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ESRCH));
                assert!(matches!(server.join(), Err(greenos::JoinError::Panic(_))));
                server = start_server(tx.clone());
                continue;
            }
            assert_eq!(
                r.unwrap().mr[0],
                round + label,
                "round {round} label {label}"
            );
            if label == WAKE_LOCAL {
                woken += round;
            }
        }
        ep.call(&Msg::new(0, &[])).unwrap();
        server.join().unwrap();
        inner.call(&Msg::new(0, &[])).unwrap();
        inner_server.join().unwrap();
        drop(tx);
        assert_eq!(listener.join().unwrap(), woken);
        assert!(ep.direct_switches().unwrap() > 0);
    });
}

/// The time a server spends on a call it took by direct switch is the
/// caller's (seL4 MCS donation; LRPC): a handler that computes for 30 ms
/// without a yield point adds those 30 ms to the caller's CPU time, not
/// its own. (A call may find a preemption pending and switch the ordinary
/// way, which charges the server; one of a few tries is enough.)
#[test]
fn the_caller_is_charged_for_the_time_its_server_runs_for_it() {
    let _w = Watchdog::new("the_caller_is_charged", LIMIT);
    common::rt(1).block_on(|| {
        let ep = Endpoint::with_mode(SwitchMode::Direct).unwrap();
        let c = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let server =
            cap::spawn_with_caps(greenos::task::Builder::new(), &[(c, Rights::ALL)], |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                let (mut msg, mut reply) = ep.recv().unwrap();
                while msg.tag.label != 0 {
                    let spin = Duration::from_millis(msg.mr[0]);
                    let t = std::time::Instant::now();
                    while t.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                    let r = reply.take().expect("a call");
                    (msg, reply) = ep.reply_recv(r, &Msg::new(1, &[])).unwrap();
                }
                reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
            })
            .unwrap();
        let me = greenos::current();
        let spin = Duration::from_millis(30);
        ep.call(&Msg::new(1, &[0])).unwrap();
        let charged = (0..5).any(|_| {
            let (mine, its) = (me.cpu_time(), server.task().cpu_time());
            ep.call(&Msg::new(1, &[30])).unwrap();
            let (mine, its) = (me.cpu_time() - mine, server.task().cpu_time() - its);
            mine >= spin && its < spin
        });
        ep.call(&Msg::new(0, &[])).unwrap();
        server.join().unwrap();
        assert!(
            charged,
            "the server's 30 ms were never charged to its caller"
        );
    });
}

/// A server answers, from `reply_recv`, a call its caller gave up on, while
/// the same caller's next call runs the server on the caller's lent context
/// (one CPU, the server already waiting: the direct switch): the stale
/// reply is refused, the receive goes on, and the call in progress gets
/// its own answer.
#[test]
fn a_stale_reply_on_a_lent_context_is_refused() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _w = Watchdog::new("a_stale_reply_on_a_lent_context_is_refused", LIMIT);
    common::rt(1).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let (gave_up_tx, gave_up_rx) = mpsc::channel::<()>();
        let server_cap = cap::copy(ep.cap(), Rights::ALL).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(server_cap, Rights::ALL)],
            move |caps| {
                let e = Endpoint::from_cap(caps[0]);
                let (m1, r1) = e.recv().unwrap();
                assert_eq!(m1.tag.label, 1);
                gave_up_rx.recv().unwrap();
                let (m2, r2) = e.recv().unwrap();
                assert_eq!(m2.tag.label, 2);
                // The stale answer first; the receive then takes the
                // helper's message.
                let (m3, r3) = e.reply_recv(r1.unwrap(), &Msg::new(100, &[])).unwrap();
                assert_eq!(m3.tag.label, 3);
                assert!(r3.is_none(), "a send carries no reply capability");
                r2.unwrap().reply(&Msg::new(20, &[])).unwrap();
            },
        )
        .unwrap();
        let second_call = Arc::new(AtomicBool::new(false));
        let helper_cap = cap::copy(ep.cap(), Rights::ALL).unwrap();
        let sc = second_call.clone();
        let helper = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(helper_cap, Rights::ALL)],
            move |caps| {
                let e = Endpoint::from_cap(caps[0]);
                // Once the second call is under way and the server waits
                // again (after its stale reply).
                while !(sc.load(Ordering::SeqCst) && e.queued().unwrap().1 == 1) {
                    greenos::yield_now();
                }
                e.send(&Msg::new(3, &[])).unwrap();
            },
        )
        .unwrap();
        // The first call: delivered, then given up on.
        call_until_delivered_then_give_up(&ep, 1);
        gave_up_tx.send(()).unwrap();
        // The server waits for the second call before it is made.
        while ep.queued().unwrap().1 == 0 {
            greenos::yield_now();
        }
        second_call.store(true, Ordering::SeqCst);
        let answer = ep.call(&Msg::new(2, &[])).unwrap();
        assert_eq!(answer.tag.label, 20, "the stale reply reached the new call");
        server.join().unwrap();
        helper.join().unwrap();
    });
}

/// Every endpoint operation looks its capability up through the task's
/// one-entry cache. A hit must still mean what a fresh lookup would: the
/// rights of the capability used (not of the one cached before), and
/// nothing for a capability deleted, revoked, or replaced in its slot.
#[test]
fn the_lookup_cache_answers_as_a_fresh_lookup_would() {
    let _w = Watchdog::new("the_lookup_cache_answers_as_a_fresh_lookup_would", LIMIT);
    common::rt(1).block_on(|| {
        let ep = Endpoint::new().unwrap();
        let m = Msg::new(1, &[]);
        // Cached with SEND, used for what SEND does not allow.
        let send_only = Endpoint::from_cap(cap::copy(ep.cap(), Rights::SEND).unwrap());
        send_only.nb_send(&m).unwrap();
        assert_eq!(errno(send_only.call(&m)), libc::EPERM);
        assert_eq!(errno(send_only.nb_recv()), libc::EPERM);
        // The full capability right after: its own rights.
        assert_eq!(errno(ep.nb_recv()), libc::EAGAIN);
        // Deleted while cached.
        send_only.nb_send(&m).unwrap();
        cap::delete(send_only.cap()).unwrap();
        assert_eq!(errno(send_only.nb_send(&m)), libc::EBADF);
        // Its slot reused (a new generation) while the old index is
        // cached: the old index stays bad, the new one works.
        send_only.nb_send(&m).unwrap_err();
        let reused = Endpoint::from_cap(cap::copy(ep.cap(), Rights::SEND).unwrap());
        assert_eq!(reused.cap().index(), send_only.cap().index());
        reused.nb_send(&m).unwrap();
        assert_eq!(errno(send_only.nb_send(&m)), libc::EBADF);
        // A derived capability, cached, then revoked through its parent.
        let child = Endpoint::from_cap(cap::mint(reused.cap(), Rights::SEND, 7).unwrap());
        child.nb_send(&m).unwrap();
        cap::revoke(reused.cap()).unwrap();
        let e = errno(child.nb_send(&m));
        assert!(e == libc::EIDRM || e == libc::EBADF, "revoked: errno {e}");
        // Another task's index is not ours, even right after we used the
        // same slot number.
        let theirs = greenos::spawn(|| Endpoint::new().unwrap().cap())
            .join()
            .unwrap();
        ep.nb_send(&m).unwrap();
        assert_eq!(errno(Endpoint::from_cap(theirs).nb_send(&m)), libc::EBADF);
    });
}
