//! Signals between green processes: fatal defaults unwind the target from
//! whatever it blocks in, handlers run on the target and interrupt its
//! interruptible waits (EINTR) unless `SA_RESTART`, masks keep signals
//! pending, SIGSTOP / SIGCONT take a task off and back onto the run queue,
//! SIGCHLD reaches a parent that catches it, and the permission rules.
//!
//! Nothing is timed: a lost signal shows up as a hang, caught by `within`.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{within, DropCount};
use greenos::signal::{
    self, kill, sigaction, sigpending, sigprocmask, SaFlags, SigAction, SigHandler, SigHow, SigSet,
    Signal, SIGCHLD, SIGCONT, SIGKILL, SIGSTOP, SIGTERM, SIGUSR1, SIGUSR2,
};
use greenos::sync::{mpsc, Condvar, Mutex};
use greenos::wait::{WaitQueue, WaitResult};
use greenos::{JoinError, Pid};

const LIMIT: Duration = Duration::from_secs(60);

fn rt(workers: usize) -> greenos::Runtime {
    common::rt(workers)
}

/// Yields until `cond` holds (the caller is a task; other tasks run).
fn yield_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        greenos::yield_now();
    }
}

fn errno(r: io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// A fatal signal ends every kind of blocking call and unwinds the target:
/// its destructors run and its join handle says which signal killed it.
#[test]
fn fatal_signals_unwind_blocked_tasks() {
    within("fatal_signals_unwind_blocked_tasks", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let queue = Arc::new(WaitQueue::new());
            let held = Arc::new(Mutex::new(()));
            let cv = Arc::new((Mutex::new(false), Condvar::new()));
            let guard = held.lock();
            let mut victims = Vec::new();
            let ready = Arc::new(AtomicUsize::new(0));
            // 1: an interruptible wait; 2: a killable mutex lock; 3: sleep;
            // 4: a channel receive; 5: a condition variable; 6: a yield loop.
            for kind in 0..6 {
                let d = DropCount(drops.clone());
                let (q, m, cv, ready) = (queue.clone(), held.clone(), cv.clone(), ready.clone());
                victims.push(greenos::spawn(move || {
                    let _d = d;
                    ready.fetch_add(1, Ordering::SeqCst);
                    match kind {
                        0 => loop {
                            let _ = q.wait(|| true, None);
                        },
                        1 => {
                            let _g = m.lock();
                            unreachable!("the lock is never released while we live");
                        }
                        2 => loop {
                            greenos::sleep(Duration::from_secs(3600));
                        },
                        3 => {
                            let (_tx, rx) = mpsc::channel::<u32>();
                            let _ = rx.recv();
                            unreachable!("nothing is ever sent");
                        }
                        4 => {
                            let (lock, cvar) = &*cv;
                            let mut g = lock.lock();
                            cvar.wait_while(&mut g, |go| !*go);
                            unreachable!("nobody sets the flag");
                        }
                        _ => loop {
                            greenos::yield_now();
                        },
                    }
                }));
            }
            yield_until(|| ready.load(Ordering::SeqCst) == 6);
            for _ in 0..10 {
                greenos::yield_now();
            }
            for v in &victims {
                kill(v.task().pid(), SIGTERM).expect("kill");
            }
            for v in victims {
                match v.join() {
                    Err(JoinError::Killed(s)) => assert_eq!(s, SIGTERM),
                    other => panic!("expected Killed(SIGTERM), got {other:?}"),
                }
            }
            assert_eq!(
                drops.load(Ordering::SeqCst),
                6,
                "every victim's destructors ran"
            );
            // The condvar victim unwound holding its re-locked mutex; it was
            // released on the way out.
            assert!(cv.0.try_lock().is_some());
            drop(guard);
        });
    });
}

