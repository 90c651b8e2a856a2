//! Bind input shapes: replace symbolic input dimensions by the extents the user gives
//! (`--shape name=1x3x224x224`, or the shapes of the data being run), check them against the
//! model's fixed dimensions, and re-infer every type. After this pass (and constant folding) a
//! graph whose inputs are all bound is fully static.

use super::{Pass, PassError};
use octet_ir::{Dim, Graph, Shape};
use std::collections::HashMap;

pub struct BindShapes {
    /// Input name -> concrete shape.
    pub shapes: Vec<(String, Vec<usize>)>,
}

impl Pass for BindShapes {
    fn name(&self) -> &'static str {
        "bind_shapes"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, PassError> {
        let mut env: HashMap<String, usize> = HashMap::new();
        let names: Vec<String> = g
            .inputs
            .iter()
            .map(|&n| g.node(n).outputs[0].name.clone())
            .collect();
        for (name, _) in &self.shapes {
            if !names.contains(name) {
                return Err(PassError::Input(format!(
                    "'{name}' is not an input of the model (inputs: {})",
                    names.join(", ")
                )));
            }
        }
        // First collect symbol bindings, checking fixed dims and ranks.
        for (name, dims) in &self.shapes {
            let n = g.inputs[names.iter().position(|x| x == name).unwrap()];
            let ty = g.node(n).outputs[0].ty.clone().expect("inputs are typed");
            if ty.shape.rank() != dims.len() {
                return Err(PassError::Input(format!(
                    "input '{name}' has rank {} ({}), got shape {:?}",
                    ty.shape.rank(),
                    ty.shape,
                    dims
                )));
            }
            for (i, (d, &v)) in ty.shape.0.iter().zip(dims).enumerate() {
                match d {
                    Dim::Fixed(f) if *f != v => {
                        return Err(PassError::Input(format!(
                            "input '{name}' expects {} but got {:?} (dimension {i} must be {f})",
                            ty.shape, dims
                        )))
                    }
                    Dim::Sym(s) => {
                        if let Some(&prev) = env.get(s) {
                            if prev != v {
                                return Err(PassError::Input(format!(
                                    "dimension '{s}' is bound to both {prev} and {v} (input '{name}')"
                                )));
                            }
                        }
                        env.insert(s.clone(), v);
                    }
                    _ => {}
                }
            }
        }
        let mut changed = false;
        for &n in &g.inputs.clone() {
            let v = &mut g.node_mut(n).outputs[0];
            let ty = v.ty.as_mut().expect("inputs are typed");
            let bound: Shape = ty.shape.bind(&env);
            if bound != ty.shape {
                ty.shape = bound;
                changed = true;
            }
        }
        g.infer_types().map_err(|source| PassError::Ir {
            pass: "bind_shapes",
            source,
        })?;
        Ok(changed)
    }
}

/// Parse `name=1x3x224x224` into (name, dims).
pub fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .split_once('=')
        .ok_or_else(|| format!("--shape '{s}': expected name=DxDx..."))?;
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(['x', 'X', ','])
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("--shape '{s}': '{d}' is not a dimension"))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((name.to_string(), dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use octet_ir::*;

    fn g() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            ValueType::new(DType::F32, Shape(vec![Dim::Sym("N".into()), Dim::Fixed(4)])),
        );
        let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec!["y".into()]);
        g.connect(Outlet::new(x, 0), r, 0);
        g.outputs.push(("y".into(), Outlet::new(r, 0)));
        g.infer_types().unwrap();
        g
    }

    #[test]
    fn binds_symbols_everywhere() {
        let mut g = g();
        assert!(g.to_text().contains("f32[N,4]"));
        BindShapes {
            shapes: vec![("x".into(), vec![2, 4])],
        }
        .run(&mut g)
        .unwrap();
        assert_eq!(
            g.to_text(),
            "graph(%x: f32[2,4]) -> (%y) {\n  %y = Relu(%x) : f32[2,4]  # relu\n}\n"
        );
    }

    #[test]
    fn wrong_name_rank_or_fixed_dim_is_an_error() {
        let e = BindShapes {
            shapes: vec![("z".into(), vec![2, 4])],
        }
        .run(&mut g())
        .unwrap_err()
        .to_string();
        assert!(e.contains("'z' is not an input") && e.contains("x"), "{e}");
        let e = BindShapes {
            shapes: vec![("x".into(), vec![2])],
        }
        .run(&mut g())
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 2"), "{e}");
        let e = BindShapes {
            shapes: vec![("x".into(), vec![2, 5])],
        }
        .run(&mut g())
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be 4"), "{e}");
    }

    #[test]
    fn parses_shape_args() {
        assert_eq!(
            parse_shape_arg("input_ids=1x128").unwrap(),
            ("input_ids".into(), vec![1, 128])
        );
        assert!(parse_shape_arg("x=1xa").is_err());
        assert!(parse_shape_arg("x").is_err());
    }
}
