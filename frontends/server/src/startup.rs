//! The start-up summary `kiln serve` logs once the engine is up: the model,
//! the backend and device, the memory split, and where it listens.

use kiln_engine::StartupSummary;
use kiln_engine::memory::human_bytes;

/// Where the server listens and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// `host:port` as bound.
    pub address: String,
    /// Route families mounted (`openai`, `tgi`, ...), with their main routes.
    pub routes: Vec<String>,
    /// Whether an API key is required.
    pub api_key: bool,
}

/// ` (Q4_K 721.72 MiB, Q6_K 337.61 MiB, F32 566.00 KiB)` when the weights mix
/// formats; nothing for a single format (the model line names it).
fn by_format(formats: &[kiln_protocol::FormatBytes]) -> String {
    if formats.len() < 2 {
        return String::new();
    }
    let parts: Vec<String> = formats
        .iter()
        .map(|f| format!("{} {}", f.format, human_bytes(f.bytes)))
        .collect();
    format!(" ({})", parts.join(", "))
}

/// The summary lines, in order.
pub fn summary_lines(s: &StartupSummary, listening: &Listening) -> Vec<String> {
    let i = &s.info;
    let count = |n: u64| {
        if n >= 1_000_000_000 {
            format!("{:.2}B", n as f64 / 1e9)
        } else {
            format!("{:.0}M", n as f64 / 1e6)
        }
    };
    let params = match i.num_active_parameters {
        active if active > 0 && active < i.num_parameters => {
            format!("{} ({} active)", count(i.num_parameters), count(active))
        }
        _ => count(i.num_parameters),
    };
    let weights = match &i.quantization {
        Some(q) => format!("{} weights, {} activations", q, i.dtype),
        None => format!("{} weights and activations", i.dtype),
    };
    let mut lines = vec![
        format!(
            "model: {} ({}, {} parameters, {}, {} from {})",
            i.model_id, i.architecture, params, weights, i.format, i.model_path
        ),
        format!(
            "backend: {} on {} ({})",
            i.backend, s.device.description, s.backend_source
        ),
        format!(
            "memory: weights {}{}, step buffers {}, {}",
            human_bytes(i.weights_bytes),
            by_format(&i.weights_by_format),
            human_bytes(s.activation_bytes),
            s.kv.log_line()
        ),
    ];
    lines.extend(s.kv.window_line());
    lines.extend([
        format!(
            "scheduling: max_model_len {}, max_num_seqs {}, max_num_batched_tokens {}, prefix caching {}",
            i.max_model_len,
            i.max_num_seqs,
            i.max_num_batched_tokens,
            if i.enable_prefix_caching { "on" } else { "off" }
        ),
        format!(
            "listening on http://{}{}: {}",
            listening.address,
            if listening.api_key {
                " (API key required)"
            } else {
                ""
            },
            listening.routes.join("; ")
        ),
    ]);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::FormatBytes;

    #[test]
    fn mixed_formats_are_listed_and_a_single_one_is_not() {
        let f = |format: &str, bytes| FormatBytes {
            format: format.into(),
            tensors: 1,
            bytes,
        };
        assert_eq!(by_format(&[f("Q8_0", 1 << 20)]), "");
        assert_eq!(
            by_format(&[f("Q4_K", 700 << 20), f("F32", 1 << 20)]),
            format!(
                " (Q4_K {}, F32 {})",
                human_bytes(700 << 20),
                human_bytes(1 << 20)
            )
        );
    }
}
