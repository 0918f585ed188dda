//! Tollgate's engine: decides "may this customer do this now?" in memory,
//! atomically, and records every unit of usage exactly once, durably.
//!
//! - Decisions run against per-customer state (a `parking_lot::Mutex` per
//!   customer in a `DashMap`), with feature keys interned to indices when the
//!   catalog is loaded.
//! - Every recorded operation joins a group commit (one writer task, one
//!   `Store::append_batch` per batch); the caller is answered only after its
//!   commit, and a failed commit undoes the decision.
//! - Counters are a cache of the ledger, rebuilt at start from the latest
//!   snapshot plus the ledger after it; idempotency keys are remembered in
//!   memory for a window (default 24 h) rebuilt from the ledger.
//!
//! See `docs/` (fragment `engine.md`) for the rules: burn order, idempotency
//! window and cost, backdating, rollover, what is persisted.

mod alerts;
mod clock;
mod compile;
mod engine;
mod error;
mod grants;
mod hash;
mod ids;
mod ingest;
mod lease;
mod metered;
mod model;
mod others;
mod rate;
mod recover;
mod served;
mod state;
mod summary;
mod sweep;
mod types;
mod writer;

pub use alerts::RecommendedAction;
pub use clock::{Clock, SystemClock, TestClock};
pub use engine::{Engine, EngineConfig, SubscribeOptions};
pub use error::EngineError;
pub use ids::{GRANT_PREFIX, MAX_IDEMPOTENCY_KEY_LEN, validate_idempotency_key};
pub use metered::MAX_QUANTITY;
pub use model::Kind;
pub use recover::OpenStats;
pub use sweep::IdempotencyFootprint;
pub use types::{
    CapDecision, CommitRequest, CustomerUpdate, Decision, DenyReason, EntitlementsSummary,
    FeatureSummary, IngestEvent, IngestResult, LeaseDecision, NewCustomer, NewGrant, UsageRequest,
    VerifyReport,
};
pub use writer::{WriterConfig, WriterStats};
