//! The invoice run over HTTP (`POST /v1/admin/invoices/run`, admin: what
//! `tollgate invoices run --url` calls) and a customer's upcoming invoice
//! (`GET /v1/customers/{id}/upcoming-invoice`). Rules: `docs/billing.md`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use tollgate_billing::run::{InvoiceError, RunOptions, RunReport, parse_month};
use tollgate_core::billing::Invoice;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_invoices))
        .routes(routes!(upcoming_invoice))
}

pub(crate) fn invoice_error(e: InvoiceError) -> ApiError {
    match e {
        InvoiceError::NotFound { what, id } => ApiError::NotFound { what, id },
        InvoiceError::Invalid { field, message } => ApiError::field(field, message),
        InvoiceError::Store(e) => e.into(),
        InvoiceError::Billing(b) => ApiError::Conflict(b.to_string()),
        e @ InvoiceError::NotDraft { .. } => ApiError::Conflict(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// What to close.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `YYYY-MM`: close the periods that end in this month (on each customer's
    /// clock). Absent: every ended period without an invoice, as the worker.
    pub period: Option<String>,
}

/// What the run did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    /// Counts (`periods`, `created`, `resumed`, `already_invoiced`, `issued`)
    /// and the periods that could not be closed (`failed`).
    #[schema(value_type = Object)]
    pub report: RunReport,
}

/// Closes ended billing periods into invoices now (idempotent).
#[utoipa::path(
    post,
    path = "/v1/admin/invoices/run",
    tag = "invoices",
    request_body = RunRequest,
    responses(
        (status = 200, description = "The run's report", body = RunResponse),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "A bad period", content_type = "application/problem+json"),
    )
)]
pub async fn run_invoices(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<Json<RunResponse>, ApiError> {
    principal.require_admin()?;
    let month = req
        .period
        .as_deref()
        .map(parse_month)
        .transpose()
        .map_err(invoice_error)?;
    let opts = RunOptions {
        month,
        ..RunOptions::default()
    };
    let report = state
        .billing
        .run_invoices(&opts, &|_| {})
        .await
        .map_err(invoice_error)?;
    Ok(Json(RunResponse { report }))
}

/// What the current period will cost if usage continues at its present pace.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpcomingInvoice {
    /// An invoice-shaped preview (status `draft`, no number).
    #[schema(value_type = Object)]
    pub invoice: Invoice,
}

/// The customer's upcoming invoice.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/upcoming-invoice",
    tag = "invoices",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The projection", body = UpcomingInvoice),
        (status = 404, description = "No such customer or no subscription", content_type = "application/problem+json"),
    )
)]
pub async fn upcoming_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<UpcomingInvoice>, ApiError> {
    principal.require_read(&id)?;
    let invoice = state
        .billing
        .upcoming_invoice(&id)
        .await
        .map_err(invoice_error)?;
    Ok(Json(UpcomingInvoice { invoice }))
}
