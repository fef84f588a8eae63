//! What can go wrong talking to etcd, each said in one line that names the
//! endpoint and the call.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("etcd endpoint {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    #[error("etcd key must not be empty")]
    EmptyKey,
    #[error("could not build the HTTP client for etcd: {0}")]
    Client(String),
    #[error("etcd at {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("could not reach etcd at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// etcd answered with an error. `code` is the gRPC status code.
    #[error("etcd at {endpoint} refused {call}: {message} (gRPC code {code})")]
    Refused { endpoint: String, call: &'static str, code: i64, message: String },
    #[error("etcd at {endpoint} gave an unreadable answer to {call}: {reason}")]
    Malformed { endpoint: String, call: &'static str, reason: String },
    /// A well-formed answer that cannot be right (a revision of 0, an
    /// existing key that reads as absent).
    #[error("etcd's answer to {call} makes no sense: {reason}")]
    Unexpected { call: &'static str, reason: String },
    /// Every endpoint failed; one failure per endpoint, in the order tried.
    #[error("no etcd endpoint answered: {}", join(.0))]
    AllFailed(Vec<EtcdError>),
}

fn join(errors: &[EtcdError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
