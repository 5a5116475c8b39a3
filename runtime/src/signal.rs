//! Signals between green processes: `kill`, `sigaction`, per-process pending
//! sets and masks, delivery at scheduling points, and the default actions of
//! signal(7) — terminate, ignore, stop, continue.
//!
//! # What this module owns
//!
//! - The public names: [`Signal`] and its constants (Linux numbers), [`SigSet`],
//!   [`SigHandler`], [`SigAction`], [`SaFlags`], [`SigHow`], and the calls
//!   [`kill`], [`raise`], [`signal`], [`sigaction`], [`sigprocmask`],
//!   [`sigpending`] (and `Runtime::kill` for OS threads).
//! - `TaskSignals`, the per-task state inside the task control block:
//!   `pending` and `blocked` bit sets, the dispositions, the stop flag and the
//!   kill state.
//!
//! # How a signal reaches its target (signal.c, restated)
//!
//! The sender decides from the target's disposition, as `sig_ignored` and
//! `complete_signal` do:
//! - ignored (explicitly, or by default like SIGCHLD) and not blocked:
//!   discarded at once;
//! - fatal (SIGKILL; a default-terminate signal that is not blocked): the
//!   target is marked killed and woken from any wait. The wait it is in
//!   ends; the task unwinds its own stack (destructors run,
//!   task-local values drop) at the next point where that is safe — the
//!   start of a blocking call, the return of a failed wait, a yield — and its
//!   join handle reports [`JoinError::Killed`](crate::JoinError::Killed);
//! - otherwise the bit is set in `pending` and the target is woken; if it
//!   sleeps in an *interruptible* wait (every
//!   [`WaitQueue::wait`](crate::wait::WaitQueue::wait), which IPC uses, and
//!   `sleep`) the signal is delivered there.
//!
//! The target delivers its own signals, in its own context, at scheduling
//! points: on return from a yield or preemption, in an interruptible wait
//! loop, and at the start of a blocking call. A handler runs on the task's
//! stack with the signal (and `sa_mask`) blocked; if it interrupted a wait
//! the wait returns `WaitResult::Cancelled` (EINTR) unless the action has
//! [`SaFlags::RESTART`], in which case the wait goes on. Waits that cannot be
//! interrupted (`Mutex::lock`, `JoinHandle::join` — the kernel's
//! `TASK_KILLABLE`) leave a handled signal pending until the next point.
//!
//! A stopped task (SIGSTOP, or SIGTSTP/SIGTTIN/SIGTTOU by default) parks at
//! its next delivery point and stays off every run queue until SIGCONT.
//! SIGCONT resumes it even if SIGCONT itself is ignored or blocked.
//!
//! # Invariants
//!
//! - SIGKILL and SIGSTOP cannot be caught, blocked or ignored (EINVAL for
//!   `sigaction`; `sigprocmask` silently leaves them out, as Linux does).
//! - Only the task itself clears `pending` bits, changes `blocked`, runs
//!   handlers or unwinds; senders only set bits, set flags and wake.
//! - A sender sets `pending`, then wakes the target through its state word
//!   (whatever it waits in); a sleeper reads `pending` before each park. A
//!   wake that races the park leaves a `NOTIFIED` token, so neither order
//!   loses a signal. Waits that are not interruptible see a spurious wakeup
//!   and sleep again.
//!
//! # Differences from Linux
//!
//! Each green thread is a single-threaded process, so there are no
//! thread-directed signals and no signal queueing beyond one pending
//! instance per signal (real-time signals 34..=64 are accepted but, like
//! standard ones, do not queue). Handlers run at scheduling points, not
//! asynchronously: a task spinning without greenos calls sees its signals
//! only when it next calls one (`maybe_yield` counts). `fork`'s inheritance
//! is `exec`'s: a spawned task inherits the caller's mask and its ignored
//! signals; caught signals start at their defaults.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::executor::{self, task::Task, task::TaskRef};
use crate::Pid;

/// A signal number, as Linux numbers them (1..=64; 0 in `kill` checks only
/// existence and permission).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(pub i32);

