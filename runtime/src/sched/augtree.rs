//! EEVDF's run-queue tree: entities ordered by virtual deadline, each node
//! augmented with the minimum vruntime of its subtree (reference §2.4; the
//! kernel uses an augmented red-black tree, `min_vruntime_cb`).
//!
//! This is a treap (a binary search tree that is also a heap on random node
//! priorities) in a slab with stable node ids: expected depth O(log n), so
//! insert, remove and the eligible-earliest-deadline descent are O(log n).
//! The priorities come from a fixed-seed xorshift, so a queue's shape — and
//! hence every run — is deterministic.
//!
//! Invariants (checked by `assert_invariants` in tests):
//! 1. In-order traversal is strictly increasing in `(deadline as i64, seq)`
//!    (the same signed order as the CFS tree, see `timeline.rs`).
//! 2. A parent's `prio` is ≥ its children's.
//! 3. `min_v` of a node is the wrap-safe minimum of its own `vruntime` and
//!    its children's `min_v`.

use super::cfs::{entity_before, min_vruntime};
use super::list::NIL;

#[derive(Debug)]
struct Node<T> {
    left: u32,
    right: u32,
    prio: u32,
    deadline: u64,
    seq: u64,
    vruntime: u64,
    /// Subtree minimum vruntime.
    min_v: u64,
    weight: u64,
    task: Option<T>,
}

/// What the tree stores per entity besides the handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    pub(crate) deadline: u64,
    pub(crate) vruntime: u64,
    pub(crate) weight: u64,
}

/// The deadline-ordered, min-vruntime-augmented tree.
#[derive(Debug)]
pub(crate) struct AugTree<T> {
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
    root: u32,
    len: usize,
    rng: u64,
    next_seq: u64,
}

impl<T> Default for AugTree<T> {
    fn default() -> Self {
        AugTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            len: 0,
            rng: 0x2545_F491_4F6C_DD1D,
            next_seq: 0,
        }
    }
}

