//! Ollama's `options` map: typed like Ollama checks it (wrong types are a
//! 400 `option "x" must be of type ...`; unknown keys are ignored), with
//! Ollama's defaults, and sampling values range-checked under their Ollama
//! names (`option "top_p" must be in (0, 1], got 1.5`).
//!
//! `num_predict` keeps Ollama's meaning: a positive value caps the new
//! tokens; `-1` (infinite), `-2` (fill the context) and any other value
//! ≤ 0 generate up to the end of the context.

use axum::http::StatusCode;
use kiln_http::{ApiError, Dialect};
use serde_json::{Map, Value};

fn bad(message: String) -> ApiError {
    ApiError::new(Dialect::Ollama, StatusCode::BAD_REQUEST, message)
}

/// The options Kiln acts on (others are accepted and ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Most new tokens; ≤ 0 means up to the context.
    pub num_predict: i64,
    /// Temperature (0: greedy).
    pub temperature: f32,
    /// Top-k (≤ 0: off).
    pub top_k: i64,
    /// Nucleus mass.
    pub top_p: f32,
    /// Drops tokens below `min_p` × the top probability; in [0, 1] (0: off).
    pub min_p: f32,
    /// Multiplicative, > 0 (1: off).
    pub repeat_penalty: f32,
    /// Additive, in [-2, 2] (0: off).
    pub presence_penalty: f32,
    /// Scaled by a token's count so far, in [-2, 2] (0: off).
    pub frequency_penalty: f32,
    /// Seed (negative: random).
    pub seed: i64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Requested context size (accepted; the context is set at server start and
    /// prompts are never truncated to fit it).
    pub num_ctx: Option<i64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            num_predict: -1,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: -1,
            stop: Vec::new(),
            num_ctx: None,
        }
    }
}

impl Options {
    /// Range checks of the sampling values, naming the Ollama option.
    pub fn validate(&self) -> Result<(), ApiError> {
        let checks: [(&str, f32, bool, &str); 6] = [
            (
                "temperature",
                self.temperature,
                self.temperature >= 0.0,
                "must be non-negative",
            ),
            (
                "top_p",
                self.top_p,
                self.top_p > 0.0 && self.top_p <= 1.0,
                "must be in (0, 1]",
            ),
            (
                "min_p",
                self.min_p,
                (0.0..=1.0).contains(&self.min_p),
                "must be in [0, 1]",
            ),
            (
                "repeat_penalty",
                self.repeat_penalty,
                self.repeat_penalty > 0.0,
                "must be positive",
            ),
            (
                "presence_penalty",
                self.presence_penalty,
                (-2.0..=2.0).contains(&self.presence_penalty),
                "must be in [-2, 2]",
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                (-2.0..=2.0).contains(&self.frequency_penalty),
                "must be in [-2, 2]",
            ),
        ];
        for (name, value, ok, rule) in checks {
            if !value.is_finite() {
                return Err(bad(format!("option \"{name}\" must be a finite number")));
            }
            if !ok {
                return Err(bad(format!("option \"{name}\" {rule}, got {value}")));
            }
        }
        Ok(())
    }
}

/// The JSON type Ollama expects for an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// A number, truncated to an integer.
    Integer,
    /// A number.
    Float,
    /// `true` or `false`.
    Boolean,
    /// A list of strings.
    StringArray,
}

impl OptionType {
    fn name(self) -> &'static str {
        match self {
            OptionType::Integer => "integer",
            OptionType::Float => "float",
            OptionType::Boolean => "boolean",
            OptionType::StringArray => "array of strings",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            OptionType::Integer | OptionType::Float => v.is_number(),
            OptionType::Boolean => v.is_boolean(),
            OptionType::StringArray => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }
}

/// The type of a known option (`None`: unknown, ignored).
pub fn option_type(key: &str) -> Option<OptionType> {
    use OptionType::*;
    Some(match key {
        "num_predict" | "top_k" | "seed" | "num_ctx" | "repeat_last_n" | "num_keep"
        | "num_batch" | "num_gpu" | "main_gpu" | "num_thread" | "mirostat" => Integer,
        "temperature" | "top_p" | "min_p" | "typical_p" | "repeat_penalty" | "presence_penalty"
        | "frequency_penalty" | "tfs_z" | "mirostat_tau" | "mirostat_eta" => Float,
        "use_mmap" | "use_mlock" | "numa" | "low_vram" | "f16_kv" | "vocab_only"
        | "penalize_newline" | "logits_all" | "embedding_only" => Boolean,
        "stop" => StringArray,
        _ => return None,
    })
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_default()
}

