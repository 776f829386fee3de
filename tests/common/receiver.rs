//! A callback receiver on 127.0.0.1 for the tests: it records what it got and
//! answers with the statuses it was given.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

/// A callback receiver on 127.0.0.1:0 that records requests and answers with the
/// queued statuses (then 200).
#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    answers: Arc<Mutex<Vec<StatusCode>>>,
}

impl Receiver {
    pub async fn start(answers: Vec<StatusCode>) -> (Receiver, String) {
        let receiver = Receiver {
            answers: Arc::new(Mutex::new(answers)),
            ..Receiver::default()
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/callback",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state
                        .got
                        .lock()
                        .unwrap()
                        .push((headers, String::from_utf8_lossy(&body).into_owned()));
                    let mut answers = state.answers.lock().unwrap();
                    if answers.is_empty() {
                        StatusCode::OK
                    } else {
                        answers.remove(0)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A name only the tests' resolver knows (see `common::app`): 127.0.0.1.
        let url = format!(
            "http://hooks.test:{}/callback",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn got(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().unwrap().clone()
    }
}
