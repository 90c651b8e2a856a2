//! .npy / .npz reading and writing. Keys of an .npz are array names; every supported numpy
//! dtype maps to an octet dtype. Fortran-ordered arrays are refused with a clear error.

use crate::io::atomic::write_atomic;
use npyz::WriterBuilder;
use octet_ir::{DType, Tensor};
use std::io::{Read, Seek};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{path}: array '{name}': {msg}")]
    Array {
        path: String,
        name: String,
        msg: String,
    },
}

fn dtype_of(ts: &npyz::TypeStr) -> Option<DType> {
    use npyz::TypeChar::*;
    Some(match (ts.type_char(), ts.size_field()) {
        (Float, 4) => DType::F32,
        (Float, 8) => DType::F64,
        (Float, 2) => DType::F16,
        (Int, 1) => DType::I8,
        (Int, 2) => DType::I16,
        (Int, 4) => DType::I32,
        (Int, 8) => DType::I64,
        (Uint, 1) => DType::U8,
        (Uint, 2) => DType::U16,
        (Uint, 4) => DType::U32,
        (Uint, 8) => DType::U64,
        (Bool, 1) => DType::Bool,
        _ => return None,
    })
}

/// Parse one .npy stream.
pub fn read_npy_from(r: impl Read) -> Result<Tensor, String> {
    let npy = npyz::NpyFile::new(r).map_err(|e| format!("not a valid .npy array: {e}"))?;
    if npy.order() == npyz::Order::Fortran && npy.shape().len() > 1 {
        return Err(
            "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)".into(),
        );
    }
    let ts = match npy.dtype() {
        npyz::DType::Plain(ts) => ts,
        d => return Err(format!("unsupported numpy dtype {}", d.descr())),
    };
    let dtype = dtype_of(&ts).ok_or_else(|| format!("unsupported numpy dtype {ts}"))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let io = |e: std::io::Error| format!("array data is truncated or unreadable: {e}");
    let t = match dtype {
        DType::F32 => Tensor::from_vec(&shape, npy.into_vec::<f32>().map_err(io)?),
        DType::F64 => Tensor::from_vec(&shape, npy.into_vec::<f64>().map_err(io)?),
        DType::F16 => Tensor::from_vec(&shape, npy.into_vec::<half::f16>().map_err(io)?),
        DType::I8 => Tensor::from_vec(&shape, npy.into_vec::<i8>().map_err(io)?),
        DType::I16 => Tensor::from_vec(&shape, npy.into_vec::<i16>().map_err(io)?),
        DType::I32 => Tensor::from_vec(&shape, npy.into_vec::<i32>().map_err(io)?),
        DType::I64 => Tensor::from_vec(&shape, npy.into_vec::<i64>().map_err(io)?),
        DType::U8 => Tensor::from_vec(&shape, npy.into_vec::<u8>().map_err(io)?),
        DType::U16 => Tensor::from_vec(&shape, npy.into_vec::<u16>().map_err(io)?),
        DType::U32 => Tensor::from_vec(&shape, npy.into_vec::<u32>().map_err(io)?),
        DType::U64 => Tensor::from_vec(&shape, npy.into_vec::<u64>().map_err(io)?),
        DType::Bool => Tensor::from_bools(&shape, &npy.into_vec::<bool>().map_err(io)?),
        DType::BF16 => unreachable!("numpy has no bf16"),
    };
    Ok(t)
}

/// Read a .npy file.
pub fn read_npy(path: &Path) -> Result<Tensor, NpzError> {
    let f = std::fs::File::open(path).map_err(|e| NpzError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    read_npy_from(std::io::BufReader::new(f)).map_err(|msg| NpzError::File {
        path: path.display().to_string(),
        msg,
    })
}

/// Read every array of an .npz file, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpzError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| NpzError::File {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    read_npz_from(std::io::BufReader::new(f)).map_err(|(name, msg)| match name {
        Some(name) => NpzError::Array {
            path: p.clone(),
            name,
            msg,
        },
        None => NpzError::File {
            path: p.clone(),
            msg,
        },
    })
}

