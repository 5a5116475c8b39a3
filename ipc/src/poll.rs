//! Waiting on many objects at once: [`poll`], like poll(2), over pipe ends,
//! FIFO ends and System V message queues.
//!
//! # Design
//!
//! Every pollable object owns a `PollList`: the pollers currently
//! interested in it. A `poll` call makes one `PollWaiter` (a `fired` flag and
//! its own `WaitQueue`), registers it on the list of every object it watches,
//! and then loops:
//!
//! 1. clear `fired`;
//! 2. compute every entry's readiness (each object's state under its lock);
//! 3. if something is ready (or the timeout is zero) return;
//! 4. else sleep on its own queue unless `fired` is set (`validate`).
//!
//! Each object calls `PollList::notify` after any state change a poller
//! could care about (data in, room freed, an end closed, removal): it sets
//! `fired` on every registered waiter and wakes it.
//!
//! # Why no wakeup is lost
//!
//! - Registration vs. the notifier's fast path: the poller stores the list
//!   length, issues a SeqCst fence, then reads object state (step 2); a
//!   notifier publishes the state (object lock released), issues a SeqCst
//!   fence, then reads the length. One of them sees the other.
//! - Step 1 vs. a notification: the object state is read under the object's
//!   lock after `fired` is cleared. If the notifier's state change is ordered
//!   before that lock hold, step 2 sees it; otherwise the notifier's
//!   `fired = true` comes after the clear and step 4's `validate` sees it
//!   (and the queue's own validate protocol covers the sleep itself).
//!
//! `tests/ipc_poll.rs` runs a poller against a writer many times across two
//! CPUs with only a watchdog timeout; a lost wakeup shows up as a timeout.

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos_runtime::wait::WaitQueue;
use parking_lot::Mutex;

use crate::block::{deadline, wait_until};
use crate::errno::Errno;
use crate::msg::{MsgQueue, MsqId};
use crate::pipe::{Pipe, PipeReader, PipeWriter};

/// The `events` / `revents` bits of `struct pollfd` (Linux values).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PollEvents(pub i16);

impl PollEvents {
    /// Nothing.
    pub const NONE: PollEvents = PollEvents(0);
    /// `POLLIN`: a read would not block (data, or EOF together with HUP).
    pub const IN: PollEvents = PollEvents(libc::POLLIN);
    /// `POLLOUT`: a write of up to `PIPE_BUF` bytes (a message queue: a
    /// zero-length message) would not block.
    pub const OUT: PollEvents = PollEvents(libc::POLLOUT);
    /// `POLLERR`: a pipe's write end with no reader left. Always reported.
    pub const ERR: PollEvents = PollEvents(libc::POLLERR);
    /// `POLLHUP`: a pipe's read end with no writer left. Always reported.
    pub const HUP: PollEvents = PollEvents(libc::POLLHUP);
    /// `POLLNVAL`: the entry names no object (a removed message queue).
    /// Always reported.
    pub const NVAL: PollEvents = PollEvents(libc::POLLNVAL);

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: PollEvents) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: PollEvents) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for PollEvents {
    type Output = PollEvents;
    fn bitor(self, rhs: PollEvents) -> PollEvents {
        PollEvents(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for PollEvents {
    type Output = PollEvents;
    fn bitand(self, rhs: PollEvents) -> PollEvents {
        PollEvents(self.0 & rhs.0)
    }
}

impl std::fmt::Debug for PollEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Self::IN, "IN"),
            (Self::OUT, "OUT"),
            (Self::ERR, "ERR"),
            (Self::HUP, "HUP"),
            (Self::NVAL, "NVAL"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "PollEvents({})", set.join("|"))
    }
}

/// What a [`PollFd`] watches.
#[derive(Debug, Clone, Copy)]
pub enum PollSource<'a> {
    /// A pipe's or FIFO's read end.
    Reader(&'a PipeReader),
    /// A pipe's or FIFO's write end.
    Writer(&'a PipeWriter),
    /// A System V message queue (readable: a message is queued; writable: a
    /// zero-length message would fit). Not pollable in Linux; a greenos
    /// extension.
    Msq(MsqId),
}

impl<'a> From<&'a PipeReader> for PollSource<'a> {
    fn from(r: &'a PipeReader) -> Self {
        PollSource::Reader(r)
    }
}

impl<'a> From<&'a PipeWriter> for PollSource<'a> {
    fn from(w: &'a PipeWriter) -> Self {
        PollSource::Writer(w)
    }
}

impl From<MsqId> for PollSource<'_> {
    fn from(id: MsqId) -> Self {
        PollSource::Msq(id)
    }
}

/// `struct pollfd`: what to watch, the events asked for, the events found.
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'a> {
    /// The object.
    pub source: PollSource<'a>,
    /// Events asked for (`IN`, `OUT`); `ERR`, `HUP`, `NVAL` are reported
    /// whether asked or not.
    pub events: PollEvents,
    /// Events found by the last [`poll`].
    pub revents: PollEvents,
}

