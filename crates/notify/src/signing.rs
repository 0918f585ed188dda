//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! A delivery carries three headers:
//!
//! - `webhook-id`: the event id (`evt_…`), the same for every attempt, so a
//!   receiver drops duplicates by it;
//! - `webhook-timestamp`: unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//!   keyed with the base64-decoded part of the secret after `whsec_`; during a
//!   secret rotation one such signature per live secret, space-separated.
//!
//! Secrets are stored as `whsec_<base64 key>`; an old secret still signing for a
//! grace period after a rotation is stored with its end: `whsec_<key>;until=<unix
//! seconds>` ([`SigningSecret`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use jiff::Timestamp;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
const UNTIL: &str = ";until=";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must start with \"whsec_\"")]
    Prefix,
    #[error("a webhook secret must be base64 after \"whsec_\": {0}")]
    Base64(String),
    #[error("a webhook secret must hold between 24 and 64 bytes (it holds {0})")]
    Length(usize),
    #[error("a webhook secret's end (;until=) must be unix seconds")]
    Until,
    #[error("no random source: {0}")]
    Random(String),
}

/// One stored secret: the `whsec_…` text and, for an old secret kept during a
/// rotation, when it stops signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningSecret {
    pub secret: String,
    pub until: Option<Timestamp>,
}

impl SigningSecret {
    /// Parses a stored secret (`whsec_…` or `whsec_…;until=SECONDS`).
    pub fn parse(stored: &str) -> Result<SigningSecret, SecretError> {
        let (secret, until) = match stored.split_once(UNTIL) {
            Some((s, u)) => {
                let secs: i64 = u.parse().map_err(|_| SecretError::Until)?;
                let at = Timestamp::from_second(secs).map_err(|_| SecretError::Until)?;
                (s, Some(at))
            }
            None => (stored, None),
        };
        decode_secret(secret)?;
        Ok(SigningSecret {
            secret: secret.to_string(),
            until,
        })
    }

    /// The stored form.
    pub fn stored(&self) -> String {
        match self.until {
            Some(at) => format!("{}{UNTIL}{}", self.secret, at.as_second()),
            None => self.secret.clone(),
        }
    }

    /// Whether it still signs at `now`.
    pub fn live_at(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// A new random secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> Result<String, SecretError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The HMAC key of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Prefix)?;
    let key = STANDARD
        .decode(b64)
        .map_err(|e| SecretError::Base64(e.to_string()))?;
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError::Length(key.len()));
    }
    Ok(key)
}

/// One signature: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let key = decode_secret(secret)?;
    let tag = mac(&key, id, timestamp, body)?.finalize().into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(tag)))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Result<HmacSha256, SecretError> {
    let mut m = HmacSha256::new_from_slice(key).map_err(|_| SecretError::Length(key.len()))?;
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Ok(m)
}

/// The `webhook-signature` header: one signature per secret still live at
/// `now` (stored forms), space-separated, the current secret first.
pub fn signature_header(
    stored_secrets: &[String],
    now: Timestamp,
    id: &str,
    body: &[u8],
) -> Result<String, SecretError> {
    let mut out = Vec::new();
    for s in stored_secrets {
        let s = SigningSecret::parse(s)?;
        if s.live_at(now) {
            out.push(sign(&s.secret, id, now.as_second(), body)?);
        }
    }
    Ok(out.join(" "))
}

/// Whether one of the `v1` signatures in `header` was made with `secret` over
/// this id, timestamp and body (what a receiver checks; constant-time).
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(key) = decode_secret(secret) else {
        return false;
    };
    header.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let Ok(given) = STANDARD.decode(b64) else {
            return false;
        };
        mac(&key, id, timestamp, body).is_ok_and(|m| m.verify_slice(&given).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() -> Result<(), SecretError> {
        let sig = sign(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{\"test\": 2432232314}",
        )?;
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{\"test\": 2432232314}",
            &sig
        ));
        assert!(!verify(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{\"test\": 2432232315}",
            &sig
        ));
        Ok(())
    }

    #[test]
    fn expired_secrets_stop_signing() -> Result<(), Box<dyn std::error::Error>> {
        let old = SigningSecret {
            secret: SECRET.into(),
            until: Some(Timestamp::from_second(1_000)?),
        };
        let new = generate_secret()?;
        let stored = vec![new.clone(), old.stored()];
        assert_eq!(SigningSecret::parse(&stored[1])?, old);
        let before = signature_header(&stored, Timestamp::from_second(999)?, "evt_1", b"{}")?;
        assert_eq!(before.split(' ').count(), 2);
        let after = signature_header(&stored, Timestamp::from_second(1_000)?, "evt_1", b"{}")?;
        assert_eq!(after.split(' ').count(), 1);
        assert!(verify(&new, "evt_1", 1_000, b"{}", &after));
        assert!(!verify(SECRET, "evt_1", 1_000, b"{}", &after));
        Ok(())
    }

    #[test]
    fn malformed_secrets_are_named() {
        assert_eq!(decode_secret("abc"), Err(SecretError::Prefix));
        assert!(matches!(
            decode_secret("whsec_!!"),
            Err(SecretError::Base64(_))
        ));
        assert_eq!(decode_secret("whsec_AAAA"), Err(SecretError::Length(3)));
    }
}
