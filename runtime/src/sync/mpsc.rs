//! Multi-producer, single-consumer channels with std's shapes, parking the
//! green thread.
//!
//! ```
//! use greenos_runtime::sync::mpsc;
//! let (tx, rx) = mpsc::channel();
//! tx.send(1).unwrap();
//! drop(tx);
//! assert_eq!(rx.recv(), Ok(1));
//! assert!(rx.recv().is_err()); // every sender gone, nothing queued
//! ```
//!
//! - [`channel`]: unbounded; `Sender::send` never blocks.
//! - [`sync_channel`]`(n)`: at most `n` queued values; `SyncSender::send`
//!   parks while the channel is full. `sync_channel(0)` is a rendezvous
//!   channel, exactly like std's: `send` returns only once the receiver has
//!   taken the value, `try_send` succeeds only if the receiver is blocked in
//!   `recv` right now, and `try_recv` takes a value a blocked sender offers.
//!
//! The error types are std's own (`std::sync::mpsc::{SendError, RecvError,
//! TryRecvError, RecvTimeoutError, TrySendError}` are re-exported here:
//! same shapes, `Display`, `Error`, and they convert like std's), plus
//! [`SendTimeoutError`], which std has only on nightly; ours has the same
//! shape and messages.
//!
//! # What a channel owns
//! One `Arc`'d `Chan` shared by the handles: a small spin lock
//! (`sync/spin.rs`: one swap to lock, a plain store to unlock)
//! over the queue (a `LineQueue`: a ring in whole,
//! aligned cache lines, which allocates only when it grows past its largest
//! size so far) and the flags below; `len`, a copy of the queue
//! length stored under the lock and read without it as a hint; the sender
//! count; the receiver's `rx_parked` flag; and two [`WaitQueue`]s:
//! `recv_wq` (the receiver waits for a value or for the last sender to go)
//! and `send_wq` (`SyncSender`s wait for room, or for their offered value
//! to be taken). The lock is held for a few instructions and never across a
//! wait, a wake, or a value's destructor.
//!
//! # Invariants
//! 1. Values leave the queue in the order they entered (FIFO); a value is
//!    delivered at most once and is never dropped while a receiver may
//!    still get it: `recv` reports disconnection only when every sender is
//!    gone *and* the queue is empty. Values still queued when the receiver
//!    goes are dropped then (std does the same); in a rendezvous channel
//!    the queue holds only values whose senders are still blocked, and they
//!    get them back in `SendError`.
//! 2. There is one receiver (`Receiver` is `Send` but not `Sync`), so
//!    `rx_parked` is a single flag: set (under the lock, with the queue
//!    empty) by a receiver about to park; a sender that pushes (or the last
//!    sender leaving) under the lock and sees it set clears it and calls
//!    `recv_wq.wake_one_sync()` after unlocking (a sync wakeup: the woken
//!    receiver joins the sender's CPU when that CPU runs nothing else, see
//!    `WaitQueue::wake_one_sync`). The receiver's `validate` is
//!    "`rx_parked` is still set": the sender clears it before `wake_one`
//!    fences and reads the waiter count, the receiver counts itself before
//!    `validate` reads the flag, so either the receiver does not sleep or
//!    the sender finds it. Sends into a channel whose receiver is not
//!    parked never touch `recv_wq` (no fence, no wait-queue lock): the fast
//!    path is lock, push, read a flag, unlock.
//! 3. `tx_parked` counts `SyncSender`s parked on `send_wq` (kept exact by a
//!    drop guard even when a wait is unwound). A pop from a bounded channel
//!    wakes one of them when it is non-zero; a pop from a rendezvous channel
//!    wakes the one if there is one and all if there are several (it cannot
//!    pick the owner of the value it took, and waking only a non-owner
//!    would lose the owner's wakeup). Their `validate` re-reads the
//!    condition under the lock.
//! 4. Rendezvous offers carry sequence numbers (`seqs`, parallel to the
//!    queue); `taken_below` is one past the last taken. A blocked sender's
//!    value was taken iff `taken_below > seq`, because values are taken in
//!    sequence order and only their own sender removes one early.
//!
//! # Receiving
//! 1. If `len` says the queue is empty, give a sender one chance first
//!    (`before_park`): when other tasks are runnable on this CPU, yield
//!    once (in message passing between tasks on one CPU the sender is
//!    usually among them, and it can then send without any wakeup); when
//!    none is (the sender, if any, is on another CPU or an OS thread) and
//!    the receiver cannot move (its affinity allows one CPU) or is an OS
//!    thread, spin for at most [`RECV_SPIN_NS`] watching `len` (the CPU
//!    would otherwise go idle, and an idle worker spins longer than that
//!    before it sleeps). A task that may move parks at once instead, so
//!    that the sender's sync wakeup (`wake_one_sync`) can bring it to the
//!    sender's CPU.
//! 2. Lock; take the oldest value if there is one (and wake a blocked
//!    `SyncSender`, invariant 3); else report disconnection or a passed
//!    deadline; else set `rx_parked` (invariant 2), unlock and park on
//!    `recv_wq`. Repeat step 2 after every wakeup.
//!
//! The yield in step 1 is CFS's: it passes the caller over only if the next
//! task's vruntime is within the wakeup granularity of the caller's, so
//! two tasks whose vruntimes drifted further apart (say, from spawn-time
//! placement) end up parking each time instead; step 1 then costs one
//! extra switch per receive. We measured both regimes (see "Performance")
//! and keep the yield: it is the only way the two tasks of a ping-pong on
//! one CPU avoid the wait-queue round trip.
//!
//! # Performance
//! Ping-pong of a `u64` between two tasks over two channels, measured on
//! the 2-vCPU development VM (whose other tenants make single runs vary by
//! ±30%) against tokio's `unbounded_channel` in the same process:
//!
//! | workload (round trip)                  | greenos     | tokio       |
//! |----------------------------------------|-------------|-------------|
//! | `pingpong_1worker` (criterion, 2 runs) | 333, 362 ns | 407, 433 ns |
//! | `pingpong_2workers`, pinned apart      | 876 ns      | 569 ns (*)  |
//!
//! (*) tokio cannot pin; its two tasks usually share a worker.
//! In a stand-alone binary interleaving 12 rounds of 300,000 round trips
//! with tokio's `current_thread` runtime, a greenos round trip costs
//! 275–300 ns when the yields of step 1 hand over and 360–450 ns when the
//! two tasks' vruntimes have drifted apart and they park instead (tokio:
//! 306–430 ns); without step 1 it was 370–550 ns. Of the yielding round
//! trip about 65 ns is this module (two sends, two receives, two
//! `before_park`s); the rest is the executor's switch (`yield_now`,
//! run-queue updates, two clock reads). Across two workers with the tasks
//! pinned apart, the spin of step 1 brought a round trip from 6.4 µs (a
//! park and a cross-CPU wakeup per message) to about 0.9–1.5 µs.
//!
//! One locked read-modify-write costs about 9 ns on that VM; a send is one
//! (the lock's swap) and a receive that finds a value is one. A queue with
//! a lock-free consumer (e.g. a block list with a producer-side lock) could
//! save the receive's, ~10–20 ns per round trip, at the price of a second
//! structure for rendezvous offers, which must be removable from the
//! middle; we did not think that worth it.
//!
//! `send` and a `recv` that finds a value are preemption points
//! (`maybe_yield`: one load when no reschedule is pending), so a producer
//! or consumer loop cannot hog its CPU.

