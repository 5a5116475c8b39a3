//! Scaling runs: each throughput benchmark at 1, 2, 4, ... workers (or the
//! `--workers` list), for greenos and each peer, with the throughput per
//! worker count and the scaling efficiency `thr(W) / (W × thr(1))`. Output
//! as a table, CSV rows, and an SVG plot of the curves.

use std::fmt::Write as _;
use std::time::Duration;

use crate::harness::{self, Imp, Outcome, Params, Spec, Summary};

/// Benchmarks whose workload grows with the worker count (they read
/// `Params::workers`); quick mode scales only the first (the 1M-task ones
/// take seconds per cell).
pub const SCALABLE: &[&str] = &["pairs", "spawn", "skynet"];

/// The benchmarks scaled in quick mode.
pub const SCALABLE_QUICK: &[&str] = &["pairs"];

/// The default worker counts: powers of two up to `max`, and `max`.
pub fn default_counts(max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut w = 1;
    while w < max {
        v.push(w);
        w *= 2;
    }
    v.push(max.max(1));
    v
}

/// One (benchmark, implementation, worker count) cell.
#[derive(Debug, Clone)]
pub struct Point {
    pub bench: &'static str,
    pub unit: &'static str,
    pub imp: Imp,
    pub workers: usize,
    /// Per-repetition figures in the benchmark's unit.
    pub values: Vec<f64>,
    pub failure: Option<String>,
}

impl Point {
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }

    /// Operations per second from the median (`unit` is ns/op, or ms per
    /// run for skynet, whose "operation" is then the run).
    pub fn throughput(&self) -> Option<f64> {
        let m = self.summary()?.median;
        if m <= 0.0 {
            return None;
        }
        Some(if self.unit.starts_with("ms") {
            1e3 / m
        } else {
            1e9 / m
        })
    }
}

/// Runs the scaling cells of `specs` for each count in `counts`, `reps`
/// repetitions each, implementations interleaved.
pub fn run(
    specs: &[&Spec],
    counts: &[usize],
    reps: u32,
    full: bool,
    timeout: Duration,
) -> Vec<Point> {
    let mut points = Vec::new();
    for spec in specs {
        for &w in counts {
            let mut cells: Vec<Point> = spec
                .imps
                .iter()
                .map(|&imp| Point {
                    bench: spec.key,
                    unit: spec.unit,
                    imp,
                    workers: w,
                    values: Vec::new(),
                    failure: None,
                })
                .collect();
            eprint!("scaling {} at {w} workers:", spec.key);
            for rep in 0..reps as usize {
                let k = cells.len();
                for j in 0..k {
                    let cell = &mut cells[(j + rep) % k];
                    if cell.failure.is_some() {
                        continue;
                    }
                    let params = Params {
                        n: spec.n_for(cell.imp, full),
                        warmup: !spec.heavy,
                        workers: Some(w),
                    };
                    match harness::run_child(spec, cell.imp, params, timeout) {
                        Outcome::Ok(r) => {
                            eprint!(" {}", cell.imp.key());
                            cell.values.extend(&r.values);
                        }
                        Outcome::Failed { why, .. } => {
                            eprint!(" {} FAILED", cell.imp.key());
                            cell.failure = Some(why);
                        }
                    }
                }
            }
            // Each count's figures as soon as they exist, so a run cut short
            // (a lent machine's time running out) still leaves them.
            let got: Vec<String> = cells
                .iter()
                .map(|c| match c.throughput() {
                    Some(t) => format!("{} {}/s", c.imp.key(), fmt_thr(t)),
                    None => format!("{} -", c.imp.key()),
                })
                .collect();
            eprintln!("  => {}", got.join(", "));
            points.extend(cells);
        }
    }
    points
}

fn base<'a>(points: &'a [Point], p: &Point) -> Option<&'a Point> {
    points
        .iter()
        .filter(|q| q.bench == p.bench && q.imp == p.imp)
        .min_by_key(|q| q.workers)
}

/// Scaling efficiency of `p` against the same curve's smallest count.
pub fn efficiency(points: &[Point], p: &Point) -> Option<f64> {
    let b = base(points, p)?;
    Some(p.throughput()? / (b.throughput()? * (p.workers as f64 / b.workers as f64)))
}

/// The scaling table: per benchmark and implementation, throughput (ops/s)
/// and efficiency at each worker count.
pub fn render(points: &[Point], counts: &[usize]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Scaling (throughput in operations per second, median of the repetitions; eff = thr(W) / (W x thr(1))):"
    );
    let mut head = String::from("| benchmark | impl |");
    let mut rule = String::from("|---|---|");
    for w in counts {
        let _ = write!(head, " {w} workers | eff |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut keys: Vec<(&str, Imp)> = Vec::new();
    for p in points {
        if !keys.contains(&(p.bench, p.imp)) {
            keys.push((p.bench, p.imp));
        }
    }
    for (bench, imp) in keys {
        let mut row = format!("| {bench} | {} |", imp.key());
        for &w in counts {
            match points
                .iter()
                .find(|p| p.bench == bench && p.imp == imp && p.workers == w)
            {
                Some(p) if p.failure.is_some() => row.push_str(" failed | |"),
                Some(p) => {
                    let thr = p.throughput().map_or("-".into(), fmt_thr);
                    let eff = efficiency(points, p).map_or("-".into(), |e| format!("{:.2}", e));
                    let _ = write!(row, " {thr} | {eff} |");
                }
                None => row.push_str(" - | |"),
            }
        }
        let _ = writeln!(s, "{row}");
    }
    s
}

fn fmt_thr(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.2}")
    }
}