/// SIGKILL cannot be caught or ignored; a caught SIGTERM does not kill.
#[test]
fn sigkill_is_uncatchable_and_handlers_replace_termination() {
    within("sigkill_uncatchable", LIMIT, || {
        let rt = rt(1);
        rt.block_on(|| {
            assert_eq!(
                errno(sigaction(SIGKILL, Some(SigAction::new(SigHandler::Ignore))).map(drop)),
                Some(libc::EINVAL)
            );
            assert_eq!(
                errno(signal::signal(SIGSTOP, SigHandler::Ignore).map(drop)),
                Some(libc::EINVAL)
            );
            let caught = Arc::new(AtomicUsize::new(0));
            let c = caught.clone();
            let h = greenos::spawn(move || {
                let c2 = c.clone();
                signal::signal(
                    SIGTERM,
                    SigHandler::new(move |s| {
                        assert_eq!(s, SIGTERM);
                        c2.fetch_add(1, Ordering::SeqCst);
                    }),
                )
                .unwrap();
                signal::signal(SIGUSR2, SigHandler::Ignore).unwrap();
                c.fetch_add(100, Ordering::SeqCst);
                loop {
                    greenos::yield_now();
                }
            });
            yield_until(|| caught.load(Ordering::SeqCst) >= 100);
            let pid = h.task().pid();
            kill(pid, SIGTERM).unwrap();
            kill(pid, SIGUSR2).unwrap();
            yield_until(|| caught.load(Ordering::SeqCst) == 101);
            assert!(
                !h.is_finished(),
                "a caught SIGTERM and an ignored SIGUSR2 do not kill"
            );
            kill(pid, SIGKILL).unwrap();
            assert!(matches!(h.join(), Err(JoinError::Killed(s)) if s == SIGKILL));
            assert_eq!(
                errno(kill(pid, Signal(0))),
                Some(libc::ESRCH),
                "the pid is gone"
            );
        });
    });
}

/// A handler runs on the target, in its own context, and makes its
/// interruptible wait return `Cancelled` (EINTR); with SA_RESTART the wait
/// goes on and still sees the later wakeup.
#[test]
fn handlers_interrupt_waits_unless_restart() {
    within("handlers_interrupt_waits", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            for restart in [false, true] {
                let queue = Arc::new(WaitQueue::new());
                let ran_on = Arc::new(AtomicUsize::new(0));
                let armed = Arc::new(AtomicBool::new(false));
                let (q, r, a) = (queue.clone(), ran_on.clone(), armed.clone());
                let h = greenos::spawn(move || {
                    let me = greenos::getpid().0 as usize;
                    let r2 = r.clone();
                    let flags = if restart {
                        SaFlags::RESTART
                    } else {
                        SaFlags::NONE
                    };
                    sigaction(
                        SIGUSR1,
                        Some(
                            SigAction::new(SigHandler::new(move |_| {
                                r2.store(greenos::getpid().0 as usize, Ordering::SeqCst);
                            }))
                            .flags(flags),
                        ),
                    )
                    .unwrap();
                    a.store(true, Ordering::SeqCst);
                    let res = q.wait(|| true, None);
                    (me, res)
                });
                yield_until(|| armed.load(Ordering::SeqCst) && queue.len() == 1);
                kill(h.task().pid(), SIGUSR1).unwrap();
                if restart {
                    yield_until(|| ran_on.load(Ordering::SeqCst) != 0);
                    assert!(!h.is_finished(), "SA_RESTART: the wait goes on");
                    assert_eq!(queue.len(), 1);
                    yield_until(|| queue.wake_one());
                }
                let (me, res) = h.join().unwrap();
                assert_eq!(
                    ran_on.load(Ordering::SeqCst),
                    me,
                    "the handler ran as the target"
                );
                let want = if restart {
                    WaitResult::Notified
                } else {
                    WaitResult::Cancelled
                };
                assert_eq!(res, want, "restart={restart}");
                assert!(queue.is_empty());
            }
        });
    });
}

