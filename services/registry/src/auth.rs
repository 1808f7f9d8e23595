//! Who may call the registry: HTTP basic auth (what Confluent clients send
//! with `basic.auth.user.info`), checked against Kafka itself. A user and
//! password are good when a SASL login to the brokers with them succeeds, so
//! every principal the hub has (roles, partners, enterprises, the admin) reads
//! with the credential it already holds and no second user list can drift.
//! Writes (register, delete, PUT config) need a user in `writers`; any login
//! may "register" a schema the subject already has, which changes nothing
//! and is how serializers look up their schema's id. Verdicts
//! are cached for a minute by a digest of the credential, so the brokers see
//! one login per credential per minute, not one per request. `GET /` stays
//! open: it says only that a registry answers (health checks).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a verdict on a credential is kept.
const CACHED: Duration = Duration::from_secs(60);

pub struct Auth {
    /// Brokers, security protocol and SASL mechanism: a login adds the user's name and password.
    base: ClientConfig,
    writers: Vec<String>,
    verdicts: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
}

/// What a request does to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Read,
    Write,
}

/// Registering (`POST /subjects/{s}/versions`), deleting and PUT are writes;
/// a lookup (`POST /subjects/{s}`) and a compatibility test are reads.
pub fn access(method: &Method, path: &str) -> Access {
    let register = method == Method::POST && path.starts_with("/subjects/") && path.trim_end_matches('/').ends_with("/versions");
    if register || method == Method::DELETE || method == Method::PUT {
        Access::Write
    } else if path == "/" && method == Method::GET {
        Access::Open
    } else {
        Access::Read
    }
}

/// The user and password of a `Basic` authorization header.
pub fn basic(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Auth {
    /// `base` connects to the brokers without a user (bootstrap.servers,
    /// security.protocol, sasl.mechanism); `writers` may change the registry.
    pub fn new(base: ClientConfig, writers: Vec<String>) -> Auth {
        Auth { base, writers, verdicts: Mutex::new(HashMap::new()) }
    }

    /// Whether the brokers take this login.
    async fn verify(&self, user: &str, password: &str) -> bool {
        let key: [u8; 32] = Sha256::new().chain_update(user).chain_update([0]).chain_update(password).finalize().into();
        if let Some((ok, at)) = self.verdicts.lock().expect("not poisoned").get(&key)
            && at.elapsed() < CACHED
        {
            return *ok;
        }
        let mut c = self.base.clone();
        c.set("sasl.username", user).set("sasl.password", password).set("client.id", "orelink-registry-auth");
        let ok = tokio::task::spawn_blocking(move || {
            let consumer: Result<BaseConsumer, _> = c.create();
            consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(5)).is_ok())
        })
        .await
        .unwrap_or(false);
        self.verdicts.lock().expect("not poisoned").insert(key, (ok, Instant::now()));
        ok
    }
}

fn refuse(status: StatusCode, code: u32, message: String) -> Response {
    let mut r = (status, axum::Json(json!({"error_code": code, "message": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"orelink-registry\""));
    }
    r
}

/// Set on a registration by a login that may not write: the handler answers
/// it only if the schema is already registered (nothing changes).
#[derive(Debug, Clone)]
pub struct ReadOnly(pub String);

/// The middleware: 401 without a good login, 403 for a write by a reader.
pub async fn check(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let wants = access(req.method(), req.uri().path());
    if wants == Access::Open {
        return next.run(req).await;
    }
    let Some((user, password)) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(basic) else {
        return refuse(StatusCode::UNAUTHORIZED, 40101, "the registry needs a login (HTTP basic auth with a Kafka user of the hub)".into());
    };
    if !auth.verify(&user, &password).await {
        return refuse(StatusCode::UNAUTHORIZED, 40101, "unknown user or wrong password".into());
    }
    if wants == Access::Write && !auth.writers.contains(&user) {
        if req.method() == Method::POST {
            req.extensions_mut().insert(ReadOnly(user));
            return next.run(req).await;
        }
        return refuse(StatusCode::FORBIDDEN, 40301, format!("{user} may read the registry, not change it"));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_registering_deleting_and_configuring() {
        assert_eq!(access(&Method::POST, "/subjects/t-value/versions"), Access::Write);
        assert_eq!(access(&Method::DELETE, "/subjects/t-value"), Access::Write);
        assert_eq!(access(&Method::PUT, "/config"), Access::Write);
        assert_eq!(access(&Method::POST, "/subjects/t-value"), Access::Read, "a lookup");
        assert_eq!(access(&Method::POST, "/compatibility/subjects/t-value/versions/latest"), Access::Read);
        assert_eq!(access(&Method::GET, "/schemas/ids/1"), Access::Read);
        assert_eq!(access(&Method::GET, "/"), Access::Open);
    }

    #[test]
    fn basic_credentials_are_read_and_junk_is_not() {
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:p:w"));
        assert_eq!(basic(&v), Some(("admin".into(), "p:w".into())), "the password may hold a colon");
        assert_eq!(basic("Bearer x"), None);
        assert_eq!(basic("Basic !!!"), None);
    }
}
