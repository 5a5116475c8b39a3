//! The overflow level of the [`Timeline`](super::timeline::Timeline): the
//! entries beyond the inline ones, in key order.
//!
//! A `BTreeMap` plus an *append run*: a `VecDeque` of entries whose keys
//! only grow. New tasks are placed at `min_vruntime + vslice` with a fresh
//! sequence number, so a burst of spawns (or any enqueue at or past the
//! rightmost key) arrives in increasing key order; appending those to the
//! run costs O(1) instead of a B-tree descent each (which was a tenth of the
//! cost of spawning a million tasks). Everything else goes to the map.
//!
//! Invariants: the run is strictly increasing; a key is in at most one of
//! the two (their key ranges may interleave: reads merge them). An insert
//! that does not extend the run goes into it in place when that moves at
//! most [`SHORT_RUN`] entries (near either end), else to the map. The
//! smallest entry is the smaller of the two heads, the largest the larger
//! of the two tails. Removing from the run is a binary search and a shift
//! of the shorter side: a task taken off a queue out of order (the NEXT
//! buddy of a join, affinity changes, reweighting lookups).

use std::collections::{btree_map, vec_deque, BTreeMap, VecDeque};

use super::timeline::TreeKey;

/// An insert into the run moves at most this many entries; one that would
/// move more goes to the map.
const SHORT_RUN: usize = 64;

/// Entries at the end of the run compared one by one before a binary
/// search (see `Spill::run_position`).
const TAIL_PROBE: usize = 8;

/// Overflow entries in key order.
#[derive(Debug)]
pub(crate) struct Spill<T> {
    map: BTreeMap<TreeKey, (u64, T)>,
    run: VecDeque<(TreeKey, (u64, T))>,
}

impl<T> Default for Spill<T> {
    fn default() -> Self {
        Spill {
            map: BTreeMap::new(),
            run: VecDeque::new(),
        }
    }
}

impl<T> Spill<T> {
    pub(crate) fn new() -> Self {
        Spill::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len() + self.run.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && self.run.is_empty()
    }

    /// Inserts; returns the old value if `key` was present (a caller bug).
    pub(crate) fn insert(&mut self, key: TreeKey, value: (u64, T)) -> Option<(u64, T)> {
        let extends_run = self.run.back().is_none_or(|(last, _)| key > *last);
        let pos = if extends_run {
            self.run.len()
        } else {
            match self.run_position(&key) {
                Ok(_) => return Some(value),
                Err(pos) => pos,
            }
        };
        // `VecDeque::insert` shifts the shorter side: near either end of
        // the run (the first tasks of a spawn burst got larger slices and
        // sit at the back; a fork-join tree works at the back too) that is
        // a short move, and the run stays one sorted sequence.
        if pos.min(self.run.len() - pos) > SHORT_RUN {
            return self.map.insert(key, value);
        }
        if self.map.contains_key(&key) {
            return Some(value);
        }
        self.run.insert(pos, (key, value));
        None
    }

