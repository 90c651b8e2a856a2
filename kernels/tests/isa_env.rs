//! `OCTET_ISA` handling, checked in child processes (the cap is read once per process).
use octet_kernels::{Isa, Kernel, KernelError};
use std::process::Command;

/// Runs this test binary's `child` test with `OCTET_ISA=value` and `OCTET_ISA_EXPECT=expect`.
fn run_child(value: &str, expect: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("OCTET_ISA", value)
        .env("OCTET_ISA_EXPECT", expect)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child with OCTET_ISA={value} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child test did not run"
    );
}

#[test]
fn env_cap_in_child_processes() {
    run_child("sse9", "bad-env");
    run_child("scalar", "scalar");
    if Isa::detected() >= Isa::Avx2 {
        run_child("avx2", "avx2");
    }
    if Isa::detected() < Isa::Avx512Vnni {
        run_child("avx512vnni", "unsupported");
    } else {
        run_child("AVX512VNNI", "avx512vnni");
    }
}

/// The child side: does nothing unless spawned by `env_cap_in_child_processes`.
#[test]
fn child() {
    let Ok(expect) = std::env::var("OCTET_ISA_EXPECT") else {
        return;
    };
    match expect.as_str() {
        "bad-env" => {
            let e = Isa::active().unwrap_err();
            assert!(matches!(e, KernelError::BadIsaEnv(_)), "{e}");
            assert!(Kernel::best().is_err());
            assert!(
                Kernel::new(Isa::Scalar).is_err(),
                "a bad OCTET_ISA is an error, not ignored"
            );
        }
        "unsupported" => {
            assert!(matches!(
                Isa::active(),
                Err(KernelError::UnsupportedIsa { .. })
            ));
        }
        name => {
            let want = Isa::parse(name).unwrap();
            assert_eq!(Isa::active().unwrap(), want);
            let sup = Isa::supported().unwrap();
            assert_eq!(*sup.last().unwrap(), want);
            assert!(Kernel::new(want).is_ok());
            // bf16 dot products need the Avx512 level: a lower cap turns them off (emulated).
            if want < Isa::Avx512 {
                assert!(!Kernel::best().unwrap().has_bf16_dot());
            }
            for isa in Isa::ALL.into_iter().filter(|i| *i > want) {
                let e = Kernel::new(isa).unwrap_err();
                assert!(e.to_string().contains(isa.name()), "{e}");
            }
        }
    }
}
