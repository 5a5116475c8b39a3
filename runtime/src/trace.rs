//! Scheduler event recording: per-CPU rings of fixed-size events, and their
//! export as Chrome trace-event / Perfetto JSON and as an SVG timeline.
//!
//! # What this module owns
//!
//! - [`TraceConfig`] (`Runtime::builder().trace(..)`): how many events each
//!   CPU keeps.
//! - [`Event`] and [`EventKind`]: switch, wakeup (with the waker),
//!   migration, spawn, exit, block-on-object.
//! - [`TraceRing`]: one per CPU (plus one for events from threads outside
//!   the runtime). Fixed size, overwriting the oldest; written only by its
//!   owner, readable by anyone at any time.
//! - [`Trace`]: a snapshot of every ring, merged in time order, with
//!   [`Trace::write_chrome_json`] (one track per CPU and one per task,
//!   flow arrows for wakeups: open it in `ui.perfetto.dev`),
//!   [`Trace::write_svg`] (CPU lanes coloured by task, no browser needed)
//!   and [`Trace::wakeup_latencies`] (wakeup to switch-in per wakeup).
//!
//! # Invariants
//!
//! - A ring has a single writer: the CPU that owns it (the "outside" ring is
//!   behind a lock). Each slot is 32 bytes, a seqlock whose sequence is its
//!   header word (index, kind, CPU): the header is cleared, the payload
//!   words stored (relaxed atomics: free on x86, and no data race
//!   anywhere), then the header set with `Release`. A reader that
//!   sees the sequence it expects before and after copying has a consistent
//!   event, so a snapshot taken while the runtime runs may miss events that
//!   are being overwritten but never returns a torn one.
//! - A CPU's events are in clock order, and a switch comes after the
//!   events that made its task runnable: a switch is stamped after every
//!   event recorded since the previous one (on this CPU, or on the CPU or
//!   thread that handed this one a task), so that the wakeup-to-switch-in
//!   latency of every wakeup is measurable.
//! - Recording off (the default) costs one predictable branch on a
//!   per-runtime `Option` at each hook; nothing is allocated.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// How much to record (`Runtime::builder().trace(TraceConfig::new(..))`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// Events kept per CPU; the oldest are overwritten. Rounded up to a
    /// power of two.
    pub events_per_cpu: usize,
}

impl TraceConfig {
    /// Keep `events_per_cpu` events per CPU (at least 16).
    pub fn new(events_per_cpu: usize) -> TraceConfig {
        TraceConfig { events_per_cpu }
    }
}

impl Default for TraceConfig {
    /// 16 384 events per CPU (512 KiB each, which stays in a core's L2: a
    /// ring larger than the cache makes every event's store a miss).
    fn default() -> TraceConfig {
        TraceConfig::new(1 << 14)
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// `pid` starts running on `cpu`; `other` is the task that ran before
    /// (0: the CPU was idle), `arg` why it left: 0 preempted or yielded,
    /// 1 blocked, 2 exited.
    Switch = 1,
    /// `pid` was made runnable by `other` (0: not by a task), to run on CPU
    /// `arg`.
    Wakeup = 2,
    /// `pid` moved from CPU `other` to CPU `arg`.
    Migrate = 3,
    /// `pid` was spawned by `other` (0: from outside the runtime).
    Spawn = 4,
    /// `pid` finished.
    Exit = 5,
    /// `pid` blocked on the object `arg` (an address or IPC id) of kind
    /// `other` (a [`BlockOn`] code).
    Block = 6,
    /// The CPU went idle (`pid` 0).
    Idle = 7,
}

impl EventKind {
    fn from_u8(v: u8) -> Option<EventKind> {
        Some(match v {
            1 => EventKind::Switch,
            2 => EventKind::Wakeup,
            3 => EventKind::Migrate,
            4 => EventKind::Spawn,
            5 => EventKind::Exit,
            6 => EventKind::Block,
            7 => EventKind::Idle,
            _ => return None,
        })
    }
}

/// The kinds of object a task can block on (the `other` field of a
/// [`EventKind::Block`] event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum BlockOn {
    /// A wait queue with no more specific label.
    WaitQueue = 0,
    /// A pipe or FIFO.
    Pipe = 1,
    /// A System V message queue.
    MsgQueue = 2,
    /// A System V semaphore set.
    Semaphore = 3,
    /// A shared-memory ring.
    ShmRing = 4,
    /// An L4 endpoint.
    Endpoint = 5,
    /// A `sync` primitive (mutex, condvar, channel).
    Sync = 6,
    /// `join` on a task.
    Join = 7,
    /// `sleep`.
    Sleep = 8,
}

