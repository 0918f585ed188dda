//! `tollgate invoices run|list|show`: invoice runs and invoices, on the
//! configured store (the data directory or `--storage-url`), with the same
//! catalog and `[billing]` settings as `tollgate serve`. A run is idempotent
//! and safe next to a running server (one invoice per customer and period is
//! enforced by the store; numbers are taken in the issuing transaction).

use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tollgate_billing::Billing;
use tollgate_billing::run::{RunOptions, RunReport, parse_month};
use tollgate_core::billing::{Invoice, InvoiceStatus};
use tollgate_engine::SystemClock;
use tollgate_server::app;
use tollgate_store::billing::InvoiceFilter;

use super::CliError;
use super::client::{self, Client};
use super::server::{config, runtime};
use crate::cli::{InvoicesCommand, ServeArgs};

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::Server(e.to_string())
}

/// The billing service on the configured store and catalog.
async fn billing(args: &ServeArgs) -> Result<Billing, CliError> {
    let settings = config(&args.config, Some(args))?.resolve().map_err(err)?;
    app::read_catalog(&settings.catalog).map_err(err)?;
    let store = app::open_store(&settings).await.map_err(err)?;
    let engine = app::open_engine_unrecorded(
        store.clone(),
        &settings.catalog,
        Arc::new(SystemClock),
        settings.engine.clone(),
    )
    .await
    .map_err(err)?;
    Ok(Billing::new(Arc::new(engine), store, settings.billing))
}

pub fn invoices(cmd: InvoicesCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        match cmd {
            InvoicesCommand::Run {
                store,
                period,
                url: Some(url),
                api_key,
                json,
            } => {
                let _ = store;
                run_remote(&url, api_key, period, json).await
            }
            InvoicesCommand::Run {
                store,
                period,
                url: None,
                json,
                ..
            } => run(&store, period.as_deref(), json).await,
            InvoicesCommand::List {
                store,
                status,
                customer,
                period,
                limit,
                json,
            } => {
                let period = period
                    .as_deref()
                    .map(parse_month)
                    .transpose()
                    .map_err(err)?;
                let (period_from, period_to) = match period {
                    Some(first) => {
                        let next = first
                            .checked_add(jiff::Span::new().months(1))
                            .map_err(err)?;
                        let at = |d: jiff::civil::Date| {
                            d.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp())
                        };
                        (Some(at(first).map_err(err)?), Some(at(next).map_err(err)?))
                    }
                    None => (None, None),
                };
                let status = match status.as_deref() {
                    None => None,
                    Some(s) => Some(InvoiceStatus::parse(s).ok_or_else(|| CliError::BadUsage {
                        arg: s.to_string(),
                        message:
                            "--status is one of draft, open, paid, void, uncollectible".to_string(),
                    })?),
                };
                let b = billing(&store).await?;
                let list = b
                    .list_invoices(&InvoiceFilter {
                        customer_id: customer,
                        status,
                        period_from,
                        period_to,
                        limit: limit.unwrap_or(0),
                        ..InvoiceFilter::default()
                    })
                    .await
                    .map_err(err)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print!("{}", table(&list, b.engine.now()));
                }
                Ok(ExitCode::SUCCESS)
            }
            InvoicesCommand::Show { store, id, json } => {
                let b = billing(&store).await?;
                let inv = b.invoice(&id).await.map_err(err)?.invoice;
                if json {
                    println!("{}", serde_json::to_string_pretty(&inv)?);
                } else {
                    print!("{}", detail(&inv, b.engine.now()));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// The run on a running server; a spinner while it works.
async fn run_remote(
    url: &str,
    api_key: Option<String>,
    period: Option<String>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let client = Client::new(url, api_key)?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_message("closing billing periods on the server");
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let answer = client
        .post(
            "/v1/admin/invoices/run",
            &serde_json::json!({ "period": period }),
        )
        .await;
    bar.finish_and_clear();
    let answer = answer?;
    let report: RunReport = client::view(&answer["report"], "run report")?;
    print_report(&report, json)
}

async fn run(store: &ServeArgs, period: Option<&str>, json: bool) -> Result<ExitCode, CliError> {
    let month = period.map(parse_month).transpose().map_err(err)?;
    let b = billing(store).await?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} periods ({per_sec}, eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let opts = RunOptions {
        month,
        ..RunOptions::default()
    };
    let report = b
        .run_invoices(&opts, &|p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        })
        .await
        .map_err(err)?;
    bar.finish_and_clear();
    print_report(&report, json)
}

fn print_report(report: &RunReport, json: bool) -> Result<ExitCode, CliError> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "{} period(s) due: {} invoice(s) created, {} finished from an earlier run, {} already invoiced; {} issued",
            report.periods, report.created, report.resumed, report.already_invoiced, report.issued
        );
        for f in &report.failed {
            println!(
                "FAILED {} (period from {}): {}",
                f.customer_id, f.period_start, f.error
            );
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn status_label(inv: &Invoice, now: jiff::Timestamp) -> String {
    if inv.is_overdue(now) {
        "overdue".to_string()
    } else {
        inv.status.as_str().to_string()
    }
}

fn table(list: &[Invoice], now: jiff::Timestamp) -> String {
    let mut out = format!(
        "{:<12} {:<28} {:<20} {:<12} {:<14} {:>12} {:>12}\n",
        "number", "id", "customer", "period", "status", "total", "due"
    );
    for i in list {
        out.push_str(&format!(
            "{:<12} {:<28} {:<20} {:<12} {:<14} {:>12} {:>12}\n",
            i.number.as_deref().unwrap_or("-"),
            i.id,
            i.customer_id,
            i.period_start.strftime("%Y-%m-%d").to_string(),
            status_label(i, now),
            format!("{} {}", i.totals.total, i.currency.code()),
            i.totals.amount_due,
        ));
    }
    out.push_str(&format!("{} invoice(s)\n", list.len()));
    out
}

fn detail(i: &Invoice, now: jiff::Timestamp) -> String {
    let mut out = format!(
        "Invoice {} ({})\nstatus {}\ncustomer {} ({})\nperiod {} to {}\n",
        i.number.as_deref().unwrap_or("draft"),
        i.id,
        status_label(i, now),
        i.bill_to.name,
        i.customer_id,
        i.period_start,
        i.period_end
    );
    if let Some(due) = i.due_at {
        out.push_str(&format!("due {due}\n"));
    }
    out.push('\n');
    for l in &i.lines {
        out.push_str(&format!("{:<60} {:>14}\n", l.description, l.amount));
        if let Some(why) = l.explain() {
            out.push_str(&format!("    {why}\n"));
        }
    }
    let t = &i.totals;
    for (label, v) in [
        ("subtotal", t.subtotal),
        ("discount", t.discount),
        (i.tax.label.as_str(), t.tax),
        ("total", t.total),
        ("paid", t.amount_paid),
        ("credited", t.amount_credited),
        ("amount due", t.amount_due),
    ] {
        out.push_str(&format!("{label:>60} {v:>14}\n"));
    }
    out
}
