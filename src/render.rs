//! Text output for people: catalogs, plans, diffs and quotes as aligned tables.

use std::fmt::Write as _;

use tollgate_core::catalog::{Catalog, Plan, PlanDiffEntry, VersionChange};
use tollgate_core::pricing::{LineKind, Quote};

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
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
    let mut rows = vec![vec!["key".into(), "kind".into(), "unit".into(), "name".into()]];
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
                let to = t
                    .to
                    .map_or_else(|| "∞".to_string(), |v| v.normalize().to_string());
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
