//! TensorProto to octet tensors: raw_data, the typed repeated fields, and external data files.

use super::proto::TensorProto;
use super::source::ModelFile;
use octet_ir::{DType, Tensor};
use std::path::Path;

type R<T> = Result<T, String>;

/// Decode a TensorProto. `base_dir` resolves external data locations.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> R<Tensor> {
    tensor_from_proto_in(t, base_dir, None)
}

/// [`tensor_from_proto`] for a tensor decoded from `file`: its raw data is read from the file
/// rather than through the mapping (see [`ModelFile::read_raw`]).
pub fn tensor_from_proto_in(
    t: &TensorProto,
    base_dir: Option<&Path>,
    file: Option<&ModelFile>,
) -> R<Tensor> {
    let code = t.data_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code).ok_or_else(|| match code {
        8 => "string tensors are not supported".to_string(),
        0 => "tensor has no data type".to_string(),
        c => format!("data type code {c} is not supported"),
    })?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<R<_>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("tensor size overflows")?;
    let nbytes = n.checked_mul(dtype.size()).ok_or("tensor size overflows")?;
    if t.data_location == Some(1) {
        let bytes = read_external(t, base_dir, nbytes)?;
        return Tensor::from_raw(dtype, &shape, &bytes)
            .ok_or_else(|| "external data has the wrong length".into());
    }
    if let Some(raw) = &t.raw_data {
        if raw.len() != nbytes {
            return Err(format!(
                "raw_data has {} bytes, shape {:?} of {} needs {}",
                raw.len(),
                shape,
                dtype,
                nbytes
            ));
        }
        let mut out = Tensor::zeros(dtype, &shape);
        match file {
            Some(f) => f
                .read_raw(raw, out.bytes_mut())
                .map_err(|e| format!("reading raw_data: {e}"))?,
            None => out.bytes_mut().copy_from_slice(raw),
        }
        return Ok(out);
    }
    let check = |len: usize| -> R<()> {
        if len != n {
            Err(format!("has {len} values, shape {shape:?} needs {n}"))
        } else {
            Ok(())
        }
    };
    Ok(match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            Tensor::from_slice(&shape, &t.float_data)
        }
        DType::F64 => {
            check(t.double_data.len())?;
            Tensor::from_slice(&shape, &t.double_data)
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            Tensor::from_slice(&shape, &t.int64_data)
        }
        DType::U64 => {
            check(t.uint64_data.len())?;
            Tensor::from_slice(&shape, &t.uint64_data)
        }
        DType::U32 => {
            check(t.uint64_data.len())?;
            Tensor::from_vec(&shape, t.uint64_data.iter().map(|&v| v as u32).collect())
        }
        DType::I32 => {
            check(t.int32_data.len())?;
            Tensor::from_slice(&shape, &t.int32_data)
        }
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::Bool => {
            check(t.int32_data.len())?;
            let v: Vec<f64> = t.int32_data.iter().map(|&v| v as f64).collect();
            Tensor::from_f64(dtype, &shape, &v)
        }
        DType::F16 | DType::BF16 => {
            check(t.int32_data.len())?;
            let bits: Vec<u16> = t.int32_data.iter().map(|&v| v as u16).collect();
            Tensor::from_raw(dtype, &shape, bytemuck::cast_slice(&bits)).expect("length checked")
        }
    })
}

fn read_external(t: &TensorProto, base_dir: Option<&Path>, nbytes: usize) -> R<Vec<u8>> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        let v = kv.value.clone().unwrap_or_default();
        match kv.key.as_deref() {
            Some("location") => location = Some(v),
            Some("offset") => {
                offset = v
                    .parse()
                    .map_err(|_| format!("bad external data offset '{v}'"))?
            }
            Some("length") => {
                length = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("bad external data length '{v}'"))?,
                )
            }
            _ => {}
        }
    }
    let loc = location.ok_or("external data without a location")?;
    let rel = Path::new(&loc);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data location '{loc}' must be a relative path inside the model's folder"
        ));
    }
    let path = base_dir.unwrap_or(Path::new(".")).join(rel);
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path)
        .map_err(|e| format!("external data file {}: {e}", path.display()))?;
    let len = length.unwrap_or(nbytes as u64);
    if len != nbytes as u64 {
        return Err(format!(
            "external data length {len} does not match the tensor's {nbytes} bytes"
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("external data file {}: {e}", path.display()))?;
    let mut buf = vec![0u8; nbytes];
    f.read_exact(&mut buf).map_err(|e| {
        format!(
            "external data file {} too short for offset {offset} + {nbytes} bytes: {e}",
            path.display()
        )
    })?;
    Ok(buf)
}

/// Encode a tensor as a TensorProto with raw_data (used by tests and exporters).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().onnx_code()),
        raw_data: Some(prost::bytes::Bytes::copy_from_slice(t.bytes())),
        ..Default::default()
    }
}
