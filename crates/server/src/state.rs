//! Shared state of the HTTP handlers.

use std::sync::Arc;

use tollgate_engine::Engine;
use tollgate_store::Store;

use crate::auth::{KeyLimiter, KeyRing};

/// Cloned into every handler (cheap: all `Arc`s).
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    /// Per-key request rate limit (applied by the `Principal` extractor).
    pub limiter: Arc<KeyLimiter>,
    /// Invoices, plan changes, payments.
    pub billing: Arc<tollgate_billing::Billing>,
    /// Alert delivery: webhook endpoints, deliveries, the worker.
    pub notifier: Arc<tollgate_notify::Notifier>,
    /// Payment providers: manual, and Stripe when `[billing.stripe]` is set.
    pub payments: Arc<tollgate_billing::providers::Providers>,
}
