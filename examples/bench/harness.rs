//! The parent/child protocol and the statistics.
//!
//! Every measurement runs in a child process: the parent re-executes its own
//! binary as `bench --cell <impl>:<bench> --n <N> --reps <R> [--warmup]`, the
//! child runs the workload and prints exactly one machine-readable line
//!
//! ```text
//! RESULT {"imp":"may","bench":"skynet","n":1000000,"values":[812.5],"vmhwm_kb":413220,"note":null}
//! ```
//!
//! and the parent parses it. Why a process per cell:
//! 1. tokio and may keep global state (may's worker count is fixed at its
//!    first use, so a one-worker and a two-worker may benchmark cannot share
//!    a process);
//! 2. a crash or hang of one implementation (may running out of
//!    `vm.max_map_count` at 1M coroutines, a runtime bug) must not take the
//!    others down: it becomes `failed (<why>)` in the table;
//! 3. peak RSS (`VmHWM`) is per process, so it is only meaningful if the
//!    process ran nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// An implementation under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Imp {
    Greenos,
    Tokio,
    May,
    Threads,
}

impl Imp {
    /// Every implementation, in table column order.
    pub const ALL: [Imp; 4] = [Imp::Greenos, Imp::Tokio, Imp::May, Imp::Threads];

    /// The name used on the command line and in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Imp::Greenos => "greenos",
            Imp::Tokio => "tokio",
            Imp::May => "may",
            Imp::Threads => "threads",
        }
    }

    /// The column header.
    pub fn header(self) -> &'static str {
        match self {
            Imp::Threads => "OS threads",
            other => other.key(),
        }
    }

    pub fn parse(s: &str) -> Option<Imp> {
        Imp::ALL.into_iter().find(|i| i.key() == s)
    }
}

/// A workload size for quick mode and for `--full`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub quick: u64,
    pub full: u64,
}

impl Sizes {
    pub fn pick(self, full: bool) -> u64 {
        if full {
            self.full
        } else {
            self.quick
        }
    }
}

/// One benchmark: what it measures and how to run each implementation.
pub struct Spec {
    /// Name for `--only` and `--cell`.
    pub key: &'static str,
    /// Table label; `{n}` is replaced by the (greenos) workload size.
    pub title: &'static str,
    /// Unit of the figure `run` returns.
    pub unit: &'static str,
    /// Workload size.
    pub n: Sizes,
    /// Some implementations run a smaller workload (OS threads cannot spawn
    /// 1M threads in reasonable time); the table labels those cells.
    pub n_override: &'static [(Imp, Sizes)],
    /// 1M-task benchmarks: fewer repetitions, peak RSS reported.
    pub heavy: bool,
    /// Implementations that have a version of this benchmark.
    pub imps: &'static [Imp],
    /// Runs one repetition in the current (child) process.
    pub run: fn(Imp, &Params) -> Sample,
}

impl Spec {
    pub fn n_for(&self, imp: Imp, full: bool) -> u64 {
        self.n_override
            .iter()
            .find(|(i, _)| *i == imp)
            .map_or(self.n, |(_, s)| *s)
            .pick(full)
    }

    pub fn title(&self, full: bool) -> String {
        self.title.replace("{n}", &human_count(self.n.pick(full)))
    }
}

/// Parameters of one child run.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Workload size (yields per task, tasks, leaves, round trips).
    pub n: u64,
    /// Run the workload once at a tenth of the size, untimed, before the
    /// timed run (same runtime), so that pools and caches are warm.
    pub warmup: bool,
    /// Worker count for the scaling runs (`--workers`); `None`: the
    /// benchmark's own choice (all usable CPUs for throughput benchmarks).
    pub workers: Option<usize>,
}

impl Params {
    /// Workers to use: the scaling run's count, else every usable CPU.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(crate::os::usable_cpus)
    }

    pub fn warmup_n(&self) -> u64 {
        (self.n / 10).max(1)
    }
}

