//! What is sent: the webhook body of an outbox event, and the readable
//! summary its e-mail is written from.

use serde_json::{Map, Value, json};
use tollgate_store::notify::OutboxEvent;

/// The JSON body POSTed for an event. The same bytes for every attempt of
/// every endpoint:
///
/// ```json
/// {"id": "evt_…", "type": "usage.threshold_reached",
///  "timestamp": "2026-11-23T12:00:00Z", "object": "customer:acme",
///  "sequence": 3, "customer_id": "acme", "data": { … }}
/// ```
///
/// `id` is stable (also the `webhook-id` header): a receiver drops duplicates
/// by it. `sequence` increases strictly per `object`: a receiver orders by it.
pub fn webhook_body(event: &OutboxEvent) -> Vec<u8> {
    let body = json!({
        "id": event.id,
        "type": event.event_type,
        "timestamp": event.created_at.to_string(),
        "object": event.object_key,
        "sequence": event.object_seq,
        "customer_id": event.customer_id,
        "data": event.payload,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An event told for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub subject: String,
    /// One sentence: what happened.
    pub headline: String,
    /// The numbers, as (label, value).
    pub facts: Vec<(String, String)>,
    /// What to do about it.
    pub action: String,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn field(data: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| text(data.get(*n)))
}

/// Describes an event: what was crossed, the numbers, what to do.
pub fn summarize(event: &OutboxEvent) -> Summary {
    let empty = Map::new();
    let data = event.payload.as_object().unwrap_or(&empty);
    let customer = event
        .customer_id
        .clone()
        .or_else(|| field(data, &["customer", "customer_id"]))
        .unwrap_or_else(|| "a customer".into());
    let feature = field(data, &["feature", "feature_key"]).unwrap_or_else(|| "a feature".into());
    let used = field(data, &["used", "value"]);
    let limit = field(data, &["limit", "threshold_value"]);
    let crossed = threshold_text(data.get("threshold"));
    let of = match (&used, &limit) {
        (Some(u), Some(l)) => format!(" ({u} of {l} used)"),
        _ => String::new(),
    };
    let (subject, headline) = match event.event_type.as_str() {
        "usage.threshold_reached" => {
            let p = crossed
                .clone()
                .map(|p| format!("{p} of "))
                .unwrap_or_default();
            (
                format!("{customer} has used {p}its {feature} limit"),
                format!("Customer {customer} has used {p}its {feature} limit{of}."),
            )
        }
        "usage.limit_exceeded" => (
            format!("{customer} is over its {feature} limit"),
            format!("Customer {customer} has gone over its {feature} limit{of}."),
        ),
        "usage.denied" => (
            format!("{customer} is being denied {feature}"),
            format!(
                "Requests of customer {customer} for {feature} are denied: the limit is reached{of}."
            ),
        ),
        "emergency.drawn" => (
            format!("{customer} drew its emergency pool"),
            format!("Customer {customer} drew its emergency pool for {feature}."),
        ),
        "grant.exhausted" => (
            format!("a grant of {customer} is used up"),
            format!("A grant of customer {customer} for {feature} is used up."),
        ),
        "invoice.upcoming_above" => {
            let amount = |k: &str| {
                let currency = field(data, &["currency"]).unwrap_or_default();
                field(data, &[k]).map_or_else(String::new, |a| format!("{a} {currency}"))
            };
            (
                format!(
                    "the upcoming invoice of {customer} is above {}",
                    amount("threshold")
                ),
                format!(
                    "The upcoming invoice of customer {customer} is projected at {}, above {}.",
                    amount("upcoming_total"),
                    amount("threshold")
                ),
            )
        }
        "usage.daily_summary" => {
            let day = field(data, &["day"]).unwrap_or_default();
            // Written late, after downtime (docs/alerts.md, "Missed days").
            let late = if data.get("backfilled") == Some(&Value::Bool(true)) {
                " Sent late (the service was down when the day ended): the period figures are as of now."
            } else {
                ""
            };
            (
                format!("usage of {customer} on {day}"),
                format!(
                    "Usage of customer {customer} on {day} (UTC), and in its current periods.{late}"
                ),
            )
        }
        other => (
            format!("{other} for {customer}"),
            format!("Event {other} for customer {customer}."),
        ),
    };
    let action = action_text(data.get("recommended_action"), &customer)
        .or_else(|| {
            field(data, &["upgrade_to"]).map(|p| format!("Upgrade {customer} to the plan {p:?} before the limit blocks requests."))
        })
        .unwrap_or_else(|| match event.event_type.as_str() {
            "usage.threshold_reached" | "usage.limit_exceeded" | "usage.denied" => format!(
                "Review {customer}'s usage (GET /v1/customers/{customer}/usage) and upgrade its plan or draw the emergency pool before the limit blocks requests."
            ),
            "invoice.upcoming_above" => format!(
                "Review the upcoming invoice (GET /v1/customers/{customer}/upcoming-invoice) and the usage behind it."
            ),
            "usage.daily_summary" => format!(
                "Nothing is required; the dashboard is GET /v1/customers/{customer}/usage."
            ),
            _ => format!("Review customer {customer} (GET /v1/customers/{customer})."),
        });
    let mut facts = vec![
        ("Event".to_string(), event.event_type.clone()),
        ("Customer".to_string(), customer.clone()),
    ];
    for (k, v) in data {
        if matches!(
            k.as_str(),
            "customer" | "customer_id" | "recommended_action"
        ) {
            continue;
        }
        if k == "features" {
            facts.extend(v.as_array().into_iter().flatten().filter_map(feature_fact));
            continue;
        }
        let value = match k.as_str() {
            "threshold" => threshold_text(Some(v)),
            "period" => period_text(v),
            _ => text(Some(v)),
        };
        if let Some(t) = value {
            facts.push((label(k), t));
        }
    }
    facts.push(("When".to_string(), event.created_at.to_string()));
    facts.push(("Event id".to_string(), event.id.clone()));
    Summary {
        subject: format!("[Tollgate] {subject}"),
        headline,
        facts,
        action,
    }
}

/// `80 %` for a percentage threshold, `1000 units` for an absolute one (a
/// bare number is a percentage).
fn threshold_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Object(t) => {
            let value = text(t.get("value"))?;
            Some(match t.get("type").and_then(Value::as_str) {
                Some("units") => format!("{value} units"),
                _ => format!("{value} %"),
            })
        }
        Value::Null => None,
        other => text(Some(other)).map(|p| format!("{p} %")),
    }
}

