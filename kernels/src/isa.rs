//! Instruction-set detection and the `Kernel` handle. Owns the run-time ISA choice; must not hold
//! any kernel code.
//!
//! The CPU is probed once (cached in a `OnceLock`). `OCTET_ISA=scalar|avx2|avx512|avx512vnni` caps
//! the choice (to emulate a pre-VNNI Xeon or to test a lower path); an unknown value, or a value
//! above what the CPU has, is an error returned by [`Isa::active`] / [`Kernel::new`], never a panic.
//! Nothing is fixed at compile time: the crate is built without `target-cpu=native` and each SIMD
//! entry point is a `#[target_feature]` function reached only through a [`Kernel`].

use crate::error::KernelError;
use std::sync::OnceLock;

/// An instruction-set level, ordered from least to most capable.
///
/// | level | requires | int8 GEMM semantics |
/// |---|---|---|
/// | `Scalar` | nothing | exact |
/// | `Avx2` | AVX2 + FMA | `vpmaddubsw` 16-bit saturation (see `gemm_u8s8` docs) |
/// | `Avx512` | AVX512F/BW/VL + FMA | same saturation as `Avx2` (zmm `vpmaddubsw`) |
/// | `Avx512Vnni` | `Avx512` + AVX512-VNNI | exact (`vpdpbusd`) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// AVX2 + FMA (Haswell and later, Zen 1 and later).
    Avx2,
    /// AVX-512 F/BW/VL without VNNI (Skylake-SP).
    Avx512,
    /// AVX-512 with VNNI `vpdpbusd` (Cascade Lake, Ice Lake, Zen 4).
    Avx512Vnni,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The lower-case name used by `OCTET_ISA` and in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a name as accepted by `OCTET_ISA` (case-insensitive, surrounding spaces ignored).
    pub fn parse(s: &str) -> Result<Isa, KernelError> {
        let t = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == t)
            .ok_or_else(|| KernelError::BadIsaEnv(s.to_string()))
    }

    /// The best level this CPU supports, probed once.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Whether the CPU itself supports this level (ignores `OCTET_ISA`).
    pub fn cpu_supports(self) -> bool {
        self <= Isa::detected()
    }

    /// Pure form of the cap rule: `cap` (the `OCTET_ISA` value, if any) applied to `cpu`.
    pub fn apply_cap(cap: Option<&str>, cpu: Isa) -> Result<Isa, KernelError> {
        match cap {
            None => Ok(cpu),
            Some(s) if s.trim().is_empty() => Ok(cpu),
            Some(s) => {
                let want = Isa::parse(s)?;
                if want > cpu {
                    Err(KernelError::UnsupportedIsa {
                        requested: want.name(),
                        available: cpu.name(),
                    })
                } else {
                    Ok(want)
                }
            }
        }
    }

    /// The level kernels use by default: the CPU's best, capped by `OCTET_ISA` (read once).
    pub fn active() -> Result<Isa, KernelError> {
        static ACTIVE: OnceLock<Result<Isa, KernelError>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| {
                let env = std::env::var("OCTET_ISA").ok();
                Isa::apply_cap(env.as_deref(), Isa::detected())
            })
            .clone()
    }

    /// Every level that may be used here (CPU support and `OCTET_ISA` cap), lowest first.
    pub fn supported() -> Result<Vec<Isa>, KernelError> {
        let top = Isa::active()?;
        Ok(Isa::ALL.into_iter().filter(|i| *i <= top).collect())
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn detect() -> Isa {
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let avx512 = avx2
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let vnni = avx512 && std::arch::is_x86_feature_detected!("avx512vnni");
    if vnni {
        Isa::Avx512Vnni
    } else if avx512 {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn detect() -> Isa {
    Isa::Scalar
}

/// Whether the CPU has AVX512-BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`), probed once. Orthogonal to
/// the [`Isa`] levels; [`Kernel::has_bf16_dot`] combines it with the level.
fn cpu_has_avx512bf16() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        {
            std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
        {
            false
        }
    })
}

/// A handle proving that its ISA may run here. Every kernel entry point takes one; it can only be
/// made by [`Kernel::new`] / [`Kernel::best`], which check CPU support and the `OCTET_ISA` cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    isa: Isa,
}

impl Kernel {
    /// A kernel for `isa`, or an error if the CPU or the `OCTET_ISA` cap does not allow it.
    pub fn new(isa: Isa) -> Result<Kernel, KernelError> {
        let top = Isa::active()?;
        if isa > top {
            return Err(KernelError::UnsupportedIsa {
                requested: isa.name(),
                available: top.name(),
            });
        }
        // Belt and braces: the cap can only lower the level, but re-check the CPU.
        if !isa.cpu_supports() {
            return Err(KernelError::UnsupportedIsa {
                requested: isa.name(),
                available: Isa::detected().name(),
            });
        }
        Ok(Kernel { isa })
    }

    /// The kernel for [`Isa::active`].
    pub fn best() -> Result<Kernel, KernelError> {
        Kernel::new(Isa::active()?)
    }

    /// The ISA this handle runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Whether the bf16 kernels run the AVX512-BF16 instructions (`vdpbf16ps`) with this handle:
    /// the CPU has AVX512-BF16 and this handle's level is at least [`Isa::Avx512`] (so
    /// `OCTET_ISA=avx2` or `scalar` turns it off). Otherwise the bf16 kernels emulate the
    /// instruction (AVX2 or scalar) and give the same bits.
    pub fn has_bf16_dot(&self) -> bool {
        self.isa >= Isa::Avx512 && cpu_has_avx512bf16()
    }

    /// The scalar kernel: always available.
    pub fn scalar() -> Kernel {
        Kernel { isa: Isa::Scalar }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_rules() {
        assert_eq!(Isa::apply_cap(None, Isa::Avx2).unwrap(), Isa::Avx2);
        assert_eq!(
            Isa::apply_cap(Some("scalar"), Isa::Avx2).unwrap(),
            Isa::Scalar
        );
        assert_eq!(
            Isa::apply_cap(Some(" AVX2 "), Isa::Avx512Vnni).unwrap(),
            Isa::Avx2
        );
        assert!(matches!(
            Isa::apply_cap(Some("avx512vnni"), Isa::Avx2),
            Err(KernelError::UnsupportedIsa { .. })
        ));
        let e = Isa::apply_cap(Some("sse9"), Isa::Avx2).unwrap_err();
        assert!(matches!(e, KernelError::BadIsaEnv(_)));
        assert!(e.to_string().contains("sse9"));
    }

    #[test]
    fn handle_proves_support() {
        for isa in Isa::ALL {
            let ok = Kernel::new(isa).is_ok();
            let allowed = Isa::active().map(|t| isa <= t).unwrap_or(false);
            assert_eq!(ok, allowed, "{isa}");
        }
        assert_eq!(Kernel::scalar().isa(), Isa::Scalar);
        assert!(!Kernel::scalar().has_bf16_dot());
        if let Ok(k) = Kernel::new(Isa::Avx2) {
            assert!(!k.has_bf16_dot());
        }
        for isa in [Isa::Avx512, Isa::Avx512Vnni] {
            if let Ok(k) = Kernel::new(isa) {
                assert_eq!(k.has_bf16_dot(), cpu_has_avx512bf16());
            }
        }
    }
}
