//! shmget / shmat / shmdt / shmctl: every rule of ipc.md §3.1–3.3, run
//! differentially against the kernel's System V shared memory where the
//! kernel has the same call (same script, same outcomes and errnos), and the
//! credential rules from green processes with their own uids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};

use greenos_ipc::shm::{self, ShmidDs, SHM_DEST};
use greenos_ipc::{
    shmat, shmctl, shmdt, shmget, IpcFlags, Key, ShmCtl, ShmFlags, ShmId, ShmMap, ShmSet,
};

// ---------------------------------------------------------------------------
// One interface over the two implementations.

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Stat {
    /// The logical key (0 = private).
    key: i32,
    mode: u32,
    segsz: usize,
    nattch: u64,
    atime_set: bool,
    dtime_set: bool,
    ctime: i64,
}

trait Sys {
    type Map;
    /// A real key for a logical one (0 stays private).
    fn real_key(&self, k: i32) -> i32;
    fn get(&mut self, key: i32, size: usize, flags: u32) -> Result<i32, i32>;
    fn at(&mut self, id: i32, rdonly: bool) -> Result<Self::Map, i32>;
    fn dt(&mut self, m: Self::Map) -> Result<(), i32>;
    fn addr(m: &Self::Map) -> usize;
    fn stat(&mut self, id: i32) -> Result<Stat, i32>;
    fn set_mode(&mut self, id: i32, mode: u32) -> Result<(), i32>;
    fn chown(&mut self, id: i32, uid: u32, gid: u32, mode: u32) -> Result<(), i32>;
    fn rmid(&mut self, id: i32) -> Result<(), i32>;
}

fn logical_key(real: i32, base: i32) -> i32 {
    if real == 0 {
        0
    } else {
        real - base
    }
}

/// A key base no other test (or concurrent test process) uses.
fn fresh_base() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    0x4000_0000 | ((std::process::id() as i32 & 0xffff) << 12) | (n << 6)
}

struct Kernel {
    base: i32,
    created: Vec<i32>,
}

impl Kernel {
    fn new() -> Kernel {
        Kernel {
            base: fresh_base(),
            created: Vec::new(),
        }
    }
}

