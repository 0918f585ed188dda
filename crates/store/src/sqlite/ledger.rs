//! The ledger's hot path on SQLite: the common group commit (usage rows only,
//! one block, the last seq known) is written by one dedicated thread over its
//! own connection, and made durable by a second thread.
//!
//! # Why a thread of its own
//!
//! The rows are inserted with prepared multi-row statements, one per chunk of
//! the sqlx path's sizes (rusqlite binds a parameter in a few instructions; a
//! 13-parameter row through sqlx's argument buffers and its connection worker
//! cost more than SQLite's own work on the row, and one statement per row
//! cost a statement start and halt per row). The thread blocks on its job queue, so a
//! commit is one hand-over from the writer task, not one per statement.
//!
//! # Why a second thread for the fsync (`Durability::Full`)
//!
//! With `synchronous = FULL` SQLite fsyncs the WAL inside `COMMIT`, holding
//! the write lock: the next group commit cannot start writing until this one's
//! fsync is done, so the commits and their fsyncs run strictly one after the
//! other. Here the ledger connection commits with `synchronous = NORMAL` (the
//! WAL frames reach the OS; SQLite itself still syncs the WAL before every
//! checkpoint and the database file after it) and the *syncer* thread calls
//! `fdatasync` on the WAL file. A batch is acknowledged only after an
//! `fdatasync` that started after its `COMMIT` returned, so every acknowledged
//! batch is on disk exactly as with `FULL`; but while one batch waits for its
//! fsync the next one is already being written, and one fsync covers every
//! batch committed before it started.
//!
//! A failed `fdatasync` leaves the WAL in an unknown state (Linux may drop
//! the dirty pages it could not write and report the error only once, and a
//! later WAL frame is only valid if every frame before it is): the syncer logs
//! the error and aborts the process, so that the restart recovers from what is
//! on disk, none of the batches behind the failure having been acknowledged
//! (PostgreSQL's answer to the same problem: it PANICs).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;

use super::{
    Durability, SEAL_MARK, ZONE_UPSERT, Zone, insert_usage_sql, seal_sql, usage_chunk_sizes,
};
use crate::codec::UsageColumns;
use crate::{Durable, Result, StoreError};

enum Job {
    Append {
        bits: u32,
        first: i64,
        rows: Vec<UsageColumns>,
        reply: oneshot::Sender<Result<Durable>>,
    },
    /// Answered once every batch committed before it is durable.
    Barrier(oneshot::Sender<Result<()>>),
    /// Close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle of the ledger thread (and of its syncer). Dropping it stops
/// both once their queues are drained.
#[derive(Debug)]
pub(crate) struct LedgerWriter {
    jobs: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Starts the threads for the database at `path` (already migrated: the
    /// connection is opened here, the statements on first use).
    pub(crate) fn start(path: &Path, durability: Durability) -> Result<LedgerWriter> {
        let conn = open(path)?;
        let syncer = match durability {
            Durability::Full => Syncer::start(Some(wal_path(path)))?,
            // The same hand-over without the fsync: the next batch is written
            // while this one's callers are answered.
            Durability::Process => Syncer::start(None)?,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("tollgate-ledger".into())
            .spawn(move || run(conn, syncer, rx))
            .map_err(|e| StoreError::Ledger(format!("starting the ledger thread: {e}")))?;
        Ok(LedgerWriter { jobs: tx })
    }

    /// Writes `rows` with seqs `first, first + 1, …` and widens the zone map
    /// of their blocks, in one transaction. Returns
    /// once the transaction is committed, with what to wait for before the
    /// batch may be acknowledged.
    pub(crate) async fn append(
        &self,
        bits: u32,
        first: i64,
        rows: Vec<UsageColumns>,
    ) -> Result<Durable> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Append {
            bits,
            first,
            rows,
            reply,
        })?;
        rx.await.map_err(|_| gone())?
    }

    /// Waits until every batch committed so far is durable.
    pub(crate) async fn barrier(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Barrier(reply))?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes the ledger connection (after the queued jobs).
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Job::Close(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| gone())
    }
}

