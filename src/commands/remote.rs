//! The subcommands that talk to a running server: `customers`, `usage` and
//! `plans apply`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::catalog::{Catalog, describe_charge_price};

use super::client::{self, Client, Customer, Decision, Entitlements, Ingested, Page, Problem};
use super::{CliError, load, server::runtime};
use crate::cli::{ClientArgs, CustomersCommand, UsageCommand};
use crate::render;

/// Events per POST /v1/events in an import.
pub const IMPORT_CHUNK: usize = 10_000;
/// Exit status of a denial or of rejected rows: the server said no.
pub const DENIED: u8 = 3;

fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    Client::new(&args.url, args.api_key.clone())
}

fn print_json(v: &Value) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `tollgate customers ...`.
pub fn customers(cmd: CustomersCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    match cmd {
        CustomersCommand::Create {
            client,
            id,
            name,
            email,
            plan,
            currency,
            time_zone,
        } => {
            let c = connect(&client)?;
            let mut body = json!({ "id": id });
            for (k, v) in [
                ("name", name),
                ("email", email),
                ("plan", plan),
                ("currency", currency),
                ("time_zone", time_zone),
            ] {
                if let Some(v) = v {
                    body[k] = Value::String(v);
                }
            }
            let created = rt.block_on(c.post("/v1/customers", &body))?;
            if client.json {
                print_json(&created)?;
            } else {
                let cust: Customer = client::view(&created, "customer")?;
                match &cust.subscription {
                    Some(s) => println!(
                        "created customer {} on plan {} v{} ({})",
                        cust.id, s.plan, s.plan_version, s.status
                    ),
                    None => println!("created customer {} (no plan yet)", cust.id),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CustomersCommand::Show { client, id } => {
            let c = connect(&client)?;
            let path = format!("/v1/customers/{}", client::enc(&id));
            let (cust, ents) = rt.block_on(async {
                let cust = c.get(&path).await?;
                let ents = c.get(&format!("{path}/entitlements")).await?;
                Ok::<_, CliError>((cust, ents))
            })?;
            if client.json {
                print_json(&json!({ "customer": cust, "entitlements": ents }))?;
            } else {
                let cust: Customer = client::view(&cust, "customer")?;
                let ents: Entitlements = client::view(&ents, "entitlements")?;
                print!("{}", render::customer(&cust, &ents));
            }
            Ok(ExitCode::SUCCESS)
        }
        CustomersCommand::List {
            client,
            plan,
            limit,
        } => {
            let c = connect(&client)?;
            let all = rt.block_on(list_customers(&c, plan, limit))?;
            if client.json {
                print_json(&Value::Array(all))?;
            } else {
                let list: Vec<Customer> = all
                    .iter()
                    .map(|v| client::view(v, "customer"))
                    .collect::<Result<_, _>>()?;
                if list.is_empty() {
                    println!("no customers");
                } else {
                    print!("{}", render::customers(&list));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every customer (up to `limit`), page by page.
async fn list_customers(
    c: &Client,
    plan: Option<String>,
    limit: Option<u64>,
) -> Result<Vec<Value>, CliError> {
    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let want = limit.map_or(100, |l| l.saturating_sub(all.len() as u64).min(100));
        if want == 0 {
            break;
        }
        let path = format!(
            "/v1/customers{}",
            client::query(&[
                ("plan", plan.clone()),
                ("limit", Some(want.to_string())),
                ("starting_after", after.clone()),
            ])
        );
        let page: Page<Value> = client::view(&c.get(&path).await?, "customer list")?;
        after = page
            .data
            .last()
            .and_then(|v| v["id"].as_str())
            .map(str::to_string);
        let more = page.has_more && after.is_some();
        all.extend(page.data);
        if !more {
            break;
        }
    }
    Ok(all)
}

fn properties(args: &[String]) -> Result<Option<Value>, CliError> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| CliError::BadUsage {
            arg: a.clone(),
            message: "--property takes key=value".into(),
        })?;
        if k.trim().is_empty() {
            return Err(CliError::BadUsage {
                arg: a.clone(),
                message: "--property: the key is empty".into(),
            });
        }
        map.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(Some(Value::Object(map)))
}

fn of_limit(used: &str, limit: Option<&str>, remaining: Option<&str>) -> String {
    match limit {
        Some(l) => format!(
            "used {used} / limit {l}, remaining {}",
            remaining.unwrap_or("0")
        ),
        None => format!("used {used} (unlimited)"),
    }
}

/// `tollgate usage ...`.
pub fn usage(cmd: UsageCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    match cmd {
        UsageCommand::Send {
            client,
            customer,
            feature,
            quantity,
            key,
            properties: props,
        } => {
            let c = connect(&client)?;
            let mut body = json!({
                "customer": customer, "feature": feature,
                "quantity": quantity, "consume": true,
            });
            if let Some(k) = key {
                body["idempotency_key"] = Value::String(k);
            }
            if let Some(p) = properties(&props)? {
                body["properties"] = p;
            }
            let answer =
                rt.block_on(c.send(c.request(reqwest::Method::POST, "/v1/check").json(&body)))?;
            let status = answer.status.as_u16();
            if answer.status.is_success() {
                if client.json {
                    print_json(&answer.body)?;
                }
                let d: Decision = client::view(&answer.body, "decision")?;
                if !client.json {
                    let verdict = if d.allowed { "allowed" } else { "denied" };
                    let mut line = format!(
                        "{verdict}: {} +{}: {}",
                        d.feature,
                        d.quantity,
                        of_limit(&d.used, d.limit.as_deref(), d.remaining.as_deref())
                    );
                    if d.over_limit || (d.overage != "0" && !d.overage.is_empty()) {
                        line.push_str(&format!("; over the (soft) limit, overage {}", d.overage));
                    }
                    if d.replayed {
                        line.push_str(" (replayed: counted once)");
                    }
                    if let Some(r) = &d.reason {
                        line.push_str(&format!(" [{r}]"));
                    }
                    if let Some(u) = &d.upgrade_to {
                        line.push_str(&format!("; upgrade to {u}"));
                    }
                    println!("{line}");
                }
                return Ok(if d.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(DENIED)
                });
            }
            let p = Problem::of(answer.status, &answer.body);
            if (status == 429 || status == 403) && p.code != "forbidden" {
                if client.json {
                    print_json(&answer.body)?;
                } else {
                    let mut line = format!("denied: {feature} +{quantity}: {}", p.code);
                    if let Some(u) = &p.used {
                        line.push_str(&format!(
                            "; {}",
                            of_limit(u, p.limit.as_deref(), p.remaining.as_deref())
                        ));
                    } else {
                        line.push_str(&format!("; {}", p.detail));
                    }
                    if let Some(u) = &p.upgrade_to {
                        line.push_str(&format!("; upgrade to {u}"));
                    }
                    println!("{line}");
                }
                return Ok(ExitCode::from(DENIED));
            }
            Err(p.into_error())
        }
        UsageCommand::Import { client, file } => {
            let c = connect(&client)?;
            rt.block_on(import(&c, &file, client.json))
        }
        UsageCommand::Export {
            client,
            customer,
            feature,
            from,
            to,
            output,
        } => {
            let c = connect(&client)?;
            let path = format!(
                "/v1/admin/usage/export{}",
                client::query(&[
                    ("customer", customer),
                    ("feature", feature),
                    ("from", from),
                    ("to", to),
                ])
            );
            rt.block_on(export(&c, &path, output.as_deref(), client.json))
        }
    }
}

/// One rejected row, as reported.
#[derive(Debug, serde::Serialize)]
struct Rejection {
    line: u64,
    reason: String,
}

/// Reads the CSV and posts it in chunks.
async fn import(c: &Client, file: &Path, json_out: bool) -> Result<ExitCode, CliError> {
    let f = std::fs::File::open(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(std::io::BufReader::new(f));
    let name = file.display().to_string();
    let bad_file = |message: String| CliError::BadUsage {
        arg: name.clone(),
        message,
    };
    let headers = reader
        .headers()
        .map_err(|e| bad_file(format!("cannot read the header row: {e}")))?
        .clone();
    let col = |n: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(n));
    let known = [
        "customer",
        "feature",
        "quantity",
        "timestamp",
        "idempotency_key",
        "properties",
    ];
    if let Some(h) = headers
        .iter()
        .find(|h| !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
    {
        return Err(bad_file(format!(
            "unknown column {h:?} (columns: {})",
            known.join(", ")
        )));
    }
    let (Some(customer), Some(feature), Some(quantity)) =
        (col("customer"), col("feature"), col("quantity"))
    else {
        return Err(bad_file(
            "the header row must name the columns customer, feature and quantity".into(),
        ));
    };
    let (timestamp, idem, props) = (col("timestamp"), col("idempotency_key"), col("properties"));

    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut totals = (0u64, 0u64, 0u64);
    let mut rejections: Vec<Rejection> = Vec::new();
    let mut chunk: Vec<Value> = Vec::new();
    let mut lines: Vec<u64> = Vec::new();
    let mut records = reader.records();
    loop {
        let next = records.next();
        let done = next.is_none();
        if let Some(rec) = next {
            let rec = rec.map_err(|e| bad_file(e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line());
            let field = |i: Option<usize>| {
                i.and_then(|i| rec.get(i))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let mut ev = json!({
                "customer": field(Some(customer)).unwrap_or_default(),
                "feature": field(Some(feature)).unwrap_or_default(),
                "quantity": field(Some(quantity)).unwrap_or_default(),
            });
            if let Some(t) = field(timestamp) {
                ev["timestamp"] = Value::String(t);
            }
            if let Some(k) = field(idem) {
                ev["idempotency_key"] = Value::String(k);
            }
            if let Some(p) = field(props) {
                match serde_json::from_str::<Value>(&p) {
                    Ok(v @ Value::Object(_)) => ev["properties"] = v,
                    _ => {
                        totals.2 += 1;
                        rejections.push(Rejection {
                            line,
                            reason: "properties: not a JSON object".into(),
                        });
                        continue;
                    }
                }
            }
            chunk.push(ev);
            lines.push(line);
        }
        if chunk.len() >= IMPORT_CHUNK || (done && !chunk.is_empty()) {
            let body = json!({ "events": std::mem::take(&mut chunk) });
            let answer = c.post("/v1/events", &body).await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            };
            let got: Ingested = client::view(&answer, "ingestion result")?;
            totals.0 += got.accepted;
            totals.1 += got.duplicate;
            totals.2 += got.rejected;
            for r in got.results.iter().filter(|r| r.status == "rejected") {
                let mut reason = r.reason.clone().unwrap_or_else(|| "rejected".into());
                if let Some(m) = &r.message {
                    match &r.field {
                        Some(f) => reason.push_str(&format!(" ({f}: {m})")),
                        None => reason.push_str(&format!(" ({m})")),
                    }
                }
                rejections.push(Rejection {
                    line: lines.get(r.index).copied().unwrap_or(0),
                    reason,
                });
            }
            lines.clear();
            bar.set_position(records.reader().position().byte());
            bar.set_message(format!(
                "{} accepted, {} duplicate, {} rejected",
                totals.0, totals.1, totals.2
            ));
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    rejections.sort_by_key(|r| r.line);
    let (accepted, duplicate, rejected) = totals;
    if json_out {
        print_json(&json!({
            "file": name, "accepted": accepted, "duplicate": duplicate,
            "rejected": rejected, "rejections": rejections,
        }))?;
    } else {
        println!(
            "imported {name}: {} rows: {accepted} accepted, {duplicate} duplicate, {rejected} rejected",
            accepted + duplicate + rejected
        );
        for r in rejections.iter().take(5) {
            println!("  line {}: {}", r.line, r.reason);
        }
        if rejections.len() > 5 {
            println!("  … and {} more rejected rows", rejections.len() - 5);
        }
    }
    Ok(if rejected > 0 {
        ExitCode::from(DENIED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Streams the export to a file or stdout.
async fn export(
    c: &Client,
    path: &str,
    output: Option<&Path>,
    json_out: bool,
) -> Result<ExitCode, CliError> {
    let mut resp = c.stream(path).await?;
    let mut sink: Box<dyn std::io::Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| CliError::Server(format!("cannot write {}: {e}", p.display())),
        )?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let write_err = |e: std::io::Error| CliError::Server(format!("cannot write the export: {e}"));
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} exported ({bytes_per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if output.is_none() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut bytes, mut newlines) = (0u64, 0u64);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                return Err(CliError::Server(format!("the export was cut short: {e}")));
            }
        };
        sink.write_all(&chunk).map_err(write_err)?;
        bytes += chunk.len() as u64;
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bar.set_position(bytes);
    }
    sink.flush().map_err(write_err)?;
    bar.finish_and_clear();
    let rows = newlines.saturating_sub(1);
    if let Some(p) = output {
        if json_out {
            print_json(&json!({"file": p.display().to_string(), "rows": rows, "bytes": bytes}))?;
        } else {
            println!("exported {rows} rows ({bytes} bytes) to {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

// --- plans apply -------------------------------------------------------------

fn same_number(a: &str, b: &str) -> bool {
    match (Decimal::from_str(a), Decimal::from_str(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn compare(catalog: &Catalog, served: &client::ServedPlan) -> Vec<String> {
    let Some(p) = catalog.plan(&served.key) else {
        return Vec::new();
    };
    let mut d = Vec::new();
    let mut field = |name: &str, old: String, new: String, numeric: bool| {
        let same = if numeric {
            same_number(&old, &new)
        } else {
            old == new
        };
        if !same {
            d.push(format!("{name}: {old} → {new}"));
        }
    };
    field("name", served.name.clone(), p.name.clone(), false);
    field("tier", served.tier.to_string(), p.tier.to_string(), false);
    field(
        "public",
        served.public.to_string(),
        p.public.to_string(),
        false,
    );
    field(
        "currency",
        served.currency.clone(),
        p.currency.code().to_string(),
        false,
    );
    field(
        "base_price",
        served.base_price.amount.clone(),
        p.base_price.amount.to_string(),
        true,
    );
    let interval = match p.interval {
        tollgate_core::period::Interval::Month => "month",
        tollgate_core::period::Interval::Year => "year",
    };
    field("interval", served.interval.clone(), interval.into(), false);
    let anchoring = match p.anchoring {
        tollgate_core::period::Anchoring::Calendar => "calendar",
        tollgate_core::period::Anchoring::Anniversary => "anniversary",
    };
    field(
        "anchoring",
        served.anchoring.clone(),
        anchoring.into(),
        false,
    );
    let billing = match p.billing {
        tollgate_core::catalog::BaseBilling::InAdvance => "in_advance",
        tollgate_core::catalog::BaseBilling::InArrears => "in_arrears",
    };
    field("billing", served.billing.clone(), billing.into(), false);
    let days = |t: Option<u32>| t.map_or_else(|| "none".into(), |d| d.to_string());
    field(
        "trial_days",
        days(served.trial_days),
        days(p.trial_days),
        false,
    );
    let mut features: BTreeMap<&str, (Option<String>, Option<String>)> = BTreeMap::new();
    for (k, e) in &served.entitlements {
        features.entry(k.as_str()).or_default().0 = Some(e.summary.clone());
    }
    for (k, e) in &p.entitlements {
        features.entry(k.as_str()).or_default().1 = Some(e.to_string());
    }
    for (k, (old, new)) in features {
        match (old, new) {
            (Some(o), Some(n)) if o != n => d.push(format!("{k}: {o} → {n}")),
            (Some(o), None) => d.push(format!("{k}: {o} → removed from the plan")),
            (None, Some(n)) => d.push(format!("{k}: added ({n})")),
            _ => {}
        }
    }
    let mut charges: BTreeMap<&str, (Option<String>, Option<String>)> = BTreeMap::new();
    for ch in &served.charges {
        charges.entry(ch.key.as_str()).or_default().0 =
            Some(format!("{} (included {})", ch.summary, ch.included));
    }
    for ch in &p.charges {
        charges.entry(ch.key.as_str()).or_default().1 = Some(format!(
            "{} (included {})",
            describe_charge_price(&ch.price),
            ch.included.normalize()
        ));
    }
    for (k, (old, new)) in charges {
        match (old, new) {
            (Some(o), Some(n)) if !same_charge(&o, &n) => {
                d.push(format!("charge {k}: {o} → {n}"));
            }
            (Some(o), None) => d.push(format!("charge {k}: {o} → removed")),
            (None, Some(n)) => d.push(format!("charge {k}: added ({n})")),
            _ => {}
        }
    }
    d
}

fn same_charge(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> Vec<String> {
        s.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter(|w| !w.is_empty())
            .map(|w| {
                Decimal::from_str(w).map_or_else(|_| w.to_string(), |d| d.normalize().to_string())
            })
            .collect()
    };
    norm(a) == norm(b)
}

/// One plan of the server's answer to `PUT /v1/catalog`.
#[derive(Debug, serde::Deserialize)]
struct AppliedPlan {
    plan: String,
    change: String,
    from_version: Option<u32>,
    to_version: u32,
}

/// The server's answer to `PUT /v1/catalog`.
#[derive(Debug, serde::Deserialize)]
struct CatalogApplied {
    applied: bool,
    changes: Vec<AppliedPlan>,
}

/// `tollgate plans apply FILE [--dry-run]`.
pub fn apply(args: &ClientArgs, file: &Path, dry_run: bool) -> Result<ExitCode, CliError> {
    let catalog = load(file)?;
    let text = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    let c = connect(args)?;
    let rt = runtime()?;
    // What the API shows of the served plans, for the differences of changed ones.
    let served = rt.block_on(c.get("/v1/plans"))?;
    let served: client::ServedPlans = client::view(&served, "plan list")?;
    let req = c
        .request(
            reqwest::Method::PUT,
            &format!("/v1/catalog?dry_run={dry_run}&name={}", client::enc(&name)),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/toml")
        .body(text);
    let answer = rt.block_on(c.send(req))?;
    if !answer.status.is_success() {
        return Err(Problem::of(answer.status, &answer.body).into_error());
    }
    let result: CatalogApplied = client::view(&answer.body, "catalog apply answer")?;
    let differences = |plan: &str| -> Vec<String> {
        served
            .data
            .iter()
            .find(|s| s.key == plan)
            .map(|s| compare(&catalog, s))
            .unwrap_or_default()
    };
    if args.json {
        let mut out = answer.body.clone();
        if let Some(changes) = out.get_mut("changes").and_then(Value::as_array_mut) {
            for ch in changes {
                let changed = ch.get("change").and_then(Value::as_str) == Some("changed");
                let plan = ch
                    .get("plan")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if changed && let Some(o) = ch.as_object_mut() {
                    o.insert("differences".into(), json!(differences(&plan)));
                }
            }
        }
        if let Some(o) = out.as_object_mut() {
            o.insert("file".into(), json!(file.display().to_string()));
            o.insert("server".into(), json!(c.base()));
        }
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "ok    {}: catalog {:?}, {} features, {} plans",
        file.display(),
        catalog.name,
        catalog.features.len(),
        catalog.plans.len()
    );
    for ch in &result.changes {
        let from = ch.from_version.unwrap_or(ch.to_version);
        match ch.change.as_str() {
            "new" => println!("  {:<12} new plan (version {})", ch.plan, ch.to_version),
            "unchanged" => println!("  {:<12} unchanged (stays v{})", ch.plan, ch.to_version),
            "removed" => println!(
                "  {:<12} not in the file: no longer offered (subscribers keep v{})",
                ch.plan, ch.to_version
            ),
            _ => {
                println!("  {:<12} changed: v{from} → v{}", ch.plan, ch.to_version);
                for d in differences(&ch.plan) {
                    println!("               {d}");
                }
            }
        }
    }
    println!();
    if dry_run {
        println!("dry run: nothing was changed on {}", c.base());
    } else if result.applied {
        println!(
            "applied to {}: new subscriptions and plan changes get these versions now; \
             subscribers keep theirs",
            c.base()
        );
    } else {
        println!("{} already serves this catalog: nothing to apply", c.base());
    }
    Ok(ExitCode::SUCCESS)
}
