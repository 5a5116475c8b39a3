//! `WaitQueue::wake_one_and_wait`: the call/reply step of L4 IPC with the
//! direct process switch. Correct answers on one CPU (where every call and
//! reply should switch directly), across CPUs (where none can), between an
//! OS thread and a task, with many pairs at once while work moves between
//! CPUs, and with timeouts. The same step with `wait::park_until` and
//! `Task::unpark`, where the waiter is named by its task (no queue).
//!
//! Nothing is timed; a lost wakeup is a hang, caught by `within`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cpus, within};
use greenos::wait::{WaitQueue, WaitResult};

const LIMIT: Duration = Duration::from_secs(120);

/// One client, one server, one message slot: the L4 rendezvous in
/// miniature. `call` = send + wait for the reply; `reply_recv` = answer +
/// wait for the next request.
#[derive(Default)]
struct Channel {
    requests: WaitQueue,
    replies: WaitQueue,
    slot: AtomicU64,
    has_request: AtomicBool,
    has_reply: AtomicBool,
}

impl Channel {
    fn call(&self, v: u64) -> u64 {
        self.slot.store(v, Ordering::SeqCst);
        self.has_request.store(true, Ordering::SeqCst);
        let mut first = true;
        while !self.has_reply.load(Ordering::SeqCst) {
            if first {
                first = false;
                let _ = self.replies.wake_one_and_wait(
                    &self.requests,
                    || !self.has_reply.load(Ordering::SeqCst),
                    None,
                );
            } else {
                let _ = self
                    .replies
                    .wait(|| !self.has_reply.load(Ordering::SeqCst), None);
            }
        }
        self.has_reply.store(false, Ordering::SeqCst);
        self.slot.load(Ordering::SeqCst)
    }

    fn recv(&self) -> u64 {
        while !self.has_request.load(Ordering::SeqCst) {
            let _ = self
                .requests
                .wait(|| !self.has_request.load(Ordering::SeqCst), None);
        }
        self.has_request.store(false, Ordering::SeqCst);
        self.slot.load(Ordering::SeqCst)
    }

    /// Replies with `v`, then waits for the next request and returns it
    /// (`None` after `last`).
    fn reply_recv(&self, v: u64, last: bool) -> Option<u64> {
        self.slot.store(v, Ordering::SeqCst);
        self.has_reply.store(true, Ordering::SeqCst);
        if last {
            self.replies.wake_one();
            return None;
        }
        let mut first = true;
        while !self.has_request.load(Ordering::SeqCst) {
            if first {
                first = false;
                let _ = self.requests.wake_one_and_wait(
                    &self.replies,
                    || !self.has_request.load(Ordering::SeqCst),
                    None,
                );
            } else {
                let _ = self
                    .requests
                    .wait(|| !self.has_request.load(Ordering::SeqCst), None);
            }
        }
        self.has_request.store(false, Ordering::SeqCst);
        Some(self.slot.load(Ordering::SeqCst))
    }
}

fn serve(ch: &Channel, n: u64) {
    let mut req = ch.recv();
    for i in 0..n {
        match ch.reply_recv(req * 2 + 1, i + 1 == n) {
            Some(r) => req = r,
            None => break,
        }
    }
}

fn run_pair(n: u64, server_set: Option<greenos::CpuSet>, client_set: Option<greenos::CpuSet>) {
    let ch = Arc::new(Channel::default());
    let c2 = ch.clone();
    let mut sb = greenos::task::Builder::new().name("server");
    if let Some(s) = server_set {
        sb = sb.affinity(s);
    }
    let server = sb.spawn(move || serve(&c2, n)).unwrap();
    let mut cb = greenos::task::Builder::new().name("client");
    if let Some(s) = client_set {
        cb = cb.affinity(s);
    }
    let client = cb
        .spawn(move || {
            for v in 0..n {
                assert_eq!(ch.call(v), v * 2 + 1);
            }
        })
        .unwrap();
    client.join().unwrap();
    server.join().unwrap();
}

