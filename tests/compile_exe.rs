//! Compiled models: the standalone executable, the `.octet` format's checks, and the embedding
//! API giving identical results.

mod common;
use common::*;
use octet::artifact::compile::{compile, Quantize};
use octet::artifact::{CompiledModel, Session};
use octet::quantizer::QuantConfig;
use octet_kernels::Isa;
use std::path::PathBuf;
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("octet-compile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn octet(args: &[&str], isa: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_octet"));
    c.args(args);
    if let Some(i) = isa {
        c.env("OCTET_ISA", i);
    }
    let o = c.output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(!se.contains("panicked"), "{se}");
    (o.status.success(), so, se)
}

/// `octet compile MODEL --quantize static --calib digits_calib.npz EXTRA.. -o OUT`, which must succeed.
fn compile_static(model: &str, extra: &[&str], out: &str) {
    let calib = fixture("digits_calib.npz");
    let mut args = vec![
        "compile",
        model,
        "--quantize",
        "static",
        "--calib",
        calib.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", out]);
    let (ok, _, err) = octet(&args, None);
    assert!(ok, "{err}");
}

#[test]
fn executable_runs_elsewhere_without_the_model_and_matches_in_process() {
    let dir = tmpdir("exe");
    // Compile from a private copy of the model, then delete it.
    let model = dir.join("digits_cnn.onnx");
    std::fs::copy(fixture("digits_cnn.onnx"), &model).unwrap();
    let exe = dir.join("digits");
    compile_static(model.to_str().unwrap(), &[], exe.to_str().unwrap());
    std::fs::remove_file(&model).unwrap();
    // --help lists inputs and outputs.
    let o = Command::new(&exe).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && help.contains("input: f32[N,1,16,16]")
            && help.contains("logits: f32[N,10]"),
        "{help}"
    );
    // Run from another directory.
    let elsewhere = tmpdir("elsewhere");
    let out = elsewhere.join("out.npz");
    let o = Command::new(&exe)
        .current_dir(&elsewhere)
        .args([
            "--input",
            fixture("digits_test.npz").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("{so}");
    assert!(so.contains("top-1 accuracy"), "{so}");
    let got = octet::io::npz::read_npz(&out).unwrap().remove(0).1;
    // In process: the same compilation through the library API.
    let m = compile(
        &fixture("digits_cnn.onnx"),
        &Quantize::Static {
            config: QuantConfig {
                quiet: true,
                ..QuantConfig::default()
            },
            calib: fixture("digits_calib.npz"),
        },
        Isa::active().unwrap(),
    )
    .unwrap();
    let want = Session::new(m)
        .run(&[("input".into(), get(&npz("digits_test.npz"), "input"))])
        .unwrap()
        .remove(0)
        .1;
    assert_eq!(
        got, want,
        "the executable's outputs differ from the in-process session's"
    );
    // --bench works.
    let o = Command::new(&exe)
        .args(["--bench", "--threads", "1", "--iters", "5", "--json"])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && so.trim().lines().last().unwrap().contains("\"median_ms\""),
        "{so}"
    );
}

#[test]
fn octet_file_round_trips_and_bad_files_are_clear_errors() {
    let dir = tmpdir("fmt");
    let f = dir.join("digits.octet");
    compile_static(
        fixture("digits_cnn.onnx").to_str().unwrap(),
        &["--emit", "octet"],
        f.to_str().unwrap(),
    );
    let m = CompiledModel::load(&f).unwrap();
    assert_eq!(
        CompiledModel::from_bytes(&m.to_bytes().unwrap(), "again")
            .unwrap()
            .to_bytes()
            .unwrap(),
        m.to_bytes().unwrap()
    );
    let (ok, so, err) = octet(
        &[
            "run",
            f.to_str().unwrap(),
            "--input",
            fixture("digits_test.npz").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok && so.contains("top-1 accuracy"), "{so}{err}");

    let bytes = std::fs::read(&f).unwrap();
    let run_bad = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let (ok, _, err) = octet(
            &[
                "run",
                p.to_str().unwrap(),
                "--input",
                fixture("digits_test.npz").to_str().unwrap(),
            ],
            None,
        );
        assert!(!ok, "{name} was accepted");
        err
    };
    let e = run_bad("truncated.octet", &bytes[..bytes.len() / 2]);
    assert!(
        e.contains("truncated.octet") && e.contains("corrupt or truncated"),
        "{e}"
    );
    let mut c = bytes.clone();
    let mid = c.len() / 2;
    c[mid] ^= 0x5a;
    let e = run_bad("corrupt.octet", &c);
    assert!(e.contains("checksum"), "{e}");
    let mut v = bytes.clone();
    v[8..12].copy_from_slice(&99u32.to_le_bytes());
    let e = run_bad("version.octet", &v);
    assert!(
        e.contains("format version 99") && e.contains("reads version 1"),
        "{e}"
    );
}

#[test]
fn a_target_the_cpu_lacks_is_refused_clearly() {
    if !Isa::supported().unwrap().contains(&Isa::Avx2) {
        return;
    }
    let dir = tmpdir("isa");
    let exe = dir.join("digits_vnni");
    compile_static(
        fixture("digits_cnn.onnx").to_str().unwrap(),
        &["--target", "avx512vnni"],
        exe.to_str().unwrap(),
    );
    let o = Command::new(&exe)
        .env("OCTET_ISA", "avx2")
        .args(["--input", fixture("digits_test.npz").to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("needs avx512vnni") && e.contains("avx2"),
        "{e}"
    );
    let f = dir.join("d.octet");
    compile_static(
        fixture("digits_cnn.onnx").to_str().unwrap(),
        &["--target", "avx512vnni", "--emit", "octet"],
        f.to_str().unwrap(),
    );
    let (ok, _, err) = octet(
        &[
            "run",
            f.to_str().unwrap(),
            "--input",
            fixture("digits_test.npz").to_str().unwrap(),
        ],
        Some("avx2"),
    );
    assert!(!ok && err.contains("needs avx512vnni"), "{err}");
}

#[test]
fn session_checks_inputs_and_reuses_its_engine() {
    let m = compile(&fixture("digits_cnn.onnx"), &Quantize::None, Isa::Scalar).unwrap();
    let s = Session::new(m).with_threads(1);
    let x = take_batch(&get(&npz("digits_test.npz"), "input"), 4);
    let feeds = vec![("input".to_string(), x.clone())];
    let a = s.engine_for(&feeds).unwrap();
    let b = s.engine_for(&feeds).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "same shapes must reuse the engine"
    );
    assert_eq!(s.run(&feeds).unwrap()[0].1.shape(), &[4, 10]);
    let e = s
        .run(&[("image".to_string(), x.clone())])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'input' is missing") && e.contains("image"),
        "{e}"
    );
    let e = s
        .run(&[("input".to_string(), x.clone()), ("label".to_string(), x)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'label' is not an input"), "{e}");
    let wrong = octet_ir::Tensor::from_vec(&[4, 1, 16, 16], vec![0i64; 1024]);
    let e = s
        .run(&[("input".to_string(), wrong)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be f32"), "{e}");
}
