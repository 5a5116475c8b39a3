//! Topology, placement of runtime CPUs onto PUs, synthetic machines larger
//! than this one, the default worker count, scheduling domains through the
//! runtime, and the affinity rules on synthetic machines.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{allowed_os_cpus, cpus, Watchdog};
use greenos::sched::domains::DomainsDebug;
use greenos::task::Builder;
use greenos::{sched_getaffinity, sched_setaffinity, CpuSet, Pid, Placement, Runtime, Topology};

fn synth(d: &str) -> Topology {
    Topology::synthetic(d).unwrap()
}

fn layout(rt: &Runtime) -> Vec<usize> {
    (0..rt.workers()).map(|c| rt.cpu_pu(c).unwrap()).collect()
}

#[test]
fn placements_on_a_synthetic_machine() {
    let t = synth("numa:2 core:2 pu:2");
    // Spread: one PU per core first, alternating nodes.
    let rt = common::builder(4).topology(t.clone()).build().unwrap();
    assert_eq!(layout(&rt), vec![0, 4, 2, 6]);
    drop(rt);
    let rt = common::builder(4)
        .topology(t.clone())
        .placement(Placement::Compact)
        .build()
        .unwrap();
    assert_eq!(layout(&rt), vec![0, 1, 2, 3]);
    drop(rt);
    // An explicit list sets the count too.
    let rt = greenos::Runtime::builder()
        .topology(t.clone())
        .placement(Placement::List(vec![7, 1, 3]))
        .build()
        .unwrap();
    assert_eq!((rt.workers(), layout(&rt)), (3, vec![7, 1, 3]));
    drop(rt);
    // Default count of a synthetic machine: its PUs.
    let rt = greenos::Runtime::builder()
        .topology(t.clone())
        .build()
        .unwrap();
    assert_eq!(rt.workers(), 8);
    drop(rt);
    // More workers than PUs wrap around the placement order.
    let rt = common::builder(10).topology(t.clone()).build().unwrap();
    assert_eq!(&layout(&rt)[8..], &[0, 4]);
    drop(rt);
    // Bad placements: EINVAL.
    for (b, what) in [
        (
            greenos::Runtime::builder().placement(Placement::List(vec![0, 8])),
            "PU out of range",
        ),
        (
            greenos::Runtime::builder()
                .workers(3)
                .placement(Placement::List(vec![0, 1])),
            "count mismatch",
        ),
        (
            greenos::Runtime::builder().placement(Placement::List(vec![])),
            "empty list",
        ),
        (greenos::Runtime::builder().workers(0), "zero workers"),
    ] {
        let e = b.topology(t.clone()).build().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{what}");
    }
}

