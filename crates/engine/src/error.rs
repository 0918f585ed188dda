//! The engine's typed errors. A request that fails with an [`EngineError`]
//! changed nothing: no counter moved and nothing was written to the ledger.
//! (A denial is not an error: it is a [`crate::Decision`] with `allowed: false`.)

use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tollgate_store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("unknown customer {0:?}")]
    UnknownCustomer(String),
    #[error("customer {0:?} is deleted")]
    CustomerDeleted(String),
    #[error("customer {0:?} already exists")]
    CustomerExists(String),
    #[error("customer {0:?} is not deleted")]
    CustomerNotDeleted(String),
    #[error("unknown feature {0:?}")]
    UnknownFeature(String),
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("feature {feature:?} is a {kind} feature; {operation} needs a {expected} feature")]
    WrongFeatureKind {
        feature: String,
        kind: &'static str,
        operation: &'static str,
        expected: &'static str,
    },
    #[error("invalid quantity {quantity}: {reason}")]
    InvalidQuantity {
        quantity: Decimal,
        reason: &'static str,
    },
    #[error("invalid idempotency key: it {reason}")]
    InvalidIdempotencyKey { reason: &'static str },
    #[error(
        "idempotency key {key:?} was first used for a different request ({first}); keys are unique per customer"
    )]
    IdempotencyKeyReused { key: String, first: String },
    #[error("invalid {field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    #[error("reservation {0:?} not found")]
    ReservationNotFound(String),
    #[error("reservation {id:?} is {state}")]
    ReservationClosed { id: String, state: &'static str },
    #[error("lease {0:?} not found (expired, released, or lost in a restart: re-acquire)")]
    LeaseNotFound(String),
    #[error("grant {0:?} not found")]
    GrantNotFound(String),
    #[error("customer {0:?} has no subscription")]
    NoSubscription(String),
    #[error("feature {feature:?} has no emergency allowance on this customer's plan")]
    NoEmergencyAllowance { feature: String },
    #[error(
        "the emergency allowance of {feature:?} was already drawn in this window (resets at {resets_at})"
    )]
    EmergencyAlreadyDrawn {
        feature: String,
        resets_at: Timestamp,
    },
    #[error("too many events in one call: {count} (at most {max})")]
    TooManyEvents { count: usize, max: usize },
    #[error("catalog error: {0}")]
    Catalog(String),
    /// A catalog the running engine cannot take ([`crate::Engine::apply_catalog`]):
    /// every problem at its path in the catalog document.
    #[error("catalog refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    CatalogRefused(Vec<tollgate_core::catalog::CatalogError>),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Store(Arc<StoreError>),
    #[error("the engine is shut down")]
    ShutDown,
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(Arc::new(e))
    }
}

impl From<Arc<StoreError>> for EngineError {
    fn from(e: Arc<StoreError>) -> Self {
        EngineError::Store(e)
    }
}

impl EngineError {
    /// A stable snake_case code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownCustomer(_) => "unknown_customer",
            EngineError::CustomerDeleted(_) => "customer_deleted",
            EngineError::CustomerExists(_) => "customer_exists",
            EngineError::CustomerNotDeleted(_) => "customer_not_deleted",
            EngineError::UnknownFeature(_) => "unknown_feature",
            EngineError::UnknownPlan(_) => "unknown_plan",
            EngineError::WrongFeatureKind { .. } => "wrong_feature_kind",
            EngineError::InvalidQuantity { .. } => "invalid_quantity",
            EngineError::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            EngineError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            EngineError::InvalidInput { .. } => "invalid_input",
            EngineError::ReservationNotFound(_) => "reservation_not_found",
            EngineError::ReservationClosed { .. } => "reservation_closed",
            EngineError::LeaseNotFound(_) => "lease_not_found",
            EngineError::GrantNotFound(_) => "grant_not_found",
            EngineError::NoSubscription(_) => "no_subscription",
            EngineError::NoEmergencyAllowance { .. } => "no_emergency_allowance",
            EngineError::EmergencyAlreadyDrawn { .. } => "emergency_already_drawn",
            EngineError::TooManyEvents { .. } => "too_many_events",
            EngineError::Catalog(_) => "catalog",
            EngineError::CatalogRefused(_) => "catalog_refused",
            EngineError::Corrupt(_) => "corrupt",
            EngineError::Store(_) => "storage",
            EngineError::ShutDown => "shut_down",
        }
    }
}
