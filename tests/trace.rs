//! Event recording: a scripted workload on two CPUs records the switches,
//! wakeups (with their wakers), spawns, exits and blocks it must; the
//! Chrome / Perfetto export parses as JSON with the expected tracks,
//! slices and flows; the SVG timeline has a lane per CPU; per-task metrics
//! count what the tasks did. Recording off records nothing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use greenos::sync::mpsc;
use greenos::trace::{BlockOn, EventKind, TraceConfig};
use greenos::{Pid, TaskState};

fn scripted(rt: &greenos::Runtime) -> (u64, u64, u64) {
    rt.block_on(|| {
        let (to_pong, from_ping) = mpsc::channel::<u32>();
        let (to_ping, from_pong) = mpsc::channel::<u32>();
        let pong = greenos::task::Builder::new()
            .name("pong")
            .spawn(move || {
                while let Ok(v) = from_ping.recv() {
                    if to_ping.send(v + 1).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        let ping = greenos::task::Builder::new()
            .name("ping")
            .spawn(move || {
                let mut v = 0;
                for _ in 0..100 {
                    to_pong.send(v).unwrap();
                    v = from_pong.recv().unwrap();
                }
                v
            })
            .unwrap();
        let sleeper = greenos::task::Builder::new()
            .name("sleeper")
            .spawn(|| greenos::sleep(Duration::from_millis(2)))
            .unwrap();
        let ids = (
            ping.task().pid().0,
            pong.task().pid().0,
            sleeper.task().pid().0,
        );
        assert_eq!(ping.join().unwrap(), 100);
        pong.join().unwrap();
        sleeper.join().unwrap();
        ids
    })
}

#[test]
fn scripted_workload_is_recorded_and_exported() {
    let rt = common::builder(2)
        .trace(TraceConfig::new(1 << 14))
        .build()
        .unwrap();
    let (ping, pong, sleeper) = scripted(&rt);
    let trace = rt.trace().expect("tracing is on");
    assert_eq!(trace.cpus, 2);
    assert_eq!(trace.overwritten, 0);
    let of = |kind: EventKind, pid: u64| {
        trace
            .events
            .iter()
            .filter(|e| e.kind == kind && e.pid == pid)
            .count()
    };
    for pid in [ping, pong, sleeper] {
        assert_eq!(of(EventKind::Spawn, pid), 1, "spawn of {pid}");
        assert_eq!(of(EventKind::Exit, pid), 1, "exit of {pid}");
        assert!(of(EventKind::Switch, pid) >= 1, "{pid} ran");
        let spawn = trace
            .events
            .iter()
            .find(|e| e.kind == EventKind::Spawn && e.pid == pid)
            .unwrap();
        assert_eq!(spawn.other, 1, "spawned by init");
    }
    // 100 round trips: pong is woken by ping (and ping by pong) over and
    // over, unless every receive found its message already there.
    let woken_by = |pid: u64, waker: u64| {
        trace
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Wakeup && e.pid == pid && e.other == waker)
            .count()
    };
    assert!(woken_by(pong, ping) + woken_by(ping, pong) > 0);
    assert!(
        trace.events.iter().any(|e| e.kind == EventKind::Block
            && e.pid == sleeper
            && e.other == BlockOn::Sleep as u64),
        "the sleeper blocked in sleep"
    );
    assert!(
        trace
            .events
            .iter()
            .any(|e| e.kind == EventKind::Block && e.pid == 1 && e.other == BlockOn::Join as u64),
        "init blocked in join"
    );
    // Time order.
    assert!(trace.events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));

    let mut json = Vec::new();
    trace.write_chrome_json(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).expect("the export is JSON");
    let evs = v["traceEvents"].as_array().unwrap();
    let tracks: HashSet<String> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    for want in ["CPU 0", "CPU 1"] {
        assert!(tracks.contains(want), "{want} track in {tracks:?}");
    }
    assert!(tracks.contains(&format!("ping ({ping})")));
    assert!(tracks.contains(&format!("pong ({pong})")));
    let slices = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"] == 2 && e["tid"] == ping)
        .count();
    assert_eq!(
        slices,
        of(EventKind::Switch, ping),
        "one slice per switch-in"
    );
    let starts = evs.iter().filter(|e| e["ph"] == "s").count();
    let ends = evs.iter().filter(|e| e["ph"] == "f").count();
    assert!(starts > 0 && starts == ends, "flow arrows come in pairs");

    let mut svg = Vec::new();
    trace.write_svg(&mut svg, 900).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains(">CPU 0<") && svg.contains(">CPU 1<"));
    assert!(svg.contains("ping ("));
}

