//! File I/O of tensors: .npy and .npz (through npyz + zip), and atomic file writing.
pub mod atomic;
pub mod npz;
