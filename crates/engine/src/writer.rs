//! The group-commit writer.
//!
//! One task owns the store's write side. Callers send their writes through an
//! unbounded channel (always while still holding the customer's lock, so the
//! channel order is the decision order); the task takes every message queued
//! (up to `max_batch` writes, or waiting up to `max_wait` for more: by default
//! it does not wait), commits them with a single [`Store::append_batch_written`]
//! (one transaction), then acknowledges every caller through its oneshot once
//! the batch is durable: at once when the store synced in the commit
//! (PostgreSQL), else from the store's fsync thread ([`on_durable`](tollgate_store::Durable::on_durable),
//! SQLite), in which case the writer has already gone on to the next batch
//! (batches are then capped at `pipeline_batch` writes so that several are in
//! flight). A caller answers its own caller only after that acknowledgement.
//!
//! The task also keeps the aggregate of COMMITTED usage per (customer, feature,
//! window), fed only after a successful commit, and periodically saves it with
//! the last committed ledger sequence as the counter snapshot: the snapshot is
//! therefore always exactly "the ledger up to `as_of_seq`".

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};
use tollgate_store::{CounterSnapshot, NewUsageRecord, Store, StoreError, UsageSource, WriteOp};

use crate::clock::Clock;
use crate::hash::FxBuild;

/// The window a usage write counted against (side information for the
/// writer's aggregate; never persisted with the write itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// A metered counter window `[start, end)`.
    Window(Timestamp, Timestamp),
    /// A gauge level (no window; `GaugeSet` replaces, `GaugeDelta` adds).
    Gauge,
    /// Not part of any snapshotted counter (rate hits, reservation state).
    Nothing,
}

/// Window bounds used for rows that are not tied to a usage window: grant
/// draws (a grant spans windows) and gauge levels.
/// (0001-01-01 and 9999-12-30: whole seconds, so every backend stores them
/// exactly.)
pub(crate) const LIFETIME_START: Timestamp = Timestamp::constant(-62_135_596_800, 0);
pub(crate) const LIFETIME_END: Timestamp = Timestamp::constant(253_402_128_000, 0);
/// The bucket that holds a gauge's level in its lifetime row.
pub(crate) const GAUGE_LEVEL: &str = "level";

pub(crate) type Ack = oneshot::Sender<Result<Vec<i64>, Arc<StoreError>>>;

/// One write inline (the common case, no extra allocation) or several.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ops {
    One(WriteOp, Counted),
    Many(Vec<(WriteOp, Counted)>),
}

impl Ops {
    fn len(&self) -> usize {
        match self {
            Ops::One(..) => 1,
            Ops::Many(v) => v.len(),
        }
    }
}

pub(crate) enum Msg {
    Write {
        ops: Ops,
        ack: Ack,
    },
    /// Replaces the aggregate of one counter (after a counter was rebuilt from
    /// the ledger, e.g. when a subscription change moved its window).
    Seed {
        customer: String,
        feature: String,
        start: Timestamp,
        end: Timestamp,
        used: BTreeMap<String, Decimal>,
    },
    /// Adds committed ledger records the aggregate has not counted (a feature
    /// added back by an apply: the records after the snapshot that the start
    /// read while the feature was not served).
    Replayed(Vec<(NewUsageRecord, Counted)>),
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Commit what is pending, then save a snapshot now.
    Snapshot(oneshot::Sender<Result<usize, Arc<StoreError>>>),
    /// Commit what is pending, save a snapshot and stop.
    Shutdown(oneshot::Sender<Result<usize, Arc<StoreError>>>),
}

