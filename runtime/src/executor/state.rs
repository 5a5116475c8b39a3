//! The task state word: who owns a task's right to run.
//!
//! One `AtomicU32` per task. A task is always in exactly one of:
//!
//! | state      | meaning                                                         | who may change it |
//! |------------|-----------------------------------------------------------------|-------------------|
//! | `RUNNABLE` | queued on a run queue, running on a CPU, or switching out to sleep | its worker (-> `PARKED`, after a park's switch), wakers (set `NOTIFIED`) |
//! | `PARKED`   | fully switched out; registers saved; no CPU holds it            | one waker (-> `RUNNABLE`, and that waker enqueues it) |
//!
//! `NOTIFIED` is a flag beside `RUNNABLE`: a wakeup arrived while the task
//! could not be enqueued (it still owned a CPU). The next `park` consumes it
//! and returns at once; a worker that finds it while completing a park
//! re-queues the task instead of parking it.
//!
//! Why a task that decided to sleep is still `RUNNABLE` (reference/coroutines.md
//! §4.1): it may be made runnable again only after its switch out has
//! completed, or two CPUs would run one stack. The window between "decided
//! to sleep" and "registers saved" (the kernel's `TASK_INTERRUPTIBLE` before
//! `schedule()` dequeues the task) is the last part of its run: a wakeup in
//! it must not enqueue, and must not be lost either, which is exactly what
//! a wakeup of a running task does (it sets `NOTIFIED`). The park takes
//! effect in the worker's `finish_park`, a CAS `RUNNABLE -> PARKED`; only
//! `PARKED -> RUNNABLE` enqueues, and it is a CAS, so exactly one waker wins
//! it.

use std::sync::atomic::{AtomicU32, Ordering};

/// Queued or running; owned by the scheduler.
pub(crate) const RUNNABLE: u32 = 0;
/// Asleep, switched out; the waker that moves it to `RUNNABLE` enqueues it.
pub(crate) const PARKED: u32 = 2;
/// Flag: a wakeup arrived while the task was `RUNNABLE`.
pub(crate) const NOTIFIED: u32 = 4;
/// Mask of the base states.
const BASE: u32 = 3;

/// What `begin_park` decided.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BeginPark {
    /// No wakeup is pending: switch out (the worker completes the park).
    Switch,
    /// A wakeup was pending; it is consumed: do not switch.
    Notified,
}

/// What the worker found when completing a park after the switch.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FinishPark {
    /// The task is `PARKED`; the worker gives up its claim.
    Parked,
    /// A wakeup arrived during the switch; the task is `RUNNABLE` again and
    /// the worker must re-queue it.
    Notified,
}

/// What a wakeup did.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The task was `PARKED`; the caller now owns enqueuing it.
    Enqueue,
    /// The task still owned a CPU (or was already notified/queued): nothing
    /// to enqueue.
    Noop,
}

/// A task's state word.
#[derive(Debug)]
pub(crate) struct TaskState(AtomicU32);

impl TaskState {
    pub(crate) const fn new() -> TaskState {
        TaskState(AtomicU32::new(RUNNABLE))
    }

    /// Called by the running task before it switches out to sleep.
    ///
    /// Without a pending wakeup this writes nothing: the task stays
    /// `RUNNABLE` while it switches out (see the module doc), and wakers
    /// meanwhile set
    /// `NOTIFIED`, as they would for a running task. The park takes effect
    /// only at the worker's `finish_park`, a CAS that no wakeup can slip
    /// past: a waker's RMW on this word comes either before it (the CAS
    /// fails on `NOTIFIED`, the task is re-queued) or after it (the waker
    /// finds `PARKED` and enqueues). So a park costs one locked
    /// instruction, not two.
    #[inline]
    pub(crate) fn begin_park(&self) -> BeginPark {
        let cur = self.0.load(Ordering::Acquire);
        if cur & NOTIFIED == 0 {
            debug_assert_eq!(cur, RUNNABLE, "begin_park from state {cur}");
            return BeginPark::Switch;
        }
        debug_assert_eq!(cur, RUNNABLE | NOTIFIED, "begin_park from state {cur}");
        // Consume the flag with a read-modify-write, not a plain store: an
        // RMW reads the latest value, so it synchronizes with every waker
        // whose own RMW on this word came before (see `wake`), and the
        // caller's re-check then sees what those wakers published.
        self.0.swap(RUNNABLE, Ordering::AcqRel);
        BeginPark::Notified
    }

