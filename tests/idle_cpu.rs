//! With nothing runnable, the runtime uses (almost) no CPU: workers park in
//! the OS after a short spin, and the monitor stops ticking.

fn process_cpu_time() -> std::time::Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn idle_runtime_uses_no_cpu() {
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    // Give every CPU some work first, so all of them have been busy.
    rt.block_on(|| {
        let hs: Vec<_> = (0..1000u64).map(|i| greenos::spawn(move || i)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    // Let the idle spin (100 µs) run out, then measure a quiet second.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = process_cpu_time();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used = process_cpu_time() - before;
    // Two spinning workers would burn 2 s of CPU here; parked ones ~0.
    assert!(
        used < std::time::Duration::from_millis(100),
        "idle runtime used {used:?} of CPU in 1 s"
    );
    drop(rt);
}
