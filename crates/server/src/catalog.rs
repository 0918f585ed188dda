//! Which catalog a start serves, and the documents recorded for it.
//!
//! The catalog file given to `tollgate serve` is code: when its content
//! changed since it was last served, a start serves it (and records it). When
//! it did not change, and a catalog was applied through the API after it
//! (`PUT /v1/catalog`, `tollgate plans apply`), a start serves that one
//! instead: a restart never silently undoes an apply. Editing the file again
//! makes it win again. docs/catalog.md, "Applying a catalog to a running
//! server".

use jiff::Timestamp;
use tollgate_core::catalog::{Catalog, load_catalog};
use tollgate_store::{CatalogDocumentRecord, CatalogSource, Store};

use crate::app::StartError;
use crate::auth::digest;

/// A document to record as served: its fingerprint is the hex SHA-256 of
/// `text`.
pub fn document(
    source: CatalogSource,
    name: &str,
    text: &str,
    now: Timestamp,
) -> CatalogDocumentRecord {
    CatalogDocumentRecord {
        id: 0,
        source,
        name: name.to_string(),
        fingerprint: digest(text),
        document: text.to_string(),
        applied_at: now,
    }
}

/// The catalog a start serves.
#[derive(Debug)]
pub struct ToServe {
    pub catalog: Catalog,
    /// Where it came from (for the start-up line).
    pub source: CatalogSource,
    /// The document to record once the engine is open (the file, when its
    /// content is not the last one served); `None` when nothing changed.
    pub record: Option<CatalogDocumentRecord>,
}

/// Decides between the catalog file (`name`, `text`) and the catalog applied
/// last through the API (see the module documentation).
pub async fn to_serve(
    store: &dyn Store,
    name: &str,
    text: &str,
    now: Timestamp,
) -> Result<ToServe, StartError> {
    let fingerprint = digest(text);
    let last = store
        .latest_catalog_document(None)
        .await
        .map_err(StartError::CatalogDocuments)?;
    let last_file = store
        .latest_catalog_document(Some(CatalogSource::File))
        .await
        .map_err(StartError::CatalogDocuments)?;
    if let (Some(api), Some(file)) = (&last, &last_file)
        && api.source == CatalogSource::Api
    {
        if file.fingerprint == fingerprint {
            tracing::info!(applied_at = %api.applied_at, name = %api.name,
                "serving the catalog applied through the API: the catalog file has not changed since it was last served");
            let catalog =
                load_catalog(&api.name, &api.document).map_err(|errors| StartError::Catalog {
                    path: format!(
                        "applied through the API on {} (change the catalog file to serve it instead)",
                        api.applied_at
                    ),
                    errors,
                })?;
            return Ok(ToServe {
                catalog,
                source: CatalogSource::Api,
                record: None,
            });
        }
        tracing::warn!(applied_at = %api.applied_at,
            "the catalog file changed since it was last served: it replaces the catalog applied through the API");
    }
    let catalog = load_catalog(name, text).map_err(|errors| StartError::Catalog {
        path: name.to_string(),
        errors,
    })?;
    let unchanged = last
        .as_ref()
        .is_some_and(|d| d.source == CatalogSource::File && d.fingerprint == fingerprint);
    Ok(ToServe {
        catalog,
        source: CatalogSource::File,
        record: (!unchanged).then(|| document(CatalogSource::File, name, text, now)),
    })
}

/// Records what [`to_serve`] chose to record (after the engine published its
/// versions).
pub async fn record(
    store: &dyn Store,
    chosen: Option<&CatalogDocumentRecord>,
) -> Result<(), StartError> {
    if let Some(doc) = chosen {
        store
            .publish_catalog(doc, &[])
            .await
            .map_err(StartError::CatalogDocuments)?;
    }
    Ok(())
}
