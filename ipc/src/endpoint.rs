//! L4 / seL4 synchronous endpoints: rendezvous IPC with short messages,
//! capability transfer, one-shot reply capabilities and direct process
//! switch (reference/ipc.md §4).
//!
//! # What this module owns
//!
//! - [`Endpoint`]: a rendezvous object named by a capability. It holds no
//!   message buffer: a queue of blocked senders *or* of blocked receivers.
//!   A transfer happens only at rendezvous.
//! - [`Msg`]: a [`MsgTag`] (label, length, extra caps, unwrapped mask), the
//!   first [`FAST_MRS`] = 4 message registers inline (seL4's
//!   `seL4_FastMessageRegisters` on x86_64, §4.2: they travel "in the
//!   switch"), up to [`BUFFER_MRS`] = 64 more *virtual* message registers in
//!   the task's IPC buffer (Pistachio's `IPC_NUM_MR`, §4.5; MR *k* is at
//!   buffer index *k*, the first four slots unused, as seL4 lays it out), and
//!   up to [`MAX_EXTRA_CAPS`] = 3 capabilities (`seL4_MsgMaxExtraCaps`).
//!   Nothing is allocated per message: each task's port (its wait queue and
//!   IPC buffer) is allocated once, on first use.
//! - The calls: [`Endpoint::send`], [`Endpoint::nb_send`],
//!   [`Endpoint::recv`], [`Endpoint::call`], [`Reply::reply`],
//!   [`Endpoint::reply_recv`], each blocking one with a `_timeout` form.
//!
//! # Semantics (seL4 where it has them)
//!
//! - `send` blocks until a receiver takes the message; `nb_send` with no
//!   receiver waiting **drops the message silently** (seL4 `NBSend`; counted
//!   in [`Endpoint::dropped`]).
//! - `call` sends and waits for the reply; the receiver gets a one-shot
//!   [`Reply`] tied to the calling task and call. `reply` never blocks; a
//!   reply to a caller that gave up (timeout, signal) is refused with
//!   `ESRCH` and nothing is delivered. A reply capability dropped unused
//!   (the server gave up, or its task ended) fails the `call` with `ESRCH`.
//! - Rights: `send`/`nb_send` need [`Rights::SEND`], `call` needs
//!   [`Rights::CALL`], `recv` needs [`Rights::RECV`] (`EPERM`; seL4 drops a
//!   send without Write silently, we report it). Capabilities travel only
//!   with [`Rights::GRANT`] on the sender's endpoint capability (`EPERM`).
//!   A capability to the very endpoint it travels through is *unwrapped*:
//!   only its badge arrives ([`Msg::unwrapped_badge`], `caps_unwrapped`
//!   bit). If the receiver's table is full the transfer stops there without
//!   failing the IPC; `extra_caps` says how many arrived.
//! - The receiver learns the sender's badge ([`Msg::badge`]): the badge of
//!   the capability the sender used ([`crate::cap::mint`]).
//! - Errors: length over [`MAX_MSG_LENGTH`] → `EINVAL`; timeout →
//!   `ETIMEDOUT`; interrupted by a signal or shutdown → `EINTR`.
//!
//! # Direct process switch
//!
//! seL4's fastpath (`src/fastpath/fastpath.c`, §4.4) hands the CPU straight
//! to the partner. A `call` takes greenos's version of it when all of these
//! hold (numbered as the reference lists seL4's):
//! 1. the message fits in the fast registers (`length ≤ 4`) and carries no
//!    capabilities;
//! 2. (no pending fault: greenos has no faults to deliver — always true);
//! 3. the capability is an endpoint capability with the call right (checked
//!    before anything else);
//! 4. a receiver is already waiting on the endpoint;
//! 5. (address space valid: one address space — always true);
//! 6. the receiver's priority is at least the caller's (its nice value is
//!    not higher);
//! 7. (Grant for the reply capability: greenos's reply needs no grant —
//!    always true);
//! 8. (scheduling domain: none in greenos — always true);
//! 9. (MCS scheduling contexts: the caller's is donated, see below —
//!    always true);
//! 10. the receiver last ran on the caller's CPU and may run there.
//!
//! `reply_recv` switches straight back under the matching list: no sender
//! is waiting on the endpoint (else the server takes that message without
//! blocking), the reply fits the fast registers with no capabilities, and
//! the caller satisfies 6 and 10.
//!
//! The switch itself is the runtime's job: `wait::switch_to_and_park_until`
//! (a call, with the receiver claimed: below) or
//! `wait::hand_back_and_park_until` (a reply) parks the caller on its own
//! port and, when the partner is parked on this CPU, switches straight to
//! it without the run queue; a call runs the server *nested*: the caller
//! resumes the server's coroutine itself, and the server's hand-back
//! returns straight to the caller (two stack switches per round trip, no
//! worker in between: `executor::park_and_switch_to`). Both steps are
//! inlined into the caller's frame, with the protocol's first step in an
//! out-of-line pass before it ([`Endpoint::call`]'s `call_send`,
//! `reply_recv`'s `reply_recv_begin`) and the reading of the answer
//! inlined after it (`finish_call`, `finish_recv`): a switch taken deep in
//! a call chain costs a mispredicted return per frame on each side (the
//! runtime's `wait` module doc, "Switch depth"). Which steps are inlined
//! was measured: the first steps inlined took fewer instructions but more
//! time; the reading, inlined, about 5 ns less per round trip.
//! On
//! a call the server runs on the caller's scheduling context, as with
//! seL4 MCS's donation on `Call` and LRPC's "the server runs on the
//! client's time": CFS keeps the caller as its running entity and charges
//! it for the server's work, and a reply that switches straight back costs
//! no scheduler work at all. If the server does anything else (blocks
//! elsewhere, yields, is preempted, exits) or the caller's turn runs out,
//! the runtime settles: the caller is charged up to then and sleeps, the
//! server becomes the running task. The partner is switched to only when
//! CFS would pick it next anyway (not more than a wakeup granularity ahead
//! of the leftmost queued task), so a calling pair never keeps its CPU
//! from other tasks. As in seL4,
//! where a blocked thread's state lives in its TCB and the endpoint queues
//! TCBs, a port has exactly one waiter, its task, and wakers name it: no
//! wait queue sits between them (`wait::park_until` / `Task::unpark`). With
//! [`SwitchMode::Lazy`] the partner is woken the ordinary way (through its
//! CPU's run queue), for comparison ([`set_default_switch_mode`] chooses
//! for endpoints created afterwards: the process-wide option).
//!
//! # Locking
//!
//! One lock per endpoint (its queues; the holds are a queue push or pop
//! and a message copy): a `BiasedSpinLock`, which the worker thread that
//! takes it over and over (a client and its server on one CPU) takes
//! with plain loads and stores, and anyone else with one locked
//! instruction (revoking the bias once, with the kernel's `membarrier`:
//! see `greenos_runtime::sync::BiasedSpinLock`). A port has none: its state word
//! (generation and phase) is claimed by compare-and-swap where two parties
//! can race for it (a reply against the caller giving up), and stored
//! otherwise (see `PortWord`). Wakeups are issued after the endpoint lock
//! is released. A blocked party's slot is its task's `Port`; each
//! blocking operation has a fresh generation (`op`), so a late reply or
//! wakeup for an operation that gave up is recognised and ignored.
//!
//! Reference counts are kept off the fast path:
//! - Senders are queued with a counted handle; receivers without one
//!   (`Queues::receivers`): a deliverer that pops a receiver *claims* its
//!   task (`Task::try_claim`, PARKED -> RUNNABLE) before marking the
//!   receive done, so the receiver cannot run, and its port cannot end,
//!   until the deliverer switches to it or wakes it (seL4's fastpath
//!   dequeues the receiver first, too). A receiver that is not parked
//!   (still switching out, or spinning on another CPU) is woken through a
//!   handle counted before `Done`.
//! - A call's reply capability counts the caller's port, but the count is
//!   recycled: the caller takes its port's spare handle (`Port::spare`),
//!   and a reply made on the caller's lent context (`wait::lent_by`: the
//!   caller cannot run, time out or be killed into its withdraw before the
//!   server switches out) puts it back, and claims the call with a load and
//!   a store instead of a compare-and-swap.
//!
//! So a direct-switch round trip on one CPU takes two locked
//! instructions: the claim of the server, and the server's park completing
//! (`RUNNABLE -> PARKED`) as it hands back. (With the endpoint lock's two
//! swaps it took four; the swaps, right behind the switches' stores, cost
//! 5 of the 49 ns a null call took before the lock was biased.)

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenos_runtime::sync::{BiasedGuard, BiasedSpinLock};
use greenos_runtime::task::Task;
use greenos_runtime::trace::BlockOn;
use greenos_runtime::wait::{self, Claimed, WaitResult};

use crate::cap::{self, Cap, CapNode, CapSlot, Object, Rights, Staged, Transfer};
use crate::errno::Errno;

/// Message registers passed in the switch itself (seL4
/// `seL4_FastMessageRegisters` = 4 on x86_64, reference/ipc.md §4.2).
pub const FAST_MRS: usize = 4;
/// Virtual message registers in the task's IPC buffer (Pistachio
/// `IPC_NUM_MR` = 64, reference/ipc.md §4.5).
pub const BUFFER_MRS: usize = 64;
/// Longest message, in registers.
pub const MAX_MSG_LENGTH: usize = FAST_MRS + BUFFER_MRS;
/// Capabilities per message (seL4 `seL4_MsgMaxExtraCaps` = 3, §4.2).
pub const MAX_EXTRA_CAPS: usize = 3;

