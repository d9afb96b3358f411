//! TLS end to end: a router serving gRPC and HTTP over rustls with a certificate from a test CA,
//! called by real clients (Python grpcio through reflection, the official `openai` client,
//! Python's `ssl`); then the certificate files are replaced and new connections get the new
//! certificate without a restart; a broken file is refused and the last good certificate serves on.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, python_has, repo, require, scratch, Router};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "llmroute test CA");
    Ca { cert: p.self_signed(&key).unwrap(), key }
}

/// A server certificate for localhost / 127.0.0.1 signed by the CA: (cert PEM, key PEM, SHA-256 of
/// the DER).
fn leaf(ca: &Ca, name: &str) -> (String, String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let fp: String = Sha256::digest(cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    (cert.pem(), key.serialize_pem(), fp)
}

fn write_pair(dir: &Path, pair: &(String, String, String)) {
    // Each file replaced whole (write + rename), as cert-manager / kubelet secret updates do.
    for (name, text) in [("key.pem", &pair.1), ("cert.pem", &pair.0)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg(repo().join("tests/python").join(script)).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script} {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// (certificate SHA-256, ALPN) a new connection gets.
fn peer(addr: &str, ca: &Path, alpn: &[&str]) -> (String, String) {
    let mut args = vec![addr, ca.to_str().unwrap()];
    args.extend_from_slice(alpn);
    let out = python("tls_peer_cert.py", &args);
    let mut w = out.split_whitespace();
    (w.next().unwrap().to_string(), w.next().unwrap().to_string())
}

#[test]
#[ignore = "needs python3 with grpcio and openai as TLS peers (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn grpc_and_http_over_tls_with_certificate_reload() {
    let dir = scratch("tls");
    let ca = ca();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    let first = leaf(&ca, "router-1");
    write_pair(&dir, &first);
    let extra = format!(
        "tls:\n  cert: {}\n  key: {}\n  reload_interval_s: 1\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let r = Router::start(&dir, &config(&extra));

    // Plain text on a TLS port gets no HTTP answer.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&r.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(!buf.starts_with(b"HTTP/"), "plain HTTP answered on the TLS port");
    }
    require(python_has("ssl"), "python3");
    assert_eq!(peer(&r.grpc, &ca_path, &["h2"]), (first.2.clone(), "h2".into()));
    assert_eq!(peer(&r.http, &ca_path, &["http/1.1"]), (first.2.clone(), "http/1.1".into()));
    require(
        python_has("grpc, grpc_reflection, grpc_health"),
        "python grpcio, grpcio-reflection, grpcio-health-checking",
    );
    {
        python("grpc_reflection_client.py", &[&r.grpc, "--ca", ca_path.to_str().unwrap()]);
    }
    require(python_has("openai"), "python openai");
    {
        python(
            "openai_client.py",
            &[
                &format!("https://localhost:{}/v1", port(&r.http)),
                "llmroute-demo-key",
                "--ca",
                ca_path.to_str().unwrap(),
            ],
        );
    }

    // Rotate: new key and certificate; new connections get it within a few seconds.
    let second = leaf(&ca, "router-2");
    write_pair(&dir, &second);
    let until = Instant::now() + Duration::from_secs(10);
    while peer(&r.grpc, &ca_path, &["h2"]).0 != second.2 {
        assert!(Instant::now() < until, "the new certificate was not picked up");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(peer(&r.http, &ca_path, &["h2", "http/1.1"]).0, second.2);
    if python_has("grpc, grpc_reflection, grpc_health") {
        python("grpc_reflection_client.py", &[&r.grpc, "--ca", ca_path.to_str().unwrap()]);
    }

    // A broken certificate file: refused, counted; the last good certificate serves on.
    std::fs::write(dir.join("cert.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    // Wait until the watcher has tried (and failed) to load it.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let out = python("tls_peer_cert.py", &[&r.http, ca_path.to_str().unwrap(), "http/1.1", "--get", "/metrics"]);
        assert!(out.starts_with(&second.2), "{}", &out[..200.min(out.len())]);
        let errors: f64 = out
            .lines()
            .find(|l| l.starts_with("llmroute_tls_reloads_total") && l.contains("result=\"error\""))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0.0);
        if errors >= 1.0 {
            break;
        }
        assert!(Instant::now() < until, "no failed reload counted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}
