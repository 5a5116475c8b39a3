//! Scheduling-class tests: one simulated CPU driving a class through the
//! [`SchedClass`] protocol, with exact expected pick orders and slices
//! derived by hand from the reference formulas (the derivations are in the
//! comments).

use super::cfs::{CfsRq, EnqueueFlags, Tunables};
use super::class::{SchedClass, TaskEntity};
use super::eevdf::{EevdfRq, EevdfTunables, MAX_SLICE_NS, MIN_SLICE_NS};
use super::o1::{self, O1Rq, MAX_SLEEP_AVG_NS};
use super::on::{nice_to_ticks, OnRq, OnTunables};
use super::policy::{Policy, SchedPolicy};
use super::rq::RunQueue;
use super::rt::RtBandwidth;
use super::test_rng::Rng;

const MS: u64 = 1_000_000;

/// One CPU: a queue, the entities (handle = index), the current task, a
/// clock, and the record of who ran when.
struct Cpu<Q> {
    q: Q,
    es: Vec<TaskEntity>,
    curr: Option<usize>,
    now: u64,
    seg_start: u64,
    /// `(task, start, len)`, contiguous runs of one task merged.
    segs: Vec<(usize, u64, u64)>,
    /// Tasks whose O(1) sleep_avg the test pins at the maximum.
    pin_sleep_avg: Vec<usize>,
}

impl<Q: SchedClass<usize>> Cpu<Q> {
    fn new(q: Q) -> Self {
        Cpu {
            q,
            es: Vec::new(),
            curr: None,
            now: 0,
            seg_start: 0,
            segs: Vec::new(),
            pin_sleep_avg: Vec::new(),
        }
    }

    fn add_with(&mut self, nice: i32, policy: SchedPolicy, flags: EnqueueFlags) -> usize {
        let mut e = TaskEntity::new(nice, policy);
        self.q.task_fork(None, &mut e);
        let i = self.es.len();
        self.es.push(e);
        self.enqueue(i, flags);
        i
    }

    fn add(&mut self, nice: i32) -> usize {
        self.add_with(nice, SchedPolicy::Normal, EnqueueFlags::INITIAL)
    }

    fn enqueue(&mut self, i: usize, flags: EnqueueFlags) {
        if let Some(c) = self.curr {
            self.q.update_curr(&mut self.es[c], self.now);
        }
        self.q.enqueue(&mut self.es[i], i, flags, self.now);
    }

    fn close_seg(&mut self, task: usize) {
        let len = self.now - self.seg_start;
        if len == 0 {
            return;
        }
        match self.segs.last_mut() {
            Some((t, s, l)) if *t == task && *s + *l == self.seg_start => *l += len,
            _ => self.segs.push((task, self.seg_start, len)),
        }
    }

    fn pick(&mut self, skip: Option<usize>) {
        let skip_e = skip.map(|s| self.es[s].clone());
        let picked = self.q.pick_next(skip_e.as_ref());
        if let Some(n) = picked {
            if self.pin_sleep_avg.contains(&n) {
                self.es[n].o1_mut().sleep_avg = MAX_SLEEP_AVG_NS;
            }
            self.q.set_next(&mut self.es[n], self.now);
        }
        self.curr = picked;
        self.seg_start = self.now;
    }

    /// Switch away from a runnable current task (preemption or yield).
    fn schedule(&mut self, yielded: bool) {
        let mut skip = None;
        if let Some(c) = self.curr.take() {
            self.q.update_curr(&mut self.es[c], self.now);
            if yielded {
                self.q.yield_task(&mut self.es[c]);
                skip = Some(c);
            }
            self.close_seg(c);
            self.q.put_prev(&mut self.es[c], c);
        }
        self.pick(skip);
    }

    /// The current task blocks.
    fn block(&mut self) -> usize {
        let c = self.curr.take().expect("a current task");
        self.q.update_curr(&mut self.es[c], self.now);
        self.close_seg(c);
        assert_eq!(self.q.dequeue(&mut self.es[c]), None);
        self.pick(None);
        c
    }

    /// Wakes `i`; switches if it preempts. Returns whether it did.
    fn wake(&mut self, i: usize) -> bool {
        self.enqueue(i, EnqueueFlags::WAKEUP);
        match self.curr {
            None => {
                self.pick(None);
                true
            }
            Some(c) if self.q.check_preempt_wakeup(&self.es[c], &self.es[i]) => {
                self.schedule(false);
                true
            }
            Some(_) => false,
        }
    }

    /// Runs with a periodic tick until `until`.
    fn run_until(&mut self, until: u64, tick: u64) {
        if self.curr.is_none() {
            self.pick(None);
        }
        while self.now < until {
            self.now = (self.now + tick).min(until);
            if let Some(c) = self.curr {
                self.q.update_curr(&mut self.es[c], self.now);
                if self.q.check_preempt_tick(&self.es[c]) {
                    self.schedule(false);
                }
            } else {
                self.pick(None);
            }
        }
        if let Some(c) = self.curr {
            self.close_seg(c);
            self.seg_start = self.now;
        }
    }

    /// `segs` as `(task, start_ms, len_ms)`, first `n`.
    fn segs_ms(&self, n: usize) -> Vec<(usize, u64, u64)> {
        self.segs
            .iter()
            .take(n)
            .map(|&(t, s, l)| (t, s / MS, l / MS))
            .collect()
    }

