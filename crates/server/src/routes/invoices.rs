//! Invoices, their documents, payments and credit notes; billing reports; the
//! Stripe webhook.
//!
//! - Reading: `GET /v1/invoices` (filters: status, customer, period, cursor),
//!   `GET /v1/invoices/{id}` (with payments and credit notes), `/html`, `/pdf`,
//!   `/explain`, `GET /v1/customers/{id}/invoices`. A customer key reads only
//!   its own customer's invoices; another customer's invoice answers 404
//!   exactly like an unknown id.
//! - Drafts (admin): `POST /v1/invoices/{id}/lines` adds a manual line,
//!   `PATCH`/`DELETE /v1/invoices/{id}/lines/{line}` adjust or remove one;
//!   totals and tax are recomputed. `POST …/issue` numbers it.
//! - Lifecycle (admin, server): `POST …/pay` (manual with a reference, partial
//!   amounts allowed; or `stripe`: a PaymentIntent), `…/void`,
//!   `…/mark-uncollectible`, `…/credit-notes`.
//! - Reports (admin): `GET /v1/admin/billing/outstanding`, `…/revenue?by=month`,
//!   `…/mrr`.
//! - `POST /v1/providers/stripe/webhook`: no API key; the `Stripe-Signature`
//!   header is verified against `[billing.stripe] webhook_secret`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_billing::providers::ProviderError;
use tollgate_billing::providers::collect::PaymentError;
use tollgate_billing::render::{self, RenderOptions};
use tollgate_billing::run::InvoiceError;
use tollgate_core::billing::credit::{CreditNote, CreditRequest};
use tollgate_core::billing::{Invoice, InvoiceStatus};
use tollgate_core::money::round_line;
use tollgate_core::period::Interval;
use tollgate_store::billing::{InvoiceFilter, StoredInvoice};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::runs::invoice_error;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(invoice_html))
        .routes(routes!(invoice_pdf))
        .routes(routes!(explain_invoice))
        .routes(routes!(customer_invoices))
        .routes(routes!(add_line))
        .routes(routes!(adjust_line, remove_line))
        .routes(routes!(issue_invoice))
        .routes(routes!(pay_invoice))
        .routes(routes!(refund_invoice))
        .routes(routes!(void_invoice))
        .routes(routes!(mark_uncollectible))
        .routes(routes!(create_credit_note, list_credit_notes))
        .routes(routes!(credit_note_html))
        .routes(routes!(credit_note_pdf))
        .routes(routes!(outstanding))
        .routes(routes!(revenue))
        .routes(routes!(mrr))
        .routes(routes!(stripe_webhook))
}

/// Invoices per page at most.
const MAX_PAGE: u32 = 1_000;

// ---------------------------------------------------------------------------
// Errors and loading
// ---------------------------------------------------------------------------

fn payment_error(e: PaymentError) -> ApiError {
    match e {
        PaymentError::Store(s) => ApiError::from(s),
        PaymentError::Invoice(i) => invoice_error(i),
        PaymentError::NotFound { what, id } => ApiError::NotFound { what, id },
        PaymentError::Refused(m) => ApiError::Conflict(m),
        PaymentError::Provider(p) => provider_error(p),
    }
}

fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Invalid { field, message } => ApiError::field(field, message),
        ProviderError::Signature(m) => ApiError::Status {
            status: StatusCode::BAD_REQUEST,
            detail: format!("webhook signature rejected: {m}"),
        },
        ProviderError::Unsupported { .. } => ApiError::field("provider", e.to_string()),
        ProviderError::Api { .. } | ProviderError::Transport { .. } => ApiError::Status {
            status: StatusCode::BAD_GATEWAY,
            detail: e.to_string(),
        },
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        what: "invoice",
        id: id.to_string(),
    }
}

