//! The served catalog as a document (admin keys only).
//!
//! - `GET /v1/catalog`: the catalog document being served (its TOML text),
//!   where it came from (`file` or `api`) and when it began to be served.
//! - `PUT /v1/catalog`: applies a catalog document (TOML, the catalog file's
//!   format) to the running server. New and changed plans get new published
//!   versions and are offered at once; subscribers keep their versions. With
//!   `dry_run=true`, only answers what would change. A later restart keeps
//!   serving it as long as the catalog file is not edited (docs/catalog.md,
//!   "Applying a catalog to a running server").

use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tollgate_core::catalog::{VersionChangeKind, load_catalog};
use tollgate_store::CatalogSource;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiQuery, read_body};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_catalog, put_catalog))
}

/// Where a served catalog came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSourceOut {
    /// The catalog file given to `tollgate serve`.
    File,
    /// Applied through `PUT /v1/catalog`.
    Api,
}

impl From<CatalogSource> for CatalogSourceOut {
    fn from(s: CatalogSource) -> Self {
        match s {
            CatalogSource::File => CatalogSourceOut::File,
            CatalogSource::Api => CatalogSourceOut::Api,
        }
    }
}

/// The catalog document being served.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogDocumentOut {
    pub source: CatalogSourceOut,
    /// The file name, or the name given when it was applied.
    pub name: String,
    /// Hex SHA-256 of `document`.
    pub fingerprint: String,
    /// When it began to be served.
    #[schema(value_type = String, example = "2026-12-06T11:00:00Z")]
    pub applied_at: Timestamp,
    /// The catalog, TOML, exactly as given.
    pub document: String,
}

/// What applying a catalog does to one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanChangeKindOut {
    /// Not published before: version 1.
    New,
    /// Its terms changed: a new version, offered from now on.
    Changed,
    /// Same terms: it keeps its version (a new tier or `public` applies to
    /// every version in place).
    Unchanged,
    /// Absent from the new catalog: no longer offered; subscribers keep it.
    Removed,
}

impl From<VersionChangeKind> for PlanChangeKindOut {
    fn from(k: VersionChangeKind) -> Self {
        match k {
            VersionChangeKind::New => PlanChangeKindOut::New,
            VersionChangeKind::Changed => PlanChangeKindOut::Changed,
            VersionChangeKind::Unchanged => PlanChangeKindOut::Unchanged,
            VersionChangeKind::Removed => PlanChangeKindOut::Removed,
        }
    }
}

/// One plan's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanVersionChangeOut {
    pub plan: String,
    pub change: PlanChangeKindOut,
    /// The latest published version before (none for a new plan).
    pub from_version: Option<u32>,
    /// The version offered after (for a removed plan, its last one).
    pub to_version: u32,
}

/// The answer to `PUT /v1/catalog`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogApplied {
    pub dry_run: bool,
    /// Whether the catalog is now served (false for a dry run, and for a
    /// catalog equal to the one served: nothing to do).
    pub applied: bool,
    /// Hex SHA-256 of the document sent.
    pub fingerprint: String,
    /// One entry per plan of the document (in tier order), then one per
    /// served plan it leaves out (a plan removed by an earlier apply is not
    /// listed again).
    pub changes: Vec<PlanVersionChangeOut>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Only answer what would change; apply nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A name for the document (default `api`), shown by `GET /v1/catalog`.
    pub name: Option<String>,
}

/// The longest document name.
const MAX_NAME: usize = 200;

/// A catalog document in a request body: UTF-8 text sent as `text/plain` or
/// `application/toml` (anything else is a 415).
#[derive(Debug)]
pub struct TomlBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TomlBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if !matches!(media.as_deref(), Some("text/plain" | "application/toml")) {
            return Err(ApiError::Status {
                status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                detail: "send the catalog as TOML text with Content-Type: text/plain or application/toml".into(),
            });
        }
        let bytes = read_body(req, state).await?;
        String::from_utf8(bytes.to_vec())
            .map(TomlBody)
            .map_err(|e| ApiError::BadBody(format!("the catalog is not UTF-8 text: {e}")))
    }
}

/// The catalog document being served, where it came from and since when.
#[utoipa::path(
    get,
    path = "/v1/catalog",
    tag = "plans",
    responses(
        (status = 200, description = "The served catalog document", body = CatalogDocumentOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No catalog document was recorded (a server started from a parsed catalog, in tests)", content_type = "application/problem+json"),
    )
)]
pub async fn get_catalog(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<CatalogDocumentOut>, ApiError> {
    principal.require_admin()?;
    let doc = state
        .store
        .latest_catalog_document(None)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "catalog document",
            id: "served".into(),
        })?;
    Ok(axum::Json(CatalogDocumentOut {
        source: doc.source.into(),
        name: doc.name,
        fingerprint: doc.fingerprint,
        applied_at: doc.applied_at,
        document: doc.document,
    }))
}

/// Applies a catalog document (TOML) to the running server: new and changed
/// plans get new published versions and are offered at once; subscribers keep
/// the versions they have. A served feature may not be removed or change its
/// kind or settings (422 naming it): that needs the catalog file and a restart.
#[utoipa::path(
    put,
    path = "/v1/catalog",
    tag = "plans",
    params(ApplyQuery),
    request_body(content = String, description = "The catalog, TOML (the catalog file's format)", content_type = "text/plain"),
    responses(
        (status = 200, description = "Applied, or what would change (dry run)", body = CatalogApplied),
        (status = 400, description = "The body is not UTF-8 text", content_type = "application/problem+json"),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", content_type = "application/problem+json"),
        (status = 415, description = "Not sent as text/plain or application/toml", content_type = "application/problem+json"),
        (status = 422, description = "The catalog is invalid, or the running server cannot take it; every problem at its path", content_type = "application/problem+json"),
    )
)]
pub async fn put_catalog(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ApplyQuery>,
    TomlBody(text): TomlBody,
) -> Result<axum::Json<CatalogApplied>, ApiError> {
    principal.require_admin()?;
    let name = q.name.unwrap_or_else(|| "api".to_string());
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::field(
            "name",
            format!("must be 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    let catalog = load_catalog(&name, &text).map_err(|errors| {
        ApiError::Validation(
            errors
                .errors
                .into_iter()
                .map(|e| {
                    let field = if e.path.is_empty() {
                        "body".to_string()
                    } else {
                        e.path
                    };
                    FieldError::new(field, e.message)
                })
                .collect(),
        )
    })?;
    let document = crate::catalog::document(CatalogSource::Api, &name, &text, state.engine.now());
    let fingerprint = document.fingerprint.clone();
    let (changes, applied) = state
        .engine
        .apply_catalog(catalog, document, q.dry_run)
        .await?;
    Ok(axum::Json(CatalogApplied {
        dry_run: q.dry_run,
        applied,
        fingerprint,
        changes: changes
            .into_iter()
            .map(|c| PlanVersionChangeOut {
                plan: c.plan,
                change: c.kind.into(),
                from_version: c.from,
                to_version: c.to,
            })
            .collect(),
    }))
}
