//! The default number of worker CPUs, container-aware as Go 1.25's default
//! GOMAXPROCS is: the CPUs in the process's affinity mask, lowered to the
//! cgroup CPU bandwidth limit when one is set.
//!
//! The limit is `quota / period` from cgroup v2 `cpu.max` (`"max 100000"`
//! means none) or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
//! (quota `-1` means none), read from the process's cgroup (found through
//! `/proc/self/cgroup` and `/proc/self/mountinfo`) and every ancestor up to
//! the mount root, keeping the smallest: a parent's limit binds its
//! children. As Go does, the limit is rounded up to whole CPUs and never
//! taken below 2 (a fractional limit still lets two threads run in bursts),
//! and it only ever lowers the affinity count.

use std::path::{Path, PathBuf};

/// A cgroup v2 `cpu.max` value: `Some(Some(cpus))` for a limit,
/// `Some(None)` for `max`, `None` if malformed.
pub(crate) fn parse_cpu_max(s: &str) -> Option<Option<f64>> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = match it.next() {
        Some(p) => p.parse().ok()?,
        None => 100_000.0, // the kernel's default period when only the quota is written
    };
    if it.next().is_some() || period <= 0.0 {
        return None;
    }
    if quota == "max" {
        return Some(None);
    }
    let q: f64 = quota.parse().ok()?;
    (q > 0.0).then_some(Some(q / period))
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` contents, in the
/// same encoding as [`parse_cpu_max`] (quota `-1`: no limit).
pub(crate) fn parse_cfs(quota: &str, period: &str) -> Option<Option<f64>> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    if q < 0 {
        return Some(None);
    }
    (q > 0 && p > 0).then_some(Some(q as f64 / p as f64))
}

/// Which cgroup hierarchy holds the CPU controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupPath {
    /// Unified hierarchy: the process's path from `0::/path`.
    V2(String),
    /// Legacy hierarchy with the `cpu` controller: the process's path.
    V1(String),
}

/// The process's CPU cgroup from `/proc/self/cgroup` contents: the v1 line
/// naming the `cpu` controller if there is one, else the v2 (`0::`) line.
pub(crate) fn parse_proc_cgroup(s: &str) -> Option<CgroupPath> {
    let mut v2 = None;
    for line in s.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = Some(CgroupPath::V2(path.to_owned()));
        } else if ctrls.split(',').any(|c| c == "cpu") {
            return Some(CgroupPath::V1(path.to_owned()));
        }
    }
    v2
}

/// From `/proc/self/mountinfo` contents, the `(root, mount point)` of the
/// hierarchy `which` (cgroup2, or the v1 mount with the `cpu` controller).
pub(crate) fn find_mount(mountinfo: &str, v2: bool) -> Option<(String, PathBuf)> {
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint options [optional...] - fstype source superopts
        let (pre, post) = line.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.is_empty() {
            continue;
        }
        let fstype = post[0];
        let hit = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup"
                && post
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|c| c == "cpu"))
        };
        if hit {
            return Some((unescape(pre[3]), PathBuf::from(unescape(pre[4]))));
        }
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories from the process's cgroup up to the mount point.
fn cgroup_dirs(root: &str, mount: &Path, path: &str) -> Vec<PathBuf> {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    let mut dirs = Vec::new();
    let mut p = mount.join(rel);
    loop {
        dirs.push(p.clone());
        if p == mount || !p.pop() || !p.starts_with(mount) {
            break;
        }
    }
    dirs
}

/// The cgroup CPU bandwidth limit of this process in CPUs (`quota /
/// period`, the smallest along its cgroup's ancestry), or `None` when no
/// limit is set or cgroups cannot be read.
pub fn cpu_quota_limit() -> Option<f64> {
    let cg = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut limit: Option<f64> = None;
    let mut take = |l: Option<f64>| {
        if let Some(l) = l {
            limit = Some(limit.map_or(l, |m: f64| m.min(l)));
        }
    };
    match cg {
        CgroupPath::V2(path) => {
            let (root, mount) = find_mount(&mountinfo, true)?;
            for d in cgroup_dirs(&root, &mount, &path) {
                if let Ok(s) = std::fs::read_to_string(d.join("cpu.max")) {
                    take(parse_cpu_max(&s).flatten());
                }
            }
        }
        CgroupPath::V1(path) => {
            let (root, mount) = find_mount(&mountinfo, false)?;
            for d in cgroup_dirs(&root, &mount, &path) {
                let q = std::fs::read_to_string(d.join("cpu.cfs_quota_us"));
                let p = std::fs::read_to_string(d.join("cpu.cfs_period_us"));
                if let (Ok(q), Ok(p)) = (q, p) {
                    take(parse_cfs(&q, &p).flatten());
                }
            }
        }
    }
    limit
}