fn gone() -> StoreError {
    StoreError::Ledger("the ledger thread has stopped".into())
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Ledger(format!(
            "the database is in journal mode {mode:?}, not WAL"
        )));
    }
    // NORMAL whatever the store's durability: with `Full` the fsync thread
    // makes each batch durable (see the module documentation).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    // Every INSERT shape (`usage_chunk_sizes`), BEGIN, COMMIT, the zone map.
    conn.set_prepared_statement_cache_capacity(80);
    Ok(conn)
}

/// What the ledger thread knows of the database from its own commits.
#[derive(Debug, Default)]
struct Known {
    /// The block of the last row committed: every block before it is sealed
    /// (`None` until the first commit, which seals whatever was left open).
    open_block: Option<i64>,
    /// The last zone this thread wrote, and its block: the block's zone row
    /// is at least this wide (other writers only widen it), so rows within it
    /// need no zone write.
    zone: Option<(i64, Zone)>,
}

fn run(mut conn: Connection, syncer: Syncer, jobs: mpsc::Receiver<Job>) {
    let mut known = Known::default();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Append {
                bits,
                first,
                rows,
                reply,
            } => {
                let written =
                    write(&mut conn, bits, first, &rows, &mut known).map(|()| syncer.wait());
                let _ = reply.send(written);
            }
            Job::Barrier(reply) => syncer.forward(reply),
            Job::Close(reply) => {
                finish(conn, syncer);
                let _ = reply.send(());
                return;
            }
        }
    }
    // Every handle is gone.
    finish(conn, syncer);
}

/// Syncs what was committed, then closes the connection and stops the
/// fsync thread.
fn finish(conn: Connection, syncer: Syncer) {
    let _ = syncer.wait().blocking_wait();
    drop(conn);
    drop(syncer);
}

/// One transaction: the rows, then the zone map of each block they fall in
/// (unless `known.zone` already covers them), then, when the rows reach a
/// block after `known.open_block`, the seal of the blocks before it (`known`
/// moves on once the transaction committed).
fn write(
    conn: &mut Connection,
    bits: u32,
    first: i64,
    rows: &[UsageColumns],
    known: &mut Known,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if !conn.is_autocommit() {
        // A transaction left open by a failure whose rollback failed too.
        conn.execute_batch("ROLLBACK")?;
    }
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let last_block = (first + rows.len() as i64 - 1) >> bits;
    let seal = known.open_block.is_none_or(|open| last_block > open);
    let result = write_rows(conn, bits, first, rows, known.zone).and_then(|zone| {
        if seal {
            seal_blocks(conn, bits, last_block)?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(zone)
    });
    match result {
        Ok(zone) => {
            known.open_block = Some(last_block);
            known.zone = zone;
            Ok(())
        }
        Err(e) => {
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK")?;
            }
            Err(e.into())
        }
    }
}

/// Seals every block before `last_block` (migration 0009).
fn seal_blocks(conn: &Connection, bits: u32, last_block: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(&seal_sql(bits))?
        .execute([last_block])?;
    conn.prepare_cached(SEAL_MARK)?.execute([last_block])?;
    Ok(())
}

/// Inserts the rows and widens the zone map of their blocks, except where
/// `known` (the last zone written, and its block) already covers them; every
/// zone written is rounded to whole minutes ([`Zone::to_minutes`]). Returns
/// the zone of the last block as the database now has it at least.
fn write_rows(
    conn: &Connection,
    bits: u32,
    first: i64,
    rows: &[UsageColumns],
    known: Option<(i64, Zone)>,
) -> rusqlite::Result<Option<(i64, Zone)>> {
    let mut zones: Vec<(i64, Zone)> = Vec::with_capacity(1);
    for (seq, r) in (first..).zip(rows) {
        let block = seq >> bits;
        match zones.last_mut() {
            Some((b, z)) if *b == block => z.widen(Zone::of(r)),
            _ => zones.push((block, Zone::of(r))),
        }
    }
    // Multi-row statements of the sqlx path's sizes: one statement per chunk
    // instead of one per row (each statement's start and halt cost about as
    // much as binding a row).
    let mut seq = first;
    let mut rest = rows;
    for size in usage_chunk_sizes(rows.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut insert = conn.prepare_cached(&insert_usage_sql(size))?;
        let mut i = 0;
        let mut bind = |v: &dyn rusqlite::ToSql| {
            i += 1;
            insert.raw_bind_parameter(i, v)
        };
        for r in chunk {
            bind(&seq)?;
            bind(&(seq >> bits))?;
            bind(&r.customer_id)?;
            bind(&r.feature)?;
            bind(&r.quantity)?;
            bind(&r.ts)?;
            bind(&r.recorded_at)?;
            bind(&r.source)?;
            bind(&r.properties)?;
            bind(&r.billable)?;
            bind(&r.idempotency_key)?;
            bind(&r.allocation)?;
            bind(&r.answer)?;
            seq += 1;
        }
        insert.raw_execute()?;
    }
    let mut last = known;
    for (block, z) in zones {
        let mut wide = match known {
            Some((b, k)) if b == block => {
                if k.covers(&z) {
                    last = Some((block, k));
                    continue;
                }
                k
            }
            _ => z.to_minutes(),
        };
        wide.widen(z.to_minutes());
        conn.prepare_cached(ZONE_UPSERT)?.execute(params![
            block,
            wide.min_ts,
            wide.max_ts,
            wide.min_recorded_at,
            wide.max_recorded_at,
        ])?;
        last = Some((block, wide));
    }
    Ok(last)
}

