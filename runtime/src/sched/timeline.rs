//! The ordered set of queued entities behind [`CfsRq`](super::CfsRq): the
//! kernel's red-black tree with a cached leftmost (reference §1.6), built as
//! a small sorted inline level in front of a [`Spill`] (a `BTreeMap` plus an
//! O(1) append run for the increasing keys that spawn bursts produce).
//!
//! Why not just a `BTreeMap`: the executor calls put-prev + pick-next on
//! every context switch, and with only a few runnable tasks those two
//! operations would each walk and rebalance a B-tree node (a `pop_first` +
//! `insert` pair: about 30–60 ns on the 2-vCPU development VM), more than
//! the whole 35 ns switch budget. Here the first [`INLINE`] entries live
//! inside the queue, each in a fixed slot (`slots`, `keys`, `weights`), with
//! their key order kept as a packed list of slot numbers (`order`, one byte
//! per position, leftmost in the low byte). A pick is a shift of `order` and
//! a move out of one slot; a put-prev of the largest key (the usual case:
//! the task just ran) is one compare and an OR into `order`.
//!
//! Entries never move between slots. A first version kept a sorted array of
//! `Option<Entry>` and shifted it on every pick; writing a slot's `None`
//! and reading it back through the shift caused store-forwarding stalls
//! and cost about 35 ns per switch with two tasks; this layout measured
//! about 12.5 ns (best of 200 batches; `switch_cost` test).
//!
//! Invariants (checked by `assert_invariants` in tests):
//! 1. Bytes `0..len` of `order` are distinct occupied slot numbers, in
//!    strictly ascending key order; bytes `len..8` are zero. `free` has
//!    exactly the bits of the other slots, and those slots are `None`.
//! 2. Every inline key is smaller than every key in `spill`.
//! 3. `len == 0` implies `spill` is empty, so the leftmost entry is always
//!    inline: O(1) leftmost, like `rb_root_cached`.
//!
//! Costs: leftmost O(1); insert, remove, pop-first O(log n) (O(`INLINE`)
//! while `spill` is empty); pop-last O(log n).

use super::spill::Spill;

/// Entries kept inline before spilling into the map: eight covers a CPU
/// with up to nine runnable tasks (one current, eight queued). At most 8,
/// the number of bytes in `order`.
pub(crate) const INLINE: usize = 8;

const _: () = assert!(INLINE >= 2 && INLINE <= 8);

/// Tree key: vruntime as a signed number, then insertion sequence.
///
/// Ordering `vruntime as i64` rather than the raw `u64` keeps the region
/// around zero contiguous: a fresh queue starts at `min_vruntime = 0`, and a
/// migrated entity with a negative relative vruntime (placed with sleeper
/// credit below the source's `min_vruntime`) lands just below zero, i.e.
/// near `u64::MAX` raw. Raw ordering would sort it last; signed ordering
/// sorts it first, as the kernel's wrap-safe `entity_before()` does. The
/// order is wrong only if queued vruntimes straddle ±2^63, which takes 2^63
/// virtual ns of queue progress (see the `cfs` module docs).
///
/// `seq` is unique per queue, which makes keys unique, makes equal vruntimes
/// FIFO (the kernel sends equal keys right), and lets an entity find its own
/// entry again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TreeKey {
    order: i64,
    seq: u64,
}

impl TreeKey {
    /// Key for an entity at `vruntime`, inserted as the `seq`-th entry.
    #[inline]
    pub(crate) fn new(vruntime: u64, seq: u64) -> TreeKey {
        TreeKey {
            order: vruntime as i64,
            seq,
        }
    }

    /// The vruntime the entity had when it was inserted.
    #[inline]
    pub(crate) fn vruntime(self) -> u64 {
        self.order as u64
    }
}

/// One queued entity: its key, the weight it is accounted with, its handle.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub(crate) key: TreeKey,
    pub(crate) weight: u64,
    pub(crate) task: T,
}

/// The ordered set; see the module docs.
#[derive(Debug)]
pub(crate) struct Timeline<T> {
    /// Inline handles, by slot.
    slots: [Option<T>; INLINE],
    /// Key of each occupied slot.
    keys: [TreeKey; INLINE],
    /// Accounted weight of each occupied slot.
    weights: [u64; INLINE],
    /// Occupied slot numbers in key order, one byte each, leftmost lowest.
    order: u64,
    /// Number of inline entries.
    len: usize,
    /// Bit `s` set: slot `s` is free.
    free: u32,
    /// Entries beyond the inline ones, all with larger keys.
    spill: Spill<T>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline::new()
    }
}

