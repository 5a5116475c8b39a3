//! Pipes, per pipe(7) (ipc.md §1): a byte stream with any number of read
//! and write ends, a bounded buffer, EOF and EPIPE decided by the counts of
//! open ends, `PIPE_BUF` atomicity, and non-blocking mode.
//!
//! # What this module owns
//!
//! - `Pipe` (crate-internal): the object — a byte ring, the counts of open
//!   read and write ends, the FIFO open generation counters, and three wait
//!   queues (blocked readers, blocked writers, blocked FIFO opens) plus the
//!   poll list.
//! - [`PipeReader`] / [`PipeWriter`]: an open end. Each holds an `Arc` to an
//!   *open file description* (the end plus its `O_NONBLOCK` flag), so
//!   [`try_clone`](PipeReader::try_clone) behaves like `dup(2)`: the clone
//!   shares the non-blocking flag, and the end counts as open until the last
//!   clone is dropped. Dropping an end (also when the owning green process
//!   returns, panics or is unwound at shutdown) closes it: readers then see
//!   EOF, writers EPIPE.
//!
//! # Invariants
//!
//! - All state lives under one mutex (`Pipe::state`), taken once per call
//!   (not per byte). Data moves with one `memcpy` into the ring on write and
//!   one out of it on read.
//! - A write of at most [`PIPE_BUF`] bytes is copied in one lock hold, only
//!   once the whole write fits: it never interleaves with other writers.
//! - Wakers drop the state lock before waking (see `block.rs`).
//!
//! # No lost wakeup, without a fence on the data path
//!
//! A reader or writer that finds data (room) moved reads the waiter counts
//! of the wait queues and the poll list *after* its own hold of the state
//! lock, with no SeqCst fence in between. Every sleeper counts itself in
//! (`WaitQueue` waiter count, `PollList` count) *before* it takes the state
//! lock to check its condition (the queue's `validate`, poll's
//! `readiness`). The state lock's holds are totally ordered: if the
//! sleeper's check comes first, its unlock synchronizes with the waker's
//! lock, so the count it stored before happens-before the waker's read of
//! the count, which therefore sees it; if the waker's hold comes first, the
//! sleeper's check sees the new state and it does not sleep. (This saves one
//! locked instruction per read and per write: about a tenth of a 1-byte
//! round trip on one CPU.)
//! - Readers are woken one at a time (any reader can use any data); a reader
//!   that leaves data behind wakes the next. Writers are all woken when room
//!   frees up, since each waits for a different amount of room.
//!
//! # Differences from Linux (documented, tested where it matters)
//!
//! - Capacity is counted in **bytes**, not page-sized slots: Linux can refuse
//!   a small non-blocking write while bytes of room remain (every slot is
//!   partly used), and stores `capacity − 4096` of a large write into a pipe
//!   holding one byte. This ring stores exactly `capacity` bytes. ipc.md
//!   §1.4 allows this; the three checks of LTP pipe12 hold (see the tests).
//!   The differential tests exclude the cases where slot accounting shows.
//! - The ring's memory grows as data arrives, up to the capacity; a new pipe
//!   allocates nothing.
//! - No `SIGPIPE`: writing with no reader fails with `EPIPE` (ipc.md §1.3).
//! - `pipe-user-pages-soft/hard` are not modelled; `pipe-max-size` is the
//!   Linux default 1 MiB for non-root callers.
//! - The `_timeout` forms fail with `ETIMEDOUT` (`io::ErrorKind::TimedOut`)
//!   when nothing moved in time; an interrupted wait is `EINTR`.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenos_runtime::sync::SpinLock;
use greenos_runtime::trace::BlockOn;
use greenos_runtime::wait::{before_park, spin_before_park, yields_before_park, WaitQueue};

use crate::block::{deadline, wait_until, Deadline};
use crate::errno::Errno;
use crate::poll::{PollEvents, PollList};
use crate::sysv::Cred;

