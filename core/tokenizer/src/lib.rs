//! Kiln's tokenizer: tokenizer.json and GGUF-embedded vocabularies, chat templates.
