//! Machine-to-machine tokens on a real gateway's `/mcp`, with loopback
//! access turned off so every caller must present one.

mod common;

use common::{Served, succeeded};
use roost_identity::Token;
use roost_instance::{Instance, unix_now};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

async fn call(addr: &str, authorization: Option<&str>) -> (u16, String) {
    common::install_tls_provider();
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INITIALIZE);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn token(issuer: &Instance, audience: &str, issued_at: i64, lifetime: i64) -> String {
    let t = Token {
        issuer: issuer.id.clone(),
        audience: audience.to_string(),
        issued_at,
        expires_at: issued_at + lifetime,
        nonce: rand::random(),
    };
    format!("Bearer {}", t.sign(&issuer.machine_key).unwrap())
}

#[tokio::test]
async fn every_bad_token_is_refused_and_a_good_one_admitted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b, home_c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let a = Instance::init(&home_a, "a").unwrap();
    common::configure(&home_a, "loopback_without_token", "false");
    let stranger = Instance::init(&home_c, "c").unwrap();
    let served = Served::start(&home_a);
    // B joins A's chain by pairing, so A knows it.
    succeeded(common::roost(&home_b, &["init", "--name", "b"]));
    common::join(&home_b, &home_a, &served);
    let b = Instance::open(&home_b).unwrap();

    let now = unix_now();
    let (status, body) = call(&served.addr, None).await;
    assert_eq!(status, 401, "no token: {body}");
    assert!(body.contains("token is required"));

    let good = token(&b, &a.id, now, 300);
    let (status, body) = call(&served.addr, Some(&good)).await;
    assert_eq!(status, 200, "a valid token is admitted: {body}");
    assert!(body.contains("roost"), "the MCP server answered: {body}");

    // B's name on a token signed with another key.
    let forged =
        Token { issuer: b.id.clone(), audience: a.id.clone(), issued_at: now, expires_at: now + 60, nonce: [7; 16] };
    let forged = format!("Bearer {}", forged.sign(&stranger.machine_key).unwrap());
    for (case, authorization, reason) in [
        ("replayed", good.clone(), "already used"),
        ("wrong audience", token(&b, &b.id, now, 300), "not this one"),
        ("expired", token(&b, &a.id, now - 400, 300), "expired"),
        ("from the future", token(&b, &a.id, now + 120, 60), "future"),
        ("too long-lived", token(&b, &a.id, now, 3600), "lifetime"),
        ("unknown issuer", token(&stranger, &a.id, now, 300), "not a registered instance"),
        ("forged", forged, "signature does not verify"),
        ("not a bearer", "Basic dXNlcjpwYXNz".to_string(), "bearer"),
        ("malformed", "Bearer rt1.!!!".to_string(), "malformed"),
    ] {
        let (status, body) = call(&served.addr, Some(&authorization)).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body.contains(reason), "{case}: {body:?} should say {reason:?}");
    }

    // The store-reading JSON API sits behind the same check.
    common::install_tls_provider();
    let api = |auth: Option<String>| {
        let mut request = reqwest::Client::new().get(format!("http://{}/api/v1/instance", served.addr));
        if let Some(value) = auth {
            request = request.header("Authorization", value);
        }
        request.send()
    };
    assert_eq!(api(None).await.unwrap().status(), 401);
    assert_eq!(api(Some(token(&b, &a.id, now, 300))).await.unwrap().status(), 200);

    // After revocation, B's freshly signed tokens are refused: B is known,
    // and forbidden.
    let revoked = common::roost(&home_a, &["instance", "revoke", &b.id]);
    assert!(revoked.status.success());
    let (status, body) = call(&served.addr, Some(&token(&b, &a.id, now, 300))).await;
    assert_eq!(status, 403);
    assert!(body.contains("revoked"), "{body}");
}

#[tokio::test]
async fn a_used_token_stays_refused_after_the_gateway_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = Instance::init(&home_a, "a").unwrap();
    common::configure(&home_a, "loopback_without_token", "false");
    let served = Served::start(&home_a);
    succeeded(common::roost(&home_b, &["init", "--name", "b"]));
    common::join(&home_b, &home_a, &served);
    let b = Instance::open(&home_b).unwrap();

    let used = token(&b, &a.id, unix_now(), 300);
    let (status, body) = call(&served.addr, Some(&used)).await;
    assert_eq!(status, 200, "{body}");
    assert!(served.stop().success());

    let served = Served::start(&home_a);
    let (status, body) = call(&served.addr, Some(&used)).await;
    assert_eq!(status, 401, "a token used before the restart is refused after it: {body}");
    assert!(body.contains("already used"), "{body}");
    let (status, body) = call(&served.addr, Some(&token(&b, &a.id, unix_now(), 300))).await;
    assert_eq!(status, 200, "a fresh token is admitted: {body}");
}
