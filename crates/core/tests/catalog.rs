#![allow(clippy::unwrap_used)]
//! The catalog: loading, validation, the example catalogs, versioning.

use std::path::PathBuf;

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::catalog::{
    Catalog, DiffEffect, Enforcement, Entitlement, FeatureKind, Limit, Threshold, Value, ValueType,
    VersionChangeKind, assign_versions, diff_plans, fingerprint, load_catalog,
};
use tollgate_core::money::Currency;
use tollgate_core::period::ResetPeriod;
use tollgate_core::pricing::{ChargePrice, PriceModel, UsageQuantity};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/catalogs")
}

fn example(name: &str) -> Catalog {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    match load_catalog(name, &text) {
        Ok(c) => c,
        Err(e) => panic!("{name} does not validate:\n{e}"),
    }
}

/// Loads a catalog expected to be invalid and returns its error lines.
fn errors(text: &str) -> Vec<String> {
    match load_catalog("test.toml", text) {
        Ok(_) => panic!("expected errors, the catalog loaded"),
        Err(e) => e.lines(),
    }
}

fn load(text: &str) -> Catalog {
    match load_catalog("test.toml", text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid catalog:\n{e}"),
    }
}

fn usage(metric: &str, quantity: Decimal) -> UsageQuantity {
    UsageQuantity {
        metric: metric.into(),
        dimensions: Default::default(),
        quantity,
    }
}

const HEAD: &str = r#"
[catalog]
name = "Test"
currency = "USD"

[features.queries]
kind = "metered"
unit = "query"
"#;

// ---------------------------------------------------------------------------
// The example catalogs
// ---------------------------------------------------------------------------

#[test]
fn every_example_catalog_validates() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chat.toml",
            "coaching.toml",
            "magi.toml",
            "pulse.toml",
            "voca.toml"
        ]
    );
    for name in &names {
        let catalog = example(name);
        assert!(!catalog.plans.is_empty(), "{name}");
        // Plans come sorted by tier.
        assert!(
            catalog.plans.windows(2).all(|w| w[0].tier < w[1].tier),
            "{name}"
        );
    }
}

#[test]
fn semantics_catalog_pulse_pro_quote_is_339_50() {
    let pulse = example("pulse.toml");
    let pro = pulse.plan("pro").unwrap();
    let quote = pro
        .quote(&[
            usage("participant_minutes", dec!(50000)),
            usage("egress_minutes", dec!(5000)),
            usage("storage_gb", dec!(50)),
            usage("bandwidth_gb", dec!(500)),
            usage("api_requests", dec!(500000)),
        ])
        .unwrap();
    assert_eq!(quote.total.to_string(), "339.50 USD");
    let amounts: Vec<String> = quote
        .lines
        .iter()
        .map(|l| l.amount.amount.to_string())
        .collect();
    assert_eq!(
        amounts,
        ["49.00", "200.00", "60.00", "5.00", "25.00", "0.50"]
    );
    assert_eq!(quote.lines[0].description, "Pro plan (monthly)");
}

#[test]
fn pulse_limits_thresholds_and_enterprise_prices() {
    let pulse = example("pulse.toml");
    let keys: Vec<&str> = pulse.plans.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["free", "pro", "enterprise"]);
    let free = pulse.plan("free").unwrap();
    assert_eq!(free.base_price.amount, dec!(0));
    assert_eq!(
        free.entitlement("participant_minutes").unwrap().limit(),
        Some(Limit::Finite(dec!(1000)))
    );
    assert_eq!(
        free.alert_thresholds,
        [Threshold::Percent(dec!(80)), Threshold::Percent(dec!(95))]
    );
    let ent = pulse.plan("enterprise").unwrap();
    assert_eq!(
        ent.alert_thresholds,
        [Threshold::Percent(dec!(90)), Threshold::Percent(dec!(95))]
    );
    assert_eq!(
        ent.entitlement("storage_gb").unwrap().limit(),
        Some(Limit::Unlimited)
    );
    assert!(matches!(
        pulse.feature("storage_gb").unwrap().kind,
        FeatureKind::Gauge
    ));
    // Enterprise: 299 base + 50,000 minutes × 0.003 = 150 + 1,000,000 API
    // requests × 0.0000008 = 0.80.
    let quote = ent
        .quote(&[
            usage("participant_minutes", dec!(50000)),
            usage("api_requests", dec!(1000000)),
        ])
        .unwrap();
    assert_eq!(quote.total.amount, dec!(449.80));
}

#[test]
fn voca_flags_follow_the_seed_tiers() {
    let voca = example("voca.toml");
    let keys = |flag: &str| -> Vec<String> {
        voca.plans_with_flag(flag)
            .iter()
            .map(|p| p.key.clone())
            .collect()
    };
    let all = ["free", "starter", "pro", "business", "enterprise"];
    assert_eq!(keys("basic_queries"), all);
    assert_eq!(keys("basic_dashboard"), all);
    for flag in ["conversation_history", "email_support"] {
        assert_eq!(keys(flag), all[1..], "{flag}");
    }
    for flag in [
        "advanced_analytics",
        "api_access",
        "phone_support",
        "advanced_reports",
    ] {
        assert_eq!(keys(flag), all[2..], "{flag}");
    }
    for flag in [
        "batch_processing",
        "webhook_support",
        "crm_integrations",
        "priority_support",
        "custom_reports",
        "data_export",
    ] {
        assert_eq!(keys(flag), all[3..], "{flag}");
    }
    for flag in [
        "custom_ai_training",
        "white_label_branding",
        "custom_domains",
        "dedicated_manager",
        "sla_guarantees",
        "api_analytics",
    ] {
        assert_eq!(keys(flag), all[4..], "{flag}");
    }
    let flags = voca
        .features
        .values()
        .filter(|f| f.kind == FeatureKind::Flag)
        .count();
    assert_eq!(flags, 20);
}

