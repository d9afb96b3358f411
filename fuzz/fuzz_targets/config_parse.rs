//! The router's config parser and validator on arbitrary YAML: every input is accepted or
//! rejected with an error naming a field; none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, Path::new("/nonexistent/llmroute-fuzz/router.yaml")) {
        Ok(c) => {
            assert!(!c.tenants.is_empty());
            assert!(c.budget_per_query > 0.0 && c.budget_per_query.is_finite());
            assert!(c.default_output_tokens <= c.max_output_tokens);
            assert!(c.max_batch >= 1 && c.max_queue >= 1 && c.max_concurrency >= 1);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("field `"), "error without a field: {msg}");
        }
    }
});