/// `PIPE_BUF`: writes of at most this many bytes are atomic (Linux 4096;
/// ipc.md §1.3).
pub const PIPE_BUF: usize = 4096;
/// Default pipe capacity: 16 pages = 65536 bytes (ipc.md §1.4).
pub const DEFAULT_CAPACITY: usize = 65536;
/// `/proc/sys/fs/pipe-max-size` default: 1 MiB; the most a non-root caller
/// may set (ipc.md §1.4).
pub const PIPE_MAX_SIZE: usize = 1 << 20;
/// The page size capacities are rounded to (ipc.md §1.4).
pub const PAGE_SIZE: usize = 4096;

/// Linux `round_pipe_size()`: sizes above 2^31 are invalid (`None`), below a
/// page round up to a page, the rest up to a power of two (ipc.md §1.4:
/// `0→4096`, `5000→8192`, `70000→131072`).
pub fn round_pipe_size(size: usize) -> Option<usize> {
    if size > 1 << 31 {
        None
    } else if size < PAGE_SIZE {
        Some(PAGE_SIZE)
    } else {
        Some(size.next_power_of_two())
    }
}

/// A byte ring whose storage grows on demand up to `cap`.
struct Ring {
    buf: Vec<u8>,
    cap: usize,
    head: usize,
    len: usize,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring {
            buf: Vec::new(),
            cap,
            head: 0,
            len: 0,
        }
    }

    fn free(&self) -> usize {
        self.cap - self.len
    }

    /// Re-lays the contents at the start of a buffer of `size` bytes.
    fn relayout(&mut self, size: usize) {
        let mut nb = vec![0u8; size];
        let (a, b) = self.slices();
        nb[..a.len()].copy_from_slice(a);
        nb[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.buf = nb;
        self.head = 0;
    }

    fn slices(&self) -> (&[u8], &[u8]) {
        let n = self.buf.len();
        if self.len == 0 {
            return (&[], &[]);
        }
        let first = (n - self.head).min(self.len);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    /// Copies as much of `data` as fits; returns the count.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        if self.len + n > self.buf.len() {
            let want = (self.len + n)
                .next_power_of_two()
                .clamp(PAGE_SIZE, self.cap);
            self.relayout(want);
        }
        let size = self.buf.len();
        // head < size and len <= size: one subtraction wraps (no division
        // on the 1-byte path).
        let mut tail = self.head + self.len;
        if tail >= size {
            tail -= size;
        }
        let first = n.min(size - tail);
        if n == 1 {
            self.buf[tail] = data[0];
        } else {
            self.buf[tail..tail + first].copy_from_slice(&data[..first]);
            if first < n {
                self.buf[..n - first].copy_from_slice(&data[first..n]);
            }
        }
        self.len += n;
        n
    }

    /// Copies out up to `out.len()` bytes; returns the count.
    fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        if n == 0 {
            return 0;
        }
        let size = self.buf.len();
        let first = n.min(size - self.head);
        if n == 1 {
            out[0] = self.buf[self.head];
        } else {
            out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
            if first < n {
                out[first..n].copy_from_slice(&self.buf[..n - first]);
            }
        }
        self.head += n;
        if self.head >= size {
            self.head -= size;
        }
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
        n
    }

    fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        if self.buf.len() > cap {
            self.relayout(cap);
        }
    }
}

pub(crate) struct State {
    ring: Ring,
    pub(crate) readers: usize,
    pub(crate) writers: usize,
    /// FIFO opens for reading / writing so far (Linux `r_counter` /
    /// `w_counter`): a blocked FIFO open waits for the other one to move.
    pub(crate) r_counter: u64,
    pub(crate) w_counter: u64,
}

/// The pipe object (`struct pipe_inode_info`).
pub(crate) struct Pipe {
    pub(crate) state: SpinLock<State>,
    /// `ring.len`, mirrored after every change for the lock-free look of a
    /// reader about to park (`before_park`).
    avail: AtomicUsize,
    read_wq: WaitQueue,
    write_wq: WaitQueue,
    /// Blocked FIFO opens (`fifo.rs`).
    pub(crate) open_wq: WaitQueue,
    pub(crate) poll: PollList,
}

