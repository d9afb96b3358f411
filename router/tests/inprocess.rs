//! The request path in process: `router::start` on ports 0 (it returns its bound addresses),
//! backends scripted in the same process (`common::scripted`), calls over real gRPC. No fixed
//! sleeps: every wait is on a reply or a condition.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scripted::{Script, Scripted};
use common::{catalog_file, cheapest_dcrouter_model, connect, default_config, scratch, set, start_in_process};
use llmroute_proto::v1 as pb;
use llmroute_proto::v1::router_client::RouterClient;
use std::collections::BTreeMap;
use std::time::Duration;

/// A scratch folder, a scripted backend following `script` for every model, and the embedded
/// default config with every catalog model on that backend with `slots` slots.
async fn fleet(name: &str, script: Script, slots: u64) -> (std::path::PathBuf, Scripted, serde_yaml::Value) {
    let dir = scratch(name);
    let backend = Scripted::start(script).await;
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, slots).display().to_string().into());
    (dir, backend, cfg)
}

fn query(prompt: &str) -> pb::RouteRequest {
    pb::RouteRequest { prompt: prompt.into(), dispatch: Some(true), max_output_tokens: Some(32), ..Default::default() }
}

/// Finding 1. Every model has 2 slots (18 in all), each answer takes 300 ms, 64 calls arrive at
/// once: the batch cannot fit in the free slots. Before the fix the solver fell back to the
/// cheapest assignment, which ignores capacity: 48 of 64 went to the cheapest model. Now the
/// overflow is spread over the models by the objective (within each model's share of the queue),
/// and every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturated_fleet_does_not_send_everyone_to_the_cheapest_model() {
    let (dir, _backend, cfg) =
        fleet("saturated", Script { latency: Duration::from_millis(300), ..Script::default() }, 2).await;
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut c = RouterClient::new(channel.clone());
            tokio::spawn(async move { c.route(query(&format!("question {i}: explain recursion"))).await })
        })
        .collect();
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    for h in calls {
        let rep = h.await.unwrap().unwrap().into_inner();
        assert!(rep.dispatched, "{rep:?}");
        *by_model.entry(rep.model).or_default() += 1;
    }
    let cheapest = cheapest_dcrouter_model();
    let on_cheapest = by_model.get(&cheapest).copied().unwrap_or(0);
    eprintln!("answers by model: {by_model:?} (cheapest: {cheapest})");
    assert_eq!(by_model.values().sum::<usize>(), 64);
    // 18 slots for 64 calls: a fair share of the overflow is ~7 per model; allow twice that.
    assert!(on_cheapest <= 16, "{on_cheapest} of 64 went to the cheapest model {cheapest}: {by_model:?}");
    r.stop().await.unwrap();
}

/// Finding 6. With room for one call, a streamed answer holds its place for as long as it
/// streams: a second call made while the first is still streaming is shed (RESOURCE_EXHAUSTED),
/// and is admitted again once the stream has ended. Before the fix the permit was released when
/// the stream started, so the second call was admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_answer_holds_its_admission_permit_until_it_ends() {
    let dir = scratch("stream-permit");
    let backend =
        Scripted::start(Script { latency: Duration::from_millis(800), output_tokens: 16, ..Script::default() }).await;
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, 4).display().to_string().into());
    set(&mut cfg, "admission.max_concurrency", 1.into());
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let mut c = RouterClient::new(channel.clone());
    let mut stream = c.route_stream(query("tell me a story")).await.unwrap().into_inner();
    // Wait for the first piece of the answer: the call is now streaming.
    loop {
        let ev = stream.message().await.unwrap().expect("stream ended before any delta");
        if matches!(ev.event, Some(pb::route_stream_event::Event::Delta(_))) {
            break;
        }
    }
    let mut other = RouterClient::new(channel.clone());
    let e = other.route(query("another question")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    while stream.message().await.unwrap().is_some() {}
    drop(stream);
    // Admitted again once the stream is over (the permit goes when its body ends).
    let rep = other.route(query("another question")).await.unwrap().into_inner();
    assert!(rep.dispatched);
    r.stop().await.unwrap();
}

/// Finding 5. A stream that breaks after pieces of the answer reached the caller is charged for
/// them (input + streamed output at the model's price): the ledger's spend rises above zero.
/// Before the fix a failed attempt was free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_fails_after_deltas_is_charged() {
    let dir = scratch("stream-charge");
    let backend = Scripted::start(Script {
        latency: Duration::from_millis(200),
        output_tokens: 16,
        break_after: Some(6),
        ..Script::default()
    })
    .await;
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, 4).display().to_string().into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let mut stream = c.route_stream(query("tell me a story")).await.unwrap().into_inner();
    let mut deltas = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(ev)) => deltas += matches!(ev.event, Some(pb::route_stream_event::Event::Delta(_))) as usize,
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(deltas >= 1, "no delta reached the caller");
    let e = end.expect("the stream must end with an error");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    // The batch settles when its queries finish: wait for the ledger to see the charge.
    let spent = wait_for(Duration::from_secs(10), || {
        let (spent, _) = r.shared.ledger().totals();
        (spent > 0.0).then_some(spent)
    })
    .await
    .expect("the failed stream was not charged");
    eprintln!("charged {spent:.9} USD for {deltas} streamed pieces");
    r.stop().await.unwrap();
}

