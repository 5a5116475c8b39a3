//! Tests for the CFS core, with the numbers of the scheduling reference
//! (§1.1 – §1.9).

use super::*;

const MS: u64 = 1_000_000;

use super::test_rng::Rng;

fn rq(ncpus: usize) -> CfsRq<u32> {
    CfsRq::new(Tunables::for_cpus(ncpus))
}

fn se_at(nice: i32, vruntime: u64) -> SchedEntity {
    let mut se = SchedEntity::new(nice);
    se.vruntime = vruntime;
    se
}

/// Moves an empty queue's `min_vruntime` to `v` through the public API:
/// with two entities queued at `v`, dequeuing one leaves `v` leftmost.
fn advance_min_vruntime(rq: &mut CfsRq<u32>, v: u64) {
    assert!(rq.is_empty());
    let (mut x, mut y) = (se_at(0, v), se_at(0, v));
    rq.enqueue_entity(&mut x, 9_000, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut y, 9_001, EnqueueFlags::NONE);
    assert_eq!(rq.dequeue_entity(&mut x), Some(9_000));
    assert_eq!(rq.dequeue_entity(&mut y), Some(9_001));
    assert_eq!(rq.min_vruntime(), v);
    assert!(rq.is_empty());
    rq.assert_invariants();
}

/// Picks the leftmost and makes it current at `now`; returns its handle.
fn pick_and_set(rq: &mut CfsRq<u32>, ents: &mut [SchedEntity], now: u64) -> usize {
    let h = rq.pick_next_entity(None).expect("something queued") as usize;
    rq.set_next_entity(&mut ents[h], now);
    h
}

// ---------------------------------------------------------------- weights

#[test]
fn weight_table_spot_checks() {
    let cases = [
        (0, 1024, 4_194_304),
        (1, 820, 5_237_765),
        (5, 335, 12_820_798),
        (-5, 3121, 1_376_151),
        (-20, 88761, 48_388),
        (19, 15, 286_331_153),
    ];
    for (nice, weight, wmult) in cases {
        let lw = LoadWeight::from_nice(nice);
        assert_eq!((lw.weight, lw.inv_weight), (weight, wmult), "nice {nice}");
    }
    assert_eq!(
        LoadWeight::idle(),
        LoadWeight {
            weight: 3,
            inv_weight: 1_431_655_765
        }
    );
    assert_eq!(SCHED_PRIO_TO_WEIGHT[20], NICE_0_LOAD);
}

#[test]
fn wmult_is_two_to_the_32_over_weight() {
    let all = SCHED_PRIO_TO_WEIGHT
        .iter()
        .zip(SCHED_PRIO_TO_WMULT.iter())
        .chain(std::iter::once((&WEIGHT_IDLEPRIO, &WMULT_IDLEPRIO)));
    for (&w, &m) in all {
        let exact = (1u64 << 32) / w;
        assert!(
            u64::from(m).abs_diff(exact) <= 1,
            "weight {w}: {m} vs {exact}"
        );
    }
}

#[test]
fn adjacent_nice_levels_differ_by_about_ten_percent() {
    for pair in SCHED_PRIO_TO_WEIGHT.windows(2) {
        let ratio = pair[0] as f64 / pair[1] as f64;
        assert!((1.19..1.29).contains(&ratio), "{pair:?}: {ratio}");
    }
    // Reference §1.1: nice 0 vs nice 1 share 55.5 % / 44.5 %.
    let share = 1024.0 / (1024.0 + 820.0);
    assert!((share - 0.555f64).abs() < 0.001);
    assert_eq!(SCHED_PRIO_TO_WEIGHT[0] / SCHED_PRIO_TO_WEIGHT[39], 5917);
}

#[test]
#[should_panic]
fn from_nice_rejects_out_of_range() {
    let _ = LoadWeight::from_nice(20);
}

#[test]
fn calc_delta_is_exact_and_saturates() {
    let nice0 = LoadWeight::from_nice(0);
    assert_eq!(calc_delta_fair(123_456_789, &nice0), 123_456_789);
    assert_eq!(calc_delta(1000, 2048, &nice0), 2000);
    assert_eq!(calc_delta(1000, 1024, &nice0), 1000);
    // u128 path: the product overflows u64, the quotient does not.
    let heavy = LoadWeight::from_nice(-20);
    let d = 1u64 << 60;
    let want = (u128::from(d) * 1024 / 88761) as u64;
    assert_eq!(calc_delta_fair(d, &heavy), want);
    // Saturation when the quotient itself overflows.
    assert_eq!(calc_delta_fair(u64::MAX / 2, &LoadWeight::idle()), u64::MAX);
}

#[test]
fn vruntime_ages_by_inverse_weight() {
    // Reference §1.2: nice -5 ages ~0.33 v-ns per ns, nice 19 ~68.
    let mut rq = rq(1);
    for (nice, per_ns, exact) in [(-5, 0.33, 328_099u64), (19, 68.0, 68_266_666), (0, 1.0, MS)] {
        let mut ents = [se_at(nice, 0)];
        rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
        pick_and_set(&mut rq, &mut ents, 10 * MS);
        rq.update_curr(&mut ents[0], 11 * MS);
        assert_eq!(ents[0].vruntime, exact, "nice {nice}");
        assert_eq!(ents[0].sum_exec_runtime, MS);
        let rate = ents[0].vruntime as f64 / MS as f64;
        assert!((rate - per_ns).abs() / per_ns < 0.01, "nice {nice}: {rate}");
        assert_eq!(rq.dequeue_entity(&mut ents[0]), None);
        rq.assert_invariants();
    }
}

