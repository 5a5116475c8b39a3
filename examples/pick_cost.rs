//! Cost of one scheduling decision as the run queue grows, for the four
//! fair classes: O(N) (Linux 2.4), O(1) (2.6.0–2.6.22), CFS (2.6.23–6.5)
//! and EEVDF (6.6+).
//!
//! One operation is what a CPU does at every switch: pick the next task,
//! mark it running, charge it some run time, and put it back (`pick_next` +
//! `set_next` + `update_curr` + `put_prev`), on one queue holding N
//! runnable nice-0 tasks, N = 10, 100, 1 000, 10 000, 100 000. The run time
//! charged per pick is pseudo-random in 1..=200 µs (fixed seed): with a
//! constant charge every requeue would land at the far end of a vruntime
//! tree, the best case of an ordered structure; random charges spread the
//! insert positions over the whole queue.
//! The pure scheduler core is driven directly (no threads, no clock reads
//! inside the queue), so this measures the data structures alone. Each cell
//! is the median of 7 timed batches after a warm-up batch.
//!
//! Expected shape: O(N) grows linearly (goodness over every task), O(1)
//! stays flat (bitmap find-first-set), CFS and EEVDF grow logarithmically
//! (ordered trees).
//!
//! Prints a table and writes an SVG plot (log–log) to
//! `target/pick_cost.svg`, or to the path given as the first argument.
//! Run: `cargo run --release --example pick_cost`.

#[path = "bench/pick_ops.rs"]
mod pick_ops;

use std::fmt::Write as _;

use greenos_runtime::sched::Policy;
use pick_ops::{batch, setup};

const SIZES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
const BATCHES: usize = 7;

fn measure(policy: Policy, n: usize) -> f64 {
    let (mut q, mut es) = setup(policy, n);
    let mut now = 0;
    // Keep each batch near 20 ms whatever the cost per operation.
    let iters = match policy {
        Policy::ON => (2_000_000 / n).max(20),
        _ => 100_000,
    };
    batch(&mut q, &mut es, &mut now, iters);
    let mut per_op: Vec<f64> = (0..BATCHES)
        .map(|_| batch(&mut q, &mut es, &mut now, iters) as f64 / iters as f64)
        .collect();
    per_op.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    per_op[BATCHES / 2]
}

fn svg(results: &[(Policy, Vec<f64>)]) -> String {
    let (w, h) = (720.0, 480.0);
    let (left, right, top, bottom) = (80.0, 150.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xmin = (SIZES[0] as f64).log10();
    let xmax = (SIZES[SIZES.len() - 1] as f64).log10();
    let all = results.iter().flat_map(|(_, v)| v.iter().copied());
    let ymin = all.clone().fold(f64::INFINITY, f64::min).log10().floor();
    let ymax = all.fold(0.0, f64::max).log10().ceil();
    let x = |n: f64| left + (n.log10() - xmin) / (xmax - xmin) * pw;
    let y = |c: f64| top + ph - (c.log10() - ymin) / (ymax - ymin) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Cost of one pick + requeue vs runnable tasks (log–log)</text>"#,
        left + pw / 2.0
    );
    // Grid and ticks: decades on both axes.
    for &n in &SIZES {
        let xv = x(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{top}" x2="{xv:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle">{n}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    let mut e = ymin as i32;
    while e <= ymax as i32 {
        let c = 10f64.powi(e);
        let yv = y(c);
        let label = if c >= 1.0 {
            format!("{c:.0} ns")
        } else {
            format!("{c} ns")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + pw,
            left - 6.0,
            yv + 4.0
        );
        e += 1;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">runnable tasks N</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">ns per pick + requeue</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let colors = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd"];
    for (i, (policy, costs)) in results.iter().enumerate() {
        let color = colors[i % colors.len()];
        let pts: Vec<String> = SIZES
            .iter()
            .zip(costs)
            .map(|(&n, &c)| format!("{:.1},{:.1}", x(n as f64), y(c)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').expect("x,y");
            let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            policy.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/pick_cost.svg".to_owned());
    println!("ns per pick + requeue (median of {BATCHES} batches), 1-200 µs charged per pick");
    print!("{:>8}", "N");
    for p in Policy::ALL {
        print!("{:>10}", p.name());
    }
    println!();
    let mut results: Vec<(Policy, Vec<f64>)> =
        Policy::ALL.iter().map(|&p| (p, Vec::new())).collect();
    for &n in &SIZES {
        print!("{n:>8}");
        for (p, costs) in results.iter_mut() {
            let c = measure(*p, n);
            costs.push(c);
            print!("{c:>10.1}");
        }
        println!();
    }
    std::fs::write(&path, svg(&results))?;
    println!("plot written to {path}");
    Ok(())
}
