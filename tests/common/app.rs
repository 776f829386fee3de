//! The one way the tests start the app in process: the real router on 127.0.0.1 port
//! 0 (`signoff::http::run`), a store on a test database, a manual clock, an API token,
//! and, when asked for, a fake Slack Web API with the Slack side configured. The
//! scheduler is not running: tests run its passes themselves (`App::run_jobs`), at the
//! manual clock's time.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::TimeZone;
use signoff::clock::{Clock, ManualClock};
use signoff::egress::Resolver;
use signoff::http::slack::socket::{SocketMode, Timings};
use signoff::http::{AppState, Limits};
use signoff::jobs::Deliveries;
use signoff::outbox::Outbox;
use signoff::policy::Policy;
use signoff::scheduler::Scheduler;
use signoff::signing::Signer;
use signoff::slack::app::SlackApp;
use signoff::slack::client::SlackClient;
use signoff::store::Store;

use super::TestDb;
use super::fake_slack::FakeSlack;
use super::fake_socket::FakeSocket;

/// The secret the fake Slack's requests are signed with.
pub const SLACK_SECRET: &str = "test-signing-secret";
/// The API token's name (the requester identity of the app's token).
pub const TOKEN_NAME: &str = "agent";

/// A Slack client time limit far above the fake Slack's deliberate delays (which
/// stay under 2 s), for the tests that use them: on a busy machine, 400 ms of delay
/// against the usual 500 ms limit can time out instead.
pub const PATIENT: std::time::Duration = std::time::Duration::from_secs(5);

/// How to start the app.
pub struct Options<'a> {
    pub policy: &'a str,
    /// A fake Slack Web API, and Slack configured against it.
    pub slack: bool,
    pub limits: Limits,
    /// `SIGNOFF_PUBLIC_URL`.
    pub public_url: Option<&'a str>,
    /// Socket Mode too (with `slack`) with these timings, against a fake Socket Mode
    /// server.
    pub socket_mode: Option<Timings>,
    /// How long clicks and commands wait for a user group (`Approvers`' default
    /// otherwise).
    pub group_wait: Option<std::time::Duration>,
    /// How long the app's Slack client waits for an answer.
    pub slack_timeout: std::time::Duration,
}

impl<'a> Options<'a> {
    pub fn new(policy: &'a str) -> Self {
        Options {
            policy,
            slack: false,
            limits: Limits::default(),
            public_url: None,
            socket_mode: None,
            group_wait: None,
            // Short, so the "Slack hangs" tests take a moment, not 10 s.
            slack_timeout: std::time::Duration::from_millis(500),
        }
    }

    /// Slack, with clicks and commands waiting `wait` for a user group.
    pub fn with_group_wait(mut self, wait: std::time::Duration) -> Self {
        self.slack = true;
        self.group_wait = Some(wait);
        self
    }

    /// Slack, and Socket Mode beside the HTTP endpoints.
    pub fn with_socket_mode(self) -> Self {
        self.with_socket_timings(SOCKET_TIMINGS)
    }

    /// Socket Mode with other timings.
    pub fn with_socket_timings(mut self, timings: Timings) -> Self {
        self.slack = true;
        self.socket_mode = Some(timings);
        self
    }

    /// Slack, whose client waits `timeout` for each answer: for tests whose fake
    /// Slack answers slowly on purpose, so that slow stays far from timed out on a
    /// busy machine.
    pub fn with_slack_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.slack = true;
        self.slack_timeout = timeout;
        self
    }

    pub fn with_slack(mut self) -> Self {
        self.slack = true;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_public_url(mut self, url: &'a str) -> Self {
        self.public_url = Some(url);
        self
    }
}

/// The running app; stops when dropped.
pub struct App {
    pub address: String,
    /// The secret of the API token named [`TOKEN_NAME`].
    pub token: String,
    pub store: Store,
    pub clock: ManualClock,
    /// Signs the app's callbacks.
    pub signer: Signer,
    pub scheduler: Scheduler,
    pub http: reqwest::Client,
    /// Present when started with Slack.
    pub slack: Option<FakeSlack>,
    /// Present when started with Socket Mode.
    pub socket: Option<FakeSocket>,
    pub db: TestDb,
    policy: Policy,
    server: Running,
}

/// Another process's view of the same database: its own store and server (a replica,
/// in all but the process); stops when dropped.
pub struct Replica {
    pub address: String,
    pub store: Store,
    _server: Running,
}