#[test]
fn voca_limits_match_the_seed_with_minus_one_as_unlimited() {
    let voca = example("voca.toml");
    let limit = |plan: &str, feature: &str| {
        voca.plan(plan)
            .unwrap()
            .entitlement(feature)
            .unwrap()
            .limit()
    };
    let f = |n: i64| Some(Limit::Finite(Decimal::from(n)));
    assert_eq!(limit("free", "queries_per_month"), f(100));
    assert_eq!(limit("starter", "queries_per_month"), f(2000));
    assert_eq!(limit("business", "locations_max"), f(25));
    assert_eq!(limit("pro", "api_calls_per_day"), f(2000));
    assert_eq!(limit("business", "team_members_max"), f(50));
    assert_eq!(limit("free", "custom_templates"), f(0));
    assert_eq!(limit("pro", "integrations_max"), f(10));
    for feature in [
        "queries_per_month",
        "locations_max",
        "api_calls_per_day",
        "team_members_max",
        "custom_templates",
        "integrations_max",
    ] {
        assert_eq!(
            limit("enterprise", feature),
            Some(Limit::Unlimited),
            "{feature}"
        );
    }
    let retention = |plan: &str| {
        voca.plan(plan)
            .unwrap()
            .entitlement("conversations_stored_days")
            .unwrap()
            .value()
            .cloned()
    };
    assert_eq!(retention("pro"), Some(Value::Integer(90)));
    assert_eq!(retention("enterprise"), Some(Value::Unlimited));

    let pro = voca.plan("pro").unwrap();
    assert_eq!(
        voca.reset_period(pro, "api_calls_per_day"),
        Some(ResetPeriod::Day)
    );
    let Some(Entitlement::Metered(q)) = pro.entitlement("queries_per_month") else {
        panic!("queries_per_month is metered");
    };
    assert_eq!(q.enforcement, Enforcement::Hard);
    assert_eq!(q.emergency_allowance, Some(dec!(1000)));
    assert_eq!(q.emergency_unit_price, Some(dec!(0.04)));
    assert_eq!(pro.alert_thresholds_for("queries_per_month").len(), 3);
    // Free has no emergency pool.
    let Some(Entitlement::Metered(fq)) =
        voca.plan("free").unwrap().entitlement("queries_per_month")
    else {
        panic!("queries_per_month is metered");
    };
    assert_eq!(fq.emergency_allowance, None);
}

#[test]
fn magi_trial_solo_teams() {
    let magi = example("magi.toml");
    let trial = magi.plan("trial").unwrap();
    let solo = magi.plan("solo").unwrap();
    let Some(Entitlement::Metered(p)) = trial.entitlement("prompts") else {
        panic!("prompts is metered");
    };
    assert_eq!(
        (p.limit, p.enforcement),
        (Limit::Finite(dec!(30)), Enforcement::Hard)
    );
    assert_eq!(trial.trial_days, Some(14));
    let Some(Entitlement::Metered(p)) = solo.entitlement("prompts") else {
        panic!("prompts is metered");
    };
    assert_eq!(
        (p.limit, p.enforcement, p.overage),
        (Limit::Finite(dec!(10000)), Enforcement::Soft, false)
    );
    assert_eq!(
        magi.reset_period(solo, "prompts"),
        Some(ResetPeriod::CalendarMonth)
    );
    assert_eq!(magi.rate_window_secs(solo, "snapshots"), Some(60));
    assert_eq!(
        solo.entitlement("snapshots").unwrap().limit(),
        Some(Limit::Finite(dec!(1)))
    );
    assert_eq!(
        magi.plan("teams")
            .unwrap()
            .entitlement("snapshots")
            .unwrap()
            .limit(),
        Some(Limit::Finite(dec!(10)))
    );
    assert!(trial.entitlement("snapshots").is_none());

    // "Upgrade to solo required" / "upgrade to teams required".
    let enabled = |e: &Entitlement| e.is_enabled();
    let up = |feature: &str, pred: &dyn Fn(&Entitlement) -> bool, from: u32| {
        magi.cheapest_plan_allowing(feature, pred, from, true)
            .map(|p| p.key.clone())
    };
    assert_eq!(up("git_export", &enabled, trial.tier), Some("solo".into()));
    assert_eq!(up("multi_user", &enabled, trial.tier), Some("teams".into()));
    assert_eq!(up("multi_user", &enabled, solo.tier), Some("teams".into()));
    assert_eq!(
        up("snapshots", &|e| e.allows(dec!(1)), trial.tier),
        Some("solo".into())
    );
    assert_eq!(
        up("snapshots", &|e| e.allows(dec!(5)), trial.tier),
        Some("teams".into())
    );
    assert_eq!(
        up("prompts", &|e| e.allows(dec!(31)), trial.tier),
        Some("solo".into())
    );
    assert_eq!(up("multi_user", &enabled, 2), None);
}

