//! Kiln's GGUF tokenizers against llama.cpp's own test vectors: every
//! `models/ggml-vocab-*.gguf` of llama.cpp's sources (fetched by
//! scripts/fetch_llamacpp_sources.sh) is built as the engine builds a GGUF
//! model's tokenizer, and every input of its `.inp` file is encoded as
//! llama.cpp's tests/test-tokenizer-0.cpp does (no BOS/EOS) and compared
//! with the ids of its `.out` file; those ids must also decode to the text.

use std::path::{Path, PathBuf};

use kiln_models::weights::gguf::GgufFile;
use kiln_tests::llamacpp::{VocabCase, llamacpp_sources, vocab_cases};
use kiln_tokenizer::Tokenizer;

/// What Kiln does with a vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Every case matches; the number of cases, and whether encoding with
    /// special tokens starts with BOS (llama.cpp's `add_bos`).
    All { cases: usize, bos: bool },
    /// Every case's ids match and encoding with special tokens starts with
    /// BOS; decoding is not compared (a lossy normalizer: lowercase,
    /// accents stripped).
    Ids { cases: usize },
}

/// Every case of `cases` matches, and encoding with special tokens starts
/// with BOS exactly when `bos` (llama.cpp's `add_bos`).
const fn all(cases: usize, bos: bool) -> Expected {
    Expected::All { cases, bos }
}

/// Every vocabulary with test vectors in llama.cpp's sources. A vocabulary
/// added upstream fails the test until it is listed here.
const VOCABULARIES: &[(&str, Expected)] = &[
    // WordPiece lowercases and strips accents: ids only.
    ("bert-bge", Expected::Ids { cases: 46 }),
    ("command-r", all(46, true)),
    ("deepseek-coder", all(46, true)),
    ("deepseek-llm", all(46, true)),
    ("falcon", all(46, false)),
    ("gemma-4", all(46, true)),
    ("gpt-2", all(46, false)),
    ("llama-bpe", all(46, true)),
    ("llama-spm", all(46, true)),
    ("mpt", all(46, false)),
    ("phi-3", all(46, true)),
    ("qwen2", all(46, false)),
    ("qwen35", all(50, false)),
    ("refact", all(46, false)),
    ("starcoder", all(46, false)),
];

/// The tokenizer of a GGUF file, built as the engine builds a GGUF model's.
fn tokenizer(gguf: &Path) -> Result<Tokenizer, String> {
    let file = GgufFile::open(gguf).map_err(|e| e.to_string())?;
    let spec = file.tokenizer_metadata().map_err(|e| e.to_string())?;
    Tokenizer::from_gguf(spec).map_err(|e| e.to_string())
}

/// `(name, path)` of every `ggml-vocab-NAME.gguf` that has test vectors.
fn vocab_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(src.join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .filter(|p| PathBuf::from(format!("{}.inp", p.display())).exists())
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy();
            (name.trim_start_matches("ggml-vocab-").to_string(), p)
        })
        .collect();
    files.sort();
    files
}

/// A line per case whose ids differ from llama.cpp's, or (with
/// `round_trip`) whose expected ids do not decode to the text.
fn mismatches(tokenizer: &Tokenizer, cases: &[VocabCase], round_trip: bool) -> Vec<String> {
    cases
        .iter()
        .filter_map(|case| {
            let got = tokenizer.encode(&case.text, false).unwrap();
            let decoded = tokenizer.decode(&case.ids, false).unwrap();
            if got != case.ids {
                Some(format!("{:?}: got {got:?}, want {:?}", case.text, case.ids))
            } else if round_trip && decoded != case.text {
                Some(format!("{:?}: decodes to {decoded:?}", case.text))
            } else {
                None
            }
        })
        .collect()
}

/// Whether encoding with special tokens puts BOS first.
fn starts_with_bos(tokenizer: &Tokenizer) -> bool {
    let ids = tokenizer.encode("Hello", true).unwrap();
    tokenizer.bos_token_id().is_some() && ids.first().copied() == tokenizer.bos_token_id()
}

#[test]
fn gguf_vocabularies_match_llamacpp_test_vectors() {
    let Some(src) = llamacpp_sources() else {
        return;
    };
    let files = vocab_files(&src);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let listed: Vec<&str> = VOCABULARIES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, listed, "the vocabularies with test vectors changed");
    let mut failures = Vec::new();
    for ((name, path), (_, expected)) in files.iter().zip(VOCABULARIES) {
        let cases = vocab_cases(path);
        match (tokenizer(path), expected) {
            (Ok(t), Expected::All { cases: count, bos }) => {
                let bad = mismatches(&t, &cases, true);
                println!(
                    "{name}: {}/{} cases match",
                    cases.len() - bad.len(),
                    cases.len()
                );
                if cases.len() != *count {
                    failures.push(format!("{name}: {} cases, expected {count}", cases.len()));
                }
                if starts_with_bos(&t) != *bos {
                    failures.push(format!("{name}: BOS added: {}, expected {bos}", !bos));
                }
                failures.extend(bad.into_iter().map(|b| format!("{name}: {b}")));
            }
            (Ok(t), Expected::Ids { cases: count }) => {
                let bad = mismatches(&t, &cases, false);
                println!(
                    "{name}: {}/{} cases match (ids)",
                    cases.len() - bad.len(),
                    cases.len()
                );
                if cases.len() != *count {
                    failures.push(format!("{name}: {} cases, expected {count}", cases.len()));
                }
                if !starts_with_bos(&t) {
                    failures.push(format!("{name}: no CLS/BOS first"));
                }
                failures.extend(bad.into_iter().map(|b| format!("{name}: {b}")));
            }
            (Err(e), _) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
