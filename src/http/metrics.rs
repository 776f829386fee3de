//! Prometheus metrics (`GET /metrics`): HTTP requests by route and status, request
//! latency, approvals created, decisions by outcome, Socket Mode envelopes (by type
//! and outcome) and unreadable frames, long-polls waiting and request bodies being
//! read now, and the store's single writer: queue wait, batch and commit times,
//! operations per batch (`store::WriterStats`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::approval::{Status, Tier};
use crate::http::AppState;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CreatedLabels {
    risk_tier: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvelopeLabels {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The registry and the metric families, shared by every request.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    created: Family<CreatedLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    socket_envelopes: Family<EnvelopeLabels, Counter>,
    socket_unparsed: Family<ReasonLabels, Counter>,
    long_polls: Gauge,
    bodies: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("signoff");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0002, 2.0, 18)));
        let created = Family::<CreatedLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let socket_envelopes = Family::<EnvelopeLabels, Counter>::default();
        let socket_unparsed = Family::<ReasonLabels, Counter>::default();
        let long_polls = Gauge::default();
        let bodies = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "approvals_created",
            "Approvals created, by risk tier and initial status",
            created.clone(),
        );
        registry.register(
            "decisions",
            "Approval status changes by outcome",
            decisions.clone(),
        );
        registry.register(
            "socket_mode_envelopes",
            "Socket Mode envelopes by type and outcome (acked, redelivered, failed, left: came \
             after its socket's close, unserved and unacked, for Slack to deliver again)",
            socket_envelopes.clone(),
        );
        registry.register(
            "socket_mode_unparsed",
            "Socket Mode frames or envelopes that could not be read or served, by reason; never acked",
            socket_unparsed.clone(),
        );
        registry.register(
            "long_polls_waiting",
            "Long-polls (GET /v1/approvals/{id}?wait=, the MCP check tool's wait) waiting now \
             for a pending approval's decision",
            long_polls.clone(),
        );
        registry.register(
            "http_request_bodies_reading",
            "Requests whose body is being read now: their head was read, and on the API their \
             token checked",
            bodies.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            created,
            decisions,
            socket_envelopes,
            socket_unparsed,
            long_polls,
            bodies,
        }
    }
}

/// One in a gauge for as long as it is held (also when the request is dropped midway).
#[must_use = "counts only while held"]
pub struct Held(Gauge);

impl Held {
    fn on(gauge: &Gauge) -> Self {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// The HTTP metrics, and the store's writer's (queue wait, batch, commit).
    pub fn for_store(store: &Store) -> Self {
        let mut metrics = Self::default();
        store.writer_stats().register(&mut metrics.registry);
        metrics
    }

    /// A new approval; auto-approved and policy-denied ones are decisions too.
    pub fn created(&self, tier: Tier, status: Status) {
        self.created
            .get_or_create(&CreatedLabels {
                risk_tier: tier.as_str().into(),
                status: status.as_str().into(),
            })
            .inc();
        if status != Status::Pending {
            self.decided(status);
        }
    }

    pub fn decided(&self, status: Status) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: status.as_str().into(),
            })
            .inc();
    }

    /// A Socket Mode envelope of `kind` served (`acked`), acked again (`redelivered`),
    /// failed, or `left` for Slack to deliver again (it came after its socket's close).
    pub fn socket_envelope(&self, kind: &'static str, outcome: &'static str) {
        self.socket_envelopes
            .get_or_create(&EnvelopeLabels {
                r#type: kind,
                outcome,
            })
            .inc();
    }

    /// A Socket Mode frame that could not be read or served, and was not acked.
    pub fn socket_unparsed(&self, reason: &'static str) {
        self.socket_unparsed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A long-poll waiting for a pending approval's decision, until dropped.
    pub fn long_poll_waiting(&self) -> Held {
        Held::on(&self.long_polls)
    }

    /// A request body being read, until dropped.
    pub fn body_reading(&self) -> Held {
        Held::on(&self.bodies)
    }

    fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts decisions made anywhere (API, Slack, scheduler) from the store's change feed.
pub async fn count_decisions(store: Store, metrics: Arc<Metrics>) {
    let mut changes = store.subscribe();
    loop {
        match changes.recv().await {
            // Other replicas count their own decisions.
            Ok(change) if change.is_local() => metrics.decided(change.status),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "decision metrics lagged");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Middleware: times and counts every request by its route pattern (not its raw path,
/// which would make one series per approval id). Every label takes a fixed set of
/// values, so callers cannot grow `/metrics`: a method outside the standard ones and a
/// path no route matches both count as `other`.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    state.metrics.observe(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The method as a label: one of the standard methods, else `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "HTTP requests by route and status, request latency, approvals created, \
        decisions by outcome, in the OpenMetrics text format. No token needed.",
    responses(
        (status = 200, description = "The metrics",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String,
            example = json!("# TYPE signoff_approvals_created counter\n\
                signoff_approvals_created_total{risk_tier=\"medium\",status=\"pending\"} 12\n# EOF\n")),
    )
)]
pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
