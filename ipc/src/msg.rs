//! System V message queues: `msgget`, `msgsnd`, `msgrcv`, `msgctl`, per
//! msgget(2)/msgop(2)/msgctl(2) and Linux `ipc/msg.c` (ipc.md §2).
//!
//! # What this module owns
//!
//! - `MsgQueue` (crate-internal): one queue — its `msqid_ds` fields and
//!   messages under one mutex, a wait queue of blocked receivers, one of
//!   blocked senders, and a poll list.
//! - The global registry of queues (`MSGMNI` of them), built on
//!   [`sysv::Registry`](crate::sysv::Registry).
//!
//! # Invariants
//!
//! - `cbytes` is the sum of the queued texts' lengths; `cbytes ≤ qbytes` and
//!   `qnum ≤ qbytes` after every send (`msg_fits_inqueue`, ipc.md §2.3),
//!   unless `IPC_SET` lowered `qbytes` below what is queued.
//! - A removed queue (`removed`) never takes or gives a message again; every
//!   caller blocked on it when it was removed returns EIDRM; its id gives
//!   EINVAL from then on (the registry).
//! - The message is copied into the queue at `msgsnd` (the caller's buffer
//!   may be reused at once) and out of it at `msgrcv`.
//!
//! # Differences from Linux
//!
//! - No pipelined send: a message is always queued, and every blocked
//!   receiver is woken to look (Linux hands it to the first matching blocked
//!   receiver directly). What callers see is the same except which of
//!   several blocked matching receivers gets it; a blocked receiver whose
//!   buffer is too small gets E2BIG, as in Linux, and the message stays.
//! - The `_timeout` forms (no Linux equivalent) fail with ETIMEDOUT.
//! - `MSG_COPY`, `IPC_INFO`, `MSG_INFO`, `MSG_STAT` are not provided.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use greenos_runtime::sync::SpinLock;
use greenos_runtime::trace::BlockOn;
use greenos_runtime::wait::{spin_before_park, yields_before_park, WaitQueue};

use crate::block::{deadline, run_passes, wait_until, Deadline, Pass};
use crate::errno::Errno;
use crate::poll::{PollEvents, PollList};
use crate::sysv::{Cred, IpcFlags, IpcObject, IpcPerm, Key, Registry, ACCESS_READ, ACCESS_WRITE};

/// `MSGMAX`: the largest message text, 8192 bytes (ipc.md §2.6).
pub const MSGMAX: usize = 8192;
/// `MSGMNB`: the default `msg_qbytes`, 16384 (ipc.md §2.6).
pub const MSGMNB: usize = 16384;
/// `MSGMNI`: the most queues that may exist, 32000 (ipc.md §2.6).
pub const MSGMNI: usize = 32000;

/// A message queue identifier (`msqid`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MsqId(pub i32);

/// The flags of `msgsnd` / `msgrcv` (Linux values).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MsgFlags(pub u32);

impl MsgFlags {
    /// No flags: block.
    pub const NONE: MsgFlags = MsgFlags(0);
    /// `IPC_NOWAIT` (0o4000): EAGAIN (send) or ENOMSG (receive) instead of
    /// blocking.
    pub const NOWAIT: MsgFlags = MsgFlags(0o4000);
    /// `MSG_NOERROR` (0o10000): truncate a too-long message instead of E2BIG.
    pub const NOERROR: MsgFlags = MsgFlags(0o10000);
    /// `MSG_EXCEPT` (0o20000): with `msgtyp > 0`, the first message whose
    /// type differs.
    pub const EXCEPT: MsgFlags = MsgFlags(0o20000);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | rhs.0)
    }
}

/// `struct msqid_ds` (times in seconds since the Unix epoch, 0 = never).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MsqidDs {
    /// Ownership and permissions.
    pub perm: IpcPerm,
    /// Time of the last `msgsnd`.
    pub stime: i64,
    /// Time of the last `msgrcv`.
    pub rtime: i64,
    /// Time of creation or of the last `IPC_SET`.
    pub ctime: i64,
    /// Bytes of text queued (`msg_cbytes`).
    pub cbytes: usize,
    /// Messages queued (`msg_qnum`).
    pub qnum: usize,
    /// Limit on queued bytes, and on queued messages (`msg_qbytes`).
    pub qbytes: usize,
    /// Pid of the last `msgsnd`.
    pub lspid: u64,
    /// Pid of the last `msgrcv`.
    pub lrpid: u64,
}

