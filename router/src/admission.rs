//! Admission control as a tower layer (for the gRPC server and the HTTP facade): at most
//! `max_concurrency` calls in the router at once; a call over the limit is answered at once —
//! gRPC `RESOURCE_EXHAUSTED`, HTTP 429 with the OpenAI error body (both written by `status.rs`) —
//! instead of waiting in an unbounded queue. A call holds its permit until its response body is
//! finished or dropped, so a streamed answer counts for as long as it streams. While the runtime
//! lags more than `max_loop_lag_ms` (a saturated CPU), calls are refused the same way before any
//! work is spent on them (reason `saturated`), so the router keeps answering at once.

use crate::metrics::names;
use crate::pressure::LoopLag;
use crate::RouterError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// Refuse calls while the runtime lags more than `max` (the CPU is saturated).
#[derive(Clone)]
pub struct LagLimit {
    pub lag: Arc<LoopLag>,
    pub max: Duration,
}

#[derive(Clone)]
pub struct AdmissionLayer {
    max: usize,
    permits: Arc<Semaphore>,
    lag: Option<LagLimit>,
    overflow: Option<Arc<Overflow>>,
}

impl AdmissionLayer {
    /// `overflow`: where admitted calls run while this runtime is saturated (None: always here).
    pub fn new(max_concurrency: usize, lag: Option<LagLimit>, overflow: Option<Arc<Overflow>>) -> AdmissionLayer {
        AdmissionLayer { max: max_concurrency, permits: Arc::new(Semaphore::new(max_concurrency)), lag, overflow }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            max: self.max,
            permits: self.permits.clone(),
            lag: self.lag.clone(),
            overflow: self.overflow.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    max: usize,
    permits: Arc<Semaphore>,
    lag: Option<LagLimit>,
    overflow: Option<Arc<Overflow>>,
}

/// Lateness of the serving runtime above which admitted calls go to the overflow runtime.
const SATURATED: Duration = Duration::from_millis(2);
/// Calls in flight above which they go there too: a sudden overload fills the run queue faster
/// than the lateness probe (an average over a few 2 ms probes) sees it.
const CROWDED: usize = 256;

/// A second runtime (`admission.overflow_threads`) that takes admitted calls' work while the
/// serving runtime is saturated. On one runtime, a CPU-bound router under overload fills its run
/// queue with admitted calls mid-estimate; the connections' tasks then read new calls only after
/// them, so even a call that is refused waits hundreds of ms to be read. Moved here, that work
/// competes for the CPU as threads of its own, and the serving runtime keeps reading — and
/// refusing — at once. A lightly loaded router runs each call where it was read (no extra hop).
/// Saturated: the serving runtime runs more than `SATURATED` late (its probe), or more than
/// `CROWDED` calls are in flight (which a sustained overload keeps true, so it does not flap
/// between the two; the calls running here are `llmroute_overflow_calls`).
pub struct Overflow {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    lag: Arc<LoopLag>,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl Overflow {
    /// `threads` 0: none. `lag`: the serving runtime's lateness probe.
    pub fn start(threads: usize, lag: Arc<LoopLag>) -> crate::Result<Option<Arc<Overflow>>> {
        if threads == 0 {
            return Ok(None);
        }
        Ok(Some(Arc::new(Overflow::new(threads, lag)?)))
    }

    fn new(threads: usize, lag: Arc<LoopLag>) -> crate::Result<Overflow> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("llmroute-overflow")
            .enable_all()
            .build()
            .map_err(|e| RouterError::Internal(format!("the overflow runtime: {e}")))?;
        let handle = rt.handle().clone();
        // Present from the start (0), so a dashboard tells "none" from "no data".
        metrics::gauge!(names::OVERFLOW_CALLS).set(0.0);
        Ok(Overflow { rt: Some(rt), handle, lag, running: Arc::new(std::sync::atomic::AtomicUsize::new(0)) })
    }

    /// An overflow runtime that always takes the calls (its lateness fixed at 1 s), for tests.
    #[cfg(test)]
    fn forced(threads: usize) -> Arc<Overflow> {
        Arc::new(Overflow::new(threads, LoopLag::fixed(Duration::from_secs(1))).unwrap())
    }