#[test]
fn off_by_default() {
    let rt = common::rt(1);
    scripted(&rt);
    assert!(rt.trace().is_none());
}

#[test]
fn task_metrics_count_switches_and_state() {
    let rt = common::rt(1);
    rt.block_on(|| {
        let q = std::sync::Arc::new(greenos::wait::WaitQueue::new());
        let q2 = q.clone();
        let blocked = greenos::task::Builder::new()
            .name("blocked")
            .spawn(move || {
                let _ = q2.wait(|| true, None);
            })
            .unwrap();
        let yielder = greenos::task::Builder::new()
            .name("yielder")
            .nice(5)
            .spawn(|| {
                for _ in 0..50 {
                    greenos::yield_now();
                }
            })
            .unwrap();
        while q.is_empty() || !yielder.is_finished() {
            greenos::yield_now();
        }
        let _ = yielder.join();
        (blocked, q)
    });
    let m = rt.task_metrics();
    let b = m
        .iter()
        .find(|t| t.name.as_deref() == Some("blocked"))
        .expect("the blocked task is live");
    assert_eq!(b.state, TaskState::Blocked);
    assert!(b.switches >= 1);
    assert!(
        m.iter().all(|t| t.name.as_deref() != Some("yielder")),
        "finished tasks are gone"
    );
    assert!(b.pid > Pid(1));
}

/// A task blocked on an IPC object says which kind (and which object) in
/// its block event: a pipe reader, a message-queue receiver.
#[test]
fn ipc_blocks_name_their_object() {
    use std::io::{Read, Write};
    let rt = common::builder(2)
        .trace(TraceConfig::new(1 << 12))
        .build()
        .unwrap();
    let (reader_pid, receiver_pid) = rt.block_on(|| {
        let (mut r, mut w) = greenos::ipc::pipe().unwrap();
        let reader = greenos::spawn(move || {
            let mut b = [0u8; 1];
            r.read_exact(&mut b).unwrap();
            b[0]
        });
        let q = greenos::ipc::msgget(
            greenos::ipc::Key::PRIVATE,
            greenos::ipc::IpcFlags::CREAT | greenos::ipc::IpcFlags::mode(0o600),
        )
        .unwrap();
        let receiver = greenos::spawn(move || {
            let mut buf = [0u8; 8];
            greenos::ipc::msgrcv(q, &mut buf, 0, greenos::ipc::MsgFlags::NONE)
                .unwrap()
                .0
        });
        // Both block before anything arrives (their CPUs find nothing).
        greenos::sleep(Duration::from_millis(20));
        w.write_all(&[7]).unwrap();
        greenos::ipc::msgsnd(q, 3, b"x", greenos::ipc::MsgFlags::NONE).unwrap();
        let pids = (reader.task().pid().0, receiver.task().pid().0);
        assert_eq!(reader.join().unwrap(), 7);
        assert_eq!(receiver.join().unwrap(), 3);
        pids
    });
    let trace = rt.trace().expect("tracing is on");
    let blocked_on = |pid: u64, kind: BlockOn| {
        trace
            .events
            .iter()
            .any(|e| e.kind == EventKind::Block && e.pid == pid && e.other == kind as u64)
    };
    assert!(
        blocked_on(reader_pid, BlockOn::Pipe),
        "reader blocked on a pipe"
    );
    assert!(
        blocked_on(receiver_pid, BlockOn::MsgQueue),
        "receiver blocked on a message queue"
    );
}

