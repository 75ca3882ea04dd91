//! Structured outputs end to end on the real default model: every output
//! of a batch of generated JSON schemas validates, mixed with free and
//! `n > 1` requests, on device-side and host-side draws alike; regexes,
//! choices and grammars hold; `max_tokens` ends a constrained output with
//! `length`.

use kiln_engine::{CompletionOutput, LLM};
use kiln_engine_api::ChatOptions;
use kiln_protocol::{
    FinishReason, GenerateRequest, PromptInput, SamplingParams, StoppingCriteria, StructuredOutput,
};
use kiln_tests::schema::{generated_schemas, violation};
use kiln_tests::{cpu_config, default_model, start};
use serde_json::{Value, json};

fn chat_prompt(llm: &LLM, text: &str) -> PromptInput {
    let handle = llm.engine().handle();
    let messages = [json!({"role": "user", "content": text})];
    let options = ChatOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    PromptInput::Text(handle.apply_chat_template(&messages, &options).unwrap())
}

fn request(
    prompt: PromptInput,
    structured: Option<StructuredOutput>,
    seed: u64,
) -> GenerateRequest {
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: 0.7,
            seed: Some(seed),
            structured,
            ..Default::default()
        },
        stopping: StoppingCriteria {
            max_tokens: Some(400),
            ..Default::default()
        },
        add_special_tokens: false,
        tag: None,
    }
}

fn outputs(llm: &LLM, reqs: Vec<GenerateRequest>) -> Vec<Vec<CompletionOutput>> {
    llm.generate(reqs)
        .into_iter()
        .map(|r| r.expect("generation").outputs)
        .collect()
}

fn assert_valid(schema: &Value, out: &CompletionOutput, what: &str) {
    assert_eq!(
        out.finish_reason,
        Some(FinishReason::Stop),
        "{what}: {:?}",
        out.text
    );
    let value: Value = serde_json::from_str(&out.text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", out.text));
    if let Some(v) = violation(schema, &value) {
        panic!("{what}: {v}\nschema {schema}\noutput {}", out.text);
    }
}

/// 50 schemas at once with free requests between them and one `n = 2`
/// request: every constrained output validates.
fn fifty_schemas(device_sampling: bool) {
    let Some(model) = default_model() else { return };
    let mut config = cpu_config(&model);
    config.device_sampling = device_sampling;
    let llm = start(config);
    let schemas = generated_schemas(50, 11);
    let mut reqs = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        let prompt = chat_prompt(&llm, "Describe a thing you like as a JSON object.");
        let mut r = request(
            prompt,
            Some(StructuredOutput::JsonSchema(schema.to_string())),
            i as u64,
        );
        if i == 7 {
            r.sampling.n = 2;
        }
        reqs.push(r);
        if i % 10 == 0 {
            let mut free = request(chat_prompt(&llm, "Say hello."), None, i as u64);
            free.stopping.max_tokens = Some(16);
            reqs.push(free);
        }
    }
    let outs = outputs(&llm, reqs);
    let constrained: Vec<&Vec<CompletionOutput>> = outs
        .iter()
        .filter(|o| o[0].text.starts_with('{') || o.len() == 2)
        .collect();
    assert_eq!(constrained.len(), 50, "{outs:?}");
    for (i, (schema, out)) in schemas.iter().zip(constrained).enumerate() {
        for seq in out {
            assert_valid(schema, seq, &format!("schema {i} seq {}", seq.index));
        }
    }
}

#[test]
fn fifty_generated_schemas_all_validate_with_device_draws() {
    fifty_schemas(true);
}

#[test]
fn fifty_generated_schemas_all_validate_with_host_draws() {
    fifty_schemas(false);
}

#[test]
fn regexes_choices_grammars_and_lengths() {
    let Some(model) = default_model() else { return };
    let llm = start(cpu_config(&model));
    let p = || chat_prompt(&llm, "What is the capital of France? Answer in one word.");
    let mut greedy_choice = request(
        p(),
        Some(StructuredOutput::Choice(vec![
            "Paris".into(),
            "London".into(),
            "Rome".into(),
        ])),
        1,
    );
    greedy_choice.sampling.temperature = 0.0;
    let phone = request(
        p(),
        Some(StructuredOutput::Regex(r"\(\d{3}\) \d{3}-\d{4}".into())),
        2,
    );
    let gbnf = request(
        p(),
        Some(StructuredOutput::Grammar(
            "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\" | [A-Z] [a-z]{1,8}".into(),
        )),
        3,
    );
    let mut cut = request(p(), Some(StructuredOutput::JsonObject), 4);
    cut.stopping.max_tokens = Some(3);
    let mut stopped = request(
        p(),
        Some(StructuredOutput::Regex("[a-z]{3}-[a-z]{3}-[a-z]{3}".into())),
        5,
    );
    stopped.stopping.stop = vec!["-".into()];
    let outs = outputs(&llm, vec![greedy_choice, phone, gbnf, cut, stopped]);
    assert_eq!(outs[0][0].text, "Paris");
    let phone = &outs[1][0].text;
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 10, "{phone}");
    assert!(
        phone.starts_with('(') && phone.contains(") ") && phone.contains('-'),
        "{phone}"
    );
    let answer = &outs[2][0].text;
    assert!(answer.ends_with('.'), "{answer}");
    assert!(
        answer == "yes." || answer == "no." || answer.chars().next().unwrap().is_ascii_uppercase(),
        "{answer}"
    );
    assert_eq!(outs[3][0].finish_reason, Some(FinishReason::Length));
    assert_eq!(outs[3][0].token_ids.len(), 3);
    assert!(outs[3][0].text.starts_with('{'), "{:?}", outs[3][0].text);
    let stopped = &outs[4][0];
    assert_eq!(stopped.finish_reason, Some(FinishReason::Stop));
    assert_eq!(stopped.text.len(), 3, "{:?}", stopped.text);
}

#[test]
fn a_seeded_constrained_request_is_reproducible_in_any_batch() {
    let Some(model) = default_model() else { return };
    let llm = start(cpu_config(&model));
    let schema = generated_schemas(1, 5).remove(0);
    let make = |seed| {
        request(
            chat_prompt(&llm, "Describe a dog as JSON."),
            Some(StructuredOutput::JsonSchema(schema.to_string())),
            seed,
        )
    };
    let alone = outputs(&llm, vec![make(42)]);
    let mut batch = vec![make(42)];
    batch.extend((0..6).map(|i| request(chat_prompt(&llm, "Count to five."), None, i)));
    let together = outputs(&llm, batch);
    assert_eq!(alone[0][0].token_ids, together[0][0].token_ids);
    assert_valid(&schema, &alone[0][0], "seeded");
}
