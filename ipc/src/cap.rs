//! Capabilities: per-process tables of unforgeable, rights-carrying
//! references to IPC objects, with seL4-style derivation and revocation.
//!
//! # What this module owns
//!
//! - [`Cap`]: an index into *one* process's table. It carries the table's
//!   serial number and the slot's generation, and its fields are private:
//!   it cannot be forged, a stale index (slot deleted and reused) fails, and
//!   an index from another process's table fails (`EBADF`).
//! - [`Rights`]: send, receive, call, grant, read, write.
//! - [`Object`]: what a capability names (endpoint, RPC server, connection,
//!   shared buffer, System V shm segment / semaphore set / message queue by
//!   id, or any other shared object). `#[non_exhaustive]`: new kinds of
//!   objects are added as IPC grows.
//! - The derivation tree (seL4's CDT): every [`copy`] / [`mint`] / transfer
//!   by copy makes a *child* node of its source. [`revoke`] invalidates every
//!   descendant (not the capability itself), [`delete`] frees one slot.
//! - The per-process table and which table is "current".
//!
//! # Which table is current
//!
//! Each green process (task) has its own table, created empty on first use
//! (or pre-filled by [`spawn_with_caps`]), and freed when the task ends:
//! every capability it held is dropped, as a process's descriptors are
//! closed at exit, and RPC servers it registered stop accepting calls.
//! Inside a migrating RPC call (`crate::rpc`) the dispatcher runs on the
//! client's task but under the *server's* identity, and the current table is
//! the server's: the linkage record on the top of the task's call stack says
//! so. Nested calls (A → B → C) push one record each, and unwinding pops it.
//!
//! # Errors (errno choices)
//!
//! | mistake | errno |
//! |---|---|
//! | index of another table, out of range, deleted, or reused slot | `EBADF` (a bad descriptor) |
//! | capability revoked (an ancestor was revoked) | `EIDRM` (identifier removed) |
//! | capability lacks the right the operation needs; more rights asked than held; re-badging a badged cap; transferring without `GRANT` | `EPERM` |
//! | capability names the wrong kind of object | `EINVAL` |
//! | table full ([`MAX_CAPS`]) | `EMFILE` |
//! | not called from a green task | `ESRCH` (no calling process) |
//!
//! # Invariants
//!
//! - A node's `revoked` flag only goes from false to true, and is set under
//!   the node's `children` lock *before* its children are read: a [`mint`]
//!   racing with a [`revoke`] of an ancestor either sees the flag (and fails
//!   with `EIDRM`) or has already linked its child, which the revoke then
//!   reaches.
//! - A child holds a strong reference to its parent, and a parent a weak one
//!   to each child: deleting a capability does not cut its descendants off
//!   from an ancestor's revoke.
//! - A task's lookup cache (`CapCache`, one entry) answers only for the
//!   same index in the same current table at the same removal count, and
//!   the node's `revoked` flag and rights are checked on every use, hit or
//!   not: a hit means what a fresh lookup would. The entry is replaced only
//!   while no lookup still uses it (its pin count is 0).
//! - The per-task state (`ProcState`: own table, linkage records, cache,
//!   endpoint port) is the runtime's fast task-local
//!   (`LocalKey::with_cx_fast`): an endpoint operation reaches it, its
//!   capability and its port in a few loads.

use std::any::Any;
use std::cell::{Cell, OnceCell, UnsafeCell};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use greenos_runtime::task::{self, Builder, JoinHandle};
use greenos_runtime::wait;
use parking_lot::Mutex;

use crate::errno::Errno;

/// Most capabilities one table holds (as `RLIMIT_NOFILE`'s usual soft limit
/// bounds a descriptor table; a full table gives `EMFILE`).
pub const MAX_CAPS: usize = 4096;

// ---------------------------------------------------------------------------
// Rights.

