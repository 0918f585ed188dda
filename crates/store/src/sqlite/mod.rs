//! The SQLite backend: the embedded default, one database file.
//!
//! # Durability and concurrency
//!
//! - The database runs in WAL mode and, by default ([`Durability::Full`]),
//!   every write the store acknowledges is fsynced to the WAL first, so it
//!   survives a crash or power loss: sqlx transactions with `synchronous =
//!   FULL`, ledger batches through the fsync thread (see below). Hot-path
//!   writes come through [`Store::append_batch_written`], one transaction per
//!   group commit, so the fsync is paid once per batch (or less), not once per
//!   usage record.
//! - Writes go through ONE sqlx connection (a pool of exactly one) and the
//!   ledger thread's connection; each write transaction starts with `BEGIN
//!   IMMEDIATE`, so SQLite serializes the two (the ledger thread is fed by the
//!   engine's single writer, the sqlx connection by everything else).
//! - Reads use a separate small pool: WAL lets readers run concurrently with the
//!   writer and with each other, and a read sees every transaction committed
//!   before it started.
//! - Foreign keys are enforced; a busy timeout covers the rare lock waits
//!   (checkpoints, another process opening the file).
//!
//! # The ledger
//!
//! A batch of usage rows only (the common group commit) is written by the
//! ledger thread ([`ledger`]): its own connection, one prepared single-row
//! `INSERT OR FAIL` per row and the zone map of each block, in one
//! transaction, committed with `synchronous = NORMAL`; a second thread
//! `fdatasync`s the WAL (with [`Durability::Full`]) before the batch is
//! acknowledged, so the next batch is written while this one syncs (with
//! [`Durability::Process`] the second thread only hands the batch back). Other
//! batches (reservations, outbox events, the last seq unknown) go through the
//! sqlx writer connection statement by statement, with multi-row `INSERT OR
//! FAIL` statements (no statement journal: a failed batch rolls its whole
//! transaction back). Sequence numbers are assigned explicitly by the single
//! writer: the last seq it wrote `+ 1, + 2, …` in
//! batch order (read as `max(seq)` in the transaction when not known, e.g. at
//! start or after a failure), so the seq of each record is known by
//! construction, and another writer would make the batch fail on the primary
//! key and be renumbered from `max(seq)` once, never misnumber rows. The table
//! is `AUTOINCREMENT`, so a seq is never reused.

mod ledger;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

/// How far an acknowledged write is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL` (the default): each commit is fsynced before it is
    /// acknowledged; survives a process crash, an OS crash and a power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL` (URL `sqlite://PATH?synchronous=normal`): commits
    /// reach the OS before they are acknowledged and the WAL is fsynced at
    /// checkpoints. Survives a crash or kill of the process; an OS crash or power
    /// loss may drop the last acknowledged batches. For hosts where fsync is slow
    /// and that trade is acceptable.
    Process,
}
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use jiff::Timestamp;
use rust_decimal::Decimal;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

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
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite's limit on bound parameters per statement in the bundled build.
const MAX_PARAMS: usize = 32_766;
/// Columns bound per usage row (`seq` and `block` included).
const USAGE_PARAMS: usize = 13;
// `block = seq >> block_bits` (see the migrations 0001 and 0008): a
// database created before 0008 keeps 8,192 seqs per block (13 bits), a new
// one gets 1,024 (10 bits). Fixed for the life of a database (the stored
// `block` column depends on it), read from `ledger_layout`.
//
// Since migration 0009 the per-customer index is built per block when the
// block is sealed (docs/engine.md, "The ledger on SQLite"): a group commit
// writes no index page; a query by customer probes one index range per sealed
// block in its time range and reads the open block (at most 2^block_bits
// rows) by seq range.

/// Rows per full multi-row usage INSERT.
const USAGE_CHUNK: usize = 2_048;
/// Columns bound per snapshot row.
const SNAPSHOT_PARAMS: usize = 5;
/// Rows per snapshot INSERT.
const SNAPSHOT_CHUNK: usize = 4_096;

