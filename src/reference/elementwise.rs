//! Elementwise ops: unary math (including a correct `erf`), parametrised activations, Clip,
//! broadcasting binary arithmetic / comparison / logic, variadic Min/Max/Sum/Mean and Where.
//! Floats compute in f64 and round once to the tensor's dtype (exact for + - * / sqrt, within
//! an ulp elsewhere); integers compute exactly in i128 and wrap to their dtype.

use super::broadcast::{broadcast_map, broadcast_shapes, gather_raw, zip_broadcast};
use super::cast::{from_floats, from_ints, ints, need_float, round_half_even};
use super::{opt, R};
use octet_ir::{ActOp, BinaryOp, DType, Tensor, UnaryOp, VariadicOp};

fn map_float(t: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    let v: Vec<f64> = t.to_f64_vec().into_iter().map(f).collect();
    from_floats(t.dtype(), t.shape(), &v)
}

fn map_int(t: &Tensor, f: impl Fn(i128) -> i128) -> Tensor {
    let v: Vec<i128> = ints(t).into_iter().map(f).collect();
    from_ints(t.dtype(), t.shape(), &v)
}

/// Unary ops.
pub fn unary(u: UnaryOp, x: &Tensor) -> R<Tensor> {
    use UnaryOp::*;
    let dt = x.dtype();
    let float = dt.is_float();
    let name = format!("{u:?}");
    match u {
        Identity => return Ok(x.clone()),
        Not => {
            if dt != DType::Bool {
                return Err(format!("Not needs a bool tensor, got {dt}"));
            }
            let v: Vec<bool> = x.bytes().iter().map(|&b| b == 0).collect();
            return Ok(Tensor::from_bools(x.shape(), &v));
        }
        IsNaN => {
            need_float(x, "IsNaN")?;
            let v: Vec<bool> = x.to_f64_vec().iter().map(|v| v.is_nan()).collect();
            return Ok(Tensor::from_bools(x.shape(), &v));
        }
        _ => {}
    }
    if dt == DType::Bool {
        return Err(format!("{name} does not accept bool tensors"));
    }
    if !float {
        return match u {
            Abs => Ok(map_int(x, |v| v.abs())),
            Neg => Ok(map_int(x, |v| -v)),
            Relu => Ok(map_int(x, |v| v.max(0))),
            Sign => Ok(map_int(x, |v| v.signum())),
            Floor | Ceil | Round => Ok(x.clone()),
            _ => Err(format!("{name} needs a float tensor, got {dt}")),
        };
    }
    Ok(match u {
        Abs => map_float(x, f64::abs),
        Neg => map_float(x, |v| -v),
        Sqrt => map_float(x, f64::sqrt),
        Exp => map_float(x, f64::exp),
        Log => map_float(x, f64::ln),
        Reciprocal => map_float(x, |v| 1.0 / v),
        Relu => map_float(x, |v| if v < 0.0 { 0.0 } else { v }),
        Sigmoid => map_float(x, sigmoid),
        Tanh => map_float(x, f64::tanh),
        Erf => map_float(x, erf),
        Floor => map_float(x, f64::floor),
        Ceil => map_float(x, f64::ceil),
        Round => map_float(x, round_half_even),
        Sign => map_float(x, |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        Softplus => map_float(x, |v| {
            if v > 0.0 {
                v + (-v).exp().ln_1p()
            } else {
                v.exp().ln_1p()
            }
        }),
        Softsign => map_float(x, |v| v / (1.0 + v.abs())),
        HardSwish => map_float(x, |v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Sin => map_float(x, f64::sin),
        Cos => map_float(x, f64::cos),
        Identity | Not | IsNaN => unreachable!("handled above"),
    })
}

fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Parametrised activations (float only).
pub fn act(a: ActOp, x: &Tensor) -> R<Tensor> {
    need_float(x, &format!("{a:?}"))?;
    Ok(match a {
        ActOp::LeakyRelu { alpha } => {
            let al = alpha as f64;
            map_float(x, move |v| if v < 0.0 { al * v } else { v })
        }
        ActOp::Elu { alpha } => {
            let al = alpha as f64;
            map_float(x, move |v| if v < 0.0 { al * (v.exp() - 1.0) } else { v })
        }
        ActOp::Selu { alpha, gamma } => {
            let (al, g) = (alpha as f64, gamma as f64);
            map_float(x, move |v| {
                if v <= 0.0 {
                    g * (al * v.exp() - al)
                } else {
                    g * v
                }
            })
        }
        ActOp::Celu { alpha } => {
            let al = alpha as f64;
            map_float(x, move |v| {
                v.max(0.0) + (al * ((v / al).exp() - 1.0)).min(0.0)
            })
        }
        ActOp::HardSigmoid { alpha, beta } => {
            let (al, be) = (alpha as f64, beta as f64);
            map_float(x, move |v| (al * v + be).clamp(0.0, 1.0))
        }
        ActOp::ThresholdedRelu { alpha } => {
            let al = alpha as f64;
            map_float(x, move |v| if v > al { v } else { 0.0 })
        }
        ActOp::Gelu { tanh: false } => {
            map_float(x, |v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
        }
        ActOp::Gelu { tanh: true } => map_float(x, |v| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
        }),
    })
}

fn scalar_of<'a>(t: &'a Tensor, what: &str) -> R<&'a Tensor> {
    if t.len() != 1 {
        return Err(format!(
            "Clip {what} must be a scalar, got shape {:?}",
            t.shape()
        ));
    }
    Ok(t)
}

