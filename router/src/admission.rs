//! Admission control as a tower layer (for the gRPC server and the HTTP facade): at most
//! `max_concurrency` calls in the router at once; a call over the limit is answered at once —
//! gRPC `RESOURCE_EXHAUSTED`, HTTP 429 — instead of waiting in an unbounded queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
}

impl AdmissionLayer {
    pub fn new(max_concurrency: usize) -> AdmissionLayer {
        AdmissionLayer { permits: Arc::new(Semaphore::new(max_concurrency)) }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission { inner, permits: self.permits.clone() }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Admission<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let r = fut.await;
                    drop(permit);
                    r
                })
            }
            Err(_) => {
                metrics::counter!("llmroute_rejected_total", "reason" => "overloaded").increment(1);
                let resp = if is_grpc(&req) {
                    let mut s = tonic::Status::resource_exhausted(
                        "overloaded: the router is at its concurrency limit; retry later",
                    );
                    s.metadata_mut().insert("llmroute-retryable", tonic::metadata::MetadataValue::from_static("true"));
                    s.into_http()
                } else {
                    let mut r = http::Response::new(ResBody::default());
                    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                    r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                    r
                };
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}
