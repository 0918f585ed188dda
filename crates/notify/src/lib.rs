//! Tollgate's alert delivery. Events are written to the outbox (in the same
//! transaction as the change that caused them); this crate fans them out to
//! webhook endpoints (signed by the Standard Webhooks scheme) and e-mail
//! recipients (SMTP), with retries, a delivery log and replay.
