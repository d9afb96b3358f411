//! End-to-end: a real `llm-router serve` process on the embedded default (replay backends) called
//! over gRPC with the generated client — Route, RouteBatch, RouteStream, ListModels, bad inputs,
//! tenant budgets, config reload (Admin RPC and SIGHUP), load shedding, /metrics.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, scratch, Router};
use common::{connect, request};
use llmroute_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::router_client::RouterClient;
use std::time::{Duration, Instant};
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn q(prompt: &str) -> pb::RouteRequest {
    pb::RouteRequest { prompt: prompt.into(), max_output_tokens: Some(64), ..Default::default() }
}

async fn client(r: &Router) -> RouterClient<tonic::transport::Channel> {
    RouterClient::new(connect(&r.grpc).await.unwrap())
}

#[test]
fn route_batch_stream_models_and_typed_errors() {
    let dir = scratch("serve-basic");
    let r = Router::start(&dir, &config(""));
    rt().block_on(async {
        let mut c = client(&r).await;
        // Route, dispatched to a replay backend.
        let rep = c.route(q("What is the capital of France?")).await.unwrap().into_inner();
        assert!(rep.dispatched && !rep.answer.is_empty() && rep.cost_usd > 0.0, "{rep:?}");
        let why = rep.why.clone().unwrap();
        assert!(why.assigner.starts_with("fast"), "{why:?}");
        let p = rep.predicted.unwrap();
        assert!((0.0..=1.0).contains(&p.mu) && p.sigma > 0.0, "{p:?}");
        // Decision only: nothing charged.
        let mut d = q("Solve 2x + 3 = 7.");
        d.dispatch = Some(false);
        let rep = c.route(d).await.unwrap().into_inner();
        assert!(!rep.dispatched && rep.cost_usd == 0.0 && rep.answer.is_empty() && !rep.model.is_empty());

        // RouteBatch: one batch, spend within its budget.
        let queries: Vec<_> = (0..24).map(|i| q(&format!("Question {i}: what is {i} times {i}?"))).collect();
        let b = c.route_batch(pb::RouteBatchRequest { tenant: String::new(), queries }).await.unwrap().into_inner();
        assert_eq!(b.results.len(), 24);
        assert!(b.results.iter().all(|x| x.batch_id == b.batch_id && x.batch_size == 24));
        assert!(b.spend_usd <= b.budget_usd + 1e-12, "spend {} > budget {}", b.spend_usd, b.budget_usd);

        // Concurrent Routes share batches.
        let mut handles = Vec::new();
        for i in 0..40 {
            let mut c = c.clone();
            handles.push(tokio::spawn(async move { c.route(q(&format!("Name a prime above {i}."))).await }));
        }
        let mut max_size = 0;
        for h in handles {
            max_size = max_size.max(h.await.unwrap().unwrap().into_inner().batch_size);
        }
        assert!(max_size > 1, "concurrent calls were never batched together");

        // RouteStream: start, deltas, done; the deltas make the answer.
        let mut s = c.route_stream(q("Tell me about Mars.")).await.unwrap().into_inner();
        let (mut kinds, mut text, mut done) = (Vec::new(), String::new(), None);
        while let Some(ev) = s.message().await.unwrap() {
            match ev.event.unwrap() {
                pb::route_stream_event::Event::Start(_) => kinds.push("start"),
                pb::route_stream_event::Event::Delta(d) => {
                    kinds.push("delta");
                    text.push_str(&d)
                }
                pb::route_stream_event::Event::Done(r) => {
                    kinds.push("done");
                    done = Some(r)
                }
            }
        }
        assert_eq!(kinds.first(), Some(&"start"));
        assert_eq!(kinds.last(), Some(&"done"));
        assert_eq!(text, done.unwrap().answer);

        let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
        assert_eq!(models.len(), 9);
        assert!(models.iter().all(|m| m.backend == "replay" && m.circuit == "closed"));

        // Bad input: typed status naming the field.
        let cases: Vec<(pb::RouteRequest, Code, &str)> = vec![
            (q(""), Code::InvalidArgument, "prompt"),
            (q(&"x".repeat(40_000)), Code::InvalidArgument, "prompt"),
            (pb::RouteRequest { max_output_tokens: Some(0), ..q("hi") }, Code::InvalidArgument, "max_output_tokens"),
            (pb::RouteRequest { max_cost_usd: Some(f64::NAN), ..q("hi") }, Code::InvalidArgument, "max_cost_usd"),
            (pb::RouteRequest { max_cost_usd: Some(-1.0), ..q("hi") }, Code::InvalidArgument, "max_cost_usd"),
            (
                pb::RouteRequest { allowed_models: vec!["gpt-9".into()], ..q("hi") },
                Code::InvalidArgument,
                "allowed_models[0]",
            ),
            (pb::RouteRequest { tenant: "nobody".into(), ..q("hi") }, Code::Unauthenticated, "tenant"),
            (pb::RouteRequest { tenant: "demo".into(), ..q("hi") }, Code::Unauthenticated, "API key"),
            (
                pb::RouteRequest {
                    messages: vec![pb::ChatMessage { role: "robot".into(), content: "hi".into() }],
                    ..q("")
                },
                Code::InvalidArgument,
                "messages[0].role",
            ),
            (pb::RouteRequest { max_cost_usd: Some(0.0), ..q("hi") }, Code::FailedPrecondition, "max_cost_usd"),
        ];
        for (req, code, field) in cases {
            let e = c.route(req).await.unwrap_err();
            assert_eq!(e.code(), code, "{field}: {e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        let e = c.route(request(q("hi"), Some("wrong-key-123"), None).unwrap()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // The right key works, and the batch request names the bad query.
        c.route(request(q("hi"), Some("llmroute-demo-key"), None).unwrap()).await.unwrap();
        let e = c
            .route_batch(pb::RouteBatchRequest { tenant: String::new(), queries: vec![q("ok"), q("")] })
            .await
            .unwrap_err();
        assert!(e.message().contains("queries[1].prompt"), "{}", e.message());
        // Pinning a model pins it.
        let rep = c
            .route(pb::RouteRequest { allowed_models: vec!["gemma-2-9b-it".into()], ..q("Hello there") })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rep.model, "gemma-2-9b-it");
    });

    // Metrics: Prometheus names, no prompt text.
    let (status, body) = common::http_get(&r.http, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "llmroute_requests_total",
        "llmroute_decision_seconds",
        "llmroute_batch_size",
        "llmroute_solver_seconds",
        "llmroute_backend_ttft_seconds",
        "llmroute_spend_usd",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    assert!(!body.contains("capital of France"));
}

#[test]
fn tenant_budget_runs_out_and_reload_keeps_the_last_good_config() {
    let dir = scratch("serve-budget");
    let tenants = "tenants:\n  - name: default\n    budget_usd: 0.0004\n    window_s: 3600\n";
    let r = Router::start(&dir, &config(tenants));
    rt().block_on(async {
        let mut c = client(&r).await;
        let mut refused = None;
        for i in 0..50 {
            match c.route(q(&format!("Explain topic number {i} in detail."))).await {
                Ok(_) => {}
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = refused.expect("the tenant's budget never ran out");
        assert!(i >= 1, "refused at once");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("tenant `default` is over budget"), "{}", e.message());
        // Decision-only calls still work for a tenant over budget (they cost nothing).
        c.route(pb::RouteRequest { dispatch: Some(false), ..q("hi") }).await.unwrap();

        // A bad config is rejected naming the field; the old one keeps serving.
        let path = dir.join("router.yaml");
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, good.replace("window_ms: 5", "window_ms: -3")).unwrap();
        let mut admin = AdminClient::new(connect(&r.grpc).await.unwrap());
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(!rep.ok && rep.message.contains("batch.window_ms"), "{rep:?}");
        assert_eq!(rep.generation, 1);
        c.route(pb::RouteRequest { dispatch: Some(false), ..q("hi") }).await.unwrap();

        // A good one with a bigger budget and a new tenant takes effect (Admin RPC) ...
        let mut bigger: serde_yaml::Value = serde_yaml::from_str(&good).unwrap();
        common::set(&mut bigger["tenants"][0], "budget_usd", 10.into());
        let team_b: serde_yaml::Value = serde_yaml::from_str(
            "{name: team-b, api_key: team-b-secret, budget_usd: 1, allowed_models: [gemma-2-9b-it]}",
        )
        .unwrap();
        let mut with_b = bigger.clone();
        with_b["tenants"].as_sequence_mut().unwrap().push(team_b);
        let bigger = serde_yaml::to_string(&bigger).unwrap();
        std::fs::write(&path, serde_yaml::to_string(&with_b).unwrap()).unwrap();
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(rep.ok && rep.generation == 2, "{rep:?}");
        c.route(q("Budget is back?")).await.unwrap();
        // The new tenant: its key works, routing stays inside its models, others are refused.
        let rep = c.route(request(q("hi"), Some("team-b-secret"), None).unwrap()).await.unwrap().into_inner();
        assert_eq!(rep.model, "gemma-2-9b-it");
        let outside = pb::RouteRequest { allowed_models: vec!["qwen2.5-7b-instruct".into()], ..q("hi") };
        let e = c.route(request(outside, Some("team-b-secret"), None).unwrap()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("allowed_models[0]"), "{}", e.message());
        let other = pb::RouteRequest { tenant: "default".into(), ..q("hi") };
        let e = c.route(request(other, Some("team-b-secret"), None).unwrap()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // ... and so does SIGHUP.
        std::fs::write(&path, bigger.replace("window_ms: 5", "window_ms: 7")).unwrap();
        let st = std::process::Command::new("kill").args(["-HUP", &r.pid().to_string()]).status().unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        loop {
            let (_, m) = common::http_get(&r.http, "/metrics");
            if m.lines().any(|l| l.starts_with("llmroute_config_generation") && l.ends_with(" 3")) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "SIGHUP reload not seen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = c.route(request(q("hi"), Some("team-b-secret"), None).unwrap()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "team-b was removed by the reload");
    });
}

#[test]
fn overload_is_shed_with_resource_exhausted_at_once() {
    let dir = scratch("serve-overload");
    let extra =
        "admission:\n  max_concurrency: 16\n  request_timeout_ms: 5000\nreplay:\n  ttft_ms: 300\n  ms_per_token: 0\n";
    let r = Router::start(&dir, &config(extra));
    rt().block_on(async {
        let c = client(&r).await;
        let mut handles = Vec::new();
        for i in 0..200 {
            let mut c = c.clone();
            handles.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let res = c.route(request(q(&format!("q{i}")), None, Some(Duration::from_secs(3))).unwrap()).await;
                (res.map(|_| ()).map_err(|e| e.code()), t0.elapsed())
            }));
        }
        let (mut ok, mut shed, mut shed_times) = (0, 0, Vec::new());
        for h in handles {
            let (res, took) = h.await.unwrap();
            match res {
                Ok(()) => ok += 1,
                Err(Code::ResourceExhausted) => {
                    shed += 1;
                    shed_times.push(took);
                }
                Err(c) => panic!("unexpected {c:?}"),
            }
        }
        assert!(ok >= 16, "only {ok} accepted");
        assert!(shed >= 100, "only {shed} shed");
        // Shed at once: well before an accepted call (300 ms) could finish. The bound on the
        // slowest is loose because other tests share this machine's 2 cores.
        shed_times.sort();
        let median = shed_times[shed_times.len() / 2];
        assert!(median < Duration::from_millis(100), "median shed took {median:?}");
        assert!(shed_times[shed_times.len() - 1] < Duration::from_secs(1), "slowest shed {shed_times:?}");
        // Still serving afterwards.
        let mut c = c.clone();
        c.route(q("still there?")).await.unwrap();
    });
}

#[test]
fn mip_assigner_deadlines_and_the_http_facade_errors() {
    let dir = scratch("serve-mip");
    let extra = "assigner:\n  kind: mip\n  gamma: 1.0\n  mip_max_batch: 32\n  mip_time_limit_ms: 200\n\
                 replay:\n  ttft_ms: 300\n  ms_per_token: 0\n";
    let r = Router::start(&dir, &config(extra));
    rt().block_on(async {
        let mut c = client(&r).await;
        let queries: Vec<_> = (0..16).map(|i| q(&format!("Which element has atomic number {i}?"))).collect();
        let b = c.route_batch(pb::RouteBatchRequest { tenant: String::new(), queries }).await.unwrap().into_inner();
        let why = b.results[0].why.clone().unwrap();
        assert_eq!(why.assigner, "mip", "{why:?}");
        assert!(b.spend_usd <= b.budget_usd + 1e-12);
        // A deadline shorter than the model's answer: DEADLINE_EXCEEDED — or, once the router has
        // seen how fast calls leave it, refused at once because the wait would pass the deadline —
        // and the backend's breaker does not count it as the backend's failure.
        for _ in 0..4 {
            let t0 = Instant::now();
            let e = c.route(request(q("slow one"), None, Some(Duration::from_millis(100))).unwrap()).await.unwrap_err();
            let shed = e.code() == Code::ResourceExhausted && e.message().contains("expected wait");
            assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) || shed, "{e:?}");
            assert!(t0.elapsed() < Duration::from_millis(250), "took {:?}", t0.elapsed());
        }
        let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
        assert!(models.iter().all(|m| m.circuit == "closed"), "{models:?}");
    });
    // The facade: OpenAI-shaped errors with the mapped status.
    let post = |body: &str, key: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&r.http).unwrap();
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let out = post(r#"{"model":"auto","messages":[{"role":"user","content":""}]}"#, None);
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("messages"), "{out}");
    let out = post(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#, None);
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("max_tokens"), "{out}");
    let out = post(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#, Some("nope-nope-nope"));
    assert!(out.starts_with("HTTP/1.1 401") && out.contains("authentication_error"), "{out}");
    let out = post(r#"{"messages":[]}"#, None);
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("model"), "{out}");
    let out = post("not json", None);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[test]
fn the_allocator_plan_sets_slots_and_a_reload_picks_up_a_new_one() {
    let dir = scratch("serve-plan");
    let plan = |body: &str| format!("kind: optimized\ninstances:\n{body}");
    std::fs::write(
        dir.join("plan.yaml"),
        plan("  qwen2.5-7b-instruct: {a100-80g: 2}\n  gemma-2-9b-it: {l40s-48g: 1}\n"),
    )
    .unwrap();
    let extra = format!("plan: {}\n", dir.join("plan.yaml").display());
    let r = Router::start(&dir, &config(&extra));
    rt().block_on(async {
        let mut c = client(&r).await;
        let caps = |models: Vec<pb::ModelInfo>| -> Vec<(String, u32)> {
            models.into_iter().filter(|m| m.capacity > 0).map(|m| (m.name, m.capacity)).collect()
        };
        let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
        // dcrouter catalog: max_concurrency 64 per instance.
        assert_eq!(caps(models), vec![("qwen2.5-7b-instruct".into(), 128), ("gemma-2-9b-it".into(), 64)]);
        for i in 0..10 {
            let rep =
                c.route(pb::RouteRequest { dispatch: Some(false), ..q(&format!("Question {i}?")) }).await.unwrap();
            let m = rep.into_inner().model;
            assert!(m == "qwen2.5-7b-instruct" || m == "gemma-2-9b-it", "{m} has no instances");
        }
        // A new plan on reload.
        std::fs::write(dir.join("plan.yaml"), plan("  llama-3.1-8b-instruct: {h100-80g: 3}\n")).unwrap();
        let mut admin = AdminClient::new(connect(&r.grpc).await.unwrap());
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(rep.ok, "{rep:?}");
        let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
        assert_eq!(caps(models), vec![("llama-3.1-8b-instruct".into(), 192)]);
        let pinned = pb::RouteRequest { allowed_models: vec!["qwen2.5-7b-instruct".into()], ..q("hi") };
        let e = c.route(pinned).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // A plan naming a model outside the catalog is rejected, naming it.
        std::fs::write(dir.join("plan.yaml"), plan("  gpt-9: {h100-80g: 1}\n")).unwrap();
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(!rep.ok && rep.message.contains("instances.gpt-9"), "{rep:?}");
    });
}

#[test]
fn serves_with_a_trained_estimator_artifact_and_rejects_a_bad_one() {
    use estimator::records::{common_models, read_records};
    let dir = scratch("serve-artifact");
    let root = common::repo();
    let all = read_records(&root.join("data/dcrouter.jsonl.gz")).unwrap();
    let (models, _) = common_models(&all);
    let catalog = estimator::Catalog::load(&root.join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let train: Vec<&estimator::Record> = all.iter().take(2000).collect();
    let est = estimator::Estimator::train(&train, &models, Some(&catalog), None, &estimator::TrainOptions::default())
        .unwrap();
    let split = estimator::artifact::SplitInfo { source: "dcrouter".into(), records: 2000, train_frac: 1.0, seed: 1 };
    let path = dir.join("est.json.gz");
    estimator::artifact::save(&path, &est, &train, None, Some(&catalog), split).unwrap();
    let section = |artifact: &std::path::Path| {
        format!(
            "estimator:\n  records: {}\n  artifact: {}\n",
            root.join("data/dcrouter.jsonl.gz").display(),
            artifact.display()
        )
    };
    let r = Router::start(&dir, &config(&section(&path)));
    rt().block_on(async {
        let mut c = client(&r).await;
        let rep = c.route(q("What is the integral of x squared?")).await.unwrap().into_inner();
        assert!(!rep.model.is_empty() && !rep.answer.is_empty(), "{rep:?}");
        // A reload pointing at a file that is not an artifact is refused, naming the field, and
        // the last good estimator keeps serving.
        std::fs::write(dir.join("router.yaml"), config(&section(&dir.join("router.yaml")))).unwrap();
        let mut admin = AdminClient::new(connect(&r.grpc).await.unwrap());
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(!rep.ok && rep.message.contains("estimator.artifact"), "{rep:?}");
        assert!(c.route(q("Who wrote Hamlet?")).await.is_ok());
    });
}

/// A static-embedding estimator (`estimator::static_embed`) serves from its artifact: the router
/// loads the table the artifact names (by fingerprint) and embeds each live query with it; the
/// router is built without candle (no `minilm` feature needed).
#[test]
fn serves_with_a_static_embedding_artifact() {
    use estimator::records::{common_models, read_records};
    use estimator::static_embed::{StaticEmbedder, StaticTable};
    let dir = scratch("serve-static");
    let root = common::repo();
    let all = read_records(&root.join("data/dcrouter.jsonl.gz")).unwrap();
    let (models, _) = common_models(&all);
    let catalog = estimator::Catalog::load(&root.join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let train: Vec<&estimator::Record> = all.iter().take(1000).collect();
    let table_path = dir.join("table.bin");
    StaticTable::spelled(16, 7).unwrap().save(&table_path).unwrap();
    let table = std::sync::Arc::new(StaticTable::load(&table_path).unwrap());
    let texts: Vec<&str> = train.iter().map(|r| r.prompt.as_str()).collect();
    let embedder = StaticEmbedder::fit(table, &texts);
    let emb: Vec<Vec<f32>> = texts.iter().map(|t| embedder.embed(t)).collect();
    let opts = estimator::TrainOptions { embedder: estimator::Embedder::Static, ..Default::default() };
    let est = estimator::Estimator::train(&train, &models, Some(&catalog), Some(&emb), &opts)
        .unwrap()
        .with_static_table(embedder)
        .unwrap();
    let split = estimator::artifact::SplitInfo { source: "dcrouter".into(), records: 1000, train_frac: 1.0, seed: 1 };
    let path = dir.join("est.json.gz");
    estimator::artifact::save(&path, &est, &train, Some(&emb), Some(&catalog), split).unwrap();
    let section = format!(
        "estimator:\n  records: {}\n  artifact: {}\n",
        root.join("data/dcrouter.jsonl.gz").display(),
        path.display()
    );
    let r = Router::start(&dir, &config(&section));
    rt().block_on(async {
        let mut c = client(&r).await;
        for prompt in ["What is the integral of x squared?", "Who wrote Hamlet?"] {
            let rep = c.route(q(prompt)).await.unwrap().into_inner();
            assert!(!rep.model.is_empty() && !rep.answer.is_empty(), "{rep:?}");
            assert!(models.contains(&rep.model), "{rep:?}");
        }
        // The router reads the table the artifact names: with another table in its place a
        // reload is refused, naming the field and the mismatch, and the last estimator serves on.
        StaticTable::spelled(16, 8).unwrap().save(&table_path).unwrap();
        std::fs::write(dir.join("router.yaml"), config(&format!("{section}  k: 24\n"))).unwrap();
        let mut admin = AdminClient::new(connect(&r.grpc).await.unwrap());
        let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
        assert!(
            !rep.ok && rep.message.contains("estimator.artifact") && rep.message.contains("not the one it was trained"),
            "{rep:?}"
        );
        assert!(c.route(q("Who wrote Hamlet?")).await.is_ok());
    });
}

/// The CLI end to end: `llm-router route` prints the reply's `request_id`; `llm-router feedback`
/// scores it and prints the model that answered; a second score and a score outside [0, 1] fail
/// with the server's reason.
#[test]
fn cli_route_then_feedback() {
    let dir = scratch("serve-cli");
    let r = Router::start(&dir, &config(""));
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_llm-router"))
            .args(args)
            .env_remove("LLMROUTE_API_KEY")
            .output()
            .unwrap()
    };
    let out = cli(&["route", "--addr", &r.grpc, "--no-dispatch", "What is two plus two?"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = reply["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{reply}");
    let out = cli(&["feedback", "--addr", &r.grpc, "--request-id", id, "--score", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fb["model"], reply["model"]);
    let out = cli(&["feedback", "--addr", &r.grpc, "--request-id", id, "--score", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scored already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["feedback", "--addr", &r.grpc, "--request-id", id, "--score", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("field `score`"), "{}", String::from_utf8_lossy(&out.stderr));
}
