//! The pid table: every live task of a runtime, by pid.
//!
//! The kernel allocates pids cyclically from an IDR up to `pid_max` and
//! skips numbers still in use; so does this table, with `PID_MAX` =
//! 4,194,304 (`PID_MAX_LIMIT` on 64-bit, include/linux/threads.h). A pid's
//! slot is found by indexing, not hashing: a two-level array of 1024 pages of
//! 4096 slots, pages allocated on first use and kept (at most 32 MiB when
//! every pid has been used once). Spawning is lock-free:
//! 1. Take a pid from this CPU's batch (`PID_BATCH` numbers at a time from
//!    the shared counter, as Go's `goidcache` does), so CPUs spawning at
//!    once do not fight over one counter.
//! 2. Reserve its slot with a CAS `EMPTY -> RESERVED`; if the pid is still
//!    in use (after a wrap) try the next one.
//! 3. Store the task (`RESERVED -> ptr`). The table owns one strong count.
//!
//! A slot word holds a `*const Task` (from `Arc::into_raw`) with bit 0 as a
//! tiny lock: `get` sets it while it clones the `Arc`, so `remove` (which
//! swaps the word to `EMPTY` and then drops the table's count) can never
//! free a task that a reader is about to clone; `remove` spins while the bit
//! is set, for the few nanoseconds a clone takes.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::task::{Task, TaskRef};
use crate::Pid;

/// Pids wrap after this (exclusive), like the kernel's `pid_max` limit.
pub(crate) const PID_MAX: u64 = 1 << 22;
/// First pid handed out after a wrap (pid 1 is init, reserved for `block_on`).
const FIRST_PID: u64 = 2;
/// Pids a CPU takes from the shared counter at once.
pub(crate) const PID_BATCH: u64 = 64;

const PAGE_SHIFT: u32 = 12;
const PAGE_SLOTS: usize = 1 << PAGE_SHIFT;
const PAGES: usize = (PID_MAX as usize) >> PAGE_SHIFT;

const EMPTY: usize = 0;
const RESERVED: usize = 2;
const LOCK_BIT: usize = 1;

type Page = [AtomicUsize; PAGE_SLOTS];

/// Slots per 64-byte cache line.
const LINE_SLOTS: usize = 8;

/// Where `pid` lives in its page: consecutive pids are spread one cache
/// line apart (a bijection on `0..PAGE_SLOTS`), so the CPU spawning pid
/// n + 1 does not write the line another CPU is clearing pid n from as that
/// task exits (false sharing measured on the spawn+join benchmark).
#[inline]
fn slot_in_page(pid: u64) -> usize {
    let low = (pid as usize) & (PAGE_SLOTS - 1);
    let lines = PAGE_SLOTS / LINE_SLOTS;
    (low % lines) * LINE_SLOTS + low / lines
}

/// Shards of the live-task count. A spawn counts up on the spawner's
/// shard and the exit counts down on the exiting CPU's: one shared counter
/// bounced its cache line between the spawner and every CPU that ran a
/// child, a miss per spawn.
const LIVE_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard of the live-task counts (assigned round robin).
    static LIVE_SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % LIVE_SHARDS
    };
}

/// Every live task of a runtime, by pid.
pub(crate) struct PidTable {
    pages: Box<[AtomicPtr<Page>]>,
    /// The shared pid counter (CPUs take `PID_BATCH` at a time). On its own
    /// cache line, like `live`: workers read the runtime's other fields on
    /// every switch.
    next: CachePadded<AtomicU64>,
    /// Live tasks: insertions minus removals, per shard (wrapping; only the
    /// sum means anything).
    live: Box<[CachePadded<AtomicUsize>]>,
}

