//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Usage metering, plan enforcement and billing",
    long_about = "Usage metering, plan enforcement and billing.\n\n\
        Plans are code: a TOML catalog of features and plans. Validate a catalog with \
        `tollgate plans validate`, read it with `tollgate plans show`, and price a usage \
        with `tollgate quote`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with catalogs (plans-as-code).
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Price a usage on a plan: a line per charge with its tier breakdown, and the total.
    Quote(QuoteArgs),
}

#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Validate catalog files; every mistake is reported with its file and field path.
    Validate {
        /// Catalog files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a catalog's features and plans, or one plan in full.
    Show {
        /// Catalog file (TOML).
        file: PathBuf,
        /// Show only this plan, in full.
        #[arg(long)]
        plan: Option<String>,
        /// Print the catalog (or plan) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two plans of a catalog (--from/--to), or the same plans across two
    /// versions of a catalog file (OLD NEW): what a new version would change.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The catalog file (or the old version when NEW is given).
    pub file: PathBuf,
    /// A newer version of the catalog file: report which plans get a new version.
    pub new_file: Option<PathBuf>,
    /// Plan to compare from (within FILE).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Plan to compare to (within FILE).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// Catalog file (TOML).
    #[arg(long, short = 'c', env = "TOLLGATE_CATALOG")]
    pub catalog: PathBuf,
    /// Plan key.
    #[arg(long, short = 'p')]
    pub plan: String,
    /// Usage as `metric=quantity`, or `metric[prop=value,...]=quantity` for
    /// per-dimension prices (e.g. `llm_tokens[model=gpt-4o,direction=input]=1200000`).
    /// The same metric may be given several times; quantities add up.
    pub usage: Vec<String>,
    /// Print the quote as JSON.
    #[arg(long)]
    pub json: bool,
}
