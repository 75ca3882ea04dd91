//! `kiln serve`: validate the flags, resolve (and if needed download) the
//! model, build the [`EngineConfig`] and the [`HttpSettings`], then hand both
//! to [`run_server`].

use std::path::PathBuf;
use std::time::Duration;

use kiln_engine::{BackendChoice, DTypeChoice, EngineConfig};
use kiln_hub::{FetchOptions, FetchPolicy, Hub, ModelSpec, Need, ProgressMode, ResolvedModel};

use super::{CliError, hub_from_env, log_resolved, parse_model};
use crate::cli::{DtypeArg, EngineArgs, PoolingArg, ServeArgs};
use crate::startup::{Listening, summary_lines};

/// Everything the HTTP layer needs besides the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address to bind (`--host`).
    pub host: String,
    /// TCP port to listen on (`--port`).
    pub port: u16,
    /// Bearer key required on API routes (`--api-key`).
    pub api_key: Option<String>,
    /// API families to mount (`--frontend` names, registered in
    /// [`crate::frontends`]), without duplicates.
    pub frontends: Vec<&'static str>,
    /// Grace period for running requests at shutdown (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
    /// `--tool-call-parser` and `--enable-auto-tool-choice`.
    pub tool_calls: kiln_http::tool_calls::ToolCallSettings,
}

/// What `kiln serve` starts.
#[derive(Debug, Clone)]
pub struct ServeLaunch {
    pub engine: EngineConfig,
    pub http: HttpSettings,
}

/// Errors of serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] kiln_engine::StartError),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(String),
}

/// `--backend` as the engine takes it: `auto`, a name, or a library path
/// (anything with a `/` or a shared-library extension).
pub fn backend_choice(s: &str) -> BackendChoice {
    let lower = s.to_ascii_lowercase();
    let is_path = s.contains('/')
        || s.contains('\\')
        || [".so", ".dylib", ".dll"].iter().any(|e| lower.ends_with(e));
    match lower.as_str() {
        "auto" | "" => BackendChoice::Auto,
        _ if is_path => BackendChoice::Path(PathBuf::from(s)),
        _ => BackendChoice::Named(lower),
    }
}

fn dtype(d: DtypeArg) -> DTypeChoice {
    match d {
        DtypeArg::Auto => DTypeChoice::Auto,
        DtypeArg::Float32 => DTypeChoice::Float32,
        DtypeArg::Float16 => DTypeChoice::Float16,
        DtypeArg::Bfloat16 => DTypeChoice::BFloat16,
    }
}

/// Check engine flags before anything is downloaded.
pub fn validate_engine_args(args: &EngineArgs) -> Result<(), CliError> {
    let bad = |m: String| Err(CliError::Usage(m));
    if args.tensor_parallel_size == 0 {
        return bad("--tensor-parallel-size must be at least 1".into());
    }
    if args.tensor_parallel_size > 1 {
        return bad(format!(
            "--tensor-parallel-size {} is not supported yet: Kiln runs a model on one device. \
             `kiln plan MODEL --gpu-memory SIZE` shows whether it fits on one",
            args.tensor_parallel_size
        ));
    }
    if !(1..=256).contains(&args.block_size) || !args.block_size.is_power_of_two() {
        return bad(format!(
            "--block-size must be a power of two between 1 and 256, got {}",
            args.block_size
        ));
    }
    for (flag, v) in [
        ("--max-model-len", args.max_model_len),
        ("--max-num-seqs", args.max_num_seqs),
        ("--max-num-batched-tokens", args.max_num_batched_tokens),
        ("--threads", args.threads),
    ] {
        if v == Some(0) {
            return bad(format!("{flag} must be at least 1"));
        }
    }
    if args.kv_cache_memory_bytes == Some(0) {
        return bad("--kv-cache-memory-bytes must be positive".into());
    }
    Ok(())
}

