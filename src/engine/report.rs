//! The per-node execution report: which nodes run an int8 kernel (which kernel, which ISA), and
//! for every Conv / Gemm / MatMul that does not, why.

use octet_ir::{Node, Op};
use std::fmt;

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeReport {
    pub node: String,
    pub op: String,
    /// "int8", "bf16" (bf16 SIMD kernel), "fp32" (float SIMD kernel), "native" (engine
    /// implementation of a non-GEMM op) or "reference".
    pub exec: &'static str,
    /// Kernel description, e.g. "conv2d_u8s8 im2col+gemm".
    pub kernel: String,
    pub isa: &'static str,
    /// Why a compute node is not int8 (empty otherwise).
    pub reason: String,
}

impl NodeReport {
    pub fn int8(n: &Node, kernel: String, isa: &'static str) -> Self {
        NodeReport {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            exec: "int8",
            kernel,
            isa,
            reason: String::new(),
        }
    }
    pub fn fp32(n: &Node, kernel: String, isa: &'static str) -> Self {
        NodeReport {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            exec: "fp32",
            kernel,
            isa,
            reason: "float node (not quantized)".into(),
        }
    }
    pub fn bf16(n: &Node, kernel: String, isa: &'static str) -> Self {
        NodeReport {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            exec: "bf16",
            kernel,
            isa,
            reason: "precision map: bf16".into(),
        }
    }
    pub fn native(n: &Node, kernel: &str, isa: &'static str) -> Self {
        NodeReport {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            exec: "native",
            kernel: kernel.to_string(),
            isa,
            reason: String::new(),
        }
    }
    pub fn reference(n: &Node, why: Option<String>) -> Self {
        let compute = matches!(
            n.op,
            Op::Conv(_) | Op::Gemm { .. } | Op::MatMul | Op::ConvTranspose(_)
        );
        let reason = match why {
            Some(w) => w,
            None if compute => "float node (not quantized)".to_string(),
            None => String::new(),
        };
        NodeReport {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            exec: "reference",
            kernel: "reference".into(),
            isa: "scalar",
            reason,
        }
    }
    /// A Conv/Gemm/MatMul, float or integer.
    pub fn is_compute(&self) -> bool {
        matches!(
            self.op.as_str(),
            "Conv"
                | "Gemm"
                | "MatMul"
                | "ConvTranspose"
                | "QLinearConv"
                | "QGemm"
                | "QLinearMatMul"
                | "MatMulInteger"
                | "ConvInteger"
        )
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub isa: &'static str,
    pub nodes: Vec<NodeReport>,
}

impl Report {
    /// Compute nodes that do not run an int8 kernel.
    pub fn compute_not_int8(&self) -> Vec<&NodeReport> {
        self.nodes
            .iter()
            .filter(|r| r.is_compute() && r.exec != "int8")
            .collect()
    }
    pub fn int8_count(&self) -> usize {
        self.nodes.iter().filter(|r| r.exec == "int8").count()
    }
    pub fn bf16_count(&self) -> usize {
        self.nodes.iter().filter(|r| r.exec == "bf16").count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let compute: Vec<&NodeReport> = self.nodes.iter().filter(|r| r.is_compute()).collect();
        writeln!(
            f,
            "{} of {} Conv/Gemm/MatMul nodes run int8 kernels (best ISA here: {})",
            compute.iter().filter(|r| r.exec == "int8").count(),
            compute.len(),
            self.isa
        )?;
        for r in compute {
            if r.exec == "int8" {
                writeln!(
                    f,
                    "  int8  {:<40} {:<14} {} [{}]",
                    r.node, r.op, r.kernel, r.isa
                )?;
            } else {
                writeln!(
                    f,
                    "  {:<5} {:<40} {:<14} {} [{}: {}]",
                    r.exec, r.node, r.op, r.reason, r.kernel, r.isa
                )?;
            }
        }
        Ok(())
    }
}
