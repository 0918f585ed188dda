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
        with `tollgate quote`.\n\n\
        Run the HTTP API with `tollgate serve --catalog FILE`: the first start prints an \
        admin API key once. `tollgate keys` mints, lists and revokes keys directly in the \
        store (for an operator who lost the admin key); `tollgate migrate` prepares a store."
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
    /// Run the HTTP API until SIGINT or SIGTERM (then commit pending usage,
    /// write a snapshot and exit 0).
    Serve(ServeArgs),
    /// Create or update the configured store's schema, then exit.
    Migrate(StoreArgs),
    /// Manage API keys directly in the configured store (no running server needed;
    /// a running server picks changes up within seconds).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Where the configuration comes from. Layers, later ones win: defaults, the
/// file (`--config`, or ./tollgate.toml if present), `TOLLGATE_*` environment
/// variables, these flags.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Default: ./tollgate.toml when present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (the SQLite database, and `catalog.toml` by default).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, value_name = "URL")]
    pub storage_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Catalog file (TOML). Default: <data-dir>/catalog.toml.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The scope of a key.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyScopeArg {
    /// Everything.
    Admin,
    /// The host application's backend: enforcement, ingestion, customers.
    Server,
    /// Read-only access to one customer (needs --customer).
    Customer,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a key and print its secret (once: only a digest is stored).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// What the key is for.
        #[arg(long, default_value = "operator key")]
        name: String,
        #[arg(long, value_enum, default_value = "admin")]
        scope: KeyScopeArg,
        /// The customer a customer key may read.
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key: refused by the server from its next key reload (seconds).
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id (key_…).
        id: String,
    },
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
