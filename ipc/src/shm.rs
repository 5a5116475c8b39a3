//! System V shared memory: `shmget` / `shmat` / `shmdt` / `shmctl` for green
//! processes (ipc.md §3.1–3.4).
//!
//! # What this module owns
//!
//! - The segment table ([`Registry`] of segments, `SHMMNI` slots) and the
//!   `SHMALL` page count.
//! - Each segment's memory: one `memfd` (ipc.md §3.4), sized to whole pages.
//!   Every [`shmat`] is its own `mmap(MAP_SHARED)` of that fd, so two attaches
//!   are two virtual addresses over the same physical pages, as in Linux. A
//!   [`ShmFlags::RDONLY`] attach is mapped `PROT_READ`: a raw write through it
//!   faults (`SIGSEGV`), as LTP shmat01 expects.
//! - `struct shmid_ds` ([`ShmidDs`]): the size asked (not rounded), creator
//!   and last pids, attach count, times.
//!
//! # Invariants
//!
//! - `nattch` counts the live [`ShmMap`]s of a segment that came from
//!   [`shmat`]; a map detaches exactly once, in [`shmdt`] or on drop. A green
//!   process that ends drops what it owns (task-local values included), so it
//!   detaches what it still holds, as `exit` does in Linux.
//! - `IPC_RMID` marks the segment (`SHM_DEST`) and frees its key at once; the
//!   id keeps resolving (stat and attach still work, as in Linux) until the
//!   last detach, which destroys the segment and ends the id.
//! - Lock order: the registry lock, then a segment's state lock (the registry
//!   reads `perm()` under its own lock), never the reverse.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::errno::Errno;
use crate::sysv::{Cred, IpcFlags, IpcObject, IpcPerm, Key, Registry, ACCESS_READ, ACCESS_WRITE};

/// `SHMMIN`: smallest segment one may create, in bytes (ipc.md §3.1; the
/// kernel reports 1 through `IPC_INFO`, LTP shmctl03).
pub const SHMMIN: usize = 1;
/// `SHMMAX`: largest segment, `ULONG_MAX - 2^24` since Linux 3.16 (ipc.md §3.1;
/// measured 18446744073692774399).
pub const SHMMAX: usize = usize::MAX - (1 << 24);
/// `SHMALL`: most pages all segments together may hold, `ULONG_MAX - 2^24`
/// (ipc.md §3.1).
pub const SHMALL: u64 = u64::MAX - (1 << 24);
/// `SHMMNI`: most segments at once (ipc.md §3.1: 4096).
pub const SHMMNI: usize = 4096;

/// `SHM_DEST` (0o1000) in `shm_perm.mode`: marked for removal (ipc.md §3.2).
pub const SHM_DEST: u32 = 0o1000;
/// `SHM_LOCKED` (0o2000) in `shm_perm.mode`: set by [`ShmCtl::Lock`] (ipc.md §3.3).
pub const SHM_LOCKED: u32 = 0o2000;
/// `SHM_HUGETLB` (0o4000) in `shmget`'s flags: greenos has no huge-page
/// segments and refuses to create one with EINVAL (ipc.md §3.1 allows it).
pub const SHM_HUGETLB: u32 = 0o4000;

/// The id of a segment, as [`shmget`] returns it (`shmid`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShmId(pub i32);

/// Flags of [`shmat`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ShmFlags(pub u32);

impl ShmFlags {
    /// Read-write attach (needs read and write permission).
    pub const NONE: ShmFlags = ShmFlags(0);
    /// `SHM_RDONLY` (0o10000): attach read-only (needs read permission); the
    /// pages are mapped `PROT_READ`.
    pub const RDONLY: ShmFlags = ShmFlags(0o10000);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: ShmFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ShmFlags {
    type Output = ShmFlags;
    fn bitor(self, rhs: ShmFlags) -> ShmFlags {
        ShmFlags(self.0 | rhs.0)
    }
}

/// What `IPC_SET` may change: owner, group and the nine mode bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ShmSet {
    /// New owner uid.
    pub uid: u32,
    /// New owner gid.
    pub gid: u32,
    /// New permission bits (only the low nine are used).
    pub mode: u32,
}

