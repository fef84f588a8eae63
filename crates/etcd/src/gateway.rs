//! etcd's v3 JSON gateway: one POST per call, tried on each endpoint in turn.
//!
//! The gateway maps gRPC to JSON with protobuf's JSON rules: bytes (keys,
//! values) are base64, int64s (revisions, lease ids, TTLs) are strings, and a
//! field at its default value (0, false, empty) is left out, so every field
//! here defaults when absent. An error comes back as
//! `{"error": "...", "message": "...", "code": N}` (a unary call), as
//! `{"error": {"grpc_code": N, "message": "..."}}` (a streaming call such as
//! keepalive), with the gRPC status code N; a unary error body may be followed
//! by leaked HTTP trailer text, so only the first JSON value is read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::EtcdError;

/// gRPC's UNAVAILABLE: what an etcd member answers when it has no leader or
/// a request timed out inside the cluster. Another member may do better.
const UNAVAILABLE: i64 = 14;
/// gRPC's UNKNOWN, for an error that carries no code.
const UNKNOWN: i64 = 2;

#[derive(Debug)]
pub(crate) struct Gateway {
    endpoints: Vec<String>,
    client: reqwest::Client,
    timeout: Duration,
    /// The endpoint that answered last. Calls start there, so a dead
    /// endpoint costs its timeout once rather than on every call.
    preferred: AtomicUsize,
}

impl Gateway {
    pub(crate) fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Gateway, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let endpoints = endpoints
            .into_iter()
            .map(|endpoint| {
                let trimmed = endpoint.trim_end_matches('/');
                let scheme = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"));
                match scheme {
                    Some(rest) if !rest.is_empty() => Ok(trimmed.to_string()),
                    _ => Err(EtcdError::BadEndpoint(endpoint)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // reqwest builds its TLS settings (for https:// endpoints) from
        // rustls's process-wide provider, and panics when there is none.
        // Roost uses ring everywhere; installing fails harmlessly when a
        // provider is already in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| EtcdError::Client(e.to_string()))?;
        Ok(Gateway { endpoints, client, timeout, preferred: AtomicUsize::new(0) })
    }

    /// Posts `body` to `path` (e.g. `/v3/kv/range`), starting at the endpoint
    /// that answered last and moving to the next while an endpoint cannot be
    /// reached, does not answer within the timeout, or answers UNAVAILABLE.
    /// Any other answer, error or not, is final. The request may have taken
    /// effect on an endpoint that then failed to answer, so callers only send
    /// requests that are safe to repeat.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for step in 0..self.endpoints.len() {
            let index = (first + step) % self.endpoints.len();
            match self.post_to(&self.endpoints[index], call, path, body).await {
                Err(e @ (EtcdError::Timeout { .. } | EtcdError::Unreachable { .. })) => failures.push(e),
                Err(e @ EtcdError::Refused { code: UNAVAILABLE, .. }) => failures.push(e),
                answered => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(EtcdError::AllFailed(failures)),
        }
    }

    async fn post_to<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        call: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                EtcdError::Timeout { endpoint: endpoint.to_string(), timeout: self.timeout }
            } else {
                EtcdError::Unreachable { endpoint: endpoint.to_string(), reason: innermost(&e) }
            }
        };
        let response = self.client.post(format!("{endpoint}{path}")).json(body).send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        decode(endpoint, call, status, &bytes)
    }
}

/// The most specific reason in an error's chain ("Connection refused (os
/// error 111)" rather than "error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn decode<T: DeserializeOwned>(
    endpoint: &str,
    call: &'static str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<T, EtcdError> {
    let malformed = |reason: String| EtcdError::Malformed { endpoint: endpoint.to_string(), call, reason };
    let value = match serde_json::Deserializer::from_slice(bytes).into_iter::<Value>().next() {
        Some(Ok(value)) => value,
        Some(Err(e)) => return Err(malformed(format!("{e} (HTTP status {status})"))),
        None => return Err(malformed(format!("an empty body (HTTP status {status})"))),
    };
    if let Some((code, message)) = refusal(&value) {
        return Err(EtcdError::Refused { endpoint: endpoint.to_string(), call, code, message });
    }
    if !status.is_success() {
        return Err(malformed(format!("HTTP status {status} without an error")));
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

/// The gRPC code and message of an error answer, in either of the gateway's
/// shapes (see the module comment).
fn refusal(value: &Value) -> Option<(i64, String)> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match value.get("error")? {
        Value::String(error) if error.is_empty() => None,
        Value::String(error) => Some((
            value.get("code").and_then(Value::as_i64).unwrap_or(UNKNOWN),
            text(value.get("message")).unwrap_or_else(|| error.clone()),
        )),
        Value::Object(error) => Some((
            error.get("grpc_code").and_then(Value::as_i64).unwrap_or(UNKNOWN),
            text(error.get("message")).unwrap_or_else(|| "no message".to_string()),
        )),
        other => Some((UNKNOWN, other.to_string())),
    }
}