#[test]
fn synthetic_32_cpus_on_two_nodes_run_on_this_machine() {
    let _w = Watchdog::new("synthetic_32", Duration::from_secs(120));
    let rt = greenos::Runtime::builder()
        .topology(synth("numa:2 core:16 pu:1"))
        .stack_size(common::STACK)
        .build()
        .unwrap();
    assert_eq!(rt.workers(), 32);
    // Workers are pinned round-robin onto the real CPUs.
    let real = allowed_os_cpus();
    for c in 0..32 {
        assert_eq!(rt.pinned_os_cpu(c), Some(real[c % real.len()]), "CPU {c}");
    }
    // Domains: each CPU has its node (MC) and the machine (NUMA).
    let ds = rt.domains();
    assert_eq!(ds.len(), 64, "{}", DomainsDebug::new(&ds, 32));
    assert!(ds
        .iter()
        .all(|d| d.span_weight() == 16 || d.span_weight() == 32));
    // Every CPU runs what is pinned to it, and free tasks all finish.
    let n = 32;
    let ran = rt.block_on(move || {
        let pinned: Vec<_> = (0..n)
            .map(|c| {
                Builder::new()
                    .affinity(cpus(&[c]))
                    .spawn(move || {
                        let mut ok = true;
                        for _ in 0..20 {
                            ok &= greenos::current_cpu() == c;
                            greenos::yield_now();
                        }
                        ok
                    })
                    .unwrap()
            })
            .collect();
        let free: Vec<_> = (0..200u64).map(|i| greenos::spawn(move || i * 2)).collect();
        let sum: u64 = free.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 2 * (0..200).sum::<u64>());
        pinned
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(ran.iter().all(|&ok| ok), "{ran:?}");
}

#[test]
fn default_worker_count_and_detected_domains() {
    let rt = greenos::Runtime::new().unwrap();
    assert_eq!(rt.workers(), greenos::topology::default_worker_count());
    assert!(rt.workers() <= allowed_os_cpus().len());
    // The detected topology knows this process's CPUs.
    for c in 0..rt.workers() {
        let pu = rt.topology().pus()[rt.cpu_pu(c).unwrap()];
        assert!(allowed_os_cpus().contains(&pu.os_index));
        assert_eq!(rt.pinned_os_cpu(c), Some(pu.os_index));
    }
    // Domains are consistent: each CPU's chain grows, groups cover spans.
    let ds = rt.domains();
    for d in ds.iter() {
        let mut u = CpuSet::new();
        for g in d.groups.iter() {
            u.union_with(&g.span);
        }
        assert_eq!(u, d.span);
        assert!(d.span.is_set(d.cpu));
    }
    let text = DomainsDebug::new(&ds, rt.workers()).to_string();
    assert!(text.starts_with("CPU0 attaching"), "{text}");
    // Unpinned: no OS CPU.
    let rt = common::builder(2).pin_workers(false).build().unwrap();
    assert_eq!(rt.pinned_os_cpu(0), None);
}

#[test]
fn invalid_synthetic_description_is_a_typed_error() {
    let e = Topology::synthetic("numa:2 socket:x pu:1").unwrap_err();
    assert!(
        matches!(e, greenos::TopologyError::Synthetic { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("socket"), "{e}");
    let io: std::io::Error = e.into();
    assert_eq!(io.raw_os_error(), Some(libc::EINVAL));
}

/// A queued (runnable, not running) task whose mask is narrowed away from
/// its CPU moves, and from then on runs only on the new CPU.
#[test]
fn narrowing_a_queued_tasks_mask_moves_it() {
    let _w = Watchdog::new("narrow_queued", Duration::from_secs(120));
    let rt = common::rt(2);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let seen_on = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let moved = Arc::new(AtomicBool::new(false));
        // A hog on CPU 0 keeps the target queued behind it half the time.
        let st = stop.clone();
        let hog = Builder::new()
            .affinity(cpus(&[0]))
            .spawn(move || {
                while !st.load(Ordering::Acquire) {
                    greenos::yield_now();
                }
            })
            .unwrap();
        let (st, seen, mv) = (stop.clone(), seen_on.clone(), moved.clone());
        let target = Builder::new()
            .affinity(cpus(&[0]))
            .spawn(move || {
                let mut wrong = 0usize;
                while !st.load(Ordering::Acquire) {
                    let cpu = greenos::current_cpu();
                    seen[cpu].fetch_add(1, Ordering::Relaxed);
                    if mv.load(Ordering::Acquire) && cpu != 1 {
                        wrong += 1;
                    }
                    greenos::yield_now();
                }
                wrong
            })
            .unwrap();
        let pid = target.task().pid();
        // Both runnable on CPU 0; this task runs on CPU 1 meanwhile.
        sched_setaffinity(Pid(0), &cpus(&[1])).unwrap();
        while seen_on[0].load(Ordering::Relaxed) < 100 {
            greenos::yield_now();
        }
        sched_setaffinity(pid, &cpus(&[1])).unwrap();
        assert_eq!(sched_getaffinity(pid).unwrap(), cpus(&[1]));
        // Once it has run on CPU 1 it must never run on CPU 0 again: wait
        // until it shows up there, then let it run a while.
        let before = seen_on[1].load(Ordering::Relaxed);
        while seen_on[1].load(Ordering::Relaxed) == before {
            greenos::sleep(Duration::from_micros(100));
        }
        moved.store(true, Ordering::Release);
        let mark = seen_on[1].load(Ordering::Relaxed);
        while seen_on[1].load(Ordering::Relaxed) < mark + 1000 {
            greenos::yield_now();
        }
        stop.store(true, Ordering::Release);
        hog.join().unwrap();
        assert_eq!(target.join().unwrap(), 0, "ran on CPU 0 after moving");
    });
}

/// On a synthetic 4-CPU machine (4 workers over this box's real CPUs): a
/// task allowed CPUs 0 and 2, and its children, never run on 1 or 3 while
/// other tasks are stolen around them.
#[test]
fn mask_holds_on_a_synthetic_machine_while_stealing() {
    let _w = Watchdog::new("synthetic_mask", Duration::from_secs(120));
    let rt = greenos::Runtime::builder()
        .topology(synth("core:4 pu:1"))
        .stack_size(common::STACK)
        .build()
        .unwrap();
    assert_eq!(rt.workers(), 4);
    let allowed = cpus(&[0, 2]);
    let a = allowed.clone();
    let bad = rt.block_on(move || {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let a2 = a.clone();
        let h = Builder::new()
            .affinity(a.clone())
            .spawn(move || {
                let kids: Vec<_> = (0..4)
                    .map(|_| {
                        let a3 = a2.clone();
                        greenos::spawn(move || {
                            let mut bad = 0;
                            assert_eq!(greenos::current().affinity(), a3);
                            for _ in 0..2000 {
                                bad += usize::from(!a3.is_set(greenos::current_cpu()));
                                greenos::yield_now();
                            }
                            bad
                        })
                    })
                    .collect();
                let mut bad = 0;
                for _ in 0..2000 {
                    bad += usize::from(!a2.is_set(greenos::current_cpu()));
                    greenos::yield_now();
                }
                bad += kids.into_iter().map(|k| k.join().unwrap()).sum::<usize>();
                d.store(true, Ordering::Release);
                bad
            })
            .unwrap();
        while !done.load(Ordering::Acquire) {
            let hs: Vec<_> = (0..100)
                .map(|i| {
                    greenos::spawn(move || {
                        greenos::yield_now();
                        i
                    })
                })
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i);
            }
        }
        h.join().unwrap()
    });
    assert_eq!(bad, 0, "ran outside {allowed:?}");
}
