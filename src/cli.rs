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
        store (for an operator who lost the admin key); `tollgate migrate` prepares a store.\n\n\
        `tollgate customers`, `tollgate usage` and `tollgate plans apply` talk to a running \
        server: --url (or TOLLGATE_URL, default http://127.0.0.1:8080) and --api-key (or \
        TOLLGATE_API_KEY). Errors of the server are one line on stderr with exit status 2; \
        a denial (or rejected rows of an import) exits 3. `tollgate demo` shows it all at \
        work on an embedded server."
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
    /// Create, show and list customers on a running server.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Send, import and export usage on a running server.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Change, cancel and inspect subscriptions on a running server (admin
    /// key): plan changes with proration, scheduled downgrades, trials,
    /// cancellation, version migration, history.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Close billing periods into invoices and read invoices, on the configured
    /// store (data directory or --storage-url) with the server's catalog and
    /// [billing] settings.
    #[command(subcommand)]
    Invoices(InvoicesCommand),
    /// Drive realistic traffic through the HTTP API (an embedded server by
    /// default, or --url) and print each customer's usage at the end.
    Demo(DemoArgs),
    /// Webhook endpoints, secret rotation and the delivery log of a running
    /// server (admin key): alerts delivered as signed webhooks.
    #[command(subcommand)]
    Webhooks(crate::commands::webhooks::WebhooksCommand),
}