impl BlockOn {
    fn name(code: u64) -> &'static str {
        match code {
            1 => "pipe",
            2 => "msg queue",
            3 => "semaphore",
            4 => "shm ring",
            5 => "endpoint",
            6 => "sync",
            7 => "join",
            8 => "sleep",
            _ => "wait queue",
        }
    }
}

/// One recorded event (a 32-byte ring slot, see [`TraceRing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Runtime clock, ns.
    pub ts_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The CPU that recorded it (`u16::MAX`: a thread outside the runtime).
    pub cpu: u16,
    /// The task it is about. Kept as 32 bits in the ring: pids stay below
    /// `PID_MAX` = 2^22 (`PID_MAX_LIMIT`, include/linux/threads.h).
    pub pid: u64,
    /// The other task or CPU (see [`EventKind`]). Kept as 32 bits in the
    /// ring: a pid, a CPU number or a [`BlockOn`] code.
    pub other: u64,
    /// Kind-specific argument (see [`EventKind`]); all 64 bits are kept.
    pub arg: u64,
}

/// The CPU number recorded for events from threads outside the runtime.
pub const OUTSIDE_CPU: u16 = u16::MAX;

/// Bits of the event index kept in a slot's header.
const SEQ_BITS: u32 = 39;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Set in every published header, so that a written header is never 0.
const VALID: u64 = 1 << 63;

/// The header word of event `i`: valid bit, the low [`SEQ_BITS`] bits of
/// `i`, the kind and the CPU (`kind` and `cpu` share the word so that the
/// slot is 4 words).
#[inline]
fn header(i: u64, kind: u8, cpu: u16) -> u64 {
    VALID | ((i & SEQ_MASK) << 24) | (u64::from(kind) << 16) | u64::from(cpu)
}

/// One event: `[header, ts_ns, pid | other << 32, arg]`. 32 bytes and
/// aligned to 32, so that two slots share a cache line and none straddles
/// two: the writer dirties one new line every second event.
#[repr(C, align(32))]
struct Slot([AtomicU64; 4]);

/// A fixed-size ring of events with one writer (see the module doc).
///
/// Each slot is a seqlock whose sequence is the slot's header word: 0 while
/// being written, then `header` of the event's index. 39 bits of the
/// index are kept: a reader could only be fooled by a writer that laps the
/// ring 2^39 events (hours of switching) while it copies three words.
pub struct TraceRing {
    slots: Box<[Slot]>,
    mask: u64,
    /// Events ever written.
    head: AtomicU64,
}

impl std::fmt::Debug for TraceRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceRing")
            .field("capacity", &self.slots.len())
            .field("written", &self.head.load(Ordering::Relaxed))
            .finish()
    }
}

impl TraceRing {
    /// A ring holding `capacity` (rounded up to a power of two, ≥ 16) events.
    pub fn new(capacity: usize) -> TraceRing {
        let cap = capacity.max(16).next_power_of_two();
        TraceRing {
            slots: (0..cap).map(|_| Slot(Default::default())).collect(),
            mask: cap as u64 - 1,
            head: AtomicU64::new(0),
        }
    }

