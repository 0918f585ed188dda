//! [`super::BillingStore`] on PostgreSQL (the body is shared: [`super::billing_store_impl`]).

use futures_util::TryStreamExt;

use super::{Aggregator, RawTotalRow, billing_store_impl};
use crate::Result;
use crate::notify::postgres as outbox;
use crate::postgres::PgStore;

type BillingDb = sqlx::Postgres;

/// Streams the billable rows of `[from, to)` (one sequential scan of the
/// range; rows are summed in Rust, exactly, as everywhere).
async fn stream_usage(store: &PgStore, agg: &mut Aggregator<'_>, from: i64, to: i64) -> Result<()> {
    let mut rows = sqlx::query_as::<_, RawTotalRow>(
        "SELECT customer_id, feature, ts, properties, allocation FROM usage \
         WHERE ts >= $1 AND ts < $2 AND billable",
    )
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

billing_store_impl!(PgStore, " FOR UPDATE", stream_usage);