/// Every kernel segment a test made is removed, pass or fail.
impl Drop for Kernel {
    fn drop(&mut self) {
        for &id in &self.created {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

impl Sys for Kernel {
    type Map = usize;
    fn real_key(&self, k: i32) -> i32 {
        if k == 0 {
            0
        } else {
            self.base + k
        }
    }
    fn get(&mut self, key: i32, size: usize, flags: u32) -> Result<i32, i32> {
        // SAFETY: shmget takes plain values.
        let r = unsafe { libc::shmget(self.real_key(key), size, flags as i32) };
        if r < 0 {
            return Err(errno());
        }
        if !self.created.contains(&r) {
            self.created.push(r);
        }
        Ok(r)
    }
    fn at(&mut self, id: i32, rdonly: bool) -> Result<usize, i32> {
        let fl = if rdonly { libc::SHM_RDONLY } else { 0 };
        // SAFETY: a NULL address lets the kernel choose.
        let p = unsafe { libc::shmat(id, std::ptr::null(), fl) };
        if p as isize == -1 {
            Err(errno())
        } else {
            Ok(p as usize)
        }
    }
    fn dt(&mut self, m: usize) -> Result<(), i32> {
        // SAFETY: `m` came from shmat; nothing references it after this.
        if unsafe { libc::shmdt(m as *const libc::c_void) } != 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
    fn addr(m: &usize) -> usize {
        *m
    }
    fn stat(&mut self, id: i32) -> Result<Stat, i32> {
        // SAFETY: IPC_STAT fills the struct we pass.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
                return Err(errno());
            }
            Ok(Stat {
                key: logical_key(ds.shm_perm.__key, self.base),
                mode: ds.shm_perm.mode as u32,
                segsz: ds.shm_segsz,
                nattch: ds.shm_nattch,
                atime_set: ds.shm_atime != 0,
                dtime_set: ds.shm_dtime != 0,
                ctime: ds.shm_ctime,
            })
        }
    }
    fn set_mode(&mut self, id: i32, mode: u32) -> Result<(), i32> {
        // SAFETY: IPC_STAT then IPC_SET on a struct we own.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
                return Err(errno());
            }
            ds.shm_perm.mode = mode as u16;
            if libc::shmctl(id, libc::IPC_SET, &mut ds) != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }
    fn chown(&mut self, id: i32, uid: u32, gid: u32, mode: u32) -> Result<(), i32> {
        // SAFETY: IPC_STAT then IPC_SET on a struct we own.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) != 0 {
                return Err(errno());
            }
            ds.shm_perm.uid = uid;
            ds.shm_perm.gid = gid;
            ds.shm_perm.mode = mode as u16;
            if libc::shmctl(id, libc::IPC_SET, &mut ds) != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }
    fn rmid(&mut self, id: i32) -> Result<(), i32> {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } != 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

struct Green {
    base: i32,
}

impl Green {
    fn new() -> Green {
        Green { base: fresh_base() }
    }
}

fn raw(e: std::io::Error) -> i32 {
    e.raw_os_error().expect("an errno")
}

fn to_stat(ds: ShmidDs, base: i32) -> Stat {
    Stat {
        key: logical_key(ds.perm.key.0, base),
        mode: ds.perm.mode,
        segsz: ds.segsz,
        nattch: ds.nattch,
        atime_set: ds.atime != 0,
        dtime_set: ds.dtime != 0,
        ctime: ds.ctime,
    }
}

impl Sys for Green {
    type Map = ShmMap;
    fn real_key(&self, k: i32) -> i32 {
        if k == 0 {
            0
        } else {
            self.base + k
        }
    }
    fn get(&mut self, key: i32, size: usize, flags: u32) -> Result<i32, i32> {
        shmget(Key(self.real_key(key)), size, IpcFlags(flags))
            .map(|i| i.0)
            .map_err(raw)
    }
    fn at(&mut self, id: i32, rdonly: bool) -> Result<ShmMap, i32> {
        let fl = if rdonly {
            ShmFlags::RDONLY
        } else {
            ShmFlags::NONE
        };
        shmat(ShmId(id), fl).map_err(raw)
    }
    fn dt(&mut self, m: ShmMap) -> Result<(), i32> {
        shmdt(m).map_err(raw)
    }
    fn addr(m: &ShmMap) -> usize {
        m.as_ptr() as usize
    }
    fn stat(&mut self, id: i32) -> Result<Stat, i32> {
        shmctl(ShmId(id), ShmCtl::Stat)
            .map(|d| to_stat(d.expect("Stat returns the ds"), self.base))
            .map_err(raw)
    }
    fn set_mode(&mut self, id: i32, mode: u32) -> Result<(), i32> {
        let ds = shmctl(ShmId(id), ShmCtl::Stat)
            .map_err(raw)?
            .expect("Stat returns the ds");
        shmctl(
            ShmId(id),
            ShmCtl::Set(ShmSet {
                uid: ds.perm.uid,
                gid: ds.perm.gid,
                mode,
            }),
        )
        .map(|_| ())
        .map_err(raw)
    }
    fn chown(&mut self, id: i32, uid: u32, gid: u32, mode: u32) -> Result<(), i32> {
        shmctl(ShmId(id), ShmCtl::Set(ShmSet { uid, gid, mode }))
            .map(|_| ())
            .map_err(raw)
    }
    fn rmid(&mut self, id: i32) -> Result<(), i32> {
        shmctl(ShmId(id), ShmCtl::Remove).map(|_| ()).map_err(raw)
    }
}

/// Records outcomes; ids are logged by the order they first appeared, so two
/// implementations compare although their id numbers differ.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    ids: HashMap<i32, usize>,
}

impl Log {
    fn id(&mut self, r: Result<i32, i32>) -> String {
        match r {
            Ok(id) => {
                let n = self.ids.len();
                let k = *self.ids.entry(id).or_insert(n);
                format!("ok id#{k}")
            }
            Err(e) => format!("err {e}"),
        }
    }
    fn push(&mut self, what: &str, s: String) {
        self.lines.push(format!("{what}: {s}"));
    }
}

fn unit(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("err {e}"),
    }
}

