//! The HTTP edge: the shared [`AppState`], the one [`app`] `Router` (each area owns
//! its routes: [`api`] for MCP servers, [`mcp`] for MCP clients, [`slack`] for
//! Slack's signed callbacks, [`health`], [`metrics`], [`openapi`] (the document of
//! the HTTP API)), and [`run`] ([`serve`] adds
//! the scheduler), which serve it on a given listener within [`Limits`] until a given
//! shutdown future resolves, and keep the Slack Socket Mode connection up when one is
//! configured.
//! `signoff serve` and the tests start the app through the same functions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::outbox::Outbox;
use crate::policy::Policy;
use crate::scheduler::Scheduler;
use crate::signing::Signer;
use crate::slack::app::SlackApp;
use crate::store::Store;
use metrics::Metrics;

pub mod api;
pub mod health;
pub mod mcp;
pub mod metrics;
pub mod openapi;
mod serve;
pub mod slack;
mod stalled;

pub use serve::{Limits, run};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How often the scheduler looks for due timers.
pub const SCHEDULER_TICK: Duration = Duration::from_millis(500);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// How much of a caller's `x-request-id` the log lines of its request carry.
const MAX_REQUEST_ID_LOGGED: usize = 64;

/// Everything a handler needs, behind one `Arc`: axum clones the state for every
/// request (each handler's `State`, the metrics middleware), and a clone is then one
/// reference count instead of one per field and a copy of the public URL.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; its fields are read through the state.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Verified API tokens, briefly (see `tokens::Cache`).
    pub tokens: Arc<crate::tokens::Cache>,
    /// The event streams open per token (see `Limits::streams_per_token`).
    pub streams: Arc<api::PerToken>,
    /// The long-polls waiting per token (see `Limits::waits_per_token`).
    pub waits: Arc<api::PerToken>,
    /// Present when a Slack bot token is configured.
    pub slack: Option<SlackApp>,
    /// Present when Socket Mode is configured (`SLACK_APP_TOKEN`): [`run`] keeps its
    /// socket up.
    pub socket_mode: Option<slack::socket::SocketMode>,
    /// The socket's state, for `/health/approvals`.
    pub socket_status: slack::socket::Status,
    /// Signs decision callbacks.
    pub signer: Signer,
    /// What each connection and request may take.
    pub limits: Limits,
    /// Where people and clients reach this server (`SIGNOFF_PUBLIC_URL`); `/mcp`
    /// accepts its host besides localhost.
    pub public_url: Option<String>,
    /// Turns true when the server is shutting down (long-polls answer at once).
    pub shutdown: watch::Receiver<bool>,
    shutdown_trigger: Arc<watch::Sender<bool>>,
}

impl AppState {
    pub fn new(store: Store, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        let (trigger, shutdown) = watch::channel(false);
        let metrics = Arc::new(Metrics::for_store(&store));
        Self(Arc::new(Shared {
            store,
            policy: Arc::new(policy),
            clock,
            metrics,
            tokens: Arc::default(),
            streams: Arc::default(),
            waits: Arc::default(),
            slack: None,
            socket_mode: None,
            socket_status: slack::socket::Status::default(),
            signer: Signer::generate(),
            limits: Limits::default(),
            public_url: None,
            shutdown,
            shutdown_trigger: Arc::new(trigger),
        }))
    }

    /// The fields, to set while the state is built (before it is shared, so this
    /// copies nothing).
    fn setup(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    /// Adds the Slack side (client, approvers, signing secret).
    pub fn with_slack(mut self, slack: SlackApp) -> Self {
        self.setup().slack = Some(slack);
        self
    }

    /// Receives Slack's interactions and commands over Socket Mode too.
    pub fn with_socket_mode(mut self, mode: slack::socket::SocketMode) -> Self {
        let shared = self.setup();
        shared.socket_status = slack::socket::Status::reconnecting(mode.timings.down_after);
        shared.socket_mode = Some(mode);
        self
    }

    /// Signs callbacks with `signer` (`signoff serve`'s key file); without it, a key
    /// made for this process alone.
    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.setup().signer = signer;
        self
    }