macro_rules! signals {
    ($($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($name), "` (signal(7)).")]
            pub const $name: Signal = Signal(libc::$name);
        )*
        fn signal_name(sig: i32) -> Option<&'static str> {
            $(if sig == libc::$name { return Some(stringify!($name)); })*
            None
        }
    };
}

signals!(
    SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV,
    SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN,
    SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
);

/// The highest signal number (`_NSIG - 1` = 64).
pub const SIGMAX: i32 = 64;

impl Signal {
    fn bit(self) -> u64 {
        1u64 << (self.0 - 1)
    }

    fn check(self) -> io::Result<Signal> {
        if (1..=SIGMAX).contains(&self.0) {
            Ok(self)
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match signal_name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "Signal({})", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A set of signals (`sigset_t`): `sigemptyset`, `sigaddset`, ...
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SigSet(u64);

impl SigSet {
    /// The empty set (`sigemptyset`).
    pub const fn new() -> SigSet {
        SigSet(0)
    }

    /// Every signal (`sigfillset`).
    pub const fn full() -> SigSet {
        SigSet(u64::MAX)
    }

    /// Adds `sig` (`sigaddset`); numbers outside 1..=64 are ignored.
    pub fn add(&mut self, sig: Signal) -> &mut SigSet {
        if sig.check().is_ok() {
            self.0 |= sig.bit();
        }
        self
    }

    /// Removes `sig` (`sigdelset`).
    pub fn remove(&mut self, sig: Signal) -> &mut SigSet {
        if sig.check().is_ok() {
            self.0 &= !sig.bit();
        }
        self
    }

    /// Whether `sig` is in the set (`sigismember`).
    pub fn contains(&self, sig: Signal) -> bool {
        sig.check().is_ok() && self.0 & sig.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The signals in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Signal> + '_ {
        (1..=SIGMAX).map(Signal).filter(|s| self.contains(*s))
    }
}

impl FromIterator<Signal> for SigSet {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> SigSet {
        let mut s = SigSet::new();
        for sig in iter {
            s.add(sig);
        }
        s
    }
}

impl fmt::Debug for SigSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A signal handler: runs on the target task's stack with the signal.
pub type HandlerFn = Arc<dyn Fn(Signal) + Send + Sync>;

/// What a task does with a signal (`sa_handler`).
#[derive(Clone, Default)]
pub enum SigHandler {
    /// `SIG_DFL`: the default action of signal(7).
    #[default]
    Default,
    /// `SIG_IGN`: discard it.
    Ignore,
    /// Run this function.
    Handler(HandlerFn),
}

impl SigHandler {
    /// A handler from a closure.
    pub fn new(f: impl Fn(Signal) + Send + Sync + 'static) -> SigHandler {
        SigHandler::Handler(Arc::new(f))
    }
}

impl fmt::Debug for SigHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigHandler::Default => f.write_str("SIG_DFL"),
            SigHandler::Ignore => f.write_str("SIG_IGN"),
            SigHandler::Handler(h) => write!(f, "Handler({:p})", Arc::as_ptr(h)),
        }
    }
}

/// `sa_flags`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct SaFlags(pub u32);

impl SaFlags {
    /// No flags.
    pub const NONE: SaFlags = SaFlags(0);
    /// `SA_RESTART`: an interrupted wait goes on instead of failing with EINTR.
    pub const RESTART: SaFlags = SaFlags(1);
    /// `SA_NODEFER`: do not block the signal while its handler runs.
    pub const NODEFER: SaFlags = SaFlags(2);
    /// `SA_RESETHAND`: reset to `SIG_DFL` on delivery.
    pub const RESETHAND: SaFlags = SaFlags(4);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: SaFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SaFlags {
    type Output = SaFlags;
    fn bitor(self, rhs: SaFlags) -> SaFlags {
        SaFlags(self.0 | rhs.0)
    }
}

/// `struct sigaction`.
#[derive(Clone, Default, Debug)]
pub struct SigAction {
    /// What to do.
    pub handler: SigHandler,
    /// Signals blocked, besides the signal itself, while the handler runs.
    pub mask: SigSet,
    /// `SA_*` flags.
    pub flags: SaFlags,
}

impl SigAction {
    /// An action running `handler` with no extra mask and no flags.
    pub fn new(handler: SigHandler) -> SigAction {
        SigAction {
            handler,
            mask: SigSet::new(),
            flags: SaFlags::NONE,
        }
    }

