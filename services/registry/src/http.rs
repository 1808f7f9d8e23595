//! The Confluent Schema Registry REST API over the store.

use crate::compat::Level;
use crate::store::{RegistryError, Store, Submitted, VersionRef};
use crate::Registry;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

fn ok(body: Value) -> Result<Response, RegistryError> {
    Ok(reply(StatusCode::OK, body))
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        reply(status, json!({ "error_code": self.error_code, "message": self.message }))
    }
}

type Api = Result<Response, RegistryError>;
type Shared = Arc<Registry>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default)]
    default_to_global: bool,
}

fn body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> Result<T, RegistryError> {
    serde_json::from_slice(b).map_err(|e| RegistryError::unprocessable(format!("Unrecognized request body: {e}")))
}

pub fn router(reg: Shared, auth: Option<std::sync::Arc<crate::auth::Auth>>) -> Router {
    let r = Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/schemas/types", get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(version_schema))
        .route("/compatibility/subjects/{subject}/versions", post(compat_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compat_version))
        .route("/config", get(global_config).put(put_global_config))
        .route("/config/{subject}", get(subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/mode", get(|| async { reply(StatusCode::OK, json!({"mode": "READWRITE"})) }))
        .with_state(reg);
    match auth {
        Some(a) => r.layer(axum::middleware::from_fn_with_state(a, crate::auth::check)),
        None => r,
    }
}

fn id_param(s: &str) -> Result<u32, RegistryError> {
    s.parse().map_err(|_| RegistryError::schema_not_found(s))
}

async fn schema_by_id(State(r): State<Shared>, Path(id): Path<String>) -> Api {
    let id = id_param(&id)?;
    ok(json!({ "schema": r.read(|s| s.schema_by_id(id).map(str::to_owned))? }))
}

async fn raw_schema_by_id(State(r): State<Shared>, Path(id): Path<String>) -> Api {
    let id = id_param(&id)?;
    let text = r.read(|s| s.schema_by_id(id).map(str::to_owned))?;
    ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn versions_of_id(State(r): State<Shared>, Path(id): Path<String>) -> Api {
    let id = id_param(&id)?;
    r.read(|s| s.schema_by_id(id).map(|_| ()))?;
    let list: Vec<Value> = r.read(|s| s.subjects_of_id(id)).into_iter().map(|(subject, version)| json!({"subject": subject, "version": version})).collect();
    ok(Value::Array(list))
}

async fn subjects(State(r): State<Shared>, Query(f): Query<Flags>) -> Api {
    ok(json!(r.read(|s| s.subjects(f.deleted))))
}

async fn versions(State(r): State<Shared>, Path(subject): Path<String>, Query(f): Query<Flags>) -> Api {
    ok(json!(r.read(|s| s.versions(&subject, f.deleted))?))
}

async fn version(State(r): State<Shared>, Path((subject, v)): Path<(String, String)>, Query(f): Query<Flags>) -> Api {
    let v = VersionRef::parse(&v)?;
    ok(json!(r.read(|s| s.version(&subject, &v, f.deleted))?))
}

async fn version_schema(State(r): State<Shared>, Path((subject, v)): Path<(String, String)>) -> Api {
    let v = VersionRef::parse(&v)?;
    let sv = r.read(|s| s.version(&subject, &v, false))?;
    ok(serde_json::from_str(&sv.schema).unwrap_or(Value::String(sv.schema)))
}

async fn lookup(State(r): State<Shared>, Path(subject): Path<String>, Query(f): Query<Flags>, b: Bytes) -> Api {
    let sub: Submitted = body(&b)?;
    ok(json!(r.read(|s| s.lookup(&subject, &sub, f.deleted))?))
}

async fn register(State(r): State<Shared>, Path(subject): Path<String>, ro: Option<axum::Extension<crate::auth::ReadOnly>>, b: Bytes) -> Api {
    let sub: Submitted = body(&b)?;
    if let Some(axum::Extension(crate::auth::ReadOnly(user))) = ro {
        // A reader's registration is answered only when it changes nothing.
        let (id, records) = r.read(|s| s.register(&subject, &sub))?;
        if !records.is_empty() {
            return Err(RegistryError::forbidden(format!("{user} may read the registry, not register a new schema in {subject}")));
        }
        return ok(json!({ "id": id }));
    }
    let id = r.write(|s| s.register(&subject, &sub)).await?;
    ok(json!({ "id": id }))
}

async fn delete_subject(State(r): State<Shared>, Path(subject): Path<String>, Query(f): Query<Flags>) -> Api {
    ok(json!(r.write(|s| s.delete_subject(&subject, f.permanent)).await?))
}

async fn delete_version(State(r): State<Shared>, Path((subject, v)): Path<(String, String)>, Query(f): Query<Flags>) -> Api {
    let v = VersionRef::parse(&v)?;
    ok(json!(r.write(|s| s.delete_version(&subject, &v, f.permanent)).await?))
}

async fn compat(r: &Registry, subject: &str, v: Option<VersionRef>, f: &Flags, b: &Bytes) -> Api {
    let sub: Submitted = body(b)?;
    let (_, parsed) = Store::canonical(&sub)?;
    let messages = r.read(|s| s.incompatibilities(subject, &parsed, v.as_ref()))?;
    let mut out = json!({ "is_compatible": messages.is_empty() });
    if f.verbose {
        out["messages"] = json!(messages);
    }
    ok(out)
}

async fn compat_all(State(r): State<Shared>, Path(subject): Path<String>, Query(f): Query<Flags>, b: Bytes) -> Api {
    compat(&r, &subject, None, &f, &b).await
}

async fn compat_version(State(r): State<Shared>, Path((subject, v)): Path<(String, String)>, Query(f): Query<Flags>, b: Bytes) -> Api {
    let v = VersionRef::parse(&v)?;
    compat(&r, &subject, Some(v), &f, &b).await
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn level_of(b: &Bytes) -> Result<Level, RegistryError> {
    let c: ConfigBody = body(b)?;
    Level::parse(&c.compatibility).ok_or_else(|| RegistryError::invalid_level(&c.compatibility))
}

async fn global_config(State(r): State<Shared>) -> Api {
    ok(json!({ "compatibilityLevel": r.read(|s| s.global_level()) }))
}

async fn put_global_config(State(r): State<Shared>, b: Bytes) -> Api {
    let level = level_of(&b)?;
    r.write(|_| Ok(((), vec![Store::set_config(None, level)]))).await?;
    ok(json!({ "compatibility": level }))
}

async fn subject_config(State(r): State<Shared>, Path(subject): Path<String>, Query(f): Query<Flags>) -> Api {
    match r.read(|s| s.subject_level(&subject)) {
        Some(l) => ok(json!({ "compatibilityLevel": l })),
        None if f.default_to_global => ok(json!({ "compatibilityLevel": r.read(|s| s.global_level()) })),
        None => Err(RegistryError { status: 404, error_code: 40408, message: format!("Subject '{subject}' does not have subject-level compatibility configured") }),
    }
}

async fn put_subject_config(State(r): State<Shared>, Path(subject): Path<String>, b: Bytes) -> Api {
    let level = level_of(&b)?;
    r.write(|_| Ok(((), vec![Store::set_config(Some(&subject), level)]))).await?;
    ok(json!({ "compatibility": level }))
}

async fn delete_subject_config(State(r): State<Shared>, Path(subject): Path<String>) -> Api {
    let level = r.write(|s| s.delete_config(&subject).map(|(l, rec)| (l, vec![rec]))).await?;
    ok(json!({ "compatibilityLevel": level }))
}