/// Polls `f` every 10 ms until it gives a value or `limit` passes.
async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three replicas on one fleet whose models have 4 slots each; 60 calls at once, spread over
/// the replicas. Returns the most calls any model's backend saw at once, and the calls answered.
async fn three_replicas(name: &str, replicas: Option<u32>) -> (usize, usize) {
    let dir = scratch(name);
    let backend = Scripted::start(Script { latency: Duration::from_millis(100), ..Script::default() }).await;
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, 4).display().to_string().into());
    if let Some(n) = replicas {
        set(&mut cfg, "backends.replicas", n.into());
    }
    let mut routers = Vec::new();
    let mut channels = Vec::new();
    for k in 0..3 {
        let d = dir.join(format!("r{k}"));
        std::fs::create_dir_all(&d).unwrap();
        let r = start_in_process(&d, &cfg).await;
        channels.push(connect(&r.bound.grpc.to_string()).await.unwrap());
        routers.push(r);
    }
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let mut c = RouterClient::new(channels[i % 3].clone());
            tokio::spawn(async move { c.route(query(&format!("question {i}: what is a monad"))).await })
        })
        .collect();
    let mut answered = 0;
    for h in calls {
        if h.await.unwrap().is_ok_and(|r| r.into_inner().dispatched) {
            answered += 1;
        }
    }
    for r in routers {
        r.stop().await.unwrap();
    }
    let most = backend.seen().values().map(|s| s.max_in_flight).max().unwrap_or(0);
    eprintln!(
        "{name}: replicas setting {replicas:?}: most calls at one model at once {most}, answered {answered} of 60"
    );
    (most, answered)
}

/// Finding 2. Three router replicas told they are three (`backends.replicas: 3`) take a third
/// of each model's 4 slots each: a model's backend never sees more than its 4 calls at once,
/// and every call is answered (the overflow waits in the routers). Unsplit, the same load put
/// more than 4 calls on one model at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_never_overcommit_a_model() {
    let (most, answered) = three_replicas("replicas-split", Some(3)).await;
    assert_eq!(answered, 60);
    assert!(most <= 4, "a model saw {most} calls at once (4 slots)");
    let (unsplit, answered) = three_replicas("replicas-unsplit", None).await;
    assert_eq!(answered, 60);
    assert!(unsplit > 4, "without the split three replicas overcommit ({unsplit}): the test would prove nothing");
}

/// Dispatch: every model but the cheapest answers HTTP 500. Each call falls back until the
/// cheapest answers (it always fits the plan: it costs no more than the failed choice), says so
/// in `why`, and is charged once, for the answer; after `breaker_failures` failures a failing
/// model's circuit opens and later calls are not sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_models_fall_back_to_a_working_one_and_open_their_circuits() {
    let dir = scratch("fallback");
    let backend = Scripted::start(Script { fail_first: usize::MAX, ..Script::default() }).await;
    let cheapest = cheapest_dcrouter_model();
    backend.set(&cheapest, Script::default());
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog_file(&dir, &backend.url, 8).display().to_string().into());
    set(&mut cfg, "backends.breaker_failures", 2.into());
    set(&mut cfg, "backends.breaker_open_ms", 60_000.into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let mut fell_back = 0;
    for i in 0..12 {
        let rep = c.route(query(&format!("question {i}: prove that sqrt 2 is irrational"))).await.unwrap().into_inner();
        assert_eq!(rep.model, cheapest, "{rep:?}");
        let why = rep.why.unwrap_or_default();
        if why.fallback {
            fell_back += 1;
            assert!(
                !why.failed_models.is_empty() && why.failed_models.iter().all(|f| f.contains("HTTP 500")),
                "{why:?}"
            );
        }
        // Charged once, for the answer that succeeded (failed attempts streamed nothing).
        let usage = rep.usage.unwrap_or_default();
        assert_eq!(usage.output_tokens, 16);
        assert!(rep.cost_usd > 0.0 && rep.cost_usd <= rep.predicted.unwrap_or_default().cost_usd * 2.0 + 1e-9);
    }
    assert!(fell_back >= 1, "no call ever fell back");
    let models = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
    let seen = backend.seen();
    for m in models.iter().filter(|m| m.name != cheapest) {
        let calls = seen.get(&m.name).map_or(0, |s| s.calls);
        // A model that failed twice is open and got no third call.
        assert!(calls <= 2, "{} got {calls} calls through a breaker of 2", m.name);
        if calls == 2 {
            assert_eq!(m.circuit, "open", "{}", m.name);
        }
    }
    eprintln!(
        "{fell_back} of 12 calls fell back; calls per model: {:?}",
        seen.iter().map(|(k, v)| (k, v.calls)).collect::<Vec<_>>()
    );
    r.stop().await.unwrap();
}

