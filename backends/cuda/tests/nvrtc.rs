//! The kernels compile with NVRTC (no GPU needed; skipped when NVRTC is absent).

#[test]
fn kernels_compile_for_hopper_and_ampere() {
    if !kiln_backend_cuda::kernels::nvrtc_available() {
        eprintln!("skipping: NVRTC (libnvrtc) is not installed on this machine");
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let ptx =
            kiln_backend_cuda::kernels::compile_ptx(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for name in [
            "rms_norm_bf16",
            "gemv_q4_1_bf16",
            "attention_decode_f16",
            "sample_rows",
            "embedding_f32",
            "moe_route_bf16",
            "moe_gate_up_f16",
            "moe_down_f32",
            "moe_combine_bf16",
        ] {
            assert!(
                ptx.contains(name),
                "{arch}: kernel {name} missing from the PTX"
            );
        }
    }
}