#[test]
fn coaching_plan_table() {
    let c = example("coaching.toml");
    let get = |plan: &str, f: &str| c.plan(plan).unwrap().entitlement(f).unwrap().clone();
    assert_eq!(
        get("pro", "audio_minutes").limit(),
        Some(Limit::Finite(dec!(1200)))
    );
    assert_eq!(
        get("business", "audio_minutes").limit(),
        Some(Limit::Unlimited)
    );
    assert_eq!(
        get("free", "max_file_size_mb"),
        Entitlement::Cap {
            max: Limit::Finite(dec!(50))
        }
    );
    assert_eq!(
        get("business", "max_file_size_mb"),
        Entitlement::Cap {
            max: Limit::Finite(dec!(500))
        }
    );
    assert_eq!(
        get("pro", "concurrent_processing"),
        Entitlement::Concurrency {
            limit: Limit::Finite(dec!(3))
        }
    );
    let formats = get("pro", "export_formats");
    let formats = formats.value().unwrap();
    assert!(formats.contains("vtt") && formats.contains("srt") && !formats.contains("xlsx"));
    assert!(
        get("business", "export_formats")
            .value()
            .unwrap()
            .contains("xlsx")
    );
    assert_eq!(
        get("business", "retention_days").value(),
        Some(&Value::Unlimited)
    );
    assert_eq!(
        get("pro", "retention_days").value(),
        Some(&Value::Integer(365))
    );
    assert_eq!(
        get("pro", "billing_analytics").value(),
        Some(&Value::String("basic".into()))
    );
    assert!(!get("free", "priority_support").is_enabled());
    assert!(get("pro", "priority_support").is_enabled());
    let FeatureKind::Concurrency { lease_ttl_secs } =
        c.feature("concurrent_processing").unwrap().kind
    else {
        panic!("concurrency feature");
    };
    assert_eq!(lease_ttl_secs, 1800);
    // The upgrade for a 120 MB file from free is pro, for 300 MB business.
    let fits = |mb: Decimal| move |e: &Entitlement| e.allows(mb);
    assert_eq!(
        c.cheapest_plan_allowing("max_file_size_mb", &fits(dec!(120)), 0, true)
            .unwrap()
            .key,
        "pro"
    );
    assert_eq!(
        c.cheapest_plan_allowing("max_file_size_mb", &fits(dec!(300)), 0, true)
            .unwrap()
            .key,
        "business"
    );
}

#[test]
fn chat_dimensional_token_prices() {
    let chat = example("chat.toml");
    let starter = chat.plan("starter").unwrap();
    let charge = starter.charge_for("llm_tokens").unwrap();
    let ChargePrice::Dimensional(d) = &charge.price else {
        panic!("dimensional price");
    };
    assert_eq!(d.group_by, ["model", "direction"]);
    assert_eq!(d.prices.len(), 8);
    let tokens = |model: &str, direction: &str, n: Decimal| UsageQuantity {
        metric: "llm_tokens".into(),
        dimensions: [
            ("model".to_string(), model.to_string()),
            ("direction".to_string(), direction.to_string()),
        ]
        .into(),
        quantity: n,
    };
    // 1M sonnet input tokens × 0.0000045 = 4.50; 100k output × 0.0000225 = 2.25;
    // local model tokens are free; base 19.00.
    let quote = starter
        .quote(&[
            tokens("claude-3-5-sonnet", "input", dec!(1000000)),
            tokens("claude-3-5-sonnet", "output", dec!(100000)),
            tokens("hermes-2-pro-mistral-7b", "output", dec!(500000)),
        ])
        .unwrap();
    assert_eq!(quote.total.amount, dec!(25.75));
    let Some(Entitlement::Metered(cost)) = starter.entitlement("llm_cost_usd") else {
        panic!("metered");
    };
    assert_eq!(cost.limit, Limit::Finite(dec!(25.00)));
    assert_eq!(
        chat.plan("free")
            .unwrap()
            .entitlement("llm_provider")
            .unwrap()
            .value(),
        Some(&Value::String("ollama".into()))
    );
    assert!(chat.plan("pro").unwrap().flag_enabled("custom_branding"));
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[test]
fn ten_different_mistakes_are_all_reported_with_their_paths() {
    let text = r#"
[catalog]
name = "Broken"
currency = "USD"

[features.queries]
kind = "metered"
unit = "query"

[features.storage_gb]
kind = "gauge"

[features.api_access]
kind = "flag"

[features.export_formats]
kind = "value"
value_type = "string_set"

[features.llm_provider]
kind = "value"
value_type = "string"
allowed = ["ollama", "claude", "openai"]

[plans.free]
tier = 0
base_price = "0"

[plans.free.entitlements]
querys = 100
llm_provider = "gemini"

[plans.pro]
tier = 0
base_price = "49.00"
currency = "USX"

[plans.pro.entitlements]
queries = { limit = -5 }
storage_gb = 1.5
export_formats = "json"
api_access = true

[[plans.pro.charges]]
metric = "api_access"
price = { model = "per_unit", unit_price = "1" }

[plans.team]
tier = 2
base_price = "99"

[plans.team.entitlements]
queries = { limit = 1000, enforcment = "soft" }
storage_gb = 100

[[plans.team.charges]]
metric = "storage_gb"
price = { model = "graduated", tiers = [ { up_to = 100, unit_price = "0.1" }, { up_to = 50, unit_price = "0.05" }, { unit_price = "0.01" } ] }
"#;
    let err = load_catalog("broken.toml", text).unwrap_err();
    let expected = [
        r#"broken.toml: plans.free.entitlements.llm_provider: "gemini" is not an allowed value of llm_provider ("claude", "ollama", "openai")"#,
        r#"broken.toml: plans.free.entitlements.querys: unknown feature "querys" (did you mean "queries"?)"#,
        r#"broken.toml: plans.pro.currency: unknown currency code "USX" (expected an ISO-4217 code such as "USD")"#,
        r#"broken.toml: plans.pro.entitlements.export_formats: export_formats is a string_set value feature: expected an array of strings such as ["json", "txt"], got "json""#,
        r#"broken.toml: plans.pro.entitlements.queries.limit: expected a non-negative integer or "unlimited", got -5"#,
        r#"broken.toml: plans.pro.entitlements.storage_gb: expected a non-negative integer or "unlimited", got 1.5: TOML floats are inexact and not accepted; write fractional numbers as strings, e.g. "1.5""#,
        r#"broken.toml: plans.pro.charges[0].metric: "api_access" is a flag feature; charges price consumed quantities: metered, gauge or rate features"#,
        r#"broken.toml: plans.team.entitlements.queries.enforcment: unknown key "enforcment"; did you mean "enforcement"?"#,
        r#"broken.toml: plans.team.charges[0].price.tiers[1].up_to: must be greater than tiers[0].up_to (100); tiers are in increasing order"#,
        r#"broken.toml: plans.pro.tier: tier 0 is already used by plan "free"; tiers rank plans (higher = more capable) and must be unique"#,
    ];
    assert_eq!(err.lines(), expected);
    assert_eq!(err.to_string(), expected.join("\n"));
    assert_eq!(err.errors.len(), 10);
    assert_eq!(err.errors[4].path, "plans.pro.entitlements.queries.limit");
}

#[test]
fn a_toml_syntax_error_reports_line_and_column() {
    let text = "[catalog]\nname = \"X\"\n[plans.pro]\ntier = = 1\n";
    let lines = errors(text);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("test.toml: TOML syntax error at line 4, column 8"),
        "{}",
        lines[0]
    );
}

