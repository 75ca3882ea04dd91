//! Kiln's model definitions, configs and weight loading (safetensors, GGUF).