/// Untimed round trips a ping-pong pair makes before its `n` timed ones
/// (as many), so that a figure is the pair's steady state and not its
/// start. Every implementation gets them. For greenos they cover the
/// start of a new pair under CFS: a new task starts a vslice ahead in
/// vruntime (START_DEBIT), and while the pair's vruntimes are more than a
/// wakeup granularity apart the yields of the one behind are refused by
/// the SKIP-buddy test and it parks instead. Before the vslice was taken
/// at the fork (as `task_fork_fair` does), a channel pair on one worker
/// parked on every one of its first ~24,000 round trips (530 ns each)
/// and two pairs on two workers for ~45,000; since, the first 10,000
/// round trips of a pair park 6% of the time and then 1-5%.
pub fn warm_up(n: u64) -> u64 {
    n.max(1)
}

/// A pinger's run: [`warm_up`]`(n)` untimed round trips, then `n` timed
/// ones, each by `round_trip` (sends the value, returns the answer, which
/// the ponger makes one larger). Checks that every round trip was
/// answered; returns the timed window (start, end).
pub fn ping_rounds(n: u64, mut round_trip: impl FnMut(u64) -> u64) -> (Instant, Instant) {
    let mut v = 0;
    for _ in 0..warm_up(n) {
        v = round_trip(v);
    }
    let start = Instant::now();
    for _ in 0..n {
        v = round_trip(v);
    }
    let end = Instant::now();
    assert_eq!(v, n + warm_up(n));
    (start, end)
}

/// One measured figure in the benchmark's unit, plus anything the workload
/// noticed that a reader should know (e.g. affinity not honoured).
#[derive(Clone, Debug)]
pub struct Sample {
    pub value: f64,
    pub note: Option<String>,
}

impl Sample {
    /// `elapsed / ops`, in nanoseconds.
    pub fn ns_per(elapsed: Duration, ops: u64) -> Sample {
        Sample {
            value: elapsed.as_nanos() as f64 / ops as f64,
            note: None,
        }
    }

    /// `elapsed`, in milliseconds.
    pub fn ms(elapsed: Duration) -> Sample {
        Sample {
            value: elapsed.as_secs_f64() * 1e3,
            note: None,
        }
    }

    pub fn with_note(mut self, note: Option<String>) -> Sample {
        self.note = note;
        self
    }
}

// ---------------------------------------------------------------------------
// Child side.

/// Runs `reps` repetitions of one cell in this process and prints the
/// `RESULT` line. Panics (and so exits non-zero) if the workload panics.
pub fn child_main(spec: &Spec, imp: Imp, params: Params, reps: u32) {
    let mut values = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..reps {
        let sample = (spec.run)(imp, &params);
        values.push(sample.value);
        if let Some(n) = sample.note {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
    }
    let mut line = String::from("RESULT {");
    let _ = write!(
        line,
        "\"imp\":{},\"bench\":{},\"n\":{},\"values\":[",
        json_str(imp.key()),
        json_str(spec.key),
        params.n
    );
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let _ = write!(line, "{}", json_num(*v));
    }
    line.push_str("],\"vmhwm_kb\":");
    match crate::os::vmhwm_kb() {
        Some(kb) => {
            let _ = write!(line, "{kb}");
        }
        None => line.push_str("null"),
    }
    line.push_str(",\"note\":");
    if notes.is_empty() {
        line.push_str("null");
    } else {
        line.push_str(&json_str(&notes.join("; ")));
    }
    line.push('}');
    println!("{line}");
}

// ---------------------------------------------------------------------------
// Parent side.

/// What a child run produced.
#[derive(Debug)]
pub enum Outcome {
    Ok(ChildResult),
    /// Crashed, exited non-zero, timed out or printed no result. The string
    /// is the short reason for the table (`SIGSEGV`, `exit 101`, ...).
    Failed {
        why: String,
        /// Last lines of the child's stderr, for the failure notes.
        detail: String,
    },
}

/// The parsed `RESULT` line.
#[derive(Debug, Clone)]
pub struct ChildResult {
    pub values: Vec<f64>,
    pub vmhwm_kb: Option<u64>,
    pub note: Option<String>,
}

