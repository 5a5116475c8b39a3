//! What every System V IPC object shares: keys, the `ipcget` rules, the
//! `ipc_perm` access check, credentials of the calling green process, and the
//! id registry (ipc/util.c in Linux).
//!
//! # What this module owns
//!
//! - [`Key`], [`IpcFlags`]: the `key_t` and the `IPC_CREAT | IPC_EXCL |
//!   IPC_NOWAIT | mode` flag word of `msgget` / `semget` / `shmget`.
//! - [`IpcPerm`]: `struct ipc_perm` and [`IpcPerm::permits`], Linux's
//!   `ipcperms()` (owner, then group, then other bits; uid 0 bypasses, as
//!   `CAP_IPC_OWNER` does).
//! - [`Cred`]: pid, uid and gid of the caller — the green task's when called
//!   from one, the OS process's otherwise.
//! - [`Registry`]: one per object kind; maps ids and keys to objects, under
//!   one lock; [`Registry::lookup_cached`] with a task's [`LookupCache`]
//!   serves repeated lookups of one id without it (what RCU does for the
//!   kernel's `ipc_obtain_object_check`).
//!
//! # Invariants
//!
//! - An id is `seq * SEQ_MULTIPLIER + index` (`ipc_buildid`); a removed
//!   object's id never finds a later object in the same slot, because the
//!   slot's sequence number moves on.
//! - Removing an object frees its key at once (a new `get` with the same key
//!   creates a new object) even while callers still hold the `Arc`.
//! - A cached lookup is used only while the registry's removal count is the
//!   one it was made under: after any removal, ids resolve through the
//!   table again (so a removed id is EINVAL, never a stale hit).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::errno::Errno;

/// A System V IPC key (`key_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key(pub i32);

impl Key {
    /// `IPC_PRIVATE`: always creates a new object that no key finds.
    pub const PRIVATE: Key = Key(0);
}

/// The flag word of the `*get` calls and of the operations: `IPC_CREAT`,
/// `IPC_EXCL`, `IPC_NOWAIT` and the nine low permission bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct IpcFlags(pub u32);

impl IpcFlags {
    /// No flags, mode 0.
    pub const NONE: IpcFlags = IpcFlags(0);
    /// `IPC_CREAT` (0o1000): create the object if the key has none.
    pub const CREAT: IpcFlags = IpcFlags(0o1000);
    /// `IPC_EXCL` (0o2000): with `CREAT`, fail with EEXIST if it exists.
    pub const EXCL: IpcFlags = IpcFlags(0o2000);
    /// `IPC_NOWAIT` (0o4000).
    pub const NOWAIT: IpcFlags = IpcFlags(0o4000);

    /// The permission bits `mode & 0o777`, as flags (`CREAT | IpcFlags::mode(0o600)`).
    pub const fn mode(bits: u32) -> IpcFlags {
        IpcFlags(bits & 0o777)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: IpcFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The nine permission bits.
    pub const fn mode_bits(self) -> u32 {
        self.0 & 0o777
    }
}

impl std::ops::BitOr for IpcFlags {
    type Output = IpcFlags;
    fn bitor(self, rhs: IpcFlags) -> IpcFlags {
        IpcFlags(self.0 | rhs.0)
    }
}

/// Read access (`S_IRUGO`, 0o444): msgrcv, semop reading, shmat.
pub const ACCESS_READ: u32 = 0o444;
/// Write access (`S_IWUGO`, 0o222): msgsnd, semop altering, shmat read-write.
pub const ACCESS_WRITE: u32 = 0o222;

/// The caller's identity as an IPC object sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cred {
    /// Process id (the green task's pid; 0 when not called from a task).
    pub pid: u64,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl Cred {
    /// The caller: the running green task, or the OS process outside one.
    /// Inside a migrating call (`greenos::task::with_identity`) it is the
    /// identity the call runs under, as every permission check must see.
    pub fn current() -> Cred {
        match greenos_runtime::task::with_cx(Cred::of) {
            Some(c) => c,
            // SAFETY: geteuid/getegid cannot fail and touch no memory.
            None => unsafe {
                Cred {
                    pid: 0,
                    uid: libc::geteuid(),
                    gid: libc::getegid(),
                }
            },
        }
    }

    /// The identity of the running task `cx` (see [`current`](Self::current)).
    #[inline]
    pub fn of(cx: greenos_runtime::task::TaskCx<'_>) -> Cred {
        let id = cx.identity();
        Cred {
            pid: id.pid.0,
            uid: id.uid,
            gid: id.gid,
        }
    }

    /// uid 0: bypasses permission checks (`CAP_IPC_OWNER`) and may change
    /// any object (`CAP_SYS_ADMIN`).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// `struct ipc_perm`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IpcPerm {
    /// The key the object was created with.
    pub key: Key,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Creator's user id.
    pub cuid: u32,
    /// Creator's group id.
    pub cgid: u32,
    /// Permission bits (low nine).
    pub mode: u32,
    /// Slot sequence number (part of the id).
    pub seq: u32,
}

impl IpcPerm {
    /// A new object's perm: owner and creator are `cred`, mode from `flags`.
    pub fn new(key: Key, flags: IpcFlags, cred: &Cred) -> IpcPerm {
        IpcPerm {
            key,
            uid: cred.uid,
            gid: cred.gid,
            cuid: cred.uid,
            cgid: cred.gid,
            mode: flags.mode_bits(),
            seq: 0,
        }
    }