/// On one CPU every call and reply finds its peer parked here: the CPU
/// passes straight to it.
#[test]
fn one_cpu_calls_switch_directly() {
    within("one_cpu_calls_switch_directly", LIMIT, || {
        let rt = common::rt(1);
        let n = 20_000;
        rt.block_on(move || run_pair(n, None, None));
        let direct = rt.metrics().total(|c| c.direct_switches);
        assert!(
            direct >= 2 * (n - 1),
            "expected a direct switch per call and per reply, got {direct}"
        );
    });
}

/// Peers pinned to different CPUs are woken where they are: same answers,
/// no direct switch.
#[test]
fn cross_cpu_calls_wake_the_peer_where_it_is() {
    within("cross_cpu_calls", LIMIT, || {
        let rt = common::rt(2);
        rt.block_on(|| run_pair(5_000, Some(cpus(&[0])), Some(cpus(&[1]))));
        assert_eq!(rt.metrics().total(|c| c.direct_switches), 0);
    });
}

/// Several pairs on two CPUs, free to move: direct switches race with
/// stealing, balancing and remote wakeups; every answer must still be right.
#[test]
fn many_pairs_on_two_cpus() {
    within("many_pairs_on_two_cpus", LIMIT, || {
        let rt = common::rt(2);
        rt.block_on(|| {
            let pairs: Vec<_> = (0..6)
                .map(|_| greenos::spawn(|| run_pair(5_000, None, None)))
                .collect();
            for p in pairs {
                p.join().unwrap();
            }
        });
    });
}

/// An OS thread calling a green server, and a green client calling a
/// server that is an OS thread.
#[test]
fn os_threads_on_either_side() {
    within("os_threads_on_either_side", LIMIT, || {
        let rt = common::rt(2);
        let ch = Arc::new(Channel::default());
        let c2 = ch.clone();
        let server = rt.spawn(move || serve(&c2, 2_000));
        for v in 0..2_000 {
            assert_eq!(ch.call(v), v * 2 + 1);
        }
        server.join().unwrap();

        let ch = Arc::new(Channel::default());
        let c2 = ch.clone();
        let server = std::thread::spawn(move || serve(&c2, 2_000));
        rt.block_on(move || {
            for v in 0..2_000 {
                assert_eq!(ch.call(v), v * 2 + 1);
            }
        });
        server.join().unwrap();
    });
}

/// Nobody answers: the wait times out, but the wakee was woken; an
/// `Invalid` validate still wakes it.
#[test]
fn timeouts_and_invalid() {
    within("timeouts_and_invalid", LIMIT, || {
        let rt = common::rt(1);
        rt.block_on(|| {
            let a = Arc::new(WaitQueue::new());
            let b = WaitQueue::new();
            let a2 = a.clone();
            let sleeper = greenos::spawn(move || a2.wait(|| true, None));
            while a.is_empty() {
                greenos::yield_now();
            }
            let (woke, r) = b.wake_one_and_wait(&a, || true, Some(Duration::from_millis(5)));
            assert!(woke);
            assert_eq!(r, WaitResult::TimedOut);
            assert_eq!(sleeper.join().unwrap(), WaitResult::Notified);
            assert!(b.is_empty());

            let a2 = a.clone();
            let sleeper = greenos::spawn(move || a2.wait(|| true, None));
            while a.is_empty() {
                greenos::yield_now();
            }
            assert_eq!(
                b.wake_one_and_wait(&a, || false, None),
                (true, WaitResult::Invalid)
            );
            assert_eq!(sleeper.join().unwrap(), WaitResult::Notified);
            assert_eq!(
                b.wake_one_and_wait(&a, || false, None),
                (false, WaitResult::Invalid),
                "nobody to wake"
            );
        });
    });
}

// ---------------------------------------------------------------------------
// `wait::park_until` / `Task::unpark`: the same step with no wait queue,
// the waiter named by its task handle (what IPC ports use).

/// A request/reply pair over two flags, each side parked by name.
struct Named {
    slot: AtomicU64,
    has_request: AtomicBool,
    has_reply: AtomicBool,
}