#[test]
fn set_nice_and_idle_policy_reweight() {
    let mut se = SchedEntity::new(0);
    se.set_nice(5);
    assert_eq!((se.nice, se.load.weight), (5, 335));
    se.set_idle_policy(true);
    assert_eq!(se.load, LoadWeight::idle());
    se.set_nice(-10);
    assert_eq!(se.load.weight, 3, "SCHED_IDLE keeps weight 3 whatever nice");
    se.set_idle_policy(false);
    assert_eq!(se.load.weight, 9548);
}

// --------------------------------------------------------------- tunables

#[test]
fn tunables_scale_with_log_cpu_count() {
    // Reference §1.3 table: (cpus, factor, latency, min_gran, wakeup_gran) in us.
    let table = [
        (1, 1, 6000, 750, 1000),
        (2, 2, 12000, 1500, 2000),
        (3, 2, 12000, 1500, 2000),
        (4, 3, 18000, 2250, 3000),
        (7, 3, 18000, 2250, 3000),
        (8, 4, 24000, 3000, 4000),
        (64, 4, 24000, 3000, 4000),
    ];
    for (cpus, factor, lat, min, wake) in table {
        let t = Tunables::for_cpus(cpus);
        assert_eq!(Tunables::scaling_factor(cpus), factor, "{cpus} cpus");
        assert_eq!(t.sched_latency_ns, lat * 1000, "{cpus} cpus");
        assert_eq!(t.sched_min_granularity_ns, min * 1000, "{cpus} cpus");
        assert_eq!(t.sched_wakeup_granularity_ns, wake * 1000, "{cpus} cpus");
        assert_eq!(t.sched_nr_latency, 8);
        assert_eq!(t.sched_migration_cost_ns, 500_000, "not scaled");
        assert!(t.start_debit && t.gentle_fair_sleepers && t.wakeup_preemption);
    }
    assert_eq!(Tunables::for_cpus(0), Tunables::for_cpus(1));
    assert_eq!(Tunables::default(), Tunables::for_cpus(1));
}

#[test]
fn period_stretches_past_nr_latency() {
    let t = Tunables::for_cpus(8);
    for nr in 0..=8 {
        assert_eq!(t.sched_period(nr), 24 * MS);
    }
    assert_eq!(t.sched_period(9), 27 * MS);
    assert_eq!(t.sched_period(10), 30 * MS);
}

// ------------------------------------------------------------------ slices

#[test]
fn slices_nice_0_0_5_on_eight_cpus() {
    // Reference §1.4: W = 2383, period 24 ms, slices 10.31/10.31/3.37 ms.
    let mut rq = rq(8);
    let mut ents = [
        SchedEntity::new(0),
        SchedEntity::new(0),
        SchedEntity::new(5),
    ];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    // Not yet queued: counted in nr and W anyway.
    assert_eq!(rq.sched_slice(&ents[2]), 3_373_898);
    rq.enqueue_entity(&mut ents[2], 2, EnqueueFlags::NONE);
    assert_eq!(rq.load_weight(), 2383);
    assert_eq!(rq.sched_period(rq.nr_running()), 24 * MS);
    assert_eq!(rq.sched_slice(&ents[0]), 10_313_050);
    assert_eq!(rq.sched_slice(&ents[1]), 10_313_050);
    assert_eq!(rq.sched_slice(&ents[2]), 3_373_898);
    // vslice: every entity's slice is the same span of virtual time.
    for se in &ents {
        assert!(rq.sched_vslice(se).abs_diff(10_313_050) <= 1);
    }
    // The current entity still counts.
    pick_and_set(&mut rq, &mut ents, 0);
    assert_eq!(rq.sched_slice(&ents[2]), 3_373_898);
}

#[test]
fn slices_ten_nice_0_on_eight_cpus() {
    // Reference §1.4: n = 10 > 8 → period 30 ms, 3 ms each.
    let mut rq = rq(8);
    let mut ents: Vec<_> = (0..10).map(|_| SchedEntity::new(0)).collect();
    for (i, se) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(se, i as u32, EnqueueFlags::NONE);
    }
    assert_eq!(rq.sched_period(rq.nr_running()), 30 * MS);
    for se in &ents {
        assert_eq!(rq.sched_slice(se), 3 * MS);
        assert_eq!(rq.sched_vslice(se), 3 * MS);
    }
    let mut outsider = SchedEntity::new(0);
    assert_eq!(rq.sched_slice(&outsider), 33 * MS / 11);
    outsider.set_nice(0);
}

// ------------------------------------------------------------ min_vruntime

#[test]
fn min_vruntime_follows_min_of_curr_and_leftmost() {
    let mut rq = rq(1);
    let mut ents = [se_at(0, 0), se_at(0, 5 * MS)];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 0);
    rq.update_curr(&mut ents[0], 3 * MS);
    assert_eq!(rq.min_vruntime(), 3 * MS, "curr is behind the leftmost");
    rq.update_curr(&mut ents[0], 9 * MS);
    assert_eq!(rq.min_vruntime(), 5 * MS, "leftmost is behind curr");
    // Blocking the current entity leaves the leftmost as the floor.
    assert_eq!(rq.dequeue_entity(&mut ents[0]), None);
    assert_eq!(rq.min_vruntime(), 5 * MS);
    assert!(!rq.has_curr());
    assert_eq!((rq.nr_running(), rq.load_weight()), (1, 1024));
    rq.assert_invariants();
}

#[test]
fn update_curr_ignores_time_going_backwards() {
    let mut rq = rq(1);
    let mut ents = [SchedEntity::new(0)];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    pick_and_set(&mut rq, &mut ents, 10 * MS);
    rq.update_curr(&mut ents[0], 9 * MS);
    rq.update_curr(&mut ents[0], 10 * MS);
    assert_eq!(ents[0].exec_start, 10 * MS);
    assert_eq!((ents[0].vruntime, ents[0].sum_exec_runtime), (0, 0));
    rq.update_curr(&mut ents[0], 12 * MS);
    assert_eq!(
        (ents[0].vruntime, ents[0].sum_exec_runtime),
        (2 * MS, 2 * MS)
    );
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Off,
    Queued,
    Curr,
}