#[test]
fn missing_catalog_and_plans_are_reported() {
    assert_eq!(
        errors("[features.x]\nkind = \"flag\"\n"),
        [
            "test.toml: catalog: missing; start the file with a [catalog] table giving at least its name",
            "test.toml: plans: missing; a catalog defines at least one plan ([plans.<key>])",
        ]
    );
    assert_eq!(
        errors("featurs = 1\n[catalog]\nname = \"X\"\n[plans.free]\ntier = 0\nbase_price = 0\n"),
        [
            r#"test.toml: featurs: unknown key "featurs"; did you mean "features"?"#,
            "test.toml: plans.free.currency: missing; set the plan's currency here, or a default currency in [catalog]",
        ]
    );
}

#[test]
fn hard_limits_cannot_bill_overage_and_soft_overage_needs_a_charge() {
    let text = format!(
        "{HEAD}\n[plans.a]\ntier = 0\nbase_price = 0\n[plans.a.entitlements]\nqueries = {{ limit = 10, overage = true }}\n\
         [plans.b]\ntier = 1\nbase_price = 0\n[plans.b.entitlements]\nqueries = {{ limit = 10, enforcement = \"soft\", overage = true }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "test.toml: plans.a.entitlements.queries.overage: overage = true needs enforcement = \"soft\": a hard limit denies usage beyond it, so there is no overage to bill",
            "test.toml: plans.b.entitlements.queries.overage: overage = true but no charge of this plan prices \"queries\"; add a [[plans.b.charges]] with metric = \"queries\", or set overage = false to allow usage beyond the limit without billing it",
        ]
    );
}

#[test]
fn soft_limits_bill_overage_by_default_only_with_a_charge() {
    let text = format!(
        "{HEAD}\n[plans.a]\ntier = 0\nbase_price = 0\n[plans.a.entitlements]\nqueries = {{ limit = 10, enforcement = \"soft\" }}\n\
         [plans.b]\ntier = 1\nbase_price = \"10\"\n[plans.b.entitlements]\nqueries = {{ limit = 1000, enforcement = \"soft\" }}\n\
         [[plans.b.charges]]\nmetric = \"queries\"\nincluded = 1000\nprice = {{ model = \"per_unit\", unit_price = \"0.01\" }}\n"
    );
    let c = load(&text);
    let overage = |plan: &str| match c.plan(plan).unwrap().entitlement("queries") {
        Some(Entitlement::Metered(m)) => m.overage,
        _ => panic!("metered"),
    };
    assert!(!overage("a"));
    assert!(overage("b"));
    // 1,500 queries on b: 1,000 included, 500 × 0.01 = 5.00, plus the 10.00 base.
    let q = c
        .plan("b")
        .unwrap()
        .quote(&[usage("queries", dec!(1500))])
        .unwrap();
    assert_eq!(q.total.amount, dec!(15.00));
    assert_eq!(c.plan("b").unwrap().charges[0].display_name, "Queries");
}

#[test]
fn emergency_allowance_extends_finite_hard_limits_only() {
    let text = format!(
        "{HEAD}\n[plans.a]\ntier = 0\nbase_price = 0\n[plans.a.entitlements]\n\
         queries = {{ limit = 10, enforcement = \"soft\", overage = false, emergency_allowance = 5 }}\n\
         [plans.b]\ntier = 1\nbase_price = 0\n[plans.b.entitlements]\nqueries = {{ limit = \"unlimited\", emergency_allowance = 5 }}\n\
         [plans.c]\ntier = 2\nbase_price = 0\n[plans.c.entitlements]\nqueries = {{ limit = 10, emergency_unit_price = \"0.5\" }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "test.toml: plans.a.entitlements.queries.emergency_allowance: an emergency allowance extends a hard limit; a soft limit already allows usage beyond it",
            "test.toml: plans.b.entitlements.queries.emergency_allowance: an unlimited limit needs no emergency allowance",
            "test.toml: plans.c.entitlements.queries.emergency_unit_price: prices the emergency allowance, but no emergency_allowance is set",
        ]
    );
}

