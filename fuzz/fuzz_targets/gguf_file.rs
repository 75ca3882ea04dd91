//! GGUF bytes through the path a `.gguf` model takes when it is loaded:
//! the header reader, the model config from the metadata, the decoder
//! variant, the tokenizer metadata, then every tensor under its GGUF and
//! Hugging Face names, dequantized to f32 where the reference dequantizer
//! handles its type. Any error is fine; a panic, an abort or an allocation
//! sized from a corrupt number is a bug.

#![no_main]

use kiln_models::config::ModelConfig;
use kiln_models::gguf_weights::GgufWeights;
use kiln_models::registry::resolve;
use kiln_models::weights::dequant::dequantize_view;
use kiln_models::weights::gguf::GgufFile;
use kiln_models::weights::{TensorView, WeightSource};
use libfuzzer_sys::fuzz_target;

/// Tensors with more values than this are read but not dequantized, to keep
/// each run short (the bytes of a tensor are bounded by the input anyway).
const MAX_DEQUANT_ELEMENTS: usize = 1 << 20;

fn dequant(view: &TensorView<'_>) {
    let elements = view.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if elements.is_some_and(|n| n <= MAX_DEQUANT_ELEMENTS)
        && let Some(values) = dequantize_view(view)
    {
        assert_eq!(values.len(), view.num_elements(), "{}", view.name);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = file.summary().to_string();
    let _ = file.quantization_label();
    let _ = file.unmapped_tensors();
    let _ = file.tokenizer_metadata();

    // Every tensor as stored, then under its Hugging Face name (Llama Q/K
    // rows un-permuted).
    for info in file.tensors() {
        if let Some(view) = file.raw_tensor(&info.name) {
            dequant(&view);
        }
    }
    for name in file.tensor_names() {
        if let Ok(Some(view)) = file.tensor(&name) {
            dequant(&view);
        }
    }

    let Ok(config) = ModelConfig::from_gguf(&file) else {
        return;
    };
    let _ = config.num_parameters();
    let _ = config.num_active_parameters();
    let Ok(variant) = resolve(&config) else {
        return;
    };

    // The family's view of the file, as the decoder loader reads it.
    let weights = GgufWeights::new(file, variant.kind, config.num_hidden_layers);
    let _ = weights.total_bytes();
    for name in weights.tensor_names() {
        if let Ok(Some(view)) = weights.tensor(&name) {
            dequant(&view);
        }
    }
});
