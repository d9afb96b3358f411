//! The gRPC `Route` request path (protobuf `RouteRequest` → tenant → validation → estimate) on
//! arbitrary bytes, against the embedded default config. Errors are answers; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::server::fuzzing::Harness;
use std::sync::OnceLock;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/router.yaml");
        Harness::new(std::path::Path::new(path)).unwrap_or_else(|e| panic!("harness config: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, msg) = match data.split_first() {
        Some((k, rest)) => (
            match k % 3 {
                0 => None,
                1 => Some("llmroute-demo-key"),
                _ => Some("wrong"),
            },
            rest,
        ),
        None => (None, data),
    };
    let _ = harness().grpc_message(msg, key);
});
