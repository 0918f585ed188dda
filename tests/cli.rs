//! The `tollgate` binary as a person runs it: real process, real files.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn example_catalogs() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/catalogs");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_catalog_validates() {
    let files = example_catalogs();
    assert_eq!(files.len(), 5, "one catalog per seed product");
    let mut args = vec!["plans", "validate"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = tollgate(&args);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        stdout(&out).matches("\nok ").count() + 1,
        5,
        "{}",
        stdout(&out)
    );
}

#[test]
fn quote_reproduces_the_pulse_worked_example() {
    let out = tollgate(&[
        "quote",
        "--catalog",
        "examples/catalogs/pulse.toml",
        "--plan",
        "pro",
        "participant_minutes=50000",
        "egress_minutes=5000",
        "storage_gb=50",
        "bandwidth_gb=500",
        "api_requests=500000",
    ]);
    assert!(out.status.success(), "{:?}", out);
    let text = stdout(&out);
    for expected in [
        "49.00 USD",
        "200.00 USD",
        "60.00 USD",
        "5.00 USD",
        "25.00 USD",
        "0.50 USD",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(total.ends_with("339.50 USD"), "{total}");
}

#[test]
fn quote_as_json_carries_money_as_decimal_strings() {
    let out = tollgate(&[
        "quote",
        "-c",
        "examples/catalogs/pulse.toml",
        "-p",
        "pro",
        "participant_minutes=50000",
        "egress_minutes=5000",
        "storage_gb=50",
        "bandwidth_gb=500",
        "api_requests=500000",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["amount"], "339.50");
    assert_eq!(v["total"]["currency"], "USD");
    assert_eq!(v["lines"].as_array().unwrap().len(), 6);
}

#[test]
fn quote_with_an_unknown_metric_or_plan_fails_with_a_clear_line() {
    let out = tollgate(&[
        "quote",
        "-c",
        "examples/catalogs/pulse.toml",
        "-p",
        "pro",
        "participant_minuets=5",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("participant_minuets"), "{err}");

    let out = tollgate(&["quote", "-c", "examples/catalogs/pulse.toml", "-p", "gold"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"gold\"") && err.contains("free, pro, enterprise"),
        "{err}"
    );
}

#[test]
fn validation_reports_every_mistake_with_its_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[catalog]
name = "Broken"

[features.queries]
kind = "metered"
name = "Queries"
reset = "billing_period"

[plans.pro]
name = "Pro"
tier = 1
base_price = "49.00"
currency = "USD"
interval = "month"
colour = "blue"

[plans.pro.entitlements]
queries = { limit = -5 }
"#,
    )
    .unwrap();
    let out = tollgate(&["plans", "validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("plans.pro.entitlements.queries.limit"),
        "{text}"
    );
    assert!(text.contains("-5"), "{text}");
    assert!(text.contains("plans.pro.colour"), "{text}");
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let out = tollgate(&["plans", "show", "no/such/catalog.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot read no/such/catalog.toml"),
        "{err}"
    );
}

#[test]
fn plans_show_lists_every_plan_by_tier() {
    let out = tollgate(&["plans", "show", "examples/catalogs/voca.toml"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let order: Vec<usize> = ["free", "starter", "pro", "business", "enterprise"]
        .iter()
        .map(|p| text.find(&format!("  {p}  ")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn the_ten_mistakes_example_reports_ten_paths() {
    let out = tollgate(&["plans", "validate", "examples/broken/ten-mistakes.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("10 error(s)"), "{text}");
    let paths: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert_eq!(paths.len(), 10, "{text}");
    assert!(
        paths.contains(&"plans.pro.entitlements.queries.limit"),
        "{text}"
    );
    assert!(
        paths.contains(&"plans.team.charges[0].price.tiers[1].up_to"),
        "{text}"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["plans", "show", "examples/catalogs/voca.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line is written (`… | head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}