/// Random enqueue / dequeue / tick / switch / yield / block / reweight /
/// pop sequences: invariants hold after every step and `min_vruntime` never
/// goes back.
#[test]
fn min_vruntime_is_monotone_under_random_operations() {
    let nices = [0, 0, 5, -5, 19, -20, 3, 10, 0, 1];
    for seed in 1..=4u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rq = rq(4);
        let mut ents: Vec<_> = nices.iter().map(|&n| SchedEntity::new(n)).collect();
        ents[9].set_idle_policy(true);
        let mut st = vec![St::Off; ents.len()];
        let mut curr: Option<usize> = None;
        let mut now = 0u64;
        let mut last_min = rq.min_vruntime();
        for step in 0..30_000 {
            now += rng.below(2 * MS);
            if let Some(c) = curr {
                rq.update_curr(&mut ents[c], now);
            }
            let i = rng.below(ents.len() as u64) as usize;
            match rng.below(9) {
                0 | 1 if st[i] == St::Off => {
                    let flags = if rng.below(4) == 0 {
                        EnqueueFlags::INITIAL
                    } else {
                        EnqueueFlags::WAKEUP
                    };
                    rq.enqueue_entity(&mut ents[i], i as u32, flags);
                    st[i] = St::Queued;
                    if let Some(c) = curr {
                        let _ = rq.check_preempt_wakeup(&ents[c], &ents[i]);
                    }
                }
                2 if curr.is_some() => {
                    let c = curr.take().unwrap();
                    if rq.check_preempt_tick(&ents[c]) || rng.below(2) == 0 {
                        rq.put_prev_entity(&mut ents[c], c as u32);
                        st[c] = St::Queued;
                    } else {
                        curr = Some(c);
                    }
                }
                3 if curr.is_some() => {
                    // Yield.
                    let c = curr.take().unwrap();
                    rq.put_prev_entity(&mut ents[c], c as u32);
                    st[c] = St::Queued;
                    let n = rq.pick_next_entity(Some(&ents[c])).unwrap() as usize;
                    rq.set_next_entity(&mut ents[n], now);
                    st[n] = St::Curr;
                    curr = Some(n);
                }
                4 if curr.is_some() => {
                    // Block.
                    let c = curr.take().unwrap();
                    assert_eq!(rq.dequeue_entity(&mut ents[c]), None);
                    st[c] = St::Off;
                }
                5 if st[i] == St::Queued => {
                    assert_eq!(rq.dequeue_entity(&mut ents[i]), Some(i as u32));
                    st[i] = St::Off;
                }
                6 => {
                    if let Some((v, h)) = rq.pop_rightmost() {
                        let h = h as usize;
                        assert_eq!(st[h], St::Queued);
                        assert_eq!(v, ents[h].vruntime);
                        ents[h].on_rq = false;
                        st[h] = St::Off;
                    }
                }
                7 => {
                    let nice = rng.below(40) as i32 - 20;
                    let idle = i == 9;
                    rq.reweight_entity(&mut ents[i], nice, idle);
                }
                _ => {}
            }
            if curr.is_none() {
                if let Some(h) = rq.pick_next_entity(None) {
                    let h = h as usize;
                    rq.set_next_entity(&mut ents[h], now);
                    st[h] = St::Curr;
                    curr = Some(h);
                }
            }
            rq.assert_invariants();
            assert!(
                !entity_before(rq.min_vruntime(), last_min),
                "seed {seed} step {step}: min_vruntime went back"
            );
            last_min = rq.min_vruntime();
            let queued = st.iter().filter(|&&s| s == St::Queued).count();
            assert_eq!(rq.nr_queued(), queued);
            assert_eq!(rq.nr_running(), queued + usize::from(curr.is_some()));
            let load: u64 = ents
                .iter()
                .zip(&st)
                .filter(|(_, &s)| s != St::Off)
                .map(|(e, _)| e.load.weight)
                .sum();
            assert_eq!(rq.load_weight(), load);
            for (e, s) in ents.iter().zip(&st) {
                assert_eq!(e.on_rq, *s != St::Off);
            }
        }
    }
}

#[test]
fn equal_vruntime_is_fifo() {
    let mut rq = rq(1);
    let mut ents: Vec<_> = (0..7).map(|_| SchedEntity::new(0)).collect();
    for (i, se) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(se, i as u32, EnqueueFlags::NONE);
    }
    let order: Vec<_> = rq.iter().map(|(_, &h)| h).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5, 6]);
    // Round-robin at equal vruntime: a put-back entity goes behind its peers.
    for expect in [0, 1, 2, 3, 4, 5, 6, 0, 1] {
        let h = pick_and_set(&mut rq, &mut ents, 0);
        assert_eq!(h, expect);
        rq.put_prev_entity(&mut ents[h], h as u32);
        rq.assert_invariants();
    }
}

// --------------------------------------------------------------- placement

