//! Entry points for the fuzz targets (`fuzz/`, `cargo fuzz`): the request path's parsing and
//! checks, without a network. A returned error is a correct answer to bad input; a panic (here or
//! in an invariant below) is a bug the fuzzer reports.

use super::config::Config;
use super::query::{resolve_tenant, validate, Query, RouteInput};
use super::state::{Live, Shared};
use crate::Result;
use llmroute_proto::prost::Message;
use llmroute_proto::v1 as pb;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A loaded config generation to validate requests against.
pub struct Harness {
    live: Arc<Live>,
}

/// The harness on the embedded default config (`deploy/local/router.yaml`), built once per process.
pub fn embedded_default() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/router.yaml");
        Harness::new(Path::new(path)).unwrap_or_else(|e| panic!("harness config: {e}"))
    })
}

/// Splits a fuzz input into the caller (its first byte picks: no key — tenant `default` —, the
/// embedded default's demo key, or an unknown key) and the request bytes.
pub fn caller_and_request(data: &[u8]) -> (Option<&'static str>, &[u8]) {
    match data.split_first() {
        Some((k, rest)) => (
            match k % 3 {
                0 => None,
                1 => Some("llmroute-demo-key"),
                _ => Some("wrong-key"),
            },
            rest,
        ),
        None => (None, data),
    }
}

impl Harness {
    /// Loads `config` (and trains its estimator) once.
    pub fn new(config: &Path) -> Result<Harness> {
        let shared = Shared::new(Config::load(config)?, None)?;
        Ok(Harness { live: shared.live() })
    }

    /// An HTTP facade body (OpenAI chat completions JSON), as `POST /v1/chat/completions` takes it.
    pub fn http_body(&self, body: &[u8], key: Option<&str>) -> Result<()> {
        let (input, _stream) = super::http::parse_chat(&self.live, body, key.map(str::to_string))?;
        self.check(input)
    }

    /// A protobuf-encoded `RouteRequest`, as the gRPC `Route` call takes it.
    pub fn grpc_message(&self, bytes: &[u8], key: Option<&str>) -> Result<()> {
        let Ok(req) = pb::RouteRequest::decode(bytes) else { return Ok(()) };
        self.check(super::grpc::input(req, key.map(str::to_string), "")?)
    }

    fn check(&self, input: RouteInput) -> Result<()> {
        let tenant = resolve_tenant(&self.live, &input.tenant, input.api_key.as_deref())?;
        let q = validate(&self.live, input, "", tenant, Instant::now() + Duration::from_secs(1))?;
        invariants(&self.live, &q);
        Ok(())
    }
}

/// What every accepted query must satisfy.
fn invariants(live: &Live, q: &Query) {
    let cfg = &live.config;
    assert!(q.max_tokens >= 1 && q.max_tokens <= cfg.limits.max_output_tokens, "max_tokens {}", q.max_tokens);
    assert_eq!(q.allowed.len(), live.models.len());
    assert!(q.allowed.iter().any(|&a| a), "no model allowed");
    assert!(q.cost_bound.is_finite() && q.cost_bound >= 0.0, "cost bound {}", q.cost_bound);
    let chars: usize = q.messages.iter().map(|m| m.content.chars().count()).sum();
    assert!(chars <= cfg.limits.max_prompt_chars);
    assert!(q.messages.iter().any(|m| m.role == "user" && !m.content.trim().is_empty()));
    let n = q.prediction.mu.len();
    assert!(n > 0 && q.prediction.sigma.len() == n && q.prediction.output_tokens.len() == n);
    for i in 0..n {
        assert!((0.0..=1.0).contains(&q.prediction.mu[i]), "mu {}", q.prediction.mu[i]);
        assert!(q.prediction.sigma[i].is_finite() && q.prediction.sigma[i] >= 0.0);
        assert!(q.prediction.output_tokens[i].is_finite() && q.prediction.output_tokens[i] >= 0.0);
    }
    if let Some(c) = q.cost_cap {
        assert!(c.is_finite() && c >= 0.0);
    }
}
