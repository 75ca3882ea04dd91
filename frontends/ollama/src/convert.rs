//! Pure request checks and conversions: model names, `keep_alive`, prompt
//! building (`raw`, `system`, simple `template`s), and the engine request.

use axum::http::StatusCode;
use kiln_engine_api::EngineInfo;
use kiln_http::{ApiError, Dialect};
use kiln_protocol::{GenerateRequest, MAX_TOP_LOGPROBS, SamplingParams, StoppingCriteria};
use serde_json::{Value, json};

use crate::options::Options;
use crate::request::{GenerateIn, MessageIn};

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Dialect::Ollama, StatusCode::BAD_REQUEST, message)
}

/// `name` with `:latest` appended when it has no tag.
pub fn tagged(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The model a request names: a served name, or one with `:latest` added.
/// Missing is a 400, unknown a 404 `model 'x' not found`.
pub fn resolve_model(info: &EngineInfo, requested: Option<&str>) -> Result<String, ApiError> {
    resolve_model_among(info, &[], requested)
}

/// As [`resolve_model`], also accepting `copies`: names given to the served
/// model with `/api/copy`.
pub fn resolve_model_among(
    info: &EngineInfo,
    copies: &[String],
    requested: Option<&str>,
) -> Result<String, ApiError> {
    let name = requested.map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Err(bad("model is required"));
    }
    let served = info
        .served_model_names
        .iter()
        .chain(std::iter::once(&info.model_id))
        .chain(copies);
    let matches = served
        .into_iter()
        .any(|s| s == name || tagged(s) == name || tagged(name) == *s);
    if matches {
        Ok(name.to_string())
    } else {
        Err(ApiError::new(
            Dialect::Ollama,
            StatusCode::NOT_FOUND,
            format!("model '{name}' not found"),
        ))
    }
}

/// What `keep_alive` asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    /// Not given (Ollama's default, 5 minutes).
    Default,
    /// Unload now (`0`).
    Unload,
    /// Keep for this many seconds (negative: forever).
    Seconds(f64),
}

/// Parses Go's duration syntax (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`) into seconds.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(sign * total)
}

/// `keep_alive`: seconds as a number, or a Go duration string.
pub fn parse_keep_alive(v: Option<&Value>) -> Result<KeepAlive, ApiError> {
    let seconds = match v {
        None | Some(Value::Null) => return Ok(KeepAlive::Default),
        Some(Value::Number(n)) => n.as_f64().unwrap_or_default(),
        Some(Value::String(s)) => {
            parse_go_duration(s).ok_or_else(|| bad(format!("time: invalid duration \"{s}\"")))?
        }
        Some(_) => {
            return Err(bad(
                "keep_alive must be a number of seconds or a duration such as \"5m\"",
            ));
        }
    };
    Ok(if seconds == 0.0 {
        KeepAlive::Unload
    } else {
        KeepAlive::Seconds(seconds)
    })
}

/// Features Kiln does not have, rejected as Ollama does for models without them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unsupported<'a> {
    /// The request's `think`; anything but absent, `null` or `false` is rejected.
    pub think: Option<&'a Value>,
    /// Whether any images were sent.
    pub images: bool,
    /// The request's `top_logprobs`; above `MAX_TOP_LOGPROBS` is rejected.
    pub top_logprobs: Option<u32>,
}

/// Rejects what this server cannot do, naming the model as Ollama does.
pub fn check_unsupported(model: &str, u: Unsupported<'_>) -> Result<(), ApiError> {
    let thinking = match u.think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(_) => true,
    };
    if thinking {
        return Err(bad(format!("\"{model}\" does not support thinking")));
    }
    if u.images {
        return Err(bad(format!("\"{model}\" does not support images")));
    }
    if let Some(k) = u.top_logprobs
        && k > MAX_TOP_LOGPROBS
    {
        return Err(bad(format!(
            "top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"
        )));
    }
    Ok(())
}

/// How a generate prompt becomes text.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPlan {
    /// `raw`: used as is.
    Raw(String),
    /// A request `template` rendered here.
    Templated(String),
    /// Rendered with the model's chat template: `[system?, user]`.
    Chat(Vec<Value>),
}

