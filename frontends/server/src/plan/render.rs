//! The human-readable form of a [`Plan`].

use std::fmt::Write;

use super::Plan;
use super::facts::WeightOrigin;

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn size(bytes: u64) -> String {
    kiln_hub::human_bytes(bytes)
}

fn origin(o: WeightOrigin) -> &'static str {
    match o {
        WeightOrigin::GgufTensors => "summed from the GGUF tensor table",
        WeightOrigin::SafetensorsHeaders => "summed from the safetensors headers",
        WeightOrigin::FileSizes => "from the weight files' sizes",
        WeightOrigin::ParametersTimesDtype => "estimated as parameters × bytes per parameter",
    }
}

fn with_commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The plan as a few labelled lines, a table of tensor-parallel sizes and the
/// recommended command.
pub fn to_text(plan: &Plan) -> String {
    let m = &plan.model;
    let s = &plan.settings;
    let mut out = String::new();
    let active = match m.active_parameters {
        a if a < m.parameters => format!(", {:.2} B active", a as f64 / 1e9),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "Model     {} ({}, {:.2} B parameters{active})",
        m.name,
        m.architecture,
        m.parameters as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "Weights   {} ({} bytes), {}; {}",
        size(m.weight_bytes),
        with_commas(m.weight_bytes),
        m.weight_format,
        origin(m.weight_bytes_origin)
    );
    if m.bytes_by_format.len() > 1 {
        let formats: Vec<String> = m
            .bytes_by_format
            .iter()
            .map(|f| {
                let plural = if f.tensors == 1 { "" } else { "s" };
                let (name, bytes, n) = (&f.format, size(f.bytes), f.tensors);
                format!("{name} {bytes} ({n} tensor{plural})")
            })
            .collect();
        let _ = writeln!(out, "          by format: {}", formats.join(", "));
    }
    let _ = writeln!(
        out,
        "Shape     {} layers, hidden {}, {} heads / {} KV heads × {}, FFN {}, vocab {}, context {}",
        m.shape.layers,
        m.shape.hidden_size,
        m.shape.attention_heads,
        m.shape.kv_heads,
        m.shape.head_dim,
        m.shape.intermediate_size,
        m.shape.vocab_size,
        m.shape.max_position_embeddings
    );
    let _ = writeln!(
        out,
        "KV cache  {} per token ({}), {} per block of {} tokens",
        size(plan.kv_bytes_per_token),
        s.dtype,
        size(plan.kv_bytes_per_token * s.block_size as u64),
        s.block_size
    );
    let device = match s.device_memory_bytes {
        Some(mem) if s.device == "cuda" => format!(
            "cuda, {} per GPU, utilization {} → {} usable",
            size(mem),
            s.gpu_memory_utilization,
            size((mem as f64 * s.gpu_memory_utilization) as u64)
        ),
        Some(mem) => format!("cpu, {} of RAM", size(mem)),
        None => "cpu".to_string(),
    };
    let _ = writeln!(out, "Device    {device}");
    let _ = writeln!(
        out,
        "Serving   max_model_len {}, max_num_seqs {}, max_num_batched_tokens {}",
        s.max_model_len, s.max_num_seqs, s.max_num_batched_tokens
    );
    if let Some(note) = &plan.window_note {
        let _ = writeln!(out, "Window    {note}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>5} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12} {:>9}  fits",
        "GPUs",
        "weights",
        "buffers",
        "overhead",
        "KV budget",
        "KV tokens",
        "concurrency",
        "full-len"
    );
    for o in &plan.options {
        if !o.valid {
            let _ = writeln!(
                out,
                "{:>5}  {}",
                o.tensor_parallel_size,
                o.reason.as_deref().unwrap_or("invalid")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{:>5} {:>12} {:>12} {:>10} {:>12} {:>12} {:>12.2} {:>9}  {}",
            o.tensor_parallel_size,
            gib(o.weight_bytes_per_gpu),
            gib(o.activation_bytes_per_gpu),
            gib(o.overhead_bytes_per_gpu),
            gib(o.kv_budget_bytes_per_gpu),
            with_commas(o.kv_tokens),
            o.max_concurrency,
            o.full_length_sequences,
            if o.fits { "yes" } else { "no" }
        );
    }
    let freed = plan.model.sliding_window.is_some_and(|w| w.freed);
    if freed {
        let _ = writeln!(
            out,
            "(per device; concurrency = KV blocks / the {} blocks a sequence holds at most)",
            plan.kv_blocks_per_sequence
        );
    } else {
        let _ = writeln!(out, "(per device; concurrency = KV tokens / max_model_len)");
    }
    let _ = writeln!(out);
    let r = &plan.recommendation;
    if r.command.is_empty() {
        let _ = writeln!(out, "Does not fit.");
    } else {
        let _ = writeln!(out, "Recommended: {}", r.command);
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(with_commas(0), "0");
        assert_eq!(with_commas(999), "999");
        assert_eq!(with_commas(1000), "1,000");
        assert_eq!(with_commas(98362432), "98,362,432");
    }
}
