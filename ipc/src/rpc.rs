//! Migrating-thread RPC (LRPC, ChCore): the server's dispatcher runs on the
//! *caller's* task and stack, under the server's identity and capability
//! table.
//!
//! # What this module owns
//!
//! - [`ipc_register_server`] / [`ServerBuilder`]: a server process registers
//!   a dispatcher (`Fn(&mut IpcMsg) -> u64 + Send + Sync`) and gets a
//!   capability ([`ServerCap`]) with every right; it hands out copies (by
//!   name service, transfer or [`crate::cap::spawn_with_caps`]).
//! - [`ipc_register_client`]: a client with a capability holding
//!   [`Rights::CALL`] binds a [`Connection`], which owns its argument buffer
//!   ([`IPC_PER_SHM_SIZE`] bytes, ChCore's per-connection page) and the
//!   client's badge.
//! - [`Connection::ipc_call`]: the call itself, and [`ipc_client_pid`] /
//!   [`ipc_client_badge`] for the dispatcher.
//!
//! # A call, step by step (reference/ipc.md §5.3)
//!
//! 1. The message must be this connection's ([`Connection::msg`] locks the
//!    argument buffer: one call at a time per connection, as ChCore's
//!    connection lock; other tasks of the client wait, or get `EAGAIN` from
//!    [`Connection::try_msg`]).
//! 2. A server that was unregistered, or whose process exited, fails the
//!    call with `ESRCH` (ChCore's answer for a dead server). Calls already
//!    inside the dispatcher finish normally.
//! 3. **Stack budget.** The dispatcher uses the caller's remaining stack. The
//!    server declares what it needs ([`ServerBuilder::stack_need`], default
//!    [`DEFAULT_STACK_NEED`]); if the caller's task has less left
//!    ([`greenos_runtime::task::stack_remaining`]) the call fails with
//!    `ENOMEM` before anything runs, instead of overflowing into the guard
//!    page. A server built with [`ServerBuilder::own_stack`] runs its
//!    dispatcher on a server-owned execution stack instead (LRPC's E-stack,
//!    through `corosensei::on_stack`), so the caller needs only a few
//!    hundred bytes. (On such an E-stack the caller's own-stack check cannot
//!    be made: a call made *from* an E-stack relies on that stack's guard
//!    page.)
//! 4. Capabilities staged in the message ([`IpcMsg::set_cap`], at most
//!    [`MAX_CAP_TRANSFER`] = 16, ChCore's limit) are taken from the caller's
//!    table (needs [`Rights::GRANT`] on the server capability the connection
//!    was made from, else `EPERM`).
//! 5. **Linkage record** (in this frame): previous record, the server's
//!    table, the caller's identity and the badge. The identity switches to
//!    the server's (`task::with_identity`: `getpid`, `getuid`, `getgid` and
//!    permission checks), the current capability table to the server's; the
//!    staged capabilities are installed there.
//! 6. The dispatcher runs, under `catch_unwind`. A panic (a `panic!` payload:
//!    `&str` or `String`) fails the call with **`EFAULT`** ("the server
//!    faulted") and the caller goes on; any other unwind (the task is being
//!    killed or cancelled) goes on unwinding, through every level.
//! 7. Capabilities the dispatcher staged for the reply are taken from the
//!    server's table; the record is popped and the identity restored (also
//!    on unwind); they are installed in the caller's table.
//!
//! Scheduling: the call inherits the caller's priority and time slice (it is
//! the caller's task); a long dispatcher is preempted like the caller.
//! Calls from any number of CPUs at once are safe: a dispatcher is `Sync`
//! and the only shared state a call touches is the server's `alive` flag
//! (read-only) and its connection (its own).

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use greenos_runtime::sync::{Mutex as GMutex, MutexGuard as GMutexGuard};
use greenos_runtime::task::{self, Identity};
use greenos_runtime::Pid;
use parking_lot::Mutex;

use crate::cap::{self, Cap, CapSlot, CapTable, Linkage, Object, Rights, Transfer};
use crate::errno::Errno;