    /// With `flags`.
    pub fn flags(mut self, flags: SaFlags) -> SigAction {
        self.flags = flags;
        self
    }

    /// With `mask`.
    pub fn mask(mut self, mask: SigSet) -> SigAction {
        self.mask = mask;
        self
    }
}

/// How `sigprocmask` changes the mask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SigHow {
    /// `SIG_BLOCK`: add the set.
    Block,
    /// `SIG_UNBLOCK`: remove the set.
    Unblock,
    /// `SIG_SETMASK`: replace the mask.
    SetMask,
}

/// The default action of a signal (signal(7); "Core" counts as terminate).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DefaultAction {
    Term,
    Ign,
    Stop,
    Cont,
}

fn default_action(sig: Signal) -> DefaultAction {
    match sig.0 {
        libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH => DefaultAction::Ign,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => DefaultAction::Stop,
        libc::SIGCONT => DefaultAction::Cont,
        _ => DefaultAction::Term,
    }
}

/// Signals that can be neither caught, blocked nor ignored.
const UNBLOCKABLE: u64 = (1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1));
/// The stop signals: a SIGCONT discards them, and they discard a SIGCONT.
const STOP_MASK: u64 = (1 << (libc::SIGSTOP - 1))
    | (1 << (libc::SIGTSTP - 1))
    | (1 << (libc::SIGTTIN - 1))
    | (1 << (libc::SIGTTOU - 1));

/// `kill_state` high bit: the task has begun to unwind.
const UNWINDING: u8 = 0x80;

/// Per-task signal state, inside the task control block.
#[derive(Default)]
pub(crate) struct TaskSignals {
    /// Pending signals (bit `n - 1` for signal `n`). Senders set, the task clears.
    pending: AtomicU64,
    /// The mask (`blocked`). Only the task writes it.
    blocked: AtomicU64,
    /// Stopped by a stop signal; cleared by SIGCONT.
    stopped: AtomicBool,
    /// The killing signal's number (0: not killed), | `UNWINDING`.
    kill_state: AtomicU8,
    /// Depth of regions where the task must not unwind (a condition
    /// variable re-locking its caller's mutex). Only the task touches it.
    no_unwind: AtomicU32,
    /// Bumped by every SIGCONT: a stop taken from `pending` before a SIGCONT
    /// arrived does not stop the task after it.
    cont_seq: AtomicU32,
    /// Dispositions that are not `SIG_DFL`, indexed by `signal - 1`; `None`
    /// until the first `sigaction` (most tasks never call it).
    actions: Mutex<Option<Box<[SigAction; SIGMAX as usize]>>>,
    /// `actions` has been filled (set by the task itself in `sigaction`,
    /// never cleared): a spawn from a task that never called `sigaction`
    /// inherits nothing and skips the lock.
    has_actions: AtomicBool,
}

impl fmt::Debug for TaskSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSignals")
            .field("pending", &SigSet(self.pending.load(Ordering::Relaxed)))
            .field("blocked", &SigSet(self.blocked.load(Ordering::Relaxed)))
            .finish_non_exhaustive()
    }
}

impl TaskSignals {
    /// The state of a new task spawned by a task with state `parent`: the
    /// mask and ignored dispositions are inherited (execve(2)'s rule).
    pub(crate) fn inherit(parent: Option<&TaskSignals>) -> TaskSignals {
        let s = TaskSignals::default();
        if let Some(p) = parent {
            s.blocked
                .store(p.blocked.load(Ordering::Relaxed), Ordering::Relaxed);
            // Only a task installs its own actions (`sigaction`), and
            // `inherit` runs on the spawning parent itself: the flag is read
            // by the task that wrote it (a migration in between is ordered
            // by the run-queue handoff), so Relaxed suffices.
            let acts = p
                .has_actions
                .load(Ordering::Relaxed)
                .then(|| p.actions.lock());
            if let Some(acts) = acts.as_ref().and_then(|g| g.as_ref()) {
                if acts.iter().any(|a| matches!(a.handler, SigHandler::Ignore)) {
                    let mut mine: Box<[SigAction; SIGMAX as usize]> =
                        Box::new(std::array::from_fn(|_| SigAction::default()));
                    for (m, a) in mine.iter_mut().zip(acts.iter()) {
                        if matches!(a.handler, SigHandler::Ignore) {
                            m.handler = SigHandler::Ignore;
                        }
                    }
                    *s.actions.lock() = Some(mine);
                    s.has_actions.store(true, Ordering::Relaxed);
                }
            }
        }
        s
    }