/// What a capability permits, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No right.
    pub const NONE: Rights = Rights(0);
    /// Send on an endpoint (seL4 "Write").
    pub const SEND: Rights = Rights(1);
    /// Receive on an endpoint (seL4 "Read").
    pub const RECV: Rights = Rights(2);
    /// Call an endpoint or an RPC server.
    pub const CALL: Rights = Rights(4);
    /// Pass capabilities through the object (seL4 "Grant").
    pub const GRANT: Rights = Rights(8);
    /// Read a data object (buffer, shm segment, ...).
    pub const READ: Rights = Rights(16);
    /// Write a data object.
    pub const WRITE: Rights = Rights(32);
    /// Every right.
    pub const ALL: Rights = Rights(63);

    /// Whether every right in `other` is here.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in both.
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        Rights(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Rights {
    type Output = Rights;
    fn bitand(self, rhs: Rights) -> Rights {
        Rights(self.0 & rhs.0)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ["SEND", "RECV", "CALL", "GRANT", "READ", "WRITE"];
        let mut first = true;
        write!(f, "Rights(")?;
        for (i, n) in names.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    write!(f, "|")?;
                }
                write!(f, "{n}")?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

// ---------------------------------------------------------------------------
// Objects.

/// A byte buffer shared by capability: the bulk-data object of migrating
/// RPC until System V shm segments can travel as capabilities (a shm
/// segment's *id* already can, as [`Object::ShmSegment`]). Reads need
/// [`Rights::READ`], writes [`Rights::WRITE`], checked on every access
/// through [`buffer_read`] / [`buffer_write`], so revoking the capability
/// cuts access off at once.
pub struct SharedBuffer {
    data: Mutex<Box<[u8]>>,
}

impl SharedBuffer {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.data.lock().len()
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("len", &self.len())
            .finish()
    }
}

/// What a capability names.
#[derive(Clone)]
#[non_exhaustive]
pub enum Object {
    /// An L4-style endpoint (`crate::endpoint`).
    Endpoint(Arc<crate::endpoint::EndpointObj>),
    /// A migrating-RPC server (`crate::rpc`).
    Server(Arc<crate::rpc::ServerObj>),
    /// A migrating-RPC connection (`crate::rpc::Connection::to_cap`).
    Connection(Arc<crate::rpc::ConnShared>),
    /// A shared byte buffer ([`SharedBuffer`]).
    Buffer(Arc<SharedBuffer>),
    /// A System V shared memory segment, by `shmid`.
    ShmSegment(i32),
    /// A System V semaphore set, by `semid`.
    SemSet(i32),
    /// A System V message queue, by `msqid`.
    MsgQueue(i32),
    /// Any other shared object.
    Other(Arc<dyn Any + Send + Sync>),
}

impl Object {
    /// A short name of the kind of object.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Endpoint(_) => "endpoint",
            Object::Server(_) => "server",
            Object::Connection(_) => "connection",
            Object::Buffer(_) => "buffer",
            Object::ShmSegment(_) => "shm",
            Object::SemSet(_) => "sem",
            Object::MsgQueue(_) => "msg",
            Object::Other(_) => "other",
        }
    }

    /// Whether both name the same object.
    pub fn same(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Endpoint(a), Object::Endpoint(b)) => Arc::ptr_eq(a, b),
            (Object::Server(a), Object::Server(b)) => Arc::ptr_eq(a, b),
            (Object::Connection(a), Object::Connection(b)) => Arc::ptr_eq(a, b),
            (Object::Buffer(a), Object::Buffer(b)) => Arc::ptr_eq(a, b),
            (Object::ShmSegment(a), Object::ShmSegment(b)) => a == b,
            (Object::SemSet(a), Object::SemSet(b)) => a == b,
            (Object::MsgQueue(a), Object::MsgQueue(b)) => a == b,
            (Object::Other(a), Object::Other(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::ShmSegment(id) | Object::SemSet(id) | Object::MsgQueue(id) => {
                write!(f, "{}({id})", self.kind())
            }
            _ => write!(f, "{}", self.kind()),
        }
    }
}

// ---------------------------------------------------------------------------
// The derivation tree.

/// One capability in the derivation tree (what a table slot holds).
pub(crate) struct CapNode {
    pub(crate) object: Object,
    pub(crate) rights: Rights,
    pub(crate) badge: u64,
    revoked: AtomicBool,
    /// Keeps ancestors reachable for a revoke (see the module invariants).
    _parent: Option<Arc<CapNode>>,
    children: Mutex<Vec<Weak<CapNode>>>,
}

impl CapNode {
    /// A root node (a freshly created object).
    pub(crate) fn root(object: Object, rights: Rights) -> Arc<CapNode> {
        Arc::new(CapNode {
            object,
            rights,
            badge: 0,
            revoked: AtomicBool::new(false),
            _parent: None,
            children: Mutex::new(Vec::new()),
        })
    }

