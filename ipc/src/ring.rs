//! Typed rings laid out entirely inside a shared memory segment:
//! [`ShmRing<T>`] in SPSC and MPMC flavours (ipc.md §6).
//!
//! # Layout (version 1)
//!
//! Every field lives in the segment, at offsets, with no pointers, so any
//! attach — at any address, in any OS process — can open the ring:
//!
//! | offset | 128-byte line | written by |
//! |---|---|---|
//! | 0 | meta: magic, version, kind, capacity, element size/align, slot stride, type hash | creator, once |
//! | 128 | `tail` (u64 position) | producers |
//! | 256 | `head` (u64 position) | consumers |
//! | 384 | `prod`, `cons`: role words (count, seen bit, closed bit) | role changes |
//! | 512 | `not_empty`: futex word `seq`, `sleepers`, `futex_sleepers` | consumers about to sleep, producers waking |
//! | 640 | `not_full`: the same for producers | |
//! | 768 | slots | |
//!
//! Positions run from 0 up and never wrap in practice (u64); a slot is
//! `position & (capacity - 1)`, the capacity a power of two. The indices sit
//! on lines of their own (128 bytes: the adjacent-line prefetch pair on
//! x86-64, as crossbeam's `CachePadded` assumes).
//!
//! # Index protocols
//!
//! - **SPSC** (rtrb's, ipc.md §6.2): only the producer stores `tail`, only
//!   the consumer stores `head`. The producer writes slots `[tail, tail+k)`,
//!   then stores `tail + k` (Release); the consumer loads `tail` (Acquire),
//!   reads, then stores `head` (Release). Each handle caches its own index
//!   and the last value it saw of the other, re-reading the other only when
//!   the ring *looks* full (empty): one shared-line read per wrap, not per
//!   message. One producer and one consumer at a time is enforced by the
//!   role words (EBUSY for a second).
//! - **MPMC** (Vyukov's bounded queue, as crossbeam's `ArrayQueue`, ipc.md
//!   §6.5): each slot carries a stamp. A producer at position `p` may fill
//!   the slot when its stamp is `p`; it claims `p` by CAS on `tail`, writes,
//!   then stores stamp `p + 1` (Release). A consumer at `p` may take it when
//!   the stamp is `p + 1`; it claims by CAS on `head`, reads, then stores
//!   `p + capacity`. The capacity is at least 2 (with 1, "written" and "free
//!   for the next lap" would be the same stamp).
//!
//! # Batches and chunks
//!
//! `send_slice` / `recv_into` copy a batch in or out with one index update
//! and one wakeup. `write_chunk` / `read_chunk` (SPSC only; rtrb's
//! `write_chunk_uninit` / `read_chunk`) lend the slots themselves, as two
//! runs when the chunk wraps: a producer fills them in place and commits,
//! a consumer reads them in place and commits, and nothing is copied
//! twice. A chunk borrows its handle mutably, so the handle's cached
//! indices cannot move under it; until its commit the other side sees
//! nothing of it.
//!
//! # Blocking
//!
//! A full `send` or empty `recv` sleeps; it never spins for long. The wait
//! queues cannot live in shared memory (they hold pointers to stacks), so:
//!
//! - each side has a futex word `seq` and a `sleepers` count in the segment;
//! - in-process waiters sleep on a process-local [`WaitQueue`] pair found
//!   through a table keyed by the memory's identity (the memfd's device and
//!   inode, which every attach shares), so green tasks park their task, not
//!   their worker;
//! - a handle set to [`ShmRing::set_cross_process`] sleeps with `FUTEX_WAIT`
//!   on `seq` instead (it blocks its OS thread, or its worker if called from
//!   a green task), so that a peer in another OS process can wake it.
//!
//! A waiter loads `seq`, increments `sleepers` (SeqCst), issues the *heavy*
//! fence, re-checks the ring, and sleeps only while `seq` is unchanged
//! (checked under the queue lock, or by the kernel for a futex). A waker
//! publishes its change (Release), issues the *light* fence, and reads
//! `sleepers`: if nonzero it bumps `seq` and wakes the local queue, plus the
//! futex when `futex_sleepers` is nonzero. Either the waker sees the sleeper
//! or the sleeper's re-check sees the change (Dekker), so no wakeup is lost.
//!
//! The pair is asymmetric where the kernel allows (`Inner::light_fence`,
//! `Inner::heavy_fence`): a waker, on every send and receive, issues only a
//! compiler fence, and a waiter, about to sleep anyway, calls
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running
//! thread of the process execute a full barrier (folly's
//! `asymmetric_thread_fence_heavy`, the kernel's own answer to Dekker pairs
//! with one hot side). A full fence per operation made each send wait for
//! its cache lines to come back from the consumer's CPU. The membarrier
//! reaches only this process, so a ring that any handle makes
//! cross-process ([`ShmRing::set_cross_process`]) uses SeqCst fences on
//! both sides, in every process, from then on (a flag in its header); so
//! does every ring where the kernel lacks the commands.
//!
//! # Closing
//!
//! `prod` and `cons` count the handles that took each role, with a SEEN bit
//! once any did and a CLOSED bit set by [`ShmRing::close`]. A `send` fails
//! with EPIPE once the ring is closed or every consumer that came has gone;
//! a `recv` drains what is left, then fails with EPIPE once the ring is
//! closed or every producer has gone. Dropping a handle leaves its roles and
//! wakes the other side, so a peer's exit is seen, not waited on forever. (A
//! peer OS process that dies without running its destructors is not seen:
//! there is no robust-futex list here.)

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr;
use std::sync::atomic::{compiler_fence, fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use greenos_runtime::trace::BlockOn;
use greenos_runtime::wait::{WaitQueue, WaitResult};
use parking_lot::Mutex;

use crate::errno::Errno;
use crate::shm::{shmat, shmctl, shmget, ShmCtl, ShmFlags, ShmId, ShmMap};
use crate::sysv::{IpcFlags, Key};

const MAGIC: u64 = u64::from_le_bytes(*b"gosRING\0");
const VERSION: u32 = 1;
const LINE: usize = 128;
const HEADER_SIZE: usize = 6 * LINE;

/// Role word bits: the low bits count handles holding the role.
const SEEN: u32 = 1 << 30;
const CLOSED: u32 = 1 << 31;
const COUNT: u32 = SEEN - 1;

/// Spin rounds (1, 2, 4, ... `spin_loop`s) before an OS thread or futex
/// waiter starts yielding its CPU: reaching a spinning peer costs ~60 ns,
/// waking a sleeping one ~60 µs across vCPUs (ipc.md §7.2).
const SPIN_ROUNDS: u32 = 7;
/// Then it polls with `sched_yield` for up to this long before sleeping:
/// about what a sleep and wakeup would cost (ipc.md §7.2: 50–68 µs for a
/// futex wake across vCPUs), the classic bound for spin-then-block.
const YIELD_BUDGET: Duration = Duration::from_micros(50);

// membarrier(2) commands (include/uapi/linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes plain integers and touches no user memory.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) }
}

/// Whether this process uses the asymmetric fence pair (module doc,
/// "Blocking"): the kernel offers `MEMBARRIER_CMD_PRIVATE_EXPEDITED` and
/// `MEMBARRIER_CMD_GLOBAL` and the registration for the first succeeded.
/// Decided once per process, when its first ring handle is made, before
/// any send or receive. `GREENOS_RING_SYMMETRIC` in the environment turns
/// it off (full fences on both sides), for comparison.
static ASYMMETRIC: LazyLock<bool> = LazyLock::new(|| {
    if std::env::var_os("GREENOS_RING_SYMMETRIC").is_some() {
        return false;
    }
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    let need = (MEMBARRIER_CMD_GLOBAL
        | MEMBARRIER_CMD_PRIVATE_EXPEDITED
        | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) as libc::c_long;
    supported >= 0
        && supported & need == need
        && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
});

