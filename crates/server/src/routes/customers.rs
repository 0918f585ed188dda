//! Customers and what belongs to them. Customers are addressed by the host
//! application's own id.
//!
//! | route | scope |
//! | --- | --- |
//! | `POST /v1/customers` | server |
//! | `GET /v1/customers` | server |
//! | `GET /v1/customers/{id}` | read (customer keys: their own) |
//! | `PATCH /v1/customers/{id}` | server |
//! | `DELETE /v1/customers/{id}` (soft delete) | server |
//! | `POST /v1/customers/{id}/restore` | server |
//! | `PUT /v1/customers/{id}/subscription` (subscribe, change plan) | server |
//! | `PATCH /v1/customers/{id}/subscription` (status) | server |
//! | `GET /v1/customers/{id}/subscription` | read |
//! | `PUT /v1/customers/{id}/overrides/{feature}` | server |
//! | `DELETE /v1/customers/{id}/overrides/{feature}` | server |
//! | `POST /v1/customers/{id}/grants` | server |
//! | `GET /v1/customers/{id}/grants` | read |
//! | `DELETE /v1/customers/{id}/grants/{grant_id}` | server |
//! | `POST /v1/customers/{id}/emergency-pool` | server |
//! | `PUT /v1/customers/{id}/admin-bypass` | admin |
//!
//! Every request is checked in full before anything changes: a 4xx changes
//! nothing.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json_;
use tollgate_core::catalog::{
    Entitlement, Feature, FeatureKind, Limit, Value as CatalogValue, ValueType,
};
use tollgate_engine::{CustomerUpdate, NewCustomer, NewGrant, SubscribeOptions};
use tollgate_store::{
    CustomerFilter, CustomerRecord, GrantRecord, SubscriptionRecord, SubscriptionStatus,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::enforcement::Quantity;
use crate::routes::keys::page_limit;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer, delete_customer))
        .routes(routes!(restore_customer))
        .routes(routes!(
            put_subscription,
            get_subscription,
            patch_subscription
        ))
        .routes(routes!(put_override, delete_override))
        .routes(routes!(create_grant, list_grants))
        .routes(routes!(void_grant))
        .routes(routes!(draw_emergency))
        .routes(routes!(set_admin_bypass))
}

// ---- shapes ----------------------------------------------------------------------

/// A subscription's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Trialing,
    Active,
    PastDue,
    Canceled,
}

impl From<Status> for SubscriptionStatus {
    fn from(s: Status) -> SubscriptionStatus {
        match s {
            Status::Trialing => SubscriptionStatus::Trialing,
            Status::Active => SubscriptionStatus::Active,
            Status::PastDue => SubscriptionStatus::PastDue,
            Status::Canceled => SubscriptionStatus::Canceled,
        }
    }
}

impl From<SubscriptionStatus> for Status {
    fn from(s: SubscriptionStatus) -> Status {
        match s {
            SubscriptionStatus::Trialing => Status::Trialing,
            SubscriptionStatus::Active => Status::Active,
            SubscriptionStatus::PastDue => Status::PastDue,
            SubscriptionStatus::Canceled => Status::Canceled,
        }
    }
}

/// A customer's subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub customer_id: String,
    pub plan: String,
    pub plan_version: u32,
    pub status: Status,
    /// Billing periods are computed from this instant (or the calendar).
    pub anchor: Timestamp,
    pub trial_ends_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<SubscriptionRecord> for SubscriptionOut {
    fn from(s: SubscriptionRecord) -> SubscriptionOut {
        SubscriptionOut {
            customer_id: s.customer_id,
            plan: s.plan_key,
            plan_version: s.plan_version,
            status: s.status.into(),
            anchor: s.anchor,
            trial_ends_at: s.trial_ends_at,
            canceled_at: s.canceled_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerOut {
    /// The host application's id.
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// ISO-4217.
    pub currency: String,
    /// IANA time zone; usage periods are computed in it.
    pub time_zone: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    /// Limits lifted (usage still recorded).
    pub admin_bypass: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Set when soft-deleted: the customer is refused; its usage stays.
    pub deleted_at: Option<Timestamp>,
    pub subscription: Option<SubscriptionOut>,
}

fn customer_out(state: &AppState, c: CustomerRecord) -> CustomerOut {
    let subscription = state
        .engine
        .subscription(&c.id)
        .ok()
        .flatten()
        .map(SubscriptionOut::from);
    CustomerOut {
        id: c.id,
        name: c.name,
        email: c.email,
        currency: c.currency,
        time_zone: c.time_zone,
        metadata: c.metadata,
        admin_bypass: c.admin_bypass,
        created_at: c.created_at,
        updated_at: c.updated_at,
        deleted_at: c.deleted_at,
        subscription,
    }
}

/// A page of customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerList {
    pub data: Vec<CustomerOut>,
    pub has_more: bool,
}

/// A grant of extra units.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantOut {
    /// `grt_…`
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    /// `top_up`, `promotional` or `emergency`.
    pub kind: String,
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// What is left of it now.
    #[schema(value_type = String)]
    pub remaining: Decimal,
    /// Lower numbers burn first.
    pub priority: i32,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub created_at: Timestamp,
}

fn grant_out(g: GrantRecord, remaining: Decimal) -> GrantOut {
    GrantOut {
        id: g.id,
        customer_id: g.customer_id,
        feature: g.feature,
        kind: g.kind,
        quantity: g.quantity.normalize(),
        remaining: remaining.normalize(),
        priority: g.priority,
        effective_at: g.effective_at,
        expires_at: g.expires_at,
        voided_at: g.voided_at,
        metadata: g.metadata,
        created_at: g.created_at,
    }
}

/// A customer's grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    pub data: Vec<GrantOut>,
    pub has_more: bool,
}

