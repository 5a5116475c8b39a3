//! The seed's affinity example, ported from C to greenos green threads.
//!
//! The C original pins the calling process to CPUs 0 and 2:
//!
//! ```c
//! cpu_set_t set;
//! CPU_ZERO(&set);
//! CPU_SET(0, &set);
//! CPU_SET(2, &set);
//! if (sched_setaffinity(0, sizeof(set), &set) == -1) perror("sched_setaffinity");
//! printf("CPU 0 set: %d, CPU 1 set: %d, count: %d\n",
//!        CPU_ISSET(0, &set), CPU_ISSET(1, &set), CPU_COUNT(&set));
//! ```
//!
//! Here the "process" is a green thread and the CPUs are the runtime's
//! worker CPUs. On a machine with fewer than three CPUs there is no CPU 2:
//! like Linux, greenos then keeps the CPUs of the set that exist (CPU 0)
//! and answers EINVAL only for a set with none of its CPUs. The second half
//! runs the same code on a synthetic 4-CPU machine, which exists on any box
//! (its CPUs are pinned round-robin onto the real ones).
//!
//! Run: `cargo run --example affinity`.

use greenos::{sched_getaffinity, sched_setaffinity, CpuSet, Pid, Runtime, Topology};

/// The C example's body, run as a green thread.
fn pin_to_0_and_2() {
    let mut set = CpuSet::new(); // CPU_ZERO
    set.set(0); // CPU_SET(0)
    set.set(2); // CPU_SET(2)
    println!(
        "  CPU 0 set: {}, CPU 1 set: {}, CPU 2 set: {}, count: {}",
        set.is_set(0) as i32,
        set.is_set(1) as i32,
        set.is_set(2) as i32,
        set.count()
    );
    match sched_setaffinity(Pid(0), &set) {
        Ok(()) => {
            let now = sched_getaffinity(Pid(0)).expect("sched_getaffinity(0)");
            println!("  sched_setaffinity(0, {{0,2}}) ok; mask is now {{{now}}}");
            if !now.is_set(2) {
                println!("  (this runtime has no CPU 2, so only CPU 0 of the set applies)");
            }
            // A child inherits the mask; neither ever runs elsewhere.
            let child = greenos::spawn(move || {
                let mut seen = CpuSet::new();
                for _ in 0..1000 {
                    seen.set(greenos::current_cpu());
                    greenos::yield_now();
                }
                (sched_getaffinity(Pid(0)).expect("child mask"), seen)
            });
            let mut seen = CpuSet::new();
            for _ in 0..1000 {
                seen.set(greenos::current_cpu());
                greenos::yield_now();
            }
            let (child_mask, child_seen) = child.join().expect("child");
            println!("  ran on CPUs {{{seen}}}; child inherited {{{child_mask}}} and ran on {{{child_seen}}}");
            assert!(seen.is_subset(&now) && child_seen.is_subset(&now) && child_mask == now);
        }
        Err(e) => println!("  sched_setaffinity(0, {{0,2}}): {e}"),
    }
    // Only CPUs the runtime lacks: EINVAL, as Linux says for a mask with no
    // online CPU.
    let mut nowhere = CpuSet::new();
    nowhere.set(64);
    let e = sched_setaffinity(Pid(0), &nowhere).expect_err("CPU 64 alone must be refused");
    println!(
        "  sched_setaffinity(0, {{64}}): {e} (errno {:?})",
        e.raw_os_error()
    );
}

fn main() -> std::io::Result<()> {
    let rt = Runtime::new()?;
    println!("This machine: {} runtime CPUs", rt.workers());
    rt.block_on(pin_to_0_and_2);
    drop(rt);

    let four = Topology::synthetic("core:4 pu:1").map_err(std::io::Error::from)?;
    let rt = Runtime::builder().topology(four).build()?;
    println!(
        "A synthetic 4-CPU machine ({} runtime CPUs on this box's real ones):",
        rt.workers()
    );
    rt.block_on(pin_to_0_and_2);
    Ok(())
}
