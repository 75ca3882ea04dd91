//! # kiln-plugin-host
//!
//! Finds, checks and loads backend plugins. This is the only crate in Kiln
//! that calls `libloading`. Loading a library goes: file exists → it is a
//! loadable library → it exports `kiln_plugin_abi_version` → the version is
//! compatible (same major, minor at least the oldest this host reads) → `kiln_backend_score` is not
//! 0 on this machine → `kiln_backend_init` succeeds. Each failure is a
//! [`LoadError`] naming the file and what is wrong. Loaded libraries are never
//! unloaded. Statically linked plugins register through the same tables.
//!
//! Depends on `kiln-plugin-abi` only; never on the engine or any backend.
//!
//! ```no_run
//! use kiln_plugin_host::BackendRegistry;
//! let mut registry = BackendRegistry::new();
//! let paths = BackendRegistry::default_search_paths(None);
//! let cpu = registry.load_best("cpu", &paths).expect("a CPU backend");
//! println!("{} from {}", cpu.backend.name(), cpu.source);
//! ```

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};

use kiln_plugin_abi::safe::Backend;
use kiln_plugin_abi::tables::REGISTRATION_REQUIRED_SIZE;
use kiln_plugin_abi::{
    KILN_ABI_MAJOR, KILN_ABI_OLDEST_SUPPORTED, KILN_ABI_VERSION, KilnAbiVersionFn,
    KilnBackendRegistration, KilnHostApi, KilnInitFn, KilnLastErrorFn, KilnScoreFn,
    SYMBOL_ABI_VERSION, SYMBOL_INIT, SYMBOL_LAST_ERROR, SYMBOL_SCORE, abi_compatible,
    version_string,
};

/// Environment variable naming extra directories (or files) to search for backends.
pub const BACKEND_PATH_ENV: &str = "KILN_BACKEND_PATH";

/// Why a backend could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No such file.
    #[error("backend library {path} does not exist")]
    MissingFile {
        /// The path tried.
        path: PathBuf,
    },
    /// The file is not a loadable library (or a dependency is missing).
    #[error("cannot load backend library {path}: {reason}")]
    NotALibrary {
        /// The path tried.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A required symbol is absent: not a Kiln backend.
    #[error("{path} is not a Kiln backend: it does not export `{symbol}`")]
    MissingSymbol {
        /// The path tried.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// Built against an incompatible ABI.
    #[error(
        "{path} was built for backend ABI {plugin}, but this Kiln implements ABI {host} and loads plugins of ABI {oldest} up to any {host_major}.x; rebuild the plugin against kiln-plugin-abi {host}"
    )]
    AbiMismatch {
        /// The path tried.
        path: PathBuf,
        /// The plugin's version, `major.minor`.
        plugin: String,
        /// The host's version.
        host: String,
        /// The oldest version the host loads.
        oldest: String,
        /// The host's major version.
        host_major: u32,
    },
    /// Score 0: the plugin says it cannot run on this machine.
    #[error("{path} cannot run on this machine (score 0): {detail}")]
    CannotRunHere {
        /// The path tried.
        path: PathBuf,
        /// What the plugin reported, if anything.
        detail: String,
    },
    /// `kiln_backend_init` failed.
    #[error("{path} failed to initialise: {message}")]
    InitFailed {
        /// The path tried.
        path: PathBuf,
        /// The plugin's message.
        message: String,
    },
    /// `load_best` found no candidate file.
    #[error(
        "no `{name}` backend found; looked for {file} in: {searched}. Build it with `cargo build --release -p kiln-backend-{name}` or pass --backend-path"
    )]
    NotFound {
        /// Backend name.
        name: String,
        /// The file name looked for.
        file: String,
        /// Directories searched.
        searched: String,
    },
    /// Every candidate failed; the errors of each.
    #[error("no usable `{name}` backend: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed {
        /// Backend name.
        name: String,
        /// One error per candidate.
        errors: Vec<LoadError>,
    },
}

/// Where a backend came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSource {
    /// Linked into the binary.
    Static,
    /// Loaded from a library file.
    Library(PathBuf),
}

impl std::fmt::Display for BackendSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendSource::Static => f.write_str("(linked in)"),
            BackendSource::Library(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A backend ready to open devices.
#[derive(Debug, Clone)]
pub struct LoadedBackend {
    /// The safe wrapper over its registration.
    pub backend: Backend,
    /// Where it came from.
    pub source: BackendSource,
    /// Its score on this machine.
    pub score: i32,
    /// Its ABI version (`major << 16 | minor`).
    pub abi_version: u32,
}

unsafe extern "C" fn host_log(level: i32, target: *const c_char, msg: *const c_char) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: the plugin passes NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (target, msg) = (text(target), text(msg));
    match level {
        1 => tracing::error!(plugin = %target, "{msg}"),
        2 => tracing::warn!(plugin = %target, "{msg}"),
        3 => tracing::info!(plugin = %target, "{msg}"),
        4 => tracing::debug!(plugin = %target, "{msg}"),
        _ => tracing::trace!(plugin = %target, "{msg}"),
    }
}