#[test]
fn start_debit_places_child_one_vslice_late() {
    for (ncpus, vslice) in [(1, 2 * MS), (8, 8 * MS)] {
        let mut rq = rq(ncpus);
        advance_min_vruntime(&mut rq, 50 * MS);
        let mut ents = [se_at(0, 50 * MS), se_at(0, 50 * MS), SchedEntity::new(0)];
        rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
        rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
        // Child inherits the parent's vruntime, then START_DEBIT: three
        // nice-0 entities share the period, so vslice = period / 3.
        ents[2].vruntime = ents[0].vruntime;
        assert_eq!(rq.sched_vslice(&ents[2]), vslice);
        rq.enqueue_entity(&mut ents[2], 2, EnqueueFlags::INITIAL);
        assert_eq!(ents[2].vruntime, 50 * MS + vslice);
        assert_eq!(rq.iter().last().map(|(_, &h)| h), Some(2));
    }
    // Without START_DEBIT the child starts at min_vruntime.
    let mut rq = rq(1);
    let mut t = *rq.tunables();
    t.start_debit = false;
    rq.set_tunables(t);
    advance_min_vruntime(&mut rq, 50 * MS);
    let mut child = SchedEntity::new(0);
    rq.enqueue_entity(&mut child, 0, EnqueueFlags::INITIAL);
    assert_eq!(child.vruntime, 50 * MS);
}

#[test]
fn fork_time_vslice_is_used_at_a_later_initial_enqueue() {
    // A parent (the current entity) forks two nice-0 children back to back
    // and then blocks; the children are enqueued only afterwards, as a
    // worker pulls them from staging. task_fork_fair() computes each
    // child's START_DEBIT at the fork: 6 ms * 1/2 for the first (parent +
    // child), 6 ms * 1/3 for the second (the first counted as queued).
    let mut rq = rq(1);
    advance_min_vruntime(&mut rq, 50 * MS);
    let mut parent = se_at(0, 50 * MS);
    rq.enqueue_entity(&mut parent, 0, EnqueueFlags::NONE);
    assert_eq!(rq.pick_next_entity(None), Some(0));
    rq.set_next_entity(&mut parent, 0);
    let mut first = SchedEntity::new(0);
    let mut second = SchedEntity::new(0);
    rq.set_fork_vslice(&mut first, 0);
    rq.set_fork_vslice(&mut second, 1);
    // The parent blocks before either child is queued.
    rq.update_curr(&mut parent, 0);
    rq.dequeue_entity(&mut parent);
    rq.enqueue_entity(&mut first, 1, EnqueueFlags::INITIAL);
    rq.enqueue_entity(&mut second, 2, EnqueueFlags::INITIAL);
    let base = rq.min_vruntime();
    assert_eq!(first.vruntime, 50 * MS + 3 * MS);
    assert_eq!(second.vruntime, 50 * MS + 2 * MS);
    // One wakeup granularity apart, as in the kernel; computed at these
    // enqueues instead (an empty queue, then one entity) the debits would
    // be 6 ms and 3 ms.
    assert_eq!(first.vruntime - second.vruntime, MS);
    assert!(base <= second.vruntime);
    // The recorded vslice is used once: a later INITIAL placement of the
    // same entity computes its own.
    rq.dequeue_entity(&mut first);
    first.vruntime = 0;
    let expected = rq.sched_vslice(&first);
    rq.enqueue_entity(&mut first, 1, EnqueueFlags::INITIAL);
    assert_eq!(first.vruntime, rq.min_vruntime() + expected);
}

#[test]
fn sleeper_credit_is_half_latency() {
    // (ncpus, gentle, idle policy, credit)
    let cases = [
        (1, true, false, 3 * MS),
        (8, true, false, 12 * MS),
        (1, false, false, 6 * MS),
        (1, true, true, 375_000),
        (8, false, true, 3 * MS),
    ];
    for (ncpus, gentle, idle, credit) in cases {
        let mut rq = rq(ncpus);
        let mut t = *rq.tunables();
        t.gentle_fair_sleepers = gentle;
        rq.set_tunables(t);
        advance_min_vruntime(&mut rq, 100 * MS);
        let mut sleeper = SchedEntity::new(0);
        sleeper.set_idle_policy(idle);
        rq.enqueue_entity(&mut sleeper, 0, EnqueueFlags::WAKEUP);
        assert_eq!(sleeper.vruntime, 100 * MS - credit, "{ncpus} cpus");
    }
}

#[test]
fn placement_never_moves_backwards() {
    let mut rq = rq(1);
    advance_min_vruntime(&mut rq, 100 * MS);
    // A short sleeper keeps its own, larger vruntime.
    for v in [99 * MS, 100 * MS, 150 * MS] {
        let mut se = se_at(0, v);
        rq.place_entity(&mut se, false);
        assert_eq!(se.vruntime, v);
    }
    let mut se = se_at(0, 200 * MS);
    rq.place_entity(&mut se, true);
    assert_eq!(se.vruntime, 200 * MS);
    // Wrap-safe: on a young queue the target wraps below zero and must not
    // win over a small vruntime.
    let young = rq_at_zero();
    let mut se = se_at(0, 0);
    young.place_entity(&mut se, false);
    assert_eq!(se.vruntime, 0);
    // ... and it does win over an older (further wrapped) relative one.
    let mut se = se_at(0, 0u64.wrapping_sub(10 * MS));
    young.place_entity(&mut se, false);
    assert_eq!(se.vruntime, 0u64.wrapping_sub(3 * MS));
}

fn rq_at_zero() -> CfsRq<u32> {
    let rq = rq(1);
    assert_eq!(rq.min_vruntime(), 0);
    rq
}

// -------------------------------------------------------------- preemption

