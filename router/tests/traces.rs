//! OpenTelemetry traces end to end (issue 19, item 5): the router in process with
//! `tracing.otlp_endpoint` set, a scripted OpenAI-compatible backend that records the
//! `traceparent` it receives, and a real OTLP/gRPC receiver (tests/python/otlp_receiver.py, built
//! on the `opentelemetry-proto` package and grpcio) that writes the spans it gets. Checks span
//! names, parent links, kinds, attributes, the context passed to the backend, that no prompt
//! text leaves in an attribute, and that a caller who does not sample gets no spans.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scripted::{Script, Scripted};
use common::{
    catalog_file, connect, default_config, free_port, python_has, repo, require, scratch, set, start_in_process,
    wait_line,
};
use llmroute_proto::v1 as pb;
use llmroute_proto::v1::router_client::RouterClient;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;
const STATUS_ERROR: i64 = 2;

/// The spans of one trace, by name (each name once per call here).
fn trace_of(spans: &[Value], trace_id: &str) -> BTreeMap<String, Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace_id)
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

fn print_tree(spans: &BTreeMap<String, Value>, parent: &str, depth: usize) {
    let mut children: Vec<&Value> = spans.values().filter(|s| s["parent_span_id"] == parent).collect();
    children.sort_by_key(|s| s["start"].as_u64());
    for s in children {
        let ms = (s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap()) as f64 / 1e6;
        eprintln!(
            "{}{} [{}] {:.2} ms {} {}",
            "  ".repeat(depth),
            s["name"].as_str().unwrap(),
            s["span_id"].as_str().unwrap(),
            ms,
            s["attributes"],
            if s["status"]["code"] == STATUS_ERROR {
                format!("ERROR {}", s["status"]["message"])
            } else {
                String::new()
            }
        );
        print_tree(spans, s["span_id"].as_str().unwrap(), depth + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs python grpcio and opentelemetry-proto (scripts/setup.sh --test; scripts/test.sh runs it)"]
async fn routed_calls_are_traced_to_a_real_otlp_receiver() {
    require(
        python_has("grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc"),
        "python grpcio + opentelemetry-proto",
    );
    let dir = scratch("traces");
    let out = dir.join("spans.jsonl");
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(repo().join("tests/python/otlp_receiver.py"))
        .args(["--port", &port.to_string(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _receiver = Receiver(child);
    assert!(wait_line(stdout, "otlp receiving", Duration::from_secs(30)).is_some(), "the OTLP receiver did not start");

    let backend = Scripted::start(Script::default()).await;
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, 4).display().to_string().into());
    set(&mut cfg, "tracing.otlp_endpoint", format!("http://127.0.0.1:{port}").into());
    set(&mut cfg, "tracing.export_interval_ms", 100u64.into());
    set(&mut cfg, "tracing.service_name", "llmroute-test".into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let secret = "SECRET-PROMPT-7f3a";
    let call = |trace: &str, flags: &str| {
        let mut req = tonic::Request::new(pb::RouteRequest {
            prompt: format!("{secret}: explain recursion in one line"),
            dispatch: Some(true),
            max_output_tokens: Some(16),
            ..Default::default()
        });
        req.metadata_mut().insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-{flags}").parse().unwrap());
        req
    };
    // 1. gRPC with the caller's trace context.
    let grpc_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rep = c.route(call(grpc_trace, "01")).await.unwrap().into_inner();
    let seen_tp = backend.last_traceparent(&rep.model).expect("the backend got no traceparent");
    // 2. A caller that does not sample: no spans, no context to the backend.
    let unsampled = "11111111111111111111111111111111";
    let rep2 = c.route(call(unsampled, "00")).await.unwrap().into_inner();
    assert_eq!(backend.last_traceparent(&rep2.model), None, "an unsampled call passed a traceparent on");
    // 3. The HTTP facade, with its own context.
    let http_trace = "22222222222222222222222222222222";
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{}/v1/chat/completions", r.bound.http))
        .header("traceparent", format!("00-{http_trace}-00f067aa0ba902b7-01"))
        .header("authorization", "Bearer llmroute-demo-key")
        .json(&serde_json::json!({"model": "auto", "max_tokens": 16,
            "messages": [{"role": "user", "content": format!("{secret}: name a prime")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // 4. A call refused at admission (unknown tenant), with a context: its spans say why.
    let refused_trace = "33333333333333333333333333333333";
    let mut bad = call(refused_trace, "01");
    bad.get_mut().tenant = "nobody".into();
    assert_eq!(c.route(bad).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // Stopping flushes what is left.
    r.stop().await.unwrap();

    let t0 = Instant::now();
    let spans: Vec<Value> = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let spans: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if trace_of(&spans, grpc_trace).len() >= 6 && trace_of(&spans, http_trace).len() >= 6
            || t0.elapsed() > Duration::from_secs(10)
        {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let g = trace_of(&spans, grpc_trace);
    eprintln!("the gRPC call's trace {grpc_trace} as the receiver got it:");
    print_tree(&g, "00f067aa0ba902b7", 1);
    let names: Vec<&str> = g.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "llmroute.admission",
            "llmroute.backend",
            "llmroute.batch_wait",
            "llmroute.decide",
            "llmroute.dispatch",
            "llmroute.route"
        ],
        "{g:#?}"
    );
    let id = |n: &str| g[n]["span_id"].as_str().unwrap().to_string();
    let route = &g["llmroute.route"];
    assert_eq!(route["parent_span_id"], "00f067aa0ba902b7", "the route span's parent is the caller's span");
    assert_eq!(route["kind"], SERVER);
    assert_eq!(route["service"], "llmroute-test");
    assert_eq!(route["attributes"]["llmroute.model"], rep.model.as_str());
    assert_eq!(route["attributes"]["llmroute.batch_id"], rep.batch_id);
    for child in ["llmroute.admission", "llmroute.batch_wait", "llmroute.decide", "llmroute.dispatch"] {
        assert_eq!(g[child]["parent_span_id"], id("llmroute.route").as_str(), "{child}'s parent");
        let (s, e) = (g[child]["start"].as_u64().unwrap(), g[child]["end"].as_u64().unwrap());
        assert!(route["start"].as_u64().unwrap() <= s && e <= route["end"].as_u64().unwrap(), "{child} within route");
    }
    let decide = &g["llmroute.decide"]["attributes"];
    assert_eq!(decide["llmroute.batch_id"], rep.batch_id);
    assert_eq!(decide["llmroute.model"], rep.model.as_str());
    assert!(decide["llmroute.assigner"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(g["llmroute.dispatch"]["attributes"]["llmroute.attempt"], 1);
    let call_span = &g["llmroute.backend"];
    assert_eq!(call_span["parent_span_id"], id("llmroute.dispatch").as_str());
    assert_eq!(call_span["kind"], CLIENT);
    assert_eq!(call_span["attributes"]["gen_ai.usage.output_tokens"], 16);
    assert_eq!(
        seen_tp,
        format!("00-{grpc_trace}-{}-01", id("llmroute.backend")),
        "the backend got the call span's context"
    );
    assert_eq!(g["llmroute.admission"]["attributes"]["llmroute.tenant"], "default");

    let h = trace_of(&spans, http_trace);
    assert_eq!(h.len(), 6, "{h:#?}");
    assert_eq!(h["llmroute.route"]["parent_span_id"], "00f067aa0ba902b7");

    assert!(trace_of(&spans, unsampled).is_empty(), "an unsampled caller's call was recorded");

    let bad = trace_of(&spans, refused_trace);
    assert_eq!(bad.keys().map(String::as_str).collect::<Vec<_>>(), ["llmroute.admission", "llmroute.route"]);
    for s in bad.values() {
        assert_eq!(s["status"]["code"], STATUS_ERROR, "{s}");
        assert!(s["status"]["message"].as_str().unwrap().contains("nobody"), "{s}");
    }

    let all = std::fs::read_to_string(&out).unwrap();
    assert!(!all.contains(secret), "prompt text reached the trace receiver");
}
