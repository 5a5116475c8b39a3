//! Profiling loop for migrating RPC and endpoint calls (for `perf record`):
//! `cargo run --release --example prof_rpc -- [rpc|ep|lazy|yield|chan|lookup] [N]`
//! (`yield`: two tasks yielding N times each, the switch-cost reference;
//! `chan`: request/response over two greenos channels).

use std::time::Instant;

use greenos::ipc::cap::{self, Rights};
use greenos::ipc::endpoint::{Endpoint, Msg, SwitchMode};
use greenos::ipc::rpc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("rpc").to_owned();
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let rt = greenos::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    rt.block_on(move || {
        let start = Instant::now();
        if what == "rpc" {
            let srv = rpc::ipc_register_server(|m| m.label() + 1).unwrap();
            let conn = rpc::ipc_register_client(srv).unwrap();
            let mut m = conn.msg();
            let mut v = 0;
            for _ in 0..n {
                m.set_label(v);
                v = conn.ipc_call(&mut m).unwrap();
            }
            assert_eq!(v, n);
        } else if what == "lookup" {
            let c = cap::create_buffer(1).unwrap();
            for _ in 0..n {
                std::hint::black_box(cap::lookup(std::hint::black_box(c)).unwrap());
            }
        } else if what == "yield" {
            let other = greenos::spawn(move || {
                for _ in 0..n {
                    greenos::yield_now();
                }
            });
            for _ in 0..n {
                greenos::yield_now();
            }
            other.join().unwrap();
        } else if what == "chan" {
            let (req_tx, req_rx) = greenos::sync::mpsc::channel::<u64>();
            let (resp_tx, resp_rx) = greenos::sync::mpsc::channel::<u64>();
            let server = greenos::spawn(move || {
                while let Ok(v) = req_rx.recv() {
                    if resp_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let mut v = 0;
            for _ in 0..n {
                req_tx.send(v).unwrap();
                v = resp_rx.recv().unwrap();
            }
            drop(req_tx);
            server.join().unwrap();
        } else {
            let mode = if what == "lazy" {
                SwitchMode::Lazy
            } else {
                SwitchMode::Direct
            };
            let ep = Endpoint::with_mode(mode).unwrap();
            let server = cap::spawn_with_caps(
                greenos::task::Builder::new(),
                &[(ep.cap(), Rights::ALL)],
                |caps| {
                    let ep = Endpoint::from_cap(caps[0]);
                    let (mut m, mut reply) = ep.recv().unwrap();
                    while m.tag.label != 0 {
                        let out = Msg::new(1, &[m.mr[0] + 1]);
                        (m, reply) = ep.reply_recv(reply.unwrap(), &out).unwrap();
                    }
                    reply.unwrap().reply(&Msg::new(0, &[])).unwrap();
                },
            )
            .unwrap();
            let mut v = 0;
            for _ in 0..n {
                v = ep.call(&Msg::new(1, &[v])).unwrap().mr[0];
            }
            assert_eq!(v, n);
            ep.call(&Msg::new(0, &[])).unwrap();
            server.join().unwrap();
        }
        let e = start.elapsed();
        println!("{what}: {:.1} ns/call", e.as_nanos() as f64 / n as f64);
    });
    let m = rt.metrics();
    let direct: u64 = m.cpus.iter().map(|c| c.direct_switches).sum();
    let switches: u64 = m.cpus.iter().map(|c| c.switches).sum();
    println!("runtime: {direct} direct switches, {switches} switches");
}