/// How to reach a running server.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The API key (admin or server scope; `tollgate serve` prints an admin key
    /// on its first start, `tollgate keys create` mints more).
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of text for people.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum InvoicesCommand {
    /// Close ended billing periods into invoices (idempotent: a rerun, also
    /// after a crash, writes no second invoice). With --period, only the
    /// periods ending in that month; without, every ended period without an
    /// invoice (as the server's worker does).
    #[command(after_help = "Exit status: 0 done, 2 some periods could not be closed (listed).")]
    Run {
        #[command(flatten)]
        store: ServeArgs,
        /// A month as YYYY-MM, e.g. 2026-11: the periods that end in it
        /// (November's [Nov 1, Dec 1) included), on each customer's clock.
        #[arg(long)]
        period: Option<String>,
        /// Run it on a running server instead (POST /v1/admin/invoices/run,
        /// an admin key): e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The admin API key for --url.
        #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Print the run's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List invoices (a derived `overdue` shows for open invoices past due).
    List {
        #[command(flatten)]
        store: ServeArgs,
        /// draft, open, paid, void or uncollectible.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        /// Invoices of periods starting in this month (YYYY-MM, UTC).
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Show one invoice with its lines, where each usage line came from, and totals.
    Show {
        #[command(flatten)]
        store: ServeArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Create a customer (the host application's id), optionally subscribed to a plan.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// The customer's id in your application.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Subscribe at once to this plan (its latest version).
        #[arg(long)]
        plan: Option<String>,
        /// ISO-4217 currency (default USD).
        #[arg(long)]
        currency: Option<String>,
        /// IANA time zone (default UTC).
        #[arg(long)]
        time_zone: Option<String>,
    },
    /// Show a customer: its subscription and what each feature allows now.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// List customers (follows the pages for you).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only customers subscribed to this plan.
        #[arg(long)]
        plan: Option<String>,
        /// At most this many customers (default: all).
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// What happens to a plan change's proration lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProrationArg {
    /// On the customer's next invoice (default).
    NextInvoice,
    /// Invoiced now.
    InvoiceNow,
    /// No proration.
    None,
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Change a customer's plan: an upgrade takes effect now with proration, a
    /// downgrade at the end of the period (scheduled) unless --now.
    ///
    /// A change the customer's state does not fit (more locations or seats in
    /// use than the target allows) is refused with every blocker listed,
    /// unless --force (the excess is recorded in the history).
    #[command(after_help = "Exit status: 0 done (or previewed), 2 refused or error.")]
    Change {
        #[command(flatten)]
        client: ClientArgs,
        /// The customer's id in your application.
        customer: String,
        /// The target plan.
        plan: String,
        /// A published version of the plan (default: the latest).
        #[arg(long)]
        version: Option<u32>,
        /// Only show what the change would do.
        #[arg(long)]
        preview: bool,
        /// Take effect at the end of the current period.
        #[arg(long, conflicts_with = "now")]
        at_period_end: bool,
        /// Take effect now.
        #[arg(long)]
        now: bool,
        #[arg(long, value_enum)]
        proration: Option<ProrationArg>,
        /// Apply even if the customer's state does not fit the target plan.
        #[arg(long)]
        force: bool,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a subscription at the end of the period (default) or --now.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        customer: String,
        /// Cancel now: requests are denied from now on; the unused part of an
        /// in-advance base is credited and the period is billed to now on a
        /// final invoice.
        #[arg(long)]
        now: bool,
        /// With --now: no credit and no final invoice (the period closes at
        /// its end).
        #[arg(long, requires = "now")]
        no_prorate: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show the change waiting for its date, or cancel it (--cancel).
    Scheduled {
        #[command(flatten)]
        client: ClientArgs,
        customer: String,
        #[arg(long)]
        cancel: bool,
    },
    /// Start a trial of a plan, or convert the customer's trial (--convert).
    Trial {
        #[command(flatten)]
        client: ClientArgs,
        customer: String,
        /// The plan to try (not with --convert).
        #[arg(required_unless_present = "convert")]
        plan: Option<String>,
        /// Trial length (default: the plan's trial days).
        #[arg(long, conflicts_with = "convert")]
        days: Option<u32>,
        /// Convert the trial into a paid subscription now.
        #[arg(long)]
        convert: bool,
    },
    /// The customer's plan-change history: who, when, from, to and why.
    History {
        #[command(flatten)]
        client: ClientArgs,
        customer: String,
    },
    /// Move every subscriber of a plan to another version (default: the
    /// latest), or --preview who gains and loses what.
    Migrate {
        #[command(flatten)]
        client: ClientArgs,
        plan: String,
        #[arg(long)]
        from_version: Option<u32>,
        #[arg(long)]
        to_version: Option<u32>,
        #[arg(long)]
        preview: bool,
        /// Migrate customers whose state does not fit the target too.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Record usage now: an atomic check-and-consume (POST /v1/check with consume=true).
    ///
    /// Prints whether it was allowed, with used / limit / remaining.
    /// Exit status: 0 allowed; 3 denied (limit reached, feature not in the plan,
    /// ...: nothing was recorded); 2 any other error.
    #[command(after_help = "Exit status: 0 allowed, 3 denied (nothing recorded), 2 error.")]
    Send {
        #[command(flatten)]
        client: ClientArgs,
        /// The customer's id in your application.
        customer: String,
        /// A metered or rate feature of the customer's plan (e.g. queries_per_month).
        feature: String,
        /// A decimal quantity such as 1 or 12.5.
        #[arg(allow_hyphen_values = true)]
        quantity: String,
        /// Idempotency key: a retry with the same key counts once.
        #[arg(long = "key", value_name = "IDEMPOTENCY_KEY")]
        key: Option<String>,
        /// A property stored with the usage (dimension for pricing, audit): k=v.
        #[arg(long = "property", value_name = "K=V")]
        properties: Vec<String>,
    },
    /// Import usage events from a CSV file (POST /v1/events, 10,000 per request).
    ///
    /// Columns (a header row names them, in any order): customer, feature,
    /// quantity, and optionally timestamp (RFC 3339; at most 48 h old),
    /// idempotency_key (a row already imported is a duplicate, so an import can
    /// be re-run) and properties (a JSON object).
    #[command(
        after_help = "Exit status: 0 every row accepted or duplicate, 3 some rows rejected (the summary names the first ones), 2 error."
    )]
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// The CSV file.
        file: PathBuf,
    },
    /// Export the usage ledger as CSV (admin key; GET /v1/admin/usage/export).
    Export {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        feature: Option<String>,
        /// Event time from (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Event time to (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Write to this file (default: stdout).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Drive an existing server instead of starting an embedded one (needs an
    /// admin --api-key).
    #[arg(long, env = "TOLLGATE_URL")]
    pub url: Option<String>,
    /// The admin key of the server at --url.
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How long to drive traffic, in seconds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
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
    /// Apply a catalog file to a running server (PUT /v1/catalog, admin key).
    ///
    /// Validates FILE, then sends it: new and changed plans get new published
    /// versions and are offered at once; subscribers keep the version they
    /// have; a plan left out is no longer offered. The server refuses to
    /// remove a served feature or change its kind (that needs the catalog
    /// file and a restart). A restart keeps serving the applied catalog until
    /// the catalog file itself is edited. With --dry-run, only says what would
    /// change. Changed plans are listed with what the API shows of their
    /// differences; `tollgate plans diff OLD NEW` on two files is exact.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// Catalog file (TOML).
        file: PathBuf,
        /// Only say what would change; apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
