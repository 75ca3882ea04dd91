//! Kiln's sampler: logits processing, seeded sampling, logprobs, stop conditions and incremental detokenization.
