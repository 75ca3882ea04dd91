//! Chat-template helpers the dialects share.

/// Cuts a rendered conversation right after the final message's content, so
/// that generation continues that message instead of starting a new turn.
/// `None` when the content is empty or absent from the rendering.
///
/// ```
/// let r = "<|im_start|>assistant\nThe answer is<|im_end|>\n";
/// assert_eq!(
///     kiln_http::chat::cut_after_final_message(r, "The answer is").as_deref(),
///     Some("<|im_start|>assistant\nThe answer is")
/// );
/// ```
pub fn cut_after_final_message(rendered: &str, final_content: &str) -> Option<String> {
    if final_content.is_empty() {
        return None;
    }
    let at = rendered.rfind(final_content)?;
    Some(rendered[..at + final_content.len()].to_string())
}