/// One feature of a daily summary: `1300 of 5000 used (26 %), 1200 on the day`.
fn feature_fact(f: &Value) -> Option<(String, String)> {
    let name = text(f.get("feature"))?;
    let used = text(f.get("used")).unwrap_or_else(|| "0".into());
    let mut line = match text(f.get("limit")) {
        Some(l) => format!("{used} of {l} used"),
        None => format!("{used} used (no limit)"),
    };
    if let Some(p) = text(f.get("percent")) {
        line.push_str(&format!(" ({p} %)"));
    }
    if let Some(d) = text(f.get("used_on_day")) {
        line.push_str(&format!(", {d} on the day"));
    }
    Some((name, line))
}

/// `start → end` of a `{"start", "end"}` period (`end` null = no end).
fn period_text(v: &Value) -> Option<String> {
    let start = text(v.get("start"))?;
    let end = text(v.get("end")).unwrap_or_else(|| "no end".into());
    Some(format!("{start} → {end}"))
}

/// The engine's recommended action (`{"type": "upgrade", "plan", "limit"}`
/// or `{"type": "draw_emergency_pool", "units"}`), or a sentence given as is.
fn action_text(v: Option<&Value>, customer: &str) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(a) => match a.get("type").and_then(Value::as_str)? {
            "upgrade" => {
                let plan = text(a.get("plan"))?;
                let limit = text(a.get("limit"))
                    .map(|l| format!(" (limit {l})"))
                    .unwrap_or_default();
                Some(format!(
                    "Upgrade {customer} to the plan {plan:?}{limit} before the limit blocks requests."
                ))
            }
            "draw_emergency_pool" => {
                let units = text(a.get("units")).unwrap_or_else(|| "its".into());
                Some(format!(
                    "Draw the emergency pool (POST /v1/customers/{customer}/emergency-pool): {units} extra units until the period ends."
                ))
            }
            _ => None,
        },
        _ => None,
    }
}

fn label(key: &str) -> String {
    let spaced = key.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => spaced,
    }
}