impl<T> Timeline<T> {
    /// An empty timeline; allocates nothing.
    pub(crate) fn new() -> Self {
        Timeline {
            slots: std::array::from_fn(|_| None),
            keys: [TreeKey::default(); INLINE],
            weights: [0; INLINE],
            order: 0,
            len: 0,
            free: (1u32 << INLINE) - 1,
            spill: Spill::new(),
        }
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    /// Slot number at inline position `pos` (< `len`).
    #[inline]
    fn slot_at(&self, pos: usize) -> usize {
        debug_assert!(pos < self.len);
        ((self.order >> (8 * pos)) & 0xFF) as usize
    }

    /// Key at inline position `pos` (< `len`).
    #[inline]
    fn key_at(&self, pos: usize) -> TreeKey {
        self.keys[self.slot_at(pos)]
    }

    /// Stores an entry in a free slot; returns the slot number.
    #[inline]
    fn fill_slot(&mut self, key: TreeKey, weight: u64, task: T) -> usize {
        debug_assert!(self.free != 0);
        let s = self.free.trailing_zeros() as usize;
        self.free &= !(1 << s);
        self.slots[s] = Some(task);
        self.keys[s] = key;
        self.weights[s] = weight;
        s
    }

    /// Empties slot `s` (already unlinked from `order`).
    #[inline(always)]
    fn empty_slot(&mut self, s: usize) -> Entry<T> {
        self.free |= 1 << s;
        let task = self.slots[s]
            .take()
            .expect("timeline: occupied slot holds no task");
        Entry {
            key: self.keys[s],
            weight: self.weights[s],
            task,
        }
    }

    /// Links slot `s` at inline position `pos` (<= `len` < `INLINE`).
    #[inline]
    fn link_at(&mut self, pos: usize, s: usize) {
        debug_assert!(pos <= self.len && self.len < INLINE);
        let shift = 8 * pos;
        let low_mask = (1u64 << shift) - 1;
        let low = self.order & low_mask;
        let high = self.order & !low_mask;
        // `len < 8`, so the top byte of `high` is zero and nothing is lost.
        self.order = low | ((s as u64) << shift) | (high << 8);
        self.len += 1;
    }

    /// Unlinks inline position `pos` (< `len`); returns its slot number.
    #[inline]
    fn unlink_at(&mut self, pos: usize) -> usize {
        let s = self.slot_at(pos);
        let shift = 8 * pos;
        let low_mask = (1u64 << shift) - 1;
        self.order = (self.order & low_mask) | ((self.order >> 8) & !low_mask);
        self.len -= 1;
        s
    }

    /// Refills an emptied inline level from the smallest keys of `spill`
    /// (invariant 3).
    #[cold]
    fn refill(&mut self) {
        debug_assert_eq!(self.len, 0);
        while self.len < INLINE {
            let Some((key, (weight, task))) = self.spill.pop_first() else {
                break;
            };
            let s = self.fill_slot(key, weight, task);
            self.order |= (s as u64) << (8 * self.len);
            self.len += 1;
        }
    }

    #[inline]
    fn spill_insert(&mut self, key: TreeKey, weight: u64, task: T) {
        let old = self.spill.insert(key, (weight, task));
        debug_assert!(old.is_none(), "timeline: duplicate key");
    }

    /// Key and weight of the leftmost entry.
    #[inline]
    pub(crate) fn first(&self) -> Option<(TreeKey, u64)> {
        if self.len == 0 {
            None
        } else {
            let s = (self.order & 0xFF) as usize;
            Some((self.keys[s], self.weights[s]))
        }
    }

    /// Key and weight of the second-leftmost entry.
    #[inline]
    pub(crate) fn second(&self) -> Option<(TreeKey, u64)> {
        match self.len {
            0 => None,
            1 => self.spill.first_key_value().map(|(k, (w, _))| (*k, *w)),
            _ => {
                let s = self.slot_at(1);
                Some((self.keys[s], self.weights[s]))
            }
        }
    }

    /// Inserts an entry; its key must not be present.
    #[inline]
    pub(crate) fn insert(&mut self, key: TreeKey, weight: u64, task: T) {
        let len = self.len;
        if len == 0 {
            debug_assert!(self.spill.is_empty());
            let s = self.fill_slot(key, weight, task);
            self.order = s as u64;
            self.len = 1;
        } else if key < self.key_at(len - 1) {
            if len == INLINE {
                // Evict the largest inline entry to keep invariant 2.
                let s = self.unlink_at(len - 1);
                let e = self.empty_slot(s);
                self.spill_insert(e.key, e.weight, e.task);
            }
            let mut pos = self.len;
            while pos > 0 && key < self.key_at(pos - 1) {
                pos -= 1;
            }
            let s = self.fill_slot(key, weight, task);
            self.link_at(pos, s);
        } else if len < INLINE && self.spill.is_empty() {
            let s = self.fill_slot(key, weight, task);
            self.order |= (s as u64) << (8 * len);
            self.len = len + 1;
        } else {
            // Greater than every inline key: invariant 2 holds in spill.
            self.spill_insert(key, weight, task);
        }
    }

    /// Removes and returns the entry at in-order position `pos` (0 or 1:
    /// the leftmost or the second-leftmost), with one code path for both so
    /// the caller gets the entry in registers.
    #[inline(always)]
    pub(crate) fn pop_at(&mut self, pos: usize) -> Option<Entry<T>> {
        debug_assert!(pos <= 1);
        if pos < self.len {
            let s = self.unlink_at(pos);
            let e = self.empty_slot(s);
            if self.len == 0 && !self.spill.is_empty() {
                self.refill();
            }
            Some(e)
        } else if pos == 0 {
            None
        } else {
            self.pop_second()
        }
    }

    /// Removes and returns the second-leftmost entry.
    #[inline]
    pub(crate) fn pop_second(&mut self) -> Option<Entry<T>> {
        match self.len {
            0 => None,
            1 => self
                .spill
                .pop_first()
                .map(|(key, (weight, task))| Entry { key, weight, task }),
            _ => {
                let s = self.unlink_at(1);
                Some(self.empty_slot(s))
            }
        }
    }

    /// Removes and returns the rightmost entry.
    pub(crate) fn pop_last(&mut self) -> Option<Entry<T>> {
        if let Some((key, (weight, task))) = self.spill.pop_last() {
            return Some(Entry { key, weight, task });
        }
        if self.len == 0 {
            return None;
        }
        let s = self.unlink_at(self.len - 1);
        Some(self.empty_slot(s))
    }

    /// Inline position of `key`, if it is inline.
    #[inline]
    fn find(&self, key: TreeKey) -> Option<usize> {
        (0..self.len).find(|&pos| self.key_at(pos) == key)
    }

    /// Whether `key` belongs to the inline range (invariant 2).
    #[inline]
    fn in_inline_range(&self, key: TreeKey) -> bool {
        self.len > 0 && key <= self.key_at(self.len - 1)
    }

    /// Removes the entry with `key`, if present.
    #[inline]
    pub(crate) fn remove(&mut self, key: TreeKey) -> Option<Entry<T>> {
        if self.in_inline_range(key) {
            let pos = self.find(key)?;
            let s = self.unlink_at(pos);
            let e = self.empty_slot(s);
            if self.len == 0 && !self.spill.is_empty() {
                self.refill();
            }
            Some(e)
        } else {
            self.spill
                .remove(&key)
                .map(|(weight, task)| Entry { key, weight, task })
        }
    }

    /// Whether an entry with `key` is present.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: TreeKey) -> bool {
        if self.in_inline_range(key) {
            self.find(key).is_some()
        } else {
            self.spill.contains_key(&key)
        }
    }

