fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let rt = greenos::Runtime::builder().workers(1).build().unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        rt.block_on(|| {
            let a = greenos::spawn(move || {
                for _ in 0..n {
                    greenos::yield_now()
                }
            });
            for _ in 0..n {
                greenos::yield_now()
            }
            a.join().unwrap();
        });
        println!(
            "yield {:.1} ns/switch",
            t.elapsed().as_nanos() as f64 / (2 * n) as f64
        );
    }
}