#[test]
fn shorthand_and_full_forms_are_the_same_entitlement() {
    let features = r#"
[catalog]
name = "T"
currency = "EUR"
[features.q]
kind = "metered"
[features.r]
kind = "rate"
window = "30s"
[features.f]
kind = "flag"
[features.v]
kind = "value"
value_type = "string_set"
[features.d]
kind = "value"
value_type = "decimal"
[features.cap]
kind = "cap"
"#;
    let short = load(&format!(
        "{features}[plans.p]\ntier = 0\nbase_price = 5\n[plans.p.entitlements]\nq = 100\nr = 3\nf = true\nv = [\"a\", \"b\"]\nd = \"1.5\"\ncap = \"unlimited\"\n"
    ));
    let long = load(&format!(
        "{features}[plans.p]\ntier = 0\nbase_price = \"5.00\"\n[plans.p.entitlements]\nq = {{ limit = 100, enforcement = \"hard\" }}\nr = {{ limit = 3 }}\nf = {{ enabled = true }}\nv = {{ value = [\"b\", \"a\"] }}\nd = {{ value = \"1.50\" }}\ncap = {{ max = \"unlimited\" }}\n"
    ));
    let (a, b) = (short.plan("p").unwrap(), long.plan("p").unwrap());
    assert_eq!(a.entitlements.len(), 6);
    for key in ["q", "r", "f", "v", "cap"] {
        assert_eq!(a.entitlement(key), b.entitlement(key), "{key}");
    }
    assert_eq!(
        a.entitlement("d").unwrap().value(),
        Some(&Value::Decimal(dec!(1.5)))
    );
    assert_eq!(a.currency, Currency::EUR);
    // "5" and "5.00" are the same terms.
    assert_eq!(fingerprint(a), fingerprint(b));
    assert_eq!(short.rate_window_secs(a, "r"), Some(30));
}

#[test]
fn thresholds_accept_percent_and_units_and_reject_out_of_range() {
    let base = format!("{HEAD}\n[plans.a]\ntier = 0\nbase_price = 0\n");
    let ok = load(&format!(
        "{base}alert_thresholds = [50, \"75%\", \"99.5%\", {{ units = 900 }}]\n[plans.a.entitlements]\nqueries = {{ limit = 1000, alert_thresholds = [{{ percent = 90 }}] }}\n"
    ));
    let a = ok.plan("a").unwrap();
    assert_eq!(
        a.alert_thresholds,
        [
            Threshold::Percent(dec!(50)),
            Threshold::Percent(dec!(75)),
            Threshold::Percent(dec!(99.5)),
            Threshold::Units(dec!(900)),
        ]
    );
    assert_eq!(
        a.alert_thresholds_for("queries"),
        [Threshold::Percent(dec!(90))]
    );
    assert_eq!(
        Threshold::Percent(dec!(75)).quantity_for(Limit::Finite(dec!(1000))),
        Some(dec!(750))
    );
    assert_eq!(
        errors(&format!(
            "{base}alert_thresholds = [0, 1001, 80, \"80%\", {{ units = 0 }}, 80.5]\n"
        )),
        [
            "test.toml: plans.a.alert_thresholds[0]: a percentage threshold must be above 0% and at most 1000%, got 0%",
            "test.toml: plans.a.alert_thresholds[1]: a percentage threshold must be above 0% and at most 1000%, got 1001%",
            "test.toml: plans.a.alert_thresholds[3]: threshold 80% is listed twice",
            "test.toml: plans.a.alert_thresholds[4].units: must be greater than 0, got 0",
            "test.toml: plans.a.alert_thresholds[5]: expected a percentage (80 or \"80%\") or an absolute quantity ({ units = 900 }), got 80.5: TOML floats are inexact and not accepted; write fractional numbers as strings, e.g. \"1.5\"",
        ]
    );
}

#[test]
fn entitlement_shape_must_match_the_feature_kind() {
    let text = r#"
[catalog]
name = "T"
currency = "USD"
[features.api]
kind = "flag"
[features.q]
kind = "metered"
[features.size]
kind = "cap"
[features.n]
kind = "value"
value_type = "integer"
[features.seats]
kind = "gauge"
[plans.a]
tier = 0
base_price = 0
[plans.a.entitlements]
api = { limit = 5 }
q = true
size = { limit = 10 }
n = "ten"
seats = { limit = 3, reset = "day" }
"#;
    assert_eq!(
        errors(text),
        [
            r#"test.toml: plans.a.entitlements.api.limit: unknown key "limit"; flag entitlements take: enabled"#,
            r#"test.toml: plans.a.entitlements.api.enabled: missing; write { enabled = true } or just true"#,
            r#"test.toml: plans.a.entitlements.n: n is an integer value feature: expected an integer or "unlimited", got "ten""#,
            r#"test.toml: plans.a.entitlements.q: q is a metered feature: expected a limit (a non-negative integer, a decimal string or "unlimited") or a table such as { limit = 100 }, got true"#,
            r#"test.toml: plans.a.entitlements.seats.reset: unknown key "reset"; gauge entitlements take: limit, enforcement, alert_thresholds"#,
            r#"test.toml: plans.a.entitlements.size.limit: unknown key "limit"; cap entitlements take: max"#,
            r#"test.toml: plans.a.entitlements.size.max: missing; a cap entitlement states its max (a number or "unlimited")"#,
        ]
    );
}

#[test]
fn feature_definitions_are_checked() {
    let text = r#"
[catalog]
name = "T"
currency = "USD"
[features.a]
kind = "meterd"
[features.b]
kind = "rate"
[features.c]
kind = "metered"
reset = "weekly"
window = "1m"
[features.d]
kind = "value"
value_type = "integer"
allowed = ["1"]
[features."Bad Key"]
kind = "flag"
[features.e]
kind = "concurrency"
lease_ttl = "5 minutes"
[plans.p]
tier = 0
base_price = 0
"#;
    assert_eq!(
        errors(text),
        [
            r#"test.toml: features."Bad Key": invalid feature key "Bad Key": keys are 1 to 64 lowercase letters, digits, "_" or "-", starting with a letter"#,
            r#"test.toml: features.a.kind: expected one of "metered", "gauge", "rate", "concurrency", "cap", "flag", "value", got "meterd" (did you mean "metered"?)"#,
            r#"test.toml: features.b.window: missing; a rate feature needs its window, e.g. window = "1m""#,
            r#"test.toml: features.c.window: unknown key "window"; metered features take: kind, name, unit, description, reset"#,
            r#"test.toml: features.c.reset: expected one of "billing_period", "calendar_month", "day", "hour", got "weekly""#,
            r#"test.toml: features.d.allowed: allowed lists the permitted values of string and string_set features, not integer"#,
            r#"test.toml: features.e.lease_ttl: expected a duration such as "30s", "1m", "1h" or "1d", got "5 minutes""#,
        ]
    );
}