    /// Linux `ipcperms()`: may `cred` have the access in `flag` (any of the
    /// rwx bits in any of the three triples, e.g. [`ACCESS_READ`])? The owner
    /// or creator uses the owner bits, a member of the owner's or creator's
    /// group the group bits, everyone else the other bits; uid 0 may always.
    pub fn permits(&self, cred: &Cred, flag: u32) -> bool {
        let requested = ((flag >> 6) | (flag >> 3) | flag) & 0o7;
        let mut granted = self.mode;
        if cred.uid == self.uid || cred.uid == self.cuid {
            granted >>= 6;
        } else if cred.gid == self.gid || cred.gid == self.cgid {
            granted >>= 3;
        }
        requested & !granted & 0o7 == 0 || cred.is_root()
    }

    /// [`permits`](Self::permits) as a result: EACCES when refused.
    pub fn check(&self, cred: &Cred, flag: u32) -> Result<(), Errno> {
        if self.permits(cred, flag) {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// May `cred` change or remove the object (`IPC_SET` / `IPC_RMID`)? The
    /// owner, the creator and root may (`ipcctl_obtain_check`); others get EPERM.
    pub fn check_owner(&self, cred: &Cred) -> Result<(), Errno> {
        if cred.is_root() || cred.uid == self.uid || cred.uid == self.cuid {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }
}

/// Linux `SEQ_MULTIPLIER` (= `IPCMNI`, 32768): id = seq * this + index.
pub const SEQ_MULTIPLIER: i32 = 32768;

/// An object kind the registry holds: it exposes its `ipc_perm`.
pub trait IpcObject: Send + Sync {
    /// The object's permissions now (they change with `IPC_SET`).
    fn perm(&self) -> IpcPerm;
}

struct Slot<T> {
    seq: u32,
    obj: Option<Arc<T>>,
}

struct RegistryInner<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    by_key: HashMap<i32, usize>,
}

/// The id → object table of one object kind (`struct ipc_ids`).
pub struct Registry<T> {
    inner: Mutex<RegistryInner<T>>,
    max_objects: usize,
    /// Bumped (under `inner`) by every [`remove`](Registry::remove): a
    /// task's cached lookup made before it is stale
    /// ([`lookup_cached`](Registry::lookup_cached)).
    removals: AtomicU64,
}

/// A task's one-entry cache of one registry's lookups: the id, the
/// registry's removal count when it was looked up, and the object. The
/// stand-in for the kernel's RCU lookup (`ipc_obtain_object_check`): a
/// task that uses one queue or semaphore set over and over takes no global
/// lock per operation. Declare one per registry with
/// `greenos_runtime::task_local!`.
pub type LookupCache<T> = RefCell<Option<(i32, u64, Arc<T>)>>;

impl<T> std::fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("Registry")
            .field("objects", &(g.slots.len() - g.free.len()))
            .field("max_objects", &self.max_objects)
            .finish()
    }
}

impl<T: IpcObject> Registry<T> {
    /// An empty registry that holds at most `max_objects` (MSGMNI, SEMMNI,
    /// SHMMNI; ENOSPC past it). Global registries live in a `LazyLock`.
    pub fn new(max_objects: usize) -> Registry<T> {
        Registry {
            inner: Mutex::new(RegistryInner {
                slots: Vec::new(),
                free: Vec::new(),
                by_key: HashMap::new(),
            }),
            max_objects: if max_objects > SEQ_MULTIPLIER as usize {
                SEQ_MULTIPLIER as usize
            } else {
                max_objects
            },
            removals: AtomicU64::new(0),
        }
    }

