//! How a model's weight bytes split over storage formats.

use serde::Serialize;

/// The tensors of one storage format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormatBytes {
    /// `Q4_K`, `Q6_K`, `F32` (GGUF), `BF16`, `I32` (safetensors), or a
    /// quantization scheme's label (`GPTQ int4`).
    pub format: String,
    /// Tensors stored in this format.
    pub tensors: usize,
    /// Their stored bytes.
    pub bytes: u64,
}

impl FormatBytes {
    /// Count one tensor of `bytes` stored as `format` into `by`.
    pub fn tally(by: &mut Vec<FormatBytes>, format: &str, bytes: u64) {
        match by.iter_mut().find(|f| f.format == format) {
            Some(f) => {
                f.tensors += 1;
                f.bytes += bytes;
            }
            None => by.push(FormatBytes {
                format: format.to_string(),
                tensors: 1,
                bytes,
            }),
        }
    }

    /// Sort most bytes first (ties by name), the order every report uses.
    pub fn sort(by: &mut [FormatBytes]) {
        by.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.format.cmp(&b.format)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_by_format_and_sort_by_bytes() {
        let mut by = Vec::new();
        FormatBytes::tally(&mut by, "F32", 10);
        FormatBytes::tally(&mut by, "Q4_K", 300);
        FormatBytes::tally(&mut by, "F32", 5);
        FormatBytes::sort(&mut by);
        assert_eq!(by[0].format, "Q4_K");
        assert_eq!((by[1].tensors, by[1].bytes), (2, 15));
    }
}
