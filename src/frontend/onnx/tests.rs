//! Importer tests on models built in memory.

use super::proto::*;
use super::*;

fn vi(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value as DV, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(if d < 0 {
                                DV::DimParam("N".into())
                            } else {
                                DV::DimValue(d)
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
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

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, opset: i64) -> Vec<u8> {
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![vi("x", 1, &[-1, 4])],
            output: vec![vi("y", 1, &[-1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    };
    m.encode_to_vec()
}

fn import(bytes: &[u8]) -> Result<Model, ImportError> {
    import_bytes(bytes, Path::new("test.onnx"), None)
}

#[test]
fn imports_a_small_model_with_symbolic_batch() {
    let w = tensor::tensor_to_proto("w", &Tensor::from_vec(&[4], vec![1f32, 2., 3., 4.]));
    let m = import(&model(
        vec![node("Add", "add0", &["x", "w"], &["y"])],
        vec![w],
        17,
    ))
    .unwrap();
    m.graph.verify().unwrap();
    assert!(
        m.graph.to_text().contains("%y = Add(%x, %w) : f32[N,4]"),
        "{}",
        m.graph.to_text()
    );
}

#[test]
fn garbage_and_truncated_files_are_decode_errors() {
    let e = import(b"\xff\xff\xff\xffnot a model").err().unwrap();
    assert!(matches!(e, ImportError::Decode { .. }), "{e}");
    let bytes = model(vec![node("Relu", "r", &["x"], &["y"])], vec![], 17);
    let e = import(&bytes[..bytes.len() - 7]).err().unwrap();
    assert!(e.to_string().contains("test.onnx"), "{e}");
}

#[test]
fn unsupported_ops_are_all_named_with_their_nodes() {
    let bytes = model(
        vec![
            node("Frobnicate", "f1", &["x"], &["a"]),
            node("Frobnicate", "f2", &["a"], &["b"]),
            node("Zorch", "z1", &["b"], &["y"]),
        ],
        vec![],
        17,
    );
    match import(&bytes).err().unwrap() {
        ImportError::Unsupported { ops, list, .. } => {
            assert_eq!(ops.len(), 2);
            assert_eq!(ops[0].nodes, vec!["f1", "f2"]);
            assert!(list.contains("Zorch") && list.contains("z1"), "{list}");
        }
        e => panic!("wrong error {e}"),
    }
}

#[test]
fn missing_initializer_names_node_and_tensor() {
    let e = import(&model(
        vec![node("Add", "add0", &["x", "w_missing"], &["y"])],
        vec![],
        17,
    ))
    .err()
    .unwrap();
    let s = e.to_string();
    assert!(s.contains("add0") && s.contains("w_missing"), "{s}");
}

#[test]
fn a_cycle_is_an_error_naming_a_node() {
    let bytes = model(
        vec![
            node("Add", "a", &["x", "b_out"], &["a_out"]),
            node("Relu", "b", &["a_out"], &["b_out"]),
            node("Relu", "c", &["a_out"], &["y"]),
        ],
        vec![],
        17,
    );
    let s = import(&bytes).err().unwrap().to_string();
    assert!(s.contains("cycle"), "{s}");
}

#[test]
fn too_new_opset_is_an_error() {
    let s = import(&model(vec![node("Relu", "r", &["x"], &["y"])], vec![], 99))
        .err()
        .unwrap()
        .to_string();
    assert!(s.contains("opset 99"), "{s}");
}

#[test]
fn old_opset_attributes_become_operands() {
    let mut n = node("Clip", "clip", &["x"], &["y"]);
    n.attribute = vec![
        AttributeProto {
            name: Some("min".into()),
            f: Some(0.0),
            r#type: Some(1),
            ..Default::default()
        },
        AttributeProto {
            name: Some("max".into()),
            f: Some(6.0),
            r#type: Some(1),
            ..Default::default()
        },
    ];
    let m = import(&model(vec![n], vec![], 9)).unwrap();
    let c = m.graph.find("clip").unwrap();
    assert_eq!(m.graph.const_operand(c, 2).unwrap().to_f64_vec(), vec![6.0]);
}

#[test]
fn external_data_is_read_relative_to_the_model() {
    let dir = std::env::temp_dir().join(format!("octet-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vals = [1f32, 2., 3., 4.];
    let mut bytes = vec![0u8; 16];
    bytes.extend_from_slice(bytemuck::cast_slice(&vals));
    std::fs::write(dir.join("w.bin"), &bytes).unwrap();
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        data_location: Some(1),
        external_data: vec![
            kv("location", "w.bin"),
            kv("offset", "16"),
            kv("length", "16"),
        ],
        ..Default::default()
    };
    let bytes = model(
        vec![node("Add", "add0", &["x", "w"], &["y"])],
        vec![w.clone()],
        17,
    );
    let m = import_bytes(&bytes, &dir.join("m.onnx"), Some(&dir)).unwrap();
    let n = m.graph.find("add0").unwrap();
    assert_eq!(
        m.graph.const_operand(n, 1).unwrap().view::<f32>().unwrap(),
        &vals
    );
    // A location escaping the folder is refused.
    let mut bad = w;
    bad.external_data[0] = kv("location", "../w.bin");
    let bytes = model(
        vec![node("Add", "add0", &["x", "w"], &["y"])],
        vec![bad],
        17,
    );
    let s = import_bytes(&bytes, &dir.join("m.onnx"), Some(&dir))
        .err()
        .unwrap()
        .to_string();
    assert!(s.contains("relative path"), "{s}");
    std::fs::remove_dir_all(&dir).ok();
}
