//! The catalog the engine serves, and applying a new one to a running engine.
//!
//! Everything the engine knows of the catalog (the catalog itself, the
//! features interned to indices, every published plan version compiled, the
//! latest version of each plan offered) is one immutable [`Served`] value
//! behind an `ArcSwap`: a decision loads it once (one atomic load, no lock)
//! and sees one consistent catalog, and [`Engine::apply_catalog`] replaces it
//! whole.
//!
//! Applying a catalog never changes what a subscriber has: published versions
//! are immutable, every subscription pins one, and a subscriber moves to a new
//! version only by a migration. What changes at once is what is *offered*: the
//! latest version of each plan (new subscriptions and plan changes), the plan
//! list, tiers and `public`, and the features new plans can use. Feature
//! indices only grow (a feature keeps its index for the engine's lifetime), so
//! counters, overrides and compiled versions stay valid across the swap.
//!
//! A feature the start's catalog did not define (a catalog file removed it)
//! and an apply adds back gets, before the swap, what a start would have given
//! it: the published versions that grant it are compiled again, and each
//! customer's counters, overrides, grants, reservations and idempotency keys
//! of it are restored from what the start kept aside (`crate::recover::Parked`).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use tollgate_core::catalog::{
    Catalog, CatalogError, Plan, VersionChange, VersionChangeKind, assign_versions,
};
use tollgate_store::{CatalogDocumentRecord, PlanVersionRecord};

use crate::compile;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{CompiledPlan, FeatureDef, Features};
use crate::writer::Msg;

/// The catalog being served, compiled (see the module documentation).
#[derive(Debug)]
pub(crate) struct Served {
    pub catalog: Arc<Catalog>,
    pub features: Features,
    /// Every published version, by `(plan key, version)`.
    pub plans: HashMap<(String, u32), Arc<CompiledPlan>>,
    /// The version of each plan in the catalog that new subscriptions get.
    pub latest: HashMap<String, Arc<CompiledPlan>>,
    /// Interned plan keys.
    pub plan_keys: HashMap<String, Arc<str>>,
    /// Feature indices in feature key order (the catalog's order; after an
    /// apply, new features' indices follow the served ones instead).
    pub by_key: Vec<usize>,
}

impl Served {
    /// A published version's tier as served: the catalog's tier for its plan
    /// (a new `tier` applies to every version in place, see
    /// `tollgate_core::catalog::versioning`), else the tier it was published
    /// with (a plan the served catalog no longer has).
    pub(crate) fn tier_of(&self, plan: &CompiledPlan) -> u32 {
        self.catalog.plan(&plan.key).map_or(plan.tier, |p| p.tier)
    }

    /// Compiles `versions` (every published version, already numbered)
    /// against `features`, and takes the latest of each plan from `catalog`
    /// (whose plans carry their published versions).
    pub(crate) fn build(
        catalog: Catalog,
        features: Features,
        mut plans: HashMap<(String, u32), Arc<CompiledPlan>>,
        versions: &[PlanVersionRecord],
    ) -> Served {
        for r in versions {
            if plans.contains_key(&(r.plan_key.clone(), r.version)) {
                continue;
            }
            let mut plan: Plan = match serde_json::from_value(r.definition.clone()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(plan = %r.plan_key, version = r.version, error = %e,
                        "a published plan version is not readable; subscriptions pinning it will fail");
                    continue;
                }
            };
            plan.version = r.version;
            let c = compile::compile_plan(&catalog, &plan, &features);
            plans.insert((r.plan_key.clone(), r.version), Arc::new(c));
        }
        let mut latest = HashMap::new();
        for p in &catalog.plans {
            if let Some(c) = plans.get(&(p.key.clone(), p.version)) {
                latest.insert(p.key.clone(), c.clone());
            }
        }
        let plan_keys = compile::plan_keys(&catalog);
        let mut by_key: Vec<usize> = (0..features.defs.len()).collect();
        by_key.sort_by(|a, b| features.defs[*a].key.cmp(&features.defs[*b].key));
        Served {
            catalog: Arc::new(catalog),
            features,
            plans,
            latest,
            plan_keys,
            by_key,
        }
    }
}

