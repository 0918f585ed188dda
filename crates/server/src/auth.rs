//! API keys, scopes and the [`Principal`] extractor.
//!
//! Keys are random, shown once, and stored only as SHA-256 digests. Each key has a
//! scope:
//! - `admin`: everything;
//! - `server`: the host application's backend: check/consume/ingest for any
//!   customer, read plans;
//! - `customer`: read-only access to one customer's entitlements, usage and
//!   invoices (a customer portal or a browser).
//!
//! Every handler takes a [`Principal`] and calls one of its `require_*` methods
//! before touching data, so a route's access rule is visible in its first line.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Admin,
    Server,
    Customer,
}

/// A key as the server remembers it (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// The one customer a `customer` key may read.
    pub customer_id: Option<String>,
    /// Hex SHA-256 of the secret.
    pub digest: String,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub revoked: bool,
}

/// The keys in force, by digest.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_digest: RwLock<HashMap<String, ApiKey>>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> KeyRing {
        let ring = KeyRing::default();
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    pub fn insert(&self, key: ApiKey) {
        self.by_digest.write().insert(key.digest.clone(), key);
    }

    /// The key whose secret has this digest, if it is in force.
    pub fn find(&self, digest: &str) -> Option<ApiKey> {
        self.by_digest
            .read()
            .get(digest)
            .filter(|k| !k.revoked)
            .cloned()
    }

    /// Marks a key revoked; returns whether it was known.
    pub fn revoke(&self, id: &str) -> bool {
        let mut keys = self.by_digest.write();
        let mut found = false;
        for k in keys.values_mut().filter(|k| k.id == id) {
            k.revoked = true;
            found = true;
        }
        found
    }
}

/// The caller of a request: the key it presented.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key: ApiKey,
}

impl Principal {
    pub fn scope(&self) -> Scope {
        self.key.scope
    }

    /// Admin routes.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.key.scope {
            Scope::Admin => Ok(()),
            _ => Err(ApiError::Forbidden("use admin routes".into())),
        }
    }

    /// Enforcement and ingestion for any customer: admin or server keys.
    pub fn require_server(&self) -> Result<(), ApiError> {
        match self.key.scope {
            Scope::Admin | Scope::Server => Ok(()),
            Scope::Customer => Err(ApiError::Forbidden(
                "record usage or change state (customer keys are read-only)".into(),
            )),
        }
    }

    /// Reading one customer's data: admin and server keys read any customer; a
    /// customer key only its own. A customer key asking for another customer gets
    /// the same 404 as for a customer that does not exist, so ids cannot be probed.
    pub fn require_read(&self, customer_id: &str) -> Result<(), ApiError> {
        match (&self.key.scope, &self.key.customer_id) {
            (Scope::Admin | Scope::Server, _) => Ok(()),
            (Scope::Customer, Some(own)) if own == customer_id => Ok(()),
            (Scope::Customer, _) => Err(ApiError::NotFound {
                what: "customer",
                id: customer_id.to_string(),
            }),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let secret = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        let key = state
            .keys
            .find(&digest(secret))
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Principal { key })
    }
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