fn read_npz_from(r: impl Read + Seek) -> Result<Vec<(String, Tensor)>, (Option<String>, String)> {
    let mut zip =
        zip::ZipArchive::new(r).map_err(|e| (None, format!("not a valid .npz (zip) file: {e}")))?;
    let mut out = vec![];
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| (None, format!("corrupt .npz entry {i}: {e}")))?;
        let fname = entry.name().to_string();
        let name = fname.strip_suffix(".npy").unwrap_or(&fname).to_string();
        let t = read_npy_from(entry).map_err(|m| (Some(name.clone()), m))?;
        out.push((name, t));
    }
    Ok(out)
}

fn write_npy_to(w: &mut impl std::io::Write, t: &Tensor) -> std::io::Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    macro_rules! put {
        ($ty:ty, $data:expr) => {{
            let mut wr = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(w)
                .begin_nd()?;
            wr.extend($data)?;
            wr.finish()
        }};
    }
    let bad = |e: octet_ir::tensor::DTypeMismatch| std::io::Error::other(e.to_string());
    match t.dtype() {
        DType::F32 => put!(f32, t.view::<f32>().map_err(bad)?.iter().copied()),
        DType::F64 => put!(f64, t.view::<f64>().map_err(bad)?.iter().copied()),
        DType::F16 => put!(
            half::f16,
            t.view::<half::f16>().map_err(bad)?.iter().copied()
        ),
        DType::BF16 => put!(f32, t.to_f64_vec().into_iter().map(|v| v as f32)),
        DType::I8 => put!(i8, t.view::<i8>().map_err(bad)?.iter().copied()),
        DType::I16 => put!(i16, t.view::<i16>().map_err(bad)?.iter().copied()),
        DType::I32 => put!(i32, t.view::<i32>().map_err(bad)?.iter().copied()),
        DType::I64 => put!(i64, t.view::<i64>().map_err(bad)?.iter().copied()),
        DType::U8 => put!(u8, t.view::<u8>().map_err(bad)?.iter().copied()),
        DType::U16 => put!(u16, t.view::<u16>().map_err(bad)?.iter().copied()),
        DType::U32 => put!(u32, t.view::<u32>().map_err(bad)?.iter().copied()),
        DType::U64 => put!(u64, t.view::<u64>().map_err(bad)?.iter().copied()),
        DType::Bool => put!(bool, t.view::<u8>().map_err(bad)?.iter().map(|&b| b != 0)),
    }
}

/// Write arrays to an .npz file atomically.
pub fn write_npz(path: &Path, arrays: &[(String, &Tensor)]) -> Result<(), NpzError> {
    write_atomic(path, |f| {
        let mut zw = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, t) in arrays {
            zw.start_file(format!("{name}.npy"), opts)
                .map_err(std::io::Error::other)?;
            write_npy_to(&mut zw, t)?;
        }
        zw.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
    .map_err(|e| NpzError::File {
        path: path.display().to_string(),
        msg: format!("cannot write: {e}"),
    })
}

/// Write one array to a .npy file atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpzError> {
    write_atomic(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        write_npy_to(&mut w, t)?;
        std::io::Write::flush(&mut w)
    })
    .map_err(|e| NpzError::File {
        path: path.display().to_string(),
        msg: format!("cannot write: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_round_trips_dtypes() {
        let dir = std::env::temp_dir().join(format!("octet-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npz");
        let a = Tensor::from_vec(&[2, 2], vec![1.5f32, -2., 3., 4.]);
        let b = Tensor::from_vec(&[3], vec![1i64, -5, 7]);
        let c = Tensor::from_bools(&[2], &[true, false]);
        let u = Tensor::from_vec(&[1], vec![200u8]);
        write_npz(
            &p,
            &[
                ("a".into(), &a),
                ("b".into(), &b),
                ("c".into(), &c),
                ("u".into(), &u),
            ],
        )
        .unwrap();
        let back = read_npz(&p).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[0].1, a);
        assert_eq!(back[1].1, b);
        assert_eq!(back[2].1, c);
        assert_eq!(back[3].1, u);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reads_numpy_written_fixture() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/digits_cnn_ref.npz");
        let v = read_npz(&p).unwrap();
        assert_eq!(v[0].0, "logits");
        assert_eq!(v[0].1.shape(), &[16, 10]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("octet-npzbad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.npz");
        std::fs::write(&p, b"garbage").unwrap();
        let e = read_npz(&p).unwrap_err().to_string();
        assert!(e.contains("bad.npz") && e.contains("zip"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
