fn skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let sub = size / 10;
    let hs: Vec<_> = (0..10)
        .map(|i| greenos::spawn(move || skynet(num + i * sub, sub)))
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).sum()
}
fn main() {
    let w: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = greenos::Runtime::builder().workers(w).build().unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let s = rt.block_on(|| skynet(0, 1_000_000));
        println!("skynet {:?} sum {s}", t.elapsed());
    }
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    println!("{}", st.lines().find(|l| l.starts_with("VmHWM")).unwrap());
    for c in &rt.metrics().cpus {
        println!("{c:?}");
    }
}