    /// Called by the worker after the task's registers are saved.
    pub(crate) fn finish_park(&self) -> FinishPark {
        match self
            .0
            .compare_exchange(RUNNABLE, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => FinishPark::Parked,
            Err(cur) => {
                debug_assert_eq!(cur, RUNNABLE | NOTIFIED, "finish_park from state {cur}");
                // An RMW, as in `begin_park`.
                self.0.swap(RUNNABLE, Ordering::AcqRel);
                FinishPark::Notified
            }
        }
    }

    /// Undoes a park in progress (switched out, not yet `PARKED`, notified
    /// or not): the task's own worker resumes it at once instead of
    /// completing the park (a lent scheduling context coming back to its
    /// lender). A notification is consumed, as by
    /// [`finish_park`](Self::finish_park) returning `Notified`: the task
    /// re-checks what it waits for when it resumes. Only the worker that
    /// holds the parking task may call it; wakers meanwhile only ever set
    /// NOTIFIED (the task is not PARKED), so none can have taken it over.
    pub(crate) fn cancel_park(&self) {
        let cur = self.0.load(Ordering::Acquire);
        debug_assert_eq!(cur & BASE, RUNNABLE, "cancel_park from state {cur}");
        if cur & NOTIFIED != 0 {
            // An RMW, as in `begin_park`.
            self.0.swap(RUNNABLE, Ordering::AcqRel);
        }
    }