    /// Whether this capability was revoked.
    #[inline]
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// A child with `rights` (must be a subset) and `badge` (0 keeps the
    /// parent's; a badged parent cannot be re-badged).
    pub(crate) fn derive(
        self: &Arc<CapNode>,
        rights: Rights,
        badge: u64,
    ) -> Result<Arc<CapNode>, Errno> {
        if !self.rights.contains(rights) {
            return Err(Errno::EPERM);
        }
        let badge = match (self.badge, badge) {
            (b, 0) => b,
            (0, b) => b,
            (a, b) if a == b => a,
            _ => return Err(Errno::EPERM),
        };
        let mut children = self.children.lock();
        if self.is_revoked() {
            return Err(Errno::EIDRM);
        }
        let child = Arc::new(CapNode {
            object: self.object.clone(),
            rights,
            badge,
            revoked: AtomicBool::new(false),
            _parent: Some(self.clone()),
            children: Mutex::new(Vec::new()),
        });
        if children.len() >= 16 && children.len().is_power_of_two() {
            children.retain(|w| w.strong_count() > 0);
        }
        children.push(Arc::downgrade(&child));
        Ok(child)
    }

    /// Marks every descendant revoked (iteratively: trees may be deep).
    /// Returns how many nodes it marked.
    fn revoke_descendants(&self) -> usize {
        let mut stack: Vec<Arc<CapNode>> = self
            .children
            .lock()
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        let mut n = 0;
        while let Some(node) = stack.pop() {
            let kids = {
                let mut c = node.children.lock();
                if !node.revoked.swap(true, Ordering::AcqRel) {
                    n += 1;
                }
                std::mem::take(&mut *c)
            };
            stack.extend(kids.into_iter().filter_map(|w| w.upgrade()));
        }
        n
    }
}

// ---------------------------------------------------------------------------
// Tables.

/// An index into one process's capability table (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cap {
    table: u32,
    index: u32,
    gen: u32,
}

impl Cap {
    /// The slot number (for display; not usable to build a `Cap`).
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl fmt::Debug for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap({}:{}#{})", self.table, self.index, self.gen)
    }
}

struct Slot {
    gen: u32,
    node: Option<Arc<CapNode>>,
}

struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

/// One process's capability table.
pub(crate) struct CapTable {
    serial: u32,
    /// Bumped (under the slots lock) whenever a slot is emptied: a cached
    /// index → node lookup made at an unchanged count is still right.
    removals: std::sync::atomic::AtomicU64,
    /// Set when the owning process exits: its servers refuse calls.
    dead: AtomicBool,
    slots: Mutex<Slots>,
    /// RPC servers registered by this process (unregistered at exit).
    servers: Mutex<Vec<Weak<crate::rpc::ServerObj>>>,
}

static NEXT_TABLE: AtomicU32 = AtomicU32::new(1);

