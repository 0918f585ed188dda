//! The SQL of the notify tables, written once for both backends.
//!
//! Both backends speak the same SQL here (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`), so [`notify_backend!`] generates the outbox insert and the
//! whole [`super::NotifyStore`] implementation for a store type given:
//! - the sqlx database and connection types;
//! - inherent methods on the store: `notify_read(&self) -> &Pool<DB>`,
//!   `notify_write(&self) -> &Pool<DB>` and
//!   `async notify_begin(&self) -> Result<Transaction<'static, DB>>`;
//! - `$lock`: SQL run once in a transaction before its first outbox insert
//!   (PostgreSQL serializes outbox writers so `seq` order is commit order;
//!   SQLite has one writer already and passes `None`).

macro_rules! notify_backend {
    ($store:ty, $db:ty, $conn:ty, $lock:expr) => {
        use $crate::notify::rows::{
            ATTEMPT_COLUMNS, DELIVERY_COLUMNS, ENDPOINT_COLUMNS, EVENT_COLUMNS, RawAlertSettings,
            RawAttempt, RawDelivery, RawEndpoint, RawEvent, SETTINGS_COLUMNS, big,
        };
        use $crate::notify::{
            AlertSettingsRecord, AttemptRecord, DeliveryRecord, EndpointRecord, NotifyStore,
            OutboxEvent,
        };

        /// Takes the outbox lock of the current transaction (once per transaction).
        pub(crate) async fn lock_outbox(conn: &mut $conn) -> $crate::Result<()> {
            let lock: Option<&str> = $lock;
            if let Some(sql) = lock {
                sqlx::query(sql).execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Inserts one event in the current transaction (after [`lock_outbox`]):
        /// `None` when its id or dedup key is already stored (dropped), else the
        /// event with its `seq` and `object_seq`.
        pub(crate) async fn insert_event(
            conn: &mut $conn,
            e: &OutboxEvent,
        ) -> $crate::Result<Option<OutboxEvent>> {
            let payload = $crate::codec::to_json("outbox_events.payload", &e.payload)?;
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO outbox_events (id, event_type, customer_id, object_key, \
                 object_seq, dedup_key, payload, created_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING seq",
            )
            .bind(&e.id)
            .bind(&e.event_type)
            .bind(&e.customer_id)
            .bind(&e.object_key)
            .bind(&e.dedup_key)
            .bind(payload)
            .bind($crate::codec::micros(e.created_at))
            .fetch_optional(&mut *conn)
            .await?;
            let Some(seq) = seq else {
                return Ok(None);
            };
            let object_seq: i64 = sqlx::query_scalar(
                "INSERT INTO outbox_objects (object_key, last_seq) VALUES ($1, 1) \
                 ON CONFLICT (object_key) DO UPDATE SET last_seq = outbox_objects.last_seq + 1 \
                 RETURNING last_seq",
            )
            .bind(&e.object_key)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query("UPDATE outbox_events SET object_seq = $1 WHERE seq = $2")
                .bind(object_seq)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
            let mut stored = e.clone();
            stored.seq = seq;
            stored.object_seq = object_seq;
            stored.created_at = $crate::codec::timestamp(
                "outbox_events.created_at",
                $crate::codec::micros(e.created_at),
            )?;
            Ok(Some(stored))
        }

        async fn upsert_attempt(conn: &mut $conn, a: &AttemptRecord) -> $crate::Result<()> {
            sqlx::query(
                "INSERT INTO notify_attempts (delivery_id, attempt, at, status, error, \
                 duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = excluded.at, \
                 status = excluded.status, error = excluded.error, \
                 duration_ms = excluded.duration_ms",
            )
            .bind(&a.delivery_id)
            .bind(i64::from(a.attempt))
            .bind($crate::codec::micros(a.at))
            .bind(a.status.map(i64::from))
            .bind(&a.error)
            .bind(big(a.duration_ms))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// The row of `table` whose `id` is `id`, converted.
        async fn by_id<R, T>(
            pool: &sqlx::Pool<$db>,
            columns: &str,
            table: &str,
            id: &str,
        ) -> $crate::Result<Option<T>>
        where
            R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            T: TryFrom<R, Error = $crate::StoreError>,
        {
            let row: Option<R> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM {table} WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(T::try_from).transpose()
        }

        fn list_limit(limit: u32) -> i64 {
            $crate::codec::limit(limit).unwrap_or(i64::MAX)
        }

        #[async_trait::async_trait]
        impl NotifyStore for $store {
            async fn insert_events(
                &self,
                events: &[OutboxEvent],
            ) -> $crate::Result<Vec<OutboxEvent>> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.notify_begin().await?;
                lock_outbox(&mut tx).await?;
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    if let Some(stored) = insert_event(&mut tx, e).await? {
                        out.push(stored);
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn events_after(&self, after: i64, limit: u32) -> $crate::Result<Vec<OutboxEvent>> {
                let rows: Vec<RawEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM outbox_events WHERE seq > $1 ORDER BY seq LIMIT $2"
                )))
                .bind(after)
                .bind(list_limit(limit))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn customer_events(
                &self,
                customer_id: &str,
                limit: u32,
            ) -> $crate::Result<Vec<OutboxEvent>> {
                let rows: Vec<RawEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM outbox_events WHERE customer_id = $1 \
                     ORDER BY seq DESC LIMIT $2"
                )))
                .bind(customer_id)
                .bind(list_limit(limit))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn get_event(&self, id: &str) -> $crate::Result<Option<OutboxEvent>> {
                by_id::<RawEvent, OutboxEvent>(self.notify_read(), EVENT_COLUMNS, "outbox_events", id).await
            }

            async fn events_between(
                &self,
                from: jiff::Timestamp,
                to: jiff::Timestamp,
            ) -> $crate::Result<Vec<OutboxEvent>> {
                let rows: Vec<RawEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM outbox_events \
                     WHERE created_at >= $1 AND created_at < $2 ORDER BY seq"
                )))
                .bind($crate::codec::micros(from))
                .bind($crate::codec::micros(to))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn put_endpoint(&self, ep: &EndpointRecord) -> $crate::Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
                     event_types = excluded.event_types, enabled = excluded.enabled, \
                     secrets = excluded.secrets, state = excluded.state, \
                     failing_since = excluded.failing_since, \
                     description = excluded.description, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at"
                )))
                .bind(&ep.id)
                .bind(&ep.url)
                .bind($crate::codec::to_json("webhook_endpoints.event_types", &ep.event_types)?)
                .bind(ep.enabled)
                .bind($crate::codec::to_json("webhook_endpoints.secrets", &ep.secrets)?)
                .bind(&ep.state)
                .bind($crate::codec::opt_micros(ep.failing_since))
                .bind(&ep.description)
                .bind($crate::codec::micros(ep.created_at))
                .bind($crate::codec::micros(ep.updated_at))
                .execute(self.notify_write())
                .await?;
                Ok(())
            }

            async fn get_endpoint(&self, id: &str) -> $crate::Result<Option<EndpointRecord>> {
                by_id::<RawEndpoint, EndpointRecord>(self.notify_read(), ENDPOINT_COLUMNS, "webhook_endpoints", id).await
            }

            async fn endpoints(&self) -> $crate::Result<Vec<EndpointRecord>> {
                let rows: Vec<RawEndpoint> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
                )))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn delete_endpoint(&self, id: &str) -> $crate::Result<bool> {
                let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                    .bind(id)
                    .execute(self.notify_write())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> $crate::Result<()> {
                if deliveries.is_empty() {
                    return Ok(());
                }
                let mut tx = self.notify_begin().await?;
                for d in deliveries {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO notify_deliveries ({DELIVERY_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT DO NOTHING"
                    )))
                    .bind(&d.id)
                    .bind(&d.event_id)
                    .bind(&d.target)
                    .bind(&d.state)
                    .bind(i64::from(d.attempts))
                    .bind($crate::codec::opt_micros(d.next_attempt_at))
                    .bind(d.last_status.map(i64::from))
                    .bind(&d.last_error)
                    .bind(d.last_duration_ms.map(big))
                    .bind($crate::codec::micros(d.created_at))
                    .bind($crate::codec::micros(d.updated_at))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_attempt(
                &self,
                d: &DeliveryRecord,
                attempt: &AttemptRecord,
            ) -> $crate::Result<()> {
                let mut tx = self.notify_begin().await?;
                let done = sqlx::query(
                    "UPDATE notify_deliveries SET state = $2, attempts = $3, \
                     next_attempt_at = $4, last_status = $5, last_error = $6, \
                     last_duration_ms = $7, updated_at = $8 WHERE id = $1",
                )
                .bind(&d.id)
                .bind(&d.state)
                .bind(i64::from(d.attempts))
                .bind($crate::codec::opt_micros(d.next_attempt_at))
                .bind(d.last_status.map(i64::from))
                .bind(&d.last_error)
                .bind(d.last_duration_ms.map(big))
                .bind($crate::codec::micros(d.updated_at))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound {
                        what: "delivery",
                        id: d.id.clone(),
                    });
                }
                upsert_attempt(&mut tx, attempt).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn due_deliveries(
                &self,
                at: jiff::Timestamp,
                limit: u32,
            ) -> $crate::Result<Vec<DeliveryRecord>> {
                let rows: Vec<RawDelivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notify_deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, id LIMIT $2"
                )))
                .bind($crate::codec::micros(at))
                .bind(list_limit(limit))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn get_delivery(&self, id: &str) -> $crate::Result<Option<DeliveryRecord>> {
                by_id::<RawDelivery, DeliveryRecord>(self.notify_read(), DELIVERY_COLUMNS, "notify_deliveries", id).await
            }

            async fn deliveries(
                &self,
                target: Option<&str>,
                event_id: Option<&str>,
                limit: u32,
            ) -> $crate::Result<Vec<DeliveryRecord>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE 1 = 1"
                ));
                if let Some(t) = target {
                    qb.push(" AND target = ").push_bind(t.to_string());
                }
                if let Some(e) = event_id {
                    qb.push(" AND event_id = ").push_bind(e.to_string());
                }
                qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(list_limit(limit));
                let rows: Vec<RawDelivery> =
                    qb.build_query_as().fetch_all(self.notify_read()).await?;
                $crate::codec::convert(rows)
            }

            async fn attempts(&self, delivery_id: &str) -> $crate::Result<Vec<AttemptRecord>> {
                let rows: Vec<RawAttempt> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM notify_attempts WHERE delivery_id = $1 \
                     ORDER BY attempt"
                )))
                .bind(delivery_id)
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn put_alert_settings(&self, s: &AlertSettingsRecord) -> $crate::Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO customer_alert_settings ({SETTINGS_COLUMNS}) VALUES ($1, $2, $3) \
                     ON CONFLICT (customer_id) DO UPDATE SET \
                     upcoming_invoice_above = excluded.upcoming_invoice_above, \
                     updated_at = excluded.updated_at"
                )))
                .bind(&s.customer_id)
                .bind(s.upcoming_invoice_above.map(|a| a.normalize().to_string()))
                .bind($crate::codec::micros(s.updated_at))
                .execute(self.notify_write())
                .await?;
                Ok(())
            }

            async fn get_alert_settings(
                &self,
                customer_id: &str,
            ) -> $crate::Result<Option<AlertSettingsRecord>> {
                let row: Option<RawAlertSettings> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SETTINGS_COLUMNS} FROM customer_alert_settings WHERE customer_id = $1"
                )))
                .bind(customer_id)
                .fetch_optional(self.notify_read())
                .await?;
                row.map(AlertSettingsRecord::try_from).transpose()
            }

            async fn upcoming_invoice_thresholds(
                &self,
            ) -> $crate::Result<Vec<AlertSettingsRecord>> {
                let rows: Vec<RawAlertSettings> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SETTINGS_COLUMNS} FROM customer_alert_settings \
                     WHERE upcoming_invoice_above IS NOT NULL ORDER BY customer_id"
                )))
                .fetch_all(self.notify_read())
                .await?;
                $crate::codec::convert(rows)
            }

            async fn notice_mark(&self, name: &str) -> $crate::Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM notice_marks WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self.notify_read())
                    .await?)
            }

            async fn set_notice_mark(&self, name: &str, value: &str) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO notice_marks (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(name)
                .bind(value)
                .execute(self.notify_write())
                .await?;
                Ok(())
            }

            async fn fanout_cursor(&self) -> $crate::Result<i64> {
                let seq: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM notify_cursor WHERE id = 1")
                        .fetch_optional(self.notify_read())
                        .await?;
                Ok(seq.unwrap_or(0))
            }

            async fn set_fanout_cursor(&self, seq: i64) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO notify_cursor (id, seq) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                )
                .bind(seq)
                .execute(self.notify_write())
                .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use notify_backend;
