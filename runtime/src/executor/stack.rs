//! The stack pool: guard-paged stacks for green tasks, carved out of large
//! slab reservations and recycled through per-thread caches.
//!
//! corosensei runs each coroutine on a [`Stack`] we hand it
//! ([`Coroutine::with_stack`]) and gives it back when the coroutine has
//! finished ([`Coroutine::into_stack`]). Creating a stack through the kernel
//! costs ~10 µs (mmap + mprotect + munmap + first-touch faults); a recycled
//! one costs a few ns. This module makes the second case the common one and
//! makes a million live stacks possible.
//!
//! [`Coroutine::with_stack`]: corosensei::Coroutine::with_stack
//! [`Coroutine::into_stack`]: corosensei::Coroutine::into_stack
//!
//! # Slab layout
//!
//! Stacks come in power-of-two **size classes** of usable bytes, 16 KiB up to
//! 1 GiB ([`StackPool::alloc`] rounds a request up; 64 KiB,
//! [`DEFAULT_STACK_SIZE`], is the common case). Each class grows by mapping
//! **chunks**: one `mmap(PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
//! MAP_NORESERVE | MAP_STACK)` of about [`CHUNK_TARGET_BYTES`] (64 MiB; at
//! least one slot), never moved and never unmapped. A chunk is a header
//! (geometry + the per-slot owner table read by the overflow handler) followed
//! by fixed-size slots of `guard page + usable size`:
//!
//! ```text
//!  chunk (one mapping, one VMA)
//!  +--------------------+--------+--------+-----+--------+
//!  | header + owner tbl | slot 0 | slot 1 | ... | slot n |
//!  +--------------------+--------+--------+-----+--------+
//!
//!  one slot                                  high addresses
//!  +------------------------------------+ <- base() = slot end (page aligned)
//!  | corosensei's root frame            |
//!  | task frames, growing down          |
//!  |                 |                  |
//!  |                 v                  |
//!  |   usable size (2^k bytes)          |
//!  +------------------------------------+
//!  | guard page (guard marker or        |
//!  | PROT_NONE): any access faults      |
//!  +------------------------------------+ <- limit() = slot start
//!                                            low addresses
//! ```
//!
//! A slot's guard page sits directly above the previous slot's top, and slot
//! 0's guard page separates the header from the first stack.
//!
//! # Guard pages without a VMA per stack
//!
//! An `mprotect(PROT_NONE)` guard splits the mapping: two VMAs per stack, and
//! the default `vm.max_map_count` of 65,530 stops a process at ~32,000 stacks
//! (see `reference/coroutines.md` §1.2, §3.1). Instead each slot's lowest page
//! gets `madvise(MADV_GUARD_INSTALL)` (Linux ≥ 6.13): the kernel writes guard
//! markers into the page table and the VMA stays whole, so a million stacks
//! cost a handful of VMAs. Guard markers survive `MADV_DONTNEED`, which the
//! watermark policy below relies on. Guards are installed when a slot is first
//! carved out of its chunk, outside the pool lock.
//!
//! **Fallback:** when `madvise` answers `EINVAL` (kernel older than 6.13, or a
//! locked mapping) the pool switches, for good, to `mprotect(PROT_NONE)` on
//! the guard page. That costs **2 VMAs per stack**; when the process reaches
//! `vm.max_map_count` the `mprotect` fails with `ENOMEM` and
//! [`StackPool::alloc`] returns an error naming `vm.max_map_count`, the
//! sysctl to raise.
//!
//! # Pool and resident watermark
//!
//! 1. **Thread cache.** Each OS thread keeps, per size class, a LIFO stock of
//!    free stacks (up to [`THREAD_CACHE_BYTES`] = 4 MiB of usable size, at
//!    most 64 stacks; 64 for the 64 KiB class). Alloc pops, release pushes:
//!    no lock, no syscall, and the stack handed out is the one most recently
//!    used (hot pages, hot TLB).
//! 2. **Global lists**, one [`parking_lot::Mutex`] per class. An empty thread
//!    cache refills half its capacity in one batch (warm list first, then
//!    cold, then fresh slots carved from the class's newest chunk, mapping a
//!    new chunk when that one is used up); a full one flushes its oldest half.
//! 3. **Resident watermark.** A flushed stack joins the class's *warm* list
//!    while that list holds less than [`WARM_POOL_BYTES`] (64 MiB of usable
//!    size; 1,024 stacks of 64 KiB). Beyond that the stack is decommitted
//!    with `MADV_DONTNEED` and joins the *cold* list. A flush sorts the stacks
//!    it decommits by address, so one `madvise` covers each run of adjacent
//!    slots (the guard pages inside the run keep their guards). So the memory
//!    held by *idle* pooled stacks of a class is bounded by
//!    `64 MiB + 4 MiB × threads`, whatever the peak was; a stack in use costs
//!    the pages its task touched. Classes too big for the budgets
//!    (> 4 MiB, > 64 MiB) skip the thread cache / warm list and are
//!    decommitted on every release.
//!
//! We bound *how many* stacks stay warm rather than how deep each stays warm
//! (Wasmtime's `async_stack_keep_resident`): finding out how deep a stack ran
//! would need a syscall (`mincore`) or a fault on every release, and with
//! whole stacks counted against the budget the bound already holds for stacks
//! that ran deep.
//!
//! # Threading assumptions
//!
//! - Stacks are allocated and released by the executor on worker OS threads,
//!   running on the worker's own stack (when a task first runs and after it
//!   exits), never from inside a coroutine frame that could migrate. The
//!   thread cache is reached only through `#[inline(never)]` accessors that
//!   never suspend, so even a call from a coroutine cannot keep a stale
//!   thread-local address across a switch; but the per-worker LIFO locality
//!   assumes worker-side calls.
//! - A [`PooledStack`] is `Send`: it may be released on another thread than
//!   the one that allocated it (a task that migrated); it then joins that
//!   thread's cache.
//! - When a thread exits its cache flushes to the global lists. A stack
//!   released while the thread's cache is already gone goes straight to the
//!   global lists.
//! - Dropping a [`PooledStack`] releases it; [`StackPool::release`] is the
//!   explicit spelling. corosensei drops the stack only after the coroutine
//!   has finished or been force-unwound, so nothing runs on a released stack.
//!
//! # Overflow report
//!
//! [`install_overflow_handler`] installs a SIGSEGV/SIGBUS handler (once). On a
//! fault inside one of our guard pages it writes
//! `greenos: task <pid> '<name>' overflowed its <N>-byte stack` to stderr,
//! using only `write(2)`, and aborts; any other fault goes to the handler that
//! was installed before (Rust's std prints its thread-overflow message from
//! there), or kills the process with the default action. The owner comes from
//! [`PooledStack::set_owner`], which copies up to 64 bytes of the name into
//! the chunk's owner table so the handler never follows a heap pointer. The
//! handler runs on the alternate signal stack (the faulting stack has no room
//! left); std gives its threads one, and [`ensure_sigaltstack`] gives one to
//! any thread that lacks it: the executor calls it at worker start.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::{c_int, c_void};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::OnceLock;

use corosensei::stack::{Stack, StackPointer};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

/// Usable size a stack gets when the task does not ask for another one.
pub(crate) const DEFAULT_STACK_SIZE: usize = 64 << 10;

/// log2 of the smallest size class (16 KiB).
const MIN_CLASS_SHIFT: u32 = 14;
/// log2 of the largest size class (1 GiB). A green task that needs more is a
/// bug; such requests are refused with `InvalidInput`.
const MAX_CLASS_SHIFT: u32 = 30;
/// Number of size classes: one per power of two from 16 KiB to 1 GiB.
const CLASS_COUNT: usize = (MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) as usize;

/// A chunk holds as many slots as fit in this many bytes (at least one).
/// Big enough that chunk mappings are rare (one per ~960 stacks of 64 KiB),
/// small enough that a class's first chunk does not reserve much address
/// space for nothing.
const CHUNK_TARGET_BYTES: usize = 64 << 20;
/// Capacity of the chunk registry scanned by the overflow handler: 65,536
/// chunks of ~64 MiB is 4 TiB of stacks, far above what RAM can back.
const MAX_CHUNKS: usize = 1 << 16;

/// Per thread and size class, the thread cache holds at most this many bytes
/// of usable stack (all of it may be resident).
const THREAD_CACHE_BYTES: usize = 4 << 20;
/// Upper bound on the stacks one thread caches per size class.
const THREAD_CACHE_MAX_STACKS: usize = 64;
/// Per size class, the global warm list holds at most this many bytes of
/// usable stack; stacks returned beyond it are decommitted.
const WARM_POOL_BYTES: usize = 64 << 20;