/// Bytes as the gateway wants them.
pub(crate) fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

/// `/v3/lease/grant`. etcd may grant a longer TTL than asked (its minimum).
#[derive(Debug, Deserialize)]
pub(crate) struct LeaseGrant {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    pub id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub ttl: i64,
}

/// `/v3/lease/keepalive`, a stream of which one message is read.
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAlive {
    pub result: KeepAliveResult,
}

/// TTL is absent (0) when the lease no longer exists.
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveResult {
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    pub ttl: i64,
}

/// `/v3/kv/txn`.
#[derive(Debug, Deserialize)]
pub(crate) struct Txn {
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// One response of a txn branch; only ranges are read.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseOp {
    pub response_range: Option<Range>,
}

/// `/v3/kv/range`.
#[derive(Debug, Deserialize)]
pub(crate) struct Range {
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default, deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    pub lease: i64,
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| D::Error::custom(format!("{text:?} is not an int64")))
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD.decode(&text).map_err(|e| D::Error::custom(format!("value is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unary_error_with_leaked_trailer_text_is_a_refusal() {
        let body = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}Grpc-Trailer-Content-Type: application/grpc"#;
        let e = decode::<Value>("http://e", "revoke", StatusCode::NOT_FOUND, body).unwrap_err();
        assert!(matches!(e, EtcdError::Refused { code: 5, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "etcd at http://e refused revoke: etcdserver: requested lease not found (gRPC code 5)"
        );
    }

    #[test]
    fn a_stream_error_is_a_refusal_with_its_grpc_code() {
        let body = br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
        let e = decode::<KeepAlive>("http://e", "keepalive", StatusCode::SERVICE_UNAVAILABLE, body).unwrap_err();
        assert!(matches!(e, EtcdError::Refused { code: UNAVAILABLE, .. }), "{e}");
    }

    #[test]
    fn absent_fields_are_their_defaults() {
        let body = br#"{"header":{"revision":"7"}}"#;
        let txn: Txn = decode("http://e", "txn", StatusCode::OK, body).unwrap();
        assert_eq!(txn.header.revision, 7);
        assert!(!txn.succeeded);
        assert!(txn.responses.is_empty());
        let body = br#"{"result":{"header":{"revision":"2"},"ID":"12345"}}"#;
        let alive: KeepAlive = decode("http://e", "keepalive", StatusCode::OK, body).unwrap();
        assert_eq!(alive.result.ttl, 0);
    }

    #[test]
    fn an_int64_must_be_a_string_of_digits() {
        let e = decode::<Txn>("http://e", "txn", StatusCode::OK, br#"{"header":{"revision":"x"}}"#).unwrap_err();
        assert!(e.to_string().contains(r#""x" is not an int64"#), "{e}");
    }

    #[test]
    fn an_endpoint_must_be_an_http_url() {
        let bad = Gateway::new(vec!["127.0.0.1:2379".into()], Duration::from_secs(1)).err().unwrap();
        assert!(matches!(bad, EtcdError::BadEndpoint(_)));
        assert!(matches!(Gateway::new(vec![], Duration::from_secs(1)).err().unwrap(), EtcdError::NoEndpoints));
        let good = Gateway::new(vec!["http://127.0.0.1:2379/".into()], Duration::from_secs(1)).unwrap();
        assert_eq!(good.endpoints, ["http://127.0.0.1:2379"]);
    }
}