impl CapTable {
    fn new() -> Arc<CapTable> {
        Arc::new(CapTable {
            serial: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            removals: std::sync::atomic::AtomicU64::new(0),
            dead: AtomicBool::new(false),
            slots: Mutex::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
            }),
            servers: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub(crate) fn add_server(&self, s: &Arc<crate::rpc::ServerObj>) {
        self.servers.lock().push(Arc::downgrade(s));
    }

    /// Puts `node` in a free slot.
    pub(crate) fn insert(&self, node: Arc<CapNode>) -> Result<Cap, Errno> {
        let mut s = self.slots.lock();
        if s.live >= MAX_CAPS {
            return Err(Errno::EMFILE);
        }
        let index = match s.free.pop() {
            Some(i) => i,
            None => {
                s.slots.push(Slot { gen: 0, node: None });
                (s.slots.len() - 1) as u32
            }
        };
        let slot = &mut s.slots[index as usize];
        slot.node = Some(node);
        let gen = slot.gen;
        s.live += 1;
        Ok(Cap {
            table: self.serial,
            index,
            gen,
        })
    }

    /// The node `cap` names (not checked for revocation).
    fn get(&self, cap: Cap) -> Result<Arc<CapNode>, Errno> {
        if cap.table != self.serial {
            return Err(Errno::EBADF);
        }
        let s = self.slots.lock();
        match s.slots.get(cap.index as usize) {
            Some(Slot { gen, node: Some(n) }) if *gen == cap.gen => Ok(n.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// Empties the slot `cap` names; returns its node.
    pub(crate) fn remove(&self, cap: Cap) -> Result<Arc<CapNode>, Errno> {
        if cap.table != self.serial {
            return Err(Errno::EBADF);
        }
        let mut s = self.slots.lock();
        let slot = match s.slots.get_mut(cap.index as usize) {
            Some(slot) if slot.gen == cap.gen && slot.node.is_some() => slot,
            _ => return Err(Errno::EBADF),
        };
        let node = slot.node.take().expect("checked");
        self.removals.fetch_add(1, Ordering::Release);
        // A new generation: the old index never names the slot again.
        slot.gen = slot.gen.wrapping_add(1);
        s.free.push(cap.index);
        s.live -= 1;
        Ok(node)
    }

    /// Every index in use, in slot order.
    fn list(&self) -> Vec<Cap> {
        let s = self.slots.lock();
        s.slots
            .iter()
            .enumerate()
            .filter(|(_, sl)| sl.node.is_some())
            .map(|(i, sl)| Cap {
                table: self.serial,
                index: i as u32,
                gen: sl.gen,
            })
            .collect()
    }

    /// The process exits: drop every capability, stop its servers.
    fn exit(&self) {
        self.dead.store(true, Ordering::Release);
        self.removals.fetch_add(1, Ordering::Release);
        let servers = std::mem::take(&mut *self.servers.lock());
        for s in servers.into_iter().filter_map(|w| w.upgrade()) {
            s.unregister();
        }
        let nodes: Vec<_> = {
            let mut s = self.slots.lock();
            s.live = 0;
            s.free.clear();
            s.slots.drain(..).filter_map(|sl| sl.node).collect()
        };
        drop(nodes);
    }
}

// ---------------------------------------------------------------------------
// Per-task state: own table and the linkage-record stack.

/// A migrating call's linkage record (`crate::rpc` pushes one per level; it
/// lives in the caller's stack frame for the duration of the call).
pub(crate) struct Linkage {
    /// The record below (the enclosing call), or null.
    pub(crate) prev: *const Linkage,
    /// The table current during the call (the server's).
    pub(crate) table: *const CapTable,
    /// The caller's identity (what `ipc_client_pid` reports).
    pub(crate) client: task::Identity,
    /// The connection's badge.
    pub(crate) badge: u64,
}

/// The task-local part: the task's own table and the top linkage record.
pub(crate) struct ProcState {
    /// The task's own table, made on first use (or at spawn, by
    /// `spawn_with_caps`); set once.
    own: OnceCell<Arc<CapTable>>,
    pub(crate) link: Cell<*const Linkage>,
    /// The last lookup. Saves the table lock on repeated use of one
    /// capability (an endpoint in a server loop).
    cache: CapCache,
    /// The task's endpoint port (`crate::endpoint`), made on first use.
    /// Kept here, not in a task-local of its own, so that an endpoint
    /// operation reaches both its capability and its port from one
    /// lookup (`with_resolved_on`).
    port: OnceCell<crate::endpoint::PortSlot>,
}

impl Drop for ProcState {
    fn drop(&mut self) {
        if let Some(t) = self.own.take() {
            t.exit();
        }
    }
}

greenos_runtime::task_local! {
    static PROC: ProcState = ProcState {
        own: OnceCell::new(),
        link: Cell::new(std::ptr::null()),
        cache: CapCache {
            cap: Cell::new(Cap { table: 0, index: 0, gen: 0 }),
            table: Cell::new(std::ptr::null()),
            removals: Cell::new(0),
            node: UnsafeCell::new(None),
            endpoint: Cell::new(std::ptr::null()),
            pins: Cell::new(0),
        },
        port: OnceCell::new(),
    };
}

/// A task's last capability lookup: `cap` named `node` in `table` when
/// that table's removal count was `removals`, so it names it still while
/// the table and the count are unchanged. Plain cells, checked in a few
/// loads (an endpoint operation makes one lookup per call). The entry
/// keeps the node alive until replaced or the task ends, even if the
/// capability is deleted meanwhile.
pub(crate) struct CapCache {
    cap: Cell<Cap>,
    /// Null while empty.
    table: Cell<*const CapTable>,
    removals: Cell<u64>,
    /// Written only while `pins` is 0 (`fill`), and only by the task.
    node: UnsafeCell<Option<Arc<CapNode>>>,
    /// The endpoint `node` names (null: another kind of object), kept by
    /// `node`: an endpoint operation reaches its endpoint one dependent
    /// load sooner than through the node.
    endpoint: Cell<*const crate::endpoint::EndpointObj>,
    /// Lookups still using the node (`CacheHit`s alive): while there are
    /// any, the entry is not replaced (a nested lookup, by a signal
    /// handler or a dispatcher, leaves it as it is).
    pins: Cell<u32>,
}

impl CapCache {
    /// The entry, pinned, if it answers for `cap` in the current table
    /// `current` (null: the task has none yet).
    #[inline(always)]
    fn hit(&self, current: *const CapTable, cap: Cap) -> Option<CacheHit<'_>> {
        if current.is_null() || self.table.get() != current || self.cap.get() != cap {
            return None;
        }
        // SAFETY: the current table is alive: the task's own (held by its
        // `ProcState`) or the top linkage record's (held by the live frame
        // of the call that pushed it).
        let t = unsafe { &*current };
        if t.serial != cap.table || t.removals.load(Ordering::Acquire) != self.removals.get() {
            return None;
        }
        // SAFETY: only this task touches its cache, and `node` is written
        // only by `fill` while nothing is pinned; the pin taken here keeps
        // it in place for as long as the hit lives.
        let node = unsafe { (*self.node.get()).as_ref()? };
        self.pins.set(self.pins.get() + 1);
        Some(CacheHit {
            cache: self,
            node,
            endpoint: self.endpoint.get(),
        })
    }

    /// Records a lookup made at removal count `removals` of `table`,
    /// unless a hit is still in use.
    fn fill(&self, table: *const CapTable, removals: u64, cap: Cap, node: &Arc<CapNode>) {
        if self.pins.get() != 0 {
            return;
        }
        // SAFETY: as in `hit`: no hit is alive, so no borrow of `node`.
        let old = unsafe { (*self.node.get()).replace(node.clone()) };
        self.endpoint.set(endpoint_ptr(node));
        self.cap.set(cap);
        self.table.set(table);
        self.removals.set(removals);
        // Dropped last: a node's drop cannot reach this cache half-written.
        drop(old);
    }
}

/// A cache entry in use: pinned until dropped (also on unwind).
struct CacheHit<'a> {
    cache: &'a CapCache,
    node: &'a Arc<CapNode>,
    /// The cache's `endpoint` (kept alive by `node`).
    endpoint: *const crate::endpoint::EndpointObj,
}

impl CacheHit<'_> {
    fn node(&self) -> &Arc<CapNode> {
        self.node
    }
}

impl Drop for CacheHit<'_> {
    fn drop(&mut self) {
        self.cache.pins.set(self.cache.pins.get() - 1);
    }
}

