//! Tollgate's alert delivery. Events are written to the outbox (in the same
//! transaction as the change that caused them); this crate fans them out to
//! webhook endpoints (signed by the Standard Webhooks scheme) and e-mail
//! recipients (SMTP), with retries, a delivery log and replay.
//!
//! - [`Notifier`]: the worker ([`Notifier::run`], one pass: [`Notifier::tick`])
//!   and the admin operations (endpoints, secret rotation, retry, replay, test);
//! - [`signing`]: Standard Webhooks signatures;
//! - [`schedule`]: the retry schedule with jitter and `Retry-After`;
//! - [`network`]: the SSRF guard on outgoing requests;
//! - [`email`] and [`message`]: what is sent.
//!
//! The rules are documented in `docs/webhooks.md`.

pub mod config;
pub mod email;
pub mod endpoints;
pub mod message;
pub mod network;
pub mod schedule;
pub mod signing;
pub mod worker;

pub use config::{NotifyConfig, SmtpConfig};
pub use endpoints::{EndpointChange, NewEndpoint};
pub use worker::{Notifier, NotifyError, Target, Tick};
