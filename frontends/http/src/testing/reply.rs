//! What a scripted sequence recites: the text between `[reply]` and
//! `[/reply]` in the prompt when there is one (tests script tool calls and
//! other model output this way), else for a structured output the first
//! text its grammar admits (preferring to close strings, objects and lists
//! and to stop), else the story.

use kiln_protocol::{PromptInput, StructuredOutput, TokenId};
use kiln_sampler::ConstraintFactory;
use kiln_structured::Grammars;

use super::vocab;

const REPLY_OPEN: &str = "[reply]";
const REPLY_CLOSE: &str = "[/reply]";
/// Bytes tried first when a grammar leaves a choice (EOS before all).
const PREFERRED: &[u8] = b"\"}],1atn";
/// Most bytes of a grammar-derived reply.
const MAX_REPLY_BYTES: usize = 2048;

/// The scripted reply set in `prompt`, if any.
pub fn scripted_reply(prompt: &str) -> Option<&str> {
    let start = prompt.find(REPLY_OPEN)? + REPLY_OPEN.len();
    let len = prompt[start..].find(REPLY_CLOSE)?;
    Some(&prompt[start..start + len])
}

/// The tokens a sequence of this request recites, when not the story.
pub fn reply_tokens(
    prompt: &PromptInput,
    structured: Option<&StructuredOutput>,
    grammars: &Grammars,
) -> Option<Vec<TokenId>> {
    let text = match prompt {
        PromptInput::Text(t) => Some(t.clone()),
        PromptInput::TokenIds(ids) => vocab::detokenize(ids, false),
    };
    if let Some(reply) = text.as_deref().and_then(scripted_reply) {
        return Some(vocab::tokenize(reply, false));
    }
    let spec = structured?;
    Some(vocab::tokenize(
        &first_admitted_text(grammars, spec)?,
        false,
    ))
}

/// The first text `spec` admits when every choice takes EOS, then the
/// preferred bytes, then the lowest allowed byte.
fn first_admitted_text(grammars: &Grammars, spec: &StructuredOutput) -> Option<String> {
    let mut constraint = grammars.start(spec).ok()?;
    let eos = grammars.eos_token();
    let mut out = Vec::new();
    while out.len() < MAX_REPLY_BYTES && !constraint.is_complete() {
        let mask = constraint.allowed_tokens().ok()?;
        if mask.contains(eos) {
            break;
        }
        let byte = PREFERRED
            .iter()
            .map(|&b| u32::from(b))
            .find(|&b| mask.contains(b))
            .or_else(|| mask.iter().find(|&t| t < 256))?;
        constraint.consume(byte).ok()?;
        out.push(byte as u8);
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_structured::{Limits, Vocabulary};

    #[test]
    fn replies_come_from_the_prompt_or_the_grammar() {
        let g = Grammars::new(Vocabulary::bytes(), Limits::default()).unwrap();
        assert_eq!(
            scripted_reply("x [reply]hi there[/reply] y"),
            Some("hi there")
        );
        assert_eq!(scripted_reply("x [reply]open"), None);
        let schema = r#"{"type":"object","properties":{"a":{"type":"string"},"n":{"type":"integer"}},"required":["a","n"]}"#;
        let text = first_admitted_text(&g, &StructuredOutput::JsonSchema(schema.into())).unwrap();
        assert_eq!(text, r#"{"a": "", "n": 1}"#);
        let choice = StructuredOutput::Choice(vec!["red".into(), "blue".into()]);
        assert_eq!(first_admitted_text(&g, &choice).unwrap(), "blue");
    }
}
