//! What both backends share for the plan-change tables: the SQL (identical on
//! SQLite and PostgreSQL), the raw rows and their conversion to records, and
//! the generic statements that run on either pool.

use jiff::Timestamp;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::{PendingItemRecord, PlanChangeRecord, ScheduledChangeRecord};
use crate::codec::{self, decimal, json, micros, timestamp};
use crate::{Result, StoreError};

pub(crate) const INSERT_PLAN_CHANGE: &str = "INSERT INTO plan_changes (id, customer_id, kind, \
     from_plan, from_version, to_plan, to_version, effective_at, requested_at, actor, reason, \
     details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
pub(crate) const PLAN_CHANGES_OF: &str = "SELECT id, customer_id, kind, from_plan, from_version, \
     to_plan, to_version, effective_at, requested_at, actor, reason, details FROM plan_changes \
     WHERE customer_id = $1 ORDER BY effective_at, id";
pub(crate) const PLAN_CHANGES_BETWEEN: &str = "SELECT id, customer_id, kind, from_plan, \
     from_version, to_plan, to_version, effective_at, requested_at, actor, reason, details \
     FROM plan_changes WHERE effective_at >= $1 AND effective_at < $2 \
     ORDER BY customer_id, effective_at, id";
pub(crate) const PUT_SCHEDULED: &str = "INSERT INTO scheduled_changes (id, customer_id, action, \
     to_plan, to_version, effective_at, state, actor, reason, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
     action = excluded.action, to_plan = excluded.to_plan, to_version = excluded.to_version, \
     effective_at = excluded.effective_at, state = excluded.state, actor = excluded.actor, \
     reason = excluded.reason, created_at = excluded.created_at, \
     updated_at = excluded.updated_at";
pub(crate) const PENDING_SCHEDULED_OF: &str = "SELECT id, customer_id, action, to_plan, \
     to_version, effective_at, state, actor, reason, created_at, updated_at \
     FROM scheduled_changes WHERE customer_id = $1 AND state = 'pending'";
pub(crate) const SCHEDULED_BY_ID: &str = "SELECT id, customer_id, action, to_plan, \
     to_version, effective_at, state, actor, reason, created_at, updated_at \
     FROM scheduled_changes WHERE id = $1";
pub(crate) const SCHEDULED_DUE: &str = "SELECT id, customer_id, action, to_plan, to_version, \
     effective_at, state, actor, reason, created_at, updated_at FROM scheduled_changes \
     WHERE state = 'pending' AND effective_at <= $1 ORDER BY effective_at, id";
pub(crate) const INSERT_PENDING_ITEM: &str = "INSERT INTO pending_items (id, customer_id, line, \
     amount, currency, created_at, invoice_id) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const PENDING_ITEMS_OF: &str = "SELECT id, customer_id, line, amount, currency, \
     created_at, invoice_id FROM pending_items WHERE customer_id = $1 AND invoice_id IS NULL \
     ORDER BY created_at, id";

/// One bound parameter (the column types the plan-change tables use).
#[derive(Debug)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// The plan-change tables on one backend's pools: every statement but the
/// transactional attachment is the same on SQLite and PostgreSQL.
#[derive(Debug)]
pub(crate) struct Tables<'p, DB: Database> {
    /// Writes (SQLite: its single writer connection).
    pub write: &'p Pool<DB>,
    pub read: &'p Pool<DB>,
}

