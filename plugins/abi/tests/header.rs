//! The committed C header must match the Rust definitions.

use std::path::PathBuf;

#[test]
fn c_header_is_up_to_date() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("generate the C header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("utf-8 header");
    let path = crate_dir.join("include/kiln_backend.h");
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/kiln_backend.h is stale: run `KILN_BLESS=1 cargo test -p kiln-plugin-abi --test header`"
    );
}

#[test]
fn header_declares_the_entry_points_and_tables() {
    let header = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/kiln_backend.h"),
    )
    .expect("header exists");
    for name in [
        "KilnBackendRegistration",
        "KilnDeviceVtable",
        "KilnOp",
        "KilnTensor",
        "KilnWeightDesc",
        "KILN_ABI_VERSION",
        "OP_ATTENTION",
    ] {
        assert!(header.contains(name), "header lacks {name}");
    }
}