/// Clip(X, min?, max?).
pub fn clip(inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let x = super::req(inputs, 0, "X")?;
    let lo = opt(inputs, 1).map(|t| scalar_of(t, "min")).transpose()?;
    let hi = opt(inputs, 2).map(|t| scalar_of(t, "max")).transpose()?;
    for b in [lo, hi].into_iter().flatten() {
        if b.dtype() != x.dtype() {
            return Err(format!(
                "Clip bound is {} but X is {}",
                b.dtype(),
                x.dtype()
            ));
        }
    }
    if x.dtype().is_float() {
        let lo = lo.map(|t| t.to_f64_vec()[0]);
        let hi = hi.map(|t| t.to_f64_vec()[0]);
        Ok(map_float(x, |mut v| {
            if let Some(l) = lo {
                if v < l {
                    v = l;
                }
            }
            if let Some(h) = hi {
                if v > h {
                    v = h;
                }
            }
            v
        }))
    } else if x.dtype() == DType::Bool {
        Err("Clip does not accept bool".into())
    } else {
        let lo = lo.map(|t| ints(t)[0]);
        let hi = hi.map(|t| ints(t)[0]);
        Ok(map_int(x, |mut v| {
            if let Some(l) = lo {
                v = v.max(l);
            }
            if let Some(h) = hi {
                v = v.min(h);
            }
            v
        }))
    }
}

fn float_mod(a: f64, b: f64, fmod: bool) -> f64 {
    let r = a % b;
    if fmod {
        r
    } else if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
        r + b
    } else {
        r
    }
}