/// The invoice if the caller may read it: another customer's invoice is a
/// 404 naming only the id asked for.
async fn readable(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<StoredInvoice, ApiError> {
    let stored = state
        .store
        .billing()
        .get_invoice(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    principal
        .require_read(&stored.invoice.customer_id)
        .map_err(|_| not_found(id))?;
    Ok(stored)
}

fn require_writer(principal: &Principal) -> Result<(), ApiError> {
    principal.require_server()
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// A page of invoices.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceList {
    /// Invoices by id (the core `Invoice` document: lines, totals, status…).
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Invoice>,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/invoices`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub status: Option<String>,
    /// Only this customer's invoices.
    pub customer: Option<String>,
    /// `YYYY-MM`: invoices whose period starts in that month (UTC).
    pub period: Option<String>,
    /// Cursor: invoices after this id.
    pub starting_after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// Filters of `GET /v1/customers/{id}/invoices`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerInvoiceQuery {
    pub status: Option<String>,
    pub period: Option<String>,
    pub starting_after: Option<String>,
    pub limit: Option<u32>,
}

/// `[start of month, start of next month)` for `YYYY-MM`.
fn month_bounds(period: &str) -> Result<(Timestamp, Timestamp), ApiError> {
    let bad = || ApiError::field("period", format!("{period:?} is not a month (YYYY-MM)"));
    let date = tollgate_billing::run::parse_month(period).map_err(invoice_error)?;
    let start = date.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| bad())?;
    let end = start
        .checked_add(jiff::Span::new().months(1))
        .map_err(|_| bad())?;
    Ok((start.timestamp(), end.timestamp()))
}

async fn page(
    state: &AppState,
    customer: Option<String>,
    status: Option<&str>,
    period: Option<&str>,
    starting_after: Option<String>,
    limit: Option<u32>,
) -> Result<InvoiceList, ApiError> {
    let status = match status {
        Some(s) => Some(InvoiceStatus::parse(s).ok_or_else(|| {
            ApiError::field(
                "status",
                format!("{s:?}: expected draft, open, paid, void or uncollectible"),
            )
        })?),
        None => None,
    };
    let (period_from, period_to) = match period {
        Some(p) => {
            let (a, b) = month_bounds(p)?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let mut data = state
        .store
        .billing()
        .list_invoices(&InvoiceFilter {
            customer_id: customer,
            status,
            kind: None,
            period_from,
            period_to,
            starting_after,
            limit: limit + 1,
        })
        .await?;
    let has_more = data.len() > limit as usize;
    data.truncate(limit as usize);
    Ok(InvoiceList {
        next_cursor: if has_more {
            data.last().map(|i| i.id.clone())
        } else {
            None
        },
        has_more,
        data,
    })
}

/// List invoices.
///
/// Admin and server keys list every customer's invoices; a customer key lists
/// its own (naming another customer is a 404).
#[utoipa::path(
    get,
    path = "/v1/invoices",
    tag = "invoices",
    params(InvoiceQuery),
    responses(
        (status = 200, description = "A page of invoices", body = InvoiceList),
        (status = 422, description = "A filter is invalid", content_type = "application/problem+json"),
    )
)]
pub async fn list_invoices(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> Result<Json<InvoiceList>, ApiError> {
    let customer = match (&q.customer, principal.scope()) {
        (Some(c), _) => {
            principal.require_read(c)?;
            Some(c.clone())
        }
        (None, Scope::Customer) => principal.key.customer_id.clone(),
        (None, _) => None,
    };
    Ok(Json(
        page(
            &state,
            customer,
            q.status.as_deref(),
            q.period.as_deref(),
            q.starting_after,
            q.limit,
        )
        .await?,
    ))
}

/// List a customer's invoices.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/invoices",
    tag = "invoices",
    params(("id" = String, Path, description = "The customer's id"), CustomerInvoiceQuery),
    responses(
        (status = 200, description = "A page of the customer's invoices", body = InvoiceList),
        (status = 404, description = "Unknown customer", content_type = "application/problem+json"),
    )
)]
pub async fn customer_invoices(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CustomerInvoiceQuery>,
) -> Result<Json<InvoiceList>, ApiError> {
    principal.require_read(&id)?;
    if state.engine.customer(&id).is_none() {
        return Err(ApiError::NotFound {
            what: "customer",
            id,
        });
    }
    Ok(Json(
        page(
            &state,
            Some(id),
            q.status.as_deref(),
            q.period.as_deref(),
            q.starting_after,
            q.limit,
        )
        .await?,
    ))
}

/// An invoice with its payments and credit notes.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceDetail {
    /// The invoice document.
    #[schema(value_type = Object)]
    pub invoice: Invoice,
    /// Open and past its due date (overdue is derived, not a status).
    pub overdue: bool,
    #[schema(value_type = Vec<Object>)]
    pub payments: Vec<tollgate_store::billing::PaymentRecord>,
    #[schema(value_type = Vec<Object>)]
    pub credit_notes: Vec<CreditNote>,
}

async fn detail(state: &AppState, invoice: Invoice) -> Result<InvoiceDetail, ApiError> {
    let billing = state.store.billing();
    let payments = billing.payments(&invoice.id).await?;
    let credit_notes = billing.credit_notes(&invoice.id).await?;
    Ok(InvoiceDetail {
        overdue: invoice.is_overdue(state.engine.now()),
        invoice,
        payments,
        credit_notes,
    })
}

/// Get an invoice.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id (inv_…)")),
    responses(
        (status = 200, description = "The invoice", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
    )
)]
pub async fn get_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    let stored = readable(&state, &principal, &id).await?;
    Ok(Json(detail(&state, stored.invoice).await?))
}

fn render_options(state: &AppState) -> RenderOptions {
    RenderOptions {
        now: Some(state.engine.now()),
        ..RenderOptions::default()
    }
}

fn document(content_type: &'static str, filename: Option<String>, body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(name) = filename {
        if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    response
}

fn file_name(number: Option<&str>, id: &str) -> String {
    let base: String = number
        .unwrap_or(id)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    format!("{base}.pdf")
}

/// The invoice as a printable HTML page.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/html",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "The invoice document", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
    )
)]
pub async fn invoice_html(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = readable(&state, &principal, &id).await?;
    let html = render::to_html(&stored.invoice, &render_options(&state));
    Ok(document(
        "text/html; charset=utf-8",
        None,
        html.into_bytes(),
    ))
}

/// The invoice as a PDF.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/pdf",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "The invoice document (A4)", body = Vec<u8>, content_type = "application/pdf"),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
    )
)]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = readable(&state, &principal, &id).await?;
    let inv = stored.invoice;
    let pdf = render::to_pdf(&inv, &render_options(&state))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(document(
        "application/pdf",
        Some(file_name(inv.number.as_deref(), &inv.id)),
        pdf,
    ))
}

/// One line of an invoice and where its amount came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainedLine {
    pub index: usize,
    pub kind: String,
    pub description: String,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// Usage lines: the ledger totals summed (window, buckets, records).
    #[schema(value_type = Option<Object>)]
    pub source: Option<tollgate_core::billing::LineSource>,
    /// Tier rows of tiered prices.
    #[schema(value_type = Vec<Object>)]
    pub tiers: Vec<tollgate_core::pricing::TierBreakdown>,
    /// In words: "12500 api_calls from 340 ledger records, …".
    pub explanation: Option<String>,
}

/// An invoice, line by line, with the ledger totals behind each usage line.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceExplanation {
    pub invoice_id: String,
    pub number: Option<String>,
    pub currency: String,
    pub lines: Vec<ExplainedLine>,
    #[schema(value_type = Object)]
    pub totals: tollgate_core::billing::InvoiceTotals,
}

/// Explain an invoice.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/explain",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "Each line with its ledger totals", body = InvoiceExplanation),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
    )
)]
pub async fn explain_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvoiceExplanation>, ApiError> {
    let inv = readable(&state, &principal, &id).await?.invoice;
    let lines = inv
        .lines
        .iter()
        .enumerate()
        .map(|(index, l)| ExplainedLine {
            index,
            kind: serde_json::to_value(l.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            description: l.description.clone(),
            quantity: l.quantity.normalize(),
            amount: l.amount,
            source: l.source.clone(),
            tiers: l.tiers.clone(),
            explanation: l.explain(),
        })
        .collect();
    Ok(Json(InvoiceExplanation {
        invoice_id: inv.id.clone(),
        number: inv.number.clone(),
        currency: inv.currency.code().to_string(),
        lines,
        totals: inv.totals,
    }))
}

// ---------------------------------------------------------------------------
// Draft edits
// ---------------------------------------------------------------------------

/// A manual line for a draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    /// Printed on the invoice.
    pub description: String,
    /// In the invoice's currency; negative for a credit. Rounded to its minor
    /// unit.
    #[schema(value_type = String, example = "25.00")]
    pub amount: Decimal,
}

/// Changes to one line of a draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinePatch {
    pub description: Option<String>,
    #[schema(value_type = Option<String>, example = "25.00")]
    pub amount: Option<Decimal>,
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.trim().is_empty() || d.len() > 500 {
        return Err(ApiError::field(
            "description",
            "must be 1 to 500 characters",
        ));
    }
    Ok(())
}

/// Loads a draft, applies `edit` and saves it with recomputed totals
/// ([`tollgate_billing::Billing::edit_draft`]), for an admin.
async fn edit_draft(
    state: &AppState,
    principal: &Principal,
    id: &str,
    edit: impl FnOnce(&mut Invoice) -> Result<(), InvoiceError>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    principal.require_admin()?;
    readable(state, principal, id).await?;
    let inv = state
        .billing
        .edit_draft(id, edit)
        .await
        .map_err(invoice_error)?;
    Ok(Json(detail(state, inv).await?))
}

fn line_index(inv: &Invoice, line: usize) -> Result<usize, InvoiceError> {
    if line < inv.lines.len() {
        Ok(line)
    } else {
        Err(InvoiceError::NotFound {
            what: "invoice line",
            id: line.to_string(),
        })
    }
}

/// Add a line to a draft.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/lines",
    tag = "invoices",
    params(("id" = String, Path, description = "The draft's id")),
    request_body = NewLine,
    responses(
        (status = 200, description = "The draft with its new totals", body = InvoiceDetail),
        (status = 409, description = "Not a draft", content_type = "application/problem+json"),
        (status = 422, description = "Invalid line", content_type = "application/problem+json"),
    )
)]
pub async fn add_line(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewLine>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    principal.require_admin()?;
    check_description(&body.description)?;
    readable(&state, &principal, &id).await?;
    let inv = state
        .billing
        .add_draft_line(&id, body.description.trim(), body.amount)
        .await
        .map_err(invoice_error)?;
    Ok(Json(detail(&state, inv).await?))
}

/// Adjust a line of a draft (description, amount).
#[utoipa::path(
    patch,
    path = "/v1/invoices/{id}/lines/{line}",
    tag = "invoices",
    params(
        ("id" = String, Path, description = "The draft's id"),
        ("line" = usize, Path, description = "The line's index (0-based)"),
    ),
    request_body = LinePatch,
    responses(
        (status = 200, description = "The draft with its new totals", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice or line", content_type = "application/problem+json"),
        (status = 409, description = "Not a draft", content_type = "application/problem+json"),
    )
)]
pub async fn adjust_line(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, line)): Path<(String, usize)>,
    ApiJson(body): ApiJson<LinePatch>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    edit_draft(&state, &principal, &id, |inv| {
        let i = line_index(inv, line)?;
        let currency = inv.currency;
        let l = &mut inv.lines[i];
        if let Some(d) = &body.description {
            l.description = d.trim().to_string();
        }
        if let Some(amount) = body.amount {
            // An adjusted amount replaces the priced one: the line no longer
            // follows a unit price.
            l.unrounded = amount;
            l.amount = round_line(amount, currency);
            l.unit_amount = None;
        }
        Ok(())
    })
    .await
}

/// Remove a line from a draft.
#[utoipa::path(
    delete,
    path = "/v1/invoices/{id}/lines/{line}",
    tag = "invoices",
    params(
        ("id" = String, Path, description = "The draft's id"),
        ("line" = usize, Path, description = "The line's index (0-based)"),
    ),
    responses(
        (status = 200, description = "The draft with its new totals", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice or line", content_type = "application/problem+json"),
        (status = 409, description = "Not a draft", content_type = "application/problem+json"),
    )
)]
pub async fn remove_line(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, line)): Path<(String, usize)>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    edit_draft(&state, &principal, &id, |inv| {
        let i = line_index(inv, line)?;
        inv.lines.remove(i);
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

/// Issue a draft: it gets the next number of the invoice prefix, its issue
/// date and its due date (payment terms), and never changes again.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/issue",
    tag = "invoices",
    params(("id" = String, Path, description = "The draft's id")),
    responses(
        (status = 200, description = "The issued invoice (issuing again returns it unchanged)", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "A voided draft", content_type = "application/problem+json"),
    )
)]
pub async fn issue_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    principal.require_admin()?;
    readable(&state, &principal, &id).await?;
    let inv = state.billing.issue(&id).await.map_err(invoice_error)?;
    Ok(Json(detail(&state, inv).await?))
}

/// A payment of an invoice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayIn {
    /// `manual` (default) or `stripe`.
    pub provider: Option<String>,
    /// Default: the amount due. Partial payments are allowed.
    #[schema(value_type = Option<String>, example = "500.00")]
    pub amount: Option<Decimal>,
    /// Manual payments: the bank transfer id, cheque number… A reference
    /// already recorded is not recorded twice.
    pub reference: Option<String>,
}

/// What a payment did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayOut {
    /// The provider's view: status, reference, `client_secret` (Stripe).
    #[schema(value_type = Object)]
    pub payment: tollgate_billing::providers::ProviderPayment,
    /// The payment recorded on the invoice (manual); `null` while Stripe collects.
    #[schema(value_type = Option<Object>)]
    pub recorded: Option<tollgate_store::billing::PaymentRecord>,
    /// `false` when this reference was already recorded.
    pub created: bool,
    #[schema(value_type = Object)]
    pub invoice: Invoice,
}

/// Pay an invoice.
///
/// `manual`: records `amount` (default: the amount due) received with its
/// `reference`; the invoice is `paid` once nothing is due. `stripe`: creates a
/// PaymentIntent for the amount, answered with its `client_secret`; the
/// payment is recorded when Stripe's `payment_intent.succeeded` webhook
/// arrives.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/pay",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    request_body = PayIn,
    responses(
        (status = 200, description = "Recorded (manual) or started (stripe)", body = PayOut),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "The invoice takes no payment (draft, void, paid)", content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount, reference or provider", content_type = "application/problem+json"),
        (status = 502, description = "The provider failed", content_type = "application/problem+json"),
    )
)]
pub async fn pay_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PayIn>,
) -> Result<Json<PayOut>, ApiError> {
    require_writer(&principal)?;
    readable(&state, &principal, &id).await?;
    let name = body.provider.as_deref().unwrap_or("manual");
    let provider = state.payments.get(name).ok_or_else(|| {
        ApiError::field(
            "provider",
            format!("{name:?} is not configured (manual, or stripe with [billing.stripe])"),
        )
    })?;
    let out = state
        .billing
        .pay_invoice(
            provider.as_ref(),
            &id,
            body.amount,
            body.reference.as_deref(),
        )
        .await
        .map_err(payment_error)?;
    Ok(Json(PayOut {
        payment: out.payment,
        recorded: out.recorded,
        created: out.created,
        invoice: out.invoice,
    }))
}

/// A refund of a paid invoice's payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundIn {
    /// The payment to refund (`pay_…`); default: the invoice's only payment.
    pub payment_id: Option<String>,
    /// Default: what is left to refund of the payment.
    #[schema(value_type = Option<String>, example = "10.00")]
    pub amount: Option<Decimal>,
    pub reason: Option<String>,
}

/// What a refund did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundOut {
    /// The refund recorded: payment, provider reference (`re_…`), amount,
    /// credit note.
    #[schema(value_type = Object)]
    pub refund: tollgate_store::billing::RefundRecord,
    /// `false` when the `Idempotency-Key` had already refunded (the first
    /// refund is answered; nothing more is refunded).
    pub created: bool,
    #[schema(value_type = Object)]
    pub invoice: Invoice,
}

/// Refund a paid invoice.
///
/// Refunds `amount` (default: all that is left) of a payment through the
/// provider that took it (`manual`: recorded as done; `stripe`:
/// `POST /v1/refunds`) and credits it on the invoice with a credit note
/// `Refund of <payment reference>`. The `Idempotency-Key` header is required:
/// a repeat with the same key answers the first refund and refunds nothing.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/refund",
    tag = "invoices",
    params(
        ("id" = String, Path, description = "The invoice's id"),
        ("Idempotency-Key" = String, Header, description = "One refund per invoice and key (1–255 visible ASCII characters)")
    ),
    request_body = RefundIn,
    responses(
        (status = 200, description = "Refunded (or the first refund of this key)", body = RefundOut),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "Not a paid invoice, no payment, or the payment's provider is not configured", content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount or payment_id, or no Idempotency-Key", content_type = "application/problem+json"),
        (status = 502, description = "The provider failed", content_type = "application/problem+json"),
    )
)]
pub async fn refund_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundIn>,
) -> Result<Json<RefundOut>, ApiError> {
    principal.require_admin()?;
    readable(&state, &principal, &id).await?;
    let key = crate::routes::subscriptions::idempotency_key(&headers)?.ok_or_else(|| {
        ApiError::field(
            "Idempotency-Key",
            "a refund needs an Idempotency-Key header (retrying with it refunds once)",
        )
    })?;
    let req = tollgate_billing::providers::collect::RefundRequest {
        payment_id: body.payment_id,
        amount: body.amount,
        reason: body.reason,
        idempotency_key: key,
    };
    let out = state
        .billing
        .refund_invoice(&state.payments, &id, &req)
        .await
        .map_err(payment_error)?;
    Ok(Json(RefundOut {
        refund: out.refund,
        created: out.created,
        invoice: out.invoice,
    }))
}

async fn set_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
    status: InvoiceStatus,
) -> Result<Json<InvoiceDetail>, ApiError> {
    require_writer(principal)?;
    readable(state, principal, id).await?;
    let inv = match status {
        InvoiceStatus::Void => state.billing.void_invoice(id).await,
        _ => state.billing.mark_uncollectible(id).await,
    }
    .map_err(invoice_error)?;
    Ok(Json(detail(state, inv).await?))
}

/// Void an invoice (draft, open or uncollectible). Its number is kept.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/void",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "The voided invoice", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "A paid invoice cannot be voided (credit it)", content_type = "application/problem+json"),
    )
)]
pub async fn void_invoice(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    set_status(&state, &principal, &id, InvoiceStatus::Void).await
}

/// Mark an open invoice uncollectible (it can still be paid or voided).
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/mark-uncollectible",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "The invoice, uncollectible", body = InvoiceDetail),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "Not open", content_type = "application/problem+json"),
    )
)]
pub async fn mark_uncollectible(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvoiceDetail>, ApiError> {
    set_status(&state, &principal, &id, InvoiceStatus::Uncollectible).await
}

/// A credit note to issue against an invoice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteIn {
    /// Why (printed on the note).
    pub reason: String,
    /// `full` (everything not yet credited), `amount` (tax included, spread
    /// over the lines) or `lines` (pre-tax amounts of given lines).
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Option<String>, example = "120.00")]
    pub amount: Option<Decimal>,
    /// For `lines`: `[[line index, amount], …]`.
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    pub lines: Option<Vec<(usize, Decimal)>>,
}

/// A credit note and the invoice after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNoteOut {
    #[schema(value_type = Object)]
    pub credit_note: CreditNote,
    #[schema(value_type = Object)]
    pub invoice: Invoice,
}

/// Credit an issued invoice.
///
/// The only correction of an issued invoice: a numbered credit note that
/// references it. Never more than the invoice's total across all notes.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/credit-notes",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    request_body = CreditNoteIn,
    responses(
        (status = 201, description = "The credit note", body = CreditNoteOut),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "Not creditable (draft, void, fully credited)", content_type = "application/problem+json"),
        (status = 422, description = "Invalid request", content_type = "application/problem+json"),
    )
)]
pub async fn create_credit_note(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreditNoteIn>,
) -> Result<(StatusCode, Json<CreditNoteOut>), ApiError> {
    principal.require_admin()?;
    let inv = readable(&state, &principal, &id).await?.invoice;
    if body.reason.trim().is_empty() || body.reason.len() > 500 {
        return Err(ApiError::field("reason", "must be 1 to 500 characters"));
    }
    let request = match body.kind.as_str() {
        "full" => CreditRequest::Full,
        "amount" => CreditRequest::Amount {
            amount: body
                .amount
                .filter(|a| *a > Decimal::ZERO)
                .ok_or_else(|| ApiError::field("amount", "a positive amount is required"))?,
        },
        "lines" => {
            let lines = body
                .lines
                .filter(|l| !l.is_empty())
                .ok_or_else(|| ApiError::field("lines", "[[line index, amount], …] is required"))?;
            if let Some((i, _)) = lines.iter().find(|(i, _)| *i >= inv.lines.len()) {
                return Err(ApiError::field("lines", format!("no line {i}")));
            }
            CreditRequest::Lines { lines }
        }
        other => {
            return Err(ApiError::field(
                "type",
                format!("{other:?}: expected full, amount or lines"),
            ));
        }
    };
    let (credit_note, invoice) = state
        .billing
        .credit_invoice(&id, &request, body.reason.trim())
        .await
        .map_err(invoice_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreditNoteOut {
            credit_note,
            invoice,
        }),
    ))
}

/// An invoice's credit notes.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/credit-notes",
    tag = "invoices",
    params(("id" = String, Path, description = "The invoice's id")),
    responses(
        (status = 200, description = "Its credit notes, oldest first", body = Vec<Object>),
        (status = 404, description = "Unknown invoice", content_type = "application/problem+json"),
    )
)]
pub async fn list_credit_notes(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<CreditNote>>, ApiError> {
    readable(&state, &principal, &id).await?;
    Ok(Json(state.store.billing().credit_notes(&id).await?))
}

async fn readable_note(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(CreditNote, Invoice), ApiError> {
    let gone = || ApiError::NotFound {
        what: "credit note",
        id: id.to_string(),
    };
    let note = state
        .store
        .billing()
        .get_credit_note(id)
        .await?
        .ok_or_else(gone)?;
    let inv = readable(state, principal, &note.invoice_id)
        .await
        .map_err(|_| gone())?
        .invoice;
    Ok((note, inv))
}

/// A credit note as a printable HTML page.
#[utoipa::path(
    get,
    path = "/v1/credit-notes/{id}/html",
    tag = "invoices",
    params(("id" = String, Path, description = "The credit note's id (cn_…)")),
    responses(
        (status = 200, description = "The credit note", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown credit note", content_type = "application/problem+json"),
    )
)]
pub async fn credit_note_html(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (note, inv) = readable_note(&state, &principal, &id).await?;
    let html = render::credit_note_to_html(&note, &inv, &render_options(&state));
    Ok(document(
        "text/html; charset=utf-8",
        None,
        html.into_bytes(),
    ))
}

/// A credit note as a PDF.
#[utoipa::path(
    get,
    path = "/v1/credit-notes/{id}/pdf",
    tag = "invoices",
    params(("id" = String, Path, description = "The credit note's id (cn_…)")),
    responses(
        (status = 200, description = "The credit note (A4)", body = Vec<u8>, content_type = "application/pdf"),
        (status = 404, description = "Unknown credit note", content_type = "application/problem+json"),
    )
)]
pub async fn credit_note_pdf(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (note, inv) = readable_note(&state, &principal, &id).await?;
    let pdf = render::credit_note_to_pdf(&note, &inv, &render_options(&state))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(document(
        "application/pdf",
        Some(file_name(note.number.as_deref(), &note.id)),
        pdf,
    ))
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

/// Every invoice (paged through the store).
async fn all_invoices(state: &AppState) -> Result<Vec<Invoice>, ApiError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .billing()
            .list_invoices(&InvoiceFilter {
                starting_after: after.clone(),
                limit: MAX_PAGE,
                ..InvoiceFilter::default()
            })
            .await?;
        let full = page.len() == MAX_PAGE as usize;
        after = page.last().map(|i| i.id.clone());
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// What is owed in one currency.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Outstanding {
    pub currency: String,
    /// Open and uncollectible invoices.
    pub invoices: usize,
    /// Sum of their amounts due.
    #[schema(value_type = String)]
    pub amount_due: Decimal,
    /// Of which past their due date (open only).
    pub overdue_invoices: usize,
    #[schema(value_type = String)]
    pub overdue_amount: Decimal,
}

/// Outstanding balances per currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutstandingOut {
    pub as_of: Timestamp,
    pub currencies: Vec<Outstanding>,
}

/// What customers owe: amounts due of open and uncollectible invoices, and
/// the overdue part, per currency.
#[utoipa::path(
    get,
    path = "/v1/admin/billing/outstanding",
    tag = "admin",
    responses(
        (status = 200, description = "Outstanding balances", body = OutstandingOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    )
)]
pub async fn outstanding(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<OutstandingOut>, ApiError> {
    principal.require_admin()?;
    let now = state.engine.now();
    let mut by: BTreeMap<String, Outstanding> = BTreeMap::new();
    for inv in all_invoices(&state).await? {
        if !matches!(
            inv.status,
            InvoiceStatus::Open | InvoiceStatus::Uncollectible
        ) {
            continue;
        }
        let code = inv.currency.code().to_string();
        let o = by.entry(code.clone()).or_insert_with(|| Outstanding {
            currency: code,
            ..Outstanding::default()
        });
        o.invoices += 1;
        o.amount_due += inv.totals.amount_due;
        if inv.is_overdue(now) {
            o.overdue_invoices += 1;
            o.overdue_amount += inv.totals.amount_due;
        }
    }
    Ok(Json(OutstandingOut {
        as_of: now,
        currencies: by.into_values().collect(),
    }))
}

/// `by` of the revenue report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// `month` (the only grouping).
    pub by: Option<String>,
}

/// One month of revenue in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueRow {
    /// `YYYY-MM` of the invoices' issue date (UTC).
    pub month: String,
    pub currency: String,
    pub invoices: usize,
    /// Totals of issued, not voided invoices (tax included).
    #[schema(value_type = String)]
    pub invoiced: Decimal,
    /// Of which tax.
    #[schema(value_type = String)]
    pub tax: Decimal,
    #[schema(value_type = String)]
    pub paid: Decimal,
    #[schema(value_type = String)]
    pub credited: Decimal,
    /// invoiced − credited.
    #[schema(value_type = String)]
    pub net: Decimal,
}

/// Revenue by month: invoiced, tax, paid, credited and net, per currency, by
/// the month each invoice was issued in (drafts and void invoices excluded).
#[utoipa::path(
    get,
    path = "/v1/admin/billing/revenue",
    tag = "admin",
    params(RevenueQuery),
    responses(
        (status = 200, description = "One row per month and currency, oldest first", body = Vec<RevenueRow>),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Unknown grouping", content_type = "application/problem+json"),
    )
)]
pub async fn revenue(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<RevenueQuery>,
) -> Result<Json<Vec<RevenueRow>>, ApiError> {
    principal.require_admin()?;
    if let Some(by) = q.by.as_deref().filter(|b| *b != "month") {
        return Err(ApiError::field("by", format!("{by:?}: only month")));
    }
    let mut rows: BTreeMap<(String, String), RevenueRow> = BTreeMap::new();
    for inv in all_invoices(&state).await? {
        let Some(issued) = inv.issued_at else {
            continue;
        };
        if inv.status == InvoiceStatus::Void {
            continue;
        }
        let month = issued.strftime("%Y-%m").to_string();
        let currency = inv.currency.code().to_string();
        let r = rows
            .entry((month.clone(), currency.clone()))
            .or_insert_with(|| RevenueRow {
                month,
                currency,
                invoices: 0,
                invoiced: Decimal::ZERO,
                tax: Decimal::ZERO,
                paid: Decimal::ZERO,
                credited: Decimal::ZERO,
                net: Decimal::ZERO,
            });
        r.invoices += 1;
        r.invoiced += inv.totals.total;
        r.tax += inv.totals.tax;
        r.paid += inv.totals.amount_paid;
        r.credited += inv.totals.amount_credited;
        r.net = r.invoiced - r.credited;
    }
    Ok(Json(rows.into_values().collect()))
}

/// Monthly recurring revenue in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct MrrRow {
    pub currency: String,
    /// Active and past-due subscriptions counted.
    pub subscriptions: usize,
    /// Sum of their base prices per month (yearly prices / 12).
    #[schema(value_type = String)]
    pub mrr: Decimal,
    /// Per plan.
    #[schema(value_type = Object)]
    pub by_plan: BTreeMap<String, String>,
}

/// MRR: the base prices of active and past-due subscriptions, per month, each
/// at the plan version it is subscribed to.
#[utoipa::path(
    get,
    path = "/v1/admin/billing/mrr",
    tag = "admin",
    responses(
        (status = 200, description = "MRR per currency", body = Vec<MrrRow>),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
    )
)]
pub async fn mrr(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<MrrRow>>, ApiError> {
    use tollgate_store::{CustomerFilter, SubscriptionStatus};
    principal.require_admin()?;
    let mut plans: BTreeMap<(String, u32), tollgate_core::catalog::Plan> = BTreeMap::new();
    let mut by: BTreeMap<String, (usize, Decimal, BTreeMap<String, Decimal>)> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_customers(&CustomerFilter {
                plan_key: None,
                include_deleted: false,
                starting_after: after.clone(),
                limit: MAX_PAGE,
            })
            .await?;
        let full = page.len() == MAX_PAGE as usize;
        after = page.last().map(|c| c.id.clone());
        for c in page.iter().filter(|c| c.deleted_at.is_none()) {
            let Ok(Some(sub)) = state.engine.subscription(&c.id) else {
                continue;
            };
            if !matches!(
                sub.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) {
                continue;
            }
            // The version the customer is subscribed to (grandfathered
            // customers keep their price), read once per version.
            let key = (sub.plan_key.clone(), sub.plan_version);
            let plan = match plans.get(&key) {
                Some(p) => p,
                None => {
                    // A version the store does not have is left out; a
                    // plan the served catalog no longer offers still counts
                    // (its subscribers are still billed); a store failure is
                    // an error, not a smaller MRR.
                    let p = match state
                        .billing
                        .pinned_version(&sub.plan_key, sub.plan_version)
                        .await
                    {
                        Ok(p) => p,
                        Err(tollgate_billing::changes::ChangeError::Invalid { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    plans.entry(key).or_insert(p)
                }
            };
            let monthly = match plan.interval {
                Interval::Month => plan.base_price.amount,
                Interval::Year => plan.base_price.amount / Decimal::from(12),
            };
            let e = by
                .entry(plan.currency.code().to_string())
                .or_insert_with(|| (0, Decimal::ZERO, BTreeMap::new()));
            e.0 += 1;
            e.1 += monthly;
            *e.2.entry(plan.key.clone()).or_default() += monthly;
        }
        if !full {
            break;
        }
    }
    let rows = by
        .into_iter()
        .map(|(currency, (subscriptions, mrr, plans))| {
            let cur = tollgate_core::money::Currency::from_code(&currency).ok();
            let show = |d: Decimal| match cur {
                Some(c) => round_line(d, c).to_string(),
                None => d.normalize().to_string(),
            };
            MrrRow {
                subscriptions,
                mrr: cur.map_or(mrr, |c| round_line(mrr, c)),
                by_plan: plans.into_iter().map(|(k, v)| (k, show(v))).collect(),
                currency,
            }
        })
        .collect();
    Ok(Json(rows))
}

// ---------------------------------------------------------------------------
// Stripe webhook
// ---------------------------------------------------------------------------

/// What the webhook did with an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    pub received: bool,
    #[schema(value_type = Object)]
    pub outcome: tollgate_billing::providers::collect::EventOutcome,
}

/// Stripe's webhook endpoint.
///
/// No API key: the `Stripe-Signature` header must carry a `v1` HMAC-SHA256 of
/// `t.body` with `[billing.stripe] webhook_secret`, `t` within 300 s of now.
/// `payment_intent.succeeded` records the payment on the invoice named by the
/// intent's `metadata[tollgate_invoice_id]`; `charge.refunded` issues a credit
/// note for the newly refunded amount; `payment_intent.payment_failed` is
/// logged. A repeated delivery of an event changes nothing (one payment per
/// PaymentIntent) and answers `duplicate: true`.
#[utoipa::path(
    post,
    path = "/v1/providers/stripe/webhook",
    tag = "invoices",
    security(()),
    request_body(content = Object, description = "A Stripe event, exactly as sent", content_type = "application/json"),
    responses(
        (status = 200, description = "Processed (or a repeat)", body = WebhookOut),
        (status = 400, description = "Missing or wrong signature", content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not configured, or the event names an unknown invoice", content_type = "application/problem+json"),
        (status = 409, description = "The invoice cannot take the payment or credit (e.g. void)", content_type = "application/problem+json"),
        (status = 413, description = "Request body too large", content_type = "application/problem+json"),
        (status = 422, description = "The event's amounts do not fit the invoice", content_type = "application/problem+json"),
    )
)]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookOut>, ApiError> {
    let Some(stripe) = state.payments.stripe.clone() else {
        return Err(ApiError::NotFound {
            what: "payment provider",
            id: "stripe".to_string(),
        });
    };
    let event = tollgate_billing::providers::PaymentProvider::verify_webhook(
        stripe.as_ref(),
        &headers,
        &body,
        state.engine.now(),
    )
    .map_err(provider_error)?;
    let outcome = state
        .billing
        .handle_provider_event("stripe", &event)
        .await
        .map_err(payment_error)?;
    Ok(Json(WebhookOut {
        received: true,
        outcome,
    }))
}