impl Pipe {
    pub(crate) fn new(cap: usize) -> Arc<Pipe> {
        // Block events name a pipe by its number (in creation order).
        static NEXT_PIPE: AtomicU64 = AtomicU64::new(1);
        let label = NEXT_PIPE.fetch_add(1, Ordering::Relaxed);
        Arc::new(Pipe {
            state: SpinLock::new(State {
                ring: Ring::new(cap),
                readers: 0,
                writers: 0,
                r_counter: 0,
                w_counter: 0,
            }),
            avail: AtomicUsize::new(0),
            read_wq: WaitQueue::with_label(BlockOn::Pipe, label),
            write_wq: WaitQueue::with_label(BlockOn::Pipe, label),
            open_wq: WaitQueue::with_label(BlockOn::Pipe, label),
            poll: PollList::new(),
        })
    }

    /// A read. Its yields happen in this frame, inlined into the caller
    /// (the runtime's `wait` module, "Switch depth"); the rest is
    /// [`read_pass`](Self::read_pass).
    #[inline(always)]
    fn read(&self, out: &mut [u8], nonblock: bool, dl: Deadline) -> Result<usize, Errno> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut tried = false;
        if !nonblock && self.avail.load(Ordering::Relaxed) == 0 {
            // Seen empty without the lock (the common case of a reader that
            // keeps up): give the writer its chance before locking at all.
            tried = true;
            before_park(|| self.avail.load(Ordering::Relaxed) != 0);
        }
        loop {
            match self.read_pass(out, nonblock, dl, &mut tried) {
                Some(r) => return r,
                None => greenos_runtime::wait::yield_before_park(),
            }
        }
    }

    /// [`read`](Self::read) until it returns, or until it should yield
    /// before parking (`None`: the caller yields and calls again).
    #[inline(never)]
    fn read_pass(
        &self,
        out: &mut [u8],
        nonblock: bool,
        dl: Deadline,
        tried: &mut bool,
    ) -> Option<Result<usize, Errno>> {
        Some(loop {
            let mut s = self.state.lock();
            if s.ring.len > 0 {
                let n = s.ring.pop(out);
                let more = s.ring.len > 0;
                self.avail.store(s.ring.len, Ordering::Relaxed);
                drop(s);
                // The "anyone waiting?" checks need no fence: the state
                // lock orders them (module doc, "No lost wakeup").
                if !self.write_wq.is_empty() {
                    self.write_wq.wake_all();
                }
                if more && !self.read_wq.is_empty() {
                    self.read_wq.wake_one();
                }
                self.poll.notify_fenced();
                break Ok(n);
            }
            if s.writers == 0 {
                break Ok(0);
            }
            if nonblock {
                break Err(Errno::EAGAIN);
            }
            drop(s);
            if !*tried {
                // Let a writer on this CPU go first, or spin briefly for
                // one on another (mpsc's receive protocol).
                *tried = true;
                if yields_before_park() {
                    return None;
                }
                spin_before_park(|| self.avail.load(Ordering::Relaxed) != 0);
                continue;
            }
            if let Err(e) = wait_until(
                &self.read_wq,
                || {
                    let s = self.state.lock();
                    s.ring.len > 0 || s.writers == 0
                },
                dl,
            ) {
                break Err(e);
            }
        })
    }

    /// A write; like [`read`](Self::read), its yield happens in this
    /// inlined frame and the rest in [`write_pass`](Self::write_pass).
    #[inline(always)]
    fn write(&self, data: &[u8], nonblock: bool, dl: Deadline) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut done = 0;
        let mut tried = false;
        loop {
            match self.write_pass(data, nonblock, dl, &mut done, &mut tried) {
                Some(r) => return r,
                None => greenos_runtime::wait::yield_before_park(),
            }
        }
    }

    /// [`write`](Self::write) from `done` bytes written until it returns,
    /// or until it should yield before parking (`None`).
    #[inline(never)]
    fn write_pass(
        &self,
        data: &[u8],
        nonblock: bool,
        dl: Deadline,
        done: &mut usize,
        tried: &mut bool,
    ) -> Option<Result<usize, Errno>> {
        // ipc.md §1.3: up to PIPE_BUF bytes go in whole or not at all.
        let need = if data.len() <= PIPE_BUF {
            data.len()
        } else {
            1
        };
        Some(loop {
            let mut s = self.state.lock();
            if s.readers == 0 {
                break if *done > 0 {
                    Ok(*done)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            if s.ring.free() >= need {
                *done += s.ring.push(&data[*done..]);
                self.avail.store(s.ring.len, Ordering::Relaxed);
                drop(s);
                // No fence: the state lock orders the check (module doc).
                if !self.read_wq.is_empty() {
                    self.read_wq.wake_one_sync();
                }
                self.poll.notify_fenced();
                if *done == data.len() || nonblock {
                    break Ok(*done);
                }
                continue;
            }
            if nonblock {
                break if *done > 0 {
                    Ok(*done)
                } else {
                    Err(Errno::EAGAIN)
                };
            }
            let queued = s.ring.len;
            drop(s);
            if !*tried {
                // As for readers: a reader on this CPU first, or a brief
                // spin for one on another, watching for room to appear.
                *tried = true;
                if yields_before_park() {
                    return None;
                }
                spin_before_park(|| self.avail.load(Ordering::Relaxed) < queued);
                continue;
            }
            let r = wait_until(
                &self.write_wq,
                || {
                    let s = self.state.lock();
                    s.readers == 0 || s.ring.free() >= need
                },
                dl,
            );
            match r {
                Ok(()) => {}
                Err(_) if *done > 0 => break Ok(*done),
                Err(e) => break Err(e),
            }
        })
    }

    fn set_capacity(&self, size: usize) -> Result<usize, Errno> {
        let new = round_pipe_size(size).ok_or(Errno::EINVAL)?;
        if new > PIPE_MAX_SIZE && !Cred::current().is_root() {
            return Err(Errno::EPERM);
        }
        let mut s = self.state.lock();
        if s.ring.len > new {
            return Err(Errno::EBUSY);
        }
        let grew = new > s.ring.cap;
        s.ring.set_cap(new);
        drop(s);
        if grew {
            self.write_wq.wake_all();
            self.poll.notify();
        }
        Ok(new)
    }

    /// Counts one more open end (`pipe()`; FIFO opens count under their own
    /// lock hold in `fifo.rs`; `try_clone` shares the description instead).
    fn open_end(&self, write: bool) {
        let mut s = self.state.lock();
        if write {
            s.writers += 1;
            s.w_counter += 1;
        } else {
            s.readers += 1;
            s.r_counter += 1;
        }
    }

    fn close_end(&self, write: bool) {
        let mut s = self.state.lock();
        let last = if write {
            s.writers -= 1;
            s.writers == 0
        } else {
            s.readers -= 1;
            s.readers == 0
        };
        drop(s);
        if last {
            // ipc.md §1.2/§1.3: every blocked reader sees EOF, every blocked
            // writer EPIPE (LTP pipe13).
            if write {
                self.read_wq.wake_all();
            } else {
                self.write_wq.wake_all();
            }
            self.poll.notify();
        }
    }

    /// poll(2) readiness of one end.
    pub(crate) fn readiness(&self, write: bool) -> PollEvents {
        let s = self.state.lock();
        let mut ev = PollEvents::NONE;
        if write {
            if s.readers == 0 {
                ev = ev | PollEvents::ERR;
            } else if s.ring.free() >= PIPE_BUF.min(s.ring.cap) {
                // Linux: writable while a slot (a page) is free.
                ev = ev | PollEvents::OUT;
            }
        } else {
            if s.ring.len > 0 {
                ev = ev | PollEvents::IN;
            }
            if s.writers == 0 {
                ev = ev | PollEvents::HUP;
            }
        }
        ev
    }
}

/// An open file description of one end.
pub(crate) struct EndFile {
    pub(crate) pipe: Arc<Pipe>,
    nonblocking: AtomicBool,
    write: bool,
}

impl EndFile {
    /// Wraps an end already counted in the pipe's `readers` / `writers`.
    pub(crate) fn new(pipe: Arc<Pipe>, write: bool, nonblocking: bool) -> Arc<EndFile> {
        Arc::new(EndFile {
            pipe,
            nonblocking: AtomicBool::new(nonblocking),
            write,
        })
    }
}

impl Drop for EndFile {
    fn drop(&mut self) {
        self.pipe.close_end(self.write);
    }
}

/// The read end of a pipe or FIFO. Implements [`std::io::Read`] (also for
/// `&PipeReader`, so clones and shared references can read).
pub struct PipeReader {
    pub(crate) f: Arc<EndFile>,
}

/// The write end of a pipe or FIFO. Implements [`std::io::Write`] (also for
/// `&PipeWriter`).
pub struct PipeWriter {
    pub(crate) f: Arc<EndFile>,
}

/// Creates a pipe with the default capacity (65536): `pipe(2)`.
pub fn pipe() -> io::Result<(PipeReader, PipeWriter)> {
    Ok(make(DEFAULT_CAPACITY, false))
}

/// Creates a pipe whose ends start in non-blocking mode: `pipe2(O_NONBLOCK)`
/// (the flag is set on both ends, ipc.md §1.5).
pub fn pipe_nonblocking() -> io::Result<(PipeReader, PipeWriter)> {
    Ok(make(DEFAULT_CAPACITY, true))
}

/// Creates a pipe and sets its capacity as `F_SETPIPE_SZ` would (rounding
/// and errors as [`PipeWriter::set_capacity`]).
pub fn pipe_with_capacity(size: usize) -> io::Result<(PipeReader, PipeWriter)> {
    let (r, w) = make(DEFAULT_CAPACITY, false);
    r.set_capacity(size)?;
    Ok((r, w))
}

fn make(cap: usize, nonblocking: bool) -> (PipeReader, PipeWriter) {
    let p = Pipe::new(cap);
    p.open_end(false);
    p.open_end(true);
    (
        PipeReader {
            f: EndFile::new(p.clone(), false, nonblocking),
        },
        PipeWriter {
            f: EndFile::new(p, true, nonblocking),
        },
    )
}

macro_rules! common_end_methods {
    () => {
        /// Another handle to the same open end (`dup(2)`): it shares the
        /// non-blocking flag, and the end stays open until every clone is
        /// dropped.
        pub fn try_clone(&self) -> io::Result<Self> {
            Ok(Self { f: self.f.clone() })
        }

        /// Sets or clears `O_NONBLOCK` on this open end (and its clones).
        pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
            self.f.nonblocking.store(nonblocking, Ordering::Relaxed);
            Ok(())
        }

        /// Whether `O_NONBLOCK` is set.
        #[inline]
        pub fn is_nonblocking(&self) -> bool {
            self.f.nonblocking.load(Ordering::Relaxed)
        }

        /// The pipe's capacity in bytes (`F_GETPIPE_SZ`); both ends see the
        /// same value.
        pub fn capacity(&self) -> usize {
            self.f.pipe.state.lock().ring.cap
        }

        /// Sets the capacity as `F_SETPIPE_SZ` does and returns the size set:
        /// rounded up to a page, then to a power of two (see
        /// [`round_pipe_size`]). EINVAL above 2^31; EPERM above
        /// [`PIPE_MAX_SIZE`] unless the caller is uid 0; EBUSY if more bytes
        /// are queued than the new size holds. Linux counts page slots where
        /// this counts bytes (module doc).
        pub fn set_capacity(&self, size: usize) -> io::Result<usize> {
            Ok(self.f.pipe.set_capacity(size)?)
        }

        /// Bytes queued now (`ioctl(FIONREAD)`).
        pub fn available(&self) -> usize {
            self.f.pipe.state.lock().ring.len
        }
    };
}

