//! The one place where router errors become gRPC statuses and HTTP answers. Each also says
//! whether a retry is safe (metadata / header `llmroute-retryable`).

use crate::RouterError;
use llmroute_core::CoreError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

impl RouterError {
    /// May the caller send the same call again (nothing was charged, the cause is transient)?
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            RouterError::Overloaded(_)
                | RouterError::Unavailable(_)
                | RouterError::StoreUnavailable(_)
                | RouterError::DeadlineExceeded(_)
        )
    }

    pub fn grpc_code(&self) -> Code {
        match self {
            RouterError::BadRequest { .. } | RouterError::Core(CoreError::Invalid(_)) => Code::InvalidArgument,
            RouterError::Core(CoreError::Config { .. }) => Code::FailedPrecondition,
            RouterError::Unauthenticated(_) => Code::Unauthenticated,
            RouterError::PermissionDenied(_) => Code::PermissionDenied,
            RouterError::NotFound(_) => Code::NotFound,
            RouterError::AlreadyExists(_) => Code::AlreadyExists,
            RouterError::Overloaded(_) | RouterError::TenantOverBudget { .. } => Code::ResourceExhausted,
            RouterError::NoFeasibleModel(_) => Code::FailedPrecondition,
            RouterError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            RouterError::Unavailable(_) | RouterError::StoreUnavailable(_) => Code::Unavailable,
            RouterError::Config { .. } => Code::FailedPrecondition,
            RouterError::Core(_) | RouterError::Io { .. } | RouterError::Internal(_) => Code::Internal,
        }
    }

    /// HTTP status and OpenAI-style error type for the facade.
    pub fn http(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self.grpc_code() {
            Code::InvalidArgument => (S::BAD_REQUEST, "invalid_request_error"),
            Code::Unauthenticated => (S::UNAUTHORIZED, "authentication_error"),
            Code::PermissionDenied => (S::FORBIDDEN, "permission_error"),
            Code::NotFound => (S::NOT_FOUND, "not_found_error"),
            Code::AlreadyExists => (S::CONFLICT, "conflict_error"),
            Code::ResourceExhausted => (S::TOO_MANY_REQUESTS, "rate_limit_error"),
            Code::FailedPrecondition => (S::UNPROCESSABLE_ENTITY, "invalid_request_error"),
            Code::DeadlineExceeded => (S::GATEWAY_TIMEOUT, "timeout_error"),
            Code::Unavailable => (S::BAD_GATEWAY, "api_error"),
            _ => (S::INTERNAL_SERVER_ERROR, "api_error"),
        }
    }
}

impl RouterError {
    /// The OpenAI error shape the HTTP facade answers with.
    pub fn http_body(&self) -> serde_json::Value {
        let (_, kind) = self.http();
        serde_json::json!({"error": {
            "message": self.to_string(), "type": kind, "code": format!("{:?}", self.grpc_code()),
            "retryable": self.retryable(),
        }})
    }

    /// The whole HTTP answer: status, `llmroute-retryable`, `retry-after` when shed, JSON body.
    pub fn http_response(&self) -> http::Response<String> {
        let (status, _) = self.http();
        let mut r = http::Response::new(self.http_body().to_string());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        h.insert("llmroute-retryable", http::HeaderValue::from_static(if self.retryable() { "true" } else { "false" }));
        if matches!(self, RouterError::Overloaded(_)) {
            h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<RouterError> for Status {
    fn from(e: RouterError) -> Status {
        let mut s = Status::new(e.grpc_code(), e.to_string());
        let v = MetadataValue::from_static(if e.retryable() { "true" } else { "false" });
        s.metadata_mut().insert("llmroute-retryable", v);
        s
    }
}
