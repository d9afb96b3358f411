//! End-to-end with real model servers: three llama.cpp servers (PyPI `xllamacpp`; SmolLM2-135M
//! twice and Gemma-3-270M, from their PyPI packages) behind the router. One server is killed
//! mid-run: every query is still answered by a feasible model, spend stays within the budget, the
//! breaker opens; after the server returns, the prober half-opens it and a query closes it.
//! And a tool call made with the official `openai` client through `model: auto`, answered by a
//! real llama.cpp server with Jinja chat templates on.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::connect;
use common::{free_port, python_has, repo, require, scratch, wait_line, Router};
use llmroute_proto::v1 as pb;
use pb::router_client::RouterClient;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Llama(Child);

impl Llama {
    fn start(model: &str, port: u16) -> Llama {
        Llama::start_with(model, port, &[])
    }

    fn start_with(model: &str, port: u16, extra: &[&str]) -> Llama {
        let mut child = Command::new("python3")
            .arg(repo().join("scripts/llama_server.py"))
            .args(["--model", model, "--port", &port.to_string(), "--parallel", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        if wait_line(out, "llama serving", Duration::from_secs(90)).is_none() {
            let _ = child.kill();
            panic!("llama server {model} on {port} did not start");
        }
        Llama(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Per-query budget: four times the dearest model's ~$0.00003 per query, so a batch's plan keeps
/// room for a fallback to a dearer model. At $0.000025 the fast assigner spent every plan in
/// full when the suite's load batched the queries together, and a query on the killed server had
/// nowhere to go ("passed over: … its predicted cost does not fit the batch's budget") — the
/// router's rule (fallbacks use what is left of the plan, never the margin), not the behaviour
/// under test.
const PER_QUERY: f64 = 0.0001;

fn catalog(ports: &[u16; 3]) -> String {
    let entry = |name: &str, port: u16, pin: f64, pout: f64| {
        format!(
            "- name: {name}\n  backend: http://127.0.0.1:{port}\n  price_in_per_mtok: {pin}\n  \
             price_out_per_mtok: {pout}\n  max_concurrency: 2\n  default_output_tokens: 24\n"
        )
    };
    format!(
        "name: live\nmodels:\n{}{}{}",
        entry("smollm2-a", ports[0], 0.05, 0.1),
        entry("gemma3", ports[1], 0.1, 0.2),
        entry("smollm2-b", ports[2], 0.2, 0.4)
    )
}

/// The router's config; `proxies` maps each catalog model to a model of the shipped records.
fn router_config(dir: &std::path::Path, proxies: &[(&str, &str)]) -> String {
    let root = repo();
    let proxies: String = proxies.iter().map(|(m, p)| format!("    {m}: {p}\n")).collect();
    format!(
        "listen: {{grpc: 127.0.0.1:0, http: 127.0.0.1:0}}\n\
         catalog: {cat}\n\
         estimator:\n  records: {rec}\n  proxies:\n{proxies}\
         batch: {{window_ms: 5, max_batch: 32}}\n\
         limits: {{max_prompt_chars: 1500, default_output_tokens: 24}}\n\
         budget: {{per_query_usd: {PER_QUERY}, prior_margin: 1.0}}\n\
         assigner: {{kind: fast, gamma: 1.0}}\n\
         backends: {{timeout_ms: 60000, breaker_failures: 1, breaker_open_ms: 1000}}\n\
         tenants: [{{name: default, budget_usd: 10}}]\n",
        cat = dir.join("catalog.yaml").display(),
        rec = root.join("data/dcrouter.jsonl.gz").display(),
    )
}

fn prompts() -> Vec<String> {
    let recs = estimator::records::read_records(&repo().join("data/dcrouter.jsonl.gz")).unwrap();
    recs.into_iter().map(|r| r.prompt).filter(|p| (150..500).contains(&p.len())).take(60).collect()
}

async fn fire(
    c: &RouterClient<tonic::transport::Channel>,
    prompts: &[String],
) -> Vec<tokio::task::JoinHandle<Result<pb::RouteResponse, tonic::Status>>> {
    prompts
        .iter()
        .map(|p| {
            let mut c = c.clone();
            let req = pb::RouteRequest { prompt: p.clone(), max_output_tokens: Some(24), ..Default::default() };
            tokio::spawn(async move { c.route(req).await.map(|r| r.into_inner()) })
        })
        .collect()
}

async fn in_flight(c: &mut RouterClient<tonic::transport::Channel>, model: &str) -> u32 {
    let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
    models.into_iter().find(|m| m.name == model).unwrap().in_flight
}

async fn circuit(c: &mut RouterClient<tonic::transport::Channel>, model: &str) -> String {
    let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
    models.into_iter().find(|m| m.name == model).unwrap().circuit
}

#[test]
#[ignore = "needs python xllamacpp and the SmolLM2 / Gemma model packages (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn killed_server_falls_back_and_the_breaker_recovers() {
    require(python_has("xllamacpp"), "python xllamacpp + model packages");
    let dir = scratch("live");
    let ports = [free_port(), free_port(), free_port()];
    let names = ["smollm2-a", "gemma3", "smollm2-b"];
    let mut servers =
        [Llama::start("smollm2", ports[0]), Llama::start("gemma3", ports[1]), Llama::start("smollm2", ports[2])];
    std::fs::write(dir.join("catalog.yaml"), catalog(&ports)).unwrap();
    let proxies = [
        ("smollm2-a", "mistral-7b-instruct-v0.3"),
        ("gemma3", "gemma-2-9b-it"),
        ("smollm2-b", "llama-3.3-nemotron-super-49b-v1"),
    ];
    let r = Router::start(&dir, &router_config(&dir, &proxies));
    let prompts = prompts();
    assert!(prompts.len() >= 40);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = RouterClient::new(connect(&r.grpc).await.unwrap());
        let mut replies = Vec::new();
        // Phase 1: all servers up.
        for h in fire(&c, &prompts[..12]).await {
            replies.push(h.await.unwrap().expect("phase 1 query failed"));
        }
        let mut used = [0usize; 3];
        for rep in &replies {
            used[names.iter().position(|n| *n == rep.model).unwrap()] += 1;
        }
        eprintln!("phase 1 models: {used:?}");
        // Phase 2: kill the busiest server while queries are in flight.
        let victim = (0..3).max_by_key(|&k| used[k]).unwrap();
        let handles = fire(&c, &prompts[12..30]).await;
        // Kill it once queries are running on it (the router's own in-flight count).
        let t0 = Instant::now();
        while in_flight(&mut c.clone(), names[victim]).await == 0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "no query ever ran on {}", names[victim]);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        servers[victim].kill();
        let mut fallbacks = 0;
        for h in handles {
            let rep = h.await.unwrap().expect("a query failed after the kill");
            assert!(!rep.answer.is_empty() && names.contains(&rep.model.as_str()));
            let why = rep.why.clone().unwrap();
            if why.fallback {
                fallbacks += 1;
                assert!(why.failed_models.iter().any(|f| f.starts_with(names[victim])), "{why:?}");
                assert_ne!(rep.model, names[victim]);
            }
            replies.push(rep);
        }
        eprintln!("phase 2: {fallbacks} fallbacks away from {}", names[victim]);
        assert!(fallbacks > 0, "no query fell back from the killed server");
        assert_eq!(circuit(&mut c, names[victim]).await, "open");
        // With the breaker open, traffic goes elsewhere, and a query pinned there is refused.
        for h in fire(&c, &prompts[30..38]).await {
            let rep = h.await.unwrap().unwrap();
            assert_ne!(rep.model, names[victim]);
            replies.push(rep);
        }
        let pinned = pb::RouteRequest {
            prompt: prompts[38].clone(),
            allowed_models: vec![names[victim].into()],
            max_output_tokens: Some(16),
            ..Default::default()
        };
        let e = c.route(pinned.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

        // Spend within budget: every dispatched query was charged once, within per-query x n.
        let spend: f64 = replies.iter().map(|r| r.cost_usd).sum();
        let allowed = PER_QUERY * replies.len() as f64;
        eprintln!("spend {spend:.7} USD for {} queries, budget {allowed:.7}", replies.len());
        assert!(spend <= allowed, "spend {spend} above budget {allowed}");

        // The server comes back: the prober half-opens the breaker, a query closes it.
        servers[victim] = Llama::start(if victim == 1 { "gemma3" } else { "smollm2" }, ports[victim]);
        let t0 = Instant::now();
        while circuit(&mut c, names[victim]).await == "open" {
            assert!(t0.elapsed() < Duration::from_secs(20), "breaker never probed the server back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rep = c.route(pinned).await.unwrap().into_inner();
        assert_eq!(rep.model, names[victim]);
        assert_eq!(circuit(&mut c, names[victim]).await, "closed");

        // Streaming through a real server.
        let mut s = c
            .route_stream(pb::RouteRequest {
                prompt: "Name three colors.".into(),
                allowed_models: vec!["gemma3".into()],
                max_output_tokens: Some(16),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut deltas = 0;
        while let Some(ev) = s.message().await.unwrap() {
            if let Some(pb::route_stream_event::Event::Delta(_)) = ev.event {
                deltas += 1;
            }
        }
        assert!(deltas > 1, "gemma3 streamed {deltas} pieces");
    });
    let (_, metrics) = common::http_get(&r.http, "/metrics");
    assert!(metrics.contains("llmroute_fallbacks_total"));
}

/// Item 6 of issue 19: SmolLM2 behind llama.cpp with a tool-calling ChatML template
/// (scripts/templates/chatml-tools.jinja) is the fleet's one model declaring `tools`; Gemma-3
/// declares nothing. The official `openai` client (tests/python/openai_tools.py) makes a tool
/// call through `model: auto`, gets `tool_calls` back (whole and streamed), sends the tool's
/// result and gets the final answer; a request with an image part is refused with 400 naming
/// `vision`. The transcript is printed.
#[test]
#[ignore = "needs python xllamacpp, openai and the SmolLM2 / Gemma model packages (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn openai_client_tool_call_through_a_real_llama_server() {
    require(python_has("xllamacpp"), "python xllamacpp + model packages");
    require(python_has("openai"), "python openai");
    let dir = scratch("live-tools");
    let ports = [free_port(), free_port()];
    let template = repo().join("scripts/templates/chatml-tools.jinja");
    let _servers = [
        Llama::start_with("smollm2", ports[0], &["--chat-template", template.to_str().unwrap()]),
        Llama::start("gemma3", ports[1]),
    ];
    let entry = |name: &str, port: u16, caps: &str| {
        format!(
            "- name: {name}\n  backend: http://127.0.0.1:{port}\n  price_in_per_mtok: 0.1\n  \
             price_out_per_mtok: 0.2\n  max_concurrency: 2\n  default_output_tokens: 24\n  capabilities: [{caps}]\n"
        )
    };
    let catalog = format!(
        "name: live-tools\nmodels:\n{}{}",
        entry("smollm2-tools", ports[0], "tools"),
        entry("gemma3", ports[1], "")
    );
    std::fs::write(dir.join("catalog.yaml"), catalog).unwrap();
    let key = "live-tools-test-key";
    let proxies = [("smollm2-tools", "llama-3.3-nemotron-super-49b-v1"), ("gemma3", "gemma-2-9b-it")];
    let yaml = router_config(&dir, &proxies).replace(
        "tenants: [{name: default, budget_usd: 10}]",
        &format!("tenants: [{{name: default, budget_usd: 10, api_key_sha256: {}}}]", router::config::key_hash(key)),
    );
    let r = Router::start(&dir, &yaml);
    let script = repo().join("tests/python/openai_tools.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&format!("http://{}/v1", r.http), key, "smollm2-tools"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai_tools.py failed:\n{stdout}\n{stderr}");
    eprintln!("openai_tools.py transcript:\n{stdout}");
}