// ---------------------------------------------------------------------------
// Messages.

/// The message tag (`seL4_MessageInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgTag {
    /// Free for the user (typically the opcode).
    pub label: u64,
    /// Message registers in use, `0..=MAX_MSG_LENGTH`.
    pub length: u8,
    /// Capabilities sent (on receive: how many arrived).
    pub extra_caps: u8,
    /// On receive: bit `i` set if cap `i` was unwrapped to its badge.
    pub caps_unwrapped: u8,
}

/// A message: tag, the fast registers, and capabilities.
#[derive(Clone, Copy, Debug, Default)]
pub struct Msg {
    /// The tag.
    pub tag: MsgTag,
    /// MR0..MR3 (the rest are in the IPC buffer: [`set_mr`], [`mr`]).
    pub mr: [u64; FAST_MRS],
    /// On receive: the badge of the sender's capability (0: unbadged).
    pub badge: u64,
    /// Staged to send, or what arrived (one array for both directions
    /// keeps a message at 104 bytes, checked by a test: it is copied on
    /// every call and receive).
    caps: [CapSlot; MAX_EXTRA_CAPS],
}

impl Msg {
    /// A message with `label` and the fast registers `words` (length =
    /// `words.len()`, at most [`FAST_MRS`]; longer messages set
    /// `tag.length` and the buffer registers).
    #[inline]
    pub fn new(label: u64, words: &[u64]) -> Msg {
        let n = words.len().min(FAST_MRS);
        let mut mr = [0; FAST_MRS];
        mr[..n].copy_from_slice(&words[..n]);
        Msg {
            tag: MsgTag {
                label,
                length: n as u8,
                extra_caps: 0,
                caps_unwrapped: 0,
            },
            mr,
            badge: 0,
            caps: [CapSlot::Empty; MAX_EXTRA_CAPS],
        }
    }

    /// Stages capability `cap` in slot `i` (< [`MAX_EXTRA_CAPS`], else
    /// `EINVAL`) to travel with the message.
    pub fn set_cap(&mut self, i: usize, cap: Cap, how: Transfer) -> io::Result<()> {
        if i >= MAX_EXTRA_CAPS {
            return Err(Errno::EINVAL.into());
        }
        self.caps[i] = CapSlot::Out(cap, how);
        Ok(())
    }

    /// On receive: the capability that arrived in slot `i` (an index in the
    /// receiver's current table), if any.
    pub fn cap(&self, i: usize) -> Option<Cap> {
        match self.caps.get(i)? {
            CapSlot::In(c) => Some(*c),
            _ => None,
        }
    }

    /// On receive: the badge of unwrapped capability `i`.
    pub fn unwrapped_badge(&self, i: usize) -> Option<u64> {
        if i >= MAX_EXTRA_CAPS || self.tag.caps_unwrapped & (1 << i) == 0 {
            return None;
        }
        match self.caps[i] {
            CapSlot::Unwrapped(b) => Some(b),
            _ => None,
        }
    }
}

/// Sets virtual message register `k` (`FAST_MRS..MAX_MSG_LENGTH`, else
/// `EINVAL`) in the calling task's IPC buffer.
pub fn set_mr(k: usize, v: u64) -> io::Result<()> {
    if !(FAST_MRS..MAX_MSG_LENGTH).contains(&k) {
        return Err(Errno::EINVAL.into());
    }
    my_port()?.buf[k].store(v, Ordering::Relaxed);
    Ok(())
}

/// Reads virtual message register `k` of the calling task's IPC buffer
/// (`EINVAL` outside `FAST_MRS..MAX_MSG_LENGTH`).
pub fn mr(k: usize) -> io::Result<u64> {
    if !(FAST_MRS..MAX_MSG_LENGTH).contains(&k) {
        return Err(Errno::EINVAL.into());
    }
    Ok(my_port()?.buf[k].load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Ports: a task's blocking slot and IPC buffer.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Idle,
    /// In an endpoint's sender queue.
    QueuedSend,
    /// In an endpoint's receiver queue.
    QueuedRecv,
    /// A call delivered; waiting for the reply.
    AwaitReply,
    /// A replier won the reply (`AwaitReply` -> `Delivering` by CAS) and is
    /// writing the inbox; `Done` follows.
    Delivering,
    /// The operation completed (message taken, delivered or replied).
    Done,
    /// A delivered call whose caller gave up waiting for the reply.
    Abandoned,
}

/// What arrives at a port.
///
/// Between deliveries (after the owner read it) `caps` are `None`, `reply`
/// is `None` and `broken` and `extra` are false: a fast delivery
/// ([`Port::put_fast`]) writes only the tag, registers, badge and reply.
#[derive(Default)]
struct Delivery {
    tag: MsgTag,
    mr: [u64; FAST_MRS],
    badge: u64,
    reply: Option<(Arc<Port>, u64)>,
    /// `caps` or `broken` hold something: the reader takes the slow way.
    extra: bool,
    caps: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS],
    /// The endpoint it came through (to unwrap caps naming it); compared,
    /// never dereferenced.
    via: usize,
    /// The reply capability of this call was dropped unused.
    broken: bool,
}

/// A port's state word: the generation of its current operation (`op`,
/// the high 56 bits) and that operation's [`Phase`] (the low 8 bits), in
/// one atomic so that a replier can check "this call, still awaiting its
/// reply" and claim it in one compare-and-swap, with no lock.
///
/// Who writes it: the port's own task starts an operation (`begin`, a
/// store: no other party acts on a port before it is queued, and a stale
/// replier's CAS names an older generation and fails); a deliverer that
/// popped the port from an endpoint queue (under that endpoint's lock,
/// which also serialises the owner's `withdraw`) stores the next phase of
/// the popped generation; a replier claims `AwaitReply` by CAS. Written
/// with Release after the inbox, read with Acquire.
struct PortWord(AtomicU64);

impl PortWord {
    const PHASE_BITS: u32 = 8;

    #[inline]
    fn pack(op: u64, p: Phase) -> u64 {
        (op << Self::PHASE_BITS) | p as u64
    }

    #[inline]
    fn unpack_phase(w: u64) -> Phase {
        match w as u8 {
            0 => Phase::Idle,
            1 => Phase::QueuedSend,
            2 => Phase::QueuedRecv,
            3 => Phase::AwaitReply,
            4 => Phase::Delivering,
            5 => Phase::Done,
            _ => Phase::Abandoned,
        }
    }

    #[inline]
    fn phase(&self) -> Phase {
        Self::unpack_phase(self.0.load(Ordering::Acquire))
    }

    #[inline]
    fn op(&self) -> u64 {
        self.0.load(Ordering::Acquire) >> Self::PHASE_BITS
    }

    /// Sets `phase` for generation `op` (see the type doc for who may).
    #[inline]
    fn set(&self, op: u64, p: Phase) {
        self.0.store(Self::pack(op, p), Ordering::Release);
    }

    /// Moves generation `op` from phase `from` to `to` if it is there now.
    /// On failure returns the word found.
    fn transition(&self, op: u64, from: Phase, to: Phase) -> Result<(), u64> {
        self.0
            .compare_exchange(
                Self::pack(op, from),
                Self::pack(op, to),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
    }
}

/// A task's IPC port: its state, its inbox and its IPC buffer (the virtual
/// message registers). Its task blocks on it with `wait::park_until`.
pub(crate) struct Port {
    /// The current operation's generation and phase.
    word: PortWord,
    /// What arrives. Written only by the one party that completes the
    /// port's current operation — the deliverer that popped this port from
    /// an endpoint's receiver queue (under that endpoint's lock), the
    /// replier that moved the word from `AwaitReply` to `Delivering` for
    /// the current generation, or the port's own task (`take_sender`,
    /// while it runs) — and always *before* the phase becomes `Done`
    /// (Release). Read, and reset, only by the port's own task after it
    /// observed `Done` (Acquire), when no party can write it any more until
    /// its next operation begins.
    inbox: UnsafeCell<Delivery>,
    /// A counted handle on this very port, kept for the reply capability
    /// of the port's next call, so that a call answered on its lent
    /// context takes no reference count at all. Taken by the port's own
    /// task when it calls ([`Port::handle`]); put back by a replier running
    /// on the caller's lent context ([`Reply::deliver_fast`]: the caller is
    /// blocked in that call and cannot run before the replier switches
    /// out) before the call is marked `Done` (Release; the owner reads it
    /// after seeing `Done`, Acquire). The cycle it makes is broken when
    /// the task ends ([`PortSlot`]).
    spare: UnsafeCell<Option<Arc<Port>>>,
    buf: [AtomicU64; MAX_MSG_LENGTH],
    task: Task,
}

// SAFETY: every field but `inbox` is Send + Sync on its own; `inbox` is
// written and read under the protocol in its field comment, which admits
// one accessor at a time, ordered by the endpoint lock, the state word's
// CAS and its Release/Acquire (the values inside are `Send`: `Arc`s of Send + Sync
// objects and plain words).
unsafe impl Sync for Port {}
// SAFETY: as for Sync.
unsafe impl Send for Port {}

impl Port {
    /// Writes the inbox.
    ///
    /// # Safety
    /// The caller is the one party allowed to complete the current
    /// operation (see the field comment), and sets the phase to `Done` (or
    /// reads the inbox itself) afterwards.
    unsafe fn put(&self, mut d: Delivery) {
        d.extra = d.broken || d.caps.iter().any(Option::is_some);
        // SAFETY: the caller's contract gives exclusive access.
        unsafe { *self.inbox.get() = d };
    }

