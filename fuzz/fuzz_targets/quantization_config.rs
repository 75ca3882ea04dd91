//! `config.json` text through the parsers a safetensors checkpoint's config
//! goes through: the model config and the `quantization_config` scheme
//! (GPTQ, AWQ, compressed-tensors, FP8). The input is also tried as a bare
//! `quantization_config` object. Any error is fine; a panic is a bug.

#![no_main]

use kiln_models::config::ModelConfig;
use kiln_models::weights::quantized::QuantScheme;
use libfuzzer_sys::fuzz_target;

fn describe(scheme: &QuantScheme) {
    let _ = scheme.name();
    let _ = scheme.label();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ModelConfig::from_hf_json(text) {
        let _ = config.num_parameters();
        let _ = config.num_active_parameters();
        let _ = kiln_models::registry::resolve(&config);
    }
    if let Ok(Some(scheme)) = QuantScheme::from_config_json(text) {
        describe(&scheme);
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    if let Ok(scheme) = QuantScheme::from_quantization_config(&value) {
        describe(&scheme);
    }
});