#[test]
fn wakeup_preemption_reference_example() {
    // Reference §1.9 (>= 8 CPUs, gran 4 ms): curr at 100 ms.
    let rq = rq(8);
    let curr = se_at(0, 100 * MS);
    assert_eq!(rq.wakeup_gran(&SchedEntity::new(0)), 4 * MS);
    let cases = [
        (95 * MS, 1, true),
        (97 * MS, 0, false),
        (96 * MS, 0, false),
        (101 * MS, -1, false),
    ];
    for (v, verdict, preempt) in cases {
        let wakee = se_at(0, v);
        assert_eq!(
            rq.wakeup_preempt_entity(curr.vruntime, &wakee),
            verdict,
            "{v}"
        );
        assert_eq!(rq.check_preempt_wakeup(&curr, &wakee), preempt, "{v}");
    }
    // Light wakees need a bigger lead, heavy ones a smaller one.
    assert_eq!(rq.wakeup_gran(&SchedEntity::new(5)), 12_226_865);
    assert!(!rq.check_preempt_wakeup(&curr, &se_at(5, 95 * MS)));
    assert!(rq.check_preempt_wakeup(&curr, &se_at(5, 87 * MS)));
    assert!(rq.check_preempt_wakeup(&curr, &se_at(-5, 97 * MS)));
}

#[test]
fn wakeup_preemption_policies_and_feature() {
    let mut rq = rq(8);
    let normal_far_behind = se_at(0, 0);
    let mut idle_curr = se_at(0, 0);
    idle_curr.set_idle_policy(true);
    // SCHED_IDLE curr is preempted by any normal wakee, even one ahead.
    assert!(rq.check_preempt_wakeup(&idle_curr, &se_at(0, 500 * MS)));
    // SCHED_IDLE wakee never wakeup-preempts.
    let mut idle_wakee = se_at(0, 0);
    idle_wakee.set_idle_policy(true);
    assert!(!rq.check_preempt_wakeup(&se_at(0, 500 * MS), &idle_wakee));
    assert!(!rq.check_preempt_wakeup(&idle_curr, &idle_wakee));
    // WAKEUP_PREEMPTION off: only the idle rule remains.
    let mut t = *rq.tunables();
    t.wakeup_preemption = false;
    rq.set_tunables(t);
    assert!(!rq.check_preempt_wakeup(&se_at(0, 500 * MS), &normal_far_behind));
    assert!(rq.check_preempt_wakeup(&idle_curr, &normal_far_behind));
}

/// One CPU, two nice-0 entities: slice 3 ms, min_granularity 0.75 ms.
fn tick_setup() -> (CfsRq<u32>, [SchedEntity; 2]) {
    let mut rq = rq(1);
    let mut ents = [se_at(0, 10 * MS), se_at(0, 10 * MS)];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 0);
    assert_eq!(rq.sched_slice(&ents[0]), 3 * MS);
    (rq, ents)
}

#[test]
fn check_preempt_tick_cases() {
    let ran_and_lead = |ran: u64, lead: i64| {
        let (rq, mut ents) = tick_setup();
        let a = &mut ents[0];
        a.prev_sum_exec_runtime = 40 * MS;
        a.sum_exec_runtime = 40 * MS + ran;
        a.vruntime = (10 * MS).wrapping_add_signed(lead);
        rq.check_preempt_tick(a)
    };
    let ms = MS as i64;
    // Ran past the ideal slice: preempt whatever the vruntimes say.
    assert!(ran_and_lead(3 * MS + 1, -5 * ms));
    assert!(!ran_and_lead(3 * MS, 0), "exactly the slice is not past it");
    // Under min_granularity: never, even far ahead.
    assert!(!ran_and_lead(MS / 2, 100 * ms));
    // Between min_gran and the slice: only a vruntime lead > slice preempts.
    assert!(ran_and_lead(MS, 4 * ms));
    assert!(!ran_and_lead(MS, 3 * ms));
    assert!(!ran_and_lead(MS, 2 * ms));
    assert!(!ran_and_lead(MS, -2 * ms), "behind the leftmost");
    // Nothing else queued: no preemption at all.
    let (mut rq, mut ents) = tick_setup();
    assert_eq!(rq.dequeue_entity(&mut ents[1]), Some(1));
    ents[0].sum_exec_runtime = 100 * MS;
    assert!(!rq.check_preempt_tick(&ents[0]));
}

#[test]
fn tick_preemption_through_update_curr() {
    let (mut rq, mut ents) = tick_setup();
    rq.update_curr(&mut ents[0], 3 * MS);
    assert!(!rq.check_preempt_tick(&ents[0]), "3 ms lead is not > 3 ms");
    rq.update_curr(&mut ents[0], 3 * MS + 1);
    assert!(rq.check_preempt_tick(&ents[0]));
}

#[test]
fn yield_skips_to_second_within_wakeup_gran() {
    // One CPU: wakeup gran 1 ms for nice 0.
    for (second_v, expect) in [
        (10 * MS, 1),
        (10 * MS + MS / 2, 1),
        (11 * MS, 1),
        (11 * MS + 1, 0),
    ] {
        let mut rq = rq(1);
        let mut ents = [se_at(0, 10 * MS), se_at(0, second_v)];
        rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
        rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
        assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 0);
        rq.put_prev_entity(&mut ents[0], 0);
        let h = rq.pick_next_entity(Some(&ents[0])).unwrap();
        assert_eq!(h, expect, "second at {second_v}");
        rq.assert_invariants();
    }
    // The skip buddy only matters when it is the leftmost.
    let mut rq = rq(1);
    let mut ents = [se_at(0, 10 * MS), se_at(0, 10 * MS)];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    assert_eq!(rq.pick_next_entity(Some(&ents[1])), Some(0));
    rq.set_next_entity(&mut ents[0], 0);
    // A lone yielder runs again.
    rq.put_prev_entity(&mut ents[0], 0);
    assert_eq!(rq.dequeue_entity(&mut ents[1]), Some(1));
    assert_eq!(rq.pick_next_entity(Some(&ents[0])), Some(0));
}