/// The fields `IPC_SET` changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MsqSet {
    /// New owner uid.
    pub uid: u32,
    /// New owner gid.
    pub gid: u32,
    /// New permission bits (low nine used).
    pub mode: u32,
    /// New `msg_qbytes` (above [`MSGMNB`] needs uid 0, else EPERM).
    pub qbytes: usize,
}

impl From<MsqidDs> for MsqSet {
    fn from(ds: MsqidDs) -> MsqSet {
        MsqSet {
            uid: ds.perm.uid,
            gid: ds.perm.gid,
            mode: ds.perm.mode,
            qbytes: ds.qbytes,
        }
    }
}

/// A `msgctl` command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MsgCtl {
    /// `IPC_STAT`: needs read permission.
    Stat,
    /// `IPC_SET`: owner, creator or uid 0.
    Set(MsqSet),
    /// `IPC_RMID`: owner, creator or uid 0; wakes every blocked caller with
    /// EIDRM.
    Remove,
}

struct Message {
    mtype: i64,
    text: Text,
}

/// Texts up to this many bytes live inside the queue's entry.
const INLINE_TEXT: usize = 30;
const _: () = assert!(INLINE_TEXT <= u8::MAX as usize);

/// A message's text: inline when short (no allocation and free per small
/// message, as the kernel keeps a message's first bytes in its `msg_msg`
/// header's own allocation), boxed otherwise.
enum Text {
    /// `bytes[..len]`.
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    /// A longer text.
    Heap(Box<[u8]>),
}

impl Text {
    fn new(data: &[u8]) -> Text {
        if data.len() <= INLINE_TEXT {
            let mut bytes = [0; INLINE_TEXT];
            bytes[..data.len()].copy_from_slice(data);
            Text::Inline {
                len: data.len() as u8,
                bytes,
            }
        } else {
            Text::Heap(data.into())
        }
    }
}

impl std::ops::Deref for Text {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Heap(b) => b,
        }
    }
}

struct State {
    perm: IpcPerm,
    msgs: VecDeque<Message>,
    cbytes: usize,
    qbytes: usize,
    stime: i64,
    rtime: i64,
    ctime: i64,
    lspid: u64,
    lrpid: u64,
    removed: bool,
}

impl State {
    /// Linux `msg_fits_inqueue`: both the bytes and the message count must
    /// stay within `qbytes` (ipc.md §2.3).
    fn fits(&self, len: usize) -> bool {
        self.cbytes + len <= self.qbytes && self.msgs.len() < self.qbytes
    }

    /// Linux `find_msg` with `convert_mode` (ipc.md §2.4): the index of the
    /// message `msgtyp` selects.
    fn find(&self, msgtyp: i64, except: bool) -> Option<usize> {
        if msgtyp == 0 {
            return if self.msgs.is_empty() { None } else { Some(0) };
        }
        if msgtyp < 0 {
            // Lowest type ≤ |msgtyp|, earliest among equals; EXCEPT ignored.
            let mut bound = msgtyp.unsigned_abs();
            let mut best = None;
            for (i, m) in self.msgs.iter().enumerate() {
                if (m.mtype as u64) <= bound {
                    best = Some(i);
                    if m.mtype == 1 {
                        break;
                    }
                    bound = m.mtype as u64 - 1;
                }
            }
            return best;
        }
        let wanted = |m: &Message| (m.mtype == msgtyp) != except;
        // The front decides the common cases (an empty queue, one message,
        // the wanted type first) without setting up a scan.
        match self.msgs.front() {
            None => None,
            Some(m) if wanted(m) => Some(0),
            Some(_) if self.msgs.len() == 1 => None,
            Some(_) => self.msgs.iter().skip(1).position(wanted).map(|i| i + 1),
        }
    }
}

/// One message queue (`struct msg_queue`).
pub(crate) struct MsgQueue {
    state: SpinLock<State>,
    /// Messages sent so far (bumped under the lock): a receiver about to
    /// park watches it without the lock (`before_park`).
    sends: AtomicU64,
    recv_wq: WaitQueue,
    send_wq: WaitQueue,
    pub(crate) poll: PollList,
}

impl IpcObject for MsgQueue {
    fn perm(&self) -> IpcPerm {
        self.state.lock().perm
    }
}