#[test]
fn charges_are_checked_against_the_plan() {
    let text = format!(
        r#"{HEAD}
[features.seats]
kind = "gauge"
[features.tokens]
kind = "metered"
[plans.a]
tier = 0
base_price = "10.005"
[plans.a.entitlements]
queries = 100
tokens = "unlimited"
[[plans.a.charges]]
metric = "seats"
price = {{ model = "per_unit", unit_price = "1" }}
[[plans.a.charges]]
metric = "queries"
currency = "EUR"
price = {{ model = "per_units", unit_price = "1" }}
[[plans.a.charges]]
key = "q2"
metric = "queries"
price = {{ model = "package", package_size = 0, package_price = "-1" }}
[[plans.a.charges]]
metric = "tokens"
included = 10
price = {{ group_by = ["model"], prices = [ {{ when = {{ modle = "x" }}, model = "per_unit", unit_price = "-2" }} ] }}
"#
    );
    assert_eq!(
        errors(&text),
        [
            "test.toml: plans.a.base_price: 10.005 has more decimals than USD allows (2)",
            r#"test.toml: plans.a.charges[1].currency: EUR does not match the plan's currency USD; a plan bills in one currency"#,
            r#"test.toml: plans.a.charges[1].price.model: expected one of "per_unit", "package", "graduated", "volume", got "per_units" (did you mean "per_unit"?)"#,
            "test.toml: plans.a.charges[2].price.package_price: must not be negative (got -1)",
            "test.toml: plans.a.charges[2].price.package_size: must be greater than 0 (got 0)",
            "test.toml: plans.a.charges[3].included: included units are not supported with a dimensional price (which group would they apply to?); use a free tier in the group's price instead",
            r#"test.toml: plans.a.charges[3].price.prices[0].when.modle: "modle" is not one of group_by ["model"]"#,
            "test.toml: plans.a.charges[3].price.prices[0].unit_price: must not be negative (got -2)",
            r#"test.toml: plans.a.charges[0].metric: "seats" is not in this plan's entitlements, so its usage is denied and the charge could never bill; add it to [plans.a.entitlements]"#,
        ]
    );
}

#[test]
fn duplicate_charges_are_rejected() {
    let text = format!(
        "{HEAD}\n[plans.a]\ntier = 0\nbase_price = 0\n[plans.a.entitlements]\nqueries = 10\n\
         [[plans.a.charges]]\nmetric = \"queries\"\nprice = {{ model = \"per_unit\", unit_price = \"1\" }}\n\
         [[plans.a.charges]]\nmetric = \"queries\"\nprice = {{ model = \"per_unit\", unit_price = \"2\" }}\n\
         [[plans.a.charges]]\nkey = \"other\"\nmetric = \"queries\"\nprice = {{ model = \"per_unit\", unit_price = \"2\" }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            r#"test.toml: plans.a.charges[1].key: charge key "queries" is already used by charges[0]; give this charge its own key"#,
            r#"test.toml: plans.a.charges[2].metric: "queries" is already priced by charges[0]; a metric has at most one charge per plan (use a dimensional price to vary it)"#,
        ]
    );
}

#[test]
fn minus_one_gets_a_hint_and_values_are_type_checked() {
    let text = r#"
[catalog]
name = "T"
currency = "USD"
[features.q]
kind = "metered"
[features.b]
kind = "value"
value_type = "boolean"
[features.fmt]
kind = "value"
value_type = "string_set"
allowed = ["json", "txt"]
[plans.a]
tier = 0
base_price = 0
trial_days = 0
public = "yes"
[plans.a.entitlements]
q = -1
b = "true"
fmt = ["json", "jsn", "json"]
"#;
    assert_eq!(
        errors(text),
        [
            "test.toml: plans.a.trial_days: expected an integer from 1 to 3650, got 0",
            r#"test.toml: plans.a.public: expected true or false, got "yes""#,
            r#"test.toml: plans.a.entitlements.b: b is a boolean value feature: expected true or false, got "true""#,
            r#"test.toml: plans.a.entitlements.fmt[2]: "json" is listed twice"#,
            r#"test.toml: plans.a.entitlements.q: expected a non-negative integer or "unlimited", got -1 (-1 does not mean unlimited here: write "unlimited")"#,
        ]
    );
}

#[test]
fn plans_are_sorted_by_tier_and_defaults_apply() {
    let text = format!(
        "{HEAD}\n[plans.big]\ntier = 5\nbase_price = \"100\"\ninterval = \"year\"\nanchoring = \"calendar\"\nbilling = \"in_arrears\"\npublic = false\n\
         [plans.small]\ntier = 1\nbase_price = \"1\"\n"
    );
    let c = load(&text);
    let keys: Vec<&str> = c.plans.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["small", "big"]);
    let small = c.plan("small").unwrap();
    assert_eq!(small.name, "Small");
    assert_eq!(small.version, 1);
    assert_eq!(small.interval, tollgate_core::period::Interval::Month);
    assert_eq!(
        small.anchoring,
        tollgate_core::period::Anchoring::Anniversary
    );
    assert_eq!(
        small.billing,
        tollgate_core::catalog::BaseBilling::InAdvance
    );
    assert!(small.public);
    assert_eq!(
        small.alert_thresholds,
        [
            Threshold::Percent(dec!(80)),
            Threshold::Percent(dec!(95)),
            Threshold::Percent(dec!(100))
        ]
    );
    let big = c.plan("big").unwrap();
    assert!(!big.public);
    assert_eq!(c.public_plans().count(), 1);
    assert_eq!(c.feature("queries").unwrap().name, "Queries");
    assert_eq!(
        c.feature("queries").unwrap().kind,
        FeatureKind::Metered {
            reset: ResetPeriod::BillingPeriod
        }
    );
}