const ON: (greenos::trace::BlockOn, u64) = (greenos::trace::BlockOn::WaitQueue, 0);

fn named_pair(n: u64, set: Option<(greenos::CpuSet, greenos::CpuSet)>, direct: bool) {
    let ch = Arc::new(Named {
        slot: AtomicU64::new(0),
        has_request: AtomicBool::new(false),
        has_reply: AtomicBool::new(false),
    });
    let (server_set, client_set) = match set {
        Some((s, c)) => (Some(s), Some(c)),
        None => (None, None),
    };
    let (to_server, server_rx) = greenos::sync::mpsc::channel::<greenos::Task>();
    let (to_client, client_rx) = greenos::sync::mpsc::channel::<greenos::Task>();
    let cs = ch.clone();
    let mut sb = greenos::task::Builder::new().name("server");
    if let Some(s) = server_set {
        sb = sb.affinity(s);
    }
    let server = sb
        .spawn(move || {
            let client = server_rx.recv().unwrap();
            for _ in 0..n {
                let r =
                    greenos::wait::park_until(ON, || cs.has_request.load(Ordering::SeqCst), None);
                assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                cs.has_request.store(false, Ordering::SeqCst);
                let v = cs.slot.load(Ordering::SeqCst);
                cs.slot.store(v * 2 + 1, Ordering::SeqCst);
                cs.has_reply.store(true, Ordering::SeqCst);
                client.unpark();
            }
        })
        .unwrap();
    let mut cb = greenos::task::Builder::new().name("client");
    if let Some(s) = client_set {
        cb = cb.affinity(s);
    }
    let client = cb
        .spawn(move || {
            let server = client_rx.recv().unwrap();
            for v in 0..n {
                ch.slot.store(v, Ordering::SeqCst);
                ch.has_request.store(true, Ordering::SeqCst);
                let done = || ch.has_reply.load(Ordering::SeqCst);
                let r = if direct {
                    greenos::wait::unpark_and_park_until(&server, ON, done, None)
                } else {
                    server.unpark();
                    greenos::wait::park_until(ON, done, None)
                };
                assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                ch.has_reply.store(false, Ordering::SeqCst);
                assert_eq!(ch.slot.load(Ordering::SeqCst), v * 2 + 1);
            }
        })
        .unwrap();
    to_server.send(client.task().clone()).unwrap();
    to_client.send(server.task().clone()).unwrap();
    client.join().unwrap();
    server.join().unwrap();
}

/// On one CPU the client's unpark-and-park passes the CPU straight to the
/// server; across CPUs, plain and direct forms alike, no wakeup is lost
/// (a lost one hangs, caught by `within`).
#[test]
fn park_until_by_name_switches_directly_and_loses_nothing() {
    within("park_until_by_name", LIMIT, || {
        let rt = common::rt(1);
        let n = 20_000;
        rt.block_on(move || named_pair(n, None, true));
        let direct = rt.metrics().total(|c| c.direct_switches);
        assert!(
            direct >= n - 1,
            "expected a direct switch per call, got {direct}"
        );
        let rt = common::rt(2);
        for direct in [false, true] {
            rt.block_on(move || named_pair(20_000, Some((cpus(&[0]), cpus(&[1]))), direct));
            rt.block_on(move || named_pair(20_000, None, direct));
        }
    });
}

/// Done on entry: `Invalid`, no sleep. Not done and never unparked:
/// `TimedOut`. A condition published (and unparked) by another task
/// before the park is seen at once.
#[test]
fn park_until_timeouts_invalid_and_early_unpark() {
    within("park_until_timeouts", LIMIT, || {
        let rt = common::rt(2);
        rt.block_on(|| {
            assert_eq!(
                greenos::wait::park_until(ON, || true, None),
                WaitResult::Invalid
            );
            assert_eq!(
                greenos::wait::park_until(ON, || false, Some(Duration::from_millis(2))),
                WaitResult::TimedOut
            );
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let me = greenos::current();
            let waker = greenos::spawn(move || {
                f.store(true, Ordering::SeqCst);
                me.unpark();
            });
            waker.join().unwrap();
            // Published and unparked before parking: no sleep.
            assert_eq!(
                greenos::wait::park_until(ON, || flag.load(Ordering::SeqCst), None),
                WaitResult::Invalid
            );
        });
    });
}

