//! Tollgate's HTTP API.
//!
//! - `state`: what every handler shares (the engine, the store, the key ring).
//! - `error`: [`error::ApiError`], the one error type of the API, rendered once as
//!   RFC 9457 `application/problem+json`.
//! - `auth`: API keys (random, shown once, stored as SHA-256 digests), scopes and the
//!   [`auth::Principal`] extractor every route takes.
//! - `routes`: one module per resource, each exposing `routes()`.

pub mod auth;
pub mod error;
pub mod extract;
pub mod routes;
pub mod state;
