//! `tollgate demo`: realistic traffic through the public HTTP API, against an
//! embedded server (a temporary SQLite store and the VOCA AI catalog) or an
//! existing one (`--url`), then each customer's usage dashboard.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate_server::app;
use tollgate_server::config::{Config, ConfigFile, Overrides};

use super::client::{self, Client, Dashboard, Problem};
use super::{CliError, server::runtime};
use crate::cli::DemoArgs;
use crate::render;

/// The catalog the embedded server serves.
const VOCA: &str = include_str!("../../examples/catalogs/voca.toml");

/// The plans the demo subscribes a customer to, when the server has them.
const PLANS: [&str; 5] = ["free", "starter", "pro", "business", "enterprise"];

/// `tollgate demo`.
pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    let duration = Duration::from_secs(args.duration);
    match &args.url {
        Some(url) => {
            let key = args.api_key.clone().ok_or_else(|| {
                CliError::Server(
                    "--api-key: an admin key of the server at --url is needed (or leave out \
                     --url to run an embedded server)"
                        .into(),
                )
            })?;
            let c = Client::new(url, Some(key))?;
            println!("demo against {} for {} s", c.base(), args.duration);
            rt.block_on(Demo::new(c, duration).run())
        }
        None => rt.block_on(embedded(duration)),
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn embedded(duration: Duration) -> Result<ExitCode, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        TempDir(std::env::temp_dir().join(format!("tollgate-demo-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&dir.0)
        .map_err(|e| CliError::Server(format!("cannot create {}: {e}", dir.0.display())))?;
    let catalog = dir.0.join("voca.toml");
    std::fs::write(&catalog, VOCA)
        .map_err(|e| CliError::Server(format!("cannot write {}: {e}", catalog.display())))?;
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.0.clone()),
        storage_url: Some(format!("sqlite://{}", dir.0.join("tollgate.db").display())),
        catalog: Some(catalog),
    };
    let settings = Config::load(&ConfigFile::None, &overrides)
        .and_then(|c| c.resolve())
        .map_err(|e| CliError::Server(e.to_string()))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| CliError::Server(format!("cannot listen on {}: {e}", settings.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Server(format!("cannot read the listening address: {e}")))?;
    let started = app::build(&settings)
        .await
        .map_err(|e| CliError::Server(e.to_string()))?;
    let key = started
        .first_admin_key
        .clone()
        .ok_or_else(|| CliError::Server("the embedded server minted no admin key".into()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::run(started, listener, async {
        let _ = stopped.await;
    }));
    println!(
        "embedded server on http://{addr} (VOCA AI catalog, SQLite in {}) for {} s",
        dir.0.display(),
        duration.as_secs()
    );
    let c = Client::new(&format!("http://{addr}"), Some(key))?;
    let outcome = Demo::new(c, duration).run().await;
    let _ = stop.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: the embedded server stopped with: {e}"),
        Err(e) => eprintln!("warning: the embedded server task failed: {e}"),
    }
    drop(dir);
    outcome
}

/// A tiny xorshift: varied traffic without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

struct DemoCustomer {
    id: String,
    plan: String,
}

struct Demo {
    c: Client,
    start: Instant,
    deadline: Instant,
    customers: Vec<DemoCustomer>,
    seen_alerts: BTreeSet<(String, String, String)>,
    seen_denials: BTreeSet<(String, String, String)>,
    requests: u64,
    denials: u64,
    events: u64,
    rng: Rng,
    tag: String,
}

/// What a consume came to.
enum Outcome {
    Allowed(Value),
    Denied,
}

impl Demo {
    fn new(c: Client, duration: Duration) -> Demo {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let start = Instant::now();
        Demo {
            c,
            start,
            deadline: start + duration,
            customers: Vec::new(),
            seen_alerts: BTreeSet::new(),
            seen_denials: BTreeSet::new(),
            requests: 0,
            denials: 0,
            events: 0,
            rng: Rng(u64::try_from(now.as_nanos() % u128::from(u64::MAX)).unwrap_or(1) | 1),
            tag: format!("{:x}", now.as_secs()),
        }
    }

    fn log(&self, what: &str, line: &str) {
        println!(
            "[{:>5.1}s] {what:<9} {line}",
            self.start.elapsed().as_secs_f64()
        );
    }

    fn time_left(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn customer(&self, plan: &str) -> Option<String> {
        self.customers
            .iter()
            .find(|c| c.plan == plan)
            .map(|c| c.id.clone())
    }

    async fn run(mut self) -> Result<ExitCode, CliError> {
        self.setup().await?;
        self.script().await?;
        // Ctrl-C ends the traffic early; the summary is still printed.
        tokio::select! {
            r = self.traffic() => r?,
            _ = tokio::signal::ctrl_c() => println!("interrupted: stopping the traffic"),
        }
        self.summary().await?;
        Ok(ExitCode::SUCCESS)
    }

    /// One customer per plan the server has.
    async fn setup(&mut self) -> Result<(), CliError> {
        let plans: client::ServedPlans =
            client::view(&self.c.get("/v1/plans").await?, "plan list")?;
        let served: Vec<String> = plans.data.iter().map(|p| p.key.clone()).collect();
        let wanted: Vec<String> = if PLANS.iter().all(|p| served.contains(&p.to_string())) {
            PLANS.iter().map(|p| p.to_string()).collect()
        } else {
            served.iter().take(5).cloned().collect()
        };
        for plan in wanted {
            let id = format!("demo-{}-{plan}", self.tag);
            self.c
                .post(
                    "/v1/customers",
                    &json!({
                        "id": id, "name": format!("Demo {plan} customer"),
                        "plan": plan, "status": "active",
                    }),
                )
                .await?;
            self.requests += 1;
            self.log("customer", &format!("{id} subscribed to {plan}"));
            self.customers.push(DemoCustomer { id, plan });
        }
        Ok(())
    }

    /// POST /v1/check with consume=true.
    async fn consume(
        &mut self,
        customer: &str,
        feature: &str,
        quantity: u64,
    ) -> Result<Outcome, CliError> {
        let body = json!({
            "customer": customer, "feature": feature,
            "quantity": quantity.to_string(), "consume": true,
            "properties": {"source": "tollgate demo"},
        });
        let answer = self
            .c
            .send(self.c.request(Method::POST, "/v1/check").json(&body))
            .await?;
        self.requests += 1;
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return Ok(Outcome::Allowed(answer.body));
        }
        let p = Problem::of(answer.status, &answer.body);
        if status == 429 || status == 403 {
            self.denials += 1;
            let key = (customer.to_string(), feature.to_string(), p.code.clone());
            if self.seen_denials.insert(key) {
                let mut line = format!("{customer} {feature} +{quantity}: {}", p.code);
                if let (Some(u), Some(l)) = (&p.used, &p.limit) {
                    line.push_str(&format!(" (used {u} / limit {l})"));
                }
                if let Some(u) = &p.upgrade_to {
                    line.push_str(&format!("; upgrade to {u}"));
                }
                self.log("DENIED", &line);
            }
            return Ok(Outcome::Denied);
        }
        Err(p.into_error())
    }

    /// Reads every dashboard and logs the alerts not seen yet.
    async fn watch_alerts(&mut self) -> Result<(), CliError> {
        let ids: Vec<String> = self.customers.iter().map(|c| c.id.clone()).collect();
        for id in ids {
            let d: Dashboard = client::view(
                &self
                    .c
                    .get(&format!("/v1/customers/{}/usage", client::enc(&id)))
                    .await?,
                "usage dashboard",
            )?;
            self.requests += 1;
            for a in d.alerts {
                let key = (id.clone(), a.feature.clone(), a.kind.clone());
                if self.seen_alerts.insert(key) {
                    let mut line =
                        format!("{id} {}: {} at {}%", a.feature, a.kind, a.percentage_used);
                    if let Some(e) = &a.emergency_allowance {
                        line.push_str(&format!(", emergency allowance {e} available"));
                    }
                    self.log("ALERT", &line);
                }
            }
        }
        Ok(())
    }

    /// The notable moments, each once.
    async fn script(&mut self) -> Result<(), CliError> {
        // The free customer runs into its hard limit one query at a time.
        if let Some(free) = self.customer("free") {
            let mut n = 0u64;
            let mut next_watch = 50u64;
            loop {
                match self.consume(&free, "queries_per_month", 1).await? {
                    Outcome::Allowed(_) => n += 1,
                    Outcome::Denied => break,
                }
                if n >= next_watch {
                    self.watch_alerts().await?;
                    next_watch += 15;
                }
                if n > 100_000 {
                    break;
                }
            }
            self.log(
                "limit",
                &format!("{free}: {n} queries allowed before the hard limit"),
            );
            self.watch_alerts().await?;
            // A top-up grant lets it go on.
            let g = self
                .c
                .post(
                    &format!("/v1/customers/{}/grants", client::enc(&free)),
                    &json!({"feature": "queries_per_month", "quantity": "25", "kind": "top_up"}),
                )
                .await?;
            self.requests += 1;
            self.log(
                "TOP-UP",
                &format!(
                    "{free}: grant {} of 25 queries_per_month",
                    g["id"].as_str().unwrap_or("?")
                ),
            );
            if let Outcome::Allowed(d) = self.consume(&free, "queries_per_month", 5).await? {
                self.log(
                    "allowed",
                    &format!(
                        "{free} queries_per_month +5 after the top-up (remaining {})",
                        d["remaining"].as_str().unwrap_or("?")
                    ),
                );
            }
        }

        // The starter customer hits its limit and draws its emergency pool.
        if let Some(starter) = self.customer("starter") {
            let _ = self.consume(&starter, "queries_per_month", 1_990).await?;
            while let Outcome::Allowed(_) = self.consume(&starter, "queries_per_month", 3).await? {}
            self.watch_alerts().await?;
            let pool = self
                .c
                .send(
                    self.c
                        .request(
                            Method::POST,
                            &format!("/v1/customers/{}/emergency-pool", client::enc(&starter)),
                        )
                        .json(&json!({"feature": "queries_per_month"})),
                )
                .await?;
            self.requests += 1;
            if pool.status.is_success() {
                self.log(
                    "EMERGENCY",
                    &format!(
                        "{starter}: drew the emergency pool: +{} queries_per_month ({})",
                        pool.body["quantity"].as_str().unwrap_or("?"),
                        pool.body["id"].as_str().unwrap_or("?")
                    ),
                );
                if let Outcome::Allowed(d) = self.consume(&starter, "queries_per_month", 10).await?
                {
                    self.log(
                        "allowed",
                        &format!(
                            "{starter} queries_per_month +10 from the pool (remaining {})",
                            d["remaining"].as_str().unwrap_or("?")
                        ),
                    );
                }
            } else {
                let p = Problem::of(pool.status, &pool.body);
                self.log(
                    "info",
                    &format!("{starter}: no emergency pool: {} {}", p.code, p.detail),
                );
            }
        }

        self.soft_limit().await?;

        // Gauges: the pro team grows, locations fill up.
        if let Some(pro) = self.customer("pro") {
            let base = format!("/v1/customers/{}/gauges", client::enc(&pro));
            for delta in [3, 4] {
                let d = self
                    .gauge(
                        &format!("{base}/team_members_max/adjust"),
                        json!({"delta": delta}),
                    )
                    .await?;
                if let Some(d) = d {
                    self.log(
                        "gauge",
                        &format!(
                            "{pro} team_members_max {delta:+} → {} of {}",
                            d["used"].as_str().unwrap_or("?"),
                            d["limit"].as_str().unwrap_or("unlimited")
                        ),
                    );
                }
            }
            if let Some(d) = self
                .gauge(&format!("{base}/locations_max"), json!({"level": 4}))
                .await?
            {
                self.log(
                    "gauge",
                    &format!(
                        "{pro} locations_max set to {} of {}",
                        d["used"].as_str().unwrap_or("?"),
                        d["limit"].as_str().unwrap_or("unlimited")
                    ),
                );
            }
            let _ = self
                .gauge(&format!("{base}/locations_max/adjust"), json!({"delta": 2}))
                .await?;
        }

        // Reserve, then commit what was really used.
        if let Some(business) = self.customer("business") {
            let r = self
                .c
                .post(
                    "/v1/reservations",
                    &json!({"customer": business, "feature": "tokens", "quantity": "8000",
                            "ttl_seconds": 60}),
                )
                .await?;
            self.requests += 1;
            let id = r["id"].as_str().unwrap_or_default().to_string();
            self.log("reserve", &format!("{business} tokens 8000 held ({id})"));
            let d = self
                .c
                .post(
                    &format!("/v1/reservations/{}/commit", client::enc(&id)),
                    &json!({"quantity": "6400"}),
                )
                .await?;
            self.requests += 1;
            self.log(
                "commit",
                &format!(
                    "{business} tokens 6400 of 8000 used, the rest released (used {})",
                    d["used"].as_str().unwrap_or("?")
                ),
            );
        }

        // A batch of events, as a backend would send them.
        self.batch(500).await?;
        self.watch_alerts().await
    }

    /// A gauge change; denials are logged by [`Demo::note_denial`].
    async fn gauge(&mut self, path: &str, body: Value) -> Result<Option<Value>, CliError> {
        let method = if path.ends_with("/adjust") {
            Method::POST
        } else {
            Method::PUT
        };
        let answer = self
            .c
            .send(self.c.request(method, path).json(&body))
            .await?;
        self.requests += 1;
        if answer.status.is_success() {
            return Ok(Some(answer.body));
        }
        let p = Problem::of(answer.status, &answer.body);
        if matches!(answer.status.as_u16(), 403 | 429) {
            self.denials += 1;
            let what = path
                .rsplit("/gauges/")
                .next()
                .unwrap_or(path)
                .replace("/adjust", "");
            let mut line = format!(
                "{} {what} {}: {}",
                path.split('/').nth(3).unwrap_or("?"),
                body.get("delta")
                    .map(|d| format!("{d:+}", d = d.as_i64().unwrap_or(0)))
                    .or_else(|| body.get("level").map(|l| format!("set to {l}")))
                    .unwrap_or_default(),
                p.code
            );
            if let (Some(u), Some(l)) = (&p.used, &p.limit) {
                line.push_str(&format!(" (level {u} / limit {l})"));
            }
            self.log("DENIED", &line);
            return Ok(None);
        }
        Err(p.into_error())
    }

    /// Soft limits: usage beyond the limit is allowed and flagged as overage.
    async fn soft_limit(&mut self) -> Result<(), CliError> {
        let plans: client::ServedPlans =
            client::view(&self.c.get("/v1/plans").await?, "plan list")?;
        let raw = self.c.get("/v1/plans").await?;
        self.requests += 2;
        for (i, p) in plans.data.iter().enumerate() {
            let Some(customer) = self.customer(&p.key) else {
                continue;
            };
            let Some(ents) = raw["data"][i]["entitlements"].as_object() else {
                continue;
            };
            let soft = ents.iter().find(|(_, e)| {
                e["kind"] == "metered" && e["hard"] == false && e["limit"].is_string()
            });
            if let Some((feature, e)) = soft {
                let limit: u64 = e["limit"]
                    .as_str()
                    .and_then(|l| l.parse::<f64>().ok())
                    .map_or(100, |l| l.ceil() as u64);
                let over = limit + limit / 10 + 1;
                if let Outcome::Allowed(d) = self.consume(&customer, feature, over).await? {
                    self.log(
                        "OVERAGE",
                        &format!(
                            "{customer} {feature} +{over} over a soft limit of {limit}: \
                             allowed, overage {}",
                            d["overage"].as_str().unwrap_or("?")
                        ),
                    );
                }
                return Ok(());
            }
        }
        self.log(
            "info",
            "no plan of these customers has a soft metered limit: no overage to show",
        );
        Ok(())
    }

    /// POST /v1/events with `n` token events spread over the paid customers.
    async fn batch(&mut self, n: usize) -> Result<(), CliError> {
        let paid: Vec<String> = self
            .customers
            .iter()
            .filter(|c| c.plan != "free")
            .map(|c| c.id.clone())
            .collect();
        if paid.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let who = &paid[usize::try_from(self.rng.below(paid.len() as u64)).unwrap_or(0)];
            events.push(json!({
                "customer": who, "feature": "tokens",
                "quantity": (200 + self.rng.below(1800)).to_string(),
                "properties": {"model": if self.rng.below(2) == 0 { "small" } else { "large" }},
            }));
        }
        let out = self
            .c
            .post("/v1/events", &json!({ "events": events }))
            .await?;
        self.requests += 1;
        let got: client::Ingested = client::view(&out, "ingestion result")?;
        self.events += got.accepted;
        self.log(
            "events",
            &format!(
                "batch of {n} token events: {} accepted, {} duplicate, {} rejected",
                got.accepted, got.duplicate, got.rejected
            ),
        );
        Ok(())
    }

    /// Random traffic until the deadline.
    async fn traffic(&mut self) -> Result<(), CliError> {
        let mut last_watch = Instant::now();
        let mut last_batch = Instant::now();
        while self.time_left() {
            let i = usize::try_from(self.rng.below(self.customers.len() as u64)).unwrap_or(0);
            let Some(c) = self.customers.get(i) else {
                break;
            };
            let id = c.id.clone();
            let (feature, qty) = match self.rng.below(3) {
                0 => ("api_calls_per_day", 1 + self.rng.below(5)),
                _ => ("queries_per_month", 1 + self.rng.below(20)),
            };
            let _ = self.consume(&id, feature, qty).await?;
            if last_batch.elapsed() >= Duration::from_secs(2) {
                self.batch(200).await?;
                last_batch = Instant::now();
            }
            if last_watch.elapsed() >= Duration::from_secs(1) {
                self.watch_alerts().await?;
                last_watch = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.watch_alerts().await
    }

    async fn summary(&mut self) -> Result<(), CliError> {
        println!();
        println!(
            "{} requests, {} denials, {} events ingested in {:.1} s",
            self.requests,
            self.denials,
            self.events,
            self.start.elapsed().as_secs_f64()
        );
        let ids: Vec<String> = self.customers.iter().map(|c| c.id.clone()).collect();
        for id in ids {
            let d: Dashboard = client::view(
                &self
                    .c
                    .get(&format!("/v1/customers/{}/usage", client::enc(&id)))
                    .await?,
                "usage dashboard",
            )?;
            println!();
            print!("{}", render::dashboard(&d));
        }
        Ok(())
    }
}
