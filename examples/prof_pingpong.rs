use greenos::sync::mpsc;
fn main() {
    let w: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let pinned = std::env::args().nth(3).as_deref() != Some("free");
    let rt = greenos::Runtime::builder().workers(w).build().unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        rt.block_on(move || {
            let (tx1, rx1) = mpsc::channel::<u64>();
            let (tx2, rx2) = mpsc::channel::<u64>();
            let cpu_b = if w > 1 { 1 } else { 0 };
            let mask = |c: usize| {
                if pinned {
                    [c].into_iter().collect()
                } else {
                    greenos::CpuSet::all(w)
                }
            };
            let b = greenos::task::Builder::new()
                .affinity(mask(cpu_b))
                .spawn(move || {
                    for v in rx1.iter() {
                        if tx2.send(v + 1).is_err() {
                            break;
                        }
                    }
                })
                .unwrap();
            let a = greenos::task::Builder::new()
                .affinity(mask(0))
                .spawn(move || {
                    let mut v = 0;
                    for _ in 0..n {
                        tx1.send(v).unwrap();
                        v = rx2.recv().unwrap();
                    }
                    v
                })
                .unwrap();
            assert_eq!(a.join().unwrap(), n);
            b.join().unwrap();
        });
        println!(
            "pingpong {w} workers: {:.0} ns/round trip",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
    for c in &rt.metrics().cpus {
        println!("{c:?}");
    }
}