/// Re-executes this binary for one cell, with a wall-clock limit.
pub fn run_child(spec: &Spec, imp: Imp, params: Params, timeout: Duration) -> Outcome {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return Outcome::Failed {
                why: "cannot re-exec".into(),
                detail: e.to_string(),
            }
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--cell")
        .arg(format!("{}:{}", imp.key(), spec.key))
        .arg("--n")
        .arg(params.n.to_string())
        .arg("--reps")
        .arg("1");
    if params.warmup {
        cmd.arg("--warmup");
    }
    if let Some(w) = params.workers {
        cmd.arg("--workers-n").arg(w.to_string());
    }
    // Panic messages, not backtraces, in the failure notes; the note says
    // how to re-run the cell by hand.
    cmd.env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                why: "spawn failed".into(),
                detail: e.to_string(),
            }
        }
    };

    // Drain both pipes on their own threads so a chatty child never blocks.
    let (line_tx, line_rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let out_reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("RESULT ") {
                let _ = line_tx.send(rest.to_string());
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                // Our own child, by its handle: SIGKILL, then reap it.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let _ = out_reader.join();
    let stderr_text = err_reader.join().unwrap_or_default();
    let detail = format!(
        "{}\nre-run: {} --cell {}:{} --n {}{}",
        tail_lines(&stderr_text, 5),
        std::env::current_exe().map_or_else(|_| "bench".into(), |p| p.display().to_string()),
        imp.key(),
        spec.key,
        params.n,
        if params.warmup { " --warmup" } else { "" }
    );
    let result = line_rx.try_recv().ok();

    let status = match status {
        Some(s) => s,
        None => {
            return match result {
                // The figure exists but the process did not exit: report it
                // as a failure (a runtime that hangs on shutdown is a bug)
                // and keep the figure in the notes, not in the table.
                Some(r) => Outcome::Failed {
                    why: format!("hung at exit, timeout {}s", timeout.as_secs()),
                    detail: format!("it had reported: {r}\n{detail}"),
                },
                None => Outcome::Failed {
                    why: format!("timeout {}s", timeout.as_secs()),
                    detail,
                },
            };
        }
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let why = match (status.signal(), status.code()) {
            (Some(sig), _) => crate::os::signal_name(sig),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "unknown exit".into(),
        };
        return Outcome::Failed { why, detail };
    }
    match result.as_deref().map(parse_result) {
        Some(Ok(r)) if !r.values.is_empty() => Outcome::Ok(r),
        Some(Ok(_)) => Outcome::Failed {
            why: "empty result".into(),
            detail,
        },
        Some(Err(e)) => Outcome::Failed {
            why: "unparsable result".into(),
            detail: e,
        },
        None => Outcome::Failed {
            why: "no result".into(),
            detail,
        },
    }
}

/// The part of a child's stderr worth showing: the first panic (its
/// location line and message), then the last lines, at most `n` in all.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut keep: Vec<usize> = Vec::new();
    if let Some(first) = lines.iter().position(|l| l.contains("panicked at")) {
        keep.extend([first, first + 1].into_iter().filter(|&i| i < lines.len()));
    }
    let rest = n.saturating_sub(keep.len());
    for i in lines.len().saturating_sub(rest)..lines.len() {
        if !keep.contains(&i) {
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep.iter()
        .map(|&i| {
            let l = lines[i];
            match l.char_indices().nth(200) {
                Some((cut, _)) => format!("{}...", &l[..cut]),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_result(json: &str) -> Result<ChildResult, String> {
    let fields = parse_flat_json(json)?;
    let values = match fields.get("values") {
        Some(Json::Arr(v)) => v.clone(),
        _ => return Err(format!("no values in {json}")),
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("non-finite value in {json}"));
    }
    let vmhwm_kb = match fields.get("vmhwm_kb") {
        Some(Json::Num(kb)) => Some(*kb as u64),
        _ => None,
    };
    let note = match fields.get("note") {
        Some(Json::Str(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(ChildResult {
        values,
        vmhwm_kb,
        note,
    })
}

// ---------------------------------------------------------------------------
// Statistics.

/// Median and spread of the repetitions of one cell.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[v.len() - 1],
            count: v.len(),
        })
    }

    /// `self.median / other.median`, but only if the claim is supported: the
    /// min–max spreads may overlap by no more than the difference of the
    /// medians. `None` means statistically indistinguishable (`~`).
    pub fn ratio_to(&self, other: &Summary) -> Option<f64> {
        let overlap = (self.max.min(other.max) - self.min.max(other.min)).max(0.0);
        let difference = (self.median - other.median).abs();
        if overlap > difference || other.median <= 0.0 {
            None
        } else {
            Some(self.median / other.median)
        }
    }
}

// ---------------------------------------------------------------------------
// Minimal JSON: writing, and reading the flat objects we write ourselves.

pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

#[derive(Clone, Debug)]
enum Json {
    Num(f64),
    Str(String),
    Arr(Vec<f64>),
    Null,
}

/// Parses `{"k": number | string | null | [numbers], ...}`.
fn parse_flat_json(s: &str) -> Result<BTreeMap<String, Json>, String> {
    let mut p = JsonParser {
        s: s.as_bytes(),
        i: 0,
    };
    let mut map = BTreeMap::new();
    p.expect(b'{')?;
    if p.peek() == Some(b'}') {
        return Ok(map);
    }
    loop {
        let key = p.string()?;
        p.expect(b':')?;
        let value = match p.peek() {
            Some(b'"') => Json::Str(p.string()?),
            Some(b'[') => {
                p.expect(b'[')?;
                let mut items = Vec::new();
                if p.peek() == Some(b']') {
                    p.i += 1;
                } else {
                    loop {
                        items.push(p.number()?);
                        match p.next() {
                            Some(b',') => {}
                            Some(b']') => break,
                            _ => return Err(format!("bad array in {s}")),
                        }
                    }
                }
                Json::Arr(items)
            }
            Some(b'n') => {
                p.literal("null")?;
                Json::Null
            }
            _ => Json::Num(p.number()?),
        };
        map.insert(key, value);
        match p.next() {
            Some(b',') => {}
            Some(b'}') => return Ok(map),
            _ => return Err(format!("bad object in {s}")),
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        match self.next() {
            Some(got) if got == c => Ok(()),
            _ => Err(format!("expected '{}' at byte {}", c as char, self.i)),
        }
    }
    fn literal(&mut self, lit: &str) -> Result<(), String> {
        self.skip_ws();
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit} at byte {}", self.i))
        }
    }
    fn number(&mut self) -> Result<f64, String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len()
            && matches!(
                self.s[self.i],
                b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
            )
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("bad number at byte {start}"))
    }
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("bad \\u")?;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let ch = char::from_u32(code).unwrap_or('?');
                            let mut buf = [0; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// `1000000` -> `1M`, `10000` -> `10k`, `250000` -> `250k`.
pub fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n % 100_000 == 0 {
        let m = n as f64 / 1e6;
        if n % 1_000_000 == 0 {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{m:.1}M")
        }
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_roundtrip() {
        let r = parse_result(
            r#"{"imp":"may","bench":"skynet","n":1000000,"values":[812.5,1e3],"vmhwm_kb":413220,"note":"a \"b\"\n"}"#,
        )
        .unwrap();
        assert_eq!(r.values, vec![812.5, 1000.0]);
        assert_eq!(r.vmhwm_kb, Some(413220));
        assert_eq!(r.note.as_deref(), Some("a \"b\"\n"));
    }

    #[test]
    fn honesty_rule() {
        let a = Summary::of(&[10.0, 11.0, 12.0]).unwrap();
        let b = Summary::of(&[20.0, 21.0, 22.0]).unwrap();
        assert!(a.ratio_to(&b).is_some());
        let c = Summary::of(&[9.0, 11.5, 30.0]).unwrap();
        assert!(a.ratio_to(&c).is_none());
    }
}