/// Which index protocol a ring uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RingKind {
    /// One producer and one consumer at a time (EBUSY for a second).
    Spsc,
    /// Any number of producers and consumers.
    Mpmc,
}

#[repr(C, align(128))]
struct Line<T>(T);

#[repr(C)]
struct Meta {
    magic: AtomicU64,
    version: u32,
    kind: u32,
    capacity: u64,
    elem_size: u64,
    elem_align: u64,
    stride: u64,
    value_offset: u64,
    type_hash: u64,
    /// Set (never cleared) once a handle in any process turned on
    /// [`ShmRing::set_cross_process`]: the wakers' half of the Dekker pair
    /// is then a full fence in every process (module doc, "Blocking").
    /// Zero in a fresh segment, so layout version 1 is unchanged.
    cross_process: AtomicU32,
}

#[repr(C)]
struct Roles {
    prod: AtomicU32,
    cons: AtomicU32,
}

#[repr(C)]
struct WaitWords {
    /// Futex word: bumped by each wake.
    seq: AtomicU32,
    /// Waiters of any kind that may be asleep.
    sleepers: AtomicU32,
    /// Of those, waiters in `FUTEX_WAIT`.
    futex_sleepers: AtomicU32,
}

#[repr(C)]
struct Header {
    meta: Line<Meta>,
    tail: Line<AtomicU64>,
    head: Line<AtomicU64>,
    roles: Line<Roles>,
    not_empty: Line<WaitWords>,
    not_full: Line<WaitWords>,
}

const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

/// The process-local half of a ring: its wait queues.
struct LocalWaiters {
    not_empty: WaitQueue,
    not_full: WaitQueue,
}

type WaiterTable = Mutex<HashMap<(u64, u64), Weak<LocalWaiters>>>;
static LOCAL_WAITERS: LazyLock<WaiterTable> = LazyLock::new(Default::default);

fn local_waiters(key: (u64, u64)) -> Arc<LocalWaiters> {
    let mut t = LOCAL_WAITERS.lock();
    if let Some(w) = t.get(&key).and_then(Weak::upgrade) {
        return w;
    }
    t.retain(|_, w| w.strong_count() > 0);
    // Block events name the ring by the first word of its key (the
    // segment's identity).
    let w = Arc::new(LocalWaiters {
        not_empty: WaitQueue::with_label(BlockOn::ShmRing, key.0),
        not_full: WaitQueue::with_label(BlockOn::ShmRing, key.0),
    });
    t.insert(key, Arc::downgrade(&w));
    w
}

