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
pub mod feedback;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod grpc;
mod http;
mod latency;
pub mod metrics;
mod monitor;
pub mod online;
pub mod otel;
mod predictions;
mod pressure;
pub mod query;
pub mod requests;
pub mod stagebench;
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

/// A started server: its bound addresses, its state, and the handle that stops it.
pub struct Running {
    pub bound: Bound,
    pub shared: Arc<Shared>,
    pub api: Api,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Stops accepting, lets calls in flight finish (graceful shutdown), flushes the budget store.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after `stop`, or a listener failure).
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(|e| RouterError::Internal(format!("server task: {e}")))?
    }

    /// A handle that stops the server when sent `true` (e.g. from a signal handler).
    pub fn stopper(&self) -> tokio::sync::watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Trains the estimator, binds both listeners (port 0: any free port) and starts serving on the
/// current runtime; returns at once with the bound addresses. `config_path` is what reloads read.
pub async fn start(config: Config, config_path: PathBuf) -> Result<Running> {
    let handle = metrics::install();
    // Histogram samples wait in the recorder until they are folded into their buckets; without
    // this, a router nobody scrapes grows ~100 bytes a call (found by scripts/soak.sh).
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let (grpc_addr, http_addr) = (config.listen.grpc, config.listen.http);
    let tracer = otel::Tracer::start(&config.tracing);
    if let Some(endpoint) = &config.tracing.otlp_endpoint {
        tracing::info!(endpoint, sample_ratio = config.tracing.sample_ratio, "exporting traces over OTLP/gRPC");
    }
    let shared = tokio::task::spawn_blocking(move || Shared::new(config, tracer))
        .await
        .map_err(|e| RouterError::Internal(format!("startup task: {e}")))??;
    let shared = Arc::new(shared);
    let live = shared.live();
    ::metrics::gauge!(metrics::names::CONFIG_GENERATION).set(live.generation as f64);
    // No scores yet: NaN (what the coverage alert never fires on) until a model has enough.
    for md in &live.models {
        ::metrics::gauge!(metrics::names::FEEDBACK_SIGMA_COVERAGE, "model" => md.entry.name.clone()).set(f64::NAN);
    }
    let api = Api::new(shared.clone(), config_path);
    monitor::start(shared.clone());
    // One lateness probe serves both signals that read it.
    let adm = &live.config.admission;
    let probe = (adm.max_loop_lag().is_some() || adm.overflow_threads > 0).then(pressure::LoopLag::start);
    let lag = adm.max_loop_lag().zip(probe.clone()).map(|(max, lag)| admission::LagLimit { lag, max });
    let overflow = match probe {
        Some(probe) => admission::Overflow::start(adm.overflow_threads, probe)?,
        None => None,
    };
    let admission = AdmissionLayer::new(adm.max_concurrency, lag, overflow);

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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    type Serving<E> = Pin<Box<dyn Future<Output = std::result::Result<(), E>> + Send>>;
    let (grpc, http): (Serving<tonic::transport::Error>, Serving<std::io::Error>) = match &shared.tls {
        None => (
            Box::pin(grpc_router.serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), until())),
            Box::pin(axum::serve(http_listener, http_app).with_graceful_shutdown(until()).into_future()),
        ),
        Some(tls) => {
            tls.clone().watch();
            let grpc_in = tls::incoming(grpc_listener, tls.acceptor(&[b"h2"])?);
            let http_in = tls::incoming(http_listener, tls.acceptor(&[b"h2", b"http/1.1"])?);
            let grpc_in = ReceiverStream::new(grpc_in).map(Ok::<_, std::io::Error>);
            (
                Box::pin(grpc_router.serve_with_incoming_shutdown(grpc_in, until())),
                Box::pin(
                    axum::serve(tls::TlsListener::new(http_in, bound.http), http_app)
                        .with_graceful_shutdown(until())
                        .into_future(),
                ),
            )
        }
    };
    tracing::info!(
        grpc = %bound.grpc,
        http = %bound.http,
        models = live.models.len(),
        tenants = live.config.tenants.len(),
        "serving"
    );
    let flushing = shared.clone();
    let task = tokio::spawn(async move {
        let (g, h) = tokio::join!(grpc, http);
        let unsettled = flushing.budgets.flush(std::time::Duration::from_secs(10)).await;
        if unsettled > 0 {
            tracing::error!(unsettled, "stopping with settles the budget store never took; that spend is not recorded");
        }
        if let Some(t) = &flushing.tracer {
            t.flush(std::time::Duration::from_secs(5)).await;
        }
        g.map_err(|e| RouterError::Internal(format!("gRPC server: {e}")))?;
        h.map_err(|e| RouterError::Internal(format!("HTTP server: {e}")))?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { bound, shared, api, stop, task })
}

/// Loads the config and serves until SIGINT/SIGTERM; SIGHUP reloads the config.
pub async fn serve(config_path: PathBuf) -> Result<()> {
    let config = Config::load(&config_path)?;
    let running = start(config, config_path).await?;
    let scheme = if running.shared.tls.is_some() { "tls" } else { "plaintext" };
    // The first line scripts and the end-to-end tests wait for.
    println!("llm-router serving grpc={} http={} ({scheme})", running.bound.grpc, running.bound.http);
    tokio::spawn(reload_on_sighup(running.api.clone()));
    let stop = running.stopper();
    tokio::spawn(async move {
        shutdown().await;
        let _ = stop.send(true);
    });
    running.wait().await
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