#[test]
fn a_yield_before_blocking_skips_to_second_within_one_period() {
    // One CPU, nice 0: wakeup gran 1 ms, sched_latency 6 ms. A yielder
    // about to block passes over itself up to a period, not a granularity;
    // the mark lasts one pick.
    for (second_v, expect) in [(11 * MS + 1, 1), (16 * MS, 1), (16 * MS + 1, 0)] {
        let mut rq = rq(1);
        let mut ents = [se_at(0, 10 * MS), se_at(0, second_v)];
        rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
        rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
        assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 0);
        rq.yield_blocking();
        rq.put_prev_entity(&mut ents[0], 0);
        let h = rq.pick_next_entity(Some(&ents[0])).unwrap();
        assert_eq!(h, expect, "second at {second_v}");
        rq.assert_invariants();
        if h == 1 {
            // The next plain yield of the same gap is refused again.
            rq.set_next_entity(&mut ents[1], 0);
            rq.put_prev_entity(&mut ents[1], 1);
            assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 0);
            rq.put_prev_entity(&mut ents[0], 0);
            assert_eq!(rq.pick_next_entity(Some(&ents[0])), Some(0));
        }
    }
}

#[test]
fn next_buddy_runs_first_within_wakeup_gran() {
    // One CPU: wakeup gran 1 ms for nice 0. The leftmost is at 10 ms; the
    // buddy at `buddy_v` runs first iff buddy_v - 10 ms <= 1 ms.
    for (buddy_v, expect) in [
        (10 * MS, 1),
        (10 * MS + MS / 2, 1),
        (11 * MS, 1),
        (11 * MS + 1, 0),
        (40 * MS, 0),
    ] {
        let mut rq = rq(1);
        let mut ents = [se_at(0, 10 * MS), se_at(0, buddy_v), se_at(0, 10 * MS + 1)];
        for (i, e) in ents.iter_mut().enumerate() {
            rq.enqueue_entity(e, i as u32, EnqueueFlags::NONE);
        }
        rq.set_next_buddy(&ents[1]);
        assert_eq!(
            rq.pick_next_entity(None),
            Some(expect),
            "buddy at {buddy_v}"
        );
        rq.assert_invariants();
        // One pick only: the next pick is plain leftmost order again.
        let first = expect as usize;
        rq.set_next_entity(&mut ents[first], 0);
        assert_eq!(rq.dequeue_entity(&mut ents[first]), None);
        let rest: Vec<usize> = (0..3).filter(|&i| i != first).collect();
        let leftmost = *rest.iter().min_by_key(|&&i| (ents[i].vruntime, i)).unwrap();
        assert_eq!(rq.pick_next_entity(None), Some(leftmost as u32));
    }
}

#[test]
fn next_buddy_that_left_the_tree_is_forgotten() {
    let mut rq = rq(1);
    let mut ents = [
        se_at(0, 10 * MS),
        se_at(0, 10 * MS + 1),
        se_at(0, 10 * MS + 2),
    ];
    for (i, e) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(e, i as u32, EnqueueFlags::NONE);
    }
    rq.set_next_buddy(&ents[2]);
    // It leaves (stolen by a balancer) and comes back with a new key: the
    // old key names nothing, and the buddy is not honoured.
    assert_eq!(rq.dequeue_entity(&mut ents[2]), Some(2));
    rq.enqueue_entity(&mut ents[2], 2, EnqueueFlags::NONE);
    assert_eq!(rq.pick_next_entity(None), Some(0));
    rq.assert_invariants();
    // A buddy that is not queued (or is current) is ignored.
    rq.set_next_entity(&mut ents[0], 0);
    rq.set_next_buddy(&ents[0]);
    rq.put_prev_entity(&mut ents[0], 0);
    assert_eq!(rq.pick_next_entity(None), Some(0));
}

// --------------------------------------------------------------- migration

#[test]
fn migration_keeps_relative_position() {
    let mut src = rq(2);
    let mut dst = rq(2);
    advance_min_vruntime(&mut src, 100 * MS);
    advance_min_vruntime(&mut dst, 5 * MS);
    let mut stay = se_at(0, 101 * MS);
    let mut t = se_at(0, 103 * MS);
    src.enqueue_entity(&mut stay, 0, EnqueueFlags::NONE);
    src.enqueue_entity(&mut t, 1, EnqueueFlags::NONE);
    src.migrate_out(&mut t);
    assert_eq!(t.vruntime, 3 * MS, "in flight: relative");
    assert_eq!(src.dequeue_entity(&mut t), Some(1));
    dst.migrate_in(&mut t);
    assert_eq!(t.vruntime, 8 * MS);
    dst.enqueue_entity(&mut t, 1, EnqueueFlags::NONE);
    assert_eq!(dst.leftmost_vruntime(), Some(8 * MS));
    assert_eq!((src.load_weight(), dst.load_weight()), (1024, 1024));
    src.assert_invariants();
    dst.assert_invariants();
}

#[test]
fn migrate_out_before_dequeue_uses_the_kernels_min_vruntime() {
    // No current entity; the migrating entity is the leftmost. Removing it
    // advances min_vruntime, so the relative vruntime is taken first.
    let mut src = rq(1);
    advance_min_vruntime(&mut src, 10 * MS);
    let (mut a, mut b) = (se_at(0, 10 * MS), se_at(0, 20 * MS));
    src.enqueue_entity(&mut a, 0, EnqueueFlags::NONE);
    src.enqueue_entity(&mut b, 1, EnqueueFlags::NONE);
    src.migrate_out(&mut a);
    assert_eq!(src.dequeue_entity(&mut a), Some(0));
    assert_eq!(a.vruntime, 0);
    assert_eq!(src.min_vruntime(), 20 * MS);
}