impl PipeReader {
    common_end_methods!();

    /// Reads like [`Read::read`], waiting at most `timeout` for data
    /// (ETIMEDOUT if none came). Non-blocking mode still returns EAGAIN.
    pub fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let nb = self.is_nonblocking();
        Ok(self.f.pipe.read(buf, nb, deadline(Some(timeout)))?)
    }

    /// Reads without blocking, whatever the mode: EAGAIN when empty with a
    /// writer, 0 at EOF.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.f.pipe.read(buf, true, None)?)
    }

    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        &self.f.pipe
    }
}

impl PipeWriter {
    common_end_methods!();

    /// Writes like [`Write::write`], waiting at most `timeout` in total;
    /// returns the bytes written if some were, ETIMEDOUT if none.
    pub fn write_timeout(&self, buf: &[u8], timeout: Duration) -> io::Result<usize> {
        let nb = self.is_nonblocking();
        Ok(self.f.pipe.write(buf, nb, deadline(Some(timeout)))?)
    }

    /// Writes without blocking, whatever the mode (the `O_NONBLOCK` rules:
    /// up to `PIPE_BUF` bytes all or EAGAIN; more: a partial write or
    /// EAGAIN when full).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.f.pipe.write(buf, true, None)?)
    }

    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        &self.f.pipe
    }
}

