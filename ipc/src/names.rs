//! The name service: servers publish a capability under a name, clients
//! look it up (the seed's naming service; LRPC's name server, where a
//! server's clerk registers its interface).
//!
//! # What this module owns
//!
//! One namespace per OS process (shared by every runtime in it, like the
//! System V key space). An entry holds a capability *derived* from the one
//! registered (so the registrant revoking its capability also revokes what
//! the name hands out), the registrant's credentials and a mode:
//!
//! - [`lookup`] needs read permission in the mode (owner / group / other
//!   bits, `ipcperms()` rules, uid 0 bypasses: `EACCES` otherwise) and
//!   installs a fresh copy in the caller's current table;
//! - [`register`] publishes with mode `0o644` (everyone may look up);
//!   [`register_with_mode`] chooses; a taken name gives `EEXIST`;
//! - [`unregister`] is for the owner or root (`EPERM` otherwise).
//!
//! Names are 1 to [`NAME_MAX`] bytes without NUL (`EINVAL` for an empty
//! name or a NUL, `ENAMETOOLONG` above). An unknown name is `ENOENT`.
//! Credentials are the caller's current identity (inside a migrating call:
//! the server's).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::cap::{self, Cap, CapNode, Rights};
use crate::errno::Errno;
use crate::sysv::{Cred, IpcFlags, IpcPerm, Key, ACCESS_READ};

/// Longest name (bytes), as `NAME_MAX`.
pub const NAME_MAX: usize = 255;

struct Entry {
    node: Arc<CapNode>,
    perm: IpcPerm,
}

fn table() -> &'static Mutex<HashMap<String, Entry>> {
    static NAMES: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn check_name(name: &str) -> Result<(), Errno> {
    if name.is_empty() || name.contains('\0') {
        return Err(Errno::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

/// The caller's credentials (its current identity).
fn cred() -> Result<Cred, Errno> {
    if !greenos_runtime::task::in_task() {
        return Err(Errno::ESRCH);
    }
    let id = greenos_runtime::task::identity();
    Ok(Cred {
        pid: id.pid.0,
        uid: id.uid,
        gid: id.gid,
    })
}

/// Publishes `cap` under `name`, readable by everyone (mode `0o644`).
pub fn register(name: &str, cap: Cap) -> io::Result<()> {
    register_with_mode(name, cap, 0o644)
}

/// Publishes `cap` under `name` with permission bits `mode` (who may look
/// it up: the read bits of owner, group, other).
pub fn register_with_mode(name: &str, cap: Cap, mode: u32) -> io::Result<()> {
    check_name(name)?;
    let cred = cred()?;
    let src = cap::resolve(cap, Rights::NONE)?;
    let node = src.derive(src.rights, 0)?;
    let perm = IpcPerm::new(Key::PRIVATE, IpcFlags::mode(mode), &cred);
    let mut t = table().lock();
    if t.contains_key(name) {
        return Err(Errno::EEXIST.into());
    }
    t.insert(name.to_owned(), Entry { node, perm });
    Ok(())
}

/// Looks `name` up and installs a copy of its capability in the caller's
/// current table.
pub fn lookup(name: &str) -> io::Result<Cap> {
    check_name(name)?;
    let cred = cred()?;
    let node = {
        let t = table().lock();
        let e = t.get(name).ok_or(Errno::ENOENT)?;
        e.perm.check(&cred, ACCESS_READ)?;
        e.node.clone()
    };
    if node.is_revoked() {
        return Err(Errno::EIDRM.into());
    }
    let copy = node.derive(node.rights, 0)?;
    Ok(cap::install(copy)?)
}

/// Removes `name` (its owner or root; `EPERM` otherwise). Copies already
/// looked up stay valid.
pub fn unregister(name: &str) -> io::Result<()> {
    check_name(name)?;
    let cred = cred()?;
    let mut t = table().lock();
    let e = t.get(name).ok_or(Errno::ENOENT)?;
    e.perm.check_owner(&cred)?;
    t.remove(name);
    Ok(())
}