    /// A wakeup. Exactly one concurrent caller gets `Enqueue` for a parked
    /// task.
    pub(crate) fn wake(&self) -> Wake {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            // Already notified: still write the word (the same value). A
            // waker that only read the flag would not be ordered before
            // the task consuming it, and the task could then miss what
            // this waker published before waking (its wait node's
            // NOTIFIED status) and sleep for good: a store-buffering race
            // that lost wakeups under load (a stale flag from an earlier
            // spurious wakeup is common with wake-all queues).
            let next = match cur & BASE {
                PARKED => RUNNABLE,
                _ => cur | NOTIFIED,
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == RUNNABLE => return Wake::Enqueue,
                Ok(_) => return Wake::Noop,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes a parked task (PARKED -> RUNNABLE) and nothing else: unlike
    /// [`wake`](Self::wake), a task that is not parked is left as it is
    /// (no `NOTIFIED`). True: the caller owns enqueuing it, as after a
    /// `wake` that returned `Enqueue`.
    #[inline]
    pub(crate) fn try_claim(&self) -> bool {
        self.0
            .compare_exchange(PARKED, RUNNABLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The raw word (for tests and diagnostics such as task metrics).
    pub(crate) fn load(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn park_then_wake_enqueues_once() {
        let s = TaskState::new();
        assert_eq!(s.begin_park(), BeginPark::Switch);
        assert_eq!(s.finish_park(), FinishPark::Parked);
        assert_eq!(s.wake(), Wake::Enqueue);
        assert_eq!(s.wake(), Wake::Noop);
        assert_eq!(s.load(), RUNNABLE | NOTIFIED);
        assert_eq!(s.begin_park(), BeginPark::Notified);
        assert_eq!(s.load(), RUNNABLE);
    }

    #[test]
    fn wake_during_switch_is_not_lost() {
        let s = TaskState::new();
        assert_eq!(s.begin_park(), BeginPark::Switch);
        assert_eq!(s.wake(), Wake::Noop);
        assert_eq!(s.finish_park(), FinishPark::Notified);
        assert_eq!(s.load(), RUNNABLE);
    }

    /// The stress harness: a "task" thread parks `ROUNDS` times, a
    /// "worker" (the same thread) completes each park, and `racers`
    /// threads call `take(i, state)` in a loop, which returns whether racer
    /// `i` took the task (a wakeup that returned `Enqueue`, a won claim).
    /// Every park must end (a lost wakeup hangs), and no two takers may
    /// take one park, nor anyone a task that is not parked (counted by the
    /// run token).
    fn race_parks(racers: usize, take: impl Fn(usize, &TaskState) -> bool + Send + Sync + 'static) {
        const ROUNDS: usize = 20_000;
        let s = Arc::new(TaskState::new());
        // 1 while the task holds its run token (running or queued).
        let tokens = Arc::new(AtomicUsize::new(1));
        let rounds_done = Arc::new(AtomicUsize::new(0));
        let take = Arc::new(take);
        let threads: Vec<_> = (0..racers)
            .map(|i| {
                let (s, tokens, done, take) =
                    (s.clone(), tokens.clone(), rounds_done.clone(), take.clone());
                std::thread::spawn(move || {
                    while done.load(Ordering::Acquire) < ROUNDS {
                        if take(i, &s) {
                            let prev = tokens.fetch_add(1, Ordering::AcqRel);
                            assert_eq!(prev, 0, "a park taken twice, or a task taken unparked");
                        }
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for _ in 0..ROUNDS {
            if s.begin_park() == BeginPark::Switch {
                // The "worker" gives up the run token, then completes the
                // switch (after PARKED it may not touch the task).
                tokens.fetch_sub(1, Ordering::AcqRel);
                match s.finish_park() {
                    FinishPark::Parked => {
                        // Wait to be taken: a lost wakeup hangs here.
                        while tokens.load(Ordering::Acquire) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                    FinishPark::Notified => {
                        let prev = tokens.fetch_add(1, Ordering::AcqRel);
                        assert_eq!(prev, 0, "taken by a racer although notified");
                    }
                }
            }
            rounds_done.fetch_add(1, Ordering::AcqRel);
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(tokens.load(Ordering::Acquire), 1);
    }

    /// Stress: a "task" thread parks in a loop, a "worker" completes parks,
    /// "waker" threads wake it. Every park must end (no lost wakeup) and no
    /// two enqueues may happen for one park (counted by the run token).
    #[test]
    fn stress_no_lost_or_double_wakeup() {
        race_parks(2, |_, s| s.wake() == Wake::Enqueue);
    }

    /// Stress: wakers and claimers race for a task that parks in a loop.
    /// Exactly one of them takes each park (a claim, like a wakeup that
    /// returned `Enqueue`, owns enqueuing it), none takes a task that is
    /// not parked, and no park is lost (a hang).
    #[test]
    fn stress_claims_and_wakeups_take_each_park_once() {
        let claims = Arc::new(AtomicUsize::new(0));
        let c = claims.clone();
        race_parks(3, move |i, s| {
            // Racer 0 wakes, now and then (a wakeup of a task that is not
            // parked notifies it, so that its next park returns at once:
            // frequent wakeups would leave the claimers nothing to take);
            // the others claim.
            if i == 0 {
                for _ in 0..256 {
                    std::hint::spin_loop();
                }
                return s.wake() == Wake::Enqueue;
            }
            let won = s.try_claim();
            if won {
                c.fetch_add(1, Ordering::Relaxed);
            }
            won
        });
        assert!(
            claims.load(Ordering::Relaxed) > 0,
            "no claim won: the race was not run"
        );
    }

    #[test]
    fn a_claim_takes_only_a_parked_task() {
        let s = TaskState::new();
        assert!(!s.try_claim(), "running");
        assert_eq!(s.begin_park(), BeginPark::Switch);
        assert!(!s.try_claim(), "switching out");
        assert_eq!(s.finish_park(), FinishPark::Parked);
        assert!(s.try_claim());
        assert_eq!(s.load(), RUNNABLE, "a claim leaves no notification");
        assert!(!s.try_claim(), "claimed once");
    }

    #[test]
    fn cancel_park_consumes_a_notification() {
        let s = TaskState::new();
        assert_eq!(s.begin_park(), BeginPark::Switch);
        s.cancel_park();
        assert_eq!(s.load(), RUNNABLE);
        assert_eq!(s.begin_park(), BeginPark::Switch);
        assert_eq!(s.wake(), Wake::Noop);
        s.cancel_park();
        assert_eq!(s.load(), RUNNABLE);
    }

    /// A lent park (begin_park, then cancel_park by the owning worker)
    /// races wakers: none of them may ever take the task over (get
    /// `Enqueue`), since it never becomes PARKED. Runs until the wakers
    /// have made many wakeups during the parks.
    #[test]
    fn stress_lent_park_is_never_taken_over() {
        const WAKES: usize = 20_000;
        let s = Arc::new(TaskState::new());
        let done = Arc::new(AtomicUsize::new(0));
        let wakes = Arc::new(AtomicUsize::new(0));
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (s, done, wakes) = (s.clone(), done.clone(), wakes.clone());
                std::thread::spawn(move || {
                    while done.load(Ordering::Acquire) == 0 {
                        assert_eq!(s.wake(), Wake::Noop, "a waker took a lent task over");
                        wakes.fetch_add(1, Ordering::Relaxed);
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        while wakes.load(Ordering::Relaxed) < WAKES {
            if s.begin_park() == BeginPark::Switch {
                s.cancel_park();
            }
        }
        done.store(1, Ordering::Release);
        for w in wakers {
            w.join().unwrap();
        }
        // A wakeup after the last cancel is kept for the next park.
        if s.load() != RUNNABLE {
            assert_eq!(s.load(), RUNNABLE | NOTIFIED);
            assert_eq!(s.begin_park(), BeginPark::Notified);
        }
    }
}
