//! The `octet` command line, end to end: every bad input gets a clear message naming the file,
//! node or tensor, and a non-zero exit, never a panic.

mod common;
use common::*;
use octet::frontend::onnx::proto::*;
use octet_ir::Tensor;
use prost::Message;
use std::path::PathBuf;
use std::process::Command;

fn octet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_octet"))
        .args(args)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(!e.contains("panicked"), "octet panicked: {e}");
    (out.status.success(), o, e)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("octet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_shows_inputs_outputs_ops_and_params() {
    let (ok, out, _) = octet(&["inspect", s(&fixture("digits_cnn.onnx"))]);
    assert!(ok);
    assert!(
        out.contains("input") && out.contains("f32[N,1,16,16]"),
        "{out}"
    );
    assert!(
        out.contains("logits") && out.contains("Conv") && out.contains("parameters: 28746"),
        "{out}"
    );
}

#[test]
fn inspect_tiny_bert_with_shapes_is_static_without_shape_chains() {
    let (ok, out, err) = octet(&[
        "inspect",
        s(&fixture("tiny_bert.onnx")),
        "--shape",
        "input_ids=1x128",
        "--shape",
        "attention_mask=1x128",
        "--shape",
        "token_type_ids=1x128",
        "--ir",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("shapes all static"), "{out}");
    let ir = out.split("\ngraph(").nth(1).expect("ir text");
    // The shape computations fold away; what remains of Gather/Expand works on data (embedding
    // lookups, the attention mask), not on shapes.
    for op in [
        " = Shape",
        " = Unsqueeze",
        " = Concat",
        " = ConstantOfShape",
        " = Range",
        " = Size",
        " = Slice",
    ] {
        assert!(!ir.contains(op), "{op} left in the graph:\n{ir}");
    }
    for line in ir.lines().filter(|l| l.contains(" = Gather")) {
        assert!(
            line.contains("embeddings.weight") || line.contains("bool["),
            "shape Gather left: {line}"
        );
    }
    assert!(out.contains("f32[1,128,128]"), "{out}");
}

#[test]
fn garbage_truncated_and_missing_files_are_clear_errors() {
    let g = tmp("garbage.onnx");
    std::fs::write(&g, b"\x08\x07this is not protobuf \xff\xff\xff").unwrap();
    let (ok, _, err) = octet(&["inspect", s(&g)]);
    assert!(
        !ok && err.contains("garbage.onnx") && err.contains("not a valid ONNX model"),
        "{err}"
    );

    let bytes = std::fs::read(fixture("digits_cnn.onnx")).unwrap();
    let t = tmp("truncated.onnx");
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = octet(&["run", s(&t), "--input", s(&fixture("digits_test.npz"))]);
    assert!(!ok && err.contains("truncated.onnx"), "{err}");

    let (ok, _, err) = octet(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!ok && err.contains("/nonexistent/model.onnx"), "{err}");
}

fn write_model(name: &str, nodes: Vec<NodeProto>, opset: i64) -> PathBuf {
    use tensor_shape_proto::{dimension::Value as DV, Dimension};
    let vi = |n: &str| ValueInfoProto {
        name: Some(n.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: vec![Dimension {
                        value: Some(DV::DimValue(4)),
                        ..Default::default()
                    }],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: nodes,
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = tmp(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn unsupported_ops_are_listed_with_node_names() {
    let p = write_model(
        "unsupported.onnx",
        vec![
            node("Relu", "r", &["x"], &["a"]),
            node("StringNormalizer", "sn1", &["a"], &["b"]),
            node("Bogus", "bg", &["b"], &["y"]),
        ],
        17,
    );
    let (ok, out, err) = octet(&["inspect", s(&p)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("StringNormalizer")
            && out.contains("sn1")
            && out.contains("Bogus")
            && out.contains("bg"),
        "{out}"
    );
    assert!(err.contains("2 unsupported"), "{err}");
}

#[test]
fn cycle_and_missing_initializer_and_unknown_opset() {
    let p = write_model(
        "cycle.onnx",
        vec![
            node("Add", "a", &["x", "b_out"], &["y"]),
            node("Relu", "b", &["y"], &["b_out"]),
        ],
        17,
    );
    let (ok, _, err) = octet(&["inspect", s(&p)]);
    assert!(!ok && err.contains("cycle"), "{err}");
    let p = write_model(
        "missing.onnx",
        vec![node("Add", "add_w", &["x", "weight_gone"], &["y"])],
        17,
    );
    let (ok, _, err) = octet(&["inspect", s(&p)]);
    assert!(
        !ok && err.contains("add_w") && err.contains("weight_gone"),
        "{err}"
    );
    let p = write_model("opset.onnx", vec![node("Relu", "r", &["x"], &["y"])], 1000);
    let (ok, _, err) = octet(&["inspect", s(&p)]);
    assert!(!ok && err.contains("opset 1000"), "{err}");
}

#[test]
fn run_digits_ignores_labels_and_writes_outputs() {
    let out = tmp("digits_out.npz");
    let (ok, stdout, err) = octet(&[
        "run",
        s(&fixture("digits_cnn.onnx")),
        "--input",
        s(&fixture("digits_test.npz")),
        "--output",
        s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("'label'") && err.contains("ignored"), "{err}");
    assert!(stdout.contains("logits: f32 [500, 10]"), "{stdout}");
    let back = octet::io::npz::read_npz(&out).unwrap();
    assert_eq!(back[0].1.shape(), &[500, 10]);
}

#[test]
fn run_single_input_model_takes_npy() {
    let x = take_batch(&get(&npz("digits_test.npz"), "input"), 3);
    let p = tmp("x.npy");
    octet::io::npz::write_npy(&p, &x).unwrap();
    let (ok, stdout, err) = octet(&["run", s(&fixture("digits_cnn.onnx")), "--input", s(&p)]);
    assert!(ok, "{err}");
    assert!(stdout.contains("[3, 10]"), "{stdout}");
}

#[test]
fn wrong_input_name_dtype_and_shape_are_clear_errors() {
    let model = fixture("digits_cnn.onnx");
    let x = take_batch(&get(&npz("digits_test.npz"), "input"), 2);
    let p = tmp("wrongname.npz");
    octet::io::npz::write_npz(&p, &[("image".into(), &x)]).unwrap();
    let (ok, _, err) = octet(&["run", s(&model), "--input", s(&p)]);
    assert!(
        !ok && err.contains("'input' is missing") && err.contains("image"),
        "{err}"
    );

    let xi = Tensor::from_vec(&[2, 1, 16, 16], vec![0i64; 512]);
    let p = tmp("wrongdtype.npz");
    octet::io::npz::write_npz(&p, &[("input".into(), &xi)]).unwrap();
    let (ok, _, err) = octet(&["run", s(&model), "--input", s(&p)]);
    assert!(
        !ok && err.contains("must be f32") && err.contains("i64"),
        "{err}"
    );

    let xs = Tensor::from_vec(&[2, 3, 16, 16], vec![0f32; 2 * 3 * 256]);
    let p = tmp("wrongshape.npz");
    octet::io::npz::write_npz(&p, &[("input".into(), &xs)]).unwrap();
    let (ok, _, err) = octet(&["run", s(&model), "--input", s(&p)]);
    assert!(!ok && err.contains("dimension 1 must be 1"), "{err}");

    let xr = Tensor::from_vec(&[2, 256], vec![0f32; 512]);
    let p = tmp("wrongrank.npz");
    octet::io::npz::write_npz(&p, &[("input".into(), &xr)]).unwrap();
    let (ok, _, err) = octet(&["run", s(&model), "--input", s(&p)]);
    assert!(!ok && err.contains("rank 4"), "{err}");

    let (ok, _, err) = octet(&[
        "run",
        s(&model),
        "--input",
        s(&fixture("digits_test.npz")),
        "--shape",
        "nope=1x1",
    ]);
    assert!(!ok && err.contains("'nope'"), "{err}");
}