/// Bytes in a connection's argument buffer: ChCore's `IPC_PER_SHM_SIZE`
/// (0x1000, reference/ipc.md §5.2).
pub const IPC_PER_SHM_SIZE: usize = 0x1000;
/// Most capabilities per call in each direction: ChCore's
/// `MAX_CAP_TRANSFER` (16, reference/ipc.md §5.2).
pub const MAX_CAP_TRANSFER: usize = 16;
/// Stack a dispatcher is assumed to need when the server does not say
/// (bytes). A guess, documented as one: enough for a handler that formats
/// a message or walks a small map; declare more with
/// [`ServerBuilder::stack_need`].
pub const DEFAULT_STACK_NEED: usize = 8 << 10;
/// Stack the call path itself uses below the caller's frame (catch_unwind,
/// identity switch, capability install), added to the server's need.
const CALL_PATH_STACK: usize = 2 << 10;

/// A capability naming an RPC server (API.md's `ServerCap`).
pub type ServerCap = Cap;

/// The dispatcher: runs once per call, on the caller's stack, as the
/// server; its return value is ChCore's `ipc_return(ret)`.
pub type Dispatcher = dyn Fn(&mut IpcMsg<'_>) -> u64 + Send + Sync;

// ---------------------------------------------------------------------------
// Server.

/// A registered server (what a [`ServerCap`] names).
pub struct ServerObj {
    dispatcher: Box<Dispatcher>,
    identity: Identity,
    table: Arc<CapTable>,
    alive: AtomicBool,
    stack_need: usize,
    /// `Some(size)`: dispatch on server-owned execution stacks of `size`.
    own_stack: Option<usize>,
    /// Idle execution stacks (LRPC's E-stacks), reused across calls.
    estacks: Mutex<Vec<corosensei::stack::DefaultStack>>,
}

impl ServerObj {
    /// Stops accepting calls (calls in flight finish).
    pub(crate) fn unregister(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Whether calls are accepted. The owning process's exit unregisters
    /// its servers (`CapTable::exit`), and a registration that races with
    /// the exit re-checks after adding itself (see [`ServerBuilder::register`]),
    /// so the flag alone answers: one load on the call path.
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ServerObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerObj")
            .field("pid", &self.identity.pid)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// Options for registering a server.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    stack_need: usize,
    own_stack: Option<usize>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// Defaults: dispatch on the caller's stack, needing
    /// [`DEFAULT_STACK_NEED`] bytes of it.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            stack_need: DEFAULT_STACK_NEED,
            own_stack: None,
        }
    }

    /// Declares how much of the caller's stack the dispatcher needs (bytes);
    /// a caller with less left gets `ENOMEM`.
    pub fn stack_need(mut self, bytes: usize) -> ServerBuilder {
        self.stack_need = bytes;
        self
    }

    /// Runs the dispatcher on a server-owned execution stack of `bytes`
    /// (LRPC's E-stack) instead of the caller's, for dispatchers that need
    /// more stack than callers have. Stacks are pooled per server.
    pub fn own_stack(mut self, bytes: usize) -> ServerBuilder {
        self.own_stack = Some(bytes.max(16 << 10));
        self
    }

    /// Registers the calling process as a server with `dispatcher`.
    pub fn register<F>(self, dispatcher: F) -> io::Result<ServerCap>
    where
        F: Fn(&mut IpcMsg<'_>) -> u64 + Send + Sync + 'static,
    {
        // A server registers itself, not from inside a migrating call.
        let table = cap::with_proc(|p| p.link.get().is_null().then(|| p.own_table()))?
            .ok_or(Errno::EINVAL)?;
        if table.is_dead() {
            return Err(Errno::EINVAL.into());
        }
        let server = Arc::new(ServerObj {
            dispatcher: Box::new(dispatcher),
            identity: task::identity(),
            table: table.clone(),
            alive: AtomicBool::new(true),
            stack_need: self.stack_need,
            own_stack: self.own_stack,
            estacks: Mutex::new(Vec::new()),
        });
        table.add_server(&server);
        // The process may have exited meanwhile: `exit` marks the table dead
        // and then takes the server list under its lock, so either it saw
        // this server (and unregistered it) or this load sees `dead`.
        if table.is_dead() {
            server.unregister();
        }
        cap::create(Object::Server(server))
    }
}

/// Registers the calling process as an RPC server; the dispatcher runs on
/// each caller's stack (see the module doc). Returns a capability with every
/// right. Errors: `ESRCH` outside a green task, `EINVAL` from inside a
/// migrating call (a server registers itself).
pub fn ipc_register_server<F>(dispatcher: F) -> io::Result<ServerCap>
where
    F: Fn(&mut IpcMsg<'_>) -> u64 + Send + Sync + 'static,
{
    ServerBuilder::new().register(dispatcher)
}

/// Unregisters the server `cap` names (needs every right the server cap was
/// created with: [`Rights::ALL`]): later calls fail with `ESRCH`, calls in
/// flight finish.
pub fn ipc_unregister_server(cap: ServerCap) -> io::Result<()> {
    let n = cap::resolve(cap, Rights::ALL)?;
    let Object::Server(s) = &n.object else {
        return Err(Errno::EINVAL.into());
    };
    s.unregister();
    Ok(())
}

// ---------------------------------------------------------------------------
// Connections.

/// The argument buffer of a connection.
struct ArgBuf {
    data: Box<[u8; IPC_PER_SHM_SIZE]>,
}

/// A connection's shared part (what [`Object::Connection`] names).
pub struct ConnShared {
    server: Arc<ServerObj>,
    badge: u64,
    client_pid: Pid,
    grant: bool,
    buf: GMutex<ArgBuf>,
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnShared")
            .field("server", &self.server)
            .field("badge", &self.badge)
            .field("client_pid", &self.client_pid)
            .finish()
    }
}

/// A client's binding to a server: its argument buffer and badge. Any task
/// may use it; calls on one connection are serialized (one message at a
/// time).
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<ConnShared>,
}

