//! `ps aux | grep target | wc -l` as three green processes joined by pipes.
//!
//! - `ps` lists the tasks this example started (pid, uid, cpu, nice, name;
//!   greenos has no task-listing call yet, so it lists the handles it was
//!   given) and writes one line per task into the first pipe;
//! - `grep` reads lines, keeps those containing the pattern, and writes
//!   them into the second pipe;
//! - `wc -l` counts the lines that reach it.
//!
//! Each stage owns its pipe ends; when a stage returns, its write end is
//! dropped, and the next stage sees EOF (pipe(7)), exactly like a shell
//! pipeline.
//!
//! ```text
//! cargo run --release --example pipeline [PATTERN]
//! ```

use std::io::{BufRead, BufReader, Write};

use greenos::ipc;

fn main() -> std::io::Result<()> {
    let pattern = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target".to_string());
    let rt = greenos::Runtime::builder().workers(2).build()?;
    let count = rt.block_on(move || -> std::io::Result<usize> {
        // Some processes to list: they sleep until the pipeline is done
        // (until `stop` is closed, they read nothing and see EOF).
        let (stop_r, stop_w) = ipc::pipe()?;
        let mut procs = Vec::new();
        for (i, name) in [
            "target-build",
            "idle",
            "target-test",
            "logger",
            "target-doc",
        ]
        .into_iter()
        .enumerate()
        {
            let r = stop_r.try_clone()?;
            let h = greenos::task::Builder::new()
                .name(name)
                .nice(i as i32 - 2)
                .uid(1000 + i as u32 % 2)
                .spawn(move || {
                    let mut b = [0u8; 1];
                    let _ = std::io::Read::read(&mut &r, &mut b);
                })?;
            procs.push(h);
        }
        drop(stop_r);
        let table: Vec<String> = procs
            .iter()
            .map(|h| {
                let t = h.task();
                format!(
                    "{:>5} {:>5} {:>3} {:>3} {}",
                    t.pid(),
                    t.uid(),
                    t.cpu(),
                    t.nice(),
                    t.name().unwrap_or("?")
                )
            })
            .collect();

        let (ps_out, grep_in) = {
            let (r, w) = ipc::pipe()?;
            (w, r)
        };
        let (grep_out, wc_in) = {
            let (r, w) = ipc::pipe()?;
            (w, r)
        };
        let ps = greenos::task::Builder::new().name("ps").spawn(move || {
            let mut out = ps_out;
            writeln!(out, "  PID   UID CPU  NI COMMAND")?;
            for line in table {
                writeln!(out, "{line}")?;
            }
            Ok::<_, std::io::Error>(())
        })?;
        let grep = greenos::task::Builder::new().name("grep").spawn(move || {
            let mut out = grep_out;
            for line in BufReader::new(grep_in).lines() {
                let line = line?;
                if line.contains(&pattern) {
                    println!("grep: {line}");
                    writeln!(out, "{line}")?;
                }
            }
            Ok::<_, std::io::Error>(())
        })?;
        let wc = greenos::task::Builder::new()
            .name("wc")
            .spawn(move || BufReader::new(wc_in).lines().count())?;
        ps.join().expect("ps")?;
        grep.join().expect("grep")?;
        let n = wc.join().expect("wc");
        drop(stop_w);
        for h in procs {
            h.join().expect("listed process");
        }
        Ok(n)
    })?;
    println!("wc -l: {count}");
    Ok(())
}