impl<DB> Tables<'_, DB>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    RawPlanChange: for<'r> FromRow<'r, DB::Row>,
    RawScheduled: for<'r> FromRow<'r, DB::Row>,
    RawPendingItem: for<'r> FromRow<'r, DB::Row>,
{
    fn query(sql: &'static str, args: Vec<Arg>) -> sqlx::query::Query<'static, DB, DB::Arguments> {
        let mut q = sqlx::query::<DB>(sql);
        for a in args {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::OptInt(v) => q.bind(v),
            };
        }
        q
    }

    async fn execute(&self, sql: &'static str, args: Vec<Arg>) -> sqlx::Result<()> {
        self.write.execute(Self::query(sql, args)).await?;
        Ok(())
    }

    async fn fetch<R, T>(&self, sql: &'static str, args: Vec<Arg>) -> Result<Vec<T>>
    where
        R: for<'r> FromRow<'r, DB::Row>,
        T: TryFrom<R, Error = StoreError>,
    {
        let rows = self.read.fetch_all(Self::query(sql, args)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(T::try_from(R::from_row(row)?)?);
        }
        Ok(out)
    }

    /// Appends a plan change on an open transaction's connection.
    pub async fn insert_plan_change_in(
        &self,
        conn: &mut DB::Connection,
        c: &PlanChangeRecord,
    ) -> Result<()> {
        conn.execute(Self::query(INSERT_PLAN_CHANGE, plan_change_args(c)?))
            .await
            .map_err(|e| codec::insert_error(e, "plan change", &c.id, &c.customer_id))?;
        Ok(())
    }

    pub async fn plan_changes(&self, customer_id: &str) -> Result<Vec<PlanChangeRecord>> {
        self.fetch::<RawPlanChange, _>(PLAN_CHANGES_OF, vec![Arg::Text(customer_id.to_string())])
            .await
    }

    pub async fn plan_changes_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PlanChangeRecord>> {
        self.fetch::<RawPlanChange, _>(
            PLAN_CHANGES_BETWEEN,
            vec![Arg::Int(micros(from)), Arg::Int(micros(to))],
        )
        .await
    }

    pub async fn put_scheduled_change(&self, c: &ScheduledChangeRecord) -> Result<()> {
        self.execute(PUT_SCHEDULED, scheduled_args(c))
            .await
            .map_err(
                |e| match codec::insert_error(e, "scheduled change", &c.id, &c.customer_id) {
                    // The id is an upsert: a unique violation can only be the
                    // one-pending-per-customer index.
                    StoreError::Conflict { .. } => StoreError::Conflict {
                        what: "pending scheduled change for customer",
                        id: c.customer_id.clone(),
                    },
                    other => other,
                },
            )
    }

    pub async fn pending_scheduled_change(
        &self,
        customer_id: &str,
    ) -> Result<Option<ScheduledChangeRecord>> {
        let mut rows = self
            .fetch::<RawScheduled, _>(
                PENDING_SCHEDULED_OF,
                vec![Arg::Text(customer_id.to_string())],
            )
            .await?;
        Ok(rows.pop())
    }

    pub async fn scheduled_change(&self, id: &str) -> Result<Option<ScheduledChangeRecord>> {
        let mut rows = self
            .fetch::<RawScheduled, _>(SCHEDULED_BY_ID, vec![Arg::Text(id.to_string())])
            .await?;
        Ok(rows.pop())
    }

    pub async fn scheduled_changes_due(&self, at: Timestamp) -> Result<Vec<ScheduledChangeRecord>> {
        self.fetch::<RawScheduled, _>(SCHEDULED_DUE, vec![Arg::Int(micros(at))])
            .await
    }

    pub async fn insert_pending_item(&self, i: &PendingItemRecord) -> Result<()> {
        self.execute(INSERT_PENDING_ITEM, pending_item_args(i)?)
            .await
            .map_err(|e| codec::insert_error(e, "pending item", &i.id, &i.customer_id))
    }

    pub async fn pending_items(&self, customer_id: &str) -> Result<Vec<PendingItemRecord>> {
        self.fetch::<RawPendingItem, _>(PENDING_ITEMS_OF, vec![Arg::Text(customer_id.to_string())])
            .await
    }

    /// Attaches pending items to an invoice in `tx` (then committed); see
    /// [`Tables::attach_in`].
    pub async fn attach_pending_items(
        &self,
        mut tx: sqlx::Transaction<'static, DB>,
        lock: &'static str,
        ids: &[String],
        invoice_id: &str,
    ) -> Result<()>
    where
        (String, Option<String>): for<'r> FromRow<'r, DB::Row>,
    {
        Self::attach_in(&mut tx, lock, ids, invoice_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Attaches pending items to an invoice within `tx` (left open): reads
    /// their current invoice with `lock` appended (`FOR UPDATE` on
    /// PostgreSQL), checks them (an unknown item or one on another invoice
    /// fails), sets the invoice on those not yet attached.
    pub async fn attach_in(
        tx: &mut sqlx::Transaction<'static, DB>,
        lock: &'static str,
        ids: &[String],
        invoice_id: &str,
    ) -> Result<()>
    where
        (String, Option<String>): for<'r> FromRow<'r, DB::Row>,
    {
        if ids.is_empty() {
            return Ok(());
        }
        let mut qb =
            sqlx::QueryBuilder::<DB>::new("SELECT id, invoice_id FROM pending_items WHERE id IN ");
        push_ids(&mut qb, ids);
        qb.push(lock);
        let found: Vec<(String, Option<String>)> = qb.build_query_as().fetch_all(&mut **tx).await?;
        check_attach(ids, &found, invoice_id)?;
        let mut qb = sqlx::QueryBuilder::<DB>::new("UPDATE pending_items SET invoice_id = ");
        qb.push_bind(invoice_id.to_string())
            .push(" WHERE invoice_id IS NULL AND id IN ");
        push_ids(&mut qb, ids);
        qb.build().execute(&mut **tx).await?;
        Ok(())
    }
}

fn version(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v} is not a version")))
}

// ---- plan changes -----------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawPlanChange {
    id: String,
    customer_id: String,
    kind: String,
    from_plan: Option<String>,
    from_version: Option<i64>,
    to_plan: String,
    to_version: i64,
    effective_at: i64,
    requested_at: i64,
    actor: String,
    reason: Option<String>,
    details: String,
}

impl TryFrom<RawPlanChange> for PlanChangeRecord {
    type Error = StoreError;
    fn try_from(r: RawPlanChange) -> Result<Self> {
        Ok(PlanChangeRecord {
            from_version: r
                .from_version
                .map(|v| version("plan_changes.from_version", v))
                .transpose()?,
            to_version: version("plan_changes.to_version", r.to_version)?,
            effective_at: timestamp("plan_changes.effective_at", r.effective_at)?,
            requested_at: timestamp("plan_changes.requested_at", r.requested_at)?,
            details: json("plan_changes.details", &r.details)?,
            id: r.id,
            customer_id: r.customer_id,
            kind: r.kind,
            from_plan: r.from_plan,
            to_plan: r.to_plan,
            actor: r.actor,
            reason: r.reason,
        })
    }
}

pub(crate) fn plan_change_args(c: &PlanChangeRecord) -> Result<Vec<Arg>> {
    Ok(vec![
        Arg::Text(c.id.clone()),
        Arg::Text(c.customer_id.clone()),
        Arg::Text(c.kind.clone()),
        Arg::OptText(c.from_plan.clone()),
        Arg::OptInt(c.from_version.map(i64::from)),
        Arg::Text(c.to_plan.clone()),
        Arg::Int(i64::from(c.to_version)),
        Arg::Int(micros(c.effective_at)),
        Arg::Int(micros(c.requested_at)),
        Arg::Text(c.actor.clone()),
        Arg::OptText(c.reason.clone()),
        Arg::Text(codec::to_json("plan_changes.details", &c.details)?),
    ])
}

// ---- scheduled changes -------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawScheduled {
    id: String,
    customer_id: String,
    action: String,
    to_plan: Option<String>,
    to_version: Option<i64>,
    effective_at: i64,
    state: String,
    actor: String,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<RawScheduled> for ScheduledChangeRecord {
    type Error = StoreError;
    fn try_from(r: RawScheduled) -> Result<Self> {
        Ok(ScheduledChangeRecord {
            to_version: r
                .to_version
                .map(|v| version("scheduled_changes.to_version", v))
                .transpose()?,
            effective_at: timestamp("scheduled_changes.effective_at", r.effective_at)?,
            created_at: timestamp("scheduled_changes.created_at", r.created_at)?,
            updated_at: timestamp("scheduled_changes.updated_at", r.updated_at)?,
            id: r.id,
            customer_id: r.customer_id,
            action: r.action,
            to_plan: r.to_plan,
            state: r.state,
            actor: r.actor,
            reason: r.reason,
        })
    }
}

pub(crate) fn scheduled_args(c: &ScheduledChangeRecord) -> Vec<Arg> {
    vec![
        Arg::Text(c.id.clone()),
        Arg::Text(c.customer_id.clone()),
        Arg::Text(c.action.clone()),
        Arg::OptText(c.to_plan.clone()),
        Arg::OptInt(c.to_version.map(i64::from)),
        Arg::Int(micros(c.effective_at)),
        Arg::Text(c.state.clone()),
        Arg::Text(c.actor.clone()),
        Arg::OptText(c.reason.clone()),
        Arg::Int(micros(c.created_at)),
        Arg::Int(micros(c.updated_at)),
    ]
}

// ---- pending items ---------------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawPendingItem {
    id: String,
    customer_id: String,
    line: String,
    amount: String,
    currency: String,
    created_at: i64,
    invoice_id: Option<String>,
}

