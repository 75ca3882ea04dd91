//! The real default model (SmolLM2-135M-Instruct Q4_1). Skipped with a
//! message when the file is absent; `KILN_TEST_GGUF` points at it.

use std::path::PathBuf;

use kiln_models::config::ModelConfig;
use kiln_models::weights::WeightDType;
use kiln_models::weights::WeightSource;
use kiln_models::weights::dequant::dequantize_view;
use kiln_models::weights::gguf::GgufFile;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: default model not found at {} (set KILN_TEST_GGUF)",
            p.display()
        );
        None
    }
}

#[test]
fn metadata_tensor_types_and_config() {
    let Some(path) = model_path() else { return };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.data_start(), 1_785_664);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.get_u64("llama.block_count"), Some(30));
    assert_eq!(g.get_u64("llama.embedding_length"), Some(576));
    assert_eq!(g.get_u64("llama.feed_forward_length"), Some(1536));
    assert_eq!(g.get_u64("llama.attention.head_count"), Some(9));
    assert_eq!(g.get_u64("llama.attention.head_count_kv"), Some(3));
    assert_eq!(g.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(g.get_u64("llama.context_length"), Some(8192));
    let counts = g.type_counts();
    assert!(counts.contains(&(WeightDType::Q4_1, 210)), "{counts:?}");
    assert!(counts.contains(&(WeightDType::Q8_0, 1)), "{counts:?}");
    assert_eq!(g.quantization_label().as_deref(), Some("Q4_1"));
    let t = g.tokenizer_metadata().unwrap();
    assert_eq!(t.model, "gpt2");
    assert_eq!(t.pre.as_deref(), Some("smollm"));
    assert_eq!(t.tokens.len(), 49152);
    assert_eq!(t.merges.len(), 48900);
    assert_eq!((t.bos_token_id, t.eos_token_id), (Some(1), Some(2)));
    assert!(t.chat_template.unwrap().contains("<|im_start|>"));
    let c = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.head_dim, c.vocab_size),
        (576, 30, 64, 49152)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert!(g.tensor("lm_head.weight").unwrap().is_none());
}

#[test]
fn q_and_k_rows_match_transformers_reverse_permutation() {
    let Some(path) = model_path() else { return };
    let g = GgufFile::open(&path).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/qk_rows.json")).expect("fixture");
    for (gguf_name, hf) in [
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
        ),
    ] {
        let view = g.tensor(hf).unwrap().unwrap();
        let cols = view.shape[1];
        let w = dequantize_view(&view).unwrap();
        for (row, expected) in fixture[gguf_name].as_object().unwrap() {
            let r: usize = row.parse().unwrap();
            let got = &w[r * cols..r * cols + 8];
            let want: Vec<f32> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, &want[..], "{hf} row {r}");
        }
    }
}