/// Publishes the catalog's plans through the core's `assign_versions` against
/// the versions in the store: a new or changed plan gets a new version; an
/// unchanged plan keeps its version. Returns the catalog with versions set,
/// the records to store, and one change per plan (removed plans included).
pub(crate) fn publish(
    catalog: Catalog,
    existing: &[PlanVersionRecord],
    now: Timestamp,
) -> Result<(Catalog, Vec<PlanVersionRecord>, Vec<VersionChange>), EngineError> {
    let mut published = Vec::with_capacity(existing.len());
    for r in existing {
        match serde_json::from_value::<Plan>(r.definition.clone()) {
            Ok(mut p) => {
                p.version = r.version;
                published.push(p);
            }
            Err(e) => tracing::warn!(plan = %r.plan_key, version = r.version, error = %e,
                "a published plan version is not readable"),
        }
    }
    let (catalog, changes) = assign_versions(&published, catalog);
    let mut out = Vec::new();
    for c in &changes {
        if !matches!(c.kind, VersionChangeKind::New | VersionChangeKind::Changed) {
            continue;
        }
        let Some(plan) = catalog.plan(&c.plan) else {
            continue;
        };
        let definition =
            serde_json::to_value(plan).map_err(|e| EngineError::Catalog(e.to_string()))?;
        out.push(PlanVersionRecord {
            plan_key: plan.key.clone(),
            version: plan.version,
            definition,
            published_at: now,
        });
    }
    Ok((catalog, out, changes))
}

/// What a running engine cannot take from a new catalog: a served feature
/// removed, or its kind or kind settings changed (counters, windows and
/// compiled versions depend on them; such a change is made in the catalog
/// file and takes effect at a restart). Every problem, at its path.
fn incompatibilities(served: &Catalog, incoming: &Catalog) -> Vec<CatalogError> {
    let mut errors = Vec::new();
    for (key, f) in &served.features {
        match incoming.features.get(key) {
            None => errors.push(CatalogError::new(
                format!("features.{key}"),
                "a served feature cannot be removed from a running server (published plan \
                 versions and counters use it); remove it from the catalog file and restart",
            )),
            Some(g) if g.kind != f.kind => errors.push(CatalogError::new(
                format!("features.{key}.kind"),
                format!(
                    "a served feature's kind and its settings cannot change on a running server \
                     (served: {}); change the catalog file and restart",
                    serde_json::to_string(&f.kind).unwrap_or_default()
                ),
            )),
            Some(_) => {}
        }
    }
    errors
}

/// The served features, then the incoming catalog's new ones (in key order)
/// after them: no served feature changes its index.
fn extend_features(served: &Features, incoming: &Catalog) -> Features {
    let mut f = served.clone();
    for (key, feature) in &incoming.features {
        if f.index.contains_key(key) {
            continue;
        }
        f.index.insert(key.clone(), f.defs.len());
        f.defs.push(FeatureDef {
            key: Arc::from(key.as_str()),
            kind: compile::kind_of(&feature.kind),
        });
    }
    f
}

/// Whether a published version grants one of `features`.
fn grants_any(version: &PlanVersionRecord, features: &[&str]) -> bool {
    if features.is_empty() {
        return false;
    }
    match serde_json::from_value::<Plan>(version.definition.clone()) {
        Ok(p) => features.iter().any(|f| p.entitlements.contains_key(*f)),
        Err(_) => false,
    }
}