/// A call lends the caller's scheduling context and the reply hands it
/// back (`wait::hand_back_and_park_until`): on one CPU a round trip is two
/// direct switches, no wakeup is lost, and the server is never
/// charged for its client's time — here the client computes ~50 µs
/// between calls and the server nothing, so almost all the CPU time is
/// the client's. (Were the reply to lend as well, the roles would swap at
/// the first settled loan and the server would pay for the client.)
#[test]
fn a_reply_hands_the_cpu_back_without_lending_it() {
    within("a_reply_hands_the_cpu_back", LIMIT, || {
        let rt = common::rt(1);
        const N: u64 = 2_000;
        let (client_time, server_time) = rt.block_on(|| {
            let ch = Arc::new(Channel::default());
            let cs = ch.clone();
            let (to_server, server_rx) = greenos::sync::mpsc::channel::<greenos::Task>();
            let server = greenos::spawn(move || {
                let client = server_rx.recv().unwrap();
                let ready = || cs.has_request.load(Ordering::SeqCst);
                let _ = greenos::wait::park_until(ON, ready, None);
                for i in 0..N {
                    cs.has_request.store(false, Ordering::SeqCst);
                    let v = cs.slot.load(Ordering::SeqCst);
                    cs.slot.store(v * 2 + 1, Ordering::SeqCst);
                    cs.has_reply.store(true, Ordering::SeqCst);
                    if i + 1 == N {
                        client.unpark();
                    } else {
                        let _ = greenos::wait::hand_back_and_park_until(&client, ON, ready, None);
                    }
                }
            });
            let s = server.task().clone();
            to_server.send(greenos::current()).unwrap();
            let me = greenos::current();
            for v in 0..N {
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_micros(50) {
                    std::hint::spin_loop();
                }
                ch.slot.store(v, Ordering::SeqCst);
                ch.has_request.store(true, Ordering::SeqCst);
                let done = || ch.has_reply.load(Ordering::SeqCst);
                let r = greenos::wait::unpark_and_park_until(&s, ON, done, None);
                assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                ch.has_reply.store(false, Ordering::SeqCst);
                assert_eq!(ch.slot.load(Ordering::SeqCst), v * 2 + 1);
            }
            server.join().unwrap();
            (me.cpu_time(), s.cpu_time())
        });
        let direct = rt.metrics().total(|c| c.direct_switches);
        // Nearly all of both directions (a switch that finds a preemption
        // pending goes through the scheduler instead).
        assert!(
            direct >= 2 * N - 100,
            "{direct} direct switches for {N} calls"
        );
        assert!(
            server_time * 4 < client_time,
            "server charged {server_time:?}, client {client_time:?}"
        );
    });
}

