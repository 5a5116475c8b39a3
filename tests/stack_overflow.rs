//! A task that overflows its stack kills the process with a message naming
//! the task, instead of a bare SIGSEGV. The overflow runs in a child process
//! (this test binary re-executed), as rayon's stack_overflow_crash test does.

use std::process::Command;

const CHILD_ENV: &str = "GREENOS_STACK_OVERFLOW_CHILD";

#[inline(never)]
fn recurse(depth: u64, buf: &mut [u8; 512]) -> u64 {
    let mut local = [0u8; 512];
    local[(depth % 512) as usize] = buf[(depth % 512) as usize].wrapping_add(1);
    // Never true at run time; the optimizer cannot know that.
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let r = recurse(depth + 1, &mut local);
    std::hint::black_box(&local);
    r + u64::from(local[0])
}

fn child() {
    let rt = greenos::Runtime::builder().workers(1).build().unwrap();
    rt.block_on(|| {
        let h = greenos::task::Builder::new()
            .name("deep-recursion")
            .stack_size(16 << 10)
            .spawn(|| recurse(0, &mut [0u8; 512]))
            .unwrap();
        let pid = h.task().pid();
        println!("CHILD_PID {pid}");
        let _ = h.join();
    });
    unreachable!("the overflow must abort the process");
}

#[test]
fn overflow_reports_the_task_and_aborts() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "overflow_reports_the_task_and_aborts",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("re-executing the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "child should abort; status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD_PID "))
        .expect("child printed the task's pid");
    let want = format!("greenos: task {pid} 'deep-recursion' overflowed its 16384-byte stack");
    assert!(
        stderr.contains(&want),
        "expected {want:?} in stderr:\n{stderr}"
    );
}