/// A per-customer override of one feature's entitlement.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverrideOut {
    pub customer_id: String,
    pub feature: String,
    /// The entitlement in force for this customer, in the catalog's JSON form
    /// (`{"kind": "metered", "limit": "5000", "enforcement": "hard", …}`).
    #[schema(value_type = Object)]
    pub entitlement: Json_,
}

// ---- helpers -----------------------------------------------------------------------

/// `Option<Option<T>>` from a field: absent → `None`, `null` → `Some(None)`.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn check_time_zone(field: &str, tz: &str, errors: &mut Vec<FieldError>) {
    if jiff::tz::TimeZone::get(tz).is_err() {
        errors.push(FieldError::new(
            field,
            format!("{tz:?} is not an IANA time zone such as \"Europe/Paris\" or \"UTC\""),
        ));
    }
}

fn check_currency(field: &str, c: &str, errors: &mut Vec<FieldError>) {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(FieldError::new(
            field,
            format!("{c:?} is not an ISO-4217 code such as \"USD\""),
        ));
    }
}

fn check_text(field: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            format!("at most {max} characters, without control characters"),
        ));
    }
}

fn check_email(field: &str, v: &str, errors: &mut Vec<FieldError>) {
    let ok = v.len() <= 320
        && v.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        errors.push(FieldError::new(
            field,
            format!("{v:?} is not an e-mail address"),
        ));
    }
}

fn check_metadata(v: &Json_, errors: &mut Vec<FieldError>) {
    if !v.is_object() {
        errors.push(FieldError::new(
            "metadata",
            "must be a JSON object of your own keys and values",
        ));
    } else if serde_json::to_vec(v).map_or(0, |b| b.len()) > 16 * 1024 {
        errors.push(FieldError::new("metadata", "at most 16 KiB of JSON"));
    }
}

fn fail_if(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The customer as the engine holds it, refusing one that does not exist.
fn existing(state: &AppState, id: &str) -> Result<CustomerRecord, ApiError> {
    state.engine.customer(id).ok_or_else(|| ApiError::NotFound {
        what: "customer",
        id: id.to_string(),
    })
}

/// The customer, refusing a deleted one (changes need a live customer).
fn live(state: &AppState, id: &str) -> Result<CustomerRecord, ApiError> {
    let c = existing(state, id)?;
    if c.deleted_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "customer {id:?} is deleted; restore it first (POST /v1/customers/{id}/restore)"
        )));
    }
    Ok(c)
}

fn check_plan(state: &AppState, field: &str, plan: &str, version: Option<u32>) -> Vec<FieldError> {
    let versions = state.engine.plan_versions(plan);
    if versions.is_empty() {
        let catalog = state.engine.catalog();
        let known: Vec<&str> = catalog.plans.iter().map(|p| p.key.as_str()).collect();
        return vec![FieldError::new(
            field,
            format!("unknown plan {plan:?}; plans: {}", known.join(", ")),
        )];
    }
    match version {
        Some(v) if !versions.contains(&v) => vec![FieldError::new(
            "version",
            format!("plan {plan:?} has no published version {v}"),
        )],
        _ => Vec::new(),
    }
}