    /// Linux `ipcget()`. With [`Key::PRIVATE`], or a key that has no object
    /// and `CREAT`, calls `create(perm)` and registers the result. With a key
    /// that has one: EEXIST for `CREAT | EXCL`, else `more_checks` (e.g.
    /// EINVAL for a segment smaller than asked), then the access check
    /// against the mode bits of `flags` (EACCES), in Linux's order. A
    /// missing key without `CREAT` is ENOENT.
    pub fn get(
        &self,
        key: Key,
        flags: IpcFlags,
        cred: &Cred,
        create: impl FnOnce(IpcPerm) -> Result<T, Errno>,
        more_checks: impl FnOnce(&T) -> Result<(), Errno>,
    ) -> Result<(i32, Arc<T>), Errno> {
        let mut g = self.inner.lock();
        if key != Key::PRIVATE {
            if let Some(&idx) = g.by_key.get(&key.0) {
                let slot = &g.slots[idx];
                let obj = slot.obj.clone().expect("keyed slot holds an object");
                if flags.contains(IpcFlags::CREAT | IpcFlags::EXCL) {
                    return Err(Errno::EEXIST);
                }
                // Linux `ipcget_public`: `more_checks` before `ipcperms`.
                more_checks(&obj)?;
                obj.perm().check(cred, flags.mode_bits())?;
                return Ok((build_id(slot.seq, idx), obj));
            }
            if !flags.contains(IpcFlags::CREAT) {
                return Err(Errno::ENOENT);
            }
        }
        if g.slots.len() - g.free.len() >= self.max_objects {
            return Err(Errno::ENOSPC);
        }
        let idx = match g.free.pop() {
            Some(i) => i,
            None => {
                g.slots.push(Slot { seq: 0, obj: None });
                g.slots.len() - 1
            }
        };
        let seq = g.slots[idx].seq;
        let mut perm = IpcPerm::new(key, flags, cred);
        perm.seq = seq;
        let obj = match create(perm) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                g.free.push(idx);
                return Err(e);
            }
        };
        g.slots[idx].obj = Some(obj.clone());
        if key != Key::PRIVATE {
            g.by_key.insert(key.0, idx);
        }
        Ok((build_id(seq, idx), obj))
    }

    /// [`lookup`](Self::lookup) through the calling task's one-entry
    /// `cache` (a plain lookup off a task): no registry lock when the task
    /// looks up the same id again and nothing was removed from the registry
    /// since. The removal count is read before the locked lookup it
    /// guards, so a removal that races with it leaves the entry stale. An
    /// object removed after a cache hit is seen as removed under its own
    /// lock (EIDRM), as an operation that found it just before an
    /// `IPC_RMID` does in Linux. A cached object stays allocated until the
    /// entry is replaced or the task ends: not for objects that own
    /// resources past their removal (shared memory segments).
    pub fn lookup_cached(
        &self,
        id: i32,
        cache: &'static greenos_runtime::task::LocalKey<LookupCache<T>>,
    ) -> Result<Arc<T>, Errno> {
        self.with_cached(id, cache, Arc::clone)
    }

    /// Runs `f` on the object with this id, found as by
    /// [`lookup_cached`](Self::lookup_cached) but, on a cache hit, borrowed
    /// from the cache rather than counted: no reference count is taken and
    /// dropped per operation. The cache stays borrowed while `f` runs (it
    /// may block), so nothing can drop the object meanwhile; a nested
    /// lookup during `f` (a signal handler's) still works and only leaves
    /// the cache as it is.
    #[inline]
    pub fn with_cached<R>(
        &self,
        id: i32,
        cache: &'static greenos_runtime::task::LocalKey<LookupCache<T>>,
        f: impl FnOnce(&Arc<T>) -> R,
    ) -> Result<R, Errno> {
        self.with_cached_cred(id, cache, |o, _| f(o))
    }

    /// [`with_cached`](Self::with_cached) that also hands `f` the caller's
    /// [`Cred`], found in the same look-up of the running task (one
    /// task-local access per operation instead of three).
    #[inline]
    pub fn with_cached_cred<R>(
        &self,
        id: i32,
        cache: &'static greenos_runtime::task::LocalKey<LookupCache<T>>,
        f: impl FnOnce(&Arc<T>, Cred) -> R,
    ) -> Result<R, Errno> {
        let mut f = Some(f);
        let in_task = greenos_runtime::task::with_cx(|cx| {
            let f = f.take().expect("taken once");
            self.with_cached_cx(id, cache, cx, |o| f(o, Cred::of(cx)))
        });
        match in_task {
            Some(r) => r,
            // Outside a task: no cache, the OS process's credentials.
            None => Ok((f.take().expect("not taken"))(
                &self.lookup(id)?,
                Cred::current(),
            )),
        }
    }

    /// The cache look-up of [`with_cached`](Self::with_cached) for the
    /// running task `cx`.
    #[inline]
    fn with_cached_cx<R>(
        &self,
        id: i32,
        cache: &'static greenos_runtime::task::LocalKey<LookupCache<T>>,
        cx: greenos_runtime::task::TaskCx<'_>,
        f: impl FnOnce(&Arc<T>) -> R,
    ) -> Result<R, Errno> {
        let removals = self.removals.load(Ordering::Acquire);
        cache.with_cx(cx, |c| {
            if let Ok(b) = c.try_borrow() {
                if let Some((i, r, o)) = &*b {
                    if *i == id && *r == removals {
                        return Ok(f(o));
                    }
                }
            }
            let o = self.lookup(id)?;
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = Some((id, removals, o.clone()));
            }
            Ok(f(&o))
        })
    }

    /// The object with this id; EINVAL for an id that names none (never
    /// created, or removed).
    pub fn lookup(&self, id: i32) -> Result<Arc<T>, Errno> {
        let (seq, idx) = split_id(id)?;
        let g = self.inner.lock();
        match g.slots.get(idx) {
            Some(Slot {
                seq: s,
                obj: Some(o),
            }) if *s == seq => Ok(o.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Unregisters the object with this id (`ipc_rmid`): its key is free at
    /// once and its id never resolves again. Returns the object so the caller
    /// can wake its waiters with EIDRM.
    pub fn remove(&self, id: i32) -> Result<Arc<T>, Errno> {
        let (seq, idx) = split_id(id)?;
        let mut g = self.inner.lock();
        let obj = match g.slots.get_mut(idx) {
            Some(slot) if slot.seq == seq && slot.obj.is_some() => {
                slot.seq = slot.seq.wrapping_add(1) % (i32::MAX / SEQ_MULTIPLIER) as u32;
                slot.obj.take().expect("checked above")
            }
            _ => return Err(Errno::EINVAL),
        };
        let key = obj.perm().key;
        if key != Key::PRIVATE && g.by_key.get(&key.0) == Some(&idx) {
            g.by_key.remove(&key.0);
        }
        g.free.push(idx);
        self.removals.fetch_add(1, Ordering::Release);
        Ok(obj)
    }

    /// Frees the key of the object with this id but keeps the id resolving
    /// (`ipc_set_key_private`): what `IPC_RMID` does to a shared memory
    /// segment that is still attached (ipc.md §3.2). A later `get` with the
    /// key creates a new object; [`remove`](Self::remove) ends the id.
    pub fn unkey(&self, id: i32) -> Result<(), Errno> {
        let (seq, idx) = split_id(id)?;
        let mut g = self.inner.lock();
        match g.slots.get(idx) {
            Some(Slot {
                seq: s,
                obj: Some(o),
            }) if *s == seq => {
                let key = o.perm().key;
                if key != Key::PRIVATE && g.by_key.get(&key.0) == Some(&idx) {
                    g.by_key.remove(&key.0);
                }
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// Ids of every live object, in slot order.
    pub fn ids(&self) -> Vec<i32> {
        let g = self.inner.lock();
        g.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.obj.is_some())
            .map(|(i, s)| build_id(s.seq, i))
            .collect()
    }
}

fn build_id(seq: u32, idx: usize) -> i32 {
    seq as i32 * SEQ_MULTIPLIER + idx as i32
}

fn split_id(id: i32) -> Result<(u32, usize), Errno> {
    if id < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(((id / SEQ_MULTIPLIER) as u32, (id % SEQ_MULTIPLIER) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Obj(IpcPerm);
    impl IpcObject for Obj {
        fn perm(&self) -> IpcPerm {
            self.0
        }
    }

    const ALICE: Cred = Cred {
        pid: 1,
        uid: 1000,
        gid: 100,
    };
    const BOB_SAME_GROUP: Cred = Cred {
        pid: 2,
        uid: 1001,
        gid: 100,
    };
    const EVE: Cred = Cred {
        pid: 3,
        uid: 1002,
        gid: 200,
    };
    const ROOT: Cred = Cred {
        pid: 4,
        uid: 0,
        gid: 0,
    };

    #[test]
    fn ipcperms_uses_owner_then_group_then_other_bits() {
        let p = IpcPerm::new(Key(1), IpcFlags::mode(0o640), &ALICE);
        assert!(p.permits(&ALICE, ACCESS_READ | ACCESS_WRITE));
        assert!(p.permits(&BOB_SAME_GROUP, ACCESS_READ));
        assert!(!p.permits(&BOB_SAME_GROUP, ACCESS_WRITE));
        assert!(!p.permits(&EVE, ACCESS_READ));
        assert!(p.permits(&ROOT, ACCESS_WRITE));
        // Mode 0 refuses even the creator; root bypasses.
        let z = IpcPerm::new(Key(1), IpcFlags::mode(0), &ALICE);
        assert_eq!(z.check(&ALICE, ACCESS_READ), Err(Errno::EACCES));
        assert!(z.permits(&ROOT, ACCESS_READ));
        assert!(z.permits(&ALICE, 0));
        assert_eq!(z.check_owner(&EVE), Err(Errno::EPERM));
        assert_eq!(z.check_owner(&ALICE), Ok(()));
    }

    #[test]
    fn ipcget_rules_and_ids() {
        let r: Registry<Obj> = Registry::new(2);
        let mk = |p| Ok(Obj(p));
        let c = IpcFlags::CREAT | IpcFlags::mode(0o600);
        assert_eq!(
            r.get(Key(7), IpcFlags::NONE, &ALICE, mk, |_| Ok(())).err(),
            Some(Errno::ENOENT)
        );
        let (id, _) = r.get(Key(7), c, &ALICE, mk, |_| Ok(())).unwrap();
        let (again, _) = r.get(Key(7), c, &ALICE, mk, |_| Ok(())).unwrap();
        assert_eq!(id, again);
        let excl = c | IpcFlags::EXCL;
        assert_eq!(
            r.get(Key(7), excl, &ALICE, mk, |_| Ok(())).err(),
            Some(Errno::EEXIST)
        );
        assert_eq!(
            r.get(Key(7), IpcFlags::mode(0o400), &EVE, mk, |_| Ok(()))
                .err(),
            Some(Errno::EACCES)
        );
        let (p, _) = r.get(Key::PRIVATE, c, &ALICE, mk, |_| Ok(())).unwrap();
        assert_ne!(p, id);
        assert_eq!(
            r.get(Key(8), c, &ALICE, mk, |_| Ok(())).err(),
            Some(Errno::ENOSPC)
        );
        r.remove(id).unwrap();
        assert_eq!(r.lookup(id).err(), Some(Errno::EINVAL));
        assert_eq!(r.remove(id).err(), Some(Errno::EINVAL));
        let (id2, _) = r.get(Key(7), c, &ALICE, mk, |_| Ok(())).unwrap();
        assert_ne!(id2, id, "a reused slot gets a new sequence number");
        assert!(r.lookup(id2).is_ok());
        assert_eq!(r.lookup(-1).err(), Some(Errno::EINVAL));
    }
}