/// Asserts that each of `pid`'s wakeups in `trace` is measured to its own
/// switch-in: no block of `pid` lies between the two. Returns how many.
fn wakeups_measured_to_own_switch_in(trace: &greenos::trace::Trace, pid: u64) -> usize {
    let lat: Vec<_> = trace
        .wakeup_latencies()
        .into_iter()
        .filter(|w| w.pid == pid)
        .collect();
    for w in &lat {
        let blocked_between = trace.events.iter().any(|e| {
            e.kind == EventKind::Block
                && e.pid == pid
                && e.ts_ns > w.woken_ns
                && e.ts_ns < w.woken_ns + w.latency_ns
        });
        assert!(!blocked_between, "{w:?} spans a later block");
    }
    lat.len()
}

/// Each wakeup of a sleeping task is followed by its own switch-in, before
/// it blocks again: a switch is stamped after the timer that woke the task
/// fired (it used to carry the time the previous task switched out,
/// earlier than the wakeup, so every wakeup was matched with the switch-in
/// one sleep later). Holds whatever the machine's speed.
#[test]
fn every_timer_wakeup_is_measured_to_its_own_switch_in() {
    const SLEEPS: usize = 20;
    let rt = common::builder(1)
        .trace(TraceConfig::new(1 << 14))
        .build()
        .unwrap();
    let pid = rt.block_on(|| {
        let h = greenos::task::Builder::new()
            .name("napper")
            .spawn(|| {
                for _ in 0..SLEEPS {
                    greenos::sleep(Duration::from_micros(300));
                }
            })
            .unwrap();
        let pid = h.task().pid().0;
        h.join().unwrap();
        pid
    });
    let trace = rt.trace().unwrap();
    assert_eq!(
        wakeups_measured_to_own_switch_in(&trace, pid),
        SLEEPS,
        "one measured wakeup per sleep"
    );
}

