//! Calibration data: reading (.npz, or a directory of .npy files named after the inputs),
//! checking against the model's inputs, and slicing into batches along axis 0.

use super::CalibrateError;
use octet_ir::{DType, Graph, Tensor};
use std::path::Path;

/// Read calibration arrays: an .npz (keys = input names), a single .npy (for a single-input
/// model; the key is empty), or a directory of `<input name>.npy` files.
pub fn read_calibration(path: &Path) -> Result<Vec<(String, Tensor)>, CalibrateError> {
    let bad = |msg: String| CalibrateError::Data(format!("{}: {msg}", path.display()));
    let arrays = if path.is_dir() {
        let mut v = vec![];
        let rd = std::fs::read_dir(path).map_err(|e| bad(e.to_string()))?;
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.extension().and_then(|e| e.to_str()) != Some("npy") {
                continue;
            }
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let t = crate::io::npz::read_npy(&p).map_err(|e| bad(e.to_string()))?;
            v.push((name, t));
        }
        v
    } else if !path.exists() {
        return Err(bad("no such file or directory".into()));
    } else {
        crate::prepare::read_inputs(path).map_err(|e| CalibrateError::Data(e.to_string()))?
    };
    if arrays.is_empty() {
        return Err(bad("holds no arrays (the calibration set is empty)".into()));
    }
    Ok(arrays)
}

/// Check calibration arrays against the graph inputs and return them in input order with the
/// number of samples (the common extent of axis 0). Errors name the input or array at fault:
/// missing input (with the keys found), wrong dtype, wrong rank or fixed extent, differing
/// sample counts, no samples, NaN/Inf (with the element's index).
pub fn check_calibration(
    g: &Graph,
    data: &[(String, Tensor)],
) -> Result<(Vec<(String, Tensor)>, usize), CalibrateError> {
    if data.is_empty() {
        return Err(CalibrateError::Data(
            "the calibration set is empty (no arrays)".into(),
        ));
    }
    let names = crate::prepare::input_names(g);
    let mut data: Vec<(String, Tensor)> = data.to_vec();
    if names.len() == 1 && data.len() == 1 && data[0].0.is_empty() {
        data[0].0 = names[0].clone();
    }
    let keys: Vec<String> = data.iter().map(|(k, _)| k.clone()).collect();
    let mut out = vec![];
    let mut samples: Option<(usize, String)> = None;
    for (i, name) in names.iter().enumerate() {
        let Some((_, t)) = data.iter().find(|(k, _)| k == name) else {
            return Err(CalibrateError::Data(format!(
                "calibration data has no array for model input '{name}' (keys found: {}; model inputs: {})",
                if keys.is_empty() { "none".to_string() } else { keys.join(", ") },
                names.join(", ")
            )));
        };
        let ty = g.node(g.inputs[i]).outputs[0]
            .ty
            .as_ref()
            .ok_or_else(|| CalibrateError::Data(format!("model input '{name}' is untyped")))?;
        if t.dtype() != ty.dtype {
            return Err(CalibrateError::Data(format!(
                "calibration array '{name}' is {} {:?}, model input '{name}' is {} {}",
                t.dtype(),
                t.shape(),
                ty.dtype,
                ty.shape
            )));
        }
        if t.rank() != ty.shape.rank() || t.rank() == 0 {
            return Err(CalibrateError::Data(format!(
                "calibration array '{name}' has shape {:?} (rank {}), model input '{name}' is {} (rank {}); arrays are batch-first",
                t.shape(),
                t.rank(),
                ty.shape,
                ty.shape.rank()
            )));
        }
        for (ax, (d, &x)) in ty.shape.0.iter().zip(t.shape()).enumerate().skip(1) {
            if d.fixed().is_some_and(|f| f != x) {
                return Err(CalibrateError::Data(format!(
                    "calibration array '{name}' has shape {:?} but model input '{name}' is {}: axis {ax} must be {}",
                    t.shape(),
                    ty.shape,
                    d.fixed().unwrap()
                )));
            }
        }
        let n = t.shape()[0];
        if n == 0 {
            return Err(CalibrateError::Data(format!(
                "calibration array '{name}' has 0 samples (shape {:?}): the calibration set is empty",
                t.shape()
            )));
        }
        match &samples {
            None => samples = Some((n, name.clone())),
            Some((m, other)) if *m != n => {
                return Err(CalibrateError::Data(format!(
                    "calibration arrays disagree on the sample count: '{other}' has {m}, '{name}' has {n}"
                )))
            }
            _ => {}
        }
        if t.dtype() == DType::F32 {
            let v = t.view::<f32>().expect("f32");
            if let Some(idx) = v.iter().position(|x| !x.is_finite()) {
                return Err(CalibrateError::Data(format!(
                    "calibration array '{name}' holds {} at index {:?} (flat {idx})",
                    v[idx],
                    unravel(idx, t.shape())
                )));
            }
        }
        out.push((name.clone(), t.clone()));
    }
    Ok((out, samples.map(|s| s.0).unwrap_or(0)))
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        let d = shape[a].max(1);
        idx[a] = i % d;
        i /= d;
    }
    idx
}

/// Rows `start..end` of a batch-first tensor.
pub fn rows(t: &Tensor, start: usize, end: usize) -> Tensor {
    let n = t.shape()[0].max(1);
    let row = t.bytes().len() / n;
    let mut shape = t.shape().to_vec();
    shape[0] = end - start;
    Tensor::from_raw(t.dtype(), &shape, &t.bytes()[start * row..end * row])
        .expect("row slice matches its shape")
}