use std::cell::Cell;
use std::collections::VecDeque;

use super::linequeue::LineQueue;
use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

use crate::clock;
use crate::executor;
use crate::wait::{WaitQueue, WaitResult};

use super::spin::{SpinGuard, SpinLock};
use super::Deadline;

/// Why [`SyncSender::send_timeout`] failed; the value comes back. The same
/// shape and messages as std's (nightly-only) `SendTimeoutError`.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendTimeoutError<T> {
    /// No room (or, for a rendezvous channel, no receiver took it) in time.
    Timeout(T),
    /// The receiver is gone.
    Disconnected(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v) => v,
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(..) => "Timeout(..)".fmt(f),
            SendTimeoutError::Disconnected(..) => "Disconnected(..)".fmt(f),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(..) => "timed out waiting on send operation".fmt(f),
            SendTimeoutError::Disconnected(..) => "sending on a disconnected channel".fmt(f),
        }
    }
}

impl<T> Error for SendTimeoutError<T> {}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(err: SendError<T>) -> SendTimeoutError<T> {
        SendTimeoutError::Disconnected(err.0)
    }
}

/// How long a receiver alone on its CPU (or on an OS thread) spins for a
/// value before it parks (see `Chan::before_park`).
pub const RECV_SPIN_NS: u64 = 2_000;

