//! Records the trace of a short mixed workload and renders it: an SVG
//! timeline (CPU lanes coloured by task; no browser needed) and the Chrome
//! trace-event JSON that `ui.perfetto.dev` opens (one track per CPU and per
//! task, flow arrows for wakeups).
//!
//! The workload: two CPU-bound tasks at nice 0 and nice 5, a channel
//! ping-pong pair, an interactive task that sleeps 1 ms and works 0.2 ms,
//! and a fork-join burst.
//!
//! Run: `cargo run --release --example timeline -- [out.svg] [out.json]`
//! (defaults `timeline.svg`, `timeline.json`).

use std::time::{Duration, Instant};

use greenos::sync::mpsc;
use greenos::trace::TraceConfig;

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        greenos::maybe_yield();
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let svg_path = args.next().unwrap_or_else(|| "timeline.svg".into());
    let json_path = args.next().unwrap_or_else(|| "timeline.json".into());
    let rt = greenos::Runtime::builder()
        .workers(2)
        .trace(TraceConfig::new(1 << 16))
        .build()?;
    rt.block_on(|| {
        let b = greenos::task::Builder::new;
        let mut hs = Vec::new();
        for (name, nice) in [("cpu-hog", 0), ("cpu-hog-nice5", 5)] {
            hs.push(
                b().name(name)
                    .nice(nice)
                    .spawn(move || spin(Duration::from_millis(12)))?,
            );
        }
        let (tx, rx) = mpsc::channel::<u32>();
        let (tx2, rx2) = mpsc::channel::<u32>();
        hs.push(b().name("pong").spawn(move || {
            while let Ok(v) = rx.recv() {
                spin(Duration::from_micros(20));
                if tx2.send(v).is_err() {
                    break;
                }
            }
        })?);
        hs.push(b().name("ping").spawn(move || {
            for i in 0..150 {
                tx.send(i).unwrap();
                rx2.recv().unwrap();
            }
        })?);
        hs.push(b().name("interactive").spawn(|| {
            for _ in 0..8 {
                greenos::sleep(Duration::from_millis(1));
                spin(Duration::from_micros(200));
            }
        })?);
        hs.push(b().name("fork-join").spawn(|| {
            greenos::sleep(Duration::from_millis(4));
            let kids: Vec<_> = (0..6)
                .map(|_| greenos::spawn(|| spin(Duration::from_micros(300))))
                .collect();
            for k in kids {
                k.join().unwrap();
            }
        })?);
        for h in hs {
            h.join().expect("workload task");
        }
        Ok::<(), std::io::Error>(())
    })?;
    let trace = rt.trace().expect("tracing is on");
    trace.write_svg(&mut std::fs::File::create(&svg_path)?, 1200)?;
    trace.write_chrome_json(&mut std::io::BufWriter::new(std::fs::File::create(
        &json_path,
    )?))?;
    println!(
        "{} events ({} switches, {} wakeups, {} migrations) -> {svg_path}, {json_path}",
        trace.events.len(),
        trace.count(greenos::trace::EventKind::Switch),
        trace.count(greenos::trace::EventKind::Wakeup),
        trace.count(greenos::trace::EventKind::Migrate),
    );
    Ok(())
}
