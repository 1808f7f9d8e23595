//! The few registry calls `topology apply` needs beyond schema_registry_converter:
//! compatibility level per subject, lookup, and a verbose compatibility test.
//! Registration itself goes through schema_registry_converter.

use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryClientError {
    #[error("registry at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("registry answered {status} to {what}: {body}")]
    Status { what: String, status: u16, body: String },
}

pub struct RegistryClient {
    http: reqwest::Client,
    url: String,
    settings: SrSettings,
    login: Option<(String, String)>,
}

const CT: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    /// A client of the registry at `cfg.registry.url`, logged in as `cfg`'s Kafka user.
    pub fn from_config(cfg: &crate::Config) -> Result<Self, RegistryClientError> {
        Self::new(&cfg.registry.url, Duration::from_millis(cfg.registry.timeout_ms), cfg.registry_login())
    }

    pub fn new(url: &str, timeout: Duration, login: Option<(String, String)>) -> Result<Self, RegistryClientError> {
        let url = url.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| RegistryClientError::Unreachable { url: url.clone(), message: e.to_string() })?;
        let settings = orelink_codec::registry_settings(&url, timeout, login.as_ref().map(|(u, p)| (u.as_str(), p.as_str())))
            .map_err(|e| RegistryClientError::Unreachable { url: url.clone(), message: e.to_string() })?;
        Ok(RegistryClient { http, url, settings, login })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), RegistryClientError> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.url)).header("Accept", CT);
        if let Some((user, password)) = &self.login {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", CT).body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| RegistryClientError::Unreachable { url: self.url.clone(), message: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 500 {
            return Err(RegistryClientError::Status { what: format!("{method} {path}"), status, body: value.to_string() });
        }
        Ok((status, value))
    }

    /// The subject's own level, if it has one.
    pub async fn subject_level(&self, subject: &str) -> Result<Option<String>, RegistryClientError> {
        let (status, v) = self.call(reqwest::Method::GET, &format!("/config/{subject}"), None).await?;
        Ok(if status == 200 { v["compatibilityLevel"].as_str().map(str::to_owned) } else { None })
    }

    pub async fn set_subject_level(&self, subject: &str, level: &str) -> Result<(), RegistryClientError> {
        let (status, v) = self.call(reqwest::Method::PUT, &format!("/config/{subject}"), Some(json!({ "compatibility": level }))).await?;
        if status == 200 { Ok(()) } else { Err(RegistryClientError::Status { what: format!("PUT /config/{subject}"), status, body: v.to_string() }) }
    }

    /// The id under which `schema` is registered in `subject`, if it is.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryClientError> {
        let (status, v) = self.call(reqwest::Method::POST, &format!("/subjects/{subject}"), Some(json!({ "schema": schema }))).await?;
        Ok(if status == 200 { v["id"].as_u64().map(|i| i as u32) } else { None })
    }

    /// Whether the subject has any version.
    pub async fn has_versions(&self, subject: &str) -> Result<bool, RegistryClientError> {
        let (status, _) = self.call(reqwest::Method::GET, &format!("/subjects/{subject}/versions"), None).await?;
        Ok(status == 200)
    }

    /// Incompatibility messages of `schema` against the subject under its level; empty = compatible.
    pub async fn incompatibilities(&self, subject: &str, schema: &str) -> Result<Vec<String>, RegistryClientError> {
        let (status, v) = self
            .call(reqwest::Method::POST, &format!("/compatibility/subjects/{subject}/versions?verbose=true"), Some(json!({ "schema": schema })))
            .await?;
        if status != 200 {
            return Err(RegistryClientError::Status { what: format!("compatibility test of {subject}"), status, body: v.to_string() });
        }
        if v["is_compatible"].as_bool() == Some(true) {
            return Ok(vec![]);
        }
        let messages: Vec<String> = v["messages"].as_array().map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        Ok(if messages.is_empty() { vec!["incompatible (the registry gave no detail)".into()] } else { messages })
    }

    /// Registers through schema_registry_converter; returns the id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryClientError> {
        post_schema(&self.settings, subject.to_owned(), SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned()))
            .await
            .map(|r| r.id)
            .map_err(|e| RegistryClientError::Status { what: format!("registering {subject}"), status: 0, body: e.to_string() })
    }
}
