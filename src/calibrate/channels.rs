//! Per-channel statistics of activations over the calibration data: the largest magnitude of
//! each channel (the last axis) of chosen tensors, as SmoothQuant needs them. Memory is one
//! vector per tensor, whatever the number of samples.

use super::{data, CalibrateError};
use octet_ir::{Graph, NodeIndex, Outlet, Tensor};
use std::collections::HashMap;

/// `max |x[..., c]|` over all samples for each tensor in `tensors` (keyed like `tensors`),
/// running the fp32 graph on the reference interpreter `batch_size` samples at a time (or the
/// model's fixed batch).
pub fn channel_absmax(
    g: &Graph,
    calib: &[(String, Tensor)],
    tensors: &[Outlet],
    batch_size: usize,
) -> Result<HashMap<Outlet, Vec<f32>>, CalibrateError> {
    let (feeds, samples) = data::check_calibration(g, calib)?;
    let mut by_node: HashMap<NodeIndex, Vec<Outlet>> = HashMap::new();
    for o in tensors {
        by_node.entry(o.node).or_default().push(*o);
    }
    let mut out: HashMap<Outlet, Vec<f32>> = HashMap::new();
    let bs = super::batch_size(g, batch_size);
    for start in (0..samples).step_by(bs) {
        let end = (start + bs).min(samples);
        let inputs: Vec<(String, Tensor)> = feeds
            .iter()
            .map(|(n, t)| (n.clone(), data::rows(t, start, end)))
            .collect();
        crate::reference::run_graph_with(g, &inputs, |n, outs| {
            let Some(list) = by_node.get(&n) else { return };
            for o in list {
                let Some(t) = outs.get(o.output) else {
                    continue;
                };
                let (Ok(v), Some(&c)) = (t.view::<f32>(), t.shape().last()) else {
                    continue;
                };
                if c == 0 {
                    continue;
                }
                let m = out.entry(*o).or_insert_with(|| vec![0.0; c]);
                if m.len() != c {
                    continue;
                }
                for row in v.chunks(c) {
                    for (a, &x) in m.iter_mut().zip(row) {
                        *a = a.max(x.abs());
                    }
                }
            }
        })
        .map_err(|source| CalibrateError::Run { start, end, source })?;
    }
    Ok(out)
}
