//! octet-kernels: SIMD kernels. Depends on nothing else in octet.
