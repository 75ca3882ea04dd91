use serde::{Deserialize, Serialize};

/// A constraint on the whole generated text, enforced token by token
/// (structured outputs). JSON documents travel as text so that this crate
/// carries no JSON values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StructuredOutput {
    /// Any JSON object (`response_format: json_object`, Ollama `format: "json"`).
    JsonObject,
    /// A JSON document valid under this JSON Schema (serialized).
    JsonSchema(String),
    /// Text fully matched by this regular expression (Rust `regex` syntax).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// Text derived from this context-free grammar: Lark syntax, or GBNF
    /// (`root ::= ...`) as llama.cpp and vLLM's EBNF accept.
    Grammar(String),
}

impl StructuredOutput {
    /// The request parameter a frontend names in errors about this constraint.
    pub fn kind(&self) -> &'static str {
        match self {
            StructuredOutput::JsonObject => "json_object",
            StructuredOutput::JsonSchema(_) => "json_schema",
            StructuredOutput::Regex(_) => "regex",
            StructuredOutput::Choice(_) => "choice",
            StructuredOutput::Grammar(_) => "grammar",
        }
    }
}
