//! `tollgate subscriptions …`: plan changes, cancellation, scheduled changes,
//! trials, history and version migration on a running server.

use std::fmt::Write as _;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::CliError;
use super::client::{self, Client};
use super::server::runtime;
use crate::cli::{ClientArgs, ProrationArg, SubscriptionsCommand};

fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    Client::new(&args.url, args.api_key.clone())
}

/// `/v1/customers/{id}/subscription{rest}`.
fn path(customer: &str, rest: &str) -> String {
    format!("/v1/customers/{}/subscription{rest}", client::enc(customer))
}

/// Sets `body[key]` when the value is given.
fn put<T: Into<Value>>(body: &mut Value, key: &str, v: Option<T>) {
    if let Some(v) = v {
        body[key] = v.into();
    }
}

/// `tollgate subscriptions …`.
pub fn run(cmd: SubscriptionsCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    let (client, answer, text): (ClientArgs, Value, fn(&Value) -> String) = match cmd {
        SubscriptionsCommand::Change {
            client,
            customer,
            plan,
            version,
            preview,
            at_period_end,
            now,
            proration,
            force,
            reason,
        } => {
            let mut body = json!({ "plan": plan, "preview": preview, "force": force });
            put(&mut body, "version", version);
            put(
                &mut body,
                "timing",
                match (at_period_end, now) {
                    (true, _) => Some("period_end"),
                    (_, true) => Some("immediately"),
                    _ => None,
                },
            );
            put(
                &mut body,
                "proration_behavior",
                proration.map(|p| match p {
                    ProrationArg::NextInvoice => "next_invoice",
                    ProrationArg::InvoiceNow => "invoice_now",
                    ProrationArg::None => "none",
                }),
            );
            put(&mut body, "reason", reason);
            let c = connect(&client)?;
            let answer = rt.block_on(c.post(&path(&customer, "/change"), &body))?;
            (client, answer, change_text)
        }
        SubscriptionsCommand::Cancel {
            client,
            customer,
            now,
            no_prorate,
            reason,
        } => {
            let mut body = json!({ "at_period_end": !now, "prorate": !no_prorate });
            put(&mut body, "reason", reason);
            let c = connect(&client)?;
            let answer = rt.block_on(c.post(&path(&customer, "/cancel"), &body))?;
            (client, answer, outcome_text)
        }
        SubscriptionsCommand::Scheduled {
            client,
            customer,
            cancel,
        } => {
            let c = connect(&client)?;
            let p = path(&customer, "/scheduled");
            let answer = if cancel {
                let canceled = rt.block_on(c.call(Method::DELETE, &p, None))?;
                json!({ "scheduled": canceled })
            } else {
                rt.block_on(c.get(&p))?
            };
            (client, answer, scheduled_text)
        }
        SubscriptionsCommand::Trial {
            client,
            customer,
            plan,
            days,
            convert,
        } => {
            let c = connect(&client)?;
            let answer = if convert {
                rt.block_on(c.post(&path(&customer, "/trial/convert"), &json!({})))?
            } else {
                let mut body = json!({ "plan": plan });
                put(&mut body, "trial_days", days);
                rt.block_on(c.post(&path(&customer, "/trial"), &body))?
            };
            (client, answer, outcome_text)
        }
        SubscriptionsCommand::History { client, customer } => {
            let c = connect(&client)?;
            let answer = rt.block_on(c.get(&path(&customer, "/history")))?;
            (client, answer, history_text)
        }
        SubscriptionsCommand::Migrate {
            client,
            plan,
            from_version,
            to_version,
            preview,
            force,
            reason,
        } => {
            let mut body = json!({ "preview": preview, "force": force });
            put(&mut body, "from_version", from_version);
            put(&mut body, "to_version", to_version);
            put(&mut body, "reason", reason);
            let c = connect(&client)?;
            let p = format!("/v1/admin/plans/{}/migrate", client::enc(&plan));
            let answer = rt.block_on(c.post(&p, &body))?;
            (client, answer, migration_text)
        }
    };
    if client.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", text(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON string or number as text ("" when absent).
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn scheduled_line(s_: &Value) -> String {
    let what = match s(&s_["action"]).as_str() {
        "change_plan" => format!("change to {} v{}", s(&s_["to_plan"]), s(&s_["to_version"])),
        "cancel" => "cancellation".to_string(),
        "trial_expire" => "trial expiry".to_string(),
        other => other.to_string(),
    };
    format!(
        "{} {what} at {} ({})",
        s(&s_["id"]),
        s(&s_["effective_at"]),
        s(&s_["state"])
    )
}

fn change_text(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} {} v{} → {} v{} ({}, {}, effective {})",
        s(&v["state"]),
        s(&v["customer_id"]),
        s(&v["from_plan"]),
        s(&v["from_version"]),
        s(&v["to_plan"]),
        s(&v["to_version"]),
        s(&v["direction"]),
        s(&v["timing"]).replace('_', " "),
        s(&v["effective_at"]),
    );
    let lines = list(&v["proration_lines"]);
    if !lines.is_empty() {
        let _ = writeln!(out, "proration:");
        for l in lines {
            let _ = writeln!(out, "  {:>12}  {}", s(&l["amount"]), s(&l["description"]));
        }
        let _ = writeln!(out, "  {:>12}  total", s(&v["proration_total"]));
    }
    let gained: Vec<String> = list(&v["features_gained"]).iter().map(s).collect();
    if !gained.is_empty() {
        let _ = writeln!(out, "gains:    {}", gained.join(", "));
    }
    for l in list(&v["features_lost"]) {
        let _ = writeln!(
            out,
            "loses:    {} at {}",
            s(&l["feature"]),
            s(&l["lost_at"])
        );
    }
    for l in list(&v["limits"]) {
        let or_none = |x: &Value| {
            let t = s(x);
            if t.is_empty() { "-".to_string() } else { t }
        };
        let _ = writeln!(
            out,
            "limit:    {} {} → {}",
            s(&l["feature"]),
            or_none(&l["before"]),
            or_none(&l["after"])
        );
    }
    for b in list(&v["blockers"]) {
        let _ = writeln!(out, "blocker:  {}", s(&b["message"]));
    }
    for b in list(&v["excess"]) {
        let _ = writeln!(out, "forced:   {}", s(&b["message"]));
    }
    let items = list(&v["pending_items"]);
    if !items.is_empty() {
        let ids: Vec<String> = items.iter().map(|i| s(&i["amount"])).collect();
        let _ = writeln!(out, "next invoice gets: {}", ids.join(", "));
    }
    if !v["scheduled"].is_null() {
        let _ = writeln!(out, "scheduled: {}", scheduled_line(&v["scheduled"]));
    }
    if !v["invoice_id"].is_null() {
        let _ = writeln!(out, "invoice: {}", s(&v["invoice_id"]));
    }
    out
}