    /// Events ever recorded (including overwritten ones).
    pub fn written(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Records one event.
    ///
    /// # Safety
    /// Only one thread may call `push` on a ring at a time (its owner CPU,
    /// or a holder of the lock around the outside ring).
    #[inline]
    pub unsafe fn push(&self, ev: &Event) {
        debug_assert!(ev.pid <= u64::from(u32::MAX) && ev.other <= u64::from(u32::MAX));
        let i = self.head.load(Ordering::Relaxed);
        let w = &self.slots[(i & self.mask) as usize].0;
        // Ask for the line 16 slots (512 bytes) ahead for writing, so that
        // its fetch overlaps the switches until we get there when the ring
        // is larger than the cache.
        #[cfg(target_arch = "x86_64")]
        {
            let ahead = &self.slots[((i + 16) & self.mask) as usize];
            // SAFETY: a prefetch is a hint: it reads and writes nothing, and
            // the address is inside the ring anyway.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
                _mm_prefetch::<_MM_HINT_ET0>((ahead as *const Slot).cast::<i8>());
            }
        }
        // Invalidate, write, publish: a reader racing with us sees a
        // header that does not match and drops the slot. (On x86 the
        // fences and orderings compile to plain stores.)
        w[0].store(0, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        w[1].store(ev.ts_ns, Ordering::Relaxed);
        w[2].store((ev.pid & 0xffff_ffff) | (ev.other << 32), Ordering::Relaxed);
        w[3].store(ev.arg, Ordering::Relaxed);
        w[0].store(header(i, ev.kind as u8, ev.cpu), Ordering::Release);
        self.head.store(i + 1, Ordering::Release);
    }

    /// Copies out the events still in the ring, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.snapshot_with_lost().0
    }

    /// [`snapshot`](Self::snapshot), and how many of the events recorded
    /// before it began are not in it (overwritten by newer ones, or being
    /// overwritten while it read them). Events recorded after it began are
    /// neither in it nor counted.
    pub fn snapshot_with_lost(&self) -> (Vec<Event>, u64) {
        let head = self.head.load(Ordering::Acquire);
        let cap = self.slots.len() as u64;
        let start = head.saturating_sub(cap);
        let mut out = Vec::with_capacity((head - start) as usize);
        let seq_part = !0xff_ffffu64;
        for i in start..head {
            let w = &self.slots[(i & self.mask) as usize].0;
            let h = w[0].load(Ordering::Acquire);
            if h & seq_part != header(i, 0, 0) {
                continue;
            }
            let p: [u64; 3] = std::array::from_fn(|k| w[k + 1].load(Ordering::Relaxed));
            std::sync::atomic::fence(Ordering::Acquire);
            if w[0].load(Ordering::Relaxed) != h {
                continue;
            }
            let Some(kind) = EventKind::from_u8((h >> 16) as u8) else {
                continue;
            };
            out.push(Event {
                ts_ns: p[0],
                kind,
                cpu: h as u16,
                pid: p[1] & 0xffff_ffff,
                other: p[1] >> 32,
                arg: p[2],
            });
        }
        let lost = head - out.len() as u64;
        (out, lost)
    }
}

/// One wakeup's latency (see [`Trace::wakeup_latencies`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeupLatency {
    /// The task woken.
    pub pid: u64,
    /// When it was woken (runtime clock, ns).
    pub woken_ns: u64,
    /// From the wakeup to its next switch-in, ns.
    pub latency_ns: u64,
}

/// A snapshot of every ring of a runtime, merged by time.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Number of CPUs of the runtime.
    pub cpus: usize,
    /// Task names known when the snapshot was taken (pid → name).
    pub names: HashMap<u64, String>,
    /// Events lost to overwriting (per ring, summed).
    pub overwritten: u64,
}

impl Trace {
    /// Merges ring snapshots (`rings[i]` is CPU i's; a last extra one holds
    /// outside events).
    pub fn from_rings(rings: &[&TraceRing], cpus: usize, names: HashMap<u64, String>) -> Trace {
        let mut events = Vec::new();
        let mut overwritten = 0;
        for r in rings {
            // Counted against the snapshot's own head: an event recorded
            // after the snapshot began is not lost, only later.
            let (snap, lost) = r.snapshot_with_lost();
            overwritten += lost;
            events.extend(snap);
        }
        events.sort_by_key(|e| (e.ts_ns, e.cpu));
        Trace {
            events,
            cpus,
            names,
            overwritten,
        }
    }