    fn action(&self, sig: Signal) -> SigAction {
        match self.actions.lock().as_ref() {
            Some(a) => a[(sig.0 - 1) as usize].clone(),
            None => SigAction::default(),
        }
    }

    /// Whether a stop signal stopped the task (it waits for SIGCONT).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The signal that killed the task, if one did.
    pub(crate) fn killed_by(&self) -> Option<Signal> {
        match self.kill_state.load(Ordering::Acquire) & !UNWINDING {
            0 => None,
            n => Some(Signal(i32::from(n))),
        }
    }

    /// Whether any signal is pending (delivered or blocked): the cheap test
    /// done at every delivery point.
    #[inline]
    pub(crate) fn any_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) != 0
    }

    fn deliverable(&self) -> u64 {
        self.pending.load(Ordering::SeqCst) & !(self.blocked.load(Ordering::Relaxed) & !UNBLOCKABLE)
    }
}

/// What the sender must do for `sig` given the target's disposition.
enum SendAs {
    Discard,
    Fatal,
    Pend,
}

fn classify(target: &Task, sig: Signal) -> SendAs {
    if sig.0 == libc::SIGKILL {
        return SendAs::Fatal;
    }
    if sig.0 == libc::SIGSTOP {
        return SendAs::Pend;
    }
    let blocked = target.sig.blocked.load(Ordering::Relaxed) & sig.bit() != 0;
    let act = target.sig.action(sig);
    match act.handler {
        SigHandler::Handler(_) => SendAs::Pend,
        _ if blocked => SendAs::Pend,
        SigHandler::Ignore => SendAs::Discard,
        SigHandler::Default => match default_action(sig) {
            DefaultAction::Ign | DefaultAction::Cont => SendAs::Discard,
            DefaultAction::Stop => SendAs::Pend,
            DefaultAction::Term => SendAs::Fatal,
        },
    }
}

/// Delivers `sig` to `target` (`send_signal`). Permission was checked.
pub(crate) fn send(target: &TaskRef, sig: Signal) {
    let s = &target.sig;
    if sig.0 == libc::SIGCONT {
        // prepare_signal: SIGCONT discards pending stop signals and resumes
        // a stopped task whatever its own disposition.
        s.cont_seq.fetch_add(1, Ordering::SeqCst);
        s.pending.fetch_and(!STOP_MASK, Ordering::SeqCst);
        if s.stopped.swap(false, Ordering::SeqCst) {
            executor::wake_task(target.clone());
        }
    } else if STOP_MASK & sig.bit() != 0 {
        s.pending
            .fetch_and(!(1 << (libc::SIGCONT - 1)), Ordering::SeqCst);
    }
    match classify(target, sig) {
        SendAs::Discard => {}
        SendAs::Fatal => kill_now(target, sig),
        SendAs::Pend => {
            s.pending.fetch_or(sig.bit(), Ordering::SeqCst);
            let blocked = s.blocked.load(Ordering::Relaxed) & !UNBLOCKABLE;
            if blocked & sig.bit() == 0 {
                // Wake it whatever it waits in: an interruptible wait
                // delivers, any other wait sees a spurious wakeup and
                // sleeps again. (Cheaper than telling them apart on every
                // wait; signals are rare, waits are not.)
                executor::wake_task(target.clone());
            }
        }
    }
}

/// Records that `sig` kills the task (the first fatal signal wins).
fn mark_killed(s: &TaskSignals, sig: Signal) {
    let _ = s
        .kill_state
        .compare_exchange(0, sig.0 as u8, Ordering::AcqRel, Ordering::SeqCst);
}

