//! `tracing` integration: a subscriber sees a `task` span (with the pid)
//! around each run of a task, the task's own events inside it, and the
//! debug-level spawn and exit events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default)]
struct Seen {
    /// `(span id, fields)` of every `task` span created.
    spans: Vec<(u64, String)>,
    /// `(current span id or 0, fields)` of every event.
    events: Vec<(u64, String)>,
}

struct Collect {
    seen: Arc<Mutex<Seen>>,
    next: AtomicU64,
}

thread_local! {
    static CURRENT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if a.metadata().name() == "task" {
            let mut f = Fields(String::new());
            a.record(&mut f);
            self.seen.lock().unwrap().spans.push((id, f.0));
        }
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        let cur = CURRENT.with(|c| c.get());
        self.seen.lock().unwrap().events.push((cur, f.0));
    }
    fn enter(&self, id: &Id) {
        CURRENT.with(|c| c.set(id.into_u64()));
    }
    fn exit(&self, _: &Id) {
        CURRENT.with(|c| c.set(0));
    }
}

#[test]
fn tasks_run_inside_a_span_and_their_lifecycle_is_logged() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    tracing::subscriber::set_global_default(Collect {
        seen: seen.clone(),
        next: AtomicU64::new(1),
    })
    .unwrap();
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    let pid = rt.block_on(|| {
        let h = greenos::task::Builder::new()
            .name("traced")
            .spawn(|| {
                tracing::info!(marker = "inside", "hello from the task");
                greenos::yield_now();
                greenos::getpid()
            })
            .unwrap();
        h.join().unwrap()
    });
    drop(rt);
    let seen = seen.lock().unwrap();
    let mine: Vec<u64> = seen
        .spans
        .iter()
        .filter(|(_, f)| f.contains(&format!("pid={}", pid.0)) && f.contains("traced"))
        .map(|(id, _)| *id)
        .collect();
    // At least two runs: before and after the yield.
    assert!(mine.len() >= 2, "task spans: {:?}", seen.spans);
    let inside = seen
        .events
        .iter()
        .find(|(_, f)| f.contains("inside"))
        .expect("the task's event");
    assert!(
        mine.contains(&inside.0),
        "the task's event was not inside its span: {inside:?}"
    );
    let lifecycle = |what: &str| {
        seen.events
            .iter()
            .any(|(_, f)| f.contains(what) && f.contains(&format!("pid={}", pid.0)))
    };
    assert!(lifecycle("spawn"), "no spawn event: {:?}", seen.events);
    assert!(lifecycle("exit"), "no exit event: {:?}", seen.events);
}