/// What a subscription request asks for.
#[derive(Debug, Default)]
struct Ask {
    status: Option<Status>,
    anchor: Option<Timestamp>,
    trial_days: Option<u32>,
    trial_ends_at: Option<Timestamp>,
    version: Option<u32>,
}

/// The engine's options for a subscription request, checked.
fn subscribe_options(now: Timestamp, ask: Ask, errors: &mut Vec<FieldError>) -> SubscribeOptions {
    let Ask {
        status,
        anchor,
        trial_days,
        trial_ends_at,
        version,
    } = ask;
    let mut trial_end = trial_ends_at;
    if let Some(days) = trial_days {
        if trial_ends_at.is_some() {
            errors.push(FieldError::new(
                "trial_days",
                "give trial_days or trial_ends_at, not both",
            ));
        } else if days == 0 || days > 3650 {
            errors.push(FieldError::new("trial_days", "between 1 and 3650"));
        } else {
            trial_end = anchor
                .unwrap_or(now)
                .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
                .ok();
        }
    }
    if trial_end.is_some() && matches!(status, Some(s) if s != Status::Trialing) {
        errors.push(FieldError::new(
            "status",
            "a trial needs status \"trialing\" (or no status)",
        ));
    }
    if let (Some(end), Some(a)) = (trial_end, anchor) {
        if end <= a {
            errors.push(FieldError::new(
                "trial_ends_at",
                "the trial must end after the anchor",
            ));
        }
    }
    SubscribeOptions {
        status: match (status, trial_end) {
            (Some(s), _) => Some(s.into()),
            (None, Some(_)) => Some(SubscriptionStatus::Trialing),
            (None, None) => None,
        },
        anchor,
        trial_ends_at: trial_end,
        version,
    }
}

// ---- customers ---------------------------------------------------------------------

/// A new customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomerIn {
    /// The host application's own id (1–255 bytes).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// ISO-4217; default `USD`.
    #[serde(default)]
    pub currency: Option<String>,
    /// IANA time zone; default `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Your own keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    /// Subscribe at once to this plan (latest version).
    #[serde(default)]
    pub plan: Option<String>,
    /// With `plan`: a trial of this many days (default: the plan's own).
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// With `plan`: the subscription's status (default `trialing` when the
    /// plan has a trial, else `active`).
    #[serde(default)]
    pub status: Option<Status>,
}

/// Creates a customer (and subscribes it when `plan` is given).
#[utoipa::path(
    post,
    path = "/v1/customers",
    tag = "customers",
    request_body = NewCustomerIn,
    responses(
        (status = 201, description = "The new customer", body = CustomerOut),
        (status = 409, description = "A customer with this id exists (deleted or not)", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn create_customer(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewCustomerIn>,
) -> Result<(StatusCode, Json<CustomerOut>), ApiError> {
    principal.require_server()?;
    let mut errors = Vec::new();
    if body.id.is_empty() || body.id.len() > 255 || body.id.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "id",
            "a customer id is 1 to 255 bytes without control characters",
        ));
    }
    if let Some(n) = &body.name {
        check_text("name", n, 500, &mut errors);
    }
    if let Some(e) = &body.email {
        check_email("email", e, &mut errors);
    }
    if let Some(c) = &body.currency {
        check_currency("currency", c, &mut errors);
    }
    if let Some(tz) = &body.time_zone {
        check_time_zone("time_zone", tz, &mut errors);
    }
    if let Some(m) = &body.metadata {
        check_metadata(m, &mut errors);
    }
    let now = state.engine.now();
    let opts = match &body.plan {
        Some(plan) => {
            errors.extend(check_plan(&state, "plan", plan, None));
            Some(subscribe_options(
                now,
                Ask {
                    status: body.status,
                    trial_days: body.trial_days,
                    ..Ask::default()
                },
                &mut errors,
            ))
        }
        None => {
            if body.trial_days.is_some() {
                errors.push(FieldError::new("trial_days", "a trial needs a plan"));
            }
            if body.status.is_some() {
                errors.push(FieldError::new("status", "a status needs a plan"));
            }
            None
        }
    };
    fail_if(errors)?;
    if state.engine.customer(&body.id).is_some() {
        return Err(ApiError::Conflict(format!(
            "customer {:?} already exists",
            body.id
        )));
    }
    let record = state
        .engine
        .create_customer(NewCustomer {
            id: body.id.clone(),
            name: body.name,
            email: body.email,
            currency: body.currency,
            time_zone: body.time_zone,
            metadata: body.metadata.unwrap_or(Json_::Null),
        })
        .await?;
    if let (Some(plan), Some(opts)) = (body.plan, opts) {
        state
            .billing
            .subscribe(&record.id, &plan, opts, &principal.key.id, None)
            .await?;
    }
    Ok((StatusCode::CREATED, Json(customer_out(&state, record))))
}