fn stat_line(r: Result<Stat, i32>) -> String {
    match r {
        Ok(s) => format!(
            "key {} mode {:o} segsz {} nattch {} atime {} dtime {}",
            s.key, s.mode, s.segsz, s.nattch, s.atime_set, s.dtime_set
        ),
        Err(e) => format!("err {e}"),
    }
}

const CREAT: u32 = 0o1000;
const EXCL: u32 = 0o2000;

/// Attach, detach, deferred removal.
fn scenario_attach<S: Sys>(s: &mut S) -> Vec<String> {
    let mut log = Log::default();
    let r = s.get(0, 100, CREAT | 0o600);
    let l = log.id(r);
    log.push("get private 100", l);
    let id = r.unwrap();
    log.push("stat fresh", stat_line(s.stat(id)));
    let rw = s.at(id, false).unwrap();
    let ro = s.at(id, true).unwrap();
    log.push(
        "two attaches, two addresses",
        format!("{}", S::addr(&rw) != S::addr(&ro)),
    );
    // SAFETY (both): the attaches map at least one page; rw is writable.
    let (fresh, seen) = unsafe {
        let f = *(S::addr(&ro) as *const u8).add(50);
        *(S::addr(&rw) as *mut u8).add(99) = 42;
        (f, *(S::addr(&ro) as *const u8).add(99))
    };
    log.push("zero-filled, shared", format!("{fresh} {seen}"));
    log.push(
        "mapping permissions",
        format!("{} {}", map_perms(S::addr(&rw)), map_perms(S::addr(&ro))),
    );
    log.push("stat two attaches", stat_line(s.stat(id)));
    let r = s.dt(ro);
    log.push("detach", unit(r));
    log.push("stat one attach", stat_line(s.stat(id)));
    let r = s.rmid(id);
    log.push("rmid attached", unit(r));
    log.push("stat marked", stat_line(s.stat(id)));
    let again = s.at(id, false);
    log.push(
        "attach marked",
        unit(again.as_ref().map(|_| ()).map_err(|e| *e)),
    );
    log.push("stat marked, two", stat_line(s.stat(id)));
    let r = s.rmid(id);
    log.push("rmid twice", unit(r));
    let r = s.dt(again.unwrap());
    log.push("detach", unit(r));
    log.push("stat marked, one", stat_line(s.stat(id)));
    let r = s.dt(rw);
    log.push("last detach", unit(r));
    log.push("stat destroyed", stat_line(s.stat(id)));
    let r = s.rmid(id);
    log.push("rmid destroyed", unit(r));
    let r = s.at(id, true).map(|_| ());
    log.push("attach destroyed", unit(r));
    log.lines
}

/// Sizes: SHMMIN, SHMMAX, the shmem file limit, memory, pages.
fn scenario_sizes<S: Sys>(s: &mut S) -> Vec<String> {
    let mut log = Log::default();
    for size in [
        0usize,
        1,
        4095,
        4097,
        1 << 40,
        1 << 62,
        shm::SHMMAX - 4096,
        shm::SHMMAX,
        shm::SHMMAX + 1,
        usize::MAX,
    ] {
        let r = s.get(0, size, CREAT | 0o600);
        let line = match r {
            Ok(id) => {
                let st = stat_line(s.stat(id));
                s.rmid(id).unwrap();
                format!("ok {st}")
            }
            Err(e) => format!("err {e}"),
        };
        log.push(&format!("create {size}"), line);
    }
    log.lines
}

