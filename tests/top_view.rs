//! The live view as a person sees it: `examples/top` runs under tmux (or,
//! where tmux is missing, with `--plain`), the screen is captured, and the
//! test checks what it shows: a row per CPU with a utilisation bar, and the
//! demo workload's tasks by name with their states.
//!
//! `cargo test` builds the examples before running tests; the binary is
//! found next to this test's own executable.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn top_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("top");
    assert!(
        bin.exists(),
        "{} is missing: run the whole test suite (`cargo test --release --workspace` builds the examples)",
        bin.display()
    );
    bin
}

fn check_screen(screen: &str) {
    assert!(screen.contains("greenos top"), "header missing:\n{screen}");
    for cpu in ["  0  [", "  1  ["] {
        assert!(screen.contains(cpu), "no row for CPU `{cpu}`:\n{screen}");
    }
    for name in ["hog-n0", "hog-n5", "ping", "pong"] {
        assert!(screen.contains(name), "task {name} not shown:\n{screen}");
    }
    assert!(
        screen.contains("running") || screen.contains("runnable"),
        "no task states:\n{screen}"
    );
}

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn top_shows_cpus_and_busiest_tasks() {
    let bin = top_binary();
    if !have_tmux() {
        let out = Command::new(&bin)
            .args(["--plain", "--frames", "2", "--interval-ms", "300"])
            .output()
            .unwrap();
        assert!(out.status.success());
        check_screen(&String::from_utf8_lossy(&out.stdout));
        return;
    }
    let session = format!("greenos-top-test-{}", std::process::id());
    let cmd = format!("{} --frames 30 --interval-ms 200", bin.display());
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "110",
            "-y",
            "32",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    // Capture until a frame with every task is on screen (or give up after
    // a generous wait; the view redraws every 200 ms).
    let mut screen = String::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if ["hog-n0", "hog-n5", "ping", "pong"]
            .iter()
            .all(|n| screen.contains(n))
        {
            break;
        }
    }
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    check_screen(&screen);
}