/// The same across CPUs: a task on CPU 1 woken by one on CPU 0 (the wakeup
/// is recorded on CPU 0 and reaches CPU 1 through its inbox). The sender
/// waits 100 µs before each send, far longer than a receiver spins before
/// it parks, so the receiver is asleep when each value comes.
#[test]
fn cross_cpu_wakeups_are_measured_to_their_own_switch_in() {
    const ROUNDS: u64 = 50;
    let rt = common::builder(2)
        .trace(TraceConfig::new(1 << 15))
        .build()
        .unwrap();
    let on = |cpu| {
        let mut set = greenos::CpuSet::new();
        set.set(cpu);
        greenos::task::Builder::new().affinity(set)
    };
    let pid = rt.block_on(|| {
        let (to_b, from_a) = mpsc::channel::<u64>();
        let (to_a, from_b) = mpsc::channel::<u64>();
        let b = on(1)
            .name("b")
            .spawn(move || {
                while let Ok(v) = from_a.recv() {
                    if to_a.send(v + 1).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        let a = on(0)
            .name("a")
            .spawn(move || {
                let mut v = 0;
                for _ in 0..ROUNDS {
                    greenos::sleep(Duration::from_micros(100));
                    to_b.send(v).unwrap();
                    v = from_b.recv().unwrap();
                }
                v
            })
            .unwrap();
        let pid = b.task().pid().0;
        assert_eq!(a.join().unwrap(), ROUNDS);
        b.join().unwrap();
        pid
    });
    let trace = rt.trace().unwrap();
    assert!(trace.overwritten == 0, "ring large enough");
    let n = wakeups_measured_to_own_switch_in(&trace, pid);
    assert!(
        n >= ROUNDS as usize / 2,
        "b was woken across CPUs {n} times"
    );
}

/// A wakeup is recorded once: a task cannot be woken (PARKED → RUNNABLE)
/// twice without running in between, so two wakeup events of one task with
/// no switch-in between would be one wakeup recorded twice. Exercised on
/// the direct-switch handoff (`wait::unpark_and_park_until`), where the
/// worker completes the wakeup.
#[test]
fn each_wakeup_is_recorded_once_on_direct_switches() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const ON: (BlockOn, u64) = (BlockOn::WaitQueue, 0);
    const ROUNDS: usize = 200;
    let rt = common::builder(1)
        .trace(TraceConfig::new(1 << 14))
        .build()
        .unwrap();
    let server_pid = rt.block_on(|| {
        let request = Arc::new(AtomicBool::new(false));
        let reply = Arc::new(AtomicBool::new(false));
        let (rq, rp) = (request.clone(), reply.clone());
        let client = greenos::current();
        let server = greenos::spawn(move || {
            for _ in 0..ROUNDS {
                let _ = greenos::wait::park_until(ON, || rq.swap(false, Ordering::SeqCst), None);
                rp.store(true, Ordering::SeqCst);
                client.unpark();
            }
        });
        let s = server.task().clone();
        for _ in 0..ROUNDS {
            request.store(true, Ordering::SeqCst);
            let _ = greenos::wait::unpark_and_park_until(
                &s,
                ON,
                || reply.swap(false, Ordering::SeqCst),
                None,
            );
        }
        server.join().unwrap();
        s.pid().0
    });
    assert!(
        rt.metrics().total(|c| c.direct_switches) > 0,
        "the handoff path was taken"
    );
    let trace = rt.trace().unwrap();
    let mut woken = false;
    let mut wakeups = 0;
    for e in trace.events.iter().filter(|e| e.pid == server_pid) {
        match e.kind {
            EventKind::Wakeup => {
                assert!(!woken, "a wakeup recorded twice at {} ns", e.ts_ns);
                woken = true;
                wakeups += 1;
            }
            EventKind::Switch => woken = false,
            _ => {}
        }
    }
    assert!(
        wakeups >= ROUNDS - 1,
        "{wakeups} wakeups for {ROUNDS} rounds"
    );
}

/// An L4 call on one CPU lends the caller's scheduling context to the
/// server, with tracing on as off. The trace still tells each side's story:
/// every time the client or the server blocks, exactly one wakeup of it is
/// recorded before it switches in again, and every switch names the task
/// that ran before it.
#[test]
fn lent_direct_switches_are_traced_like_any_switch() {
    use greenos::ipc::cap::{self, Rights};
    use greenos::ipc::endpoint::{Endpoint, Msg, SwitchMode};
    const CALLS: u64 = 300;
    let rt = common::builder(1)
        .trace(TraceConfig::new(1 << 16))
        .build()
        .unwrap();
    let (client_pid, server_pid) = rt.block_on(|| {
        let ep = Endpoint::with_mode(SwitchMode::Direct).unwrap();
        let recv_cap = cap::copy(ep.cap(), Rights::RECV).unwrap();
        let server = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(recv_cap, Rights::ALL)],
            |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                let (mut msg, mut reply) = ep.recv().unwrap();
                while msg.tag.label != 0 {
                    let r = reply.take().unwrap();
                    (msg, reply) = ep.reply_recv(r, &Msg::new(1, &[msg.mr[0] + 1])).unwrap();
                }
                reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
            },
        )
        .unwrap();
        let call_cap = cap::copy(ep.cap(), Rights::CALL).unwrap();
        let client = cap::spawn_with_caps(
            greenos::task::Builder::new(),
            &[(call_cap, Rights::ALL)],
            |caps| {
                let ep = Endpoint::from_cap(caps[0]);
                for i in 0..CALLS {
                    assert_eq!(ep.call(&Msg::new(1, &[i])).unwrap().mr[0], i + 1);
                }
                ep.call(&Msg::new(0, &[])).unwrap();
            },
        )
        .unwrap();
        let pids = (client.task().pid().0, server.task().pid().0);
        client.join().unwrap();
        server.join().unwrap();
        pids
    });
    assert!(rt.metrics().total(|c| c.direct_switches) >= CALLS);
    let trace = rt.trace().unwrap();
    for pid in [client_pid, server_pid] {
        // After a block and before the next switch-in: one wakeup.
        let mut blocked = false;
        let mut wakeups = 0;
        let mut blocks = 0;
        for e in trace.events.iter().filter(|e| e.pid == pid) {
            match e.kind {
                EventKind::Block => {
                    blocked = true;
                    blocks += 1;
                }
                EventKind::Wakeup => {
                    assert!(
                        blocked,
                        "pid {pid}: a wakeup without a block at {} ns",
                        e.ts_ns
                    );
                    wakeups += 1;
                    blocked = false;
                }
                EventKind::Switch => {
                    assert!(
                        !blocked,
                        "pid {pid}: switched in at {} ns with no wakeup",
                        e.ts_ns
                    );
                }
                _ => {}
            }
        }
        assert!(blocks as u64 >= CALLS, "pid {pid}: {blocks} blocks");
        assert!(
            wakeups + 1 >= blocks,
            "pid {pid}: {wakeups} wakeups, {blocks} blocks"
        );
    }
    // Every switch names the task that ran before it on this one CPU.
    let mut last = None;
    for e in trace.events.iter() {
        if e.kind == EventKind::Switch {
            if let Some(prev) = last {
                if e.other != 0 {
                    assert_eq!(e.other, prev, "switch to {} at {} ns", e.pid, e.ts_ns);
                }
            }
            last = Some(e.pid);
        } else if e.kind == EventKind::Idle {
            last = None;
        }
    }
}