/// Filters and paging of the customer list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerListQuery {
    /// Only customers subscribed to this plan.
    pub plan: Option<String>,
    /// Include soft-deleted customers (default false).
    #[serde(default)]
    pub include_deleted: bool,
    /// At most this many (1–100, default 20).
    pub limit: Option<u32>,
    /// The id of the last customer of the previous page.
    pub starting_after: Option<String>,
}

/// Lists customers by id.
#[utoipa::path(
    get,
    path = "/v1/customers",
    tag = "customers",
    params(CustomerListQuery),
    responses(
        (status = 200, description = "A page of customers, by id", body = CustomerList),
        (status = 422, description = "Invalid parameter", content_type = "application/problem+json")
    )
)]
pub async fn list_customers(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<CustomerListQuery>,
) -> Result<Json<CustomerList>, ApiError> {
    principal.require_server()?;
    let limit = page_limit(q.limit, 20)?;
    if let Some(plan) = &q.plan {
        if state.engine.catalog().plan(plan).is_none()
            && state.engine.plan_versions(plan).is_empty()
        {
            return Err(ApiError::field("plan", format!("unknown plan {plan:?}")));
        }
    }
    let filter = CustomerFilter {
        plan_key: q.plan,
        include_deleted: q.include_deleted,
        starting_after: q.starting_after,
        limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
    };
    let mut rows = state.store.list_customers(&filter).await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let data = rows
        .into_iter()
        .map(|r| {
            // The engine's copy is the freshest (it writes the store first).
            let c = state.engine.customer(&r.id).unwrap_or(r);
            customer_out(&state, c)
        })
        .collect();
    Ok(Json(CustomerList { data, has_more }))
}

/// A customer (deleted ones included, with `deleted_at`).
#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The customer", body = CustomerOut),
        (status = 404, description = "No such customer (or not yours)", content_type = "application/problem+json")
    )
)]
pub async fn get_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<CustomerOut>, ApiError> {
    principal.require_read(&id)?;
    let c = existing(&state, &id)?;
    Ok(Json(customer_out(&state, c)))
}

/// Changes to a customer: fields left out stay; `null` clears `name` or `email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default)]
    pub currency: Option<String>,
    /// Changing it moves the usage windows (counters are recounted).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Replaces the metadata whole.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
}

/// Changes a customer's fields.
#[utoipa::path(
    patch,
    path = "/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = CustomerPatch,
    responses(
        (status = 200, description = "The customer", body = CustomerOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "The customer is deleted", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn update_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CustomerPatch>,
) -> Result<Json<CustomerOut>, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let mut errors = Vec::new();
    if let Some(Some(n)) = &body.name {
        check_text("name", n, 500, &mut errors);
    }
    if let Some(Some(e)) = &body.email {
        check_email("email", e, &mut errors);
    }
    if let Some(c) = &body.currency {
        check_currency("currency", c, &mut errors);
    }
    if let Some(tz) = &body.time_zone {
        check_time_zone("time_zone", tz, &mut errors);
    }
    if let Some(m) = &body.metadata {
        check_metadata(m, &mut errors);
    }
    fail_if(errors)?;
    let record = state
        .engine
        .update_customer(
            &id,
            CustomerUpdate {
                name: body.name,
                email: body.email,
                currency: body.currency,
                time_zone: body.time_zone,
                metadata: body.metadata,
                admin_bypass: None,
            },
        )
        .await?;
    Ok(Json(customer_out(&state, record)))
}

/// Soft-deletes a customer: refused from now on, its usage and history stay.
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The deleted customer", body = CustomerOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "Already deleted", content_type = "application/problem+json")
    )
)]
pub async fn delete_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<CustomerOut>, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let record = state.engine.delete_customer(&id).await?;
    Ok(Json(customer_out(&state, record)))
}

/// Undoes a soft delete.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/restore",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The restored customer", body = CustomerOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "The customer is not deleted", content_type = "application/problem+json")
    )
)]
pub async fn restore_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<CustomerOut>, ApiError> {
    principal.require_server()?;
    existing(&state, &id)?;
    let record = state.engine.restore_customer(&id).await?;
    Ok(Json(customer_out(&state, record)))
}

