//! The llmroute router server (`llm-router serve`): gRPC `llmroute.v1.Router` + `Admin` (with reflection
//! and the standard health service) and the HTTP facade + `/metrics`, over one request path:
//! validate → admission → micro-batcher → estimator → assigner → ledger → dispatch → settle.

pub mod admission;
pub mod api;
pub mod backend;
mod batcher;
pub mod breaker;
pub mod budgets;
pub mod config;
mod decide;
mod dispatch;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod grpc;
mod http;
pub mod metrics;
mod monitor;
pub mod query;
pub mod state;
mod status;
pub mod tls;

use admission::AdmissionLayer;
use api::Api;
use config::Config;
pub use error::{Result, RouterError};
use llmroute_proto::v1 as pb;
use state::Shared;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;

/// Where a started server listens (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

fn io(addr: SocketAddr) -> impl Fn(std::io::Error) -> RouterError {
    move |e| RouterError::Io { path: PathBuf::from(addr.to_string()), source: e }
}

/// Loads the config, trains the estimator, binds both listeners and serves until SIGINT/SIGTERM.
/// SIGHUP reloads the config.
pub async fn serve(config_path: PathBuf) -> Result<()> {
    let handle = metrics::install();
    let config = Config::load(&config_path)?;
    let (grpc_addr, http_addr) = (config.grpc_listen, config.http_listen);
    let shared = tokio::task::spawn_blocking(move || Shared::new(config))
        .await
        .map_err(|e| RouterError::Internal(format!("startup task: {e}")))??;
    let shared = Arc::new(shared);
    let live = shared.live();
    ::metrics::gauge!("llmroute_config_generation").set(live.generation as f64);
    let api = Api::new(shared.clone(), config_path.clone());
    monitor::start(shared.clone());
    let admission = AdmissionLayer::new(live.config.max_concurrency);

    let grpc_listener = TcpListener::bind(grpc_addr).await.map_err(io(grpc_addr))?;
    let http_listener = TcpListener::bind(http_addr).await.map_err(io(http_addr))?;
    let bound = Bound {
        grpc: grpc_listener.local_addr().map_err(io(grpc_addr))?,
        http: http_listener.local_addr().map_err(io(http_addr))?,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::router_server::RouterServer<grpc::RouterService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let refl_err = |e: tonic_reflection::server::Error| RouterError::Internal(format!("reflection: {e}"));
    // v1 for current clients (grpcurl), v1alpha for grpcio's reflection client.
    let reflection_v1 = reflection().build_v1().map_err(refl_err)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(refl_err)?;

    let grpc_router = tonic::transport::Server::builder()
        .layer(admission.clone())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::router_server::RouterServer::new(grpc::RouterService { api: api.clone() }))
        .add_service(pb::admin_server::AdminServer::new(grpc::AdminService { api: api.clone() }));
    let http_app = http::router(api.clone(), handle, admission);
    type Serving<E> = Pin<Box<dyn Future<Output = std::result::Result<(), E>> + Send>>;
    let (grpc, http): (Serving<tonic::transport::Error>, Serving<std::io::Error>) = match &shared.tls {
        None => (
            Box::pin(grpc_router.serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), shutdown())),
            Box::pin(axum::serve(http_listener, http_app).with_graceful_shutdown(shutdown()).into_future()),
        ),
        Some(tls) => {
            tls.clone().watch();
            let grpc_in = tls::incoming(grpc_listener, tls.acceptor(&[b"h2"])?);
            let http_in = tls::incoming(http_listener, tls.acceptor(&[b"h2", b"http/1.1"])?);
            let grpc_in = ReceiverStream::new(grpc_in).map(Ok::<_, std::io::Error>);
            (
                Box::pin(grpc_router.serve_with_incoming_shutdown(grpc_in, shutdown())),
                Box::pin(
                    axum::serve(tls::TlsListener::new(http_in, bound.http), http_app)
                        .with_graceful_shutdown(shutdown())
                        .into_future(),
                ),
            )
        }
    };

    tokio::spawn(reload_on_sighup(api.clone()));
    // The first line tests and scripts wait for.
    let scheme = if shared.tls.is_some() { "tls" } else { "plaintext" };
    println!("llm-router serving grpc={} http={} ({scheme})", bound.grpc, bound.http);
    tracing::info!(
        grpc = %bound.grpc,
        http = %bound.http,
        models = live.models.len(),
        tenants = live.config.tenants.len(),
        "serving"
    );
    let (g, h) = tokio::join!(grpc, http);
    let unsettled = shared.budgets.flush(std::time::Duration::from_secs(10)).await;
    if unsettled > 0 {
        tracing::error!(unsettled, "stopping with settles the budget store never took; that spend is not recorded");
    }
    g.map_err(|e| RouterError::Internal(format!("gRPC server: {e}")))?;
    h.map_err(|e| RouterError::Internal(format!("HTTP server: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn reload_on_sighup(api: Api) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; use the Admin/Reload RPC or POST /admin/reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let _ = api.reload().await;
        }
    }
    #[cfg(not(unix))]
    let _ = api;
}
