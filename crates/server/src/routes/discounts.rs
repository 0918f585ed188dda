//! Customer discounts: attach (admin), list (admin, or the customer's own
//! key), remove (admin). The invoice run applies each discount to the period
//! closes it covers; rules with worked numbers in `docs/billing.md`,
//! "Discounts".

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tollgate_billing::discounts::DiscountRequest;
use tollgate_core::billing::discount::{CustomerDiscount, DiscountDuration, DiscountValue};
use tollgate_core::money::Currency;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::ApiJson;
use crate::routes::enforcement::Amount;
use crate::routes::runs::invoice_error;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_discount, list_discounts))
        .routes(routes!(remove_discount))
}

/// How long a discount lasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    /// The close of the period it is attached in only.
    #[default]
    Once,
    /// `periods` periods from the one it is attached in.
    Repeating,
    Forever,
}

/// A discount to attach: `percent` or `amount` (with `currency`, default the
/// customer's), for a `duration`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountIn {
    /// Percent off the subtotal, 0–100 (`10` = 10 %).
    #[serde(default)]
    pub percent: Option<Amount>,
    /// A fixed amount off, not negative, in `currency`.
    #[serde(default)]
    pub amount: Option<Amount>,
    /// The currency of `amount` (default: the customer's); must be the
    /// customer's.
    #[serde(default)]
    pub currency: Option<String>,
    /// `once` (default), `repeating` (with `periods`) or `forever`.
    #[serde(default)]
    pub duration: Duration,
    /// Periods of a `repeating` discount (at least 1).
    #[serde(default)]
    pub periods: Option<u32>,
    /// Periods starting at or after this instant are not discounted.
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    /// Printed on the invoice line (default "10 % off", "5.00 USD off").
    #[serde(default)]
    pub description: Option<String>,
}

/// A discount attached to a customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountOut {
    pub id: String,
    pub customer_id: String,
    /// `percent` or `amount`.
    #[serde(rename = "type")]
    pub kind: String,
    pub percent: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub duration: Duration,
    pub periods: Option<u32>,
    pub ends_at: Option<Timestamp>,
    pub description: String,
    pub created_at: Timestamp,
}

impl From<CustomerDiscount> for DiscountOut {
    fn from(d: CustomerDiscount) -> DiscountOut {
        let (kind, percent, amount, currency) = match d.value {
            DiscountValue::Percent { percent } => {
                ("percent", Some(percent.to_string()), None, None)
            }
            DiscountValue::Amount { amount, currency } => (
                "amount",
                None,
                Some(amount.to_string()),
                Some(currency.code().to_string()),
            ),
        };
        let (duration, periods) = match d.duration {
            DiscountDuration::Once => (Duration::Once, None),
            DiscountDuration::Repeating { periods } => (Duration::Repeating, Some(periods)),
            DiscountDuration::Forever => (Duration::Forever, None),
        };
        DiscountOut {
            id: d.id,
            customer_id: d.customer_id,
            kind: kind.to_string(),
            percent,
            amount,
            currency,
            duration,
            periods,
            ends_at: d.ends_at,
            description: d.description,
            created_at: d.created_at,
        }
    }
}

/// The customer's discounts, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountList {
    pub data: Vec<DiscountOut>,
}

/// The request as the service takes it, or every invalid field.
fn request(
    body: DiscountIn,
    customer_currency: Currency,
) -> Result<DiscountRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let value = match (body.percent, body.amount) {
        (Some(Amount(percent)), None) => {
            if body.currency.is_some() {
                errors.push(FieldError::new("currency", "only with amount"));
            }
            Some(DiscountValue::Percent { percent })
        }
        (None, Some(Amount(amount))) => {
            let currency = match body.currency.as_deref() {
                None => Some(customer_currency),
                Some(code) => match Currency::from_code(code) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errors.push(FieldError::new("currency", e.to_string()));
                        None
                    }
                },
            };
            currency.map(|currency| DiscountValue::Amount { amount, currency })
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "amount",
                "give percent or amount, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(FieldError::new("percent", "give percent or amount"));
            None
        }
    };
    let duration = match (body.duration, body.periods) {
        (Duration::Repeating, Some(periods)) => DiscountDuration::Repeating { periods },
        (Duration::Repeating, None) => {
            errors.push(FieldError::new(
                "periods",
                "a repeating discount needs periods",
            ));
            DiscountDuration::Once
        }
        (_, Some(_)) => {
            errors.push(FieldError::new(
                "periods",
                "only with duration \"repeating\"",
            ));
            DiscountDuration::Once
        }
        (Duration::Once, None) => DiscountDuration::Once,
        (Duration::Forever, None) => DiscountDuration::Forever,
    };
    match value {
        Some(value) if errors.is_empty() => Ok(DiscountRequest {
            value,
            duration,
            ends_at: body.ends_at,
            description: body.description,
        }),
        _ => Err(errors),
    }
}

/// Attaches a discount to a customer from now. The invoice run applies it to
/// the period closes it covers: `once` the period it is attached in,
/// `repeating` that one and the `periods − 1` after it, `forever` every one
/// (until `ends_at`).
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/discounts",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = DiscountIn,
    responses(
        (status = 201, description = "The discount", body = DiscountOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field: percent outside 0–100, negative amount, another currency than the customer's, …", content_type = "application/problem+json")
    )
)]
pub async fn add_discount(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DiscountIn>,
) -> Result<(StatusCode, Json<DiscountOut>), ApiError> {
    principal.require_admin()?;
    let customer = state
        .engine
        .customer(&id)
        .ok_or_else(|| ApiError::NotFound {
            what: "customer",
            id: id.clone(),
        })?;
    if customer.deleted_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "customer {id:?} is deleted; restore it first (POST /v1/customers/{id}/restore)"
        )));
    }
    let currency = Currency::from_code(&customer.currency)
        .map_err(|e| ApiError::Internal(format!("customer {id:?}: {e}")))?;
    let req = request(body, currency).map_err(ApiError::Validation)?;
    // Every invalid field at once (the service refuses the first one too).
    let (_, errors) = state
        .billing
        .discount_of(&id, req.clone())
        .map_err(invoice_error)?;
    if !errors.is_empty() {
        return Err(ApiError::Validation(
            errors
                .into_iter()
                .map(|(f, m)| FieldError::new(f, m))
                .collect(),
        ));
    }
    let discount = state
        .billing
        .add_discount(&id, req)
        .await
        .map_err(invoice_error)?;
    Ok((StatusCode::CREATED, Json(discount.into())))
}

/// The customer's discounts (a customer key reads its own).
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/discounts",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The discounts, oldest first", body = DiscountList),
        (status = 404, description = "No such customer", content_type = "application/problem+json")
    )
)]
pub async fn list_discounts(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DiscountList>, ApiError> {
    principal.require_read(&id)?;
    let all = state
        .billing
        .customer_discounts(&id)
        .await
        .map_err(invoice_error)?;
    Ok(Json(DiscountList {
        data: all.into_iter().map(Into::into).collect(),
    }))
}

/// Removes a discount: later closes no longer apply it (invoices already
/// closed keep their discount lines).
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}/discounts/{discount_id}",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("discount_id" = String, Path, description = "The discount's id")
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such customer or discount", content_type = "application/problem+json")
    )
)]
pub async fn remove_discount(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, discount_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    state
        .billing
        .remove_discount(&id, &discount_id)
        .await
        .map_err(invoice_error)?;
    Ok(StatusCode::NO_CONTENT)
}
