//! A 64-byte aligned, zero-initialised byte buffer for packed weights (and the run-time repacks of
//! attention operands). Owns the allocation policy only, no SIMD code.
//!
//! Weights stream from DRAM on every run of a large model (ResNet-50: 25 MB int8, 100 MB fp32).
//! With 4 KiB pages every 4 KiB of a weight panel is a TLB miss (a two-dimensional page walk under
//! a hypervisor) and a point where the hardware prefetcher stops, so weights live in 2 MiB pages
//! (`MADV_HUGEPAGE` on Linux, set before the pages are first written):
//! - buffers of at least [`HUGE`] bytes get their own 2 MiB aligned allocation, rounded up to whole
//!   2 MiB pages only when that wastes at most an eighth (else the tail stays in 4 KiB pages);
//! - smaller ones are carved out of shared [`CHUNK`]-byte blocks (a bump allocator; a block is
//!   freed when the last buffer in it is dropped, and the most recent range of the current block
//!   goes back to it when dropped, so a buffer made and dropped on every run reuses one range),
//!   so a model's many small weight buffers share huge pages instead of each sitting in its own
//!   4 KiB pages. Only the used part of a block is touched, so resident memory grows with what is
//!   allocated, in 2 MiB steps; like `malloc`, the current block keeps its touched pages.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Buffers from this size on get their own huge-page allocation.
const HUGE: usize = 2 << 20;
/// Size of a shared block for the smaller buffers.
const CHUNK: usize = 16 << 20;
const LINE: usize = 64;

/// A cache line's alignment (for the dangling pointer of an empty buffer).
#[repr(C, align(64))]
struct Line([u8; LINE]);

/// Who owns the bytes behind an [`AlignedBytes`].
enum Store {
    /// Nothing allocated (`len == 0`).
    Empty,
    /// Its own allocation.
    Own(Layout),
    /// `cap` bytes of a shared block, from byte `off` of it.
    Shared {
        block: Arc<Block>,
        off: usize,
        cap: usize,
    },
}

/// Heap buffer of `len` bytes whose start is 64-byte aligned (one cache line, one zmm).
pub(crate) struct AlignedBytes {
    ptr: NonNull<u8>,
    len: usize,
    store: Store,
}

// SAFETY: AlignedBytes owns its bytes exclusively (like a Vec<u8>; a shared block hands out
// disjoint ranges); shared references only read them.
unsafe impl Send for AlignedBytes {}
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    pub(crate) fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBytes {
                ptr: NonNull::<Line>::dangling().cast(),
                len: 0,
                store: Store::Empty,
            };
        }
        if len < HUGE {
            let (block, off, cap) = Block::carve(len);
            // SAFETY: `off + cap <= CHUNK`: inside the block, handed out to this buffer only.
            let ptr = unsafe { NonNull::new_unchecked(block.base.as_ptr().add(off)) };
            // SAFETY: `ptr` is valid for `cap >= len` bytes.
            unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
            return AlignedBytes {
                ptr,
                len,
                store: Store::Shared { block, off, cap },
            };
        }
        let layout = layout_for(len);
        // SAFETY: the layout has a non-zero size and a power-of-two alignment.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        advise_huge(raw, layout.size());
        // SAFETY: `raw` is valid for `layout.size() >= len` bytes. The zeroing is the first write,
        // so the pages are faulted in after the advice.
        unsafe { std::ptr::write_bytes(raw, 0, layout.size()) };
        AlignedBytes {
            ptr,
            len,
            store: Store::Own(layout),
        }
    }

    /// `len` zero bytes, reusing the allocation when it is large enough.
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        let cap = match &self.store {
            Store::Empty => 0,
            Store::Own(l) => l.size(),
            Store::Shared { cap, .. } => *cap,
        };
        if cap >= len {
            // SAFETY: the allocation holds `cap >= len` bytes.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
            self.len = len;
        } else {
            *self = AlignedBytes::zeroed(len);
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes (dangling and aligned when len == 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes as `f32`s (`len` must be a multiple of 4; the start is 64-byte aligned).
    pub(crate) fn as_f32(&self) -> &[f32] {
        bytemuck::cast_slice(self.as_slice())
    }

    pub(crate) fn as_f32_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(self.as_mut_slice())
    }
}

impl Clone for AlignedBytes {
    fn clone(&self) -> Self {
        let mut c = AlignedBytes::zeroed(self.len);
        c.as_mut_slice().copy_from_slice(self.as_slice());
        c
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        match &self.store {
            Store::Own(l) => {
                // SAFETY: allocated in `zeroed` with this layout.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr(), *l) };
            }
            Store::Shared { block, off, cap } => {
                // The most recent range of the current block goes back to it, so a buffer made
                // and dropped on every run (a run-time packed operand) reuses one range. Other
                // ranges are freed with their block (the Arc), when its last buffer goes.
                let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((b, used)) = cur.as_mut() {
                    if Arc::ptr_eq(b, block) && off + cap == *used {
                        *used = *off;
                    }
                }
            }
            Store::Empty => {}
        }
    }
}

/// A [`CHUNK`]-byte, 2 MiB aligned block that smaller buffers are carved from.
struct Block {
    base: NonNull<u8>,
}

// SAFETY: the block is plain memory; each carved range is owned by one AlignedBytes.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

