//! `LineQueue`: the FIFO under a channel's lock, in a buffer of whole cache
//! lines.
//!
//! A `VecDeque` would do, except for where its buffer lives: a channel's
//! first push allocates a few slots from the pushing thread's malloc arena,
//! next to whatever that thread allocated just before, often another
//! channel's buffer. Two ping-pong pairs whose channels were first used on
//! the same CPU and that then ran on two CPUs shared those edge lines, and
//! each push and pop bounced a line between the CPUs (2 of 30 runs of two
//! pairs at 140-190 ns per round trip instead of 93). This ring allocates
//! its buffer aligned to [`LINE`] bytes and sized in whole multiples of
//! it, so the slots share no line with any other allocation.
//!
//! # Invariants
//! - `cap` is 0 (nothing allocated yet) or a power of two, the number of
//!   slots in `buf`; a zero-sized `T` never allocates (`cap` stays 0 and
//!   every slot is `buf` itself).
//! - The `len` live elements sit at slots `head, head + 1, ..` modulo
//!   `cap`; every other slot is uninitialised.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::mem;
use std::ptr::{self, NonNull};

/// Alignment and size granule of the buffer: crossbeam's `CachePadded`
/// width on x86_64 (a line and the adjacent line the prefetcher pairs
/// with it).
pub(crate) const LINE: usize = 128;

/// A growable FIFO ring of `T` in a buffer of whole [`LINE`]s.
pub(crate) struct LineQueue<T> {
    buf: NonNull<T>,
    cap: usize,
    head: usize,
    len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the queue owns its elements like a `Vec`: sending it sends them.
unsafe impl<T: Send> Send for LineQueue<T> {}
// SAFETY: shared access hands out nothing but lengths.
unsafe impl<T: Sync> Sync for LineQueue<T> {}

impl<T> LineQueue<T> {
    /// An empty queue; allocates nothing.
    pub(crate) const fn new() -> LineQueue<T> {
        LineQueue {
            buf: NonNull::dangling(),
            cap: 0,
            head: 0,
            len: 0,
            _owns: PhantomData,
        }
    }

    /// Elements queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of the `i`-th element from the front (`i` may equal `len`:
    /// the slot a push fills).
    #[inline]
    fn slot(&self, i: usize) -> *mut T {
        if mem::size_of::<T>() == 0 {
            return self.buf.as_ptr();
        }
        // SAFETY: `cap` is a power of two when anything is stored (a push
        // grows first), so the masked index is inside the buffer.
        unsafe { self.buf.as_ptr().add((self.head + i) & (self.cap - 1)) }
    }

    /// The buffer layout for `cap` slots: whole lines, line-aligned.
    fn layout(cap: usize) -> Layout {
        let bytes = cap
            .checked_mul(mem::size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(LINE))
            .expect("LineQueue: capacity overflow");
        Layout::from_size_align(bytes, LINE.max(mem::align_of::<T>()))
            .expect("LineQueue: capacity overflow")
    }

    /// Doubles the buffer (the first allocation fills one line or more),
    /// moving the elements to the front of the new one.
    #[cold]
    fn grow(&mut self) {
        let new_cap = if self.cap == 0 {
            (LINE / mem::size_of::<T>()).max(1).next_power_of_two()
        } else {
            self.cap
                .checked_mul(2)
                .expect("LineQueue: capacity overflow")
        };
        let layout = Self::layout(new_cap);
        // SAFETY: the layout has a non-zero size (`new_cap` ≥ 1 and `T` is
        // not zero-sized: those never grow).
        let raw = unsafe { alloc::alloc(layout) } as *mut T;
        let Some(new_buf) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        for i in 0..self.len {
            // SAFETY: element `i` is live in the old buffer; slot `i` of the
            // new one is fresh; the buffers do not overlap.
            unsafe { ptr::copy_nonoverlapping(self.slot(i), new_buf.as_ptr().add(i), 1) };
        }
        if self.cap != 0 {
            // SAFETY: the old buffer came from `alloc` with this layout; its
            // elements were moved out above (bitwise, not dropped).
            unsafe { alloc::dealloc(self.buf.as_ptr() as *mut u8, Self::layout(self.cap)) };
        }
        self.buf = new_buf;
        self.cap = new_cap;
        self.head = 0;
    }

