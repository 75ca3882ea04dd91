//! What every dialect's embeddings route shares: queueing a request's
//! inputs together (so that the scheduler batches them) and awaiting their
//! vectors, and the little-endian f32 base64 encoding of OpenAI's
//! `encoding_format: "base64"`.

use kiln_engine_api::{ASK_FOR_TRUNCATION, EngineHandle};
use kiln_protocol::{EmbedRequest, Embedding, EmbeddingSpec, EngineError, PromptInput};

use crate::admission::check_capacity;
use crate::config::HttpConfig;

/// The served model's embedding behaviour, or the error naming the fix.
pub fn embedding_spec(handle: &EngineHandle) -> Result<EmbeddingSpec, EngineError> {
    handle.info().embedding.clone().ok_or_else(|| {
        EngineError::invalid(
            "model",
            format!(
                "the served model {} does not compute embeddings; serve an embedding model",
                handle.info().model_id
            ),
        )
    })
}

/// Queue every input, then await each pooled vector, in input order.
/// Nothing stays queued when one input is refused or fails (the others'
/// futures abort on drop). An over-long input's error names
/// `truncation_fix`, the dialect's way to ask for truncation.
pub async fn embed_inputs(
    handle: &EngineHandle,
    config: &HttpConfig,
    inputs: Vec<PromptInput>,
    truncate: bool,
    truncation_fix: &str,
) -> Result<Vec<Embedding>, EngineError> {
    embed_all(handle, config, inputs, truncate)
        .await
        .map_err(|e| match e {
            EngineError::InvalidRequest { message, param } => EngineError::InvalidRequest {
                message: message.replace(ASK_FOR_TRUNCATION, truncation_fix),
                param,
            },
            other => other,
        })
}

async fn embed_all(
    handle: &EngineHandle,
    config: &HttpConfig,
    inputs: Vec<PromptInput>,
    truncate: bool,
) -> Result<Vec<Embedding>, EngineError> {
    if inputs.is_empty() {
        return Err(EngineError::invalid(
            "input",
            "the input is empty; send at least one text",
        ));
    }
    check_capacity(handle, config)?;
    let pending = inputs
        .into_iter()
        .map(|input| {
            handle.embed(EmbedRequest {
                input,
                truncate,
                tag: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    futures::future::try_join_all(pending).await
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (with padding) of `vector`'s little-endian f32 bytes.
pub fn f32_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 00 00 80 3f.
        assert_eq!(f32_base64(&[1.0]), "AACAPw==");
        assert_eq!(f32_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(f32_base64(&[]), "");
    }
}
