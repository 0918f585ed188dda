//! What each subcommand does. Reading files happens here (the core is pure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use rust_decimal::Decimal;
use tollgate_core::catalog::{self, Catalog, CatalogErrors};
use tollgate_core::pricing::{QuoteError, UsageQuantity};

use crate::cli::{Cli, Command, DiffArgs, PlansCommand, QuoteArgs};

use crate::render;

pub mod client;
mod demo;
mod invoices;
mod remote;
mod server;
mod subscriptions;
pub mod webhooks;

/// Errors a command reports as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Catalog(CatalogErrors),
    #[error("plan {plan:?} is not in {file} (plans: {known})")]
    UnknownPlan {
        plan: String,
        file: String,
        known: String,
    },
    #[error("usage argument {arg:?}: {message}")]
    BadUsage { arg: String, message: String },
    #[error("cannot quote: {0}")]
    Quote(#[from] QuoteError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Server(String),
    /// A problem+json answer of the server.
    #[error("{status} {code}: {detail}")]
    Api {
        status: u16,
        code: String,
        detail: String,
    },
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Plans(PlansCommand::Validate { files, json }) => validate(&files, json),
        Command::Plans(PlansCommand::Show { file, plan, json }) => show(&file, plan, json),
        Command::Plans(PlansCommand::Diff(args)) => diff(&args),
        Command::Quote(args) => quote(&args),
        Command::Serve(args) => server::serve(args),
        Command::Migrate(args) => server::migrate(&args),
        Command::Keys(cmd) => server::keys(cmd),
        Command::Plans(PlansCommand::Apply {
            client,
            file,
            dry_run,
        }) => remote::apply(&client, &file, dry_run),
        Command::Customers(cmd) => remote::customers(cmd),
        Command::Usage(cmd) => remote::usage(cmd),
        Command::Subscriptions(cmd) => subscriptions::run(cmd),
        Command::Invoices(cmd) => invoices::invoices(cmd),
        Command::Demo(args) => demo::run(&args),
        Command::Webhooks(cmd) => webhooks::run(cmd),
    }
}