#[test]
fn negative_relative_vruntime_sorts_first_on_a_fresh_queue() {
    // A sleeper woken with credit sits below min_vruntime; migrated to a
    // queue whose min_vruntime is still 0 its vruntime wraps below zero.
    let mut src = rq(1);
    advance_min_vruntime(&mut src, 100 * MS);
    let mut sleeper = SchedEntity::new(0);
    src.enqueue_entity(&mut sleeper, 7, EnqueueFlags::WAKEUP);
    assert_eq!(sleeper.vruntime, 97 * MS);
    src.migrate_out(&mut sleeper);
    assert_eq!(src.dequeue_entity(&mut sleeper), Some(7));
    assert_eq!(sleeper.vruntime, 0u64.wrapping_sub(3 * MS));

    let mut dst = rq_at_zero();
    let mut ents = [SchedEntity::new(0), se_at(0, MS)];
    dst.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    dst.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    dst.migrate_in(&mut sleeper);
    dst.enqueue_entity(&mut sleeper, 7, EnqueueFlags::NONE);
    let order: Vec<_> = dst.iter().map(|(_, &h)| h).collect();
    assert_eq!(order, [7, 0, 1]);
    assert_eq!(dst.leftmost_vruntime(), Some(0u64.wrapping_sub(3 * MS)));
    assert_eq!(dst.pick_next_entity(None), Some(7));
    let mut sleeper_slot = [sleeper];
    dst.set_next_entity(&mut sleeper_slot[0], 0);
    dst.update_curr(&mut sleeper_slot[0], MS);
    assert_eq!(dst.min_vruntime(), 0, "never moves back below its start");
    dst.assert_invariants();
}

// ------------------------------------------------------- balancer helpers

#[test]
fn pop_rightmost_iter_and_drain() {
    let mut rq = rq(1);
    let vs = [5, 1, 9, 3, 7, 2, 8, 6];
    let mut ents: Vec<_> = vs.iter().map(|&v| se_at((v % 3) as i32, v * MS)).collect();
    for (i, se) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(se, i as u32, EnqueueFlags::NONE);
    }
    // Leftmost (v = 1 ms, handle 1) runs.
    assert_eq!(pick_and_set(&mut rq, &mut ents, 0), 1);
    let asc: Vec<_> = rq.iter().map(|(v, _)| v / MS).collect();
    assert_eq!(asc, [2, 3, 5, 6, 7, 8, 9]);
    let desc: Vec<_> = rq.iter().rev().map(|(_, &h)| h).collect();
    assert_eq!(desc, [2, 6, 4, 7, 0, 3, 5]);

    let load = rq.load_weight();
    let (v, h) = rq.pop_rightmost().unwrap();
    assert_eq!((v, h), (9 * MS, 2));
    ents[2].on_rq = false;
    assert_eq!(rq.load_weight(), load - ents[2].load.weight);
    assert_eq!((rq.nr_running(), rq.nr_queued()), (7, 6));
    rq.assert_invariants();

    let drained: Vec<_> = rq.drain().map(|(v, h)| (v / MS, h)).collect();
    assert_eq!(drained, [(2, 5), (3, 3), (5, 0), (6, 7), (7, 4), (8, 6)]);
    assert_eq!(rq.nr_queued(), 0);
    assert_eq!(rq.nr_running(), 1, "the current entity stays");
    assert_eq!(rq.load_weight(), ents[1].load.weight);
    rq.assert_invariants();
    assert_eq!(rq.dequeue_entity(&mut ents[1]), None);
    assert!(rq.is_empty());
    assert_eq!(rq.load_weight(), 0);
    assert_eq!(rq.pop_rightmost(), None);
}

/// The balancer's put-back path: a popped entity that may not move is
/// re-enqueued without placement and keeps its vruntime and accounting.
#[test]
fn popped_entity_goes_back_with_enqueue_none() {
    let mut rq = rq(2);
    let mut ents = [se_at(0, MS), se_at(5, 4 * MS), se_at(0, 9 * MS)];
    for (i, se) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(se, i as u32, EnqueueFlags::NONE);
    }
    pick_and_set(&mut rq, &mut ents, 0);
    let load = rq.load_weight();
    let (v, h) = rq.pop_rightmost().unwrap();
    assert_eq!((v, h), (9 * MS, 2));
    ents[2].on_rq = false;
    rq.enqueue_entity(&mut ents[2], 2, EnqueueFlags::NONE);
    assert_eq!(ents[2].vruntime, 9 * MS);
    assert_eq!(rq.load_weight(), load);
    assert_eq!(rq.nr_running(), 3);
    rq.assert_invariants();
    // Taking the coldest entity by walking from the cold end instead.
    let (_, &coldest) = rq.iter().next_back().unwrap();
    assert_eq!(rq.dequeue_entity(&mut ents[coldest as usize]), Some(2));
    assert_eq!(rq.load_weight(), load - 1024);
    rq.assert_invariants();
}

#[test]
fn reweight_queued_current_and_off_queue() {
    let mut rq = rq(1);
    let mut ents = [
        SchedEntity::new(0),
        SchedEntity::new(0),
        SchedEntity::new(0),
    ];
    rq.enqueue_entity(&mut ents[0], 0, EnqueueFlags::NONE);
    rq.enqueue_entity(&mut ents[1], 1, EnqueueFlags::NONE);
    pick_and_set(&mut rq, &mut ents, 0);
    rq.reweight_entity(&mut ents[0], 5, false);
    assert_eq!(rq.load_weight(), 335 + 1024);
    rq.reweight_entity(&mut ents[1], 0, true);
    assert_eq!(rq.load_weight(), 335 + 3);
    rq.reweight_entity(&mut ents[2], -20, false);
    assert_eq!(rq.load_weight(), 335 + 3);
    assert_eq!(ents[2].load.weight, 88761);
    rq.assert_invariants();
    assert_eq!(rq.dequeue_entity(&mut ents[1]), Some(1));
    assert_eq!(rq.dequeue_entity(&mut ents[0]), None);
    assert_eq!(rq.load_weight(), 0);
}

