//! API keys (admin only):
//! - `POST /v1/keys`: mint a key; its secret is in this answer and nowhere else;
//! - `GET /v1/keys`: list keys (never a secret or a digest);
//! - `DELETE /v1/keys/{id}`: revoke a key, refused from the next request on.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ApiKey, Principal, Scope, create_key};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
}

/// A key's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Everything.
    Admin,
    /// The host application's backend: enforcement, ingestion, customers.
    Server,
    /// Read-only access to one customer.
    Customer,
}

impl From<KeyScope> for Scope {
    fn from(s: KeyScope) -> Scope {
        match s {
            KeyScope::Admin => Scope::Admin,
            KeyScope::Server => Scope::Server,
            KeyScope::Customer => Scope::Customer,
        }
    }
}

impl From<Scope> for KeyScope {
    fn from(s: Scope) -> KeyScope {
        match s {
            Scope::Admin => KeyScope::Admin,
            Scope::Server => KeyScope::Server,
            Scope::Customer => KeyScope::Customer,
        }
    }
}

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What the key is for ("billing backend", "portal for acme").
    pub name: String,
    pub scope: KeyScope,
    /// Required for (and only for) `customer` keys: the customer it may read.
    #[serde(default)]
    pub customer_id: Option<String>,
}

/// A key as listed: never its secret or digest.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyOut {
    /// `key_…`
    pub id: String,
    pub name: String,
    pub scope: KeyScope,
    pub customer_id: Option<String>,
    /// The secret's first characters, to recognise it.
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl From<ApiKey> for KeyOut {
    fn from(k: ApiKey) -> KeyOut {
        KeyOut {
            id: k.id,
            name: k.name,
            scope: k.scope.into(),
            customer_id: k.customer_id,
            prefix: k.prefix,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A newly minted key with its secret (shown only in this answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyOut,
    /// `tg_…`: send it as `Authorization: Bearer tg_…`. Stored only as a
    /// digest: it cannot be shown again.
    pub secret: String,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyOut>,
    pub has_more: bool,
}

/// Paging of lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// At most this many (1–100, default 100).
    pub limit: Option<u32>,
    /// The id of the last key of the previous page.
    pub starting_after: Option<String>,
    /// Include revoked keys (default false).
    #[serde(default)]
    pub include_revoked: bool,
}

/// Mints an API key.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, with its secret (shown once)", body = CreatedKey),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", content_type = "application/problem+json")
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    principal.require_admin()?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            "a key's name is 1 to 200 characters without control characters",
        ));
    }
    let scope: Scope = body.scope.into();
    let customer = match (scope, body.customer_id) {
        (Scope::Customer, Some(id)) => {
            match state.engine.customer(&id) {
                Some(c) if c.deleted_at.is_none() => {}
                _ => {
                    return Err(ApiError::field(
                        "customer_id",
                        format!("no customer {id:?}"),
                    ));
                }
            }
            Some(id)
        }
        (Scope::Customer, None) => {
            return Err(ApiError::field(
                "customer_id",
                "a customer key needs the customer it may read",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::field(
                "customer_id",
                "only customer keys belong to a customer",
            ));
        }
        (_, None) => None,
    };
    let minted = create_key(
        state.store.as_ref(),
        &state.keys,
        name,
        scope,
        customer,
        Timestamp::now(),
    )
    .await?;
    active_keys_gauge(&state);
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: minted.key.into(),
            secret: minted.secret,
        }),
    ))
}

/// Lists API keys (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(KeyListQuery),
    responses(
        (status = 200, description = "Keys by id", body = KeyList),
        (status = 403, description = "Not an admin key", content_type = "application/problem+json")
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    principal.require_admin()?;
    let limit = page_limit(q.limit, 100)?;
    let mut keys: Vec<ApiKey> = state
        .keys
        .list()
        .into_iter()
        .filter(|k| q.include_revoked || !k.revoked())
        .filter(|k| q.starting_after.as_ref().is_none_or(|after| k.id > *after))
        .take(limit + 1)
        .collect();
    let has_more = keys.len() > limit;
    keys.truncate(limit);
    Ok(Json(KeyList {
        data: keys.into_iter().map(KeyOut::from).collect(),
        has_more,
    }))
}

/// Revokes an API key: every request with it is refused (401) from now on.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The revoked key", body = KeyOut),
        (status = 404, description = "No such key", content_type = "application/problem+json"),
        (status = 409, description = "The last admin key in force cannot be revoked", content_type = "application/problem+json")
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<KeyOut>, ApiError> {
    principal.require_admin()?;
    let key = state.keys.get(&id).ok_or_else(|| ApiError::NotFound {
        what: "api key",
        id: id.clone(),
    })?;
    if key.revoked() {
        return Ok(Json(key.into()));
    }
    if key.scope == Scope::Admin {
        let admins = state
            .keys
            .list()
            .iter()
            .filter(|k| k.scope == Scope::Admin && !k.revoked())
            .count();
        if admins <= 1 {
            return Err(ApiError::Conflict(
                "this is the last admin key in force; mint another admin key first \
                 (or use `tollgate keys create` on the server)"
                    .into(),
            ));
        }
    }
    let now = Timestamp::now();
    state.store.revoke_api_key(&id, now).await?;
    state.keys.revoke(&id, now);
    active_keys_gauge(&state);
    let key = state.keys.get(&id).ok_or_else(|| ApiError::NotFound {
        what: "api key",
        id: id.clone(),
    })?;
    Ok(Json(key.into()))
}

fn active_keys_gauge(state: &AppState) {
    crate::metrics::active_keys(state.keys.list().iter().filter(|k| !k.revoked()).count());
}

/// A list's `limit`: default `default`, between 1 and 100.
pub fn page_limit(limit: Option<u32>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(n @ 1..=100) => Ok(n as usize),
        Some(n) => Err(ApiError::field(
            "limit",
            format!("{n} is out of range: 1 to 100"),
        )),
    }
}
