//! The PostgreSQL backend: the shared store when several nodes run Tollgate.
//!
//! Same schema semantics as SQLite (BIGINT microseconds, decimal TEXT
//! quantities summed in Rust, JSON as TEXT stored exactly as written), so both
//! backends read back identical records; `tests/behaviour.rs` runs one suite
//! against both.
//!
//! # The ledger and its sequence
//!
//! Each [`Store::append_batch`] is one transaction. Its usage rows take their
//! `seq` from the table's sequence (`nextval`, drawn in batch order before the
//! insert) and are inserted with one `INSERT … SELECT FROM UNNEST(arrays)` per run
//! of appends, whatever the batch size.
//!
//! A PostgreSQL sequence hands out numbers at `nextval` time, not at commit time:
//! two transactions appending concurrently can commit their seqs out of order,
//! and a reader of [`Store::usage_after`] could then see seq 12 before seq 11
//! exists and skip 11 forever. Tollgate's engine has ONE writer task per process
//! that commits batches one after another, and one process writes a given
//! deployment's ledger, so sequence order is commit order. Replay by
//! `usage_after(seq)` relies on that single writer.
//!
//! # Isolation for tests
//!
//! [`PgStore::connect_with_schema`] puts every table of this store in its own
//! schema (created if missing) by setting `search_path` on every connection of
//! the pool; tests use a fresh random schema each and drop it with
//! [`PgStore::drop_schema`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use jiff::Timestamp;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Postgres, QueryBuilder};

use crate::codec::{
    self, API_KEY_COLUMNS, CUSTOMER_COLUMNS, GRANT_COLUMNS, RESERVATION_COLUMNS, RawApiKey,
    RawCustomer, RawGrant, RawOverride, RawPlanVersion, RawReservation, RawSnapshot,
    RawSubscription, RawUsage, SUBSCRIPTION_COLUMNS, USAGE_COLUMNS, UsageColumns, micros,
    opt_micros,
};
use crate::{
    ApiKeyRecord, CatalogDocumentRecord, CatalogSource, CounterSnapshot, CustomerFilter,
    CustomerRecord, GrantRecord, OverrideRecord, PlanVersionRecord, ReservationRecord,
    ReservationState, Result, Store, StoreError, SubscriptionRecord, UsageQuery, UsageRecord,
    WriteOp, notify,
};

/// The embedded migrations (compiled in; no database needed at build time).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per pool.
const POOL_SIZE: u32 = 8;

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    schema: Option<String>,
}