    fn runtime(&self, i: usize) -> u64 {
        self.es[i].sum_exec_runtime()
    }
}

fn assert_shares(cpu: &Cpu<impl SchedClass<usize>>, tasks: &[usize], tolerance: f64) {
    let total: u64 = tasks.iter().map(|&t| cpu.runtime(t)).sum();
    let wsum: u64 = tasks.iter().map(|&t| cpu.es[t].se.load.weight).sum();
    for &t in tasks {
        let share = cpu.runtime(t) as f64 / total as f64;
        let want = cpu.es[t].se.load.weight as f64 / wsum as f64;
        assert!(
            (share - want).abs() <= tolerance * want,
            "task {t}: share {share:.4}, weight share {want:.4}"
        );
    }
}

// ---------------------------------------------------------------- CFS

#[test]
fn cfs_through_the_trait_alternates_equal_tasks_every_slice() {
    // One CPU: latency 6 ms, min_gran 0.75 ms. Two nice-0 tasks. A is
    // queued alone: START_DEBIT vslice = 6 ms (n = 1), v_A = 6 ms. B: n = 2,
    // vslice 3 ms, v_B = 3 ms → B first. Slice 3 ms; with a 1 ms tick the
    // check fires when ran > 3 ms, i.e. after 4 ms; B's v = 7 ms > v_A →
    // A runs 4 ms (v_A 10 ms), and so on, 4 ms each.
    let mut cpu = Cpu::new(CfsRq::<usize>::new(Tunables::for_cpus(1)));
    let a = cpu.add(0);
    let b = cpu.add(0);
    cpu.run_until(20 * MS, MS);
    assert_eq!(
        cpu.segs_ms(5),
        vec![(b, 0, 4), (a, 4, 4), (b, 8, 4), (a, 12, 4), (b, 16, 4)]
    );
}

#[test]
fn cfs_weighted_shares_match_weights_within_5_percent() {
    let mut cpu = Cpu::new(CfsRq::<usize>::new(Tunables::for_cpus(1)));
    let ts: Vec<usize> = [-5, 0, 5, 10].iter().map(|&n| cpu.add(n)).collect();
    cpu.run_until(10_000 * MS, MS);
    assert_shares(&cpu, &ts, 0.05);
}

// ---------------------------------------------------------------- EEVDF

fn eevdf8() -> Cpu<EevdfRq<usize>> {
    // ≥ 8 CPUs: base slice 3 ms (reference §2.9).
    Cpu::new(EevdfRq::new(EevdfTunables::for_cpus(8)))
}

#[test]
fn eevdf_reference_example_nice0_vs_nice_minus5() {
    // §2.9: A nice 0, C nice −5, both at v = 0, full-slice deadlines
    // (placed without INITIAL): vd_A = 3 ms, vd_C = ⌊3e6·1024/3121⌋ =
    // 984299. C first; each runs until its request is consumed (3 ms of
    // wall time for both; a 3 ms tick charges exactly one vslice, so no
    // per-tick rounding). Then, with V = Σw·v/Σw:
    //   after C: v_C 984299, V 741172 → only A eligible → A;
    //   after A: v_A 3e6, V 1482266 → C;  v_C 1968598, V 2223400 → C;
    //   v_C 2952897, V 2964533 → C;  v_C 3937196, V 3705667 → A.
    let mut cpu = eevdf8();
    let a = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    let c = cpu.add_with(-5, SchedPolicy::Normal, EnqueueFlags::NONE);
    assert_eq!(cpu.es[a].eevdf_mut().deadline, 3 * MS);
    assert_eq!(cpu.es[c].eevdf_mut().deadline, 984_299);
    cpu.run_until(18 * MS, 3 * MS);
    assert_eq!(
        cpu.segs_ms(6),
        vec![(c, 0, 3), (a, 3, 3), (c, 6, 9), (a, 15, 3)]
    );
    // Long run: C's share → 3121 / 4145 = 75.3 %.
    cpu.run_until(3_000 * MS, 3 * MS);
    assert_shares(&cpu, &[a, c], 0.01);
}

#[test]
fn eevdf_weighted_shares_match_weights_within_5_percent() {
    let mut cpu = Cpu::new(EevdfRq::<usize>::new(EevdfTunables::for_cpus(1)));
    let ts: Vec<usize> = [-5, 0, 5, 10].iter().map(|&n| cpu.add(n)).collect();
    cpu.run_until(10_000 * MS, MS);
    assert_shares(&cpu, &ts, 0.05);
}

#[test]
fn eevdf_new_task_gets_half_a_slice_and_v_at_average() {
    let mut cpu = eevdf8();
    cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    cpu.run_until(2 * MS, MS);
    // A ran 2 ms: v_A = 2 ms = V. A fork lands at V with vd = V + 1.5 ms.
    let b = cpu.add(0);
    assert_eq!(cpu.es[b].se.vruntime, 2 * MS);
    assert_eq!(cpu.es[b].eevdf_mut().deadline, 2 * MS + 3 * MS / 2);
}

