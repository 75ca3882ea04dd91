//! Start-up: model files → backend and device → weights → step buffers → KV
//! cache → actors. Every failure is an [`StartError`] that says what to change.

use crate::embedding_config::embedding_spec;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use kiln_engine_api::{EngineHandle, EngineInfo};
use kiln_models::decoder::{
    ActDType, Decoder, DecoderOptions, KvCache, LoadProgress, StepBuffers, StepCapacity,
};
use kiln_models::weights::quantize::QuantizeAtLoad;
use kiln_plugin_abi::safe::{Device, DeviceInfo};
use kiln_plugin_abi::{KILN_CAP_BF16, KILN_CAP_F16, KILN_DEVICE_CPU};
use kiln_plugin_host::{BackendRegistry, LoadedBackend};
use kiln_sampler::{DeviceDraws, SamplerCore};
use kiln_scheduler::{BlockManager, BlockManagerConfig, Scheduler, SchedulerConfig};
use kiln_structured::{Grammars, Limits, Vocabulary};
use tokio::sync::broadcast;

use crate::actors::{
    BlockManagerActor, Clock, Peers, RunnerActor, SamplerActor, SchedulerActor, SchedulerParts,
    Shared,
};
use crate::config::{BackendChoice, DTypeChoice, EngineConfig};
use crate::memory::{KvBudget, KvPlan, cpu_kv_budget, gpu_kv_budget, human_bytes, plan_kv_cache};
use crate::model::{ModelFiles, ReleasedWeights, TokenizerDecoder, check_quantization, open_model};
use crate::runner::ModelRunner;
use crate::service::ActorEngine;

