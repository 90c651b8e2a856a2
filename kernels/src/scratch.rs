//! Per-thread reusable working memory for the kernels' per-call buffers (im2col rows,
//! indirection pointers, zero-padded copies), so that a model's steady-state run allocates
//! nothing: each call takes a buffer from its thread's free list and gives it back on drop.
//! Large fresh allocations are not free: the allocator maps them anew each call, and every page
//! then faults and is zeroed by the kernel.
//!
//! A buffer taken on one thread and dropped on another (a rayon worker) joins the second
//! thread's list. Each thread keeps at most [`KEEP`] buffers (the largest ones), so the memory
//! held is bounded by the largest working sets a thread has seen.

use std::cell::RefCell;

/// Buffers kept per thread.
const KEEP: usize = 16;
/// Larger buffers are freed, not kept (a one-off huge batch must not pin its working set).
const KEEP_MAX_BYTES: usize = 32 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer of at least the requested size, 8-byte aligned; returned to the current
/// thread's free list when dropped. Contents are unspecified unless taken with `zeroed`.
pub(crate) struct Scratch {
    buf: Vec<u64>,
}

impl Scratch {
    /// A buffer of at least `bytes` bytes, contents unspecified.
    pub(crate) fn take(bytes: usize) -> Scratch {
        let words = bytes.div_ceil(8);
        let mut buf = FREE
            .try_with(|f| {
                let mut f = f.borrow_mut();
                // The smallest buffer that fits, else the largest (grown below).
                let fit = (0..f.len())
                    .filter(|&i| f[i].len() >= words)
                    .min_by_key(|&i| f[i].len());
                let pick = fit.or_else(|| (0..f.len()).max_by_key(|&i| f[i].len()));
                pick.map(|i| f.swap_remove(i))
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        if buf.len() < words {
            buf = vec![0u64; words];
        }
        Scratch { buf }
    }

    /// The first `n` elements as `T` (a plain-data type of alignment <= 8).
    pub(crate) fn slice<T: bytemuck::Pod>(&mut self, n: usize) -> &mut [T] {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buf);
        bytemuck::cast_slice_mut(&mut bytes[..n * std::mem::size_of::<T>()])
    }

    /// The first `n` elements as `T`, set to `v`.
    pub(crate) fn filled<T: bytemuck::Pod>(&mut self, n: usize, v: T) -> &mut [T] {
        let s = self.slice::<T>(n);
        s.fill(v);
        s
    }
}

/// `n` values of `T` in a [`Scratch`] buffer (derefs to `[T]`): a `Vec` replacement for
/// per-call arrays.
pub(crate) struct ScratchVec<T: bytemuck::Pod> {
    s: Scratch,
    n: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: bytemuck::Pod> ScratchVec<T> {
    /// `n` copies of `v`.
    pub(crate) fn filled(n: usize, v: T) -> Self {
        let mut s = Scratch::take(n * std::mem::size_of::<T>());
        s.filled(n, v);
        ScratchVec {
            s,
            n,
            _t: std::marker::PhantomData,
        }
    }
    /// A copy of `src`.
    pub(crate) fn copy_of(src: &[T]) -> Self {
        let mut s = Scratch::take(std::mem::size_of_val(src));
        s.slice::<T>(src.len()).copy_from_slice(src);
        ScratchVec {
            s,
            n: src.len(),
            _t: std::marker::PhantomData,
        }
    }
    /// `f(0), f(1), ..., f(n - 1)`.
    pub(crate) fn from_fn(n: usize, mut f: impl FnMut(usize) -> T) -> Self {
        let mut s = Scratch::take(n * std::mem::size_of::<T>());
        for (i, d) in s.slice::<T>(n).iter_mut().enumerate() {
            *d = f(i);
        }
        ScratchVec {
            s,
            n,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for ScratchVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.s.buf);
        bytemuck::cast_slice(&bytes[..self.n * std::mem::size_of::<T>()])
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for ScratchVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.s.slice::<T>(self.n)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() * 8 > KEEP_MAX_BYTES {
            return;
        }
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            f.push(buf);
            if f.len() > KEEP {
                // Drop the smallest.
                if let Some(i) = (0..f.len()).min_by_key(|&i| f[i].len()) {
                    f.swap_remove(i);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let p = {
            let mut s = Scratch::take(1000);
            let v = s.filled::<u8>(1000, 7);
            assert!(v.iter().all(|&b| b == 7));
            v.as_ptr() as usize
        };
        // The same thread gets the same buffer back for a request that fits.
        let mut s = Scratch::take(800);
        assert_eq!(s.slice::<u8>(800).as_ptr() as usize, p);
        // Nested takes get distinct buffers.
        let mut t = Scratch::take(800);
        assert_ne!(t.slice::<u8>(800).as_ptr() as usize, p);
        let f = t.slice::<f32>(200);
        assert_eq!(f.len(), 200);
        // A larger request than any kept buffer grows one.
        drop(s);
        drop(t);
        let mut big = Scratch::take(1 << 20);
        assert_eq!(big.slice::<u64>(1 << 17).len(), 1 << 17);
    }
}