const _: () = assert!(USAGE_CHUNK * USAGE_PARAMS <= MAX_PARAMS);
const _: () = assert!(SNAPSHOT_CHUNK * SNAPSHOT_PARAMS <= MAX_PARAMS);

/// The SQLite store: one file, one writer connection, a small pool of readers.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
    path: PathBuf,
    /// The ledger's block size (`ledger_layout`), read once.
    block_bits: Arc<tokio::sync::OnceCell<u32>>,
    /// The last ledger seq committed through this store, when known: the
    /// single writer numbers the next batch from it without a query. Cleared
    /// by any failed append (the next one reads `max(seq)` again).
    last_seq: Arc<Mutex<Option<i64>>>,
    durability: Durability,
    /// The thread that writes the common group commit (started on first use,
    /// after the migrations; see [`ledger`]).
    ledger: Arc<tokio::sync::OnceCell<ledger::LedgerWriter>>,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directories) the database file
    /// at `path`. Call [`Store::migrate`] before use.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, Durability::Full).await
    }

    /// [`SqliteStore::open`] with a chosen [`Durability`].
    pub async fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Process => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 64 MiB of page cache per connection.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A local file: no connection to test before each use (it would be
            // one more round trip to the connection's thread per commit).
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            // Room for every usage INSERT shape (see `usage_chunk_sizes`)
            // beside the other statements.
            .connect_with(options.clone().statement_cache_capacity(256))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.create_if_missing(false))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            path,
            block_bits: Arc::default(),
            last_seq: Arc::default(),
            durability,
            ledger: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (waiting for them to finish), releasing the file.
    pub async fn close(&self) {
        if let Some(ledger) = self.ledger.get() {
            ledger.close().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// `block = seq >> block_bits` for this database (see the note on blocks
    /// above `USAGE_CHUNK`: 13 for databases created before migration 0008,
    /// 10 after).
    pub(crate) async fn block_bits(&self) -> Result<u32> {
        let bits = self
            .block_bits
            .get_or_try_init(|| async {
                let bits: i64 =
                    sqlx::query_scalar("SELECT block_bits FROM ledger_layout WHERE id = 1")
                        .fetch_one(&self.reader)
                        .await?;
                u32::try_from(bits)
                    .ok()
                    .filter(|b| (1..=30).contains(b))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("ledger_layout.block_bits = {bits}"))
                    })
            })
            .await?;
        Ok(*bits)
    }

    async fn ledger(&self) -> Result<&ledger::LedgerWriter> {
        self.ledger
            .get_or_try_init(|| async { ledger::LedgerWriter::start(&self.path, self.durability) })
            .await
    }

    fn cached_last_seq(&self) -> Option<i64> {
        *self
            .last_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_last_seq(&self, seq: Option<i64>) {
        *self
            .last_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seq;
    }

    pub(crate) fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }
}

/// The event-time and recorded-time ranges of the rows of one block.
#[derive(Clone, Copy, Debug)]
struct Zone {
    min_ts: i64,
    max_ts: i64,
    min_recorded_at: i64,
    max_recorded_at: i64,
}

impl Zone {
    fn of(r: &UsageColumns) -> Zone {
        Zone {
            min_ts: r.ts,
            max_ts: r.ts,
            min_recorded_at: r.recorded_at,
            max_recorded_at: r.recorded_at,
        }
    }

    fn widen(&mut self, o: Zone) {
        self.min_ts = self.min_ts.min(o.min_ts);
        self.max_ts = self.max_ts.max(o.max_ts);
        self.min_recorded_at = self.min_recorded_at.min(o.min_recorded_at);
        self.max_recorded_at = self.max_recorded_at.max(o.max_recorded_at);
    }

    /// Whether every instant of `o` lies within this zone.
    fn covers(&self, o: &Zone) -> bool {
        self.min_ts <= o.min_ts
            && o.max_ts <= self.max_ts
            && self.min_recorded_at <= o.min_recorded_at
            && o.max_recorded_at <= self.max_recorded_at
    }

