//! How many types spell out the sampling parameters between an OpenAI
//! request body and the backend's sampling kernel. Each such type is a
//! conversion someone must keep in step with the others; types that carry
//! one of them whole (`GenerateRequest`, `SequenceGroup`, the sampler's
//! `Group`, the actor messages) add no field list and are not counted.
//!
//! The path has four: the wire form (`SamplingFields`, flattened into the
//! chat, completions and Responses bodies), the engine form
//! (`SamplingParams`), a row's next draw in device form (`RowSampling`), and
//! the C ABI form (`KilnSampleParams`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Field names that only sampling parameters use (not `top_k`, which
/// mixture-of-experts routing uses too).
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
];

/// The crates a chat request crosses, from the wire to the kernel.
const PATH_CRATES: &[&str] = &[
    "frontends/openai/src",
    "frontends/http/src",
    "core/engine-api/src",
    "core/protocol/src",
    "core/engine/src",
    "core/scheduler/src",
    "core/sampler/src",
    "plugins/abi/src",
    "backends/cpu/src",
    "kernels/cpu/src",
];

const MOST_TYPES: usize = 5;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The body of each `struct Name { ... }` in `source` outside test modules.
fn structs(source: &str) -> Vec<(String, String)> {
    let source = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("struct ") {
        rest = &rest[at + "struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let head_end = rest.find(['{', ';', '(']).unwrap_or(rest.len());
        if name.is_empty() || !rest[head_end..].starts_with('{') {
            continue;
        }
        let body = &rest[head_end + 1..];
        let mut depth = 1;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(body.len(), |(i, _)| i);
        out.push((name, body[..end].to_string()));
    }
    out
}

fn declares_sampling_field(body: &str) -> bool {
    body.lines().any(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        SAMPLING_FIELDS.iter().any(|f| {
            line.strip_prefix(f)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
    })
}

#[test]
fn sampling_parameters_cross_at_most_five_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = BTreeSet::new();
    for dir in PATH_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in files {
            let source = std::fs::read_to_string(&file).expect("a source file");
            for (name, body) in structs(&source) {
                if declares_sampling_field(&body) {
                    found.insert(format!("{name} ({})", file.display()));
                }
            }
        }
    }
    let names: BTreeSet<&str> = found
        .iter()
        .map(|f| f.split(' ').next().unwrap_or_default())
        .collect();
    let expected: BTreeSet<&str> = [
        "SamplingFields",
        "SamplingParams",
        "RowSampling",
        "KilnSampleParams",
    ]
    .into();
    assert_eq!(
        names, expected,
        "types declaring sampling fields: {found:#?}"
    );
    assert!(names.len() <= MOST_TYPES);
}

#[test]
fn the_finder_sees_a_field_list() {
    let source = "pub struct Knobs<'a> {\n    pub temperature: Option<f32>,\n    pub extra: &'a X,\n}\n\
                  struct Carrier { sampling: SamplingParams }\nstruct Unit;\n";
    let found: Vec<(String, bool)> = structs(source)
        .into_iter()
        .map(|(name, body)| (name, declares_sampling_field(&body)))
        .collect();
    assert_eq!(
        found,
        vec![("Knobs".to_string(), true), ("Carrier".to_string(), false)]
    );
}