    /// Writes a delivery without capabilities: only the fields such a
    /// delivery sets (the rest are as the owner's last read left them,
    /// see [`Delivery`]).
    ///
    /// # Safety
    /// As for [`put`](Self::put).
    #[inline(always)]
    unsafe fn put_fast(
        &self,
        tag: MsgTag,
        mr: [u64; FAST_MRS],
        badge: u64,
        reply: Option<(Arc<Port>, u64)>,
    ) {
        // SAFETY: the caller's contract gives exclusive access.
        let d = unsafe { &mut *self.inbox.get() };
        debug_assert!(!d.extra && d.reply.is_none());
        d.tag = tag;
        d.mr = mr;
        d.badge = badge;
        // SAFETY: `d.reply` is `None` between deliveries (see `Delivery`):
        // overwriting it drops nothing, and skips the check that would.
        unsafe { std::ptr::write(&mut d.reply, reply) };
    }

    /// The inbox, to read and take from in place (the port's own task,
    /// after it saw `Done`).
    ///
    /// # Safety
    /// As for [`take_inbox`](Self::take_inbox); the borrow must end before
    /// the port's next operation begins.
    #[allow(clippy::mut_from_ref)]
    unsafe fn inbox_mut(&self) -> &mut Delivery {
        // SAFETY: per the contract no other party reads or writes it now.
        unsafe { &mut *self.inbox.get() }
    }

    /// Takes the inbox (the port's own task, after it saw `Done`).
    ///
    /// # Safety
    /// Called by the port's own task after it observed `Done` for its
    /// current operation (or after writing the inbox itself).
    unsafe fn take_inbox(&self) -> Delivery {
        // SAFETY: per the contract no other party writes it now.
        unsafe { std::mem::take(&mut *self.inbox.get()) }
    }
}

impl Port {
    /// A counted handle on this port for a call's reply capability: the
    /// spare one if a lent reply gave it back, else a new count.
    ///
    /// # Safety
    /// Called by the port's own task as it starts a call (the spare slot
    /// is its own then: see `Port::spare`).
    #[inline]
    unsafe fn handle(self: &Arc<Port>) -> Arc<Port> {
        // SAFETY: the caller's contract.
        unsafe { (*self.spare.get()).take() }.unwrap_or_else(|| self.clone())
    }
}

/// The owner of a task's port (in its `cap::ProcState`); breaks the
/// port's cycle through its spare handle when the task ends.
pub(crate) struct PortSlot(pub(crate) Arc<Port>);

impl PortSlot {
    /// A port for the calling task.
    #[cold]
    pub(crate) fn new() -> PortSlot {
        PortSlot(Arc::new(Port {
            word: PortWord(AtomicU64::new(0)),
            inbox: UnsafeCell::new(Delivery::default()),
            spare: UnsafeCell::new(None),
            buf: std::array::from_fn(|_| AtomicU64::new(0)),
            task: greenos_runtime::current(),
        }))
    }
}

impl Drop for PortSlot {
    fn drop(&mut self) {
        // SAFETY: the task is ending, in no endpoint operation: no replier
        // can be putting a handle back (that happens only during a call).
        drop(unsafe { (*self.0.spare.get()).take() });
    }
}

/// The calling task's port, borrowed for the rest of the calling
/// operation (no reference count taken: an `Arc` is cloned only where the
/// port is queued or named by a reply).
fn my_port<'a>() -> Result<&'a Arc<Port>, Errno> {
    let p: *const Arc<Port> = cap::with_proc(|p| p.port() as *const Arc<Port>)?;
    // SAFETY: the port lives in the task's `ProcState`, a task-local value:
    // boxed, never moved, and freed only when the task ends
    // (`task::LocalKey::with`); every caller is an endpoint operation of
    // this task that returns before the task can end, and the borrow does
    // not escape it (`'a` is chosen by callers inside one operation).
    Ok(unsafe { &*p })
}

impl Port {
    /// Starts the port's next operation in `phase` (its own task, while
    /// the port is in no endpoint queue); returns its generation.
    #[inline]
    fn begin(&self, phase: Phase) -> u64 {
        let op = self.word.op().wrapping_add(1) & (u64::MAX >> PortWord::PHASE_BITS);
        self.word.set(op, phase);
        op
    }

    #[inline]
    fn phase(&self) -> Phase {
        self.word.phase()
    }

    /// Claims the reply to generation `op`: true if it was still awaited
    /// (the word is now `Delivering`; the caller writes the inbox and sets
    /// `Done`), false if the caller gave up or the reply is stale.
    fn claim_reply(&self, op: u64) -> bool {
        self.word
            .transition(op, Phase::AwaitReply, Phase::Delivering)
            .is_ok()
    }

    /// Completes generation `op` (the inbox is written).
    #[inline]
    fn done(&self, op: u64) {
        self.word.set(op, Phase::Done);
    }

    /// Back to idle after the own task read the inbox.
    #[inline]
    fn idle(&self) {
        self.word.set(self.word.op(), Phase::Idle);
    }
}

// ---------------------------------------------------------------------------
// Endpoints.

/// Direct process switch or lazy (run-queue) wakeups; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchMode {
    /// Hand the CPU to the partner when the fastpath conditions hold.
    Direct,
    /// Always wake the partner through its CPU's run queue.
    Lazy,
}

static DEFAULT_LAZY: AtomicBool = AtomicBool::new(false);

/// Chooses the switch mode of endpoints created from now on (the
/// process-wide option; [`Endpoint::with_mode`] chooses per endpoint).
pub fn set_default_switch_mode(mode: SwitchMode) {
    DEFAULT_LAZY.store(mode == SwitchMode::Lazy, Ordering::Relaxed);
}

struct SendEntry {
    port: Arc<Port>,
    op: u64,
    tag: MsgTag,
    mr: [u64; FAST_MRS],
    badge: u64,
    caps: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS],
    is_call: bool,
}

/// A receiver's port in an endpoint's queue, held without a reference
/// count (see `Queues::receivers`).
#[derive(Clone, Copy)]
struct Waiting(*const Port);

// SAFETY: a pointer to a `Port` (itself Send + Sync); when it may be
// dereferenced is the queue's protocol (`Queues::receivers`), whatever the
// thread.
unsafe impl Send for Waiting {}

impl Waiting {
    /// The port.
    ///
    /// # Safety
    /// The entry was in the queue while the caller held the endpoint lock
    /// (popped or not yet), and the caller holds the lock still, or holds
    /// the port's task claimed (see `Queues::receivers`).
    unsafe fn port<'a>(self) -> &'a Port {
        // SAFETY: the caller's contract.
        unsafe { &*self.0 }
    }
}

struct Queues {
    senders: VecDeque<SendEntry>,
    /// Receivers blocked on the endpoint, and their operations, held
    /// without reference counts (two atomics fewer per call): a port is
    /// queued only while its task is blocked in that very receive, which
    /// it leaves only after `withdraw` took the entry out (under this lock)
    /// or after a deliverer popped it and marked it `Done` (under this lock
    /// too). So a popped entry is valid while the popper holds the lock; a
    /// popper that needs it longer first claims its task
    /// (`complete_receiver`: a claimed task cannot run, so its port cannot
    /// die) or takes a counted handle on it.
    receivers: RecvQueue,
}

/// The receiver queue: FIFO, its first entry kept inline (one load from
/// the endpoint rather than two through the ring buffer: a server loop
/// has one receiver, popped by every call on the critical path).
#[derive(Default)]
struct RecvQueue {
    head: Option<(Waiting, u64)>,
    /// The entries after `head` (empty while `head` is `None`).
    rest: VecDeque<(Waiting, u64)>,
}

impl RecvQueue {
    #[inline]
    fn push_back(&mut self, e: (Waiting, u64)) {
        if self.head.is_none() {
            debug_assert!(self.rest.is_empty());
            self.head = Some(e);
        } else {
            self.rest.push_back(e);
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<(Waiting, u64)> {
        let e = self.head.take()?;
        if !self.rest.is_empty() {
            wait::cold_path();
            self.head = self.rest.pop_front();
        }
        Some(e)
    }

    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// Keeps the entries `keep` says to, in order.
    fn retain(&mut self, mut keep: impl FnMut(&(Waiting, u64)) -> bool) {
        if let Some(h) = self.head.take() {
            self.rest.push_front(h);
        }
        self.rest.retain(|e| keep(e));
        self.head = self.rest.pop_front();
    }
}

impl Queues {
    /// Queues `me`'s message as a blocked sender (a call if `is_call`) and
    /// starts its operation; returns the operation's generation.
    #[inline(always)]
    fn push_sender(
        &mut self,
        me: &Arc<Port>,
        tag: MsgTag,
        mr: [u64; FAST_MRS],
        badge: u64,
        caps: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS],
        is_call: bool,
    ) -> u64 {
        let op = me.begin(Phase::QueuedSend);
        self.senders.push_back(SendEntry {
            port: me.clone(),
            op,
            tag,
            mr,
            badge,
            caps,
            is_call,
        });
        op
    }
}

/// Writes a message into the inbox of `r`, a receiver popped from `ep`'s
/// queue, with the long registers copied from the sender's port `me`.
///
/// # Safety
/// The caller holds the endpoint lock under which `r` was popped: it is
/// the one party completing `r`'s receive (see `Port::inbox`), before
/// `complete_receiver` makes it `Done`.
#[allow(clippy::too_many_arguments)]
unsafe fn put_message(
    r: &Port,
    me: &Port,
    ep: &EndpointObj,
    tag: MsgTag,
    mr: [u64; FAST_MRS],
    badge: u64,
    caps: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS],
    reply: Option<(Arc<Port>, u64)>,
) {
    copy_long(me, r, tag.length);
    // SAFETY: the caller's contract.
    unsafe {
        r.put(Delivery {
            tag,
            mr,
            badge,
            caps,
            via: ep as *const EndpointObj as usize,
            reply,
            broken: false,
            extra: false,
        })
    };
}