/// The block being carved and how many bytes of it are handed out.
static CURRENT: Mutex<Option<(Arc<Block>, usize)>> = Mutex::new(None);

impl Block {
    fn layout() -> Layout {
        Layout::from_size_align(CHUNK, HUGE).expect("constant layout")
    }

    fn new() -> Block {
        let layout = Block::layout();
        // SAFETY: non-zero size, power-of-two alignment.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // Before any write: the carved ranges are zeroed (and so faulted in) by their owners.
        advise_huge(raw, CHUNK);
        Block { base }
    }

    /// `len` (< HUGE <= CHUNK) bytes, 64-byte aligned, from the current block or a new one: the
    /// block, the offset and the capacity handed out (`len` rounded up to a line).
    fn carve(len: usize) -> (Arc<Block>, usize, usize) {
        let cap = len.next_multiple_of(LINE);
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let fits = cur.as_ref().is_some_and(|(_, used)| used + cap <= CHUNK);
        if !fits {
            *cur = Some((Arc::new(Block::new()), 0));
        }
        let (block, used) = cur.as_mut().expect("a current block");
        let off = *used;
        *used += cap;
        (block.clone(), off, cap)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `Block::new` with this layout; no carved range outlives the block
        // (each holds an Arc to it).
        unsafe { std::alloc::dealloc(self.base.as_ptr(), Block::layout()) };
    }
}

/// An own allocation (from [`HUGE`] bytes on): 2 MiB aligned, rounded up to whole 2 MiB pages when
/// that adds at most an eighth (else to whole 4 KiB pages).
fn layout_for(len: usize) -> Layout {
    let too_big = || -> ! { panic!("AlignedBytes: {len} bytes is not an allocatable size") };
    let whole = len
        .checked_next_multiple_of(HUGE)
        .unwrap_or_else(|| too_big());
    let size = if whole - len <= len / 8 {
        whole
    } else {
        len.checked_next_multiple_of(4096)
            .unwrap_or_else(|| too_big())
    };
    Layout::from_size_align(size, HUGE).unwrap_or_else(|_| too_big())
}

#[cfg(target_os = "linux")]
fn advise_huge(p: *mut u8, len: usize) {
    // SAFETY: `p .. p + len` is one allocation we own; MADV_HUGEPAGE only changes how its pages
    // are backed, never their contents. Failure (no THP support) leaves 4 KiB pages: ignored.
    unsafe {
        libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_p: *mut u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_huge_buffers_are_aligned_zeroed_and_reusable() {
        for len in [
            0,
            1,
            63,
            64,
            1000,
            HUGE - 1,
            HUGE,
            HUGE + 4096,
            5 * HUGE / 2,
        ] {
            let mut b = AlignedBytes::zeroed(len);
            assert_eq!(b.as_slice().len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % LINE, 0, "len {len}");
            if len >= HUGE {
                assert_eq!(b.as_slice().as_ptr() as usize % HUGE, 0, "len {len}");
            }
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            let c = b.clone();
            assert_eq!(c.as_slice(), b.as_slice());
            b.reset_zeroed(len / 2);
            assert_eq!(b.as_slice().len(), len / 2);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.reset_zeroed(len + 100);
            assert_eq!(b.as_slice().len(), len + 100);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn rounding_to_huge_pages_wastes_at_most_an_eighth() {
        assert_eq!(layout_for(HUGE).size(), HUGE);
        assert_eq!(layout_for(8 * HUGE + 1).size(), 9 * HUGE);
        // 2.36 MB (ResNet-50 layer4 3x3, int8): rounding to 4 MiB would waste 40%.
        assert_eq!(layout_for(2_359_296).size(), 2_359_296);
    }

    #[test]
    fn shared_blocks_hand_out_disjoint_ranges_and_open_new_blocks() {
        // Nine buffers just under HUGE do not fit one CHUNK: the last ones go to a new block.
        let mut bufs: Vec<AlignedBytes> =
            (0..9).map(|_| AlignedBytes::zeroed(HUGE - 100)).collect();
        bufs.extend((0..50).map(|i| AlignedBytes::zeroed(1 + 37 * i)));
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(matches!(b.store, Store::Shared { .. }));
            assert_eq!(b.as_slice().as_ptr() as usize % LINE, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(i as u8);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(
                b.as_slice().iter().all(|&x| x == i as u8),
                "buffer {i} overwritten"
            );
        }
        let blocks: std::collections::HashSet<usize> = bufs
            .iter()
            .map(|b| match &b.store {
                Store::Shared { block, .. } => Arc::as_ptr(block) as usize,
                _ => unreachable!(),
            })
            .collect();
        assert!(blocks.len() >= 2);
    }

    #[test]
    fn a_buffer_made_and_dropped_repeatedly_reuses_its_range() {
        // (Other tests may carve from the same block concurrently, so most, not all, rounds.)
        let mut reused = 0;
        for _ in 0..100 {
            let a = AlignedBytes::zeroed(100_000);
            let p = a.as_slice().as_ptr();
            drop(a);
            let b = AlignedBytes::zeroed(100_000);
            reused += usize::from(b.as_slice().as_ptr() == p);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
        assert!(reused > 50, "reused {reused} of 100");
        // Each buffer keeps its block alive (freed with the last one; other tests running in
        // parallel may share the blocks, so that is not asserted here).
    }
}
