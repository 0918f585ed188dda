//! The served catalog documents (`catalog_documents`): the same statements on
//! SQLite and PostgreSQL, generic over the backend.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::codec::{RawCatalogDocument, micros};
use crate::{CatalogDocumentRecord, CatalogSource, Result};

const INSERT: &str = "INSERT INTO catalog_documents \
     (source, name, fingerprint, document, applied_at) VALUES ($1, $2, $3, $4, $5)";
const LATEST: &str = "SELECT id, source, name, fingerprint, document, applied_at \
     FROM catalog_documents ORDER BY id DESC LIMIT 1";
const LATEST_OF: &str = "SELECT id, source, name, fingerprint, document, applied_at \
     FROM catalog_documents WHERE source = $1 ORDER BY id DESC LIMIT 1";

/// Records a document on an open transaction's connection.
pub(crate) async fn insert<DB>(conn: &mut DB::Connection, d: &CatalogDocumentRecord) -> Result<()>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let q = sqlx::query::<DB>(INSERT)
        .bind(d.source.as_str().to_string())
        .bind(d.name.clone())
        .bind(d.fingerprint.clone())
        .bind(d.document.clone())
        .bind(micros(d.applied_at));
    conn.execute(q).await?;
    Ok(())
}

/// The document recorded last (of `source`, or of any).
pub(crate) async fn latest<DB>(
    pool: &Pool<DB>,
    source: Option<CatalogSource>,
) -> Result<Option<CatalogDocumentRecord>>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    RawCatalogDocument: for<'r> FromRow<'r, DB::Row>,
{
    let q = match source {
        Some(s) => sqlx::query::<DB>(LATEST_OF).bind(s.as_str().to_string()),
        None => sqlx::query::<DB>(LATEST),
    };
    match pool.fetch_optional(q).await? {
        Some(row) => Ok(Some(CatalogDocumentRecord::try_from(
            RawCatalogDocument::from_row(&row)?,
        )?)),
        None => Ok(None),
    }
}