/// Marks the popped receiver `r`'s operation `rop` done (its inbox is
/// written) and releases the endpoint lock `q`. Returns `r`'s task claimed
/// if it was parked, for the caller to switch to or wake; otherwise wakes
/// it (through a handle taken before `Done`: once `Done`, it may run on
/// and end at any time) and returns None.
#[inline(always)]
fn complete_receiver(r: &Port, rop: u64, q: BiasedGuard<'_, Queues>) -> Option<Claimed> {
    if let Some(c) = r.task.try_claim() {
        r.done(rop);
        drop(q);
        return Some(c);
    }
    let t = r.task.clone();
    r.done(rop);
    drop(q);
    t.unpark();
    None
}

/// An endpoint (what an endpoint capability names).
pub struct EndpointObj {
    q: BiasedSpinLock<Queues>,
    mode: SwitchMode,
    dropped: AtomicU64,
    direct_switches: AtomicU64,
}

impl EndpointObj {
    /// Counts a direct-switch handoff. A plain load and store, not a
    /// read-modify-write: the count is a statistic, and concurrent handoffs
    /// from two CPUs may lose an increment (documented on
    /// `Endpoint::direct_switches`).
    fn count_direct_switch(&self) {
        let n = self.direct_switches.load(Ordering::Relaxed);
        self.direct_switches.store(n + 1, Ordering::Relaxed);
    }
}

impl fmt::Debug for EndpointObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointObj")
            .field("mode", &self.mode)
            .finish()
    }
}

/// A handle on an endpoint capability (a [`Cap`] with the endpoint calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    cap: Cap,
}

/// The one-shot right to answer a call, tied to the calling task and call.
///
/// Dropping it without replying (or consuming it in a reply that fails)
/// fails the caller's `call` with `ESRCH`, so a server that gives up on a
/// request, or dies holding it, does not leave its caller blocked forever.
///
/// Two words and no padding: it is moved on every `reply_recv`, and a
/// move copies padding bytes too, in pieces that a later wider load cannot
/// forward from (a stall perf put at a fifth of `reply_recv_begin`). An
/// answered or stale reply is consumed by [`into_port`](Self::into_port),
/// without running `Drop`.
pub struct Reply {
    port: Arc<Port>,
    op: u64,
}

impl Reply {
    /// The caller's port, the reply spent without `Drop` (answered, or
    /// found stale).
    fn into_port(self) -> Arc<Port> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the `Arc` is
        // moved out exactly once.
        unsafe { std::ptr::read(&this.port) }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.port.claim_reply(self.op) {
            // SAFETY: the claim makes us the one party completing this
            // operation (see `Port::inbox`), before the phase becomes `Done`.
            unsafe {
                self.port.put(Delivery {
                    broken: true,
                    ..Delivery::default()
                })
            };
            self.port.done(self.op);
            self.port.task.unpark();
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("caller", &self.port.task.pid())
            .finish()
    }
}

fn deadline(t: Option<Duration>) -> Option<Instant> {
    t.map(|d| Instant::now() + d)
}

fn left(d: Option<Instant>) -> Result<Option<Duration>, Errno> {
    match d {
        None => Ok(None),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                Err(Errno::ETIMEDOUT)
            } else {
                Ok(Some(d - now))
            }
        }
    }
}

/// Stages the message's capabilities; returns them and the moved indices.
type StagedCaps = (
    [Option<Arc<CapNode>>; MAX_EXTRA_CAPS],
    [Option<Cap>; MAX_EXTRA_CAPS],
    u8,
);

/// Whether `msg` carries capabilities to transfer.
#[inline]
fn has_out_caps(msg: &Msg) -> bool {
    msg.caps.iter().any(|c| matches!(c, CapSlot::Out(..)))
}

#[inline]
fn stage_caps(msg: &Msg, rights: Rights) -> Result<StagedCaps, Errno> {
    if !has_out_caps(msg) {
        // The common case (and the fastpath's condition): nothing to stage.
        return Ok((Default::default(), [None; MAX_EXTRA_CAPS], 0));
    }
    stage_caps_slow(msg, rights)
}

/// [`stage_caps`] for a message that carries capabilities.
#[cold]
fn stage_caps_slow(msg: &Msg, rights: Rights) -> Result<StagedCaps, Errno> {
    let mut nodes: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS] = Default::default();
    let mut moved = [None; MAX_EXTRA_CAPS];
    let mut n = 0u8;
    for (i, o) in msg.caps.iter().enumerate() {
        if let CapSlot::Out(c, how) = *o {
            if !rights.contains(Rights::GRANT) {
                return Err(Errno::EPERM);
            }
            let Staged { node, moved_from } = cap::stage(c, how)?;
            nodes[i] = Some(node);
            moved[i] = moved_from;
            n = n.max(i as u8 + 1);
        }
    }
    Ok((nodes, moved, n))
}

/// The tag a message travels with: the sender's, with `extra_caps`
/// counting the capabilities staged and `caps_unwrapped` clear (the
/// receiver's side sets both when capabilities arrive, so a message
/// without any is read out with its tag copied whole).
#[inline(always)]
fn send_tag(tag: MsgTag, ncaps: u8) -> MsgTag {
    MsgTag {
        extra_caps: ncaps,
        caps_unwrapped: 0,
        ..tag
    }
}

