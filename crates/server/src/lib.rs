//! Tollgate's HTTP API.
//!
//! - `config`: layered configuration (defaults → TOML file → `TOLLGATE_*`
//!   environment → flags), checked as a whole at start.
//! - `app`: assembling the server (store, catalog, engine, keys, layers) and
//!   running it with a graceful shutdown.
//! - `state`: what every handler shares (the engine, the store, the key ring,
//!   the per-key rate limiter).
//! - `error`: [`error::ApiError`], the one error type of the API, rendered once as
//!   RFC 9457 `application/problem+json`.
//! - `auth`: API keys (random, shown once, stored as SHA-256 digests), scopes and the
//!   [`auth::Principal`] extractor every route takes.
//! - `extract`: JSON body and query extractors whose failures name the field.
//! - `dispatch`: the listener's service (`POST /v1/check` without the router).
//! - `linger`: the listener's connections read what a client still sends
//!   before closing, so an early answer (a 413) is not lost to a reset.
//! - `metrics`: the Prometheus recorder, request metrics and decision counters.
//! - `openapi`: the generated OpenAPI document and the `/docs` page.
//! - `routes`: one module per resource, each exposing `routes()`.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod linger;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
