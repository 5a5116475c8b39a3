//! `CpuSet`: an affinity mask over the runtime's CPUs (worker indices), with
//! the operations of `CPU_ZERO / CPU_SET / CPU_CLR / CPU_ISSET / CPU_COUNT`.
//!
//! Invariant: bit `i` of word `i / 64` stands for runtime CPU `i`; words past
//! the highest set bit may or may not exist (comparisons ignore them).

use std::fmt;

/// Upper bound on runtime CPUs a set can name, like the kernel's
/// `CPU_SETSIZE` (1024).
pub const CPU_SETSIZE: usize = 1024;

/// A set of runtime CPUs (worker indices).
#[derive(Clone, Default)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl CpuSet {
    /// The empty set (`CPU_ZERO`).
    pub fn new() -> CpuSet {
        CpuSet { words: Vec::new() }
    }

    /// Empties the set in place (`CPU_ZERO` on an existing set).
    pub fn zero(&mut self) {
        self.words.clear();
    }

    /// The set `{0, 1, .., n-1}`.
    pub fn all(n: usize) -> CpuSet {
        let mut s = CpuSet::new();
        for cpu in 0..n {
            s.set(cpu);
        }
        s
    }

    /// Adds `cpu` (`CPU_SET`). CPUs at or above [`CPU_SETSIZE`] are ignored,
    /// as the kernel macro ignores them.
    pub fn set(&mut self, cpu: usize) {
        if cpu >= CPU_SETSIZE {
            return;
        }
        let w = cpu / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (cpu % 64);
    }

    /// Removes `cpu` (`CPU_CLR`).
    pub fn clear(&mut self, cpu: usize) {
        if let Some(word) = self.words.get_mut(cpu / 64) {
            *word &= !(1 << (cpu % 64));
        }
    }

    /// Whether `cpu` is in the set (`CPU_ISSET`).
    pub fn is_set(&self, cpu: usize) -> bool {
        self.words
            .get(cpu / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// Number of CPUs in the set (`CPU_COUNT`).
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True if no CPU is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }

    /// The lowest CPU in the set.
    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }
}

impl CpuSet {
    /// Parses the kernel's CPU list format (`"0-3,8,10-11"`, as in sysfs
    /// `cpulist` files and `taskset -c`); an empty string (or only
    /// whitespace) is the empty set. CPUs at or above [`CPU_SETSIZE`] are
    /// ignored, as [`CpuSet::set`] ignores them.
    pub fn from_list(list: &str) -> Result<CpuSet, ParseCpuListError> {
        let mut s = CpuSet::new();
        let list = list.trim();
        if list.is_empty() {
            return Ok(s);
        }
        let bad = || ParseCpuListError {
            list: list.to_owned(),
        };
        for item in list.split(',') {
            let item = item.trim();
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
                None => (item.parse::<usize>(), item.parse::<usize>()),
            };
            let (lo, hi) = (lo.map_err(|_| bad())?, hi.map_err(|_| bad())?);
            if lo > hi {
                return Err(bad());
            }
            for cpu in lo..=hi.min(CPU_SETSIZE - 1) {
                s.set(cpu);
            }
        }
        Ok(s)
    }

    /// The CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        self.iter().filter(|&c| other.is_set(c)).collect()
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.iter().all(|c| other.is_set(c))
    }

    /// Adds every CPU of `other`.
    pub fn union_with(&mut self, other: &CpuSet) {
        for c in other.iter() {
            self.set(c);
        }
    }

    /// The set as a `libc::cpu_set_t` (for `sched_setaffinity(2)` on OS
    /// threads). CPUs the C type cannot hold are dropped.
    pub fn to_cpu_set_t(&self) -> libc::cpu_set_t {
        // SAFETY: `cpu_set_t` is a plain array of integers, for which the
        // all-zero bit pattern is valid (it is `CPU_ZERO`'s result).
        let mut raw: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for cpu in self.iter().take_while(|&c| c < bits) {
            // SAFETY: `cpu` is below the number of bits in `raw`, so the
            // macro's word index is in bounds.
            unsafe { libc::CPU_SET(cpu, &mut raw) };
        }
        raw
    }

    /// The CPUs set in a `libc::cpu_set_t` (below [`CPU_SETSIZE`]).
    pub fn from_cpu_set_t(raw: &libc::cpu_set_t) -> CpuSet {
        let bits = (8 * std::mem::size_of::<libc::cpu_set_t>()).min(CPU_SETSIZE);
        (0..bits)
            // SAFETY: `c` is below the number of bits in `raw`.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, raw) })
            .collect()
    }
}

impl From<&CpuSet> for libc::cpu_set_t {
    fn from(s: &CpuSet) -> libc::cpu_set_t {
        s.to_cpu_set_t()
    }
}

impl From<&libc::cpu_set_t> for CpuSet {
    fn from(raw: &libc::cpu_set_t) -> CpuSet {
        CpuSet::from_cpu_set_t(raw)
    }
}

#[cfg(feature = "hwloc")]
impl From<&CpuSet> for hwlocality::bitmap::Bitmap {
    /// An hwloc bitmap with the same indices set.
    fn from(s: &CpuSet) -> hwlocality::bitmap::Bitmap {
        let mut b = hwlocality::bitmap::Bitmap::new();
        for cpu in s.iter() {
            b.set(cpu);
        }
        b
    }
}

#[cfg(feature = "hwloc")]
impl From<&hwlocality::bitmap::Bitmap> for CpuSet {
    /// The indices set in an hwloc bitmap (below [`CPU_SETSIZE`]; an
    /// infinite bitmap is cut there).
    fn from(b: &hwlocality::bitmap::Bitmap) -> CpuSet {
        b.iter_set()
            .map(usize::from)
            .take_while(|&c| c < CPU_SETSIZE)
            .collect()
    }
}