/// The fsync thread: syncs the WAL for every batch committed before the
/// `fdatasync` starts.
#[derive(Debug)]
struct Syncer {
    shared: Arc<(Mutex<SyncState>, Condvar)>,
}

#[derive(Debug, Default)]
struct SyncState {
    waiting: Vec<Durable>,
    closed: bool,
}

impl Syncer {
    /// `wal`: the file to `fdatasync`, or `None` to complete every waiter
    /// without one ([`Durability::Process`]).
    fn start(wal: Option<PathBuf>) -> Result<Syncer> {
        let shared: Arc<(Mutex<SyncState>, Condvar)> = Arc::default();
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("tollgate-fsync".into())
            .spawn(move || sync_loop(wal.as_deref(), &theirs))
            .map_err(|e| StoreError::Ledger(format!("starting the fsync thread: {e}")))?;
        Ok(Syncer { shared })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A promise completed by the next fsync (which starts after this call).
    fn wait(&self) -> Durable {
        let durable = Durable::pending();
        self.state().waiting.push(durable.handle());
        self.shared.1.notify_one();
        durable
    }

    /// Answers `reply` after the next fsync.
    fn forward(&self, reply: oneshot::Sender<Result<()>>) {
        self.wait().on_durable(move || {
            let _ = reply.send(Ok(()));
        });
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.state().closed = true;
        self.shared.1.notify_one();
    }
}

fn sync_loop(wal: Option<&Path>, shared: &(Mutex<SyncState>, Condvar)) {
    let mut file: Option<File> = None;
    loop {
        let waiting = {
            let mut st = shared
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while st.waiting.is_empty() && !st.closed {
                st = shared
                    .1
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if st.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut st.waiting)
        };
        if let Some(wal) = wal {
            // No WAL: the last connection to close checkpointed it into the
            // database file (syncing that file) and deleted it.
            let synced = match sync_wal(wal, &mut file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
            if let Err(e) = synced {
                tracing::error!(
                    wal = %wal.display(),
                    error = %e,
                    "fdatasync of the ledger's WAL failed: aborting, the restart recovers from what is on disk"
                );
                eprintln!(
                    "tollgate: fdatasync of {} failed ({e}); aborting so that the restart recovers from disk",
                    wal.display()
                );
                std::process::abort();
            }
        }
        for w in waiting {
            w.complete();
        }
    }
}

/// `fdatasync` of the WAL, reopening it if the file at `wal` is not the one
/// held (the WAL is deleted when its last connection closes and recreated by
/// the next one). The held file is checked against the path on every sync
/// (two `stat`s, a microsecond).
fn sync_wal(wal: &Path, file: &mut Option<File>) -> std::io::Result<()> {
    let current = std::fs::metadata(wal)?;
    let same = match file {
        Some(f) => {
            let held = f.metadata()?;
            held.ino() == current.ino() && held.dev() == current.dev()
        }
        None => false,
    };
    if !same {
        *file = Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(wal)?,
        );
    }
    match file {
        Some(f) => f.sync_data(),
        None => Ok(()),
    }
}
