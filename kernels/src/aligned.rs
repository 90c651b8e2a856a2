//! A 64-byte aligned, zero-initialised byte buffer (packed weights, scratch). Owns no SIMD code.

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Heap buffer of `len` bytes whose start is 64-byte aligned (one cache line, one zmm).
#[derive(Clone)]
pub(crate) struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub(crate) fn zeroed(len: usize) -> Self {
        AlignedBytes {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    /// `len` zero bytes, reusing the allocation when it is large enough.
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        self.lines.clear();
        self.lines.resize(len.div_ceil(64), Line([0; 64]));
        self.len = len;
    }
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `lines` is a contiguous allocation of `lines.len() * 64 >= len` initialised bytes;
        // `Line` is repr(C) over [u8; 64] with no padding.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.len) }
    }
}
