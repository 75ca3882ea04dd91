//! Bounds on what a request may ask for, so that no constraint can stall the
//! engine: sizes checked before compiling, and llguidance's own budgets for
//! compiling (lexer fuel, grammar size) and for each token mask (lexer fuel
//! and Earley items per step; a step over budget fails its request only).

use llguidance::api::ParserLimits;

/// Limits on structured-output constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes of a JSON schema, regex or grammar as sent.
    pub max_spec_bytes: usize,
    /// Alternatives of a choice.
    pub max_choices: usize,
    /// Symbols in the compiled grammar's productions.
    pub max_grammar_size: usize,
    /// Lexer work allowed while compiling (llguidance fuel; about 50 per µs).
    pub compile_fuel: u64,
    /// Lexer work allowed per token mask (about 14 per µs).
    pub step_fuel: u64,
    /// Earley items allowed per token mask (about 20 per µs).
    pub step_items: usize,
    /// Lexer states a grammar may create (about 1–2 kB each).
    pub max_lexer_states: usize,
    /// Compiled grammars kept for reuse.
    pub cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spec_bytes: 128 * 1024,
            max_choices: 1024,
            max_grammar_size: 200_000,
            compile_fuel: 1_000_000,
            step_fuel: 100_000,
            step_items: 30_000,
            max_lexer_states: 100_000,
            cache_entries: 64,
        }
    }
}

impl Limits {
    /// llguidance's parser limits under these bounds.
    pub(crate) fn parser_limits(&self) -> ParserLimits {
        ParserLimits {
            max_items_in_row: 2000,
            initial_lexer_fuel: self.compile_fuel,
            step_lexer_fuel: self.step_fuel,
            step_max_items: self.step_items,
            max_lexer_states: self.max_lexer_states,
            max_grammar_size: self.max_grammar_size,
            precompute_large_lexemes: true,
            verbose_errors: false,
        }
    }
}

/// Why a constraint was refused; `param` is the request's kind of
/// constraint (`json_schema`, `regex`, `choice`, `grammar`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {message}")]
pub struct ConstraintError {
    /// Which kind of constraint.
    pub param: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl ConstraintError {
    pub(crate) fn new(param: &'static str, message: impl Into<String>) -> Self {
        ConstraintError {
            param,
            message: message.into(),
        }
    }
}