#[test]
fn eevdf_next_buddy_is_picked_only_while_eligible() {
    // A, B, C nice 0 at v = 0. A runs 3 ms and is put back: V = 1 ms. The
    // buddy C (v = 0, eligible, but not the earliest deadline: B's is
    // earlier by insertion) runs next; the buddy lasts that one pick.
    let mut cpu = eevdf8();
    let a = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    let b = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    let c = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    cpu.pick(None);
    assert_eq!(cpu.curr, Some(a));
    cpu.now = 3 * MS;
    cpu.schedule(false);
    assert_eq!(cpu.curr, Some(b), "without a buddy B runs");
    cpu.now = 4 * MS;
    cpu.schedule(false);
    assert_eq!(cpu.curr, Some(c));
    // Now A is at v = 3 ms, B at 1 ms, C ran 1 ms too. Put C back and make
    // A (v = 3 ms > V) the buddy: not eligible, so the deadline order holds.
    cpu.now = 5 * MS;
    cpu.q.update_curr(&mut cpu.es[c], cpu.now);
    cpu.close_seg(c);
    cpu.q.put_prev(&mut cpu.es[c], c);
    cpu.curr = None;
    assert!(!cpu.q.vruntime_eligible(cpu.es[a].se.vruntime));
    cpu.q.set_next_buddy(&cpu.es[a]);
    cpu.pick(None);
    assert_ne!(cpu.curr, Some(a), "an ineligible buddy waits its turn");
    // An eligible buddy that is not the earliest deadline is taken.
    let other = [b, c].into_iter().find(|&t| Some(t) != cpu.curr).unwrap();
    let running = cpu.curr.unwrap();
    cpu.q.update_curr(&mut cpu.es[running], cpu.now);
    cpu.q.put_prev(&mut cpu.es[running], running);
    cpu.curr = None;
    assert!(cpu.q.vruntime_eligible(cpu.es[other].se.vruntime));
    cpu.q.set_next_buddy(&cpu.es[other]);
    cpu.pick(None);
    assert_eq!(cpu.curr, Some(other));
    cpu.q.assert_invariants();
}

#[test]
fn classes_without_buddies_ignore_the_hint() {
    // O(1): the hint changes nothing; the highest priority runs.
    let mut cpu = Cpu::new(O1Rq::<usize>::new());
    let hi = cpu.add(-5);
    let lo = cpu.add(5);
    cpu.q.set_next_buddy(&cpu.es[lo]);
    cpu.pick(None);
    assert_eq!(cpu.curr, Some(hi));
}

#[test]
fn eevdf_lag_survives_sleep() {
    // A and B nice 0 at v = 0 (A first by insertion order); A runs 3 ms and
    // blocks: V = (3e6 + 0)/2, vlag_A = −1.5 ms. B runs. A wakes at once:
    // lag inflated by (W + w)/W = 2 → v_A = V_B − (−3 ms) = 3 ms, so after
    // it joins, V = 1.5 ms and its lag is −1.5 ms again: conserved.
    let mut cpu = eevdf8();
    let a = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    let b = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    cpu.pick(None);
    assert_eq!(cpu.curr, Some(a));
    cpu.now = 3 * MS;
    cpu.block();
    assert_eq!(cpu.es[a].eevdf_mut().vlag, -1_500_000);
    assert_eq!(cpu.curr, Some(b));
    assert!(!cpu.wake(a), "a task with negative lag does not preempt");
    assert_eq!(cpu.es[a].se.vruntime, 3 * MS);
    assert_eq!(cpu.q.avg_vruntime(), 1_500_000);
    assert!(!cpu.q.vruntime_eligible(cpu.es[a].se.vruntime));
    cpu.q.assert_invariants();
}

#[test]
fn eevdf_run_to_parity_and_preempt_short() {
    // a: v 0, vd 3 ms. c (lag −2 ms): v = 0 + 4 ms, vd 7 ms → V = 2 ms.
    // b (lag 0): v = V = 2 ms, vd 5 ms. Pick: a (eligible, earliest vd).
    // b leaves (lag 0); a runs 1 ms (V = 2.5 ms). b wakes with lag 2 ms:
    // inflated ×3/2 → v_b = −0.5 ms, vd_b = 2.5 ms (base slice) or 0
    // (0.5 ms slice); then V = 1.5 ms, so a (v 1 ms) is still eligible and
    // protected by RUN_TO_PARITY, while b is eligible with an earlier
    // deadline. Parity on: no preemption; off: b preempts; parity on but
    // b's slice shorter: PREEMPT_SHORT lets b through.
    for (parity, short, want_preempt) in [
        (true, false, false),
        (false, false, true),
        (true, true, true),
    ] {
        let mut t = EevdfTunables::for_cpus(8);
        t.run_to_parity = parity;
        let mut cpu = Cpu::new(EevdfRq::<usize>::new(t));
        let a = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
        let mut ce = TaskEntity::new(0, SchedPolicy::Normal);
        cpu.q.task_fork(None, &mut ce);
        ce.eevdf_mut().vlag = -2 * MS as i64;
        cpu.es.push(ce);
        let c = cpu.es.len() - 1;
        cpu.enqueue(c, EnqueueFlags::NONE);
        assert_eq!(cpu.es[c].se.vruntime, 4 * MS);
        let b = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
        assert_eq!(cpu.es[b].se.vruntime, 2 * MS);
        cpu.pick(None);
        assert_eq!(cpu.curr, Some(a));
        assert_eq!(cpu.q.dequeue(&mut cpu.es[b]), Some(b));
        assert_eq!(cpu.es[b].eevdf_mut().vlag, 0);
        cpu.now = MS;
        cpu.q.update_curr(&mut cpu.es[a], cpu.now);
        assert_eq!(cpu.q.avg_vruntime(), 2_500_000);
        cpu.es[b].eevdf_mut().vlag = 2 * MS as i64;
        if short {
            cpu.es[b].eevdf_mut().request_slice(MS / 2);
        }
        assert_eq!(cpu.wake(b), want_preempt, "parity {parity} short {short}");
        assert_eq!(cpu.es[b].se.vruntime, (-500_000i64) as u64);
    }
}