/// Runs `f` with the calling task's state; `ESRCH` outside a task.
pub(crate) fn with_proc<R>(f: impl FnOnce(&ProcState) -> R) -> Result<R, Errno> {
    if !task::in_task() {
        return Err(Errno::ESRCH);
    }
    Ok(PROC.with(f))
}

/// [`with_proc`] for the task `cx` names (the caller).
#[inline(always)]
pub(crate) fn with_proc_cx<R>(cx: task::TaskCx<'_>, f: impl FnOnce(&ProcState) -> R) -> R {
    // The runtime's fast key: one load from the task (every capability
    // use and endpoint operation starts here).
    PROC.with_cx_fast(cx, f)
}

/// [`with_proc_cx`] without a task handle (the runtime's fast key read
/// through the worker, `LocalKey::with_fast_here_or`), also handing `f`
/// where the task runs ([`wait::Here`], from the same thread-local read:
/// an endpoint operation then locks the endpoint and parks), or
/// `outside()` outside a task.
#[inline(always)]
pub(crate) fn with_proc_here_or<R>(
    f: impl FnOnce(&ProcState, wait::Here) -> R,
    outside: impl FnOnce() -> R,
) -> R {
    PROC.with_fast_here_or(f, outside)
}

impl ProcState {
    /// The task's endpoint port.
    #[inline]
    pub(crate) fn port(&self) -> &Arc<crate::endpoint::Port> {
        &self.port.get_or_init(crate::endpoint::PortSlot::new).0
    }

    /// The task's own table, created on first use.
    pub(crate) fn own_table(&self) -> Arc<CapTable> {
        self.own.get_or_init(CapTable::new).clone()
    }