/// Bytes of a task name kept in the owner table (longer names are cut at a
/// character boundary).
const OWNER_NAME_CAPACITY: usize = 64;
const OWNER_NAME_WORDS: usize = OWNER_NAME_CAPACITY / 8;

/// `madvise` advice that installs guard markers in the page table (Linux
/// 6.13, `include/uapi/asm-generic/mman-common.h`). The `libc` crate (0.2.191)
/// does not define it yet; the value is the same on every architecture.
const MADV_GUARD_INSTALL: c_int = 102;

/// Size of an alternate signal stack installed by [`ensure_sigaltstack`]: far
/// above `MINSIGSTKSZ` even with AVX-512/AMX state, and our handler formats its
/// message in a 256-byte buffer.
const ALT_SIGNAL_STACK_SIZE: usize = 64 << 10;

// ---------------------------------------------------------------------------
// Page size and size classes
// ---------------------------------------------------------------------------

/// The system page size, read once.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => read_page_size(),
        size => size,
    }
}

#[cold]
fn read_page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is a valid name.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(raw)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096);
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// A power-of-two class of usable stack sizes: class `k` holds stacks of
/// `2^(14 + k)` usable bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SizeClass(u8);

impl SizeClass {
    /// The class whose stacks have at least `requested` usable bytes: rounded
    /// up to a power of two, at least 16 KiB and at least one page.
    #[inline]
    fn for_request(requested: usize) -> io::Result<Self> {
        let at_least = requested.max(1 << MIN_CLASS_SHIFT).max(page_size());
        match at_least.checked_next_power_of_two() {
            Some(usable) if usable <= 1 << MAX_CLASS_SHIFT => {
                Ok(SizeClass((usable.trailing_zeros() - MIN_CLASS_SHIFT) as u8))
            }
            _ => Err(Self::too_large(requested)),
        }
    }

    #[cold]
    fn too_large(requested: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "greenos: a stack of {requested} bytes was requested; the largest is {} bytes",
                1usize << MAX_CLASS_SHIFT
            ),
        )
    }

    fn index(self) -> usize {
        usize::from(self.0)
    }

    fn usable_size(self) -> usize {
        1 << (MIN_CLASS_SHIFT + u32::from(self.0))
    }

    /// Usable size plus one guard page.
    fn slot_size(self) -> usize {
        self.usable_size() + page_size()
    }

    /// Stacks a thread may cache for this class; 0 for classes above
    /// [`THREAD_CACHE_BYTES`], which bypass the cache.
    fn thread_cache_capacity(self) -> usize {
        (THREAD_CACHE_BYTES / self.usable_size()).min(THREAD_CACHE_MAX_STACKS)
    }

    /// Stacks moved per refill or flush between a thread cache and the
    /// global lists.
    fn batch_size(self) -> usize {
        (self.thread_cache_capacity() / 2).max(1)
    }

    /// Stacks the global warm list may hold before releases are decommitted.
    fn warm_capacity(self) -> usize {
        WARM_POOL_BYTES / self.usable_size()
    }
}

// ---------------------------------------------------------------------------
// Guard pages
// ---------------------------------------------------------------------------

/// How guard pages are made; decided by the first guard installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum GuardMechanism {
    /// Not decided yet: try `MADV_GUARD_INSTALL`.
    Untried = 0,
    /// `madvise(MADV_GUARD_INSTALL)`: page-table markers, no extra VMA.
    GuardMarkers = 1,
    /// `mprotect(PROT_NONE)`: one extra VMA per guard page (plus the split).
    ProtNone = 2,
}

static GUARD_MECHANISM: AtomicU8 = AtomicU8::new(GuardMechanism::Untried as u8);

fn guard_mechanism() -> GuardMechanism {
    match GUARD_MECHANISM.load(Ordering::Relaxed) {
        1 => GuardMechanism::GuardMarkers,
        2 => GuardMechanism::ProtNone,
        _ => GuardMechanism::Untried,
    }
}

/// Makes the page at `page` fault on any access. `page` must be page aligned
/// and lie in a mapping this module made and nothing uses yet (a freshly
/// carved slot's lowest page, or the bottom of a new alternate signal stack).
fn install_guard_page(page: usize) -> io::Result<()> {
    /// `EINTR`/`EAGAIN` retries before giving up on `MADV_GUARD_INSTALL`.
    const TRANSIENT_RETRIES: usize = 16;
    let len = page_size();
    if guard_mechanism() != GuardMechanism::ProtNone {
        for _ in 0..TRANSIENT_RETRIES {
            // SAFETY: `page..page + len` lies in one of our own mappings and
            // nothing runs on or points into it yet; a guard marker there only
            // makes later accesses fault.
            let rc = unsafe { libc::madvise(page as *mut c_void, len, MADV_GUARD_INSTALL) };
            if rc == 0 {
                GUARD_MECHANISM.store(GuardMechanism::GuardMarkers as u8, Ordering::Relaxed);
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) => continue,
                // Kernel < 6.13 (unknown advice) or a mapping the kernel will
                // not put guard markers in (e.g. mlockall): fall back for good.
                Some(libc::EINVAL) => {
                    GUARD_MECHANISM.store(GuardMechanism::ProtNone as u8, Ordering::Relaxed);
                    break;
                }
                _ => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!(
                            "greenos: madvise(MADV_GUARD_INSTALL) on a stack guard page \
                             failed: {error}"
                        ),
                    ))
                }
            }
        }
    }
    // Guard markers are unavailable (or kept failing transiently): PROT_NONE.
    // SAFETY: as above; PROT_NONE on a page of our own mapping that no one
    // uses only makes later accesses fault.
    let rc = unsafe { libc::mprotect(page as *mut c_void, len, libc::PROT_NONE) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOMEM) {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "greenos: cannot add a stack guard page: the process reached vm.max_map_count; \
             without MADV_GUARD_INSTALL (Linux >= 6.13) guard pages use mprotect(PROT_NONE), \
             which costs 2 memory mappings per pooled stack; raise vm.max_map_count \
             (sysctl vm.max_map_count=...) or keep fewer stacks alive",
        ));
    }
    Err(io::Error::new(
        error.kind(),
        format!("greenos: mprotect(PROT_NONE) on a stack guard page failed: {error}"),
    ))
}

// ---------------------------------------------------------------------------
// Owner table
// ---------------------------------------------------------------------------

/// Which task owns a slot, as the overflow handler reads it. Lives in the
/// chunk header, in memory that starts zeroed (all-zero = no owner). Every
/// field is atomic: a signal handler may read it while a worker writes it, and
/// a torn read only garbles a crash message.
#[repr(C)]
struct SlotOwner {
    /// 0: no owner recorded; 1: `pid` and the name describe the owner.
    recorded: AtomicU32,
    /// Bytes of `name_words` in use, at most [`OWNER_NAME_CAPACITY`].
    name_len: AtomicU32,
    pid: AtomicU64,
    /// The name's bytes, packed in native byte order.
    name_words: [AtomicU64; OWNER_NAME_WORDS],
}

impl SlotOwner {
    fn record(&self, pid: u64, name: &str) {
        let mut cut = name.len().min(OWNER_NAME_CAPACITY);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut padded = [0u8; OWNER_NAME_CAPACITY];
        padded[..cut].copy_from_slice(&name.as_bytes()[..cut]);

        self.recorded.store(0, Ordering::Relaxed);
        self.pid.store(pid, Ordering::Relaxed);
        for (word, bytes) in self.name_words.iter().zip(padded.chunks_exact(8)) {
            let mut packed = [0u8; 8];
            packed.copy_from_slice(bytes);
            word.store(u64::from_ne_bytes(packed), Ordering::Relaxed);
        }
        self.name_len.store(cut as u32, Ordering::Relaxed);
        self.recorded.store(1, Ordering::Release);
    }

    #[inline]
    fn clear(&self) {
        // Load first: a slot that never had an owner keeps its table page
        // untouched (reads of a never-written page map the shared zero page).
        if self.recorded.load(Ordering::Relaxed) != 0 {
            self.recorded.store(0, Ordering::Release);
        }
    }

    /// Copies the owner out, without allocating (used by the signal handler).
    fn snapshot(&self) -> Option<OwnerSnapshot> {
        if self.recorded.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut name = [0u8; OWNER_NAME_CAPACITY];
        for (bytes, word) in name.chunks_exact_mut(8).zip(&self.name_words) {
            bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let name_len = (self.name_len.load(Ordering::Relaxed) as usize).min(OWNER_NAME_CAPACITY);
        Some(OwnerSnapshot {
            pid: self.pid.load(Ordering::Relaxed),
            name,
            name_len,
        })
    }
}

struct OwnerSnapshot {
    pid: u64,
    name: [u8; OWNER_NAME_CAPACITY],
    name_len: usize,
}

impl OwnerSnapshot {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }
}