#[test]
fn eevdf_slice_requests_are_clamped_and_shorten_turns() {
    let mut d = super::eevdf::EevdfData::default();
    d.request_slice(10);
    assert_eq!(d.custom_slice.map(|s| s.get()), Some(MIN_SLICE_NS));
    d.request_slice(u64::MAX);
    assert_eq!(d.custom_slice.map(|s| s.get()), Some(MAX_SLICE_NS));
    d.request_slice(0);
    assert_eq!(d.custom_slice, None);
    // A asks for 1 ms, B has the base 3 ms; both at v 0: vd_A 1 ms, vd_B
    // 3 ms. A runs 1 ms (then ineligible), B 3 ms; then A is picked three
    // times in a row, 1 ms each (eligible with the earlier deadline until
    // v_A passes V), B 3 ms, and so on: equal shares, A in 1 ms requests.
    let mut cpu = eevdf8();
    let mut ae = TaskEntity::new(0, SchedPolicy::Normal);
    ae.eevdf_mut().request_slice(MS);
    cpu.es.push(ae);
    let a = 0;
    cpu.enqueue(a, EnqueueFlags::NONE);
    let b = cpu.add_with(0, SchedPolicy::Normal, EnqueueFlags::NONE);
    assert_eq!(cpu.es[a].eevdf_mut().deadline, MS);
    cpu.run_until(1_200 * MS, MS);
    assert_eq!(
        cpu.segs_ms(4),
        vec![(a, 0, 1), (b, 1, 3), (a, 4, 3), (b, 7, 3)]
    );
    assert_eq!(cpu.es[a].eevdf_mut().slice, MS);
    assert_shares(&cpu, &[a, b], 0.01);
}

#[test]
fn eevdf_eligibility_without_division_matches_the_average() {
    // eligible ⇔ S ≥ (v − v0)·W ⇔ v ≤ floor(S/W) + v0 = avg_vruntime().
    let mut rng = Rng(99);
    let mut cpu = Cpu::new(EevdfRq::<usize>::new(EevdfTunables::for_cpus(4)));
    let nices = [-20, -5, 0, 0, 3, 10, 19];
    for &n in &nices {
        cpu.add(n);
    }
    for _ in 0..2_000 {
        match rng.below(4) {
            0 if cpu.q.nr_queued() > 1 => {
                cpu.block();
            }
            1 => {
                if let Some(i) = (0..cpu.es.len()).find(|&i| !cpu.es[i].on_rq()) {
                    cpu.wake(i);
                }
            }
            2 => cpu.schedule(rng.below(4) == 0),
            _ => {
                let until = cpu.now + rng.below(4 * MS) + 1;
                cpu.run_until(until, MS / 4);
            }
        }
        cpu.q.assert_invariants();
        let avg = cpu.q.avg_vruntime();
        for e in cpu.es.iter().filter(|e| e.on_rq()) {
            let by_avg = (e.se.vruntime.wrapping_sub(avg) as i64) <= 0;
            assert_eq!(cpu.q.vruntime_eligible(e.se.vruntime), by_avg);
        }
    }
}

#[test]
fn renice_while_asleep_conserves_real_lag() {
    let mut e = TaskEntity::new(0, SchedPolicy::Normal);
    e.eevdf_mut().vlag = -3_121_000;
    e.set_nice(-5);
    // w × vlag is conserved: 1024 × −3121000 = 3121 × −1024000.
    assert_eq!(e.eevdf_mut().vlag, -1_024_000);
    assert_eq!(e.o1_mut().static_prio, 115);
    e.set_policy(SchedPolicy::Idle);
    assert_eq!(e.se.load.weight, 3);
    assert!(e.se.idle_policy);
}

// ---------------------------------------------------------------- O(1)

#[test]
fn o1_timeslices_and_priorities_follow_the_reference() {
    // §5.1: nice −20: 800 ms, −10: 600, −1: 420, 0: 100, +5: 75, +10: 50,
    // +15: 25, +19: 5.
    let want = [
        (-20, 800),
        (-10, 600),
        (-1, 420),
        (0, 100),
        (5, 75),
        (10, 50),
        (15, 25),
        (19, 5),
    ];
    for (nice, ms) in want {
        let sp = o1::static_prio(nice, SchedPolicy::Normal);
        assert_eq!(o1::task_timeslice(sp), ms * MS, "nice {nice}");
    }
    // prio = static − (bonus − 5), bonus = sleep_avg × 10 / 1 s.
    assert_eq!(o1::effective_prio(120, 0), 125);
    assert_eq!(o1::effective_prio(120, MAX_SLEEP_AVG_NS), 115);
    assert_eq!(o1::effective_prio(100, MAX_SLEEP_AVG_NS), 100);
    assert_eq!(o1::effective_prio(139, 0), 139);
    // DELTA: nice 0 needs bonus ≥ 2 (prio ≤ 118), nice +19 never.
    assert_eq!(o1::interactive_delta(0), 2);
    assert_eq!(o1::interactive_delta(19), 6);
    assert_eq!(o1::interactive_sleep_ns(0), 799 * MS);
    // Granularity: 10 ms × 2^(10 − bonus − 1).
    assert_eq!(o1::timeslice_granularity(MAX_SLEEP_AVG_NS), 10 * MS);
    assert_eq!(o1::timeslice_granularity(800 * MS), 20 * MS);
}