    /// Appends `v` at the back.
    #[inline]
    pub(crate) fn push_back(&mut self, v: T) {
        if mem::size_of::<T>() != 0 && self.len == self.cap {
            self.grow();
        }
        // SAFETY: slot `len` is inside the buffer (room was made above) and
        // holds no live element.
        unsafe { self.slot(self.len).write(v) };
        self.len += 1;
    }

    /// Takes the front element.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: the front slot holds a live element, moved out here and
        // no longer counted below.
        let v = unsafe { self.slot(0).read() };
        if mem::size_of::<T>() != 0 {
            self.head = (self.head + 1) & (self.cap - 1);
        }
        self.len -= 1;
        Some(v)
    }

    /// Takes the element `idx` from the front, closing the gap (the
    /// elements behind it move one slot forward); `None` past the end.
    pub(crate) fn remove(&mut self, idx: usize) -> Option<T> {
        if idx >= self.len {
            return None;
        }
        // SAFETY: slot `idx` holds a live element, moved out here.
        let v = unsafe { self.slot(idx).read() };
        for i in idx..self.len - 1 {
            // SAFETY: element `i + 1` is live; slot `i` was vacated (moved
            // out above or in the previous step); slots are distinct.
            unsafe { ptr::copy_nonoverlapping(self.slot(i + 1), self.slot(i), 1) };
        }
        self.len -= 1;
        Some(v)
    }
}

impl<T> Default for LineQueue<T> {
    fn default() -> Self {
        LineQueue::new()
    }
}

impl<T> Drop for LineQueue<T> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
        if self.cap != 0 {
            // SAFETY: allocated by `grow` with this layout; every element
            // was dropped above.
            unsafe { alloc::dealloc(self.buf.as_ptr() as *mut u8, Self::layout(self.cap)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn fifo_across_growth_and_wraparound() {
        let mut q = LineQueue::new();
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        // Keep a few queued while cycling, so the ring wraps, then grow
        // while wrapped.
        for round in 0..50 {
            for _ in 0..(3 + round % 7) {
                q.push_back(next_in);
                next_in += 1;
            }
            for _ in 0..(2 + round % 5) {
                if let Some(v) = q.pop_front() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
            assert_eq!(q.len() as u64, next_in - next_out);
        }
        while let Some(v) = q.pop_front() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert!(q.is_empty());
    }

    #[test]
    fn buffer_is_whole_aligned_lines() {
        let mut q = LineQueue::new();
        q.push_back(1u8);
        assert_eq!(q.buf.as_ptr() as usize % LINE, 0);
        assert_eq!(q.cap, LINE, "one line of u8 slots");
        let mut big = LineQueue::new();
        big.push_back([7u64; 40]); // 320 bytes: one slot, three lines
        assert_eq!(big.buf.as_ptr() as usize % LINE, 0);
        assert_eq!(LineQueue::<[u64; 40]>::layout(big.cap).size(), 3 * LINE);
        big.push_back([8u64; 40]);
        assert_eq!(big.pop_front().map(|a| a[0]), Some(7));
        assert_eq!(big.pop_front().map(|a| a[39]), Some(8));
    }

    #[test]
    fn remove_closes_the_gap_in_order() {
        let mut q = LineQueue::new();
        for v in 0..20u32 {
            q.push_back(v);
        }
        for _ in 0..5 {
            q.pop_front();
        }
        for v in 20..30u32 {
            q.push_back(v); // wraps in the 32-slot ring
        }
        assert_eq!(q.remove(3), Some(8));
        assert_eq!(q.remove(100), None);
        let rest: Vec<u32> = std::iter::from_fn(|| q.pop_front()).collect();
        let want: Vec<u32> = (5..30).filter(|&v| v != 8).collect();
        assert_eq!(rest, want);
    }

    #[test]
    fn drops_every_element_once() {
        let drops = Rc::new(Cell::new(0));
        struct D(Rc<Cell<usize>>);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let mut q = LineQueue::new();
        for _ in 0..40 {
            q.push_back(D(drops.clone()));
        }
        drop(q.pop_front());
        drop(q.remove(10));
        assert_eq!(drops.get(), 2);
        drop(q);
        assert_eq!(drops.get(), 40);
    }

    #[test]
    fn zero_sized_elements_never_allocate() {
        let mut q = LineQueue::new();
        for _ in 0..1000 {
            q.push_back(());
        }
        assert_eq!(q.cap, 0);
        assert_eq!(q.len(), 1000);
        assert_eq!(q.remove(500), Some(()));
        assert_eq!(q.pop_front(), Some(()));
        assert_eq!(q.len(), 998);
    }
}