// ---------------------------------------------------------------------------
// Chunks
// ---------------------------------------------------------------------------

/// The start of a chunk mapping: its geometry, immutable once published.
/// The owner table follows it in the same mapping.
#[repr(C)]
struct ChunkHeader {
    /// First slot's start (its guard page); page aligned.
    slots_start: usize,
    slot_count: usize,
    class: SizeClass,
    /// `slot_count` owner records, in this chunk's mapping.
    owners: NonNull<SlotOwner>,
}

// SAFETY: a published header is never written again, and `owners` points to
// records made only of atomics in a mapping that is never unmapped, so shared
// access from any thread (signal handlers included) is sound.
unsafe impl Sync for ChunkHeader {}

impl ChunkHeader {
    fn slot_size(&self) -> usize {
        self.class.slot_size()
    }

    fn owner(&'static self, index: usize) -> &'static SlotOwner {
        debug_assert!(index < self.slot_count);
        // SAFETY: `owners` points to `slot_count` zero-initialised (hence
        // valid: all-zero atomics) records in a mapping that is never
        // unmapped, and `index < slot_count`.
        unsafe { &*self.owners.as_ptr().add(index) }
    }

    fn slot(&'static self, index: usize) -> Slot {
        let start = self.slots_start + index * self.slot_size();
        Slot {
            top: SlotTop::new(start + self.slot_size(), self.class),
            owner: self.owner(index),
        }
    }

    /// The index of the slot whose guard page contains `address`, if any.
    fn guard_page_slot(&self, address: usize) -> Option<usize> {
        let offset = address.checked_sub(self.slots_start)?;
        let index = offset / self.slot_size();
        (index < self.slot_count && offset % self.slot_size() < page_size()).then_some(index)
    }
}

/// Every chunk ever mapped, for the overflow handler (which may not lock).
/// Entries `0..CHUNKS_RESERVED` are claimed; a claimed entry is null until
/// its header is written.
static CHUNK_REGISTRY: [AtomicPtr<ChunkHeader>; MAX_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS];
static CHUNKS_RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Chunk mappings made so far (every `mmap` this pool issues).
static MMAP_CALLS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Chunk mappings made by this thread.
    static MMAP_CALLS_ON_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// Chunk mappings the pool has made so far, all threads together. A spawn
/// that found a free stack in the pool does not move it.
#[cfg(test)]
pub(crate) fn mmap_calls() -> u64 {
    MMAP_CALLS.load(Ordering::Relaxed)
}

/// Chunk mappings made by the calling thread: exact even while other threads
/// allocate, which is what a test of "this alloc did not mmap" needs.
#[cfg(test)]
pub(crate) fn mmap_calls_on_this_thread() -> u64 {
    MMAP_CALLS_ON_THIS_THREAD.with(Cell::get)
}

/// Maps and publishes a new chunk for `class`.
fn map_chunk(class: SizeClass) -> io::Result<&'static ChunkHeader> {
    let page = page_size();
    let slot_size = class.slot_size();
    let slot_count = (CHUNK_TARGET_BYTES / slot_size).max(1);
    let owners_offset =
        std::mem::size_of::<ChunkHeader>().next_multiple_of(std::mem::align_of::<SlotOwner>());
    let header_len =
        (owners_offset + slot_count * std::mem::size_of::<SlotOwner>()).next_multiple_of(page);
    let mapping_len = header_len + slot_count * slot_size;

    let registry_index = CHUNKS_RESERVED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
            (reserved < MAX_CHUNKS).then_some(reserved + 1)
        })
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("greenos: the stack pool reached its limit of {MAX_CHUNKS} chunks"),
            )
        })?;

    MMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    let _ = MMAP_CALLS_ON_THIS_THREAD.try_with(|calls| calls.set(calls.get() + 1));
    // SAFETY: a fresh anonymous private mapping at an address the kernel
    // chooses cannot alias anything.
    let mapping = unsafe {
        libc::mmap(
            ptr::null_mut(),
            mapping_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if mapping == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        let hint = if error.raw_os_error() == Some(libc::ENOMEM) {
            " (out of address space, or the process reached vm.max_map_count)"
        } else {
            ""
        };
        // The registry entry stays claimed and null; the handler skips it.
        return Err(io::Error::new(
            error.kind(),
            format!("greenos: mmap of a {mapping_len}-byte stack chunk failed: {error}{hint}"),
        ));
    }
    // Stacks touch a page or two each: a transparent huge page would make
    // that 2 MiB. MAP_STACK implies this on Linux >= 6.7; older kernels need
    // the advice. Failure (THP compiled out) is harmless.
    // SAFETY: advice on our own fresh mapping; it changes no contents.
    let _ = unsafe { libc::madvise(mapping, mapping_len, libc::MADV_NOHUGEPAGE) };

    let header_ptr = mapping.cast::<ChunkHeader>();
    // SAFETY: `owners_offset + slot_count * size_of::<SlotOwner>()` is within
    // `header_len`, inside the mapping, and suitably aligned (page-aligned
    // mapping, offset rounded up to the alignment).
    let owners = unsafe {
        NonNull::new_unchecked(mapping.cast::<u8>().add(owners_offset).cast::<SlotOwner>())
    };
    // SAFETY: the mapping is fresh, writable, page aligned and larger than a
    // header; nobody else can see it before the registry store below.
    unsafe {
        header_ptr.write(ChunkHeader {
            slots_start: mapping as usize + header_len,
            slot_count,
            class,
            owners,
        });
    }
    // Release: the handler's Acquire load sees the header written.
    CHUNK_REGISTRY[registry_index].store(header_ptr, Ordering::Release);
    // SAFETY: written above, never written again, never unmapped.
    Ok(unsafe { &*header_ptr })
}

fn stack_pointer(address: usize) -> StackPointer {
    // Slot addresses lie inside a successful mapping, so they are non-zero.
    StackPointer::new(address).unwrap_or(StackPointer::MAX)
}

// ---------------------------------------------------------------------------
// Slots and PooledStack
// ---------------------------------------------------------------------------

/// Low bits of a [`SlotTop`] that hold the size class. Slot tops are page
/// aligned (at least 4 KiB), so bits 0..12 are free; 5 bits cover the 17
/// classes.
const SLOT_TOP_CLASS_BITS: usize = 0x1f;
const _: () = assert!(CLASS_COUNT <= SLOT_TOP_CLASS_BITS + 1);

/// The top of a slot (the stack's base) with its size class packed into the
/// low bits, so that a [`Slot`] is two words: an `Option<Slot>` is returned
/// in registers and a free-list entry is 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SlotTop(StackPointer);

impl SlotTop {
    fn new(base: usize, class: SizeClass) -> Self {
        debug_assert_eq!(base & SLOT_TOP_CLASS_BITS, 0);
        SlotTop(stack_pointer(base | usize::from(class.0)))
    }

    #[inline]
    fn base(self) -> usize {
        self.0.get() & !SLOT_TOP_CLASS_BITS
    }

    #[inline]
    fn class(self) -> SizeClass {
        SizeClass((self.0.get() & SLOT_TOP_CLASS_BITS) as u8)
    }
}

/// One carved slot with its guard page installed; free-list entry.
#[derive(Clone, Copy)]
struct Slot {
    top: SlotTop,
    owner: &'static SlotOwner,
}

impl Slot {
    /// Top of the stack (slot end).
    #[inline]
    fn base(&self) -> usize {
        self.top.base()
    }

    /// Bottom of the slot, guard page included.
    #[inline]
    fn limit(&self) -> usize {
        self.base() - self.class().slot_size()
    }

    #[inline]
    fn class(&self) -> SizeClass {
        self.top.class()
    }

    fn usable_size(&self) -> usize {
        self.class().usable_size()
    }
}

/// A guard-paged stack from the [`StackPool`], for
/// [`Coroutine::with_stack`](corosensei::Coroutine::with_stack).
///
/// Dropping it returns it to the pool (to the dropping thread's cache); so
/// does [`StackPool::release`]. `Send` and `Sync` follow from its fields (the
/// owner record is made of atomics), so no `unsafe impl` is needed.
pub(crate) struct PooledStack {
    slot: Slot,
}

impl PooledStack {
    /// Bytes a task may use: the requested size rounded up to the class
    /// (power of two, at least 16 KiB), guard page excluded.
    pub(crate) fn usable_size(&self) -> usize {
        self.slot.usable_size()
    }