    /// How many events of `kind` the trace holds.
    pub fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }

    fn task_name(&self, pid: u64) -> String {
        match self.names.get(&pid) {
            Some(n) => format!("{n} ({pid})"),
            None => format!("pid {pid}"),
        }
    }

    /// Run intervals per CPU: (cpu, pid, start, end), from switch events.
    /// The last interval of each CPU ends at the trace's last timestamp.
    pub fn run_slices(&self) -> Vec<(u16, u64, u64, u64)> {
        let end = self.events.last().map_or(0, |e| e.ts_ns);
        let mut running: HashMap<u16, (u64, u64)> = HashMap::new();
        let mut out = Vec::new();
        for e in &self.events {
            match e.kind {
                EventKind::Switch | EventKind::Idle => {
                    if let Some((pid, start)) = running.remove(&e.cpu) {
                        out.push((e.cpu, pid, start, e.ts_ns));
                    }
                    if e.kind == EventKind::Switch && e.pid != 0 {
                        running.insert(e.cpu, (e.pid, e.ts_ns));
                    }
                }
                _ => {}
            }
        }
        for (cpu, (pid, start)) in running {
            out.push((cpu, pid, start, end));
        }
        out.sort_by_key(|s| (s.2, s.0));
        out
    }

    /// Wakeup latencies as `perf sched latency` measures them: for each
    /// wakeup of a task, the time from the wakeup event to the task's next
    /// switch-in, in wakeup order. A second wakeup before the task runs (a
    /// no-op on a runnable task) does not restart its clock; a wakeup whose
    /// task has not run again when the trace ends is left out. This is the
    /// quantity the simulator reports as wakeup latency (wake to first
    /// run); a timer's own delivery delay, before its wakeup, is not part
    /// of it.
    pub fn wakeup_latencies(&self) -> Vec<WakeupLatency> {
        let mut woken_at: HashMap<u64, u64> = HashMap::new();
        let mut out = Vec::new();
        for e in &self.events {
            match e.kind {
                EventKind::Wakeup => {
                    woken_at.entry(e.pid).or_insert(e.ts_ns);
                }
                EventKind::Switch => {
                    if let Some(t) = woken_at.remove(&e.pid) {
                        out.push(WakeupLatency {
                            pid: e.pid,
                            woken_ns: t,
                            latency_ns: e.ts_ns.saturating_sub(t),
                        });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Writes the trace as Chrome trace-event JSON (the format
    /// `ui.perfetto.dev` and `chrome://tracing` open): process 1 "CPUs" with
    /// one thread per CPU, process 2 "tasks" with one thread per task, run
    /// slices on both, instant events for spawn / exit / block / migrate, and
    /// flow arrows from each wakeup to the wakee's next run slice.
    pub fn write_chrome_json(&self, out: &mut impl Write) -> io::Result<()> {
        let mut s = String::with_capacity(self.events.len() * 96 + 1024);
        s.push_str("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        let mut first = true;
        let mut emit = |s: &mut String, line: String| {
            if !first {
                s.push_str(",\n");
            }
            first = false;
            s.push_str(&line);
        };
        let us = |ns: u64| format!("{}.{:03}", ns / 1000, ns % 1000);
        emit(
            &mut s,
            r#"{"ph":"M","pid":1,"name":"process_name","args":{"name":"CPUs"}}"#.into(),
        );
        emit(
            &mut s,
            r#"{"ph":"M","pid":2,"name":"process_name","args":{"name":"tasks"}}"#.into(),
        );
        for cpu in 0..self.cpus {
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"M","pid":1,"tid":{cpu},"name":"thread_name","args":{{"name":"CPU {cpu}"}}}}"#
                ),
            );
        }
        let mut pids: Vec<u64> = self
            .events
            .iter()
            .filter(|e| e.pid != 0)
            .map(|e| e.pid)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in &pids {
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"M","pid":2,"tid":{pid},"name":"thread_name","args":{{"name":{}}}}}"#,
                    json_str(&self.task_name(*pid))
                ),
            );
        }
        let slices = self.run_slices();
        for &(cpu, pid, start, end) in &slices {
            let name = json_str(&self.task_name(pid));
            let dur = us(end.saturating_sub(start));
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"X","pid":1,"tid":{cpu},"ts":{},"dur":{dur},"name":{name},"args":{{"pid":{pid}}}}}"#,
                    us(start)
                ),
            );
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"X","pid":2,"tid":{pid},"ts":{},"dur":{dur},"name":"running","args":{{"cpu":{cpu}}}}}"#,
                    us(start)
                ),
            );
        }
        // Flow arrows: a wakeup (on the waker's track) to the wakee's next
        // run slice.
        let mut flow_id = 0u64;
        for e in self.events.iter().filter(|e| e.kind == EventKind::Wakeup) {
            let Some(&(_, _, start, _)) = slices
                .iter()
                .find(|&&(_, pid, start, _)| pid == e.pid && start >= e.ts_ns)
            else {
                continue;
            };
            flow_id += 1;
            let from_tid = if e.other != 0 { e.other } else { e.pid };
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"s","id":{flow_id},"pid":2,"tid":{from_tid},"ts":{},"name":"wakeup","cat":"wakeup"}}"#,
                    us(e.ts_ns)
                ),
            );
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"f","bp":"e","id":{flow_id},"pid":2,"tid":{},"ts":{},"name":"wakeup","cat":"wakeup"}}"#,
                    e.pid,
                    us(start)
                ),
            );
        }
        for e in &self.events {
            let (name, args) = match e.kind {
                EventKind::Spawn => ("spawn", format!(r#"{{"parent":{}}}"#, e.other)),
                EventKind::Exit => ("exit", "{}".to_string()),
                EventKind::Block => (
                    "block",
                    format!(
                        r#"{{"on":{},"object":{}}}"#,
                        json_str(BlockOn::name(e.other)),
                        e.arg
                    ),
                ),
                EventKind::Migrate => (
                    "migrate",
                    format!(r#"{{"from":{},"to":{}}}"#, e.other, e.arg),
                ),
                _ => continue,
            };
            emit(
                &mut s,
                format!(
                    r#"{{"ph":"i","s":"t","pid":2,"tid":{},"ts":{},"name":"{name}","args":{args}}}"#,
                    e.pid,
                    us(e.ts_ns)
                ),
            );
        }
        s.push_str("\n]}\n");
        out.write_all(s.as_bytes())
    }

    /// Writes an SVG timeline: one lane per CPU, each run slice a rectangle
    /// coloured by task (the same task keeps its colour on every CPU), with
    /// a time axis and a legend of the busiest tasks. `width` in pixels.
    pub fn write_svg(&self, out: &mut impl Write, width: u32) -> io::Result<()> {
        let slices = self.run_slices();
        let t0 = self.events.first().map_or(0, |e| e.ts_ns);
        let t1 = self.events.last().map_or(1, |e| e.ts_ns).max(t0 + 1);
        let lane_h = 28.0;
        let left = 70.0;
        let top = 30.0;
        let plot_w = f64::from(width) - left - 20.0;
        let lanes = self.cpus.max(1);
        let mut busy: HashMap<u64, u64> = HashMap::new();
        for &(_, pid, a, b) in &slices {
            *busy.entry(pid).or_default() += b - a;
        }
        let mut legend: Vec<(u64, u64)> = busy.into_iter().collect();
        legend.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        legend.truncate(12);
        let legend_h = 18.0 * legend.len().div_ceil(3) as f64;
        let height = top + lane_h * lanes as f64 + 40.0 + legend_h + 10.0;
        let x = |t: u64| left + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" font-family="monospace" font-size="11">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="18">greenos scheduler trace: {} events, {:.3} ms</text>"#,
            self.events.len(),
            (t1 - t0) as f64 / 1e6
        );
        for cpu in 0..lanes {
            let y = top + lane_h * cpu as f64;
            let _ = writeln!(
                s,
                r##"<text x="4" y="{:.1}">CPU {cpu}</text><rect x="{left}" y="{y:.1}" width="{plot_w:.1}" height="{:.1}" fill="#f4f4f4"/>"##,
                y + lane_h / 2.0 + 4.0,
                lane_h - 4.0
            );
        }
        for &(cpu, pid, a, b) in &slices {
            if usize::from(cpu) >= lanes {
                continue;
            }
            let y = top + lane_h * f64::from(cpu);
            let w = (x(b) - x(a)).max(0.5);
            let _ = writeln!(
                s,
                r#"<rect x="{:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{}"><title>{} on CPU {cpu}: {:.1} µs</title></rect>"#,
                x(a),
                lane_h - 4.0,
                color(pid),
                xml_escape(&self.task_name(pid)),
                (b - a) as f64 / 1e3
            );
        }
        let axis_y = top + lane_h * lanes as f64 + 4.0;
        for k in 0..=4u64 {
            let t = t0 + (t1 - t0) * k / 4;
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{axis_y:.1}" stroke="#bbb" stroke-dasharray="2,2"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle">{2:.3} ms</text>"##,
                x(t),
                axis_y + 12.0,
                (t - t0) as f64 / 1e6
            );
        }
        for (i, (pid, ns)) in legend.iter().enumerate() {
            let lx = left + (i % 3) as f64 * (plot_w / 3.0);
            let ly = axis_y + 28.0 + 18.0 * (i / 3) as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}">{} {:.2} ms</text>"#,
                ly - 9.0,
                color(*pid),
                lx + 14.0,
                xml_escape(&self.task_name(*pid)),
                *ns as f64 / 1e6
            );
        }
        s.push_str("</svg>\n");
        out.write_all(s.as_bytes())
    }
}

