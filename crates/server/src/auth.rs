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
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jiff::Timestamp;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tollgate_store::{ApiKeyRecord, Store};

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

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Server => "server",
            Scope::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "admin" => Scope::Admin,
            "server" => Scope::Server,
            "customer" => Scope::Customer,
            _ => return None,
        })
    }
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
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The stored form.
    pub fn to_record(&self) -> ApiKeyRecord {
        ApiKeyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope.as_str().to_string(),
            customer_id: self.customer_id.clone(),
            digest: self.digest.clone(),
            prefix: self.prefix.clone(),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }

    /// Reads a stored key; `None` if its scope is not one this server knows.
    pub fn from_record(r: ApiKeyRecord) -> Option<ApiKey> {
        Some(ApiKey {
            scope: Scope::parse(&r.scope)?,
            id: r.id,
            name: r.name,
            customer_id: r.customer_id,
            digest: r.digest,
            prefix: r.prefix,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// A newly minted key and its secret (shown once, never stored).
#[derive(Clone, Debug)]
pub struct MintedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Every secret starts with this.
pub const SECRET_PREFIX: &str = "tg_";

/// Makes a new key: a random 192-bit secret `tg_…` (48 hex digits), its digest
/// and a random `key_…` id. Nothing is stored.
pub fn mint_key(
    name: &str,
    scope: Scope,
    customer_id: Option<String>,
    now: Timestamp,
) -> Result<MintedKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a key: {e}")))?;
    let secret = format!("{SECRET_PREFIX}{}", hex(&bytes[..24]));
    let id = format!("key_{}", hex(&bytes[24..]));
    let key = ApiKey {
        id,
        name: name.to_string(),
        scope,
        customer_id,
        digest: digest(&secret),
        prefix: secret.chars().take(SECRET_PREFIX.len() + 8).collect(),
        created_at: now,
        revoked_at: None,
    };
    Ok(MintedKey { key, secret })
}

/// Mints a key, stores it and puts it in force.
pub async fn create_key(
    store: &dyn Store,
    ring: &KeyRing,
    name: &str,
    scope: Scope,
    customer_id: Option<String>,
    now: Timestamp,
) -> Result<MintedKey, ApiError> {
    let minted = mint_key(name, scope, customer_id, now)?;
    store
        .insert_api_key(&minted.key.to_record())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    ring.insert(minted.key.clone());
    Ok(minted)
}

/// Lower-case hex (runs on every request, for the key's digest: a table, not
/// `write!` per byte).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The keys in force, by digest.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// Shared so that authenticating a request clones a pointer, not the key.
    by_digest: RwLock<HashMap<String, Arc<ApiKey>>>,
    /// Secrets already presented with success, and their digest: a request
    /// with a key seen before skips the SHA-256 (the key itself, and so its
    /// revocation, is still looked up by digest every time). Only secrets of
    /// known keys enter, at most [`VERIFIED_MAX`] of them.
    verified: RwLock<HashMap<Box<str>, Box<str>>>,
}

/// Bound of [`KeyRing`]'s cache of verified secrets (emptied when full).
const VERIFIED_MAX: usize = 4_096;

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> KeyRing {
        let ring = KeyRing::default();
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    pub fn insert(&self, key: ApiKey) {
        self.by_digest
            .write()
            .insert(key.digest.clone(), Arc::new(key));
    }

    /// The key in force whose secret this is.
    pub fn authenticate(&self, secret: &str) -> Option<Arc<ApiKey>> {
        if let Some(d) = self.verified.read().get(secret) {
            return self.find(d);
        }
        let d = digest(secret);
        let key = self.find(&d)?;
        let mut verified = self.verified.write();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(secret.into(), d.into());
        Some(key)
    }

    /// The key whose secret has this digest, if it is in force.
    pub fn find(&self, digest: &str) -> Option<Arc<ApiKey>> {
        self.by_digest
            .read()
            .get(digest)
            .filter(|k| !k.revoked())
            .cloned()
    }

    /// Marks a key revoked at `at` (a revoked key keeps its first time);
    /// returns whether it was known.
    pub fn revoke(&self, id: &str, at: Timestamp) -> bool {
        let mut keys = self.by_digest.write();
        let mut found = false;
        for k in keys.values_mut().filter(|k| k.id == id) {
            Arc::make_mut(k).revoked_at.get_or_insert(at);
            found = true;
        }
        found
    }

    /// Every key (revoked ones included), by id.
    pub fn list(&self) -> Vec<ApiKey> {
        let mut v: Vec<ApiKey> = self
            .by_digest
            .read()
            .values()
            .map(|k| ApiKey::clone(k))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Option<ApiKey> {
        self.by_digest
            .read()
            .values()
            .find(|k| k.id == id)
            .map(|k| ApiKey::clone(k))
    }

    /// Merges the store's current list: keys minted or revoked elsewhere (by
    /// `tollgate keys` or another node) come into force. Monotone: a key is
    /// never forgotten and a revoked key never comes back, whatever the order
    /// of a reload and a concurrent change.
    pub fn merge(&self, keys: impl IntoIterator<Item = ApiKey>) {
        let mut ring = self.by_digest.write();
        for k in keys {
            match ring.get_mut(&k.digest) {
                Some(known) => {
                    if known.revoked_at.is_none() && k.revoked_at.is_some() {
                        Arc::make_mut(known).revoked_at = k.revoked_at;
                    }
                }
                None => {
                    ring.insert(k.digest.clone(), Arc::new(k));
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.read().is_empty()
    }
}

/// The caller of a request: the key it presented.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key: Arc<ApiKey>,
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
            .authenticate(secret)
            .ok_or(ApiError::Unauthenticated)?;
        state.limiter.check(&key.id)?;
        if key.scope == Scope::Customer && !customer_may(parts) {
            return Err(ApiError::Forbidden(
                "change anything (customer keys are read-only)".into(),
            ));
        }
        Ok(Principal { key })
    }
}

/// Routes that a customer key may call with a method other than GET: they
/// compute an answer and change nothing. Every other POST, PUT, PATCH and
/// DELETE refuses customer keys with 403 before its body is even read, so a
/// customer key learns nothing from a mutating route.
pub const CUSTOMER_READ_ONLY_POSTS: &[&str] = &[
    "/v1/quote",
    "/v1/customers/{id}/subscription/change/preview",
];

fn customer_may(parts: &Parts) -> bool {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| CUSTOMER_READ_ONLY_POSTS.contains(&p.as_str()))
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Per-key request rate limit: a token bucket per key id (real time, not the
/// engine's clock: it protects the server, not a plan).
pub struct KeyLimiter {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl std::fmt::Debug for KeyLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLimiter")
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

impl KeyLimiter {
    /// `per_second` sustained, `burst` at once (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> KeyLimiter {
        use std::num::NonZeroU32;
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        KeyLimiter {
            limiter: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            per_second,
        }
    }

    /// Takes one request from the key's bucket, or says when to retry.
    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        use governor::clock::{Clock, DefaultClock};
        match self.limiter.check_key(&key_id.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::RateLimited {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }

    /// Forgets buckets that are full again (keeps memory bounded).
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyRing, Scope, digest, mint_key};
    use jiff::Timestamp;

    #[test]
    fn a_secret_seen_before_still_stops_working_when_its_key_is_revoked() -> Result<(), String> {
        let now = Timestamp::UNIX_EPOCH;
        let minted = mint_key("app", Scope::Server, None, now).map_err(|e| e.to_string())?;
        let ring = KeyRing::new([minted.key.clone()]);
        // Twice: the second answer comes through the cache of verified secrets.
        for _ in 0..2 {
            let key = ring
                .authenticate(&minted.secret)
                .ok_or("the key is refused")?;
            assert_eq!(key.id, minted.key.id);
        }
        assert!(ring.authenticate("tg_not_a_key").is_none());
        assert!(ring.revoke(&minted.key.id, now));
        assert!(ring.authenticate(&minted.secret).is_none());
        Ok(())
    }

    #[test]
    fn digest_is_the_lower_case_hex_sha256_of_the_secret() {
        // FIPS 180-2 test vector.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