#[test]
fn o1_hogs_run_by_priority_then_expire_and_swap() {
    // Fresh tasks have no sleep bonus (prio = static + 5): −5 → 120,
    // 0 → 125, +5 → 130. None is interactive, so each runs its whole slice
    // (−5: 500 ms, 0: 100 ms, +5: 75 ms) and goes to `expired`; then the
    // arrays swap and the order repeats.
    let mut cpu = Cpu::new(O1Rq::<usize>::new());
    let a = cpu.add(0);
    let b = cpu.add(5);
    let c = cpu.add(-5);
    cpu.run_until(1_400 * MS, MS);
    assert_eq!(
        cpu.segs_ms(6),
        vec![
            (c, 0, 500),
            (a, 500, 100),
            (b, 600, 75),
            (c, 675, 500),
            (a, 1175, 100),
            (b, 1275, 75)
        ]
    );
}

#[test]
fn o1_interactive_task_goes_to_expired_behind_a_better_static_prio() {
    // A: nice −10 hog (static 110, prio 115, slice 600 ms). B: nice 0 with
    // a full sleep_avg (prio 115, interactive). Same list; A first. A
    // expires → expired (best_expired_prio 110). B's 100 ms slice ends: it
    // is interactive, but its static 120 is worse than 110
    // (EXPIRED_STARVING) → expired. Swap; A (115) before B (sleep_avg
    // 990 ms → bonus 9 → 116).
    let mut cpu = Cpu::new(O1Rq::<usize>::new());
    let a = cpu.add(-10);
    let b = cpu.add(0);
    // Re-queue B at its new priority.
    cpu.q.dequeue(&mut cpu.es[b]);
    cpu.es[b].o1_mut().sleep_avg = MAX_SLEEP_AVG_NS;
    cpu.es[b].o1_mut().prio = 115;
    cpu.q.enqueue(&mut cpu.es[b], b, EnqueueFlags::NONE, 0);
    cpu.run_until(1_400 * MS, MS);
    assert_eq!(
        cpu.segs_ms(4),
        vec![(a, 0, 600), (b, 600, 100), (a, 700, 600), (b, 1300, 100)]
    );
}

#[test]
fn o1_starvation_limit_sends_interactive_tasks_to_expired() {
    // A and C: nice 0 hogs; B: nice 0, sleep_avg pinned at 1 s (always
    // interactive, prio 115). A runs 100 ms and expires (expired_timestamp
    // 100 ms). C is picked; B wakes at once and preempts it. B's slices end
    // every 100 ms and it re-enters `active` until the expired array has
    // waited STARVATION_LIMIT × nr_running + 1 jiffy = 3001 ms, i.e. at the
    // slice end at 3200 ms. Then C runs its 100 ms, the arrays swap and B
    // (115) runs before A (125).
    let mut cpu = Cpu::new(O1Rq::<usize>::new());
    let a = cpu.add(0);
    let c = cpu.add(0);
    let mut e = TaskEntity::new(0, SchedPolicy::Normal);
    cpu.q.task_fork(None, &mut e);
    cpu.es.push(e);
    let b = cpu.es.len() - 1;
    cpu.pin_sleep_avg.push(b);
    cpu.run_until(100 * MS, MS);
    assert_eq!(cpu.curr, Some(c));
    cpu.es[b].o1_mut().sleep_avg = MAX_SLEEP_AVG_NS;
    cpu.es[b].o1_mut().timestamp = cpu.now;
    assert!(cpu.wake(b));
    // After the swap B (115) runs first and, its static priority no worse
    // than anything expired, keeps re-entering `active` until the expired
    // array (timestamped at its first slice end, 3400 ms) starves again:
    // slice end at 6500 ms (6500 − 3400 ≥ 3001). Then A.
    cpu.run_until(6_600 * MS, MS);
    assert_eq!(
        cpu.segs_ms(5),
        vec![
            (a, 0, 100),
            (b, 100, 3100),
            (c, 3200, 100),
            (b, 3300, 3200),
            (a, 6500, 100)
        ]
    );
}

#[test]
fn o1_sleep_raises_priority_and_wakeup_preempts() {
    let mut cpu = Cpu::new(O1Rq::<usize>::new());
    let hog = cpu.add(0);
    let s = cpu.add(0);
    cpu.run_until(10 * MS, MS);
    // s sleeps (it is queued, not running: take it off) for 300 ms.
    assert_eq!(cpu.curr, Some(hog));
    cpu.q.dequeue(&mut cpu.es[s]);
    cpu.es[s].o1_mut().timestamp = cpu.now;
    cpu.run_until(310 * MS, MS);
    // 300 ms of sleep at bonus 0: sleep_avg += 300 ms × 10 (capped at 1 s)
    // → bonus 10 → prio 115 < the hog's 125: it preempts.
    assert!(cpu.wake(s));
    assert_eq!(cpu.es[s].o1_mut().sleep_avg, MAX_SLEEP_AVG_NS);
    assert_eq!(cpu.es[s].o1_mut().prio, 115);
    assert_eq!(cpu.curr, Some(s));
}

