//! Names given to models after the fact (Ollama's `/api/copy`): a table at
//! `<cache>/names.json` from each name to what it names, a cached model's
//! name or a path. A name never shadows a cached model's own name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, PART_SUFFIX};
use crate::error::HubError;

/// File of the table, in the cache root.
pub const NAMES_FILE: &str = "names.json";

/// Longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The table of given names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Name → a cached model's name or a path.
    names: BTreeMap<String, String>,
}

/// Why `name` cannot be given, if it cannot: it must be non-empty, at most
/// [`MAX_NAME_BYTES`], without whitespace or control characters, and not
/// look like a path.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("the name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{name}` contains whitespace or control characters"
        ));
    }
    if name.starts_with(['/', '.', '~']) || name.contains('\\') || name.contains("..") {
        return Err(format!("`{name}` looks like a path; choose a plain name"));
    }
    Ok(())
}

impl Names {
    fn path(cache: &Cache) -> PathBuf {
        cache.root().join(NAMES_FILE)
    }

    /// The table of `cache` (empty when there is none yet).
    pub fn load(cache: &Cache) -> Result<Names, HubError> {
        let path = Names::path(cache);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| HubError::io(&path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Names::default()),
            Err(e) => Err(HubError::io(&path, e)),
        }
    }

    /// Writes the table into `cache` atomically.
    pub fn save(&self, cache: &Cache) -> Result<(), HubError> {
        let path = Names::path(cache);
        std::fs::create_dir_all(cache.root()).map_err(|e| HubError::io(cache.root(), e))?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| HubError::io(&path, std::io::Error::other(e)))?;
        let tmp = cache.root().join(format!("{NAMES_FILE}{PART_SUFFIX}"));
        std::fs::write(&tmp, text).map_err(|e| HubError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
    }

    /// What `name` names.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.names.get(name).map(String::as_str)
    }

    /// Gives `name` to `target`, replacing what it named before.
    pub fn insert(&mut self, name: &str, target: &str) {
        self.names.insert(name.to_string(), target.to_string());
    }

    /// Takes `name` away; returns what it named.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.names.remove(name)
    }

    /// Every `(name, target)`, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        assert!(check_name("my-model:latest").is_ok());
        assert!(check_name("org/name").is_ok());
        for bad in ["", "a b", "/abs", "../x", "./x", "~/x", "a\\b", "a\u{7}"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn the_table_round_trips_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        assert_eq!(Names::load(&cache).unwrap(), Names::default());
        let mut names = Names::default();
        names.insert("mine", "smollm2-135m-instruct");
        names.save(&cache).unwrap();
        let loaded = Names::load(&cache).unwrap();
        assert_eq!(loaded.get("mine"), Some("smollm2-135m-instruct"));
        let mut loaded = loaded;
        assert_eq!(
            loaded.remove("mine").as_deref(),
            Some("smollm2-135m-instruct")
        );
        assert_eq!(loaded.iter().count(), 0);
    }
}
