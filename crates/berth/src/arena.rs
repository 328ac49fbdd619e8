//! The process's first allocations come from a static arena.
//!
//! `berth run` is started once per container, so its start-up is on the
//! hot path, and most of what it allocates lives until it exits. Carving
//! those allocations from a static buffer (untouched pages cost nothing
//! until used) skips the general allocator's set-up and its habit of
//! returning freed memory to the kernel between short bursts. Freeing is
//! free: the most recent allocation can be given back or grown in place,
//! anything else stays in the arena. Once the arena is full, every
//! allocation goes to the general allocator, so long-running commands (the
//! server, the agent) lose at most the arena's size to this.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

const ARENA_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct Buffer(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: disjoint ranges of the buffer are handed out through `next`.
unsafe impl Sync for Buffer {}

/// The arena in front of `general`, which serves what does not fit.
pub struct StartArena<A> {
    buffer: Buffer,
    /// Offset of the first free byte.
    next: AtomicUsize,
    general: A,
}

impl<A> StartArena<A> {
    pub const fn new(general: A) -> StartArena<A> {
        StartArena {
            buffer: Buffer(UnsafeCell::new([0; ARENA_SIZE])),
            next: AtomicUsize::new(0),
            general,
        }
    }

    fn base(&self) -> usize {
        self.buffer.0.get() as usize
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= self.base() && p < self.base() + ARENA_SIZE
    }

    /// Bumps `next` to fit `layout`; `None` when the arena is full.
    fn carve(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + next).checked_add(layout.align() - 1)? & !(layout.align() - 1);
            let end = start.checked_add(layout.size())?;
            if end > base + ARENA_SIZE {
                return None;
            }
            match self.next.compare_exchange_weak(
                next,
                end - base,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(start as *mut u8),
                Err(now) => next = now,
            }
        }
    }
}

// SAFETY: every pointer handed out is either a fresh, suitably aligned
// range of the arena no other allocation overlaps, or the general
// allocator's.
unsafe impl<A: GlobalAlloc> GlobalAlloc for StartArena<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.carve(layout) {
            Some(p) => p,
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { self.general.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr) {
            // Give the space back only if it is the last allocation.
            let end = ptr as usize + layout.size() - self.base();
            let _ = self.next.compare_exchange(
                end,
                ptr as usize - self.base(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            // SAFETY: the general allocator made it.
            unsafe { self.general.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: the general allocator made it.
            return unsafe { self.general.realloc(ptr, layout, new_size) };
        }
        let offset = ptr as usize - self.base();
        let end = offset + layout.size();
        // The last allocation grows or shrinks in place.
        if offset + new_size <= ARENA_SIZE
            && self
                .next
                .compare_exchange(end, offset + new_size, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: a layout of the same alignment and the new size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded to our own alloc/dealloc.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