    /// The accounted weight of the entry with `key`, for reweighting.
    pub(crate) fn weight_mut(&mut self, key: TreeKey) -> Option<&mut u64> {
        if self.in_inline_range(key) {
            let pos = self.find(key)?;
            let s = self.slot_at(pos);
            Some(&mut self.weights[s])
        } else {
            self.spill.get_mut(&key).map(|(w, _)| w)
        }
    }

    /// Entries in key order, as `(key, weight, task)`.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (TreeKey, u64, &T)> + '_ {
        (0..self.len)
            .map(move |pos| {
                let s = self.slot_at(pos);
                let task = self.slots[s]
                    .as_ref()
                    .expect("timeline: occupied slot holds no task");
                (self.keys[s], self.weights[s], task)
            })
            .chain(self.spill.iter().map(|(k, (w, t))| (*k, *w, t)))
    }

    /// All entries in key order, consuming the timeline.
    pub(crate) fn into_entries(mut self) -> impl DoubleEndedIterator<Item = Entry<T>> {
        let mut inline = Vec::with_capacity(self.len);
        while self.len > 0 {
            let s = self.unlink_at(0);
            inline.push(self.empty_slot(s));
        }
        let spill = std::mem::take(&mut self.spill);
        inline.into_iter().chain(
            spill
                .into_sorted_vec()
                .into_iter()
                .map(|(key, (weight, task))| Entry { key, weight, task }),
        )
    }

    /// Panics unless invariants 1–3 hold.
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        assert!(self.len <= INLINE);
        let mut used = 0u32;
        for pos in 0..self.len {
            let s = self.slot_at(pos);
            assert!(s < INLINE, "slot {s} out of range");
            assert_eq!(used & (1 << s), 0, "slot {s} linked twice");
            used |= 1 << s;
            assert!(self.slots[s].is_some(), "linked slot {s} is empty");
        }
        let above = self.order.checked_shr(8 * self.len as u32).unwrap_or(0);
        assert_eq!(above, 0, "stray order bytes");
        assert_eq!(self.free, !used & ((1 << INLINE) - 1), "free mask");
        for s in 0..INLINE {
            if self.free & (1 << s) != 0 {
                assert!(self.slots[s].is_none(), "free slot {s} holds a task");
            }
        }
        for pos in 1..self.len {
            assert!(self.key_at(pos - 1) < self.key_at(pos));
        }
        if self.len == 0 {
            assert!(self.spill.is_empty());
        } else if let Some((k, _)) = self.spill.first_key_value() {
            assert!(self.key_at(self.len - 1) < *k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sched::test_rng::Rng;

    fn entry(v: u64, seq: u64) -> Entry<u64> {
        Entry {
            key: TreeKey::new(v, seq),
            weight: 1000 + seq,
            task: seq,
        }
    }

    #[test]
    fn signed_key_order_puts_negative_vruntime_first() {
        let neg = TreeKey::new(0u64.wrapping_sub(5), 1);
        let zero = TreeKey::new(0, 0);
        let pos = TreeKey::new(7, 2);
        assert!(neg < zero && zero < pos);
        assert_eq!(neg.vruntime(), u64::MAX - 4);
    }

    #[test]
    fn timeline_matches_sorted_model_under_random_ops() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut tl = Timeline::<u64>::new();
        let mut model: Vec<(TreeKey, u64, u64)> = Vec::new();
        let mut seq = 0u64;
        for step in 0..20_000 {
            // Bias sizes around INLINE so both levels and the boundary move.
            let grow = model.len() < 2 || (model.len() < 12 && rng.below(100) < 55);
            match rng.below(10) {
                _ if grow => {
                    // Small vruntime range gives many equal vruntimes.
                    let v = rng.below(16).wrapping_sub(4);
                    let e = entry(v, seq);
                    model.push((e.key, e.weight, e.task));
                    tl.insert(e.key, e.weight, e.task);
                    seq += 1;
                }
                0..=3 => {
                    let e = tl.pop_at(0).unwrap();
                    assert_eq!((e.key, e.weight, e.task), model.remove(0), "step {step}");
                }
                4 => {
                    let e = tl.pop_second();
                    let m = (model.len() > 1).then(|| model.remove(1));
                    assert_eq!(e.map(|e| (e.key, e.weight, e.task)), m);
                }
                5 => {
                    let e = tl.pop_last().unwrap();
                    assert_eq!(Some((e.key, e.weight, e.task)), model.pop());
                }
                6 => {
                    // Remove a present key, and look up an absent one.
                    let i = rng.below(model.len() as u64) as usize;
                    let (k, w, t) = model.remove(i);
                    assert!(tl.contains(k));
                    let e = tl.remove(k).unwrap();
                    assert_eq!((e.key, e.weight, e.task), (k, w, t));
                    assert!(!tl.contains(k));
                    assert!(tl.remove(k).is_none());
                }
                7 => {
                    let i = rng.below(model.len() as u64) as usize;
                    let k = model[i].0;
                    *tl.weight_mut(k).unwrap() += 1;
                    model[i].1 += 1;
                }
                _ => {
                    let v = rng.below(16).wrapping_sub(4);
                    let e = entry(v, seq);
                    model.push((e.key, e.weight, e.task));
                    tl.insert(e.key, e.weight, e.task);
                    seq += 1;
                }
            }
            model.sort_by_key(|m| m.0);
            tl.assert_invariants();
            assert_eq!(tl.len(), model.len());
            assert_eq!(tl.first().map(|(k, _)| k), model.first().map(|m| m.0));
            assert_eq!(tl.second(), model.get(1).map(|m| (m.0, m.1)), "step {step}");
            let seen: Vec<_> = tl.iter().map(|(k, w, t)| (k, w, *t)).collect();
            assert_eq!(seen, model);
            let back: Vec<_> = tl.iter().rev().map(|(k, _, _)| k).collect();
            assert!(back.windows(2).all(|w| w[0] > w[1]));
        }
        let drained: Vec<_> = tl
            .into_entries()
            .map(|e| (e.key, e.weight, e.task))
            .collect();
        assert_eq!(drained, model);
    }
}