/// The engine config for a resolved model and the engine flags.
pub fn engine_config(model: &ResolvedModel, args: &EngineArgs) -> EngineConfig {
    let mut c = EngineConfig::new(&model.path);
    c.backend = backend_choice(&args.backend);
    c.backend_search_paths = args.backend_path.clone();
    c.threads = args.threads;
    c.dtype = dtype(args.dtype);
    c.quantization = args.quantization.clone();
    c.max_model_len = args.max_model_len;
    c.block_size = args.block_size;
    c.kv_cache_memory_bytes = args.kv_cache_memory_bytes;
    c.gpu_memory_utilization = args.gpu_memory_utilization as f32;
    c.max_num_seqs = args.max_num_seqs;
    c.max_num_batched_tokens = args.max_num_batched_tokens;
    c.enable_prefix_caching = !args.no_enable_prefix_caching;
    c.chat_template = args.chat_template.clone();
    c.seed = args.seed;
    c.pooling = args.pooling.map(|p| match p {
        PoolingArg::Mean => kiln_protocol::Pooling::Mean,
        PoolingArg::Last => kiln_protocol::Pooling::Last,
        PoolingArg::Cls => kiln_protocol::Pooling::Cls,
    });
    c.enforce_eager = args.enforce_eager;
    c.tensor_parallel_size = args.tensor_parallel_size;
    c.model_origin = model.origin.clone();
    // The CPU backend is also linked in, for when its library is not installed
    // next to the binary (a plain `cargo run`); a library found on the search
    // paths is preferred.
    c.builtin_backends = vec![("cpu".into(), kiln_backend_cpu::kiln_static_registration)];
    c
}

/// Resolve the model for running: local paths as they are, catalog and hub
/// models from the cache or downloaded.
pub fn resolve_for_running(
    hub: &Hub,
    spec: &ModelSpec,
    revision: &str,
) -> Result<ResolvedModel, CliError> {
    let options = FetchOptions {
        revision: revision.to_string(),
        need: Need::Weights,
        policy: FetchPolicy::PreferCache,
    };
    let model = hub.resolve(spec, &options)?;
    log_resolved(spec, &model);
    Ok(model)
}

fn http_settings(args: &ServeArgs) -> HttpSettings {
    let mut frontends: Vec<&'static str> = Vec::new();
    for name in &args.frontend {
        // The parser only accepts registered names.
        let Some(r) = crate::frontends::find(name) else {
            continue;
        };
        if (r.name == "ui" && args.no_ui) || frontends.contains(&r.name) {
            continue;
        }
        frontends.push(r.name);
    }
    HttpSettings {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        frontends,
        shutdown_timeout: args.shutdown_timeout,
        tool_calls: kiln_http::tool_calls::ToolCallSettings {
            parser: args.tool_call_parser,
            auto_tool_choice: args.enable_auto_tool_choice,
        },
    }
}

/// Served names: `--served-model-name`, else the model as named for catalog
/// and hub models (local paths: the engine derives a name from the path).
fn served_names(args: &ServeArgs, spec: &ModelSpec) -> Vec<String> {
    let given: Vec<String> = args
        .served_model_name
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if !given.is_empty() {
        return given;
    }
    match spec {
        ModelSpec::Alias(_) | ModelSpec::Hub(_) => vec![args.model.model().to_string()],
        _ => Vec::new(),
    }
}

/// Validate, resolve and build what `kiln serve` starts.
pub fn prepare(args: &ServeArgs, hub: &Hub) -> Result<ServeLaunch, CliError> {
    validate_engine_args(&args.engine)?;
    crate::frontends::check(&http_settings(args).frontends).map_err(CliError::Usage)?;
    let spec = parse_model(&args.model)?;
    let model = resolve_for_running(hub, &spec, &args.model.revision)?;
    let mut engine = engine_config(&model, &args.engine);
    engine.served_model_names = served_names(args, &spec);
    engine.max_waiting_requests = args.max_waiting_requests;
    Ok(ServeLaunch {
        engine,
        http: http_settings(args),
    })
}

/// `kiln serve`.
pub fn execute(args: &ServeArgs) -> Result<(), CliError> {
    let hub = hub_from_env(ProgressMode::Bars)?;
    let launch = prepare(args, &hub)?;
    run_server(launch.engine, launch.http)?;
    Ok(())
}

