//! Reference (oracle) implementations: obviously-correct loops on unpacked data. Tests compare
//! every SIMD path against these. They share no code with the packed kernels except the one-line
//! scalar requantization rule, which *is* the specification.

use crate::gemm_u8s8::requant_one;

/// Exact int32 GEMM: `c[i][j] = sum_k (a[i][k]-za) * (b[k][j]-zb)`, A row-major M x K, B row-major K x N.
pub fn gemm_u8s8_i32(
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    za: i32,
    b: &[i8],
    zb: i32,
) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for kk in 0..k {
                s = s.wrapping_add((a[i * k + kk] as i32 - za) * (b[kk * n + j] as i32 - zb));
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// `vpmaddubsw` emulation: raw products of u8 `a` and s8 `b`, summed in pairs (k = 2p, 2p+1)
/// with int16 saturation, then in int32; zero points applied afterwards exactly as the packed
/// kernels do (column/row sums), so this equals what the `Avx2`/`Avx512` paths compute.
pub fn gemm_u8s8_i32_saturating(
    m: usize,
    n: usize,
    k: usize,
    a: &[u8],
    za: i32,
    b: &[i8],
    zb: i32,
) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        let rowsum: i32 = (0..k).map(|kk| a[i * k + kk] as i32).sum();
        for j in 0..n {
            let mut s = 0i32;
            let mut kk = 0;
            while kk < k {
                let p0 = a[i * k + kk] as i32 * b[kk * n + j] as i32;
                let p1 = if kk + 1 < k {
                    a[i * k + kk + 1] as i32 * b[(kk + 1) * n + j] as i32
                } else {
                    0
                };
                s = s.wrapping_add((p0 + p1).clamp(-32768, 32767));
                kk += 2;
            }
            let colsum: i32 = (0..k).map(|kk| b[kk * n + j] as i32).sum();
            c[i * n + j] = s - zb * rowsum - za * colsum + (k as i32) * za * zb;
        }
    }
    c
}

/// Requantizes int32 values per the documented rule (see [`crate::Epilogue`]):
/// `round_half_even(min(max(v * mult[j], lo - zp), hi - zp)) + zp`
/// (= `clamp(round_half_even(v * mult[j]) + zp, lo, hi)`), columns `j = idx % n`.
pub fn requantize_i32(
    acc: &[i32],
    n: usize,
    bias: Option<&[i32]>,
    mult: &[f32],
    zp: i32,
    lo: i32,
    hi: i32,
) -> Vec<i32> {
    acc.iter()
        .enumerate()
        .map(|(idx, &v)| {
            let j = idx % n;
            let v = v.wrapping_add(bias.map_or(0, |b| b[j]));
            let mj = if mult.len() == 1 { mult[0] } else { mult[j] };
            requant_one(v, mj, zp, lo, hi)
        })
        .collect()
}

/// Direct convolution oracle, NHWC input (`batch x h x w x c_in`), OHWI weights
/// (`c_out x kh x kw x c_in/groups`), exact int32 `sum (x - zx)(w - zw)` with out-of-bounds taps
/// contributing 0 (they read the zero point). Returns (NHWC int32 output, out_h, out_w).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_u8s8_i32(
    x: &[u8],
    (batch, h, w, c_in): (usize, usize, usize, usize),
    zx: i32,
    wt: &[i8],
    c_out: usize,
    zw: i32,
    geom: &crate::ConvGeometry,
) -> (Vec<i32>, usize, usize) {
    let (kh, kw) = geom.kernel;
    let (sh, sw) = geom.stride;
    let (dh, dw) = geom.dilation;
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    let oh = (h + geom.pads[0] + geom.pads[2] - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + geom.pads[1] + geom.pads[3] - dw * (kw - 1) - 1) / sw + 1;
    let mut out = vec![0i32; batch * oh * ow * c_out];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..c_out {
                    let gi = oc / cog;
                    let mut s = 0i32;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * sh + ky * dh) as isize - geom.pads[0] as isize;
                            let ix = (ox * sw + kx * dw) as isize - geom.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            for ci in 0..cig {
                                let xv = x[((b * h + iy as usize) * w + ix as usize) * c_in
                                    + gi * cig
                                    + ci] as i32;
                                let wv = wt[((oc * kh + ky) * kw + kx) * cig + ci] as i32;
                                s += (xv - zx) * (wv - zw);
                            }
                        }
                    }
                    out[((b * oh + oy) * ow + ox) * c_out + oc] = s;
                }
            }
        }
    }
    (out, oh, ow)
}