/// Group-commit tuning.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Most writes per commit (default 2,000; one ingest call may exceed it and
    /// is then committed alone).
    pub max_batch: usize,
    /// Longest a write waits for companions before its batch commits. Default
    /// 0: *natural* batching, the writer commits whatever is queued as soon as
    /// the previous commit is done, so a batch is what arrived during one
    /// commit. Under load batches grow by themselves, and the callers of the
    /// next batch are served (HTTP, decisions) while this one commits; a wait
    /// would only hold every caller of the batch back (measured over HTTP at
    /// 64 connections: 2 ms gave 15.4k consumes/s, 0 gave 20.2k, bench/README.md).
    pub max_wait: Duration,
    /// Most writes per batch when the store syncs in a thread of its own
    /// ([`Store::syncs_in_background`]: SQLite; default 32). A batch is written while the one before it waits for its
    /// fsync, so splitting the queued writes into several batches keeps
    /// writing and syncing busy side by side, and a commit of fewer pages
    /// syncs faster (measured over HTTP at 64 connections: 27k consumes/s
    /// with whatever is queued in one batch, 65k with batches of at most 32;
    /// bench/README.md).
    pub pipeline_batch: usize,
    /// A batch also closes when no write arrived for this long (default
    /// 200 µs): when every caller is already waiting in the batch, waiting out
    /// `max_wait` would only add latency.
    pub idle_gap: Duration,
    /// How often the counter snapshot is saved (default 30 s; also at shutdown).
    pub snapshot_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 2_000,
            pipeline_batch: 32,
            max_wait: Duration::ZERO,
            idle_gap: Duration::from_micros(200),
            snapshot_interval: Duration::from_secs(30),
        }
    }
}

type Buckets = BTreeMap<String, Decimal>;
/// One counter's buckets per window `(start, end)`.
type Windows = HashMap<(Timestamp, Timestamp), Buckets, FxBuild>;

/// COMMITTED usage per customer → feature → (window start, window end) →
/// buckets. Nested by borrowed-key lookups so that adding a committed write
/// allocates nothing unless the counter is new. (The engine's fast hasher:
/// the writer looks up every committed write here.)
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    map: HashMap<String, HashMap<String, Windows, FxBuild>, FxBuild>,
}

impl Aggregate {
    fn buckets(
        &mut self,
        customer: &str,
        feature: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> &mut Buckets {
        if !self.map.contains_key(customer) {
            self.map.insert(customer.to_string(), HashMap::default());
        }
        let per = self
            .map
            .get_mut(customer)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if !per.contains_key(feature) {
            per.insert(feature.to_string(), HashMap::default());
        }
        per.get_mut(feature)
            .unwrap_or_else(|| unreachable!("inserted above"))
            .entry((start, end))
            .or_default()
    }

    pub(crate) fn seed(
        &mut self,
        customer: &str,
        feature: &str,
        start: Timestamp,
        end: Timestamp,
        used: Buckets,
    ) {
        *self.buckets(customer, feature, start, end) = used;
    }

    /// Adds one committed write.
    pub(crate) fn apply(&mut self, op: &WriteOp, counted: Counted) {
        if let WriteOp::AppendUsage(rec) = op {
            self.apply_record(rec, counted);
        }
    }

    /// Adds one committed ledger record.
    pub(crate) fn apply_record(&mut self, rec: &NewUsageRecord, counted: Counted) {
        match counted {
            Counted::Nothing => {}
            Counted::Gauge => {
                let b = self.buckets(&rec.customer_id, &rec.feature, LIFETIME_START, LIFETIME_END);
                let level = b.entry(GAUGE_LEVEL.to_string()).or_default();
                if rec.source == UsageSource::GaugeSet {
                    *level = rec.quantity;
                } else {
                    *level = (*level + rec.quantity).max(Decimal::ZERO);
                }
            }
            Counted::Window(start, end) => {
                let b = self.buckets(&rec.customer_id, &rec.feature, start, end);
                for (bucket, qty) in &rec.allocation {
                    add(b, bucket, *qty);
                }
                let mut grants = rec
                    .allocation
                    .iter()
                    .filter(|(k, _)| crate::ids::is_grant_id(k))
                    .peekable();
                if grants.peek().is_some() {
                    let grants: Vec<_> = grants.map(|(k, v)| (k.clone(), *v)).collect();
                    let life =
                        self.buckets(&rec.customer_id, &rec.feature, LIFETIME_START, LIFETIME_END);
                    for (k, v) in grants {
                        add(life, &k, v);
                    }
                }
            }
        }
    }

    /// Drops windows that ended at or before `now` (lifetime rows stay).
    pub(crate) fn prune(&mut self, now: Timestamp) {
        for per in self.map.values_mut() {
            for windows in per.values_mut() {
                windows.retain(|(start, end), _| {
                    (*start == LIFETIME_START && *end == LIFETIME_END) || *end > now
                });
            }
            per.retain(|_, w| !w.is_empty());
        }
        self.map.retain(|_, per| !per.is_empty());
    }

    pub(crate) fn rows(&self) -> Vec<CounterSnapshot> {
        let mut rows = Vec::new();
        for (customer, per) in &self.map {
            for (feature, windows) in per {
                for ((start, end), used) in windows {
                    rows.push(CounterSnapshot {
                        customer_id: customer.clone(),
                        feature: feature.clone(),
                        window_start: *start,
                        window_end: *end,
                        used: used.clone(),
                    });
                }
            }
        }
        rows
    }
}

fn add(b: &mut Buckets, bucket: &str, qty: Decimal) {
    if let Some(v) = b.get_mut(bucket) {
        *v += qty;
    } else {
        b.insert(bucket.to_string(), qty);
    }
}

/// Counters of the group-commit writer (for metrics and benchmarks), and its
/// signal that a commit wrote outbox events.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Notified (one stored permit) after every commit that wrote at least one
    /// outbox event: the delivery worker waits on it instead of being woken by
    /// every answered consume.
    pub outbox_written: tokio::sync::Notify,
    /// Commits (batches) done.
    pub batches: std::sync::atomic::AtomicU64,
    /// Writes committed.
    pub writes: std::sync::atomic::AtomicU64,
    /// Time spent in `append_batch`, in microseconds.
    pub commit_micros: std::sync::atomic::AtomicU64,
    /// Batches that failed.
    pub failures: std::sync::atomic::AtomicU64,
}

