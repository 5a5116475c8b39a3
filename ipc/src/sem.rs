//! System V semaphore sets: `semget`, `semop` / `semtimedop`, `semctl`, per
//! semget(2)/semop(2)/semctl(2) (ipc.md §3.5).
//!
//! # What this module owns
//!
//! - `SemSet` (crate-internal): one set — the values, `sempid`,
//!   `semncnt` / `semzcnt` of each semaphore, the `semadj` rows of every
//!   process that used `SEM_UNDO` on it, under one mutex, and one wait queue
//!   for every blocked `semop`.
//! - The global registry of sets (`SEMMNI`).
//! - The per-process undo list: a `task_local!` (a plain thread's
//!   `thread_local!` outside the runtime) naming the sets the process used
//!   with `SEM_UNDO`; its `Drop` — run when the green process ends, however
//!   it ends — adds each `semadj` back, clamped to `0..=SEMVMX` as Linux
//!   does at exit.
//!
//! # Invariants
//!
//! - An operation array is applied all or nothing, in array order, on a
//!   tentative copy (duplicates of one `sem_num` see the earlier ops).
//! - Every `0 ≤ semval ≤ SEMVMX`; every `semadj` in `-(SEMAEM+1)..=SEMAEM`
//!   (else ERANGE).
//! - A blocked `semop` counts itself in `semncnt` or `semzcnt` of the
//!   semaphore whose op blocked it, from just before it sleeps until it
//!   wakes (GETNCNT / GETZCNT).
//! - Any change of values wakes the waiters, which re-run their arrays;
//!   removal wakes them with EIDRM.
//!
//! # Differences from Linux
//!
//! - Waiters are re-tried in wake-queue order rather than through Linux's
//!   per-semaphore pending lists; which of two competing waiters wins can
//!   differ, what each sees cannot.
//! - `SETALL` takes exactly `nsems` values (EINVAL otherwise; C passes an
//!   unsized array).
//! - `IPC_INFO`, `SEM_INFO`, `SEM_STAT` are not provided.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use greenos_runtime::sync::SpinLock;
use greenos_runtime::trace::BlockOn;
use greenos_runtime::wait::{spin_before_park, yields_before_park, WaitQueue};

use crate::block::{deadline, run_passes, wait_until, Deadline, Pass};
use crate::errno::Errno;
use crate::msg::now_secs;
use crate::sysv::{Cred, IpcFlags, IpcObject, IpcPerm, Key, Registry, ACCESS_READ, ACCESS_WRITE};

/// `SEMMSL`: most semaphores in a set, 32000 (ipc.md §3.5).
pub const SEMMSL: i32 = 32000;
/// `SEMMNI`: most sets, 32000 (ipc.md §3.5).
pub const SEMMNI: usize = 32000;
/// `SEMOPM`: most operations in one `semop`, 500 (ipc.md §3.5).
pub const SEMOPM: usize = 500;
/// `SEMVMX`: largest semaphore value, 32767 (ipc.md §3.5).
pub const SEMVMX: i32 = 32767;
/// `SEMAEM`: largest `semadj` magnitude, = `SEMVMX` (ipc.md §3.5).
pub const SEMAEM: i32 = SEMVMX;

/// A semaphore set identifier (`semid`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SemId(pub i32);

/// `sem_flg` bits (Linux values).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SemFlags(pub i16);

impl SemFlags {
    /// No flags.
    pub const NONE: SemFlags = SemFlags(0);
    /// `IPC_NOWAIT` (0o4000): EAGAIN instead of blocking.
    pub const NOWAIT: SemFlags = SemFlags(0o4000);
    /// `SEM_UNDO` (0x1000): undo this op when the process exits.
    pub const UNDO: SemFlags = SemFlags(0x1000);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: SemFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SemFlags {
    type Output = SemFlags;
    fn bitor(self, rhs: SemFlags) -> SemFlags {
        SemFlags(self.0 | rhs.0)
    }
}

/// `struct sembuf`: one operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sembuf {
    /// Which semaphore of the set.
    pub sem_num: u16,
    /// > 0: add; 0: wait for zero; < 0: wait until it can subtract.
    pub sem_op: i16,
    /// `NOWAIT`, `UNDO`.
    pub sem_flg: SemFlags,
}

