//! Tool calling shared by the chat frontends: the tool definitions a
//! request carries, the parsers that find calls in what a model wrote
//! ([`parse`]), and the structured-output schemas that force a call whose
//! arguments validate against the tool's parameters ([`schema`]).

pub mod parse;
pub mod schema;

use serde_json::Value;

pub use parse::{ParsedOutput, ToolCallParser};
pub use schema::{ForcedCalls, check_parameters, forced_calls_constraint, parse_forced_calls};

/// A function tool as the client defined it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    /// The function's name.
    pub name: String,
    /// JSON Schema of the arguments object (`{"type": "object"}` when absent).
    pub parameters: Value,
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function called.
    pub name: String,
    /// The arguments, a JSON value (an object for well-behaved models).
    pub arguments: Value,
}

/// How the server looks for tool calls in free (unconstrained) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolCallSettings {
    /// The parser set with `--tool-call-parser`; `None`: chosen from the chat template.
    pub parser: Option<ToolCallParser>,
    /// `--enable-auto-tool-choice`: `tool_choice: "auto"` is allowed.
    pub auto_tool_choice: bool,
}

impl ToolCallSettings {
    /// The parser in force for a model with this chat template.
    pub fn parser_for(&self, chat_template: Option<&str>) -> ToolCallParser {
        self.parser
            .unwrap_or_else(|| ToolCallParser::for_template(chat_template.unwrap_or("")))
    }
}