/// Type-checks and reads `options`; null values are skipped.
pub fn parse_options(map: Option<&Map<String, Value>>) -> Result<Options, ApiError> {
    let mut o = Options::default();
    for (key, value) in map.into_iter().flatten() {
        if value.is_null() {
            continue;
        }
        let Some(ty) = option_type(key) else {
            tracing::warn!(option = %key, "ignoring unknown Ollama option");
            continue;
        };
        if !ty.accepts(value) {
            return Err(bad(format!(
                "option \"{key}\" must be of type {}",
                ty.name()
            )));
        }
        let f = number(value);
        match key.as_str() {
            "num_predict" => o.num_predict = f as i64,
            "temperature" => o.temperature = f as f32,
            "top_k" => o.top_k = f as i64,
            "top_p" => o.top_p = f as f32,
            "min_p" => o.min_p = f as f32,
            "repeat_penalty" => o.repeat_penalty = f as f32,
            "presence_penalty" => o.presence_penalty = f as f32,
            "frequency_penalty" => o.frequency_penalty = f as f32,
            "seed" => o.seed = f as i64,
            "num_ctx" => o.num_ctx = Some(f as i64),
            "stop" => {
                o.stop = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            }
            _ => tracing::debug!(option = %key, "accepted Ollama option has no effect in Kiln"),
        }
    }
    o.validate()?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Options, ApiError> {
        parse_options(v.as_object())
    }

    #[test]
    fn defaults_are_ollamas() {
        let o = parse(json!({})).unwrap();
        assert_eq!(
            (o.temperature, o.top_k, o.top_p, o.num_predict, o.seed),
            (0.8, 40, 0.9, -1, -1)
        );
    }

    #[test]
    fn values_and_ignored_keys() {
        let o = parse(
            json!({"num_predict": 5, "temperature": 0, "top_k": 3.0, "stop": ["a"], "seed": 42,
            "num_ctx": 100000, "mirostat": 1, "made_up": "x", "top_p": null}),
        )
        .unwrap();
        assert_eq!(
            (o.num_predict, o.temperature, o.top_k, o.seed),
            (5, 0.0, 3, 42)
        );
        assert_eq!(o.stop, vec!["a"]);
        assert_eq!(o.num_ctx, Some(100000));
        assert_eq!(o.top_p, 0.9);
    }

    #[test]
    fn wrong_types_name_the_option() {
        for (v, msg) in [
            (
                json!({"temperature": "hot"}),
                "option \"temperature\" must be of type float",
            ),
            (
                json!({"num_predict": "5"}),
                "option \"num_predict\" must be of type integer",
            ),
            (
                json!({"stop": "x"}),
                "option \"stop\" must be of type array of strings",
            ),
            (
                json!({"stop": [1]}),
                "option \"stop\" must be of type array of strings",
            ),
            (
                json!({"numa": 1}),
                "option \"numa\" must be of type boolean",
            ),
        ] {
            let e = parse(v).unwrap_err();
            assert_eq!((e.status.as_u16(), e.message.as_str()), (400, msg));
        }
    }

    #[test]
    fn out_of_range_values_name_the_option() {
        for (v, msg) in [
            (
                json!({"temperature": -1}),
                "option \"temperature\" must be non-negative, got -1",
            ),
            (
                json!({"top_p": 1.5}),
                "option \"top_p\" must be in (0, 1], got 1.5",
            ),
            (
                json!({"top_p": 0}),
                "option \"top_p\" must be in (0, 1], got 0",
            ),
            (
                json!({"min_p": 2}),
                "option \"min_p\" must be in [0, 1], got 2",
            ),
            (
                json!({"repeat_penalty": 0}),
                "option \"repeat_penalty\" must be positive, got 0",
            ),
            (
                json!({"presence_penalty": 3}),
                "option \"presence_penalty\" must be in [-2, 2], got 3",
            ),
            (
                json!({"frequency_penalty": -2.5}),
                "option \"frequency_penalty\" must be in [-2, 2], got -2.5",
            ),
            (
                json!({"temperature": 1e300}),
                "option \"temperature\" must be a finite number",
            ),
        ] {
            let e = parse(v).unwrap_err();
            assert_eq!((e.status.as_u16(), e.message.as_str()), (400, msg));
        }
    }

    #[test]
    fn any_non_positive_num_predict_means_up_to_the_context() {
        for n in [-1, -2, -5, 0] {
            assert_eq!(parse(json!({"num_predict": n})).unwrap().num_predict, n);
        }
        assert_eq!(parse(json!({"num_predict": 7.9})).unwrap().num_predict, 7);
    }
}
