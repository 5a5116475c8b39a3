//! Producer / consumer over shared memory, twice:
//!
//! 1. the seed's naive version: a bounded buffer in a shared segment with
//!    `in`, `out` and a shared `count`, each side busy-waiting on `count`
//!    and updating it with a plain read-then-write (`count++` / `count--`);
//! 2. the same exchange through `greenos::ipc::ShmRing`, which blocks
//!    through wait queues instead of spinning and keeps its indices with
//!    one writer each.
//!
//! ```text
//! cargo run --release --example producer_consumer [-- ITEMS]
//! ```
//!
//! Why the naive one is wrong under real concurrency: `count++` is a load,
//! an add and a store. When the producer's `count++` and the consumer's
//! `count--` interleave, one update overwrites the other, so `count` drifts
//! from the true number of items in the buffer. Too high, and the consumer
//! reads slots the producer has not written yet (duplicates of old items);
//! too low, and the producer overwrites items not yet read (losses). If it
//! drifts past the buffer's bounds both sides can spin forever, which is why
//! this demo gives the naive run a deadline. (The shared words are atomics
//! accessed with separate Relaxed loads and stores: that is exactly the
//! racy read-modify-write of the C original, without undefined behaviour.)
//! On green threads sharing one CPU the busy-wait is worse still: a side
//! that spins never lets its peer run, so the naive version runs here on
//! two OS threads.
//!
//! The program counts honestly: items lost, items received more than once,
//! and the final drift of `count`; a run may be lucky and show none, so it
//! tries a few times.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos::ipc::{
    shmat, shmctl, shmget, IpcFlags, Key, RingKind, ShmCtl, ShmFlags, ShmMap, ShmRing,
};

/// Slots in both buffers.
const SLOTS: usize = 16;

/// The naive shared buffer, laid out in a segment: `count`, `in`, `out`,
/// then the slots (all u64).
struct Naive {
    map: ShmMap,
}

impl Naive {
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!((i + 1) * 8 <= self.map.len());
        // SAFETY: in bounds (checked), 8-aligned (the map is page-aligned),
        // and only ever accessed atomically.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }
    fn count(&self) -> &AtomicU64 {
        self.word(0)
    }
    fn slot(&self, i: u64) -> &AtomicU64 {
        self.word(3 + (i as usize % SLOTS))
    }
}

struct NaiveOutcome {
    received: Vec<u64>,
    timed_out: bool,
    final_count: u64,
    produced: u64,
    consumed: u64,
}

fn naive_run(items: u64, deadline: Duration) -> NaiveOutcome {
    let id = shmget(
        Key::PRIVATE,
        (3 + SLOTS) * 8,
        IpcFlags::CREAT | IpcFlags::mode(0o600),
    )
    .unwrap();
    let open = || Naive {
        map: shmat(id, ShmFlags::NONE).unwrap(),
    };
    let (prod, cons) = (open(), open());
    shmctl(id, ShmCtl::Remove).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + deadline;

    let s = stop.clone();
    let producer = std::thread::spawn(move || {
        let mut next_in = 0u64;
        for item in 0..items {
            // while (count == BUFFER_SIZE) ; /* busy-wait */
            while prod.count().load(Relaxed) >= SLOTS as u64 {
                if s.load(Relaxed) {
                    return next_in;
                }
                std::hint::spin_loop();
            }
            prod.slot(next_in).store(item, Relaxed);
            next_in += 1;
            // count++  (load, add, store: not atomic as a whole)
            let c = prod.count().load(Relaxed);
            prod.count().store(c.wrapping_add(1), Relaxed);
        }
        next_in
    });
    let s = stop.clone();
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(items as usize);
        let mut out = 0u64;
        let mut timed_out = false;
        while (got.len() as u64) < items {
            // while (count == 0) ; /* busy-wait */
            let mut spins = 0u32;
            while cons.count().load(Relaxed) == 0 {
                spins = spins.wrapping_add(1);
                if spins % 1024 == 0 && Instant::now() > end {
                    timed_out = true;
                    break;
                }
                std::hint::spin_loop();
            }
            if timed_out {
                break;
            }
            got.push(cons.slot(out).load(Relaxed));
            out += 1;
            // count--
            let c = cons.count().load(Relaxed);
            cons.count().store(c.wrapping_sub(1), Relaxed);
        }
        s.store(true, Relaxed);
        (got, out, timed_out, cons)
    });
    let produced = producer.join().unwrap();
    let (received, consumed, timed_out, cons) = consumer.join().unwrap();
    NaiveOutcome {
        final_count: cons.count().load(Relaxed),
        produced,
        consumed,
        received,
        timed_out,
    }
}

/// (lost, duplicated) items among `0..items`.
fn tally(items: u64, received: &[u64]) -> (u64, u64) {
    let mut seen = vec![0u32; items as usize];
    let mut dup = 0;
    for &v in received {
        match seen.get_mut(v as usize) {
            Some(n) => {
                *n += 1;
                if *n > 1 {
                    dup += 1;
                }
            }
            None => dup += 1,
        }
    }
    let lost = seen.iter().filter(|&&n| n == 0).count() as u64;
    (lost, dup)
}

fn ring_run(items: u64) -> Vec<u64> {
    let rt = greenos::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(move || {
        let tx = ShmRing::<u64>::with_capacity(RingKind::Spsc, SLOTS).unwrap();
        let rx = tx.clone();
        tx.take_producer_role().unwrap();
        rx.take_consumer_role().unwrap();
        let producer = greenos::spawn(move || {
            for item in 0..items {
                tx.send(item).unwrap();
            }
            // Dropping `tx` tells the consumer: no more items.
        });
        let consumer = greenos::spawn(move || {
            let mut got = Vec::with_capacity(items as usize);
            // recv blocks while empty; EPIPE once the producer is gone and
            // the ring is drained.
            while let Ok(v) = rx.recv() {
                got.push(v);
            }
            got
        });
        producer.join().unwrap();
        consumer.join().unwrap()
    })
}

fn main() {
    let items: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!("{items} items through a {SLOTS}-slot shared buffer\n");

    println!("naive busy-wait buffer with a shared count (2 OS threads):");
    for attempt in 1..=3 {
        let t = Instant::now();
        let o = naive_run(items, Duration::from_secs(5));
        let (lost, dup) = tally(items, &o.received);
        println!(
            "  run {attempt}: {:.2?}; producer wrote {} items, consumer read {} slots; \
             lost {lost}, duplicated {dup}; count ends at {} (true fill: {}){}",
            t.elapsed(),
            o.produced,
            o.consumed,
            o.final_count as i64,
            o.produced as i64 - o.consumed as i64,
            if o.timed_out {
                " (stopped by the deadline: both sides were spinning)"
            } else {
                ""
            }
        );
    }

    println!("\nShmRing (green tasks on 2 workers, blocking send/recv):");
    let t = Instant::now();
    let got = ring_run(items);
    let (lost, dup) = tally(items, &got);
    let in_order = got.windows(2).all(|w| w[0] < w[1]);
    println!(
        "  received {} in {:.2?}; lost {lost}, duplicated {dup}, in order: {in_order}",
        got.len(),
        t.elapsed()
    );
    assert_eq!(
        (lost, dup, got.len() as u64),
        (0, 0, items),
        "the ring loses nothing"
    );
}
