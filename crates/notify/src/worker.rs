//! The delivery worker: fans outbox events out into deliveries, then sends the
//! deliveries that are due, with retries, a per-endpoint failure state and a
//! delivery log. Time comes from the injected clock; [`Notifier::tick`] does
//! one pass, so tests drive hours of retries without sleeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use tollgate_engine::Clock;
use tollgate_store::notify::{AttemptRecord, DeliveryRecord, EndpointRecord, OutboxEvent};
use tollgate_store::{Store, StoreError};

use crate::config::NotifyConfig;
use crate::email::Mailer;
use crate::message::webhook_body;
use crate::network::{GuardedResolver, NetworkPolicy, check_url};
use crate::schedule::{RetrySchedule, parse_retry_after};
use crate::signing::{SecretError, signature_header};

/// The shortest time between two passes started by wake-ups: under a stream
/// of writes the worker runs at most this often instead of back to back.
pub const MIN_WAKE_GAP: Duration = Duration::from_millis(2);

/// Outbox events read per fan-out query.
const FANOUT_BATCH: u32 = 500;
/// Prefix of the delivery-log entries that mark a manual retry or a replay
/// (not a send): the retry schedule starts over after one.
pub const REQUEUED: &str = "requeued: ";
/// The event type of `POST /v1/webhooks/endpoints/{id}/test`: delivered only
/// to the endpoint it was sent for.
pub const TEST_EVENT: &str = "webhook.test";

/// Delivery states.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELED: &str = "canceled";
}

/// Endpoint health.
pub mod health {
    pub const HEALTHY: &str = "healthy";
    pub const FAILING: &str = "failing";
    pub const DISABLED: &str = tollgate_store::notify::ENDPOINT_DISABLED;
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Email(#[from] crate::email::EmailError),
}

/// Where a delivery goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Webhook(String),
    Email(String),
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        if let Some(id) = s.strip_prefix("webhook:") {
            Some(Target::Webhook(id.to_string()))
        } else {
            s.strip_prefix("email:")
                .map(|a| Target::Email(a.to_string()))
        }
    }

    pub fn webhook(endpoint_id: &str) -> String {
        format!("webhook:{endpoint_id}")
    }

    pub fn email(address: &str) -> String {
        format!("email:{address}")
    }
}

/// A random id with a prefix (`dlv_3f9c…`).
pub fn new_id(prefix: &str) -> Result<String, NotifyError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| NotifyError::Client(e.to_string()))?;
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Whether an endpoint (or the e-mail list) subscribed to `event_type`: an
/// empty list takes every type; an entry is an exact type or a prefix ending
/// in `.*` (`usage.*`); opt-in types (`usage.daily_summary`) only by an exact
/// entry. The rule is the store's ([`tollgate_store::notify::subscribed`]),
/// which the billing worker also asks before writing daily summaries.
pub fn matches_type(patterns: &[String], event_type: &str) -> bool {
    tollgate_store::notify::subscribed(patterns, event_type)
}

/// The customer's alert recipients: metadata `alert_emails`, a list of
/// addresses or one string of comma-separated addresses.
pub fn customer_recipients(metadata: &serde_json::Value) -> Vec<String> {
    match metadata.get("alert_emails") {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Outbox events fanned out.
    pub events: usize,
    /// Deliveries created.
    pub created: usize,
    /// Attempts made (sends, successful or not).
    pub attempted: usize,
    pub succeeded: usize,
}

/// The outcome of one send.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<SignedDuration>,
    duration_ms: u64,
}

