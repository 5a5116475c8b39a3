//! Named pipes, per fifo(7) and open(2) (ipc.md §1.6): [`mkfifo`] puts a
//! name in a namespace; [`Fifo`] opens it, with the rendezvous rules.
//!
//! # What this module owns
//!
//! - The FIFO namespace: one map from path to node (mode, owner uid and
//!   gid). It is process-wide: every runtime in the process sees the same
//!   names (the "runtime namespace" of DESIGN.md; there is no filesystem).
//!   Paths are plain strings; no directories are interpreted.
//! - The node's pipe object while any end is open: the node keeps a `Weak`
//!   to it, so once the last reader and the last writer are closed, the pipe
//!   and its buffered data are gone, as in Linux; the next open makes a new
//!   one.
//!
//! # Open rules (ipc.md §1.6)
//!
//! | open | no peer | peer present |
//! |---|---|---|
//! | [`Fifo::open_read`] | blocks until a writer opens | at once |
//! | [`Fifo::open_write`] | blocks until a reader opens | at once |
//! | [`Fifo::open_read_nonblocking`] | at once (reads 0 until a writer comes) | at once |
//! | [`Fifo::open_write_nonblocking`] | ENXIO | at once |
//! | [`Fifo::open_rw`] | at once | at once |
//!
//! A blocked open waits for the other side's *open counter* to move (Linux
//! `r_counter` / `w_counter`), so it ends even if the peer closes again at
//! once. The opening end is counted before waiting, which is what lets two
//! blocking opens meet.
//!
//! Difference from Linux: [`poll`](crate::poll()) reports `HUP` on a read
//! end whenever no writer is open; Linux leaves it out for a FIFO reader
//! that has never seen a writer (its `w_counter` check).
//!
//! Permissions: the creator's `mode` (no umask in greenos) against the
//! caller's uid/gid, owner bits for the creator's uid, group bits for its
//! gid, other bits otherwise; uid 0 may always (`CAP_DAC_OVERRIDE`).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::block::{deadline, wait_until, Deadline};
use crate::errno::Errno;
use crate::pipe::{EndFile, Pipe, PipeReader, PipeWriter, DEFAULT_CAPACITY};
use crate::sysv::{Cred, IpcPerm, Key, ACCESS_READ, ACCESS_WRITE};

/// Linux `PATH_MAX`: longer paths are ENAMETOOLONG.
const PATH_MAX: usize = 4096;

struct Node {
    perm: IpcPerm,
    pipe: Weak<Pipe>,
}

static NAMES: LazyLock<Mutex<HashMap<String, Node>>> = LazyLock::new(Default::default);

