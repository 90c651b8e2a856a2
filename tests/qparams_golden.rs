//! Golden test: (scale, zero_point, quantized values) of every case in
//! `tests/fixtures/qparams_golden.json` (produced by PyTorch observers, ONNX Runtime quant_utils,
//! and the design-document formulas for TensorFlow/IPEX/MXNet) must be reproduced by
//! `octet::quant`: scale within 1 ulp of f32, zero points and quantized values exact.
//! Also a proptest: quantize -> dequantize error <= scale / 2 inside the range, for every preset.

use std::collections::BTreeMap;

use octet::quant::{
    channel_min_max, dequantize_value, quantize_slice, quantize_value, Preset, QDType, QScheme,
};
use proptest::prelude::*;
use serde_json::Value;

fn ulps(a: f32, b: f32) -> i64 {
    // ordered integer representation so that the difference counts representable floats
    fn ord(x: f32) -> i64 {
        let i = x.to_bits() as i32 as i64;
        if i < 0 {
            i64::from(i32::MIN) - i
        } else {
            i
        }
    }
    (ord(a) - ord(b)).abs()
}

#[test]
fn qparams_golden() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qparams_golden.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().expect("cases");
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let (mut exact_scales, mut one_ulp_scales) = (0usize, 0usize);
    for (n, c) in cases.iter().enumerate() {
        let fw = c["framework"].as_str().unwrap();
        let dtype = c["dtype"].as_str().unwrap();
        let scheme_s = c["scheme"].as_str().unwrap();
        let rr = c["reduce_range"].as_bool().unwrap();
        let gran = c["granularity"].as_str().unwrap();
        let label = format!(
            "case {n} {fw}/{}/{dtype}/{scheme_s}/reduce_range={rr}/{gran}",
            c["tensor"].as_str().unwrap()
        );
        let (Some(preset), Some(dt)) = (Preset::parse(fw), QDType::parse(dtype)) else {
            skipped.push(format!("{label}: unknown framework or dtype"));
            continue;
        };
        let mut scheme = QScheme::new(preset, dt, scheme_s == "symmetric", rr);
        let input: Vec<f32> = c["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let shape: Vec<usize> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (mins, maxs) = match gran {
            "per_tensor" => {
                let lo = input.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = input.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                (vec![lo], vec![hi])
            }
            "per_channel" => {
                let axis = c["axis"].as_u64().unwrap() as usize;
                scheme = scheme.with_axis(axis);
                channel_min_max(&input, &shape, axis).unwrap()
            }
            other => {
                skipped.push(format!("{label}: granularity {other}"));
                continue;
            }
        };
        let params = match scheme.qparams(&mins, &maxs) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{label}: qparams error: {e}"));
                continue;
            }
        };
        let gs: Vec<f32> = c["scale"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let gz: Vec<i32> = c["zero_point"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        let gq: Vec<i32> = c["q"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        let mut ok = true;
        if gs.len() != params.scale.len() {
            failures.push(format!(
                "{label}: {} scales, golden {}",
                params.scale.len(),
                gs.len()
            ));
            continue;
        }
        for ch in 0..gs.len() {
            let d = ulps(params.scale[ch], gs[ch]);
            match d {
                0 => exact_scales += 1,
                1 => {
                    one_ulp_scales += 1;
                    println!(
                        "note: {label}: channel {ch} scale {:e} is 1 ulp from golden {:e}",
                        params.scale[ch], gs[ch]
                    );
                }
                _ => {}
            }
            if d > 1 {
                ok = false;
                failures.push(format!(
                    "{label}: channel {ch} scale {:e} vs golden {:e} ({d} ulps)",
                    params.scale[ch], gs[ch]
                ));
            }
            if params.zero_point[ch] != gz[ch] {
                ok = false;
                failures.push(format!(
                    "{label}: channel {ch} zero point {} vs golden {}",
                    params.zero_point[ch], gz[ch]
                ));
            }
        }
        if let (Some(qmin), Some(qmax)) = (c.get("qmin"), c.get("qmax")) {
            let want = (qmin.as_i64().unwrap() as i32, qmax.as_i64().unwrap() as i32);
            if scheme.qrange().unwrap() != want {
                ok = false;
                failures.push(format!(
                    "{label}: qrange {:?} vs golden {want:?}",
                    scheme.qrange().unwrap()
                ));
            }
        }
        // Quantize with the golden parameters so a 1-ulp scale difference cannot hide or
        // cause a rounding mismatch; also with ours when the scales are bit-identical.
        let mut golden_params = params.clone();
        golden_params.scale = gs.clone();
        golden_params.zero_point = gz.clone();
        let q = quantize_slice(&scheme, &input, &shape, &golden_params).unwrap();
        let mismatched: Vec<String> = q
            .iter()
            .zip(&gq)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("[{i}] x={} q={a} golden={b}", input[i]))
            .collect();
        if q.len() != gq.len() || !mismatched.is_empty() {
            ok = false;
            failures.push(format!(
                "{label}: {} of {} quantized values differ: {}",
                mismatched.len(),
                gq.len(),
                mismatched.join(", ")
            ));
        }
        if params.scale == gs {
            let q2 = quantize_slice(&scheme, &input, &shape, &params).unwrap();
            if q2 != gq {
                ok = false;
                failures.push(format!("{label}: quantized values with own params differ"));
            }
        }
        if ok {
            *checked.entry(fw.to_string()).or_default() += 1;
        }
    }
    let total: usize = checked.values().sum();
    let per: Vec<String> = checked.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "qparams golden: {total} cases checked ({}) of {}; scales bit-exact {exact_scales}, \
         1 ulp off {one_ulp_scales}",
        per.join(", "),
        cases.len()
    );
    for f in &failures {
        println!("MISMATCH {f}");
    }
    for s in &skipped {
        println!("SKIPPED {s}");
    }
    assert!(
        failures.is_empty() && skipped.is_empty() && total == cases.len(),
        "{} mismatches, {} skipped, {total}/{} passed",
        failures.len(),
        skipped.len(),
        cases.len()
    );
}

