//! Operations: the Prometheus rules pass `promtool check rules`; every metric the Grafana
//! dashboard and the rules query exists on a running router's `/metrics`; a real Prometheus
//! (Debian `prometheus`) scrapes the router on 127.0.0.1, evaluates the rules, and answers a query
//! through its HTTP API after traffic; the router's Kubernetes manifests pass
//! `kubernetes-validate --strict`. Peers missing outside CI: SKIPPED; in CI: fail.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::connect;
use common::{config, free_port, have, http_get, repo, require, scratch, Router};
use llmroute_proto::v1 as pb;
use pb::router_client::RouterClient;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `llmroute_*` metric families named in PromQL text (histogram / summary suffixes stripped).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("llmroute_") {
        let start = i + p;
        // Recording rules are `llmroute:...`; skip names that are part of a longer identifier.
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b':' || b[start - 1] == b'_') {
            i = start + 9;
            continue;
        }
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(n) = name.strip_suffix(suffix) {
                name = n;
            }
        }
        out.insert(name.to_string());
        i = end;
    }
    out
}

fn traffic(r: &Router, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = RouterClient::new(connect(&r.grpc).await.unwrap());
        for i in 0..n {
            let q = pb::RouteRequest { prompt: format!("What is {i} plus {i}?"), ..Default::default() };
            c.route(q).await.unwrap();
        }
    });
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
#[ignore = "needs promtool, prometheus and kubernetes-validate (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn rules_dashboard_metrics_and_a_real_prometheus_scrape() {
    let root = repo();
    let rules = root.join("deploy/prometheus/rules.yml");
    require(have("promtool", "--version"), "promtool (Debian prometheus)");
    {
        let o = Command::new("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    let dir = scratch("ops");
    let r = Router::start(&dir, &config(""));
    traffic(&r, 20);
    // The monitor's gauges tick every 250 ms: wait for its first tick after the traffic.
    let metrics = common::wait_until(Duration::from_secs(10), "the monitor's in-flight gauges", || {
        let (code, m) = http_get(&r.http, "/metrics");
        (code == 200 && m.lines().any(|l| l.starts_with("llmroute_in_flight{"))).then_some(m)
    });
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|t| t.split_whitespace().next()))
        .map(str::to_string)
        .collect();
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/llmroute-dashboard.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<String> = v["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 11, "{}", exprs.len());
    let mut wanted = metric_names(&exprs.join("\n"));
    let dash_count = wanted.len();
    wanted.extend(metric_names(&std::fs::read_to_string(&rules).unwrap()));
    assert!(dash_count >= 18, "the dashboard queries {dash_count} metrics");
    let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(missing.is_empty(), "queried but not on /metrics: {missing:?}\nexported: {exported:?}");

    // A real Prometheus scraping this router every second and evaluating the rules.
    require(have("prometheus", "--version"), "prometheus (Debian prometheus)");
    {
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\n\
                 scrape_configs:\n  - job_name: llmroute\n    static_configs:\n      - targets: ['{}']\n",
                rules.display(),
                r.http
            ),
        )
        .unwrap();
        let mut prom = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let query = |q: &str| -> String {
            let path = format!("/api/v1/query?query={}", urlencode(q));
            std::net::TcpStream::connect(&addr).map(|_| http_get(&addr, &path).1).unwrap_or_default()
        };
        let t0 = Instant::now();
        let mut answered = String::new();
        let mut recorded = String::new();
        while t0.elapsed() < Duration::from_secs(60) {
            traffic(&r, 5);
            answered = query("sum(llmroute_requests_total)");
            recorded = query("llmroute:budget_burn_ratio");
            let has_value = |s: &str| s.contains("\"status\":\"success\"") && s.contains("\"value\":[");
            if has_value(&answered) && has_value(&recorded) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = prom.kill();
        let _ = prom.wait();
        assert!(answered.contains("\"value\":["), "Prometheus never returned the router's requests: {answered}");
        // The value is the number of queries routed so far (≥ the first 20).
        let n: f64 = answered
            .split("\"value\":[")
            .nth(1)
            .and_then(|s| s.split('"').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(n >= 20.0, "{answered}");
        assert!(recorded.contains("\"value\":["), "recording rule not evaluated: {recorded}");
    }

    // The router's manifests.
    require(have("kubernetes-validate", "--version"), "kubernetes-validate");
    {
        // Whole manifests of the base and the TLS overlay (not kustomizations, patches, or the
        // router config the overlay puts in the ConfigMap).
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for d in ["deploy/k8s/router", "deploy/k8s/router-tls"] {
            files.extend(std::fs::read_dir(root.join(d)).unwrap().map(|e| e.unwrap().path()).filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with(".yaml")
                    && !["kustomization.yaml", "router.yaml"].contains(&&*name)
                    && !name.ends_with("-patch.yaml")
            }));
        }
        assert!(files.len() >= 10, "{files:?}");
        let o = Command::new("kubernetes-validate").arg("--strict").args(&files).output().unwrap();
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
}