/// Keys: ENOENT, CREAT, EXCL, size against an existing segment, removal.
fn scenario_keys<S: Sys>(s: &mut S) -> Vec<String> {
    let mut log = Log::default();
    let get = |s: &mut S, log: &mut Log, what: &str, size, flags| {
        let r = s.get(1, size, flags);
        let l = log.id(r);
        log.push(what, l);
        r.ok()
    };
    get(s, &mut log, "get missing", 4096, 0);
    let id = get(s, &mut log, "create 2048", 2048, CREAT | 0o600).unwrap();
    get(s, &mut log, "get bigger", 4096, 0);
    get(s, &mut log, "get bigger, creat", 4096, CREAT | 0o600);
    get(s, &mut log, "get same size", 2048, 0);
    get(s, &mut log, "get size 0", 0, 0);
    get(s, &mut log, "get smaller, creat", 100, CREAT | 0o600);
    get(s, &mut log, "get excl", 100, CREAT | EXCL | 0o600);
    get(s, &mut log, "get asking read", 100, 0o400);
    log.push("stat", stat_line(s.stat(id)));
    let r = s.rmid(id);
    log.push("rmid unattached", unit(r));
    log.push("stat removed", stat_line(s.stat(id)));
    get(s, &mut log, "get removed key", 100, 0);
    let id2 = get(s, &mut log, "re-create", 100, CREAT | EXCL | 0o640).unwrap();
    log.push("stat new", stat_line(s.stat(id2)));

    // Removing an attached segment frees its key at once.
    let m = s.at(id2, false).unwrap();
    let r = s.rmid(id2);
    log.push("rmid attached", unit(r));
    get(s, &mut log, "get freed key", 100, 0);
    let id3 = get(
        s,
        &mut log,
        "create on freed key",
        300,
        CREAT | EXCL | 0o600,
    )
    .unwrap();
    log.push("stat old", stat_line(s.stat(id2)));
    log.push("stat new", stat_line(s.stat(id3)));
    let r = s.dt(m);
    log.push("detach old", unit(r));
    log.push("stat old destroyed", stat_line(s.stat(id2)));
    log.push("stat new kept", stat_line(s.stat(id3)));
    get(s, &mut log, "get key", 0, 0);
    let r = s.rmid(id3);
    log.push("rmid", unit(r));
    log.lines
}

/// IPC_SET and bad ids.
fn scenario_ctl<S: Sys>(s: &mut S) -> Vec<String> {
    let mut log = Log::default();
    let id = s.get(0, 10, CREAT | 0o666).unwrap();
    let before = s.stat(id).unwrap().ctime;
    let r = s.set_mode(id, 0o600 | 0o7000);
    log.push("set 0600 (+high bits)", unit(r));
    let after = s.stat(id);
    log.push("stat", stat_line(after));
    log.push(
        "ctime kept or grew",
        format!("{}", after.unwrap().ctime >= before),
    );
    for (n, bad) in [-1, i32::MAX, i32::MAX - 1].into_iter().enumerate() {
        log.push(&format!("stat bad id {n}"), stat_line(s.stat(bad)));
        log.push(&format!("rmid bad id {n}"), unit(s.rmid(bad)));
        let r = s.at(bad, false).map(|_| ());
        log.push(&format!("attach bad id {n}"), unit(r));
    }
    let r = s.rmid(id);
    log.push("rmid", unit(r));
    log.lines
}

/// The permissions of the mapping at `addr` in /proc/self/maps ("rw-s").
fn map_perms(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        let perms = f.next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        if (a..b).contains(&addr) {
            return perms.to_string();
        }
    }
    "unmapped".into()
}

fn differential(scenario: fn(&mut Kernel) -> Vec<String>, green: fn(&mut Green) -> Vec<String>) {
    let k = scenario(&mut Kernel::new());
    let g = green(&mut Green::new());
    for (i, (a, b)) in k.iter().zip(&g).enumerate() {
        assert_eq!(a, b, "step {i} differs (kernel left, greenos right)");
    }
    assert_eq!(k.len(), g.len());
}

#[test]
fn differential_attach_detach_and_deferred_removal() {
    differential(scenario_attach::<Kernel>, scenario_attach::<Green>);
}

#[test]
fn differential_sizes() {
    differential(scenario_sizes::<Kernel>, scenario_sizes::<Green>);
}

#[test]
fn differential_keys() {
    differential(scenario_keys::<Kernel>, scenario_keys::<Green>);
}

#[test]
fn differential_ctl() {
    differential(scenario_ctl::<Kernel>, scenario_ctl::<Green>);
}