fn type_hash<T>() -> u64 {
    // FNV-1a over the type's name: catches opening a ring with another T.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Slot stride and the value's offset inside a slot.
fn slot_layout<T>(kind: RingKind) -> (usize, usize) {
    match kind {
        RingKind::Spsc => (size_of::<T>(), 0),
        RingKind::Mpmc => {
            let align = align_of::<T>().max(8);
            let off = 8usize.next_multiple_of(align_of::<T>());
            ((off + size_of::<T>()).next_multiple_of(align), off)
        }
    }
}

fn round_capacity(kind: RingKind, capacity: usize) -> Option<usize> {
    let min = match kind {
        RingKind::Spsc => 1,
        RingKind::Mpmc => 2,
    };
    capacity.max(min).checked_next_power_of_two()
}

struct Inner {
    map: ShmMap,
    hdr: *const Header,
    slots: *mut u8,
    cap: u64,
    stride: usize,
    value_off: usize,
    kind: RingKind,
    waiters: Arc<LocalWaiters>,
    /// This process may use the asymmetric fence pair (`ASYMMETRIC`, read
    /// once here rather than through its lazy cell on every operation).
    asym_process: bool,
}

// SAFETY: `hdr` and `slots` point into `map`, which `Inner` owns and which
// lives as long as it; everything shared through them is accessed with
// atomics or under the ring protocol (module doc).
unsafe impl Send for Inner {}
// SAFETY: as for Send.
unsafe impl Sync for Inner {}

impl Inner {
    fn hdr(&self) -> &Header {
        // SAFETY: the header is inside the map, aligned (the map is
        // page-aligned), initialized before the magic was published, and
        // only its atomics change afterwards.
        unsafe { &*self.hdr }
    }

    /// Slot `pos`'s start.
    fn slot(&self, pos: u64) -> *mut u8 {
        let i = (pos & (self.cap - 1)) as usize;
        // SAFETY: `i < cap`, and `cap * stride` bytes of slots lie inside
        // the map (checked at create/open).
        unsafe { self.slots.add(i * self.stride) }
    }

    /// MPMC: slot `pos`'s stamp.
    fn stamp(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: MPMC slots start with an 8-aligned u64 stamp.
        unsafe { &*(self.slot(pos) as *const AtomicU64) }
    }

    fn value<T>(&self, pos: u64) -> *mut T {
        // SAFETY: the value lies inside the slot at an offset aligned for T.
        unsafe { self.slot(pos).add(self.value_off).cast() }
    }

    /// SPSC: slot `pos` as a `T` (the slots are a plain `[T; cap]`, so the
    /// stride is `size_of::<T>()`, known at compile time).
    #[inline]
    fn spsc_value<T>(&self, pos: u64) -> *mut T {
        debug_assert_eq!(self.stride, size_of::<T>());
        let i = (pos & (self.cap - 1)) as usize;
        // SAFETY: i < cap and the `[T; cap]` array lies inside the map.
        unsafe { self.slots.cast::<T>().add(i) }
    }
}

/// A handle on a typed ring inside a shared memory segment (module doc).
///
/// `send` / `recv` block when the ring is full / empty (through a wait
/// queue, or a futex across OS processes), `try_send` / `try_recv` return
/// EAGAIN instead, and the `_timeout` forms ETIMEDOUT. EPIPE means the other
/// side is gone (closed, or every handle that took the role was dropped);
/// EINTR that a waiting green task was cancelled.
///
/// A handle is `Send` but not `Sync`: [`Clone`] it (or [`open`](Self::open)
/// another attach) for each thread or task. A handle takes the producer
/// role at its first send and the consumer role at its first receive (or
/// when told to, with [`take_producer_role`](Self::take_producer_role)),
/// and leaves them when dropped.
///
/// `T` is copied in and out bit for bit. A peer in another OS process must
/// write valid `T`s: use plain data (integers, arrays of them, `#[repr(C)]`
/// structs of them), nothing with pointers.
///
/// ```
/// use greenos_ipc::{RingKind, ShmRing};
///
/// let rt = greenos_runtime::Runtime::builder().workers(1).build().unwrap();
/// rt.block_on(|| {
///     let mut tx = ShmRing::<u64>::with_capacity(RingKind::Spsc, 64).unwrap();
///     let mut rx = tx.clone();
///     tx.take_producer_role().unwrap();
///     let producer = greenos_runtime::spawn(move || {
///         // One at a time (blocks while the ring is full)...
///         for i in 0..100 {
///             tx.send(i).unwrap();
///         }
///         // ...or a chunk of free slots, filled in place.
///         let mut next = 100;
///         while next < 200 {
///             let chunk = tx.write_chunk((200 - next) as usize).unwrap();
///             next += chunk.fill_from_iter(next..) as u64;
///         }
///     });
///     let mut sum = 0;
///     for _ in 0..100 {
///         sum += rx.recv().unwrap();
///     }
///     let mut got = 100;
///     while got < 200 {
///         // Elements read in place; commit_all consumes them.
///         let chunk = rx.read_chunk(32).unwrap();
///         let (a, b) = chunk.as_slices();
///         sum += a.iter().chain(b).sum::<u64>();
///         got += chunk.len();
///         chunk.commit_all();
///     }
///     producer.join().unwrap();
///     assert_eq!(sum, (0..200).sum::<u64>());
///     // The producer's handle is gone: what is left is drained, then EPIPE.
///     assert_eq!(rx.recv().unwrap_err().raw_os_error(), Some(libc::EPIPE));
/// });
/// ```
pub struct ShmRing<T> {
    inner: Arc<Inner>,
    producer: Cell<bool>,
    consumer: Cell<bool>,
    /// SPSC producer: our tail, and the last head we read.
    tail: Cell<u64>,
    head_seen: Cell<u64>,
    /// SPSC consumer: our head, and the last tail we read.
    head: Cell<u64>,
    tail_seen: Cell<u64>,
    cross: Cell<bool>,
    _t: PhantomData<T>,
}

impl<T> fmt::Debug for ShmRing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmRing")
            .field("kind", &self.inner.kind)
            .field("capacity", &self.inner.cap)
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Copy + Send + 'static> ShmRing<T> {
    /// Bytes a segment needs for a ring of this kind and capacity (rounded
    /// up to a power of two).
    pub fn required_size(kind: RingKind, capacity: usize) -> Option<usize> {
        let cap = round_capacity(kind, capacity)?;
        cap.checked_mul(slot_layout::<T>(kind).0)?
            .checked_add(HEADER_SIZE)
    }

    /// Lays a new ring out in `map` (a read-write attach of a segment at
    /// least [`required_size`](Self::required_size) bytes long, holding no
    /// ring yet). The capacity is rounded up to a power of two (at least 2
    /// for MPMC). EINVAL if it does not fit or `T` is aligned beyond 128,
    /// EACCES for a read-only map, EEXIST if the segment already holds one.
    pub fn create(map: ShmMap, kind: RingKind, capacity: usize) -> io::Result<ShmRing<T>> {
        if map.is_read_only() {
            return Err(Errno::EACCES.into());
        }
        if align_of::<T>() > LINE {
            return Err(Errno::EINVAL.into());
        }
        let cap = round_capacity(kind, capacity).ok_or(Errno::EINVAL)?;
        let need = Self::required_size(kind, cap).ok_or(Errno::EINVAL)?;
        if map.len() < need {
            return Err(Errno::EINVAL.into());
        }
        let (stride, value_off) = slot_layout::<T>(kind);
        let hdr = map.as_mut_ptr() as *mut Header;
        // SAFETY: the map is writable, page-aligned and at least
        // HEADER_SIZE long; until the magic is published (Release, below)
        // no opener reads anything but the magic.
        unsafe {
            if (*hdr).meta.0.magic.load(Ordering::Acquire) != 0 {
                return Err(Errno::EEXIST.into());
            }
            let m = &raw mut (*hdr).meta.0;
            (&raw mut (*m).version).write(VERSION);
            (&raw mut (*m).kind).write(kind as u32);
            (&raw mut (*m).capacity).write(cap as u64);
            (&raw mut (*m).elem_size).write(size_of::<T>() as u64);
            (&raw mut (*m).elem_align).write(align_of::<T>() as u64);
            (&raw mut (*m).stride).write(stride as u64);
            (&raw mut (*m).value_offset).write(value_off as u64);
            (&raw mut (*m).type_hash).write(type_hash::<T>());
            (*hdr).tail.0.store(0, Ordering::Relaxed);
            (*hdr).head.0.store(0, Ordering::Relaxed);
            (*hdr).roles.0.prod.store(0, Ordering::Relaxed);
            (*hdr).roles.0.cons.store(0, Ordering::Relaxed);
            if kind == RingKind::Mpmc {
                let slots = map.as_mut_ptr().add(HEADER_SIZE);
                for i in 0..cap {
                    let s = slots.add(i * stride) as *const AtomicU64;
                    (*s).store(i as u64, Ordering::Relaxed);
                }
            }
            (*hdr).meta.0.magic.store(MAGIC, Ordering::Release);
        }
        Self::open(map)
    }

    /// Opens the ring that `map` holds (any attach of the segment, in any
    /// OS process; the map must be read-write). EINVAL if the segment holds
    /// no ring, one of another version, or one made for another `T`.
    pub fn open(map: ShmMap) -> io::Result<ShmRing<T>> {
        if map.is_read_only() {
            return Err(Errno::EACCES.into());
        }
        if map.len() < HEADER_SIZE {
            return Err(Errno::EINVAL.into());
        }
        let hdr = map.as_ptr() as *const Header;
        // SAFETY: at least HEADER_SIZE bytes are mapped, aligned; the meta
        // fields are read only after the magic (Acquire) shows they were
        // written.
        let meta = unsafe {
            if (*hdr).meta.0.magic.load(Ordering::Acquire) != MAGIC {
                return Err(Errno::EINVAL.into());
            }
            &(*hdr).meta.0
        };
        let kind = match meta.kind {
            0 => RingKind::Spsc,
            1 => RingKind::Mpmc,
            _ => return Err(Errno::EINVAL.into()),
        };
        let (stride, value_off) = slot_layout::<T>(kind);
        let cap = meta.capacity;
        let ok = meta.version == VERSION
            && meta.elem_size == size_of::<T>() as u64
            && meta.elem_align == align_of::<T>() as u64
            && meta.stride == stride as u64
            && meta.value_offset == value_off as u64
            && meta.type_hash == type_hash::<T>()
            && cap.is_power_of_two()
            && usize::try_from(cap)
                .ok()
                .and_then(|c| Self::required_size(kind, c))
                .is_some_and(|need| need <= map.len());
        if !ok {
            return Err(Errno::EINVAL.into());
        }
        let waiters = local_waiters(map.memory_key());
        // SAFETY: HEADER_SIZE < map.len(), checked above.
        let slots = unsafe { map.as_mut_ptr().add(HEADER_SIZE) };
        Ok(ShmRing::from_inner(Arc::new(Inner {
            map,
            hdr,
            slots,
            cap,
            stride,
            value_off,
            kind,
            waiters,
            asym_process: *ASYMMETRIC,
        })))
    }

    /// A ring in a new private segment of its own (removed at once, so it
    /// goes away with the last handle; [`shm_id`](Self::shm_id) still lets
    /// others attach it until then, as Linux allows).
    pub fn with_capacity(kind: RingKind, capacity: usize) -> io::Result<ShmRing<T>> {
        let size = Self::required_size(kind, capacity).ok_or(Errno::EINVAL)?;
        let id = shmget(Key::PRIVATE, size, IpcFlags::CREAT | IpcFlags::mode(0o600))?;
        let map = shmat(id, ShmFlags::NONE);
        let _ = shmctl(id, ShmCtl::Remove);
        Self::create(map?, kind, capacity)
    }
}

impl<T> ShmRing<T> {
    fn from_inner(inner: Arc<Inner>) -> ShmRing<T> {
        // Register for the asymmetric fences before the first operation.
        let _ = *ASYMMETRIC;
        ShmRing {
            inner,
            producer: Cell::new(false),
            consumer: Cell::new(false),
            tail: Cell::new(0),
            head_seen: Cell::new(0),
            head: Cell::new(0),
            tail_seen: Cell::new(0),
            cross: Cell::new(false),
            _t: PhantomData,
        }
    }

    /// The ring's kind.
    pub fn kind(&self) -> RingKind {
        self.inner.kind
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.inner.cap as usize
    }

