//! One module per resource; each exposes `routes()` (an `OpenApiRouter`, so the
//! OpenAPI document is generated from the handlers themselves) and is merged here.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub mod admin;
pub mod alerts;
pub mod catalog;
pub mod customers;
pub mod discounts;
pub mod enforcement;
pub mod events;
pub mod invoices;
pub mod keys;
pub mod plans;
pub mod runs;
pub mod subscriptions;
pub mod system;
pub mod usage;
pub mod webhooks;

/// Every `/v1` route and the system routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .merge(system::routes())
        .merge(keys::routes())
        .merge(customers::routes())
        .merge(enforcement::routes())
        .merge(events::routes())
        .merge(usage::routes())
        .merge(alerts::routes())
        .merge(plans::routes())
        .merge(catalog::routes())
        .merge(admin::routes())
        .merge(subscriptions::routes())
        .merge(runs::routes())
        .merge(webhooks::routes())
        .merge(invoices::routes())
        .merge(discounts::routes())
}