// ---- subscription ------------------------------------------------------------------

/// Subscribes the customer to a plan, or replaces its plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIn {
    pub plan: String,
    /// Default: `trialing` with a trial, else `active`.
    #[serde(default)]
    pub status: Option<Status>,
    /// Billing period anchor; default now.
    #[serde(default)]
    pub anchor: Option<Timestamp>,
    /// A trial of this many days from the anchor (default: the plan's own).
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// Or the trial's end.
    #[serde(default)]
    pub trial_ends_at: Option<Timestamp>,
    /// Pin a published version (default: the latest).
    #[serde(default)]
    pub version: Option<u32>,
}

/// Subscribes a customer, or changes its plan (counters are recounted for the
/// new windows).
#[utoipa::path(
    put,
    path = "/v1/customers/{id}/subscription",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = SubscriptionIn,
    responses(
        (status = 200, description = "The subscription", body = SubscriptionOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "The customer is deleted", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (unknown plan, …)", content_type = "application/problem+json")
    )
)]
pub async fn put_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SubscriptionIn>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let mut errors = check_plan(&state, "plan", &body.plan, body.version);
    let opts = subscribe_options(
        state.engine.now(),
        Ask {
            status: body.status,
            anchor: body.anchor,
            trial_days: body.trial_days,
            trial_ends_at: body.trial_ends_at,
            version: body.version,
        },
        &mut errors,
    );
    fail_if(errors)?;
    // Through billing, so the plan-change history records it.
    let sub = state
        .billing
        .subscribe(&id, &body.plan, opts, &principal.key.id, None)
        .await?;
    Ok(Json(sub.into()))
}

/// A change of status only.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    pub status: Status,
}

/// Changes the subscription's status (e.g. `past_due`, `canceled`, `active`).
#[utoipa::path(
    patch,
    path = "/v1/customers/{id}/subscription",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = SubscriptionPatch,
    responses(
        (status = 200, description = "The subscription", body = SubscriptionOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "No subscription, or the customer is deleted", content_type = "application/problem+json")
    )
)]
pub async fn patch_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SubscriptionPatch>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    // Through billing: a cancellation or reactivation enters the history.
    let sub = state
        .billing
        .set_subscription_status(&id, body.status.into(), &principal.key.id)
        .await?;
    Ok(Json(sub.into()))
}

/// The customer's subscription.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/subscription",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionOut),
        (status = 404, description = "No such customer, or no subscription", content_type = "application/problem+json")
    )
)]
pub async fn get_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    principal.require_read(&id)?;
    existing(&state, &id)?;
    let sub = state
        .engine
        .subscription(&id)?
        .ok_or_else(|| ApiError::NotFound {
            what: "subscription",
            id: id.clone(),
        })?;
    Ok(Json(sub.into()))
}

// ---- overrides ---------------------------------------------------------------------