#[test]
fn value_features_check_allowed_values_with_suggestions() {
    let text = r#"
[catalog]
name = "T"
currency = "USD"
[features.provider]
kind = "value"
value_type = "string"
allowed = ["ollama", "claude", "openai"]
[plans.a]
tier = 0
base_price = 0
[plans.a.entitlements]
provider = "olama"
"#;
    assert_eq!(
        errors(text),
        [
            r#"test.toml: plans.a.entitlements.provider: "olama" is not an allowed value of provider ("claude", "ollama", "openai") (did you mean "ollama"?)"#
        ]
    );
    let c = load(&text.replace("olama", "ollama"));
    let FeatureKind::Value { value_type, .. } = &c.feature("provider").unwrap().kind else {
        panic!("value feature");
    };
    assert_eq!(*value_type, ValueType::String);
}

#[test]
fn catalogs_round_trip_through_json() {
    for name in [
        "voca.toml",
        "chat.toml",
        "coaching.toml",
        "magi.toml",
        "pulse.toml",
    ] {
        let c = example(name);
        let json = serde_json::to_string(&c).unwrap();
        let back: Catalog = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c, "{name}");
    }
    let c = example("coaching.toml");
    let json = serde_json::to_value(c.plan("business").unwrap()).unwrap();
    assert_eq!(
        json["entitlements"]["retention_days"]["value"]["type"],
        "unlimited"
    );
    assert_eq!(json["entitlements"]["audio_minutes"]["limit"], "unlimited");
    assert_eq!(json["entitlements"]["max_file_size_mb"]["max"], "500");
    assert_eq!(json["base_price"]["amount"], "99.00");
}

// ---------------------------------------------------------------------------
// Versioning
// ---------------------------------------------------------------------------

#[test]
fn publishing_assigns_versions_new_changed_unchanged_removed() {
    let v1 = example("pulse.toml");
    let (published, changes) = assign_versions(&[], v1.clone());
    assert!(
        changes
            .iter()
            .all(|c| c.kind == VersionChangeKind::New && c.to == 1 && c.from.is_none())
    );
    assert_eq!(changes.len(), 3);

    // Same file again: nothing changes.
    let (_, changes) = assign_versions(&published.plans, v1.clone());
    assert!(
        changes
            .iter()
            .all(|c| c.kind == VersionChangeKind::Unchanged && c.to == 1)
    );

    // Pro's participant minute price goes to 0.0035; free is removed.
    let text = std::fs::read_to_string(examples_dir().join("pulse.toml")).unwrap();
    let text = text.replacen("unit_price = \"0.004\"", "unit_price = \"0.0035\"", 1);
    let start = text.find("[plans.free]").unwrap();
    let end = text.find("[plans.pro]").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    let v2 = load_catalog("pulse.toml", &text).unwrap();
    let (next, changes) = assign_versions(&published.plans, v2);
    let summary: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        summary,
        [
            "pro: changed, version 1 → 2",
            "enterprise: unchanged, version 1",
            "free: removed from the catalog (subscribers keep version 1)",
        ]
    );
    assert_eq!(next.plan("pro").unwrap().version, 2);

    // The fingerprint ignores the version number only.
    let mut pro = published.plan("pro").unwrap().clone();
    let before = fingerprint(&pro);
    pro.version = 7;
    assert_eq!(fingerprint(&pro), before);
    assert_eq!(before.len(), 16);
    assert_ne!(fingerprint(next.plan("pro").unwrap()), before);
}

#[test]
fn renumbering_tiers_or_withdrawing_a_plan_keeps_its_version() {
    let text = std::fs::read_to_string(examples_dir().join("magi.toml")).unwrap();
    let (published, _) = assign_versions(&[], load_catalog("magi.toml", &text).unwrap());
    // Teams moves from tier 2 to tier 5 and is withdrawn from sale; solo's name changes.
    let edited = text
        .replace("tier = 2", "tier = 5\npublic = false")
        .replace("name = \"Solo\"", "name = \"Solo (2025)\"");
    let (next, changes) = assign_versions(
        &published.plans,
        load_catalog("magi.toml", &edited).unwrap(),
    );
    let summary: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        summary,
        [
            "trial: unchanged, version 1",
            "solo: changed, version 1 → 2",
            "teams: unchanged, version 1",
        ]
    );
    let teams = next.plan("teams").unwrap();
    assert_eq!((teams.tier, teams.public, teams.version), (5, false, 1));
}

