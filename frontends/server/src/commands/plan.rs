//! `kiln plan`: resolve the model (config only for hub ids), read its facts,
//! compute and print the plan.

use kiln_hub::{FetchOptions, FetchPolicy, Need, ProgressMode};

use super::{CliError, hub_from_env, log_resolved, parse_model};
use crate::cli::{DtypeArg, PlanArgs, PlanDevice};
use crate::plan::math::Device;
use crate::plan::{DtypeRequest, PlanRequest, build_plan, facts, render};

/// Total memory of the first GPU as `nvidia-smi` reports it.
fn nvidia_smi_memory() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mib: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(mib << 20)
}

/// Total RAM from `/proc/meminfo`.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// The device to plan for, from the flags and (when they leave it open) the machine.
pub fn choose_device(
    device: Option<PlanDevice>,
    gpu_memory: Option<u64>,
    probe_gpu: impl FnOnce() -> Option<u64>,
    probe_ram: impl FnOnce() -> Option<u64>,
) -> Result<Device, CliError> {
    match (device, gpu_memory) {
        (Some(PlanDevice::Cpu), Some(_)) => Err(CliError::Usage(
            "--gpu-memory describes a GPU; drop it with --device cpu".into(),
        )),
        (Some(PlanDevice::Cpu), None) => Ok(Device::Cpu {
            memory_bytes: probe_ram(),
        }),
        (_, Some(memory_bytes)) => Ok(Device::Cuda { memory_bytes }),
        (Some(PlanDevice::Cuda), None) => probe_gpu()
            .map(|memory_bytes| Device::Cuda { memory_bytes })
            .ok_or_else(|| {
                CliError::Usage(
                    "no GPU found (nvidia-smi); pass --gpu-memory SIZE, e.g. --gpu-memory 80GiB"
                        .into(),
                )
            }),
        (None, None) => Ok(match probe_gpu() {
            Some(memory_bytes) => Device::Cuda { memory_bytes },
            None => Device::Cpu {
                memory_bytes: probe_ram(),
            },
        }),
    }
}

/// How `kiln serve` should name the model: a bare config's directory, else the name given.
fn serve_name(spec: &kiln_hub::ModelSpec, given: &str) -> String {
    match spec {
        kiln_hub::ModelSpec::ConfigFile(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| ".".into()),
        _ => given.to_string(),
    }
}

fn dtype(d: DtypeArg) -> DtypeRequest {
    match d {
        DtypeArg::Auto => DtypeRequest::Auto,
        DtypeArg::Float32 => DtypeRequest::Float32,
        DtypeArg::Float16 => DtypeRequest::Float16,
        DtypeArg::Bfloat16 => DtypeRequest::BFloat16,
    }
}

/// `kiln plan`.
pub fn execute(args: &PlanArgs) -> Result<(), CliError> {
    let device = choose_device(args.device, args.gpu_memory, nvidia_smi_memory, host_memory)?;
    let hub = hub_from_env(ProgressMode::Bars)?;
    let spec = parse_model(&args.model)?;
    let options = FetchOptions {
        revision: args.model.revision.clone(),
        need: Need::ConfigOnly,
        policy: FetchPolicy::PreferCache,
    };
    let model = hub.resolve(&spec, &options)?;
    log_resolved(&spec, &model);
    let facts = facts::read_facts(&model).map_err(crate::plan::PlanError::from)?;
    let request = PlanRequest {
        model_name: serve_name(&spec, args.model.model()),
        device,
        dtype: dtype(args.dtype),
        max_model_len: args.max_model_len,
        tensor_parallel_size: args.tensor_parallel_size,
        gpu_memory_utilization: args.gpu_memory_utilization,
        kv_cache_memory_bytes: args.kv_cache_memory_bytes,
        block_size: args.block_size,
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
    };
    let plan = build_plan(&facts, &request)?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&plan).map_err(|e| CliError::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render::to_text(&plan));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_served_from_their_directory() {
        let cfg = kiln_hub::ModelSpec::ConfigFile("/m/llama/config.json".into());
        assert_eq!(serve_name(&cfg, "/m/llama/config.json"), "/m/llama");
        assert_eq!(
            serve_name(
                &kiln_hub::ModelSpec::ConfigFile("config.json".into()),
                "config.json"
            ),
            "."
        );
        let alias = kiln_hub::ModelSpec::parse("smollm2-135m-instruct").unwrap();
        assert_eq!(
            serve_name(&alias, "smollm2-135m-instruct"),
            "smollm2-135m-instruct"
        );
    }

    #[test]
    fn device_choice() {
        let gpu = || Some(80u64 << 30);
        let none = || None;
        let ram = || Some(24u64 << 30);
        assert_eq!(
            choose_device(None, Some(1 << 30), none, ram).unwrap(),
            Device::Cuda {
                memory_bytes: 1 << 30
            }
        );
        assert_eq!(
            choose_device(None, None, gpu, ram).unwrap(),
            Device::Cuda {
                memory_bytes: 80 << 30
            }
        );
        assert_eq!(
            choose_device(None, None, none, ram).unwrap(),
            Device::Cpu {
                memory_bytes: Some(24 << 30)
            }
        );
        assert!(
            choose_device(Some(PlanDevice::Cuda), None, none, ram)
                .unwrap_err()
                .to_string()
                .contains("--gpu-memory")
        );
        assert!(choose_device(Some(PlanDevice::Cpu), Some(1), none, ram).is_err());
    }
}