fn check_len(msg: &Msg) -> Result<(), Errno> {
    if msg.tag.length as usize > MAX_MSG_LENGTH {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Copies the buffer registers `FAST_MRS..len` from one port to another.
fn copy_long(from: &Port, to: &Port, len: u8) {
    for k in FAST_MRS..(len as usize).min(MAX_MSG_LENGTH) {
        to.buf[k].store(from.buf[k].load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// The endpoint a node resolved by `Endpoint::resolve` names.
fn ep_of(n: &CapNode) -> &Arc<EndpointObj> {
    match &n.object {
        Object::Endpoint(e) => e,
        _ => unreachable!("Endpoint::resolve checked the kind"),
    }
}

/// Whether the fastpath's priority and placement rules (6 and 10) let
/// `me` (the running task's port) hand its CPU to `to`: `to` last ran on
/// the CPU `me` runs on. (That `to` may run here is checked again by
/// `wait::unpark_and_park_until`, which falls back to an ordinary wakeup.)
fn may_switch_to(me: &Port, to: &Task) -> bool {
    to.nice() <= me.task.nice() && to.cpu() == me.task.cpu()
}

impl Endpoint {
    /// Creates an endpoint (switch mode: the process-wide default) and
    /// returns a capability to it with every right.
    pub fn new() -> io::Result<Endpoint> {
        let lazy = DEFAULT_LAZY.load(Ordering::Relaxed);
        Endpoint::with_mode(if lazy {
            SwitchMode::Lazy
        } else {
            SwitchMode::Direct
        })
    }

    /// Creates an endpoint with the given switch mode.
    pub fn with_mode(mode: SwitchMode) -> io::Result<Endpoint> {
        let obj = Arc::new(EndpointObj {
            q: BiasedSpinLock::new(Queues {
                senders: VecDeque::new(),
                receivers: RecvQueue::default(),
            }),
            mode,
            dropped: AtomicU64::new(0),
            direct_switches: AtomicU64::new(0),
        });
        Ok(Endpoint {
            cap: cap::create(Object::Endpoint(obj))?,
        })
    }

    /// The endpoint a capability names (checked when used).
    pub fn from_cap(cap: Cap) -> Endpoint {
        Endpoint { cap }
    }

    /// The capability.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// Runs `f` with the endpoint's capability node (checked for `need`),
    /// the endpoint, and the calling task's port: one lookup of the
    /// current task for all three, and no reference count taken on a
    /// lookup-cache hit (`cap::with_resolved_endpoint_on`). `ESRCH`
    /// outside a task.
    #[inline(always)]
    fn with_ep<R, E: From<Errno>>(
        &self,
        need: Rights,
        f: impl FnOnce(&CapNode, &EndpointObj, &Arc<Port>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.with_ep_here(
            need,
            #[inline(always)]
            |node, ep, me, _| f(node, ep, me),
        )
    }

    /// [`with_ep`](Self::with_ep), also handing `f` where the task runs
    /// (`wait::Here`, from the same thread-local read), for the
    /// endpoint lock and the park of `call` and `reply_recv`'s common
    /// case. `f` must not use it after it first switches out.
    #[inline(always)]
    fn with_ep_here<R, E: From<Errno>>(
        &self,
        need: Rights,
        f: impl FnOnce(&CapNode, &EndpointObj, &Arc<Port>, wait::Here) -> Result<R, E>,
    ) -> Result<R, E> {
        cap::with_proc_here_or(
            #[inline(always)]
            |p, here| {
                cap::with_resolved_endpoint_on(
                    p,
                    self.cap,
                    need,
                    #[inline(always)]
                    |p, node, ep| f(node, ep, p.port(), here),
                )
            },
            || {
                wait::cold_path();
                Err(Errno::ESRCH.into())
            },
        )
    }

    fn resolve(&self, need: Rights) -> Result<Arc<CapNode>, Errno> {
        let n = cap::resolve(self.cap, need)?;
        match &n.object {
            Object::Endpoint(_) => Ok(n),
            _ => Err(Errno::EINVAL),
        }
    }

    /// How many senders (and callers) and how many receivers are blocked on
    /// the endpoint now.
    pub fn queued(&self) -> io::Result<(usize, usize)> {
        let node = self.resolve(Rights::NONE)?;
        let q = ep_of(&node).q.lock();
        Ok((q.senders.len(), q.receivers.len()))
    }

    /// Messages `nb_send` dropped because no receiver waited.
    pub fn dropped(&self) -> io::Result<u64> {
        let node = self.resolve(Rights::NONE)?;
        Ok(ep_of(&node).dropped.load(Ordering::Relaxed))
    }

    /// Handoffs (by `call` and by `reply_recv`) that took the direct-switch
    /// path (approximate when several CPUs hand off through one endpoint at
    /// once: the counter is not a read-modify-write).
    pub fn direct_switches(&self) -> io::Result<u64> {
        let node = self.resolve(Rights::NONE)?;
        Ok(ep_of(&node).direct_switches.load(Ordering::Relaxed))
    }

    /// Sends `msg`, blocking until a receiver takes it.
    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        Ok(self.send_inner(msg, false, None)?)
    }

    /// [`send`](Self::send) giving up with `ETIMEDOUT` after `timeout`.
    pub fn send_timeout(&self, msg: &Msg, timeout: Duration) -> io::Result<()> {
        Ok(self.send_inner(msg, false, Some(timeout))?)
    }

    /// Sends `msg` if a receiver is waiting; otherwise drops it silently
    /// (seL4 `NBSend`) and counts it in [`dropped`](Self::dropped).
    pub fn nb_send(&self, msg: &Msg) -> io::Result<()> {
        Ok(self.send_inner(msg, true, None)?)
    }

    fn send_inner(&self, msg: &Msg, nb: bool, timeout: Option<Duration>) -> Result<(), Errno> {
        check_len(msg)?;
        self.with_ep(Rights::SEND, |node, ep, me| {
            self.send_on(node, ep, me, msg, nb, timeout)
        })
    }

    /// [`send_inner`](Self::send_inner) with the endpoint resolved.
    fn send_on(
        &self,
        node: &CapNode,
        ep: &EndpointObj,
        me: &Arc<Port>,
        msg: &Msg,
        nb: bool,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let (caps, moved, ncaps) = stage_caps(msg, node.rights)?;
        let tag = send_tag(msg.tag, ncaps);
        let mut q = ep.q.lock();
        if let Some((r, rop)) = q.receivers.pop_front() {
            // SAFETY: popped under the endpoint lock we hold (released only
            // by `complete_receiver`, after which `r` is not used).
            let r = unsafe { r.port() };
            // SAFETY: `r` left the receiver queue under the endpoint lock
            // we hold: only we may complete its receive (a timing-out `r`
            // takes this lock before it looks), so no port lock.
            unsafe { put_message(r, me, ep, tag, msg.mr, node.badge, caps, None) };
            let claimed = complete_receiver(r, rop, q);
            finish_moves(&moved);
            // A send does not block, so it has no CPU to hand over: the
            // receiver is woken (sync in direct mode: the sender is likely
            // to block soon, as a pipe writer is).
            if let Some(c) = claimed {
                if ep.mode == SwitchMode::Direct {
                    c.wake_sync();
                } else {
                    c.wake();
                }
            }
            return Ok(());
        }
        if nb {
            ep.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        q.push_sender(me, tag, msg.mr, node.badge, caps, false);
        drop(q);
        let r = wait_done(me, ep, deadline(timeout), None);
        if r.is_ok() {
            finish_moves(&moved);
        }
        r
    }

    /// Waits for a message. Returns it and, for a call, the one-shot reply
    /// capability.
    #[inline]
    pub fn recv(&self) -> io::Result<(Msg, Option<Reply>)> {
        Ok(self.recv_inner(None)?)
    }

    /// [`recv`](Self::recv) giving up with `ETIMEDOUT` after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<(Msg, Option<Reply>)> {
        Ok(self.recv_inner(Some(timeout))?)
    }

    /// Takes a message if a sender is waiting; `EAGAIN` otherwise (seL4
    /// `NBRecv`).
    pub fn nb_recv(&self) -> io::Result<(Msg, Option<Reply>)> {
        Ok(self.with_ep(Rights::RECV, |_, ep, me| {
            let q = ep.q.lock();
            if q.senders.is_empty() {
                return Err(Errno::EAGAIN);
            }
            self.take_sender(ep, me, q)?;
            self.finish_recv(me)
        })?)
    }

    #[inline]
    fn recv_inner(&self, timeout: Option<Duration>) -> Result<(Msg, Option<Reply>), Errno> {
        self.with_ep(Rights::RECV, |_, ep, me| {
            let q = ep.q.lock();
            self.recv_locked(ep, me, q, deadline(timeout), None, false)
        })
    }

    /// Receives with the endpoint lock held: takes a waiting sender, or
    /// queues and waits. `switch_to` is a caller to hand the CPU to while
    /// blocking (reply_recv's direct switch back).
    fn recv_locked(
        &self,
        ep: &EndpointObj,
        me: &Arc<Port>,
        mut q: BiasedGuard<'_, Queues>,
        dl: Option<Instant>,
        switch_to: Option<Arc<Port>>,
        fast_back: bool,
    ) -> Result<(Msg, Option<Reply>), Errno> {
        if !q.senders.is_empty() {
            self.take_sender(ep, me, q)?;
            if let Some(c) = switch_to {
                c.task.unpark();
            }
            return self.finish_recv(me);
        }
        let op = me.begin(Phase::QueuedRecv);
        q.receivers.push_back((Waiting(Arc::as_ptr(me)), op));
        drop(q);
        match (switch_to, fast_back) {
            // ReplyRecv's fastpath: hand the CPU back to the caller.
            (Some(c), true) => {
                ep.count_direct_switch();
                wait_done(me, ep, dl, Some(Handoff::Reply(&c.task)))?;
            }
            (Some(c), false) => {
                c.task.unpark();
                wait_done(me, ep, dl, None)?;
            }
            (None, _) => wait_done(me, ep, dl, None)?,
        }
        self.finish_recv(me)
    }

    /// Takes the first queued sender's message into `me`'s inbox.
    fn take_sender(
        &self,
        ep: &EndpointObj,
        me: &Arc<Port>,
        mut q: BiasedGuard<'_, Queues>,
    ) -> Result<(), Errno> {
        let s = q.senders.pop_front().expect("checked non-empty");
        copy_long(&s.port, me, s.tag.length);
        // SAFETY: our own port, in no queue: we complete its operation.
        unsafe {
            me.put(Delivery {
                tag: s.tag,
                mr: s.mr,
                badge: s.badge,
                caps: s.caps,
                via: ep as *const EndpointObj as usize,
                reply: s.is_call.then(|| (s.port.clone(), s.op)),
                broken: false,
                extra: false,
            })
        };
        me.begin(Phase::Done);
        // Popped under the endpoint lock we still hold: the sender's own
        // `withdraw` waits for it, so a store is enough.
        debug_assert_eq!(s.port.word.op(), s.op);
        let wake = if s.is_call {
            s.port.word.set(s.op, Phase::AwaitReply);
            false
        } else {
            s.port.done(s.op);
            true
        };
        drop(q);
        if wake {
            s.port.task.unpark();
        }
        Ok(())
    }

    /// Reads the delivered message out of `me`'s inbox, installing its
    /// capabilities in the current table.
    #[inline(always)]
    fn finish_recv<E: From<Errno>>(&self, me: &Arc<Port>) -> Result<(Msg, Option<Reply>), E> {
        debug_assert_eq!(me.phase(), Phase::Done);
        // Field by field rather than `take_inbox`: the fast registers are
        // copied out, only the owning fields are taken (the inbox is not
        // rewritten whole on every receive).
        // SAFETY: this is the port's own task, and its operation is `Done`:
        // no other party touches the inbox until its next operation begins.
        let d = unsafe { me.inbox_mut() };
        let reply = d.reply.take().map(|(port, op)| Reply { port, op });
        if d.extra {
            return Ok(finish_recv_extra(me, d, reply)?);
        }
        me.idle();
        // Built in the result itself (a message built first and copied
        // after stalls on store forwarding: its tag is written in pieces).
        // The tag whole (`send_tag`: nothing to clear without capabilities).
        Ok((
            Msg {
                tag: d.tag,
                mr: d.mr,
                badge: d.badge,
                caps: [CapSlot::Empty; MAX_EXTRA_CAPS],
            },
            reply,
        ))
    }

    /// [`finish_recv`](Self::finish_recv) for a call's reply, which
    /// carries no reply capability, in the form `call` returns.
    #[inline(always)]
    fn finish_call(&self, me: &Arc<Port>) -> io::Result<Msg> {
        debug_assert_eq!(me.phase(), Phase::Done);
        // SAFETY: as in `finish_recv`.
        let d = unsafe { me.inbox_mut() };
        debug_assert!(d.reply.is_none());
        if d.extra {
            return Ok(self.finish_recv::<Errno>(me)?.0);
        }
        // Idle first: the inbox stays this task's own until its next
        // operation begins (no party completes an idle port), and the
        // message is then read straight into the result (read before the
        // store, it would be kept on the stack across it).
        me.idle();
        Ok(Msg {
            tag: d.tag,
            mr: d.mr,
            badge: d.badge,
            caps: [CapSlot::Empty; MAX_EXTRA_CAPS],
        })
    }

    /// Sends `msg` and waits for the reply (seL4 `Call`).
    ///
    /// Its common case (no capabilities) runs as three steps in the
    /// caller's frame: `call_send` (out of line) delivers the message or
    /// queues the caller, the park is inlined so that the direct switch
    /// sits in the caller's frame (the runtime's `wait` module doc, "Switch
    /// depth"), and `finish_call` (inlined too) reads the reply straight
    /// into the result.
    #[inline(always)]
    pub fn call(&self, msg: &Msg) -> io::Result<Msg> {
        if msg.tag.length as usize > MAX_MSG_LENGTH || has_out_caps(msg) {
            wait::cold_path();
            return Ok(self.call_inner(msg, None)?);
        }
        self.with_ep_here(
            Rights::CALL,
            #[inline(always)]
            |node, ep, me, here| {
                let r = match self.call_send(node, ep, me, msg, here) {
                    // SAFETY (`wait_handoff`): `here` was made by
                    // `with_ep_here` and nothing switched since.
                    Some(server) => unsafe { wait_handoff(here, me, ep, Handoff::Call(server)) },
                    None => {
                        wait::cold_path();
                        wait_done_slow(me, ep, None, None)
                    }
                };
                r?;
                self.finish_call(me)
            },
        )
    }

    /// [`call`](Self::call) giving up with `ETIMEDOUT` after `timeout` (the
    /// call may have been delivered; its late reply is then refused).
    pub fn call_timeout(&self, msg: &Msg, timeout: Duration) -> io::Result<Msg> {
        Ok(self.call_inner(msg, Some(timeout))?)
    }

    /// The call with a timeout or capabilities (and [`call`](Self::call)
    /// with an invalid message): [`call_on`](Self::call_on).
    fn call_inner(&self, msg: &Msg, timeout: Option<Duration>) -> Result<Msg, Errno> {
        check_len(msg)?;
        self.with_ep(Rights::CALL, |node, ep, me| {
            self.call_on(node, ep, me, msg, timeout)
        })
    }

    /// [`call`](Self::call)'s first step, for a message without
    /// capabilities and no timeout: with a receiver waiting, delivers the
    /// call to it and returns its port when the fastpath conditions let
    /// the caller switch straight to it (else wakes it); with none,
    /// queues the caller. Either way the caller then waits for its reply.
    #[inline(never)]
    fn call_send(
        &self,
        node: &CapNode,
        ep: &EndpointObj,
        me: &Arc<Port>,
        msg: &Msg,
        here: wait::Here,
    ) -> Option<Claimed> {
        let tag = send_tag(msg.tag, 0);
        // SAFETY: `here` comes from `call`'s `with_ep_here`, and nothing
        // switched since.
        let mut q = unsafe { ep.q.lock_here(here) };
        let Some((r, rop)) = q.receivers.pop_front() else {
            q.push_sender(me, tag, msg.mr, node.badge, Default::default(), true);
            return None;
        };
        // SAFETY: popped under the endpoint lock we hold (released only
        // by `complete_receiver`, after which `r` is not used).
        let r = unsafe { r.port() };
        let op = me.begin(Phase::AwaitReply);
        // As in `send_on`: popped under the endpoint lock we hold, so no
        // port lock.
        copy_long(me, r, tag.length);
        // SAFETY (`handle`): our own port, starting this call.
        let reply = Some((unsafe { me.handle() }, op));
        // SAFETY: the one party completing this operation (see
        // `Port::inbox`), before the phase becomes `Done`.
        unsafe { r.put_fast(tag, msg.mr, node.badge, reply) };
        // The fastpath conditions (module doc): 1 (no caps: checked by the
        // caller), 4 (we found r waiting: claimed below), 6 and 10.
        let fast = ep.mode == SwitchMode::Direct
            && tag.length as usize <= FAST_MRS
            && may_switch_to(me, &r.task);
        let claimed = complete_receiver(r, rop, q)?;
        if fast {
            ep.count_direct_switch();
            return Some(claimed);
        }
        claimed.wake();
        None
    }

    /// [`call_inner`](Self::call_inner) with the endpoint resolved.
    fn call_on(
        &self,
        node: &CapNode,
        ep: &EndpointObj,
        me: &Arc<Port>,
        msg: &Msg,
        timeout: Option<Duration>,
    ) -> Result<Msg, Errno> {
        let (caps, moved, ncaps) = stage_caps(msg, node.rights)?;
        let dl = deadline(timeout);
        let tag = send_tag(msg.tag, ncaps);
        let mut q = ep.q.lock();
        let op;
        let mut handoff = None;
        if let Some((r, rop)) = q.receivers.pop_front() {
            // SAFETY: popped under the endpoint lock we hold (released
            // only by `complete_receiver`, after which `r` is not used).
            let r = unsafe { r.port() };
            op = me.begin(Phase::AwaitReply);
            // SAFETY: our own port, starting this call.
            let reply = Some((unsafe { me.handle() }, op));
            // SAFETY: as in `send_on`: popped under the endpoint lock we
            // hold, so no port lock.
            unsafe { put_message(r, me, ep, tag, msg.mr, node.badge, caps, reply) };
            // The fastpath conditions (module doc): 1, 4 (we found r
            // waiting), 6 and 10.
            let fast = ep.mode == SwitchMode::Direct
                && tag.length as usize <= FAST_MRS
                && ncaps == 0
                && may_switch_to(me, &r.task);
            let claimed = complete_receiver(r, rop, q);
            finish_moves(&moved);
            if let Some(c) = claimed {
                if fast {
                    ep.count_direct_switch();
                    handoff = Some(c);
                } else {
                    c.wake();
                }
            }
        } else {
            op = q.push_sender(me, tag, msg.mr, node.badge, caps, true);
            drop(q);
        }
        let _ = op;
        let r = wait_done(me, ep, dl, handoff.map(Handoff::Call));
        // Delivered (taken by a receiver) even if the reply never came.
        if r.is_ok() || me.phase() == Phase::Abandoned {
            finish_moves(&moved);
        }
        r?;
        let (m, _) = self.finish_recv(me)?;
        Ok(m)
    }

    /// Replies to `reply` with `reply_msg`, then waits for the next message
    /// (seL4 `ReplyRecv`, the server loop). The reply is refused silently if
    /// its caller gave up; the receive goes on.
    #[inline(always)]
    pub fn reply_recv(&self, reply: Reply, reply_msg: &Msg) -> io::Result<(Msg, Option<Reply>)> {
        self.reply_recv_inner(reply, reply_msg, None)
    }

    /// [`reply_recv`](Self::reply_recv) whose receive gives up with
    /// `ETIMEDOUT` after `timeout`.
    pub fn reply_recv_timeout(
        &self,
        reply: Reply,
        reply_msg: &Msg,
        timeout: Duration,
    ) -> io::Result<(Msg, Option<Reply>)> {
        self.reply_recv_inner(reply, reply_msg, Some(timeout))
    }

    /// The server loop's step. Its common case (no timeout, a reply
    /// without capabilities) runs as [`call`](Self::call) does:
    /// [`reply_recv_begin`](Self::reply_recv_begin) out of line, the park
    /// (the switch back to the caller) and then
    /// [`finish_recv`](Self::finish_recv) inlined.
    #[inline(always)]
    fn reply_recv_inner(
        &self,
        reply: Reply,
        reply_msg: &Msg,
        timeout: Option<Duration>,
    ) -> io::Result<(Msg, Option<Reply>)> {
        if timeout.is_some() || has_out_caps(reply_msg) {
            wait::cold_path();
            return Ok(self.with_ep(Rights::RECV, |_, ep, me| {
                self.reply_recv_on(ep, me, reply, reply_msg, timeout)
            })?);
        }
        // Held here and lent to the step that consumes it: the closure
        // below then captures only pointers (a `Reply` moved into it is
        // copied through each closure layer, and the copies stall on store
        // forwarding). Left in place if the lookup fails, it drops here.
        let mut reply = Some(reply);
        self.with_ep_here(
            Rights::RECV,
            #[inline(always)]
            |_, ep, me, here| {
                match self.reply_recv_begin(ep, me, &mut reply, reply_msg, here)? {
                    RecvStep::Taken => {}
                    RecvStep::Wait(Some((caller, true))) => {
                        // SAFETY: `here` was made by `with_ep_here` and
                        // nothing switched since.
                        let r = unsafe {
                            wait_handoff(here, me, ep, Handoff::Reply(&caller.port().task))
                        };
                        drop(caller);
                        r?;
                    }
                    RecvStep::Wait(None) => {
                        wait::cold_path();
                        wait_done_slow(me, ep, None, None)?
                    }
                    RecvStep::Wait(Some((caller, false))) => {
                        wait::cold_path();
                        caller.port().task.unpark();
                        drop(caller);
                        wait_done_slow(me, ep, None, None)?;
                    }
                }
                self.finish_recv(me)
            },
        )
    }

    /// [`reply_recv_inner`](Self::reply_recv_inner)'s first step: answers
    /// `reply` (without waking its caller), then takes a waiting sender's
    /// message (`Taken`: the caller is woken) or queues `me` as a receiver
    /// (`Wait`, with the caller's port and whether the CPU may go straight
    /// back to it).
    #[inline(never)]
    fn reply_recv_begin(
        &self,
        ep: &EndpointObj,
        me: &Arc<Port>,
        reply: &mut Option<Reply>,
        reply_msg: &Msg,
        here: wait::Here,
    ) -> Result<RecvStep, Errno> {
        let Some(reply) = reply.take() else {
            unreachable!("reply_recv_begin runs once per reply_recv, with its reply");
        };
        let fast = ep.mode == SwitchMode::Direct
            && reply_msg.tag.length as usize <= FAST_MRS
            && may_switch_to(me, &reply.port.task);
        // Deliver without waking; the receive below wakes the caller (and
        // switches to it when it blocks).
        // SAFETY (both): `here` comes from `reply_recv`'s `with_ep_here`,
        // and nothing switched since.
        let caller = unsafe { reply.deliver_fast(reply_msg, me, here) }?;
        let mut q = unsafe { ep.q.lock_here(here) };
        if !q.senders.is_empty() {
            // A sender waits: take its message without blocking, and wake
            // the caller the ordinary way.
            self.take_sender(ep, me, q)?;
            if let Some(c) = caller {
                c.port().task.unpark();
            }
            return Ok(RecvStep::Taken);
        }
        let op = me.begin(Phase::QueuedRecv);
        q.receivers.push_back((Waiting(Arc::as_ptr(me)), op));
        drop(q);
        if fast && caller.is_some() {
            ep.count_direct_switch();
        }
        Ok(RecvStep::Wait(caller.map(|c| (c, fast))))
    }

    /// [`reply_recv_inner`](Self::reply_recv_inner) with the endpoint
    /// resolved.
    fn reply_recv_on(
        &self,
        ep: &EndpointObj,
        me: &Arc<Port>,
        reply: Reply,
        reply_msg: &Msg,
        timeout: Option<Duration>,
    ) -> Result<(Msg, Option<Reply>), Errno> {
        let fast = ep.mode == SwitchMode::Direct
            && reply_msg.tag.length as usize <= FAST_MRS
            && !has_out_caps(reply_msg)
            && may_switch_to(me, &reply.port.task);
        // Deliver without waking; the receive below wakes the caller (and
        // switches to it when it blocks).
        let switch_to = reply.deliver(reply_msg, me)?;
        let q = ep.q.lock();
        // No sender waiting is checked by recv_locked (it takes that
        // message instead of blocking, and wakes the caller normally).
        self.recv_locked(ep, me, q, deadline(timeout), switch_to, fast)
    }
}

impl Reply {
    /// Answers the call (seL4 `Reply`; never blocks). `ESRCH` if the caller
    /// gave up (timeout, signal) or this reply is stale.
    pub fn reply(self, msg: &Msg) -> io::Result<()> {
        match self.deliver(msg, my_port()?)? {
            Some(port) => {
                port.task.unpark();
                Ok(())
            }
            None => Err(Errno::ESRCH.into()),
        }
    }

    /// The calling task's pid.
    pub fn caller_pid(&self) -> greenos_runtime::Pid {
        self.port.task.pid()
    }

    /// [`deliver`](Self::deliver) for a reply without capabilities (the
    /// fast path of `reply_recv`). When the caller lent the replier its
    /// scheduling context (`wait::lent_by`), nothing can race for the
    /// caller's port (it cannot run, time out or be killed into its
    /// withdraw before the replier switches out): the reply is claimed by a
    /// load and a store instead of a CAS, and the caller's counted handle
    /// goes back to its spare slot instead of being dropped later.
    ///
    /// # Safety
    /// `here` was made since the running task last switched in.
    #[inline(always)]
    unsafe fn deliver_fast(
        self,
        msg: &Msg,
        me: &Port,
        here: wait::Here,
    ) -> Result<Option<Answered>, Errno> {
        check_len(msg)?;
        debug_assert!(!has_out_caps(msg));
        // SAFETY: the caller's contract.
        if !unsafe { wait::lent_by_here(here, &self.port.task) } {
            return Ok(self.deliver(msg, me)?.map(Answered::Counted));
        }
        let tag = send_tag(msg.tag, 0);
        if self.port.word.0.load(Ordering::Acquire) != PortWord::pack(self.op, Phase::AwaitReply) {
            // A reply to an earlier call of this caller.
            drop(self.into_port());
            return Ok(None);
        }
        copy_long(me, &self.port, tag.length);
        // SAFETY: the caller awaits this reply and cannot run (lent): we
        // are the one party completing its operation, before `Done`.
        unsafe { self.port.put_fast(tag, msg.mr, 0, None) };
        let op = self.op;
        let handle = self.into_port();
        let port = Arc::as_ptr(&handle);
        // SAFETY: the spare slot is the caller's, and the caller is blocked
        // in this call until `Done` below (see `Port::spare`).
        unsafe { *(*port).spare.get() = Some(handle) };
        // SAFETY: the handle just stored keeps the port alive, and the
        // caller cannot run before we switch out (see `Answered::Lent`).
        unsafe { (*port).done(op) };
        Ok(Some(Answered::Lent(port)))
    }

    /// Puts the reply in the caller's port (`me` is the replier's); returns
    /// that port, for the caller to wake, or `None` if the caller is gone.
    fn deliver(self, msg: &Msg, me: &Port) -> Result<Option<Arc<Port>>, Errno> {
        check_len(msg)?;
        let (caps, moved, ncaps) = stage_caps(msg, Rights::GRANT)?;
        let tag = send_tag(msg.tag, ncaps);
        {
            if !self.port.claim_reply(self.op) {
                drop(self.into_port());
                return Ok(None);
            }
            copy_long(me, &self.port, tag.length);
            if ncaps == 0 {
                // SAFETY: as below.
                unsafe { self.port.put_fast(tag, msg.mr, 0, None) };
            } else {
                // SAFETY: the one party completing this operation (see
                // `Port::inbox`), before the phase becomes `Done`.
                unsafe {
                    self.port.put(Delivery {
                        tag,
                        mr: msg.mr,
                        badge: 0,
                        caps,
                        via: 0,
                        reply: None,
                        broken: false,
                        extra: false,
                    })
                };
            }
            self.port.done(self.op);
        }
        finish_moves(&moved);
        // Answered: nothing is left for `Drop` to do but release the port,
        // which moves to the caller of `deliver` instead (no count taken).
        Ok(Some(self.into_port()))
    }
}

/// The rest of [`Endpoint::finish_recv`] for a delivery with capabilities
/// or a broken reply (`d.extra`): reads the message and takes the rest out
/// of the inbox `d` (the port's own, `Done`), then installs the
/// capabilities.
#[cold]
fn finish_recv_extra(
    me: &Port,
    d: &mut Delivery,
    reply: Option<Reply>,
) -> Result<(Msg, Option<Reply>), Errno> {
    let mut m = Msg {
        tag: d.tag,
        mr: d.mr,
        badge: d.badge,
        caps: [CapSlot::Empty; MAX_EXTRA_CAPS],
    };
    d.extra = false;
    m.tag.extra_caps = 0;
    m.tag.caps_unwrapped = 0;
    let broken = std::mem::take(&mut d.broken);
    let caps = std::mem::take(&mut d.caps);
    let via = d.via;
    me.idle();
    if broken {
        return Err(Errno::ESRCH);
    }
    install_arrived(&mut m, caps, via);
    Ok((m, reply))
}

/// Installs the capabilities that arrived with a message (`via`: the
/// endpoint it came through) in the current table, filling `m`'s slots,
/// `extra_caps` and `caps_unwrapped`.
#[cold]
fn install_arrived(m: &mut Msg, caps: [Option<Arc<CapNode>>; MAX_EXTRA_CAPS], via: usize) {
    let mut arrived = 0u8;
    for (i, c) in caps.into_iter().enumerate() {
        let Some(node) = c else { continue };
        let unwrap = match &node.object {
            Object::Endpoint(a) => Arc::as_ptr(a) as usize == via,
            _ => false,
        };
        if unwrap {
            m.caps[i] = CapSlot::Unwrapped(node.badge);
            m.tag.caps_unwrapped |= 1 << i;
        } else {
            match cap::install(node) {
                Ok(c) => m.caps[i] = CapSlot::In(c),
                // A full table stops the transfer, not the IPC.
                Err(_) => break,
            }
        }
        arrived = i as u8 + 1;
    }
    m.tag.extra_caps = arrived;
}

fn finish_moves(moved: &[Option<Cap>; MAX_EXTRA_CAPS]) {
    for c in moved.iter().flatten() {
        cap::finish_stage(Some(*c));
    }
}

/// Waits until `me`'s current operation is done; on timeout or
/// interruption, withdraws it from `ep`'s queues (unless it completed
/// meanwhile: then it succeeded). With `handoff`, the first wait also wakes
/// that task and, where the runtime can, switches straight to it
/// (`wait::unpark_and_park_until`: the direct process switch).
/// Whom a blocking endpoint operation hands its CPU to as it blocks.
enum Handoff<'a> {
    /// The server a `call` found waiting, claimed: it runs on the caller's
    /// lent scheduling context (`wait::switch_to_and_park_until`).
    Call(Claimed),
    /// The caller a `reply_recv` answered: the CPU goes back to it, ending
    /// its loan (`wait::hand_back_and_park_until`).
    Reply(&'a Task),
}

impl Handoff<'_> {
    /// Wakes the target the ordinary way (the wait does not switch).
    fn wake(self) {
        match self {
            Handoff::Call(c) => c.wake(),
            Handoff::Reply(t) => t.unpark(),
        }
    }
}

/// What [`Endpoint::reply_recv_begin`] did.
enum RecvStep {
    /// A sender's message is in the inbox.
    Taken,
    /// Queued as a receiver; the caller answered, if it still waited, and
    /// whether the CPU may go straight back to it.
    Wait(Option<(Answered, bool)>),
}

/// The caller a fast reply went to ([`Reply::deliver_fast`]), for the
/// replier to wake or hand the CPU back to.
enum Answered {
    /// A counted handle: once answered, the caller may run and end at any
    /// time.
    Counted(Arc<Port>),
    /// The caller lent the replier its scheduling context
    /// (`wait::lent_by`): it cannot run before the replier switches out,
    /// so its port is held uncounted (its handle went back to its spare
    /// slot) and is valid until then.
    Lent(*const Port),
}

impl Answered {
    /// The caller's port. For `Lent`, use it only until the replier
    /// switches out. The hand-back built from it is safe past that point:
    /// the runtime compares it without dereferencing when the loan ends
    /// (`WorkerCell::lend_end`), and counts it before anything that may
    /// switch first (a settled loan, `lend_end`; a signal handler run by
    /// the park, `wait::park_until_slow`).
    #[inline]
    fn port(&self) -> &Port {
        match self {
            Answered::Counted(p) => p,
            // SAFETY: see the variant: the lender cannot run, so its
            // task-local port cannot end, before the replier switches out.
            Answered::Lent(p) => unsafe { &**p },
        }
    }
}

/// [`wait_done`] without a deadline and with a handoff, inlined so that the
/// switch sits in the caller's frame.
///
/// # Safety
/// `here` was made since the running task last switched in.
#[inline(always)]
unsafe fn wait_handoff(
    here: wait::Here,
    me: &Arc<Port>,
    ep: &EndpointObj,
    handoff: Handoff<'_>,
) -> Result<(), Errno> {
    let guard = UnwindWithdraw { me, ep };
    let done = || me.phase() == Phase::Done;
    let on = (BlockOn::Endpoint, Arc::as_ptr(me) as u64);
    // SAFETY (both): the caller's contract.
    let r = match handoff {
        Handoff::Call(h) => unsafe { wait::switch_to_and_park_until_here(here, h, on, done, None) },
        Handoff::Reply(h) => unsafe {
            wait::hand_back_and_park_until_here(here, h, on, done, None)
        },
    };
    std::mem::forget(guard);
    match r {
        WaitResult::Invalid | WaitResult::Notified => Ok(()),
        WaitResult::TimedOut => {
            wait::cold_path();
            withdraw(me, ep, Errno::ETIMEDOUT)
        }
        WaitResult::Cancelled => {
            wait::cold_path();
            withdraw(me, ep, Errno::EINTR)
        }
    }
}

/// [`wait_done`], out of line (the waits that do not switch directly).
#[inline(never)]
fn wait_done_slow(
    me: &Arc<Port>,
    ep: &EndpointObj,
    dl: Option<Instant>,
    handoff: Option<Handoff<'_>>,
) -> Result<(), Errno> {
    wait_done(me, ep, dl, handoff)
}

fn wait_done(
    me: &Arc<Port>,
    ep: &EndpointObj,
    dl: Option<Instant>,
    handoff: Option<Handoff<'_>>,
) -> Result<(), Errno> {
    let guard = UnwindWithdraw { me, ep };
    let r = wait_done_inner(me, ep, dl, handoff);
    std::mem::forget(guard);
    r
}

/// A task killed (or cancelled) while blocked unwinds out of its wait
/// without returning to `wait_done`: this guard withdraws its port from the
/// endpoint so that no later message is delivered to a dead task (and
/// lost), and a call it received but never read is failed (`ESRCH`)
/// rather than left waiting for a reply that cannot come.
struct UnwindWithdraw<'a> {
    me: &'a Arc<Port>,
    ep: &'a EndpointObj,
}

impl Drop for UnwindWithdraw<'_> {
    fn drop(&mut self) {
        if withdraw(self.me, self.ep, Errno::EINTR).is_ok() {
            // SAFETY: our own port, and its operation is `Done`.
            let d = unsafe { self.me.take_inbox() };
            self.me.idle();
            if let Some((port, op)) = d.reply {
                drop(Reply { port, op });
            }
        }
    }
}

fn wait_done_inner(
    me: &Arc<Port>,
    ep: &EndpointObj,
    dl: Option<Instant>,
    handoff: Option<Handoff<'_>>,
) -> Result<(), Errno> {
    let t = match left(dl) {
        Ok(t) => t,
        Err(e) => {
            if let Some(h) = handoff {
                h.wake();
            }
            return withdraw(me, ep, e);
        }
    };
    // `park_until` returns only once the operation is done, or with why
    // it gave up.
    let done = || me.phase() == Phase::Done;
    let on = (BlockOn::Endpoint, Arc::as_ptr(me) as u64);
    let r = match handoff {
        Some(Handoff::Call(h)) => wait::switch_to_and_park_until(h, on, done, t),
        Some(Handoff::Reply(h)) => wait::hand_back_and_park_until(h, on, done, t),
        None => {
            // A pinned caller alone on its CPU: its partner is on another
            // CPU and usually answers within a short spin, which saves
            // this CPU a sleep and the partner a cross-CPU wakeup (as
            // pipes and channels do before they park).
            wait::spin_before_park(done);
            wait::park_until(on, done, t)
        }
    };
    match r {
        WaitResult::Invalid | WaitResult::Notified => Ok(()),
        WaitResult::TimedOut => withdraw(me, ep, Errno::ETIMEDOUT),
        WaitResult::Cancelled => withdraw(me, ep, Errno::EINTR),
    }
}

fn withdraw(me: &Arc<Port>, ep: &EndpointObj, why: Errno) -> Result<(), Errno> {
    let mut q = ep.q.lock();
    let op = me.word.op();
    match me.phase() {
        Phase::Done => return Ok(()),
        Phase::QueuedSend => q
            .senders
            .retain(|e| !(Arc::ptr_eq(&e.port, me) && e.op == op)),
        Phase::QueuedRecv => q
            .receivers
            .retain(|(p, o)| !(std::ptr::eq(p.0, Arc::as_ptr(me)) && *o == op)),
        Phase::AwaitReply | Phase::Delivering => {
            drop(q);
            // Delivered. Either the reply is claimed first (then it is
            // being written: wait the few instructions until `Done`, and
            // the call succeeded) or we are, and a late reply finds the
            // call abandoned and is refused.
            loop {
                match me.word.transition(op, Phase::AwaitReply, Phase::Abandoned) {
                    Ok(()) => return Err(why),
                    Err(w) if PortWord::unpack_phase(w) == Phase::Done => return Ok(()),
                    Err(_) => std::thread::yield_now(),
                }
            }
        }
        Phase::Idle | Phase::Abandoned => {}
    }
    me.word.set(op, Phase::Idle);
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receiver queue stays FIFO through its inline head: pops in
    /// push order, and a withdrawal (of the head or from behind it)
    /// keeps the order of the rest.
    #[test]
    fn receiver_queue_is_fifo_through_its_inline_head() {
        let w = |i: usize| (Waiting(i as *const Port), i as u64);
        let ops = |q: &mut RecvQueue| {
            let mut v = Vec::new();
            while let Some((_, op)) = q.pop_front() {
                v.push(op);
            }
            v
        };
        let mut q = RecvQueue::default();
        for i in 1..=4 {
            q.push_back(w(i * 8));
        }
        assert_eq!(q.len(), 4);
        assert_eq!(ops(&mut q), vec![8, 16, 24, 32]);
        assert_eq!(q.len(), 0);
        for i in 1..=4 {
            q.push_back(w(i * 8));
        }
        q.retain(|(_, op)| *op != 8);
        assert_eq!(q.len(), 3);
        q.retain(|(_, op)| *op != 24);
        q.push_back(w(40));
        assert_eq!(ops(&mut q), vec![16, 32, 40]);
        q.push_back(w(48));
        q.retain(|_| false);
        assert_eq!(q.len(), 0);
        assert!(q.pop_front().is_none());
        q.push_back(w(56));
        assert_eq!(ops(&mut q), vec![56]);
    }

    /// A message and a reply capability are copied on every call and
    /// receive: their sizes are part of the fast path's cost.
    #[test]
    fn messages_and_replies_stay_small() {
        assert!(std::mem::size_of::<Msg>() <= 104, "Msg grew");
        // Two words and no padding (a move copies padding in pieces that
        // a wider load cannot forward from; see `Reply`).
        assert_eq!(std::mem::size_of::<Reply>(), 16);
        assert_eq!(std::mem::size_of::<Option<Reply>>(), 16);
    }
}
