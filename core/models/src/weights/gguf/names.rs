//! Tensor names and row order: GGUF (llama.cpp) ↔ Hugging Face.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` (weights
//! and biases) of Llama-architecture models so that RoPE rotates adjacent
//! pairs: GGUF row `h·hd + 2j + s` holds HF row `h·hd + s·hd/2 + j`
//! (`s ∈ {0,1}`, `j < hd/2`). Kiln undoes it at load time so that one RoPE
//! layout (rotate-half) serves every checkpoint, as transformers does.

/// GGUF architectures whose Q/K rows llama.cpp's converter permutes (and
/// transformers un-permutes when loading).
pub const PERMUTED_QK_ARCHITECTURES: [&str; 1] = ["llama"];

const LAYER_PARTS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const GLOBAL_PARTS: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// A canonical decimal layer index (`"7"`, not `"07"` or `"+7"`).
fn layer_index(s: &str) -> Option<usize> {
    let n: usize = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// The Hugging Face name of a Llama-family GGUF tensor
/// (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`);
/// `None` for tensors without one (`rope_freqs.weight`, other families).
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if let Some((_, hf)) = GLOBAL_PARTS.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{suffix}"));
    }
    let (layer, part) = stem.strip_prefix("blk.")?.split_once('.')?;
    let layer = layer_index(layer)?;
    let (_, hf) = LAYER_PARTS.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The GGUF name of a Hugging Face tensor name (inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if let Some((g, _)) = GLOBAL_PARTS.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let (layer, part) = stem.strip_prefix("model.layers.")?.split_once('.')?;
    let layer = layer_index(layer)?;
    let (g, _) = LAYER_PARTS.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// Which head count permutes a GGUF tensor's rows: query heads for
/// `attn_q`, KV heads for `attn_k`, nothing for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkRole {
    /// `blk.N.attn_q.*`: permuted over the query heads.
    Query,
    /// `blk.N.attn_k.*`: permuted over the KV heads.
    Key,
}

/// The role of a GGUF tensor in the Q/K permutation, if any.
pub fn qk_role(gguf: &str) -> Option<QkRole> {
    let rest = gguf.strip_prefix("blk.")?;
    let (_, part) = rest.split_once('.')?;
    match part.split('.').next()? {
        "attn_q" => Some(QkRole::Query),
        "attn_k" => Some(QkRole::Key),
        _ => None,
    }
}

/// Row geometry of a permuted tensor: `rows = heads × head_dim`, `head_dim`
/// even, `data` made of `rows` equal runs of bytes.
fn row_geometry(data_len: usize, rows: usize, heads: usize) -> Option<(usize, usize)> {
    if heads == 0 || rows == 0 || !rows.is_multiple_of(heads) {
        return None;
    }
    let hd = rows / heads;
    if !hd.is_multiple_of(2) || !data_len.is_multiple_of(rows) {
        return None;
    }
    Some((hd, data_len / rows))
}

/// Move whole rows: output row `r` is input row `source(r)`.
fn shuffle_rows(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    source: impl Fn(usize) -> usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for r in 0..rows {
        let s = source(r);
        out.extend_from_slice(&data[s * row_bytes..(s + 1) * row_bytes]);
    }
    out
}

/// GGUF → HF row order: HF row `h·hd + s·hd/2 + j` is GGUF row `h·hd + 2j + s`.
/// `data` is `rows` rows of equal byte length (whole quantization blocks).
/// `None` when `rows` is not `heads` × an even head size or `data` is not
/// whole rows.
pub fn unpermute_rows(data: &[u8], rows: usize, heads: usize) -> Option<Vec<u8>> {
    let (hd, row_bytes) = row_geometry(data.len(), rows, heads)?;
    let half = hd / 2;
    Some(shuffle_rows(data, rows, row_bytes, |r| {
        let (h, within) = (r / hd, r % hd);
        let (s, j) = (within / half, within % half);
        h * hd + 2 * j + s
    }))
}

/// HF → GGUF row order, what llama.cpp's converter does (inverse of
/// [`unpermute_rows`]): GGUF row `h·hd + 2j + s` is HF row `h·hd + s·hd/2 + j`.
pub fn permute_rows(data: &[u8], rows: usize, heads: usize) -> Option<Vec<u8>> {
    let (hd, row_bytes) = row_geometry(data.len(), rows, heads)?;
    let half = hd / 2;
    Some(shuffle_rows(data, rows, row_bytes, |r| {
        let (h, within) = (r / hd, r % hd);
        let (j, s) = (within / 2, within % 2);
        h * hd + s * half + j
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let pairs = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            (
                "blk.12.attn_q.weight",
                "model.layers.12.self_attn.q_proj.weight",
            ),
            ("blk.1.attn_k.bias", "model.layers.1.self_attn.k_proj.bias"),
            (
                "blk.2.attn_v.weight",
                "model.layers.2.self_attn.v_proj.weight",
            ),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
            ),
            (
                "blk.4.ffn_norm.weight",
                "model.layers.4.post_attention_layernorm.weight",
            ),
            (
                "blk.5.ffn_gate.weight",
                "model.layers.5.mlp.gate_proj.weight",
            ),
            ("blk.6.ffn_up.weight", "model.layers.6.mlp.up_proj.weight"),
            (
                "blk.29.ffn_down.weight",
                "model.layers.29.mlp.down_proj.weight",
            ),
        ];
        for (g, h) in pairs {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        for unmapped in [
            "rope_freqs.weight",
            "blk.01.attn_q.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "blk.0.attn_q.scale",
            "output",
        ] {
            assert_eq!(hf_name(unmapped), None, "{unmapped}");
        }
        assert_eq!(qk_role("blk.3.attn_q.weight"), Some(QkRole::Query));
        assert_eq!(qk_role("blk.3.attn_k.bias"), Some(QkRole::Key));
        assert_eq!(qk_role("blk.3.attn_v.weight"), None);
        assert_eq!(qk_role("token_embd.weight"), None);
    }

    #[test]
    fn permutation_matches_the_formula_and_inverts() {
        // One head of 8 rows, one byte per row: GGUF rows hold HF rows 0,4,1,5,2,6,3,7.
        let hf: Vec<u8> = (0..8).collect();
        let gguf = permute_rows(&hf, 8, 1).unwrap();
        assert_eq!(gguf, vec![0, 4, 1, 5, 2, 6, 3, 7]);
        assert_eq!(unpermute_rows(&gguf, 8, 1).unwrap(), hf);
        // Two heads of 4 rows, three bytes per row.
        let hf: Vec<u8> = (0..24).collect();
        let back = unpermute_rows(&permute_rows(&hf, 8, 2).unwrap(), 8, 2).unwrap();
        assert_eq!(back, hf);
        assert_eq!(unpermute_rows(&hf, 8, 3), None, "8 rows over 3 heads");
        assert_eq!(unpermute_rows(&hf[..9], 3, 1), None, "odd head size");
        assert_eq!(unpermute_rows(&hf[..23], 8, 2), None, "partial row");
        assert_eq!(unpermute_rows(&[], 0, 1), None);
    }
}
