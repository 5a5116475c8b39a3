//! Per-CPU timers: a min-heap of deadlines owned by one worker.
//!
//! A task that sleeps or waits with a timeout arms a timer on the worker it
//! is running on; only that worker's thread touches the heap (the task code
//! runs on the worker's thread while it arms it). A timer does not point into
//! the waiter's stack: it holds the task and the generation of the wait it
//! was armed for (`Task::begin_timed_wait`). Firing a timer whose wait has
//! ended (the waiter was notified first, or woke and left) finds a newer
//! generation and does nothing, so cancelling a timer is free: stale entries
//! simply expire. This is the kernel's "timer wheel entries die on their own"
//! trade: no removal cost on the fast path, memory held until the deadline.
//! Before the worker publishes its next deadline or sleeps, stale entries at
//! the front are dropped (`purge_ended`), so they wake nobody.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::task::TaskRef;

/// One armed timer.
pub(crate) struct TimerEntry {
    /// Absolute deadline on the runtime clock (ns).
    pub(crate) deadline: u64,
    /// Arming order, so equal deadlines fire first-armed first.
    seq: u64,
    /// The waiting task.
    pub(crate) task: TaskRef,
    /// The wait generation the timer belongs to.
    pub(crate) gen: u64,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// A worker's timers.
#[derive(Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    next_seq: u64,
}

impl TimerHeap {
    /// Arms a timer for wait `gen` of `task` at `deadline`.
    pub(crate) fn arm(&mut self, deadline: u64, task: TaskRef, gen: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(TimerEntry {
            deadline,
            seq,
            task,
            gen,
        }));
    }

    /// Drops the timers at the front whose wait has ended (the waiter was
    /// woken first, or has begun a newer wait): they would fire as no-ops,
    /// but an idle CPU would wake up for each and the monitor would
    /// interrupt a busy one. A wait that ended never becomes current again
    /// (generations only grow), so dropping on a stale read is safe; a
    /// live-looking one is kept.
    pub(crate) fn purge_ended(&mut self) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if e.task.timed_wait_pending(e.gen) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<TimerEntry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.deadline <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Takes every timer out (shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = TimerEntry> + '_ {
        self.heap.drain().map(|Reverse(e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::TimerHeap;

    /// The heap fires in deadline order, equal deadlines in arming order,
    /// and holds back what is not due: the order one worker's sleepers
    /// wake in, checked without a clock.
    #[test]
    fn fires_in_deadline_order_ties_first_armed_first() {
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        rt.block_on(|| {
            let handles: Vec<_> = (0..6).map(|_| crate::spawn(|| ())).collect();
            let tasks: Vec<_> = handles
                .iter()
                .map(|h| h.task().task_ref().clone())
                .collect();
            let mut heap = TimerHeap::default();
            // (deadline, task index), armed in this order.
            let armed = [(50, 0), (10, 1), (30, 2), (10, 3), (70, 4), (30, 5)];
            for &(deadline, i) in &armed {
                heap.arm(deadline, tasks[i].clone(), i as u64);
            }
            assert_eq!(heap.next_deadline(), Some(10));
            let mut fired = Vec::new();
            // Nothing before its deadline: at 40, only those due by then.
            while let Some(e) = heap.pop_due(40) {
                fired.push((e.deadline, e.gen));
            }
            assert_eq!(fired, [(10, 1), (10, 3), (30, 2), (30, 5)]);
            assert_eq!(heap.next_deadline(), Some(50));
            while let Some(e) = heap.pop_due(u64::MAX) {
                fired.push((e.deadline, e.gen));
            }
            assert_eq!(
                fired,
                [(10, 1), (10, 3), (30, 2), (30, 5), (50, 0), (70, 4)]
            );
            assert_eq!(heap.next_deadline(), None);
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