impl<T> AugTree<T> {
    /// Number of entities.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn n(&self, id: u32) -> &Node<T> {
        &self.nodes[id as usize]
    }

    #[inline]
    fn nm(&mut self, id: u32) -> &mut Node<T> {
        &mut self.nodes[id as usize]
    }

    #[inline]
    fn key(&self, id: u32) -> (i64, u64) {
        let n = self.n(id);
        (n.deadline as i64, n.seq)
    }

    /// Recomputes `min_v` of `id` from its own vruntime and its children.
    #[inline]
    fn pull(&mut self, id: u32) {
        let (l, r, mut m) = {
            let n = self.n(id);
            (n.left, n.right, n.vruntime)
        };
        if l != NIL {
            m = min_vruntime(m, self.n(l).min_v);
        }
        if r != NIL {
            m = min_vruntime(m, self.n(r).min_v);
        }
        self.nm(id).min_v = m;
    }

    fn rotate_right(&mut self, t: u32) -> u32 {
        let l = self.n(t).left;
        let lr = self.n(l).right;
        self.nm(t).left = lr;
        self.nm(l).right = t;
        self.pull(t);
        self.pull(l);
        l
    }

    fn rotate_left(&mut self, t: u32) -> u32 {
        let r = self.n(t).right;
        let rl = self.n(r).left;
        self.nm(t).right = rl;
        self.nm(r).left = t;
        self.pull(t);
        self.pull(r);
        r
    }

    fn insert_at(&mut self, t: u32, id: u32) -> u32 {
        if t == NIL {
            return id;
        }
        // The new node joins t's subtree, which can only lower its minimum:
        // no need to read the sibling subtree (a cache miss per level).
        // Rotations keep a subtree's node set and re-pull what they move.
        let v = self.n(id).vruntime;
        let m = min_vruntime(self.n(t).min_v, v);
        self.nm(t).min_v = m;
        if self.key(id) < self.key(t) {
            let l = self.insert_at(self.n(t).left, id);
            self.nm(t).left = l;
            if self.n(l).prio > self.n(t).prio {
                return self.rotate_right(t);
            }
        } else {
            let r = self.insert_at(self.n(t).right, id);
            self.nm(t).right = r;
            if self.n(r).prio > self.n(t).prio {
                return self.rotate_left(t);
            }
        }
        t
    }

    /// Inserts an entity; returns its node id (stable until removed).
    pub(crate) fn insert(&mut self, info: NodeInfo, task: T) -> u32 {
        // xorshift64 for the heap priorities.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let node = Node {
            left: NIL,
            right: NIL,
            prio: (self.rng >> 32) as u32,
            deadline: info.deadline,
            seq: self.next_seq,
            vruntime: info.vruntime,
            min_v: info.vruntime,
            weight: info.weight,
            task: Some(task),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let id = if let Some(id) = self.free.pop() {
            self.nodes[id as usize] = node;
            id
        } else {
            let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 queued tasks");
            self.nodes.push(node);
            id
        };
        self.root = self.insert_at(self.root, id);
        self.len += 1;
        id
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.n(a).prio > self.n(b).prio {
            let r = self.merge(self.n(a).right, b);
            self.nm(a).right = r;
            self.pull(a);
            a
        } else {
            let l = self.merge(a, self.n(b).left);
            self.nm(b).left = l;
            self.pull(b);
            b
        }
    }

    fn remove_at(&mut self, t: u32, id: u32) -> u32 {
        debug_assert!(t != NIL, "augtree: removed node not found");
        if t == NIL {
            return NIL;
        }
        if t == id {
            let (l, r) = (self.n(t).left, self.n(t).right);
            return self.merge(l, r);
        }
        if self.key(id) < self.key(t) {
            let l = self.remove_at(self.n(t).left, id);
            self.nm(t).left = l;
        } else {
            let r = self.remove_at(self.n(t).right, id);
            self.nm(t).right = r;
        }
        // Removing a node above t's minimum leaves the minimum alone.
        if !entity_before(self.n(t).min_v, self.n(id).vruntime) {
            self.pull(t);
        }
        t
    }

    /// Removes node `id` (which must be in the tree); returns its info and
    /// handle.
    pub(crate) fn remove(&mut self, id: u32) -> (NodeInfo, T) {
        self.root = self.remove_at(self.root, id);
        self.len -= 1;
        self.free.push(id);
        let n = self.nm(id);
        let info = NodeInfo {
            deadline: n.deadline,
            vruntime: n.vruntime,
            weight: n.weight,
        };
        let task = n.task.take().expect("removed node is occupied");
        (info, task)
    }

    /// The handle of node `id`.
    #[inline]
    pub(crate) fn task(&self, id: u32) -> &T {
        self.n(id).task.as_ref().expect("node is occupied")
    }

    /// The stored info of node `id`.
    #[inline]
    pub(crate) fn info(&self, id: u32) -> NodeInfo {
        let n = self.n(id);
        NodeInfo {
            deadline: n.deadline,
            vruntime: n.vruntime,
            weight: n.weight,
        }
    }

    /// The minimum vruntime over the whole tree.
    #[inline]
    pub(crate) fn min_vruntime(&self) -> Option<u64> {
        (self.root != NIL).then(|| self.n(self.root).min_v)
    }

    /// The node with the earliest deadline.
    pub(crate) fn first(&self) -> Option<u32> {
        let mut t = self.root;
        if t == NIL {
            return None;
        }
        while self.n(t).left != NIL {
            t = self.n(t).left;
        }
        Some(t)
    }

    /// The node with the latest deadline.
    pub(crate) fn last(&self) -> Option<u32> {
        let mut t = self.root;
        if t == NIL {
            return None;
        }
        while self.n(t).right != NIL {
            t = self.n(t).right;
        }
        Some(t)
    }

    /// The eligible node with the earliest deadline (fair.c:
    /// `__pick_eevdf()`, §2.4 steps 5–6): the leftmost if it is eligible,
    /// else the heap descent — go left while the left subtree holds an
    /// eligible vruntime, else take this node if eligible, else go right.
    #[inline]
    pub(crate) fn pick_eligible(&self, eligible: impl Fn(u64) -> bool) -> Option<u32> {
        if let Some(first) = self.first() {
            if eligible(self.n(first).vruntime) {
                return Some(first);
            }
        }
        let mut t = self.root;
        while t != NIL {
            let n = self.n(t);
            if n.left != NIL && eligible(self.n(n.left).min_v) {
                t = n.left;
                continue;
            }
            if eligible(n.vruntime) {
                return Some(t);
            }
            t = n.right;
        }
        None
    }

    /// Node ids in deadline order.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        let mut stack = Vec::new();
        let mut t = self.root;
        while t != NIL || !stack.is_empty() {
            while t != NIL {
                stack.push(t);
                t = self.n(t).left;
            }
            let id = stack.pop().expect("stack not empty");
            out.push(id);
            t = self.n(id).right;
        }
        out
    }

    /// Panics unless the invariants hold (tests only).
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        let ids = self.ids();
        assert_eq!(ids.len(), self.len);
        for w in ids.windows(2) {
            assert!(self.key(w[0]) < self.key(w[1]), "in-order keys increase");
        }
        for &id in &ids {
            let n = self.n(id);
            let mut m = n.vruntime;
            for c in [n.left, n.right] {
                if c != NIL {
                    assert!(self.n(c).prio <= n.prio, "heap order");
                    m = min_vruntime(m, self.n(c).min_v);
                }
            }
            assert_eq!(n.min_v, m, "augmented min vruntime");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::test_rng::Rng;

    #[test]
    fn augtree_matches_model_and_picks_earliest_eligible_deadline() {
        let mut rng = Rng(77);
        let mut tree = AugTree::<u64>::default();
        // (id, deadline, vruntime, seq-order)
        let mut model: Vec<(u32, u64, u64, u64)> = Vec::new();
        let mut seq = 0u64;
        for step in 0..6_000u64 {
            if model.is_empty() || rng.below(3) != 0 {
                let info = NodeInfo {
                    deadline: rng.below(1_000),
                    vruntime: rng.below(1_000),
                    weight: 1024,
                };
                let id = tree.insert(info, step);
                model.push((id, info.deadline, info.vruntime, seq));
                seq += 1;
            } else {
                let i = rng.below(model.len() as u64) as usize;
                let (id, d, v, _) = model.swap_remove(i);
                let (info, _) = tree.remove(id);
                assert_eq!((info.deadline, info.vruntime), (d, v));
            }
            if step % 50 == 0 {
                tree.assert_invariants();
            }
            // Eligible: vruntime <= threshold.
            let thr = rng.below(1_000);
            let want = model
                .iter()
                .filter(|m| m.2 <= thr)
                .min_by_key(|m| (m.1, m.3))
                .map(|m| m.0);
            assert_eq!(tree.pick_eligible(|v| v <= thr), want);
            let min_v = model.iter().map(|m| m.2).min();
            assert_eq!(tree.min_vruntime(), min_v);
        }
    }
}