fn int_pow(base: i128, e: i128) -> i128 {
    if e < 0 {
        // Only 1 and -1 have integral negative powers; others truncate to 0.
        return match base {
            1 => 1,
            -1 => {
                if e % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => (base as f64).powf(e as f64).trunc() as i128,
        };
    }
    base.wrapping_pow(e.min(u32::MAX as i128) as u32)
}

/// Binary ops with numpy broadcasting (PRelu: slope broadcasts to X).
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> R<Tensor> {
    use BinaryOp::*;
    let dt = a.dtype();
    if op != Pow && b.dtype() != dt {
        return Err(format!(
            "{op:?} operands have different dtypes: {dt} and {}",
            b.dtype()
        ));
    }
    if matches!(op, And | Or | Xor) {
        if dt != DType::Bool {
            return Err(format!("{op:?} needs bool operands, got {dt}"));
        }
        let (v, shape) = zip_broadcast(a.bytes(), a.shape(), b.bytes(), b.shape(), |x, y| {
            let (x, y) = (x != 0, y != 0);
            Ok(match op {
                And => x && y,
                Or => x || y,
                _ => x ^ y,
            })
        })?;
        return Ok(Tensor::from_bools(&shape, &v));
    }
    if op.is_predicate() {
        let cmp = |o: std::cmp::Ordering| -> bool {
            use std::cmp::Ordering as O;
            match op {
                Equal => o == O::Equal,
                Less => o == O::Less,
                Greater => o == O::Greater,
                LessOrEqual => o != O::Greater,
                _ => o != O::Less,
            }
        };
        let (v, shape) = if dt.is_float() {
            let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
            zip_broadcast(&x, a.shape(), &y, b.shape(), |x: f64, y: f64| {
                Ok(match x.partial_cmp(&y) {
                    Some(o) => cmp(o),
                    None => false, // NaN compares false
                })
            })?
        } else {
            let (x, y) = (ints(a), ints(b));
            zip_broadcast(&x, a.shape(), &y, b.shape(), |x: i128, y: i128| {
                Ok(cmp(x.cmp(&y)))
            })?
        };
        return Ok(Tensor::from_bools(&shape, &v));
    }
    if dt == DType::Bool {
        return Err(format!("{op:?} does not accept bool operands"));
    }
    if op == PRelu {
        let out_shape = broadcast_shapes(&[a.shape(), b.shape()])?;
        if out_shape != a.shape() {
            return Err(format!(
                "PRelu slope {:?} does not broadcast to X {:?}",
                b.shape(),
                a.shape()
            ));
        }
    }
    if dt.is_float() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let (v, shape) = zip_broadcast(&x, a.shape(), &y, b.shape(), |x: f64, y: f64| {
            Ok(match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                Pow => x.powf(y),
                Mod { fmod } => float_mod(x, y, fmod),
                PRelu => {
                    if x < 0.0 {
                        x * y
                    } else {
                        x
                    }
                }
                _ => unreachable!("predicates handled above"),
            })
        })?;
        return Ok(from_floats(dt, &shape, &v));
    }
    // Integer base.
    if op == Pow && b.dtype().is_float() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let (v, shape) =
            zip_broadcast(&x, a.shape(), &y, b.shape(), |x: f64, y: f64| Ok(x.powf(y)))?;
        return Ok(from_floats(dt, &shape, &v));
    }
    let (x, y) = (ints(a), ints(b));
    let (v, shape) = zip_broadcast(&x, a.shape(), &y, b.shape(), |x: i128, y: i128| {
        Ok(match op {
            Add => x.wrapping_add(y),
            Sub => x.wrapping_sub(y),
            Mul => x.wrapping_mul(y),
            Div => {
                if y == 0 {
                    return Err("integer division by zero".into());
                }
                x / y
            }
            Mod { fmod } => {
                if y == 0 {
                    return Err("integer modulo by zero".into());
                }
                let r = x % y;
                if !fmod && r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            }
            Pow => int_pow(x, y),
            PRelu => {
                if x < 0 {
                    x.wrapping_mul(y)
                } else {
                    x
                }
            }
            _ => unreachable!("predicates handled above"),
        })
    })?;
    Ok(from_ints(dt, &shape, &v))
}