/// Builds the prompt of `/api/generate` (the prompt is non-empty here).
/// A model without a chat template uses Ollama's default template,
/// `{{ .Prompt }}`: the prompt as is, with the model's special tokens.
pub fn generate_prompt(req: &GenerateIn, has_chat_template: bool) -> Result<PromptPlan, ApiError> {
    let prompt = req.prompt.clone().unwrap_or_default();
    let has_template = req.template.as_deref().is_some_and(|t| !t.is_empty());
    let has_system = req.system.as_deref().is_some_and(|s| !s.is_empty());
    let has_context = req.context.as_ref().is_some_and(|c| !c.is_empty());
    if req.raw == Some(true) {
        if has_template || has_system || has_context {
            return Err(bad(
                "raw mode does not support template, system, or context",
            ));
        }
        return Ok(PromptPlan::Raw(prompt));
    }
    if has_template {
        let system = req.system.as_deref().unwrap_or("");
        return render_simple_template(req.template.as_deref().unwrap_or(""), system, &prompt)
            .map(PromptPlan::Templated);
    }
    if !has_chat_template {
        return Ok(PromptPlan::Templated(prompt));
    }
    let mut messages = Vec::new();
    if let Some(system) = req.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    Ok(PromptPlan::Chat(messages))
}

/// Renders the subset of Ollama's Go templates a request can carry:
/// `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}` (empty), and
/// `{{ if .System }}…{{ end }}` / `{{ if .Prompt }}…{{ end }}` blocks.
pub fn render_simple_template(
    template: &str,
    system: &str,
    prompt: &str,
) -> Result<String, ApiError> {
    let unsupported = |action: &str| {
        bad(format!(
            "template action `{{{{ {action} }}}}` is not supported: use {{{{ .System }}}}, {{{{ .Prompt }}}}, {{{{ .Response }}}} and {{{{ if .System }}}}…{{{{ end }}}}"
        ))
    };
    let mut out = String::new();
    let mut skipping: Vec<bool> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let live = !skipping.contains(&true);
        if live {
            out.push_str(&rest[..open]);
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| bad("template has an unclosed `{{`"))?;
        let action = after[..close].trim().trim_matches('-').trim();
        match action {
            ".System" if live => out.push_str(system),
            ".Prompt" if live => out.push_str(prompt),
            ".System" | ".Prompt" | ".Response" => {}
            "if .System" => skipping.push(system.is_empty()),
            "if .Prompt" => skipping.push(prompt.is_empty()),
            "end" => {
                skipping
                    .pop()
                    .ok_or_else(|| bad("template has an `{{ end }}` without `{{ if }}`"))?;
            }
            other => return Err(unsupported(other)),
        }
        rest = &after[close + 2..];
    }
    if !skipping.is_empty() {
        return Err(bad("template has an `{{ if }}` without `{{ end }}`"));
    }
    out.push_str(rest);
    Ok(out)
}

/// The roles a chat message may have (compared without case, as Ollama
/// lower-cases them).
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Chat messages for the template (roles lower-cased) and whether the last
/// one is an assistant message to continue. An unknown role is a 400.
pub fn chat_messages(messages: &[MessageIn]) -> Result<(Vec<Value>, bool), ApiError> {
    let mut values = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m.role.to_lowercase();
        if !ROLES.contains(&role.as_str()) {
            return Err(bad(format!(
                "invalid role {:?} in messages[{i}]: use one of system, user, assistant, tool",
                m.role
            )));
        }
        let mut v = json!({"role": role, "content": m.content.clone().unwrap_or_default()});
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
            v["tool_calls"] = crate::tools::template_tool_calls(i, &role, calls)?;
        }
        if let Some(name) = &m.tool_name {
            v["tool_name"] = json!(name);
        }
        values.push(v);
    }
    let continue_last = messages.last().is_some_and(|m| {
        m.role.eq_ignore_ascii_case("assistant")
            && m.content.as_deref().is_some_and(|c| !c.is_empty())
    });
    Ok((values, continue_last))
}