/// Reads an override body against its feature. Accepts the catalog's forms:
/// the shorthand (`5000`, `"unlimited"`, `true`, `["txt", "srt"]`) or an
/// object (`{"limit": 5000, "enforcement": "soft"}`, `{"enabled": true}`,
/// `{"value": 30}`), with `kind` optional (it must match the feature's).
pub fn entitlement_from_json(feature: &Feature, body: Json_) -> Result<Entitlement, ApiError> {
    use serde_json::Map;
    let kind = feature.kind.name();
    let (limit_key, keys): (&str, &[&str]) = match &feature.kind {
        FeatureKind::Metered { .. } => (
            "limit",
            &[
                "kind",
                "limit",
                "enforcement",
                "overage",
                "reset",
                "emergency_allowance",
                "emergency_unit_price",
                "alert_thresholds",
            ],
        ),
        FeatureKind::Gauge => (
            "limit",
            &["kind", "limit", "enforcement", "alert_thresholds"],
        ),
        FeatureKind::Rate { .. } => ("limit", &["kind", "limit", "window_secs"]),
        FeatureKind::Concurrency { .. } => ("limit", &["kind", "limit"]),
        FeatureKind::Cap => ("max", &["kind", "max"]),
        FeatureKind::Flag => ("enabled", &["kind", "enabled"]),
        FeatureKind::Value { .. } => ("value", &["kind", "value"]),
    };
    let mut obj: Map<String, Json_> = match body {
        Json_::Object(o) => o,
        other => {
            let mut o = Map::new();
            o.insert(limit_key.to_string(), other);
            o
        }
    };
    let mut errors = Vec::new();
    for k in obj.keys() {
        if !keys.contains(&k.as_str()) {
            errors.push(FieldError::new(
                k.clone(),
                format!(
                    "unknown field for a {kind} override; expected one of: {}",
                    keys.join(", ")
                ),
            ));
        }
    }
    match obj.get("kind") {
        None => {}
        Some(Json_::String(k)) if k == kind => {}
        Some(other) => errors.push(FieldError::new(
            "kind",
            format!("feature {:?} is a {kind} feature, not {other}", feature.key),
        )),
    }
    if !obj.contains_key(limit_key) {
        errors.push(FieldError::new(
            limit_key,
            format!("a {kind} override states its {limit_key}"),
        ));
    }
    fail_if(std::mem::take(&mut errors))?;
    obj.insert("kind".into(), Json_::String(kind.into()));
    // Limits and decimals: JSON integers or strings (a fraction must be a
    // string, so it is never read through a float).
    for key in [
        "limit",
        "max",
        "emergency_allowance",
        "emergency_unit_price",
    ] {
        if let Some(v) = obj.get_mut(key) {
            match v {
                Json_::Number(n) if n.is_i64() || n.is_u64() => {
                    *v = Json_::String(n.to_string());
                }
                Json_::Number(n) => errors.push(FieldError::new(
                    key,
                    format!("write a fractional number as a string, e.g. \"{n}\""),
                )),
                _ => {}
            }
        }
    }
    if matches!(
        feature.kind,
        FeatureKind::Metered { .. } | FeatureKind::Gauge
    ) {
        obj.entry("enforcement")
            .or_insert_with(|| Json_::String("hard".into()));
    }
    if matches!(feature.kind, FeatureKind::Metered { .. }) {
        obj.entry("overage").or_insert(Json_::Bool(false));
    }
    if let FeatureKind::Value {
        value_type,
        allowed,
    } = &feature.kind
    {
        if let Some(v) = obj.get_mut("value") {
            let typed = v.as_object().is_some_and(|o| o.contains_key("type"));
            if !typed {
                let inner = std::mem::take(v);
                *v = value_json(*value_type, inner, &mut errors);
            }
            check_value(*value_type, allowed.as_ref(), v, &mut errors);
        }
    }
    fail_if(errors)?;
    obj.remove("kind");
    // Each kind's fields are read directly (not through the tagged enum), so
    // an error names the field at fault.
    fn read<T: serde::de::DeserializeOwned>(obj: Map<String, Json_>) -> Result<T, ApiError> {
        serde_path_to_error::deserialize::<_, T>(Json_::Object(obj)).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "entitlement".to_string()
            } else if path.starts_with("value.") {
                // The catalog form nests a value's content: {"value": {"type", "value"}}.
                "value".to_string()
            } else {
                path
            };
            ApiError::field(field, e.into_inner().to_string())
        })
    }
    #[derive(Deserialize)]
    struct LimitOnly {
        limit: Limit,
    }
    #[derive(Deserialize)]
    struct MaxOnly {
        max: Limit,
    }
    #[derive(Deserialize)]
    struct Enabled {
        enabled: bool,
    }
    #[derive(Deserialize)]
    struct ValueOnly {
        value: CatalogValue,
    }
    Ok(match &feature.kind {
        FeatureKind::Metered { .. } => Entitlement::Metered(read(obj)?),
        FeatureKind::Gauge => Entitlement::Gauge(read(obj)?),
        FeatureKind::Rate { .. } => Entitlement::Rate(read(obj)?),
        FeatureKind::Concurrency { .. } => Entitlement::Concurrency {
            limit: read::<LimitOnly>(obj)?.limit,
        },
        FeatureKind::Cap => Entitlement::Cap {
            max: read::<MaxOnly>(obj)?.max,
        },
        FeatureKind::Flag => Entitlement::Flag {
            enabled: read::<Enabled>(obj)?.enabled,
        },
        FeatureKind::Value { .. } => Entitlement::Value {
            value: read::<ValueOnly>(obj)?.value,
        },
    })
}

/// A plain JSON value as the catalog's `{"type": …, "value": …}` form.
fn value_json(t: ValueType, v: Json_, errors: &mut Vec<FieldError>) -> Json_ {
    let v = match (t, v) {
        (ValueType::Integer | ValueType::Decimal, Json_::String(s)) if s == "unlimited" => {
            return serde_json::json!({"type": "unlimited"});
        }
        (ValueType::Decimal, Json_::Number(n)) if n.is_i64() || n.is_u64() => {
            Json_::String(n.to_string())
        }
        (ValueType::Decimal, Json_::Number(n)) => {
            errors.push(FieldError::new(
                "value",
                format!("write a fractional number as a string, e.g. \"{n}\""),
            ));
            return Json_::Null;
        }
        (_, v) => v,
    };
    serde_json::json!({"type": t.name(), "value": v})
}