impl Engine {
    /// Applies a catalog to the running engine: checks it against the served
    /// one (see [`EngineError::CatalogRefused`]), publishes the new and
    /// changed plans' versions and records `document` in one store
    /// transaction, then serves it. With `dry_run`, only answers what would
    /// change. Applies are serialized; decisions go on throughout.
    ///
    /// Returns one change per plan of the catalog, then one `Removed` per
    /// served plan it leaves out (a plan removed by an earlier apply is not
    /// listed again), and whether anything was applied: a
    /// catalog equal to the served one (same plans, versions, tiers, features)
    /// changes nothing and records nothing.
    pub async fn apply_catalog(
        &self,
        catalog: Catalog,
        document: CatalogDocumentRecord,
        dry_run: bool,
    ) -> Result<(Vec<VersionChange>, bool), EngineError> {
        let inner = &self.inner;
        let _guard = inner.catalog_apply.lock().await;
        let served = inner.served.load_full();
        let errors = incompatibilities(&served.catalog, &catalog);
        if !errors.is_empty() {
            return Err(EngineError::CatalogRefused(errors));
        }
        let existing = inner.store.plan_versions().await?;
        let (catalog, new_versions, mut changes) = publish(catalog, &existing, inner.now())?;
        // `removed` is news only for a plan the served catalog still offers.
        changes.retain(|c| {
            c.kind != VersionChangeKind::Removed || served.catalog.plan(&c.plan).is_some()
        });
        if dry_run || (new_versions.is_empty() && *served.catalog == catalog) {
            return Ok((changes, false));
        }
        let features = extend_features(&served.features, &catalog);
        let added_keys: Vec<Arc<str>> = features.defs[served.features.defs.len()..]
            .iter()
            .map(|d| d.key.clone())
            .collect();
        let added: Vec<&str> = added_keys.iter().map(|k| &**k).collect();
        // Versions compiled before keep their `Arc`s (subscribers hold them);
        // the new ones are compiled against the extended features, and so are
        // the published versions that grant an added feature (a feature a
        // restart's catalog file removed, added back: they were compiled
        // without it).
        let mut plans = served.plans.clone();
        let mut compile = new_versions.clone();
        let mut recompiled: HashMap<String, Vec<u32>> = HashMap::new();
        for r in existing.iter().filter(|r| grants_any(r, &added)) {
            plans.remove(&(r.plan_key.clone(), r.version));
            compile.push(r.clone());
            recompiled
                .entry(r.plan_key.clone())
                .or_default()
                .push(r.version);
        }
        let next = Arc::new(Served::build(catalog, features, plans, &compile));
        // Held from before the publish until the new catalog is served when
        // customers are restored: no counter rebuild runs meanwhile, and none
        // starts from the old catalog. Taken before the publish, so that no
        // await lies between taking what was kept aside and serving the
        // catalog: an apply abandoned while it waits (its caller hung up)
        // has published nothing and taken nothing.
        let admin = if recompiled.is_empty() && !crate::recover::has_parked(inner, &added) {
            None
        } else {
            Some(inner.admin.lock().await)
        };
        inner
            .store
            .publish_catalog(&document, &new_versions)
            .await?;
        if admin.is_some() {
            let mut parked = crate::recover::take_parked(inner, &added);
            // Before the new catalog is served: nothing can be decided for an
            // added feature yet, so none of its counters is in use.
            let now = inner.now();
            let mut replayed = Vec::new();
            // A customer restored before the swap can already be asked about
            // an added feature's reservations and keys (by its index).
            inner.incoming.store(Some(next.clone()));
            for cell in inner.customers.iter() {
                let mut st = cell.lock();
                if let Some(s) = st.sub.as_mut() {
                    if recompiled
                        .get(&*s.plan.key)
                        .is_some_and(|v| v.contains(&s.plan.version))
                    {
                        if let Some(p) = next.plans.get(&(s.plan.key.to_string(), s.plan.version)) {
                            s.plan = p.clone();
                        }
                    }
                }
                if let Some(p) = parked.remove(&*st.id) {
                    replayed.extend(crate::recover::restore(inner, &next, &mut st, p, now));
                }
            }
            if !replayed.is_empty() {
                // Sent before the swap: ahead of any write of these features.
                if inner.tx.send(Msg::Replayed(replayed)).is_err() {
                    inner.incoming.store(None);
                    return Err(EngineError::ShutDown);
                }
            }
        }
        inner.served.store(next);
        inner.incoming.store(None);
        tracing::info!(
            source = document.source.as_str(),
            name = %document.name,
            fingerprint = %document.fingerprint,
            published = new_versions.len(),
            "catalog applied"
        );
        Ok((changes, true))
    }
}
