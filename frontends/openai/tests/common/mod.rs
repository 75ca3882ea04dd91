//! What the OpenAI route tests share.

use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, golden_config};
use kiln_http::tool_calls::ToolCallSettings;

/// The OpenAI routes over the scripted engine (1024-token context), with
/// `--enable-auto-tool-choice` and the parser chosen from the template.
pub fn tool_calling_app() -> TestApp {
    let mut config = golden_config();
    config.tool_calls = ToolCallSettings {
        parser: None,
        auto_tool_choice: true,
    };
    TestApp::new(
        ScriptedConfig {
            max_model_len: 1024,
            ..ScriptedConfig::default()
        },
        config,
        &[Box::new(OpenAiFrontend)],
    )
}