#[test]
fn scenarios_assert_what_the_reference_says() {
    // The differential tests would pass if both sides were wrong the same
    // way; pin the facts ipc.md §3.1–3.3 states.
    let log = scenario_attach(&mut Green::new());
    assert!(log
        .contains(&"stat fresh: key 0 mode 600 segsz 100 nattch 0 atime false dtime false".into()));
    assert!(log.contains(&"mapping permissions: rw-s r--s".into()));
    assert!(log.contains(&"zero-filled, shared: 0 42".into()));
    assert!(log.contains(&format!(
        "stat marked: key 0 mode {:o} segsz 100 nattch 1 atime true dtime true",
        0o600 | SHM_DEST
    )));
    assert!(log.contains(&"stat destroyed: err 22".into()));
    let log = scenario_keys(&mut Green::new());
    assert!(log.contains(&"get missing: err 2".into()));
    assert!(log.contains(&"get bigger: err 22".into()));
    assert!(log.contains(&"get excl: err 17".into()));
    assert!(log.contains(&"get freed key: err 2".into()));
    let log = scenario_sizes(&mut Green::new());
    assert!(log.contains(&"create 0: err 22".into()));
    assert!(log.contains(
        &"create 4097: ok key 0 mode 600 segsz 4097 nattch 0 atime false dtime false".into()
    ));
}

// ---------------------------------------------------------------------------
// Credentials: green processes with their own uids (the test runs as root,
// so the kernel's own checks would be bypassed; these pin ipc.md §2.1).

fn rt() -> greenos_runtime::Runtime {
    greenos_runtime::Runtime::builder()
        .workers(2)
        .build()
        .unwrap()
}

fn as_user<T: Send + 'static>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    greenos_runtime::task::Builder::new()
        .uid(uid)
        .gid(gid)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn err<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap()
}

#[test]
fn permissions_follow_ipcperms() {
    rt().block_on(|| {
        let alice = |f: fn() -> ()| as_user(1000, 100, f);
        alice(|| {
            // Mode 0 refuses even the creator (LTP shmget04, shmctl02).
            let z = shmget(Key::PRIVATE, 64, IpcFlags::CREAT | IpcFlags::mode(0)).unwrap();
            assert_eq!(err(shmctl(z, ShmCtl::Stat)), libc::EACCES);
            assert_eq!(err(shmat(z, ShmFlags::RDONLY)), libc::EACCES);
            // ... but the owner may still change or remove it.
            shmctl(z, ShmCtl::Remove).unwrap();

            // 0400: read-only attach only; there are no write-only attaches.
            let r = shmget(Key::PRIVATE, 64, IpcFlags::CREAT | IpcFlags::mode(0o400)).unwrap();
            assert_eq!(err(shmat(r, ShmFlags::NONE)), libc::EACCES);
            let mut m = shmat(r, ShmFlags::RDONLY).unwrap();
            assert!(m.is_read_only());
            assert_eq!(err(m.try_as_mut_slice()), libc::EACCES);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m[0] = 1;
            }));
            assert!(caught.is_err(), "DerefMut on a read-only map must refuse");
            drop(m);
            let w = shmget(Key::PRIVATE, 64, IpcFlags::CREAT | IpcFlags::mode(0o200)).unwrap();
            assert_eq!(err(shmat(w, ShmFlags::NONE)), libc::EACCES);
            shmctl(r, ShmCtl::Remove).unwrap();
            shmctl(w, ShmCtl::Remove).unwrap();
        });

        // Group and other bits; owner-only control.
        let base = fresh_base();
        let key = Key(base + 1);
        let id = as_user(1000, 100, move || {
            shmget(key, 64, IpcFlags::CREAT | IpcFlags::mode(0o640)).unwrap()
        });
        as_user(1001, 100, move || {
            // Same group: read.
            assert_eq!(shmget(key, 0, IpcFlags::mode(0o040)).unwrap(), id);
            assert_eq!(err(shmget(key, 0, IpcFlags::mode(0o060))), libc::EACCES);
            let m = shmat(id, ShmFlags::RDONLY).unwrap();
            assert_eq!(err(shmat(id, ShmFlags::NONE)), libc::EACCES);
            assert!(shmctl(id, ShmCtl::Stat).is_ok());
            let set = ShmSet {
                uid: 1001,
                gid: 100,
                mode: 0o666,
            };
            assert_eq!(err(shmctl(id, ShmCtl::Set(set))), libc::EPERM);
            assert_eq!(err(shmctl(id, ShmCtl::Remove)), libc::EPERM);
            assert_eq!(err(shmctl(id, ShmCtl::Lock)), libc::EPERM);
            drop(m);
        });
        as_user(2000, 200, move || {
            // Other: nothing.
            assert_eq!(err(shmat(id, ShmFlags::RDONLY)), libc::EACCES);
            assert_eq!(err(shmctl(id, ShmCtl::Stat)), libc::EACCES);
            assert_eq!(err(shmget(key, 0, IpcFlags::mode(0o004))), libc::EACCES);
            // A plain lookup asking no access succeeds, as in Linux.
            assert_eq!(shmget(key, 0, IpcFlags::NONE).unwrap(), id);
        });
        as_user(1000, 100, move || {
            // The owner hands the segment to 2000; the creator keeps control.
            let set = ShmSet {
                uid: 2000,
                gid: 200,
                mode: 0o600,
            };
            shmctl(id, ShmCtl::Set(set)).unwrap();
            shmctl(id, ShmCtl::Lock).unwrap();
            let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
            assert_eq!(
                (ds.perm.uid, ds.perm.gid, ds.perm.cuid, ds.perm.cgid),
                (2000, 200, 1000, 100)
            );
            assert_eq!(ds.perm.mode, 0o600 | shm::SHM_LOCKED);
            shmctl(id, ShmCtl::Unlock).unwrap();
        });
        as_user(2000, 200, move || {
            // The new owner now reads and writes through the owner bits.
            let mut m = shmat(id, ShmFlags::NONE).unwrap();
            m[0] = 9;
        });
        // Root bypasses everything.
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!(ds.perm.mode, 0o600);
        shmctl(id, ShmCtl::Remove).unwrap();
        assert_eq!(err(shmctl(id, ShmCtl::Stat)), libc::EINVAL);
    });
}