    /// Other connection limits (tests shorten them).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.setup().limits = limits;
        self
    }

    /// The public address (`SIGNOFF_PUBLIC_URL`).
    pub fn with_public_url(mut self, url: Option<String>) -> Self {
        self.setup().public_url = url;
        self
    }

    /// Tells long-polls and background loops to finish.
    pub fn begin_shutdown(&self) {
        self.shutdown_trigger.send_replace(true);
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health::live))
        .route("/health/approvals", get(health::approvals))
        .route("/metrics", get(metrics::handler))
        .route("/openapi.json", get(openapi::document))
        .merge(api::router())
        .merge(mcp::router(&state))
        .merge(slack::router())
        .fallback(no_endpoint)
        .method_not_allowed_fallback(method_not_allowed);
    routes
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyDeadlineLayer::new(state.limits.body))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // A caller's id, cut to a length that correlates without filling
                // every line of the request (visible ASCII: any cut is a char's edge).
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|value| value.to_str().ok())
                    .map_or("-", |id| id.get(..MAX_REQUEST_ID_LOGGED).unwrap_or(id));
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// A path no route has: the API's JSON error, like every other refusal.
async fn no_endpoint(method: axum::http::Method, uri: axum::http::Uri) -> api::ApiError {
    api::ApiError::NoEndpoint(format!("{method} {}", uri.path()))
}

/// A route's path with another method: the API's JSON error.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> api::ApiError {
    api::ApiError::MethodNotAllowed(format!("{method} {}", uri.path()))
}

/// How `serve` delivers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// How long a claimed delivery is this server's before another may run it.
    pub lease: Duration,
    /// At most one Slack post per channel per this long (zero: unpaced).
    pub post_interval: Duration,
}

/// `signoff serve`: the HTTP server plus the background scheduler and its deliveries,
/// until `shutdown` resolves or the store breaks ([`Store::broken`]): then it stops as
/// on a shutdown and answers the store's error, so that the process exits non-zero and
/// its supervisor restarts it.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    delivery: Delivery,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slack = state.slack.as_ref().map(|slack| slack.client.clone());
    let scheduler = match Outbox::new(state.store.clone(), slack, state.signer.clone()) {
        Ok(outbox) => {
            let outbox = outbox
                .with_allow(state.policy.callbacks.clone())
                .with_post_interval(delivery.post_interval);
            Scheduler::with_outbox(state.store.clone(), outbox).with_policy(state.policy.clone())
        }
        Err(error) => {
            tracing::error!(%error, "deliveries disabled");
            Scheduler::new(state.store.clone()).with_policy(state.policy.clone())
        }
    };
    let scheduler = scheduler.with_lease(delivery.lease);
    let scheduler =
        tokio::spawn(scheduler.run(state.clock.clone(), SCHEDULER_TICK, state.shutdown.clone()));
    let store = state.store.clone();
    let stop = {
        let store = store.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                failure = store.broken() => tracing::error!(
                    %failure,
                    "the store can serve nothing more: shutting down, so that a restart reads \
                     the database back"
                ),
            }
        }
    };
    let served = run(listener, state, stop).await;
    let _ = scheduler.await;
    served?;
    match store.failure() {
        Some(failure) => Err(std::io::Error::other(failure)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::SyncLog;

    /// A disk whose syncs succeed until the test breaks it.
    struct Breakable(Arc<AtomicBool>);

    impl SyncLog for Breakable {
        fn sync(&mut self) -> std::io::Result<()> {
            match self.0.load(Ordering::SeqCst) {
                true => Err(std::io::Error::other("EIO on the test's disk")),
                false => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn serve_stops_with_the_stores_error_once_a_failed_sync_leaves_it_serving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let broken = Arc::new(AtomicBool::new(false));
        let store = Store::connect_sqlite_synced_by(&url, Box::new(Breakable(broken.clone())))
            .await
            .unwrap();
        let state = AppState::new(
            store.clone(),
            Policy::builtin(),
            Arc::new(crate::clock::SystemClock),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let delivery = Delivery {
            lease: Duration::from_secs(60),
            post_interval: Duration::ZERO,
        };
        let served = tokio::spawn(serve(listener, state, delivery, std::future::pending()));

        assert!(
            store
                .token_insert("before", "hash-0", chrono::Utc::now())
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !served.is_finished(),
            "a store that syncs keeps being served"
        );
        assert!(store.failure().is_none());

        broken.store(true, Ordering::SeqCst);
        let write = store
            .token_insert("after", "hash-1", chrono::Utc::now())
            .await;
        assert!(
            write
                .unwrap_err()
                .to_string()
                .contains("EIO on the test's disk")
        );
        let error = tokio::time::timeout(Duration::from_secs(20), served)
            .await
            .expect("serve stops once the store is broken")
            .unwrap()
            .expect_err("and answers an error, so that the process exits non-zero")
            .to_string();
        assert!(error.contains("could not be synced"), "{error}");
        assert!(error.contains("EIO on the test's disk"), "{error}");
        assert!(
            tokio::net::TcpStream::connect(address).await.is_err(),
            "no longer listening"
        );
    }
}
