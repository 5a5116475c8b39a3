//! The collected results, the table and the JSON document.

use std::fmt::Write as _;

use crate::harness::{human_count, json_num, json_str, Imp, Spec, Summary};
use crate::machine::Machine;

/// Everything measured for one (implementation, benchmark) cell.
#[derive(Debug)]
pub struct Cell {
    pub imp: Imp,
    /// Workload size this implementation ran.
    pub n: u64,
    /// One figure per repetition, in the benchmark's unit.
    pub values: Vec<f64>,
    /// Peak RSS of each repetition's child process, KiB.
    pub rss_kb: Vec<u64>,
    /// `(short reason, stderr tail)` of the first failed repetition; the
    /// remaining repetitions of a failed cell are not run.
    pub failure: Option<(String, String)>,
    /// Distinct notes the repetitions reported, with how many reported each.
    pub notes: Vec<(String, u32)>,
}

impl Cell {
    pub fn add_note(&mut self, note: String) {
        match self.notes.iter_mut().find(|(n, _)| *n == note) {
            Some((_, times)) => *times += 1,
            None => self.notes.push((note, 1)),
        }
    }

    pub fn new(imp: Imp, n: u64) -> Cell {
        Cell {
            imp,
            n,
            values: Vec::new(),
            rss_kb: Vec::new(),
            failure: None,
            notes: Vec::new(),
        }
    }

    /// The figure's summary; `None` if the cell failed (even if some
    /// repetitions succeeded: a flaky cell gets no number).
    pub fn summary(&self) -> Option<Summary> {
        if self.failure.is_some() {
            None
        } else {
            Summary::of(&self.values)
        }
    }

    pub fn rss_summary(&self) -> Option<Summary> {
        if self.failure.is_some() {
            return None;
        }
        let mib: Vec<f64> = self.rss_kb.iter().map(|&kb| kb as f64 / 1024.0).collect();
        Summary::of(&mib)
    }
}

/// One benchmark's row(s).
#[derive(Debug)]
pub struct BenchResult {
    pub key: &'static str,
    pub title: String,
    pub unit: &'static str,
    /// The headline workload size (greenos's).
    pub n: u64,
    pub heavy: bool,
    pub reps: u32,
    pub cells: Vec<Cell>,
}

impl BenchResult {
    pub fn new(spec: &Spec, full: bool, reps: u32) -> BenchResult {
        BenchResult {
            key: spec.key,
            title: spec.title(full),
            unit: spec.unit,
            n: spec.n.pick(full),
            heavy: spec.heavy,
            reps,
            cells: spec
                .imps
                .iter()
                .map(|&imp| Cell::new(imp, spec.n_for(imp, full)))
                .collect(),
        }
    }

    pub fn cell(&self, imp: Imp) -> Option<&Cell> {
        self.cells.iter().find(|c| c.imp == imp)
    }
}