/// Quotes an SQL identifier (any name is safe once quoted).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), using the connection's
    /// default `search_path`. Call [`Store::migrate`] before use.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(url)
            .await?;
        Ok(PgStore { pool, schema: None })
    }

    /// Connects to `url` with every table of this store in the schema `schema`:
    /// the schema is created if missing and every connection of the pool sets
    /// `search_path` to it (and only it), so migrations, including sqlx's own
    /// bookkeeping table, and all queries stay inside it. Several stores in
    /// different schemas of one database are fully isolated; tests use a fresh
    /// random schema each. Call [`Store::migrate`] before use.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PgStore> {
        let options: PgConnectOptions = url.parse()?;
        let quoted = quote_ident(schema);
        let mut conn = PgConnection::connect_with(&options).await?;
        conn.execute(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted}"
        )))
        .await?;
        conn.close().await?;
        let set_path = format!("SET search_path TO {quoted}");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .after_connect(move |conn, _meta| {
                let sql = set_path.clone();
                Box::pin(async move {
                    conn.execute(AssertSqlSafe(sql)).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(PgStore {
            pool,
            schema: Some(schema.to_string()),
        })
    }

    /// The schema given to [`PgStore::connect_with_schema`], if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops this store's schema and everything in it, then closes the pool.
    /// Only for a store opened with [`PgStore::connect_with_schema`] (tests);
    /// a store without its own schema is just closed.
    pub async fn drop_schema(&self) -> Result<()> {
        if let Some(schema) = &self.schema {
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(schema)
            )))
            .execute(&self.pool)
            .await?;
        }
        self.pool.close().await;
        Ok(())
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub(crate) fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn read_pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Appends usage rows, returning their seqs in batch order.
async fn insert_usage(conn: &mut PgConnection, rows: Vec<UsageColumns>) -> Result<Vec<i64>> {
    let n = rows.len();
    let mut seqs: Vec<i64> =
        sqlx::query_scalar("SELECT nextval('usage_seq_seq') FROM generate_series(1, $1)")
            .bind(n as i64)
            .fetch_all(&mut *conn)
            .await?;
    // A sequence only grows: sorting pins batch order to sequence order even if
    // the rows above came back in another order.
    seqs.sort_unstable();
    if seqs.len() != n {
        return Err(StoreError::Corrupt(format!(
            "asked the ledger sequence for {n} values, got {}",
            seqs.len()
        )));
    }
    let mut customer_id = Vec::with_capacity(n);
    let mut feature = Vec::with_capacity(n);
    let mut quantity = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut recorded_at = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut properties = Vec::with_capacity(n);
    let mut billable = Vec::with_capacity(n);
    let mut idempotency_key = Vec::with_capacity(n);
    let mut allocation = Vec::with_capacity(n);
    let mut answer = Vec::with_capacity(n);
    for r in rows {
        customer_id.push(r.customer_id);
        feature.push(r.feature);
        quantity.push(r.quantity);
        ts.push(r.ts);
        recorded_at.push(r.recorded_at);
        source.push(r.source.to_string());
        properties.push(r.properties);
        billable.push(r.billable);
        idempotency_key.push(r.idempotency_key);
        allocation.push(r.allocation);
        answer.push(r.answer);
    }
    sqlx::query(
        "INSERT INTO usage (seq, customer_id, feature, quantity, ts, recorded_at, source, \
         properties, billable, idempotency_key, allocation, answer) \
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], \
         $6::int8[], $7::text[], $8::text[], $9::bool[], $10::text[], $11::text[], $12::text[])",
    )
    .bind(&seqs)
    .bind(customer_id)
    .bind(feature)
    .bind(quantity)
    .bind(ts)
    .bind(recorded_at)
    .bind(source)
    .bind(properties)
    .bind(billable)
    .bind(idempotency_key)
    .bind(allocation)
    .bind(answer)
    .execute(&mut *conn)
    .await?;
    Ok(seqs)
}

async fn put_reservation(conn: &mut PgConnection, r: &ReservationRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO reservations (id, customer_id, feature, quantity, state, created_at, \
         expires_at, idempotency_key, properties) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
         feature = excluded.feature, quantity = excluded.quantity, state = excluded.state, \
         created_at = excluded.created_at, expires_at = excluded.expires_at, \
         idempotency_key = excluded.idempotency_key, properties = excluded.properties",
    )
    .bind(&r.id)
    .bind(&r.customer_id)
    .bind(&r.feature)
    .bind(r.quantity.to_string())
    .bind(r.state.as_str())
    .bind(micros(r.created_at))
    .bind(micros(r.expires_at))
    .bind(&r.idempotency_key)
    .bind(codec::to_json("reservations.properties", &r.properties)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_reservation_state(
    conn: &mut PgConnection,
    id: &str,
    state: ReservationState,
) -> Result<()> {
    let done = sqlx::query("UPDATE reservations SET state = $1 WHERE id = $2")
        .bind(state.as_str())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound {
            what: "reservation",
            id: id.to_string(),
        });
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn billing(&self) -> &dyn crate::billing::BillingStore {
        self
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn put_plan_version(&self, plan: &PlanVersionRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        put_version(&mut tx, plan).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publish_catalog(
        &self,
        document: &CatalogDocumentRecord,
        versions: &[PlanVersionRecord],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for v in versions {
            put_version(&mut tx, v).await?;
        }
        crate::catalog::insert::<sqlx::Postgres>(&mut tx, document).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn latest_catalog_document(
        &self,
        source: Option<CatalogSource>,
    ) -> Result<Option<CatalogDocumentRecord>> {
        crate::catalog::latest(&self.pool, source).await
    }

    async fn plan_versions(&self) -> Result<Vec<PlanVersionRecord>> {
        let rows: Vec<RawPlanVersion> = sqlx::query_as(
            "SELECT plan_key, version, definition, published_at FROM plan_versions \
             ORDER BY plan_key, version",
        )
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn insert_customer(&self, c: &CustomerRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO customers (id, name, email, currency, time_zone, metadata, \
             admin_bypass, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.email)
        .bind(&c.currency)
        .bind(&c.time_zone)
        .bind(codec::to_json("customers.metadata", &c.metadata)?)
        .bind(c.admin_bypass)
        .bind(micros(c.created_at))
        .bind(micros(c.updated_at))
        .bind(opt_micros(c.deleted_at))
        .execute(&self.pool)
        .await
        .map_err(|e| codec::insert_error(e, "customer", &c.id, &c.id))?;
        Ok(())
    }

    async fn update_customer(&self, c: &CustomerRecord) -> Result<()> {
        let done = sqlx::query(
            "UPDATE customers SET name = $2, email = $3, currency = $4, time_zone = $5, \
             metadata = $6, admin_bypass = $7, updated_at = $8, deleted_at = $9 WHERE id = $1",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.email)
        .bind(&c.currency)
        .bind(&c.time_zone)
        .bind(codec::to_json("customers.metadata", &c.metadata)?)
        .bind(c.admin_bypass)
        .bind(micros(c.updated_at))
        .bind(opt_micros(c.deleted_at))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "customer",
                id: c.id.clone(),
            });
        }
        Ok(())
    }

    async fn get_customer(&self, id: &str) -> Result<Option<CustomerRecord>> {
        let row: Option<RawCustomer> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(CustomerRecord::try_from).transpose()
    }

    async fn list_customers(&self, filter: &CustomerFilter) -> Result<Vec<CustomerRecord>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE 1 = 1"
        ));
        if !filter.include_deleted {
            qb.push(" AND c.deleted_at IS NULL");
        }
        if let Some(plan) = &filter.plan_key {
            qb.push(" AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.customer_id = c.id AND s.plan_key = ")
                .push_bind(plan.clone())
                .push(")");
        }
        if let Some(after) = &filter.starting_after {
            qb.push(" AND c.id COLLATE \"C\" > ")
                .push_bind(after.clone());
        }
        // Byte order, as on SQLite, whatever the database's collation.
        qb.push(" ORDER BY c.id COLLATE \"C\"");
        if let Some(n) = codec::limit(filter.limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawCustomer> = qb.build_query_as().fetch_all(&self.pool).await?;
        codec::convert(rows)
    }

    async fn all_customers(&self) -> Result<Vec<CustomerRecord>> {
        let rows: Vec<RawCustomer> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c ORDER BY c.id COLLATE \"C\""
        )))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn put_subscription(&self, s: &SubscriptionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO subscriptions (customer_id, plan_key, plan_version, status, anchor, \
             trial_ends_at, canceled_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (customer_id) DO UPDATE SET plan_key = excluded.plan_key, \
             plan_version = excluded.plan_version, status = excluded.status, \
             anchor = excluded.anchor, trial_ends_at = excluded.trial_ends_at, \
             canceled_at = excluded.canceled_at, created_at = excluded.created_at, \
             updated_at = excluded.updated_at",
        )
        .bind(&s.customer_id)
        .bind(&s.plan_key)
        .bind(i64::from(s.plan_version))
        .bind(s.status.as_str())
        .bind(micros(s.anchor))
        .bind(opt_micros(s.trial_ends_at))
        .bind(opt_micros(s.canceled_at))
        .bind(micros(s.created_at))
        .bind(micros(s.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|e| codec::insert_error(e, "subscription", &s.customer_id, &s.customer_id))?;
        Ok(())
    }

    async fn get_subscription(&self, customer_id: &str) -> Result<Option<SubscriptionRecord>> {
        let row: Option<RawSubscription> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE customer_id = $1"
        )))
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(SubscriptionRecord::try_from).transpose()
    }

    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        let rows: Vec<RawSubscription> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY customer_id COLLATE \"C\""
        )))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn put_override(&self, ov: &OverrideRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO overrides (customer_id, feature, entitlement, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, feature) DO UPDATE SET \
             entitlement = excluded.entitlement, updated_at = excluded.updated_at",
        )
        .bind(&ov.customer_id)
        .bind(&ov.feature)
        .bind(codec::to_json("overrides.entitlement", &ov.entitlement)?)
        .bind(micros(ov.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            let id = format!("{}/{}", ov.customer_id, ov.feature);
            codec::insert_error(e, "override", &id, &ov.customer_id)
        })?;
        Ok(())
    }

    async fn delete_override(&self, customer_id: &str, feature: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM overrides WHERE customer_id = $1 AND feature = $2")
            .bind(customer_id)
            .bind(feature)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn all_overrides(&self) -> Result<Vec<OverrideRecord>> {
        let rows: Vec<RawOverride> = sqlx::query_as(
            "SELECT customer_id, feature, entitlement, updated_at FROM overrides \
             ORDER BY customer_id COLLATE \"C\", feature COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn insert_grant(&self, g: &GrantRecord, events: &[notify::OutboxEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO grants ({GRANT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&g.id)
        .bind(&g.customer_id)
        .bind(&g.feature)
        .bind(&g.kind)
        .bind(g.quantity.to_string())
        .bind(g.priority)
        .bind(micros(g.effective_at))
        .bind(opt_micros(g.expires_at))
        .bind(opt_micros(g.voided_at))
        .bind(codec::to_json("grants.metadata", &g.metadata)?)
        .bind(micros(g.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| codec::insert_error(e, "grant", &g.id, &g.customer_id))?;
        if !events.is_empty() {
            notify::postgres::lock_outbox(&mut tx).await?;
            for e in events {
                notify::postgres::insert_event(&mut tx, e).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn void_grant(&self, id: &str, at: Timestamp) -> Result<()> {
        let done =
            sqlx::query("UPDATE grants SET voided_at = COALESCE(voided_at, $2) WHERE id = $1")
                .bind(id)
                .bind(micros(at))
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "grant",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    async fn all_grants(&self) -> Result<Vec<GrantRecord>> {
        let rows: Vec<RawGrant> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM grants ORDER BY customer_id COLLATE \"C\", \
             feature COLLATE \"C\", priority, id COLLATE \"C\""
        )))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn append_batch(&self, ops: &[WriteOp]) -> Result<Vec<i64>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut prepared: Vec<Option<UsageColumns>> = Vec::with_capacity(ops.len());
        for op in ops {
            prepared.push(match op {
                WriteOp::AppendUsage(r) => Some(UsageColumns::new(r)?),
                _ => None,
            });
        }
        let mut tx = self.pool.begin().await?;
        let mut seqs = Vec::new();
        let mut run: Vec<UsageColumns> = Vec::new();
        let mut outbox_locked = false;
        for (op, cols) in ops.iter().zip(prepared) {
            if let Some(cols) = cols {
                run.push(cols);
                continue;
            }
            if !run.is_empty() {
                seqs.extend(insert_usage(&mut tx, std::mem::take(&mut run)).await?);
            }
            match op {
                WriteOp::PutReservation(r) => put_reservation(&mut tx, r).await?,
                WriteOp::SetReservationState { id, state } => {
                    set_reservation_state(&mut tx, id, *state).await?
                }
                WriteOp::Outbox(e) => {
                    if !std::mem::replace(&mut outbox_locked, true) {
                        notify::postgres::lock_outbox(&mut tx).await?;
                    }
                    notify::postgres::insert_event(&mut tx, e).await?;
                }
                WriteOp::AppendUsage(_) => {}
            }
        }
        if !run.is_empty() {
            seqs.extend(insert_usage(&mut tx, run).await?);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>> {
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("SELECT {USAGE_COLUMNS} FROM usage WHERE 1 = 1"));
        if let Some(c) = &q.customer_id {
            qb.push(" AND customer_id = ").push_bind(c.clone());
        }
        if let Some(f) = &q.feature {
            qb.push(" AND feature = ").push_bind(f.clone());
        }
        if let Some(from) = q.from {
            qb.push(" AND ts >= ").push_bind(micros(from));
        }
        if let Some(to) = q.to {
            qb.push(" AND ts < ").push_bind(micros(to));
        }
        if let Some(after) = q.after_seq {
            qb.push(" AND seq > ").push_bind(after);
        }
        qb.push(" ORDER BY seq");
        if let Some(n) = codec::limit(q.limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawUsage> = qb.build_query_as().fetch_all(&self.pool).await?;
        codec::convert(rows)
    }

    async fn usage_recorded_since(&self, since: Timestamp) -> Result<Vec<UsageRecord>> {
        let rows: Vec<RawUsage> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USAGE_COLUMNS} FROM usage WHERE recorded_at >= $1 ORDER BY seq"
        )))
        .bind(micros(since))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn usage_after(&self, seq: i64, limit: u32) -> Result<Vec<UsageRecord>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {USAGE_COLUMNS} FROM usage WHERE seq > "
        ));
        qb.push_bind(seq).push(" ORDER BY seq");
        if let Some(n) = codec::limit(limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawUsage> = qb.build_query_as().fetch_all(&self.pool).await?;
        codec::convert(rows)
    }

    async fn max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::int8 FROM usage")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn sum_usage(
        &self,
        customer_id: &str,
        feature: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Decimal>> {
        let mut sums = BTreeMap::new();
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT allocation FROM usage \
             WHERE customer_id = $1 AND feature = $2 AND ts >= $3 AND ts < $4",
        )
        .bind(customer_id)
        .bind(feature)
        .bind(micros(from))
        .bind(micros(to))
        .fetch(&self.pool);
        while let Some(allocation) = rows.try_next().await? {
            codec::add_allocation(&mut sums, &allocation)?;
        }
        Ok(sums)
    }

    async fn open_reservations(&self) -> Result<Vec<ReservationRecord>> {
        let rows: Vec<RawReservation> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE state = 'open' \
             ORDER BY id COLLATE \"C\""
        )))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    async fn get_reservation(&self, id: &str) -> Result<Option<ReservationRecord>> {
        let row: Option<RawReservation> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ReservationRecord::try_from).transpose()
    }

    async fn save_snapshot(&self, as_of_seq: i64, counters: &[CounterSnapshot]) -> Result<()> {
        codec::unique_counters(counters)?;
        let n = counters.len();
        let mut customer_id = Vec::with_capacity(n);
        let mut feature = Vec::with_capacity(n);
        let mut window_start = Vec::with_capacity(n);
        let mut window_end = Vec::with_capacity(n);
        let mut used = Vec::with_capacity(n);
        for c in counters {
            customer_id.push(c.customer_id.clone());
            feature.push(c.feature.clone());
            window_start.push(micros(c.window_start));
            window_end.push(micros(c.window_end));
            used.push(codec::to_json("counter_snapshots.used", &c.used)?);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM counter_snapshots")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO counter_snapshots (customer_id, feature, window_start, window_end, used) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[])",
        )
        .bind(customer_id)
        .bind(feature)
        .bind(window_start)
        .bind(window_end)
        .bind(used)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO snapshot_meta (id, as_of_seq) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET as_of_seq = excluded.as_of_seq",
        )
        .bind(as_of_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<Option<(i64, Vec<CounterSnapshot>)>> {
        // REPEATABLE READ: the rows and the seq come from the same committed save.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT as_of_seq FROM snapshot_meta WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        let rows: Vec<RawSnapshot> = sqlx::query_as(
            "SELECT customer_id, feature, window_start, window_end, used FROM counter_snapshots \
             ORDER BY customer_id COLLATE \"C\", feature COLLATE \"C\", window_start, window_end",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((seq, codec::convert(rows)?)))
    }

    async fn insert_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.scope)
        .bind(&k.customer_id)
        .bind(&k.digest)
        .bind(&k.prefix)
        .bind(micros(k.created_at))
        .bind(opt_micros(k.revoked_at))
        .execute(&self.pool)
        .await
        .map_err(|e| codec::insert_error(e, "api key", &k.id, ""))?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<RawApiKey> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id COLLATE \"C\""
        )))
        .fetch_all(&self.pool)
        .await?;
        codec::convert(rows)
    }

    fn notify(&self) -> &dyn notify::NotifyStore {
        self
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(micros(at))
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "api key",
                id: id.to_string(),
            });
        }
        Ok(())
    }
    fn changes(&self) -> &dyn crate::changes::ChangeStore {
        self
    }
}

/// Publishes one plan version inside `tx` (see [`Store::put_plan_version`]).
async fn put_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    plan: &PlanVersionRecord,
) -> Result<()> {
    let definition = codec::to_json("plan_versions.definition", &plan.definition)?;
    let inserted = sqlx::query(
        "INSERT INTO plan_versions (plan_key, version, definition, published_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (plan_key, version) DO NOTHING",
    )
    .bind(&plan.plan_key)
    .bind(i64::from(plan.version))
    .bind(definition)
    .bind(micros(plan.published_at))
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    let stored: String = sqlx::query_scalar(
        "SELECT definition FROM plan_versions WHERE plan_key = $1 AND version = $2",
    )
    .bind(&plan.plan_key)
    .bind(i64::from(plan.version))
    .fetch_one(&mut **tx)
    .await?;
    codec::same_definition(plan, &stored)
}
