//! OpenTelemetry traces, off unless `tracing.otlp_endpoint` is set: the request path's spans
//! (`llmroute.route` → `admission`, `batch_wait`, `decide`, one `dispatch` per attempt →
//! `backend`), W3C `traceparent` taken from the caller and passed to backends, exported over
//! OTLP/gRPC in batches by one task. Spans carry names, ids, timings and routing facts, never
//! prompt or answer text. With tracing off every span is `Span::none()`: no clock reads, no
//! allocation, nothing sent.

use crate::config::TracingSection;
use crate::metrics::names;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pt;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// A span's identity: its trace and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// A W3C `traceparent` header: the caller's span and whether the caller samples the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub ctx: SpanContext,
    pub sampled: bool,
}

fn hex_into(out: &mut [u8], s: &str) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Remote {
    /// Parses `traceparent` (version 00 and, per the spec, later versions' first four fields);
    /// None for anything malformed or with all-zero ids (the call then starts its own trace).
    pub fn parse(header: &str) -> Option<Remote> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut v = [0u8; 1];
        hex_into(&mut v, version)?;
        let mut ctx = SpanContext { trace_id: [0; 16], span_id: [0; 8] };
        hex_into(&mut ctx.trace_id, trace)?;
        hex_into(&mut ctx.span_id, span)?;
        let mut f = [0u8; 1];
        hex_into(&mut f, flags)?;
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(Remote { ctx, sampled: f[0] & 1 == 1 })
    }
}

impl SpanContext {
    /// The `traceparent` header naming this span as the parent (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }
}

/// OTLP span kinds used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