    /// Records which task runs on this stack, for the overflow report. Copies
    /// up to 64 bytes of `name` (cut at a character boundary).
    pub(crate) fn set_owner(&self, pid: u64, name: &str) {
        self.slot.owner.record(pid, name);
    }

    /// Forgets the owner; releasing the stack does this too.
    pub(crate) fn clear_owner(&self) {
        self.slot.owner.clear();
    }
}

impl fmt::Debug for PooledStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledStack")
            .field("base", &format_args!("{:#x}", self.slot.base()))
            .field("limit", &format_args!("{:#x}", self.slot.limit()))
            .field("usable_size", &self.usable_size())
            .finish()
    }
}

// SAFETY: `limit..base` is a slot of a chunk mapping that is never unmapped:
// its lowest page is a guard page (guard marker or PROT_NONE, installed before
// the slot was first handed out, and never removed), above it are at least
// 16 KiB (>= MIN_STACK_SIZE) of read-write memory, and both ends are page
// aligned, hence STACK_ALIGNMENT aligned. The slot belongs to this value
// alone until it is dropped.
unsafe impl Stack for PooledStack {
    #[inline]
    fn base(&self) -> StackPointer {
        stack_pointer(self.slot.base())
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        stack_pointer(self.slot.limit())
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        StackPool::global().release_slot(self.slot);
    }
}

// ---------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------

/// The global free lists of one size class.
struct ClassPool {
    /// Free stacks whose pages may be resident; LIFO, at most
    /// `warm_capacity()` entries.
    warm: Vec<Slot>,
    /// Free stacks decommitted with `MADV_DONTNEED`.
    cold: Vec<Slot>,
    /// Carved slots whose guard page could not be installed yet (the last
    /// attempt failed); retried before carving more.
    unguarded: Vec<Slot>,
    /// The chunk slots are being carved from, and its next uncarved slot.
    carving: Option<(&'static ChunkHeader, usize)>,
    /// Slots carved so far (guarded or not) and chunks mapped, for tests and
    /// statistics.
    carved_slots: usize,
    chunks: usize,
}

impl ClassPool {
    const fn new() -> Self {
        ClassPool {
            warm: Vec::new(),
            cold: Vec::new(),
            unguarded: Vec::new(),
            carving: None,
            carved_slots: 0,
            chunks: 0,
        }
    }

    /// Appends up to `wanted` carved slots that still need a guard page to
    /// `out`. Maps a chunk if needed; errors only if it appended nothing.
    fn carve(&mut self, class: SizeClass, wanted: usize, out: &mut Vec<Slot>) -> io::Result<()> {
        let before = out.len();
        let from_unguarded = wanted.min(self.unguarded.len());
        out.extend(
            self.unguarded
                .drain(self.unguarded.len() - from_unguarded..),
        );
        while out.len() - before < wanted {
            let (chunk, next) = match self.carving {
                Some((chunk, next)) if next < chunk.slot_count => (chunk, next),
                _ => match map_chunk(class) {
                    Ok(chunk) => {
                        self.chunks += 1;
                        (chunk, 0)
                    }
                    Err(error) if out.len() == before => return Err(error),
                    Err(_) => break,
                },
            };
            let take = (wanted - (out.len() - before)).min(chunk.slot_count - next);
            out.extend((next..next + take).map(|index| chunk.slot(index)));
            self.carving = Some((chunk, next + take));
            self.carved_slots += take;
        }
        Ok(())
    }
}

/// Counts for one size class, for tests and statistics.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StackClassStats {
    pub(crate) usable_size: usize,
    pub(crate) warm: usize,
    pub(crate) cold: usize,
    pub(crate) carved: usize,
    pub(crate) chunks: usize,
}

/// The process-wide stack pool; see the module docs for the policy.
pub(crate) struct StackPool {
    classes: [CachePadded<Mutex<ClassPool>>; CLASS_COUNT],
}

static GLOBAL_STACK_POOL: StackPool = StackPool {
    classes: [const { CachePadded::new(Mutex::new(ClassPool::new())) }; CLASS_COUNT],
};

/// One thread's free stacks, per size class; the end of each `Vec` is the
/// most recently released stack.
struct ThreadCache {
    stock: [Vec<Slot>; CLASS_COUNT],
}

impl Drop for ThreadCache {
    /// A thread that exits hands its stacks back to the global lists.
    fn drop(&mut self) {
        for (index, stock) in self.stock.iter_mut().enumerate() {
            if !stock.is_empty() {
                let class = SizeClass(index as u8);
                GLOBAL_STACK_POOL.return_to_global(class, stock);
                stock.clear();
            }
        }
    }
}

thread_local! {
    static THREAD_CACHE: RefCell<ThreadCache> = const {
        RefCell::new(ThreadCache { stock: [const { Vec::new() }; CLASS_COUNT] })
    };
}

/// Pops from this thread's cache. Not inlined so a caller never keeps this
/// thread's TLS address across a coroutine switch.
#[inline(never)]
fn pop_from_thread_cache(class: SizeClass) -> Option<Slot> {
    THREAD_CACHE
        .try_with(|cache| cache.try_borrow_mut().ok()?.stock[class.index()].pop())
        .ok()
        .flatten()
}

impl StackPool {
    /// The pool. There is one per process: thread caches belong to it.
    pub(crate) fn global() -> &'static StackPool {
        &GLOBAL_STACK_POOL
    }

    /// A stack with at least `size` usable bytes (rounded up to a power of
    /// two, at least 16 KiB), plus a guard page below it. Takes a free stack
    /// from this thread's cache when it has one (no lock, no syscall); maps
    /// memory only when the whole class is out of free stacks.
    ///
    /// Errors: `InvalidInput` for a size above 1 GiB; the OS error (with
    /// context) when a chunk cannot be mapped or a guard page installed.
    #[inline]
    pub(crate) fn alloc(&self, size: usize) -> io::Result<PooledStack> {
        let class = SizeClass::for_request(size)?;
        match pop_from_thread_cache(class) {
            Some(slot) => Ok(PooledStack { slot }),
            None => self.alloc_slow(class),
        }
    }

    /// Returns a stack to the pool (same as dropping it).
    pub(crate) fn release(&self, stack: PooledStack) {
        drop(stack);
    }

    /// The thread cache is empty (or gone): refill it with a batch and take
    /// one.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: SizeClass) -> io::Result<PooledStack> {
        let capacity = class.thread_cache_capacity();
        if capacity > 0 {
            let refilled = THREAD_CACHE.try_with(|cache| {
                let mut cache = cache.try_borrow_mut().ok()?;
                let stock = &mut cache.stock[class.index()];
                stock.reserve_exact(capacity.saturating_sub(stock.len()));
                Some(
                    self.refill(class, stock, class.batch_size())
                        .map(|()| stock.pop()),
                )
            });
            if let Ok(Some(result)) = refilled {
                if let Some(slot) = result? {
                    return Ok(PooledStack { slot });
                }
            }
        }
        let mut single = Vec::with_capacity(1);
        self.refill(class, &mut single, 1)?;
        match single.pop() {
            Some(slot) => Ok(PooledStack { slot }),
            None => Err(io::Error::other(
                "greenos: stack pool refill returned no stack",
            )),
        }
    }

    /// Appends up to `wanted` ready stacks to `out`: warm ones first, then
    /// cold ones, then freshly carved ones (guard pages installed here,
    /// outside the lock). `Ok` means at least one was appended.
    fn refill(&self, class: SizeClass, out: &mut Vec<Slot>, wanted: usize) -> io::Result<()> {
        let before = out.len();
        let carved_from;
        {
            let mut guard = self.classes[class.index()].lock();
            let pool = &mut *guard;
            for list in [&mut pool.warm, &mut pool.cold] {
                let take = (wanted - (out.len() - before)).min(list.len());
                out.extend(list.drain(list.len() - take..));
            }
            carved_from = out.len();
            let missing = wanted - (out.len() - before);
            if missing > 0 {
                if let Err(error) = pool.carve(class, missing, out) {
                    if out.len() == before {
                        return Err(error);
                    }
                }
            }
        }
        // Guard the carved slots without holding the lock; they are ours.
        for index in carved_from..out.len() {
            if let Err(error) = install_guard_page(out[index].limit()) {
                self.classes[class.index()]
                    .lock()
                    .unguarded
                    .extend(out.drain(index..));
                if out.len() == before {
                    return Err(error);
                }
                break;
            }
        }
        Ok(())
    }

    /// Puts a released slot into this thread's cache, flushing the cache's
    /// oldest half to the global lists when it is full.
    fn release_slot(&self, slot: Slot) {
        slot.owner.clear();
        let class = slot.class();
        if class.thread_cache_capacity() == 0 || !push_to_thread_cache(self, class, slot) {
            self.return_to_global(class, &mut [slot]);
        }
    }

    /// Moves `slots` (which this thread owns) to the class's global lists:
    /// the most recently used ones to the warm list while it has room, the
    /// rest decommitted to the cold list. Reorders `slots`.
    fn return_to_global(&self, class: SizeClass, slots: &mut [Slot]) {
        let lock = &self.classes[class.index()];
        let to_decommit = {
            let mut pool = lock.lock();
            let room = class.warm_capacity().saturating_sub(pool.warm.len());
            let keep_warm = room.min(slots.len());
            let split = slots.len() - keep_warm;
            pool.warm.extend_from_slice(&slots[split..]);
            split
        };
        if to_decommit == 0 {
            return;
        }
        let cold = &mut slots[..to_decommit];
        decommit(cold);
        lock.lock().cold.extend_from_slice(cold);
    }

    /// Counts for the class that serves requests of `size` bytes.
    #[cfg(test)]
    pub(crate) fn class_stats(&self, size: usize) -> io::Result<StackClassStats> {
        let class = SizeClass::for_request(size)?;
        let pool = self.classes[class.index()].lock();
        Ok(StackClassStats {
            usable_size: class.usable_size(),
            warm: pool.warm.len(),
            cold: pool.cold.len(),
            carved: pool.carved_slots,
            chunks: pool.chunks,
        })
    }
}