/// The facade's reply metadata and its two new endpoints, over HTTP: every answer carries
/// `x-llmroute-request-id`; a routed one `x-llmroute-model` (and its cost when not streamed);
/// `/v1/completions` and `/v1/responses` answer in their shapes; a streamed call refused before its
/// decision gets a plain JSON error, not an event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn facade_headers_completions_and_responses() {
    let (dir, _backend, cfg) = fleet("facade", Script::default(), 8).await;
    let r = start_in_process(&dir, &cfg).await;
    let base = format!("http://{}", r.bound.http);
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).json(&body).send();

    let resp =
        post("/v1/completions", serde_json::json!({"model": "auto", "prompt": "Once upon a time", "max_tokens": 8}))
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(h["x-llmroute-model"].to_str().unwrap(), v["model"].as_str().unwrap());
    assert_eq!(h["x-llmroute-request-id"].len(), 32);
    let cost: f64 = h["x-llmroute-cost-usd"].to_str().unwrap().parse().unwrap();
    assert!((cost - v["llmroute"]["cost_usd"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(v["choices"][0]["text"].as_str().unwrap().split_whitespace().count(), 16);

    let v: serde_json::Value =
        post("/v1/responses", serde_json::json!({"model": "auto", "input": "Hi", "instructions": "Be brief."}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")));
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Refused before any decision: a JSON error with its request id, also when streaming.
    for (path, body, field) in [
        ("/v1/completions", serde_json::json!({"model": "auto", "prompt": ["a", "b"]}), "prompt"),
        ("/v1/responses", serde_json::json!({"model": "nope", "input": "x", "stream": true}), "model"),
        ("/v1/chat/completions", serde_json::json!({"model": "auto", "stream": true}), "messages"),
    ] {
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        assert!(resp.headers().contains_key("x-llmroute-request-id"));
        assert!(!resp.headers().contains_key("x-llmroute-model"));
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(field), "{path}: {v}");
    }
    r.stop().await.unwrap();
}

/// The dcrouter catalog on the scripted backend with per-model capabilities and context windows.
fn catalog_with(dir: &std::path::Path, url: &str, caps: &[(&str, &[&str])], context: &[(&str, u64)]) -> String {
    let path = catalog_file(dir, url, 8);
    let mut v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for m in v["models"].as_sequence_mut().unwrap() {
        let name = m["name"].as_str().unwrap().to_string();
        if let Some((_, c)) = caps.iter().find(|(n, _)| *n == name) {
            set(m, "capabilities", c.iter().map(|s| serde_yaml::Value::from(*s)).collect::<Vec<_>>().into());
        }
        if let Some((_, t)) = context.iter().find(|(n, _)| *n == name) {
            set(m, "context_tokens", (*t).into());
        }
    }
    std::fs::write(&path, serde_yaml::to_string(&v).unwrap()).unwrap();
    path.display().to_string()
}

/// Issue 19 (items 1 and 2, HTTP to OpenAI-compatible backends): fields the router does not
/// interpret reach the backend as sent; a call with tools goes only to a tools-capable model and
/// its tool calls come back (whole and streamed); the tool result turn is accepted and forwarded
/// raw; an image part goes only to a vision model, or is refused naming what is missing; a
/// prompt longer than a model's context skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn facade_forwards_fields_and_routes_by_capability() {
    let dir = scratch("capabilities");
    let backend = Scripted::start(Script { tool_call: true, ..Script::default() }).await;
    let catalog = catalog_with(
        &dir,
        &backend.url,
        &[("qwen2.5-7b-instruct", &["tools", "json_schema"]), ("llama-3.1-8b-instruct", &["tools", "vision"])],
        &[("gemma-2-9b-it", 64)],
    );
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog.into());
    let r = start_in_process(&dir, &cfg).await;
    let base = format!("http://{}", r.bound.http);
    let http = reqwest::Client::new();
    let chat = |body: serde_json::Value| http.post(format!("{base}/v1/chat/completions")).json(&body).send();
    let tools = serde_json::json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);

    // Turn 1: tools offered, sampling fields set.
    let v: serde_json::Value = chat(serde_json::json!({
        "model": "auto", "max_tokens": 32, "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["END"],
        "tools": tools, "tool_choice": "auto", "user": "u-1",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let model = v["model"].as_str().unwrap().to_string();
    assert!(["qwen2.5-7b-instruct", "llama-3.1-8b-instruct"].contains(&model.as_str()), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let calls = v["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(calls[0]["function"]["name"], "weather", "{v}");
    let sent = backend.last_body(&model).unwrap();
    for k in ["temperature", "top_p", "seed", "stop", "tools", "tool_choice", "user"] {
        assert!(sent.get(k).is_some(), "`{k}` was not forwarded: {sent}");
    }
    assert_eq!(sent["max_tokens"], 32);
    assert!(sent.get("stream_options").is_none() && sent.get("llmroute").is_none(), "{sent}");

    // Turn 2: the assistant's tool call and the tool's result, forwarded as sent.
    let resp = chat(serde_json::json!({
        "model": "auto", "tools": tools,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"},
                     {"role": "assistant", "content": null, "tool_calls": calls},
                     {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}]}))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let model = v["model"].as_str().unwrap();
    let sent = backend.last_body(model).unwrap();
    assert_eq!(sent["messages"][2]["role"], "tool");
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_1");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_1");

    // Streamed with tools: the tool calls come as a delta.
    let text = chat(serde_json::json!({"model": "auto", "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Rome?"}]}))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        text.contains("\"tool_calls\":[{") && text.contains("\"index\":0") && text.contains("data: [DONE]"),
        "{text}"
    );

    // An image part: only the vision model; pinned elsewhere, refused naming what is missing.
    let image = serde_json::json!([{"type": "text", "text": "What is in this picture?"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]);
    let v: serde_json::Value =
        chat(serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": image}]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(v["model"], "llama-3.1-8b-instruct", "{v}");
    assert_eq!(backend.last_body("llama-3.1-8b-instruct").unwrap()["messages"][0]["content"][1]["type"], "image_url");
    let resp =
        chat(serde_json::json!({"model": "qwen2.5-7b-instruct", "messages": [{"role": "user", "content": image}]}))
            .await
            .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("vision"), "{v}");

    // A JSON schema response format: only the model that declares it.
    let v: serde_json::Value = chat(serde_json::json!({"model": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "messages": [{"role": "user", "content": "Give me an object."}]}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["model"], "qwen2.5-7b-instruct", "{v}");

    // Context: gemma-2-9b-it holds 64 tokens; pinned with a longer call, refused naming max_tokens.
    let long = "word ".repeat(200);
    let resp = chat(serde_json::json!({"model": "gemma-2-9b-it", "max_tokens": 16, "messages": [{"role": "user", "content": long}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("context"), "{v}");
    r.stop().await.unwrap();
}

/// The same over gRPC: `openai_fields_json` and `openai_messages_json` carry tools and tool
/// turns; the reply's `tool_calls_json` holds the calls; bad JSON is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_carries_openai_fields_and_tool_calls() {
    let dir = scratch("grpc-tools");
    let backend = Scripted::start(Script { tool_call: true, ..Script::default() }).await;
    let catalog = catalog_with(&dir, &backend.url, &[("qwen2.5-7b-instruct", &["tools"])], &[]);
    let mut cfg = default_config();
    set(&mut cfg, "catalog", catalog.into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let fields =
        r#"{"tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}], "temperature": 0}"#;
    let rep = c
        .route(pb::RouteRequest {
            openai_messages_json: r#"[{"role": "user", "content": "Weather in Oslo?"}]"#.into(),
            openai_fields_json: fields.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rep.model, "qwen2.5-7b-instruct");
    let calls: serde_json::Value = serde_json::from_str(&rep.tool_calls_json).unwrap();
    assert_eq!(calls[0]["function"]["name"], "weather");
    assert_eq!(backend.last_body("qwen2.5-7b-instruct").unwrap()["temperature"], 0);
    let e = c
        .route(pb::RouteRequest { prompt: "hi".into(), openai_fields_json: "{tools".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("openai_fields_json"), "{}", e.message());
    r.stop().await.unwrap();
}

/// Queue-aware shedding (issue 16, item 3). The fleet answers ~45 calls/s (9 models × 1 slot ×
/// 200 ms). After a warm-up, 200 calls arrive at once with a 1 s deadline: the router refuses at
/// once (RESOURCE_EXHAUSTED) those whose expected wait — calls held / completion rate — is past
/// their deadline, instead of queueing them until they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_that_would_wait_past_their_deadline_are_refused_at_once() {
    let (dir, _backend, cfg) =
        fleet("shedding", Script { latency: Duration::from_millis(200), ..Script::default() }, 1).await;
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let fire = |n: usize, timeout: Duration| {
        (0..n)
            .map(|i| {
                let mut c = RouterClient::new(channel.clone());
                tokio::spawn(async move {
                    let mut req = tonic::Request::new(query(&format!("call {i}: define entropy")));
                    req.set_timeout(timeout);
                    let t0 = std::time::Instant::now();
                    let res = c.route(req).await;
                    (res.map(|_| ()).map_err(|e| e.code()), t0.elapsed())
                })
            })
            .collect::<Vec<_>>()
    };
    for h in fire(30, Duration::from_secs(10)) {
        assert!(h.await.unwrap().0.is_ok());
    }
    let (mut ok, mut late, mut refused, mut refusal_ms) = (0, 0, 0, Vec::new());
    for h in fire(200, Duration::from_secs(1)) {
        match h.await.unwrap() {
            (Ok(()), _) => ok += 1,
            // Past the deadline: the router's answer, or the client's own timer (Cancelled).
            (Err(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), _) => late += 1,
            (Err(tonic::Code::ResourceExhausted), t) => {
                refused += 1;
                refusal_ms.push(t.as_secs_f64() * 1e3);
            }
            (Err(c), _) => panic!("unexpected {c:?}"),
        }
    }
    refusal_ms.sort_by(f64::total_cmp);
    let p99 = refusal_ms.get(refusal_ms.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0.0);
    eprintln!("200 calls, 1 s deadline: {ok} answered, {late} past their deadline, {refused} refused (refusal p99 {p99:.1} ms)");
    assert!(refused >= 100, "only {refused} refused");
    assert!(late <= 20, "{late} calls still waited past their deadline");
    assert!(p99 < 200.0, "refusals took {p99:.1} ms at p99");
    r.stop().await.unwrap();
}

/// Window 0 on the request path: 300 decision-only and 30 dispatched calls at once are all
/// answered, no batch holds more replies than its size, and a lone call afterwards is a batch
/// of one (the collector closes at once with what is queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_window_answers_every_call() {
    let (dir, _backend, mut cfg) = fleet("window-zero", Script::default(), 8).await;
    set(&mut cfg, "batch.window_ms", 0.into());
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let calls: Vec<_> = (0..330)
        .map(|i| {
            let mut c = RouterClient::new(channel.clone());
            let mut q = query(&format!("question {i}: what is a closure"));
            q.dispatch = Some(i % 11 == 0);
            tokio::spawn(async move { c.route(q).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut sizes: BTreeMap<u64, u32> = BTreeMap::new();
    let mut dispatched = 0;
    for h in calls {
        let rep = h.await.unwrap().unwrap();
        dispatched += usize::from(rep.dispatched);
        let n = sizes.entry(rep.batch_id).or_insert(0);
        *n += 1;
        assert!(*n <= rep.batch_size, "batch {} holds more replies than its size {}", rep.batch_id, rep.batch_size);
    }
    assert_eq!(dispatched, 30);
    eprintln!("330 calls in {} batches", sizes.len());
    let mut c = RouterClient::new(channel.clone());
    let lone = c.route(query("a lone question")).await.unwrap().into_inner();
    assert_eq!(lone.batch_size, 1, "{lone:?}");
    r.stop().await.unwrap();
}

/// Found by the `--llama` soak: a slow backend (a 1-thread llama.cpp server, seconds per
/// answer) kept getting calls it could not finish before their deadline, and their callers
/// timed out. Now the router learns each model's answer time from its answers and passes a
/// model over for a call whose deadline comes first, while another allowed model is in time.
/// Here the model the router prefers for a prompt is made slow (600 ms an answer), taught by 10
/// calls restricted to it, then 20 calls in turn allowed it and one fast model with a 400 ms
/// deadline: every one is answered, by the fast model. (Before, they went to the preferred slow
/// model and ran out of time. One after another, so the queue-aware shedding, whose completion
/// rate still reflects the slow answers, does not refuse them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_too_slow_for_the_deadline_is_passed_over() {
    let (dir, backend, cfg) = fleet("deadline-aware", Script::default(), 4).await;
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let text = std::fs::read_to_string(dir.join("catalog.yaml")).unwrap();
    let catalog: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let names: Vec<String> =
        catalog["models"].as_sequence().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect();
    let prompt = "explain how a hash map resolves collisions";
    let call = |allowed: Vec<String>, timeout: Duration| {
        let mut c = RouterClient::new(channel.clone());
        let mut q = query(prompt);
        q.allowed_models = allowed;
        tokio::spawn(async move {
            let mut req = tonic::Request::new(q);
            req.set_timeout(timeout);
            c.route(req).await.map(|r| r.into_inner().model).map_err(|e| e.code())
        })
    };
    // The model the router picks between the first two when time does not matter.
    let pair = vec![names[0].clone(), names[1].clone()];
    let slow = call(pair.clone(), Duration::from_secs(10)).await.unwrap().unwrap();
    let fast = pair.iter().find(|n| **n != slow).unwrap().clone();
    backend.set(&slow, Script { latency: Duration::from_millis(600), ..Script::default() });
    let teach: Vec<_> = (0..10).map(|_| call(vec![slow.clone()], Duration::from_secs(10))).collect();
    for h in teach {
        assert_eq!(h.await.unwrap().unwrap(), slow);
    }
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        match call(pair.clone(), Duration::from_millis(400)).await.unwrap() {
            Ok(m) => *by_model.entry(m).or_default() += 1,
            Err(code) => panic!("a call failed with {code:?} (answers so far: {by_model:?}; slow {slow}, fast {fast})"),
        }
    }
    assert_eq!(by_model.get(&fast).copied(), Some(20), "{by_model:?} (slow {slow}, fast {fast})");
    let (_, metrics) = common::http_get(&r.bound.http.to_string(), "/metrics");
    let line = metrics.lines().find(|l| l.starts_with("llmroute_passed_over_late_total") && l.contains(&slow));
    assert!(line.is_some_and(|l| !l.ends_with(" 0")), "no passed-over count for {slow}: {line:?}");
    r.stop().await.unwrap();
}

/// Issue 18, item 4: every answer carries a unique request id — gRPC `request_id`; over HTTP the
/// `x-llmroute-request-id` header and `llmroute.request_id` in the body, the same id — and the
/// router keeps the query's tenant, prompt hash, model, μ and σ under it (not the prompt).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_answer_has_a_request_id_the_router_keeps() {
    let (dir, _backend, cfg) = fleet("request-ids", Script::default(), 4).await;
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let prompt = "what is recursion? answer in one line";
    let a = c.route(query(prompt)).await.unwrap().into_inner();
    let b = c.route(pb::RouteRequest { dispatch: Some(false), ..query(prompt) }).await.unwrap().into_inner();
    assert_ne!(a.request_id, b.request_id);
    for id in [&a.request_id, &b.request_id] {
        assert!(id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    let retention = r.shared.live().config.feedback.retention();
    let now = std::time::Instant::now();
    let kept = r.shared.requests.get(&a.request_id, retention, now).expect("the answered query is kept");
    let p = a.predicted.unwrap();
    assert_eq!((kept.model.as_str(), kept.mu, kept.sigma), (a.model.as_str(), p.mu, p.sigma));
    assert_eq!((kept.tenant.as_str(), kept.dispatched), ("default", true));
    assert_eq!(kept.prompt_hash, router::requests::prompt_hash(prompt));
    let decided = r.shared.requests.get(&b.request_id, retention, now).expect("a decision-only answer is kept");
    assert!(!decided.dispatched);
    assert!(r.shared.requests.get("0123456789abcdef0123456789abcdef", retention, now).is_none());

    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", r.bound.http))
        .json(&serde_json::json!({"model": "auto", "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    let header = resp.headers()["x-llmroute-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["llmroute"]["request_id"], header.as_str());
    let kept = r.shared.requests.get(&header, retention, std::time::Instant::now()).unwrap();
    assert_eq!(kept.model, body["model"].as_str().unwrap());
    r.stop().await.unwrap();
}

/// Issue 18, item 3 (the API): a tenant scores its own answered request once; an unknown id,
/// another tenant's id and a second score are refused with NOT_FOUND / ALREADY_EXISTS, a score
/// outside [0, 1] with INVALID_ARGUMENT naming `score`; the same over HTTP (404, 409, 400); an
/// accepted score is appended to `feedback.log` (no prompt text) and counted per model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_scores_a_tenants_own_answers_once() {
    let (dir, _backend, mut cfg) = fleet("feedback", Script::default(), 4).await;
    let log = dir.join("feedback.jsonl");
    set(&mut cfg, "feedback.log", log.display().to_string().into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let prompt = "name the largest planet";
    let a = c.route(query(prompt)).await.unwrap().into_inner();
    let score = |id: &str, s: f64| pb::FeedbackRequest { request_id: id.into(), score: s, ..Default::default() };
    let ok = c.feedback(score(&a.request_id, 1.0)).await.unwrap().into_inner();
    assert_eq!((ok.model.as_str(), ok.predicted_mu), (a.model.as_str(), a.predicted.unwrap().mu));
    let again = c.feedback(score(&a.request_id, 0.0)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let unknown = c.feedback(score("0123456789abcdef0123456789abcdef", 1.0)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let b = c.route(query(prompt)).await.unwrap().into_inner();
    for bad in [1.5, -0.1, f64::NAN] {
        let e = c.feedback(score(&b.request_id, bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("field `score`"), "{}", e.message());
    }
    // Another tenant (the demo key's) cannot see the default tenant's request.
    let foreign = common::request(score(&b.request_id, 1.0), Some("llmroute-demo-key"), None).unwrap();
    assert_eq!(c.feedback(foreign).await.unwrap_err().code(), tonic::Code::NotFound);

    // HTTP: 200, then 409, 404, 400 naming the field.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/feedback", r.bound.http);
    let post = |body: serde_json::Value| http.post(&url).json(&body).send();
    let resp = post(serde_json::json!({"request_id": b.request_id, "score": 0.0, "output_tokens": 7})).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["model"], b.model.as_str());
    let resp = post(serde_json::json!({"request_id": b.request_id, "score": 1.0})).await.unwrap();
    assert_eq!(resp.status(), 409);
    let resp = post(serde_json::json!({"request_id": "nope", "score": 1.0})).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = post(serde_json::json!({"request_id": b.request_id, "score": "high"})).await.unwrap();
    assert_eq!(resp.status(), 400);
    let msg = resp.json::<serde_json::Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("field `score`"), "{msg}");

    // Two scores accepted: two lines, no prompt text.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!((lines[0]["request_id"].as_str(), lines[0]["score"].as_f64()), (Some(a.request_id.as_str()), Some(1.0)));
    assert_eq!((lines[1]["model"].as_str(), lines[1]["output_tokens"].as_u64()), (Some(b.model.as_str()), Some(7)));
    assert!(!text.contains("planet"), "prompt text in the feedback log");
    let (_, metrics) = common::http_get(&r.bound.http.to_string(), "/metrics");
    assert!(metrics.contains("llmroute_feedback_total"), "no feedback counter");
    r.stop().await.unwrap();
}

/// Issue 18, item 3 (learning online): a model degrades after the estimator was trained — every
/// answer it gives now scores 0. A stream of 400 dcrouter prompts is routed one at a time
/// (decision only) twice: without feedback, and with each answer scored by the truth (the
/// record's score, 0 for the degraded model) as it comes. With feedback the router learns from the
/// scores of similar queries and sends fewer queries to the degraded model; the stream's routed
/// accuracy over its second half rises. On the same stream with nothing degraded, feedback costs
/// no accuracy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_on_a_degraded_model_raises_routed_accuracy() {
    let recs = estimator::records::read_records(&common::repo().join("data/dcrouter.jsonl.gz")).unwrap();
    let stream: Vec<&estimator::records::Record> = recs.iter().step_by(13).take(400).collect();
    // The stream without feedback first: its most chosen model is the one that degrades.
    let run = |name: &'static str, online: bool, broken: Option<String>, stream: Vec<estimator::records::Record>| async move {
        let (dir, _backend, mut cfg) = fleet(name, Script::default(), 4).await;
        set(&mut cfg, "feedback.online", online.into());
        let r = start_in_process(&dir, &cfg).await;
        let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
        let mut scores = Vec::new();
        let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
        for rec in &stream {
            let req = pb::RouteRequest { dispatch: Some(false), task: rec.task.clone(), ..query(&rec.prompt) };
            let rep = c.route(req).await.unwrap().into_inner();
            let truth = if broken.as_deref() == Some(rep.model.as_str()) {
                0.0
            } else {
                rec.outcomes.get(&rep.model).map_or(0.0, |o| o.score)
            };
            if online {
                let fb = pb::FeedbackRequest { request_id: rep.request_id.clone(), score: truth, ..Default::default() };
                c.feedback(fb).await.unwrap();
            }
            *chosen.entry(rep.model).or_default() += 1;
            scores.push(truth);
        }
        r.stop().await.unwrap();
        (scores, chosen)
    };
    let owned: Vec<estimator::records::Record> = stream.iter().map(|r| (*r).clone()).collect();
    let (clean_without, first) = run("fb-probe", false, None, owned.clone()).await;
    // No harm where nothing degraded: the same stream with feedback on the recorded scores.
    let (clean_with, _) = run("fb-clean", true, None, owned.clone()).await;
    let broken = first.iter().max_by_key(|(_, n)| **n).map(|(m, _)| m.clone()).unwrap();
    let (without, chosen_without) = run("fb-off", false, Some(broken.clone()), owned.clone()).await;
    let (with, chosen_with) = run("fb-on", true, Some(broken.clone()), owned).await;
    let half = |s: &[f64]| s[s.len() / 2..].iter().sum::<f64>() / (s.len() - s.len() / 2) as f64;
    let (a0, a1) = (half(&without), half(&with));
    let on_broken = |m: &BTreeMap<String, usize>| m.get(&broken).copied().unwrap_or(0);
    eprintln!(
        "degraded model {broken}: routed to it {} of 400 without feedback, {} with; second-half accuracy {a0:.3} → {a1:.3}",
        on_broken(&chosen_without),
        on_broken(&chosen_with)
    );
    let (c0, c1) = (half(&clean_without), half(&clean_with));
    eprintln!("nothing degraded: second-half accuracy {c0:.3} without feedback, {c1:.3} with");
    assert!(on_broken(&chosen_with) * 2 < on_broken(&chosen_without), "{chosen_without:?} vs {chosen_with:?}");
    assert!(a1 > a0 + 0.03, "second-half accuracy {a0:.3} without feedback, {a1:.3} with");
    assert!(c1 >= c0 - 0.01, "feedback on a healthy fleet cost accuracy: {c0:.3} → {c1:.3}");
}

/// Day-0 priors (issue 18): a pruned model with no records of its own, added to a running router
/// by reload, is predicted from its parent — μ × the catalog's quality ratio, σ wider — so it is
/// routed traffic at once, and `ListModels` says it runs on a prior. Feedback then moves its μ
/// toward what it scores (here: it answers everything wrong), and it loses its traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_model_runs_on_its_parents_prior_until_feedback_moves_it() {
    use llmroute_proto::v1::admin_client::AdminClient;
    let recs = estimator::records::read_records(&common::repo().join("data/dcrouter.jsonl.gz")).unwrap();
    let stream: Vec<&estimator::records::Record> = recs.iter().step_by(17).take(240).collect();
    let (dir, _backend, mut cfg) = fleet("day0", Script::default(), 4).await;
    set(&mut cfg, "feedback.online", true.into());
    // A fixed batch price that makes a 20× cheaper model worth a few points of μ.
    set(&mut cfg, "budget.price", 2000.0.into());
    let r = start_in_process(&dir, &cfg).await;
    let channel = connect(&r.bound.grpc.to_string()).await.unwrap();
    let mut c = RouterClient::new(channel.clone());
    let decide = |prompt: &str, task: Option<String>, only: &[&str]| pb::RouteRequest {
        dispatch: Some(false),
        task,
        allowed_models: only.iter().map(|s| s.to_string()).collect(),
        ..query(prompt)
    };
    // The parent: the model the router picks most for this traffic.
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    for rec in stream.iter().take(60) {
        let rep = c.route(decide(&rec.prompt, rec.task.clone(), &[])).await.unwrap().into_inner();
        *chosen.entry(rep.model).or_default() += 1;
    }
    let parent = chosen.iter().max_by_key(|(_, n)| **n).map(|(m, _)| m.clone()).unwrap();

    // Add `parent-pruned` (no records; a twentieth of the parent's prices; quality ratio 0.98).
    let catalog_path = dir.join("catalog.yaml");
    let mut catalog: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&catalog_path).unwrap()).unwrap();
    let models = catalog["models"].as_sequence_mut().unwrap();
    let mut pruned = models.iter().find(|m| m["name"].as_str() == Some(parent.as_str())).unwrap().clone();
    let name = format!("{parent}-pruned");
    set(&mut pruned, "name", name.clone().into());
    set(&mut pruned, "parent", parent.clone().into());
    set(&mut pruned, "recipe", "sparsegpt 2:4".into());
    for k in ["price_in_per_mtok", "price_out_per_mtok"] {
        let p = pruned[k].as_f64().unwrap();
        set(&mut pruned, k, (p / 20.0).into());
    }
    // Without a quality ratio (no card, no quality_ratio) the reload is refused, naming the field.
    models.push(pruned.clone());
    std::fs::write(&catalog_path, serde_yaml::to_string(&catalog).unwrap()).unwrap();
    let mut admin = AdminClient::new(channel.clone());
    let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
    assert!(!rep.ok && rep.message.contains("quality_ratio") && rep.message.contains(&name), "{rep:?}");
    set(catalog["models"].as_sequence_mut().unwrap().last_mut().unwrap(), "quality_ratio", 0.98.into());
    std::fs::write(&catalog_path, serde_yaml::to_string(&catalog).unwrap()).unwrap();
    let rep = admin.reload(pb::ReloadRequest {}).await.unwrap().into_inner();
    assert!(rep.ok, "{rep:?}");
    let listed = c.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
    let info = listed.iter().find(|m| m.name == name).unwrap();
    assert!(info.prior.contains(&parent) && info.prior.contains("0.980"), "{info:?}");
    assert!(listed.iter().filter(|m| m.name != name).all(|m| m.prior.is_empty()), "{listed:?}");

    // Its μ is the parent's × 0.98 on the same query; its σ is wider.
    let probe = &stream[200];
    let mu_of = |rep: pb::RouteResponse| rep.predicted.unwrap();
    let of_parent = mu_of(c.route(decide(&probe.prompt, probe.task.clone(), &[&parent])).await.unwrap().into_inner());
    let of_pruned = mu_of(c.route(decide(&probe.prompt, probe.task.clone(), &[&name])).await.unwrap().into_inner());
    eprintln!(
        "parent {parent}: mu {:.3} sigma {:.3}; {name}: mu {:.3} sigma {:.3}",
        of_parent.mu, of_parent.sigma, of_pruned.mu, of_pruned.sigma
    );
    assert!((of_pruned.mu - 0.98 * of_parent.mu).abs() < 1e-6, "{of_pruned:?} vs {of_parent:?}");
    assert!(of_pruned.sigma > of_parent.sigma, "{of_pruned:?} vs {of_parent:?}");

    // Routed at once: its share of 40 queries before any feedback.
    let count = |c: &mut RouterClient<tonic::transport::Channel>, recs: Vec<estimator::records::Record>| {
        let mut c = c.clone();
        let name = name.clone();
        async move {
            let mut n = 0;
            for rec in &recs {
                let rep = c.route(decide(&rec.prompt, rec.task.clone(), &[])).await.unwrap().into_inner();
                n += usize::from(rep.model == name);
            }
            n
        }
    };
    let held: Vec<estimator::records::Record> = stream.iter().skip(200).map(|r| (*r).clone()).collect();
    let before = count(&mut c, held.clone()).await;
    // A stream with feedback: the pruned model answers everything wrong.
    let mut fed = 0;
    for rec in stream.iter().skip(60).take(140) {
        let rep = c.route(decide(&rec.prompt, rec.task.clone(), &[])).await.unwrap().into_inner();
        let score = if rep.model == name { 0.0 } else { rec.outcomes.get(&rep.model).map_or(0.0, |o| o.score) };
        fed += usize::from(rep.model == name);
        let fb = pb::FeedbackRequest { request_id: rep.request_id.clone(), score, ..Default::default() };
        c.feedback(fb).await.unwrap();
    }
    let after_n = count(&mut c, held).await;
    let after = mu_of(c.route(decide(&probe.prompt, probe.task.clone(), &[&name])).await.unwrap().into_inner());
    eprintln!(
        "{name}: routed {before} of 40 held-out queries before feedback, {after_n} after {fed} zero scores; its mu on the probe {:.3} → {:.3}",
        of_pruned.mu, after.mu
    );
    assert!(before >= 4, "a cheaper copy of the favourite gets traffic at once: {before} of 40");
    assert!(after_n * 4 <= before, "feedback took its traffic away: {before} → {after_n} of 40");
    assert!(after.mu < 0.6 * of_pruned.mu, "its mu moved toward 0: {:.3} → {:.3}", of_pruned.mu, after.mu);
    r.stop().await.unwrap();
}

/// Issue 18, item 3 (the durable log trains the estimator): with `feedback.log_prompts` each
/// accepted score's log line carries the prompt and task. A model degrades after training (every
/// answer it gives scores 0); 300 dcrouter prompts are routed (decision only, no online learning)
/// and scored. `estimator::feedback` turns the log into records — the scored model's outcome from
/// the score, the others predicted — and an estimator trained on the records plus the log predicts
/// the degraded model far lower on the prompts it was scored on, while the other models' μ there
/// barely move. (`estimator train --feedback LOG` runs the same two steps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feedback_log_with_prompts_trains_the_estimator() {
    let recs = estimator::records::read_records(&common::repo().join("data/dcrouter.jsonl.gz")).unwrap();
    let stream: Vec<&estimator::records::Record> = recs.iter().skip(5).step_by(11).take(300).collect();
    let (dir, _backend, mut cfg) = fleet("fb-log-train", Script::default(), 4).await;
    let log = dir.join("feedback.jsonl");
    set(&mut cfg, "feedback.log", log.display().to_string().into());
    set(&mut cfg, "feedback.log_prompts", true.into());
    set(&mut cfg, "feedback.online", false.into());
    let r = start_in_process(&dir, &cfg).await;
    let mut c = RouterClient::new(connect(&r.bound.grpc.to_string()).await.unwrap());
    let mut broken: Option<String> = None;
    let mut scored_broken = Vec::new();
    for rec in &stream {
        let req = pb::RouteRequest { dispatch: Some(false), task: rec.task.clone(), ..query(&rec.prompt) };
        let rep = c.route(req).await.unwrap().into_inner();
        let b = broken.get_or_insert_with(|| rep.model.clone());
        let score = if *b == rep.model {
            scored_broken.push(*rec);
            0.0
        } else {
            rec.outcomes.get(&rep.model).map_or(0.0, |o| o.score)
        };
        let fb = pb::FeedbackRequest { request_id: rep.request_id, score, ..Default::default() };
        c.feedback(fb).await.unwrap();
    }
    r.stop().await.unwrap();
    let broken = broken.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), stream.len());
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["prompt"].as_str(), Some(stream[0].prompt.as_str()), "{first}");
    assert_eq!(first["task"].as_str(), stream[0].task.as_deref());
    assert!(scored_broken.len() >= 20, "only {} answers of {broken} scored", scored_broken.len());

    let (models, _) = estimator::records::common_models(&recs);
    let refs: Vec<&estimator::records::Record> = recs.iter().collect();
    let opts = estimator::TrainOptions { head: false, ..Default::default() };
    let before = estimator::Estimator::train(&refs, &models, None, None, &opts).unwrap();
    let parsed = estimator::feedback::read_log(&log).unwrap();
    assert_eq!((parsed.lines, parsed.without_prompt), (stream.len(), 0));
    let conv = estimator::feedback::to_records(&parsed, &models, None, &|p, t| before.predict(p, t));
    assert_eq!(conv.observed, stream.len(), "one scored model per prompt");
    let mut with_log = refs.clone();
    with_log.extend(conv.records.iter());
    let after = estimator::Estimator::train(&with_log, &models, None, None, &opts).unwrap();
    let j = models.iter().position(|m| *m == broken).unwrap();
    let (mut mu0, mut drop, mut others, mut n_others) = (0.0, 0.0, 0.0, 0usize);
    for rec in &scored_broken {
        let (p0, p1) =
            (before.predict(&rec.prompt, rec.task.as_deref()), after.predict(&rec.prompt, rec.task.as_deref()));
        mu0 += p0.mu[j];
        drop += p0.mu[j] - p1.mu[j];
        for k in (0..models.len()).filter(|&k| k != j) {
            others += (p0.mu[k] - p1.mu[k]).abs();
            n_others += 1;
        }
    }
    let n = scored_broken.len() as f64;
    let (mu0, drop, others) = (mu0 / n, drop / n, others / n_others as f64);
    eprintln!(
        "{broken} scored 0 on {n} prompts: its mean μ there {mu0:.3} → {:.3} after training on the log; the other models' μ move {others:.3} on average",
        mu0 - drop
    );
    // Each scored prompt's own record (its recorded score) stays among its neighbours, so one
    // score moves μ by about a neighbour's weight, not to 0.
    assert!(drop > 0.05, "the degraded model's μ fell only {drop:.3}");
    assert!(others < drop / 3.0, "the other models moved {others:.3} (degraded: {drop:.3})");
}

/// Issue 16's per-stage breakdown (`router::stagebench`, `scripts/bench-stages.sh`) runs the real
/// request path: every stage gets one sample per call (decide ×8 one per batch), every time is
/// finite and positive, and a batch of 8 costs less per query to decide than a batch of 1 (medians).
#[tokio::test]
async fn the_stage_bench_times_every_stage_of_a_decision_only_call() {
    let dir = scratch("stage-bench");
    let path = dir.join("router.yaml");
    let text = serde_yaml::to_string(&default_config()).unwrap();
    std::fs::write(&path, &text).unwrap();
    let config = router::config::Config::parse(&text, &path).unwrap();
    let shared = std::sync::Arc::new(router::state::Shared::new(config, None).unwrap());
    let prompts: Vec<String> =
        (0..40).map(|i| format!("Question {i}: what is the capital of country number {i}?")).collect();
    let stages = router::stagebench::run(shared, &prompts, 64, &[8]).await.unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "decode",
        "input",
        "validate (cached prediction)",
        "estimate (cache miss)",
        "decide ×1",
        "decide ×8 (per query)",
        "reply",
        "encode",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for s in &stages {
        let want = if s.name.starts_with("decide ×8") { 8 } else { 64 };
        assert_eq!(s.micros.len(), want, "{}", s.name);
        let (mean, p50, p99) = s.summary();
        assert!(mean.is_finite() && p50 <= p99 && mean > 0.0, "{}: {mean} {p50} {p99}", s.name);
    }
    let (_, one, _) = stages.iter().find(|s| s.name == "decide ×1").unwrap().summary();
    let (_, eight, _) = stages.iter().find(|s| s.name.starts_with("decide ×8")).unwrap().summary();
    assert!(eight < one, "decide per query: batch of 8 {eight} µs, batch of 1 {one} µs");
    assert!(router::stagebench::run(router_shared(&dir), &[], 1, &[]).await.is_err());
}

fn router_shared(dir: &std::path::Path) -> std::sync::Arc<router::state::Shared> {
    let path = dir.join("router.yaml");
    let config = router::config::Config::load(&path).unwrap();
    std::sync::Arc::new(router::state::Shared::new(config, None).unwrap())
}