/// Binds a connection to the server `server` names. Needs
/// [`Rights::CALL`] (`EPERM` otherwise; `EINVAL` if it names no server;
/// `ESRCH` if the server is gone). The connection's badge is the
/// capability's badge, or the client's pid if it is unbadged.
pub fn ipc_register_client(server: ServerCap) -> io::Result<Connection> {
    let n = cap::resolve(server, Rights::CALL)?;
    let Object::Server(s) = &n.object else {
        return Err(Errno::EINVAL.into());
    };
    if !s.is_alive() {
        return Err(Errno::ESRCH.into());
    }
    let pid = task::identity().pid;
    Ok(Connection {
        inner: Arc::new(ConnShared {
            server: s.clone(),
            badge: if n.badge != 0 { n.badge } else { pid.0 },
            client_pid: pid,
            grant: n.rights.contains(Rights::GRANT),
            buf: GMutex::new(ArgBuf {
                data: Box::new([0u8; IPC_PER_SHM_SIZE]),
            }),
        }),
    })
}

impl Connection {
    /// Takes the connection's argument buffer for a message (waits while
    /// another task of the client holds it).
    pub fn msg(&self) -> IpcMsg<'_> {
        IpcMsg::new(&self.inner, self.inner.buf.lock())
    }

    /// Like [`msg`](Self::msg), but `EAGAIN` (ChCore's `-EIPCRETRY`) if the
    /// buffer is taken.
    pub fn try_msg(&self) -> io::Result<IpcMsg<'_>> {
        match self.inner.buf.try_lock() {
            Some(g) => Ok(IpcMsg::new(&self.inner, g)),
            None => Err(Errno::EAGAIN.into()),
        }
    }

    /// The badge the server sees for this connection.
    pub fn badge(&self) -> u64 {
        self.inner.badge
    }

    /// A capability naming this connection (with every right), so that it
    /// can be passed around; [`Connection::from_cap`] turns it back.
    pub fn to_cap(&self) -> io::Result<Cap> {
        cap::create(Object::Connection(self.inner.clone()))
    }

    /// The connection a capability names (needs [`Rights::CALL`]).
    pub fn from_cap(c: Cap) -> io::Result<Connection> {
        let n = cap::resolve(c, Rights::CALL)?;
        match &n.object {
            Object::Connection(c) => Ok(Connection { inner: c.clone() }),
            _ => Err(Errno::EINVAL.into()),
        }
    }

    /// Calls the server with `msg` (this connection's message): the
    /// dispatcher runs now, on this task and stack, as the server; its
    /// return value comes back. See the module doc for the steps and errors:
    /// `EINVAL` (message of another connection), `ESRCH` (server gone or
    /// not called from a task), `ENOMEM` (not enough stack), `EPERM`
    /// (capabilities without `GRANT`), `EBADF`/`EIDRM` (bad capability to
    /// send), `EFAULT` (the dispatcher panicked).
    pub fn ipc_call(&self, msg: &mut IpcMsg<'_>) -> io::Result<u64> {
        Ok(self.call_inner(msg)?)
    }

    #[inline]
    fn call_inner(&self, msg: &mut IpcMsg<'_>) -> Result<u64, Errno> {
        let conn = &*self.inner;
        if !std::ptr::eq(msg.conn, conn) {
            return Err(Errno::EINVAL);
        }
        let server = &*conn.server;
        if !server.is_alive() {
            return Err(Errno::ESRCH);
        }
        // The running task is looked up once (a non-inlined thread-local
        // read) and handed down: the stack check, the task-local state, the
        // caller's identity and the identity switch all use it.
        task::with_cx(|cx| call_as(cx, conn, server, msg)).unwrap_or(Err(Errno::ESRCH))
    }
}