    /// The current table (see [`with_current`](Self::with_current)), or
    /// null if that is the task's own and it has none yet.
    #[inline(always)]
    fn current_table_ptr(&self) -> *const CapTable {
        let l = self.link.get();
        if l.is_null() {
            self.own.get().map_or(std::ptr::null(), Arc::as_ptr)
        } else {
            // SAFETY: as in `with_current`.
            unsafe { (*l).table }
        }
    }

    /// The current table: the top linkage record's, or the task's own.
    #[inline]
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&CapTable) -> R) -> R {
        let l = self.link.get();
        if l.is_null() {
            f(self.own.get_or_init(CapTable::new))
        } else {
            // SAFETY: a non-null `link` is the top record, in a live frame
            // of this task's `rpc` call, which resets `link` before that
            // frame ends (also on unwind); the record borrows its table from
            // the server object that the frame keeps alive.
            f(unsafe { &*(*l).table })
        }
    }
}

/// Runs `f` on the calling process's current table.
pub(crate) fn with_table<R>(f: impl FnOnce(&CapTable) -> R) -> Result<R, Errno> {
    with_proc(|p| p.with_current(f))
}

/// The node `cap` names in the current table, checked: not revoked, and
/// holding `need`.
pub(crate) fn resolve(cap: Cap, need: Rights) -> Result<Arc<CapNode>, Errno> {
    task::with_cx(|cx| with_resolved(cx, cap, need, |n| Ok(n.clone()))).unwrap_or(Err(Errno::ESRCH))
}

/// Runs `f` on the node `cap` names in the current table of the task `cx`
/// names, checked (not revoked, holding `need`), without taking a reference count
/// when the lookup cache hits (the common case: one endpoint used over and
/// over). The cache stays borrowed while `f` runs, so it cannot drop the
/// node `f` holds; a nested lookup meanwhile (a signal handler's, a
/// dispatcher's) still works, it only leaves the cache as it is. `f` may
/// block.
#[inline(always)]
pub(crate) fn with_resolved<R, E: From<Errno>>(
    cx: task::TaskCx<'_>,
    cap: Cap,
    need: Rights,
    f: impl FnOnce(&Arc<CapNode>) -> Result<R, E>,
) -> Result<R, E> {
    with_proc_cx(
        cx,
        #[inline(always)]
        |p| with_resolved_on(p, cap, need, |_, n| f(n)),
    )
}

/// [`with_resolved`] with the calling task's state in hand, also handed
/// to `f`.
#[inline(always)]
pub(crate) fn with_resolved_on<R, E: From<Errno>>(
    p: &ProcState,
    cap: Cap,
    need: Rights,
    f: impl FnOnce(&ProcState, &Arc<CapNode>) -> Result<R, E>,
) -> Result<R, E> {
    // The cache entry, pinned while `f` runs, if it is a hit.
    let hit = p.cache.hit(p.current_table_ptr(), cap);
    let owned;
    let n = match &hit {
        Some(h) => h.node(),
        None => {
            wait::cold_path();
            owned = resolve_uncached(p, cap)?;
            &owned
        }
    };
    check_node(n, need)?;
    // `f` is inlined once, whichever way the node was found.
    f(p, n)
}

/// [`with_resolved_on`] for an endpoint capability: `f` gets the node and
/// its endpoint (`EINVAL` for another kind of object). On a cache hit the
/// endpoint comes from the cache, one dependent load sooner.
#[inline(always)]
pub(crate) fn with_resolved_endpoint_on<R, E: From<Errno>>(
    p: &ProcState,
    cap: Cap,
    need: Rights,
    f: impl FnOnce(&ProcState, &CapNode, &crate::endpoint::EndpointObj) -> Result<R, E>,
) -> Result<R, E> {
    let hit = p.cache.hit(p.current_table_ptr(), cap);
    let owned;
    let (n, ep): (&CapNode, *const crate::endpoint::EndpointObj) = match &hit {
        Some(h) => (h.node(), h.endpoint),
        None => {
            wait::cold_path();
            owned = resolve_uncached(p, cap)?;
            let ep = endpoint_ptr(&owned);
            (&owned, ep)
        }
    };
    check_node(n, need)?;
    if ep.is_null() {
        wait::cold_path();
        return Err(Errno::EINVAL.into());
    }
    // SAFETY: `ep` is the endpoint `n` names (`endpoint_ptr`, above or
    // in the cache's `fill`), which `n` keeps alive: `n` is held by the
    // pinned cache entry or by `owned` until `f` returns.
    f(p, n, unsafe { &*ep })
}