/// A blocked signal stays pending (and does not wake the target); unblocking
/// delivers it before `sigprocmask` returns.
/// A spawned task inherits its parent's ignored dispositions (and its
/// children theirs), not its handlers (execve(2)'s rule, as greenos spawns).
#[test]
fn ignored_dispositions_are_inherited_and_handlers_are_not() {
    within("inherited_dispositions", LIMIT, || {
        let rt = rt(1);
        rt.block_on(|| {
            signal::signal(SIGUSR1, SigHandler::Ignore).unwrap();
            signal::signal(SIGUSR2, SigHandler::new(|_| {})).unwrap();
            let ready = Arc::new(AtomicUsize::new(0));
            let r = ready.clone();
            let grandchild = greenos::spawn(move || {
                let r2 = r.clone();
                let grandchild = greenos::spawn(move || {
                    r2.fetch_add(1, Ordering::SeqCst);
                    loop {
                        greenos::yield_now();
                    }
                });
                r.fetch_add(1, Ordering::SeqCst);
                grandchild
            })
            .join()
            .unwrap();
            yield_until(|| ready.load(Ordering::SeqCst) == 2);
            let pid = grandchild.task().pid();
            kill(pid, SIGUSR1).unwrap();
            for _ in 0..10 {
                greenos::yield_now();
            }
            assert!(
                !grandchild.is_finished(),
                "SIGUSR1 is ignored two spawns down"
            );
            kill(pid, SIGUSR2).unwrap();
            assert!(
                matches!(grandchild.join(), Err(JoinError::Killed(s)) if s == SIGUSR2),
                "the handler is not inherited: SIGUSR2's default terminates"
            );
        });
    });
}

#[test]
fn blocked_signals_stay_pending_until_unblocked() {
    within("blocked_signals", LIMIT, || {
        let rt = rt(1);
        rt.block_on(|| {
            let hits = Arc::new(AtomicUsize::new(0));
            let h2 = hits.clone();
            signal::signal(
                SIGUSR1,
                SigHandler::new(move |_| {
                    h2.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
            let old =
                sigprocmask(SigHow::Block, &[SIGUSR1, SIGKILL].into_iter().collect()).unwrap();
            assert!(old.is_empty());
            kill(Pid(0), SIGUSR1).unwrap();
            kill(Pid(0), SIGUSR1).unwrap();
            greenos::yield_now();
            assert_eq!(hits.load(Ordering::SeqCst), 0);
            assert!(sigpending().contains(SIGUSR1));
            let cur = sigprocmask(SigHow::Unblock, &SigSet::new()).unwrap();
            assert!(
                cur.contains(SIGUSR1) && !cur.contains(SIGKILL),
                "SIGKILL cannot be blocked"
            );
            sigprocmask(SigHow::Unblock, &[SIGUSR1].into_iter().collect()).unwrap();
            assert_eq!(
                hits.load(Ordering::SeqCst),
                1,
                "one pending instance, delivered"
            );
            assert!(sigpending().is_empty());
        });
    });
}

/// SIGSTOP takes a task off the run queue until SIGCONT; a stopped task
/// makes no progress even when its CPU has nothing else to run.
#[test]
fn sigstop_and_sigcont() {
    within("sigstop_and_sigcont", LIMIT, || {
        let rt = rt(1);
        rt.block_on(|| {
            let count = Arc::new(AtomicUsize::new(0));
            let c = count.clone();
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let h = greenos::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    c.fetch_add(1, Ordering::SeqCst);
                    greenos::yield_now();
                }
            });
            yield_until(|| count.load(Ordering::SeqCst) > 0);
            let pid = h.task().pid();
            kill(pid, SIGSTOP).unwrap();
            yield_until(|| h.task().is_stopped());
            let frozen = count.load(Ordering::SeqCst);
            for _ in 0..1000 {
                greenos::yield_now();
            }
            assert_eq!(
                count.load(Ordering::SeqCst),
                frozen,
                "a stopped task does not run"
            );
            kill(pid, SIGCONT).unwrap();
            assert!(!h.task().is_stopped());
            yield_until(|| count.load(Ordering::SeqCst) > frozen);
            stop.store(true, Ordering::SeqCst);
            h.join().unwrap();
        });
    });
}

/// A parent that catches SIGCHLD hears of each child's exit; the child's
/// `ppid` names it.
#[test]
fn sigchld_reaches_a_catching_parent() {
    within("sigchld", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let me = greenos::getpid();
            let got = Arc::new(AtomicUsize::new(0));
            let g = got.clone();
            signal::signal(
                SIGCHLD,
                SigHandler::new(move |_| {
                    g.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
            let children: Vec<_> = (0..3).map(|i| greenos::spawn(move || i)).collect();
            for c in &children {
                assert_eq!(c.task().ppid(), me);
            }
            for c in children {
                c.join().unwrap();
            }
            // Signals coalesce (one pending instance), as in Linux.
            yield_until(|| got.load(Ordering::SeqCst) >= 1);
        });
    });
}

