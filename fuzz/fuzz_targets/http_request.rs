//! The HTTP facade's request path (chat-completions JSON → tenant → validation → estimate) on
//! arbitrary bodies, against the embedded default config. Errors are answers; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::fuzzing::{caller_and_request, embedded_default};

fuzz_target!(|data: &[u8]| {
    let (key, body) = caller_and_request(data);
    let _ = embedded_default().http_body(body, key);
});
