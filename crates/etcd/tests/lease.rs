//! The lease client against a real etcd (`etcd` on PATH; `scripts/install-test-deps`).
//! Each test starts its own server.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use roost_etcd::testing::EtcdServer;
use roost_etcd::{Acquire, EtcdError, EtcdLease, Grant};

const KEY: &str = "/roost/test-identity/awake";
const TIMEOUT: Duration = Duration::from_secs(1);
/// Long enough that no lease lapses by accident on a busy machine.
const LONG: Duration = Duration::from_secs(30);

fn lease(server: &EtcdServer) -> EtcdLease {
    EtcdLease::new(vec![server.client_url()], KEY.to_string(), TIMEOUT).unwrap()
}

async fn granted(lease: &EtcdLease, holder: &str, ttl: Duration) -> Grant {
    match lease.acquire(holder, ttl).await.unwrap() {
        Acquire::Granted(grant) => grant,
        held => panic!("{holder} expected the lease, got {held:?}"),
    }
}

/// An http:// URL on which nothing listens.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// How long a call took to fail, and its error.
async fn timed<T: std::fmt::Debug>(call: impl Future<Output = Result<T, EtcdError>>) -> (Duration, EtcdError) {
    let start = Instant::now();
    let e = call.await.unwrap_err();
    (start.elapsed(), e)
}

/// Waits, bounded, until the key is gone; returns how long that took.
async fn until_lapsed(lease: &EtcdLease, grant: &Grant) -> Duration {
    let start = Instant::now();
    let limit = grant.ttl + Duration::from_secs(5);
    while lease.current().await.unwrap().is_some() {
        assert!(start.elapsed() < limit, "the key outlived its {:?} TTL by 5 s", grant.ttl);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn acquiring_a_free_lease_grants_it_with_a_positive_epoch() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    assert_eq!(lease.current().await.unwrap(), None);
    let grant = granted(&lease, "laptop", Duration::from_millis(2500)).await;
    assert!(grant.epoch > 0);
    assert_eq!(grant.holder, "laptop");
    assert_eq!(grant.ttl, Duration::from_secs(3), "a TTL is whole seconds, rounded up");
    assert_eq!(lease.current().await.unwrap(), Some(("laptop".to_string(), grant.epoch)));
}

#[tokio::test]
async fn a_second_holder_is_told_who_holds_the_lease_and_leaves_no_lease_behind() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let first = granted(&lease, "laptop", LONG).await;
    let second = lease.acquire("desktop", LONG).await.unwrap();
    assert_eq!(second, Acquire::Held { holder: "laptop".to_string(), epoch: first.epoch });
    let leases: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v3/lease/leases", server.client_url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = leases["leases"].as_array().unwrap().iter().map(|l| l["ID"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.lease_id.to_string()], "the refused holder's lease is revoked");
}

#[tokio::test]
async fn renewing_keeps_the_lease_past_its_ttl() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let grant = granted(&lease, "laptop", Duration::from_secs(1)).await;
    let start = Instant::now();
    while start.elapsed() < grant.ttl * 2 {
        assert!(lease.renew(&grant).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(lease.current().await.unwrap(), Some(("laptop".to_string(), grant.epoch)));
}

/// etcd raises a 1 s TTL to its minimum, 2 s with the default 1 s election
/// timeout; the key then goes at about 2.3 s (etcd checks for expired leases
/// every 500 ms).
#[tokio::test]
async fn a_lapsed_lease_goes_to_the_next_holder_with_a_greater_epoch_and_the_first_stops() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let first = granted(&lease, "laptop", Duration::from_secs(1)).await;
    assert_eq!(first.ttl, Duration::from_secs(2), "etcd's minimum TTL with its default election timeout");
    let lapsed = until_lapsed(&lease, &first).await;
    assert!(lapsed >= first.ttl - Duration::from_millis(500), "the key went after only {lapsed:?}");
    assert!(!lease.renew(&first).await.unwrap(), "the lease is gone");
    let second = granted(&lease, "desktop", LONG).await;
    assert!(second.epoch > first.epoch);
    assert!(!lease.renew(&first).await.unwrap(), "the key is another's");
    assert!(lease.renew(&second).await.unwrap());
}

#[tokio::test]
async fn a_released_lease_can_be_acquired_at_once_with_a_greater_epoch() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let first = granted(&lease, "laptop", LONG).await;
    lease.release(&first).await.unwrap();
    assert_eq!(lease.current().await.unwrap(), None);
    assert!(!lease.renew(&first).await.unwrap(), "a released grant cannot be renewed");
    let second = granted(&lease, "desktop", LONG).await;
    assert!(second.epoch > first.epoch);
    lease.release(&first).await.unwrap();
    assert_eq!(lease.current().await.unwrap(), Some(("desktop".to_string(), second.epoch)));
}