/// kill(2)'s errors: EINVAL, ESRCH, EPERM; signal 0 probes.
#[test]
fn kill_errors_and_permissions() {
    within("kill_errors", LIMIT, || {
        let rt = rt(1);
        rt.block_on(|| {
            let root_victim = greenos::task::Builder::new()
                .uid(0)
                .spawn(|| loop {
                    greenos::yield_now();
                })
                .unwrap();
            let pid = root_victim.task().pid();
            assert_eq!(errno(kill(pid, Signal(65))), Some(libc::EINVAL));
            assert_eq!(errno(kill(pid, Signal(-1))), Some(libc::EINVAL));
            assert_eq!(errno(kill(Pid(999_999), SIGTERM)), Some(libc::ESRCH));
            kill(pid, Signal(0)).expect("signal 0 probes");
            let user = greenos::task::Builder::new()
                .uid(1000)
                .gid(1000)
                .spawn(move || {
                    (
                        errno(kill(pid, SIGKILL)),
                        errno(kill(pid, Signal(0))),
                        errno(kill(greenos::getpid(), Signal(0))),
                    )
                })
                .unwrap();
            assert_eq!(
                user.join().unwrap(),
                (Some(libc::EPERM), Some(libc::EPERM), None)
            );
            assert!(!root_victim.is_finished());
            kill(pid, SIGKILL).unwrap();
            assert!(root_victim.join().is_err());
        });
    });
}

/// `Runtime::kill` from an OS thread, and the killed task's task-local
/// values drop like its stack's.
#[test]
fn runtime_kill_from_an_os_thread() {
    greenos::task_local! {
        static LOCAL: std::cell::RefCell<Option<DropCount>> = std::cell::RefCell::new(None);
    }
    within("runtime_kill", LIMIT, || {
        let rt = rt(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let (d, s) = (drops.clone(), started.clone());
        let h = rt.spawn(move || {
            LOCAL.with(|l| *l.borrow_mut() = Some(DropCount(d.clone())));
            let _x = DropCount(d);
            s.store(true, Ordering::SeqCst);
            let q = WaitQueue::new();
            loop {
                let _ = q.wait(|| true, None);
            }
        });
        assert!(common::wait_until(LIMIT, || started.load(Ordering::SeqCst)));
        rt.kill(h.task().pid(), SIGTERM).unwrap();
        assert!(matches!(h.join(), Err(JoinError::Killed(s)) if s == SIGTERM));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "the stack and the task-local value"
        );
        assert_eq!(
            rt.kill(Pid(424_242), SIGTERM).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
    });
}

/// An IPC call blocked in a pipe read is interrupted by a caught signal:
/// EINTR without SA_RESTART; with SA_RESTART the read goes on and gets the
/// data written later. The reader's pipe end closes when a fatal signal
/// ends it (the writer then sees EPIPE).
#[test]
fn ipc_reads_get_eintr_or_restart() {
    use std::io::{Read, Write};
    within("ipc_reads_get_eintr", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            for restart in [false, true] {
                let (mut r, mut w) = greenos::ipc::pipe().unwrap();
                let armed = Arc::new(AtomicBool::new(false));
                let a = armed.clone();
                let reader = greenos::spawn(move || {
                    common::catch_sigusr1(restart);
                    a.store(true, Ordering::SeqCst);
                    let mut buf = [0u8; 4];
                    r.read(&mut buf).map(|n| buf[..n].to_vec())
                });
                while !armed.load(Ordering::SeqCst) {
                    greenos::yield_now();
                }
                // Let the reader block, then signal it.
                for _ in 0..50 {
                    greenos::yield_now();
                }
                kill(reader.task().pid(), SIGUSR1).unwrap();
                if !restart {
                    // A signal that arrived before the read blocked was
                    // handled without interrupting anything; keep
                    // signalling until the read itself is interrupted (on
                    // a loaded machine the reader may be slow to block).
                    while !reader.is_finished() {
                        for _ in 0..50 {
                            greenos::yield_now();
                        }
                        if !reader.is_finished() {
                            // It may finish in between (ESRCH then).
                            let _ = kill(reader.task().pid(), SIGUSR1);
                        }
                    }
                }
                if restart {
                    for _ in 0..50 {
                        greenos::yield_now();
                    }
                    w.write_all(b"ok").unwrap();
                    assert_eq!(reader.join().unwrap().unwrap(), b"ok".to_vec());
                } else {
                    let e = reader.join().unwrap().unwrap_err();
                    assert_eq!(e.raw_os_error(), Some(libc::EINTR), "{e}");
                }
            }
            let (mut r, mut w) = greenos::ipc::pipe().unwrap();
            let victim = greenos::spawn(move || {
                let mut buf = [0u8; 1];
                let _ = r.read(&mut buf);
                loop {
                    greenos::yield_now();
                }
            });
            for _ in 0..20 {
                greenos::yield_now();
            }
            kill(victim.task().pid(), SIGKILL).unwrap();
            assert!(matches!(victim.join(), Err(JoinError::Killed(s)) if s == SIGKILL));
            let e = w.write(b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
        });
    });
}