/// Pushes to this thread's cache; `false` if the cache is unavailable (thread
/// exiting). Not inlined, like [`pop_from_thread_cache`].
#[inline(never)]
fn push_to_thread_cache(pool: &StackPool, class: SizeClass, slot: Slot) -> bool {
    THREAD_CACHE
        .try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return false;
            };
            let stock = &mut cache.stock[class.index()];
            if stock.len() >= class.thread_cache_capacity() {
                let flush = class.batch_size().min(stock.len());
                pool.return_to_global(class, &mut stock[..flush]);
                stock.drain(..flush);
            }
            stock.push(slot);
            true
        })
        .unwrap_or(false)
}

/// Gives the pages of `slots` back to the kernel with `MADV_DONTNEED`, one
/// call per run of adjacent slots (sorted here). The guard pages inside a run
/// are covered too: guard markers and PROT_NONE protections survive
/// `MADV_DONTNEED`. The next touch of a page gets a zeroed page.
fn decommit(slots: &mut [Slot]) {
    let guard = page_size();
    slots.sort_unstable_by_key(|slot| slot.top);
    let mut rest = &*slots;
    while let Some((first, _)) = rest.split_first() {
        let mut run_end = first.base();
        let run_len = 1 + rest[1..]
            .iter()
            .take_while(|slot| {
                let adjacent = slot.limit() == run_end;
                if adjacent {
                    run_end = slot.base();
                }
                adjacent
            })
            .count();
        let run_start = first.limit() + guard;
        // SAFETY: `run_start..run_end` covers the usable pages of free slots
        // that this thread owns (nothing runs on them, nothing points into
        // them) and the guard pages between them, all inside one chunk
        // mapping. Failure only leaves the pages resident, so the result is
        // ignored.
        let _ = unsafe {
            libc::madvise(
                run_start as *mut c_void,
                run_end - run_start,
                libc::MADV_DONTNEED,
            )
        };
        rest = &rest[run_len..];
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackPool")
            .field("chunk_mmaps", &MMAP_CALLS.load(Ordering::Relaxed))
            .field("guard_mechanism", &guard_mechanism())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Overflow report: signal handler and alternate signal stacks
// ---------------------------------------------------------------------------

/// The action that was installed for a signal before ours, to chain to.
struct PreviousAction {
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
    /// Set (Release) once `action` holds the previous action.
    saved: AtomicBool,
}

// SAFETY: `action` is written once, by the sigaction call in
// `install_overflow_handler` (run once under a OnceLock), before `saved` is
// set with Release; readers read it only after an Acquire load of `saved`.
unsafe impl Sync for PreviousAction {}

impl PreviousAction {
    const fn new() -> Self {
        PreviousAction {
            action: UnsafeCell::new(MaybeUninit::uninit()),
            saved: AtomicBool::new(false),
        }
    }

    fn get(&self) -> Option<&libc::sigaction> {
        if !self.saved.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: `saved` is set only after the kernel filled `action`, and
        // `action` is never written again (see the Sync impl).
        Some(unsafe { (*self.action.get()).assume_init_ref() })
    }
}

static PREVIOUS_SIGSEGV_ACTION: PreviousAction = PreviousAction::new();
static PREVIOUS_SIGBUS_ACTION: PreviousAction = PreviousAction::new();

/// Installs the stack-overflow reporter for SIGSEGV and SIGBUS (once; later
/// calls return the first call's result) and gives the calling thread an
/// alternate signal stack if it has none.
pub(crate) fn install_overflow_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        for (signal, previous) in [
            (libc::SIGSEGV, &PREVIOUS_SIGSEGV_ACTION),
            (libc::SIGBUS, &PREVIOUS_SIGBUS_ACTION),
        ] {
            // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            let handler: FaultHandler = handle_fault_signal;
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `action` is initialised; the old action is written into
            // `previous.action`, which nothing reads before `saved` is set
            // (we are inside the OnceLock initialiser, run once).
            let rc =
                unsafe { libc::sigaction(signal, &action, (*previous.action.get()).as_mut_ptr()) };
            if rc != 0 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
            previous.saved.store(true, Ordering::Release);
        }
        Ok(())
    });
    installed.map_err(io::Error::from_raw_os_error)?;
    ensure_sigaltstack()
}

/// Signature of an `SA_SIGINFO` signal handler.
type FaultHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// SIGSEGV/SIGBUS handler. Async-signal-safe: atomics, arithmetic on the
/// stack, `write`, `abort`, `sigaction`, `raise`.
extern "C" fn handle_fault_signal(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t. si_addr is
    // meaningful for kernel-generated faults (si_code > 0), the only ones we
    // inspect.
    let fault_address = unsafe {
        match info.as_ref() {
            Some(info) if info.si_code > 0 => Some(info.si_addr() as usize),
            _ => None,
        }
    };
    if let Some((usable_size, owner)) = fault_address.and_then(find_guard_page_hit) {
        report_overflow(usable_size, owner.snapshot());
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
    // SAFETY: called from the signal handler with the kernel's own arguments.
    unsafe { chain_to_previous_handler(signal, info, context) };
}

/// The usable size and owner record of the pooled stack whose guard page
/// contains `address`.
fn find_guard_page_hit(address: usize) -> Option<(usize, &'static SlotOwner)> {
    let reserved = CHUNKS_RESERVED.load(Ordering::Acquire).min(MAX_CHUNKS);
    CHUNK_REGISTRY[..reserved].iter().find_map(|entry| {
        let header = entry.load(Ordering::Acquire);
        // SAFETY: a non-null entry points to a published header, never
        // written again and never unmapped.
        let chunk: &'static ChunkHeader = unsafe { header.as_ref()? };
        let index = chunk.guard_page_slot(address)?;
        Some((chunk.class.usable_size(), chunk.owner(index)))
    })
}

/// A fixed buffer for composing a message without allocating.
struct SignalSafeMessage {
    bytes: [u8; 256],
    len: usize,
}

impl SignalSafeMessage {
    fn new() -> Self {
        SignalSafeMessage {
            bytes: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, text: &[u8]) -> &mut Self {
        let take = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&text[..take]);
        self.len += take;
        self
    }

    fn push_decimal(&mut self, mut value: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[start..])
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn overflow_message(usable_size: usize, owner: Option<&OwnerSnapshot>) -> SignalSafeMessage {
    let mut message = SignalSafeMessage::new();
    match owner {
        Some(owner) => message
            .push(b"greenos: task ")
            .push_decimal(owner.pid)
            .push(b" '")
            .push(owner.name())
            .push(b"' overflowed its "),
        None => message.push(b"greenos: a task with no recorded owner overflowed its "),
    };
    message
        .push_decimal(usable_size as u64)
        .push(b"-byte stack\n");
    message
}

fn report_overflow(usable_size: usize, owner: Option<OwnerSnapshot>) {
    let message = overflow_message(usable_size, owner.as_ref());
    let mut unwritten = message.as_bytes();
    while !unwritten.is_empty() {
        // SAFETY: writes bytes from a live buffer to fd 2; write is
        // async-signal-safe.
        let written = unsafe { libc::write(2, unwritten.as_ptr().cast(), unwritten.len()) };
        match usize::try_from(written) {
            Ok(0) => break,
            Ok(count) => unwritten = &unwritten[count..],
            Err(_) if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => break,
        }
    }
}

/// Hands a fault that is not ours to the handler installed before ours; with
/// none (or SIG_IGN, which cannot ignore a fault), restores the default action
/// so the fault kills the process when the instruction re-executes.
///
/// # Safety
///
/// Must be called from the SIGSEGV/SIGBUS handler with the arguments the
/// kernel passed to it.
unsafe fn chain_to_previous_handler(
    signal: c_int,
    info: *mut libc::siginfo_t,
    context: *mut c_void,
) {
    let previous = match signal {
        libc::SIGSEGV => PREVIOUS_SIGSEGV_ACTION.get(),
        libc::SIGBUS => PREVIOUS_SIGBUS_ACTION.get(),
        _ => None,
    };
    match previous {
        Some(previous)
            if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN =>
        {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature; it was
                // installed for this signal and gets the kernel's arguments.
                let handler: FaultHandler = unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal, info, context);
            } else {
                // SAFETY: a plain handler takes only the signal number.
                let handler: extern "C" fn(c_int) =
                    unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal);
            }
        }
        _ => {
            // SAFETY: all-zero is a valid sigaction; SIG_DFL is 0.
            let mut default_action: libc::sigaction = unsafe { std::mem::zeroed() };
            default_action.sa_sigaction = libc::SIG_DFL;
            // SAFETY: sigaction and raise are async-signal-safe. A fault
            // re-executes and now kills; a signal sent with kill() (si_code
            // <= 0) would not recur, so it is raised again (it stays blocked
            // until this handler returns).
            unsafe {
                libc::sigaction(signal, &default_action, ptr::null_mut());
                if info.as_ref().is_none_or(|info| info.si_code <= 0) {
                    libc::raise(signal);
                }
            }
        }
    }
}