    /// Elements in the ring now (a snapshot).
    pub fn len(&self) -> usize {
        let h = self.inner.hdr();
        let head = h.head.0.load(Ordering::Acquire);
        let tail = h.tail.0.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.inner.cap) as usize
    }

    /// Whether the ring holds nothing now (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment's id, when the map came from [`shmat`].
    pub fn shm_id(&self) -> Option<ShmId> {
        self.inner.map.id()
    }

    /// The map the ring lives in.
    pub fn map(&self) -> &ShmMap {
        &self.inner.map
    }

    /// Sleep with `FUTEX_WAIT` on the segment (on) rather than on this
    /// process's wait queue (off, the default). Turn it on for a handle
    /// whose peer is in another OS process: only a futex reaches across.
    /// A futex wait blocks the OS thread; from a green task it blocks that
    /// task's worker, and it is not interrupted by cancellation.
    ///
    /// Turning it on for any handle also switches the ring, in every
    /// process, from the asymmetric fence pair to full fences on both sides
    /// (the asymmetric one reaches only this process's threads), for good;
    /// do it before the handle's first operation. The switch waits for
    /// `membarrier(MEMBARRIER_CMD_GLOBAL)` (every running thread of every
    /// process passes a full barrier: a few milliseconds), so that a waker
    /// that read the old setting has published before this handle waits.
    pub fn set_cross_process(&self, on: bool) {
        if on
            && *ASYMMETRIC
            && self
                .inner
                .hdr()
                .meta
                .0
                .cross_process
                .swap(1, Ordering::SeqCst)
                == 0
        {
            let r = membarrier(MEMBARRIER_CMD_GLOBAL);
            assert_eq!(r, 0, "membarrier(MEMBARRIER_CMD_GLOBAL) failed");
        }
        self.cross.set(on);
    }

    /// Closes the ring for everyone: sends fail with EPIPE from now on;
    /// receives drain what is left, then fail with EPIPE. Wakes all waiters.
    pub fn close(&self) {
        let h = self.inner.hdr();
        h.roles.0.prod.fetch_or(CLOSED, Ordering::AcqRel);
        h.roles.0.cons.fetch_or(CLOSED, Ordering::AcqRel);
        self.notify(Side::NotEmpty, true);
        self.notify(Side::NotFull, true);
    }

    /// Whether the ring was closed or one side has gone (every handle that
    /// took the role was dropped).
    pub fn is_disconnected(&self) -> bool {
        let r = &self.inner.hdr().roles.0;
        gone(r.prod.load(Ordering::Acquire)) || gone(r.cons.load(Ordering::Acquire))
    }
}

fn gone(role: u32) -> bool {
    role & CLOSED != 0 || role & (SEEN | COUNT) == SEEN
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    NotEmpty,
    NotFull,
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 in a shared mapping (a shared,
    // not PRIVATE, futex: peers in other processes wake it); `tsp` is null
    // or points to our timespec. EAGAIN (value changed), EINTR and
    // ETIMEDOUT all just return: the caller re-checks.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
            ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0u32,
        );
    }
}

impl Inner {
    /// Whether this ring uses the asymmetric fence pair: the process does
    /// and no handle anywhere made it cross-process.
    #[inline(always)]
    fn asymmetric(&self) -> bool {
        self.asym_process && self.hdr().meta.0.cross_process.load(Ordering::Relaxed) == 0
    }

