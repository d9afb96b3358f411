//! TLS (rustls, ring) for the gRPC and HTTP listeners, with certificate reload: the certificate is
//! chosen per handshake from a slot that a reload swaps, so new connections get the new certificate
//! and open ones keep theirs. The files are re-read when their modification time changes (checked
//! every `tls.reload_interval_s`) and on every config reload; a bad new pair is logged and counted,
//! and the last good one keeps serving.

use super::config::Tls;
use crate::metrics::names;
use crate::{Result, RouterError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer than this is dropped (a slow or stuck client).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Slot {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Slot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The certificate in use and where it comes from.
pub struct TlsState {
    slot: Arc<Slot>,
    files: Mutex<(Tls, Option<(SystemTime, SystemTime)>)>,
}

fn mtimes(t: &Tls) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&t.cert)?, m(&t.key)?))
}

/// Reads a PEM certificate chain and private key into a signing key (errors name the field).
fn load(t: &Tls) -> Result<CertifiedKey> {
    let bad = |field: &str, msg: String| RouterError::config("(tls)", field, msg);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| bad("tls.cert", format!("{}: {e}", t.cert.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("tls.cert", format!("{}: {e}", t.cert.display())))?;
    if certs.is_empty() {
        return Err(bad("tls.cert", format!("{}: no CERTIFICATE block", t.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| bad("tls.key", format!("{}: {e}", t.key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let signer =
        provider.key_provider.load_private_key(key).map_err(|e| bad("tls.key", format!("{}: {e}", t.key.display())))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| bad("tls.key", format!("does not match the certificate in tls.cert: {e}")))?;
    Ok(ck)
}

impl TlsState {
    pub fn new(t: &Tls) -> Result<Arc<TlsState>> {
        let before = mtimes(t);
        let key = load(t)?;
        Ok(Arc::new(TlsState {
            slot: Arc::new(Slot { key: RwLock::new(Arc::new(key)) }),
            files: Mutex::new((t.clone(), before)),
        }))
    }

    /// An acceptor offering these ALPN protocols (gRPC: h2; HTTP: h2 and http/1.1).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RouterError::Internal(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.slot.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }

    /// Re-reads the files (from `t`, the current config's paths); keeps the old key on error.
    pub fn reload(&self, t: &Tls) -> Result<()> {
        let before = mtimes(t);
        match load(t) {
            Ok(key) => {
                *self.slot.key.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                *self.files.lock().unwrap_or_else(|p| p.into_inner()) = (t.clone(), before);
                metrics::counter!(names::TLS_RELOADS_TOTAL, "result" => "ok").increment(1);
                tracing::info!(cert = %t.cert.display(), "TLS certificate loaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!(names::TLS_RELOADS_TOTAL, "result" => "error").increment(1);
                tracing::error!(error = %e, "TLS certificate reload failed; the previous one keeps serving");
                Err(e)
            }
        }
    }

    /// Checks the files' modification times every `reload_interval` and reloads on a change.
    pub fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let (t, seen) = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tokio::time::sleep(t.reload_interval).await;
                let now = mtimes(&t);
                if now.is_some() && now != seen {
                    tracing::info!("TLS files changed; reloading");
                    if self.reload(&t).is_err() {
                        // Not again until the files change again.
                        self.files.lock().unwrap_or_else(|p| p.into_inner()).1 = now;
                    }
                }
            }
        });
    }
}

/// A TLS connection (what the gRPC server and the HTTP facade read from).
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the gRPC server learns about a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote: SocketAddr,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;
    fn connect_info(&self) -> TlsConnectInfo {
        TlsConnectInfo { remote: self.remote }
    }
}

/// Accepts TCP connections and completes their handshakes, each on its own task (a slow client
/// never holds up the others); finished connections come out of the channel.
pub fn incoming(listener: TcpListener, acceptor: TlsAcceptor) -> mpsc::Receiver<TlsConn> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, conn_tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = conn_tx.send(TlsConn { inner, remote }).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!(names::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!(names::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
                        tracing::debug!(%remote, "TLS handshake timed out");
                    }
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The HTTP facade's listener over `incoming`.
pub struct TlsListener {
    rx: mpsc::Receiver<TlsConn>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(rx: mpsc::Receiver<TlsConn>, local: SocketAddr) -> TlsListener {
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => {
                let remote = c.remote;
                (c, remote)
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn bad_files_name_the_field_and_a_good_pair_loads() {
        let dir = std::env::temp_dir().join(format!("llmroute-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c1, k1) = pair(&dir, "a");
        let (_c2, k2) = pair(&dir, "b");
        let t = |cert: &std::path::Path, key: &std::path::Path| Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reload_interval: Duration::from_secs(1),
        };
        assert!(load(&t(&c1, &k1)).is_ok());
        let e = load(&t(&c1, &k2)).unwrap_err().to_string();
        assert!(e.contains("field `tls.key`") && e.contains("does not match"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = load(&t(&empty, &k1)).unwrap_err().to_string();
        assert!(e.contains("field `tls.cert`"), "{e}");
        let e = load(&t(&c1, &empty)).unwrap_err().to_string();
        assert!(e.contains("field `tls.key`"), "{e}");
        // A failed reload keeps the loaded key.
        let state = TlsState::new(&t(&c1, &k1)).unwrap();
        let before = state.slot.key.read().unwrap().cert[0].clone();
        assert!(state.reload(&t(&empty, &k1)).is_err());
        assert_eq!(state.slot.key.read().unwrap().cert[0], before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