    fn saturated(&self, in_flight: usize) -> bool {
        in_flight > CROWDED || self.lag.current() > SATURATED
    }

    /// Runs `fut` on the overflow runtime; the returned handle aborts it when dropped.
    fn spawn<F>(&self, fut: F) -> AbortOnDrop<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let running = self.running.clone();
        let n = running.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        metrics::gauge!(names::OVERFLOW_CALLS).set(n as f64);
        let guard = Running(running);
        AbortOnDrop(self.handle.spawn(async move {
            let _guard = guard;
            fut.await
        }))
    }
}

/// Counts a call running on the overflow runtime until dropped (finished or aborted), for
/// `llmroute_overflow_calls`.
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!(names::OVERFLOW_CALLS).set(n as f64);
    }
}

impl Drop for Overflow {
    fn drop(&mut self) {
        // May be dropped inside a runtime, where a blocking shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// An admitted call's task on the overflow runtime, aborted if the call is dropped first (the
/// client went away), as the call itself would have been on one runtime.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A response body that holds the call's permit until it ends (or a shed answer's own body).
pub enum AdmittedBody<B> {
    Admitted { body: Pin<Box<B>>, permit: Option<OwnedSemaphorePermit> },
    Shed(Option<Bytes>),
}

impl<B> Body for AdmittedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.get_mut() {
            AdmittedBody::Admitted { body, permit } => {
                let r = body.as_mut().poll_frame(cx);
                if let Poll::Ready(None) = r {
                    // The body is finished: the call is over even if the body is not dropped yet.
                    permit.take();
                }
                r
            }
            AdmittedBody::Shed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AdmittedBody::Admitted { body, .. } => body.is_end_stream(),
            AdmittedBody::Shed(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AdmittedBody::Admitted { body, .. } => body.size_hint(),
            AdmittedBody::Shed(Some(b)) => SizeHint::with_exact(b.len() as u64),
            AdmittedBody::Shed(None) => SizeHint::with_exact(0),
        }
    }
}

/// The answer to a call refused here (`reason`: overloaded or saturated), written by `status.rs`.
fn shed<B>(grpc: bool, reason: &'static str, why: String) -> http::Response<AdmittedBody<B>> {
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
    answer(grpc, RouterError::Overloaded(why))
}

/// An error answered here, in the call's protocol.
fn answer<B>(grpc: bool, e: RouterError) -> http::Response<AdmittedBody<B>> {
    if grpc {
        // gRPC carries the status in headers (trailers-only answer): the body is empty.
        let (parts, _) = tonic::Status::from(e).into_http::<()>().into_parts();
        http::Response::from_parts(parts, AdmittedBody::Shed(None))
    } else {
        let (parts, body) = e.http_response().into_parts();
        http::Response::from_parts(parts, AdmittedBody::Shed(Some(Bytes::from(body))))
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Admission<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<AdmittedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if let Some(l) = &self.lag {
            let lag = l.lag.current();
            if lag > l.max {
                let why = format!(
                    "the router's CPU is saturated (its runtime is {} ms behind); retry later",
                    lag.as_millis()
                );
                let resp = shed(is_grpc(&req), "saturated", why);
                return Box::pin(async move { Ok(resp) });
            }
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let grpc = is_grpc(&req);
                let fut = self.inner.call(req);
                let admitted = |r: http::Response<ResBody>| {
                    r.map(|body| AdmittedBody::Admitted { body: Box::pin(body), permit: Some(permit) })
                };
                let in_flight = self.max.saturating_sub(self.permits.available_permits());
                match self.overflow.as_ref().filter(|o| o.saturated(in_flight)) {
                    None => Box::pin(async move { Ok(admitted(fut.await?)) }),
                    Some(overflow) => {
                        let mut task = overflow.spawn(fut);
                        Box::pin(async move {
                            match (&mut task.0).await {
                                Ok(r) => Ok(admitted(r?)),
                                Err(e) => {
                                    Ok(answer(grpc, RouterError::Internal(format!("the call's task failed: {e}"))))
                                }
                            }
                        })
                    }
                }
            }
            Err(_) => {
                let why = "the router is at its concurrency limit; retry later".to_string();
                let resp = shed(is_grpc(&req), "overloaded", why);
                Box::pin(async move { Ok(resp) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_text(mut b: AdmittedBody<http_body_util::Empty<Bytes>>) -> String {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await {
            if let Ok(d) = f.unwrap().into_data() {
                out.extend_from_slice(&d);
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// A shed HTTP call gets 429 with `retry-after` and the OpenAI error body (it had an empty
    /// body); a shed gRPC call gets RESOURCE_EXHAUSTED, retryable.
    #[tokio::test]
    async fn shed_answers_carry_the_error_shape() {
        let r = shed::<http_body_util::Empty<Bytes>>(false, "overloaded", "at the limit".into());
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
        let v: serde_json::Value = serde_json::from_str(&body_text(r.into_body()).await).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["retryable"], true);
        let g = shed::<http_body_util::Empty<Bytes>>(true, "saturated", "behind".into());
        assert_eq!(g.headers()["grpc-status"], (tonic::Code::ResourceExhausted as i32).to_string().as_str());
        assert_eq!(g.headers()["llmroute-retryable"], "true");
    }

    /// While the runtime lags past the limit, calls are refused before the service sees them;
    /// under it they pass.
    #[tokio::test]
    async fn a_lagging_runtime_refuses_calls_before_any_work() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new())) }
        });
        let limit =
            |ms| Some(LagLimit { lag: LoopLag::fixed(Duration::from_millis(ms)), max: Duration::from_millis(20) });
        let mut busy = AdmissionLayer::new(8, limit(35), None).layer(inner.clone());
        let r = busy.call(http::Request::new(())).await.unwrap();
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let v: serde_json::Value = serde_json::from_str(&body_text(r.into_body()).await).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("35 ms behind"), "{v}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
        let mut calm = AdmissionLayer::new(8, limit(5), None).layer(inner);
        assert_eq!(calm.call(http::Request::new(())).await.unwrap().status(), http::StatusCode::OK);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// While saturated, an admitted call runs on the overflow runtime (not on the thread that read
    /// it), its answer comes back through the layer, and a call dropped by its client stops its
    /// task; unsaturated, it runs where it was read.
    #[test]
    fn saturated_calls_run_on_the_overflow_runtime_and_stop_with_their_caller() {
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ran_on = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (seen, gone) = (ran_on.clone(), dropped.clone());
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let (seen, gone) = (seen.clone(), gone.clone());
            async move {
                seen.lock().unwrap().push(std::thread::current().name().unwrap_or("").to_string());
                if req.uri().path() == "/hang" {
                    let _flag = Flag(gone);
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
            }
        });
        let overflow = Overflow::forced(1);
        io.block_on(async {
            let mut svc = AdmissionLayer::new(8, None, Some(overflow.clone())).layer(inner.clone());
            let r = svc.call(http::Request::new(())).await.unwrap();
            assert_eq!(r.status(), http::StatusCode::OK);
            assert_eq!(ran_on.lock().unwrap().as_slice(), ["llmroute-overflow"]);
            assert_eq!(overflow.running.load(std::sync::atomic::Ordering::SeqCst), 0, "finished calls are counted out");
            // The client goes away while the call hangs: its task is aborted.
            let hang = svc.call(http::Request::builder().uri("/hang").body(()).unwrap());
            let _ = tokio::time::timeout(Duration::from_millis(50), hang).await;
            for _ in 0..100 {
                if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the hung call's task was not stopped");
            // Not saturated (no lag, few calls in flight): the call runs on the reading thread.
            let calm = Arc::new(Overflow {
                rt: None,
                handle: overflow.handle.clone(),
                lag: LoopLag::fixed(Duration::ZERO),
                running: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            });
            let mut svc = AdmissionLayer::new(8, None, Some(calm)).layer(inner);
            ran_on.lock().unwrap().clear();
            assert_eq!(svc.call(http::Request::new(())).await.unwrap().status(), http::StatusCode::OK);
            let here = std::thread::current().name().unwrap_or("").to_string();
            assert_eq!(ran_on.lock().unwrap().as_slice(), [here]);
        });
        drop(overflow);
    }
}