impl MsgQueue {
    pub(crate) fn readiness(&self) -> PollEvents {
        let s = self.state.lock();
        if s.removed {
            return PollEvents::NVAL;
        }
        let mut ev = PollEvents::NONE;
        if !s.msgs.is_empty() {
            ev = ev | PollEvents::IN;
        }
        if s.fits(0) {
            ev = ev | PollEvents::OUT;
        }
        ev
    }

    /// Wakes the receivers after a send made under the state lock, which
    /// the caller has dropped (no fence needed before the check: see
    /// `send`).
    fn wake_receivers(&self) {
        if self.recv_wq.is_empty() {
            return;
        }
        // One waiter (a ping-pong peer): a sync wakeup; several: all look,
        // since each waits for its own type.
        self.recv_wq.wake_all_sync();
    }
}

static QUEUES: LazyLock<Registry<MsgQueue>> = LazyLock::new(|| Registry::new(MSGMNI));

greenos_runtime::task_local! {
    /// The calling task's last queue lookup (see `Registry::lookup_cached`).
    static LAST_QUEUE: crate::sysv::LookupCache<MsgQueue> = std::cell::RefCell::new(None);
}

pub(crate) fn lookup(id: MsqId) -> Result<Arc<MsgQueue>, Errno> {
    QUEUES.lookup_cached(id.0, &LAST_QUEUE)
}

/// Seconds since the epoch, for the `*_time` fields: the coarse clock
/// (the tick-granular `CLOCK_REALTIME_COARSE`, no TSC read) is plenty for a
/// seconds field and much cheaper on the per-operation path.
pub(crate) fn now_secs() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        ts.tv_sec
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// `msgget(key, flags)`: the queue for `key`, created if `flags` has
/// `CREAT` (or `key` is [`Key::PRIVATE`]). ENOENT (no queue, no CREAT),
/// EEXIST (CREAT|EXCL and it exists), EACCES (the mode bits in `flags` are
/// not granted), ENOSPC (MSGMNI queues exist). ipc.md §2.2.
pub fn msgget(key: Key, flags: IpcFlags) -> io::Result<MsqId> {
    let cred = Cred::current();
    let (id, _) = QUEUES.get(
        key,
        flags,
        &cred,
        |perm| {
            // Block events name the queue by its key (the id is assigned
            // after this closure).
            let label = perm.key.0 as u32 as u64;
            Ok(MsgQueue {
                state: SpinLock::new(State {
                    perm,
                    msgs: VecDeque::new(),
                    cbytes: 0,
                    qbytes: MSGMNB,
                    stime: 0,
                    rtime: 0,
                    ctime: now_secs(),
                    lspid: 0,
                    lrpid: 0,
                    removed: false,
                }),
                sends: AtomicU64::new(0),
                recv_wq: WaitQueue::with_label(BlockOn::MsgQueue, label),
                send_wq: WaitQueue::with_label(BlockOn::MsgQueue, label),
                poll: PollList::new(),
            })
        },
        |_| Ok(()),
    )?;
    Ok(MsqId(id))
}

/// `msgsnd(id, {mtype, data}, flags)`: queues a copy of `data` with type
/// `mtype`, blocking while the queue is full (unless `NOWAIT`: EAGAIN).
/// EINVAL for `mtype < 1`, `data` longer than [`MSGMAX`] or a bad id;
/// EACCES without write permission; EIDRM if the queue is removed while
/// waiting; EINTR if interrupted. ipc.md §2.3.
pub fn msgsnd(id: MsqId, mtype: i64, data: &[u8], flags: MsgFlags) -> io::Result<()> {
    Ok(send(id, mtype, data, flags, None)?)
}

/// [`msgsnd`] waiting at most `timeout` for room (then ETIMEDOUT).
pub fn msgsnd_timeout(
    id: MsqId,
    mtype: i64,
    data: &[u8],
    flags: MsgFlags,
    timeout: Duration,
) -> io::Result<()> {
    Ok(send(id, mtype, data, flags, deadline(Some(timeout)))?)
}

fn send(id: MsqId, mtype: i64, data: &[u8], flags: MsgFlags, dl: Deadline) -> Result<(), Errno> {
    if data.len() > MSGMAX || id.0 < 0 || mtype < 1 {
        return Err(Errno::EINVAL);
    }
    QUEUES.with_cached_cred(id.0, &LAST_QUEUE, |q, cred| {
        send_on(q, cred, mtype, data, flags, dl)
    })?
}

