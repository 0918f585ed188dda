//! Signing and e-mail against third-party peers: the `standardwebhooks`
//! library from PyPI computes the same signatures, and a real SMTP server
//! (aiosmtpd) receives the alert e-mail.

mod common;

use common::{SmtpSink, standardwebhooks_sign};
use serde_json::json;
use tollgate_notify::SmtpConfig;
use tollgate_notify::email::Mailer;
use tollgate_notify::signing::{generate_secret, sign};
use tollgate_store::notify::OutboxEvent;

#[test]
fn our_signatures_equal_the_reference_librarys() -> Result<(), Box<dyn std::error::Error>> {
    for body in [
        r#"{"id":"evt_1","type":"usage.threshold_reached","data":{"used":"80"}}"#,
        r#"{"text":"Zürich – 100 % ✓"}"#,
        "",
    ] {
        let secret = generate_secret()?;
        let ours = sign(&secret, "evt_8f2c", 1_763_900_000, body.as_bytes())?;
        let theirs = standardwebhooks_sign(&secret, "evt_8f2c", 1_763_900_000, body);
        assert_eq!(ours, theirs, "body {body:?}");
    }
    Ok(())
}

fn threshold_event() -> Result<OutboxEvent, jiff::Error> {
    Ok(OutboxEvent {
        id: "evt_42".into(),
        event_type: "usage.threshold_reached".into(),
        customer_id: Some("acme".into()),
        object_key: "customer:acme".into(),
        object_seq: 1,
        dedup_key: None,
        payload: json!({
            "feature": "queries_per_month",
            "threshold": 80,
            "used": "80",
            "limit": "100",
            "upgrade_to": "starter",
        }),
        created_at: "2026-11-23T12:00:00Z".parse()?,
        seq: 1,
    })
}

#[tokio::test]
async fn an_alert_email_reaches_a_real_smtp_server_readable_in_text_and_html()
-> Result<(), Box<dyn std::error::Error>> {
    let sink = SmtpSink::start();
    let mailer = Mailer::new(&SmtpConfig {
        url: sink.url(),
        from: "Tollgate <alerts@tollgate.test>".into(),
    })?;
    mailer.send(&threshold_event()?, "ops@acme.test").await?;
    let mails = sink.wait_for(1);
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.rcpt, vec!["ops@acme.test".to_string()]);
    let raw = mail.raw.replace("=\r\n", "").replace("\r\n", "\n");
    assert!(
        raw.contains("From: Tollgate <alerts@tollgate.test>"),
        "{raw}"
    );
    assert!(raw.contains("To: ops@acme.test"), "{raw}");
    assert!(
        raw.contains("Subject: [Tollgate] acme has used 80 % of its queries_per_month limit"),
        "{raw}"
    );
    assert!(raw.contains("multipart/alternative"), "{raw}");
    assert!(raw.contains("text/plain"), "{raw}");
    assert!(raw.contains("text/html"), "{raw}");
    // The text part: what was crossed, the numbers, what to do.
    assert!(
        raw.contains(
            "Customer acme has used 80 % of its queries_per_month limit (80 of 100 used)."
        ),
        "{raw}"
    );
    assert!(
        raw.contains("What to do: Upgrade acme to the plan \"starter\""),
        "{raw}"
    );
    assert!(raw.contains("<table>"), "{raw}");
    Ok(())
}

#[tokio::test]
async fn a_refused_connection_is_an_error_not_a_panic() -> Result<(), Box<dyn std::error::Error>> {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mailer = Mailer::new(&SmtpConfig {
        url: format!("smtp://127.0.0.1:{port}"),
        from: "alerts@tollgate.test".into(),
    })?;
    let err = mailer
        .send(&threshold_event()?, "ops@acme.test")
        .await
        .err();
    assert!(err.is_some_and(|e| e.to_string().contains("SMTP")));
    Ok(())
}
