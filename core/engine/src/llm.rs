//! The offline API, like vLLM's `LLM.generate`: start an engine, submit a
//! batch, collect every output.
//!
//! ```no_run
//! use kiln_engine::{EngineConfig, LLM};
//! use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};
//! let llm = LLM::new(EngineConfig::new("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
//! let outputs = llm.generate(vec![GenerateRequest {
//!     prompt: PromptInput::Text("The capital of France is".into()),
//!     sampling: SamplingParams::greedy(),
//!     stopping: StoppingCriteria { max_tokens: Some(8), ..Default::default() },
//!     ..Default::default()
//! }]);
//! println!("{}", outputs[0].as_ref().unwrap().outputs[0].text);
//! ```

use futures::StreamExt;
use kiln_engine_api::{EngineHandle, RequestStream};
use kiln_protocol::{
    EngineError, FinishReason, GenerateRequest, PromptToken, RequestId, StopReason, TokenEvent,
    TopLogprob, Usage,
};

use crate::config::EngineConfig;
use crate::engine::{Engine, StartError, StartHooks};

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompletionOutput {
    /// Index among the request's `n` sequences.
    pub index: u32,
    /// The generated text (stop strings removed).
    pub text: String,
    /// The generated token ids.
    pub token_ids: Vec<u32>,
    /// Per-token log-probabilities, when requested.
    pub logprobs: Vec<Option<f32>>,
    /// Per-token top alternatives, when requested.
    pub top_logprobs: Vec<Vec<TopLogprob>>,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// What stopped it.
    pub stop_reason: Option<StopReason>,
    /// Token counts.
    pub usage: Usage,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestOutput {
    /// The engine's id for it.
    pub request_id: RequestId,
    /// The prompt as tokenized.
    pub prompt_token_ids: Vec<u32>,
    /// Each prompt token's log-probability, when `prompt_logprobs` was asked.
    pub prompt_logprobs: Option<Vec<PromptToken>>,
    /// The `n` sequences, by index.
    pub outputs: Vec<CompletionOutput>,
}

/// An engine for offline batches.
pub struct LLM {
    engine: Engine,
}

impl LLM {
    /// Start an engine.
    pub fn new(config: EngineConfig) -> Result<LLM, StartError> {
        Ok(LLM {
            engine: Engine::start_with(config, StartHooks::default())?,
        })
    }

    /// Wrap a started engine.
    pub fn from_engine(engine: Engine) -> LLM {
        LLM { engine }
    }

    /// The engine behind this handle, for what `LLM` does not wrap.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The handle (to submit requests yourself).
    pub fn handle(&self) -> EngineHandle {
        self.engine.handle()
    }

    /// Run every request concurrently and return the outputs in order.
    pub fn generate(
        &self,
        requests: Vec<GenerateRequest>,
    ) -> Vec<Result<RequestOutput, EngineError>> {
        self.generate_with_progress(requests, |_| {})
    }

    /// Like [`LLM::generate`], calling `on_done(finished_so_far)` as requests complete.
    pub fn generate_with_progress(
        &self,
        requests: Vec<GenerateRequest>,
        mut on_done: impl FnMut(usize),
    ) -> Vec<Result<RequestOutput, EngineError>> {
        let handle = self.engine.handle();
        let streams: Vec<Result<RequestStream, EngineError>> =
            requests.into_iter().map(|r| handle.submit(r)).collect();
        let mut results: Vec<Option<Result<RequestOutput, EngineError>>> =
            (0..streams.len()).map(|_| None).collect();
        let mut pending = futures::stream::FuturesUnordered::new();
        for (i, s) in streams.into_iter().enumerate() {
            match s {
                Ok(stream) => pending.push(async move { (i, collect(stream).await) }),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut done = 0;
        futures::executor::block_on(async {
            while let Some((i, out)) = pending.next().await {
                results[i] = Some(out);
                done += 1;
                on_done(done);
            }
        });
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(EngineError::Internal("request lost".into()))))
            .collect()
    }
}

/// Drain one request's events into a [`RequestOutput`].
pub async fn collect(mut stream: RequestStream) -> Result<RequestOutput, EngineError> {
    let mut out = RequestOutput {
        request_id: stream.id(),
        prompt_token_ids: stream.prompt_token_ids().to_vec(),
        prompt_logprobs: None,
        outputs: Vec::new(),
    };
    while let Some(ev) = stream.next_event().await {
        out.apply(ev)?;
    }
    Ok(out)
}

impl RequestOutput {
    /// Fold one event in (a streaming client's running view of the request).
    pub fn apply(&mut self, event: TokenEvent) -> Result<(), EngineError> {
        match event {
            TokenEvent::Prompt(tokens) => self.prompt_logprobs = Some(tokens),
            TokenEvent::Token(t) => {
                let o = self.output_at(t.index);
                o.text.push_str(&t.text);
                o.token_ids.push(t.id);
                o.logprobs.push(t.logprob);
                o.top_logprobs.push(t.top_logprobs);
            }
            TokenEvent::Finished(f) => {
                let o = self.output_at(f.index);
                o.finish_reason = Some(f.reason);
                o.stop_reason = f.stop_reason;
                o.usage = f.usage;
            }
            TokenEvent::Failed { error } => return Err(error),
        }
        Ok(())
    }

    fn output_at(&mut self, index: u32) -> &mut CompletionOutput {
        let i = index as usize;
        while self.outputs.len() <= i {
            let index = self.outputs.len() as u32;
            self.outputs.push(CompletionOutput {
                index,
                ..Default::default()
            });
        }
        &mut self.outputs[i]
    }
}