fn check_path(path: &str) -> Result<(), Errno> {
    if path.is_empty() {
        Err(Errno::ENOENT)
    } else if path.len() >= PATH_MAX {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

/// `mkfifo(path, mode)`: creates a FIFO owned by the caller with permission
/// bits `mode & 0o777`. EEXIST if the name exists, ENOENT for an empty
/// path, ENAMETOOLONG past `PATH_MAX`.
pub fn mkfifo(path: &str, mode: u32) -> io::Result<()> {
    check_path(path)?;
    let cred = Cred::current();
    let mut g = NAMES.lock();
    if g.contains_key(path) {
        return Err(Errno::EEXIST.into());
    }
    let mut perm = IpcPerm::new(Key::PRIVATE, crate::sysv::IpcFlags::mode(mode), &cred);
    perm.mode = mode & 0o777;
    g.insert(
        path.to_string(),
        Node {
            perm,
            pipe: Weak::new(),
        },
    );
    Ok(())
}

/// `unlink(path)`: removes the name. Ends already open keep working; new
/// opens get ENOENT. ENOENT if there is no such FIFO.
pub fn unlink(path: &str) -> io::Result<()> {
    check_path(path)?;
    match NAMES.lock().remove(path) {
        Some(_) => Ok(()),
        None => Err(Errno::ENOENT.into()),
    }
}

/// Opening named pipes (a namespace only: the ends are [`PipeReader`] and
/// [`PipeWriter`]).
#[derive(Debug)]
pub struct Fifo(());

/// The other side as an opener saw it, in the same lock hold that counted
/// the new end: whether it had an end open, and its open counter.
#[derive(Clone, Copy)]
struct Peer {
    open: bool,
    gen: u64,
}

/// Finds the node, checks permission, and counts a new end on its pipe.
fn attach(path: &str, read: bool, write: bool, enxio: bool) -> Result<(Arc<Pipe>, Peer), Errno> {
    check_path(path)?;
    let cred = Cred::current();
    let mut g = NAMES.lock();
    let node = g.get_mut(path).ok_or(Errno::ENOENT)?;
    let access = (if read { ACCESS_READ } else { 0 }) | (if write { ACCESS_WRITE } else { 0 });
    node.perm.check(&cred, access)?;
    let pipe = match node.pipe.upgrade() {
        Some(p) => p,
        None => {
            if enxio {
                return Err(Errno::ENXIO);
            }
            let p = Pipe::new(DEFAULT_CAPACITY);
            node.pipe = Arc::downgrade(&p);
            p
        }
    };
    let mut st = pipe.state.lock();
    if enxio && st.readers == 0 {
        return Err(Errno::ENXIO);
    }
    // The peer is read in the same hold that counts us: a peer that opens
    // and closes after this moves its counter, which the waiter sees.
    let peer = if read {
        Peer {
            open: st.writers > 0,
            gen: st.w_counter,
        }
    } else {
        Peer {
            open: st.readers > 0,
            gen: st.r_counter,
        }
    };
    if read {
        st.readers += 1;
        st.r_counter += 1;
    }
    if write {
        st.writers += 1;
        st.w_counter += 1;
    }
    drop(st);
    drop(g);
    pipe.open_wq.wake_all();
    pipe.poll.notify();
    Ok((pipe, peer))
}

/// Waits until the other side's open counter moves past `peer.gen`, unless
/// that side had an end open when we attached.
fn rendezvous(pipe: &Pipe, want_writer: bool, peer: Peer, dl: Deadline) -> Result<(), Errno> {
    if peer.open {
        return Ok(());
    }
    let moved = || {
        let s = pipe.state.lock();
        if want_writer {
            s.w_counter != peer.gen
        } else {
            s.r_counter != peer.gen
        }
    };
    while !moved() {
        wait_until(&pipe.open_wq, moved, dl)?;
    }
    Ok(())
}

fn open_read(path: &str, nonblock: bool, dl: Deadline) -> Result<PipeReader, Errno> {
    let (pipe, peer) = attach(path, true, false, false)?;
    let r = PipeReader {
        f: EndFile::new(pipe.clone(), false, nonblock),
    };
    if !nonblock {
        // On error `r` is dropped, which closes the end again.
        rendezvous(&pipe, true, peer, dl)?;
    }
    Ok(r)
}

fn open_write(path: &str, nonblock: bool, dl: Deadline) -> Result<PipeWriter, Errno> {
    let (pipe, peer) = attach(path, false, true, nonblock)?;
    let w = PipeWriter {
        f: EndFile::new(pipe.clone(), true, nonblock),
    };
    if !nonblock {
        rendezvous(&pipe, false, peer, dl)?;
    }
    Ok(w)
}

impl Fifo {
    /// `open(path, O_RDONLY)`: blocks until some writer opens (returns at
    /// once if one is open). ENOENT, EACCES (no read permission), EINTR.
    pub fn open_read(path: &str) -> io::Result<PipeReader> {
        Ok(open_read(path, false, None)?)
    }

    /// [`open_read`](Self::open_read) waiting at most `timeout` for a writer
    /// (then ETIMEDOUT).
    pub fn open_read_timeout(path: &str, timeout: Duration) -> io::Result<PipeReader> {
        Ok(open_read(path, false, deadline(Some(timeout)))?)
    }

    /// `open(path, O_RDONLY | O_NONBLOCK)`: succeeds at once; the end is
    /// non-blocking.
    pub fn open_read_nonblocking(path: &str) -> io::Result<PipeReader> {
        Ok(open_read(path, true, None)?)
    }

    /// `open(path, O_WRONLY)`: blocks until some reader opens. ENOENT,
    /// EACCES (no write permission), EINTR.
    pub fn open_write(path: &str) -> io::Result<PipeWriter> {
        Ok(open_write(path, false, None)?)
    }

    /// [`open_write`](Self::open_write) waiting at most `timeout` for a
    /// reader (then ETIMEDOUT).
    pub fn open_write_timeout(path: &str, timeout: Duration) -> io::Result<PipeWriter> {
        Ok(open_write(path, false, deadline(Some(timeout)))?)
    }

    /// `open(path, O_WRONLY | O_NONBLOCK)`: ENXIO when no reader has it
    /// open; otherwise a non-blocking end.
    pub fn open_write_nonblocking(path: &str) -> io::Result<PipeWriter> {
        Ok(open_write(path, true, None)?)
    }

    /// `open(path, O_RDWR)`: both ends at once, never blocks (Linux
    /// behaviour; needs read and write permission).
    pub fn open_rw(path: &str) -> io::Result<(PipeReader, PipeWriter)> {
        let (pipe, _) = attach(path, true, true, false)?;
        Ok((
            PipeReader {
                f: EndFile::new(pipe.clone(), false, false),
            },
            PipeWriter {
                f: EndFile::new(pipe, true, false),
            },
        ))
    }
}
