//! Bare tonic echo server for the overhead ratio: a server implementing `llmroute.v1.Router` with
//! no work behind it (the reply echoes the prompt), the reference for the router's own overhead.
//! `cargo run --release --example echo_server -- 127.0.0.1:50061`.

use llmroute_proto::v1 as pb;
use std::net::SocketAddr;
use std::pin::Pin;
use tonic::{Request, Response, Status};

pub struct Echo;

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RouteStreamEvent, Status>> + Send>>;

fn echo(r: pb::RouteRequest) -> pb::RouteResponse {
    pb::RouteResponse { model: "echo".into(), answer: r.prompt, batch_size: 1, ..Default::default() }
}

#[tonic::async_trait]
impl pb::router_server::Router for Echo {
    async fn route(&self, req: Request<pb::RouteRequest>) -> Result<Response<pb::RouteResponse>, Status> {
        Ok(Response::new(echo(req.into_inner())))
    }

    async fn route_batch(
        &self,
        req: Request<pb::RouteBatchRequest>,
    ) -> Result<Response<pb::RouteBatchResponse>, Status> {
        let results = req.into_inner().queries.into_iter().map(echo).collect();
        Ok(Response::new(pb::RouteBatchResponse { results, ..Default::default() }))
    }

    type RouteStreamStream = EventStream;

    async fn route_stream(&self, req: Request<pb::RouteRequest>) -> Result<Response<EventStream>, Status> {
        let done = pb::RouteStreamEvent { event: Some(pb::route_stream_event::Event::Done(echo(req.into_inner()))) };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(done)]))))
    }

    async fn list_models(
        &self,
        _req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(pb::ListModelsResponse::default()))
    }

    async fn feedback(&self, _req: Request<pb::FeedbackRequest>) -> Result<Response<pb::FeedbackResponse>, Status> {
        Err(Status::not_found("the echo server keeps no requests"))
    }
}

/// Serves the echo router on `addr` until the process ends; prints the bound address first.
pub async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("echo serving grpc={}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(pb::router_server::RouterServer::new(Echo))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50061".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("error: `{addr}` is not an address like 127.0.0.1:50061");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(addr)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