impl Read for &PipeReader {
    /// Blocks until some data is there (or EOF: 0 once every writer is
    /// gone); EAGAIN in non-blocking mode; EINTR if interrupted.
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let nb = self.is_nonblocking();
        Ok(self.f.pipe.read(buf, nb, None)?)
    }

    /// As `Read::read_exact` (EINTR retried; EOF first: `UnexpectedEof`),
    /// inlined like `read` so that its waits switch in the caller's frame
    /// (the `block` module doc).
    #[inline]
    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ))
                }
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for PipeReader {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    #[inline]
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        (&*self).read_exact(buf)
    }
}

impl Write for &PipeWriter {
    /// Blocking mode writes everything (up to `PIPE_BUF` bytes atomically)
    /// unless every reader goes away (EPIPE, or the count written so far).
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let nb = self.is_nonblocking();
        Ok(self.f.pipe.write(buf, nb, None)?)
    }

    /// As `Write::write_all` (EINTR retried; a write of 0: `WriteZero`),
    /// inlined like `write` (see `read_exact`).
    #[inline]
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ))
                }
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for PipeWriter {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self).write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeReader")
            .field("nonblocking", &self.is_nonblocking())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeWriter")
            .field("nonblocking", &self.is_nonblocking())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_grows() {
        let mut r = Ring::new(8192);
        let data: Vec<u8> = (0..=255).cycle().take(9000).collect();
        assert_eq!(r.push(&data[..3000]), 3000);
        let mut out = vec![0; 2000];
        assert_eq!(r.pop(&mut out), 2000);
        assert_eq!(&out[..], &data[..2000]);
        assert_eq!(r.push(&data[3000..5000]), 2000);
        assert_eq!(r.push(&data), 8192 - 3000);
        let mut all = vec![0; 10000];
        assert_eq!(r.pop(&mut all), 8192);
        assert_eq!(&all[..3000], &data[2000..5000]);
        assert_eq!(&all[3000..8192], &data[..8192 - 3000]);
    }

    #[test]
    fn ring_matches_a_queue_model_byte_by_byte_and_in_runs() {
        // Sizes chosen to cross the end of the buffer with single bytes and
        // with runs, and to grow the buffer while wrapped.
        let mut r = Ring::new(16384);
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u8;
        let mut seed = 0x9e37_79b9_u32;
        for step in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = match seed % 8 {
                0..=3 => 1,
                4 | 5 => (seed as usize >> 8) % 64,
                6 => (seed as usize >> 8) % 5000,
                _ => 4095,
            };
            if step % 2 == 0 {
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                let k = r.push(&data);
                assert_eq!(k, n.min(16384 - model.len()));
                model.extend(&data[..k]);
                next = next.wrapping_sub((n - k) as u8);
            } else {
                let mut out = vec![0; n];
                let k = r.pop(&mut out);
                assert_eq!(k, n.min(model.len()));
                let want: Vec<u8> = model.drain(..k).collect();
                assert_eq!(&out[..k], &want[..]);
            }
            assert_eq!(r.len, model.len());
        }
    }

    #[test]
    fn rounding_matches_linux() {
        assert_eq!(round_pipe_size(0), Some(4096));
        assert_eq!(round_pipe_size(5000), Some(8192));
        assert_eq!(round_pipe_size(70000), Some(131072));
        assert_eq!(round_pipe_size((1 << 31) + 1), None);
    }
}