/// An alternate signal stack this module mapped for a thread.
struct OwnedAltSignalStack {
    mapping: *mut c_void,
    mapping_len: usize,
    /// The usable part (above the guard page), as passed to sigaltstack.
    stack: libc::stack_t,
}

impl Drop for OwnedAltSignalStack {
    fn drop(&mut self) {
        // SAFETY: a stack_t out-parameter for sigaltstack; all-zero is valid.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: queries (null new stack) and, if ours is still installed,
        // disables it before unmapping, so the kernel never delivers a signal
        // onto unmapped memory. The mapping is ours and nothing else uses it.
        unsafe {
            libc::sigaltstack(ptr::null(), &mut current);
            if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_sp == self.stack.ss_sp {
                let disable = libc::stack_t {
                    ss_sp: ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                libc::sigaltstack(&disable, ptr::null_mut());
            }
            libc::munmap(self.mapping, self.mapping_len);
        }
    }
}

thread_local! {
    static OWNED_ALT_SIGNAL_STACK: RefCell<Option<OwnedAltSignalStack>> =
        const { RefCell::new(None) };
}

/// Gives the calling thread an alternate signal stack (64 KiB above a guard
/// page) if it has none, so the overflow handler can run when the faulting
/// stack is exhausted. std's threads already have one; the executor calls
/// this at the start of every worker thread anyway. The stack is unmapped
/// when the thread exits.
pub(crate) fn ensure_sigaltstack() -> io::Result<()> {
    // SAFETY: a stack_t out-parameter; all-zero is valid.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries the current one.
    if unsafe { libc::sigaltstack(ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return Ok(());
    }
    let usable = ALT_SIGNAL_STACK_SIZE
        .max(libc::SIGSTKSZ)
        .next_multiple_of(page_size());
    let mapping_len = usable + page_size();
    // SAFETY: a fresh anonymous private mapping cannot alias anything.
    let mapping = unsafe {
        libc::mmap(
            ptr::null_mut(),
            mapping_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if mapping == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `mapping + page_size()` stays inside the mapping.
    let stack_bottom = unsafe { mapping.cast::<u8>().add(page_size()) };
    let owned = OwnedAltSignalStack {
        mapping,
        mapping_len,
        stack: libc::stack_t {
            ss_sp: stack_bottom.cast(),
            ss_flags: 0,
            ss_size: usable,
        },
    };
    install_guard_page(mapping as usize)?;
    // SAFETY: `owned.stack` describes mapped, writable memory that stays
    // mapped until `owned` is dropped, which disables it first.
    if unsafe { libc::sigaltstack(&owned.stack, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    OWNED_ALT_SIGNAL_STACK
        .try_with(|slot| *slot.borrow_mut() = Some(owned))
        .map_err(|_| {
            io::Error::other("greenos: thread is exiting; no alternate signal stack installed")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::hint::black_box;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Output};

    use corosensei::{Coroutine, CoroutineResult, Yielder};

    /// Tests that measure process RSS or map gigabytes run one at a time.
    static MEMORY_HEAVY_TESTS: Mutex<()> = Mutex::new(());

    /// Set in a child process to the name of the test it must act out.
    const CHILD_ROLE_ENV: &str = "GREENOS_STACK_TEST_CHILD";

    fn is_child(test: &str) -> bool {
        std::env::var(CHILD_ROLE_ENV).is_ok_and(|role| role == test)
    }

    /// Runs this test binary again with only `test` selected, acting as the
    /// child (rayon's `stack_overflow_crash` recipe).
    fn run_child(test: &str) -> Output {
        let module = module_path!();
        let in_crate = module.split_once("::").map_or(module, |(_, rest)| rest);
        Command::new(std::env::current_exe().expect("current_exe"))
            .args([
                &format!("{in_crate}::{test}"),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROLE_ENV, test)
            .output()
            .expect("spawn child test process")
    }

    fn describe(output: &Output) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("statm rss");
        pages * page_size()
    }

    fn mapping_count() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .expect("read maps")
            .lines()
            .count()
    }

    /// Resident pages of `len` bytes at `start`, by mincore.
    fn resident_pages(start: usize, len: usize) -> usize {
        let pages = len / page_size();
        let mut vector = vec![0u8; pages];
        // SAFETY: the range is page aligned and mapped; `vector` has one byte
        // per page.
        let rc = unsafe { libc::mincore(start as *mut c_void, len, vector.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vector.iter().filter(|&&v| v & 1 != 0).count()
    }

    fn usable_range(stack: &PooledStack) -> (usize, usize) {
        (stack.limit().get() + page_size(), stack.usable_size())
    }

    /// Writes one byte into every usable page.
    fn touch_every_page(stack: &PooledStack) {
        let (start, len) = usable_range(stack);
        for page in (start..start + len).step_by(page_size()) {
            // SAFETY: inside the usable part of a stack we own.
            unsafe { ptr::write_volatile(page as *mut u8, 1) };
        }
    }

    /// Writes one word just below the top, as a coroutine's first frame would.
    fn touch_top(stack: &PooledStack) {
        // SAFETY: the word below base lies in the usable part of a stack we own.
        unsafe { ptr::write_volatile((stack.base().get() - 8) as *mut u64, 0x5eed) };
    }

    fn mem_available_bytes() -> usize {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .map_or(0, |kib| kib << 10)
    }

    #[test]
    fn sizes_round_up_to_power_of_two_classes_with_one_guard_page() {
        let pool = StackPool::global();
        let page = page_size();
        for (request, usable) in [
            (0, 16 << 10),
            (1, 16 << 10),
            (16 << 10, 16 << 10),
            ((16 << 10) + 1, 32 << 10),
            (DEFAULT_STACK_SIZE, 64 << 10),
            (48 << 10, 64 << 10),
            (1 << 20, 1 << 20),
        ] {
            let stack = pool.alloc(request).expect("alloc");
            assert_eq!(stack.usable_size(), usable.max(page), "request {request}");
            assert_eq!(
                stack.base().get() - stack.limit().get(),
                stack.usable_size() + page
            );
            assert_eq!(stack.base().get() % corosensei::stack::STACK_ALIGNMENT, 0);
            assert_eq!(stack.limit().get() % page, 0);
            assert_eq!(stack.base().get() % page, 0);
            // Lowest and highest usable bytes are writable.
            let (start, len) = usable_range(&stack);
            // SAFETY: both addresses are inside the usable part of our stack.
            unsafe {
                ptr::write_volatile(start as *mut u8, 7);
                ptr::write_volatile((start + len - 1) as *mut u8, 7);
            }
            pool.release(stack);
        }
    }

    #[test]
    fn absurd_sizes_are_errors_not_panics() {
        let pool = StackPool::global();
        for request in [
            usize::MAX,
            usize::MAX / 2 + 2,
            1 << 40,
            (1 << MAX_CLASS_SHIFT) + 1,
        ] {
            let error = pool.alloc(request).expect_err("absurd size");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        }
        let largest = pool.alloc(1 << MAX_CLASS_SHIFT).expect("largest class");
        assert_eq!(largest.usable_size(), 1 << MAX_CLASS_SHIFT);
    }

    #[test]
    fn reuse_from_thread_cache_does_not_mmap() {
        // 256 KiB: a class no other test uses.
        let pool = StackPool::global();
        let first = pool.alloc(256 << 10).expect("alloc");
        let base = first.base();
        pool.release(first);
        let mmaps_before = mmap_calls_on_this_thread();
        for _ in 0..10_000 {
            let stack = pool.alloc(256 << 10).expect("alloc");
            assert_eq!(stack.base(), base, "LIFO reuse of the stack just released");
            pool.release(stack);
        }
        assert_eq!(mmap_calls_on_this_thread(), mmaps_before);
    }

    #[test]
    fn reuse_from_global_list_does_not_mmap() {
        // 512 KiB: thread cache of 8, warm list of 128; no other test uses it.
        let size = 512 << 10;
        std::thread::spawn(move || {
            let stacks: Vec<_> = (0..20)
                .map(|_| StackPool::global().alloc(size).expect("alloc"))
                .collect();
            drop(stacks);
        })
        .join()
        .expect("producer thread");
        // The producer's cache flushed to the global lists when it exited.
        let stats = StackPool::global().class_stats(size).expect("stats");
        assert_eq!(stats.warm + stats.cold, stats.carved, "{stats:?}");
        assert!(stats.warm >= 20, "{stats:?}");
        std::thread::spawn(move || {
            let stacks: Vec<_> = (0..20)
                .map(|_| StackPool::global().alloc(size).expect("alloc"))
                .collect();
            assert_eq!(mmap_calls_on_this_thread(), 0, "free stacks were available");
            drop(stacks);
        })
        .join()
        .expect("consumer thread");
    }

    #[test]
    fn coroutine_runs_on_a_pooled_stack_and_gives_it_back() {
        #[inline(never)]
        fn burn(depth: usize) -> usize {
            let frame = black_box([depth as u8; 512]);
            if depth == 0 {
                0
            } else {
                burn(depth - 1) + usize::from(frame[depth % 512])
            }
        }
        let pool = StackPool::global();
        let stack = pool.alloc(DEFAULT_STACK_SIZE).expect("alloc");
        let (base, limit) = (stack.base(), stack.limit());
        stack.set_owner(7, "worker-test");
        let mut coroutine =
            Coroutine::with_stack(stack, |yielder: &Yielder<usize, usize>, depth: usize| {
                let here = black_box(&depth) as *const usize as usize;
                let next = yielder.suspend(here);
                burn(next)
            });
        let CoroutineResult::Yield(address) = coroutine.resume(10) else {
            panic!("expected a yield")
        };
        assert!(
            (limit.get()..base.get()).contains(&address),
            "coroutine frame lies on the pooled stack"
        );
        let CoroutineResult::Return(_) = coroutine.resume(40) else {
            panic!("expected a return")
        };
        let stack = coroutine.into_stack();
        assert_eq!(stack.base(), base);
        pool.release(stack);
        let again = pool.alloc(DEFAULT_STACK_SIZE).expect("alloc");
        assert_eq!(again.base(), base, "released stack is reused first");
        assert!(
            again.slot.owner.snapshot().is_none(),
            "release clears the owner"
        );
    }

    #[test]
    fn owner_names_are_cut_at_64_bytes_on_a_char_boundary() {
        let stack = StackPool::global().alloc(16 << 10).expect("alloc");
        let name = format!("{}é-tail", "x".repeat(63)); // 'é' straddles byte 64
        stack.set_owner(u64::MAX, &name);
        let owner = stack.slot.owner.snapshot().expect("recorded");
        assert_eq!(owner.pid, u64::MAX);
        assert_eq!(owner.name(), "x".repeat(63).as_bytes());
        let message = overflow_message(65536, Some(&owner));
        let expected = format!(
            "greenos: task {} '{}' overflowed its 65536-byte stack\n",
            u64::MAX,
            "x".repeat(63)
        );
        assert_eq!(message.as_bytes(), expected.as_bytes());
        stack.clear_owner();
        assert!(stack.slot.owner.snapshot().is_none());
    }

    #[test]
    fn pooled_stack_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PooledStack>();
    }

    #[test]
    fn ensure_sigaltstack_installs_one_where_missing_and_is_idempotent() {
        std::thread::spawn(|| {
            // Drop std's alternate stack (std unmaps it at thread exit).
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling the alternate stack of this thread, which is
            // not running on it.
            assert_eq!(unsafe { libc::sigaltstack(&disable, ptr::null_mut()) }, 0);
            let query = || {
                // SAFETY: all-zero stack_t; a null new stack only queries.
                let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                assert_eq!(unsafe { libc::sigaltstack(ptr::null(), &mut current) }, 0);
                current
            };
            assert_ne!(query().ss_flags & libc::SS_DISABLE, 0);
            ensure_sigaltstack().expect("install");
            let installed = query();
            assert_eq!(installed.ss_flags & libc::SS_DISABLE, 0);
            assert!(installed.ss_size >= ALT_SIGNAL_STACK_SIZE);
            ensure_sigaltstack().expect("second call");
            assert_eq!(
                query().ss_sp,
                installed.ss_sp,
                "second call keeps the first stack"
            );
        })
        .join()
        .expect("thread");
    }

    /// Recurses with 1 KiB frames until the stack runs out.
    #[inline(never)]
    fn recurse_forever(depth: u64) -> u64 {
        let mut frame = [0u8; 1024];
        frame[(depth % 1024) as usize] = depth as u8;
        let frame = black_box(frame);
        if depth == u64::MAX {
            return 0;
        }
        recurse_forever(depth + 1) + u64::from(frame[(depth % 7) as usize])
    }

    /// Child body: a task recursing on a 64 KiB pooled stack.
    fn overflow_a_pooled_stack_in_a_coroutine() -> ! {
        install_overflow_handler().expect("install handler");
        let stack = StackPool::global()
            .alloc(DEFAULT_STACK_SIZE)
            .expect("alloc");
        stack.set_owner(42, "deep-recursion");
        let mut coroutine =
            Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| recurse_forever(0));
        let _ = coroutine.resume(());
        eprintln!("child: recursion returned; the guard page did not fault");
        std::process::exit(3);
    }

    fn assert_overflow_reported(output: &Output) {
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{}",
            describe(output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("greenos: task 42 'deep-recursion' overflowed its 65536-byte stack\n"),
            "{}",
            describe(output)
        );
    }

    #[test]
    fn overflowing_a_pooled_stack_reports_the_task_and_aborts() {
        const TEST: &str = "overflowing_a_pooled_stack_reports_the_task_and_aborts";
        if is_child(TEST) {
            overflow_a_pooled_stack_in_a_coroutine();
        }
        assert_overflow_reported(&run_child(TEST));
    }

    #[test]
    fn overflow_is_reported_with_mprotect_guard_pages_too() {
        const TEST: &str = "overflow_is_reported_with_mprotect_guard_pages_too";
        if is_child(TEST) {
            GUARD_MECHANISM.store(GuardMechanism::ProtNone as u8, Ordering::Relaxed);
            overflow_a_pooled_stack_in_a_coroutine();
        }
        assert_overflow_reported(&run_child(TEST));
    }

    #[test]
    fn thread_stack_overflow_still_reaches_std_handler() {
        const TEST: &str = "thread_stack_overflow_still_reaches_std_handler";
        if is_child(TEST) {
            install_overflow_handler().expect("install handler");
            let _ = std::thread::Builder::new()
                .name("small-thread".into())
                .stack_size(64 << 10)
                .spawn(|| recurse_forever(0))
                .expect("spawn")
                .join();
            eprintln!("child: thread recursion returned");
            std::process::exit(3);
        }
        let output = run_child(TEST);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("thread 'small-thread'") && stderr.contains("has overflowed its stack"),
            "{}",
            describe(&output)
        );
        assert!(!stderr.contains("greenos:"), "{}", describe(&output));
    }

    #[test]
    fn guard_pages_survive_a_decommit_that_spans_them() {
        const TEST: &str = "guard_pages_survive_a_decommit_that_spans_them";
        if is_child(TEST) {
            install_overflow_handler().expect("install handler");
            // A fresh class in a fresh process: consecutive slots of one chunk.
            let pool = StackPool::global();
            let lower = pool.alloc(32 << 10).expect("alloc");
            let upper = pool.alloc(32 << 10).expect("alloc");
            assert_eq!(mmap_calls(), 1, "one chunk serves both stacks");
            let (lower, upper) = if lower.base() < upper.base() {
                (lower, upper)
            } else {
                (upper, lower)
            };
            assert_eq!(lower.base(), upper.limit(), "adjacent slots");
            touch_every_page(&lower);
            touch_every_page(&upper);
            let rss_touched =
                resident_pages(lower.limit().get(), 2 * (lower.usable_size() + page_size()));
            // One madvise from lower's bottom to upper's top, over upper's guard.
            decommit(&mut [lower.slot, upper.slot]);
            let rss_after =
                resident_pages(lower.limit().get(), 2 * (lower.usable_size() + page_size()));
            eprintln!("child: resident pages {rss_touched} -> {rss_after}");
            assert_eq!(rss_after, 0);
            upper.set_owner(9, "guard-after-dontneed");
            // SAFETY: deliberately reads the guard page: must fault.
            let value = unsafe { ptr::read_volatile(upper.limit().get() as *const u8) };
            eprintln!("child: read {value} from a guard page after MADV_DONTNEED");
            std::process::exit(3);
        }
        let output = run_child(TEST);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("resident pages 16 -> 0"),
            "{}",
            describe(&output)
        );
        assert!(
            stderr.contains(
                "greenos: task 9 'guard-after-dontneed' overflowed its 32768-byte stack\n"
            ),
            "{}",
            describe(&output)
        );
    }

    #[test]
    fn faults_outside_our_guard_pages_reach_the_previous_handler() {
        const TEST: &str = "faults_outside_our_guard_pages_reach_the_previous_handler";
        if is_child(TEST) {
            install_overflow_handler().expect("install handler");
            let stack = StackPool::global().alloc(16 << 10).expect("alloc");
            stack.set_owner(1, "bystander");
            // SAFETY: a fresh PROT_NONE page, not one of ours.
            let page = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    page_size(),
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(page, libc::MAP_FAILED);
            // SAFETY: deliberately faults.
            let value = unsafe { ptr::read_volatile(page as *const u8) };
            eprintln!("child: read {value} from a PROT_NONE page");
            std::process::exit(3);
        }
        let output = run_child(TEST);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGSEGV),
            "{}",
            describe(&output)
        );
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("greenos:"),
            "{}",
            describe(&output)
        );
    }

    #[test]
    fn mprotect_fallback_names_vm_max_map_count_when_mappings_run_out() {
        const TEST: &str = "mprotect_fallback_names_vm_max_map_count_when_mappings_run_out";
        if is_child(TEST) {
            GUARD_MECHANISM.store(GuardMechanism::ProtNone as u8, Ordering::Relaxed);
            let pool = StackPool::global();
            let mut stacks = Vec::with_capacity(200_000);
            let error = loop {
                match pool.alloc(16 << 10) {
                    Ok(stack) => stacks.push(stack),
                    Err(error) => break error,
                }
                assert!(stacks.len() < 200_000, "vm.max_map_count never reached");
            };
            let live = stacks.len();
            // Release (decommit runs over PROT_NONE guards) and reuse.
            drop(stacks);
            let again = pool.alloc(16 << 10).expect("reuse after the limit");
            touch_every_page(&again);
            println!("child: live={live} kind={:?} error={error}", error.kind());
            assert_eq!(error.kind(), io::ErrorKind::OutOfMemory);
            assert!(error.to_string().contains("vm.max_map_count"));
            return;
        }
        let output = run_child(TEST);
        assert!(output.status.success(), "{}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let live: usize = stdout
            .split("live=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}", describe(&output)));
        // Two VMAs per stack: roughly half of the default 65,530.
        assert!((20_000..40_000).contains(&live), "{}", describe(&output));
    }

    #[test]
    fn releases_above_the_warm_watermark_are_decommitted() {
        let _serial = MEMORY_HEAVY_TESTS.lock();
        // 128 KiB: thread cache 32, warm list 512; no other test uses it.
        let size = 128 << 10;
        let count = 2048;
        let pool = StackPool::global();
        let class = SizeClass::for_request(size).expect("class");
        let stacks: Vec<_> = (0..count)
            .map(|_| pool.alloc(size).expect("alloc"))
            .collect();
        let rss_before_touch = resident_bytes();
        stacks.iter().for_each(touch_every_page);
        let rss_touched = resident_bytes();
        let slots: Vec<Slot> = stacks.iter().map(|stack| stack.slot).collect();
        drop(stacks);
        let rss_released = resident_bytes();

        let stats = pool.class_stats(size).expect("stats");
        assert!(stats.warm <= class.warm_capacity(), "{stats:?}");
        assert!(
            stats.cold >= count - class.warm_capacity() - class.thread_cache_capacity(),
            "{stats:?}"
        );
        // Exactly the cold ones lost their pages.
        let (mut resident_slots, mut empty_slots) = (0, 0);
        for slot in &slots {
            match resident_pages(slot.limit() + page_size(), slot.usable_size()) {
                0 => empty_slots += 1,
                pages => {
                    assert_eq!(pages, slot.usable_size() / page_size());
                    resident_slots += 1;
                }
            }
        }
        assert_eq!(empty_slots, stats.cold, "{stats:?}");
        assert_eq!(resident_slots, count - stats.cold);

        let touched = rss_touched.saturating_sub(rss_before_touch);
        let freed = rss_touched.saturating_sub(rss_released);
        let expected_freed = stats.cold * size;
        eprintln!(
            "watermark: touched {} MiB, freed {} MiB on release (expected {} MiB); warm {} cold {}",
            touched >> 20,
            freed >> 20,
            expected_freed >> 20,
            stats.warm,
            stats.cold
        );
        assert!(
            touched >= count * size * 9 / 10,
            "touching every page made them resident"
        );
        assert!(freed >= expected_freed * 8 / 10, "statm shows the decommit");
    }

    #[test]
    fn one_million_live_stacks_fit_in_the_default_map_count() {
        let _serial = MEMORY_HEAVY_TESTS.lock();
        const COUNT: usize = 1_000_000;
        let page = page_size();
        let needed = COUNT * page * 3 / 2;
        if mem_available_bytes() < needed {
            eprintln!("skipped: needs ~{} MiB of available memory", needed >> 20);
            return;
        }
        let pool = StackPool::global();
        let probe = pool.alloc(DEFAULT_STACK_SIZE).expect("alloc");
        drop(probe);
        if guard_mechanism() != GuardMechanism::GuardMarkers {
            eprintln!(
                "skipped: no MADV_GUARD_INSTALL (Linux < 6.13); \
                 1M stacks would need vm.max_map_count > 2M"
            );
            return;
        }
        let maps_before = mapping_count();
        let rss_before = resident_bytes();
        let started = std::time::Instant::now();
        let mut stacks = Vec::with_capacity(COUNT);
        for _ in 0..COUNT {
            let stack = pool.alloc(DEFAULT_STACK_SIZE).expect("alloc");
            touch_top(&stack);
            stacks.push(stack);
        }
        let allocated_in = started.elapsed();
        let maps_live = mapping_count();
        let rss_live = resident_bytes();
        let started = std::time::Instant::now();
        drop(stacks);
        let released_in = started.elapsed();
        let rss_released = resident_bytes();
        let stats = pool.class_stats(DEFAULT_STACK_SIZE).expect("stats");
        eprintln!(
            "1M stacks: alloc+touch {allocated_in:?}, release {released_in:?}; \
             maps {maps_before} -> {maps_live}; \
             rss +{} MiB live, +{} MiB after release; {} chunks, warm {} cold {}",
            rss_live.saturating_sub(rss_before) >> 20,
            rss_released.saturating_sub(rss_before) >> 20,
            stats.chunks,
            stats.warm,
            stats.cold,
        );
        assert!(
            maps_live <= maps_before + 100,
            "guard pages must not add VMAs: {maps_before} -> {maps_live}"
        );
        assert!(
            rss_live.saturating_sub(rss_before) >= COUNT * page * 9 / 10,
            "each stack touched one page"
        );
        let warm_bound = (WARM_POOL_BYTES + THREAD_CACHE_BYTES) / DEFAULT_STACK_SIZE * page;
        assert!(
            rss_released.saturating_sub(rss_before) <= warm_bound + (64 << 20),
            "released stacks beyond the watermark gave their pages back"
        );
    }
}
