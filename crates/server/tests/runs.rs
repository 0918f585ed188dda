//! The invoice run and the upcoming invoice over real HTTP, on SQLite and
//! PostgreSQL: `POST /v1/admin/invoices/run` closes what ended (admin only,
//! idempotent), `GET /v1/customers/{id}/upcoming-invoice` (a customer key
//! reads its own only).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_run_closes_ended_periods_once_and_the_upcoming_invoice_is_readable() {
    for backend in backends("runs") {
        let srv = TestServer::start(backend, CATALOG).await;
        srv.customer("acme", Some("pro")).await;
        srv.customer("zeta", Some("pro")).await;
        let admin = srv.admin_key.clone();

        // Nothing has ended yet.
        let r = srv.post("/v1/admin/invoices/run", &admin, json!({})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["report"]["periods"], 0);

        // A month later both first periods have ended: two invoices, issued.
        srv.clock.set(ts("2025-02-20T00:00:00Z"));
        let r = srv
            .post(
                "/v1/admin/invoices/run",
                &admin,
                json!({"period": "2025-02"}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["report"]["created"], 2, "{:?}", r.body);
        assert_eq!(r.body["report"]["issued"], 2, "{:?}", r.body);
        // Again: nothing new.
        let r = srv
            .post(
                "/v1/admin/invoices/run",
                &admin,
                json!({"period": "2025-02"}),
            )
            .await;
        assert_eq!(r.body["report"]["created"], 0);
        assert_eq!(r.body["report"]["already_invoiced"], 2);

        // Bad input names the field; other scopes may not run it.
        let r = srv
            .post(
                "/v1/admin/invoices/run",
                &admin,
                json!({"period": "2025-13"}),
            )
            .await;
        assert_eq!(r.status, 422, "{:?}", r.body);
        assert!(
            r.error_fields().contains(&"period".to_string()),
            "{:?}",
            r.body
        );
        let server = srv.server_key().await;
        let r = srv.post("/v1/admin/invoices/run", &server, json!({})).await;
        assert_eq!(r.status, 403, "{:?}", r.body);

        // The upcoming invoice: the customer's own, never another's.
        let own = srv.customer_key("acme").await;
        let r = srv.get("/v1/customers/acme/upcoming-invoice", &own).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["invoice"]["customer_id"], "acme");
        assert_eq!(r.body["invoice"]["status"], "draft");
        let r = srv.get("/v1/customers/zeta/upcoming-invoice", &own).await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        let r = srv
            .get("/v1/customers/nobody/upcoming-invoice", &admin)
            .await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        srv.stop().await;
    }
}
