//! The service the listener runs: `POST /v1/check`, the request path of every
//! host application, goes straight to its handler; every other request goes
//! through the router.
//!
//! Both ways run the same edge ([`crate::app::edge_with`]: problem+json
//! errors, metrics, the body limit) and the same handler with the same
//! extractors; the fast way only skips the router's dispatch and its layer
//! stack (route matching, a clone of the route's boxed service and of the
//! middleware's, the tracing layer's span), which cost a consume about as much
//! as the decision itself (bench/README.md, session 5). The route stays in the
//! router too, for the API document and for the methods it refuses.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use futures_util::future::Either;
use tower::{Layer, Service, ServiceExt};

use crate::app::edge_with;
use crate::routes::enforcement::check;
use crate::state::AppState;

/// The route served without the router.
pub const FAST_ROUTE: &str = "/v1/check";

type Boxed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// `POST /v1/check` to its handler, the rest to `router` (see the module
/// documentation).
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    fast: Arc<Fast>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("fast_route", &FAST_ROUTE)
            .field("body_limit", &self.fast.body_limit)
            .finish_non_exhaustive()
    }
}

/// What the fast way needs besides the request.
struct Fast {
    state: AppState,
    body_limit: usize,
}

impl Dispatch {
    /// `router` is the application's whole router (with its layers), built
    /// for the same `state` and `body_limit`.
    pub fn new(router: Router, state: AppState, body_limit: usize) -> Dispatch {
        Dispatch {
            router,
            fast: Arc::new(Fast { state, body_limit }),
        }
    }
}

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Router as Service<Request>>::Future, Boxed>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() != Method::POST || req.uri().path() != FAST_ROUTE {
            return Either::Left(self.router.call(req));
        }
        let fast = self.fast.clone();
        Either::Right(Box::pin(async move {
            let limit = fast.body_limit;
            let response = edge_with(limit, &fast.state.notifier, Some(FAST_ROUTE), req, |req| {
                // The extension the router's `DefaultBodyLimit` layer sets for
                // the body extractors.
                let handler = tower::service_fn(|req: Request| {
                    let answer = check.call(req, fast.state.clone());
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let service = DefaultBodyLimit::max(limit).layer(handler);
                async move {
                    match service.oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            })
            .await;
            if response.status().is_server_error() {
                // What the router's tracing layer logs for a failed request.
                tracing::error!(
                    method = "POST",
                    route = FAST_ROUTE,
                    status = response.status().as_u16(),
                    "response failed"
                );
            }
            Ok(response)
        }))
    }
}

/// Every connection gets a clone of the dispatcher (as a router would be
/// cloned for it).
impl<'a, L: Listener> Service<IncomingStream<'a, L>> for Dispatch {
    type Response = Dispatch;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Dispatch, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _stream: IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}