/// What kind of buffer a channel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Unbounded,
    Bounded(usize),
    Rendezvous,
}

/// The state under the channel's lock.
struct Inner<T> {
    queue: LineQueue<T>,
    /// Rendezvous only: the sequence number of each queued offer.
    seqs: VecDeque<u64>,
    /// Rendezvous only: the next offer's sequence number.
    next_seq: u64,
    /// Rendezvous only: one past the sequence number of the last offer the
    /// receiver took.
    taken_below: u64,
    /// Every sender is gone.
    tx_closed: bool,
    /// The receiver is gone.
    rx_closed: bool,
    /// The receiver is inside a blocking `recv` (rendezvous `try_send` may
    /// hand it a value).
    rx_in_recv: bool,
    /// `SyncSender`s parked (or about to park) on `send_wq`.
    tx_parked: usize,
}

/// What a pop asks the caller to do after unlocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
enum WakeTx {
    None,
    One,
    All,
}

/// Aligned to 128 bytes (crossbeam's `CachePadded` on x86_64: a line and
/// its prefetch pair), so that no other object shares its lines: two
/// ping-pong pairs on two CPUs whose channels the spawning task had
/// allocated side by side ran at 180-300 ns per round trip instead of
/// 93, every lock bouncing a line shared with the other pair's channel.
#[repr(align(128))]
struct Chan<T> {
    inner: SpinLock<Inner<T>>,
    /// `queue.len()`, stored (a plain store, no read-modify-write) under
    /// the lock after every change; read without it as a hint only.
    len: AtomicUsize,
    /// The receiver is parked (or about to) on `recv_wq` (invariant 2).
    rx_parked: AtomicBool,
    /// Live `Sender`s and `SyncSender`s.
    senders: AtomicUsize,
    flavor: Flavor,
    recv_wq: WaitQueue,
    send_wq: WaitQueue,
}

impl<T> Chan<T> {
    fn new(flavor: Flavor) -> Chan<T> {
        Chan {
            inner: SpinLock::new(Inner {
                queue: LineQueue::new(),
                seqs: VecDeque::new(),
                next_seq: 0,
                taken_below: 0,
                tx_closed: false,
                rx_closed: false,
                rx_in_recv: false,
                tx_parked: 0,
            }),
            len: AtomicUsize::new(0),
            rx_parked: AtomicBool::new(false),
            senders: AtomicUsize::new(1),
            flavor,
            recv_wq: WaitQueue::new(),
            send_wq: WaitQueue::new(),
        }
    }

    /// Queues `v` (the caller checked room and `rx_closed`). Returns whether
    /// the caller must wake the receiver after unlocking (invariant 2).
    #[inline]
    fn push(&self, g: &mut Inner<T>, v: T) -> bool {
        if self.flavor == Flavor::Rendezvous {
            g.seqs.push_back(g.next_seq);
            g.next_seq += 1;
        }
        g.queue.push_back(v);
        self.len.store(g.queue.len(), Ordering::Relaxed);
        self.take_rx_parked()
    }