fn check_value(
    t: ValueType,
    allowed: Option<&BTreeSet<String>>,
    v: &Json_,
    errors: &mut Vec<FieldError>,
) {
    let given = v["type"].as_str().unwrap_or_default();
    let fits = given == t.name()
        || (given == "unlimited" && matches!(t, ValueType::Integer | ValueType::Decimal));
    if !fits {
        errors.push(FieldError::new(
            "value",
            format!(
                "this feature's values are of type {}, not {given}",
                t.name()
            ),
        ));
        return;
    }
    if let Some(allowed) = allowed {
        let items: Vec<&str> = match &v["value"] {
            Json_::String(s) => vec![s.as_str()],
            Json_::Array(a) => a.iter().filter_map(Json_::as_str).collect(),
            _ => Vec::new(),
        };
        for item in items {
            if !allowed.contains(item) {
                errors.push(FieldError::new(
                    "value",
                    format!(
                        "{item:?} is not an allowed value; allowed: {}",
                        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
}

/// Overrides one feature's entitlement for this customer (replacing the
/// plan's). The body is the entitlement in the catalog's form, checked
/// against the feature's kind: `5000`, `{"limit": 5000, "enforcement":
/// "soft"}`, `"unlimited"`, `true`, `{"value": ["txt", "srt"]}`, …
#[utoipa::path(
    put,
    path = "/v1/customers/{id}/overrides/{feature}",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("feature" = String, Path, description = "The feature's key")
    ),
    request_body(content = Object, description = "The entitlement in the catalog's form"),
    responses(
        (status = 200, description = "The override in force", body = OverrideOut),
        (status = 404, description = "No such customer or feature", content_type = "application/problem+json"),
        (status = 422, description = "The entitlement does not fit the feature", content_type = "application/problem+json")
    )
)]
pub async fn put_override(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, feature)): Path<(String, String)>,
    ApiJson(body): ApiJson<Json_>,
) -> Result<Json<OverrideOut>, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let def = state
        .engine
        .catalog()
        .feature(&feature)
        .ok_or_else(|| ApiError::NotFound {
            what: "feature",
            id: feature.clone(),
        })?
        .clone();
    let ent = entitlement_from_json(&def, body)?;
    state.engine.set_override(&id, &feature, &ent).await?;
    Ok(Json(OverrideOut {
        customer_id: id,
        feature,
        entitlement: serde_json::to_value(&ent).unwrap_or_default(),
    }))
}

/// Removes an override: the plan's entitlement applies again.
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}/overrides/{feature}",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("feature" = String, Path, description = "The feature's key")
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such customer, feature or override", content_type = "application/problem+json")
    )
)]
pub async fn delete_override(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, feature)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    if state.engine.catalog().feature(&feature).is_none() {
        return Err(ApiError::NotFound {
            what: "feature",
            id: feature,
        });
    }
    if state.engine.remove_override(&id, &feature).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "override",
            id: format!("{id}/{feature}"),
        })
    }
}

// ---- grants ------------------------------------------------------------------------

/// The kind of a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// Bought extra units.
    #[default]
    TopUp,
    /// Given for free.
    Promotional,
    /// An emergency pool.
    Emergency,
}

impl GrantKind {
    fn as_str(self) -> &'static str {
        match self {
            GrantKind::TopUp => "top_up",
            GrantKind::Promotional => "promotional",
            GrantKind::Emergency => "emergency",
        }
    }
}

/// A new grant of extra units of a metered feature.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrantIn {
    pub feature: String,
    /// Default `top_up`.
    #[serde(default)]
    pub kind: GrantKind,
    /// Units granted (> 0): a number or a decimal string.
    pub quantity: Quantity,
    /// Lower numbers burn first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Default now.
    #[serde(default)]
    pub effective_at: Option<Timestamp>,
    /// Default never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
}