#[test]
fn o1_fork_splits_the_parents_slice() {
    let mut q = O1Rq::<usize>::new();
    let mut p = TaskEntity::new(0, SchedPolicy::Normal);
    q.task_fork(None, &mut p);
    p.o1_mut().time_slice = 61 * MS + 1;
    p.o1_mut().sleep_avg = 700 * MS; // bonus 7
    let mut c = TaskEntity::new(0, SchedPolicy::Normal);
    q.task_fork(Some(&mut p), &mut c);
    assert_eq!(c.o1_mut().time_slice, 30 * MS + 500_001);
    assert_eq!(p.o1_mut().time_slice, 30 * MS + 500_000);
    // Child: 7 × 95 / 100 = 6 → 600 ms; parent: 7 × 100 / 100 → 700 ms.
    assert_eq!(c.o1_mut().sleep_avg, 600 * MS);
    assert_eq!(p.o1_mut().sleep_avg, 700 * MS);
    assert_eq!(c.o1_mut().prio, 119);
}

// ---------------------------------------------------------------- O(N)

#[test]
fn on_nice_to_ticks_table() {
    // §5.2: HZ 100: nice 0 → 6, −20 → 11, +19 → 1; HZ 1000: 41, 81, 3.
    assert_eq!(nice_to_ticks(0, 100), 6);
    assert_eq!(nice_to_ticks(-20, 100), 11);
    assert_eq!(nice_to_ticks(19, 100), 1);
    assert_eq!(nice_to_ticks(0, 1000), 41);
    assert_eq!(nice_to_ticks(-20, 1000), 81);
    assert_eq!(nice_to_ticks(19, 1000), 3);
}

#[test]
fn on_picks_by_goodness_and_recalculates_each_epoch() {
    // Three nice-0 tasks, counters 41 (HZ 1000). Woken tasks go to the list
    // head, so the list is C, B, A; equal goodness → first wins: C. Each
    // runs its 41 ticks to 0. Then the best goodness is 0 → epoch:
    // counter = 0/2 + 41. All have now run here (+15), equal again → C.
    let mut cpu = Cpu::new(OnRq::<usize>::new(OnTunables::default()));
    let a = cpu.add(0);
    let b = cpu.add(0);
    let c = cpu.add(0);
    cpu.run_until(246 * MS, MS);
    assert_eq!(
        cpu.segs_ms(6),
        vec![
            (c, 0, 41),
            (b, 41, 41),
            (a, 82, 41),
            (c, 123, 41),
            (b, 164, 41),
            (a, 205, 41)
        ]
    );
    // The last tick (246 ms) spent A's counter: the pick began epoch 2.
    assert_eq!(cpu.q.epoch(), 2);
}

#[test]
fn on_goodness_prefers_lower_nice_and_sleepers_accumulate_counter() {
    // Goodness = counter + 20 − nice (+1): nice −5 (counter 51, 77) beats
    // nice 0 (41, 62) and runs its 51 ticks first.
    let mut cpu = Cpu::new(OnRq::<usize>::new(OnTunables::default()));
    let a = cpu.add(0);
    let b = cpu.add(-5);
    let s = cpu.add(0);
    // s sleeps through the epochs.
    cpu.q.dequeue(&mut cpu.es[s]);
    cpu.run_until(92 * MS + 92 * MS + 92 * MS, MS);
    assert_eq!(cpu.segs_ms(3), vec![(b, 0, 51), (a, 51, 41), (b, 92, 51)]);
    // Epochs at 92, 184 and 276 ms (the last tick's pick).
    assert_eq!(cpu.q.epoch(), 3);
    // s kept 41 and gets counter/2 + 41 per missed epoch: 41 → 61 → 71 →
    // 76. Goodness 76 + 20 + 1 = 97 beats the running B's 51 + 20 + 5 +
    // 15 + 1 = 92: it preempts.
    assert!(cpu.wake(s));
    assert_eq!(cpu.curr, Some(s));
    assert_eq!(cpu.es[s].on_mut().counter, 76);
}

#[test]
fn on_fork_halves_the_counter() {
    let mut q = OnRq::<usize>::new(OnTunables::default());
    let mut p = TaskEntity::new(0, SchedPolicy::Normal);
    q.task_fork(None, &mut p);
    assert_eq!(p.on_mut().counter, 41);
    let mut c = TaskEntity::new(0, SchedPolicy::Normal);
    q.task_fork(Some(&mut p), &mut c);
    assert_eq!((c.on_mut().counter, p.on_mut().counter), (21, 20));
}

// ---------------------------------------------------------------- RT

fn rq(policy: Policy) -> Cpu<RunQueue<usize>> {
    Cpu::new(RunQueue::new(policy, 1))
}