/// Variadic Min / Max / Sum / Mean with broadcasting.
pub fn variadic(op: VariadicOp, inputs: &[Option<&Tensor>]) -> R<Tensor> {
    let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let first = *xs.first().ok_or("needs at least one operand")?;
    let dt = first.dtype();
    if let Some(x) = xs.iter().find(|x| x.dtype() != dt) {
        return Err(format!(
            "{op:?} operands have different dtypes: {dt} and {}",
            x.dtype()
        ));
    }
    if dt == DType::Bool {
        return Err(format!("{op:?} does not accept bool"));
    }
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let out_shape = broadcast_shapes(&shapes)?;
    let maps = xs
        .iter()
        .map(|x| broadcast_map(x.shape(), &out_shape))
        .collect::<R<Vec<_>>>()?;
    let n: usize = out_shape.iter().product();
    if dt.is_float() {
        let vals: Vec<Vec<f64>> = xs.iter().map(|x| x.to_f64_vec()).collect();
        let mut out = vec![0.0f64; n];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = vals[0][maps[0][i]];
            for k in 1..xs.len() {
                let v = vals[k][maps[k][i]];
                acc = match op {
                    VariadicOp::Min => {
                        if v.is_nan() || v < acc {
                            v
                        } else {
                            acc
                        }
                    }
                    VariadicOp::Max => {
                        if v.is_nan() || v > acc {
                            v
                        } else {
                            acc
                        }
                    }
                    VariadicOp::Sum | VariadicOp::Mean => acc + v,
                };
            }
            if op == VariadicOp::Mean {
                acc /= xs.len() as f64;
            }
            *o = acc;
        }
        Ok(from_floats(dt, &out_shape, &out))
    } else {
        let vals: Vec<Vec<i128>> = xs.iter().map(|x| ints(x)).collect();
        let mut out = vec![0i128; n];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = vals[0][maps[0][i]];
            for k in 1..xs.len() {
                let v = vals[k][maps[k][i]];
                acc = match op {
                    VariadicOp::Min => acc.min(v),
                    VariadicOp::Max => acc.max(v),
                    VariadicOp::Sum | VariadicOp::Mean => acc.wrapping_add(v),
                };
            }
            if op == VariadicOp::Mean {
                acc /= xs.len() as i128;
            }
            *o = acc;
        }
        Ok(from_ints(dt, &out_shape, &out))
    }
}

/// Where(condition, X, Y): raw element copy with three-way broadcasting.
pub fn where_op(c: &Tensor, x: &Tensor, y: &Tensor) -> R<Tensor> {
    if c.dtype() != DType::Bool {
        return Err(format!("Where condition must be bool, got {}", c.dtype()));
    }
    if x.dtype() != y.dtype() {
        return Err(format!("Where X is {} but Y is {}", x.dtype(), y.dtype()));
    }
    let out_shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])?;
    let mc = broadcast_map(c.shape(), &out_shape)?;
    let mx = broadcast_map(x.shape(), &out_shape)?;
    let my = broadcast_map(y.shape(), &out_shape)?;
    let cb = c.bytes();
    // Gather from the concatenation [X; Y] so a single raw copy does the work.
    let es = x.dtype().size();
    let mut both = Vec::with_capacity((x.len() + y.len()) * es);
    both.extend_from_slice(x.bytes());
    both.extend_from_slice(y.bytes());
    let cat = Tensor::from_raw(x.dtype(), &[x.len() + y.len()], &both)
        .ok_or("internal: Where concatenation")?;
    let map: Vec<usize> = (0..mc.len())
        .map(|i| {
            if cb[mc[i]] != 0 {
                mx[i]
            } else {
                x.len() + my[i]
            }
        })
        .collect();
    gather_raw(&cat, &out_shape, &map)
}

