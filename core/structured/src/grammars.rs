//! [`Grammars`]: compiles constraints against one vocabulary under the
//! [`Limits`], caches them, and starts sequences on them.

use std::sync::Mutex;

use kiln_protocol::TokenId;
use kiln_sampler::{ConstraintFactory, TokenConstraint};
use llguidance::{Matcher, ParserFactory};

use crate::StructuredOutput;
use crate::cache::LruCache;
use crate::limits::{ConstraintError, Limits};
use crate::matcher::GrammarConstraint;
use crate::spec::top_level_grammar;
use crate::vocab::Vocabulary;

/// The structured-output compiler of one model.
pub struct Grammars {
    factory: ParserFactory,
    limits: Limits,
    eos: TokenId,
    /// Compiled constraints at their start state.
    cache: Mutex<LruCache<StructuredOutput, Matcher>>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("limits", &self.limits)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Grammars {
    /// A compiler for `vocab`; the error explains why the vocabulary cannot
    /// be used (e.g. its EOS id is out of range).
    pub fn new(vocab: Vocabulary, limits: Limits) -> Result<Grammars, String> {
        let env = vocab.token_env()?;
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        *factory.limits_mut() = limits.parser_limits();
        Ok(Grammars {
            factory,
            cache: Mutex::new(LruCache::new(limits.cache_entries)),
            limits,
            eos: vocab.eos,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks and compiles `spec` (kept for the sequences that start on it).
    pub fn check(&self, spec: &StructuredOutput) -> Result<(), ConstraintError> {
        self.compiled(spec).map(drop)
    }

    /// A fresh matcher at the start of `spec`'s grammar.
    fn compiled(&self, spec: &StructuredOutput) -> Result<Matcher, ConstraintError> {
        if let Some(m) = self.lock().get(spec) {
            return Ok(m.deep_clone());
        }
        let grammar = top_level_grammar(spec, &self.limits)?;
        let param = spec.kind();
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::new(param, e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        // The first mask builds the lexer's start states: a grammar whose
        // first step is over budget is refused here rather than failing later.
        matcher
            .compute_mask()
            .map_err(|e| ConstraintError::new(param, e.to_string()))?;
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::new(param, e));
        }
        self.lock().insert(spec.clone(), matcher.deep_clone());
        Ok(matcher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<StructuredOutput, Matcher>> {
        // A panic while holding the lock leaves a usable cache behind.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConstraintFactory for Grammars {
    fn start(&self, spec: &StructuredOutput) -> Result<Box<dyn TokenConstraint>, String> {
        let matcher = self.compiled(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(GrammarConstraint { matcher }))
    }

    fn eos_token(&self) -> TokenId {
        self.eos
    }
}