/// A task blocked in `join` runs a caught signal's handler and goes on
/// waiting (a join is a killable wait, not an interruptible one); a fatal
/// signal ends it, and the task it was joining finishes and is joined by
/// someone else unharmed.
#[test]
fn join_is_a_killable_wait() {
    within("join_is_a_killable_wait", LIMIT, || {
        let rt = rt(2);
        rt.block_on(|| {
            let release = Arc::new(AtomicBool::new(false));
            let r = release.clone();
            let slow = greenos::spawn(move || {
                yield_until(|| r.load(Ordering::SeqCst));
                42u32
            });
            let (tx, rx) = mpsc::channel();
            let caught = Arc::new(AtomicUsize::new(0));
            let c = caught.clone();
            let joiner = greenos::spawn(move || {
                let c2 = c.clone();
                signal::signal(
                    SIGUSR1,
                    SigHandler::new(move |_| {
                        c2.fetch_add(1, Ordering::SeqCst);
                    }),
                )
                .unwrap();
                c.fetch_add(100, Ordering::SeqCst);
                // Joins the handle it is sent, reports the result.
                let h: greenos::JoinHandle<u32> = rx.recv().unwrap();
                h.join().unwrap()
            });
            yield_until(|| caught.load(Ordering::SeqCst) >= 100);
            tx.send(slow).unwrap();
            // Let it block in the join, then signal it (a few times).
            for _ in 0..50 {
                greenos::yield_now();
            }
            kill(joiner.task().pid(), SIGUSR1).unwrap();
            yield_until(|| caught.load(Ordering::SeqCst) >= 101);
            assert!(!joiner.is_finished(), "a handler does not end a join");
            release.store(true, Ordering::SeqCst);
            assert_eq!(joiner.join().unwrap(), 42);

            // A joiner killed while it waits.
            let release = Arc::new(AtomicBool::new(false));
            let r = release.clone();
            let slow = Arc::new(std::sync::Mutex::new(Some(greenos::spawn(move || {
                yield_until(|| r.load(Ordering::SeqCst));
                7u32
            }))));
            let s = slow.clone();
            let started = Arc::new(AtomicBool::new(false));
            let st = started.clone();
            let victim = greenos::spawn(move || {
                let h = s.lock().unwrap().take().unwrap();
                st.store(true, Ordering::SeqCst);
                h.join().unwrap()
            });
            yield_until(|| started.load(Ordering::SeqCst));
            for _ in 0..50 {
                greenos::yield_now();
            }
            kill(victim.task().pid(), SIGKILL).unwrap();
            assert!(matches!(victim.join(), Err(JoinError::Killed(s)) if s == SIGKILL));
            // The joined task never noticed: it finishes when released.
            release.store(true, Ordering::SeqCst);
            for _ in 0..50 {
                greenos::yield_now();
            }
        });
    });
}