/// Start the engine and serve it over HTTP until shutdown.
///
/// Loads the model (with a progress bar), mounts `http.frontends` on
/// `http.host:http.port`, logs the start-up summary, and serves until SIGINT
/// or SIGTERM; then stops accepting, lets running requests finish for at most
/// `http.shutdown_timeout`, and stops the engine.
pub fn run_server(engine: EngineConfig, http: HttpSettings) -> Result<(), ServeError> {
    let engine = start_engine(engine, ProgressMode::Bars)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-http")
        .build()
        .map_err(|e| ServeError::Http(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve_http(&engine, &http));
    drop(runtime);
    engine.shutdown();
    tracing::info!("engine stopped");
    result
}

/// Loads the weights with a progress bar and starts the engine's actors.
pub fn start_engine(
    config: EngineConfig,
    progress: ProgressMode,
) -> Result<kiln_engine::Engine, ServeError> {
    let bar = progress.bytes_bar("loading weights", None);
    let mut advance = |done: u64, total: u64| {
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let hooks = kiln_engine::StartHooks {
        weight_progress: Some(&mut advance),
    };
    let engine = kiln_engine::Engine::start_with(config, hooks);
    bar.finish_and_clear();
    Ok(engine?)
}

/// The mounted frontends, in the order given.
pub fn build_frontends(names: &[&str]) -> Vec<Box<dyn kiln_http::Frontend>> {
    names
        .iter()
        .filter_map(|n| crate::frontends::find(n))
        .map(|r| (r.make)())
        .collect()
}

/// A frontend's main routes, for the start-up summary.
pub fn route_summary(name: &str) -> String {
    match crate::frontends::find(name) {
        Some(r) => format!("{} ({})", r.name, r.routes),
        None => name.to_string(),
    }
}

/// The model cache for the management routes; without a cache directory
/// they answer that there is none.
fn model_store() -> Option<std::sync::Arc<dyn kiln_http::ModelStore>> {
    match crate::model_store::HubStore::from_env() {
        Ok(store) => Some(std::sync::Arc::new(store)),
        Err(e) => {
            tracing::warn!("model management routes disabled: {e}");
            None
        }
    }
}

async fn serve_http(engine: &kiln_engine::Engine, http: &HttpSettings) -> Result<(), ServeError> {
    let addr = listen_address(http)?;
    let config = kiln_http::ServeConfig {
        addr,
        http: kiln_http::HttpConfig {
            api_key: http.api_key.clone(),
            tool_calls: http.tool_calls,
            model_store: model_store(),
            ..kiln_http::HttpConfig::default()
        },
        shutdown_timeout: http.shutdown_timeout,
    };
    let frontends = build_frontends(&http.frontends);
    let server = kiln_http::BoundServer::bind(config, engine.handle(), &frontends)
        .await
        .map_err(|e| ServeError::Http(e.to_string()))?;
    let bound = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    let listening = Listening {
        address: bound,
        routes: http
            .frontends
            .iter()
            .map(|name| route_summary(name))
            .collect(),
        api_key: http.api_key.is_some(),
    };
    for line in summary_lines(engine.summary(), &listening) {
        tracing::info!("{line}");
    }
    server
        .run(kiln_http::shutdown_signal())
        .await
        .map_err(|e| ServeError::Http(e.to_string()))?;
    tracing::info!("HTTP server stopped");
    Ok(())
}

/// Resolves `--host`/`--port` (host names such as `localhost` included).
fn listen_address(http: &HttpSettings) -> Result<std::net::SocketAddr, ServeError> {
    use std::net::ToSocketAddrs;
    let host = http.host.trim_matches(|c| c == '[' || c == ']');
    (host, http.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            ServeError::Http(format!(
                "--host {} --port {} is not an address this machine can listen on",
                http.host, http.port
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["kiln", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Serve(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    fn local() -> ResolvedModel {
        ResolvedModel {
            path: "/m.gguf".into(),
            format: kiln_hub::ModelFormat::Gguf,
            origin: None,
            weight_bytes: None,
            downloaded_bytes: 0,
        }
    }

    #[test]
    fn backends_by_name_or_path() {
        assert!(matches!(backend_choice("auto"), BackendChoice::Auto));
        assert!(matches!(backend_choice("CPU"), BackendChoice::Named(n) if n == "cpu"));
        assert!(matches!(
            backend_choice("./libkiln_backend_x.so"),
            BackendChoice::Path(_)
        ));
        assert!(matches!(
            backend_choice("libkiln_backend_x.so"),
            BackendChoice::Path(_)
        ));
    }

    #[test]
    fn flags_map_onto_the_engine_config() {
        let a = serve_args(&[
            "m.gguf",
            "--dtype",
            "bfloat16",
            "--max-model-len",
            "2048",
            "--gpu-memory-utilization",
            "0.8",
            "--kv-cache-memory-bytes",
            "512MiB",
            "--block-size",
            "32",
            "--max-num-seqs",
            "8",
            "--max-num-batched-tokens",
            "1024",
            "--no-enable-prefix-caching",
            "--enforce-eager",
            "--seed",
            "7",
            "--backend",
            "cpu",
            "--backend-path",
            "/a:/b",
            "--threads",
            "2",
            "--chat-template",
            "{{ messages }}",
        ]);
        validate_engine_args(&a.engine).unwrap();
        let model = ResolvedModel {
            path: "/m.gguf".into(),
            format: kiln_hub::ModelFormat::Gguf,
            origin: Some("org/x".into()),
            weight_bytes: None,
            downloaded_bytes: 0,
        };
        let c = engine_config(&model, &a.engine);
        assert_eq!(c.model, PathBuf::from("/m.gguf"));
        assert_eq!(c.dtype, DTypeChoice::BFloat16);
        assert_eq!(c.max_model_len, Some(2048));
        assert_eq!(c.gpu_memory_utilization, 0.8);
        assert_eq!(c.kv_cache_memory_bytes, Some(512 << 20));
        assert_eq!(c.block_size, 32);
        assert_eq!(
            (c.max_num_seqs, c.max_num_batched_tokens),
            (Some(8), Some(1024))
        );
        assert!(!c.enable_prefix_caching && c.enforce_eager);
        assert_eq!(c.seed, Some(7));
        assert!(matches!(c.backend, BackendChoice::Named(ref n) if n == "cpu"));
        assert_eq!(
            c.backend_search_paths,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(c.threads, Some(2));
        assert_eq!(c.chat_template.as_deref(), Some("{{ messages }}"));
        assert_eq!(c.model_origin.as_deref(), Some("org/x"));
    }

    #[test]
    fn defaults_follow_vllm() {
        let a = serve_args(&[]);
        assert_eq!(a.model.model(), kiln_hub::DEFAULT_MODEL);
        assert_eq!((a.host.as_str(), a.port), ("0.0.0.0", 8000));
        assert_eq!(a.engine.gpu_memory_utilization, 0.9);
        assert_eq!(
            engine_config(&local(), &a.engine).gpu_memory_utilization,
            0.9f32
        );
        assert_eq!(a.engine.block_size, 16);
        assert_eq!(a.engine.tensor_parallel_size, 1);
        assert!(!a.engine.no_enable_prefix_caching);
        let h = http_settings(&a);
        assert_eq!(h.frontends, ["openai", "tgi", "ollama", "metrics", "ui"]);
        assert!(
            !http_settings(&serve_args(&["--no-ui"]))
                .frontends
                .contains(&"ui")
        );
        assert_eq!(
            http_settings(&serve_args(&["--frontend", "openai,jsonl,openai"])).frontends,
            ["openai", "jsonl"]
        );
        assert_eq!(h.shutdown_timeout, Duration::from_secs(30));
        let spec = ModelSpec::parse(a.model.model()).unwrap();
        assert_eq!(served_names(&a, &spec), ["smollm2-135m-instruct"]);
    }

    #[test]
    fn tool_call_flags_follow_vllm() {
        let h = http_settings(&serve_args(&[]));
        assert_eq!(h.tool_calls, Default::default());
        let h = http_settings(&serve_args(&[
            "--tool-call-parser",
            "llama3_json",
            "--enable-auto-tool-choice",
        ]));
        assert_eq!(
            h.tool_calls.parser,
            Some(kiln_http::tool_calls::ToolCallParser::Llama3Json)
        );
        assert!(h.tool_calls.auto_tool_choice);
        let mut bad = vec!["kiln", "serve", "--tool-call-parser", "pythonic"];
        assert!(Cli::try_parse_from(bad.drain(..)).is_err());
    }

    #[test]
    fn prefix_caching_flags_override_each_other() {
        assert!(
            serve_args(&["--no-enable-prefix-caching"])
                .engine
                .no_enable_prefix_caching
        );
        assert!(
            !serve_args(&["--no-enable-prefix-caching", "--enable-prefix-caching"])
                .engine
                .no_enable_prefix_caching
        );
    }

    #[test]
    fn served_model_names_take_several_values() {
        let a = serve_args(&["m", "--served-model-name", "a", "b"]);
        assert_eq!(a.served_model_name, ["a", "b"]);
        let a = serve_args(&["--served-model-name", "a,b", "--served-model-name", "c"]);
        assert_eq!(a.served_model_name, ["a", "b", "c"]);
    }

    #[test]
    fn bad_engine_flags_are_usage_errors() {
        let e =
            validate_engine_args(&serve_args(&["--tensor-parallel-size", "2"]).engine).unwrap_err();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(validate_engine_args(&serve_args(&["--block-size", "24"]).engine).is_err());
        assert!(validate_engine_args(&serve_args(&["--max-num-seqs", "0"]).engine).is_err());
        assert!(Cli::try_parse_from(["kiln", "serve", "--gpu-memory-utilization", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "serve", "--kv-cache-memory-bytes", "lots"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "serve", "--dtype", "int4"]).is_err());
    }
}