// ------------------------------------------------------------------ shares

/// Drives entities on one queue with `tick`-ns ticks for `total` ns,
/// switching whenever `check_preempt_tick` says so; returns their runtimes.
fn simulate(rq: &mut CfsRq<u32>, ents: &mut [SchedEntity], tick: u64, total: u64) -> Vec<u64> {
    for (i, se) in ents.iter_mut().enumerate() {
        rq.enqueue_entity(se, i as u32, EnqueueFlags::NONE);
    }
    let mut now = 0;
    let mut cur = pick_and_set(rq, ents, now);
    let mut switches = 0;
    while now < total {
        now += tick;
        rq.update_curr(&mut ents[cur], now);
        if rq.check_preempt_tick(&ents[cur]) {
            rq.put_prev_entity(&mut ents[cur], cur as u32);
            cur = pick_and_set(rq, ents, now);
            switches += 1;
        }
    }
    rq.assert_invariants();
    assert!(switches > 0);
    ents.iter().map(|e| e.sum_exec_runtime).collect()
}

#[test]
fn weighted_share_nice_0_vs_nice_5() {
    let mut rq = rq(1);
    let mut ents = [SchedEntity::new(0), SchedEntity::new(5)];
    let run = simulate(&mut rq, &mut ents, MS, 10_000 * MS);
    assert_eq!(run[0] + run[1], 10_000 * MS);
    let ratio = run[0] as f64 / run[1] as f64;
    let want = 1024.0 / 335.0;
    eprintln!("nice 0 : nice 5 = {ratio:.4} (want {want:.4})");
    assert!(
        (ratio / want - 1.0).abs() < 0.02,
        "ratio {ratio}, want {want}"
    );
}

#[test]
fn weighted_share_many_mixed_nices() {
    let nices = [-5, 0, 0, 3, 5, 10, 19];
    let mut rq = rq(8);
    let mut ents: Vec<_> = nices.iter().map(|&n| SchedEntity::new(n)).collect();
    let total = 20_000 * MS;
    let run = simulate(&mut rq, &mut ents, MS, total);
    let w_sum: u64 = ents.iter().map(|e| e.load.weight).sum();
    for (e, r) in ents.iter().zip(&run) {
        let want = total as f64 * e.load.weight as f64 / w_sum as f64;
        assert!(
            (*r as f64 / want - 1.0).abs() < 0.05,
            "nice {}: ran {r}, want {want}",
            e.nice
        );
    }
}

// ------------------------------------------------------------------ timing

/// Context-switch hot path (`update_curr` + `put_prev_entity` +
/// `pick_next_entity` + `set_next_entity`) per switch, for a few queue
/// lengths; best of 200 batches, so that a loaded machine still gives a
/// usable number. Run with
/// `cargo test --release -p greenos-runtime sched::tests::switch_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand in release"]
fn switch_cost() {
    use std::hint::black_box;
    use std::time::Instant;
    for n in [2usize, 3, 5, 9, 16, 64] {
        let mut rq = CfsRq::<u64>::new(Tunables::for_cpus(8));
        let mut ents: Vec<_> = (0..n).map(|_| SchedEntity::new(0)).collect();
        for (i, se) in ents.iter_mut().enumerate() {
            rq.enqueue_entity(se, i as u64, EnqueueFlags::NONE);
        }
        let mut cur = rq.pick_next_entity(None).unwrap() as usize;
        rq.set_next_entity(&mut ents[cur], 0);
        let (batch, mut now, mut best) = (50_000u32, 0u64, f64::MAX);
        for _ in 0..200 {
            let start = Instant::now();
            for _ in 0..batch {
                now = black_box(now + 1000);
                rq.update_curr(&mut ents[cur], now);
                rq.put_prev_entity(&mut ents[cur], cur as u64);
                cur = rq.pick_next_entity(None).unwrap() as usize;
                rq.set_next_entity(&mut ents[cur], now);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
        println!("{n:3} tasks: {best:6.2} ns per switch (best batch)");
    }
}

// ------------------------------------------------------- direct switches

#[test]
fn enqueue_curr_refuses_when_the_leftmost_is_owed_the_cpu() {
    let mut q = rq(1);
    let gran = q.tunables().sched_wakeup_granularity_ns;
    assert_eq!(gran, MS, "1 CPU: the base 1 ms (§1.4)");
    let v = 100 * MS;
    advance_min_vruntime(&mut q, v);
    let mut queued = se_at(0, v);
    q.enqueue_entity(&mut queued, 1, EnqueueFlags::NONE);
    // More than one granularity ahead of the leftmost: refused, placed
    // (its own vruntime kept: it is past the sleeper credit) but not queued.
    let mut far = se_at(0, v + gran + 1);
    assert!(!q.enqueue_curr(&mut far, 5));
    assert!(!far.on_rq);
    assert_eq!(far.vruntime, v + gran + 1);
    assert_eq!(q.nr_running(), 1);
    q.assert_invariants();
    // Within one granularity: it becomes the current entity at once.
    let mut near = se_at(0, v + gran);
    assert!(q.enqueue_curr(&mut near, 7));
    assert!(near.on_rq);
    assert_eq!(near.exec_start, 7);
    assert_eq!(q.nr_running(), 2);
    // The forced form ignores the queue (a borrower taking over).
    assert_eq!(q.dequeue_entity(&mut near), None);
    let mut forced = se_at(0, v + 10 * gran);
    q.enqueue_curr_forced(&mut forced, 9);
    assert!(forced.on_rq);
    assert_eq!(forced.exec_start, 9);
    q.assert_invariants();
}
