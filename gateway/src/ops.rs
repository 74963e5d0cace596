//! The operations HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Owns the ops listener, served by hyper (HTTP/1) on Glommio through the `hyper::rt` adapter
//! in `http_io`. Runs on core 0 only; it reads shared atomics and never touches another core's
//! state. Invariants: `/readyz` answers 503 from the moment a drain starts, and while the store
//! takes no more writes (its log read-only after a failed write or sync, or its index failed:
//! both last until a restart), naming why.

use crate::core::Process;
use crate::http_io::Io;
use crate::metrics::Metrics;
use bytes::Bytes;
use glommio::net::TcpListener;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::embedded::StoreHealth;

/// An ops connection may live this long (there is no hyper timer on Glommio; this bounds
/// slow or idle clients instead).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the ops endpoints forever.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    process: Arc<Process>,
    health: StoreHealth,
) {
    loop {
        let Ok(stream) = listener.accept().await else {
            // Out of descriptors: the WebSocket accept loops count it; just retry later.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (metrics, process, health) = (metrics.clone(), process.clone(), health.clone());
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = route(&req, &metrics, &process.draining, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(Io::new(stream), service);
            let _ = glommio::timer::timeout(CONNECTION_TIMEOUT, async {
                let _ = conn.await;
                Ok(())
            })
            .await;
        })
        .detach();
    }
}

fn route(
    req: &Request<Incoming>,
    metrics: &Metrics,
    draining: &AtomicBool,
    health: &StoreHealth,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, Bytes::from_static(b"ok\n")),
        "/readyz" if draining.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"draining\n"),
        ),
        "/readyz" => match health.failure() {
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(format!("store failed: {reason}\n")),
            ),
            None => text(StatusCode::OK, Bytes::from_static(b"ready\n")),
        },
        _ => text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    }
}