/// CSV rows: `bench,impl,workers,median,min,max,unit,throughput_per_s,efficiency`.
pub fn csv(points: &[Point]) -> String {
    let mut s =
        String::from("bench,impl,workers,median,min,max,unit,throughput_per_s,efficiency\n");
    for p in points {
        let Some(sum) = p.summary() else { continue };
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},\"{}\",{},{}",
            p.bench,
            p.imp.key(),
            p.workers,
            sum.median,
            sum.min,
            sum.max,
            p.unit,
            p.throughput().unwrap_or(f64::NAN),
            efficiency(points, p).unwrap_or(f64::NAN)
        );
    }
    s
}

/// An SVG with one panel per benchmark: throughput against workers, one
/// line per implementation, and the ideal (linear) line for greenos.
pub fn svg(points: &[Point], counts: &[usize], title: &str) -> String {
    let mut benches: Vec<&str> = Vec::new();
    for p in points {
        if !benches.contains(&p.bench) {
            benches.push(p.bench);
        }
    }
    let (pw, ph, pad) = (360.0, 260.0, 50.0);
    // The title (the machine's description) one clause per line, so that
    // it stays inside the picture; the plots start below it.
    let title_lines: Vec<&str> = title.split(" | ").collect();
    let top = 20.0 + 14.0 * title_lines.len() as f64 + 16.0;
    // Wide enough for the plots and for the legend below them.
    let legend_width = pad + 4.0 * 120.0 + 190.0;
    let width = (pad + benches.len().max(1) as f64 * (pw + pad)).max(legend_width);
    let height = top + ph + pad + 40.0;
    let maxw = *counts.iter().max().unwrap_or(&1) as f64;
    let colors = |imp: Imp| match imp {
        Imp::Greenos => "#2a9d43",
        Imp::Tokio => "#d9534f",
        Imp::May => "#337ab7",
        Imp::Threads => "#888888",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    for (i, line) in title_lines.iter().enumerate() {
        let size = if i == 0 { 13 } else { 11 };
        let _ = writeln!(
            s,
            r#"<text x="{pad}" y="{:.0}" font-size="{size}">{}</text>"#,
            20.0 + 14.0 * i as f64,
            xml(line)
        );
    }
    for (bi, bench) in benches.iter().enumerate() {
        let x0 = pad + bi as f64 * (pw + pad);
        let y0 = top;
        let pts: Vec<&Point> = points.iter().filter(|p| p.bench == *bench).collect();
        let maxt = pts
            .iter()
            .filter_map(|p| p.throughput())
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let gx = |w: usize| x0 + (w as f64 - 1.0) / (maxw - 1.0).max(1.0) * pw;
        let gy = |t: f64| y0 + ph - t / (maxt * 1.1) * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{x0}" y="{:.0}">{} [ops/s vs workers]</text>"##,
            y0 - 6.0,
            xml(bench)
        );
        for &w in counts {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{w}</text>"#,
                gx(w),
                y0 + ph + 14.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 4.0,
            y0 + 10.0,
            fmt_thr(maxt * 1.1)
        );
        for imp in Imp::ALL {
            let mut line: Vec<(usize, f64)> = pts
                .iter()
                .filter(|p| p.imp == imp)
                .filter_map(|p| Some((p.workers, p.throughput()?)))
                .collect();
            line.sort_by_key(|x| x.0);
            if line.is_empty() {
                continue;
            }
            let path: Vec<String> = line
                .iter()
                .map(|&(w, t)| format!("{:.1},{:.1}", gx(w), gy(t)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.join(" "),
                colors(imp)
            );
            for &(w, t) in &line {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    gx(w),
                    gy(t),
                    colors(imp)
                );
            }
            if imp == Imp::Greenos {
                let (w1, t1) = line[0];
                let ideal: Vec<String> = counts
                    .iter()
                    .map(|&w| {
                        let t = t1 * w as f64 / w1 as f64;
                        format!("{:.1},{:.1}", gx(w), gy(t.min(maxt * 1.1)))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    r##"<polyline points="{}" fill="none" stroke="#2a9d43" stroke-dasharray="4,3" stroke-width="1"/>"##,
                    ideal.join(" ")
                );
            }
        }
    }
    let ly = height - 20.0;
    for (i, imp) in Imp::ALL.iter().enumerate() {
        let lx = pad + i as f64 * 120.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{ly:.0}">{}</text>"#,
            ly - 10.0,
            colors(*imp),
            lx + 16.0,
            imp.header()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{ly:.0}">dashed: greenos ideal (linear)</text></svg>"#,
        pad + 4.0 * 120.0
    );
    s
}

/// The scaling points as one JSON document.
pub fn json(points: &[Point]) -> String {
    let mut s = String::from("{\"scaling\":[");
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let num = |v: Option<f64>| v.map_or("null".to_string(), harness::json_num);
        let sum = p.summary();
        let _ = write!(
            s,
            "{{\"bench\":{},\"impl\":{},\"workers\":{},\"median\":{},\"min\":{},\"max\":{},\"unit\":{},\"throughput_per_s\":{},\"efficiency\":{},\"failure\":{}}}",
            harness::json_str(p.bench),
            harness::json_str(p.imp.key()),
            p.workers,
            num(sum.map(|s| s.median)),
            num(sum.map(|s| s.min)),
            num(sum.map(|s| s.max)),
            harness::json_str(p.unit),
            num(p.throughput()),
            num(efficiency(points, p)),
            p.failure.as_deref().map_or("null".to_string(), harness::json_str)
        );
    }
    s.push_str("]}");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
