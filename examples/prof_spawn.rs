fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let w: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = greenos::Runtime::builder().workers(w).build().unwrap();
    let reps: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let (s, spawned) = rt.block_on(|| {
            let hs: Vec<_> = (0..n).map(|i| greenos::spawn(move || i)).collect();
            let spawned = t.elapsed();
            (
                hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>(),
                spawned,
            )
        });
        println!(
            "spawn+join {n}: {:?} ({} ns/task; spawn loop {} ns/task) sum {s}",
            t.elapsed(),
            t.elapsed().as_nanos() / n as u128,
            spawned.as_nanos() / n as u128
        );
    }
    let m = rt.metrics();
    for c in &m.cpus {
        println!("{c:?}");
    }
}
