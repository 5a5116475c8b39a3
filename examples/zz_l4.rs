//! L4-style ping-pong: a server loops on `reply_recv`, a client `call`s it
//! with a counter in the first message register, on one CPU (direct
//! process switch) and on two CPUs (cross-CPU wakeups), and in lazy mode
//! for comparison. Prints the round-trip time of each, how many calls
//! took the direct-switch path, and each side's CPU time by the runtime's
//! accounting: with the direct switch on one CPU the server runs on its
//! caller's lent scheduling context, so its work shows in the client's
//! time (seL4 MCS donation, LRPC).
//!
//! ```text
//! cargo run --release --example l4_pingpong [ROUNDS]
//! ```

use std::time::Instant;

use greenos::ipc::cap::{self, Rights};
use greenos::ipc::endpoint::{Endpoint, Msg, SwitchMode};

const LABEL_PING: u64 = 1;
const LABEL_STOP: u64 = 0;

/// The server: answers every ping with the counter plus one, until stop.
fn server(ep: Endpoint) -> u64 {
    let (mut msg, mut reply) = ep.recv().expect("recv");
    let mut served = 0;
    while msg.tag.label == LABEL_PING {
        served += 1;
        let answer = Msg::new(LABEL_PING, &[msg.mr[0] + 1]);
        (msg, reply) = ep
            .reply_recv(reply.expect("a call carries a reply"), &answer)
            .expect("reply_recv");
    }
    if let Some(r) = reply {
        r.reply(&Msg::new(LABEL_STOP, &[])).expect("final reply");
    }
    served
}

fn run(workers: usize, mode: SwitchMode, rounds: u64) {
    let rt = greenos::Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime");
    let on = |cpu: usize| {
        let mut set = greenos::CpuSet::new();
        set.set(cpu.min(workers - 1));
        greenos::task::Builder::new().affinity(set)
    };
    rt.block_on(|| {
        let ep = Endpoint::with_mode(mode).expect("endpoint");
        // The server gets receive rights only; the client a badged call
        // capability. Each starts with exactly that capability.
        let recv_cap = cap::copy(ep.cap(), Rights::RECV).expect("copy");
        let call_cap = cap::mint(ep.cap(), Rights::CALL, 42).expect("mint");
        let s = cap::spawn_with_caps(on(1), &[(recv_cap, Rights::ALL)], |caps| {
            server(Endpoint::from_cap(caps[0]))
        })
        .expect("spawn server");
        let c = cap::spawn_with_caps(on(0), &[(call_cap, Rights::ALL)], move |caps| {
            let ep = Endpoint::from_cap(caps[0]);
            let start = Instant::now();
            let mut v = 0;
            for _ in 0..rounds {
                v = ep.call(&Msg::new(LABEL_PING, &[v])).expect("call").mr[0];
            }
            let elapsed = start.elapsed();
            assert_eq!(v, rounds);
            ep.call(&Msg::new(LABEL_STOP, &[])).expect("stop");
            elapsed
        })
        .expect("spawn client");
        let (client, server) = (c.task().clone(), s.task().clone());
        let elapsed = c.join().expect("client");
        let served = s.join().expect("server");
        assert_eq!(served, rounds);
        println!(
            "{workers} CPU(s), {mode:?}: {rounds} calls, {:.0} ns per round trip, {} direct switches; \
             CPU time client {:.1} ms, server {:.1} ms",
            elapsed.as_nanos() as f64 / rounds as f64,
            ep.direct_switches().expect("stats"),
            client.cpu_time().as_secs_f64() * 1e3,
            server.cpu_time().as_secs_f64() * 1e3,
        );
    });
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    run(1, SwitchMode::Direct, rounds);
}