/// The body of [`Connection::ipc_call`] once the message and server are
/// checked; `cx` is the calling task.
#[inline]
fn call_as(
    cx: task::TaskCx<'_>,
    conn: &ConnShared,
    server: &ServerObj,
    msg: &mut IpcMsg<'_>,
) -> Result<u64, Errno> {
    // Stack budget (step 3): `None` means not on the task's own stack (an
    // E-stack), where the check cannot be made.
    if server.own_stack.is_none() {
        if let Some(left) = cx.stack_remaining() {
            if left < server.stack_need + CALL_PATH_STACK {
                return Err(Errno::ENOMEM);
            }
        }
    }
    // Stage outgoing capabilities from the caller's table (step 4).
    let has_out = msg.ncaps > 0;
    if has_out {
        if !conn.grant {
            return Err(Errno::EPERM);
        }
        msg.stage(false)?;
    } else if msg.has_in {
        msg.forget_caps();
    }
    msg.badge = conn.badge;
    let r = cap::with_proc_cx(cx, |p| {
        // The linkage record (step 5), popped on every exit.
        let record = Linkage {
            prev: p.link.get(),
            table: cap::table_ptr(&server.table),
            client: cx.identity(),
            badge: conn.badge,
        };
        struct Pop<'a> {
            p: &'a cap::ProcState,
            prev: *const Linkage,
        }
        impl Drop for Pop<'_> {
            fn drop(&mut self) {
                self.p.link.set(self.prev);
            }
        }
        let _pop = Pop {
            p,
            prev: record.prev,
        };
        cx.with_identity(server.identity, || {
            p.link.set(&record);
            let body = || {
                if has_out {
                    msg.install(&server.table);
                }
                let ret = (server.dispatcher)(msg);
                if msg.ncaps > 0 || msg.has_in {
                    msg.stage_reply();
                }
                ret
            };
            match server.own_stack {
                None => Ok(catch_unwind(AssertUnwindSafe(body))),
                Some(size) => run_on_estack(server, size, body),
            }
        })
    });
    let ret = match r {
        // No execution stack: nothing was delivered.
        Err(e) => {
            msg.drop_staged();
            return Err(e);
        }
        Ok(Ok(v)) => Ok(v),
        Ok(Err(payload)) => {
            if !is_plain_panic(&*payload) {
                resume_unwind(payload)
            }
            msg.drop_staged();
            Err(Errno::EFAULT)
        }
    };
    if has_out {
        // Delivered: moved capabilities leave the caller's table.
        for c in msg.moved.iter_mut().filter_map(Option::take) {
            cap::finish_stage(Some(c));
        }
    }
    if msg.nxfer > 0 {
        cap::with_proc_cx(cx, |p| p.with_current(|t| msg.install(t)));
    }
    ret
}

/// Whether an unwind payload is an ordinary `panic!` (`&str` / `String`),
/// as opposed to the runtime's kill or cancellation unwinds.
fn is_plain_panic(p: &(dyn Any + Send)) -> bool {
    p.is::<&'static str>() || p.is::<String>()
}