    /// The waker's half of the Dekker pair: after publishing, before
    /// reading `sleepers`. On the hot path, so in the asymmetric mode only
    /// a compiler fence: the waiter's half makes every thread of this
    /// process execute a full barrier instead.
    #[inline(always)]
    fn light_fence(&self) {
        if self.asymmetric() {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The waiter's half: after counting itself in `sleepers`, before its
    /// last look at the ring. In the asymmetric mode
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` first: every running
    /// thread of this process executes a full barrier before it returns,
    /// so a waker's publish still in its store buffer is visible to the
    /// look that follows, or its later read of `sleepers` sees us. (The
    /// private command, not the global one: the global expedited command
    /// skips a CPU whose run queue has not yet recorded the registration,
    /// which on the development VM lost wakeups between green tasks.)
    #[inline]
    fn heavy_fence(&self) {
        if self.asymmetric() {
            let mut r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
            if r != 0 {
                // Not registered (EPERM): a process forked after the
                // registration, on a kernel that does not carry it over.
                // Registering is per process and idempotent.
                membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
                r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
            }
            // Without it the wakers' compiler fences would lose wakeups.
            assert_eq!(r, 0, "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed");
        }
        fence(Ordering::SeqCst);
    }
}

impl<T> ShmRing<T> {
    fn words(&self, side: Side) -> (&WaitWords, &WaitQueue) {
        let h = self.inner.hdr();
        match side {
            Side::NotEmpty => (&h.not_empty.0, &self.inner.waiters.not_empty),
            Side::NotFull => (&h.not_full.0, &self.inner.waiters.not_full),
        }
    }

    /// Wakes waiters on `side` after a change they wait for (module doc).
    #[inline(always)]
    fn notify(&self, side: Side, all: bool) {
        let (w, _) = self.words(side);
        self.inner.light_fence();
        if w.sleepers.load(Ordering::Relaxed) != 0 {
            self.notify_slow(side, all);
        }
    }

    #[cold]
    fn notify_slow(&self, side: Side, all: bool) {
        let (w, q) = self.words(side);
        w.seq.fetch_add(1, Ordering::SeqCst);
        if all {
            q.wake_all();
        } else {
            q.wake_one();
        }
        if w.futex_sleepers.load(Ordering::SeqCst) != 0 {
            futex_wake(&w.seq, if all { i32::MAX } else { 1 });
        }
    }

    /// Sleeps until `ready()` may hold, a wake on `side`, or the deadline.
    /// Returns ETIMEDOUT once the deadline has passed, EINTR if cancelled;
    /// Ok means "try again" (spurious returns are allowed).
    /// `yielded`: a green caller has just yielded and looked again, so it
    /// goes straight to sleep.
    fn wait(
        &self,
        side: Side,
        deadline: Option<Instant>,
        yielded: bool,
        ready: impl Fn() -> bool,
    ) -> Result<(), Errno> {
        let in_task = greenos_runtime::task::in_task();
        if in_task && !self.cross.get() {
            // On one worker the peer can only run if we step aside; spinning
            // would only delay it.
            if !yielded {
                greenos_runtime::wait::yield_before_park();
                if ready() {
                    return Ok(());
                }
            }
        } else {
            // An OS thread, or a futex waiter (which blocks its worker
            // anyway): spin briefly for a peer on another CPU.
            for round in 0..SPIN_ROUNDS {
                for _ in 0..1u32 << round {
                    std::hint::spin_loop();
                }
                if ready() {
                    return Ok(());
                }
            }
            // Then yield the CPU (to the peer, if it shares ours) while
            // polling, for about the cost of a sleep and wakeup.
            let start = Instant::now();
            let until = deadline.map_or(start + YIELD_BUDGET, |d| d.min(start + YIELD_BUDGET));
            while Instant::now() < until {
                std::thread::yield_now();
                if ready() {
                    return Ok(());
                }
            }
        }
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(Errno::ETIMEDOUT);
                }
                Some(d - now)
            }
        };
        let (w, q) = self.words(side);
        let seq = w.seq.load(Ordering::Acquire);
        w.sleepers.fetch_add(1, Ordering::SeqCst);
        self.inner.heavy_fence();
        let result = if ready() {
            Ok(())
        } else if self.cross.get() {
            w.futex_sleepers.fetch_add(1, Ordering::SeqCst);
            futex_wait(&w.seq, seq, timeout);
            w.futex_sleepers.fetch_sub(1, Ordering::Relaxed);
            Ok(())
        } else {
            match q.wait(|| w.seq.load(Ordering::Relaxed) == seq, timeout) {
                WaitResult::Notified | WaitResult::Invalid | WaitResult::TimedOut => Ok(()),
                WaitResult::Cancelled => Err(Errno::EINTR),
            }
        };
        w.sleepers.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Takes the producer role now rather than at the first send, so that
    /// consumers do not see "every producer has gone" before this handle
    /// starts (do it before handing the handle to a task that may start
    /// late, as a pipe is opened before the fork). EBUSY if an SPSC ring
    /// already has a producer.
    pub fn take_producer_role(&self) -> io::Result<()> {
        Ok(self.claim_producer()?)
    }

    /// Takes the consumer role now rather than at the first receive (see
    /// [`take_producer_role`](Self::take_producer_role)).
    pub fn take_consumer_role(&self) -> io::Result<()> {
        Ok(self.claim_consumer()?)
    }

    /// Takes the producer role on first use. EBUSY if an SPSC ring already
    /// has a producer.
    #[inline]
    fn claim_producer(&self) -> Result<(), Errno> {
        if !self.producer.get() {
            self.claim(true)?;
        }
        Ok(())
    }

    #[inline]
    fn claim_consumer(&self) -> Result<(), Errno> {
        if !self.consumer.get() {
            self.claim(false)?;
        }
        Ok(())
    }

    #[cold]
    fn claim(&self, producer: bool) -> Result<(), Errno> {
        let h = self.inner.hdr();
        let word = if producer {
            &h.roles.0.prod
        } else {
            &h.roles.0.cons
        };
        let mut v = word.load(Ordering::Acquire);
        loop {
            if self.inner.kind == RingKind::Spsc && v & COUNT != 0 {
                return Err(Errno::EBUSY);
            }
            let new = ((v & COUNT) + 1) | SEEN | (v & CLOSED);
            match word.compare_exchange_weak(v, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(x) => v = x,
            }
        }
        if producer {
            self.producer.set(true);
            let t = h.tail.0.load(Ordering::Acquire);
            self.tail.set(t);
            self.head_seen.set(h.head.0.load(Ordering::Acquire));
        } else {
            self.consumer.set(true);
            self.head.set(h.head.0.load(Ordering::Acquire));
            self.tail_seen.set(h.tail.0.load(Ordering::Acquire));
        }
        Ok(())
    }

    /// Whether a send would not find the ring full (or would fail at once).
    fn can_send(&self) -> bool {
        let h = self.inner.hdr();
        if gone(h.roles.0.cons.load(Ordering::Acquire)) {
            return true;
        }
        match self.inner.kind {
            RingKind::Spsc => {
                // Kept, so that the push that follows need not read it again.
                let head = h.head.0.load(Ordering::Acquire);
                self.head_seen.set(head);
                self.tail.get() - head < self.inner.cap
            }
            RingKind::Mpmc => {
                let t = h.tail.0.load(Ordering::Acquire);
                self.inner.stamp(t).load(Ordering::Acquire) >= t
            }
        }
    }

    fn can_recv(&self) -> bool {
        let h = self.inner.hdr();
        if gone(h.roles.0.prod.load(Ordering::Acquire)) {
            return true;
        }
        match self.inner.kind {
            RingKind::Spsc => {
                // Kept, so that the pop that follows need not read it again.
                let t = h.tail.0.load(Ordering::Acquire);
                self.tail_seen.set(t);
                t != self.head.get()
            }
            RingKind::Mpmc => {
                let p = h.head.0.load(Ordering::Acquire);
                self.inner.stamp(p).load(Ordering::Acquire) > p
            }
        }
    }
}

impl<T: Copy> ShmRing<T> {
    /// The common case of a single-element SPSC send, inlined into the
    /// caller: this handle already holds the producer role, the slot is
    /// free by the head it last read, and the consumers are there. Returns
    /// `v` back when any of that does not hold (the general path decides).
    /// A call into [`push`](Self::push) per element saves and restores
    /// registers on the stack, and while the ring's own stores wait for
    /// their cache lines those stack stores queue behind them.
    #[inline(always)]
    fn spsc_send_fast(&self, v: T) -> Result<(), T> {
        let inner = &*self.inner;
        if inner.kind != RingKind::Spsc || !self.producer.get() {
            return Err(v);
        }
        let h = inner.hdr();
        let t = self.tail.get();
        if t - self.head_seen.get() >= inner.cap {
            // Looks full by the head we last read: read it again (rtrb's
            // `push`), which a ring of capacity 1 does on every send.
            let head = h.head.0.load(Ordering::Acquire);
            self.head_seen.set(head);
            if t - head >= inner.cap {
                return Err(v);
            }
        }
        if gone(h.roles.0.cons.load(Ordering::Acquire)) {
            return Err(v);
        }
        // SAFETY: slot `t` is free (the consumer is past it: head_seen >
        // t - cap) and ours alone until we publish `tail`.
        unsafe { inner.spsc_value::<T>(t).write(v) };
        self.tail.set(t + 1);
        h.tail.0.store(t + 1, Ordering::Release);
        self.notify(Side::NotEmpty, false);
        Ok(())
    }

    /// Whether the SPSC fast path of this handle's side (`producer`, or the
    /// consumer) applies, so that its failure means the ring was seen full
    /// (or the consumers gone) / empty just now.
    #[inline(always)]
    fn spsc_fast_applies(&self, producer: bool) -> bool {
        self.inner.kind == RingKind::Spsc
            && if producer {
                self.producer.get()
            } else {
                self.consumer.get()
            }
    }

    /// The receiving twin of [`spsc_send_fast`](Self::spsc_send_fast):
    /// `None` when the general path must decide (no consumer role yet, not
    /// SPSC, or nothing published).
    #[inline(always)]
    fn spsc_recv_fast(&self) -> Option<T> {
        let inner = &*self.inner;
        if inner.kind != RingKind::Spsc || !self.consumer.get() {
            return None;
        }
        let h = inner.hdr();
        let head = self.head.get();
        if self.tail_seen.get() == head {
            let t = h.tail.0.load(Ordering::Acquire);
            self.tail_seen.set(t);
            if t == head {
                return None;
            }
        }
        // SAFETY: slot `head` was published by the producer (tail,
        // Acquire) and is ours until we store head.
        let v = unsafe { inner.spsc_value::<T>(head).read() };
        self.head.set(head + 1);
        h.head.0.store(head + 1, Ordering::Release);
        self.notify(Side::NotFull, false);
        Some(v)
    }

    /// Pushes as many of `vals` as fit; EAGAIN if none does, EPIPE if the
    /// consumers are gone.
    #[inline]
    fn push(&self, vals: &[T]) -> Result<usize, Errno> {
        self.claim_producer()?;
        let inner = &*self.inner;
        let h = inner.hdr();
        if gone(h.roles.0.cons.load(Ordering::Acquire)) {
            return Err(Errno::EPIPE);
        }
        if vals.is_empty() {
            return Ok(0);
        }
        let n = match inner.kind {
            RingKind::Spsc => {
                let t = self.tail.get();
                let mut free = inner.cap - (t - self.head_seen.get());
                if free < vals.len() as u64 {
                    let head = h.head.0.load(Ordering::Acquire);
                    self.head_seen.set(head);
                    free = inner.cap - (t - head);
                }
                let k = free.min(vals.len() as u64) as usize;
                if k == 0 {
                    return Err(Errno::EAGAIN);
                }
                let start = (t & (inner.cap - 1)) as usize;
                let first = k.min(inner.cap as usize - start);
                // SAFETY: slots [t, t+k) are free (the consumer is past
                // them: head > t + k - cap) and ours alone until we publish
                // `tail`; the two runs lie inside the slot array.
                unsafe {
                    if k == 1 {
                        // One element: a plain store, not a memcpy call.
                        inner.spsc_value::<T>(t).write(vals[0]);
                    } else {
                        ptr::copy_nonoverlapping(vals.as_ptr(), inner.spsc_value::<T>(t), first);
                        ptr::copy_nonoverlapping(
                            vals.as_ptr().add(first),
                            inner.spsc_value::<T>(0),
                            k - first,
                        );
                    }
                }
                self.tail.set(t + k as u64);
                h.tail.0.store(t + k as u64, Ordering::Release);
                k
            }
            RingKind::Mpmc => {
                let mut k = 0;
                for v in vals {
                    if !self.mpmc_push_one(*v) {
                        break;
                    }
                    k += 1;
                }
                if k == 0 {
                    return Err(Errno::EAGAIN);
                }
                k
            }
        };
        self.notify(Side::NotEmpty, n > 1);
        Ok(n)
    }

    fn mpmc_push_one(&self, v: T) -> bool {
        let inner = &*self.inner;
        let tail = &inner.hdr().tail.0;
        let mut pos = tail.load(Ordering::Relaxed);
        loop {
            let stamp = inner.stamp(pos).load(Ordering::Acquire);
            if stamp == pos {
                match tail.compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: winning the CAS at `pos` while the stamp
                        // said "free at pos" makes the slot ours until we
                        // store the new stamp.
                        unsafe { inner.value::<T>(pos).write(v) };
                        inner.stamp(pos).store(pos + 1, Ordering::Release);
                        return true;
                    }
                    Err(p) => pos = p,
                }
            } else if stamp < pos {
                // The slot still holds the element of the previous lap: full
                // (unless the tail moved on meanwhile).
                let now = tail.load(Ordering::Relaxed);
                if now == pos {
                    return false;
                }
                pos = now;
            } else {
                pos = tail.load(Ordering::Relaxed);
            }
        }
    }

    fn mpmc_pop_one(&self) -> Option<T> {
        let inner = &*self.inner;
        let head = &inner.hdr().head.0;
        let mut pos = head.load(Ordering::Relaxed);
        loop {
            let stamp = inner.stamp(pos).load(Ordering::Acquire);
            if stamp == pos + 1 {
                match head.compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        // SAFETY: the stamp said "written at pos" (Acquire
                        // pairs with the producer's Release) and the CAS made
                        // the slot ours until we store the new stamp.
                        let v = unsafe { inner.value::<T>(pos).read() };
                        inner.stamp(pos).store(pos + inner.cap, Ordering::Release);
                        return Some(v);
                    }
                    Err(p) => pos = p,
                }
            } else if stamp <= pos {
                let now = head.load(Ordering::Relaxed);
                if now == pos {
                    return None;
                }
                pos = now;
            } else {
                pos = head.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops up to `out.len()` elements; EAGAIN if there is none, EPIPE if
    /// there is none and the producers are gone.
    /// `out` is valid for writing `len` elements (maybe uninitialized).
    #[inline]
    fn pop(&self, out: *mut T, len: usize) -> Result<usize, Errno> {
        self.claim_consumer()?;
        if len == 0 {
            return Ok(0);
        }
        let n = match self.pop_some(out, len) {
            0 => {
                let prod = self.inner.hdr().roles.0.prod.load(Ordering::Acquire);
                if !gone(prod) {
                    return Err(Errno::EAGAIN);
                }
                // Whatever the producers published before leaving is
                // visible now (Acquire above): drain it first.
                match self.pop_some(out, len) {
                    0 => return Err(Errno::EPIPE),
                    n => n,
                }
            }
            n => n,
        };
        self.notify(Side::NotFull, n > 1);
        Ok(n)
    }

    #[inline]
    fn pop_some(&self, out: *mut T, len: usize) -> usize {
        let inner = &*self.inner;
        match inner.kind {
            RingKind::Spsc => {
                let h = inner.hdr();
                let head = self.head.get();
                let mut avail = self.tail_seen.get() - head;
                if avail < len as u64 {
                    let t = h.tail.0.load(Ordering::Acquire);
                    self.tail_seen.set(t);
                    avail = t - head;
                }
                let k = avail.min(len as u64) as usize;
                if k == 0 {
                    return 0;
                }
                let start = (head & (inner.cap - 1)) as usize;
                let first = k.min(inner.cap as usize - start);
                // SAFETY: slots [head, head+k) were published by the
                // producer (tail, Acquire) and are ours until we store head;
                // `out` has room for `len >= k` elements.
                unsafe {
                    if k == 1 {
                        out.write(inner.spsc_value::<T>(head).read());
                    } else {
                        ptr::copy_nonoverlapping(inner.spsc_value::<T>(head), out, first);
                        ptr::copy_nonoverlapping(
                            inner.spsc_value::<T>(0),
                            out.add(first),
                            k - first,
                        );
                    }
                }
                self.head.set(head + k as u64);
                h.head.0.store(head + k as u64, Ordering::Release);
                k
            }
            RingKind::Mpmc => {
                let mut k = 0;
                while k < len {
                    match self.mpmc_pop_one() {
                        // SAFETY: k < len, and `out` has room for len.
                        Some(v) => unsafe { out.add(k).write(v) },
                        None => break,
                    }
                    k += 1;
                }
                k
            }
        }
    }

    /// Whether the other side of `side` is gone: the consumers for a
    /// producer waiting for room, the producers for a consumer waiting for
    /// elements.
    fn peer_gone(&self, side: Side) -> bool {
        let roles = &self.inner.hdr().roles.0;
        gone(match side {
            Side::NotFull => roles.cons.load(Ordering::Acquire),
            Side::NotEmpty => roles.prod.load(Ordering::Acquire),
        })
    }

    /// Runs `attempt` (a push or pop that fails with EAGAIN while the ring
    /// is full / empty) until it does anything else, waiting on `side` in
    /// between, until `deadline`. `found`: the caller has just seen the
    /// ring full / empty through the SPSC fast path, so a first attempt
    /// would only read the other side's index again; it waits first
    /// (unless the peer is gone, which the attempt reports).
    fn retry_until<R>(
        &self,
        side: Side,
        deadline: Option<Instant>,
        found: bool,
        attempt: impl FnMut() -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        self.retry_after(side, deadline, found, false, attempt)
    }

    /// [`retry_until`](Self::retry_until); `yielded`: besides, the caller
    /// is a green task that has yielded once since it found the ring full /
    /// empty (and looked again), so the first wait sleeps at once.
    fn retry_after<R>(
        &self,
        side: Side,
        deadline: Option<Instant>,
        mut found: bool,
        mut yielded: bool,
        mut attempt: impl FnMut() -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let ready = || match side {
            Side::NotFull => self.can_send(),
            Side::NotEmpty => self.can_recv(),
        };
        loop {
            if !std::mem::take(&mut found) || self.peer_gone(side) {
                match attempt() {
                    Err(Errno::EAGAIN) => {}
                    r => return r,
                }
            }
            if let Err(e) = self.wait(side, deadline, std::mem::take(&mut yielded), ready) {
                // One last try: the deadline may have passed just as the
                // ring changed.
                return match attempt() {
                    Err(Errno::EAGAIN) => Err(e),
                    r => r,
                };
            }
        }
    }

    fn send_until(
        &self,
        vals: &[T],
        deadline: Option<Instant>,
        found_full: bool,
    ) -> Result<usize, Errno> {
        self.retry_until(Side::NotFull, deadline, found_full, || self.push(vals))
    }

    fn recv_until(
        &self,
        out: *mut T,
        len: usize,
        deadline: Option<Instant>,
        found_empty: bool,
    ) -> Result<usize, Errno> {
        self.retry_until(Side::NotEmpty, deadline, found_empty, || self.pop(out, len))
    }

    /// Sends `v`, waiting while the ring is full. EPIPE if the consumers
    /// are gone, EINTR if cancelled, EBUSY for a second SPSC producer.
    #[inline]
    pub fn send(&self, v: T) -> io::Result<()> {
        let Err(v) = self.spsc_send_fast(v) else {
            return Ok(());
        };
        self.send_slow(v)
    }

    /// `send` past its fast path: out of line, so that the caller's loop
    /// around the inlined fast path stays small (inlined, the wait loop
    /// made a loop of blocking sends three times slower than the same loop
    /// of `try_send`s between two CPUs).
    #[cold]
    #[inline(never)]
    fn send_slow(&self, v: T) -> io::Result<()> {
        self.send_until(std::slice::from_ref(&v), None, self.spsc_fast_applies(true))?;
        Ok(())
    }

    /// Sends `v` if there is room now; EAGAIN if the ring is full.
    #[inline]
    pub fn try_send(&self, v: T) -> io::Result<()> {
        let Err(v) = self.spsc_send_fast(v) else {
            return Ok(());
        };
        self.push(std::slice::from_ref(&v))?;
        Ok(())
    }

    /// Sends `v`, waiting at most `timeout` for room; ETIMEDOUT after.
    pub fn send_timeout(&self, v: T, timeout: Duration) -> io::Result<()> {
        self.send_until(
            std::slice::from_ref(&v),
            Some(Instant::now() + timeout),
            false,
        )?;
        Ok(())
    }

    /// Receives one element, waiting while the ring is empty. EPIPE once
    /// the ring is empty and the producers are gone (or it was closed).
    #[inline]
    pub fn recv(&self) -> io::Result<T> {
        if let Some(v) = self.spsc_recv_fast() {
            return Ok(v);
        }
        self.recv_slow()
    }

    /// `recv` past its fast path: out of line, as `send_slow`.
    #[cold]
    #[inline(never)]
    fn recv_slow(&self) -> io::Result<T> {
        let found_empty = self.spsc_fast_applies(false);
        let mut yielded = false;
        if found_empty && !self.cross.get() && greenos_runtime::task::in_task() {
            // The wait's first step for a green task (`wait`), with nothing
            // around it: step aside so that a producer on this CPU can run,
            // then look again. (A ping-pong on one worker does this on every
            // receive.)
            greenos_runtime::wait::yield_before_park();
            if let Some(v) = self.spsc_recv_fast() {
                return Ok(v);
            }
            yielded = true;
        }
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        let out = v.as_mut_ptr();
        self.retry_after(Side::NotEmpty, None, found_empty, yielded, || {
            self.pop(out, 1)
        })?;
        // SAFETY: the pop into `out` returned Ok (at least 1 of 1): the
        // element was written.
        Ok(unsafe { v.assume_init() })
    }

    /// Receives one element if there is one now; EAGAIN if empty.
    #[inline]
    pub fn try_recv(&self) -> io::Result<T> {
        if let Some(v) = self.spsc_recv_fast() {
            return Ok(v);
        }
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        self.pop(v.as_mut_ptr(), 1)?;
        // SAFETY: pop returned Ok(n >= 1) for a one-element buffer.
        Ok(unsafe { v.assume_init() })
    }

    /// Receives one element, waiting at most `timeout`; ETIMEDOUT after.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<T> {
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        self.recv_until(v.as_mut_ptr(), 1, Some(Instant::now() + timeout), false)?;
        // SAFETY: as in `recv`.
        Ok(unsafe { v.assume_init() })
    }

    /// Batch send: copies as many of `vals` as fit with one index update
    /// (SPSC) and one wakeup, waiting only while none fits. Returns how many
    /// were sent (at least 1 unless `vals` is empty).
    pub fn send_slice(&self, vals: &[T]) -> io::Result<usize> {
        Ok(self.send_until(vals, None, false)?)
    }

    /// Batch send without waiting: EAGAIN if nothing fits.
    pub fn try_send_slice(&self, vals: &[T]) -> io::Result<usize> {
        Ok(self.push(vals)?)
    }

    /// Sends every element of `vals`, in batches, waiting for room.
    pub fn send_all(&self, mut vals: &[T]) -> io::Result<()> {
        while !vals.is_empty() {
            let n = self.send_until(vals, None, false)?;
            vals = &vals[n..];
        }
        Ok(())
    }

    /// Batch receive: fills as much of `out` as the ring holds with one
    /// index update (SPSC) and one wakeup, waiting only while it is empty.
    /// Returns how many were received (at least 1 unless `out` is empty).
    pub fn recv_into(&self, out: &mut [T]) -> io::Result<usize> {
        Ok(self.recv_until(out.as_mut_ptr(), out.len(), None, false)?)
    }

    /// Batch receive without waiting: EAGAIN if empty.
    pub fn try_recv_into(&self, out: &mut [T]) -> io::Result<usize> {
        Ok(self.pop(out.as_mut_ptr(), out.len())?)
    }

    /// Batch receive waiting at most `timeout` for the first element.
    pub fn recv_into_timeout(&self, out: &mut [T], timeout: Duration) -> io::Result<usize> {
        Ok(self.recv_until(
            out.as_mut_ptr(),
            out.len(),
            Some(Instant::now() + timeout),
            false,
        )?)
    }
}

/// Zero-copy batches (SPSC): runs of slots lent straight out of the ring,
/// rtrb's `write_chunk_uninit` / `read_chunk`. A chunk borrows the handle
/// mutably, so no other operation of this handle runs while it is out.
impl<T: Copy> ShmRing<T> {
    /// The free slots `[tail, tail + k)` for `k` up to `max` (at least 1
    /// unless `max` is 0): EAGAIN when none is free, EPIPE when the
    /// consumers are gone, EINVAL for an MPMC ring (its slots are claimed
    /// one at a time), EBUSY for a second SPSC producer.
    #[inline]
    fn reserve_write(&self, max: usize) -> Result<(u64, usize), Errno> {
        if self.inner.kind != RingKind::Spsc {
            return Err(Errno::EINVAL);
        }
        self.claim_producer()?;
        if self.peer_gone(Side::NotFull) {
            return Err(Errno::EPIPE);
        }
        let (cap, t) = (self.inner.cap, self.tail.get());
        if max == 0 {
            return Ok((t, 0));
        }
        let mut free = cap - (t - self.head_seen.get());
        if free < max as u64 {
            let head = self.inner.hdr().head.0.load(Ordering::Acquire);
            self.head_seen.set(head);
            free = cap - (t - head);
        }
        match free.min(max as u64) {
            0 => Err(Errno::EAGAIN),
            k => Ok((t, k as usize)),
        }
    }

    /// The published slots `[head, head + k)` for `k` up to `max`: EAGAIN
    /// when the ring is empty, EPIPE when it is empty and the producers
    /// are gone, EINVAL for an MPMC ring, EBUSY for a second SPSC consumer.
    #[inline]
    fn reserve_read(&self, max: usize) -> Result<(u64, usize), Errno> {
        if self.inner.kind != RingKind::Spsc {
            return Err(Errno::EINVAL);
        }
        self.claim_consumer()?;
        let head = self.head.get();
        if max == 0 {
            return Ok((head, 0));
        }
        let tail_now = || {
            let t = self.inner.hdr().tail.0.load(Ordering::Acquire);
            self.tail_seen.set(t);
            t - head
        };
        let mut avail = self.tail_seen.get() - head;
        if avail < max as u64 {
            avail = tail_now();
        }
        if avail == 0 {
            if !self.peer_gone(Side::NotEmpty) {
                return Err(Errno::EAGAIN);
            }
            // What the producers published before leaving is visible now
            // (the role word's Acquire): drain it first.
            avail = tail_now();
            if avail == 0 {
                return Err(Errno::EPIPE);
            }
        }
        Ok((head, avail.min(max as u64) as usize))
    }

    /// The chunk forms past their first attempt: waits on `side` (room
    /// for a write chunk, elements for a read chunk) until a reservation
    /// succeeds or fails otherwise, or `deadline` passes. Out of line, so
    /// that the callers' fast paths stay small (an inlined wait loop made
    /// the producer's loop around `write_chunk` half as fast).
    #[cold]
    #[inline(never)]
    fn reserve_slow(
        &self,
        side: Side,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<(u64, usize), Errno> {
        self.retry_until(side, deadline, false, || match side {
            Side::NotFull => self.reserve_write(max),
            Side::NotEmpty => self.reserve_read(max),
        })
    }

    /// Lends up to `max` free slots for writing in place, waiting while the
    /// ring is full (at least one slot unless `max` is 0). Fill them through
    /// [`WriteChunk::fill_from_iter`] or
    /// [`as_mut_slices`](WriteChunk::as_mut_slices) and
    /// [`commit`](WriteChunk::commit); nothing is sent until then. EPIPE if
    /// the consumers are gone, EINVAL for an MPMC ring, EINTR if cancelled.
    #[inline]
    pub fn write_chunk(&mut self, max: usize) -> io::Result<WriteChunk<'_, T>> {
        let (start, len) = match self.reserve_write(max) {
            Err(Errno::EAGAIN) => self.reserve_slow(Side::NotFull, max, None)?,
            r => r?,
        };
        Ok(WriteChunk {
            ring: self,
            start,
            len,
        })
    }

    /// [`write_chunk`](Self::write_chunk) without waiting: EAGAIN if full.
    pub fn try_write_chunk(&mut self, max: usize) -> io::Result<WriteChunk<'_, T>> {
        let (start, len) = self.reserve_write(max)?;
        Ok(WriteChunk {
            ring: self,
            start,
            len,
        })
    }

    /// [`write_chunk`](Self::write_chunk) waiting at most `timeout`;
    /// ETIMEDOUT after.
    pub fn write_chunk_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> io::Result<WriteChunk<'_, T>> {
        let deadline = Some(Instant::now() + timeout);
        let (start, len) = self.reserve_slow(Side::NotFull, max, deadline)?;
        Ok(WriteChunk {
            ring: self,
            start,
            len,
        })
    }

    /// Lends up to `max` received elements in place, waiting while the
    /// ring is empty (at least one unless `max` is 0); they leave the ring
    /// when the chunk is [committed](ReadChunk::commit). EPIPE once the
    /// ring is empty and the producers are gone, EINVAL for an MPMC ring,
    /// EINTR if cancelled.
    #[inline]
    pub fn read_chunk(&mut self, max: usize) -> io::Result<ReadChunk<'_, T>> {
        let (start, len) = match self.reserve_read(max) {
            Err(Errno::EAGAIN) => self.reserve_slow(Side::NotEmpty, max, None)?,
            r => r?,
        };
        Ok(ReadChunk {
            ring: self,
            start,
            len,
        })
    }

    /// [`read_chunk`](Self::read_chunk) without waiting: EAGAIN if empty.
    pub fn try_read_chunk(&mut self, max: usize) -> io::Result<ReadChunk<'_, T>> {
        let (start, len) = self.reserve_read(max)?;
        Ok(ReadChunk {
            ring: self,
            start,
            len,
        })
    }

    /// [`read_chunk`](Self::read_chunk) waiting at most `timeout`;
    /// ETIMEDOUT after.
    pub fn read_chunk_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> io::Result<ReadChunk<'_, T>> {
        let deadline = Some(Instant::now() + timeout);
        let (start, len) = self.reserve_slow(Side::NotEmpty, max, deadline)?;
        Ok(ReadChunk {
            ring: self,
            start,
            len,
        })
    }

    /// Slots `[start, start + len)` as the two runs they occupy (the second
    /// is empty unless the run wraps).
    fn runs(&self, start: u64, len: usize) -> (*mut T, usize, *mut T, usize) {
        let first = len.min((self.inner.cap - (start & (self.inner.cap - 1))) as usize);
        (
            self.inner.spsc_value::<T>(start),
            first,
            self.inner.spsc_value::<T>(0),
            len - first,
        )
    }
}

/// Free slots of an SPSC [`ShmRing`] lent for writing in place
/// ([`ShmRing::write_chunk`]). Dropping it sends nothing.
pub struct WriteChunk<'a, T: Copy> {
    ring: &'a ShmRing<T>,
    start: u64,
    len: usize,
}

impl<T: Copy> WriteChunk<'_, T> {
    /// How many slots are lent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is lent (a chunk asked with `max` 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slots, in order, as two runs (the second is empty unless the
    /// chunk wraps around the end of the ring).
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        let (a, na, b, nb) = self.ring.runs(self.start, self.len);
        // SAFETY: the slots are free (the consumer is past them) and, until
        // `tail` moves past them, only this producer may touch them; the
        // chunk borrows the handle mutably, so this is the only view, and
        // the two runs do not overlap (len <= cap).
        unsafe {
            (
                std::slice::from_raw_parts_mut(a.cast(), na),
                std::slice::from_raw_parts_mut(b.cast(), nb),
            )
        }
    }

    /// Sends the first `n` slots (at most the chunk's length) with one
    /// index update and one wakeup.
    ///
    /// # Safety
    /// Those `n` slots must have been written (through
    /// [`as_mut_slices`](Self::as_mut_slices)) with valid values of `T`.
    pub unsafe fn commit(self, n: usize) {
        let n = n.min(self.len);
        let ring = self.ring;
        let t = self.start + n as u64;
        ring.tail.set(t);
        ring.inner.hdr().tail.0.store(t, Ordering::Release);
        ring.notify(Side::NotEmpty, false);
    }

    /// Writes the items of `iter` into the slots in order, as many as fit,
    /// and sends them (as [`commit`](Self::commit)). Returns how many were
    /// sent.
    pub fn fill_from_iter<I: IntoIterator<Item = T>>(mut self, iter: I) -> usize {
        let mut iter = iter.into_iter();
        let mut n = 0;
        let (a, b) = self.as_mut_slices();
        // Run by run: a chained iterator would test which run it is in at
        // every element.
        'fill: for run in [a, b] {
            for slot in run {
                let Some(v) = iter.next() else { break 'fill };
                slot.write(v);
                n += 1;
            }
        }
        // SAFETY: the first `n` slots were written just now.
        unsafe { self.commit(n) };
        n
    }
}

impl<T: Copy> fmt::Debug for WriteChunk<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteChunk")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Published elements of an SPSC [`ShmRing`] lent for reading in place
/// ([`ShmRing::read_chunk`]). Dropping it consumes nothing.
pub struct ReadChunk<'a, T: Copy> {
    ring: &'a ShmRing<T>,
    start: u64,
    len: usize,
}

impl<T: Copy> ReadChunk<'_, T> {
    /// How many elements are lent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no element is lent (a chunk asked with `max` 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, oldest first, as two runs (the second is empty unless
    /// the chunk wraps around the end of the ring). They are the ring's own
    /// slots, not copies: the SPSC protocol keeps the producer off them
    /// until [`commit`](Self::commit), so a producer in another OS process
    /// must keep that protocol too (as it must write valid `T`s; see
    /// [`ShmRing`]).
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let (a, na, b, nb) = self.ring.runs(self.start, self.len);
        // SAFETY: the producer published these slots (tail, Acquire) and
        // does not write them again until `head` moves past them, which
        // only this consumer does, at commit.
        unsafe {
            (
                std::slice::from_raw_parts(a, na),
                std::slice::from_raw_parts(b, nb),
            )
        }
    }

    /// Consumes the first `n` elements (at most the chunk's length) with
    /// one index update and one wakeup.
    pub fn commit(self, n: usize) {
        let n = n.min(self.len);
        let ring = self.ring;
        let head = self.start + n as u64;
        ring.head.set(head);
        ring.inner.hdr().head.0.store(head, Ordering::Release);
        ring.notify(Side::NotFull, false);
    }

    /// Consumes every element of the chunk.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<T: Copy> fmt::Debug for ReadChunk<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadChunk")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for ShmRing<T> {
    /// Another handle on the same ring (same map), holding no role yet.
    fn clone(&self) -> ShmRing<T> {
        let r = ShmRing::from_inner(self.inner.clone());
        r.cross.set(self.cross.get());
        r
    }
}

impl<T> Drop for ShmRing<T> {
    fn drop(&mut self) {
        let h = self.inner.hdr();
        if self.producer.get() && h.roles.0.prod.fetch_sub(1, Ordering::AcqRel) & COUNT == 1 {
            self.notify(Side::NotEmpty, true);
        }
        if self.consumer.get() && h.roles.0.cons.fetch_sub(1, Ordering::AcqRel) & COUNT == 1 {
            self.notify(Side::NotFull, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spsc_and_mpmc_round_trip_with_wrap() {
        for kind in [RingKind::Spsc, RingKind::Mpmc] {
            let r = ShmRing::<u64>::with_capacity(kind, 3).unwrap();
            assert_eq!(r.capacity(), 4);
            for round in 0..5u64 {
                for i in 0..4 {
                    r.try_send(round * 10 + i).unwrap();
                }
                assert_eq!(
                    r.try_send(99).unwrap_err().raw_os_error(),
                    Some(libc::EAGAIN)
                );
                for i in 0..4 {
                    assert_eq!(r.try_recv().unwrap(), round * 10 + i);
                }
                assert_eq!(r.try_recv().unwrap_err().raw_os_error(), Some(libc::EAGAIN));
            }
        }
    }
}