/// A stable colour per pid (golden-angle hues).
fn color(pid: u64) -> String {
    let hue = (pid.wrapping_mul(137) % 360) as u32;
    format!("hsl({hue},65%,55%)")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` as a JSON string literal, quotes included (the JSON exports here and
/// in `sim`).
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, kind: EventKind, cpu: u16, pid: u64, other: u64, arg: u64) -> Event {
        Event {
            ts_ns: ts,
            kind,
            cpu,
            pid,
            other,
            arg,
        }
    }

    #[test]
    fn ring_keeps_the_newest_events_in_order() {
        let r = TraceRing::new(16);
        for i in 0..40u64 {
            // SAFETY: this test is the only writer.
            unsafe { r.push(&ev(i, EventKind::Switch, 1, i, i + 1, 2)) };
        }
        let snap = r.snapshot();
        assert_eq!(snap.len(), 16);
        assert_eq!(snap[0].ts_ns, 24);
        assert_eq!(snap[15], ev(39, EventKind::Switch, 1, 39, 40, 2));
        assert_eq!(r.written(), 40);
        assert_eq!(r.snapshot_with_lost().1, 24, "overwritten: the 24 oldest");
    }

    /// A trace counts as lost only what was overwritten before its
    /// snapshot: a ring that wrapped reports the wrapped events, one that
    /// did not reports none, whatever is recorded after.
    #[test]
    fn lost_counts_only_overwritten_events() {
        let (full, part) = (TraceRing::new(16), TraceRing::new(16));
        for i in 0..20u64 {
            // SAFETY: this test is the only writer of each ring.
            unsafe { full.push(&ev(i, EventKind::Wakeup, 0, i, 0, 0)) };
        }
        for i in 0..5u64 {
            // SAFETY: as above.
            unsafe { part.push(&ev(i, EventKind::Wakeup, 1, i, 0, 1)) };
        }
        let t = Trace::from_rings(&[&full, &part], 2, HashMap::new());
        assert_eq!(t.events.len(), 16 + 5);
        assert_eq!(t.overwritten, 4);
    }

    /// Every field survives the packing into a 32-byte slot: the widest
    /// values each field may hold, the outside CPU, every kind.
    #[test]
    fn slots_keep_every_field() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        let r = TraceRing::new(16);
        let kinds = [
            EventKind::Switch,
            EventKind::Wakeup,
            EventKind::Migrate,
            EventKind::Spawn,
            EventKind::Exit,
            EventKind::Block,
            EventKind::Idle,
        ];
        let evs: Vec<Event> = kinds
            .iter()
            .enumerate()
            .map(|(k, &kind)| {
                let k = k as u64;
                ev(
                    u64::MAX - k,
                    kind,
                    if k % 2 == 0 { OUTSIDE_CPU } else { k as u16 },
                    u64::from(u32::MAX) - k,
                    k << 28,
                    u64::MAX / (k + 1),
                )
            })
            .collect();
        for e in &evs {
            // SAFETY: this test is the only writer.
            unsafe { r.push(e) };
        }
        assert_eq!(r.snapshot(), evs);
    }

    /// A reader racing with the writer never sees a torn event: every
    /// event carries fields derived from one counter.
    #[test]
    fn concurrent_snapshots_are_never_torn() {
        let r = std::sync::Arc::new(TraceRing::new(64));
        let w = r.clone();
        let writer = std::thread::spawn(move || {
            for i in 1..200_000u64 {
                // SAFETY: the only writer.
                unsafe {
                    w.push(&ev(
                        i,
                        EventKind::Wakeup,
                        (i % 7) as u16,
                        i,
                        i * 3,
                        i % 1000,
                    ))
                };
            }
        });
        let mut seen = 0;
        while !writer.is_finished() {
            for e in r.snapshot() {
                let i = e.ts_ns;
                assert_eq!(e.pid, i);
                assert_eq!(e.other, i * 3);
                assert_eq!(e.arg, i % 1000);
                assert_eq!(e.cpu, (i % 7) as u16);
                seen += 1;
            }
        }
        writer.join().unwrap();
        assert!(r.snapshot().len() == 64);
        let _ = seen;
    }

    fn scripted() -> Trace {
        let mut names = HashMap::new();
        names.insert(5, "ping".to_string());
        names.insert(6, "po\"ng".to_string());
        let events = vec![
            ev(1_000, EventKind::Spawn, 0, 5, 1, 0),
            ev(1_500, EventKind::Spawn, 0, 6, 1, 0),
            ev(2_000, EventKind::Switch, 0, 5, 0, 0),
            ev(3_000, EventKind::Wakeup, 0, 6, 5, 1),
            ev(3_500, EventKind::Block, 0, 5, BlockOn::Pipe as u64, 77),
            ev(4_000, EventKind::Idle, 0, 0, 5, 1),
            ev(4_200, EventKind::Switch, 1, 6, 0, 0),
            ev(6_000, EventKind::Exit, 1, 6, 0, 0),
            ev(6_000, EventKind::Idle, 1, 0, 6, 2),
        ];
        Trace {
            events,
            cpus: 2,
            names,
            overwritten: 0,
        }
    }

    #[test]
    fn run_slices_follow_switches() {
        let t = scripted();
        assert_eq!(
            t.run_slices(),
            vec![(0, 5, 2_000, 4_000), (1, 6, 4_200, 6_000)]
        );
    }

    #[test]
    fn wakeup_latency_runs_from_the_first_wakeup_to_the_next_switch_in() {
        let mut t = scripted();
        let want = vec![WakeupLatency {
            pid: 6,
            woken_ns: 3_000,
            latency_ns: 1_200,
        }];
        assert_eq!(t.wakeup_latencies(), want);
        // A repeated wakeup keeps the first one's time; a wakeup that is
        // never followed by a run is left out.
        t.events.insert(4, ev(3_100, EventKind::Wakeup, 0, 6, 5, 1));
        t.events.push(ev(7_000, EventKind::Wakeup, 1, 5, 0, 1));
        assert_eq!(t.wakeup_latencies(), want);
    }

    #[test]
    fn chrome_json_has_tracks_slices_flows_and_instants() {
        let mut out = Vec::new();
        scripted().write_chrome_json(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("{\"displayTimeUnit\""));
        assert!(s.contains(r#""name":"CPU 1""#));
        assert!(s.contains(r#""name":"po\"ng (6)""#), "names are escaped");
        assert!(s.contains(r#""ph":"X","pid":1,"tid":0,"ts":2.000,"dur":2.000,"name":"ping (5)""#));
        assert!(
            s.contains(r#""ph":"s","id":1,"pid":2,"tid":5,"ts":3.000"#),
            "flow from the waker"
        );
        assert!(
            s.contains(r#""ph":"f","bp":"e","id":1,"pid":2,"tid":6,"ts":4.200"#),
            "to the wakee's slice"
        );
        assert!(s.contains(r#""args":{"on":"pipe","object":77}"#));
        assert_eq!(
            s.matches("\"ph\":\"i\"").count(),
            4,
            "2 spawns, 1 block, 1 exit"
        );
    }

    #[test]
    fn svg_has_lanes_and_slices() {
        let mut out = Vec::new();
        scripted().write_svg(&mut out, 800).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<title>").count(), 2);
        assert!(s.contains(">CPU 1<"));
        assert!(s.contains("po\"ng (6) on CPU 1"));
    }
}