/// Runs `body` on one of the server's execution stacks.
type Caught<R> = Result<R, Box<dyn Any + Send>>;

fn run_on_estack<R>(
    server: &ServerObj,
    size: usize,
    body: impl FnOnce() -> R,
) -> Result<Caught<R>, Errno> {
    let stack = server.estacks.lock().pop();
    let mut stack = match stack {
        Some(s) => s,
        None => match corosensei::stack::DefaultStack::new(size) {
            Ok(s) => s,
            Err(_) => return Err(Errno::ENOMEM),
        },
    };
    let r = corosensei::on_stack(&mut stack, || catch_unwind(AssertUnwindSafe(body)));
    server.estacks.lock().push(stack);
    Ok(r)
}

// ---------------------------------------------------------------------------
// Messages.

/// A message on a connection: a label, a length and the connection's
/// argument buffer (held for the message's lifetime), plus capabilities.
/// The same type is the dispatcher's view during the call.
pub struct IpcMsg<'a> {
    conn: &'a ConnShared,
    buf: GMutexGuard<'a, ArgBuf>,
    label: u64,
    len: usize,
    badge: u64,
    caps: [CapSlot; MAX_CAP_TRANSFER],
    ncaps: usize,
    /// Whether `caps` holds arrived capabilities.
    has_in: bool,
    /// Staged capabilities in flight (`..nxfer`).
    xfer: [Option<Arc<cap::CapNode>>; MAX_CAP_TRANSFER],
    nxfer: usize,
    /// The caller's moved indices, emptied once delivered.
    moved: [Option<Cap>; MAX_CAP_TRANSFER],
}

impl fmt::Debug for IpcMsg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcMsg")
            .field("label", &self.label)
            .field("len", &self.len)
            .field("badge", &self.badge)
            .field("ncaps", &self.ncaps)
            .finish()
    }
}

