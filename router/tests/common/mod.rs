//! The router's test helpers: real `llm-router serve` processes, routers in process (`router::start`)
//! on configs edited as YAML values, the scripted backend; the generic ones are `llmroute-testkit`'s.
#![allow(dead_code)]

pub mod scripted;

// Each test file uses a different subset.
#[allow(unused_imports)]
pub use llmroute_testkit::{free_port, have, python_has, repo, require, wait_line, wait_until, yaml_set as set};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A fresh folder for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    llmroute_testkit::scratch_in(env!("CARGO_TARGET_TMPDIR"), name)
}

/// The embedded default config with ports 0 and absolute paths, with the top-level sections of
/// `extra` (YAML) replacing those of the same name; as YAML text for `Router::start`.
pub fn config(extra: &str) -> String {
    let mut v = default_config();
    let extra: serde_yaml::Value = serde_yaml::from_str(extra).unwrap();
    if let Some(m) = extra.as_mapping() {
        for (k, val) in m {
            v.as_mapping_mut().unwrap().insert(k.clone(), val.clone());
        }
    }
    serde_yaml::to_string(&v).unwrap()
}

pub struct Router {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    pub dir: PathBuf,
}

impl Router {
    /// Writes `yaml` as `dir/router.yaml` and starts the router on it.
    pub fn start(dir: &Path, yaml: &str) -> Router {
        let path = dir.join("router.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-router"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start llm-router");
        let out = child.stdout.take().unwrap();
        let line = wait_line(out, "llm-router serving", Duration::from_secs(90));
        let Some(line) = line else {
            let _ = child.kill();
            panic!("llm-router did not start");
        };
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap().to_string();
        Router { grpc: field("grpc="), http: field("http="), child, dir: dir.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A gRPC channel to a router under test.
pub async fn connect(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
}

/// A request with `authorization: Bearer <key>` and a deadline, as clients send them.
pub fn request<T>(msg: T, api_key: Option<&str>, timeout: Option<Duration>) -> Result<tonic::Request<T>, String> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = api_key {
        let v = format!("Bearer {k}").parse().map_err(|_| format!("`{k}` is not a header value"))?;
        r.metadata_mut().insert("authorization", v);
    }
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    Ok(r)
}

/// The embedded default config as YAML values, with ports 0 and absolute paths: tests change
/// fields by path (`set(&mut v, "budget.per_query_usd", ...)`), never by splicing text.
pub fn default_config() -> serde_yaml::Value {
    let root = repo();
    let text = std::fs::read_to_string(root.join("deploy/local/router.yaml")).unwrap();
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    set(&mut v, "listen.grpc", "127.0.0.1:0".into());
    set(&mut v, "listen.http", "127.0.0.1:0".into());
    set(&mut v, "catalog", root.join("deploy/catalogs/dcrouter.yaml").display().to_string().into());
    set(&mut v, "estimator.records", root.join("data/dcrouter.jsonl.gz").display().to_string().into());
    v
}

/// The dcrouter catalog with every model's backend and concurrency replaced; written to
/// `dir/catalog.yaml`, whose path is returned.
pub fn catalog_file(dir: &Path, backend: &str, max_concurrency: u64) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for m in v["models"].as_sequence_mut().unwrap() {
        set(m, "backend", backend.into());
        set(m, "max_concurrency", max_concurrency.into());
    }
    let path = dir.join("catalog.yaml");
    std::fs::write(&path, serde_yaml::to_string(&v).unwrap()).unwrap();
    path
}

/// Starts the router in this process on `cfg` (written to `dir/router.yaml`, which reloads read).
pub async fn start_in_process(dir: &Path, cfg: &serde_yaml::Value) -> router::Running {
    let path = dir.join("router.yaml");
    let text = serde_yaml::to_string(cfg).unwrap();
    std::fs::write(&path, &text).unwrap();
    let config = router::config::Config::parse(&text, &path).unwrap();
    router::start(config, path).await.unwrap()
}

/// The cheapest model of the dcrouter catalog (by input price, then name).
pub fn cheapest_dcrouter_model() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/catalogs/dcrouter.yaml")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut models: Vec<(f64, String)> = v["models"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (m["price_in_per_mtok"].as_f64().unwrap(), m["name"].as_str().unwrap().to_string()))
        .collect();
    models.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    models[0].1.clone()
}