#[tokio::test]
async fn releasing_a_stale_grant_leaves_the_new_holder_alone() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let stale = granted(&lease, "laptop", Duration::from_secs(1)).await;
    until_lapsed(&lease, &stale).await;
    let current = granted(&lease, "desktop", LONG).await;
    lease.release(&stale).await.unwrap();
    assert_eq!(lease.current().await.unwrap(), Some(("desktop".to_string(), current.epoch)));
    assert!(lease.renew(&current).await.unwrap());
}

#[tokio::test]
async fn a_holder_taking_the_lease_again_is_a_new_grant() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let first = granted(&lease, "laptop", LONG).await;
    lease.release(&first).await.unwrap();
    let again = granted(&lease, "laptop", LONG).await;
    assert!(again.epoch > first.epoch);
    assert_ne!(again.lease_id, first.lease_id);
    assert!(!lease.renew(&first).await.unwrap(), "the old grant of the same holder is over");
    assert!(lease.renew(&again).await.unwrap());
}

#[tokio::test]
async fn epochs_strictly_increase_over_twenty_grants() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let mut last = 0;
    for round in 0..20 {
        let grant = granted(&lease, &format!("machine-{}", round % 3), LONG).await;
        assert!(grant.epoch > last, "round {round}: epoch {} after {last}", grant.epoch);
        last = grant.epoch;
        lease.release(&grant).await.unwrap();
    }
}

#[tokio::test]
async fn a_closed_endpoint_fails_at_once_and_says_where() {
    let endpoint = closed_endpoint();
    let lease = EtcdLease::new(vec![endpoint.clone()], KEY.to_string(), TIMEOUT).unwrap();
    let start = Instant::now();
    let e = lease.current().await.unwrap_err();
    assert!(start.elapsed() < TIMEOUT, "took {:?}", start.elapsed());
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("could not reach etcd at {endpoint}: ")), "{e}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out_within_the_timeout() {
    let server = EtcdServer::start();
    let lease = lease(&server);
    let grant = granted(&lease, "laptop", LONG).await;
    server.pause();
    let calls = [
        ("acquire", timed(lease.acquire("desktop", LONG)).await),
        ("renew", timed(lease.renew(&grant)).await),
        ("release", timed(lease.release(&grant)).await),
        ("current", timed(lease.current()).await),
    ];
    for (call, (took, e)) in calls {
        assert!(took < TIMEOUT + Duration::from_millis(500), "{call} took {took:?}");
        assert_eq!(e.to_string(), format!("etcd at {} did not answer within 1s", server.client_url()), "{call}");
    }
    server.resume();
    // A request given up on may still take effect once etcd runs again (the
    // release may yet delete the key), so only ask that etcd answers.
    lease.current().await.unwrap();
}

#[tokio::test]
async fn a_dead_first_endpoint_falls_over_to_the_second_and_stays_there() {
    let live = EtcdServer::start();
    let silent = EtcdServer::start();
    silent.pause();
    let closed = closed_endpoint();
    let lease = EtcdLease::new(vec![closed, silent.client_url(), live.client_url()], KEY.to_string(), TIMEOUT).unwrap();
    let start = Instant::now();
    let grant = granted(&lease, "laptop", LONG).await;
    let first_call = start.elapsed();
    assert!(first_call < Duration::from_secs(4), "took {first_call:?}");
    let start = Instant::now();
    assert!(lease.renew(&grant).await.unwrap());
    assert_eq!(lease.current().await.unwrap(), Some(("laptop".to_string(), grant.epoch)));
    assert!(start.elapsed() < TIMEOUT, "later calls start at the endpoint that answered: {:?}", start.elapsed());
}

#[tokio::test]
async fn when_every_endpoint_fails_each_failure_is_reported() {
    let silent = EtcdServer::start();
    silent.pause();
    let closed = closed_endpoint();
    let lease = EtcdLease::new(vec![closed.clone(), silent.client_url()], KEY.to_string(), TIMEOUT).unwrap();
    let e = lease.current().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, EtcdError::AllFailed(ref failures) if failures.len() == 2), "{text}");
    assert!(text.starts_with(&format!("no etcd endpoint answered: could not reach etcd at {closed}: ")), "{text}");
    assert!(text.ends_with(&format!("; etcd at {} did not answer within 1s", silent.client_url())), "{text}");
}
