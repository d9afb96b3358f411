//! The `llmroute.v1.Router` and `Admin` gRPC services over `Api`.

use super::api::Api;
use super::backend::{ChatMessage, Passthrough};
use super::query::{needs_of, openai_messages, Reply, RouteInput, StreamSink};
use crate::feedback::FeedbackInput;
use crate::otel::Remote;
use crate::RouterError;
use llmroute_proto::v1 as pb;
use llmroute_proto::v1::route_stream_event::Event;
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

pub struct RouterService {
    pub api: Api,
}

pub struct AdminService {
    pub api: Api,
}

/// The API key from `authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn api_key(md: &MetadataMap) -> Option<String> {
    if let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_string());
    }
    md.get("x-api-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

/// The caller's W3C trace context (`traceparent` metadata), when valid.
pub fn traceparent(md: &MetadataMap) -> Option<Remote> {
    md.get("traceparent").and_then(|v| v.to_str().ok()).and_then(Remote::parse)
}

/// The call's `grpc-timeout` (e.g. `250m` = 250 ms), when the client set a deadline.
pub fn grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `RouteRequest` → the router's input; `at` prefixes field names in errors (`queries[3].`).
pub fn input(r: pb::RouteRequest, key: Option<String>, at: &str) -> Result<RouteInput, RouterError> {
    let json = |field: &str, text: &str| -> Result<Value, RouterError> {
        serde_json::from_str(text).map_err(|e| RouterError::bad(format!("{at}{field}"), format!("not JSON: {e}")))
    };
    let raw = match r.openai_messages_json.as_str() {
        "" => None,
        text => match json("openai_messages_json", text)? {
            Value::Array(v) => Some(v),
            _ => {
                return Err(RouterError::bad(format!("{at}openai_messages_json"), "expected a JSON array of messages"))
            }
        },
    };
    let fields = match r.openai_fields_json.as_str() {
        "" => serde_json::Map::new(),
        text => match json("openai_fields_json", text)? {
            Value::Object(m) => m,
            _ => return Err(RouterError::bad(format!("{at}openai_fields_json"), "expected a JSON object")),
        },
    };
    if raw.is_some() && (!r.messages.is_empty() || !r.prompt.is_empty()) {
        return Err(RouterError::bad(format!("{at}openai_messages_json"), "give it or prompt / messages, not both"));
    }
    let mut messages: Vec<ChatMessage> =
        r.messages.into_iter().map(|m| ChatMessage { role: m.role, content: m.content }).collect();
    let mut passthrough = None;
    let mut needs = Default::default();
    if raw.is_some() || !fields.is_empty() {
        let raw = match raw {
            Some(raw) => {
                messages = openai_messages(&raw, at)?;
                raw
            }
            // Plain messages with OpenAI fields: forwarded in the OpenAI shape.
            None => messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect(),
        };
        needs = needs_of(&fields, &raw);
        passthrough = Some(std::sync::Arc::new(Passthrough { messages: raw, fields }));
    }
    Ok(RouteInput {
        tenant: r.tenant,
        api_key: key,
        prompt: r.prompt,
        messages,
        task: r.task.filter(|t| !t.is_empty()),
        max_output_tokens: r.max_output_tokens,
        allowed_models: r.allowed_models,
        dispatch: r.dispatch.unwrap_or(true),
        max_cost_usd: r.max_cost_usd,
        passthrough,
        needs,
        traceparent: None,
        request_id: String::new(),
    })
}

pub fn to_pb(r: Reply) -> pb::RouteResponse {
    pb::RouteResponse {
        model: r.model,
        answer: r.answer,
        usage: Some(pb::Usage { input_tokens: r.input_tokens, output_tokens: r.output_tokens }),
        cost_usd: r.cost_usd,
        predicted: Some(pb::PredictedQuality {
            mu: r.predicted.mu,
            sigma: r.predicted.sigma,
            output_tokens: r.predicted.output_tokens,
            cost_usd: r.predicted.cost_usd,
        }),
        batch_id: r.batch_id,
        batch_size: r.batch_size,
        why: Some(pb::Why {
            assigner: r.assigner,
            solve_status: r.solve_status,
            fallback: r.fallback,
            failed_models: r.failed_models,
            overdraft: r.overdraft,
            batch_over_budget: r.batch_over_budget,
        }),
        dispatched: r.dispatched,
        finish_reason: r.finish_reason,
        latency_ms: r.latency_ms,
        tool_calls_json: r.tool_calls.map(|t| t.to_string()).unwrap_or_default(),
        request_id: r.request_id,
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RouteStreamEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::router_server::Router for RouterService {
    async fn route(&self, req: Request<pb::RouteRequest>) -> Result<Response<pb::RouteResponse>, Status> {
        let (key, timeout, tp) = (api_key(req.metadata()), grpc_timeout(req.metadata()), traceparent(req.metadata()));
        let input = RouteInput { traceparent: tp, ..input(req.into_inner(), key, "")? };
        let reply = self.api.route(input, timeout).await?;
        Ok(Response::new(to_pb(reply)))
    }

    async fn route_batch(
        &self,
        req: Request<pb::RouteBatchRequest>,
    ) -> Result<Response<pb::RouteBatchResponse>, Status> {
        let (key, timeout, tp) = (api_key(req.metadata()), grpc_timeout(req.metadata()), traceparent(req.metadata()));
        let r = req.into_inner();
        let inputs: Vec<RouteInput> = r
            .queries
            .into_iter()
            .enumerate()
            .map(|(i, q)| input(q, None, &format!("queries[{i}].")))
            .collect::<Result<_, _>>()?;
        let results = self.api.route_batch(&r.tenant, key.as_deref(), inputs, timeout, tp).await?;
        let mut out = pb::RouteBatchResponse::default();
        for (i, res) in results.into_iter().enumerate() {
            match res {
                Ok(rep) => {
                    out.batch_id = rep.batch_id;
                    out.spend_usd += rep.cost_usd;
                    out.budget_usd = rep.batch_budget_usd;
                    out.results.push(to_pb(rep));
                }
                // One failed query fails the call: the client gets which one and why.
                Err(e) => {
                    let code = e.grpc_code();
                    return Err(Status::new(code, format!("queries[{i}]: {e}")));
                }
            }
        }
        Ok(Response::new(out))
    }

    type RouteStreamStream = EventStream;

    async fn route_stream(&self, req: Request<pb::RouteRequest>) -> Result<Response<EventStream>, Status> {
        let (key, timeout, tp) = (api_key(req.metadata()), grpc_timeout(req.metadata()), traceparent(req.metadata()));
        let (dtx, drx) = oneshot::channel();
        let (ptx, mut prx) = mpsc::channel::<String>(64);
        let input = RouteInput { traceparent: tp, ..input(req.into_inner(), key, "")? };
        let pending = self.api.submit(input, timeout, Some(StreamSink { decision: dtx, deltas: ptx })).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            if let Ok(start) = drx.await {
                let _ = tx.send(Ok(pb::RouteStreamEvent { event: Some(Event::Start(to_pb(start))) })).await;
            }
            while let Some(piece) = prx.recv().await {
                let _ = tx.send(Ok(pb::RouteStreamEvent { event: Some(Event::Delta(piece)) })).await;
            }
            let last = match pending.wait().await {
                Ok(r) => Ok(pb::RouteStreamEvent { event: Some(Event::Done(to_pb(r))) }),
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn feedback(&self, req: Request<pb::FeedbackRequest>) -> Result<Response<pb::FeedbackResponse>, Status> {
        let key = api_key(req.metadata());
        let r = req.into_inner();
        let input = FeedbackInput {
            tenant: r.tenant,
            api_key: key,
            request_id: r.request_id,
            score: r.score,
            output_tokens: r.output_tokens,
        };
        let done = crate::feedback::submit(&self.api.shared, input)?;
        Ok(Response::new(pb::FeedbackResponse {
            model: done.model,
            predicted_mu: done.predicted_mu,
            predicted_sigma: done.predicted_sigma,
        }))
    }

    async fn list_models(
        &self,
        _req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .api
            .models()
            .into_iter()
            .map(|m| pb::ModelInfo {
                name: m.name,
                backend: m.backend,
                price_in_per_mtok: m.price_in_per_mtok,
                price_out_per_mtok: m.price_out_per_mtok,
                capacity: m.capacity as u32,
                in_flight: m.in_flight as u32,
                circuit: m.circuit.into(),
                prior: m.prior.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn reload(&self, _req: Request<pb::ReloadRequest>) -> Result<Response<pb::ReloadResponse>, Status> {
        let r = match self.api.reload().await {
            Ok(g) => pb::ReloadResponse { ok: true, message: "reloaded".into(), generation: g },
            Err(e) => pb::ReloadResponse {
                ok: false,
                message: format!("rejected, the last good config keeps serving: {e}"),
                generation: self.api.shared.live().generation,
            },
        };
        Ok(Response::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn deadlines_and_keys_from_metadata() {
        assert_eq!(grpc_timeout(&md(&[("grpc-timeout", "250m")])), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&md(&[("grpc-timeout", "3S")])), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout(&md(&[("grpc-timeout", "7u")])), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(&md(&[("grpc-timeout", "x")])), None);
        assert_eq!(grpc_timeout(&md(&[])), None);
        assert_eq!(api_key(&md(&[("authorization", "Bearer abc123")])).as_deref(), Some("abc123"));
        assert_eq!(api_key(&md(&[("x-api-key", "k1")])).as_deref(), Some("k1"));
        assert_eq!(api_key(&md(&[])), None);
    }

    #[test]
    fn errors_map_to_codes_and_say_if_retry_is_safe() {
        use crate::RouterError as E;
        use tonic::Code;
        let cases = [
            (E::bad("prompt", "empty"), Code::InvalidArgument, false),
            (E::Unauthenticated("x".into()), Code::Unauthenticated, false),
            (E::Overloaded("x".into()), Code::ResourceExhausted, true),
            (
                E::TenantOverBudget { tenant: "t".into(), spent: 1.0, budget: 1.0, window_s: 60 },
                Code::ResourceExhausted,
                false,
            ),
            (E::NoFeasibleModel("x".into()), Code::FailedPrecondition, false),
            (E::Unavailable("x".into()), Code::Unavailable, true),
            (E::DeadlineExceeded("x".into()), Code::DeadlineExceeded, true),
        ];
        for (e, code, retry) in cases {
            let s = Status::from(e);
            assert_eq!(s.code(), code);
            let flag = s.metadata().get("llmroute-retryable").unwrap().to_str().unwrap();
            assert_eq!(flag, if retry { "true" } else { "false" });
        }
    }
}