    /// This zone widened to whole minutes (the first microsecond of the
    /// first minute to the last microsecond of the last one). The ledger
    /// thread writes zones so rounded: a zone map may be wider than its rows,
    /// never narrower, and the following commits of the same minute then
    /// leave the block's zone row (a WAL page) untouched.
    fn to_minutes(self) -> Zone {
        const MINUTE: i64 = 60_000_000;
        let floor = |v: i64| v.div_euclid(MINUTE).saturating_mul(MINUTE);
        let ceil = |v: i64| floor(v).saturating_add(MINUTE - 1);
        Zone {
            min_ts: floor(self.min_ts),
            max_ts: ceil(self.max_ts),
            min_recorded_at: floor(self.min_recorded_at),
            max_recorded_at: ceil(self.max_recorded_at),
        }
    }
}

/// Widens the zone map of every block in `zones` (in the write transaction).
async fn update_zones(conn: &mut SqliteConnection, zones: &BTreeMap<i64, Zone>) -> Result<()> {
    for (block, z) in zones {
        sqlx::query(ZONE_UPSERT)
            .bind(block)
            .bind(z.min_ts)
            .bind(z.max_ts)
            .bind(z.min_recorded_at)
            .bind(z.max_recorded_at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

type SqliteQuery = sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds one usage row (13 parameters, in the column order of
/// [`insert_usage_sql`]).
fn bind_usage_row(q: SqliteQuery, seq: i64, bits: u32, r: UsageColumns) -> SqliteQuery {
    q.bind(seq)
        .bind(seq >> bits)
        .bind(r.customer_id)
        .bind(r.feature)
        .bind(r.quantity)
        .bind(r.ts)
        .bind(r.recorded_at)
        .bind(r.source)
        .bind(r.properties)
        .bind(r.billable)
        .bind(r.idempotency_key)
        .bind(r.allocation)
        .bind(r.answer)
}

/// Appends usage rows with consecutive seqs starting at `first_seq`, widening
/// `zones` with them.
async fn insert_usage(
    conn: &mut SqliteConnection,
    bits: u32,
    first_seq: i64,
    rows: Vec<UsageColumns>,
    zones: &mut BTreeMap<i64, Zone>,
) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        let block = (first_seq + i as i64) >> bits;
        zones
            .entry(block)
            .and_modify(|z| z.widen(Zone::of(r)))
            .or_insert_with(|| Zone::of(r));
    }
    let mut seq = first_seq;
    let mut rows = rows.into_iter();
    for size in usage_chunk_sizes(rows.len()) {
        let mut q = sqlx::query(AssertSqlSafe(insert_usage_sql(size)));
        for r in rows.by_ref().take(size) {
            q = bind_usage_row(q, seq, bits, r);
            seq += 1;
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// In the sqlx path (batches with outbox events or reservations), up to this
/// many usage rows are written by one INSERT of exactly their size.
const USAGE_EXACT: usize = 64;

/// Statement sizes for `n` usage rows: full chunks of 2,048, 512, 128 or 64
/// rows, then the rest (at most [`USAGE_EXACT`]) in one statement. At most
/// 67 statement shapes, all kept by the writer's statement cache.
fn usage_chunk_sizes(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = n;
    while rest > USAGE_EXACT {
        let size = [USAGE_CHUNK, 512, 128, USAGE_EXACT]
            .into_iter()
            .find(|&s| s <= rest)
            .unwrap_or(USAGE_EXACT);
        out.push(size);
        rest -= size;
    }
    if rest > 0 {
        out.push(rest);
    }
    out
}

/// The text of the INSERT of `rows` usage rows, built once per size
/// (building it on every commit cost more than the rows' own encoding).
fn insert_usage_sql(rows: usize) -> Arc<str> {
    static CACHE: LazyLock<Mutex<HashMap<usize, Arc<str>>>> = LazyLock::new(Default::default);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(rows)
        .or_insert_with(|| {
            let row = format!("({})", vec!["?"; USAGE_PARAMS].join(", "));
            format!(
                "INSERT OR FAIL INTO usage (seq, block, customer_id, feature, quantity, ts, \
                 recorded_at, source, properties, billable, idempotency_key, allocation, answer) \
                 VALUES {}",
                vec![row; rows].join(", ")
            )
            .into()
        })
        .clone()
}

/// A batch the ledger thread takes: usage rows only.
fn fast_batch(rows: &[Option<UsageColumns>]) -> bool {
    rows.iter().all(Option::is_some)
}

/// Widens one block's zone map (5 parameters: block, min/max ts, min/max
/// recorded_at).
const ZONE_UPSERT: &str = "INSERT INTO usage_blocks (block, min_ts, max_ts, min_recorded_at, max_recorded_at) \
     VALUES (?, ?, ?, ?, ?) ON CONFLICT (block) DO UPDATE SET \
     min_ts = MIN(min_ts, excluded.min_ts), max_ts = MAX(max_ts, excluded.max_ts), \
     min_recorded_at = MIN(min_recorded_at, excluded.min_recorded_at), \
     max_recorded_at = MAX(max_recorded_at, excluded.max_recorded_at)";

/// Seals every block below `?1` (the block of a batch's last row) not sealed
/// yet: copies its rows' keys into `usage_index` (migration 0009), in seq
/// order (unsorted: a block's keys all land in the index's last pages anyway,
/// and sorting them cost ~2 k instructions per row). Run in the transaction of
/// the batch, before [`SEAL_MARK`].
fn seal_sql(bits: u32) -> String {
    format!(
        "INSERT OR IGNORE INTO usage_index (block, customer_id, feature, ts, seq) \
         SELECT u.block, u.customer_id, u.feature, u.ts, u.seq \
         FROM usage_blocks b CROSS JOIN usage u \
         WHERE b.indexed = 0 AND b.block < ?1 \
         AND u.seq >= (b.block << {bits}) AND u.seq < ((b.block + 1) << {bits})"
    )
}

/// Marks the blocks [`seal_sql`] sealed.
const SEAL_MARK: &str = "UPDATE usage_blocks SET indexed = 1 WHERE indexed = 0 AND block < ?1";

impl SqliteStore {
    /// One attempt at [`Store::append_batch_written`], numbering from `last`
    /// (read in the transaction when `None`); returns the last seq, the seqs
    /// and what to wait for before the batch is durable.
    async fn append_once(
        &self,
        bits: u32,
        last: Option<i64>,
        ops: &[WriteOp],
    ) -> Result<(i64, Vec<i64>, Option<crate::Durable>)> {
        // Serialize outside the transaction: the writer's lock is held only for
        // the database work.
        let mut prepared: Vec<Option<UsageColumns>> = Vec::with_capacity(ops.len());
        for op in ops {
            prepared.push(match op {
                WriteOp::AppendUsage(r) => Some(UsageColumns::new(r)?),
                _ => None,
            });
        }
        match last {
            Some(last) if fast_batch(&prepared) => {
                let rows: Vec<UsageColumns> = prepared.into_iter().flatten().collect();
                let n = rows.len() as i64;
                let durable = Some(self.ledger().await?.append(bits, last + 1, rows).await?);
                Ok((last + n, (last + 1..=last + n).collect(), durable))
            }
            last => {
                let (last, seqs) = self.append_general(bits, last, ops, prepared).await?;
                Ok((last, seqs, None))
            }
        }
    }

    /// Any other batch (reservations, outbox events, several blocks, the
    /// last seq unknown): one sqlx transaction, statement by statement.
    async fn append_general(
        &self,
        bits: u32,
        cached: Option<i64>,
        ops: &[WriteOp],
        prepared: Vec<Option<UsageColumns>>,
    ) -> Result<(i64, Vec<i64>)> {
        let mut tx = self.begin_write().await?;
        let last = match cached {
            Some(last) => last,
            None => {
                sqlx::query_scalar(
                    "SELECT MAX(COALESCE((SELECT MAX(seq) FROM usage), 0), \
                     COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'usage'), 0))",
                )
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let mut next = last + 1;
        let mut seqs = Vec::new();
        let mut zones = BTreeMap::new();
        let mut run: Vec<UsageColumns> = Vec::new();
        let mut outbox_locked = false;
        for (op, cols) in ops.iter().zip(prepared) {
            if let Some(cols) = cols {
                run.push(cols);
                continue;
            }
            if !run.is_empty() {
                let n = run.len() as i64;
                insert_usage(&mut tx, bits, next, std::mem::take(&mut run), &mut zones).await?;
                seqs.extend(next..next + n);
                next += n;
            }
            match op {
                WriteOp::PutReservation(r) => put_reservation(&mut tx, r).await?,
                WriteOp::SetReservationState { id, state } => {
                    set_reservation_state(&mut tx, id, *state).await?
                }
                WriteOp::Outbox(e) => {
                    if !std::mem::replace(&mut outbox_locked, true) {
                        notify::sqlite::lock_outbox(&mut tx).await?;
                    }
                    notify::sqlite::insert_event(&mut tx, e).await?;
                }
                WriteOp::AppendUsage(_) => {}
            }
        }
        if !run.is_empty() {
            let n = run.len() as i64;
            insert_usage(&mut tx, bits, next, run, &mut zones).await?;
            seqs.extend(next..next + n);
            next += n;
        }
        update_zones(&mut tx, &zones).await?;
        if let Some(&last_block) = zones.keys().next_back() {
            sqlx::query(AssertSqlSafe(seal_sql(bits)))
                .bind(last_block)
                .execute(&mut *tx)
                .await?;
            sqlx::query(SEAL_MARK)
                .bind(last_block)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((next - 1, seqs))
    }
}

/// Splits `n` rows into statement sizes of at most `max` rows taken from a small
/// fixed set (`max`, then powers of four below it), so that the prepared
/// statement cache holds a handful of statement shapes whatever the batch sizes.
fn chunk_sizes(n: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = n;
    while rest > 0 {
        let mut size = max.max(1);
        while size > rest {
            size = (size / 4).max(1);
        }
        out.push(size);
        rest -= size;
    }
    out
}

async fn put_reservation(conn: &mut SqliteConnection, r: &ReservationRecord) -> Result<()> {
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
    conn: &mut SqliteConnection,
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn billing(&self) -> &dyn crate::billing::BillingStore {
        self
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn put_plan_version(&self, plan: &PlanVersionRecord) -> Result<()> {
        let mut tx = self.begin_write().await?;
        put_version(&mut tx, plan).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publish_catalog(
        &self,
        document: &CatalogDocumentRecord,
        versions: &[PlanVersionRecord],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for v in versions {
            put_version(&mut tx, v).await?;
        }
        crate::catalog::insert::<sqlx::Sqlite>(&mut tx, document).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn latest_catalog_document(
        &self,
        source: Option<CatalogSource>,
    ) -> Result<Option<CatalogDocumentRecord>> {
        crate::catalog::latest(&self.reader, source).await
    }

    async fn plan_versions(&self) -> Result<Vec<PlanVersionRecord>> {
        let rows: Vec<RawPlanVersion> = sqlx::query_as(
            "SELECT plan_key, version, definition, published_at FROM plan_versions \
             ORDER BY plan_key, version",
        )
        .fetch_all(&self.reader)
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
        .execute(&self.writer)
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
        .execute(&self.writer)
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
        .fetch_optional(&self.reader)
        .await?;
        row.map(CustomerRecord::try_from).transpose()
    }

    async fn list_customers(&self, filter: &CustomerFilter) -> Result<Vec<CustomerRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
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
            qb.push(" AND c.id > ").push_bind(after.clone());
        }
        qb.push(" ORDER BY c.id");
        if let Some(n) = codec::limit(filter.limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawCustomer> = qb.build_query_as().fetch_all(&self.reader).await?;
        codec::convert(rows)
    }

    async fn all_customers(&self) -> Result<Vec<CustomerRecord>> {
        let rows: Vec<RawCustomer> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c ORDER BY c.id"
        )))
        .fetch_all(&self.reader)
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
        .execute(&self.writer)
        .await
        .map_err(|e| codec::insert_error(e, "subscription", &s.customer_id, &s.customer_id))?;
        Ok(())
    }

    async fn get_subscription(&self, customer_id: &str) -> Result<Option<SubscriptionRecord>> {
        let row: Option<RawSubscription> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE customer_id = $1"
        )))
        .bind(customer_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(SubscriptionRecord::try_from).transpose()
    }

    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        let rows: Vec<RawSubscription> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY customer_id"
        )))
        .fetch_all(&self.reader)
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
        .execute(&self.writer)
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
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn all_overrides(&self) -> Result<Vec<OverrideRecord>> {
        let rows: Vec<RawOverride> = sqlx::query_as(
            "SELECT customer_id, feature, entitlement, updated_at FROM overrides \
             ORDER BY customer_id, feature",
        )
        .fetch_all(&self.reader)
        .await?;
        codec::convert(rows)
    }

    async fn insert_grant(&self, g: &GrantRecord, events: &[notify::OutboxEvent]) -> Result<()> {
        let mut tx = self.begin_write().await?;
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
            notify::sqlite::lock_outbox(&mut tx).await?;
            for e in events {
                notify::sqlite::insert_event(&mut tx, e).await?;
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
                .execute(&self.writer)
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
            "SELECT {GRANT_COLUMNS} FROM grants ORDER BY customer_id, feature, priority, id"
        )))
        .fetch_all(&self.reader)
        .await?;
        codec::convert(rows)
    }

    async fn append_batch(&self, ops: &[WriteOp]) -> Result<Vec<i64>> {
        let written = self.append_batch_written(ops).await?;
        if let Some(durable) = written.durable {
            durable.wait().await?;
        }
        Ok(written.seqs)
    }

    fn syncs_in_background(&self) -> bool {
        true
    }

    async fn wait_durable(&self) -> Result<()> {
        match self.ledger.get() {
            Some(ledger) => ledger.barrier().await,
            None => Ok(()),
        }
    }

    async fn append_batch_written(&self, ops: &[WriteOp]) -> Result<crate::Written> {
        if ops.is_empty() {
            return Ok(crate::Written {
                seqs: Vec::new(),
                durable: None,
            });
        }
        let bits = self.block_bits().await?;
        let cached = self.cached_last_seq();
        let mut result = self.append_once(bits, cached, ops).await;
        if result.is_err() && cached.is_some() {
            // The remembered seq may be stale (another process appended to
            // this file): number the batch from `max(seq)` once more.
            self.set_last_seq(None);
            result = self.append_once(bits, None, ops).await;
        }
        match &result {
            Ok((last, _, _)) => self.set_last_seq(Some(*last)),
            Err(_) => self.set_last_seq(None),
        }
        result.map(|(_, seqs, durable)| crate::Written { seqs, durable })
    }

    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {USAGE_COLUMNS} FROM "));
        if let Some(c) = &q.customer_id {
            // Sealed blocks through the per-block index, the open block(s) by
            // seq range (migration 0009), each block skipped when its zone map
            // excludes the time range or cursor.
            let bits = self.block_bits().await?;
            let zone = |qb: &mut QueryBuilder<Sqlite>| {
                if let Some(from) = q.from {
                    qb.push(" AND b.max_ts >= ").push_bind(micros(from));
                }
                if let Some(to) = q.to {
                    qb.push(" AND b.min_ts < ").push_bind(micros(to));
                }
                if let Some(after) = q.after_seq {
                    qb.push(" AND b.block >= ").push_bind(after.max(0) >> bits);
                }
            };
            let rows = |qb: &mut QueryBuilder<Sqlite>, t: &str| {
                qb.push(format!(" AND {t}.customer_id = "))
                    .push_bind(c.clone());
                if let Some(f) = &q.feature {
                    qb.push(format!(" AND {t}.feature = ")).push_bind(f.clone());
                }
                if let Some(from) = q.from {
                    qb.push(format!(" AND {t}.ts >= ")).push_bind(micros(from));
                }
                if let Some(to) = q.to {
                    qb.push(format!(" AND {t}.ts < ")).push_bind(micros(to));
                }
                if let Some(after) = q.after_seq {
                    qb.push(format!(" AND {t}.seq > ")).push_bind(after);
                }
            };
            qb.push(
                "(SELECT u.* FROM usage_blocks b CROSS JOIN usage_index x CROSS JOIN usage u \
                 WHERE b.indexed = 1 AND x.block = b.block AND u.seq = x.seq",
            );
            zone(&mut qb);
            rows(&mut qb, "x");
            qb.push(format!(
                " UNION ALL SELECT u.* FROM usage_blocks b CROSS JOIN usage u \
                 WHERE b.indexed = 0 AND u.seq >= (b.block << {bits}) \
                 AND u.seq < ((b.block + 1) << {bits})"
            ));
            zone(&mut qb);
            rows(&mut qb, "u");
            qb.push(")");
        } else {
            qb.push("usage u WHERE 1 = 1");
            if let Some(f) = &q.feature {
                qb.push(" AND u.feature = ").push_bind(f.clone());
            }
            if let Some(from) = q.from {
                qb.push(" AND u.ts >= ").push_bind(micros(from));
            }
            if let Some(to) = q.to {
                qb.push(" AND u.ts < ").push_bind(micros(to));
            }
            if let Some(after) = q.after_seq {
                qb.push(" AND u.seq > ").push_bind(after);
            }
        }
        qb.push(" ORDER BY seq");
        if let Some(n) = codec::limit(q.limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawUsage> = qb.build_query_as().fetch_all(&self.reader).await?;
        codec::convert(rows)
    }

    async fn usage_recorded_since(&self, since: Timestamp) -> Result<Vec<UsageRecord>> {
        // Only the blocks whose zone map reaches `since`, each read by seq range.
        let bits = self.block_bits().await?;
        let rows: Vec<RawUsage> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USAGE_COLUMNS} FROM usage_blocks b CROSS JOIN usage u \
             WHERE b.max_recorded_at >= $1 \
             AND u.seq >= (b.block << {bits}) AND u.seq < ((b.block + 1) << {bits}) \
             AND u.recorded_at >= $1 ORDER BY b.block, u.seq"
        )))
        .bind(micros(since))
        .fetch_all(&self.reader)
        .await?;
        codec::convert(rows)
    }

    async fn usage_after(&self, seq: i64, limit: u32) -> Result<Vec<UsageRecord>> {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("SELECT {USAGE_COLUMNS} FROM usage WHERE seq > "));
        qb.push_bind(seq).push(" ORDER BY seq");
        if let Some(n) = codec::limit(limit) {
            qb.push(" LIMIT ").push_bind(n);
        }
        let rows: Vec<RawUsage> = qb.build_query_as().fetch_all(&self.reader).await?;
        codec::convert(rows)
    }

    async fn max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM usage")
                .fetch_one(&self.reader)
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
        // Sealed blocks through the per-block index, the open one(s) by seq
        // range (migration 0009).
        let bits = self.block_bits().await?;
        let mut rows = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT u.allocation FROM usage_blocks b CROSS JOIN usage_index x CROSS JOIN usage u \
             WHERE b.indexed = 1 AND b.max_ts >= $3 AND b.min_ts < $4 AND x.block = b.block \
             AND x.customer_id = $1 AND x.feature = $2 AND x.ts >= $3 AND x.ts < $4 \
             AND u.seq = x.seq \
             UNION ALL SELECT u.allocation FROM usage_blocks b CROSS JOIN usage u \
             WHERE b.indexed = 0 AND b.max_ts >= $3 AND b.min_ts < $4 \
             AND u.seq >= (b.block << {bits}) AND u.seq < ((b.block + 1) << {bits}) \
             AND u.customer_id = $1 AND u.feature = $2 AND u.ts >= $3 AND u.ts < $4"
        )))
        .bind(customer_id)
        .bind(feature)
        .bind(micros(from))
        .bind(micros(to))
        .fetch(&self.reader);
        while let Some(allocation) = rows.try_next().await? {
            codec::add_allocation(&mut sums, &allocation)?;
        }
        Ok(sums)
    }

    async fn open_reservations(&self) -> Result<Vec<ReservationRecord>> {
        let rows: Vec<RawReservation> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE state = 'open' ORDER BY id"
        )))
        .fetch_all(&self.reader)
        .await?;
        codec::convert(rows)
    }

    async fn get_reservation(&self, id: &str) -> Result<Option<ReservationRecord>> {
        let row: Option<RawReservation> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(ReservationRecord::try_from).transpose()
    }

    async fn save_snapshot(&self, as_of_seq: i64, counters: &[CounterSnapshot]) -> Result<()> {
        codec::unique_counters(counters)?;
        let mut rows = Vec::with_capacity(counters.len());
        for c in counters {
            rows.push((
                c.customer_id.clone(),
                c.feature.clone(),
                micros(c.window_start),
                micros(c.window_end),
                codec::to_json("counter_snapshots.used", &c.used)?,
            ));
        }
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM counter_snapshots")
            .execute(&mut *tx)
            .await?;
        let mut rows = rows.into_iter();
        for size in chunk_sizes(rows.len(), SNAPSHOT_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO counter_snapshots (customer_id, feature, window_start, window_end, \
                 used) ",
            );
            qb.push_values(rows.by_ref().take(size), |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4);
            });
            qb.build().execute(&mut *tx).await?;
        }
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
        // One read transaction, so the rows and the seq are from the same save.
        let mut tx = self.reader.begin().await?;
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT as_of_seq FROM snapshot_meta WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        let rows: Vec<RawSnapshot> = sqlx::query_as(
            "SELECT customer_id, feature, window_start, window_end, used FROM counter_snapshots \
             ORDER BY customer_id, feature, window_start, window_end",
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
        .execute(&self.writer)
        .await
        .map_err(|e| codec::insert_error(e, "api key", &k.id, ""))?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<RawApiKey> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id"
        )))
        .fetch_all(&self.reader)
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
                .execute(&self.writer)
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
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    plan: &PlanVersionRecord,
) -> Result<()> {
    let definition = codec::to_json("plan_versions.definition", &plan.definition)?;
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT definition FROM plan_versions WHERE plan_key = $1 AND version = $2",
    )
    .bind(&plan.plan_key)
    .bind(i64::from(plan.version))
    .fetch_optional(&mut **tx)
    .await?;
    match existing {
        None => {
            sqlx::query(
                "INSERT INTO plan_versions (plan_key, version, definition, published_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&plan.plan_key)
            .bind(i64::from(plan.version))
            .bind(definition)
            .bind(micros(plan.published_at))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
        Some(stored) => codec::same_definition(plan, &stored),
    }
}

#[cfg(test)]
mod tests {
    use super::{USAGE_CHUNK, USAGE_PARAMS, chunk_sizes, insert_usage_sql, usage_chunk_sizes};

    #[test]
    fn usage_batches_up_to_64_rows_are_one_statement() {
        assert_eq!(usage_chunk_sizes(0), Vec::<usize>::new());
        assert_eq!(usage_chunk_sizes(49), vec![49]);
        assert_eq!(usage_chunk_sizes(64), vec![64]);
        assert_eq!(usage_chunk_sizes(65), vec![64, 1]);
        assert_eq!(usage_chunk_sizes(300), vec![128, 128, 44]);
        assert_eq!(
            usage_chunk_sizes(5_000),
            vec![2048, 2048, 512, 128, 128, 128, 8]
        );
        for n in [1, 7, 127, 999, 2_049, 12_345] {
            let sizes = usage_chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|&s| s <= USAGE_CHUNK));
        }
        let sql = insert_usage_sql(2);
        assert_eq!(sql.matches('?').count(), 2 * USAGE_PARAMS);
    }

    #[test]
    fn chunk_sizes_come_from_a_small_fixed_set_and_cover_every_row() {
        assert_eq!(
            chunk_sizes(5_000, 2_048),
            vec![2048, 2048, 512, 128, 128, 128, 8]
        );
        assert_eq!(chunk_sizes(3, 2_048), vec![2, 1]);
        assert!(chunk_sizes(0, 2_048).is_empty());
        for n in [1, 7, 999, 2_048, 2_049, 10_000, 12_345] {
            let sizes = chunk_sizes(n, 2_048);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(
                sizes
                    .iter()
                    .all(|s| [2048, 512, 128, 32, 8, 2, 1].contains(s))
            );
        }
    }
}
