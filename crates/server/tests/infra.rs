//! Server infrastructure over real HTTP: health, readiness, metrics, the
//! OpenAPI document and the reference page, error shapes, body limit, rate
//! limit, keys.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_routes() {
    for backend in backends("health") {
        let name = backend.name;
        let srv = TestServer::start(backend, CATALOG).await;
        let r = srv.get("/healthz", "").await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["status"], "ok");
        let r = srv.get("/readyz", "").await;
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.body["backend"], name);

        let r = srv.get("/v1/nothing-here", &srv.admin_key).await;
        assert_eq!(r.status, 404, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["status"], 404);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("/v1/nothing-here")
        );

        let r = srv.call(M::DELETE, "/healthz", "", None).await;
        assert_eq!(r.status, 405, "{r}");
        assert_eq!(r.content_type(), "application/problem+json");
        assert_eq!(r.body["code"], "method_not_allowed");
        assert!(
            r.header("allow").unwrap().contains("GET"),
            "{:?}",
            r.headers
        );
        srv.stop().await;
    }
}