/// Sampling and stopping from the options (the prompt is filled in later).
pub fn engine_request(o: &Options, logprobs: Option<u32>) -> GenerateRequest {
    GenerateRequest {
        sampling: SamplingParams {
            temperature: o.temperature,
            top_k: u32::try_from(o.top_k.max(0)).unwrap_or(u32::MAX),
            top_p: o.top_p,
            min_p: o.min_p,
            repetition_penalty: o.repeat_penalty,
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            seed: (o.seed >= 0).then_some(o.seed as u64),
            logprobs,
            ..SamplingParams::default()
        },
        stopping: StoppingCriteria {
            max_tokens: (o.num_predict > 0)
                .then(|| u32::try_from(o.num_predict).unwrap_or(u32::MAX)),
            stop: o.stop.clone(),
            ..StoppingCriteria::default()
        },
        ..GenerateRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> EngineInfo {
        EngineInfo {
            model_id: "smol".into(),
            served_model_names: vec!["smol".into(), "other:v2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn model_names() {
        assert_eq!(resolve_model(&info(), Some("smol")).unwrap(), "smol");
        assert_eq!(
            resolve_model(&info(), Some("smol:latest")).unwrap(),
            "smol:latest"
        );
        assert!(resolve_model(&info(), Some("other:v2")).is_ok());
        let e = resolve_model(&info(), Some("llama3")).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (404, "model 'llama3' not found")
        );
        assert_eq!(resolve_model(&info(), None).unwrap_err().status, 400);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Some(300.0));
        assert_eq!(parse_go_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_go_duration("300ms"), Some(0.3));
        assert_eq!(parse_go_duration("-1s"), Some(-1.0));
        assert_eq!(parse_go_duration("0"), Some(0.0));
        for bad in ["", "5", "m", "5x", "1.2.3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
        assert_eq!(
            parse_keep_alive(Some(&json!(0))).unwrap(),
            KeepAlive::Unload
        );
        assert_eq!(
            parse_keep_alive(Some(&json!("10m"))).unwrap(),
            KeepAlive::Seconds(600.0)
        );
        assert!(parse_keep_alive(Some(&json!("soon"))).is_err());
        assert!(parse_keep_alive(Some(&json!([]))).is_err());
    }

    #[test]
    fn simple_templates() {
        let t = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}";
        assert_eq!(
            render_simple_template(t, "be nice", "hi").unwrap(),
            "S:be nice U:hi A:"
        );
        assert_eq!(render_simple_template(t, "", "hi").unwrap(), "U:hi A:");
        assert_eq!(
            render_simple_template("{{- .Prompt -}}!", "", "x").unwrap(),
            "x!"
        );
        for bad in [
            "{{ range .Messages }}{{ end }}",
            "{{ if .System }}",
            "{{ end }}",
            "{{ .Prompt",
        ] {
            assert!(render_simple_template(bad, "", "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_excludes_templates() {
        let req = GenerateIn {
            prompt: Some("x".into()),
            raw: Some(true),
            system: Some("s".into()),
            ..Default::default()
        };
        assert!(generate_prompt(&req, true).is_err());
        let req = GenerateIn {
            prompt: Some("x".into()),
            raw: Some(true),
            system: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            generate_prompt(&req, true).unwrap(),
            PromptPlan::Raw("x".into()),
            "an empty system is no system"
        );
        let req = GenerateIn {
            prompt: Some("x".into()),
            system: Some("s".into()),
            ..Default::default()
        };
        let PromptPlan::Chat(m) = generate_prompt(&req, true).unwrap() else {
            panic!()
        };
        assert_eq!(m[0]["role"], "system");
        assert_eq!(
            generate_prompt(&req, false).unwrap(),
            PromptPlan::Templated("x".into()),
            "without a chat template the prompt is used as is"
        );
    }

    #[test]
    fn roles_are_checked_and_lower_cased() {
        let msg = |role: &str, content: &str| MessageIn {
            role: role.into(),
            content: Some(content.into()),
            ..Default::default()
        };
        let (values, cont) = chat_messages(&[msg("USER", "hi"), msg("Assistant", "ok")]).unwrap();
        assert_eq!(values[0]["role"], "user");
        assert!(cont, "a final assistant message is continued");
        let e = chat_messages(&[msg("wizard", "hi")]).unwrap_err();
        assert_eq!(
            e.message,
            "invalid role \"wizard\" in messages[0]: use one of system, user, assistant, tool"
        );
        assert!(chat_messages(&[msg("", "hi")]).is_err());
    }

    #[test]
    fn options_become_sampling() {
        let o = Options {
            num_predict: 5,
            temperature: 0.0,
            seed: 3,
            top_k: -1,
            ..Default::default()
        };
        let r = engine_request(&o, Some(2));
        assert_eq!(r.stopping.max_tokens, Some(5));
        assert_eq!(
            (r.sampling.temperature, r.sampling.seed, r.sampling.top_k),
            (0.0, Some(3), 0)
        );
        assert_eq!(r.sampling.logprobs, Some(2));
        let r = engine_request(&Options::default(), None);
        assert_eq!((r.stopping.max_tokens, r.sampling.seed), (None, None));
    }

    #[test]
    fn unsupported_features_name_the_model() {
        let think = json!(true);
        let e = check_unsupported(
            "m",
            Unsupported {
                think: Some(&think),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.message, "\"m\" does not support thinking");
    }
}