/// The error function, accurate to about 1 ulp in f64 (the classic fdlibm rational
/// approximations, W. J. Cody style, re-implemented here).
pub fn erf(x: f64) -> f64 {
    const ERX: f64 = 8.45062911510467529297e-01;
    const EFX: f64 = 1.28379167095512586316e-01;
    const PP: [f64; 5] = [
        1.28379167095512558561e-01,
        -3.25042107247001499370e-01,
        -2.84817495755985104766e-02,
        -5.77027029648944159157e-03,
        -2.37630166566501626084e-05,
    ];
    const QQ: [f64; 5] = [
        3.97917223959155352819e-01,
        6.50222499887672944485e-02,
        5.08130628187576562776e-03,
        1.32494738004321644526e-04,
        -3.96022827877536812320e-06,
    ];
    const PA: [f64; 7] = [
        -2.36211856075265944077e-03,
        4.14856118683748331666e-01,
        -3.72207876035701323847e-01,
        3.18346619901161753674e-01,
        -1.10894694282396677476e-01,
        3.54783043256182359371e-02,
        -2.16637559486879084300e-03,
    ];
    const QA: [f64; 6] = [
        1.06420880400844228286e-01,
        5.40397917702171048937e-01,
        7.18286544141962662868e-02,
        1.26171219808761642112e-01,
        1.36370839120290507362e-02,
        1.19844998467991074170e-02,
    ];
    const RA: [f64; 8] = [
        -9.86494403484714822705e-03,
        -6.93858572707181764372e-01,
        -1.05586262253232909814e+01,
        -6.23753324503260060396e+01,
        -1.62396669462573470355e+02,
        -1.84605092906711035994e+02,
        -8.12874355063065934246e+01,
        -9.81432934416914548592e+00,
    ];
    const SA: [f64; 8] = [
        1.96512716674392571292e+01,
        1.37657754143519042600e+02,
        4.34565877475229228821e+02,
        6.45387271733267880336e+02,
        4.29008140027567833386e+02,
        1.08635005541779435134e+02,
        6.57024977031928170135e+00,
        -6.04244152148580987438e-02,
    ];
    const RB: [f64; 7] = [
        -9.86494292470009928597e-03,
        -7.99283237680523006574e-01,
        -1.77579549177547519889e+01,
        -1.60636384855821916062e+02,
        -6.37566443368389627722e+02,
        -1.02509513161107724954e+03,
        -4.83519191608651397019e+02,
    ];
    const SB: [f64; 7] = [
        3.03380607434824582924e+01,
        3.25792512996573918826e+02,
        1.53672958608443695994e+03,
        3.19985821950859553908e+03,
        2.55305040643316442583e+03,
        4.74528541206955367215e+02,
        -2.24409524465858183362e+01,
    ];
    // Horner: c[0] + z*(c[1] + z*(...)).
    fn poly(c: &[f64], z: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * z + k)
    }
    // 1 + z*(c[0] + z*(c[1] + ...)).
    fn poly1(c: &[f64], z: f64) -> f64 {
        1.0 + z * poly(c, z)
    }
    if x.is_nan() {
        return x;
    }
    if x.is_infinite() {
        return x.signum();
    }
    let (neg, a) = (x < 0.0, x.abs());
    let r = if a < 0.84375 {
        if a < 1.0 / (1u64 << 28) as f64 {
            a + EFX * a
        } else {
            let z = a * a;
            a + a * (poly(&PP, z) / poly1(&QQ, z))
        }
    } else if a < 1.25 {
        let s = a - 1.0;
        ERX + poly(&PA, s) / poly1(&QA, s)
    } else if a >= 6.0 {
        1.0
    } else {
        let s = 1.0 / (a * a);
        let (rr, ss) = if a < 1.0 / 0.35 {
            (poly(&RA, s), poly1(&SA, s))
        } else {
            (poly(&RB, s), poly1(&SB, s))
        };
        let z = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
        let e = (-z * z - 0.5625).exp() * ((z - a) * (z + a) + rr / ss).exp();
        1.0 - e / a
    };
    if neg {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.view::<f32>().unwrap().to_vec()
    }

    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (-1.1, -0.880_205_069_574_081_7),
            (0.1, 0.112_462_916_018_284_9),
        ];
        for (x, want) in cases {
            assert!(
                (erf(x) - want).abs() < 1e-15,
                "erf({x}) = {} != {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn unary_and_activations() {
        let x = Tensor::from_vec(&[5], vec![-2.5f32, -0.5, 0.5, 1.5, 2.5]);
        assert_eq!(
            f32s(&unary(UnaryOp::Round, &x).unwrap()),
            [-2.0, -0.0, 0.0, 2.0, 2.0]
        );
        assert_eq!(
            f32s(&unary(UnaryOp::Relu, &x).unwrap()),
            [0.0, 0.0, 0.5, 1.5, 2.5]
        );
        let y = act(ActOp::LeakyRelu { alpha: 0.1 }, &x).unwrap();
        assert_eq!(f32s(&y)[0], -0.25);
        let g = act(ActOp::Gelu { tanh: false }, &x).unwrap();
        assert!((f32s(&g)[3] - 1.399_79).abs() < 1e-4, "{:?}", f32s(&g));
        let i = Tensor::from_vec(&[2], vec![-3i64, 4]);
        assert_eq!(
            unary(UnaryOp::Abs, &i).unwrap().view::<i64>().unwrap(),
            &[3, 4]
        );
        assert!(unary(UnaryOp::Exp, &i).is_err());
        let b = unary(UnaryOp::IsNaN, &Tensor::from_vec(&[2], vec![f32::NAN, 1.0])).unwrap();
        assert_eq!(b.view::<u8>().unwrap(), &[1, 0]);
    }

    #[test]
    fn binary_broadcasts_and_int_semantics() {
        let a = Tensor::from_vec(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let b = Tensor::from_vec(&[3], vec![10.0f32, 20., 30.]);
        let c = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(f32s(&c), [11., 22., 33., 14., 25., 36.]);
        let x = Tensor::from_vec(&[4], vec![-7i32, 7, -7, 7]);
        let y = Tensor::from_vec(&[4], vec![2i32, -2, -2, 2]);
        let d = binary(BinaryOp::Div, &x, &y).unwrap();
        assert_eq!(d.view::<i32>().unwrap(), &[-3, -3, 3, 3]);
        let m = binary(BinaryOp::Mod { fmod: false }, &x, &y).unwrap();
        assert_eq!(m.view::<i32>().unwrap(), &[1, -1, -1, 1]);
        let m = binary(BinaryOp::Mod { fmod: true }, &x, &y).unwrap();
        assert_eq!(m.view::<i32>().unwrap(), &[-1, 1, -1, 1]);
        let p = binary(BinaryOp::Pow, &x, &Tensor::from_vec(&[1], vec![2i64])).unwrap();
        assert_eq!(p.view::<i32>().unwrap(), &[49, 49, 49, 49]);
        let l = binary(BinaryOp::Less, &x, &y).unwrap();
        assert_eq!(l.dtype(), DType::Bool);
        assert_eq!(l.view::<u8>().unwrap(), &[1, 0, 1, 0]);
        assert!(binary(BinaryOp::Div, &x, &Tensor::from_vec(&[1], vec![0i32])).is_err());
        assert!(binary(BinaryOp::Add, &a, &x).is_err());
        let big = Tensor::from_vec(&[1], vec![i64::MAX - 1]);
        let s = binary(BinaryOp::Add, &big, &Tensor::from_vec(&[1], vec![1i64])).unwrap();
        assert_eq!(s.view::<i64>().unwrap(), &[i64::MAX]);
        let pr = binary(
            BinaryOp::PRelu,
            &Tensor::from_vec(&[2, 2], vec![-1.0f32, 1., -2., 2.]),
            &Tensor::from_vec(&[2, 1], vec![0.5f32, 0.25]),
        )
        .unwrap();
        assert_eq!(f32s(&pr), [-0.5, 1., -0.5, 2.]);
    }

    #[test]
    fn variadic_clip_where() {
        let a = Tensor::from_vec(&[2], vec![1.0f32, 5.0]);
        let b = Tensor::from_vec(&[1], vec![3.0f32]);
        let m = variadic(VariadicOp::Max, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(f32s(&m), [3.0, 5.0]);
        let m = variadic(VariadicOp::Mean, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(f32s(&m), [2.0, 4.0]);
        let lo = Tensor::scalar(2.0f32);
        let c = clip(&[Some(&a), Some(&lo), None]).unwrap();
        assert_eq!(f32s(&c), [2.0, 5.0]);
        let cond = Tensor::from_bools(&[2, 1], &[true, false]);
        let x = Tensor::from_vec(&[2], vec![i64::MAX, 1]);
        let y = Tensor::from_vec(&[1], vec![-1i64]);
        let w = where_op(&cond, &x, &y).unwrap();
        assert_eq!(w.view::<i64>().unwrap(), &[i64::MAX, 1, -1, -1]);
    }
}
