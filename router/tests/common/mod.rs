//! Starting real `llm-router serve` processes (and llama.cpp servers) for end-to-end tests.
#![allow(dead_code)]

pub mod scripted;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh folder for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The embedded default config with ports 0, absolute paths, and `extra` YAML lines replacing
/// top-level sections of the same name.
pub fn config(extra: &str) -> String {
    let root = repo();
    let mut sections: Vec<(String, String)> = Vec::new();
    let base = std::fs::read_to_string(root.join("deploy/local/router.yaml")).unwrap();
    for text in [base.as_str(), extra] {
        let mut cur: Option<(String, String)> = None;
        for line in text.lines() {
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') && !line.starts_with('-') {
                if let Some(c) = cur.take() {
                    sections.retain(|(k, _)| *k != c.0);
                    sections.push(c);
                }
                let key = line.split(':').next().unwrap().to_string();
                cur = Some((key, format!("{line}\n")));
            } else if let Some(c) = cur.as_mut() {
                c.1.push_str(line);
                c.1.push('\n');
            }
        }
        if let Some(c) = cur.take() {
            sections.retain(|(k, _)| *k != c.0);
            sections.push(c);
        }
    }
    let mut out: String = sections.into_iter().map(|(_, v)| v).collect();
    out = out
        .replace("127.0.0.1:50051", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("catalog: ../catalogs/", &format!("catalog: {}/deploy/catalogs/", root.display()))
        .replace("records: ../../data/", &format!("records: {}/data/", root.display()));
    out
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

/// Reads lines until one contains `needle` (returned) or the time is up; keeps draining after.
pub fn wait_line(out: impl std::io::Read + Send + 'static, needle: &str, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && line.contains(&needle) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    rx.recv_timeout(limit).ok()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// True in CI (where every test peer must be installed: a missing one fails the test).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Does `python3 -c "import MODS"` work?
pub fn python_has(mods: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {mods}")]).status().is_ok_and(|s| s.success())
}

/// Skips (outside CI) or fails (in CI) when a test peer is missing.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("{what} is missing; scripts/setup.sh --test installs it");
    }
    eprintln!("SKIPPED: {what} is missing (run scripts/setup.sh --test)");
    false
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

/// Sets `path` (dot-separated keys) in a YAML mapping, creating the mappings on the way.
pub fn set(v: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    let mut cur = v;
    let keys: Vec<&str> = path.split('.').collect();
    for (k, key) in keys.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = serde_yaml::Value::Mapping(Default::default());
        }
        let map = cur.as_mapping_mut().unwrap();
        let key = serde_yaml::Value::String(key.to_string());
        if k + 1 == keys.len() {
            map.insert(key, value);
            return;
        }
        cur = map.entry(key).or_insert(serde_yaml::Value::Null);
    }
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