impl<'a> PollFd<'a> {
    /// An entry watching `source` for `events`.
    pub fn new(source: impl Into<PollSource<'a>>, events: PollEvents) -> PollFd<'a> {
        PollFd {
            source: source.into(),
            events,
            revents: PollEvents::NONE,
        }
    }
}

/// One poll call's waiter: registered on every watched object's list.
pub(crate) struct PollWaiter {
    fired: AtomicBool,
    wq: WaitQueue,
}

impl PollWaiter {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.wq.wake_all();
    }
}

/// The pollers interested in one object.
pub(crate) struct PollList {
    count: AtomicUsize,
    waiters: Mutex<Vec<Arc<PollWaiter>>>,
}

impl PollList {
    pub(crate) const fn new() -> PollList {
        PollList {
            count: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
        }
    }

    fn register(&self, w: &Arc<PollWaiter>) {
        let mut g = self.waiters.lock();
        g.push(w.clone());
        self.count.store(g.len(), Ordering::SeqCst);
    }

    fn unregister(&self, w: &Arc<PollWaiter>) {
        let mut g = self.waiters.lock();
        if let Some(i) = g.iter().position(|x| Arc::ptr_eq(x, w)) {
            g.swap_remove(i);
        }
        self.count.store(g.len(), Ordering::SeqCst);
    }

    /// Tells every registered poller to look again. Call after publishing
    /// the state change, with the object's lock released.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        self.notify_fenced();
    }

    /// [`notify`](Self::notify) for a caller that has issued a SeqCst fence
    /// since it published the state change, or that published it under the
    /// object lock which `readiness` takes and calls this after taking that
    /// lock (the lock then orders registration and this check; see
    /// `pipe.rs`, "No lost wakeup").
    #[inline]
    pub(crate) fn notify_fenced(&self) {
        if self.count.load(Ordering::Relaxed) != 0 {
            self.fire_all();
        }
    }

    #[cold]
    #[inline(never)]
    fn fire_all(&self) {
        for w in self.waiters.lock().iter() {
            w.fire();
        }
    }
}

enum Target {
    Pipe(Arc<Pipe>, bool),
    Msq(Arc<MsgQueue>),
    Invalid,
}

impl Target {
    fn list(&self) -> Option<&PollList> {
        match self {
            Target::Pipe(p, _) => Some(&p.poll),
            Target::Msq(q) => Some(&q.poll),
            Target::Invalid => None,
        }
    }

    fn readiness(&self) -> PollEvents {
        match self {
            Target::Pipe(p, w) => p.readiness(*w),
            Target::Msq(q) => q.readiness(),
            Target::Invalid => PollEvents::NVAL,
        }
    }
}

/// Unregisters on every exit path.
struct Registration<'a> {
    targets: &'a [Target],
    waiter: &'a Arc<PollWaiter>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        for t in self.targets {
            if let Some(l) = t.list() {
                l.unregister(self.waiter);
            }
        }
    }
}

/// Waits until at least one entry is ready, like poll(2): fills every
/// entry's `revents` and returns how many entries have some. `timeout`:
/// `None` waits for ever, `Some(ZERO)` just looks. Returns 0 when the time
/// runs out; EINTR when the caller is interrupted. A message queue that
/// does not exist (or was removed) reports `NVAL`.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let targets: Vec<Target> = fds
        .iter()
        .map(|fd| match fd.source {
            PollSource::Reader(r) => Target::Pipe(r.pipe().clone(), false),
            PollSource::Writer(w) => Target::Pipe(w.pipe().clone(), true),
            PollSource::Msq(id) => match crate::msg::lookup(id) {
                Ok(q) => Target::Msq(q),
                Err(_) => Target::Invalid,
            },
        })
        .collect();
    let waiter = Arc::new(PollWaiter {
        fired: AtomicBool::new(false),
        wq: WaitQueue::new(),
    });
    for t in &targets {
        if let Some(l) = t.list() {
            l.register(&waiter);
        }
    }
    let _reg = Registration {
        targets: &targets,
        waiter: &waiter,
    };
    fence(Ordering::SeqCst);
    let dl = deadline(timeout);
    loop {
        waiter.fired.store(false, Ordering::SeqCst);
        let mut ready = 0;
        for (fd, t) in fds.iter_mut().zip(&targets) {
            let always = PollEvents::ERR | PollEvents::HUP | PollEvents::NVAL;
            fd.revents = t.readiness() & (fd.events | always);
            if !fd.revents.is_empty() {
                ready += 1;
            }
        }
        if ready > 0 || timeout == Some(Duration::ZERO) {
            return Ok(ready);
        }
        match wait_until(&waiter.wq, || waiter.fired.load(Ordering::SeqCst), dl) {
            Ok(()) => {}
            Err(Errno::ETIMEDOUT) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}