/// The host table handed to every plugin.
pub static HOST_API: KilnHostApi = KilnHostApi {
    struct_size: std::mem::size_of::<KilnHostApi>() as u32,
    abi_version: KILN_ABI_VERSION,
    log: Some(host_log),
};

/// The backends this process has loaded.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    loaded: Vec<LoadedBackend>,
}

/// A statically linked plugin's registration function (`kiln_static_registration`).
pub type StaticInit = fn(&'static KilnHostApi) -> *const KilnBackendRegistration;

impl BackendRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        BackendRegistry::default()
    }

    /// Backends loaded so far.
    pub fn loaded(&self) -> &[LoadedBackend] {
        &self.loaded
    }

    /// Register a statically linked plugin.
    pub fn register_static(
        &mut self,
        name: &str,
        init: StaticInit,
    ) -> Result<LoadedBackend, LoadError> {
        let path = PathBuf::from(format!("<static {name}>"));
        let reg = init(&HOST_API);
        // SAFETY: a static registration lives for the whole process.
        let backend = unsafe { Backend::from_registration(reg) }.ok_or(LoadError::InitFailed {
            path,
            message: "the static plugin returned no registration".into(),
        })?;
        let loaded = LoadedBackend {
            backend,
            source: BackendSource::Static,
            score: 1,
            abi_version: backend.registration().abi_version,
        };
        self.loaded.push(loaded.clone());
        Ok(loaded)
    }

    /// Load one library file.
    pub fn load(&mut self, path: &Path) -> Result<LoadedBackend, LoadError> {
        let loaded = load_library(path)?;
        self.loaded.push(loaded.clone());
        Ok(loaded)
    }

    /// Find every `kiln_backend_<name>*` library in `search_paths` (directories
    /// or files), and load the highest-scoring one that works.
    pub fn load_best(
        &mut self,
        name: &str,
        search_paths: &[PathBuf],
    ) -> Result<LoadedBackend, LoadError> {
        let candidates = find_candidates(name, search_paths);
        if candidates.is_empty() {
            return Err(LoadError::NotFound {
                name: name.to_string(),
                file: libloading::library_filename(format!("kiln_backend_{name}"))
                    .to_string_lossy()
                    .into_owned(),
                searched: search_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut errors = Vec::new();
        let mut scored: Vec<(i32, PathBuf)> = Vec::new();
        for path in candidates {
            match probe_score(&path) {
                Ok(score) => scored.push((score, path)),
                Err(e) => errors.push(e),
            }
        }
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        for (_, path) in scored {
            match self.load(&path) {
                Ok(l) => return Ok(l),
                Err(e) => errors.push(e),
            }
        }
        Err(LoadError::AllFailed {
            name: name.to_string(),
            errors,
        })
    }

    /// The usual search path: `--backend-path` (if given), `KILN_BACKEND_PATH`
    /// (colon-separated), the executable's directory and its `../lib/kiln`.
    pub fn default_search_paths(cli: Option<&Path>) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(p) = cli {
            paths.push(p.to_path_buf());
        }
        if let Some(env) = std::env::var_os(BACKEND_PATH_ENV) {
            paths.extend(std::env::split_paths(&env));
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            paths.push(dir.to_path_buf());
            // `cargo test` binaries live in target/<profile>/deps.
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(parent) = dir.parent()
            {
                paths.push(parent.to_path_buf());
            }
            paths.push(dir.join("../lib/kiln"));
        }
        paths
    }
}

fn find_candidates(name: &str, search_paths: &[PathBuf]) -> Vec<PathBuf> {
    let file = libloading::library_filename(format!("kiln_backend_{name}"));
    let file = file.to_string_lossy().into_owned();
    let (stem, ext) = file.rsplit_once('.').unwrap_or((&file, ""));
    let mut out = Vec::new();
    for p in search_paths {
        if p.is_file() {
            out.push(p.clone());
            continue;
        }
        let Ok(entries) = std::fs::read_dir(p) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|path| {
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n == file
                        || (n.starts_with(&format!("{stem}-")) && n.ends_with(&format!(".{ext}")))
                })
            })
            .collect();
        found.sort();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn open_library(path: &Path) -> Result<&'static libloading::Library, LoadError> {
    if !path.exists() {
        return Err(LoadError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: loading runs the library's initialisers; we only load files the
    // user or our search path points at, as any plugin system must.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::NotALibrary {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Never unloaded: threads started by the plugin may outlive any handle.
    Ok(Box::leak(Box::new(lib)))
}

fn symbol<T: Copy>(
    lib: &'static libloading::Library,
    path: &Path,
    name: &'static str,
) -> Result<T, LoadError> {
    // SAFETY: the symbol's type is fixed by the ABI for this name.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| LoadError::MissingSymbol {
            path: path.to_path_buf(),
            symbol: name,
        })
}

