//! Text output for people: catalogs, plans, diffs and quotes as aligned tables.

use std::fmt::Write as _;

use tollgate_core::catalog::{Catalog, Plan, PlanDiffEntry, VersionChange};
use tollgate_core::pricing::{LineKind, Quote};

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn price_line(plan: &Plan) -> String {
    let interval = match plan.interval {
        tollgate_core::period::Interval::Month => "month",
        tollgate_core::period::Interval::Year => "year",
    };
    let mut s = format!(
        "{} {}/{interval}",
        tollgate_core::money::round_line(plan.base_price.amount, plan.currency),
        plan.currency
    );
    if let Some(days) = plan.trial_days {
        let _ = write!(s, ", {days}-day trial");
    }
    if !plan.public {
        s.push_str(", private");
    }
    s
}

/// A catalog at a glance: features, then a matrix of plans × features.
pub fn catalog(catalog: &Catalog) -> String {
    let mut out = format!("Catalog {:?}\n\nFeatures\n", catalog.name);
    let mut rows = vec![vec![
        "key".into(),
        "kind".into(),
        "unit".into(),
        "name".into(),
    ]];
    for f in catalog.features.values() {
        rows.push(vec![
            f.key.clone(),
            f.kind.name().into(),
            f.unit.clone().unwrap_or_default(),
            f.name.clone(),
        ]);
    }
    out.push_str(&table(&rows));

    out.push_str("\nPlans (by tier)\n");
    let mut rows = vec![vec![
        "tier".into(),
        "key".into(),
        "v".into(),
        "price".into(),
        "charges".into(),
    ]];
    for p in catalog.plans_by_tier() {
        rows.push(vec![
            p.tier.to_string(),
            p.key.clone(),
            p.version.to_string(),
            price_line(p),
            p.charges.len().to_string(),
        ]);
    }
    out.push_str(&table(&rows));

    out.push_str("\nEntitlements (- = not in plan)\n");
    let mut header = vec!["feature".to_string()];
    header.extend(catalog.plans_by_tier().map(|p| p.key.clone()));
    let mut rows = vec![header];
    for f in catalog.features.values() {
        let mut row = vec![f.key.clone()];
        row.extend(catalog.plans_by_tier().map(|p| {
            p.entitlement(&f.key)
                .map_or_else(|| "-".to_string(), |e| e.to_string())
        }));
        rows.push(row);
    }
    out.push_str(&table(&rows));
    out
}