/// The plain-text e-mail body.
pub fn text_body(s: &Summary) -> String {
    let width = s
        .facts
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{}\n\n", s.headline);
    for (k, v) in &s.facts {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    out.push_str(&format!(
        "\nWhat to do: {}\n\n-- \nTollgate alerts\n",
        s.action
    ));
    out
}

/// The HTML alternative.
pub fn html_body(s: &Summary) -> String {
    let mut rows = String::new();
    for (k, v) in &s.facts {
        rows.push_str(&format!(
            "<tr><th style=\"text-align:left;padding:2px 12px 2px 0;color:#555\">{}</th><td>{}</td></tr>\n",
            escape(k),
            escape(v)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif;font-size:14px\">\n<p style=\"font-size:16px\"><strong>{}</strong></p>\n<table>\n{rows}</table>\n<p><strong>What to do:</strong> {}</p>\n<p style=\"color:#888\">Tollgate alerts</p>\n</body></html>\n",
        escape(&s.headline),
        escape(&s.action)
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> OutboxEvent {
        OutboxEvent {
            id: "evt_1".into(),
            event_type: "usage.threshold_reached".into(),
            customer_id: Some("acme".into()),
            object_key: "customer:acme".into(),
            object_seq: 2,
            dedup_key: None,
            payload: json!({
                "customer": "acme", "feature": "queries", "feature_kind": "metered",
                "threshold": {"type": "percent", "value": "80", "label": "80%"},
                "used": "80", "percent": "80", "limit": "100", "enforcement": "hard",
                "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
                "recommended_action": {"type": "upgrade", "plan": "starter", "limit": "1000"},
            }),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            seq: 7,
        }
    }

    #[test]
    fn a_threshold_reads_as_a_sentence_with_its_numbers() {
        let s = summarize(&event());
        assert_eq!(
            s.subject,
            "[Tollgate] acme has used 80 % of its queries limit"
        );
        assert_eq!(
            s.headline,
            "Customer acme has used 80 % of its queries limit (80 of 100 used)."
        );
        assert_eq!(
            s.action,
            "Upgrade acme to the plan \"starter\" (limit 1000) before the limit blocks requests."
        );
        let text = text_body(&s);
        assert!(text.contains("Limit") && text.contains("100"), "{text}");
        assert!(
            text.contains("Period        2026-11-01T00:00:00Z → 2026-12-01T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("Threshold     80 %"), "{text}");
        let html = html_body(&s);
        assert!(html.contains("&quot;starter&quot;"), "{html}");
    }

    #[test]
    fn the_billing_worker_events_read_as_sentences() {
        let mut e = event();
        e.event_type = "invoice.upcoming_above".into();
        e.payload = json!({
            "customer": "acme", "currency": "EUR", "threshold": "500", "upcoming_total": "612.4",
            "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
        });
        let s = summarize(&e);
        assert_eq!(
            s.subject,
            "[Tollgate] the upcoming invoice of acme is above 500 EUR"
        );
        assert_eq!(
            s.headline,
            "The upcoming invoice of customer acme is projected at 612.4 EUR, above 500 EUR."
        );
        e.event_type = "usage.daily_summary".into();
        e.payload = json!({
            "customer": "acme", "day": "2026-11-22",
            "features": [
                {"feature": "calls", "used": "1300", "limit": "5000", "percent": "26", "used_on_day": "1200"},
                {"feature": "minutes", "used": "30.5", "limit": null, "percent": null, "used_on_day": "30.5"},
            ],
        });
        let s = summarize(&e);
        assert_eq!(s.subject, "[Tollgate] usage of acme on 2026-11-22");
        let text = text_body(&s);
        assert!(
            text.contains("calls     1300 of 5000 used (26 %), 1200 on the day"),
            "{text}"
        );
        assert!(
            text.contains("minutes   30.5 used (no limit), 30.5 on the day"),
            "{text}"
        );
        assert!(!s.headline.contains("late"), "{}", s.headline);
        // A day summarized after downtime says so.
        e.payload["backfilled"] = json!(true);
        let s = summarize(&e);
        assert_eq!(
            s.headline,
            "Usage of customer acme on 2026-11-22 (UTC), and in its current periods. Sent late (the service was down when the day ended): the period figures are as of now."
        );
    }

    #[test]
    fn the_body_carries_the_id_and_the_object_sequence() -> Result<(), serde_json::Error> {
        let body: Value = serde_json::from_slice(&webhook_body(&event()))?;
        assert_eq!(body["id"], "evt_1");
        assert_eq!(body["object"], "customer:acme");
        assert_eq!(body["sequence"], 2);
        assert_eq!(body["data"]["limit"], "100");
        Ok(())
    }
}