impl Kind {
    fn proto(self) -> i32 {
        match self {
            Kind::Internal => pt::span::SpanKind::Internal as i32,
            Kind::Server => pt::span::SpanKind::Server as i32,
            Kind::Client => pt::span::SpanKind::Client as i32,
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl From<&str> for Attr {
    fn from(v: &str) -> Attr {
        Attr::Str(v.to_string())
    }
}
impl From<String> for Attr {
    fn from(v: String) -> Attr {
        Attr::Str(v)
    }
}
impl From<u64> for Attr {
    fn from(v: u64) -> Attr {
        Attr::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Attr {
    fn from(v: u32) -> Attr {
        Attr::Int(v.into())
    }
}
impl From<usize> for Attr {
    fn from(v: usize) -> Attr {
        Attr::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Attr {
        Attr::F64(v)
    }
}
impl From<bool> for Attr {
    fn from(v: bool) -> Attr {
        Attr::Bool(v)
    }
}

/// A finished span as the exporter receives it.
#[derive(Debug, Clone)]
pub struct Record {
    pub ctx: SpanContext,
    pub parent: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<(&'static str, Attr)>,
    /// Set when the span's work failed: the error's message.
    pub error: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

enum Msg {
    Span(Box<Record>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the exporter; cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    tx: mpsc::Sender<Msg>,
    sample_ratio: f64,
}

impl Tracer {
    /// Starts the exporter task for `cfg` (its endpoint is connected lazily: a collector that is
    /// not up yet costs failed exports, counted and logged, never a failed call).
    pub fn start(cfg: &TracingSection) -> Option<Tracer> {
        let endpoint = cfg.otlp_endpoint.clone()?;
        let (tx, rx) = mpsc::channel(cfg.max_queue);
        let service = cfg.service_name.clone();
        let interval = Duration::from_millis(cfg.export_interval_ms);
        tokio::spawn(export_loop(rx, endpoint, service, interval));
        Some(Tracer { tx, sample_ratio: cfg.sample_ratio })
    }

    /// A tracer whose spans come out of `rx` (tests read what the request path records).
    #[cfg(test)]
    pub fn channel(capacity: usize) -> (Tracer, mpsc::Receiver<Record>) {
        let (tx, mut rx) = mpsc::channel::<Msg>(capacity);
        let (out_tx, out_rx) = mpsc::channel(capacity);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match m {
                    Msg::Span(r) => {
                        let _ = out_tx.send(*r).await;
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (Tracer { tx, sample_ratio: 1.0 }, out_rx)
    }

    /// The root span of a call: a child of the caller's span when it sent one (not recorded when
    /// the caller does not sample), else a new trace, sampled at `sample_ratio`.
    pub fn root(&self, name: &'static str, kind: Kind, remote: Option<Remote>) -> Span {
        let (trace_id, parent) = match remote {
            Some(r) if !r.sampled => return Span::none(),
            Some(r) => (r.ctx.trace_id, Some(r.ctx.span_id)),
            None => {
                let id: [u8; 16] = rand::random();
                // The trace id's leading bytes decide (the same answer on every replica).
                let head = u64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
                if self.sample_ratio < 1.0 && (head as f64) >= self.sample_ratio * u64::MAX as f64 {
                    return Span::none();
                }
                (id, None)
            }
        };
        self.open(name, kind, trace_id, parent)
    }

    fn open(&self, name: &'static str, kind: Kind, trace_id: [u8; 16], parent: Option<[u8; 8]>) -> Span {
        let mut span_id: [u8; 8] = rand::random();
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Span(Some(Box::new(Open {
            tracer: self.clone(),
            rec: Record {
                ctx: SpanContext { trace_id, span_id },
                parent,
                name,
                kind,
                start_ns: now_ns(),
                end_ns: 0,
                attrs: Vec::new(),
                error: None,
            },
        })))
    }

    /// Waits (up to `limit`) until every span sent before this call has been exported or given up.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

struct Open {
    tracer: Tracer,
    rec: Record,
}

/// A span being recorded; it ends, and goes to the exporter, when dropped. `Span::none()` (tracing
/// off, or a trace not sampled) does nothing.
#[derive(Default)]
pub struct Span(Option<Box<Open>>);

impl Span {
    pub fn none() -> Span {
        Span(None)
    }

    /// A child span starting now (none when this one is none).
    pub fn child(&self, name: &'static str, kind: Kind) -> Span {
        self.handle().child(name, kind)
    }

    /// What later children need (the tracer and this span's ids), kept apart from the span itself.
    pub fn handle(&self) -> Parent {
        Parent(self.0.as_ref().map(|o| (o.tracer.clone(), o.rec.ctx)))
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Attr>) {
        if let Some(o) = self.0.as_mut() {
            o.rec.attrs.push((key, value.into()));
        }
    }

    /// Marks the span failed with `e`'s message.
    pub fn fail(&mut self, e: &dyn std::fmt::Display) {
        if let Some(o) = self.0.as_mut() {
            o.rec.error = Some(e.to_string());
        }
    }

    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// The `traceparent` naming this span, for a request this span makes.
    pub fn traceparent(&self) -> Option<String> {
        self.0.as_ref().map(|o| o.rec.ctx.traceparent())
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut o) = self.0.take() {
            o.rec.end_ns = now_ns().max(o.rec.start_ns);
            let tracer = o.tracer.clone();
            if tracer.tx.try_send(Msg::Span(Box::new(o.rec))).is_err() {
                metrics::counter!(names::TRACE_SPANS_DROPPED_TOTAL).increment(1);
            }
        }
    }
}

/// A span's tracer and ids, for children started later (on other tasks).
#[derive(Clone, Default)]
pub struct Parent(Option<(Tracer, SpanContext)>);

impl Parent {
    pub fn child(&self, name: &'static str, kind: Kind) -> Span {
        match &self.0 {
            Some((t, ctx)) => t.open(name, kind, ctx.trace_id, Some(ctx.span_id)),
            None => Span::none(),
        }
    }
}

/// Spans per export request.
const EXPORT_BATCH: usize = 512;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }) }
}

fn to_proto(r: Record) -> pt::Span {
    let attributes = r
        .attrs
        .into_iter()
        .map(|(k, v)| {
            kv(
                k,
                match v {
                    Attr::Str(s) => any_value::Value::StringValue(s),
                    Attr::Int(i) => any_value::Value::IntValue(i),
                    Attr::F64(f) => any_value::Value::DoubleValue(f),
                    Attr::Bool(b) => any_value::Value::BoolValue(b),
                },
            )
        })
        .collect();
    let status = match r.error {
        Some(message) => pt::Status { message, code: pt::status::StatusCode::Error as i32 },
        None => pt::Status { message: String::new(), code: pt::status::StatusCode::Unset as i32 },
    };
    pt::Span {
        trace_id: r.ctx.trace_id.to_vec(),
        span_id: r.ctx.span_id.to_vec(),
        parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
        // Trace flags: sampled.
        flags: 1,
        name: r.name.to_string(),
        kind: r.kind.proto(),
        start_time_unix_nano: r.start_ns,
        end_time_unix_nano: r.end_ns,
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// One OTLP export request for `spans`.
pub fn request(service: &str, spans: Vec<Record>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![pt::ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", any_value::Value::StringValue(service.to_string()))],
                ..Default::default()
            }),
            scope_spans: vec![pt::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "llmroute".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.into_iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

async fn export_loop(mut rx: mpsc::Receiver<Msg>, endpoint: String, service: String, interval: Duration) {
    // The endpoint was validated with the config; connect_lazy never fails for a valid URI.
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5)).connect_lazy(),
        Err(e) => {
            tracing::error!(endpoint, error = %e, "tracing.otlp_endpoint is not a usable URI; no traces are exported");
            return;
        }
    };
    let mut client = TraceServiceClient::new(channel);
    let mut batch: Vec<Record> = Vec::with_capacity(EXPORT_BATCH);
    let mut last_warned: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut flushed = None;
        let closed = tokio::select! {
            m = rx.recv() => match m {
                Some(Msg::Span(r)) => {
                    batch.push(*r);
                    if batch.len() < EXPORT_BATCH {
                        continue;
                    }
                    false
                }
                Some(Msg::Flush(done)) => {
                    flushed = Some(done);
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if !batch.is_empty() {
            let n = batch.len();
            let req = request(&service, std::mem::take(&mut batch));
            match client.export(req).await {
                Ok(_) => metrics::counter!(names::TRACE_SPANS_EXPORTED_TOTAL).increment(n as u64),
                Err(e) => {
                    metrics::counter!(names::TRACE_EXPORT_FAILURES_TOTAL).increment(1);
                    metrics::counter!(names::TRACE_SPANS_DROPPED_TOTAL).increment(n as u64);
                    // One warning a minute at most: a collector that is down must not flood the log.
                    if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(endpoint, spans = n, error = %e.message(), "OTLP export failed; spans dropped");
                        last_warned = Some(std::time::Instant::now());
                    }
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_bad_headers() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let r = Remote::parse(h).unwrap();
        assert!(r.sampled);
        assert_eq!(r.ctx.traceparent(), h);
        assert!(!Remote::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version may add fields.
        assert!(Remote::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(Remote::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn children_share_the_trace_and_name_their_parent() {
        let (t, mut rx) = Tracer::channel(16);
        let remote = Remote::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut root = t.root("llmroute.route", Kind::Server, remote);
        let mut child = root.child("llmroute.backend", Kind::Client);
        child.set("llmroute.model", "m");
        child.fail(&"refused");
        let tp = child.traceparent().unwrap();
        drop(child);
        root.set("llmroute.batch_size", 3usize);
        drop(root);
        let c = rx.recv().await.unwrap();
        let r = rx.recv().await.unwrap();
        assert_eq!(r.ctx.trace_id, remote.unwrap().ctx.trace_id);
        assert_eq!(r.parent, Some(remote.unwrap().ctx.span_id));
        assert_eq!((c.ctx.trace_id, c.parent), (r.ctx.trace_id, Some(r.ctx.span_id)));
        assert_eq!(tp, c.ctx.traceparent());
        assert_eq!(c.error.as_deref(), Some("refused"));
        assert!(c.start_ns >= r.start_ns && c.end_ns <= r.end_ns);
        let req = request("svc", vec![c, r]);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].status.as_ref().unwrap().code, pt::status::StatusCode::Error as i32);
        assert_eq!(spans[1].kind, pt::span::SpanKind::Server as i32);
        assert_eq!(spans[1].attributes[0].key, "llmroute.batch_size");
    }

    #[tokio::test]
    async fn a_caller_that_does_not_sample_gets_no_spans_and_ratio_zero_records_nothing() {
        let (t, _rx) = Tracer::channel(4);
        let off = Remote::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!t.root("r", Kind::Server, off).is_recording());
        let never = Tracer { sample_ratio: 0.0, ..t.clone() };
        assert!((0..100).all(|_| !never.root("r", Kind::Server, None).is_recording()));
        assert!(t.root("r", Kind::Server, None).is_recording());
        assert!(!Span::none().child("c", Kind::Internal).is_recording());
    }
}
