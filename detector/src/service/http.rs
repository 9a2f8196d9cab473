//! The metrics endpoint: `GET /metrics` (Prometheus' text format) and a
//! small page at `/` linking to it; anything else is a 404. Served on the
//! daemon's tokio runtime.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics::Metrics;

const INDEX: &str = "<!DOCTYPE html>
<html><head><title>detector</title></head>
<body><h1>detector</h1>
<p>Live race detector for the Linux block and completion paths.</p>
<p><a href=\"/metrics\">Metrics</a></p>
</body></html>
";

async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Serves on `listener` (bound before anything was attached, so that a
/// taken port fails the start) until `stop` flips.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/", get(index))
        .fallback(not_found)
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
}