fn supported_schemes() -> Vec<QScheme> {
    let mut v = Vec::new();
    for preset in Preset::ALL {
        for dt in [QDType::I8, QDType::U8] {
            for sym in [false, true] {
                for rr in [false, true] {
                    let s = QScheme::new(preset, dt, sym, rr);
                    // skip combinations the preset does not define
                    if s.qparam(0.0, 1.0).is_ok() {
                        v.push(s);
                    }
                }
            }
        }
    }
    v
}

proptest! {
    #[test]
    fn roundtrip_error_at_most_half_scale(
        a in -1000.0f32..1000.0,
        b in -1000.0f32..1000.0,
        t in 0.0f32..=1.0,
        which in 0usize..64,
    ) {
        let schemes = supported_schemes();
        let s = schemes[which % schemes.len()];
        let (mut lo, mut hi) = (a.min(b), a.max(b));
        // uint8 symmetric in the design-doc presets covers [0, max] only
        if matches!(s.preset, Preset::Tensorflow | Preset::Ipex | Preset::Mxnet)
            && s.dtype == QDType::U8
        {
            lo = lo.abs();
            hi = hi.abs();
            if lo > hi { std::mem::swap(&mut lo, &mut hi); }
        }
        let p = s.qparam(lo, hi).unwrap();
        let x = lo + (hi - lo) * t;
        let x = x.clamp(lo, hi);
        let q = quantize_value(&s, x, p).unwrap();
        let back = dequantize_value(q, p);
        let err = (back - x).abs();
        // half a step plus f32 rounding of the products involved
        let tol = p.scale * 0.5 + 4.0 * f32::EPSILON * x.abs().max(p.scale * 128.0);
        prop_assert!(err <= tol, "{s:?} [{lo}, {hi}] x={x} q={q} back={back} err={err} scale={}", p.scale);
    }
}