/// One plan in full: price, entitlements, charges, alert thresholds.
pub fn plan(catalog: &Catalog, plan: &Plan) -> String {
    let mut out = format!(
        "Plan {} ({}), tier {}, version {}\n{}\n",
        plan.key,
        plan.name,
        plan.tier,
        plan.version,
        price_line(plan)
    );
    if let Some(d) = &plan.description {
        let _ = writeln!(out, "{d}");
    }
    out.push_str("\nEntitlements\n");
    let mut rows = vec![vec!["feature".into(), "kind".into(), "entitlement".into()]];
    for (key, e) in &plan.entitlements {
        let kind = catalog.feature(key).map_or("?", |f| f.kind.name());
        rows.push(vec![key.clone(), kind.into(), e.to_string()]);
    }
    out.push_str(&table(&rows));
    if !plan.charges.is_empty() {
        out.push_str("\nCharges\n");
        let mut rows = vec![vec!["key".into(), "metric".into(), "price".into()]];
        for c in &plan.charges {
            rows.push(vec![
                c.key.clone(),
                c.metric.clone(),
                serde_json::to_string(&c.price).unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let thresholds: Vec<String> = plan
        .alert_thresholds
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(out, "\nAlert thresholds: {}", thresholds.join(", "));
    out
}

pub fn plan_diff(a: &Plan, b: &Plan, entries: &[PlanDiffEntry]) -> String {
    let mut out = format!("{} → {}\n", a.key, b.key);
    if entries.is_empty() {
        out.push_str("  no differences\n");
    }
    for e in entries {
        let _ = writeln!(out, "  {e}");
    }
    out
}

pub fn version_changes(old: &Catalog, new: &Catalog, changes: &[VersionChange]) -> String {
    let mut out = String::new();
    for c in changes {
        let _ = writeln!(out, "{c}");
        if let (Some(a), Some(b)) = (old.plan(&c.plan), new.plan(&c.plan)) {
            for e in tollgate_core::catalog::diff_plans(a, b) {
                let _ = writeln!(out, "    {e}");
            }
        }
    }
    out
}

/// A quote as an invoice-like table: one row per line, tier rows beneath usage lines.
pub fn quote(plan: &Plan, q: &Quote) -> String {
    let mut out = format!(
        "Quote for plan {} ({}), version {}\n\n",
        plan.key, plan.name, plan.version
    );
    let mut rows = vec![vec![
        "line".into(),
        "quantity".into(),
        "billable".into(),
        "unit price".into(),
        "amount".into(),
    ]];
    for line in &q.lines {
        let (qty, billable) = match line.kind {
            LineKind::Usage => (
                line.quantity.normalize().to_string(),
                line.billable_quantity.normalize().to_string(),
            ),
            _ => (String::new(), String::new()),
        };
        let unit_price = match line.tiers.as_slice() {
            [only] => only.unit_price.normalize().to_string(),
            _ => String::new(),
        };
        rows.push(vec![
            line.description.clone(),
            qty,
            billable,
            unit_price,
            format!("{} {}", line.amount.amount, line.amount.currency),
        ]);
        if line.tiers.len() > 1 {
            for t in &line.tiers {
                let to =
                    t.to.map_or_else(|| "∞".to_string(), |v| v.normalize().to_string());
                let mut price = t.unit_price.normalize().to_string();
                if !t.flat_fee.is_zero() {
                    let _ = write!(price, " + {} flat", t.flat_fee.normalize());
                }
                rows.push(vec![
                    format!("  tier {} ({}–{to})", t.tier_index + 1, t.from.normalize()),
                    String::new(),
                    t.units.normalize().to_string(),
                    price,
                    t.amount.normalize().to_string(),
                ]);
            }
        }
    }
    rows.push(vec![
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        format!("{} {}", q.total.amount, q.total.currency),
    ]);
    out.push_str(&table(&rows));
    if !q.unpriced_metrics.is_empty() {
        let _ = writeln!(
            out,
            "\nnot billed on this plan (no charge): {}",
            q.unpriced_metrics.join(", ")
        );
    }
    out
}

// --- Answers of a running server ---------------------------------------------

use crate::commands::client::{Customer, Dashboard, Entitlements};

fn or_dash(v: Option<&str>) -> String {
    v.map_or_else(|| "-".to_string(), str::to_string)
}

/// A customer and what its features allow now.
pub fn customer(c: &Customer, e: &Entitlements) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "customer  {}", c.id);
    if let Some(n) = &c.name {
        let _ = writeln!(out, "name      {n}");
    }
    if let Some(m) = &c.email {
        let _ = writeln!(out, "email     {m}");
    }
    let _ = writeln!(out, "currency  {}   time zone {}", c.currency, c.time_zone);
    match &c.subscription {
        Some(s) => {
            let trial = s
                .trial_ends_at
                .as_deref()
                .map(|t| format!(", trial ends {t}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "plan      {} v{} ({}{trial})",
                s.plan, s.plan_version, s.status
            );
        }
        None => {
            let _ = writeln!(out, "plan      none (no subscription)");
        }
    }
    if c.admin_bypass {
        let _ = writeln!(out, "admin bypass on: limits are not enforced");
    }
    if let Some(d) = &c.deleted_at {
        let _ = writeln!(out, "deleted   {d}");
    }
    if let Some(b) = &e.blocked {
        let _ = writeln!(out, "blocked   {b}: no feature is accessible");
    }
    let _ = writeln!(out);
    let mut rows = vec![vec![
        "FEATURE".to_string(),
        "KIND".into(),
        "ACCESS".into(),
        "USED".into(),
        "LIMIT".into(),
        "REMAINING".into(),
        "NOTES".into(),
    ]];
    for f in &e.features {
        let used = f.used.clone().or_else(|| f.level.clone());
        let limit = match (&f.limit, f.kind.as_str()) {
            (Some(l), _) => l.clone(),
            (None, "metered" | "gauge" | "rate") if f.access => "unlimited".into(),
            (None, "flag") => if f.enabled == Some(true) { "on" } else { "off" }.into(),
            (None, "value") => match f.value.as_ref().map(|v| v.get("value").unwrap_or(v)) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "-".into(),
            },
            _ => "-".into(),
        };
        let mut notes = Vec::new();
        if f.hard == Some(false) {
            notes.push("soft".to_string());
        }
        if let Some(g) = f.grants_remaining.as_deref().filter(|g| *g != "0") {
            notes.push(format!("grants {g}"));
        }
        if let Some(r) = &f.resets_at {
            notes.push(format!("resets {r}"));
        }
        if f.overridden {
            notes.push("override".into());
        }
        rows.push(vec![
            f.feature.clone(),
            f.kind.clone(),
            if f.access { "yes" } else { "no" }.into(),
            or_dash(used.as_deref()),
            limit,
            or_dash(f.remaining.as_deref()),
            notes.join(", "),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// One list of customers.
pub fn customers(list: &[Customer]) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "PLAN".into(),
        "STATUS".into(),
        "CREATED".into(),
        "NAME".into(),
    ]];
    for c in list {
        rows.push(vec![
            c.id.clone(),
            c.subscription
                .as_ref()
                .map_or_else(|| "-".into(), |s| format!("{} v{}", s.plan, s.plan_version)),
            match (&c.deleted_at, &c.subscription) {
                (Some(_), _) => "deleted".into(),
                (None, Some(s)) => s.status.clone(),
                (None, None) => "-".into(),
            },
            c.created_at.chars().take(19).collect(),
            c.name.clone().unwrap_or_default(),
        ]);
    }
    table(&rows)
}

/// A customer's usage dashboard: used / limit / percent per feature, its
/// alerts and its cost so far.
pub fn dashboard(d: &Dashboard) -> String {
    let mut out = String::new();
    let plan = d
        .plan
        .as_ref()
        .map_or_else(|| "no plan".into(), |p| format!("{} v{}", p.key, p.version));
    let _ = writeln!(
        out,
        "{} ({plan}{})",
        d.customer,
        d.status
            .as_deref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default()
    );
    let mut rows = vec![vec![
        "  FEATURE".to_string(),
        "USED".into(),
        "LIMIT".into(),
        "PERCENT".into(),
        "OVERAGE".into(),
    ]];
    for (key, f) in &d.usage_summary {
        rows.push(vec![
            format!("  {key}"),
            f.used.clone(),
            f.limit.clone().unwrap_or_else(|| "unlimited".into()),
            f.percentage_used
                .as_deref()
                .map_or_else(|| "-".into(), |p| format!("{p}%")),
            if f.overage == "0" || f.overage.is_empty() {
                "-".into()
            } else {
                f.overage.clone()
            },
        ]);
    }
    out.push_str(&table(&rows));
    for a in &d.alerts {
        let mut extra = String::new();
        if let Some(u) = &a.upgrade_to {
            let _ = write!(extra, "; upgrade to {u}");
        }
        if let Some(e) = &a.emergency_allowance {
            let _ = write!(extra, "; emergency allowance {e}");
        }
        let _ = writeln!(out, "  alert {}: {}{extra}", a.kind, a.message);
    }
    if let Some(c) = &d.cost {
        let _ = writeln!(
            out,
            "  cost so far {} {}, projected {} {}{}",
            c.current_period.amount,
            c.current_period.currency,
            c.projected_period_end.amount,
            c.projected_period_end.currency,
            c.recommended_plan
                .as_deref()
                .map(|p| format!(" (recommended plan: {p})"))
                .unwrap_or_default()
        );
    }
    out
}
