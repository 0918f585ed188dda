//! A local fake of the parts of Stripe's API that Tollgate uses, answering with
//! Stripe's documented object shapes (customer, payment_intent, refund, event,
//! charge, error). Test-only: started on a random loopback port. Also used by
//! the server's HTTP tests (`#[path]`-included).

#![allow(dead_code, clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_tollgate";
pub const WEBHOOK_SECRET: &str = "whsec_tollgate_test";

#[derive(Debug, Default)]
pub struct FakeState {
    pub customers: Vec<Value>,
    pub intents: Vec<Value>,
    pub refunds: Vec<Value>,
    /// Idempotency-Key → the first answer.
    pub replays: HashMap<String, Value>,
    /// Every request: "METHOD path".
    pub requests: Vec<String>,
    next: u64,
}

impl FakeState {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{:014}", self.next)
    }
}

#[derive(Clone, Debug)]
pub struct FakeStripe {
    pub base_url: String,
    pub state: Arc<Mutex<FakeState>>,
}

type Shared = Arc<Mutex<FakeState>>;

fn lock(state: &Shared) -> MutexGuard<'_, FakeState> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn stripe_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "code": code, "message": message}})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> Result<(), Response> {
    let expected = format!("Bearer {SECRET_KEY}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == expected => Ok(()),
        _ => Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided",
        )),
    }
}

fn form_map(form: &[(String, String)]) -> HashMap<String, String> {
    form.iter().cloned().collect()
}

/// `metadata[k]=v` pairs as a JSON object.
fn metadata(form: &HashMap<String, String>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            m.insert(key.to_string(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

/// Runs `create` once per Idempotency-Key; replays its answer after.
fn idempotent(
    state: &Shared,
    headers: &HeaderMap,
    create: impl FnOnce(&mut FakeState) -> Result<Value, Response>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut s = lock(state);
    if let Some(k) = &key {
        if let Some(v) = s.replays.get(k) {
            return Json(v.clone()).into_response();
        }
    }
    match create(&mut s) {
        Ok(v) => {
            if let Some(k) = key {
                s.replays.insert(k, v.clone());
            }
            Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn search_customers(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let mut s = lock(&state);
    s.requests.push("GET /v1/customers/search".to_string());
    // Supports the one query form used: metadata['KEY']:'VALUE'.
    let query = q.get("query").cloned().unwrap_or_default();
    let parsed = query
        .strip_prefix("metadata['")
        .and_then(|r| r.split_once("']:'"))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('\'').to_string()));
    let data: Vec<Value> = match parsed {
        Some((k, v)) => s
            .customers
            .iter()
            .filter(|c| c["metadata"][&k] == Value::String(v.clone()))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    Json(json!({
        "object": "search_result",
        "url": "/v1/customers/search",
        "has_more": false,
        "next_page": null,
        "data": data,
    }))
    .into_response()
}

async fn create_customer(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let form = form_map(&form);
    lock(&state).requests.push("POST /v1/customers".to_string());
    idempotent(&state, &headers, |s| {
        let id = s.id("cus");
        let customer = json!({
            "id": id,
            "object": "customer",
            "name": form.get("name"),
            "email": form.get("email"),
            "metadata": metadata(&form),
            "livemode": false,
        });
        s.customers.push(customer.clone());
        Ok(customer)
    })
}

async fn create_intent(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let form = form_map(&form);
    lock(&state)
        .requests
        .push("POST /v1/payment_intents".to_string());
    idempotent(&state, &headers, |s| {
        let Some(amount) = form.get("amount").and_then(|a| a.parse::<i64>().ok()) else {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_missing",
                "Missing required param: amount.",
            ));
        };
        let id = s.id("pi");
        let intent = json!({
            "id": id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": form.get("currency"),
            "customer": form.get("customer"),
            "description": form.get("description"),
            "status": "requires_payment_method",
            "client_secret": format!("{id}_secret_fake"),
            "automatic_payment_methods": {"enabled": true},
            "metadata": metadata(&form),
            "latest_charge": null,
            "last_payment_error": null,
            "livemode": false,
        });
        s.intents.push(intent.clone());
        Ok(intent)
    })
}

async fn get_intent(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let mut s = lock(&state);
    s.requests.push(format!("GET /v1/payment_intents/{id}"));
    match s.intents.iter().find(|i| i["id"] == id.as_str()) {
        Some(i) => Json(i.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            &format!("No such payment_intent: '{id}'"),
        ),
    }
}

async fn create_refund(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let form = form_map(&form);
    lock(&state).requests.push("POST /v1/refunds".to_string());
    idempotent(&state, &headers, |s| {
        let pi = form.get("payment_intent").cloned().unwrap_or_default();
        let Some(intent) = s.intents.iter().find(|i| i["id"] == pi.as_str()).cloned() else {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "resource_missing",
                &format!("No such payment_intent: '{pi}'"),
            ));
        };
        let amount = form
            .get("amount")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or_else(|| intent["amount_received"].as_i64().unwrap_or(0));
        let id = s.id("re");
        let refund = json!({
            "id": id,
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": pi,
            "charge": intent["latest_charge"],
            "status": "succeeded",
        });
        s.refunds.push(refund.clone());
        Ok(refund)
    })
}

impl FakeStripe {
    /// Starts the fake on 127.0.0.1 (random port).
    pub async fn start() -> std::io::Result<FakeStripe> {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/customers/search", get(search_customers))
            .route("/v1/customers", post(create_customer))
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(get_intent))
            .route("/v1/refunds", post(create_refund))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeStripe {
            base_url: format!("http://{addr}"),
            state,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// The payer paid: the intent succeeds (a charge is made) and the
    /// `payment_intent.succeeded` event Stripe would send is returned.
    pub fn succeed(&self, pi: &str, created: i64) -> Option<Value> {
        let mut s = self.state();
        let charge = s.id("ch");
        let event_id = s.id("evt");
        let intent = s.intents.iter_mut().find(|i| i["id"] == pi)?;
        intent["status"] = json!("succeeded");
        intent["amount_received"] = intent["amount"].clone();
        intent["latest_charge"] = json!(charge);
        Some(event(
            &event_id,
            "payment_intent.succeeded",
            created,
            intent.clone(),
        ))
    }

    /// A failed attempt: `payment_intent.payment_failed`.
    pub fn fail(&self, pi: &str, created: i64) -> Option<Value> {
        let mut s = self.state();
        let event_id = s.id("evt");
        let intent = s.intents.iter_mut().find(|i| i["id"] == pi)?;
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined",
            "message": "Your card was declined."
        });
        Some(event(
            &event_id,
            "payment_intent.payment_failed",
            created,
            intent.clone(),
        ))
    }

    /// `charge.refunded` for the intent's charge, `amount_refunded` in minor units.
    pub fn refunded(&self, pi: &str, amount_refunded: i64, created: i64) -> Option<Value> {
        let mut s = self.state();
        let event_id = s.id("evt");
        let intent = s.intents.iter().find(|i| i["id"] == pi)?.clone();
        let charge = json!({
            "id": intent["latest_charge"],
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": amount_refunded,
            "currency": intent["currency"],
            "customer": intent["customer"],
            "payment_intent": pi,
            "metadata": intent["metadata"],
            "paid": true,
            "refunded": amount_refunded >= intent["amount"].as_i64().unwrap_or(0),
            "status": "succeeded",
        });
        Some(event(&event_id, "charge.refunded", created, charge))
    }
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": false,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": object},
    })
}