/// Marks the target killed by `sig` and wakes it from any wait.
fn kill_now(target: &TaskRef, sig: Signal) {
    let s = &target.sig;
    mark_killed(s, sig);
    s.pending
        .fetch_or(1 << (libc::SIGKILL - 1), Ordering::SeqCst);
    // A stopped task must run to die.
    s.stopped.store(false, Ordering::SeqCst);
    executor::wake_task(target.clone());
}

/// The payload a killed task unwinds with (never seen by user code that
/// does not `catch_unwind`).
struct Killed;

/// Whether the running task was killed and should leave the wait it is in
/// to unwind: killed, not unwinding yet, and not in a no-unwind region.
/// (While it unwinds, its destructors block normally: the runtime lives.)
#[inline]
pub(crate) fn must_die(task: &Task) -> bool {
    let k = task.sig.kill_state.load(Ordering::SeqCst);
    k != 0 && k & UNWINDING == 0 && task.sig.no_unwind.load(Ordering::Relaxed) == 0
}

/// Unwinds the running task if [`must_die`]. Call only where unwinding
/// leaves no runtime state half-done.
pub(crate) fn unwind_if_killed(task: &Task) {
    if must_die(task) {
        let k = task.sig.kill_state.load(Ordering::Acquire);
        task.sig.kill_state.store(k | UNWINDING, Ordering::Release);
        std::panic::resume_unwind(Box::new(Killed));
    }
}

/// A region of the running task where a kill does not unwind it (it still
/// ends waits that are not themselves inside such a region).
pub(crate) struct NoUnwind<'a>(&'a Task);

