//! The reference interpreter: a plain, obviously-correct implementation of every op in
//! `octet_ir::Op`, the oracle that every faster path is compared against. Speed is not its job.
//! (Being written: see eval_op.)

use octet_ir::{Op, Tensor};

/// Evaluate one op on concrete operands (indexed by slot; `None` = absent optional operand).
/// Returns one tensor per op output. Errors are plain messages; callers add the node name.
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
    let _ = inputs;
    Err(format!("{} is not implemented in the reference interpreter yet", op.name()))
}
