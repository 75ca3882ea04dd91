//! A GGUF file seen under one family's Hugging Face tensor names, so the
//! decoder loads every family the same way from either format. Names are
//! translated role by role ([`crate::names`]); Llama-architecture Q/K rows
//! come back un-permuted as the file reader restores them.

use std::collections::HashMap;

use crate::names::{Part, Role, gguf_name, hf_name};
use crate::registry::Family;
use crate::weights::gguf::{GgufFile, unpermute_rows};
use crate::weights::{TensorView, WeightError, WeightSource};

/// Every role a decoder may ask for.
const ROLES: [Role; 29] = [
    Role::Embed,
    Role::Positions,
    Role::TokenTypes,
    Role::EmbedNorm,
    Role::FinalNorm,
    Role::LmHead,
    Role::AttnNorm,
    Role::Q,
    Role::K,
    Role::V,
    Role::Qkv,
    Role::O,
    Role::QNorm,
    Role::KNorm,
    Role::PostAttnNorm,
    Role::FfnNorm,
    Role::PostFfnNorm,
    Role::Gate,
    Role::Up,
    Role::GateUp,
    Role::Down,
    Role::Router,
    Role::ExpertGates,
    Role::ExpertUps,
    Role::ExpertDowns,
    Role::SharedGate,
    Role::SharedUp,
    Role::SharedDown,
    Role::SharedExpertGate,
];

/// A GGUF file whose tensors answer to `family`'s Hugging Face names.
pub struct GgufWeights {
    file: GgufFile,
    family: Family,
    /// Hugging Face name → GGUF name, for the tensors the file has.
    names: HashMap<String, String>,
}

impl GgufWeights {
    /// Wrap `file` for `family` with `layers` decoder layers.
    pub fn new(file: GgufFile, family: Family, layers: usize) -> GgufWeights {
        let mut names = HashMap::new();
        let layer_ids = std::iter::once(None).chain((0..layers).map(Some));
        for layer in layer_ids {
            for role in ROLES {
                for part in [Part::Weight, Part::Bias] {
                    let (Some(hf), Some(gg)) = (
                        hf_name(family, role, layer, part),
                        gguf_name(family, role, layer, part),
                    ) else {
                        continue;
                    };
                    if file.tensor_info(&gg).is_some() {
                        names.insert(hf, gg);
                    }
                }
            }
        }
        GgufWeights {
            file,
            family,
            names,
        }
    }

    /// Heads whose rows llama.cpp's Llama converter permuted in `gguf`, for
    /// families it converts with that code under another architecture name
    /// (Granite); the file reader restores the `llama` architecture itself.
    fn permuted_heads(&self, gguf: &str) -> Option<usize> {
        if self.family != Family::Granite {
            return None;
        }
        let arch = self.file.architecture()?;
        let heads = self.file.get_u64(&format!("{arch}.attention.head_count"))? as usize;
        let part = gguf.split('.').nth(2)?;
        match part {
            "attn_q" => Some(heads),
            "attn_k" => Some(
                self.file
                    .get_u64(&format!("{arch}.attention.head_count_kv"))
                    .map_or(heads, |h| h as usize),
            ),
            _ => None,
        }
    }

    fn unpermute<'a>(
        &self,
        view: TensorView<'a>,
        heads: usize,
    ) -> Result<TensorView<'a>, WeightError> {
        let rows = view.shape.first().copied().unwrap_or(0);
        let data = unpermute_rows(&view.data, rows, heads).ok_or_else(|| {
            WeightError::format(
                self.file.path().display(),
                format!("cannot restore the row order of `{}`", view.name),
            )
        })?;
        Ok(TensorView {
            data: std::borrow::Cow::Owned(data),
            ..view
        })
    }

    /// The wrapped file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl WeightSource for GgufWeights {
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError> {
        let Some(gguf) = self.names.get(name) else {
            return Ok(None);
        };
        if let Some(heads) = self.permuted_heads(gguf) {
            let Some(mut view) = self.file.raw_tensor(gguf) else {
                return Ok(None);
            };
            view.name = name.to_string();
            return self.unpermute(view, heads).map(Some);
        }
        // The file's own Llama name table restores permuted Q/K rows of `llama` files.
        if let Some(hf) = crate::weights::gguf::hf_name(gguf)
            && let Some(mut view) = self.file.tensor(&hf)?
        {
            view.name = name.to_string();
            return Ok(Some(view));
        }
        Ok(self.file.raw_tensor(gguf).map(|mut view| {
            view.name = name.to_string();
            view
        }))
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.keys().cloned().collect();
        v.sort();
        v
    }

    fn total_bytes(&self) -> u64 {
        self.file.total_bytes()
    }

    fn release(&self, data: &[u8]) {
        self.file.release(data);
    }
}
