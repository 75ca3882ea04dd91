//! The committed C header matches the Rust definitions, and compiles as C
//! and as C++ with every warning an error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("include/kiln_backend.h")
}

/// What cbindgen leaves in Rust spelling: Rustdoc's link syntax and paths
/// ("[`crate::ops::OP_ADD`]" becomes "`KILN_OP_ADD`", as the constant is
/// called in C) and associated constants, which `[export.rename]` misses.
fn c_spelling(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    let mut rest = header;
    while let Some(start) = rest.find("[`") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(close) = after[1..].find("`]") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[1..close + 1];
        out.push('`');
        out.push_str(name);
        out.push('`');
        rest = &after[close + 3..];
        if rest.starts_with('(')
            && let Some(end) = rest.find(')')
        {
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    let mut text = out
        .replace("`crate::ops::", "`")
        .replace("`crate::", "`")
        .replace("`Self::", "`");
    for prefix in ["OP_", "ACT_", "ROPE_", "MOE_"] {
        text = text.replace(&format!("`{prefix}"), &format!("`KILN_{prefix}"));
    }
    text.replace("KilnSampleParams_SIZE", "KILN_SAMPLE_PARAMS_SIZE")
        .replace("KilnLogitAdjust_SIZE", "KILN_LOGIT_ADJUST_SIZE")
}

fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("generate the C header")
        .write(&mut generated);
    c_spelling(&String::from_utf8(generated).expect("utf-8 header"))
}

#[test]
fn c_header_is_up_to_date() {
    let generated = generate();
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(header_path(), &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(header_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "include/kiln_backend.h is stale: run `KILN_BLESS=1 cargo test -p kiln-plugin-abi --test header`"
    );
}

#[test]
fn header_declares_the_entry_points_and_tables_with_prefixed_names() {
    let header = std::fs::read_to_string(header_path()).expect("header exists");
    for name in [
        "KilnBackendRegistration",
        "KilnDeviceVtable",
        "KilnOp",
        "KilnTensor",
        "KilnWeightDesc",
        "KilnLogitAdjust",
        "KILN_ABI_VERSION",
        "#define KILN_OP_ATTENTION 9",
        "#define KILN_ROPE_NEOX 0",
        "#define KILN_ACT_GELU_TANH 1",
        "uint32_t kiln_plugin_abi_version(void);",
        "int32_t kiln_backend_score(void);",
        "const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *host);",
        "extern \"C\" {",
    ] {
        assert!(header.contains(name), "header lacks {name}");
    }
    for line in header.lines() {
        if let Some(name) = line.strip_prefix("#define ") {
            assert!(name.starts_with("KILN_"), "unprefixed macro: {line}");
        }
        assert!(!line.contains("[`"), "Rustdoc link syntax: {line}");
    }
}

fn compiles(compiler_env: &str, default: &str, language: &str) {
    let compiler = std::env::var(compiler_env).unwrap_or_else(|_| default.into());
    let dir = tempfile_dir();
    let source = dir.join(format!("use_header.{language}"));
    std::fs::write(
        &source,
        "#include \"kiln_backend.h\"\n\
         static KilnLogitAdjust adjust;\n\
         static KilnOp op;\n\
         int main(void) {\n\
           op.opcode = KILN_OP_ADD;\n\
           op.iparams[0] = KILN_ROPE_NEOX;\n\
           adjust.token = 1;\n\
           return (int)(sizeof(KilnDeviceVtable) + (size_t)adjust.token + op.opcode) == 0;\n\
         }\n",
    )
    .unwrap();
    let output = Command::new(&compiler)
        .args([
            "-x",
            language,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(crate_dir().join("include"))
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("this test needs {compiler} ({e}); set {compiler_env}"));
    assert!(
        output.status.success(),
        "{compiler} -x {language} rejects the header:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tempfile_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-header");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn header_compiles_as_c_with_warnings_as_errors() {
    compiles("CC", "cc", "c");
}

#[test]
fn header_compiles_as_cpp_with_warnings_as_errors() {
    compiles("CXX", "c++", "c++");
}
