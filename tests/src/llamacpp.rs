//! llama.cpp's sources as vendored in the llama-cpp-python sdist: its
//! tokenizer test vectors (`models/ggml-vocab-*.gguf` with `.inp`/`.out`)
//! and real chat templates (`models/templates/*.jinja`).

use std::path::{Path, PathBuf};

/// The llama-cpp-python release whose vendored llama.cpp the tests read.
pub const LLAMACPP_PYTHON_VERSION: &str = "0.3.36";

/// The script that downloads and unpacks the sources.
pub const FETCH_SCRIPT: &str = "scripts/fetch_llamacpp_sources.sh";

/// llama.cpp's source tree: `KILN_LLAMACPP_SRC`, else where
/// scripts/fetch_llamacpp_sources.sh unpacks it
/// (`target/peers/llama.cpp-VERSION/src/vendor/llama.cpp`). In CI a missing
/// tree fails the test; elsewhere the caller skips with a message.
pub fn llamacpp_sources() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_LLAMACPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target/peers")
                .join(format!("llama.cpp-{LLAMACPP_PYTHON_VERSION}"))
                .join("src/vendor/llama.cpp")
        });
    if dir.join("models").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "llama.cpp's sources are not at {} in CI (scripts/test.sh runs {FETCH_SCRIPT} and sets KILN_LLAMACPP_SRC)",
        dir.display()
    );
    eprintln!(
        "skipping: llama.cpp's sources are not at {} (run `bash {FETCH_SCRIPT}` or set KILN_LLAMACPP_SRC)",
        dir.display()
    );
    None
}

/// One tokenizer test vector: the text and the ids llama.cpp expects.
#[derive(Debug, Clone)]
pub struct VocabCase {
    /// The text, exactly as in the `.inp` file.
    pub text: String,
    /// The expected ids (no BOS: llama.cpp's test encodes without special tokens).
    pub ids: Vec<u32>,
}

/// The cases of `VOCAB.gguf.inp`/`.out`, read as llama.cpp's
/// tests/test-tokenizer-0.cpp reads them: inputs separated by
/// `\n__ggml_vocab_test__\n`, one line of space-separated ids per input.
pub fn vocab_cases(gguf: &Path) -> Vec<VocabCase> {
    let read = |ext: &str| {
        let path = PathBuf::from(format!("{}.{ext}", gguf.display()));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let inp = read("inp");
    let out = read("out");
    let separator = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(separator) {
            Some(at) => {
                texts.push(rest[..at].to_string());
                rest = &rest[at + separator.len()..];
            }
            None => {
                texts.push(rest.to_string());
                rest = "";
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{}: .inp and .out hold different numbers of cases",
        gguf.display()
    );
    texts
        .into_iter()
        .zip(lines)
        .map(|(text, line)| VocabCase {
            text,
            ids: line
                .split_whitespace()
                .map(|t| t.parse().unwrap_or_else(|e| panic!("{t}: {e}")))
                .collect(),
        })
        .collect()
}