#[test]
fn diff_lists_gains_losses_and_limits_before_after() {
    let voca = example("voca.toml");
    let pro = voca.plan("pro").unwrap();
    let business = voca.plan("business").unwrap();
    let diff = diff_plans(pro, business);
    let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
    for expected in [
        "~ name: Pro → Business",
        "+ tier: 2 → 3",
        "- base price: 99.00 USD → 299.00 USD",
        "+ batch_processing: added (on)",
        "+ queries_per_month limit: 10000 → 50000",
        "+ queries_per_month emergency allowance: 1000 → 5000",
        "+ queries_per_month emergency unit price: 0.04 → 0.03",
        "+ conversations_stored_days: 90 → 365",
        "+ locations_max limit: 5 → 25",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "missing {expected:?} in {lines:#?}"
        );
    }
    let tier = diff.iter().find(|e| e.path == "tier").unwrap();
    assert_eq!(tier.effect, DiffEffect::Gain);
    let limit = diff
        .iter()
        .find(|e| e.path == "entitlements.queries_per_month.limit")
        .unwrap();
    assert_eq!(
        (limit.before.as_deref(), limit.after.as_deref()),
        (Some("10000"), Some("50000"))
    );

    // Downgrading is the mirror image: features lost.
    let back = diff_plans(business, pro);
    let lost: Vec<&str> = back
        .iter()
        .filter(|e| e.effect == DiffEffect::Loss && e.after.is_none())
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        lost,
        [
            "entitlements.batch_processing",
            "entitlements.crm_integrations",
            "entitlements.custom_reports",
            "entitlements.data_export",
            "entitlements.priority_support",
            "entitlements.webhook_support",
        ]
    );
    assert!(diff_plans(pro, pro).is_empty());
}

#[test]
fn diff_shows_price_changes_in_words() {
    let pulse = example("pulse.toml");
    let diff = diff_plans(
        pulse.plan("pro").unwrap(),
        pulse.plan("enterprise").unwrap(),
    );
    let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
    assert!(
        lines.contains(
            &"+ charge participant_minutes price: 0.004 per unit → 0.003 per unit".to_string()
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"~ alert thresholds: [80%, 95%] → [90%, 95%]".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"+ participant_minutes limit: 100000 → unlimited".to_string()),
        "{lines:#?}"
    );
}

#[test]
fn graduated_and_volume_prices_load() {
    let text = format!(
        r#"{HEAD}
[plans.a]
tier = 0
base_price = 0
[plans.a.entitlements]
queries = "unlimited"
[[plans.a.charges]]
metric = "queries"
minimum = "5"
price = {{ model = "graduated", tiers = [ {{ up_to = 1000, unit_price = "0" }}, {{ up_to = 10000, unit_price = "0.002", flat_fee = "1" }}, {{ up_to = "unlimited", unit_price = "0.001" }} ] }}
"#
    );
    let c = load(&text);
    let charge = c.plan("a").unwrap().charge_for("queries").unwrap();
    let ChargePrice::Single(PriceModel::Graduated { tiers }) = &charge.price else {
        panic!("graduated");
    };
    assert_eq!(tiers.len(), 3);
    assert_eq!(tiers[2].up_to, None);
    assert_eq!(charge.minimum, Some(dec!(5)));
    // 12,000 queries: 1,000 free, 9,000 × 0.002 + 1 = 19, 2,000 × 0.001 = 2 → 21.00.
    let q = c
        .plan("a")
        .unwrap()
        .quote(&[usage("queries", dec!(12000))])
        .unwrap();
    assert_eq!(q.total.amount, dec!(21.00));
}

// ---------------------------------------------------------------------------
// Never a panic
// ---------------------------------------------------------------------------

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    for text in [
        format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{} = 1", vec!["k"; 100_000].join(".")),
    ] {
        let err = load_catalog("deep.toml", &text).unwrap_err();
        assert!(
            err.lines()[0].starts_with("deep.toml: TOML syntax error"),
            "{err}"
        );
    }
}

#[test]
fn floats_are_shown_as_written_and_rejected() {
    let text = format!("{HEAD}\n[plans.a]\ntier = 1.0\nbase_price = 9.99\n");
    assert_eq!(
        errors(&text),
        [
            "test.toml: plans.a.tier: expected a non-negative integer, got 1.0",
            "test.toml: plans.a.base_price: expected an amount such as \"49.00\" (a decimal string or an integer), got 9.99: TOML floats are inexact and not accepted; write fractional numbers as strings, e.g. \"1.5\"",
        ]
    );
}

fn all_examples() -> Vec<String> {
    [
        "voca.toml",
        "chat.toml",
        "coaching.toml",
        "magi.toml",
        "pulse.toml",
    ]
    .iter()
    .map(|n| std::fs::read_to_string(examples_dir().join(n)).unwrap())
    .collect()
}

const FRAGMENTS: &[&str] = &[
    "-1",
    "1.5",
    "\"unlimited\"",
    "true",
    "[]",
    "{}",
    "\"x\"",
    "0",
    "99999999999999999",
    "\"1e5\"",
    "{ limit = 1 }",
    "[1, 2]",
    "\"-0.0\"",
    "1979-05-27",
    "\"\"",
    "{ units = -1 }",
    "\"80%\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        let _ = load_catalog("fuzz.toml", &text);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..5,
        cuts in proptest::collection::vec((0usize..20_000, 0usize..40), 1..4),
        replace in proptest::collection::vec((0usize..20_000, 0usize..FRAGMENTS.len()), 0..4),
    ) {
        let examples = all_examples();
        let mut text = examples[which].clone();
        for (at, len) in cuts {
            let start = floor_char(&text, at % (text.len() + 1));
            let end = floor_char(&text, (start + len).min(text.len()));
            text.replace_range(start..end, "");
        }
        // Replace the value of a random `key = value` line.
        for (at, frag) in replace {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() { break; }
            let i = at % lines.len();
            let mut new: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            if let Some(eq) = new[i].find(" = ") {
                new[i] = format!("{} = {}", &new[i][..eq], FRAGMENTS[frag]);
            }
            text = new.join("\n");
        }
        match load_catalog("fuzz.toml", &text) {
            Ok(c) => prop_assert!(!c.plans.is_empty()),
            Err(e) => prop_assert!(!e.errors.is_empty()),
        }
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
