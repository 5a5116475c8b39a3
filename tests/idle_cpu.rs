//! With nothing runnable, the runtime uses (almost) no CPU: workers park in
//! the OS after a short spin, and the monitor stops ticking.

/// The tests here measure the whole process's CPU time or list its
/// threads: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let _one = serial();
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

/// Timers of timed waits that ended early (the waiter was woken first) are
/// dropped before an idle CPU sleeps, instead of waking it when they come
/// due: after request/response traffic with timeouts, an idle runtime stays
/// asleep.
#[test]
fn ended_timed_waits_do_not_wake_idle_cpus() {
    let _one = serial();
    use std::time::Duration;
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    const ROUNDS: usize = 1000;
    let timeout = Duration::from_millis(300);
    rt.block_on(move || {
        let (to_b, b_rx) = greenos::sync::mpsc::channel::<usize>();
        let (to_a, a_rx) = greenos::sync::mpsc::channel::<usize>();
        let b = greenos::task::Builder::new()
            .affinity(greenos::CpuSet::from_iter([1]))
            .spawn(move || {
                for _ in 0..ROUNDS {
                    let v = b_rx.recv().expect("request");
                    // A slow server: the client's timed wait really sleeps.
                    greenos::sleep(Duration::from_micros(50));
                    to_a.send(v).unwrap();
                }
            })
            .unwrap();
        let a = greenos::task::Builder::new()
            .affinity(greenos::CpuSet::from_iter([0]))
            .spawn(move || {
                for i in 0..ROUNDS {
                    to_b.send(i).unwrap();
                    assert_eq!(a_rx.recv_timeout(timeout).expect("reply"), i);
                }
            })
            .unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    let unparks =
        |rt: &greenos::Runtime| -> u64 { rt.metrics().cpus.iter().map(|c| c.unparks).sum() };
    let before = unparks(&rt);
    // Every timer armed above comes due within this window.
    std::thread::sleep(timeout + Duration::from_millis(400));
    let woken = unparks(&rt) - before;
    assert!(
        woken < 5,
        "idle CPUs woke {woken} times for timers of waits that had ended ({ROUNDS} timed waits)"
    );
}

/// The runtime's threads ask the kernel for timely timer wakeups: the
/// monitor (the emulated timer interrupt) and the workers (an idle CPU
/// sleeping until its next timer) set their timer slack to 1 ns, where a
/// thread's default of 50 µs let every `greenos::sleep` end ~50 µs late.
/// Read from `/proc/<tid>/timerslack_ns` (Linux 4.6+; skipped where the
/// file does not exist).
#[test]
fn runtime_threads_sleep_without_timer_slack() {
    let _one = serial();
    let rt = greenos::Runtime::builder()
        .workers(2)
        .thread_name("slack-probe")
        .build()
        .unwrap();
    // Both workers have run something.
    rt.block_on(|| {
        let hs: Vec<_> = (0..100u64).map(|i| greenos::spawn(move || i)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    // (thread name, timer slack) of this runtime's threads; None where
    // /proc lacks what is needed.
    let probe = || -> Option<Vec<(String, String)>> {
        let mut seen = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("slack-probe") {
                continue;
            }
            // `/proc/<tid>` is a thread's own view (the task/ directory
            // has no timerslack_ns).
            let slack = std::fs::read_to_string(
                std::path::Path::new("/proc")
                    .join(t.file_name())
                    .join("timerslack_ns"),
            )
            .ok()?;
            seen.push((comm.trim().to_owned(), slack.trim().to_owned()));
        }
        Some(seen)
    };
    // A thread takes its name, then sets its slack, when it first runs:
    // the monitor may not have yet.
    let mut seen = Vec::new();
    for _ in 0..500 {
        match probe() {
            None => {
                eprintln!("no /proc/<tid>/timerslack_ns: skipped");
                return;
            }
            Some(s) => seen = s,
        }
        if seen.len() >= 3 && seen.iter().all(|(_, slack)| slack == "1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("{seen:?}");
    // Two workers and the monitor.
    assert_eq!(seen.len(), 3, "runtime threads found: {seen:?}");
    for (comm, slack) in &seen {
        assert_eq!(slack, "1", "{comm} sleeps with a timer slack of {slack} ns");
    }
    drop(rt);
}