/// `Task::try_claim` takes only a parked task, and only once; what the
/// claimed task waits for may be published *after* the claim (it cannot
/// run before the claim is spent); `switch_to_and_park_until` hands it the
/// CPU, and on one CPU it then runs on the caller's lent context
/// (`wait::lent_by`); a claim dropped unused wakes the task.
#[test]
fn a_claimed_task_runs_only_when_switched_to_or_woken() {
    const ROUNDS: u64 = 200;
    within("a_claimed_task", LIMIT, || {
        let rt = common::rt(1);
        rt.block_on(|| {
            // The running task itself is not parked.
            assert!(greenos::current().try_claim().is_none());
            let request = Arc::new(AtomicU64::new(0));
            let reply = Arc::new(AtomicU64::new(0));
            let lent = Arc::new(AtomicU64::new(0));
            let (to_server, server_rx) = greenos::sync::mpsc::channel::<greenos::Task>();
            let (rq, rp, l) = (request.clone(), reply.clone(), lent.clone());
            let server = greenos::spawn(move || {
                let client = server_rx.recv().unwrap();
                for round in 1..=ROUNDS + 1 {
                    let r =
                        greenos::wait::park_until(ON, || rq.load(Ordering::SeqCst) == round, None);
                    assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                    if greenos::wait::lent_by(&client) {
                        l.fetch_add(1, Ordering::SeqCst);
                    }
                    rp.store(round, Ordering::SeqCst);
                    client.unpark();
                }
            });
            let s = server.task().clone();
            to_server.send(greenos::current()).unwrap();
            let claim = |round: u64| loop {
                // Parked once it waits for `round` (it may still be on
                // its way there: claims fail until then).
                if let Some(c) = s.try_claim() {
                    assert!(s.try_claim().is_none(), "a task is claimed once");
                    return c;
                }
                assert_eq!(reply.load(Ordering::SeqCst), round - 1);
                greenos::yield_now();
            };
            // Published after the claim, then switched to.
            for round in 1..=ROUNDS {
                let c = claim(round);
                request.store(round, Ordering::SeqCst);
                let r = greenos::wait::switch_to_and_park_until(
                    c,
                    ON,
                    || reply.load(Ordering::SeqCst) == round,
                    None,
                );
                assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                assert!(
                    !greenos::wait::lent_by(&s),
                    "the client lends, it does not borrow"
                );
            }
            // The last round: the claim is dropped, which wakes the server.
            let c = claim(ROUNDS + 1);
            request.store(ROUNDS + 1, Ordering::SeqCst);
            drop(c);
            server.join().unwrap();
            assert_eq!(reply.load(Ordering::SeqCst), ROUNDS + 1);
            // A switched-to round runs on the client's lent context unless
            // a preemption was pending at the switch (then the scheduler
            // runs first): not every round, but surely some.
            assert!(
                lent.load(Ordering::SeqCst) >= 1,
                "no round ran on a lent context"
            );
        });
    });
}

/// The placement rule of the direct switch (seL4's fastpath switches only
/// to a thread on the caller's core): a target that may run on the
/// caller's CPU but last ran on another is woken the ordinary way, not
/// pulled over and switched to.
#[test]
fn a_handoff_to_a_task_that_last_ran_elsewhere_wakes_it() {
    within("handoff_elsewhere", LIMIT, || {
        let rt = common::rt(2);
        let request = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(AtomicBool::new(false));
        let client_slot = Arc::new(std::sync::Mutex::new(None::<greenos::Task>));
        let (rq, rp, cs) = (request.clone(), reply.clone(), client_slot.clone());
        let server = rt
            .spawn_with(
                greenos::task::Builder::new()
                    .name("server")
                    .affinity(cpus(&[1])),
                move || {
                    let r = greenos::wait::park_until(ON, || rq.load(Ordering::SeqCst), None);
                    assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                    rp.store(true, Ordering::SeqCst);
                    cs.lock().unwrap().take().expect("the client").unpark();
                },
            )
            .unwrap();
        let server_task = server.task().clone();
        let client = rt
            .spawn_with(
                greenos::task::Builder::new()
                    .name("client")
                    .affinity(cpus(&[0])),
                move || {
                    // Parked on CPU 1 (where it is pinned) once claimed.
                    let claim = loop {
                        if let Some(c) = server_task.try_claim() {
                            break c;
                        }
                        greenos::yield_now();
                    };
                    assert_eq!(server_task.cpu(), 1);
                    // Now it may run here too, but it last ran on CPU 1.
                    greenos::task::sched_setaffinity(server_task.pid(), &cpus(&[0, 1])).unwrap();
                    *client_slot.lock().unwrap() = Some(greenos::current());
                    request.store(true, Ordering::SeqCst);
                    let done = || reply.load(Ordering::SeqCst);
                    let r = greenos::wait::switch_to_and_park_until(claim, ON, done, None);
                    assert!(matches!(r, WaitResult::Notified | WaitResult::Invalid));
                    assert!(reply.load(Ordering::SeqCst));
                },
            )
            .unwrap();
        client.join().unwrap();
        server.join().unwrap();
        assert_eq!(rt.metrics().total(|c| c.direct_switches), 0);
    });
}