    /// Where `key` is (`Ok`) or would go (`Err`) in the run. The last
    /// [`TAIL_PROBE`] entries are tried first, linearly: inserts and
    /// removals cluster there (a spawn burst lands just before a few
    /// early outliers; a fork-join tree takes its buddies from there), and
    /// the tail's cache lines are hot where a binary search over a long
    /// run would miss on every step.
    fn run_position(&self, key: &TreeKey) -> Result<usize, usize> {
        let len = self.run.len();
        for back in 1..=TAIL_PROBE.min(len) {
            let i = len - back;
            match self.run[i].0.cmp(key) {
                std::cmp::Ordering::Less => return Err(i + 1),
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => {}
            }
        }
        self.run.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The smallest key and its value.
    pub(crate) fn first_key_value(&self) -> Option<(&TreeKey, &(u64, T))> {
        let m = self.map.first_key_value();
        let r = self.run.front().map(|(k, v)| (k, v));
        match (m, r) {
            (Some(m), Some(r)) => Some(if m.0 < r.0 { m } else { r }),
            (m, r) => m.or(r),
        }
    }

    /// Removes the smallest entry.
    pub(crate) fn pop_first(&mut self) -> Option<(TreeKey, (u64, T))> {
        let from_map = match (self.map.first_key_value(), self.run.front()) {
            (Some((m, _)), Some((r, _))) => m < r,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_map {
            self.map.pop_first()
        } else {
            self.run.pop_front()
        }
    }

    /// Removes the largest entry.
    pub(crate) fn pop_last(&mut self) -> Option<(TreeKey, (u64, T))> {
        let from_map = match (self.map.last_key_value(), self.run.back()) {
            (Some((m, _)), Some((r, _))) => m > r,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_map {
            self.map.pop_last()
        } else {
            self.run.pop_back()
        }
    }

    pub(crate) fn remove(&mut self, key: &TreeKey) -> Option<(u64, T)> {
        match self.run_position(key) {
            Ok(i) => self.run.remove(i).map(|(_, v)| v),
            Err(_) => self.map.remove(key),
        }
    }

    #[cfg(test)]
    pub(crate) fn contains_key(&self, key: &TreeKey) -> bool {
        self.run_position(key).is_ok() || self.map.contains_key(key)
    }

    pub(crate) fn get_mut(&mut self, key: &TreeKey) -> Option<&mut (u64, T)> {
        match self.run_position(key) {
            Ok(i) => self.run.get_mut(i).map(|(_, v)| v),
            Err(_) => self.map.get_mut(key),
        }
    }

    /// Entries in key order (both ends).
    pub(crate) fn iter(&self) -> Iter<'_, T> {
        Iter {
            map: self.map.iter(),
            run: self.run.iter(),
        }
    }

    /// All entries in key order, consuming the spill.
    pub(crate) fn into_sorted_vec(self) -> Vec<(TreeKey, (u64, T))> {
        let mut out = Vec::with_capacity(self.len());
        let mut map = self.map.into_iter().peekable();
        let mut run = self.run.into_iter().peekable();
        loop {
            let take_map = match (map.peek(), run.peek()) {
                (Some((m, _)), Some((r, _))) => m < r,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_map { map.next() } else { run.next() };
            out.extend(next);
        }
        out
    }
}

/// Merged, double-ended iteration over the map and the run.
pub(crate) struct Iter<'a, T> {
    map: btree_map::Iter<'a, TreeKey, (u64, T)>,
    run: vec_deque::Iter<'a, (TreeKey, (u64, T))>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = (&'a TreeKey, &'a (u64, T));

    fn next(&mut self) -> Option<Self::Item> {
        let m = self.map.clone().next();
        let r = self.run.clone().next();
        match (m, r) {
            (Some((mk, _)), Some((rk, _))) if mk < rk => self.map.next(),
            (Some(_), Some(_)) | (None, Some(_)) => self.run.next().map(|(k, v)| (k, v)),
            (Some(_), None) => self.map.next(),
            (None, None) => None,
        }
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let m = self.map.clone().next_back();
        let r = self.run.clone().next_back();
        match (m, r) {
            (Some((mk, _)), Some((rk, _))) if mk > rk => self.map.next_back(),
            (Some(_), Some(_)) | (None, Some(_)) => self.run.next_back().map(|(k, v)| (k, v)),
            (Some(_), None) => self.map.next_back(),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: i64, s: u64) -> TreeKey {
        TreeKey::new(v as u64, s)
    }

    #[test]
    fn merges_map_and_run_in_order() {
        let mut sp = Spill::new();
        // Appends, then out-of-order inserts that must go to the map.
        for (v, s) in [(10, 1), (20, 2), (30, 3), (15, 4), (5, 5), (40, 6), (25, 7)] {
            assert!(sp.insert(key(v, s), (1, v)).is_none());
        }
        assert!(sp.insert(key(20, 2), (1, 0)).is_some(), "duplicate refused");
        let fwd: Vec<i64> = sp.iter().map(|(_, (_, v))| *v).collect();
        assert_eq!(fwd, vec![5, 10, 15, 20, 25, 30, 40]);
        let back: Vec<i64> = sp.iter().rev().map(|(_, (_, v))| *v).collect();
        assert_eq!(back, vec![40, 30, 25, 20, 15, 10, 5]);
        assert_eq!(sp.first_key_value().map(|(_, (_, v))| *v), Some(5));
        assert!(sp.contains_key(&key(30, 3)) && sp.contains_key(&key(15, 4)));
        assert_eq!(sp.remove(&key(30, 3)).map(|(_, v)| v), Some(30));
        assert_eq!(sp.remove(&key(15, 4)).map(|(_, v)| v), Some(15));
        assert_eq!(sp.pop_first().map(|(_, (_, v))| v), Some(5));
        assert_eq!(sp.pop_last().map(|(_, (_, v))| v), Some(40));
        let rest: Vec<i64> = sp
            .into_sorted_vec()
            .into_iter()
            .map(|(_, (_, v))| v)
            .collect();
        assert_eq!(rest, vec![10, 20, 25]);
    }

    #[test]
    fn inserts_near_the_back_of_a_long_run_stay_in_the_run() {
        // A fork-join tree's pattern: a long run, and keys taken out of and
        // put back near its end.
        let mut sp = Spill::new();
        for i in 0..500u64 {
            sp.insert(key(i as i64 * 10, i), (1, i as i64));
        }
        for i in 0..200u64 {
            let k = key(4_900 - (i % 7) as i64 * 10 - 5, 1_000 + i);
            sp.insert(k, (1, 0));
            assert_eq!(sp.remove(&k).map(|(w, _)| w), Some(1));
        }
        assert!(
            sp.map.is_empty(),
            "{} entries went to the map",
            sp.map.len()
        );
        // Far from both ends: the map.
        sp.insert(key(2_505, 5_000), (1, 0));
        assert_eq!(sp.map.len(), 1);
        let keys: Vec<TreeKey> = sp.iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn early_outliers_do_not_send_a_burst_to_the_map() {
        let mut sp = Spill::new();
        // A few large keys first, then a long increasing burst below them.
        for (i, v) in [100, 90, 80].into_iter().enumerate() {
            sp.insert(key(v, i as u64), (1, v));
        }
        for i in 0..1000 {
            sp.insert(key(50, 10 + i), (1, 50));
        }
        assert!(sp.map.len() <= 3, "burst went to the map: {}", sp.map.len());
        assert_eq!(sp.run.len() + sp.map.len(), 1003);
        let order: Vec<(i64, u64)> = sp.iter().map(|(k, _)| (k.vruntime() as i64, 0)).collect();
        assert!(order.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(sp.pop_first().map(|(_, (_, v))| v), Some(50));
        assert_eq!(sp.pop_last().map(|(_, (_, v))| v), Some(100));
    }
}