/// Three significant digits, roughly.
pub fn fmt_val(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_summary(s: &Summary) -> String {
    if s.count == 1 {
        fmt_val(s.median)
    } else {
        format!(
            "{} ({}-{})",
            fmt_val(s.median),
            fmt_val(s.min),
            fmt_val(s.max)
        )
    }
}

const PEERS: [Imp; 3] = [Imp::Tokio, Imp::May, Imp::Threads];

/// The figure cells of one row: `(text per implementation, summaries)`.
/// A failed cell reads `failed (why)` in the figure row and `-` in the RSS
/// row (`say_failed`).
fn row_cells(
    r: &BenchResult,
    pick: impl Fn(&Cell) -> Option<Summary>,
    say_failed: bool,
) -> (Vec<String>, Vec<Option<Summary>>) {
    let mut texts = Vec::new();
    let mut sums = Vec::new();
    for imp in Imp::ALL {
        let (text, sum) = match r.cell(imp) {
            None => ("n/a".to_string(), None),
            Some(c) => match (&c.failure, pick(c)) {
                (Some((why, _)), _) if say_failed => (format!("failed ({why})"), None),
                (None, Some(s)) => {
                    let mut t = fmt_summary(&s);
                    if c.n != r.n {
                        let _ = write!(t, " [n={}]", human_count(c.n));
                    }
                    (t, Some(s))
                }
                (_, None) | (Some(_), Some(_)) => ("-".to_string(), None),
            },
        };
        texts.push(text);
        sums.push(sum);
    }
    (texts, sums)
}

fn ratio_text(g: Option<Summary>, peer: Option<Summary>) -> String {
    match (g, peer) {
        (Some(g), Some(p)) => match g.ratio_to(&p) {
            Some(ratio) => format!("{ratio:.2}x"),
            None => "~".to_string(),
        },
        _ => "-".to_string(),
    }
}

/// The table, the legend and the notes.
pub fn render(results: &[BenchResult]) -> String {
    let mut header: Vec<String> = vec!["benchmark".into()];
    header.extend(Imp::ALL.iter().map(|i| i.header().to_string()));
    header.extend(PEERS.iter().map(|p| format!("greenos/{}", p.key())));

    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in results {
        let mut push_row = |label: String, pick: &dyn Fn(&Cell) -> Option<Summary>, main: bool| {
            let (texts, sums) = row_cells(r, pick, main);
            let mut row = vec![label];
            row.extend(texts);
            for (k, _) in PEERS.iter().enumerate() {
                row.push(ratio_text(sums[0], sums[k + 1]));
            }
            rows.push(row);
        };
        push_row(format!("{} [{}]", r.title, r.unit), &Cell::summary, true);
        if r.heavy {
            push_row("  peak RSS [MiB]".to_string(), &Cell::rss_summary, false);
        }
    }

    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, text)| {
                let pad = widths[c] - text.chars().count();
                if c == 0 {
                    format!("{text}{}", " ".repeat(pad))
                } else {
                    format!("{}{text}", " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", parts.join(" | "));
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
    for row in &rows {
        line(&mut out, row);
    }

    out.push_str(
        "\nEach figure: median (min-max) over the repetitions; every repetition is a fresh \
         child process,\nimplementations interleaved round-robin. Ratio = greenos median / peer \
         median (below 1: greenos\nfaster or smaller). '~': the min-max spreads overlap by more \
         than the difference of the medians,\nso no ratio is claimed. [n=..]: that cell ran a \
         smaller workload (figures are per operation).\n",
    );
    let reps: Vec<String> = results
        .iter()
        .map(|r| format!("{} x{}", r.key, r.reps))
        .collect();
    let _ = writeln!(out, "Repetitions: {}.", reps.join(", "));

    let mut notes = Vec::new();
    for r in results {
        for c in &r.cells {
            let runs = c.values.len() + usize::from(c.failure.is_some());
            for (n, times) in &c.notes {
                notes.push(format!(
                    "[{} / {}] {n} ({times} of {runs} runs)",
                    r.key,
                    c.imp.key()
                ));
            }
            if let Some((why, detail)) = &c.failure {
                let mut text = format!("[{} / {}] failed ({why})", r.key, c.imp.key());
                if !c.values.is_empty() {
                    let vals: Vec<String> = c.values.iter().map(|v| fmt_val(*v)).collect();
                    let _ = write!(
                        text,
                        "; earlier repetitions gave {} {}",
                        vals.join(", "),
                        r.unit
                    );
                }
                for l in detail.lines().filter(|l| !l.trim().is_empty()) {
                    let _ = write!(text, "\n      {l}");
                }
                notes.push(text);
            }
        }
    }
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

pub fn machine_line(m: &Machine) -> String {
    format!(
        "machine: {} | {} usable CPUs ({} online) | {} | {} | {} | vm.max_map_count {}",
        m.cpu_model, m.usable_cpus, m.online_cpus, m.topology, m.kernel, m.rustc, m.max_map_count
    )
}

fn json_summary(s: Option<Summary>) -> String {
    match s {
        None => "null".into(),
        Some(s) => format!(
            "{{\"median\":{},\"min\":{},\"max\":{}}}",
            json_num(s.median),
            json_num(s.min),
            json_num(s.max)
        ),
    }
}

/// The whole run as one JSON document.
pub fn to_json(m: &Machine, mode: &str, wall_s: f64, results: &[BenchResult]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"machine\":{{\"cpu_model\":{},\"usable_cpus\":{},\"online_cpus\":{},\"kernel\":{},\"rustc\":{},\
         \"max_map_count\":{}}},\"mode\":{},\"wall_s\":{},\"results\":[",
        json_str(&m.cpu_model),
        m.usable_cpus,
        m.online_cpus,
        json_str(&m.kernel),
        json_str(&m.rustc),
        json_str(&m.max_map_count),
        json_str(mode),
        json_num(wall_s)
    );
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"bench\":{},\"title\":{},\"unit\":{},\"n\":{},\"cells\":[",
            json_str(r.key),
            json_str(&r.title),
            json_str(r.unit),
            r.n
        );
        for (j, c) in r.cells.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let values: Vec<String> = c.values.iter().map(|v| json_num(*v)).collect();
            let rss: Vec<String> = c.rss_kb.iter().map(u64::to_string).collect();
            let notes: Vec<String> = c
                .notes
                .iter()
                .map(|(n, times)| format!("{{\"note\":{},\"runs\":{times}}}", json_str(n)))
                .collect();
            let failed = c
                .failure
                .as_ref()
                .map_or_else(|| "null".to_string(), |(why, _)| json_str(why));
            let _ = write!(
                out,
                "{{\"imp\":{},\"n\":{},\"values\":[{}],\"summary\":{},\"peak_rss_kb\":[{}],\
                 \"failed\":{},\"notes\":[{}]}}",
                json_str(c.imp.key()),
                c.n,
                values.join(","),
                json_summary(c.summary()),
                rss.join(","),
                failed,
                notes.join(",")
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// Every cell as CSV: `bench,impl,n,median,min,max,unit,peak_rss_mib_median`.
pub fn to_csv(results: &[BenchResult]) -> String {
    let mut out = String::from("bench,impl,n,median,min,max,unit,peak_rss_mib_median\n");
    for r in results {
        for c in &r.cells {
            let Some(s) = c.summary() else { continue };
            let rss = c
                .rss_summary()
                .map_or(String::new(), |r| format!("{}", r.median));
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},\"{}\",{}",
                r.key,
                c.imp.key(),
                c.n,
                s.median,
                s.min,
                s.max,
                r.unit,
                rss
            );
        }
    }
    out
}
