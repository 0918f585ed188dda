//! [`super::BillingStore`] on SQLite (the body is shared: [`super::billing_store_impl`]).

use futures_util::TryStreamExt;

use super::{Aggregator, RawTotalRow, billing_store_impl};
use crate::Result;
use crate::notify::sqlite as outbox;
use crate::sqlite::SqliteStore;

type BillingDb = sqlx::Sqlite;

/// Streams the billable rows of `[from, to)` in ledger order, block by block:
/// only the blocks whose zone map overlaps the range are read, each by its
/// seq range (the primary key), so a run reads the period's part of the
/// ledger sequentially once instead of probing the per-customer index once
/// per customer and block.
async fn stream_usage(
    store: &SqliteStore,
    agg: &mut Aggregator<'_>,
    from: i64,
    to: i64,
) -> Result<()> {
    let bits = store.block_bits().await?;
    let sql = format!(
        "SELECT u.customer_id, u.feature, u.ts, u.properties, u.allocation \
         FROM usage_blocks b CROSS JOIN usage u \
         WHERE b.max_ts >= $1 AND b.min_ts < $2 \
         AND u.seq >= (b.block << {bits}) AND u.seq < ((b.block + 1) << {bits}) \
         AND u.ts >= $1 AND u.ts < $2 AND u.billable = 1 ORDER BY b.block, u.seq"
    );
    let mut rows = sqlx::query_as::<_, RawTotalRow>(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .fetch(store.read_pool());
    while let Some(r) = rows.try_next().await? {
        agg.add(
            &r.customer_id,
            &r.feature,
            r.ts,
            &r.properties,
            &r.allocation,
        )?;
    }
    Ok(())
}

billing_store_impl!(SqliteStore, "", stream_usage);
