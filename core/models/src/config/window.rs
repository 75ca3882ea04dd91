//! Which attention layers slide, as the KV cache sees it.

use super::ModelConfig;

/// How a model's attention layers use a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLayout {
    /// Every layer sees the whole context.
    None,
    /// Every layer slides over `window` tokens (the largest, should they
    /// differ): the KV blocks behind it are freed.
    All {
        /// Tokens a row sees, its own included.
        window: usize,
        /// Attention layers.
        layers: usize,
    },
    /// `sliding` of `layers` layers slide over `window` tokens and the others
    /// see the whole context (Gemma 2 and 3, Qwen2 past `max_window_layers`).
    /// Every block is kept: freeing the sliding layers' share of a block
    /// would need a pool per group of layers.
    Some {
        /// Tokens a row of a sliding layer sees, its own included.
        window: usize,
        /// Layers that slide.
        sliding: usize,
        /// Attention layers.
        layers: usize,
    },
}

impl WindowLayout {
    /// The layout of layers with these windows (`None`: the whole context).
    pub fn of_layers(windows: &[Option<usize>]) -> WindowLayout {
        let layers = windows.len();
        let sliding: Vec<usize> = windows
            .iter()
            .flatten()
            .copied()
            .filter(|&w| w > 0)
            .collect();
        match sliding.iter().max() {
            None => WindowLayout::None,
            Some(&window) if sliding.len() == layers => WindowLayout::All { window, layers },
            Some(&window) => WindowLayout::Some {
                window,
                sliding: sliding.len(),
                layers,
            },
        }
    }

    /// The window behind which KV blocks are freed: only when every layer slides.
    pub fn freeing_window(&self) -> Option<usize> {
        match *self {
            WindowLayout::All { window, .. } => Some(window),
            _ => None,
        }
    }
}

impl ModelConfig {
    /// Layer `i`'s window (`None`: it sees the whole context).
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.is_sliding(layer))
    }

    /// How the layers slide.
    pub fn window_layout(&self) -> WindowLayout {
        let windows: Vec<Option<usize>> = (0..self.num_hidden_layers)
            .map(|i| self.layer_window(i))
            .collect();
        WindowLayout::of_layers(&windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ModelConfig {
        ModelConfig::from_hf_json(&format!(
            r#"{{"architectures":["{extra}"],"hidden_size":16,"num_attention_heads":2,
               "intermediate_size":8,"num_hidden_layers":4,"vocab_size":8,"sliding_window":32,
               "max_position_embeddings":128,"use_sliding_window":true,"max_window_layers":1}}"#
        ))
        .unwrap()
    }

    #[test]
    fn layouts() {
        assert_eq!(
            config("MistralForCausalLM").window_layout(),
            WindowLayout::All {
                window: 32,
                layers: 4
            }
        );
        assert_eq!(
            config("Qwen2ForCausalLM").window_layout(),
            WindowLayout::Some {
                window: 32,
                sliding: 3,
                layers: 4
            }
        );
        assert_eq!(
            config("LlamaForCausalLM").window_layout(),
            WindowLayout::None
        );
        assert_eq!(
            config("MistralForCausalLM")
                .window_layout()
                .freeing_window(),
            Some(32)
        );
        assert_eq!(
            config("Qwen2ForCausalLM").window_layout().freeing_window(),
            None
        );
        assert_eq!(
            WindowLayout::of_layers(&[Some(4), Some(8)]),
            WindowLayout::All {
                window: 8,
                layers: 2
            }
        );
        assert_eq!(WindowLayout::of_layers(&[]), WindowLayout::None);
    }
}
