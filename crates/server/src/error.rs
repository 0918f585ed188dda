//! The API's one error type and its one rendering: RFC 9457
//! `application/problem+json`.
//!
//! ```json
//! {"type": "https://tollgate.dev/problems/validation", "title": "Invalid request",
//!  "status": 422, "detail": "quantity: must be greater than zero",
//!  "code": "validation", "errors": [{"field": "quantity", "message": "must be greater than zero"}]}
//! ```
//!
//! Enforcement denials are not errors of the engine, but over HTTP a denied
//! consume is a `429` (limit reached, rate limited, concurrency) or a `403`
//! (feature not in plan, subscription inactive) carrying the decision's
//! `limit`, `used`, `remaining`, `resets_at` and `upgrade_to` (see
//! [`ApiError::Denied`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_engine::EngineError;

/// Where problem types are documented (each `type` is this base + the code).
pub const PROBLEM_BASE: &str = "https://tollgate.dev/problems/";

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (422, or 400 for bodies
    /// that are not JSON at all).
    #[error("invalid request: {}", summary(.0))]
    Validation(Vec<FieldError>),
    #[error("malformed request body: {0}")]
    BadBody(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("this API key may not {0}")]
    Forbidden(String),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests for this API key; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// An enforcement denial: `status` is 429 or 403; `body` is the decision.
    #[error("denied: {reason}")]
    Denied {
        status: StatusCode,
        reason: String,
        detail: String,
        retry_after_secs: Option<u64>,
        body: serde_json::Map<String, serde_json::Value>,
    },
    /// A request refused because of the state it would act on (409), with
    /// machine-readable details (e.g. every blocker of a plan change).
    #[error("{detail}")]
    Refused {
        code: &'static str,
        detail: String,
        body: serde_json::Map<String, serde_json::Value>,
    },
    #[error("the service is shutting down")]
    Unavailable,
    /// Any other HTTP error (unknown route, wrong method, unsupported media
    /// type, a path parameter that does not parse), with axum's explanation.
    #[error("{detail}")]
    Status { status: StatusCode, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Denied { status, .. } => *status,
            ApiError::Refused { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Status { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code, also the last segment of the problem `type`.
    pub fn code(&self) -> String {
        match self {
            ApiError::Validation(_) => "validation".into(),
            ApiError::BadBody(_) => "malformed_body".into(),
            ApiError::BodyTooLarge(_) => "body_too_large".into(),
            ApiError::Unauthenticated => "unauthenticated".into(),
            ApiError::Forbidden(_) => "forbidden".into(),
            ApiError::NotFound { what, .. } => format!("{}_not_found", what.replace(' ', "_")),
            ApiError::Conflict(_) => "conflict".into(),
            ApiError::RateLimited { .. } => "rate_limited".into(),
            ApiError::Denied { reason, .. } => reason.clone(),
            ApiError::Refused { code, .. } => (*code).into(),
            ApiError::Unavailable => "unavailable".into(),
            ApiError::Status { status, .. } => status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace([' ', '-'], "_"),
            ApiError::Internal(_) => "internal".into(),
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "Invalid request",
            ApiError::BadBody(_) => "Malformed request body",
            ApiError::BodyTooLarge(_) => "Request body too large",
            ApiError::Unauthenticated => "Unauthenticated",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::Denied { .. } => "Denied by the customer's plan",
            ApiError::Refused { .. } => "Conflict",
            ApiError::Unavailable => "Service unavailable",
            ApiError::Status { status, .. } => status.canonical_reason().unwrap_or("Error"),
            ApiError::Internal(_) => "Internal error",
        }
    }
}

/// A store failure: a missing row is a 404, a refused write a 409, anything
/// else (the database unreachable, corrupt data) the server's fault.
impl From<tollgate_store::StoreError> for ApiError {
    fn from(e: tollgate_store::StoreError) -> ApiError {
        use tollgate_store::StoreError as S;
        match e {
            S::NotFound { what, id } => ApiError::NotFound { what, id },
            S::Conflict { .. } | S::Refused(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        use EngineError as E;
        match e {
            E::UnknownCustomer(id) | E::CustomerDeleted(id) => ApiError::NotFound {
                what: "customer",
                id,
            },
            E::UnknownPlan(id) => ApiError::field("plan", format!("unknown plan {id:?}")),
            E::UnknownFeature(id) => ApiError::field("feature", format!("unknown feature {id:?}")),
            E::WrongFeatureKind { .. } => ApiError::field("feature", e.to_string()),
            E::InvalidQuantity { .. } => ApiError::field("quantity", e.to_string()),
            E::InvalidIdempotencyKey { .. } => ApiError::field("idempotency_key", e.to_string()),
            E::InvalidInput { field, message } => ApiError::field(field, message),
            E::TooManyEvents { .. } => ApiError::field("events", e.to_string()),
            E::ReservationNotFound(id) => ApiError::NotFound {
                what: "reservation",
                id,
            },
            E::LeaseNotFound(id) => ApiError::NotFound { what: "lease", id },
            E::GrantNotFound(id) => ApiError::NotFound { what: "grant", id },
            E::CustomerExists(_)
            | E::CustomerNotDeleted(_)
            | E::IdempotencyKeyReused { .. }
            | E::ReservationClosed { .. }
            | E::NoSubscription(_)
            | E::NoEmergencyAllowance { .. }
            | E::EmergencyAlreadyDrawn { .. } => ApiError::Conflict(e.to_string()),
            E::CatalogRefused(errors) => ApiError::Validation(
                errors
                    .into_iter()
                    .map(|e| FieldError::new(e.path, e.message))
                    .collect(),
            ),
            E::ShutDown => ApiError::Unavailable,
            E::Catalog(_) | E::Corrupt(_) | E::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(flatten)]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let code = self.code();
        if let ApiError::Denied { body, .. } = &self {
            // Every enforcement denial is counted here, once, whichever
            // route answered it.
            let feature = body
                .get("feature")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown");
            crate::metrics::denial(feature, &code);
        }
        let detail = match &self {
            ApiError::Denied { detail, .. } => detail.clone(),
            ApiError::Internal(_) => "an internal error occurred; it has been logged".into(),
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail,
            code,
            errors: match &self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
            extra: match &self {
                ApiError::Denied { body, .. } | ApiError::Refused { body, .. } => Some(body),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry = match &self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Denied {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        };
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