fn check_version(lib: &'static libloading::Library, path: &Path) -> Result<u32, LoadError> {
    let version_fn: KilnAbiVersionFn = symbol(lib, path, SYMBOL_ABI_VERSION)?;
    // SAFETY: ABI-defined signature.
    let version = unsafe { version_fn() };
    if !abi_compatible(version, KILN_ABI_OLDEST_SUPPORTED) {
        return Err(LoadError::AbiMismatch {
            path: path.to_path_buf(),
            plugin: version_string(version),
            host: version_string(KILN_ABI_VERSION),
            oldest: version_string(KILN_ABI_OLDEST_SUPPORTED),
            host_major: KILN_ABI_MAJOR,
        });
    }
    Ok(version)
}

fn probe_score(path: &Path) -> Result<i32, LoadError> {
    let lib = open_library(path)?;
    check_version(lib, path)?;
    let score_fn: KilnScoreFn = symbol(lib, path, SYMBOL_SCORE)?;
    // SAFETY: ABI-defined signature; called only after the version check.
    Ok(unsafe { score_fn() })
}

fn load_library(path: &Path) -> Result<LoadedBackend, LoadError> {
    let lib = open_library(path)?;
    let abi_version = check_version(lib, path)?;
    let score_fn: KilnScoreFn = symbol(lib, path, SYMBOL_SCORE)?;
    let init_fn: KilnInitFn = symbol(lib, path, SYMBOL_INIT)?;
    // SAFETY: ABI-defined signature; called only after the version check.
    let score = unsafe { score_fn() };
    if score <= 0 {
        return Err(LoadError::CannotRunHere {
            path: path.to_path_buf(),
            detail: unavailable_reason(lib, path),
        });
    }
    // SAFETY: ABI-defined signature; HOST_API is static.
    let reg = unsafe { init_fn(&HOST_API) };
    // SAFETY: a non-null registration starts with its `struct_size`.
    if let Some(size) =
        (!reg.is_null()).then(|| unsafe { std::ptr::addr_of!((*reg).struct_size).read() })
        && (size as usize) < REGISTRATION_REQUIRED_SIZE
    {
        return Err(LoadError::InitFailed {
            path: path.to_path_buf(),
            message: format!(
                "its registration is {size} bytes, shorter than the {REGISTRATION_REQUIRED_SIZE} bytes of the entries every ABI {KILN_ABI_MAJOR}.x registration has"
            ),
        });
    }
    // SAFETY: a non-null registration is static in the (never unloaded) library.
    let backend =
        unsafe { Backend::from_registration(reg) }.ok_or_else(|| LoadError::InitFailed {
            path: path.to_path_buf(),
            message: last_error_of(lib, path),
        })?;
    tracing::debug!(path = %path.display(), name = %backend.name(), score, "loaded backend");
    Ok(LoadedBackend {
        backend,
        source: BackendSource::Library(path.to_path_buf()),
        score,
        abi_version,
    })
}

/// What a plugin said about scoring 0 (through `kiln_backend_last_error`).
fn unavailable_reason(lib: &'static libloading::Library, path: &Path) -> String {
    plugin_last_error(lib, path)
        .unwrap_or_else(|| "the plugin needs hardware or drivers this machine lacks".into())
}

fn last_error_of(lib: &'static libloading::Library, path: &Path) -> String {
    plugin_last_error(lib, path).unwrap_or_else(|| {
        "kiln_backend_init returned no registration (see the plugin's log messages above)".into()
    })
}

fn plugin_last_error(lib: &'static libloading::Library, path: &Path) -> Option<String> {
    let f = symbol::<KilnLastErrorFn>(lib, path, SYMBOL_LAST_ERROR).ok()?;
    // SAFETY: ABI-defined signature; returns null or a NUL-terminated string.
    let ptr = unsafe { f() };
    // SAFETY: non-null pointers are NUL-terminated strings owned by the plugin.
    (!ptr.is_null()).then(|| {
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}