/// The commands of [`shmctl`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShmCtl {
    /// `IPC_STAT`: needs read permission; returns the [`ShmidDs`].
    Stat,
    /// `IPC_SET`: owner, creator or root (EPERM otherwise); updates ctime.
    Set(ShmSet),
    /// `IPC_RMID`: mark for destruction at the last detach; the key is freed
    /// at once. Owner, creator or root.
    Remove,
    /// `SHM_LOCK`: sets `SHM_LOCKED` in the mode. Owner, creator or root.
    Lock,
    /// `SHM_UNLOCK`: clears `SHM_LOCKED`. Owner, creator or root.
    Unlock,
}

/// `struct shmid_ds`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ShmidDs {
    /// `shm_perm`; its `mode` carries [`SHM_DEST`] / [`SHM_LOCKED`] above the
    /// nine permission bits, and its key is [`Key::PRIVATE`] once removed.
    pub perm: IpcPerm,
    /// `shm_segsz`: the size asked for at creation, not rounded to pages.
    pub segsz: usize,
    /// `shm_atime`: last attach, seconds since the epoch (0: never).
    pub atime: i64,
    /// `shm_dtime`: last detach, seconds since the epoch (0: never).
    pub dtime: i64,
    /// `shm_ctime`: creation or last `IPC_SET`, seconds since the epoch.
    pub ctime: i64,
    /// `shm_cpid`: the creator's pid.
    pub cpid: u64,
    /// `shm_lpid`: the pid of the last attach or detach (0: none yet).
    pub lpid: u64,
    /// `shm_nattch`: current number of attaches.
    pub nattch: u64,
}

/// `struct shminfo` (`IPC_INFO`): the limits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ShmInfo {
    /// [`SHMMAX`].
    pub shmmax: usize,
    /// [`SHMMIN`].
    pub shmmin: usize,
    /// [`SHMMNI`].
    pub shmmni: usize,
    /// [`SHMALL`].
    pub shmall: u64,
}

/// The limits, as `shmctl(IPC_INFO)` reports them.
pub fn shm_info() -> ShmInfo {
    ShmInfo {
        shmmax: SHMMAX,
        shmmin: SHMMIN,
        shmmni: SHMMNI,
        shmall: SHMALL,
    }
}

struct SegState {
    perm: IpcPerm,
    atime: i64,
    dtime: i64,
    ctime: i64,
    lpid: u64,
    nattch: u64,
    /// `SHM_DEST`: removal asked for.
    dest: bool,
    locked: bool,
    /// Destroyed (unregistered, or about to be): no new attach.
    gone: bool,
}

/// One segment: its memory (a memfd) and its `shmid_ds`.
struct Segment {
    fd: OwnedFd,
    segsz: usize,
    /// Page-rounded size of the memfd: what each attach maps.
    alloc: usize,
    cpid: u64,
    state: Mutex<SegState>,
}

impl IpcObject for Segment {
    fn perm(&self) -> IpcPerm {
        self.state.lock().perm
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        SHM_TOT.fetch_sub(pages(self.alloc), Ordering::Relaxed);
    }
}

static SEGMENTS: LazyLock<Registry<Segment>> = LazyLock::new(|| Registry::new(SHMMNI));
/// Pages held by all segments (`ns->shm_tot`), checked against `SHMALL`.
static SHM_TOT: AtomicU64 = AtomicU64::new(0);

