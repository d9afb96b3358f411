//! The gRPC `Route` request path (protobuf `RouteRequest` → tenant → validation → estimate) on
//! arbitrary bytes, against the embedded default config. Errors are answers; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::fuzzing::{caller_and_request, embedded_default};

fuzz_target!(|data: &[u8]| {
    let (key, msg) = caller_and_request(data);
    let _ = embedded_default().grpc_message(msg, key);
});