    /// Clears `rx_parked` if set; true if it was (then wake the receiver).
    #[inline]
    fn take_rx_parked(&self) -> bool {
        if self.rx_parked.load(Ordering::Relaxed) {
            self.rx_parked.store(false, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Takes the oldest value, with the bookkeeping of invariants 3 and 4.
    #[inline]
    fn pop(&self, g: &mut Inner<T>) -> Option<(T, WakeTx)> {
        let v = g.queue.pop_front()?;
        self.len.store(g.queue.len(), Ordering::Relaxed);
        let wake = match self.flavor {
            Flavor::Unbounded => WakeTx::None,
            Flavor::Bounded(_) => {
                if g.tx_parked > 0 {
                    WakeTx::One
                } else {
                    WakeTx::None
                }
            }
            Flavor::Rendezvous => {
                let seq = g.seqs.pop_front().expect("one seq per rendezvous offer");
                g.taken_below = seq + 1;
                match g.tx_parked {
                    0 => WakeTx::None,
                    1 => WakeTx::One,
                    _ => WakeTx::All,
                }
            }
        };
        Some((v, wake))
    }

    /// The receiver found the queue empty and is about to park: first give
    /// a sender one chance to fill it without a park/wake round trip (see
    /// the module doc, "Receiving"). When other tasks are runnable here it
    /// yields, in the caller's frame (inlined: the runtime's `wait` module,
    /// "Switch depth"); otherwise it may spin ([`spin_before_park`]).
    #[inline(always)]
    fn before_park(&self) {
        if others_runnable_here() {
            executor::yield_blocking();
        } else {
            self.spin_before_park();
        }
    }

    /// The half of [`before_park`](Self::before_park) that runs when no
    /// other task is runnable here: a pinned receiver spins for at most
    /// [`RECV_SPIN_NS`] watching for a value; any other returns at once and
    /// parks.
    #[cold]
    #[inline(never)]
    fn spin_before_park(&self) {
        if (!executor::current_task_cannot_move() || executor::runs_on_loan())
            && executor::on_worker()
        {
            // A task free to move parks: the sender's sync wakeup can then
            // bring it to the sender's CPU, where the next round trips cost
            // a local switch instead of a cross-CPU hand-off.
            return;
        }
        let start = clock::now_ns();
        loop {
            for _ in 0..8 {
                std::hint::spin_loop();
            }
            if self.len.load(Ordering::Relaxed) != 0
                || self.senders.load(Ordering::Relaxed) == 0
                || clock::now_ns().saturating_sub(start) >= RECV_SPIN_NS
            {
                return;
            }
        }
    }

    #[inline]
    fn wake_tx(&self, w: WakeTx) {
        match w {
            WakeTx::None => {}
            WakeTx::One => {
                self.send_wq.wake_one();
            }
            WakeTx::All => {
                self.send_wq.wake_all();
            }
        }
    }

    fn lock(&self) -> SpinGuard<'_, Inner<T>> {
        self.inner.lock()
    }

    /// A sender handle went away; the last one disconnects.
    fn drop_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut g = self.lock();
        g.tx_closed = true;
        let wake = self.take_rx_parked();
        drop(g);
        if wake {
            self.recv_wq.wake_one();
        }
    }

    fn add_sender(&self) {
        // As `Arc::clone`: a count this large means leaked handles.
        if self.senders.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
            std::process::abort();
        }
    }
}

/// Creates an unbounded channel: `send` never blocks.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan::new(Flavor::Unbounded));
    (
        Sender { chan: chan.clone() },
        Receiver {
            chan,
            _not_sync: PhantomData,
        },
    )
}

/// Creates a channel holding at most `bound` values; `sync_channel(0)` is a
/// rendezvous channel (see the module doc).
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let flavor = if bound == 0 {
        Flavor::Rendezvous
    } else {
        Flavor::Bounded(bound)
    };
    let chan = Arc::new(Chan::new(flavor));
    (
        SyncSender { chan: chan.clone() },
        Receiver {
            chan,
            _not_sync: PhantomData,
        },
    )
}