#[test]
fn pids_times_and_counts() {
    rt().block_on(|| {
        let (id, creator) = greenos_runtime::spawn(|| {
            let id = shmget(Key::PRIVATE, 4, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
            (id, greenos_runtime::getpid().0)
        })
        .join()
        .unwrap();
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!((ds.cpid, ds.lpid, ds.nattch, ds.segsz), (creator, 0, 0, 4));
        assert_eq!((ds.atime, ds.dtime), (0, 0));
        assert!(ds.ctime > 0);
        let (m, attacher) = greenos_runtime::spawn(move || {
            (
                shmat(id, ShmFlags::NONE).unwrap(),
                greenos_runtime::getpid().0,
            )
        })
        .join()
        .unwrap();
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!((ds.lpid, ds.nattch), (attacher, 1));
        assert!(ds.atime >= ds.ctime);
        let detacher = greenos_runtime::spawn(move || {
            shmdt(m).unwrap();
            greenos_runtime::getpid().0
        })
        .join()
        .unwrap();
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!((ds.lpid, ds.nattch), (detacher, 0));
        assert!(ds.dtime >= ds.atime);
        shmctl(id, ShmCtl::Remove).unwrap();
    });
}

greenos_runtime::task_local! {
    static HELD: std::cell::RefCell<Vec<ShmMap>> = std::cell::RefCell::new(Vec::new());
}

#[test]
fn a_process_that_exits_detaches_what_it_holds() {
    rt().block_on(|| {
        let id = shmget(Key::PRIVATE, 4096, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
        // Kept alive by our own attach while the others come and go.
        let keep = shmat(id, ShmFlags::RDONLY).unwrap();
        shmctl(id, ShmCtl::Remove).unwrap();
        let (tx, rx) = greenos_runtime::sync::mpsc::channel();
        let h = greenos_runtime::spawn(move || {
            // One map in a local, two in task-local storage, none detached.
            let _local = shmat(id, ShmFlags::NONE).unwrap();
            HELD.with(|h| {
                h.borrow_mut().push(shmat(id, ShmFlags::NONE).unwrap());
                h.borrow_mut().push(shmat(id, ShmFlags::RDONLY).unwrap());
            });
            tx.send(()).unwrap();
        });
        rx.recv().unwrap();
        h.join().unwrap();
        let ds = shmctl(id, ShmCtl::Stat).unwrap().unwrap();
        assert_eq!(ds.nattch, 1, "the ended task's three attaches are gone");
        assert!(ds.perm.mode & SHM_DEST != 0);
        // A task that panics detaches too (its stack unwinds).
        let h = greenos_runtime::spawn(move || {
            let _m = shmat(id, ShmFlags::NONE).unwrap();
            HELD.with(|h| h.borrow_mut().push(shmat(id, ShmFlags::NONE).unwrap()));
            panic!("exit with attaches held");
        });
        assert!(h.join().is_err());
        assert_eq!(shmctl(id, ShmCtl::Stat).unwrap().unwrap().nattch, 1);
        drop(keep);
        assert_eq!(err(shmctl(id, ShmCtl::Stat)), libc::EINVAL);
    });
}

#[test]
fn memfd_maps_the_same_pages_elsewhere() {
    let id = shmget(
        Key::PRIVATE,
        10_000,
        IpcFlags::CREAT | IpcFlags::mode(0o600),
    )
    .unwrap();
    let mut a = shmat(id, ShmFlags::NONE).unwrap();
    let fd = shm::shm_fd(id).unwrap();
    let b = ShmMap::from_fd(fd, true).unwrap();
    assert_eq!(
        b.len(),
        12_288,
        "a foreign map covers the whole (page-rounded) file"
    );
    assert_eq!(b.id(), None);
    a[9_999] = 5;
    assert_eq!(b[9_999], 5);
    assert_eq!(
        shmctl(id, ShmCtl::Stat).unwrap().unwrap().nattch,
        1,
        "from_fd is no System V attach"
    );
    shmctl(id, ShmCtl::Remove).unwrap();
    drop(a);
    // The pages live on while mapped.
    assert_eq!(b[9_999], 5);
}

#[test]
fn info_reports_the_limits() {
    let i = shm::shm_info();
    assert_eq!(i.shmmin, 1);
    assert_eq!(i.shmmni, 4096);
    assert_eq!(i.shmmax as u64, 18446744073692774399);
    assert_eq!(i.shmall, 18446744073692774399);
}

// ---------------------------------------------------------------------------
// Permissions, differentially: a child process (this test binary re-run)
// drops to other users with setresuid and asks both the kernel and greenos
// the same questions. Outside a green task greenos takes the caller's
// credentials from the OS (geteuid/getegid), so both see the same caller.

const PERM_CHILD_ENV: &str = "GREENOS_SHM_PERM_CHILD";

/// Switches the effective ids (saved ids stay root, so we can come back).
fn become_user(uid: u32, gid: u32) {
    // SAFETY: plain syscalls on ids; glibc applies them to every thread.
    unsafe {
        assert_eq!(libc::setresuid(u32::MAX, 0, u32::MAX), 0, "back to euid 0");
        assert_eq!(libc::setresgid(u32::MAX, gid, u32::MAX), 0);
        assert_eq!(libc::setresuid(u32::MAX, uid, u32::MAX), 0);
    }
}

fn perm_case<S: Sys>(
    s: &mut S,
    key: i32,
    owner: (u32, u32),
    mode: u32,
    caller: (u32, u32),
) -> Vec<String> {
    let mut log = Log::default();
    become_user(0, 0);
    let id = s
        .get(key, 100, CREAT | EXCL | mode)
        .expect("create as root");
    // Hand it to `owner` (root stays the creator: cuid 0, cgid 0).
    s.chown(id, owner.0, owner.1, mode)
        .expect("IPC_SET as root");
    become_user(caller.0, caller.1);
    for req in [0, 0o400, 0o200, 0o600, 0o040, 0o004] {
        let r = s.get(key, 0, req);
        let l = log.id(r);
        log.push(&format!("get req {req:o}"), l);
    }
    let r = s.at(id, true).map(|m| {
        let _ = s.dt(m);
    });
    log.push("attach ro", unit(r));
    let r = s.at(id, false).map(|m| {
        let _ = s.dt(m);
    });
    log.push("attach rw", unit(r));
    log.push("stat", unit(s.stat(id).map(|_| ())));
    let r = s.set_mode(id, mode);
    log.push("set", unit(r));
    let r = s.rmid(id);
    log.push("rmid", unit(r));
    become_user(0, 0);
    let _ = s.rmid(id);
    log.lines
}

#[test]
fn perm_child() {
    if std::env::var(PERM_CHILD_ENV).is_err() {
        return;
    }
    // No supplementary groups: group 0 (root's) would otherwise make every
    // caller a member of the creator's group.
    // SAFETY: setgroups with an empty list.
    assert_eq!(unsafe { libc::setgroups(0, std::ptr::null()) }, 0);
    let owner = (1000, 100);
    let callers = [
        (1000, 100),
        (1001, 100),
        (1002, 200),
        (1003, 0),
        (1004, 300),
    ];
    let modes = [
        0o000, 0o400, 0o200, 0o600, 0o640, 0o604, 0o060, 0o006, 0o444, 0o666,
    ];
    let (mut k, mut g) = (Kernel::new(), Green::new());
    let mut n = 0;
    let mut cases = 0;
    for &mode in &modes {
        for &caller in &callers {
            n += 1;
            let a = perm_case(&mut k, n, owner, mode, caller);
            let b = perm_case(&mut g, n, owner, mode, caller);
            assert_eq!(
                a, b,
                "mode {mode:o}, caller {caller:?} (kernel left, greenos right)"
            );
            // Pin a few facts, so that a kernel that let everything through
            // (e.g. a caller that kept CAP_IPC_OWNER) would fail here.
            let has = |l: &str| a.iter().any(|x| x == l);
            match (mode, caller) {
                (0o000, (1000, 100)) => {
                    assert!(
                        has("attach ro: err 13") && has("stat: err 13") && has("rmid: ok"),
                        "{a:?}"
                    )
                }
                (0o640, (1001, 100)) => {
                    assert!(
                        has("attach ro: ok") && has("attach rw: err 13") && has("rmid: err 1"),
                        "{a:?}"
                    )
                }
                (0o604, (1003, 0)) => {
                    assert!(has("attach ro: err 13"), "cgid 0 makes 1003 group: {a:?}")
                }
                (0o604, (1004, 300)) => {
                    assert!(has("attach ro: ok") && has("get req 600: err 13"), "{a:?}")
                }
                _ => {}
            }
            cases += 1;
        }
    }
    become_user(0, 0);
    eprintln!("perm_child: {cases} cases agree");
}

#[test]
fn differential_permissions_as_other_users() {
    if std::env::var(PERM_CHILD_ENV).is_ok() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "perm_child", "--nocapture", "--test-threads=1"])
        .env(PERM_CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(text.contains("perm_child: 50 cases agree"), "{text}");
}

#[test]
fn hugetlb_segments_are_refused() {
    let e = shmget(
        Key::PRIVATE,
        4096,
        IpcFlags(shm::SHM_HUGETLB) | IpcFlags::CREAT,
    )
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}

// ---------------------------------------------------------------------------
// A write through a read-only attach faults (LTP shmat01), as in Linux: the
// child (this binary re-run) writes and must die of SIGSEGV.

const RDONLY_CHILD_ENV: &str = "GREENOS_SHM_RDONLY_WRITE_CHILD";

#[test]
fn rdonly_write_child() {
    if std::env::var(RDONLY_CHILD_ENV).is_err() {
        return;
    }
    let id = shmget(Key::PRIVATE, 64, IpcFlags::CREAT | IpcFlags::mode(0o600)).unwrap();
    let m = shmat(id, ShmFlags::RDONLY).unwrap();
    eprintln!("rdonly child: writing");
    // SAFETY: the address is mapped (PROT_READ): the store faults and the
    // kernel kills this child process before it takes effect, which is what
    // the parent checks. No Rust reference to the byte exists.
    unsafe { std::ptr::write_volatile(m.as_mut_ptr(), 1) };
    eprintln!("rdonly child: the write went through");
}

#[test]
fn a_write_through_a_read_only_attach_faults() {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var(RDONLY_CHILD_ENV).is_ok() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rdonly_write_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RDONLY_CHILD_ENV, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rdonly child: writing"),
        "the child ran: {err}"
    );
    assert!(!err.contains("went through"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{:?}\n{err}",
        out.status
    );
}