impl Sembuf {
    /// An operation.
    pub const fn new(sem_num: u16, sem_op: i16, sem_flg: SemFlags) -> Sembuf {
        Sembuf {
            sem_num,
            sem_op,
            sem_flg,
        }
    }
}

/// `struct semid_ds`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SemidDs {
    /// Ownership and permissions.
    pub perm: IpcPerm,
    /// Time of the last successful `semop` (seconds since the epoch, 0 =
    /// never).
    pub otime: i64,
    /// Time of creation or of the last `IPC_SET` / `SETVAL` / `SETALL`.
    pub ctime: i64,
    /// Number of semaphores in the set.
    pub nsems: usize,
}

/// The fields `IPC_SET` changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SemSetPerm {
    /// New owner uid.
    pub uid: u32,
    /// New owner gid.
    pub gid: u32,
    /// New permission bits (low nine used).
    pub mode: u32,
}

/// A `semctl` command (the semaphore number is inside the command that
/// uses one).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SemCtl {
    /// `GETVAL`: the value (read permission).
    GetVal(i32),
    /// `SETVAL`: set a value (alter permission; ERANGE outside
    /// `0..=SEMVMX`); clears that semaphore's `semadj` in every process.
    SetVal(i32, i32),
    /// `GETALL` (read permission).
    GetAll,
    /// `SETALL` (alter permission): exactly `nsems` values; clears every
    /// `semadj` of the set.
    SetAll(Vec<u16>),
    /// `GETPID`: pid of the last process to operate on the semaphore.
    GetPid(i32),
    /// `GETNCNT`: processes waiting for the value to increase.
    GetNcnt(i32),
    /// `GETZCNT`: processes waiting for the value to become zero.
    GetZcnt(i32),
    /// `IPC_STAT` (read permission).
    Stat,
    /// `IPC_SET` (owner, creator or uid 0).
    Set(SemSetPerm),
    /// `IPC_RMID` (owner, creator or uid 0): wakes every waiter with EIDRM.
    Remove,
}

/// What a `semctl` command returns.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SemCtlOut {
    /// `GETVAL`, `GETPID`, `GETNCNT`, `GETZCNT`.
    Value(i64),
    /// `GETALL`.
    All(Vec<u16>),
    /// `IPC_STAT`.
    Stat(SemidDs),
    /// Commands that return 0.
    Done,
}