/// Whether other tasks are runnable on the calling task's CPU (false off
/// the workers: an OS thread, or the shutdown thread cancelling tasks).
/// Sync code only runs on a worker inside a task, so the current task is
/// the run queue's `curr`, counted in `nr_running`.
#[inline]
fn others_runnable_here() -> bool {
    executor::cpu_has_other_runnable()
}

// ---------------------------------------------------------------------------
// Sender.

/// The sending half of an unbounded [`channel`]; clone it for more
/// producers.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Queues `v` for the receiver; never blocks. Fails (handing `v` back)
    /// once the receiver is gone.
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        executor::maybe_yield();
        let chan = &*self.chan;
        let mut g = chan.lock();
        if g.rx_closed {
            return Err(SendError(v));
        }
        let wake = chan.push(&mut g, v);
        drop(g);
        if wake {
            chan.recv_wq.wake_one_sync();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// SyncSender.

/// The sending half of a [`sync_channel`]; clone it for more producers.
pub struct SyncSender<T> {
    chan: Arc<Chan<T>>,
}

/// Keeps `tx_parked` exact (invariant 3) and, for a rendezvous sender,
/// withdraws its offer if the send is abandoned by unwinding.
struct TxWait<'a, T> {
    chan: &'a Chan<T>,
    counted: bool,
    offer: Option<u64>,
}

impl<T> TxWait<'_, T> {
    /// Settles under the caller's lock: uncount, and forget the offer.
    fn settle(&mut self, g: &mut Inner<T>) {
        if self.counted {
            g.tx_parked -= 1;
            self.counted = false;
        }
        self.offer = None;
    }
}

impl<T> Drop for TxWait<'_, T> {
    fn drop(&mut self) {
        if !self.counted && self.offer.is_none() {
            return;
        }
        let mut g = self.chan.lock();
        if self.counted {
            g.tx_parked -= 1;
        }
        let withdrawn = self.offer.and_then(|seq| withdraw(self.chan, &mut g, seq));
        drop(g);
        drop(withdrawn);
    }
}

/// Removes the rendezvous offer `seq` if it is still queued.
fn withdraw<T>(chan: &Chan<T>, g: &mut Inner<T>, seq: u64) -> Option<T> {
    let idx = g.seqs.iter().position(|&s| s == seq)?;
    g.seqs.remove(idx);
    let v = g.queue.remove(idx);
    chan.len.store(g.queue.len(), Ordering::Relaxed);
    v
}

