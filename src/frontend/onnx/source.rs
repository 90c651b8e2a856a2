//! A model file's bytes for decoding: mapped read-only, so that loading holds each weight once.
//!
//! prost decodes `TensorProto.raw_data` as `bytes::Bytes`; from a `Bytes` over the mapping those
//! fields are slices of it, not copies, and decoding touches only the pages of the messages
//! themselves (names, nodes, shapes). Each initializer's bytes are then read with `pread` from
//! the open file straight into the tensor's aligned storage ([`ModelFile::read_raw`]), so the
//! mapped weight pages are never faulted into this process: peak memory during load is the graph's
//! tensors plus the small metadata, instead of the file plus the decoded message plus the graph.
//!
//! Files that cannot be mapped (pipes, some special files) are read into memory instead; the
//! result is the same, only the peak is higher. The mapping assumes nobody truncates the file
//! while it loads (as every mmap-based loader does, ONNX Runtime's included).

use bytes::Bytes;
use std::fs::File;
use std::path::Path;

pub struct ModelFile {
    bytes: Bytes,
    /// The open file when `bytes` maps it (reads of raw data go through it).
    file: Option<File>,
}

impl ModelFile {
    pub fn open(path: &Path) -> std::io::Result<ModelFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if file.metadata()?.is_file() && len > 0 {
            // SAFETY: read-only private mapping; the file is not modified while octet loads it
            // (see the module comment). Reads of it go through `Bytes`, bounds-checked.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                return Ok(ModelFile {
                    bytes: Bytes::from_owner(map),
                    file: Some(file),
                });
            }
        }
        let mut file = file;
        let mut v = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut file, &mut v)?;
        Ok(ModelFile::from_vec(v))
    }

    /// Bytes already in memory (no file behind them).
    pub fn from_vec(v: Vec<u8>) -> ModelFile {
        ModelFile {
            bytes: Bytes::from(v),
            file: None,
        }
    }

    /// The whole file, for `Message::decode` (a cheap reference-counted clone).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Copy `raw` (a slice decoded from [`Self::bytes`], or any other bytes) into `dst`.
    /// Slices of the mapped file are read with `pread`, leaving the mapping untouched.
    pub fn read_raw(&self, raw: &Bytes, dst: &mut [u8]) -> std::io::Result<()> {
        assert_eq!(raw.len(), dst.len(), "read_raw: destination length");
        #[cfg(unix)]
        if let Some(f) = &self.file {
            let base = self.bytes.as_ptr() as usize;
            let start = raw.as_ptr() as usize;
            if start >= base && start + raw.len() <= base + self.bytes.len() {
                use std::os::unix::fs::FileExt;
                return f.read_exact_at(dst, (start - base) as u64);
            }
        }
        dst.copy_from_slice(raw);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_slices_of_a_mapped_file_read_back_their_bytes() {
        let dir = std::env::temp_dir().join(format!("octet-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let m = ModelFile::open(&p).unwrap();
        assert!(m.file.is_some(), "a regular file is mapped");
        let all = m.bytes();
        for (a, b) in [(0, 10), (4093, 4100), (123, 9999), (9990, 10_000)] {
            let raw = all.slice(a..b);
            let mut dst = vec![0u8; b - a];
            m.read_raw(&raw, &mut dst).unwrap();
            assert_eq!(dst, &data[a..b]);
        }
        // Bytes that are not part of the file are copied.
        let other = Bytes::from(vec![1u8, 2, 3]);
        let mut dst = [0u8; 3];
        m.read_raw(&other, &mut dst).unwrap();
        assert_eq!(dst, [1, 2, 3]);
        // An empty file is read, not mapped, and decodes as empty.
        let e = dir.join("empty.bin");
        std::fs::write(&e, b"").unwrap();
        let m = ModelFile::open(&e).unwrap();
        assert!(m.file.is_none() && m.bytes().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