pub(crate) struct Writer {
    pub(crate) stats: Arc<WriterStats>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: WriterConfig,
    pub(crate) aggregate: Aggregate,
    pub(crate) last_seq: i64,
    pub(crate) rx: mpsc::UnboundedReceiver<Msg>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("backend", &self.store.backend())
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

/// Answers the callers of a batch once it is durable.
fn acknowledge(stats: &WriterStats, outbox: bool, acks: Vec<(Ack, Vec<i64>)>) {
    if outbox {
        stats.outbox_written.notify_one();
    }
    for (ack, seqs) in acks {
        let _ = ack.send(Ok(seqs));
    }
}

/// What to do after a batch is committed.
enum After {
    Nothing,
    Flush(oneshot::Sender<()>),
    Snapshot(oneshot::Sender<Result<usize, Arc<StoreError>>>),
    Shutdown(oneshot::Sender<Result<usize, Arc<StoreError>>>),
    Closed,
}

impl Writer {
    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.config.snapshot_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        let mut batch: Vec<(Ops, Ack)> = Vec::new();
        let max_batch = if self.store.syncs_in_background() {
            self.config.max_batch.min(self.config.pipeline_batch).max(1)
        } else {
            self.config.max_batch
        };
        loop {
            let first = tokio::select! {
                biased;
                msg = self.rx.recv() => msg,
                _ = ticker.tick() => {
                    if let Err(e) = self.snapshot().await {
                        tracing::warn!(error = %e, "saving the counter snapshot failed");
                    }
                    continue;
                }
            };
            let mut after = After::Nothing;
            let mut count = 0usize;
            match first {
                None => after = After::Closed,
                Some(msg) => {
                    if let Some(a) = self.take(msg, &mut batch, &mut count) {
                        after = a;
                    }
                }
            }
            if matches!(after, After::Nothing) {
                let deadline = tokio::time::Instant::now() + self.config.max_wait;
                while count < max_batch {
                    let msg = match self.rx.try_recv() {
                        Ok(m) => Some(m),
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let gap = tokio::time::Instant::now() + self.config.idle_gap;
                            match tokio::time::timeout_at(deadline.min(gap), self.rx.recv()).await {
                                Ok(m) => m,
                                Err(_elapsed) => break,
                            }
                        }
                    };
                    let Some(msg) = msg else {
                        after = After::Closed;
                        break;
                    };
                    if let Some(a) = self.take(msg, &mut batch, &mut count) {
                        after = a;
                        break;
                    }
                }
            }
            self.commit(&mut batch).await;
            if !matches!(after, After::Nothing) {
                // Flushes, snapshots and shutdown wait for what was written to
                // be durable, like the callers of the batches.
                if let Err(e) = self.store.wait_durable().await {
                    tracing::error!(error = %e, "waiting for the ledger to be durable failed");
                }
            }
            match after {
                After::Nothing => {}
                After::Flush(tx) => {
                    let _ = tx.send(());
                }
                After::Snapshot(tx) => {
                    let _ = tx.send(self.snapshot().await);
                }
                After::Shutdown(tx) => {
                    let r = self.snapshot().await;
                    let _ = tx.send(r);
                    return;
                }
                // Every engine handle was dropped without `close`: what was
                // pending is committed above, but no snapshot is saved (like a
                // crash, the next start replays the ledger after the last one).
                After::Closed => return,
            }
        }
    }

    /// Adds a message to the batch; returns what ends the batch, if it does.
    fn take(&mut self, msg: Msg, batch: &mut Vec<(Ops, Ack)>, count: &mut usize) -> Option<After> {
        match msg {
            Msg::Write { ops, ack } => {
                *count += ops.len();
                batch.push((ops, ack));
                None
            }
            Msg::Seed {
                customer,
                feature,
                start,
                end,
                used,
            } => {
                // Seeds are computed from the ledger after a flush, so nothing of
                // theirs is in the pending batch: applying now is in order.
                self.aggregate.seed(&customer, &feature, start, end, used);
                None
            }
            Msg::Replayed(records) => {
                // Committed long ago, and nothing of their features can be
                // pending (they were not served): in order.
                for (rec, counted) in &records {
                    self.aggregate.apply_record(rec, *counted);
                }
                None
            }
            Msg::Flush(tx) => Some(After::Flush(tx)),
            Msg::Snapshot(tx) => Some(After::Snapshot(tx)),
            Msg::Shutdown(tx) => Some(After::Shutdown(tx)),
        }
    }

    async fn commit(&mut self, batch: &mut Vec<(Ops, Ack)>) {
        if batch.is_empty() {
            return;
        }
        let taken = std::mem::take(batch);
        let mut ops: Vec<WriteOp> = Vec::with_capacity(taken.iter().map(|(o, _)| o.len()).sum());
        let mut counted: Vec<Counted> = Vec::with_capacity(ops.capacity());
        let mut acks: Vec<(Ack, usize, usize)> = Vec::with_capacity(taken.len());
        let mut appends = 0usize;
        for (o, ack) in taken {
            let first_append = appends;
            match o {
                Ops::One(op, c) => {
                    appends += usize::from(matches!(op, WriteOp::AppendUsage(_)));
                    ops.push(op);
                    counted.push(c);
                }
                Ops::Many(v) => {
                    for (op, c) in v {
                        appends += usize::from(matches!(op, WriteOp::AppendUsage(_)));
                        ops.push(op);
                        counted.push(c);
                    }
                }
            }
            acks.push((ack, first_append, appends));
        }
        let started = std::time::Instant::now();
        let result = self.store.append_batch_written(&ops).await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.stats.batches.fetch_add(1, Relaxed);
            self.stats.commit_micros.fetch_add(took, Relaxed);
            if result.is_ok() {
                self.stats.writes.fetch_add(ops.len() as u64, Relaxed);
            } else {
                self.stats.failures.fetch_add(1, Relaxed);
            }
        }
        match result {
            Ok(written) => {
                let seqs = written.seqs;
                for (op, c) in ops.iter().zip(counted) {
                    self.aggregate.apply(op, c);
                }
                if let Some(max) = seqs.iter().copied().max() {
                    self.last_seq = self.last_seq.max(max);
                }
                let outbox = ops.iter().any(|op| matches!(op, WriteOp::Outbox(_)));
                let acks: Vec<(Ack, Vec<i64>)> = acks
                    .into_iter()
                    .map(|(ack, from, to)| {
                        (
                            ack,
                            seqs.get(from..to).map(<[i64]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect();
                match written.durable {
                    None => acknowledge(&self.stats, outbox, acks),
                    // The store syncs in a thread of its own: the next batch is
                    // written while this one waits for its fsync, and its
                    // callers are answered only once it is durable.
                    Some(durable) => {
                        let stats = self.stats.clone();
                        durable.on_durable(move || acknowledge(&stats, outbox, acks));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = ops.len(), "group commit failed");
                let e = Arc::new(e);
                for (ack, _, _) in acks {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }

    async fn snapshot(&mut self) -> Result<usize, Arc<StoreError>> {
        self.aggregate.prune(self.clock.now());
        let rows = self.aggregate.rows();
        let n = rows.len();
        self.store
            .save_snapshot(self.last_seq, &rows)
            .await
            .map_err(Arc::new)?;
        tracing::debug!(
            counters = n,
            as_of_seq = self.last_seq,
            "counter snapshot saved"
        );
        Ok(n)
    }
}
