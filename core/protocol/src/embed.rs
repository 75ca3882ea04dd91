use serde::{Deserialize, Serialize};

use crate::{EngineError, PromptInput};

/// How a sequence's hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The average over every token.
    #[default]
    Mean,
    /// The last token's state (decoder embedding models).
    Last,
    /// The first token's state (`[CLS]`).
    Cls,
}

impl Pooling {
    /// Parse `mean`, `last` or `cls`.
    pub fn parse(name: &str) -> Option<Pooling> {
        match name.to_ascii_lowercase().as_str() {
            "mean" => Some(Pooling::Mean),
            "last" | "lasttoken" | "last_token" => Some(Pooling::Last),
            "cls" => Some(Pooling::Cls),
            _ => None,
        }
    }

    /// `mean`, `last` or `cls`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Last => "last",
            Pooling::Cls => "cls",
        }
    }
}

/// What the served model does with embedding requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// Length of the vectors.
    pub dimensions: u32,
    /// How hidden states are pooled.
    pub pooling: Pooling,
    /// The model's vectors are L2-normalized unless the caller says otherwise.
    pub normalize: bool,
    /// Leading-prefix lengths the model was trained to serve (matryoshka);
    /// empty when only the full vector is meaningful.
    pub matryoshka_dimensions: Vec<u32>,
    /// Whether the model also generates text (decoders do; encoders cannot).
    pub generates: bool,
}

impl EmbeddingSpec {
    /// Whether a caller may ask for `dimensions` (truncation).
    pub fn check_dimensions(&self, dimensions: u32) -> Result<(), EngineError> {
        if dimensions == self.dimensions {
            return Ok(());
        }
        if dimensions == 0 || dimensions > self.dimensions {
            return Err(EngineError::invalid(
                "dimensions",
                format!(
                    "`dimensions` must be between 1 and {}, got {dimensions}",
                    self.dimensions
                ),
            ));
        }
        if self.matryoshka_dimensions.is_empty() {
            return Err(EngineError::invalid(
                "dimensions",
                format!(
                    "this model was not trained for shortened (matryoshka) embeddings; \
                     leave out `dimensions` or set it to {}",
                    self.dimensions
                ),
            ));
        }
        Ok(())
    }
}

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// Text (tokenized with the model's special tokens) or token ids.
    pub input: PromptInput,
    /// Cut an input longer than the context to its first tokens instead of refusing it.
    pub truncate: bool,
    /// A caller-chosen label for logs.
    pub tag: Option<String>,
}

/// The pooled, not yet normalized vector of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Full width, as pooled; each frontend shortens (`dimensions`) and
    /// normalizes it as its API asks.
    pub vector: Vec<f32>,
    /// Tokens the input had after tokenization and truncation.
    pub prompt_tokens: u32,
}

/// `vector` cut to its first `dimensions` values (all when `None`) and, when
/// `normalize`, scaled to unit L2 norm (a zero vector stays zero).
pub fn finish_embedding(
    mut vector: Vec<f32>,
    dimensions: Option<u32>,
    normalize: bool,
) -> Vec<f32> {
    if let Some(d) = dimensions {
        vector.truncate(d as usize);
    }
    if normalize {
        let norm = vector
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            vector.iter_mut().for_each(|x| *x *= inv);
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishing_truncates_then_normalizes() {
        let v = finish_embedding(vec![3.0, 4.0, 12.0], Some(2), true);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(finish_embedding(vec![0.0, 0.0], None, true), vec![0.0, 0.0]);
        assert_eq!(
            finish_embedding(vec![3.0, 4.0], None, false),
            vec![3.0, 4.0]
        );
    }

    #[test]
    fn dimensions_need_a_matryoshka_model() {
        let mut spec = EmbeddingSpec {
            dimensions: 8,
            pooling: Pooling::Mean,
            normalize: true,
            matryoshka_dimensions: vec![],
            generates: false,
        };
        assert!(spec.check_dimensions(8).is_ok());
        let e = spec.check_dimensions(4).unwrap_err().to_string();
        assert!(e.contains("matryoshka"), "{e}");
        spec.matryoshka_dimensions = vec![4, 8];
        assert!(spec.check_dimensions(4).is_ok());
        assert!(spec.check_dimensions(9).is_err());
        assert!(spec.check_dimensions(0).is_err());
    }

    #[test]
    fn pooling_names_round_trip() {
        for p in [Pooling::Mean, Pooling::Last, Pooling::Cls] {
            assert_eq!(Pooling::parse(p.name()), Some(p));
        }
        assert_eq!(Pooling::parse("max"), None);
    }
}
