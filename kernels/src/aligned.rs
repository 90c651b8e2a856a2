//! A 64-byte aligned, zero-initialised byte buffer for packed weights (and the run-time repacks of
//! attention operands). Owns the allocation policy only, no SIMD code.
//!
//! Buffers of at least [`HUGE`] bytes are 2 MiB aligned and, on Linux, marked `MADV_HUGEPAGE`
//! before their pages are first written. Weights stream from DRAM on every run of a large model
//! (ResNet-50: 25 MB int8, 100 MB fp32), and with 4 KiB pages every 4 KiB of a weight panel is a
//! TLB miss (a two-dimensional page walk under a hypervisor) and a point where the hardware
//! prefetcher stops; 2 MiB pages remove both. The size is rounded up to whole 2 MiB pages only
//! when that wastes at most an eighth; otherwise the tail stays in 4 KiB pages.

use std::alloc::Layout;
use std::ptr::NonNull;

/// Buffers from this size on get the huge-page treatment.
const HUGE: usize = 2 << 20;
const LINE: usize = 64;

/// A cache line's alignment (for the dangling pointer of an empty buffer).
#[repr(C, align(64))]
struct Line([u8; LINE]);

/// Heap buffer of `len` bytes whose start is 64-byte aligned (one cache line, one zmm).
pub(crate) struct AlignedBytes {
    ptr: NonNull<u8>,
    len: usize,
    /// The allocation (`None` when nothing is allocated: `len == 0`).
    layout: Option<Layout>,
}

// SAFETY: AlignedBytes owns its allocation exclusively (like a Vec<u8>); shared references only
// read it.
unsafe impl Send for AlignedBytes {}
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    pub(crate) fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBytes {
                ptr: NonNull::<Line>::dangling().cast(),
                len: 0,
                layout: None,
            };
        }
        let layout = layout_for(len);
        // SAFETY: the layout has a non-zero size and a power-of-two alignment.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        if layout.align() == HUGE {
            advise_huge(raw, layout.size());
        }
        // SAFETY: `raw` is valid for `layout.size() >= len` bytes. The zeroing is the first write,
        // so the pages are faulted in after the advice.
        unsafe { std::ptr::write_bytes(raw, 0, layout.size()) };
        AlignedBytes {
            ptr,
            len,
            layout: Some(layout),
        }
    }

    /// `len` zero bytes, reusing the allocation when it is large enough.
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        match self.layout {
            Some(l) if l.size() >= len => {
                // SAFETY: the allocation holds `l.size() >= len` bytes.
                unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
                self.len = len;
            }
            _ => *self = AlignedBytes::zeroed(len),
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
        if let Some(l) = self.layout {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), l) };
        }
    }
}

/// 64-byte lines; from [`HUGE`] bytes on, 2 MiB aligned and rounded up to whole 2 MiB pages when
/// that adds at most an eighth (else to whole 4 KiB pages).
fn layout_for(len: usize) -> Layout {
    let (size, align) = if len >= HUGE {
        let whole = len.next_multiple_of(HUGE);
        if whole - len <= len / 8 {
            (whole, HUGE)
        } else {
            (len.next_multiple_of(4096), HUGE)
        }
    } else {
        (len.next_multiple_of(LINE), LINE)
    };
    Layout::from_size_align(size, align).unwrap_or_else(|_| {
        // Only reachable for sizes near usize::MAX, which the allocator would refuse anyway.
        std::alloc::handle_alloc_error(Layout::new::<[u8; LINE]>())
    })
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
        assert_eq!(layout_for(100).size(), 128);
    }
}