/// Grants extra units (top-up, promotional credit, emergency pool).
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/grants",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = NewGrantIn,
    responses(
        (status = 201, description = "The grant", body = GrantOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn create_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewGrantIn>,
) -> Result<(StatusCode, Json<GrantOut>), ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let mut errors = Vec::new();
    match state.engine.catalog().feature(&body.feature) {
        None => errors.push(FieldError::new(
            "feature",
            format!("unknown feature {:?}", body.feature),
        )),
        Some(f) if !matches!(f.kind, FeatureKind::Metered { .. }) => errors.push(FieldError::new(
            "feature",
            format!(
                "grants are for metered features; {:?} is a {} feature",
                body.feature,
                f.kind.name()
            ),
        )),
        Some(_) => {}
    }
    if body.quantity.0 <= Decimal::ZERO {
        errors.push(FieldError::new("quantity", "must be greater than zero"));
    }
    let effective = body.effective_at.unwrap_or_else(|| state.engine.now());
    if body.expires_at.is_some_and(|e| e <= effective) {
        errors.push(FieldError::new(
            "expires_at",
            "a grant must expire after it takes effect",
        ));
    }
    if let Some(m) = &body.metadata {
        check_metadata(m, &mut errors);
    }
    fail_if(errors)?;
    let record = state
        .engine
        .add_grant(NewGrant {
            customer: id,
            feature: body.feature,
            kind: body.kind.as_str().to_string(),
            quantity: body.quantity.0,
            priority: body.priority,
            effective_at: body.effective_at,
            expires_at: body.expires_at,
            metadata: body.metadata.unwrap_or(Json_::Null),
        })
        .await?;
    let quantity = record.quantity;
    Ok((StatusCode::CREATED, Json(grant_out(record, quantity))))
}

/// The customer's grants (voided and expired ones included), with what each
/// has left.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/grants",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The grants, in burn order", body = GrantList),
        (status = 404, description = "No such customer (or not yours)", content_type = "application/problem+json")
    )
)]
pub async fn list_grants(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<GrantList>, ApiError> {
    principal.require_read(&id)?;
    existing(&state, &id)?;
    let data = state
        .engine
        .grants(&id)?
        .into_iter()
        .map(|(g, left)| grant_out(g, left))
        .collect();
    Ok(Json(GrantList {
        data,
        has_more: false,
    }))
}

/// Voids a grant now (what it already gave stays counted).
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}/grants/{grant_id}",
    tag = "customers",
    params(
        ("id" = String, Path, description = "The customer's id"),
        ("grant_id" = String, Path, description = "The grant's id (`grt_…`)")
    ),
    responses(
        (status = 204, description = "Voided"),
        (status = 404, description = "No such customer or grant (or already voided)", content_type = "application/problem+json")
    )
)]
pub async fn void_grant(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, grant_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require_server()?;
    existing(&state, &id)?;
    state.engine.void_grant(&id, &grant_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which feature's emergency allowance to draw.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyIn {
    pub feature: String,
}

/// Draws the plan's emergency allowance of a metered feature: a grant that
/// expires at the end of the current usage window. Once per window.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/emergency-pool",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = EmergencyIn,
    responses(
        (status = 201, description = "The emergency grant", body = GrantOut),
        (status = 404, description = "No such customer", content_type = "application/problem+json"),
        (status = 409, description = "No emergency allowance on the plan, or already drawn in this window", content_type = "application/problem+json"),
        (status = 422, description = "Unknown or non-metered feature", content_type = "application/problem+json")
    )
)]
pub async fn draw_emergency(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EmergencyIn>,
) -> Result<(StatusCode, Json<GrantOut>), ApiError> {
    principal.require_server()?;
    live(&state, &id)?;
    let record = state.engine.draw_emergency(&id, &body.feature).await?;
    let quantity = record.quantity;
    Ok((StatusCode::CREATED, Json(grant_out(record, quantity))))
}

// ---- admin bypass ------------------------------------------------------------------

/// Lift or restore every limit of the customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BypassIn {
    pub enabled: bool,
}

/// Sets the admin bypass: every limit is lifted while on (usage is still
/// recorded and billed). Admin keys only.
#[utoipa::path(
    put,
    path = "/v1/customers/{id}/admin-bypass",
    tag = "customers",
    params(("id" = String, Path, description = "The customer's id")),
    request_body = BypassIn,
    responses(
        (status = 200, description = "The customer", body = CustomerOut),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 404, description = "No such customer", content_type = "application/problem+json")
    )
)]
pub async fn set_admin_bypass(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BypassIn>,
) -> Result<Json<CustomerOut>, ApiError> {
    principal.require_admin()?;
    live(&state, &id)?;
    let record = state.engine.set_admin_bypass(&id, body.enabled).await?;
    Ok(Json(customer_out(&state, record)))
}
