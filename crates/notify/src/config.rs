//! The `[notify]` section of the server's configuration.
//!
//! ```toml
//! [notify]
//! enabled = true
//! poll_interval_ms = 50            # how often the outbox is looked at
//! retry_schedule_secs = [5, 30, 120, 600, 3600, 14400, 43200, 86400]
//! jitter_percent = 20
//! disable_after_hours = 72         # an endpoint failing this long is disabled
//! request_timeout_secs = 10
//! max_in_flight = 32               # concurrent deliveries
//! rotation_grace_hours = 24        # an old secret keeps signing this long
//! allow_private_networks = false   # SSRF guard (see docs/webhooks.md)
//! allowed_networks = []            # e.g. ["10.1.0.0/16", "127.0.0.1/32"]
//! admin_emails = []                # operators who get every alert by e-mail
//! email_event_types = []           # which events are e-mailed (empty = all but
//!                                  # usage.daily_summary, which must be listed)
//!
//! [notify.smtp]                    # no section = no e-mail
//! url = "smtp://127.0.0.1:25"      # smtps://user:pass@host:465, smtp://…?tls=required
//! from = "Tollgate <alerts@example.com>"
//! ```

use ipnet::IpNet;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::network::NetworkPolicy;
use crate::schedule::{DEFAULT_DELAYS_SECS, RetrySchedule};

/// Alert delivery settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Runs the delivery worker in `tollgate serve`.
    pub enabled: bool,
    /// How often the worker looks at the outbox and the due deliveries
    /// (it is also woken at once by the admin API's retry, replay and test).
    pub poll_interval_ms: u64,
    /// Waits between attempts; after the last one a delivery gives up.
    pub retry_schedule_secs: Vec<u64>,
    /// Spread of each wait, ± percent.
    pub jitter_percent: u32,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after_hours: u64,
    /// Per HTTP attempt (connect and response).
    pub request_timeout_secs: u64,
    /// Deliveries attempted at once.
    pub max_in_flight: usize,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_grace_hours: u64,
    /// Lets webhooks reach private, loopback and link-local addresses.
    pub allow_private_networks: bool,
    /// Networks allowed although private.
    pub allowed_networks: Vec<IpNet>,
    /// Operators who receive every e-mailed alert.
    pub admin_emails: Vec<String>,
    /// Event types sent by e-mail (empty = all except the opt-in
    /// `usage.daily_summary`, sent only when listed).
    pub email_event_types: Vec<String>,
    /// The SMTP relay; without it no e-mail is sent.
    pub smtp: Option<SmtpConfig>,
}

/// Where e-mail goes out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS),
    /// `smtps://user:password@host:465` (TLS).
    pub url: String,
    /// The sender: `alerts@example.com` or `Name <alerts@example.com>`.
    pub from: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            poll_interval_ms: 50,
            retry_schedule_secs: DEFAULT_DELAYS_SECS
                .iter()
                .map(|s| u64::try_from(*s).unwrap_or(0))
                .collect(),
            jitter_percent: 20,
            disable_after_hours: 72,
            request_timeout_secs: 10,
            max_in_flight: 32,
            rotation_grace_hours: 24,
            allow_private_networks: false,
            allowed_networks: Vec::new(),
            admin_emails: Vec::new(),
            email_event_types: Vec::new(),
            smtp: None,
        }
    }
}

impl NotifyConfig {
    /// Whether events of this type are e-mailed: an SMTP relay is configured
    /// and `email_event_types` takes the type (empty = every type except the
    /// opt-in ones such as `usage.daily_summary`, which must be listed).
    pub fn emails(&self, event_type: &str) -> bool {
        self.smtp.is_some() && crate::worker::matches_type(&self.email_event_types, event_type)
    }

    /// Every problem, each naming its setting (`notify.…`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.poll_interval_ms == 0 {
            out.push("notify.poll_interval_ms: must be at least 1".into());
        }
        if self.retry_schedule_secs.is_empty() {
            out.push("notify.retry_schedule_secs: must hold at least one wait".into());
        }
        if self.jitter_percent > 100 {
            out.push("notify.jitter_percent: must be between 0 and 100".into());
        }
        if self.disable_after_hours == 0 {
            out.push("notify.disable_after_hours: must be at least 1".into());
        }
        if self.request_timeout_secs == 0 {
            out.push("notify.request_timeout_secs: must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            out.push("notify.max_in_flight: must be at least 1".into());
        }
        for (i, e) in self.admin_emails.iter().enumerate() {
            if e.parse::<lettre::Address>().is_err() {
                out.push(format!(
                    "notify.admin_emails[{i}]: {e:?} is not an e-mail address"
                ));
            }
        }
        if let Some(smtp) = &self.smtp {
            if let Err(e) = crate::email::transport(&smtp.url) {
                out.push(format!("notify.smtp.url: {e}"));
            }
            if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                out.push(format!(
                    "notify.smtp.from: {:?} is not a sender address",
                    smtp.from
                ));
            }
        }
        if !self.admin_emails.is_empty() && self.smtp.is_none() {
            out.push("notify.admin_emails: e-mail needs [notify.smtp] (url, from)".into());
        }
        out
    }

    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            delays: self
                .retry_schedule_secs
                .iter()
                .map(|s| SignedDuration::from_secs(i64::try_from(*s).unwrap_or(i64::MAX)))
                .collect(),
            jitter_percent: self.jitter_percent,
        }
    }

    pub fn network_policy(&self) -> NetworkPolicy {
        NetworkPolicy {
            allow_private_networks: self.allow_private_networks,
            allowed_networks: self.allowed_networks.clone(),
        }
    }

    pub fn disable_after(&self) -> SignedDuration {
        SignedDuration::from_hours(
            i64::try_from(self.disable_after_hours).unwrap_or(i64::MAX / 3600),
        )
    }

    pub fn rotation_grace(&self) -> SignedDuration {
        SignedDuration::from_hours(
            i64::try_from(self.rotation_grace_hours).unwrap_or(i64::MAX / 3600),
        )
    }
}
