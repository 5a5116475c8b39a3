//! How long should an idle CPU spin before it sleeps in the OS?
//!
//! A request/response pair across two CPUs (pinned), with a gap between
//! requests during which the server's CPU has nothing to do. If the gap is
//! longer than the idle spin, the server's CPU goes to sleep and the next
//! request pays an OS wakeup (tens of µs on a VM); if shorter, it is caught
//! spinning. The price of spinning is CPU time burnt while idle, printed
//! too. Run: `cargo run --release --example idle_spin`.

use std::time::{Duration, Instant};

use greenos::sync::mpsc;

fn cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("needs two CPUs");
        return;
    }
    let gaps_us = [5u64, 20, 50, 200];
    let spins_us = [0u64, 10, 50, 100, 300];
    println!(
        "median round trip (µs) after an idle gap, by idle spin; CPU used per wall second \
         (the client spins through the gaps: 1.0 is the floor, 2.0 means the idle CPU spun all along)"
    );
    print!("{:>10}", "spin \\ gap");
    for g in gaps_us {
        print!("{:>10}", format!("{g} µs"));
    }
    println!("{:>12}", "CPU/s");
    for spin in spins_us {
        let rt = greenos::Runtime::builder()
            .workers(2)
            .idle_spin(Duration::from_micros(spin))
            .build()
            .unwrap();
        print!("{:>10}", format!("{spin} µs"));
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        for gap in gaps_us {
            let median = rt.block_on(move || {
                let (req_tx, req_rx) = mpsc::channel::<u64>();
                let (resp_tx, resp_rx) = mpsc::channel::<u64>();
                let on = |cpu: usize| {
                    greenos::task::Builder::new().affinity([cpu].into_iter().collect())
                };
                let server = on(1)
                    .spawn(move || {
                        for v in req_rx.iter() {
                            resp_tx.send(v).unwrap();
                        }
                    })
                    .unwrap();
                let client = on(0)
                    .spawn(move || {
                        let mut rtts = Vec::with_capacity(400);
                        for i in 0..400u64 {
                            // The gap: the client's CPU stays busy, the
                            // server's has nothing to do.
                            let until = Instant::now() + Duration::from_micros(gap);
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                            let t = Instant::now();
                            req_tx.send(i).unwrap();
                            assert_eq!(resp_rx.recv().unwrap(), i);
                            rtts.push(t.elapsed());
                        }
                        rtts.sort();
                        rtts[rtts.len() / 2]
                    })
                    .unwrap();
                let m = client.join().unwrap();
                server.join().unwrap();
                m
            });
            print!("{:>10.1}", median.as_secs_f64() * 1e6);
        }
        let cpu = (cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
        println!("{:>12.2}", cpu);
    }
}