impl SemCtlOut {
    /// The number, for the commands that return one.
    pub fn value(&self) -> Option<i64> {
        match self {
            SemCtlOut::Value(v) => Some(*v),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sem {
    val: i32,
    pid: u64,
    ncnt: usize,
    zcnt: usize,
}

struct State {
    perm: IpcPerm,
    sems: Vec<Sem>,
    otime: i64,
    ctime: i64,
    removed: bool,
    /// `semadj` rows, per undo list (process).
    undo: HashMap<u64, Vec<i32>>,
}

/// One semaphore set (`struct sem_array`).
pub(crate) struct SemSet {
    state: SpinLock<State>,
    /// Changes of any value so far (bumped under the lock): a `semop`
    /// about to park watches it without the lock (`before_park`).
    changes: AtomicU64,
    wq: WaitQueue,
}

impl IpcObject for SemSet {
    fn perm(&self) -> IpcPerm {
        self.state.lock().perm
    }
}

impl SemSet {
    /// Counts a change of values. Called with the state lock held: every
    /// writer holds it, so a load and a store do (no locked instruction);
    /// readers outside the lock only compare the count with an older one.
    fn bump_changes(&self) {
        let n = self.changes.load(Ordering::Relaxed);
        self.changes.store(n + 1, Ordering::Relaxed);
    }

    /// Wakes the waiters after a change of values made under the state
    /// lock, which the caller has dropped. The "anyone waiting?" check
    /// needs no fence: a sleeper counts itself into `wq` before its
    /// `validate` takes the state lock, so the lock orders the two (the
    /// pipe module's "No lost wakeup").
    fn wake(&self) {
        if self.wq.is_empty() {
            return;
        }
        self.wq.wake_all_sync();
    }
}

static SETS: LazyLock<Registry<SemSet>> = LazyLock::new(|| Registry::new(SEMMNI));

greenos_runtime::task_local! {
    /// The calling task's last set lookup (see `Registry::lookup_cached`).
    static LAST_SET: crate::sysv::LookupCache<SemSet> = std::cell::RefCell::new(None);
}

// ---------------------------------------------------------------------------
// Undo lists.

static NEXT_UNDO_OWNER: AtomicU64 = AtomicU64::new(1);

/// A process's undo list: the sets it used with `SEM_UNDO`. Applied on drop.
struct UndoList {
    owner: u64,
    sets: RefCell<Vec<(i32, Weak<SemSet>)>>,
}

impl UndoList {
    fn new() -> UndoList {
        UndoList {
            owner: NEXT_UNDO_OWNER.fetch_add(1, Ordering::Relaxed),
            sets: RefCell::new(Vec::new()),
        }
    }

    fn enlist(&self, id: i32, set: &Arc<SemSet>) -> u64 {
        let mut v = self.sets.borrow_mut();
        if !v
            .iter()
            .any(|(i, w)| *i == id && std::ptr::eq(w.as_ptr(), Arc::as_ptr(set)))
        {
            v.retain(|(_, w)| w.strong_count() > 0);
            v.push((id, Arc::downgrade(set)));
        }
        self.owner
    }
}

impl Drop for UndoList {
    /// Linux `exit_sem`: add each `semadj` back, clamped to `0..=SEMVMX`,
    /// and wake the waiters (ipc.md §3.5).
    fn drop(&mut self) {
        let pid = Cred::current().pid;
        for (_, w) in self.sets.get_mut().drain(..) {
            let Some(set) = w.upgrade() else { continue };
            let mut s = set.state.lock();
            if s.removed {
                continue;
            }
            let Some(row) = s.undo.remove(&self.owner) else {
                continue;
            };
            let mut changed = false;
            for (sem, adj) in s.sems.iter_mut().zip(row) {
                if adj != 0 {
                    sem.val = (sem.val + adj).clamp(0, SEMVMX);
                    sem.pid = pid;
                    changed = true;
                }
            }
            if changed {
                // Counted like every other change, so that a waiter still
                // looking before it parks (`before_park`) sees it too.
                set.bump_changes();
            }
            drop(s);
            if changed {
                set.wq.wake_all();
            }
        }
    }
}

greenos_runtime::task_local! {
    static TASK_UNDO: UndoList = UndoList::new();
}

thread_local! {
    static THREAD_UNDO: UndoList = UndoList::new();
}

/// Registers `set` on the caller's undo list; returns the list's owner key.
fn undo_owner(id: i32, set: &Arc<SemSet>) -> u64 {
    if greenos_runtime::task::in_task() {
        TASK_UNDO.with(|u| u.enlist(id, set))
    } else {
        THREAD_UNDO.with(|u| u.enlist(id, set))
    }
}

// ---------------------------------------------------------------------------
// Calls.

/// `semget(key, nsems, flags)`: the set for `key`, created with `nsems`
/// semaphores (all 0) if `flags` has `CREAT` or `key` is private. EINVAL if
/// `nsems` is negative, above [`SEMMSL`], 0 when creating, or larger than
/// the existing set; otherwise the `msgget` rules (ENOENT, EEXIST, EACCES,
/// ENOSPC).
pub fn semget(key: Key, nsems: i32, flags: IpcFlags) -> io::Result<SemId> {
    if !(0..=SEMMSL).contains(&nsems) {
        return Err(Errno::EINVAL.into());
    }
    let n = nsems as usize;
    let cred = Cred::current();
    let (id, _) = SETS.get(
        key,
        flags,
        &cred,
        |perm| {
            if n == 0 {
                return Err(Errno::EINVAL);
            }
            Ok(SemSet {
                state: SpinLock::new(State {
                    perm,
                    sems: vec![Sem::default(); n],
                    otime: 0,
                    ctime: now_secs(),
                    removed: false,
                    undo: HashMap::new(),
                }),
                changes: AtomicU64::new(0),
                // Block events name the set by its key.
                wq: WaitQueue::with_label(BlockOn::Semaphore, perm.key.0 as u32 as u64),
            })
        },
        |set| {
            if n > set.state.lock().sems.len() {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            }
        },
    )?;
    Ok(SemId(id))
}

/// `semop(id, sops)`: applies every operation atomically, blocking until
/// all can apply (an op flagged `NOWAIT` that would block: EAGAIN, nothing
/// applied). EINVAL (empty array, bad or removed id), E2BIG (more than
/// [`SEMOPM`] ops), EFBIG (`sem_num` ≥ nsems), EACCES, ERANGE (value above
/// [`SEMVMX`] or `semadj` out of range), EIDRM (removed while waiting),
/// EINTR (interrupted).
#[inline(always)]
pub fn semop(id: SemId, sops: &[Sembuf]) -> io::Result<()> {
    Ok(op(id, sops, None)?)
}

/// `semtimedop`: [`semop`] waiting at most `timeout` (`None`: for ever);
/// EAGAIN when it runs out, with nothing applied (ipc.md §3.5).
pub fn semtimedop(id: SemId, sops: &[Sembuf], timeout: Option<Duration>) -> io::Result<()> {
    match op(id, sops, deadline(timeout)) {
        Err(Errno::ETIMEDOUT) => Err(Errno::EAGAIN.into()),
        r => Ok(r?),
    }
}

enum Fail {
    Block { idx: usize, zero: bool },
    Err(Errno),
}

/// (sem index, tentative value, tentative semadj)
type Entry = (usize, i32, i32);

/// The semaphores an array touches, with tentative values: inline for
/// short arrays (no allocation on the common path), spilled to a `Vec`
/// past [`Touched::INLINE`].
struct Touched {
    small: [Entry; Touched::INLINE],
    n: usize,
    big: Vec<Entry>,
}

impl Touched {
    const INLINE: usize = 4;

    fn new() -> Touched {
        Touched {
            small: [(0, 0, 0); Touched::INLINE],
            n: 0,
            big: Vec::new(),
        }
    }

    fn as_slice(&self) -> &[Entry] {
        if self.big.is_empty() {
            &self.small[..self.n]
        } else {
            &self.big
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Entry] {
        if self.big.is_empty() {
            &mut self.small[..self.n]
        } else {
            &mut self.big
        }
    }

    fn push(&mut self, e: Entry) {
        if self.big.is_empty() && self.n < Touched::INLINE {
            self.small[self.n] = e;
            self.n += 1;
        } else {
            if self.big.is_empty() {
                self.big.extend_from_slice(&self.small[..self.n]);
            }
            self.big.push(e);
        }
    }
}

/// Linux `perform_atomic_semop_slow`, first half: applies `sops` in order
/// to a tentative copy; the result says whether all would succeed.
fn dry_run(s: &State, sops: &[Sembuf], owner: Option<u64>) -> Result<Touched, Fail> {
    let mut touched = Touched::new();
    let row = owner.and_then(|o| s.undo.get(&o));
    for sop in sops {
        let i = sop.sem_num as usize;
        let pos = match touched.as_slice().iter().position(|t| t.0 == i) {
            Some(p) => p,
            None => {
                let adj = row.map_or(0, |r| r[i]);
                touched.push((i, s.sems[i].val, adj));
                touched.as_slice().len() - 1
            }
        };
        let (_, val, adj) = touched.as_slice()[pos];
        let nowait = sop.sem_flg.contains(SemFlags::NOWAIT);
        if sop.sem_op == 0 {
            if val != 0 {
                return Err(if nowait {
                    Fail::Err(Errno::EAGAIN)
                } else {
                    Fail::Block { idx: i, zero: true }
                });
            }
            continue;
        }
        let r = val + sop.sem_op as i32;
        if r < 0 {
            return Err(if nowait {
                Fail::Err(Errno::EAGAIN)
            } else {
                Fail::Block {
                    idx: i,
                    zero: false,
                }
            });
        }
        if r > SEMVMX {
            return Err(Fail::Err(Errno::ERANGE));
        }
        let mut nadj = adj;
        if sop.sem_flg.contains(SemFlags::UNDO) {
            nadj = adj - sop.sem_op as i32;
            if !(-(SEMAEM + 1)..=SEMAEM).contains(&nadj) {
                return Err(Fail::Err(Errno::ERANGE));
            }
        }
        touched.as_mut_slice()[pos].1 = r;
        touched.as_mut_slice()[pos].2 = nadj;
    }
    Ok(touched)
}

/// [`dry_run`] and [`commit`] for an array of one operation without
/// SEM_UNDO: the same checks in the same order (wait-for-zero, below zero,
/// above SEMVMX), then the value, `sempid` and `otime`. Returns whether the
/// value changed.
fn apply_one(s: &mut State, sop: &Sembuf, pid: u64) -> Result<bool, Fail> {
    let i = sop.sem_num as usize;
    let val = s.sems[i].val;
    let block = |zero| {
        if sop.sem_flg.contains(SemFlags::NOWAIT) {
            Fail::Err(Errno::EAGAIN)
        } else {
            Fail::Block { idx: i, zero }
        }
    };
    let r = if sop.sem_op == 0 {
        if val != 0 {
            return Err(block(true));
        }
        val
    } else {
        let r = val + sop.sem_op as i32;
        if r < 0 {
            return Err(block(false));
        }
        if r > SEMVMX {
            return Err(Fail::Err(Errno::ERANGE));
        }
        r
    };
    let sem = &mut s.sems[i];
    let changed = sem.val != r;
    sem.val = r;
    sem.pid = pid;
    s.otime = now_secs();
    Ok(changed)
}

/// Commits a successful [`dry_run`]; returns whether a value changed.
fn commit(s: &mut State, touched: &Touched, owner: Option<u64>, pid: u64) -> bool {
    let mut changed = false;
    let nsems = s.sems.len();
    for &(i, val, adj) in touched.as_slice() {
        let sem = &mut s.sems[i];
        changed |= sem.val != val;
        sem.val = val;
        sem.pid = pid;
        if let Some(o) = owner {
            let row = s.undo.entry(o).or_insert_with(|| vec![0; nsems]);
            row[i] = adj;
        }
    }
    s.otime = now_secs();
    changed
}

/// `semop`'s body: passes of [`op_pass`], the yield before parking in the
/// caller's frame (`block` module doc).
#[inline(always)]
fn op(id: SemId, sops: &[Sembuf], dl: Deadline) -> Result<(), Errno> {
    run_passes(|tried| op_pass(id, sops, dl, tried))
}

/// One pass of [`op`]: `tried` says the caller already yielded once.
#[inline(never)]
fn op_pass(id: SemId, sops: &[Sembuf], dl: Deadline, tried: bool) -> Pass<()> {
    op_checked(id, sops, dl, tried).into()
}

fn op_checked(id: SemId, sops: &[Sembuf], dl: Deadline, tried: bool) -> Result<Pass<()>, Errno> {
    if sops.is_empty() {
        return Err(Errno::EINVAL);
    }
    if sops.len() > SEMOPM {
        return Err(Errno::E2BIG);
    }
    if id.0 < 0 {
        return Err(Errno::EINVAL);
    }
    let max = sops.iter().map(|s| s.sem_num as usize).max().unwrap_or(0);
    let alter = sops.iter().any(|s| s.sem_op != 0);
    let undo = sops.iter().any(|s| s.sem_flg.contains(SemFlags::UNDO));
    SETS.with_cached_cred(id.0, &LAST_SET, |set, cred| {
        op_on(id, set, cred, sops, dl, max, alter, undo, tried)
    })?
}

/// [`op`] on the set looked up, as `cred` (`max`, `alter`, `undo`: what
/// `op` found in `sops`); `tried`: the caller already yielded once.
#[allow(clippy::too_many_arguments)]
fn op_on(
    id: SemId,
    set: &Arc<SemSet>,
    cred: Cred,
    sops: &[Sembuf],
    dl: Deadline,
    max: usize,
    alter: bool,
    undo: bool,
    mut tried: bool,
) -> Result<Pass<()>, Errno> {
    let access = if alter { ACCESS_WRITE } else { ACCESS_READ };
    let mut owner = None;
    loop {
        let mut s = set.state.lock();
        if max >= s.sems.len() {
            return Err(Errno::EFBIG);
        }
        s.perm.check(&cred, access)?;
        if s.removed {
            return Err(Errno::EIDRM);
        }
        if undo && owner.is_none() {
            // Enlisting takes no set lock; the row is created on commit.
            drop(s);
            owner = Some(undo_owner(id.0, set));
            continue;
        }
        let attempt = match sops {
            // One operation without SEM_UNDO (the usual post or wait):
            // checked and applied in place, as dry_run + commit would.
            [sop] if owner.is_none() && !undo => apply_one(&mut s, sop, cred.pid),
            _ => dry_run(&s, sops, owner).map(|touched| commit(&mut s, &touched, owner, cred.pid)),
        };
        match attempt {
            Ok(changed) => {
                if changed {
                    set.bump_changes();
                }
                drop(s);
                if changed {
                    set.wake();
                }
                return Ok(Pass::Done(Ok(())));
            }
            Err(Fail::Err(e)) => return Err(e),
            Err(Fail::Block { .. }) if !tried => {
                tried = true;
                drop(s);
                if yields_before_park() {
                    return Ok(Pass::YieldFirst);
                }
                let seen = set.changes.load(Ordering::Relaxed);
                spin_before_park(|| set.changes.load(Ordering::Relaxed) != seen);
            }
            Err(Fail::Block { idx, zero }) => {
                let count = |s: &mut State, up: bool| {
                    let c = if zero {
                        &mut s.sems[idx].zcnt
                    } else {
                        &mut s.sems[idx].ncnt
                    };
                    if up {
                        *c += 1
                    } else {
                        *c -= 1
                    }
                };
                count(&mut s, true);
                drop(s);
                let r = wait_until(
                    &set.wq,
                    || {
                        // Sleep only while the array still blocks.
                        let s = set.state.lock();
                        s.removed || !matches!(dry_run(&s, sops, owner), Err(Fail::Block { .. }))
                    },
                    dl,
                );
                count(&mut set.state.lock(), false);
                r?;
            }
        }
    }
}

/// `semctl(id, cmd)`. EINVAL (bad or removed id, semaphore number out of
/// range, `SETALL` of the wrong length), EACCES (GETs and `Stat` need read,
/// SETs alter permission), EPERM (`Set` / `Remove` by someone other than the
/// owner, creator or uid 0), ERANGE (a value outside `0..=SEMVMX`).
pub fn semctl(id: SemId, cmd: SemCtl) -> io::Result<SemCtlOut> {
    Ok(ctl(id, cmd)?)
}

fn ctl(id: SemId, cmd: SemCtl) -> Result<SemCtlOut, Errno> {
    if let SemCtl::SetVal(_, v) = cmd {
        // Linux semctl_setval checks the value first.
        if !(0..=SEMVMX).contains(&v) {
            return Err(Errno::ERANGE);
        }
    }
    if id.0 < 0 {
        return Err(Errno::EINVAL);
    }
    let set = SETS.lookup_cached(id.0, &LAST_SET)?;
    let cred = Cred::current();
    let mut s = set.state.lock();
    if s.removed {
        return Err(Errno::EINVAL);
    }
    let nsems = s.sems.len();
    let idx = |n: i32| -> Result<usize, Errno> {
        if n < 0 || n as usize >= nsems {
            Err(Errno::EINVAL)
        } else {
            Ok(n as usize)
        }
    };
    match cmd {
        SemCtl::GetVal(n) | SemCtl::GetPid(n) | SemCtl::GetNcnt(n) | SemCtl::GetZcnt(n) => {
            s.perm.check(&cred, ACCESS_READ)?;
            let sem = s.sems[idx(n)?];
            Ok(SemCtlOut::Value(match cmd {
                SemCtl::GetVal(_) => sem.val as i64,
                SemCtl::GetPid(_) => sem.pid as i64,
                SemCtl::GetNcnt(_) => sem.ncnt as i64,
                _ => sem.zcnt as i64,
            }))
        }
        SemCtl::GetAll => {
            s.perm.check(&cred, ACCESS_READ)?;
            Ok(SemCtlOut::All(
                s.sems.iter().map(|x| x.val as u16).collect(),
            ))
        }
        SemCtl::Stat => {
            s.perm.check(&cred, ACCESS_READ)?;
            Ok(SemCtlOut::Stat(SemidDs {
                perm: s.perm,
                otime: s.otime,
                ctime: s.ctime,
                nsems,
            }))
        }
        SemCtl::SetVal(n, v) => {
            let i = idx(n)?;
            s.perm.check(&cred, ACCESS_WRITE)?;
            for row in s.undo.values_mut() {
                row[i] = 0;
            }
            s.sems[i].val = v;
            s.sems[i].pid = cred.pid;
            s.ctime = now_secs();
            set.bump_changes();
            drop(s);
            set.wq.wake_all();
            Ok(SemCtlOut::Done)
        }
        SemCtl::SetAll(vals) => {
            s.perm.check(&cred, ACCESS_WRITE)?;
            if vals.len() != nsems {
                return Err(Errno::EINVAL);
            }
            if vals.iter().any(|&v| v as i32 > SEMVMX) {
                return Err(Errno::ERANGE);
            }
            for row in s.undo.values_mut() {
                row.iter_mut().for_each(|a| *a = 0);
            }
            for (sem, &v) in s.sems.iter_mut().zip(&vals) {
                sem.val = v as i32;
                sem.pid = cred.pid;
            }
            s.ctime = now_secs();
            set.bump_changes();
            drop(s);
            set.wq.wake_all();
            Ok(SemCtlOut::Done)
        }
        SemCtl::Set(p) => {
            s.perm.check_owner(&cred)?;
            s.perm.uid = p.uid;
            s.perm.gid = p.gid;
            s.perm.mode = p.mode & 0o777;
            s.ctime = now_secs();
            drop(s);
            set.wq.wake_all();
            Ok(SemCtlOut::Done)
        }
        SemCtl::Remove => {
            s.perm.check_owner(&cred)?;
            drop(s);
            let set = SETS.remove(id.0)?;
            let mut s = set.state.lock();
            s.removed = true;
            s.undo.clear();
            drop(s);
            set.wq.wake_all();
            Ok(SemCtlOut::Done)
        }
    }
}