impl PidTable {
    pub(crate) fn new() -> PidTable {
        PidTable {
            pages: (0..PAGES)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            next: CachePadded::new(AtomicU64::new(0)),
            live: (0..LIVE_SHARDS)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// The slot of `pid`, allocating its page if needed (for reservations).
    fn slot(&self, pid: u64) -> Option<&AtomicUsize> {
        if pid >= PID_MAX {
            return None;
        }
        let page = &self.pages[(pid >> PAGE_SHIFT) as usize];
        let mut p = page.load(Ordering::Acquire);
        if p.is_null() {
            // Built on the heap: a 32 KiB array must never pass through the
            // (small) stack of the task that spawns.
            let slots: Box<[AtomicUsize]> =
                (0..PAGE_SLOTS).map(|_| AtomicUsize::new(EMPTY)).collect();
            let fresh: Box<Page> = slots.try_into().expect("PAGE_SLOTS slots");
            let fresh = Box::into_raw(fresh);
            match page.compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => p = fresh,
                Err(won) => {
                    // SAFETY: `fresh` came from Box::into_raw just above and
                    // was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    p = won;
                }
            }
        }
        // SAFETY: pages are never freed before the table; `p` is non-null.
        Some(unsafe { &(*p)[slot_in_page(pid)] })
    }

    /// The slot of `pid` if its page exists (lookups never allocate).
    fn existing_slot(&self, pid: u64) -> Option<&AtomicUsize> {
        if pid >= PID_MAX {
            return None;
        }
        let p = self.pages[(pid >> PAGE_SHIFT) as usize].load(Ordering::Acquire);
        // SAFETY: pages are never freed before the table.
        (!p.is_null()).then(|| unsafe { &(*p)[slot_in_page(pid)] })
    }

    /// Takes the next batch of candidate pids: `[start, start + PID_BATCH)`
    /// counted modulo the pid space.
    pub(crate) fn take_batch(&self) -> u64 {
        self.next.fetch_add(PID_BATCH, Ordering::Relaxed)
    }

    /// Maps a counter value to a pid in `[FIRST_PID, PID_MAX)`.
    pub(crate) fn counter_to_pid(n: u64) -> u64 {
        FIRST_PID + n % (PID_MAX - FIRST_PID)
    }

    /// Reserves `pid` if free. Returns whether it did.
    pub(crate) fn try_reserve(&self, pid: Pid) -> bool {
        self.slot(pid.0).is_some_and(|s| {
            s.compare_exchange(EMPTY, RESERVED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Gives back a reserved pid that was never filled.
    pub(crate) fn unreserve(&self, pid: Pid) {
        if let Some(s) = self.existing_slot(pid.0) {
            let _ = s.compare_exchange(RESERVED, EMPTY, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Fills a reserved slot with its task.
    pub(crate) fn insert(&self, task: TaskRef) {
        let pid = task.pid.0;
        let ptr = Arc::into_raw(task) as usize;
        debug_assert_eq!(ptr & 3, 0, "Task is at least 4-byte aligned");
        let s = self.slot(pid).expect("inserted pid is below PID_MAX");
        let prev = s.swap(ptr, Ordering::AcqRel);
        debug_assert_eq!(prev, RESERVED, "pid {pid} was not reserved");
        self.live_shard().fetch_add(1, Ordering::Relaxed);
    }

    /// The calling thread's shard of the live count.
    #[inline]
    fn live_shard(&self) -> &AtomicUsize {
        &self.live[LIVE_SHARD.with(|s| *s)]
    }

    /// Waits out a reader's lock bit, then swaps the slot's task pointer for
    /// `next(ptr)`. Returns the pointer, or None if the slot holds no task.
    fn take_slot(s: &AtomicUsize, next: impl Fn(usize) -> usize) -> Option<usize> {
        let mut cur = s.load(Ordering::Acquire);
        loop {
            if cur == EMPTY || cur == RESERVED {
                return None;
            }
            if cur & LOCK_BIT != 0 {
                std::hint::spin_loop();
                cur = s.load(Ordering::Acquire);
                continue;
            }
            match s.compare_exchange_weak(cur, next(cur), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(cur),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Removes a task by pid.
    pub(crate) fn remove(&self, pid: Pid) -> Option<TaskRef> {
        let s = self.existing_slot(pid.0)?;
        let ptr = Self::take_slot(s, |_| EMPTY)?;
        self.live_shard().fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the word held a pointer from Arc::into_raw (the table's
        // count), and we took it out exactly once.
        Some(unsafe { Arc::from_raw(ptr as *const Task) })
    }

    /// Looks a task up by pid.
    pub(crate) fn get(&self, pid: Pid) -> Option<TaskRef> {
        let s = self.existing_slot(pid.0)?;
        let ptr = Self::take_slot(s, |p| p | LOCK_BIT)?;
        let t = ptr as *const Task;
        // SAFETY: while our lock bit is set, `remove` cannot take the table's
        // count, so the task is alive; we add a count of our own.
        let r = unsafe {
            Arc::increment_strong_count(t);
            Arc::from_raw(t)
        };
        s.store(ptr, Ordering::Release);
        Some(r)
    }

    /// Number of live tasks.
    pub(crate) fn len(&self) -> usize {
        self.live
            .iter()
            .fold(0usize, |n, s| n.wrapping_add(s.load(Ordering::Relaxed)))
    }

    /// Every live task, in pid order (each looked up as `get` does).
    pub(crate) fn snapshot_all(&self) -> Vec<TaskRef> {
        let mut out = Vec::new();
        for (pi, page) in self.pages.iter().enumerate() {
            if page.load(Ordering::Acquire).is_null() {
                continue;
            }
            for i in 0..PAGE_SLOTS {
                let pid = ((pi << PAGE_SHIFT) | i) as u64;
                if let Some(t) = self.get(Pid(pid)) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Removes and returns every task.
    pub(crate) fn drain_all(&self) -> Vec<TaskRef> {
        let mut out = Vec::new();
        for (pi, page) in self.pages.iter().enumerate() {
            if page.load(Ordering::Acquire).is_null() {
                continue;
            }
            for i in 0..PAGE_SLOTS {
                let pid = ((pi << PAGE_SHIFT) | i) as u64;
                if let Some(t) = self.remove(Pid(pid)) {
                    out.push(t);
                }
            }
        }
        out
    }
}

impl Drop for PidTable {
    fn drop(&mut self) {
        for t in self.drain_all() {
            drop(t);
        }
        for page in self.pages.iter() {
            let p = page.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: pages come from Box::into_raw and are freed once.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_layout_is_a_bijection_that_spreads_neighbours() {
        let mut seen = vec![false; PAGE_SLOTS];
        for pid in 0..PAGE_SLOTS as u64 {
            let s = slot_in_page(pid);
            assert!(!seen[s], "slot {s} used twice");
            seen[s] = true;
            if pid > 0 {
                let prev = slot_in_page(pid - 1);
                assert_ne!(
                    s / LINE_SLOTS,
                    prev / LINE_SLOTS,
                    "pids {pid}-1 share a line"
                );
            }
        }
    }

    #[test]
    fn counter_wraps_into_pid_space() {
        assert_eq!(PidTable::counter_to_pid(0), 2);
        assert_eq!(PidTable::counter_to_pid(PID_MAX - 3), PID_MAX - 1);
        assert_eq!(PidTable::counter_to_pid(PID_MAX - 2), 2);
    }

    #[test]
    fn reserve_is_exclusive_and_reusable() {
        let t = PidTable::new();
        assert!(t.try_reserve(Pid(7)));
        assert!(!t.try_reserve(Pid(7)));
        t.unreserve(Pid(7));
        assert!(t.try_reserve(Pid(7)));
        assert!(!t.try_reserve(Pid(PID_MAX)));
        assert!(t.get(Pid(7)).is_none());
        assert!(t.remove(Pid(7)).is_none());
        // Looking up a pid in a page nobody used allocates nothing.
        assert!(t.get(Pid(PID_MAX - 1)).is_none());
        assert!(t.pages[(PID_MAX as usize - 1) >> PAGE_SHIFT]
            .load(Ordering::Relaxed)
            .is_null());
    }
}

#[cfg(test)]
mod stress {
    use super::*;
    use crate::executor::affinity::TaskMask;
    use crate::executor::task::{TaskEntry, TaskInit};
    use std::sync::atomic::AtomicBool;

    struct Nop;
    impl TaskEntry for Nop {
        fn run(&self) {}
        fn cancel(&self) {}
    }

    fn task(pid: u64) -> TaskRef {
        Task::new(
            TaskInit {
                pid: Pid(pid),
                rt_id: 0,
                name: None,
                stack_size: 16 << 10,
                uid: 0,
                gid: 0,
                nice: 0,
                policy: crate::sched::SchedPolicy::Normal,
                slice_ns: 0,
                cpu: 0,
                allowed: TaskMask::new(None, 1),
                pinned: false,
                ppid: 0,
                sig: Default::default(),
            },
            Arc::new(Nop),
        )
    }

    /// Readers `get` a pid while a writer removes and re-inserts it: a
    /// reader must never see a freed task (the lock bit holds `remove` off
    /// while a reader clones), and every task must be freed exactly once
    /// (strong counts end at one: ours).
    #[test]
    fn get_races_remove_and_insert() {
        const ROUNDS: usize = 20_000;
        let table = Arc::new(PidTable::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, stop) = (table.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(task) = t.get(Pid(5)) {
                            assert_eq!(task.pid, Pid(5));
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        let mine: Vec<TaskRef> = (0..ROUNDS).map(|_| task(5)).collect();
        for tk in &mine {
            assert!(table.try_reserve(Pid(5)));
            table.insert(tk.clone());
            let back = table.remove(Pid(5)).expect("inserted");
            assert!(Arc::ptr_eq(&back, tk));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        for tk in &mine {
            assert_eq!(
                Arc::strong_count(tk),
                1,
                "a count leaked or was dropped twice"
            );
        }
        assert_eq!(table.len(), 0);
    }
}