impl<'a> NoUnwind<'a> {
    /// Enters the region.
    pub(crate) fn enter(task: &'a Task) -> NoUnwind<'a> {
        task.sig.no_unwind.fetch_add(1, Ordering::Relaxed);
        NoUnwind(task)
    }
}

impl Drop for NoUnwind<'_> {
    fn drop(&mut self) {
        self.0.sig.no_unwind.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What delivery did inside a wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Delivered {
    /// Nothing deliverable.
    Nothing,
    /// Handlers ran, every one with `SA_RESTART` (or only stop/continue).
    Restart,
    /// A handler without `SA_RESTART` ran: the wait fails with EINTR.
    Interrupt,
}

/// Runs the task's deliverable signals: handlers, stops, and (marking only)
/// fatal defaults. Never unwinds; callers that can unwind call
/// [`unwind_if_killed`] after it. Called by the task itself.
pub(crate) fn deliver(task: &Task) -> Delivered {
    let mut result = Delivered::Nothing;
    loop {
        if task.cancelled.load(Ordering::Relaxed) || task.sig.killed_by().is_some() {
            return result;
        }
        let ready = task.sig.deliverable();
        if ready == 0 {
            return result;
        }
        let sig = Signal(ready.trailing_zeros() as i32 + 1);
        let cont_seq = task.sig.cont_seq.load(Ordering::SeqCst);
        task.sig.pending.fetch_and(!sig.bit(), Ordering::SeqCst);
        let act = if UNBLOCKABLE & sig.bit() != 0 {
            SigAction::default()
        } else {
            task.sig.action(sig)
        };
        match act.handler {
            SigHandler::Ignore => {}
            SigHandler::Default => match default_action(sig) {
                DefaultAction::Ign | DefaultAction::Cont => {}
                DefaultAction::Term => {
                    mark_killed(&task.sig, sig);
                    return result;
                }
                DefaultAction::Stop => {
                    stop(task, cont_seq);
                    if result == Delivered::Nothing {
                        result = Delivered::Restart;
                    }
                }
            },
            SigHandler::Handler(h) => {
                if act.flags.contains(SaFlags::RESETHAND) {
                    if let Some(a) = task.sig.actions.lock().as_mut() {
                        a[(sig.0 - 1) as usize] = SigAction::default();
                    }
                }
                let old = task.sig.blocked.load(Ordering::Relaxed);
                let mut during = old | act.mask.0;
                if !act.flags.contains(SaFlags::NODEFER) {
                    during |= sig.bit();
                }
                task.sig.blocked.store(during, Ordering::SeqCst);
                h(sig);
                task.sig.blocked.store(old, Ordering::SeqCst);
                if !act.flags.contains(SaFlags::RESTART) {
                    result = Delivered::Interrupt;
                } else if result == Delivered::Nothing {
                    result = Delivered::Restart;
                }
            }
        }
    }
}

/// Parks a task stopped by a stop signal until SIGCONT (or a kill).
/// `cont_seq` is the SIGCONT count seen before the stop bit was taken.
fn stop(task: &Task, cont_seq: u32) {
    task.sig.stopped.store(true, Ordering::SeqCst);
    // A SIGCONT after the stop bit was taken but before `stopped` was set
    // found nothing to resume; it bumped `cont_seq`, so give up the stop.
    // One after this check finds `stopped` set, clears it and wakes us.
    if task.sig.cont_seq.load(Ordering::SeqCst) != cont_seq {
        task.sig.stopped.store(false, Ordering::SeqCst);
        return;
    }
    while task.sig.stopped.load(Ordering::SeqCst)
        && !task.cancelled.load(Ordering::Relaxed)
        && task.sig.killed_by().is_none()
    {
        executor::park_current(task);
    }
}

/// A delivery point where unwinding is safe (a yield's return, the start of
/// a blocking call): runs handlers and stops, then unwinds if killed.
#[inline]
pub(crate) fn checkpoint(task: &Task) {
    if task.sig.any_pending() {
        checkpoint_slow(task);
    }
}

#[cold]
fn checkpoint_slow(task: &Task) {
    let _ = deliver(task);
    unwind_if_killed(task);
}

/// Whether a deliverable signal is pending: checked by an interruptible
/// wait before each park. A relaxed load is enough: a sender sets the bit
/// and then wakes the task through its state word, so a check that misses
/// the bit is followed by a park that does not sleep (NOTIFIED) or is
/// undone (the worker re-queues the task).
#[inline]
pub(crate) fn deliverable_pending(task: &Task) -> bool {
    task.sig.any_pending() && task.sig.deliverable() != 0
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Checks that a caller with uid `uid` may signal `target`
/// (`kill_ok_by_cred`: root, or the same uid; SIGCONT is not special here
/// because green processes have no sessions).
fn permitted(uid: u32, target: &Task) -> io::Result<()> {
    if uid == 0 || uid == target.uid {
        Ok(())
    } else {
        Err(errno(libc::EPERM))
    }
}

/// Sends `sig` to task `pid` of the caller's runtime (`Pid(0)`: the caller),
/// like kill(2). Signal 0 checks only that the pid exists and may be
/// signalled. Errors: EINVAL for a signal outside 0..=64, ESRCH for an
/// unknown pid, EPERM when a non-root caller signals another uid's task.
/// Signalling oneself delivers before returning (a fatal signal unwinds).
/// Panics outside a greenos task.
pub fn kill(pid: Pid, sig: Signal) -> io::Result<()> {
    let me = executor::current_task_ref("kill");
    if sig.0 != 0 {
        sig.check()?;
    }
    let target = if pid.0 == 0 || pid == me.pid {
        me.clone()
    } else {
        let shared = executor::runtime_of(&me).ok_or_else(|| errno(libc::ESRCH))?;
        shared.table.get(pid).ok_or_else(|| errno(libc::ESRCH))?
    };
    permitted(crate::task::identity_of(&me).uid, &target)?;
    if sig.0 == 0 {
        return Ok(());
    }
    send(&target, sig);
    if Arc::ptr_eq(&target, &me) {
        checkpoint(&me);
    }
    Ok(())
}

/// Sends `sig` to the caller (`raise(3)`).
pub fn raise(sig: Signal) -> io::Result<()> {
    kill(Pid(0), sig)
}

/// Sends from outside the runtime's tasks (`Runtime::kill`), with the OS
/// process's effective uid as the sender's.
pub(crate) fn kill_from_os(shared: &executor::Shared, pid: Pid, sig: Signal) -> io::Result<()> {
    if sig.0 != 0 {
        sig.check()?;
    }
    let target = shared.table.get(pid).ok_or_else(|| errno(libc::ESRCH))?;
    // SAFETY: geteuid cannot fail and touches no memory.
    permitted(unsafe { libc::geteuid() }, &target)?;
    if sig.0 != 0 {
        send(&target, sig);
    }
    Ok(())
}

/// Sets the caller's action for `sig` and returns the old one
/// (sigaction(2); `None` only reads it). EINVAL for SIGKILL, SIGSTOP or a
/// number outside 1..=64 (reading SIGKILL's action is allowed). Installing
/// `SIG_IGN` discards a pending instance. Panics outside a greenos task.
pub fn sigaction(sig: Signal, act: Option<SigAction>) -> io::Result<SigAction> {
    let me = executor::current_task("sigaction");
    sig.check()?;
    let Some(act) = act else {
        return Ok(me.sig.action(sig));
    };
    if UNBLOCKABLE & sig.bit() != 0 {
        return Err(errno(libc::EINVAL));
    }
    let ignored = match &act.handler {
        SigHandler::Ignore => true,
        SigHandler::Default => default_action(sig) == DefaultAction::Ign,
        SigHandler::Handler(_) => false,
    };
    if sig.0 == libc::SIGCHLD && matches!(act.handler, SigHandler::Handler(_)) {
        executor::note_sigchld_handler(me);
    }
    let mut g = me.sig.actions.lock();
    let table = g.get_or_insert_with(|| Box::new(std::array::from_fn(|_| SigAction::default())));
    me.sig.has_actions.store(true, Ordering::Relaxed);
    let old = std::mem::replace(&mut table[(sig.0 - 1) as usize], act);
    drop(g);
    if ignored {
        // POSIX: setting a pending signal to be ignored discards it.
        me.sig.pending.fetch_and(!sig.bit(), Ordering::SeqCst);
    }
    Ok(old)
}

/// Sets the caller's handler for `sig` (signal(2) with BSD semantics:
/// `SA_RESTART`), returning the old handler. Errors as [`sigaction`].
pub fn signal(sig: Signal, handler: SigHandler) -> io::Result<SigHandler> {
    let old = sigaction(sig, Some(SigAction::new(handler).flags(SaFlags::RESTART)))?;
    Ok(old.handler)
}

/// Changes the caller's signal mask and returns the old one
/// (sigprocmask(2)). SIGKILL and SIGSTOP are silently left unblocked.
/// Signals that the change unblocks are delivered before it returns.
/// Panics outside a greenos task.
pub fn sigprocmask(how: SigHow, set: &SigSet) -> io::Result<SigSet> {
    let me = executor::current_task("sigprocmask");
    let old = me.sig.blocked.load(Ordering::Relaxed);
    let new = match how {
        SigHow::Block => old | set.0,
        SigHow::Unblock => old & !set.0,
        SigHow::SetMask => set.0,
    } & !UNBLOCKABLE;
    me.sig.blocked.store(new, Ordering::SeqCst);
    checkpoint(me);
    Ok(SigSet(old))
}

/// The caller's pending signals (blocked ones, in practice: others are
/// delivered at once). Panics outside a greenos task.
pub fn sigpending() -> SigSet {
    let me = executor::current_task("sigpending");
    SigSet(me.sig.pending.load(Ordering::SeqCst) & me.sig.blocked.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_actions_follow_signal_7() {
        assert_eq!(default_action(SIGCHLD), DefaultAction::Ign);
        assert_eq!(default_action(SIGTERM), DefaultAction::Term);
        assert_eq!(default_action(SIGSEGV), DefaultAction::Term);
        assert_eq!(default_action(SIGTSTP), DefaultAction::Stop);
        assert_eq!(default_action(SIGCONT), DefaultAction::Cont);
        assert_eq!(default_action(Signal(40)), DefaultAction::Term);
    }

    #[test]
    fn sigset_operations() {
        let mut s = SigSet::new();
        assert!(s.is_empty());
        s.add(SIGINT).add(SIGTERM).add(Signal(64)).add(Signal(65));
        assert!(s.contains(SIGINT) && s.contains(Signal(64)));
        assert!(!s.contains(Signal(65)) && !s.contains(Signal(0)));
        s.remove(SIGINT);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![SIGTERM, Signal(64)]);
        assert_eq!(format!("{:?}", SIGTERM), "SIGTERM");
        assert_eq!(SigSet::full().iter().count(), 64);
    }
}