/// The delivery service: the worker loop and the operations of the admin API.
#[derive(Debug)]
pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: NotifyConfig,
    schedule: RetrySchedule,
    policy: Arc<NetworkPolicy>,
    http: reqwest::Client,
    mailer: Option<Mailer>,
    wake: tokio::sync::Notify,
    /// Serializes endpoint health updates (read, change, write).
    health: tokio::sync::Mutex<()>,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: NotifyConfig,
    ) -> Result<Notifier, NotifyError> {
        let problems = config.problems();
        if let Some(first) = problems.first() {
            return Err(NotifyError::Invalid {
                field: "notify",
                message: first.clone(),
            });
        }
        let policy = Arc::new(config.network_policy());
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(config.request_timeout_secs.min(10)))
            .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
        Ok(Notifier {
            store,
            clock,
            schedule: config.schedule(),
            config,
            policy,
            http,
            mailer,
            wake: tokio::sync::Notify::new(),
            health: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Makes the worker loop run a pass now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs passes until `shutdown` turns true: a pass, then a wait of the
    /// poll interval (or less when woken, none when the pass was busy). A
    /// pass interrupted by the shutdown loses nothing: a send not yet
    /// recorded is sent again after the restart (at least once).
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            let busy = tokio::select! {
                r = self.tick() => match r {
                    Ok(t) => t.attempted > 0 || t.events > 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "alert delivery pass failed");
                        false
                    }
                },
                _ = shutdown.changed() => break,
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = self.wake.notified() => {
                    let gap = MIN_WAKE_GAP.saturating_sub(started.elapsed());
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("alert delivery worker stopped");
    }

    /// One pass: fan out every new outbox event, then send the deliveries
    /// due now (at most `4 × max_in_flight` of them).
    pub async fn tick(&self) -> Result<Tick, NotifyError> {
        let mut t = self.fan_out().await?;
        let (attempted, succeeded) = self.deliver_due().await?;
        t.attempted = attempted;
        t.succeeded = succeeded;
        Ok(t)
    }

    /// Turns outbox events after the cursor into deliveries: one per enabled
    /// endpoint subscribed to the event's type and one per e-mail recipient
    /// (the customer's `alert_emails`, the configured `admin_emails`), then
    /// moves the cursor. A crash between the two only repeats the insert,
    /// which keeps existing (event, target) pairs.
    pub async fn fan_out(&self) -> Result<Tick, NotifyError> {
        let notify = self.store.notify();
        let mut tick = Tick::default();
        loop {
            let cursor = notify.fanout_cursor().await?;
            let events = notify.events_after(cursor, FANOUT_BATCH).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(tick);
            };
            let endpoints = notify.endpoints().await?;
            let now = self.clock.now();
            let mut recipients: HashMap<String, Vec<String>> = HashMap::new();
            let mut deliveries = Vec::new();
            for event in &events {
                if event.event_type == TEST_EVENT {
                    continue;
                }
                for target in self.targets(event, &endpoints, &mut recipients).await? {
                    deliveries.push(new_delivery(&event.id, target, now)?);
                }
            }
            notify.insert_deliveries(&deliveries).await?;
            notify.set_fanout_cursor(last).await?;
            tick.events += events.len();
            tick.created += deliveries.len();
            if events.len() < FANOUT_BATCH as usize {
                return Ok(tick);
            }
        }
    }

    async fn targets(
        &self,
        event: &OutboxEvent,
        endpoints: &[EndpointRecord],
        recipients: &mut HashMap<String, Vec<String>>,
    ) -> Result<Vec<String>, NotifyError> {
        let mut out: Vec<String> = endpoints
            .iter()
            .filter(|e| e.receives(&event.event_type))
            .map(|e| Target::webhook(&e.id))
            .collect();
        if self.mailer.is_none() || !self.config.emails(&event.event_type) {
            return Ok(out);
        }
        let mut emails = self.config.admin_emails.clone();
        if let Some(customer) = &event.customer_id {
            if !recipients.contains_key(customer) {
                let found = match self.store.get_customer(customer).await? {
                    Some(c) => customer_recipients(&c.metadata),
                    None => Vec::new(),
                };
                recipients.insert(customer.clone(), found);
            }
            if let Some(list) = recipients.get(customer) {
                emails.extend(list.iter().cloned());
            }
        }
        emails.sort();
        emails.dedup();
        out.extend(emails.iter().map(|a| Target::email(a)));
        Ok(out)
    }

    /// Sends the deliveries due now, `max_in_flight` at a time. Returns
    /// (attempts, successes).
    pub async fn deliver_due(&self) -> Result<(usize, usize), NotifyError> {
        let now = self.clock.now();
        let limit = u32::try_from(self.config.max_in_flight.saturating_mul(4)).unwrap_or(u32::MAX);
        let due = self.store.notify().due_deliveries(now, limit).await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        // The endpoints as of this pass (one query, not one per delivery).
        let endpoints: HashMap<String, EndpointRecord> = self
            .store
            .notify()
            .endpoints()
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let results: Vec<Result<Option<bool>, NotifyError>> = futures_util::stream::iter(due)
            .map(|d| self.attempt(d, &endpoints))
            .buffer_unordered(self.config.max_in_flight)
            .collect()
            .await;
        let mut attempted = 0;
        let mut succeeded = 0;
        for r in results {
            if let Some(ok) = r? {
                attempted += 1;
                succeeded += usize::from(ok);
            }
        }
        Ok((attempted, succeeded))
    }

    /// One attempt of one delivery, recorded with its outcome. `Some(ok)` when
    /// something was sent, `None` when the delivery was canceled instead.
    async fn attempt(
        &self,
        mut d: DeliveryRecord,
        endpoints: &HashMap<String, EndpointRecord>,
    ) -> Result<Option<bool>, NotifyError> {
        let notify = self.store.notify();
        let Some(event) = notify.get_event(&d.event_id).await? else {
            self.cancel(d, "the event no longer exists").await?;
            return Ok(None);
        };
        let outcome = match Target::parse(&d.target) {
            Some(Target::Webhook(id)) => match endpoints.get(&id) {
                None => {
                    self.cancel(d, "the endpoint was deleted").await?;
                    return Ok(None);
                }
                Some(e) if !e.deliverable() => {
                    self.cancel(d, "the endpoint is disabled").await?;
                    return Ok(None);
                }
                Some(endpoint) => {
                    let outcome = self.post(endpoint, &event).await;
                    // A success to a healthy endpoint changes nothing.
                    if !(outcome.ok && endpoint.state == health::HEALTHY) {
                        self.update_health(&endpoint.id, outcome.ok).await?;
                    }
                    outcome
                }
            },
            Some(Target::Email(to)) => self.mail(&event, &to).await,
            None => {
                self.cancel(d, "unknown target").await?;
                return Ok(None);
            }
        };
        let now = self.clock.now();
        let number = d.attempts.saturating_add(1);
        d.attempts = number;
        d.last_status = outcome.status;
        d.last_error = outcome.error.clone();
        d.last_duration_ms = Some(outcome.duration_ms);
        d.updated_at = now;
        if outcome.ok {
            d.state = state::SUCCEEDED.into();
            d.next_attempt_at = None;
        } else {
            let failed = self.failures_since_requeue(&d.id).await? + 1;
            match self.schedule.next_delay(&d.id, failed, outcome.retry_after) {
                Some(wait) => {
                    d.next_attempt_at = Some(now.checked_add(wait).unwrap_or(Timestamp::MAX));
                }
                None => {
                    d.state = state::FAILED.into();
                    d.next_attempt_at = None;
                }
            }
        }
        let log = AttemptRecord {
            delivery_id: d.id.clone(),
            attempt: number,
            at: now,
            status: outcome.status,
            error: outcome.error,
            duration_ms: outcome.duration_ms,
        };
        notify.record_attempt(&d, &log).await?;
        Ok(Some(outcome.ok))
    }

    /// Failed sends since the delivery was created or last requeued.
    async fn failures_since_requeue(&self, delivery_id: &str) -> Result<u32, NotifyError> {
        let log = self.store.notify().attempts(delivery_id).await?;
        let n = log
            .iter()
            .rev()
            .take_while(|a| !a.error.as_deref().is_some_and(|e| e.starts_with(REQUEUED)))
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn cancel(&self, mut d: DeliveryRecord, why: &str) -> Result<(), NotifyError> {
        let now = self.clock.now();
        d.attempts = d.attempts.saturating_add(1);
        d.state = state::CANCELED.into();
        d.next_attempt_at = None;
        d.last_error = Some(format!("not sent: {why}"));
        d.updated_at = now;
        let log = AttemptRecord {
            delivery_id: d.id.clone(),
            attempt: d.attempts,
            at: now,
            status: None,
            error: d.last_error.clone(),
            duration_ms: 0,
        };
        self.store.notify().record_attempt(&d, &log).await?;
        Ok(())
    }

    /// POSTs the event, signed, to the endpoint.
    async fn post(&self, endpoint: &EndpointRecord, event: &OutboxEvent) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            ok: false,
            status: None,
            error: Some(error),
            retry_after: None,
            duration_ms: elapsed_ms(started),
        };
        if let Err(e) = check_url(&self.policy, &endpoint.url) {
            return failed(format!("refused: {e}"));
        }
        let body = webhook_body(event);
        let now = self.clock.now();
        let signature = match signature_header(&endpoint.secrets, now, &event.id, &body) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return failed("the endpoint has no live secret".into()),
            Err(e) => return failed(e.to_string()),
        };
        let sent = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", now.as_second().to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, now));
                // Read (a little of) the body so the connection can be reused.
                let _ = resp.bytes().await;
                Outcome {
                    ok: status.is_success(),
                    status: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("the endpoint answered {status}")),
                    retry_after,
                    duration_ms: elapsed_ms(started),
                }
            }
            Err(e) => failed(describe_reqwest(&e)),
        }
    }

    async fn mail(&self, event: &OutboxEvent, to: &str) -> Outcome {
        let started = Instant::now();
        let result = match &self.mailer {
            Some(m) => m.send(event, to).await,
            None => Err(crate::email::EmailError::NotConfigured),
        };
        Outcome {
            ok: result.is_ok(),
            status: match &result {
                Ok(()) => Some(250),
                Err(e) => e.code(),
            },
            error: result.err().map(|e| e.to_string()),
            retry_after: None,
            duration_ms: elapsed_ms(started),
        }
    }

    /// healthy → failing (since now) on a failure; failing for longer than
    /// `disable_after_hours` → disabled; any success → healthy.
    async fn update_health(&self, endpoint_id: &str, ok: bool) -> Result<(), NotifyError> {
        let _guard = self.health.lock().await;
        let notify = self.store.notify();
        let Some(mut e) = notify.get_endpoint(endpoint_id).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        let before = (e.state.clone(), e.failing_since, e.enabled);
        if ok {
            e.state = health::HEALTHY.into();
            e.failing_since = None;
        } else {
            let since = *e.failing_since.get_or_insert(now);
            e.state = health::FAILING.into();
            if now.duration_since(since) >= self.config.disable_after() {
                e.state = health::DISABLED.into();
                e.enabled = false;
                tracing::warn!(endpoint = %e.id, url = %e.url, %since, "webhook endpoint disabled after failing too long");
            }
        }
        if (e.state.clone(), e.failing_since, e.enabled) != before {
            e.updated_at = now;
            notify.put_endpoint(&e).await?;
        }
        Ok(())
    }

    /// Puts a delivery back in the queue, due now, with a fresh retry
    /// schedule; the delivery log records the request.
    pub async fn requeue(
        &self,
        mut d: DeliveryRecord,
        why: &str,
    ) -> Result<DeliveryRecord, NotifyError> {
        let now = self.clock.now();
        d.attempts = d.attempts.saturating_add(1);
        d.state = state::PENDING.into();
        d.next_attempt_at = Some(now);
        d.updated_at = now;
        let log = AttemptRecord {
            delivery_id: d.id.clone(),
            attempt: d.attempts,
            at: now,
            status: None,
            error: Some(format!("{REQUEUED}{why}")),
            duration_ms: 0,
        };
        self.store.notify().record_attempt(&d, &log).await?;
        self.wake();
        Ok(d)
    }

    /// Manual retry of one delivery: due now.
    pub async fn retry(&self, delivery_id: &str) -> Result<DeliveryRecord, NotifyError> {
        let d = self
            .store
            .notify()
            .get_delivery(delivery_id)
            .await?
            .ok_or_else(|| NotifyError::NotFound {
                what: "delivery",
                id: delivery_id.into(),
            })?;
        self.requeue(d, "manual retry").await
    }

    /// Replays the events created in `[from, to)`: every target they would go
    /// to now (or only `endpoint_id`) gets them again: a missing delivery is
    /// created, an existing one is requeued. Returns the deliveries queued.
    pub async fn replay(
        &self,
        from: Timestamp,
        to: Timestamp,
        endpoint_id: Option<&str>,
    ) -> Result<Vec<DeliveryRecord>, NotifyError> {
        if from >= to {
            return Err(NotifyError::Invalid {
                field: "to",
                message: "must be after from".into(),
            });
        }
        let notify = self.store.notify();
        let mut endpoints = notify.endpoints().await?;
        if let Some(id) = endpoint_id {
            endpoints.retain(|e| e.id == id);
            if endpoints.is_empty() {
                return Err(NotifyError::NotFound {
                    what: "endpoint",
                    id: id.into(),
                });
            }
        }
        let events = notify.events_between(from, to).await?;
        let now = self.clock.now();
        let mut recipients = HashMap::new();
        let mut queued = Vec::new();
        for event in events.iter().filter(|e| e.event_type != TEST_EVENT) {
            let mut targets = self.targets(event, &endpoints, &mut recipients).await?;
            if endpoint_id.is_some() {
                targets.retain(|t| t.starts_with("webhook:"));
            }
            let existing = notify.deliveries(None, Some(&event.id), 0).await?;
            for target in targets {
                match existing.iter().find(|d| d.target == target) {
                    Some(d) => queued.push(self.requeue(d.clone(), "replay").await?),
                    None => {
                        let d = new_delivery(&event.id, target, now)?;
                        notify.insert_deliveries(std::slice::from_ref(&d)).await?;
                        queued.push(d);
                    }
                }
            }
        }
        self.wake();
        Ok(queued)
    }

    /// Sends a `webhook.test` event to one endpoint (whatever its event
    /// types): the event is stored and its delivery logged like any other.
    pub async fn send_test(&self, endpoint_id: &str) -> Result<DeliveryRecord, NotifyError> {
        let notify = self.store.notify();
        if notify.get_endpoint(endpoint_id).await?.is_none() {
            return Err(NotifyError::NotFound {
                what: "endpoint",
                id: endpoint_id.into(),
            });
        }
        let now = self.clock.now();
        let event = OutboxEvent {
            id: new_id("evt_")?,
            event_type: TEST_EVENT.into(),
            customer_id: None,
            object_key: format!("endpoint:{endpoint_id}"),
            object_seq: 0,
            dedup_key: None,
            payload: serde_json::json!({
                "endpoint_id": endpoint_id,
                "message": "A test event from Tollgate: this endpoint receives and verifies signed webhooks.",
            }),
            created_at: now,
            seq: 0,
        };
        let inserted = notify.insert_events(std::slice::from_ref(&event)).await?;
        let event_id = inserted.first().map(|e| e.id.clone()).unwrap_or(event.id);
        let d = new_delivery(&event_id, Target::webhook(endpoint_id), now)?;
        notify.insert_deliveries(std::slice::from_ref(&d)).await?;
        self.wake();
        Ok(d)
    }
}

fn new_delivery(
    event_id: &str,
    target: String,
    now: Timestamp,
) -> Result<DeliveryRecord, NotifyError> {
    Ok(DeliveryRecord {
        id: new_id("dlv_")?,
        event_id: event_id.to_string(),
        target,
        state: state::PENDING.into(),
        attempts: 0,
        next_attempt_at: Some(now),
        last_status: None,
        last_error: None,
        last_duration_ms: None,
        created_at: now,
        updated_at: now,
    })
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A transport error in one line, with its cause (the SSRF guard's refusal,
/// a refused connection, a timeout).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