#[test]
fn rt_round_robin_rotates_every_100_ms_and_fifo_runs_to_completion() {
    let mut cpu = rq(Policy::Cfs);
    let x = cpu.add_with(
        0,
        SchedPolicy::RoundRobin { priority: 10 },
        EnqueueFlags::INITIAL,
    );
    let y = cpu.add_with(
        0,
        SchedPolicy::RoundRobin { priority: 10 },
        EnqueueFlags::INITIAL,
    );
    let f = cpu.add(0); // fair: starved while RT runs (below throttling)
    cpu.run_until(400 * MS, MS);
    assert_eq!(
        cpu.segs_ms(4),
        vec![(x, 0, 100), (y, 100, 100), (x, 200, 100), (y, 300, 100)]
    );
    assert_eq!(cpu.runtime(f), 0);

    let mut cpu = rq(Policy::Eevdf);
    let f1 = cpu.add_with(0, SchedPolicy::Fifo { priority: 10 }, EnqueueFlags::INITIAL);
    let f2 = cpu.add_with(0, SchedPolicy::Fifo { priority: 10 }, EnqueueFlags::INITIAL);
    cpu.run_until(300 * MS, MS);
    assert_eq!(cpu.segs_ms(2), vec![(f1, 0, 300)]);
    cpu.block();
    assert_eq!(cpu.curr, Some(f2));
}

#[test]
fn rt_preempted_fifo_task_resumes_before_its_equals() {
    let mut cpu = rq(Policy::O1);
    let f1 = cpu.add_with(0, SchedPolicy::Fifo { priority: 10 }, EnqueueFlags::INITIAL);
    let f2 = cpu.add_with(0, SchedPolicy::Fifo { priority: 10 }, EnqueueFlags::INITIAL);
    let h = cpu.add_with(0, SchedPolicy::Fifo { priority: 50 }, EnqueueFlags::INITIAL);
    // h blocks at once; f1 runs; h wakes and preempts; h blocks → f1 again.
    cpu.pick(None);
    assert_eq!(cpu.curr, Some(h));
    cpu.block();
    assert_eq!(cpu.curr, Some(f1));
    cpu.now = 5 * MS;
    assert!(cpu.wake(h));
    assert_eq!(cpu.curr, Some(h));
    cpu.now = 6 * MS;
    cpu.block();
    assert_eq!(
        cpu.curr,
        Some(f1),
        "preempted FIFO task goes back to the head"
    );
    // A yield sends it to the tail.
    cpu.schedule(true);
    assert_eq!(cpu.curr, Some(f2));
    // Lower or equal RT priority does not preempt; any RT preempts fair.
    let fair = cpu.add(0);
    let mut cpu2 = rq(Policy::ON);
    let n = cpu2.add(0);
    cpu2.pick(None);
    assert_eq!(cpu2.curr, Some(n));
    let r = cpu2.add_with(
        0,
        SchedPolicy::RoundRobin { priority: 1 },
        EnqueueFlags::INITIAL,
    );
    assert!(cpu2.q.check_preempt_wakeup(&cpu2.es[n], &cpu2.es[r]));
    assert!(!cpu.q.check_preempt_wakeup(&cpu.es[f2], &cpu.es[fair]));
}

#[test]
fn rt_throttling_gives_fair_tasks_the_rest_of_each_second() {
    // RT hog + fair task: RT is throttled once rt_time > 950 ms (at the
    // 951 ms tick); the fair task runs until the period ends at 1000 ms,
    // where rt_time drops by 950 ms to 1 ms. Next period: throttled at
    // rt_time 951 ms again, i.e. at 1950 ms.
    for policy in Policy::ALL {
        let mut cpu = rq(policy);
        let r = cpu.add_with(0, SchedPolicy::Fifo { priority: 1 }, EnqueueFlags::INITIAL);
        let f = cpu.add(0);
        cpu.run_until(2_100 * MS, MS);
        assert_eq!(
            cpu.segs_ms(5),
            vec![
                (r, 0, 951),
                (f, 951, 49),
                (r, 1000, 950),
                (f, 1950, 50),
                (r, 2000, 100)
            ],
            "{policy:?}"
        );
    }
    // Configurable: 500 ms of 1 s; disabled with None.
    let mut cpu = Cpu::new(
        RunQueue::new(Policy::Cfs, 1)
            .with_rt_bandwidth(RtBandwidth::new(Some(500 * MS), 1_000 * MS)),
    );
    let r = cpu.add_with(
        0,
        SchedPolicy::RoundRobin { priority: 5 },
        EnqueueFlags::INITIAL,
    );
    let f = cpu.add(0);
    cpu.run_until(1_000 * MS, MS);
    assert_eq!(cpu.segs_ms(2), vec![(r, 0, 501), (f, 501, 499)]);
    let mut cpu = Cpu::new(
        RunQueue::new(Policy::Cfs, 1).with_rt_bandwidth(RtBandwidth::new(None, 1_000 * MS)),
    );
    let r = cpu.add_with(0, SchedPolicy::Fifo { priority: 5 }, EnqueueFlags::INITIAL);
    let f = cpu.add(0);
    cpu.run_until(3_000 * MS, MS);
    assert_eq!(cpu.runtime(r), 3_000 * MS);
    assert_eq!(cpu.runtime(f), 0);
}

#[test]
fn throttled_rt_runs_when_no_fair_task_waits() {
    let mut cpu = rq(Policy::Cfs);
    let r = cpu.add_with(0, SchedPolicy::Fifo { priority: 1 }, EnqueueFlags::INITIAL);
    cpu.run_until(2_000 * MS, MS);
    assert_eq!(cpu.runtime(r), 2_000 * MS);
}

