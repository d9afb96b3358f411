//! Real third-party clients against a running router: Python `grpcio` through server reflection
//! (plus the standard health service), the official `openai` Python client on the HTTP facade
//! (plain, pinned, streaming), and `promtool check metrics` on `/metrics`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, python_has, repo, require, scratch, Router};
use std::process::Command;

fn run_python(script: &str, args: &[&str]) {
    let out = Command::new("python3").arg(repo().join("tests/python").join(script)).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    eprintln!("{script}: {stdout}");
}

#[test]
#[ignore = "needs python grpcio, grpcio-reflection, grpcio-health-checking, openai and promtool (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn python_grpcio_openai_and_promtool() {
    let dir = scratch("clients");
    let r = Router::start(&dir, &config(""));
    require(
        python_has("grpc, grpc_reflection, grpc_health"),
        "python grpcio, grpcio-reflection, grpcio-health-checking",
    );
    {
        run_python("grpc_reflection_client.py", &[&r.grpc]);
    }
    require(python_has("openai"), "python openai");
    {
        run_python("openai_client.py", &[&format!("http://{}/v1", r.http), "llmroute-demo-key"]);
    }
    let (status, metrics) = common::http_get(&r.http, "/metrics");
    assert_eq!(status, 200);
    let has_promtool = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    require(has_promtool, "promtool (Debian package prometheus)");
    {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics:\n{text}");
    }
    // The facade's own 429 path and the health endpoint are plain HTTP.
    assert_eq!(common::http_get(&r.http, "/healthz").0, 200);
}
