//! E-mail through SMTP (`lettre`): a plain-text body with an HTML alternative,
//! written from [`crate::message::summarize`].

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tollgate_store::notify::OutboxEvent;

use crate::config::SmtpConfig;
use crate::message::{html_body, summarize, text_body};

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the SMTP URL is invalid: {0}")]
    Url(String),
    #[error("{0:?} is not an e-mail address")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("the SMTP server refused or failed: {message}")]
    Smtp { code: Option<u16>, message: String },
    #[error("no SMTP relay is configured ([notify.smtp])")]
    NotConfigured,
}

impl EmailError {
    /// The SMTP reply code, when the server gave one (recorded as the
    /// attempt's status).
    pub fn code(&self) -> Option<u16> {
        match self {
            EmailError::Smtp { code, .. } => *code,
            _ => None,
        }
    }
}

/// An SMTP transport from a URL (`smtp://host:port`, `smtps://…`, `?tls=required`).
pub fn transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, EmailError> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| EmailError::Url(e.to_string()))?
        .timeout(Some(std::time::Duration::from_secs(30)))
        .build())
}

/// Sends alert e-mails.
#[derive(Clone, Debug)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &SmtpConfig) -> Result<Mailer, EmailError> {
        Ok(Mailer {
            transport: transport(&config.url)?,
            from: config
                .from
                .parse()
                .map_err(|_| EmailError::Address(config.from.clone()))?,
        })
    }

    /// The message for `event` to `to`.
    pub fn message(&self, event: &OutboxEvent, to: &str) -> Result<Message, EmailError> {
        let to: Mailbox = to.parse().map_err(|_| EmailError::Address(to.into()))?;
        let summary = summarize(event);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(summary.subject.clone())
            .message_id(Some(format!("<{}.{}@tollgate>", event.id, event.seq)))
            .multipart(MultiPart::alternative_plain_html(
                text_body(&summary),
                html_body(&summary),
            ))
            .map_err(|e| EmailError::Build(e.to_string()))
    }

    /// Sends the alert for `event` to `to`.
    pub async fn send(&self, event: &OutboxEvent, to: &str) -> Result<(), EmailError> {
        let message = self.message(event, to)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| EmailError::Smtp {
                code: e.status().and_then(|c| c.to_string().parse().ok()),
                message: e.to_string(),
            })
    }
}