/// Go 1.25's rule: `min(affinity_cpus, max(2, ceil(limit)))` when a limit
/// is set, else `affinity_cpus` (at least 1).
pub(crate) fn adjust(affinity_cpus: usize, limit: Option<f64>) -> usize {
    let n = affinity_cpus.max(1);
    match limit {
        Some(l) if l.is_finite() && l > 0.0 => {
            let l = (l.ceil() as usize).max(2);
            n.min(l)
        }
        _ => n,
    }
}

/// The CPUs in this process's affinity mask (at least 1).
pub(crate) fn affinity_cpus() -> crate::CpuSet {
    // SAFETY: all-zero is a valid `cpu_set_t` (CPU_ZERO).
    let mut raw: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `raw` is a valid, writable `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut raw) };
    let set = if rc == 0 {
        crate::CpuSet::from_cpu_set_t(&raw)
    } else {
        crate::CpuSet::new()
    };
    if set.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        crate::CpuSet::all(n)
    } else {
        set
    }
}

/// The default worker count: the CPUs in the process's affinity mask,
/// capped by the cgroup CPU quota as Go 1.25 caps GOMAXPROCS (see the
/// module docs).
pub fn default_worker_count() -> usize {
    adjust(affinity_cpus().count(), cpu_quota_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_values() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("150000 100000"), Some(Some(1.5)));
        assert_eq!(parse_cpu_max("50000 100000"), Some(Some(0.5)));
        assert_eq!(parse_cpu_max("200000"), Some(Some(2.0)));
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("abc 100000"), None);
        assert_eq!(parse_cpu_max("100 0"), None);
        assert_eq!(parse_cpu_max("1 2 3"), None);
    }

    #[test]
    fn cfs_values() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Some(None));
        assert_eq!(parse_cfs("250000", "100000"), Some(Some(2.5)));
        assert_eq!(parse_cfs("x", "100000"), None);
    }

    #[test]
    fn go_rounding() {
        // Rounded up, at least 2, never above the affinity count.
        assert_eq!(adjust(8, Some(1.5)), 2);
        assert_eq!(adjust(8, Some(0.1)), 2);
        assert_eq!(adjust(8, Some(2.01)), 3);
        assert_eq!(adjust(8, Some(4.0)), 4);
        assert_eq!(adjust(8, None), 8);
        assert_eq!(adjust(1, Some(0.5)), 1);
        assert_eq!(adjust(3, Some(16.0)), 3);
        assert_eq!(adjust(0, None), 1);
    }

    #[test]
    fn proc_self_cgroup() {
        let v2 = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2),
            Some(CgroupPath::V2(
                "/user.slice/user-1000.slice/session-3.scope".into()
            ))
        );
        let v1 = "12:pids:/\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(v1),
            Some(CgroupPath::V1("/docker/abc".into()))
        );
        assert_eq!(parse_proc_cgroup("garbage"), None);
    }

    #[test]
    fn mountinfo_lines() {
        let mi = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:4 - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 /kube /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            find_mount(mi, true),
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup")))
        );
        assert_eq!(
            find_mount(mi, false),
            Some(("/kube".into(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")))
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn hierarchy_walk_and_limit_files() {
        let dirs = cgroup_dirs("/", Path::new("/sys/fs/cgroup"), "/a/b");
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/a/b"),
                PathBuf::from("/sys/fs/cgroup/a"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        let dirs = cgroup_dirs("/kube", Path::new("/mnt"), "/kube/pod");
        assert_eq!(dirs, vec![PathBuf::from("/mnt/pod"), PathBuf::from("/mnt")]);
    }

    #[test]
    fn this_process_default_is_sane() {
        let n = default_worker_count();
        assert!(n >= 1 && n <= affinity_cpus().count(), "{n}");
    }
}
