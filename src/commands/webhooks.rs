//! `tollgate webhooks …`: webhook endpoints and the delivery log of a running
//! server (admin key), as the admin API under `/v1/webhooks` offers them.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{self, Client};
use super::{CliError, server::runtime};
use crate::cli::ClientArgs;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint; prints its signing secret (whsec_…).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Where to POST events (http or https).
        #[arg(value_name = "URL")]
        endpoint_url: String,
        /// An event type to deliver (repeat; `usage.*` = a prefix; none = all).
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List endpoints with their state.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an endpoint, its secret and its state.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Change an endpoint.
    Update {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// A new URL to POST events to.
        #[arg(long = "endpoint-url", value_name = "URL")]
        endpoint_url: Option<String>,
        /// Replace the event types (repeat).
        #[arg(long = "event-type", conflicts_with = "all_events")]
        event_types: Vec<String>,
        /// Deliver every event type (but the opt-in usage.daily_summary).
        #[arg(long)]
        all_events: bool,
        /// Enable it (also clears its failure state).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an endpoint.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// A new signing secret; the old one signs too for the grace period (24 h).
    RotateSecret {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Send a test event to an endpoint now.
    Test {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// The delivery log, newest first.
    Deliveries {
        #[command(flatten)]
        client: ClientArgs,
        /// Only to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only to this e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Only of this event.
        #[arg(long)]
        event: Option<String>,
        /// At most this many (1-100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One delivery with every attempt.
    Delivery {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Send a delivery again now.
    Retry {
        #[command(flatten)]
        client: ClientArgs,
        delivery_id: String,
    },
    /// Send the events of a time range again (RFC 3339 instants).
    Replay {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Only to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn endpoint_line(e: &Value) -> String {
    let types = match e["event_types"].as_array() {
        Some(t) if !t.is_empty() => t
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => "all events".into(),
    };
    let state = match (e["enabled"].as_bool(), e["failing_since"].as_str()) {
        (Some(false), _) if e["state"] != "disabled" => "off".to_string(),
        (_, Some(since)) => format!("{} since {since}", text(e, "state")),
        _ => text(e, "state"),
    };
    format!(
        "{}  {}  [{}]  {}",
        text(e, "id"),
        text(e, "url"),
        types,
        state
    )
}

fn endpoint_details(e: &Value) -> String {
    let mut out = format!("{}\n", endpoint_line(e));
    out.push_str(&format!("  secret       {}\n", text(e, "secret")));
    if let Some(until) = e["previous_secret_expires_at"].as_str() {
        out.push_str(&format!("  old secret   still signs until {until}\n"));
    }
    out.push_str(&format!("  description  {}\n", text(e, "description")));
    out
}

fn delivery_line(d: &Value) -> String {
    let last = match (d["last_status"].as_u64(), d["last_error"].as_str()) {
        (Some(s), _) => format!("last {s}"),
        (None, Some(e)) => format!("last error: {e}"),
        _ => String::new(),
    };
    let next = d["next_attempt_at"]
        .as_str()
        .map(|n| format!(", next {n}"))
        .unwrap_or_default();
    format!(
        "{}  {}  {}  {}  attempts {}  {last}{next}",
        text(d, "id"),
        text(d, "event_id"),
        text(d, "target"),
        text(d, "state"),
        text(d, "attempts"),
    )
}

fn print(json_out: bool, v: &Value, human: impl FnOnce(&Value) -> String) -> Result<(), CliError> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", human(v));
    }
    Ok(())
}

/// `tollgate webhooks ...`.
pub fn run(cmd: WebhooksCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    let connect = |a: &ClientArgs| Client::new(&a.url, a.api_key.clone());
    let ep = |id: &str| format!("/v1/webhooks/endpoints/{}", client::enc(id));
    match cmd {
        WebhooksCommand::Create {
            client,
            endpoint_url: url,
            event_types,
            description,
            disabled,
        } => {
            let c = connect(&client)?;
            let body = json!({"url": url, "event_types": event_types,
                "description": description, "enabled": !disabled});
            let e = rt.block_on(c.post("/v1/webhooks/endpoints", &body))?;
            print(client.json, &e, |e| {
                format!("created {}", endpoint_details(e))
            })?;
        }
        WebhooksCommand::List { client } => {
            let c = connect(&client)?;
            let page = rt.block_on(c.get("/v1/webhooks/endpoints"))?;
            print(client.json, &page, |p| {
                let rows: Vec<String> = p["data"]
                    .as_array()
                    .map(|a| a.iter().map(endpoint_line).collect())
                    .unwrap_or_default();
                if rows.is_empty() {
                    "no webhook endpoints\n".into()
                } else {
                    rows.join("\n") + "\n"
                }
            })?;
        }
        WebhooksCommand::Show { client, id } => {
            let c = connect(&client)?;
            let e = rt.block_on(c.get(&ep(&id)))?;
            print(client.json, &e, endpoint_details)?;
        }
        WebhooksCommand::Update {
            client,
            id,
            endpoint_url: url,
            event_types,
            all_events,
            enable,
            disable,
            description,
        } => {
            let c = connect(&client)?;
            let mut body = json!({});
            if let Some(u) = url {
                body["url"] = json!(u);
            }
            if all_events {
                body["event_types"] = json!([]);
            } else if !event_types.is_empty() {
                body["event_types"] = json!(event_types);
            }
            if enable || disable {
                body["enabled"] = json!(enable);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let e = rt.block_on(c.call(Method::PATCH, &ep(&id), Some(&body)))?;
            print(client.json, &e, |e| {
                format!("updated {}", endpoint_details(e))
            })?;
        }
        WebhooksCommand::Delete { client, id } => {
            let c = connect(&client)?;
            rt.block_on(c.call(Method::DELETE, &ep(&id), None))?;
            print(client.json, &json!({"deleted": id}), |_| {
                format!("deleted {id}\n")
            })?;
        }
        WebhooksCommand::RotateSecret { client, id } => {
            let c = connect(&client)?;
            let e = rt.block_on(c.post(&format!("{}/rotate-secret", ep(&id)), &json!({})))?;
            print(client.json, &e, |e| {
                format!("new secret for {}", endpoint_details(e))
            })?;
        }
        WebhooksCommand::Test { client, id } => {
            let c = connect(&client)?;
            let d = rt.block_on(c.post(&format!("{}/test", ep(&id)), &json!({})))?;
            print(client.json, &d, |d| {
                format!(
                    "test event {} queued as delivery {} (see `tollgate webhooks delivery {}`)\n",
                    text(d, "event_id"),
                    text(d, "id"),
                    text(d, "id")
                )
            })?;
        }
        WebhooksCommand::Deliveries {
            client,
            endpoint,
            email,
            event,
            limit,
        } => {
            let c = connect(&client)?;
            let path = format!(
                "/v1/webhooks/deliveries{}",
                client::query(&[
                    ("endpoint_id", endpoint),
                    ("email", email),
                    ("event_id", event),
                    ("limit", Some(limit.to_string())),
                ])
            );
            let page = rt.block_on(c.get(&path))?;
            print(client.json, &page, |p| {
                let rows: Vec<String> = p["data"]
                    .as_array()
                    .map(|a| a.iter().map(delivery_line).collect())
                    .unwrap_or_default();
                if rows.is_empty() {
                    "no deliveries\n".into()
                } else {
                    rows.join("\n") + "\n"
                }
            })?;
        }
        WebhooksCommand::Delivery { client, id } => {
            let c = connect(&client)?;
            let path = format!("/v1/webhooks/deliveries/{}", client::enc(&id));
            let d = rt.block_on(c.get(&path))?;
            print(client.json, &d, |d| {
                let mut out = format!("{}\n", delivery_line(d));
                for a in d["log"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  #{} {}  {}  {} ms  {}\n",
                        text(a, "attempt"),
                        text(a, "at"),
                        text(a, "status"),
                        text(a, "duration_ms"),
                        a["error"].as_str().unwrap_or("")
                    ));
                }
                out
            })?;
        }
        WebhooksCommand::Retry {
            client,
            delivery_id,
        } => {
            let c = connect(&client)?;
            let path = format!(
                "/v1/webhooks/deliveries/{}/retry",
                client::enc(&delivery_id)
            );
            let d = rt.block_on(c.post(&path, &json!({})))?;
            print(client.json, &d, |d| {
                format!("queued {}\n", delivery_line(d))
            })?;
        }
        WebhooksCommand::Replay {
            client,
            from,
            to,
            endpoint,
        } => {
            let c = connect(&client)?;
            let body = json!({"from": from, "to": to, "endpoint_id": endpoint});
            let r = rt.block_on(c.post("/v1/webhooks/replay", &body))?;
            print(client.json, &r, |r| {
                format!("{} deliveries queued\n", text(r, "queued"))
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
