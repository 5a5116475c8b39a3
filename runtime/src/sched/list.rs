//! Doubly linked FIFO lists over one slab of nodes, with stable node ids:
//! the kernel's `list_head` queues of the O(1), O(N) and real-time classes.
//!
//! Several lists (one per priority level) share one [`Slab`]; a list is just
//! its [`ListHead`] (`head`, `tail`), kept by the owning class. A queued task
//! is found again by the node id its entity remembers, so removal from the
//! middle is O(1), as with `list_del`. Freed ids are reused (LIFO).
//!
//! Invariants: every id linked in some list is occupied; `prev`/`next`
//! links are mutually consistent; `NIL` ends a list.

/// "No node".
pub(crate) const NIL: u32 = u32::MAX;

/// A list: first and last node ids (`NIL` when empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListHead {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl ListHead {
    /// The empty list.
    pub(crate) const EMPTY: ListHead = ListHead {
        head: NIL,
        tail: NIL,
    };

    /// Whether the list is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

impl Default for ListHead {
    fn default() -> Self {
        ListHead::EMPTY
    }
}

#[derive(Debug)]
struct Node<V> {
    prev: u32,
    next: u32,
    /// `None` while the node is free.
    val: Option<V>,
}

/// The shared node storage of a set of lists.
#[derive(Debug)]
pub(crate) struct Slab<V> {
    nodes: Vec<Node<V>>,
    /// Free node ids (reused LIFO, so hot nodes stay in cache).
    free: Vec<u32>,
}

impl<V> Default for Slab<V> {
    fn default() -> Self {
        Slab {
            nodes: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<V> Slab<V> {
    fn alloc(&mut self, val: V) -> u32 {
        if let Some(id) = self.free.pop() {
            let n = &mut self.nodes[id as usize];
            n.val = Some(val);
            n.prev = NIL;
            n.next = NIL;
            id
        } else {
            let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 queued tasks");
            self.nodes.push(Node {
                prev: NIL,
                next: NIL,
                val: Some(val),
            });
            id
        }
    }

    /// Appends `val` at the tail of `list`; returns its node id.
    pub(crate) fn push_back(&mut self, list: &mut ListHead, val: V) -> u32 {
        let id = self.alloc(val);
        self.nodes[id as usize].prev = list.tail;
        if list.tail == NIL {
            list.head = id;
        } else {
            self.nodes[list.tail as usize].next = id;
        }
        list.tail = id;
        id
    }

    /// Inserts `val` at the head of `list`; returns its node id.
    pub(crate) fn push_front(&mut self, list: &mut ListHead, val: V) -> u32 {
        let id = self.alloc(val);
        self.nodes[id as usize].next = list.head;
        if list.head == NIL {
            list.tail = id;
        } else {
            self.nodes[list.head as usize].prev = id;
        }
        list.head = id;
        id
    }

    /// Unlinks node `id` from `list` (which must hold it) and frees it.
    pub(crate) fn remove(&mut self, list: &mut ListHead, id: u32) -> V {
        let (prev, next) = {
            let n = &self.nodes[id as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        self.free.push(id);
        self.nodes[id as usize]
            .val
            .take()
            .expect("removed node is occupied")
    }

    /// Removes the head of `list`.
    #[inline]
    pub(crate) fn pop_front(&mut self, list: &mut ListHead) -> Option<V> {
        if list.is_empty() {
            None
        } else {
            Some(self.remove(list, list.head))
        }
    }

    /// The value of node `id`.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> &V {
        self.nodes[id as usize]
            .val
            .as_ref()
            .expect("node is occupied")
    }

    /// The value of node `id`, mutably.
    #[inline]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut V {
        self.nodes[id as usize]
            .val
            .as_mut()
            .expect("node is occupied")
    }

    /// The node after `id` (`NIL` at the tail).
    #[inline]
    pub(crate) fn next(&self, id: u32) -> u32 {
        self.nodes[id as usize].next
    }

    /// The node before `id` (`NIL` at the head).
    #[inline]
    pub(crate) fn prev(&self, id: u32) -> u32 {
        self.nodes[id as usize].prev
    }

    /// Node ids of `list`, head first.
    pub(crate) fn ids(&self, list: ListHead) -> impl Iterator<Item = u32> + '_ {
        let mut cur = list.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                None
            } else {
                let id = cur;
                cur = self.nodes[id as usize].next;
                Some(id)
            }
        })
    }

    /// Number of occupied nodes (all lists together).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::test_rng::Rng;
    use std::collections::VecDeque;

    #[test]
    fn lists_match_vecdeque_model_under_random_ops() {
        let mut rng = Rng(0x1234_5678);
        let mut slab = Slab::<u64>::default();
        let mut heads = [ListHead::EMPTY; 3];
        let mut model: [VecDeque<(u32, u64)>; 3] = Default::default();
        for step in 0..20_000u64 {
            let l = rng.below(3) as usize;
            match rng.below(5) {
                0 | 1 => {
                    let id = slab.push_back(&mut heads[l], step);
                    model[l].push_back((id, step));
                }
                2 => {
                    let id = slab.push_front(&mut heads[l], step);
                    model[l].push_front((id, step));
                }
                3 => assert_eq!(
                    slab.pop_front(&mut heads[l]),
                    model[l].pop_front().map(|p| p.1)
                ),
                _ => {
                    if !model[l].is_empty() {
                        let i = rng.below(model[l].len() as u64) as usize;
                        let (id, v) = model[l].remove(i).unwrap();
                        assert_eq!(slab.remove(&mut heads[l], id), v);
                    }
                }
            }
            for (h, m) in heads.iter().zip(&model) {
                let got: Vec<u64> = slab.ids(*h).map(|id| *slab.get(id)).collect();
                let want: Vec<u64> = m.iter().map(|p| p.1).collect();
                assert_eq!(got, want);
            }
        }
        assert_eq!(slab.len(), model.iter().map(|m| m.len()).sum::<usize>());
    }
}
