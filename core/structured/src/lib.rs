//! # kiln-structured
//!
//! Structured outputs for Kiln: a request's [`StructuredOutput`] (JSON
//! object, JSON Schema, regex, choice, Lark or GBNF grammar) becomes an
//! [llguidance](https://github.com/guidance-ai/llguidance) grammar over the
//! model's vocabulary, and each sequence follows it with a
//! [`kiln_sampler::TokenConstraint`] that yields the bitset of tokens that
//! keep the output valid.
//!
//! [`Grammars`] is the one object an engine holds: it checks a request's
//! constraint against the [`Limits`] and compiles it once (the error names
//! the problem, for a 400), caches the compiled grammar, and implements
//! [`kiln_sampler::ConstraintFactory`] so the sampler starts each sequence
//! from the cache. Everything here is synchronous and does no I/O.
//!
//! ```
//! use kiln_protocol::StructuredOutput;
//! use kiln_sampler::ConstraintFactory;
//! use kiln_structured::{Grammars, Limits, Vocabulary};
//!
//! let grammars = Grammars::new(Vocabulary::bytes(), Limits::default()).unwrap();
//! let spec = StructuredOutput::Choice(vec!["yes".into(), "no".into()]);
//! grammars.check(&spec).unwrap();
//! let mut c = grammars.start(&spec).unwrap();
//! let mask = c.allowed_tokens().unwrap();
//! assert!(mask.contains(u32::from(b'y')) && !mask.contains(u32::from(b'x')));
//! assert!(grammars.check(&StructuredOutput::Regex("(".into())).is_err());
//! ```

mod cache;
mod gbnf;
mod grammars;
mod limits;
mod matcher;
mod spec;
mod vocab;

pub use gbnf::gbnf_to_lark;
pub use grammars::Grammars;
pub use limits::{ConstraintError, Limits};
pub use spec::top_level_grammar;
pub use vocab::Vocabulary;

pub use kiln_protocol::StructuredOutput;