impl<T> SyncSender<T> {
    /// Sends `v`, parking while the channel is full (rendezvous: until the
    /// receiver takes it). Fails, handing `v` back, once the receiver is
    /// gone (or if the task is cancelled at runtime shutdown).
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        executor::maybe_yield();
        self.send_deadline(v, Deadline::NEVER)
            .map_err(|e| SendError(e.into_inner()))
    }

    /// Like [`send`](Self::send), giving up after `timeout`.
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(v, Deadline::after(timeout))
    }

    /// Sends `v` only if that needs no waiting: there is room, or
    /// (rendezvous) the receiver is blocked in `recv` with nothing offered.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let chan = &*self.chan;
        let mut g = chan.lock();
        if g.rx_closed {
            return Err(TrySendError::Disconnected(v));
        }
        let room = match chan.flavor {
            Flavor::Bounded(cap) => g.queue.len() < cap,
            Flavor::Rendezvous => g.rx_in_recv && g.queue.is_empty(),
            Flavor::Unbounded => true,
        };
        if !room {
            return Err(TrySendError::Full(v));
        }
        let wake = chan.push(&mut g, v);
        drop(g);
        if wake {
            chan.recv_wq.wake_one();
        }
        Ok(())
    }

    fn send_deadline(&self, v: T, deadline: Deadline) -> Result<(), SendTimeoutError<T>> {
        match self.chan.flavor {
            Flavor::Rendezvous => self.send_rendezvous(v, deadline),
            Flavor::Bounded(cap) => self.send_bounded(v, cap, deadline),
            Flavor::Unbounded => unreachable!("a SyncSender has a bounded channel"),
        }
    }

    fn send_bounded(
        &self,
        v: T,
        cap: usize,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.chan;
        let mut w = TxWait {
            chan,
            counted: false,
            offer: None,
        };
        let mut leaving = None;
        loop {
            let mut g = chan.lock();
            if g.rx_closed {
                w.settle(&mut g);
                return Err(SendTimeoutError::Disconnected(v));
            }
            if g.queue.len() < cap {
                w.settle(&mut g);
                let wake = chan.push(&mut g, v);
                drop(g);
                if wake {
                    chan.recv_wq.wake_one_sync();
                }
                return Ok(());
            }
            // Full. A wakeup we may hold was for room that is gone again,
            // so leaving passes nothing on.
            let left = match (leaving, deadline.remaining()) {
                (None, Ok(left)) => left,
                (Some(SendTimeoutError::Disconnected(())), _) => {
                    w.settle(&mut g);
                    return Err(SendTimeoutError::Disconnected(v));
                }
                _ => {
                    w.settle(&mut g);
                    return Err(SendTimeoutError::Timeout(v));
                }
            };
            if !w.counted {
                g.tx_parked += 1;
                w.counted = true;
            }
            drop(g);
            let r = chan.send_wq.wait_killable(
                || {
                    let g = chan.lock();
                    g.queue.len() >= cap && !g.rx_closed
                },
                left,
            );
            match r {
                WaitResult::Notified | WaitResult::Invalid | WaitResult::TimedOut => {}
                WaitResult::Cancelled => leaving = Some(SendTimeoutError::Disconnected(())),
            }
        }
    }

    fn send_rendezvous(&self, v: T, deadline: Deadline) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.chan;
        let mut g = chan.lock();
        if g.rx_closed {
            return Err(SendTimeoutError::Disconnected(v));
        }
        // Offer the value at once (a `try_recv` may take it), then wait
        // until it is taken (invariant 4).
        let seq = g.next_seq;
        let wake = chan.push(&mut g, v);
        g.tx_parked += 1;
        let mut w = TxWait {
            chan,
            counted: true,
            offer: Some(seq),
        };
        drop(g);
        if wake {
            chan.recv_wq.wake_one_sync();
        }
        let mut cancelled = false;
        loop {
            let mut g = chan.lock();
            if g.taken_below > seq {
                w.settle(&mut g);
                return Ok(());
            }
            let expired = deadline.remaining();
            if g.rx_closed || cancelled || expired.is_err() {
                let v = withdraw(chan, &mut g, seq).expect("an untaken offer is still queued");
                w.settle(&mut g);
                return Err(if g.rx_closed || cancelled {
                    SendTimeoutError::Disconnected(v)
                } else {
                    SendTimeoutError::Timeout(v)
                });
            }
            drop(g);
            let left = expired.unwrap_or(None);
            let r = chan.send_wq.wait_killable(
                || {
                    let g = chan.lock();
                    g.taken_below <= seq && !g.rx_closed
                },
                left,
            );
            if r == WaitResult::Cancelled {
                cancelled = true;
            }
        }
    }
}

impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> SyncSender<T> {
        self.chan.add_sender();
        SyncSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for SyncSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncSender").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Receiver.

/// The receiving half of a channel. There is exactly one: it is `Send` (it
/// may move to another task or thread) but not `Sync`.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Receiver<T> {
    /// Takes the oldest value, parking while the channel is empty. Fails
    /// once every sender is gone and nothing is queued (or if the task is
    /// cancelled at runtime shutdown).
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(Deadline::NEVER).map_err(|_| RecvError)
    }

    /// Like [`recv`](Self::recv), giving up after `timeout`. A cancelled
    /// task gets `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(Deadline::after(timeout))
    }

    /// Takes the oldest value if there is one; never waits.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let chan = &*self.chan;
        let mut g = chan.lock();
        match chan.pop(&mut g) {
            Some((v, wake)) => {
                drop(g);
                chan.wake_tx(wake);
                Ok(v)
            }
            None if g.tx_closed => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// An iterator that blocks for each value and ends at disconnection.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator over the values queued now; never blocks.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// A receive. Its yields before parking happen in this frame, inlined
    /// into the caller (the runtime's `wait` module, "Switch depth"); the
    /// rest is [`recv_pass`](Self::recv_pass).
    #[inline(always)]
    fn recv_deadline(&self, deadline: Deadline) -> Result<T, RecvTimeoutError> {
        let chan = &*self.chan;
        // Step 1 of the receive protocol (module doc, "Receiving"): seen
        // empty without locking, let a sender get a word in first.
        let mut tried = false;
        if chan.len.load(Ordering::Relaxed) == 0 {
            tried = true;
            chan.before_park();
        } else {
            // A value is there: this is the preemption point (`before_park`
            // is one when the queue is empty).
            executor::maybe_yield();
        }
        loop {
            match self.recv_pass(deadline, &mut tried) {
                Some(r) => return r,
                None => executor::yield_blocking(),
            }
        }
    }

    /// [`recv_deadline`](Self::recv_deadline) from its lock onwards: the
    /// result, or `None` when it should yield before parking (only before
    /// it has marked itself parked: no state is carried over).
    #[inline(never)]
    fn recv_pass(
        &self,
        deadline: Deadline,
        tried: &mut bool,
    ) -> Option<Result<T, RecvTimeoutError>> {
        let chan = &*self.chan;
        // Whether we set rx_parked during this call (to clear it on exit).
        let mut parked = false;
        let mut leaving = None;
        loop {
            let mut g = chan.lock();
            if let Some((v, wake)) = chan.pop(&mut g) {
                if parked {
                    g.rx_in_recv = false;
                    chan.rx_parked.store(false, Ordering::Relaxed);
                }
                drop(g);
                chan.wake_tx(wake);
                return Some(Ok(v));
            }
            let why = if g.tx_closed {
                Some(RecvTimeoutError::Disconnected)
            } else if leaving.is_some() {
                leaving
            } else if deadline.expired() {
                Some(RecvTimeoutError::Timeout)
            } else {
                None
            };
            if let Some(why) = why {
                g.rx_in_recv = false;
                chan.rx_parked.store(false, Ordering::Relaxed);
                return Some(Err(why));
            }
            if !*tried {
                *tried = true;
                drop(g);
                if others_runnable_here() {
                    return None;
                }
                chan.spin_before_park();
                continue;
            }
            g.rx_in_recv = true;
            chan.rx_parked.store(true, Ordering::Relaxed);
            parked = true;
            drop(g);
            let left = deadline.remaining().unwrap_or(Some(Duration::ZERO));
            match chan
                .recv_wq
                .wait_killable(|| chan.rx_parked.load(Ordering::Relaxed), left)
            {
                WaitResult::Notified | WaitResult::Invalid | WaitResult::TimedOut => {}
                WaitResult::Cancelled => leaving = Some(RecvTimeoutError::Disconnected),
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let chan = &*self.chan;
        let mut g = chan.lock();
        g.rx_closed = true;
        g.rx_in_recv = false;
        // Rendezvous offers go back to their (blocked) senders instead.
        let dropped = if chan.flavor == Flavor::Rendezvous {
            LineQueue::new()
        } else {
            chan.len.store(0, Ordering::Relaxed);
            std::mem::take(&mut g.queue)
        };
        drop(g);
        chan.send_wq.wake_all();
        // Values' destructors run outside the lock.
        drop(dropped);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Blocking iterator over a [`Receiver`]'s values ([`Receiver::iter`]).
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator over the values queued now ([`Receiver::try_iter`]).
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Owning blocking iterator ([`Receiver`]'s `IntoIterator`).
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