pub async fn spawn(db: TestDb, options: Options<'_>) -> App {
    let slack = if options.slack {
        Some(FakeSlack::start().await)
    } else {
        None
    };
    let deliveries = Deliveries {
        slack: slack.is_some(),
    };
    let store = Store::connect_with(&db.url, deliveries)
        .await
        .expect("store opens");
    let clock = ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap(),
    );
    let token = new_token(&store, &clock, TOKEN_NAME).await;
    let policy = Policy::from_toml_str(options.policy).expect("test policy");
    let signer = Signer::generate();
    let mut state = AppState::new(store.clone(), policy.clone(), Arc::new(clock.clone()))
        .with_limits(options.limits)
        .with_public_url(options.public_url.map(str::to_owned))
        .with_signer(signer.clone());
    let mut client = None;
    if let Some(fake) = &slack {
        let slack_client = SlackClient::new("xoxb-test-token", &fake.url)
            .expect("client")
            .with_timeout(options.slack_timeout);
        let mut slack_app = SlackApp::new(slack_client.clone(), Some(SLACK_SECRET.into()));
        if let Some(wait) = options.group_wait {
            slack_app.approvers = slack_app.approvers.with_interactive_wait(wait);
        }
        state = state.with_slack(slack_app);
        client = Some(slack_client);
    }
    let socket = if let Some(timings) = options.socket_mode {
        let fake = slack.as_ref().expect("Socket Mode comes with Slack");
        let socket = FakeSocket::start().await;
        fake.set_socket_url(&socket.url);
        let mode = SocketMode::new(SOCKET_TOKEN, &fake.url)
            .expect("an app-level token")
            .with_timings(timings);
        state = state.with_socket_mode(mode);
        Some(socket)
    } else {
        None
    };
    let outbox = Outbox::new(store.clone(), client, signer.clone())
        .expect("outbox")
        .with_allow(policy.callbacks.clone())
        .with_resolver(Arc::new(TestResolver));
    let scheduler =
        Scheduler::with_outbox(store.clone(), outbox).with_policy(Arc::new(policy.clone()));
    let (address, server) = serve(state).await;
    App {
        address,
        token,
        store,
        clock,
        signer,
        scheduler,
        http: crate::common::http(),
        slack,
        socket,
        db,
        policy,
        server,
    }
}

/// The app-level token the tests' Socket Mode uses.
pub const SOCKET_TOKEN: &str = "xapp-1-A0APP-test";

/// Socket Mode's timings in the tests: backoff from 20 ms, no pings while a test runs.
pub const SOCKET_TIMINGS: Timings = Timings {
    backoff_min: std::time::Duration::from_millis(20),
    backoff_max: std::time::Duration::from_millis(400),
    hello_timeout: std::time::Duration::from_secs(2),
    ping_every: std::time::Duration::from_secs(30),
    drain: std::time::Duration::from_millis(300),
    stable: std::time::Duration::from_secs(30),
    down_after: std::time::Duration::from_secs(60),
};

/// The tests' DNS: every `*.test` host is 127.0.0.1, any other name does not resolve,
/// so no test reaches an address it did not choose.
pub struct TestResolver;

impl Resolver for TestResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>>
                + Send
                + 'a,
        >,
    > {
        let answer = if host.ends_with(".test") {
            Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
        } else {
            Err(std::io::Error::other(format!(
                "{host} does not resolve in tests"
            )))
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Serves `state` on a free port of 127.0.0.1 until the returned sender is dropped.
/// `signoff::http::run` in a task of its own: it stops when this is dropped, or with
/// [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops the server as a shutdown signal does, and waits until it has returned.
    async fn stop(self) {
        drop(self.stop);
        self.served
            .await
            .expect("the server task")
            .expect("the server");
    }
}

async fn serve(state: AppState) -> (String, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(signoff::http::run(listener, state, async move {
        let _ = stopped.await;
    }));
    (address, Running { stop, served })
}

/// A new API token named `name` in `store`: its secret.
pub async fn new_token(store: &Store, clock: &ManualClock, name: &str) -> String {
    let token = signoff::tokens::generate();
    assert!(
        store
            .token_insert(name, &signoff::tokens::hash(&token), clock.now())
            .await
            .unwrap()
    );
    token
}

impl App {
    /// Shuts the server down as SIGTERM does, and waits until `signoff::http::run` has
    /// returned.
    pub async fn stop(self) {
        self.server.stop().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (at most 10 s) until `series` of `/metrics` reads `value`: see
    /// [`super::server::until_metric`].
    pub async fn until_metric(&self, series: &str, value: f64) {
        super::server::until_metric(&self.address, series, value).await;
    }

    /// A second store and server on the same database, with the same policy and clock.
    pub async fn replica(&self) -> Replica {
        let store = Store::connect(&self.db.url)
            .await
            .expect("replica store opens");
        let state = AppState::new(
            store.clone(),
            self.policy.clone(),
            Arc::new(self.clock.clone()),
        );
        let (address, server) = serve(state).await;
        Replica {
            address,
            store,
            _server: server,
        }
    }

    /// Runs the due jobs at the current (manual) time: intake, expiries, deliveries.
    pub async fn run_jobs(&self) -> usize {
        self.scheduler
            .run_once(self.clock.now())
            .await
            .expect("scheduler pass")
    }
}
