//! A small typed HTTP client for a running Tollgate server: the base URL and
//! the API key, problem+json errors turned into one clear line, and the
//! response shapes the subcommands read.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::CliError;

/// The API's base URL and key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// What the server answered: its status and JSON body (`Value::Null` when
/// the body is empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// An RFC 9457 problem as the server renders it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub used: Option<String>,
    #[serde(default)]
    pub remaining: Option<String>,
    #[serde(default)]
    pub upgrade_to: Option<String>,
}

impl Problem {
    /// The problem of a non-success answer (any body: JSON problem or not).
    pub fn of(status: StatusCode, body: &Value) -> Problem {
        let mut p: Problem = serde_json::from_value(body.clone()).unwrap_or_default();
        p.status = status.as_u16();
        if p.code.is_empty() {
            p.code = status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace([' ', '-'], "_");
        }
        if p.detail.is_empty() {
            p.detail = match body {
                Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
                _ if !p.title.is_empty() => p.title.clone(),
                _ => "no details".to_string(),
            };
        }
        p
    }

    pub fn into_error(self) -> CliError {
        CliError::Api {
            status: self.status,
            code: self.code,
            detail: self.detail,
        }
    }
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), with `key` as
    /// bearer token when given.
    pub fn new(base: &str, key: Option<String>) -> Result<Client, CliError> {
        let base = base.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Server(format!(
                "--url: {base:?} is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("tollgate-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Server(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            key: key.filter(|k| !k.trim().is_empty()),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        let why = if e.is_connect() {
            "connection refused or host unreachable (is `tollgate serve` running?)".to_string()
        } else if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        CliError::Server(format!("cannot reach {}: {why}", self.base))
    }

    /// Starts a request to `path` (which begins with `/`), with the key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// Sends a request and reads its answer, whatever its status.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, CliError> {
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// Sends a request; a non-success answer is an error (its problem).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let answer = self.send(req).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(Problem::of(answer.status, &answer.body).into_error())
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A raw streaming GET (exports): a non-success answer is an error.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Err(Problem::of(status, &body).into_error())
    }
}

/// Reads a typed view of a JSON answer.
pub fn view<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T, CliError> {
    serde_json::from_value(v.clone())
        .map_err(|e| CliError::Server(format!("unexpected {what} from the server: {e}")))
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the pairs that have a value ("" when none has).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

// --- Response shapes the subcommands read ------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub plan: String,
    pub plan_version: u32,
    pub status: String,
    #[serde(default)]
    pub trial_ends_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub currency: String,
    pub time_zone: String,
    #[serde(default)]
    pub admin_bypass: bool,
    pub created_at: String,
    #[serde(default)]
    pub deleted_at: Option<String>,
    #[serde(default)]
    pub subscription: Option<Subscription>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeatureEntitlement {
    pub feature: String,
    pub kind: String,
    pub access: bool,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub used: Option<String>,
    #[serde(default)]
    pub remaining: Option<String>,
    #[serde(default)]
    pub resets_at: Option<String>,
    #[serde(default)]
    pub hard: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub grants_remaining: Option<String>,
    #[serde(default)]
    pub overridden: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entitlements {
    #[serde(default)]
    pub blocked: Option<String>,
    pub features: Vec<FeatureEntitlement>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub feature: String,
    pub quantity: String,
    #[serde(default)]
    pub limit: Option<String>,
    pub used: String,
    #[serde(default)]
    pub remaining: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub upgrade_to: Option<String>,
    #[serde(default)]
    pub overage: String,
    #[serde(default)]
    pub over_limit: bool,
    #[serde(default)]
    pub replayed: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventResult {
    pub index: usize,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ingested {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub results: Vec<EventResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Money {
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeatureUsage {
    pub used: String,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub percentage_used: Option<String>,
    #[serde(default)]
    pub overage: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    #[serde(rename = "type")]
    pub kind: String,
    pub feature: String,
    pub percentage_used: String,
    pub message: String,
    #[serde(default)]
    pub upgrade_to: Option<String>,
    #[serde(default)]
    pub emergency_allowance: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlanRef {
    pub key: String,
    pub version: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cost {
    pub current_period: Money,
    pub projected_period_end: Money,
    #[serde(default)]
    pub recommended_plan: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dashboard {
    pub customer: String,
    #[serde(default)]
    pub plan: Option<PlanRef>,
    #[serde(default)]
    pub status: Option<String>,
    pub usage_summary: BTreeMap<String, FeatureUsage>,
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub cost: Option<Cost>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServedEntitlement {
    pub summary: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServedCharge {
    pub key: String,
    pub summary: String,
    pub included: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServedPlan {
    pub key: String,
    pub name: String,
    pub tier: u32,
    pub public: bool,
    pub currency: String,
    pub base_price: Money,
    pub interval: String,
    pub anchoring: String,
    pub billing: String,
    #[serde(default)]
    pub trial_days: Option<u32>,
    pub entitlements: BTreeMap<String, ServedEntitlement>,
    pub charges: Vec<ServedCharge>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServedPlans {
    pub data: Vec<ServedPlan>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_one_line() {
        let body = serde_json::json!({
            "type": "https://tollgate.dev/problems/validation", "title": "Invalid request",
            "status": 422, "detail": "quantity: must be greater than zero", "code": "validation"
        });
        let e = Problem::of(StatusCode::UNPROCESSABLE_ENTITY, &body).into_error();
        assert_eq!(
            e.to_string(),
            "422 validation: quantity: must be greater than zero"
        );
        let e = Problem::of(StatusCode::BAD_GATEWAY, &Value::String("upstream".into()));
        assert_eq!(e.into_error().to_string(), "502 bad_gateway: upstream");
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            query(&[
                ("a", Some("x y/z".into())),
                ("b", None),
                ("c", Some("1".into()))
            ]),
            "?a=x%20y%2Fz&c=1"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