// ------------------------------------------------------- all classes

/// Every class keeps its accounting straight under random operations.
#[test]
fn every_class_survives_random_protocol_sequences() {
    for policy in Policy::ALL {
        let mut rng = Rng(5 + policy as u64);
        let mut cpu = rq(policy);
        let pol = [
            SchedPolicy::Normal,
            SchedPolicy::Batch,
            SchedPolicy::Idle,
            SchedPolicy::Fifo { priority: 3 },
            SchedPolicy::RoundRobin { priority: 7 },
        ];
        for i in 0..12 {
            let nice = (i as i32 % 7) * 5 - 15;
            cpu.add_with(nice, pol[i % pol.len()], EnqueueFlags::INITIAL);
        }
        let mut budgets_checked = 0;
        for _ in 0..3_000 {
            match rng.below(6) {
                0 if cpu.curr.is_some() => {
                    cpu.block();
                }
                1 => {
                    let off: Vec<usize> =
                        (0..cpu.es.len()).filter(|&i| !cpu.es[i].on_rq()).collect();
                    if !off.is_empty() {
                        cpu.wake(off[rng.below(off.len() as u64) as usize]);
                    }
                }
                2 if cpu.curr.is_some() => cpu.schedule(rng.below(3) == 0),
                4 if cpu.curr.is_some() => {
                    // The budget is exact: one ns past it the tick fires.
                    let c = cpu.curr.unwrap();
                    let throttle_bound = cpu.es[c].policy.is_rt() && cpu.q.fair.nr_queued() > 0;
                    if let Some(b) = cpu.q.preempt_budget(&cpu.es[c]) {
                        if b < 200 * MS && !throttle_bound {
                            cpu.now += b + 1;
                            cpu.q.update_curr(&mut cpu.es[c], cpu.now);
                            assert!(
                                cpu.q.check_preempt_tick(&cpu.es[c]),
                                "{policy:?} budget {b} {:?} nr {}",
                                cpu.es[c],
                                cpu.q.nr_running()
                            );
                            cpu.schedule(false);
                            budgets_checked += 1;
                        }
                    }
                }
                3 => {
                    // Migrate one queued task out and back in.
                    if let Some(t) = cpu.q.pop_coldest() {
                        cpu.es[t].se.on_rq = false;
                        cpu.q.migrate_out(&mut cpu.es[t]);
                        cpu.q.migrate_in(&mut cpu.es[t]);
                        cpu.q
                            .enqueue(&mut cpu.es[t], t, EnqueueFlags::NONE, cpu.now);
                    }
                }
                _ => {
                    let until = cpu.now + rng.below(20 * MS) + 1;
                    cpu.run_until(until, MS);
                }
            }
            let on = cpu.es.iter().filter(|e| e.on_rq()).count();
            assert_eq!(cpu.q.nr_running(), on, "{policy:?}");
            assert_eq!(
                cpu.q.nr_queued() + usize::from(cpu.curr.is_some()),
                on,
                "{policy:?}"
            );
            let fair_load: u64 = cpu
                .es
                .iter()
                .filter(|e| e.on_rq() && !e.policy.is_rt())
                .map(|e| e.se.load.weight)
                .sum();
            assert_eq!(cpu.q.load_weight(), fair_load, "{policy:?}");
        }
        assert!(budgets_checked > 50, "{policy:?}: {budgets_checked}");
        let queued = cpu.q.nr_queued();
        assert_eq!(cpu.q.drain().len(), queued, "{policy:?}");
        assert_eq!(cpu.q.nr_queued(), 0);
    }
}

/// Cost of one switch through the class layer (`RunQueue`, CFS), to compare
/// with `tests::switch_cost` (the bare `CfsRq`): the dispatch on policy and
/// class must stay in the noise. Run by hand:
/// `cargo test --release -p greenos-runtime tests_classes::run_queue_switch_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand in release"]
fn run_queue_switch_cost() {
    use std::hint::black_box;
    use std::time::Instant;
    for policy in Policy::ALL {
        for n in [2usize, 3, 9, 64] {
            let mut rq = RunQueue::<u64>::new(policy, 8);
            let mut ents: Vec<_> = (0..n)
                .map(|_| TaskEntity::new(0, SchedPolicy::Normal))
                .collect();
            for (i, e) in ents.iter_mut().enumerate() {
                rq.task_fork(None, e);
                rq.enqueue(e, i as u64, EnqueueFlags::NONE, 0);
            }
            let mut cur = rq.pick_next(None).unwrap() as usize;
            rq.set_next(&mut ents[cur], 0);
            let (batch, mut now, mut best) = (50_000u32, 0u64, f64::MAX);
            for _ in 0..100 {
                let start = Instant::now();
                for _ in 0..batch {
                    now = black_box(now + 1000);
                    rq.update_curr(&mut ents[cur], now);
                    rq.put_prev(&mut ents[cur], cur as u64);
                    cur = rq.pick_next(None).unwrap() as usize;
                    rq.set_next(&mut ents[cur], now);
                }
                best = best.min(start.elapsed().as_nanos() as f64 / f64::from(batch));
            }
            println!("{policy:?} {n:3} tasks: {best:6.2} ns per switch (best batch)");
        }
    }
}