fn outcome_text(v: &Value) -> String {
    let sub = &v["subscription"];
    let mut out = format!(
        "{}: {} on {} v{}, {}",
        s(&v["state"]),
        s(&sub["customer_id"]),
        s(&sub["plan"]),
        s(&sub["plan_version"]),
        s(&sub["status"]),
    );
    if !sub["trial_ends_at"].is_null() {
        let _ = write!(out, " until {}", s(&sub["trial_ends_at"]));
    }
    out.push('\n');
    if !v["scheduled"].is_null() {
        let _ = writeln!(out, "scheduled: {}", scheduled_line(&v["scheduled"]));
    }
    out
}

fn scheduled_text(v: &Value) -> String {
    if v["scheduled"].is_null() {
        "nothing scheduled\n".to_string()
    } else {
        format!("{}\n", scheduled_line(&v["scheduled"]))
    }
}

fn history_text(v: &Value) -> String {
    let entries = list(&v["data"]);
    if entries.is_empty() {
        return "no plan changes\n".to_string();
    }
    let mut out = String::new();
    for c in entries {
        let from = if c["from_plan"].is_null() {
            "-".to_string()
        } else {
            format!("{} v{}", s(&c["from_plan"]), s(&c["from_version"]))
        };
        let _ = write!(
            out,
            "{}  {:<13} {} → {} v{}  by {}",
            s(&c["effective_at"]),
            s(&c["kind"]),
            from,
            s(&c["to_plan"]),
            s(&c["to_version"]),
            s(&c["actor"]),
        );
        if !c["reason"].is_null() {
            let _ = write!(out, "  ({})", s(&c["reason"]));
        }
        out.push('\n');
    }
    out
}

fn migration_text(v: &Value) -> String {
    let mut out = String::new();
    let preview = s(&v["state"]) == "preview";
    let _ = writeln!(
        out,
        "{}: {} → v{}",
        s(&v["state"]),
        s(&v["plan"]),
        s(&v["to_version"])
    );
    for m in list(&v["migrated"]) {
        let _ = writeln!(
            out,
            "moved    {} from v{}",
            s(&m["customer_id"]),
            s(&m["from_version"])
        );
    }
    for c in list(&v["customers"]) {
        let label = if preview { "customer" } else { "skipped " };
        let _ = writeln!(
            out,
            "{label} {} (v{})",
            s(&c["customer_id"]),
            s(&c["from_version"])
        );
        for g in list(&c["gains"]) {
            let _ = writeln!(out, "  + {}", s(g));
        }
        for l in list(&c["losses"]) {
            let _ = writeln!(out, "  - {}", s(l));
        }
        for b in list(&c["blockers"]) {
            let _ = writeln!(out, "  ! {}", s(&b["message"]));
        }
    }
    out
}