/// The bf16 dot product exactly as the bf16 kernels compute it: operands rounded by
/// [`crate::f32_to_bf16`], K taken in pairs `(2g, 2g+1)` (an odd K padded with +0 * +0), each pair
/// one [`crate::dpbf16ps_emulated`] lane with A as `src1`, starting from +0.
fn dot_bf16(k: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    use crate::bf16::f32_to_bf16;
    let get = |f: &dyn Fn(usize) -> f32, i: usize| {
        if i < k {
            f32_to_bf16(f(i)) as u32
        } else {
            0
        }
    };
    let mut acc = 0f32;
    for g in 0..k.div_ceil(2) {
        let pa = get(&a, 2 * g) | (get(&a, 2 * g + 1) << 16);
        let pb = get(&b, 2 * g) | (get(&b, 2 * g + 1) << 16);
        acc = crate::bf16::dpbf16ps_emulated(acc, pa, pb);
    }
    acc
}

/// The bf16 kernels' epilogue: `acc + bias` (one f32 add; +0 without bias), then ReLU as
/// `vmaxps(v, 0)` (`v > 0 ? v : +0`).
fn epilogue_bf16(acc: f32, bias: Option<f32>, relu: bool) -> f32 {
    let v = acc + bias.unwrap_or(0.0);
    if relu {
        crate::gemm_bf16::relu1(v)
    } else {
        v
    }
}

/// bf16 GEMM oracle: `act(dot_bf16(a[i][..], b[..][j]) + bias[j])`, A row-major M x K, B row-major
/// K x N, f32 in and out. Bit-exact specification of [`crate::gemm_bf16`] (NaN payloads aside).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc = dot_bf16(k, |kk| a[i * k + kk], |kk| b[kk * n + j]);
            c[i * n + j] = epilogue_bf16(acc, bias.map(|b| b[j]), relu);
        }
    }
    c
}

/// bf16 convolution oracle, NHWC f32 input (`batch x h x w x c_in`), OHWI f32 weights
/// (`c_out x kh x kw x c_in/groups`): per output, the bf16 dot product over K in `(ky, kx, c)`
/// order with out-of-bounds taps read as +0 (they still take part in the pairing), then bias and
/// ReLU as [`gemm_bf16`]. Returns (NHWC output, out_h, out_w). Bit-exact specification of
/// [`crate::conv2d_bf16`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bf16(
    x: &[f32],
    (batch, h, w, c_in): (usize, usize, usize, usize),
    wt: &[f32],
    c_out: usize,
    geom: &crate::ConvGeometry,
    bias: Option<&[f32]>,
    relu: bool,
) -> (Vec<f32>, usize, usize) {
    let (kh, kw) = geom.kernel;
    let (sh, sw) = geom.stride;
    let (dh, dw) = geom.dilation;
    let g = geom.groups;
    let (cig, cog) = (c_in / g, c_out / g);
    let oh = (h + geom.pads[0] + geom.pads[2] - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + geom.pads[1] + geom.pads[3] - dw * (kw - 1) - 1) / sw + 1;
    let kk = kh * kw * cig;
    let mut out = vec![0f32; batch * oh * ow * c_out];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..c_out {
                    let gi = oc / cog;
                    let tap = |t: usize| {
                        let (ky, kx, ci) = (t / (kw * cig), (t / cig) % kw, t % cig);
                        let iy = (oy * sh + ky * dh) as isize - geom.pads[0] as isize;
                        let ix = (ox * sw + kx * dw) as isize - geom.pads[1] as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            0.0
                        } else {
                            x[((b * h + iy as usize) * w + ix as usize) * c_in + gi * cig + ci]
                        }
                    };
                    let acc = dot_bf16(kk, tap, |t| wt[oc * kk + t]);
                    out[((b * oh + oy) * ow + ox) * c_out + oc] =
                        epilogue_bf16(acc, bias.map(|bb| bb[oc]), relu);
                }
            }
        }
    }
    (out, oh, ow)
}
