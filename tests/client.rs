//! The subcommands that talk to a running server (`customers`, `usage`,
//! `plans apply`, `demo --url`), run as a person runs them: the real binary
//! against a real `tollgate serve` on a temporary SQLite store.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalogs/voca.toml")
}

/// `tollgate serve` on a free port: its URL and the admin key it printed
/// (as tests/serve.rs reads them); killed on drop.
struct Server {
    child: Child,
    url: String,
    key: String,
}

impl Server {
    // A start that fails panics the test; the process ends with it.
    #[allow(clippy::zombie_processes)]
    fn start(data_dir: &Path) -> Server {
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--catalog"])
            .arg(catalog())
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut key = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the server prints its address within 30 s");
            if let Some(k) = line.strip_prefix("admin API key (shown once, store it now): ") {
                key = Some(k.to_string());
            }
            if let Some(addr) = line.strip_prefix("tollgate listening on ") {
                return Server {
                    child,
                    url: addr.to_string(),
                    key: key.expect("a first start prints an admin key"),
                };
            }
        }
    }

    /// Runs `tollgate ARGS` against this server: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = bin()
            .args(args)
            .env("TOLLGATE_URL", &self.url)
            .env("TOLLGATE_API_KEY", &self.key)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn customers_usage_and_plans_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));

    // customers create / show / list
    let (code, out, err) = server.run(&[
        "customers",
        "create",
        "acme",
        "--plan",
        "free",
        "--name",
        "Acme Inc",
        "--email",
        "ops@acme.test",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "created customer acme on plan free v1 (active)");
    let (code, _, err) = server.run(&["customers", "create", "acme"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "error: 409 conflict: customer \"acme\" already exists"
    );
    let (code, _, err) = server.run(&["customers", "create", "x", "--plan", "platinum"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: 422 validation:")
            && err.contains("plan: unknown plan \"platinum\""),
        "{err}"
    );
    for (id, plan) in [("beta", "pro"), ("gamma", "pro"), ("delta", "starter")] {
        let (code, out, err) = server.run(&["customers", "create", id, "--plan", plan, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["subscription"]["plan"], plan);
    }
    let (code, out, err) = server.run(&["customers", "show", "acme"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plan      free v1 (active)"), "{out}");
    assert!(out.contains("ops@acme.test"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("queries_per_month"))
        .unwrap();
    assert_eq!(
        row.split_whitespace().take(6).collect::<Vec<_>>(),
        ["queries_per_month", "metered", "yes", "0", "100", "100"]
    );
    let (code, _, err) = server.run(&["customers", "show", "nobody"]);
    assert_eq!(code, 2);
    assert!(err.contains("404") && err.contains("\"nobody\""), "{err}");

    let (code, out, _) = server.run(&["customers", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 5, "a header and four customers: {out}");
    let (_, out, _) = server.run(&["customers", "list", "--plan", "pro", "--json"]);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert!(ids.contains(&"beta".into()) && ids.contains(&"gamma".into()));
    let (_, out, _) = server.run(&["customers", "list", "--limit", "3", "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        3
    );

    // usage send until denied: exit 3, and nothing counted
    let (code, out, err) = server.run(&[
        "usage",
        "send",
        "acme",
        "api_calls_per_day",
        "20",
        "--property",
        "route=/chat",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "allowed: api_calls_per_day +20: used 20 / limit 50, remaining 30"
    );
    let (code, out, _) = server.run(&[
        "usage",
        "send",
        "acme",
        "api_calls_per_day",
        "20",
        "--key",
        "req-2",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("used 40 / limit 50"), "{out}");
    // The same idempotency key again counts once.
    let (code, out, _) = server.run(&[
        "usage",
        "send",
        "acme",
        "api_calls_per_day",
        "20",
        "--key",
        "req-2",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("used 40 / limit 50") && out.contains("replayed"),
        "{out}"
    );
    let (code, out, _) = server.run(&["usage", "send", "acme", "api_calls_per_day", "20"]);
    assert_eq!(code, 3, "a denial exits 3: {out}");
    assert!(
        out.starts_with("denied: api_calls_per_day +20: limit_reached")
            && out.contains("used 40 / limit 50, remaining 10")
            && out.contains("upgrade to starter"),
        "{out}"
    );
    let (code, out, _) = server.run(&["usage", "send", "acme", "api_calls_per_day", "10"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("remaining 0"), "{out}");
    let (code, _, err) = server.run(&["usage", "send", "acme", "api_calls_per_day", "-1"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: 422 validation:") && err.contains("quantity"),
        "{err}"
    );

    // usage import: a CSV with good, duplicate and bad rows
    let csv = dir.path().join("usage.csv");
    let mut text = String::from("customer,feature,quantity,idempotency_key,properties\n");
    for i in 0..25 {
        text.push_str(&format!(
            "beta,tokens,{},imp-{i},\"{{\"\"model\"\":\"\"small\"\"}}\"\n",
            100 + i
        ));
    }
    text.push_str("ghost,tokens,5,imp-ghost,\n"); // line 27
    text.push_str("beta,tokens,lots,imp-bad,\n"); // line 28
    text.push_str("beta,tokens,7,imp-0,\n"); // a duplicate of line 2
    std::fs::write(&csv, text).unwrap();
    let (code, out, err) = server.run(&["usage", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 3, "rejected rows exit 3: {out}{err}");
    assert!(
        out.contains("28 rows: 25 accepted, 1 duplicate, 2 rejected"),
        "{out}"
    );
    assert!(out.contains("line 27: unknown_customer"), "{out}");
    assert!(out.contains("line 28: invalid_event (quantity"), "{out}");
    // Re-running the import changes nothing: every good row is a duplicate.
    let (_, out, _) = server.run(&["usage", "import", csv.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicate"].as_u64()),
        (Some(0), Some(26))
    );
    let bad_header = dir.path().join("bad.csv");
    std::fs::write(&bad_header, "who,feature,quantity\nacme,tokens,1\n").unwrap();
    let (code, _, err) = server.run(&["usage", "import", bad_header.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown column \"who\""), "{err}");

    // usage export: to stdout and to a file
    let (code, out, err) = server.run(&["usage", "export", "--customer", "beta"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,customer,feature,quantity,timestamp,recorded_at,source,billable,idempotency_key,properties"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 25, "{out}");
    assert!(rows.iter().all(|r| r.contains(",beta,tokens,")), "{out}");
    let file = dir.path().join("export.csv");
    let (code, out, _) = server.run(&["usage", "export", "-o", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    // 25 events and 3 consumes (the replay and the denial recorded nothing).
    assert!(out.starts_with("exported 28 rows"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 29);
    let (code, _, err) = server.run(&["usage", "export", "--from", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("422") && err.contains("from:"), "{err}");

    // plans apply: the served file again changes nothing
    let (code, out, err) = server.run(&["plans", "apply", catalog().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("starter      unchanged (stays v1)"), "{out}");
    assert!(out.contains("already serves this catalog"), "{out}");
    let changed = dir.path().join("voca-v2.toml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(catalog())
            .unwrap()
            .replace("base_price = \"29.00\"", "base_price = \"39.00\""),
    )
    .unwrap();
    let starter_of = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        let starter = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["plan"] == "starter")
            .unwrap()
            .clone();
        (v, starter)
    };
    // a dry run says what would change, and changes nothing
    let (code, out, _) = server.run(&[
        "plans",
        "apply",
        changed.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code, 0);
    let (v, starter) = starter_of(&out);
    assert_eq!(v["applied"], false);
    assert_eq!(starter["change"], "changed");
    assert_eq!(
        (
            starter["from_version"].clone(),
            starter["to_version"].clone()
        ),
        (1.into(), 2.into())
    );
    assert_eq!(starter["differences"][0], "base_price: 29.00 → 39.00");
    let (_, out, _) = server.run(&["plans", "apply", changed.to_str().unwrap(), "--dry-run"]);
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    // applied: starter v2 is offered at once
    let (code, out, err) = server.run(&["plans", "apply", changed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("starter      changed: v1 → v2"), "{out}");
    assert!(out.contains("applied to"), "{out}");
    let (code, out, _) = server.run(&["plans", "apply", changed.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let (v, starter) = starter_of(&out);
    assert_eq!(v["applied"], false, "{out}");
    assert_eq!(starter["change"], "unchanged");
    assert_eq!(starter["to_version"], 2);
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/broken/ten-mistakes.toml");
    let (code, _, err) = server.run(&["plans", "apply", broken.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("ten-mistakes.toml"), "{err}");

    // Errors that are not the server's answers.
    let (code, _, err) = server.run(&["customers", "list", "--api-key", "tg_wrong"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: 401 unauthenticated"), "{err}");
    let (code, _, err) = server.run(&["customers", "list", "--url", "http://127.0.0.1:9"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach http://127.0.0.1:9"), "{err}");
}

#[test]
fn demo_drives_a_running_server_and_prints_each_customers_usage() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let started = std::time::Instant::now();
    let (code, out, err) = server.run(&["demo", "--duration", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo stops by itself"
    );
    for notable in [
        "DENIED",
        "limit_reached",
        "ALERT",
        "TOP-UP",
        "EMERGENCY",
        "gauge",
        "reserve",
        "commit",
        "events",
    ] {
        assert!(out.contains(notable), "no {notable} in:\n{out}");
    }
    // A table per customer, from its usage dashboard.
    for plan in ["free", "starter", "pro", "business", "enterprise"] {
        assert!(
            out.contains(&format!("-{plan} ({plan} v1, active)")),
            "{out}"
        );
    }
    let headers = out
        .lines()
        .filter(|l| {
            l.split_whitespace().collect::<Vec<_>>()
                == ["FEATURE", "USED", "LIMIT", "PERCENT", "OVERAGE"]
        })
        .count();
    assert_eq!(headers, 5, "{out}");
    assert!(out.contains("cost so far"), "{out}");
    let (_, list, _) = server.run(&["customers", "list"]);
    assert_eq!(list.lines().count(), 6, "{list}");
    // Without a key for --url, it says what is missing.
    let out = bin()
        .args(["demo", "--url", &server.url, "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key"));
}

#[test]
fn demo_runs_on_an_embedded_server_and_cleans_up() {
    let out = bin().args(["demo", "--duration", "1"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("embedded server on http://127.0.0.1:"),
        "{first}"
    );
    assert!(
        stdout.contains("EMERGENCY") && stdout.contains("cost so far"),
        "{stdout}"
    );
    // The temporary data directory is gone.
    let dir = first
        .split("SQLite in ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap();
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
}

#[test]
fn a_large_import_is_sent_in_chunks_of_ten_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let (code, _, err) = server.run(&["customers", "create", "big", "--plan", "enterprise"]);
    assert_eq!(code, 0, "{err}");
    let csv = dir.path().join("big.csv");
    let mut text = String::from("feature,customer,quantity,idempotency_key\n");
    for i in 0..23_456 {
        text.push_str(&format!("tokens,big,{},k{i}\n", 1 + i % 7));
    }
    std::fs::write(&csv, text).unwrap();
    let (code, out, err) = server.run(&["usage", "import", csv.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], 23_456, "{out}");
    assert_eq!(v["rejected"], 0, "{out}");
    let (code, out, _) = server.run(&["customers", "show", "big", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tokens = v["entitlements"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "tokens")
        .unwrap()
        .clone();
    let expected: u64 = (0..23_456u64).map(|i| 1 + i % 7).sum();
    assert_eq!(tokens["used"], expected.to_string());
}

#[test]
fn subscriptions_change_cancel_and_history_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let (code, _, err) = server.run(&["customers", "create", "acme", "--plan", "starter"]);
    assert_eq!(code, 0, "{err}");

    // A preview changes nothing.
    let (code, out, err) = server.run(&["subscriptions", "change", "acme", "pro", "--preview"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("preview: acme starter v1 → pro v1 (upgrade, immediately"),
        "{out}"
    );
    assert!(out.contains("proration:") && out.contains("total"), "{out}");
    assert!(
        out.contains("gains:") && out.contains("api_access"),
        "{out}"
    );
    assert!(out.contains("limit:    locations_max 1 → 5"), "{out}");

    let (code, out, err) = server.run(&[
        "subscriptions",
        "change",
        "acme",
        "pro",
        "--reason",
        "more locations",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "applied");
    assert_eq!(v["subscription"]["plan"], "pro");
    assert_eq!(v["pending_items"].as_array().unwrap().len(), 2, "{v}");

    // A downgrade waits for the period end; it can be seen and canceled.
    let (code, out, err) = server.run(&["subscriptions", "change", "acme", "starter"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("scheduled: acme pro v1 → starter v1 (downgrade, period end"),
        "{out}"
    );
    let (code, out, _) = server.run(&["subscriptions", "scheduled", "acme"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("change to starter v1 at") && out.contains("(pending)"),
        "{out}"
    );
    let (code, out, _) = server.run(&["subscriptions", "scheduled", "acme", "--cancel"]);
    assert_eq!(code, 0);
    assert!(out.contains("(canceled)"), "{out}");
    let (_, out, _) = server.run(&["subscriptions", "scheduled", "acme"]);
    assert_eq!(out.trim(), "nothing scheduled");

    // Refusals are one line, exit 2.
    let (code, _, err) = server.run(&["subscriptions", "change", "acme", "platinum"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("422") && err.contains("plan: unknown plan"),
        "{err}"
    );

    let (code, out, err) = server.run(&["subscriptions", "cancel", "acme", "--now"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("applied: acme on pro v1, canceled"),
        "{out}"
    );

    let (code, out, err) = server.run(&["subscriptions", "history", "acme"]);
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(kinds, ["subscribe", "upgrade", "cancel"], "{out}");
    assert!(out.contains("(more locations)"), "{out}");
}

#[test]
fn webhooks_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    // Refused: a loopback receiver (the SSRF guard), named by its field.
    let (code, _, err) = srv.run(&["webhooks", "create", "http://127.0.0.1:9/hook"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("url") && err.contains("loopback"), "{err}");
    let (code, out, err) = srv.run(&[
        "webhooks",
        "create",
        "https://hooks.example.com/tollgate",
        "--event-type",
        "usage.*",
        "--description",
        "ops",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let ep: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = ep["id"].as_str().unwrap().to_string();
    assert!(ep["secret"].as_str().unwrap().starts_with("whsec_"));
    let (code, out, _) = srv.run(&["webhooks", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "{id}  https://hooks.example.com/tollgate  [usage.*]  healthy"
        )),
        "{out}"
    );
    let (code, out, _) = srv.run(&["webhooks", "rotate-secret", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("old secret   still signs until"), "{out}");
    let (code, out, _) = srv.run(&["webhooks", "update", &id, "--disable", "--all-events"]);
    assert_eq!(code, 0);
    assert!(out.contains("[all events]  off"), "{out}");
    let (code, out, _) = srv.run(&["webhooks", "test", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("test event evt"), "{out}");
    let (code, out, _) = srv.run(&["webhooks", "deliveries", "--endpoint", &id]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    let delivery = out.split_whitespace().next().unwrap().to_string();
    let (code, out, _) = srv.run(&["webhooks", "delivery", &delivery]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&delivery), "{out}");
    let (code, out, _) = srv.run(&["webhooks", "retry", &delivery]);
    assert_eq!(code, 0);
    assert!(out.starts_with("queued"), "{out}");
    let (code, _, err) = srv.run(&[
        "webhooks",
        "replay",
        "--from",
        "2026-01-02T00:00:00Z",
        "--to",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("to"), "{err}");
    let (code, out, _) = srv.run(&["webhooks", "delete", &id]);
    assert_eq!((code, out.trim()), (0, format!("deleted {id}").as_str()));
    let (code, _, err) = srv.run(&["webhooks", "show", &id]);
    assert_eq!(code, 2);
    assert!(err.contains("404"), "{err}");
}