#[cfg(feature = "hwloc")]
impl From<&CpuSet> for hwlocality::cpu::cpuset::CpuSet {
    /// An hwloc cpuset with the same indices set (runtime CPU numbers are
    /// not OS CPU numbers: map them through the runtime's PUs first when
    /// binding OS threads).
    fn from(s: &CpuSet) -> hwlocality::cpu::cpuset::CpuSet {
        let mut b = hwlocality::cpu::cpuset::CpuSet::new();
        for cpu in s.iter() {
            b.set(cpu);
        }
        b
    }
}

#[cfg(feature = "hwloc")]
impl From<&hwlocality::cpu::cpuset::CpuSet> for CpuSet {
    /// The indices set in an hwloc cpuset (below [`CPU_SETSIZE`]).
    fn from(b: &hwlocality::cpu::cpuset::CpuSet) -> CpuSet {
        b.iter_set()
            .map(usize::from)
            .take_while(|&c| c < CPU_SETSIZE)
            .collect()
    }
}

/// A CPU list string that is not in the kernel's `0-3,8` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCpuListError {
    list: String,
}

impl fmt::Display for ParseCpuListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid CPU list {:?} (expected e.g. \"0-3,8\")",
            self.list
        )
    }
}

impl std::error::Error for ParseCpuListError {}

impl From<ParseCpuListError> for std::io::Error {
    fn from(e: ParseCpuListError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl std::str::FromStr for CpuSet {
    type Err = ParseCpuListError;
    fn from_str(s: &str) -> Result<CpuSet, ParseCpuListError> {
        CpuSet::from_list(s)
    }
}

/// The kernel's CPU list format (`%*pbl`): `0-3,8,10-11`; empty for the
/// empty set.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut it = self.iter().peekable();
        let mut first = true;
        while let Some(lo) = it.next() {
            let mut hi = lo;
            while it.peek() == Some(&(hi + 1)) {
                hi = it.next().unwrap_or(hi);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if hi == lo {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl PartialEq for CpuSet {
    fn eq(&self, other: &CpuSet) -> bool {
        let n = self.words.len().max(other.words.len());
        (0..n).all(|i| self.words.get(i).unwrap_or(&0) == other.words.get(i).unwrap_or(&0))
    }
}

impl Eq for CpuSet {}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        let mut s = CpuSet::new();
        for cpu in iter {
            s.set(cpu);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_operations() {
        let mut s = CpuSet::new();
        assert_eq!(s.count(), 0);
        s.set(0);
        s.set(2);
        s.set(130);
        assert!(s.is_set(0) && s.is_set(2) && s.is_set(130));
        assert!(!s.is_set(1));
        assert_eq!(s.count(), 3);
        s.clear(2);
        assert!(!s.is_set(2));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 130]);
        s.set(CPU_SETSIZE);
        assert_eq!(s.count(), 2);
        assert_eq!(CpuSet::all(3), [0, 1, 2].into_iter().collect());
        s.zero();
        assert_eq!((s.count(), s.is_empty(), s.is_set(0)), (0, true, false));
        assert_eq!(s, CpuSet::new());
    }

    #[test]
    fn list_format_round_trips() {
        let s = CpuSet::from_list("0-3,8, 10-11\n").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::from_list("").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::new().to_string(), "");
        assert_eq!("5".parse::<CpuSet>().unwrap().to_string(), "5");
        for bad in ["a", "3-1", "1,,2", "-1", "1-"] {
            let e = CpuSet::from_list(bad).unwrap_err();
            assert!(e.to_string().contains("invalid CPU list"), "{bad}: {e}");
            let io: std::io::Error = e.into();
            assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn set_algebra() {
        let a = CpuSet::from_list("0-5").unwrap();
        let b = CpuSet::from_list("4-9").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "4-5");
        assert!(CpuSet::from_list("1,3").unwrap().is_subset(&a));
        assert!(!b.is_subset(&a));
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u, CpuSet::all(10));
    }

    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_bitmap_round_trip() {
        let s: CpuSet = [0, 2, 63, 64, 1000].into_iter().collect();
        let b = hwlocality::bitmap::Bitmap::from(&s);
        assert!(b.is_set(63) && !b.is_set(1));
        assert_eq!(b.weight(), Some(5));
        assert_eq!(CpuSet::from(&b), s);
        let c = hwlocality::cpu::cpuset::CpuSet::from(&s);
        assert_eq!(CpuSet::from(&c), s);
        // An infinite bitmap is cut at CPU_SETSIZE.
        let full = hwlocality::bitmap::Bitmap::full();
        assert_eq!(CpuSet::from(&full), CpuSet::all(CPU_SETSIZE));
    }

    #[test]
    fn cpu_set_t_round_trip() {
        let s: CpuSet = [0, 2, 63, 64, 1023].into_iter().collect();
        let raw = libc::cpu_set_t::from(&s);
        // SAFETY: CPUs 1 and 2 are within `cpu_set_t`.
        assert!(unsafe { libc::CPU_ISSET(2, &raw) && !libc::CPU_ISSET(1, &raw) });
        // SAFETY: `raw` is a valid `cpu_set_t`.
        assert_eq!(unsafe { libc::CPU_COUNT(&raw) }, 5);
        assert_eq!(CpuSet::from(&raw), s);
        // The kernel accepts and returns the same layout: this thread's
        // mask read through libc converts to a non-empty set.
        // SAFETY: all-zero is a valid `cpu_set_t`.
        let mut mine: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `mine` is a valid, writable `cpu_set_t` of the size passed.
        let rc = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mine)
        };
        assert_eq!(rc, 0);
        assert!(CpuSet::from_cpu_set_t(&mine).count() >= 1);
    }
}