/// Every time a task blocks, the trace records the wakeup that ends it —
/// also when the wakeup lands while the task is still switching out (it
/// marked itself parking, its CPU has not finished the park), where the
/// waker's `unpark` finds nothing to enqueue and the parking CPU requeues
/// the task itself. Two tasks on two CPUs hand a token back and forth
/// with `park_until` / `unpark`, so wakeups often land in that window;
/// per task, the blocked switch-outs (the `arg` 1 of the next switch or
/// idle event on its CPU) must equal its wakeup events.
#[test]
fn every_block_has_its_wakeup_recorded() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const ROUNDS: u64 = 5_000;
    const ON: (BlockOn, u64) = (BlockOn::WaitQueue, 0);
    let rt = common::builder(2)
        .trace(TraceConfig::new(1 << 18))
        .build()
        .unwrap();
    let pids = rt.block_on(|| {
        let turn = Arc::new(AtomicU64::new(0));
        let on = |cpu| greenos::task::Builder::new().affinity(greenos::CpuSet::from_iter([cpu]));
        let player = |me: u64, peer: Arc<std::sync::OnceLock<greenos::Task>>| {
            let turn = turn.clone();
            move || {
                for i in 0..ROUNDS {
                    let mine = 2 * i + me;
                    let _ = greenos::wait::park_until(
                        ON,
                        || turn.load(Ordering::Acquire) == mine,
                        None,
                    );
                    turn.store(mine + 1, Ordering::Release);
                    peer.get().unwrap().unpark();
                }
            }
        };
        let (to_a, to_b) = (
            Arc::new(std::sync::OnceLock::new()),
            Arc::new(std::sync::OnceLock::new()),
        );
        let a = on(0).spawn(player(0, to_b.clone())).unwrap();
        let b = on(1).spawn(player(1, to_a.clone())).unwrap();
        let _ = to_a.set(a.task().clone());
        let _ = to_b.set(b.task().clone());
        // The first turn is a's.
        a.task().unpark();
        let pids = [a.task().pid().0, b.task().pid().0];
        a.join().unwrap();
        b.join().unwrap();
        pids
    });
    // Let the CPUs record their last switch and idle events first: a
    // snapshot taken while an event is being written counts it as lost.
    std::thread::sleep(Duration::from_millis(20));
    let trace = rt.trace().unwrap();
    let kinds = [
        EventKind::Switch,
        EventKind::Wakeup,
        EventKind::Idle,
        EventKind::Block,
        EventKind::Migrate,
    ]
    .map(|k| trace.count(k));
    assert_eq!(
        trace.overwritten, 0,
        "ring large enough (switch, wakeup, idle, block, migrate: {kinds:?})"
    );
    for pid in pids {
        let blocked = trace
            .events
            .iter()
            .filter(|e| {
                matches!(e.kind, EventKind::Switch | EventKind::Idle)
                    && e.other == pid
                    && e.arg == 1
            })
            .count();
        let woken = trace
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Wakeup && e.pid == pid)
            .count();
        eprintln!("pid {pid}: blocked {blocked} times, woken {woken} times");
        assert!(blocked > 0, "the task never blocked");
        assert_eq!(
            blocked, woken,
            "pid {pid}: a block without its wakeup in the trace"
        );
    }
}