/// The endpoint `node` names, or null for another kind of object.
#[inline]
fn endpoint_ptr(node: &CapNode) -> *const crate::endpoint::EndpointObj {
    match &node.object {
        Object::Endpoint(e) => Arc::as_ptr(e),
        _ => std::ptr::null(),
    }
}

/// The checks every use of a looked-up node makes: not revoked, and
/// holding `need`.
#[inline]
fn check_node(node: &CapNode, need: Rights) -> Result<(), Errno> {
    if node.is_revoked() {
        wait::cold_path();
        return Err(Errno::EIDRM);
    }
    if !node.rights.contains(need) {
        wait::cold_path();
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// Looks `cap` up in `p`'s current table and caches the result (the miss
/// path of [`with_resolved`]).
fn resolve_uncached(p: &ProcState, cap: Cap) -> Result<Arc<CapNode>, Errno> {
    p.with_current(|t| {
        if cap.table != t.serial {
            return Err(Errno::EBADF);
        }
        let removals = t.removals.load(Ordering::Acquire);
        let n = t.get(cap)?;
        p.cache.fill(t, removals, cap, &n);
        Ok(n)
    })
}

/// Puts a node into the current table.
pub(crate) fn install(node: Arc<CapNode>) -> Result<Cap, Errno> {
    with_table(|t| t.insert(node))?
}

// ---------------------------------------------------------------------------
// The public operations.

/// What [`lookup`] tells about a capability.
#[derive(Clone, Debug)]
pub struct CapInfo {
    /// The object.
    pub object: Object,
    /// The rights it carries.
    pub rights: Rights,
    /// Its badge (0: unbadged).
    pub badge: u64,
}

/// Creates a capability with every right to a new object, in the caller's
/// current table.
pub fn create(object: Object) -> io::Result<Cap> {
    Ok(install(CapNode::root(object, Rights::ALL))?)
}

/// Creates a capability to a new [`SharedBuffer`] of `len` zero bytes.
pub fn create_buffer(len: usize) -> io::Result<Cap> {
    let buf = Arc::new(SharedBuffer {
        data: Mutex::new(vec![0u8; len].into_boxed_slice()),
    });
    create(Object::Buffer(buf))
}

/// Looks a capability up: its object, rights and badge. `EBADF` for a bad
/// index, `EIDRM` if revoked.
pub fn lookup(cap: Cap) -> io::Result<CapInfo> {
    let n = resolve(cap, Rights::NONE)?;
    Ok(CapInfo {
        object: n.object.clone(),
        rights: n.rights,
        badge: n.badge,
    })
}

/// Copies `cap` into a new slot with `rights` (a subset of its own; more
/// gives `EPERM`) and `badge` (0 keeps the source's badge; a badged source
/// cannot be given another badge: `EPERM`). The copy is derived from `cap`:
/// revoking `cap` invalidates it.
pub fn mint(cap: Cap, rights: Rights, badge: u64) -> io::Result<Cap> {
    let n = resolve(cap, Rights::NONE)?;
    let child = n.derive(rights, badge)?;
    Ok(install(child)?)
}

/// [`mint`] without a badge: a derived copy with fewer (or the same) rights.
pub fn copy(cap: Cap, rights: Rights) -> io::Result<Cap> {
    mint(cap, rights, 0)
}

/// Frees the slot `cap` names. Capabilities derived from it stay valid
/// (and are still revoked by a revoke of its ancestors).
pub fn delete(cap: Cap) -> io::Result<()> {
    with_table(|t| t.remove(cap))??;
    Ok(())
}

/// Revokes everything derived from `cap` (copies, mints, and the copies
/// transferred to other processes, to any depth); `cap` itself stays
/// valid. Returns how many capabilities were invalidated.
pub fn revoke(cap: Cap) -> io::Result<usize> {
    let n = resolve(cap, Rights::NONE)?;
    Ok(n.revoke_descendants())
}

/// Every capability in the caller's current table, in slot order.
pub fn list() -> io::Result<Vec<Cap>> {
    Ok(with_table(|t| t.list())?)
}

/// Reads `out.len()` bytes at `offset` of the buffer `cap` names (needs
/// [`Rights::READ`]; `EINVAL` past the end or for another kind of object).
pub fn buffer_read(cap: Cap, offset: usize, out: &mut [u8]) -> io::Result<()> {
    let n = resolve(cap, Rights::READ)?;
    let Object::Buffer(b) = &n.object else {
        return Err(Errno::EINVAL.into());
    };
    let d = b.data.lock();
    let end = offset.checked_add(out.len()).ok_or(Errno::EINVAL)?;
    let src = d.get(offset..end).ok_or(Errno::EINVAL)?;
    out.copy_from_slice(src);
    Ok(())
}

/// Writes `data` at `offset` of the buffer `cap` names (needs
/// [`Rights::WRITE`]; `EINVAL` past the end or for another kind of object).
pub fn buffer_write(cap: Cap, offset: usize, data: &[u8]) -> io::Result<()> {
    let n = resolve(cap, Rights::WRITE)?;
    let Object::Buffer(b) = &n.object else {
        return Err(Errno::EINVAL.into());
    };
    let mut d = b.data.lock();
    let end = offset.checked_add(data.len()).ok_or(Errno::EINVAL)?;
    let dst = d.get_mut(offset..end).ok_or(Errno::EINVAL)?;
    dst.copy_from_slice(data);
    Ok(())
}

// ---------------------------------------------------------------------------
// Transfer.

/// How a capability travels in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// The receiver gets a copy derived from the sender's, with the sender's
    /// rights masked by the given ones; the sender keeps its own.
    Copy(Rights),
    /// The capability leaves the sender's table for the receiver's (same
    /// node: same rights, same badge, same place in the derivation tree).
    Move,
}

/// One capability slot of a message (an endpoint's `Msg`, a connection's
/// `IpcMsg`): staged to send, or what arrived.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum CapSlot {
    #[default]
    Empty,
    /// Staged by the sender, to travel, and how.
    Out(Cap, Transfer),
    /// Arrived: an index in the receiver's current table.
    In(Cap),
    /// Arrived unwrapped, as its badge: an endpoint capability that named
    /// the endpoint it came through (endpoints only).
    Unwrapped(u64),
}

