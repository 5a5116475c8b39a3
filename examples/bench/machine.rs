//! What the numbers were measured on: CPU model, cores, kernel, compiler.

use std::process::Command;

#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu_model: String,
    /// CPUs this process may use.
    pub usable_cpus: usize,
    /// `processor` entries in /proc/cpuinfo.
    pub online_cpus: usize,
    /// Packages, NUMA nodes, LLCs, cores and PUs from greenos's topology.
    pub topology: String,
    pub kernel: String,
    pub rustc: String,
    /// `vm.max_map_count`: bounds how many guard-paged stacks may exist.
    pub max_map_count: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let online_cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Machine {
            cpu_model,
            usable_cpus: crate::os::usable_cpus(),
            online_cpus,
            topology: match greenos::Topology::detect() {
                Ok(t) => format!(
                    "{} package(s), {} NUMA node(s), {} LLC(s), {} cores, {} PUs",
                    t.nr_packages(),
                    t.nr_nodes(),
                    t.nr_llcs(),
                    t.nr_cores(),
                    t.nr_pus()
                ),
                Err(e) => format!("topology unknown ({e})"),
            },
            kernel: uname(),
            rustc: rustc_version(),
            max_map_count: std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
        }
    }
}

fn uname() -> String {
    // SAFETY: `utsname` is plain old data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {} ({})",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine),
        field(&u.version)
    )
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