impl<'a> IpcMsg<'a> {
    fn new(conn: &'a ConnShared, buf: GMutexGuard<'a, ArgBuf>) -> IpcMsg<'a> {
        IpcMsg {
            conn,
            buf,
            label: 0,
            len: 0,
            badge: conn.badge,
            caps: [CapSlot::Empty; MAX_CAP_TRANSFER],
            ncaps: 0,
            has_in: false,
            xfer: Default::default(),
            nxfer: 0,
            moved: [None; MAX_CAP_TRANSFER],
        }
    }

    /// Takes the staged slots out of the current table into `xfer`. For a
    /// reply (`remove_moved`), moved capabilities leave the table at once;
    /// for a call, their indices wait in `moved` until delivery.
    fn stage(&mut self, remove_moved: bool) -> Result<(), Errno> {
        let n = std::mem::take(&mut self.ncaps);
        let mut r = Ok(());
        for i in 0..n {
            if let CapSlot::Out(c, how) = std::mem::take(&mut self.caps[i]) {
                if r.is_err() {
                    continue;
                }
                match cap::stage(c, how) {
                    Ok(s) => {
                        self.xfer[i] = Some(s.node);
                        if remove_moved {
                            cap::finish_stage(s.moved_from);
                        } else {
                            self.moved[i] = s.moved_from;
                        }
                    }
                    Err(e) => r = Err(e),
                }
            }
        }
        self.nxfer = n;
        if self.has_in {
            for c in &mut self.caps[n..] {
                *c = CapSlot::Empty;
            }
            self.has_in = false;
        }
        if r.is_err() {
            self.drop_staged();
        }
        r
    }

    /// Stages the reply's capabilities (step 7; moved ones leave the
    /// server's table now), or forgets the ones that arrived with the call.
    /// Out of line: the null call has none.
    #[inline(never)]
    fn stage_reply(&mut self) {
        if self.ncaps > 0 {
            let _ = self.stage(true);
        } else {
            self.clear_caps();
        }
    }

    /// [`clear_caps`](Self::clear_caps), out of line (off the null call's
    /// path).
    #[inline(never)]
    fn forget_caps(&mut self) {
        self.clear_caps();
    }

    /// Installs the staged capabilities in `table` as arrived ones.
    #[inline(never)]
    fn install(&mut self, table: &CapTable) {
        for i in 0..std::mem::take(&mut self.nxfer) {
            if let Some(node) = self.xfer[i].take() {
                if let Ok(c) = table.insert(node) {
                    self.caps[i] = CapSlot::In(c);
                    self.has_in = true;
                }
            }
        }
    }

    /// Forgets staged capabilities that will not be delivered.
    fn drop_staged(&mut self) {
        for i in 0..std::mem::take(&mut self.nxfer) {
            self.xfer[i] = None;
        }
        self.moved = [None; MAX_CAP_TRANSFER];
    }

    /// The label (opcode).
    pub fn label(&self) -> u64 {
        self.label
    }

    /// Sets the label.
    pub fn set_label(&mut self, label: u64) {
        self.label = label;
    }

    /// Bytes of data in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no data is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data in use (`..len()`).
    pub fn data(&self) -> &[u8] {
        &self.buf.data[..self.len]
    }

    /// The whole argument buffer, to write into; set the length after.
    pub fn buffer_mut(&mut self) -> &mut [u8; IPC_PER_SHM_SIZE] {
        &mut self.buf.data
    }

    /// Sets the length of the data in use (`EINVAL` above the buffer size).
    pub fn set_len(&mut self, len: usize) -> io::Result<()> {
        if len > IPC_PER_SHM_SIZE {
            return Err(Errno::EINVAL.into());
        }
        self.len = len;
        Ok(())
    }

    /// Copies `data` in as the message's data (`E2BIG` if it does not fit).
    pub fn set_data(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > IPC_PER_SHM_SIZE {
            return Err(Errno::E2BIG.into());
        }
        self.buf.data[..data.len()].copy_from_slice(data);
        self.len = data.len();
        Ok(())
    }

    /// The connection's badge (in the dispatcher: which client calls).
    pub fn badge(&self) -> u64 {
        self.badge
    }

    /// Stages capability `cap` to travel in slot `i` (`EINVAL` if `i` is not
    /// below [`MAX_CAP_TRANSFER`]). Slots `0..=i` are sent. In the
    /// dispatcher, this stages a capability for the reply.
    pub fn set_cap(&mut self, i: usize, cap: Cap, how: Transfer) -> io::Result<()> {
        if i >= MAX_CAP_TRANSFER {
            return Err(Errno::EINVAL.into());
        }
        self.caps[i] = CapSlot::Out(cap, how);
        self.ncaps = self.ncaps.max(i + 1);
        Ok(())
    }

    /// The capability that arrived in slot `i` (an index in the current
    /// table: the server's in the dispatcher, the caller's after the call).
    pub fn cap(&self, i: usize) -> Option<Cap> {
        match self.caps.get(i) {
            Some(CapSlot::In(c)) => Some(*c),
            _ => None,
        }
    }

    /// Forgets staged and arrived capability slots.
    pub fn clear_caps(&mut self) {
        self.caps = [CapSlot::Empty; MAX_CAP_TRANSFER];
        self.ncaps = 0;
        self.has_in = false;
    }
}

/// In a dispatcher: the pid of the process that made the call being served
/// (the innermost one, in nested calls). `None` outside a migrating call.
pub fn ipc_client_pid() -> Option<Pid> {
    cap::with_proc(|p| {
        let l = p.link.get();
        // SAFETY: a non-null top record lives in a frame of this task's
        // call (see `cap::ProcState::with_current`).
        (!l.is_null()).then(|| unsafe { (*l).client.pid })
    })
    .ok()
    .flatten()
}

/// In a dispatcher: the badge of the connection being served.
pub fn ipc_client_badge() -> Option<u64> {
    cap::with_proc(|p| {
        let l = p.link.get();
        // SAFETY: as in `ipc_client_pid`.
        (!l.is_null()).then(|| unsafe { (*l).badge })
    })
    .ok()
    .flatten()
}

/// How deep the calling task is in migrating calls (0: not in one).
pub fn ipc_call_depth() -> usize {
    cap::with_proc(|p| {
        let mut n = 0;
        let mut l = p.link.get();
        while !l.is_null() {
            n += 1;
            // SAFETY: records below the top live in enclosing frames.
            l = unsafe { (*l).prev };
        }
        n
    })
    .unwrap_or(0)
}
