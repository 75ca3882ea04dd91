//! Chat templates: Jinja sources from `tokenizer_config.json`,
//! `chat_template.jinja` or GGUF metadata, rendered with minijinja plus the
//! helpers Hugging Face templates rely on (`raise_exception`, `tojson` with
//! Python's spacing, `strftime_now`, Python string and dict methods).

use std::sync::Arc;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

/// Template errors, with the template's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not compile.
    #[error("the chat template is invalid: {0}")]
    Syntax(String),
    /// Rendering failed (including `raise_exception` from the template).
    #[error("{0}")]
    Render(String),
    /// A template file could not be read.
    #[error("cannot read chat template {path}: {reason}")]
    File {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What a template sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatContext {
    /// Messages: objects with `role`, `content` and anything else.
    pub messages: Vec<serde_json::Value>,
    /// Append the assistant-turn opener.
    pub add_generation_prompt: bool,
    /// Tool definitions.
    pub tools: Option<serde_json::Value>,
    /// Extra variables.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The BOS token string.
    pub bos_token: Option<String>,
    /// The EOS token string.
    pub eos_token: Option<String>,
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    source: Arc<str>,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .finish()
    }
}

impl PartialEq for ChatTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Serialize like Python's `json.dumps(v, ensure_ascii=False)` (", " and ": "
/// separators) or with `indent`.
pub fn python_json(v: &serde_json::Value, indent: Option<usize>) -> String {
    fn go(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
        let nl = |out: &mut String, level: usize| {
            if let Some(n) = indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * level));
            }
        };
        match v {
            serde_json::Value::Array(a) if !a.is_empty() => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if indent.is_some() { "," } else { ", " });
                    }
                    nl(out, level + 1);
                    go(x, indent, level + 1, out);
                }
                nl(out, level);
                out.push(']');
            }
            serde_json::Value::Object(o) if !o.is_empty() => {
                out.push('{');
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if indent.is_some() { "," } else { ", " });
                    }
                    nl(out, level + 1);
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    go(x, indent, level + 1, out);
                }
                nl(out, level);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    go(v, indent, 0, &mut s);
    s
}

fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(python_json(&json, indent)))
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

impl ChatTemplate {
    /// Compile a template source.
    pub fn new(source: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        Ok(ChatTemplate {
            source: Arc::from(source),
            env: Arc::new(env),
        })
    }

    /// An inline template, or the contents of a file when `spec` names one.
    pub fn from_str_or_file(spec: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let path = std::path::Path::new(spec);
        if !spec.contains("{%") && !spec.contains("{{") && path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| ChatTemplateError::File {
                path: spec.to_string(),
                reason: e.to_string(),
            })?;
            return ChatTemplate::new(&text);
        }
        if !spec.contains("{%") && !spec.contains("{{") {
            return Err(ChatTemplateError::File {
                path: spec.to_string(),
                reason: "no such file, and it is not an inline Jinja template".into(),
            });
        }
        ChatTemplate::new(spec)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render a conversation.
    pub fn render(&self, ctx: &ChatContext) -> Result<String, ChatTemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        let mut vars = ctx.extra.clone();
        vars.insert(
            "messages".into(),
            serde_json::Value::Array(ctx.messages.clone()),
        );
        vars.insert(
            "add_generation_prompt".into(),
            ctx.add_generation_prompt.into(),
        );
        if let Some(t) = &ctx.tools {
            vars.insert("tools".into(), t.clone());
        }
        vars.insert(
            "bos_token".into(),
            ctx.bos_token.clone().unwrap_or_default().into(),
        );
        vars.insert(
            "eos_token".into(),
            ctx.eos_token.clone().unwrap_or_default().into(),
        );
        tmpl.render(Value::from(minijinja::value::Serde(&vars)))
            .map_err(|e| {
                let mut msg = e.to_string();
                // `raise_exception` messages read best without minijinja's prefix.
                if e.kind() == ErrorKind::InvalidOperation
                    && let Some(detail) = e.detail()
                {
                    msg = detail.to_string();
                }
                ChatTemplateError::Render(msg)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: serde_json::Value) -> Vec<serde_json::Value> {
        v.as_array().unwrap().clone()
    }

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_chatml() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = t
            .render(&ChatContext {
                messages: msgs(
                    json!([{"role": "user", "content": "What is the capital of France?"}]),
                ),
                add_generation_prompt: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_style_template() {
        let src = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
        let t = ChatTemplate::new(src).unwrap();
        let out = t
            .render(&ChatContext {
                messages: msgs(json!([{"role": "user", "content": " hi "}])),
                add_generation_prompt: true,
                bos_token: Some("<|begin_of_text|>".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn mistral_alternation_raises() {
        let src = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let ok = t
            .render(&ChatContext {
                messages: msgs(json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])),
                bos_token: Some("<s>".into()),
                eos_token: Some("</s>".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ok, "<s>[INST] a [/INST]b</s>");
        let err = t
            .render(&ChatContext {
                messages: msgs(json!([{"role": "assistant", "content": "b"}])),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation roles must alternate"),
            "{err}"
        );
    }

    #[test]
    fn tojson_matches_python_and_pycompat_methods_work() {
        let src = "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ messages[0].content.strip().upper() }}|{{ strftime_now('%Y') | length }}|{% for k, v in tools[0].items() %}{{ k }}{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let out = t
            .render(&ChatContext {
                messages: msgs(json!([{"role": "user", "content": "  hé  "}])),
                tools: Some(json!([{"name": "f", "args": {"x": 1, "a": [1, 2]}}])),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            out,
            "[{\"name\": \"f\", \"args\": {\"x\": 1, \"a\": [1, 2]}}]|{\n  \"name\": \"f\",\n  \"args\": {\n    \"x\": 1,\n    \"a\": [\n      1,\n      2\n    ]\n  }\n}|HÉ|4|nameargs"
        );
    }

    #[test]
    fn syntax_errors_and_missing_files() {
        assert!(matches!(
            ChatTemplate::new("{% for %}"),
            Err(ChatTemplateError::Syntax(_))
        ));
        assert!(matches!(
            ChatTemplate::from_str_or_file("/no/such/template.jinja"),
            Err(ChatTemplateError::File { .. })
        ));
        assert!(ChatTemplate::from_str_or_file("{{ 'x' }}").is_ok());
    }
}