/// [`send`] on the queue looked up, as `cred`.
fn send_on(
    q: &MsgQueue,
    cred: Cred,
    mtype: i64,
    data: &[u8],
    flags: MsgFlags,
    dl: Deadline,
) -> Result<(), Errno> {
    let mut msg = Some(Message {
        mtype,
        text: Text::new(data),
    });
    loop {
        let mut s = q.state.lock();
        // Re-checked every round, as Linux does (IPC_SET may change it).
        s.perm.check(&cred, ACCESS_WRITE)?;
        if s.removed {
            return Err(Errno::EIDRM);
        }
        if s.fits(data.len()) {
            s.msgs.push_back(msg.take().expect("sent once"));
            s.cbytes += data.len();
            s.lspid = cred.pid;
            s.stime = now_secs();
            // Only senders write it, under the state lock we hold: a load
            // and a store (no locked instruction).
            let sent = q.sends.load(Ordering::Relaxed);
            q.sends.store(sent + 1, Ordering::Relaxed);
            drop(s);
            // No fence before the "anyone waiting?" checks: the state lock
            // orders them (pipe.rs, "No lost wakeup": receivers count
            // themselves in before their `validate` and `readiness` take it).
            q.wake_receivers();
            q.poll.notify_fenced();
            return Ok(());
        }
        if flags.contains(MsgFlags::NOWAIT) {
            return Err(Errno::EAGAIN);
        }
        drop(s);
        wait_until(
            &q.send_wq,
            || {
                let s = q.state.lock();
                s.removed || s.fits(data.len())
            },
            dl,
        )?;
    }
}

/// `msgrcv(id, buf, msgtyp, flags)`: takes the message `msgtyp` selects
/// (0: the first; > 0: the first of that type, or with `EXCEPT` the first of
/// another type; < 0: the lowest type ≤ |msgtyp|, earliest among equals),
/// copies its text into `buf` and returns `(mtype, len)`. A text longer than
/// `buf` is E2BIG and stays queued, unless `NOERROR` (cut to fit). No match:
/// blocks, or ENOMSG with `NOWAIT`. EINVAL for a bad id, EACCES without read
/// permission, EIDRM if removed while waiting, EINTR if interrupted.
/// ipc.md §2.4.
#[inline(always)]
pub fn msgrcv(id: MsqId, buf: &mut [u8], msgtyp: i64, flags: MsgFlags) -> io::Result<(i64, usize)> {
    Ok(recv(id, buf, msgtyp, flags, None)?)
}

/// [`msgrcv`] waiting at most `timeout` for a message (then ETIMEDOUT).
pub fn msgrcv_timeout(
    id: MsqId,
    buf: &mut [u8],
    msgtyp: i64,
    flags: MsgFlags,
    timeout: Duration,
) -> io::Result<(i64, usize)> {
    Ok(recv(id, buf, msgtyp, flags, deadline(Some(timeout)))?)
}

/// `msgrcv`'s body: passes of [`recv_pass`], the yield before parking in
/// the caller's frame (`block` module doc).
#[inline(always)]
fn recv(
    id: MsqId,
    buf: &mut [u8],
    msgtyp: i64,
    flags: MsgFlags,
    dl: Deadline,
) -> Result<(i64, usize), Errno> {
    run_passes(|tried| recv_pass(id, buf, msgtyp, flags, dl, tried))
}

/// One pass of [`recv`]: `tried` says the caller already yielded once.
#[inline(never)]
fn recv_pass(
    id: MsqId,
    buf: &mut [u8],
    msgtyp: i64,
    flags: MsgFlags,
    dl: Deadline,
    tried: bool,
) -> Pass<(i64, usize)> {
    if id.0 < 0 {
        return Pass::Done(Err(Errno::EINVAL));
    }
    QUEUES
        .with_cached_cred(id.0, &LAST_QUEUE, |q, cred| {
            recv_on(q, cred, buf, msgtyp, flags, dl, tried).into()
        })
        .into()
}

