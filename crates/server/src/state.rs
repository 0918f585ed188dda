//! Shared state of the HTTP handlers.

use std::sync::Arc;

use tollgate_engine::Engine;
use tollgate_store::Store;

use crate::auth::{KeyLimiter, KeyRing};

/// Cloned into every request: one `Arc`, so a clone and its drop are one
/// atomic each (seven `Arc`s cloned and dropped per request were fourteen
/// atomics contended between the cores, about 5 % of a consume's CPU).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct Shared {
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