impl TryFrom<RawPendingItem> for PendingItemRecord {
    type Error = StoreError;
    fn try_from(r: RawPendingItem) -> Result<Self> {
        Ok(PendingItemRecord {
            line: json("pending_items.line", &r.line)?,
            amount: decimal("pending_items.amount", &r.amount)?,
            created_at: timestamp("pending_items.created_at", r.created_at)?,
            id: r.id,
            customer_id: r.customer_id,
            currency: r.currency,
            invoice_id: r.invoice_id,
        })
    }
}

pub(crate) fn pending_item_args(i: &PendingItemRecord) -> Result<Vec<Arg>> {
    Ok(vec![
        Arg::Text(i.id.clone()),
        Arg::Text(i.customer_id.clone()),
        Arg::Text(codec::to_json("pending_items.line", &i.line)?),
        Arg::Text(i.amount.to_string()),
        Arg::Text(i.currency.clone()),
        Arg::Int(micros(i.created_at)),
        Arg::OptText(i.invoice_id.clone()),
    ])
}

/// Checks an attachment: every id exists (`NotFound`) and none is on an
/// invoice other than `invoice_id` (`Conflict`). `found` holds (id, invoice_id).
pub(crate) fn check_attach(
    ids: &[String],
    found: &[(String, Option<String>)],
    invoice_id: &str,
) -> Result<()> {
    for id in ids {
        match found.iter().find(|(f, _)| f == id) {
            None => {
                return Err(StoreError::NotFound {
                    what: "pending item",
                    id: id.clone(),
                });
            }
            Some((_, Some(other))) if other != invoice_id => {
                return Err(StoreError::Conflict {
                    what: "pending item on another invoice",
                    id: id.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Appends `(id1, id2, …)` with the ids bound.
pub(crate) fn push_ids<DB: Database>(qb: &mut sqlx::QueryBuilder<DB>, ids: &[String])
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    qb.push("(");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
    qb.push(")");
}

/// Implements [`super::ChangeStore`] for a backend by delegating to [`Tables`]:
/// `$store` the store type, `$db` its sqlx database, `$tables` an expression
/// of `self` giving its `Tables`, `$begin` one starting its write
/// transaction, `$lock` the row lock of the attachment read.
macro_rules! change_store {
    ($store:ty, $tables:expr, $begin:expr, $lock:expr) => {
        #[async_trait::async_trait]
        impl $crate::changes::ChangeStore for $store {
            async fn insert_plan_change(
                &self,
                change: &$crate::changes::PlanChangeRecord,
            ) -> $crate::Result<()> {
                // The change and its `subscription.changed` event: one
                // transaction, so neither is written without the other.
                let mut tx = $begin(self).await?;
                $tables(self)
                    .insert_plan_change_in(&mut *tx, change)
                    .await?;
                let event = $crate::changes::change_event(change);
                outbox::lock_outbox(&mut *tx).await?;
                outbox::insert_event(&mut *tx, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn plan_changes(
                &self,
                customer_id: &str,
            ) -> $crate::Result<Vec<$crate::changes::PlanChangeRecord>> {
                $tables(self).plan_changes(customer_id).await
            }

            async fn plan_changes_between(
                &self,
                from: jiff::Timestamp,
                to: jiff::Timestamp,
            ) -> $crate::Result<Vec<$crate::changes::PlanChangeRecord>> {
                $tables(self).plan_changes_between(from, to).await
            }

            async fn put_scheduled_change(
                &self,
                change: &$crate::changes::ScheduledChangeRecord,
            ) -> $crate::Result<()> {
                $tables(self).put_scheduled_change(change).await
            }

            async fn pending_scheduled_change(
                &self,
                customer_id: &str,
            ) -> $crate::Result<Option<$crate::changes::ScheduledChangeRecord>> {
                $tables(self).pending_scheduled_change(customer_id).await
            }

            async fn scheduled_change(
                &self,
                id: &str,
            ) -> $crate::Result<Option<$crate::changes::ScheduledChangeRecord>> {
                $tables(self).scheduled_change(id).await
            }

            async fn scheduled_changes_due(
                &self,
                at: jiff::Timestamp,
            ) -> $crate::Result<Vec<$crate::changes::ScheduledChangeRecord>> {
                $tables(self).scheduled_changes_due(at).await
            }

            async fn insert_pending_item(
                &self,
                item: &$crate::changes::PendingItemRecord,
            ) -> $crate::Result<()> {
                $tables(self).insert_pending_item(item).await
            }

            async fn pending_items(
                &self,
                customer_id: &str,
            ) -> $crate::Result<Vec<$crate::changes::PendingItemRecord>> {
                $tables(self).pending_items(customer_id).await
            }

            async fn attach_pending_items(
                &self,
                ids: &[String],
                invoice_id: &str,
            ) -> $crate::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let tx = $begin(self).await?;
                $tables(self)
                    .attach_pending_items(tx, $lock, ids, invoice_id)
                    .await
            }
        }
    };
}
pub(crate) use change_store;
