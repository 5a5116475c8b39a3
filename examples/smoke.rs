fn main() {
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..10u64).map(|i| greenos::spawn(move || i * i)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    println!("sum {sum} pid1? {}", rt.block_on(|| greenos::getpid()));
    let t = std::time::Instant::now();
    rt.block_on(|| {
        greenos::sleep(std::time::Duration::from_millis(50));
    });
    println!("slept {:?}", t.elapsed());
    let n = rt.block_on(|| {
        let hs: Vec<_> = (0..100_000u64).map(|i| greenos::spawn(move || i)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    println!("n {n} {:?}", t.elapsed());
    let r = rt.block_on(|| greenos::spawn(|| panic!("boom")).join());
    println!("panic -> {:?}", r);
    let t = std::time::Instant::now();
    let n = 1_000_000;
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
    println!("yield {:?}/switch", t.elapsed() / (2 * n));
    println!("{:#?}", rt.metrics().cpus[0]);
}