/// [`recv`] on the queue looked up, as `cred`.
fn recv_on(
    q: &MsgQueue,
    cred: Cred,
    buf: &mut [u8],
    msgtyp: i64,
    flags: MsgFlags,
    dl: Deadline,
    mut tried: bool,
) -> Result<Pass<(i64, usize)>, Errno> {
    let except = flags.contains(MsgFlags::EXCEPT);
    loop {
        let mut s = q.state.lock();
        s.perm.check(&cred, ACCESS_READ)?;
        if s.removed {
            return Err(Errno::EIDRM);
        }
        if let Some(i) = s.find(msgtyp, except) {
            let len = s.msgs[i].text.len();
            if len > buf.len() && !flags.contains(MsgFlags::NOERROR) {
                return Err(Errno::E2BIG);
            }
            let m = if i == 0 {
                s.msgs.pop_front()
            } else {
                s.msgs.remove(i)
            }
            .expect("found above");
            s.cbytes -= len;
            s.lrpid = cred.pid;
            s.rtime = now_secs();
            drop(s);
            let n = len.min(buf.len());
            buf[..n].copy_from_slice(&m.text[..n]);
            // Unfenced, as in `send`.
            if !q.send_wq.is_empty() {
                q.send_wq.wake_all();
            }
            q.poll.notify_fenced();
            return Ok(Pass::Done(Ok((m.mtype, n))));
        }
        if flags.contains(MsgFlags::NOWAIT) {
            return Err(Errno::ENOMSG);
        }
        drop(s);
        if !tried {
            tried = true;
            if yields_before_park() {
                return Ok(Pass::YieldFirst);
            }
            let seen = q.sends.load(Ordering::Relaxed);
            spin_before_park(|| q.sends.load(Ordering::Relaxed) != seen);
            continue;
        }
        wait_until(
            &q.recv_wq,
            || {
                let s = q.state.lock();
                s.removed || s.find(msgtyp, except).is_some() || !s.perm.permits(&cred, ACCESS_READ)
            },
            dl,
        )?;
    }
}

/// `msgctl(id, cmd)`: `Stat` returns `Some(msqid_ds)` (read permission, else
/// EACCES); `Set` and `Remove` return `None` (owner, creator or uid 0, else
/// EPERM; raising `qbytes` above [`MSGMNB`] needs uid 0). EINVAL for a bad
/// id. ipc.md §2.5.
pub fn msgctl(id: MsqId, cmd: MsgCtl) -> io::Result<Option<MsqidDs>> {
    Ok(ctl(id, cmd)?)
}

/// `msgctl(id, IPC_STAT)`.
pub fn msgctl_stat(id: MsqId) -> io::Result<MsqidDs> {
    Ok(ctl(id, MsgCtl::Stat)?.expect("Stat returns the msqid_ds"))
}

fn ctl(id: MsqId, cmd: MsgCtl) -> Result<Option<MsqidDs>, Errno> {
    if id.0 < 0 {
        return Err(Errno::EINVAL);
    }
    let cred = Cred::current();
    let q = lookup(id)?;
    match cmd {
        MsgCtl::Stat => {
            let s = q.state.lock();
            s.perm.check(&cred, ACCESS_READ)?;
            Ok(Some(MsqidDs {
                perm: s.perm,
                stime: s.stime,
                rtime: s.rtime,
                ctime: s.ctime,
                cbytes: s.cbytes,
                qnum: s.msgs.len(),
                qbytes: s.qbytes,
                lspid: s.lspid,
                lrpid: s.lrpid,
            }))
        }
        MsgCtl::Set(set) => {
            let mut s = q.state.lock();
            if s.removed {
                return Err(Errno::EINVAL);
            }
            s.perm.check_owner(&cred)?;
            if set.qbytes > MSGMNB && !cred.is_root() {
                return Err(Errno::EPERM);
            }
            s.qbytes = set.qbytes;
            s.perm.uid = set.uid;
            s.perm.gid = set.gid;
            s.perm.mode = set.mode & 0o777;
            s.ctime = now_secs();
            drop(s);
            // Senders re-check room, receivers their permission.
            q.send_wq.wake_all();
            q.recv_wq.wake_all();
            q.poll.notify();
            Ok(None)
        }
        MsgCtl::Remove => {
            q.perm().check_owner(&cred)?;
            let q = QUEUES.remove(id.0)?;
            let mut s = q.state.lock();
            s.removed = true;
            s.msgs.clear();
            s.cbytes = 0;
            drop(s);
            q.send_wq.wake_all();
            q.recv_wq.wake_all();
            q.poll.notify();
            Ok(None)
        }
    }
}
