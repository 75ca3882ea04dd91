//! Kernel sources (embedded from `kernels/cuda`), compiled at first use by
//! NVRTC for the device's architecture and cached on disk by content hash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use kiln_plugin_abi::plugin::{HostLogger, PluginError, PluginResult};
use sha2::{Digest, Sha256};

/// Every kernel source, in compilation order (one NVRTC program).
pub const SOURCES: [(&str, &str); 6] = [
    (
        "common.cuh",
        include_str!("../../../kernels/cuda/common.cuh"),
    ),
    (
        "elementwise.cu",
        include_str!("../../../kernels/cuda/elementwise.cu"),
    ),
    ("gemv.cu", include_str!("../../../kernels/cuda/gemv.cu")),
    (
        "attention.cu",
        include_str!("../../../kernels/cuda/attention.cu"),
    ),
    ("sample.cu", include_str!("../../../kernels/cuda/sample.cu")),
    ("moe.cu", include_str!("../../../kernels/cuda/moe.cu")),
];

/// The concatenated program.
pub fn program_source() -> String {
    let mut src = String::new();
    for (name, text) in SOURCES {
        src.push_str(&format!("// ---- {name}\n"));
        src.push_str(text);
        src.push('\n');
    }
    src
}

/// Where compiled PTX is cached: `$KILN_CACHE/cuda`, else `$XDG_CACHE_HOME/kiln/cuda`, else `~/.cache/kiln/cuda`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KILN_CACHE") {
        return Some(PathBuf::from(dir).join("cuda"));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("kiln/cuda"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln/cuda"))
}

/// Compile the kernel program to PTX for `arch` (e.g. `sm_90`). Needs only
/// NVRTC, not a GPU.
pub fn compile_ptx(arch: &'static str) -> Result<String, String> {
    cudarc::nvrtc::compile_ptx_with_opts(
        program_source(),
        CompileOptions {
            arch: Some(arch),
            options: vec!["--std=c++17".into()],
            ..Default::default()
        },
    )
    .map(|p| p.to_src())
    .map_err(|e| format!("{e:?}"))
}

/// Whether NVRTC can be loaded on this machine (cudarc panics when it cannot).
pub fn nvrtc_available() -> bool {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // SAFETY: only probes whether the library loads.
    let ok = std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
        .unwrap_or(false);
    std::panic::set_hook(previous);
    ok
}

/// Compiled kernels of one device.
pub struct Kernels {
    module: Arc<CudaModule>,
    functions: HashMap<String, CudaFunction>,
}

impl Kernels {
    /// Compile (or load from the cache) and load the module on `ctx`.
    pub fn load(ctx: &Arc<CudaContext>, log: &HostLogger) -> PluginResult<Kernels> {
        let (major, minor) = ctx.compute_capability().map_err(|e| {
            PluginError::internal(format!("cannot read the compute capability: {e}"))
        })?;
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        let source = program_source();
        let key = {
            let mut h = Sha256::new();
            h.update(source.as_bytes());
            h.update(arch.as_bytes());
            h.update(b"kiln-cuda-v1");
            let digest = h.finalize();
            digest
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let cached = cache_dir().map(|d| d.join(format!("{key}-{arch}.ptx")));
        let ptx_text = match cached
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            Some(text) => {
                log.info(
                    "kiln::cuda",
                    &format!("using cached CUDA kernels for {arch}"),
                );
                text
            }
            None => {
                log.info(
                    "kiln::cuda",
                    &format!("compiling CUDA kernels for {arch} with NVRTC (first start only)"),
                );
                let started = std::time::Instant::now();
                let ptx = cudarc::nvrtc::compile_ptx_with_opts(
                    &source,
                    CompileOptions {
                        arch: Some(arch),
                        options: vec!["--std=c++17".into()],
                        ..Default::default()
                    },
                )
                .map_err(|e| {
                    PluginError::internal(format!("NVRTC failed to compile the kernels: {e}"))
                })?;
                let text = ptx.to_src();
                log.info(
                    "kiln::cuda",
                    &format!(
                        "compiled CUDA kernels in {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                if let Some(path) = &cached {
                    let _ = path.parent().map(std::fs::create_dir_all);
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, &text).is_ok() {
                        let _ = std::fs::rename(&tmp, path);
                    }
                }
                text
            }
        };
        let module = ctx
            .load_module(Ptx::from_src(ptx_text))
            .map_err(|e| PluginError::internal(format!("cannot load the CUDA kernels: {e}")))?;
        Ok(Kernels {
            module,
            functions: HashMap::new(),
        })
    }

    /// A kernel by name (loaded once).
    pub fn get(&mut self, name: &str) -> PluginResult<&CudaFunction> {
        if !self.functions.contains_key(name) {
            let f = self
                .module
                .load_function(name)
                .map_err(|e| PluginError::internal(format!("kernel `{name}` is missing: {e}")))?;
            self.functions.insert(name.to_string(), f);
        }
        Ok(&self.functions[name])
    }
}
