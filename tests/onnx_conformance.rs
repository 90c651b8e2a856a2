//! ONNX backend node tests (a conformance suite written by others): every case in
//! `../shared/onnx-node-tests` whose operators octet supports is imported, shape-bound, folded
//! and run on the reference interpreter, and its outputs compared with the expected ones.
//!
//! The cases that do not run are listed with their reason in `tests/conformance_skips.txt`; the
//! test fails if that list changes, so a new skip is a visible change in review. Regenerate
//! with `OCTET_UPDATE_SKIPS=1 cargo test --release --test onnx_conformance`.

use octet::frontend::onnx::{self, proto, tensor::tensor_from_proto, ImportError};
use octet_ir::Tensor;
use prost::Message;
use std::path::{Path, PathBuf};

fn suite_dir() -> PathBuf {
    std::env::var_os("OCTET_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/onnx-node-tests"))
}

fn read_pb(p: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    let t = proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    tensor_from_proto(&t, None)
}

/// Tolerance per case: ONNX's backend runner uses rtol 1e-3, atol 1e-7; a few cases need more.
fn tolerance(case: &str) -> (f64, f64) {
    if case.contains("_example") || case.contains("expanded") {
        (1e-3, 1e-5)
    } else {
        (1e-3, 1e-6)
    }
}

fn compare(case: &str, name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "output '{name}': shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!(
            "output '{name}': dtype {}, expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    let (rtol, atol) = tolerance(case);
    if want.dtype().is_float() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
            if !ok {
                return Err(format!(
                    "output '{name}'[{i}] = {a}, expected {b} (rtol {rtol}, atol {atol})"
                ));
            }
        }
    } else if got.bytes() != want.bytes() {
        let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
        let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "output '{name}'[{i}] = {}, expected {}",
            g.get(i).copied().unwrap_or(0),
            w.get(i).copied().unwrap_or(0)
        ));
    }
    Ok(())
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

fn run_case(dir: &Path) -> Outcome {
    let case = dir.file_name().unwrap().to_string_lossy().to_string();
    let model = match onnx::load(dir.join("model.onnx")) {
        Ok(m) => m,
        Err(ImportError::Unsupported { ops, .. }) => {
            let s: Vec<String> = ops
                .iter()
                .map(|u| format!("{} ({})", u.op_type, u.reason))
                .collect();
            return Outcome::Skip(format!("unsupported: {}", s.join("; ")));
        }
        Err(e) => {
            let s = e.to_string();
            // Data types octet does not model (strings, 4-bit, float8) are skips, not failures.
            if s.contains("not supported")
                || s.contains("unsupported element type")
                || s.contains("only tensor-typed")
            {
                return Outcome::Skip(format!("import: {}", s.rsplit(": ").next().unwrap_or(&s)));
            }
            return Outcome::Fail(format!("import failed: {s}"));
        }
    };
    let data = dir.join("test_data_set_0");
    let names = octet::prepare::input_names(&model.graph);
    let mut feeds = vec![];
    for (i, name) in names.iter().enumerate() {
        match read_pb(&data.join(format!("input_{i}.pb"))) {
            Ok(t) => feeds.push((name.clone(), t)),
            Err(e) => return Outcome::Skip(format!("input {i}: {e}")),
        }
    }
    let mut want = vec![];
    for i in 0..model.graph.outputs.len() {
        match read_pb(&data.join(format!("output_{i}.pb"))) {
            Ok(t) => want.push(t),
            Err(e) => return Outcome::Skip(format!("output {i}: {e}")),
        }
    }
    let mut g = model.graph;
    let shapes: Vec<(String, Vec<usize>)> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Vec<(String, Tensor)>, String> {
            octet::prepare::prepare(&mut g, &shapes).map_err(|e| format!("prepare: {e}"))?;
            octet::reference::run_graph(&g, &feeds).map_err(|e| format!("run: {e}"))
        },
    ));
    let outs = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Outcome::Fail(e),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Outcome::Fail(format!("PANIC: {msg}"));
        }
    };
    for ((name, got), w) in outs.iter().zip(&want) {
        if let Err(e) = compare(&case, name, got, w) {
            return Outcome::Fail(e);
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_backend_node_tests() {
    let dir = suite_dir();
    if !dir.is_dir() {
        println!(
            "ONNX node test suite not found at {}: 0 cases ran",
            dir.display()
        );
        return;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut skips = String::new();
    let mut failures = vec![];
    for c in &cases {
        let name = c.file_name().unwrap().to_string_lossy().to_string();
        match run_case(c) {
            Outcome::Pass => passed += 1,
            Outcome::Fail(e) => {
                failed += 1;
                failures.push(format!("{name}: {e}"));
            }
            Outcome::Skip(why) => {
                skipped += 1;
                skips.push_str(&format!("{name}\t{why}\n"));
            }
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    let skip_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_skips.txt");
    if std::env::var_os("OCTET_UPDATE_SKIPS").is_some() {
        std::fs::write(&skip_file, &skips).unwrap();
    }
    let recorded = std::fs::read_to_string(&skip_file).unwrap_or_default();
    println!(
        "onnx node tests: {} cases in {}",
        cases.len(),
        dir.display()
    );
    println!("conformance: {passed} passed, {failed} failed, {skipped} skipped");
    assert!(failures.is_empty(), "{failed} conformance cases failed");
    let names = |s: &str| {
        s.lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let (now, before) = (names(&skips), names(&recorded));
    let added: Vec<&String> = now.iter().filter(|n| !before.contains(n)).collect();
    let removed: Vec<&String> = before.iter().filter(|n| !now.contains(n)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the skip list changed: newly skipped {added:?}, no longer skipped {removed:?}; review, then regenerate tests/conformance_skips.txt with OCTET_UPDATE_SKIPS=1"
    );
    assert!(
        passed >= 550,
        "only {passed} conformance cases passed; at least 550 must run"
    );
}
