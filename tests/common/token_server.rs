//! A mock OAuth2 token endpoint (RFC 6749 §5) for tests: issues `tok-1`, `tok-2`, … with
//! a chosen `expires_in`, rotates refresh tokens (`rt-1`, `rt-2`, …) like Microsoft,
//! records every request's form, and can answer with a scripted error instead. At
//! `/introspect` it answers RFC 7662 introspection for the tokens it issued, so a real
//! Dovecot can validate them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A request's form fields, e.g. `grant_type` → `client_credentials`.
pub type Form = BTreeMap<String, String>;

/// How the endpoint answers one request.
#[derive(Clone, Debug)]
pub enum TokenReply {
    /// 200 with the next `tok-N`.
    Token,
    /// This status with `{"error": code, "error_description": description}`.
    Error(u16, &'static str, &'static str),
}

pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

struct State {
    requests: Vec<Form>,
    issued: usize,
    expires_in: Option<u64>,
    queued: VecDeque<TokenReply>,
    /// The `username` introspection reports for active tokens.
    subject: String,
    revoked: Vec<String>,
    introspections: usize,
}

impl TokenServer {
    /// Listens on 127.0.0.1; tokens say `expires_in` (seconds), or leave it out.
    pub async fn start(expires_in: Option<u64>) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test token endpoint");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            issued: 0,
            expires_in,
            queued: VecDeque::new(),
            subject: "user".to_string(),
            revoked: Vec::new(),
            introspections: 0,
        }));
        let server = tokio::spawn(serve(listener, state.clone()));
        TokenServer {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// `http://127.0.0.1:PORT/introspect`.
    pub fn introspection_url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// The user the issued tokens belong to, as introspection reports it.
    pub fn set_subject(&self, username: &str) {
        self.state.lock().unwrap().subject = username.to_string();
    }

    /// From now on introspection says this token is not active.
    pub fn revoke(&self, token: &str) {
        self.state.lock().unwrap().revoked.push(token.to_string());
    }

    /// How many introspection requests were answered.
    pub fn introspections(&self) -> usize {
        self.state.lock().unwrap().introspections
    }

    /// Every token request's form, in order.
    pub fn requests(&self) -> Vec<Form> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Replies for the next requests, before the default (a token).
    pub fn push_replies(&self, replies: impl IntoIterator<Item = TokenReply>) {
        self.state.lock().unwrap().queued.extend(replies);
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let introspect = request.uri().path() == "/introspect";
    let body = request.into_body().collect().await?.to_bytes();
    let form: Form = url::form_urlencoded::parse(&body).into_owned().collect();
    let (status, json) = {
        let mut state = state.lock().unwrap();
        if introspect {
            state.introspections += 1;
            let token = form.get("token").cloned().unwrap_or_default();
            let issued = token
                .strip_prefix("tok-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= 1 && n <= state.issued);
            let active = issued && !state.revoked.contains(&token);
            let json = if active {
                serde_json::json!({"active": true, "username": state.subject})
            } else {
                serde_json::json!({"active": false})
            };
            return Ok(json_response(200, json));
        }
        let refresh_grant = form.get("grant_type").map(String::as_str) == Some("refresh_token");
        state.requests.push(form);
        match state.queued.pop_front().unwrap_or(TokenReply::Token) {
            TokenReply::Token => {
                state.issued += 1;
                let n = state.issued;
                let mut json = serde_json::json!({
                    "token_type": "Bearer",
                    "access_token": format!("tok-{n}"),
                });
                if let Some(expires_in) = state.expires_in {
                    json["expires_in"] = expires_in.into();
                }
                if refresh_grant {
                    json["refresh_token"] = format!("rt-{n}").into();
                }
                (200, json)
            }
            TokenReply::Error(status, error, description) => (
                status,
                serde_json::json!({"error": error, "error_description": description}),
            ),
        }
    };
    Ok(json_response(status, json))
}

fn json_response(status: u16, json: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}