/// A capability staged for transfer: taken from the sender's table when
/// the message is built, installed in the receiver's when it arrives.
pub(crate) struct Staged {
    pub(crate) node: Arc<CapNode>,
    /// For a move, the sender's index to empty once delivered.
    pub(crate) moved_from: Option<Cap>,
}

/// Stages `cap` for transfer from the current table.
pub(crate) fn stage(cap: Cap, how: Transfer) -> Result<Staged, Errno> {
    let n = resolve(cap, Rights::NONE)?;
    match how {
        Transfer::Copy(mask) => Ok(Staged {
            node: n.derive(n.rights.intersection(mask), 0)?,
            moved_from: None,
        }),
        Transfer::Move => Ok(Staged {
            node: n,
            moved_from: Some(cap),
        }),
    }
}

/// The sender's side once a staged capability was delivered: a moved one
/// leaves its table (if the slot still holds it).
pub(crate) fn finish_stage(moved_from: Option<Cap>) {
    if let Some(c) = moved_from {
        let _ = with_table(|t| t.remove(c));
    }
}

// ---------------------------------------------------------------------------
// Children.

/// Spawns a child process whose capability table starts with copies of
/// `caps` (each masked by its rights; a child gets nothing else — spawned
/// tasks otherwise start with an empty table). `f` receives the child's
/// indices, in the order given. The parent's copies are derived from its
/// own: revoking the parent's capability reaches the child's.
pub fn spawn_with_caps<F, T>(
    builder: Builder,
    caps: &[(Cap, Rights)],
    f: F,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce(Vec<Cap>) -> T + Send + 'static,
    T: Send + 'static,
{
    let table = CapTable::new();
    let mut indices = Vec::with_capacity(caps.len());
    for &(cap, rights) in caps {
        let n = resolve(cap, Rights::NONE)?;
        let child = n.derive(n.rights.intersection(rights), 0)?;
        indices.push(table.insert(child)?);
    }
    builder.spawn(move || {
        PROC.with(|p| {
            // The task's first code: nothing made its table yet.
            assert!(p.own.set(table).is_ok(), "a fresh task has no table");
        });
        f(indices)
    })
}

/// For `crate::rpc`: the raw pointer a linkage record holds.
pub(crate) fn table_ptr(t: &Arc<CapTable>) -> *const CapTable {
    Arc::as_ptr(t)
}
