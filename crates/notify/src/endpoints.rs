//! Webhook endpoints: create, change, rotate the secret, delete.

use jiff::Timestamp;
use tollgate_store::notify::EndpointRecord;

use crate::network::check_url;
use crate::signing::{SigningSecret, decode_secret, generate_secret};
use crate::worker::{Notifier, NotifyError, health, new_id};

/// A new endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    /// Empty = every event type but the opt-in `usage.daily_summary`;
    /// `usage.*` = a prefix.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    /// A `whsec_…` secret to use (to share one with another sender); minted when absent.
    pub secret: Option<String>,
}

/// Changes to an endpoint; `None` = unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Enabling an endpoint also clears its failure state.
    pub enabled: Option<bool>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
}

const MAX_EVENT_TYPES: usize = 100;

fn check_event_types(types: &[String]) -> Result<(), NotifyError> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(NotifyError::Invalid {
            field: "event_types",
            message: format!("at most {MAX_EVENT_TYPES} entries"),
        });
    }
    for (i, t) in types.iter().enumerate() {
        let body = t.strip_suffix('*').unwrap_or(t);
        let valid = !t.is_empty()
            && t.len() <= 100
            && body
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if !valid {
            return Err(NotifyError::Invalid {
                field: "event_types",
                message: format!(
                    "entry {i} ({t:?}) must be an event type such as usage.threshold_reached, or a prefix such as usage.*"
                ),
            });
        }
    }
    Ok(())
}

fn check_description(d: Option<&String>) -> Result<(), NotifyError> {
    if d.is_some_and(|d| d.chars().count() > 500) {
        return Err(NotifyError::Invalid {
            field: "description",
            message: "at most 500 characters".into(),
        });
    }
    Ok(())
}

impl Notifier {
    fn check_endpoint_url(&self, url: &str) -> Result<(), NotifyError> {
        if url.len() > 2048 {
            return Err(NotifyError::Invalid {
                field: "url",
                message: "at most 2048 characters".into(),
            });
        }
        check_url(self.policy(), url)
            .map(|_| ())
            .map_err(|message| NotifyError::Invalid {
                field: "url",
                message,
            })
    }

    /// Creates an endpoint (healthy), with a minted secret unless one is given.
    pub async fn create_endpoint(&self, new: NewEndpoint) -> Result<EndpointRecord, NotifyError> {
        self.check_endpoint_url(&new.url)?;
        check_event_types(&new.event_types)?;
        check_description(new.description.as_ref())?;
        let secret = match new.secret {
            Some(s) => {
                decode_secret(&s).map_err(|e| NotifyError::Invalid {
                    field: "secret",
                    message: e.to_string(),
                })?;
                s
            }
            None => generate_secret()?,
        };
        let now = self.now();
        let endpoint = EndpointRecord {
            id: new_id("whe_")?,
            url: new.url,
            event_types: new.event_types,
            enabled: new.enabled,
            secrets: vec![secret],
            state: health::HEALTHY.into(),
            failing_since: None,
            description: new.description,
            created_at: now,
            updated_at: now,
        };
        self.store().notify().put_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    pub async fn endpoint(&self, id: &str) -> Result<EndpointRecord, NotifyError> {
        self.store()
            .notify()
            .get_endpoint(id)
            .await?
            .ok_or_else(|| NotifyError::NotFound {
                what: "endpoint",
                id: id.into(),
            })
    }

    pub async fn update_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<EndpointRecord, NotifyError> {
        let mut e = self.endpoint(id).await?;
        if let Some(url) = change.url {
            self.check_endpoint_url(&url)?;
            e.url = url;
        }
        if let Some(types) = change.event_types {
            check_event_types(&types)?;
            e.event_types = types;
        }
        if let Some(d) = change.description {
            check_description(d.as_ref())?;
            e.description = d;
        }
        if let Some(enabled) = change.enabled {
            if enabled && !e.enabled {
                e.state = health::HEALTHY.into();
                e.failing_since = None;
            }
            e.enabled = enabled;
        }
        e.updated_at = self.now();
        self.store().notify().put_endpoint(&e).await?;
        Ok(e)
    }

    /// A new signing secret; the previous one keeps signing (a second
    /// signature in `webhook-signature`) for `rotation_grace_hours`, so
    /// receivers can switch without losing a delivery. Secrets whose grace is
    /// over are dropped. Returns the endpoint and the new secret.
    pub async fn rotate_secret(&self, id: &str) -> Result<(EndpointRecord, String), NotifyError> {
        let mut e = self.endpoint(id).await?;
        let now = self.now();
        let until = now
            .checked_add(self.config().rotation_grace())
            .unwrap_or(Timestamp::MAX);
        let fresh = generate_secret()?;
        let mut secrets = vec![fresh.clone()];
        for stored in &e.secrets {
            let mut s = SigningSecret::parse(stored)?;
            if !s.live_at(now) {
                continue;
            }
            s.until = Some(s.until.map_or(until, |u| u.min(until)));
            secrets.push(s.stored());
        }
        e.secrets = secrets;
        e.updated_at = now;
        self.store().notify().put_endpoint(&e).await?;
        Ok((e, fresh))
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<(), NotifyError> {
        if self.store().notify().delete_endpoint(id).await? {
            Ok(())
        } else {
            Err(NotifyError::NotFound {
                what: "endpoint",
                id: id.into(),
            })
        }
    }
}