fn page_size() -> usize {
    static PAGE: LazyLock<usize> = LazyLock::new(|| {
        // SAFETY: sysconf reads a constant and touches no memory.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    });
    *PAGE
}

fn pages(bytes: usize) -> u64 {
    (bytes / page_size()) as u64
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn last_os_errno() -> Errno {
    Errno(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// RAM plus swap in bytes: the kernel's heuristic overcommit refuses a
/// segment larger than this with ENOMEM (measured here: 1 TiB fails).
fn memory_limit() -> u128 {
    // SAFETY: sysinfo writes into the struct we pass and nothing else.
    unsafe {
        let mut si: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut si) != 0 {
            return u128::MAX;
        }
        (si.totalram as u128 + si.totalswap as u128) * si.mem_unit.max(1) as u128
    }
}

/// Makes the memory of a new segment: a zero-filled memfd of `alloc` bytes.
fn new_memfd(alloc: usize) -> Result<OwnedFd, Errno> {
    // SAFETY: the name is a NUL-terminated static string.
    let fd = unsafe { libc::memfd_create(c"greenos-shm".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(match last_os_errno() {
            Errno::EMFILE | Errno::ENFILE => Errno::ENFILE,
            _ => Errno::ENOMEM,
        });
    }
    // SAFETY: memfd_create just returned this fd; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), alloc as libc::off_t) } != 0 {
        return Err(Errno::ENOMEM);
    }
    Ok(fd)
}

/// `shmget(key, size, flags)`: the id of the segment `key` names, creating a
/// zero-filled one of `size` bytes with `IPC_CREAT` (or for
/// [`Key::PRIVATE`]). Errors as Linux (ipc.md §3.1): EINVAL for a new size
/// outside `SHMMIN..=SHMMAX` or an existing segment smaller than `size`;
/// EEXIST (`CREAT | EXCL`), ENOENT, EACCES (the mode bits of `flags` against
/// the segment's), ENOSPC (`SHMMNI`, `SHMALL`), ENOMEM (more than memory),
/// EINVAL for a new segment asked with [`SHM_HUGETLB`].
pub fn shmget(key: Key, size: usize, flags: IpcFlags) -> io::Result<ShmId> {
    let cred = Cred::current();
    let (id, _) = SEGMENTS.get(
        key,
        flags,
        &cred,
        |perm| {
            if flags.0 & SHM_HUGETLB != 0 {
                return Err(Errno::EINVAL);
            }
            create_segment(perm, size, &cred)
        },
        |seg| {
            if seg.segsz < size {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            }
        },
    )?;
    Ok(ShmId(id))
}

fn create_segment(perm: IpcPerm, size: usize, cred: &Cred) -> Result<Segment, Errno> {
    if !(SHMMIN..=SHMMAX).contains(&size) {
        return Err(Errno::EINVAL);
    }
    let alloc = size
        .checked_next_multiple_of(page_size())
        .ok_or(Errno::ENOSPC)?;
    let np = pages(alloc);
    // Reserve the pages against SHMALL; given back by Segment's drop.
    let mut tot = SHM_TOT.load(Ordering::Relaxed);
    loop {
        let new = tot.checked_add(np).filter(|&t| t <= SHMALL);
        let Some(new) = new else {
            return Err(Errno::ENOSPC);
        };
        match SHM_TOT.compare_exchange_weak(tot, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(t) => tot = t,
        }
    }
    let unreserve = |e| {
        SHM_TOT.fetch_sub(np, Ordering::Relaxed);
        Err(e)
    };
    // shmem's file size limit (MAX_LFS_FILESIZE) gives EINVAL, the
    // overcommit heuristic ENOMEM (both measured here).
    if alloc > i64::MAX as usize {
        return unreserve(Errno::EINVAL);
    }
    if alloc as u128 > memory_limit() {
        return unreserve(Errno::ENOMEM);
    }
    let fd = match new_memfd(alloc) {
        Ok(fd) => fd,
        Err(e) => return unreserve(e),
    };
    Ok(Segment {
        fd,
        segsz: size,
        alloc,
        cpid: cred.pid,
        state: Mutex::new(SegState {
            perm,
            atime: 0,
            dtime: 0,
            ctime: now(),
            lpid: 0,
            nattch: 0,
            dest: false,
            locked: false,
            gone: false,
        }),
    })
}

/// Where a map's memory comes from.
enum Origin {
    /// A [`shmat`] of a registered segment: detaching updates its `shmid_ds`.
    Attached { seg: Arc<Segment>, id: i32 },
    /// [`ShmMap::from_fd`]: a memfd from elsewhere (another OS process).
    Fd(#[allow(dead_code)] OwnedFd),
}

/// One attach of a segment: a mapping of its pages at an address of its own.
///
/// Dereferences to the segment's bytes (`shm_segsz` of them); `DerefMut`
/// panics on a read-only map — use [`try_as_mut_slice`](Self::try_as_mut_slice)
/// to get EACCES instead. Dropping the map detaches it (as [`shmdt`]).
///
/// The memory is *shared*: another attach, in this OS process or another,
/// may change it at any time. Treat the bytes as a snapshot and use atomics
/// (or [`ShmRing`](crate::ShmRing)) to communicate through them; never keep
/// references into two maps of the same segment at once (ipc.md §3.4,
/// "aliasing trap").
pub struct ShmMap {
    ptr: NonNull<u8>,
    /// Bytes mapped (whole pages).
    mapped: usize,
    /// Bytes exposed (`shm_segsz`, or the fd's size).
    len: usize,
    rdonly: bool,
    origin: Origin,
}

// SAFETY: the map is an owned region of memory like a `Box<[u8]>`; moving
// it to another thread moves that ownership (munmap works from any thread).
unsafe impl Send for ShmMap {}
// SAFETY: `&ShmMap` only gives `&[u8]`; writes need `&mut ShmMap`.
unsafe impl Sync for ShmMap {}

impl fmt::Debug for ShmMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ShmMap");
        d.field("addr", &self.ptr).field("len", &self.len);
        d.field("rdonly", &self.rdonly);
        if let Origin::Attached { id, .. } = &self.origin {
            d.field("id", id);
        }
        d.finish()
    }
}

fn map_fd(fd: &OwnedFd, len: usize, rdonly: bool) -> Result<NonNull<u8>, Errno> {
    let prot = if rdonly {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_WRITE
    };
    // SAFETY: a fresh shared mapping of a whole file we hold open; the kernel
    // picks the address, so no existing mapping is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::ENOMEM);
    }
    NonNull::new(p.cast()).ok_or(Errno::ENOMEM)
}

/// `shmat(id, NULL, flags)`: attaches the segment at an address the system
/// picks (ipc.md §3.2). Needs read permission, and write permission too
/// unless [`ShmFlags::RDONLY`] (EACCES). Works on a segment marked for
/// removal until its last detach, as Linux does; EINVAL for an id that names
/// no segment. Flag bits other than `RDONLY` are ignored, as Linux ignores
/// bits it does not know. Sets `shm_atime`, `shm_lpid` and counts the attach.
pub fn shmat(id: ShmId, flags: ShmFlags) -> io::Result<ShmMap> {
    let cred = Cred::current();
    let rdonly = flags.contains(ShmFlags::RDONLY);
    let seg = SEGMENTS.lookup(id.0)?;
    let access = if rdonly {
        ACCESS_READ
    } else {
        ACCESS_READ | ACCESS_WRITE
    };
    {
        let st = seg.state.lock();
        if st.gone {
            return Err(Errno::EINVAL.into());
        }
        st.perm.check(&cred, access)?;
    }
    let ptr = map_fd(&seg.fd, seg.alloc, rdonly)?;
    let mut st = seg.state.lock();
    if st.gone {
        drop(st);
        // SAFETY: we just mapped `alloc` bytes at `ptr`; nothing else knows it.
        unsafe { libc::munmap(ptr.as_ptr().cast(), seg.alloc) };
        return Err(Errno::EINVAL.into());
    }
    st.nattch += 1;
    st.atime = now();
    st.lpid = cred.pid;
    drop(st);
    Ok(ShmMap {
        ptr,
        mapped: seg.alloc,
        len: seg.segsz,
        rdonly,
        origin: Origin::Attached { seg, id: id.0 },
    })
}

/// `shmdt(addr)`: detaches the map (the same as dropping it). Sets
/// `shm_dtime` and `shm_lpid`; the last detach of a removed segment
/// destroys it. The map is consumed, so detaching an address that is not
/// attached (Linux's EINVAL) cannot be written.
pub fn shmdt(map: ShmMap) -> io::Result<()> {
    drop(map);
    Ok(())
}

/// The memfd of a segment, duplicated (close-on-exec set), to hand to
/// another OS process (inherit it, or send it over a Unix socket) which maps
/// it with [`ShmMap::from_fd`]. Needs read permission (EACCES).
pub fn shm_fd(id: ShmId) -> io::Result<OwnedFd> {
    let cred = Cred::current();
    let seg = SEGMENTS.lookup(id.0)?;
    {
        let st = seg.state.lock();
        if st.gone {
            return Err(Errno::EINVAL.into());
        }
        st.perm.check(&cred, ACCESS_READ)?;
    }
    seg.fd.try_clone()
}

impl ShmMap {
    /// Maps a shared memory file received from elsewhere (a memfd from
    /// [`shm_fd`] in another OS process), all of it. It is no System V
    /// attach here: no `shmid_ds` counts it. EINVAL for an empty file or one
    /// that cannot be mapped shared (`rdonly` maps it `PROT_READ`).
    pub fn from_fd(fd: OwnedFd, rdonly: bool) -> io::Result<ShmMap> {
        // SAFETY: fstat writes into the struct we pass.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
                return Err(io::Error::last_os_error());
            }
            st.st_size
        };
        if size <= 0 {
            return Err(Errno::EINVAL.into());
        }
        let len = size as usize;
        let mapped = len.next_multiple_of(page_size());
        let ptr = map_fd(&fd, mapped, rdonly).map_err(|_| Errno::EINVAL)?;
        Ok(ShmMap {
            ptr,
            mapped,
            len,
            rdonly,
            origin: Origin::Fd(fd),
        })
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The address of the first byte, for writing through raw pointers (a
    /// write through it faults if the map is read-only).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `shm_segsz`: the bytes the slice covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a segment has at least `SHMMIN` bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the map was attached with [`ShmFlags::RDONLY`].
    pub fn is_read_only(&self) -> bool {
        self.rdonly
    }

    /// The segment's id (None for a map made by [`from_fd`](Self::from_fd)).
    pub fn id(&self) -> Option<ShmId> {
        match &self.origin {
            Origin::Attached { id, .. } => Some(ShmId(*id)),
            Origin::Fd(_) => None,
        }
    }

    /// The bytes, writable; EACCES on a read-only map.
    pub fn try_as_mut_slice(&mut self) -> io::Result<&mut [u8]> {
        if self.rdonly {
            return Err(Errno::EACCES.into());
        }
        // SAFETY: `len` bytes are mapped read-write at `ptr` for as long as
        // `self` lives, and `&mut self` excludes other uses of this map.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    /// An identity of the underlying memory that every map of it shares, in
    /// any OS process: the memfd's (device, inode).
    pub(crate) fn memory_key(&self) -> (u64, u64) {
        let fd = match &self.origin {
            Origin::Attached { seg, .. } => seg.fd.as_raw_fd(),
            Origin::Fd(fd) => fd.as_raw_fd(),
        };
        // SAFETY: fstat on an fd we hold open, writing into our struct.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 {
                // Cannot happen for an open memfd; fall back to the address,
                // which is still unique within this process.
                return (u64::MAX, self.ptr.as_ptr() as u64);
            }
            (st.st_dev, st.st_ino)
        }
    }
}

impl Deref for ShmMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped readable at `ptr` while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for ShmMap {
    /// # Panics
    /// On a read-only map (the write would fault); see
    /// [`ShmMap::try_as_mut_slice`].
    fn deref_mut(&mut self) -> &mut [u8] {
        match self.try_as_mut_slice() {
            Ok(s) => s,
            Err(_) => panic!("ShmMap: mutable access to a SHM_RDONLY attach"),
        }
    }
}

impl AsRef<[u8]> for ShmMap {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for ShmMap {
    fn drop(&mut self) {
        // SAFETY: we mapped `mapped` bytes at `ptr` and no reference into
        // them outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
        if let Origin::Attached { seg, id } = &self.origin {
            let pid = Cred::current().pid;
            let destroy = {
                let mut st = seg.state.lock();
                st.nattch -= 1;
                st.dtime = now();
                st.lpid = pid;
                let d = st.nattch == 0 && st.dest && !st.gone;
                if d {
                    st.gone = true;
                }
                d
            };
            if destroy {
                // Not under the state lock (lock order); `gone` already
                // refuses new attaches.
                let _ = SEGMENTS.remove(*id);
            }
        }
    }
}

/// `shmctl(id, cmd)`. [`ShmCtl::Stat`] returns the [`ShmidDs`] (read
/// permission, EACCES); the others return `None` and need the caller to be
/// the owner, the creator or root (EPERM). EINVAL for an id that names no
/// segment (never created, or destroyed). See ipc.md §3.3.
pub fn shmctl(id: ShmId, cmd: ShmCtl) -> io::Result<Option<ShmidDs>> {
    let cred = Cred::current();
    let seg = SEGMENTS.lookup(id.0)?;
    match cmd {
        ShmCtl::Stat => {
            let st = seg.state.lock();
            if st.gone {
                return Err(Errno::EINVAL.into());
            }
            st.perm.check(&cred, ACCESS_READ)?;
            let mut perm = st.perm;
            if st.dest {
                perm.mode |= SHM_DEST;
            }
            if st.locked {
                perm.mode |= SHM_LOCKED;
            }
            Ok(Some(ShmidDs {
                perm,
                segsz: seg.segsz,
                atime: st.atime,
                dtime: st.dtime,
                ctime: st.ctime,
                cpid: seg.cpid,
                lpid: st.lpid,
                nattch: st.nattch,
            }))
        }
        ShmCtl::Set(set) => {
            let mut st = seg.state.lock();
            if st.gone {
                return Err(Errno::EINVAL.into());
            }
            st.perm.check_owner(&cred)?;
            st.perm.uid = set.uid;
            st.perm.gid = set.gid;
            st.perm.mode = set.mode & 0o777;
            st.ctime = now();
            Ok(None)
        }
        ShmCtl::Lock | ShmCtl::Unlock => {
            let mut st = seg.state.lock();
            if st.gone {
                return Err(Errno::EINVAL.into());
            }
            st.perm.check_owner(&cred)?;
            st.locked = cmd == ShmCtl::Lock;
            Ok(None)
        }
        ShmCtl::Remove => {
            let (first, destroy_now) = {
                let mut st = seg.state.lock();
                if st.gone {
                    return Err(Errno::EINVAL.into());
                }
                st.perm.check_owner(&cred)?;
                let first = !st.dest;
                st.dest = true;
                let d = st.nattch == 0;
                if d {
                    st.gone = true;
                }
                (first, d)
            };
            if destroy_now {
                // Frees the key and ends the id.
                let _ = SEGMENTS.remove(id.0);
            } else if first {
                // Free the key now, keep the id until the last detach.
                let _ = SEGMENTS.unkey(id.0);
                seg.state.lock().perm.key = Key::PRIVATE;
            }
            Ok(None)
        }
    }
}

/// Ids of every segment now (what `ipcs -m` lists).
pub fn shm_ids() -> Vec<ShmId> {
    SEGMENTS.ids().into_iter().map(ShmId).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_segment_round_trip() {
        let id = shmget(Key::PRIVATE, 100, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
        let mut a = shmat(id, ShmFlags::NONE).unwrap();
        let b = shmat(id, ShmFlags::RDONLY).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!(a.len(), 100);
        assert!(b.iter().all(|&x| x == 0));
        a[99] = 7;
        assert_eq!(b[99], 7);
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!((ds.segsz, ds.nattch), (100, 2));
        shmctl(id, ShmCtl::Remove).unwrap();
        drop(a);
        assert!(shmctl(id, ShmCtl::Stat).unwrap().unwrap().perm.mode & SHM_DEST != 0);
        shmdt(b).unwrap();
        assert_eq!(
            shmctl(id, ShmCtl::Stat).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