/// Why the engine could not start. The message is meant for the user as is.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The model files are missing or invalid.
    #[error("{0}")]
    Model(String),
    /// No usable backend.
    #[error(transparent)]
    Backend(#[from] kiln_plugin_host::LoadError),
    /// The device failed.
    #[error("device error: {0}")]
    Device(#[from] kiln_plugin_abi::safe::AbiError),
    /// Weights could not be prepared.
    #[error(transparent)]
    Decoder(#[from] kiln_models::decoder::DecoderError),
    /// Settings that cannot work together.
    #[error("{0}")]
    Config(String),
    /// The KV cache does not fit.
    #[error("{0}")]
    Memory(String),
}

/// Optional start-up hooks (progress bars).
#[derive(Default)]
pub struct StartHooks<'a> {
    /// Called while weights upload: `(done_bytes, total_bytes)`.
    pub weight_progress: Option<&'a mut dyn LoadProgress>,
}

/// A running engine. Dropping it stops the actors.
pub struct Engine {
    handle: EngineHandle,
    system: System,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnects when the runner actor (weights, KV cache) is dropped,
    /// on its own thread, after the engine thread ends.
    /// (In a mutex only so that `Engine` stays `Sync`.)
    runner_dropped: Mutex<std::sync::mpsc::Receiver<()>>,
    summary: StartupSummary,
}

/// How long stopping waits for the runner to let go of its memory (a step
/// in flight finishes first).
const RUNNER_DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What start-up decided, for the summary the `kiln` command prints.
#[derive(Debug, Clone, PartialEq)]
pub struct StartupSummary {
    /// Effective settings and model facts.
    pub info: EngineInfo,
    /// The KV plan.
    pub kv: KvPlan,
    /// Bytes of per-step buffers (activations and inputs).
    pub activation_bytes: u64,
    /// Where the backend came from.
    pub backend_source: String,
    /// Device facts.
    pub device: DeviceInfo,
}

impl Engine {
    /// Start an engine (blocking: loads weights).
    pub fn start(config: EngineConfig) -> Result<Engine, StartError> {
        Engine::start_with(config, StartHooks::default())
    }

    /// Start with hooks.
    pub fn start_with(config: EngineConfig, hooks: StartHooks<'_>) -> Result<Engine, StartError> {
        let p = prepare(&config, hooks)?;
        let summary = p.summary.clone();
        let (handle, system, thread, runner_dropped) = spawn_actors(
            &config,
            p.files,
            p.runner,
            p.summary.info,
            &p.sizes,
            p.summary.kv,
        )?;
        Ok(Engine {
            handle,
            system,
            thread: Some(thread),
            runner_dropped: Mutex::new(runner_dropped),
            summary,
        })
    }

    /// The handle frontends use.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// What start-up decided.
    pub fn summary(&self) -> &StartupSummary {
        &self.summary
    }

    /// Stop the actors and wait for the engine thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Stops the actors and returns once the model's weights and KV cache
    /// are freed, so that a model loaded next finds the memory.
    fn stop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let dropped = self
                .runner_dropped
                .get_mut()
                .unwrap_or_else(|e| e.into_inner());
            let waited = dropped.recv_timeout(RUNNER_DROP_WAIT);
            if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                tracing::warn!(
                    "the model runner still holds its memory {}s after the engine stopped",
                    RUNNER_DROP_WAIT.as_secs()
                );
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything start-up builds before the actors run.
struct Prepared {
    files: ModelFiles,
    runner: ModelRunner,
    sizes: Sizes,
    summary: StartupSummary,
}

fn prepare(config: &EngineConfig, hooks: StartHooks<'_>) -> Result<Prepared, StartError> {
    validate(config)?;
    let mut files =
        open_model(&config.model, config.chat_template.as_deref()).map_err(StartError::Model)?;
    check_quantization(config.quantization.as_deref(), &files).map_err(StartError::Config)?;
    let backend = load_backend(config)?;
    let params = serde_json::json!({ "threads": config.threads }).to_string();
    let device = backend.backend.open(config.device_index, &params)?;
    let sizes = Sizes::decide(config, &files, device.info())?;
    let act = choose_dtype(config.dtype, device.info())?;
    let decoder = Decoder::load(
        &device,
        files.weights.as_ref(),
        &files.config,
        files.variant.clone(),
        DecoderOptions {
            act_dtype: act,
            max_positions: sizes.max_model_len,
            progress: hooks.weight_progress,
            quantization: files.quant_scheme.clone(),
            // A checkpoint quantized its own way keeps it (checked against
            // the flag in `check_quantization`).
            quantize_at_load: config
                .quantization
                .as_deref()
                .and_then(QuantizeAtLoad::from_flag)
                .filter(|_| files.quant_scheme.is_none()),
        },
    )?;
    // The backend holds its own copy of every weight: unmap the checkpoint
    // so its pages leave the resident set.
    files.weights = Box::new(ReleasedWeights);
    let bufs = StepBuffers::allocate(&device, &decoder, sizes.capacity())?;
    let kv_plan = size_kv(config, &files, &device, &decoder, &bufs, act, &sizes)?;
    let kv = KvCache::allocate(
        &device,
        &files.config,
        kv_plan.num_blocks,
        config.block_size,
        act,
    )?;
    tracing::info!("{}", kv_plan.log_line());
    if let Some(line) = kv_plan.window_line() {
        tracing::info!("{line}");
    }
    let info = engine_info(
        config, &files, &backend, &device, &decoder, &sizes, &kv_plan,
    );
    let summary = StartupSummary {
        info,
        kv: kv_plan,
        activation_bytes: bufs.bytes(),
        backend_source: backend.source.to_string(),
        device: device.info().clone(),
    };
    let mut runner = ModelRunner::new(device, decoder, kv, bufs);
    if let Some(spec) = &summary.info.embedding {
        runner.set_pooling(spec.pooling);
    }
    if config.device_sampling
        && runner
            .enable_device_sampling()
            .map_err(|e| StartError::Config(format!("device sampling: {e}")))?
    {
        tracing::info!("sampling on the device");
    }
    if !config.enforce_eager && sizes.gpu && runner.decoder().generates() {
        let started = std::time::Instant::now();
        let n = runner
            .capture_graphs(sizes.max_num_seqs, sizes.max_model_len)
            .map_err(|e| {
                StartError::Config(format!(
                    "graph capture failed ({e}); retry with --enforce-eager"
                ))
            })?;
        if n > 0 {
            tracing::info!(
                "captured {n} decode graphs in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(Prepared {
        files,
        runner,
        sizes,
        summary,
    })
}

/// A model loaded on its device without the actors: the runner, the
/// tokenizer and what start-up decided. For tests and tools that need raw
/// logits; serving uses [`Engine`].
pub struct LoadedModel {
    /// The runner (execute step plans directly).
    pub runner: ModelRunner,
    pub tokenizer: kiln_tokenizer::Tokenizer,
    /// Start-up decisions.
    pub summary: StartupSummary,
}

/// Load a model and its runner without starting actors.
pub fn load_model(config: &EngineConfig) -> Result<LoadedModel, StartError> {
    let p = prepare(config, StartHooks::default())?;
    Ok(LoadedModel {
        runner: p.runner,
        tokenizer: p.files.tokenizer,
        summary: p.summary,
    })
}

fn validate(config: &EngineConfig) -> Result<(), StartError> {
    let bad = |m: String| Err(StartError::Config(m));
    if config.tensor_parallel_size != 1 {
        return bad(format!(
            "--tensor-parallel-size {} is not supported yet: Kiln runs a model on one device",
            config.tensor_parallel_size
        ));
    }
    if !(1..=256).contains(&config.block_size) || !config.block_size.is_power_of_two() {
        return bad(format!(
            "--block-size must be a power of two between 1 and 256, got {}",
            config.block_size
        ));
    }
    if !(config.gpu_memory_utilization > 0.0 && config.gpu_memory_utilization <= 1.0) {
        return bad(format!(
            "--gpu-memory-utilization must be in (0, 1], got {}",
            config.gpu_memory_utilization
        ));
    }
    if config.max_num_seqs == Some(0) || config.max_num_batched_tokens == Some(0) {
        return bad("--max-num-seqs and --max-num-batched-tokens must be at least 1".into());
    }
    Ok(())
}

fn load_backend(config: &EngineConfig) -> Result<LoadedBackend, StartError> {
    let mut registry = BackendRegistry::new();
    let mut paths = config.backend_search_paths.clone();
    paths.extend(BackendRegistry::default_search_paths(None));
    let loaded = match &config.backend {
        BackendChoice::Static { name, init } => registry.register_static(name, *init)?,
        BackendChoice::Path(p) => registry.load(p)?,
        BackendChoice::Named(name) => load_named(&mut registry, config, name, &paths)?,
        BackendChoice::Auto => match registry.load_best("cuda", &paths) {
            Ok(cuda) if cuda.backend.devices().is_ok_and(|d| !d.is_empty()) => cuda,
            Ok(_) => load_named(&mut registry, config, "cpu", &paths)?,
            Err(e) => {
                tracing::debug!("no CUDA backend: {e}");
                load_named(&mut registry, config, "cpu", &paths)?
            }
        },
    };
    tracing::info!(backend = %loaded.backend.name(), source = %loaded.source, "backend loaded");
    Ok(loaded)
}

/// The best `kiln_backend_<name>` library on the search paths, else the copy
/// of that backend linked into the binary (`EngineConfig::builtin_backends`).
fn load_named(
    registry: &mut BackendRegistry,
    config: &EngineConfig,
    name: &str,
    paths: &[std::path::PathBuf],
) -> Result<LoadedBackend, StartError> {
    match registry.load_best(name, paths) {
        Ok(loaded) => Ok(loaded),
        Err(e) => match config.builtin_backends.iter().find(|(n, _)| n == name) {
            Some((n, init)) => {
                tracing::debug!("no {name} backend library ({e}); using the built-in one");
                Ok(registry.register_static(n, *init)?)
            }
            None => Err(e.into()),
        },
    }
}

fn choose_dtype(choice: DTypeChoice, device: &DeviceInfo) -> Result<ActDType, StartError> {
    let cpu = device.kind == KILN_DEVICE_CPU;
    let act = match choice {
        DTypeChoice::Float32 => ActDType::F32,
        DTypeChoice::Float16 => ActDType::F16,
        DTypeChoice::BFloat16 => ActDType::BF16,
        DTypeChoice::Auto if cpu => ActDType::F32,
        DTypeChoice::Auto if device.has(KILN_CAP_BF16) => ActDType::BF16,
        DTypeChoice::Auto => ActDType::F16,
    };
    let supported = match act {
        ActDType::F32 => true,
        ActDType::F16 => device.has(KILN_CAP_F16),
        ActDType::BF16 => device.has(KILN_CAP_BF16),
    };
    if !supported {
        return Err(StartError::Config(format!(
            "--dtype {} is not supported on {} ({}); use --dtype float32 or auto",
            act.name(),
            device.name,
            device.description
        )));
    }
    Ok(act)
}

/// Sizes decided from the config, the model and the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sizes {
    pub max_model_len: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub gpu: bool,
}

impl Sizes {
    fn decide(
        config: &EngineConfig,
        files: &ModelFiles,
        device: &DeviceInfo,
    ) -> Result<Sizes, StartError> {
        let gpu = device.kind != KILN_DEVICE_CPU;
        let native = files.config.max_position_embeddings;
        // Sentence-transformers models are trained (and cut) at their own length.
        let default_len = match files.sentence_transformers.max_seq_length {
            Some(n) if files.variant.encoder => n.min(native),
            _ => native,
        };
        let max_model_len = match config.max_model_len {
            Some(n) if n > native => {
                return Err(StartError::Config(format!(
                    "--max-model-len {n} exceeds the model's context length {native}"
                )));
            }
            Some(0) => {
                return Err(StartError::Config(
                    "--max-model-len must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => default_len,
        };
        let defaults = crate::defaults::DeviceDefaults::for_device(gpu);
        let max_num_seqs = config.max_num_seqs.unwrap_or(defaults.max_num_seqs);
        let max_num_batched_tokens = config
            .max_num_batched_tokens
            .unwrap_or(defaults.max_num_batched_tokens)
            .max(max_num_seqs.min(max_model_len));
        Ok(Sizes {
            max_model_len,
            max_num_seqs,
            max_num_batched_tokens,
            block_size: config.block_size,
            gpu,
        })
    }

    fn capacity(&self) -> StepCapacity {
        StepCapacity {
            max_tokens: self.max_num_batched_tokens,
            max_seqs: self.max_num_seqs,
            max_blocks_per_seq: self.max_model_len.div_ceil(self.block_size),
        }
    }
}

fn size_kv(
    config: &EngineConfig,
    files: &ModelFiles,
    device: &Device,
    decoder: &Decoder,
    bufs: &StepBuffers,
    act: ActDType,
    sizes: &Sizes,
) -> Result<KvPlan, StartError> {
    let bytes_per_block = KvCache::bytes_per_block(&files.config, config.block_size, act);
    let (free, total) = device.memory_info()?;
    let (budget, source) = if let Some(explicit) = config.kv_cache_memory_bytes {
        (explicit, "--kv-cache-memory-bytes")
    } else if sizes.gpu {
        profile_activations(device, decoder, bufs, sizes)?;
        let (free_after, _) = device.memory_info()?;
        let used = total.saturating_sub(free_after);
        (
            gpu_kv_budget(None, config.gpu_memory_utilization, total, used),
            "--gpu-memory-utilization",
        )
    } else {
        (
            cpu_kv_budget(None, free),
            "the default CPU budget (pass --kv-cache-memory-bytes)",
        )
    };
    tracing::debug!(
        free = %human_bytes(free),
        total = %human_bytes(total),
        budget = %human_bytes(budget),
        "sizing the KV cache"
    );
    plan_kv_cache(KvBudget {
        budget_bytes: budget,
        bytes_per_block,
        block_size: config.block_size,
        max_model_len: sizes.max_model_len,
        max_num_batched_tokens: sizes.max_num_batched_tokens,
        window: decoder.variant().window_layout(),
        budget_source: source,
        free_bytes: Some(free),
    })
    .map_err(|e| StartError::Memory(e.0))
}

/// Run one forward pass at the largest batch so that the backend allocates
/// its workspaces before free memory is measured.
fn profile_activations(
    device: &Device,
    decoder: &Decoder,
    bufs: &StepBuffers,
    sizes: &Sizes,
) -> Result<(), StartError> {
    let n = sizes.max_num_batched_tokens.min(sizes.max_model_len);
    let blocks = n.div_ceil(sizes.block_size);
    let kv = KvCache::allocate(
        device,
        decoder.config(),
        blocks,
        sizes.block_size,
        decoder.act_dtype(),
    )?;
    let ids = vec![0i32; n];
    let positions: Vec<i32> = (0..n as i32).collect();
    let slots = positions.clone();
    let table: Vec<i32> = (0..blocks as i32).collect();
    let m = sizes.max_num_seqs.min(n);
    let logits_indices: Vec<i32> = (0..m as i32).map(|i| (n as i32 - 1 - i).max(0)).collect();
    let inputs = kiln_models::decoder::BatchInputs {
        token_ids: &ids,
        positions: &positions,
        slot_mapping: &slots,
        seq_lens: &[n as i32],
        query_start_loc: &[0, n as i32],
        block_tables: &table,
        blocks_per_seq: blocks,
        logits_indices: &logits_indices,
        max_query_len: n,
        max_seq_len: n,
        decode_rows: 0,
        decode_logits_rows: 0,
        hidden_states: true,
    };
    decoder.forward(device, &kv, bufs, &inputs)?;
    device.synchronize()?;
    Ok(())
}

fn engine_info(
    config: &EngineConfig,
    files: &ModelFiles,
    backend: &LoadedBackend,
    device: &Device,
    decoder: &Decoder,
    sizes: &Sizes,
    kv: &KvPlan,
) -> EngineInfo {
    let names = if config.served_model_names.is_empty() {
        vec![files.name.clone()]
    } else {
        config.served_model_names.clone()
    };
    EngineInfo {
        model_id: names[0].clone(),
        served_model_names: names,
        model_path: config
            .model_origin
            .clone()
            .unwrap_or_else(|| config.model.display().to_string()),
        architecture: files.config.architecture.clone(),
        family: files.family.clone(),
        num_parameters: files.num_parameters,
        num_active_parameters: files.num_active_parameters,
        dtype: decoder.act_dtype().name().to_string(),
        quantization: files.quantization.clone(),
        format: files.format.to_string(),
        max_model_len: sizes.max_model_len as u32,
        native_context_length: files.config.max_position_embeddings as u32,
        block_size: sizes.block_size as u32,
        num_kv_blocks: kv.num_blocks as u32,
        max_num_seqs: sizes.max_num_seqs as u32,
        max_num_batched_tokens: sizes.max_num_batched_tokens as u32,
        max_waiting_requests: config.max_waiting_requests as u32,
        enable_prefix_caching: config.enable_prefix_caching,
        backend: backend.backend.name(),
        device: format!("{} ({})", device.info().name, device.info().description),
        weights_bytes: decoder.weight_summary().bytes,
        weights_by_format: {
            let mut by = decoder.weight_summary().formats.clone();
            kiln_protocol::FormatBytes::sort(&mut by);
            by
        },
        kv_cache_bytes: kv.total_bytes(),
        vocab_size: files.config.vocab_size as u32,
        bos_token_id: files.tokenizer.bos_token_id(),
        eos_token_ids: files.eos_token_ids.clone(),
        chat_template: files.chat_template.as_ref().map(|t| t.source().to_string()),
        model_info: files.model_info.clone(),
        embedding: Some(embedding_spec(
            &files.sentence_transformers,
            config.pooling,
            files.config.hidden_size,
            decoder.generates(),
        )),
        version: env!("CARGO_PKG_VERSION").to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

type Spawned = (
    EngineHandle,
    System,
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<()>,
);

/// The structured-output compiler over the model's vocabulary.
fn structured_outputs(files: &ModelFiles) -> Result<Arc<Grammars>, StartError> {
    let eos = match files.eos_token_ids.first() {
        Some(&id) => id,
        // An encoder never generates, so no grammar ever ends on it.
        None if files.variant.encoder => 0,
        None => return Err(StartError::Model("the model names no EOS token".into())),
    };
    let vocab = Vocabulary {
        tokens: files.tokenizer.token_bytes(),
        eos,
    };
    let grammars = Grammars::new(vocab, Limits::default())
        .map_err(|e| StartError::Model(format!("structured outputs: {e}")))?;
    Ok(Arc::new(grammars))
}

fn spawn_actors(
    config: &EngineConfig,
    files: ModelFiles,
    runner: ModelRunner,
    info: EngineInfo,
    sizes: &Sizes,
    kv: KvPlan,
) -> Result<Spawned, StartError> {
    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared::default());
    shared
        .healthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let clock = Clock::start();
    let scheduler_config = SchedulerConfig {
        max_num_batched_tokens: sizes.max_num_batched_tokens,
        max_num_seqs: sizes.max_num_seqs,
        max_model_len: sizes.max_model_len,
        block_size: sizes.block_size,
        num_blocks: kv.num_blocks,
        enable_prefix_caching: config.enable_prefix_caching,
        sliding_window: kv.window.freeing_window(),
    };
    let block_config = BlockManagerConfig {
        num_blocks: kv.num_blocks,
        block_size: sizes.block_size,
        enable_prefix_caching: config.enable_prefix_caching,
        sliding_window: kv.window.freeing_window(),
    };
    let decoder = Arc::new(TokenizerDecoder::new(files.tokenizer.clone()));
    let mut sampler_core = SamplerCore::new(decoder, files.eos_token_ids.clone());
    if let Some(seed) = config.seed {
        sampler_core.set_default_seed(seed);
    }
    let grammars = structured_outputs(&files)?;
    sampler_core.set_constraint_factory(grammars.clone());
    if config.device_sampling && runner.samples_on_device() {
        sampler_core.set_device_draws(DeviceDraws {
            masks: runner.masks_on_device(),
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (alive, runner_dropped) = std::sync::mpsc::channel::<()>();
    let (events_tx, shared_tx) = (events.clone(), shared.clone());
    let thread = std::thread::Builder::new()
        .name("kiln-engine".into())
        .spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let block_manager = BlockManagerActor::new(BlockManager::new(block_config)).start();
                let sampler = SamplerActor::new(sampler_core, events_tx.clone(), clock).start();
                let slot = Mutex::new(Some((runner, alive)));
                let runner = SyncArbiter::start(1, move || {
                    let parts = slot.lock().ok().and_then(|mut s| s.take());
                    let (runner, alive) = parts.expect("the model runner is started exactly once");
                    RunnerActor::new(runner, alive)
                });
                let scheduler = SchedulerActor::new(SchedulerParts {
                    core: Scheduler::new(scheduler_config),
                    peers: Peers {
                        block_manager,
                        runner,
                        sampler,
                    },
                    events: events_tx,
                    shared: shared_tx,
                    clock,
                    num_blocks: kv.num_blocks as u32,
                })
                .start();
                let _ = tx.send((scheduler, System::current()));
            });
            let _ = system.run();
        })
        .map_err(|e| StartError::Config(format!("cannot start the engine thread: {e}")))?;
    let (scheduler, system) = rx
        .recv()
        .map_err(|_| StartError::Config("the engine thread failed to start".into()))?;
    let engine = ActorEngine {
        info,
        tokenizer: files.tokenizer,
        chat_template: files.chat_template,
        grammars,
        scheduler,
        events,
        shared,
        next_id: AtomicU64::new(1),
    };
    Ok((
        EngineHandle::new(Arc::new(engine)),
        system,
        thread,
        runner_dropped,
    ))
}

#[cfg(test)]
mod tests {
    /// The Python binding shares an engine between threads.
    #[test]
    fn an_engine_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Engine>();
    }
}