fn display_name(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates a catalog file.
pub fn load(path: &Path) -> Result<Catalog, CliError> {
    let text = read(path)?;
    catalog::load_catalog(&display_name(path), &text).map_err(CliError::Catalog)
}

fn find_plan<'c>(
    catalog: &'c Catalog,
    path: &Path,
    key: &str,
) -> Result<&'c catalog::Plan, CliError> {
    catalog.plan(key).ok_or_else(|| CliError::UnknownPlan {
        plan: key.to_string(),
        file: display_name(path),
        known: catalog
            .plans
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn validate(files: &[PathBuf], json: bool) -> Result<ExitCode, CliError> {
    let mut failed = false;
    let mut results = Vec::new();
    for path in files {
        let outcome = load(path);
        match (&outcome, json) {
            (Ok(c), false) => println!(
                "ok    {}: catalog {:?}, {} features, {} plans ({})",
                display_name(path),
                c.name,
                c.features.len(),
                c.plans.len(),
                c.plans
                    .iter()
                    .map(|p| p.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (Err(CliError::Catalog(errs)), false) => {
                println!(
                    "FAIL  {}: {} error(s)",
                    display_name(path),
                    errs.errors.len()
                );
                for e in &errs.errors {
                    if e.path.is_empty() {
                        println!("      {}", e.message);
                    } else {
                        println!("      {}: {}", e.path, e.message);
                    }
                }
            }
            (Err(other), false) => println!("FAIL  {}: {other}", display_name(path)),
            (_, true) => {}
        }
        if json {
            results.push(match &outcome {
                Ok(c) => serde_json::json!({
                    "file": display_name(path), "valid": true,
                    "features": c.features.len(), "plans": c.plans.len()
                }),
                Err(CliError::Catalog(errs)) => serde_json::json!({
                    "file": display_name(path), "valid": false,
                    "errors": errs.errors.iter().map(|e| serde_json::json!({
                        "path": e.path, "message": e.message
                    })).collect::<Vec<_>>()
                }),
                Err(other) => serde_json::json!({
                    "file": display_name(path), "valid": false,
                    "errors": [{"path": "", "message": other.to_string()}]
                }),
            });
        }
        failed |= outcome.is_err();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn show(path: &Path, plan: Option<String>, json: bool) -> Result<ExitCode, CliError> {
    let catalog = load(path)?;
    match (plan, json) {
        (Some(key), true) => {
            let plan = find_plan(&catalog, path, &key)?;
            println!("{}", serde_json::to_string_pretty(plan)?);
        }
        (Some(key), false) => {
            let plan = find_plan(&catalog, path, &key)?;
            print!("{}", render::plan(&catalog, plan));
        }
        (None, true) => println!("{}", serde_json::to_string_pretty(&catalog)?),
        (None, false) => print!("{}", render::catalog(&catalog)),
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(args: &DiffArgs) -> Result<ExitCode, CliError> {
    let old = load(&args.file)?;
    if let Some(new_path) = &args.new_file {
        let new = load(new_path)?;
        let (_, changes) = catalog::assign_versions(&old.plans, new.clone());
        if args.json {
            let out: Vec<_> = changes
                .iter()
                .map(|c| {
                    let diff = match (old.plan(&c.plan), new.plan(&c.plan)) {
                        (Some(a), Some(b)) => catalog::diff_plans(a, b),
                        _ => Vec::new(),
                    };
                    serde_json::json!({ "change": c, "differences": diff })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!("{}", render::version_changes(&old, &new, &changes));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        return Err(CliError::BadUsage {
            arg: "diff".into(),
            message: "give either --from PLAN --to PLAN, or two catalog files OLD NEW".into(),
        });
    };
    let a = find_plan(&old, &args.file, from)?;
    let b = find_plan(&old, &args.file, to)?;
    let entries = catalog::diff_plans(a, b);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", render::plan_diff(a, b, &entries));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `metric=qty` or `metric[k=v,k2=v2]=qty`.
pub fn parse_usage(arg: &str) -> Result<UsageQuantity, CliError> {
    let bad = |message: &str| CliError::BadUsage {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (lhs, qty) = arg
        .rsplit_once('=')
        .ok_or_else(|| bad("expected metric=quantity, e.g. api_requests=500000"))?;
    let quantity = Decimal::from_str(qty.trim()).map_err(|_| {
        bad("the quantity must be a decimal number such as 1200 or 12.5 (no exponent)")
    })?;
    if quantity.is_sign_negative() {
        return Err(bad("the quantity must not be negative"));
    }
    let (metric, dims) = match lhs.split_once('[') {
        None => (lhs.trim(), BTreeMap::new()),
        Some((metric, rest)) => {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| bad("expected metric[prop=value,...]=quantity"))?;
            let mut dims = BTreeMap::new();
            for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad("each dimension must be prop=value"))?;
                dims.insert(k.trim().to_string(), v.trim().to_string());
            }
            (metric.trim(), dims)
        }
    };
    if metric.is_empty() {
        return Err(bad("the metric name is empty"));
    }
    Ok(UsageQuantity {
        metric: metric.to_string(),
        dimensions: dims,
        quantity,
    })
}

fn quote(args: &QuoteArgs) -> Result<ExitCode, CliError> {
    let catalog = load(&args.catalog)?;
    let plan = find_plan(&catalog, &args.catalog, &args.plan)?;
    let usage = args
        .usage
        .iter()
        .map(|a| parse_usage(a))
        .collect::<Result<Vec<_>, _>>()?;
    for u in &usage {
        if catalog.feature(&u.metric).is_none() {
            return Err(CliError::BadUsage {
                arg: u.metric.clone(),
                message: format!(
                    "no feature {:?} in the catalog (features: {})",
                    u.metric,
                    catalog
                        .features
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let q = plan.quote(&usage)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&q)?);
    } else {
        print!("{}", render::quote(plan, &q));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usage_arguments_parse_with_and_without_dimensions() {
        let u = parse_usage("api_requests=500000").unwrap();
        assert_eq!(u.metric, "api_requests");
        assert_eq!(u.quantity, Decimal::from(500_000));
        assert!(u.dimensions.is_empty());

        let u = parse_usage("llm_tokens[model=gpt-4o, direction=input]=1200000.5").unwrap();
        assert_eq!(u.metric, "llm_tokens");
        assert_eq!(u.dimensions["model"], "gpt-4o");
        assert_eq!(u.dimensions["direction"], "input");
        assert_eq!(u.quantity.to_string(), "1200000.5");
    }

    #[test]
    fn bad_usage_arguments_say_what_is_wrong() {
        for bad in [
            "api_requests",
            "x=abc",
            "x=-1",
            "x[model]=1",
            "=5",
            "x[a=b=1",
        ] {
            let err = parse_usage(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
