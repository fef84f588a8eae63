//! The pool through `roost serve`: three machines chained by pairing, each
//! with `[pool] enabled`, run thirty conversations spread by capacity; any
//! machine says where a topic runs, alike; a transfer moves a topic and its
//! next reply comes from there; a machine that went away takes a topic only
//! when the move is confirmed. With the pool off, its endpoints say so.

mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use common::{Served, chain_with, get_json, get_text, json_of, post_json, roost, succeeded, topic_view, until};

/// Each machine's capacity: the laptop carries twice the others' share.
const MACHINES: [(&str, u32); 3] = [("home", 1), ("laptop", 2), ("pi", 1)];
const TOPICS: usize = 30;

fn enable_pool(homes: &[std::path::PathBuf]) {
    for (home, (_, capacity)) in homes.iter().zip(MACHINES) {
        let config = home.join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}\n[pool]\nenabled = true\ncapacity = {capacity}\n")).unwrap();
    }
}

fn say(addr: &str, topic: &str, id: &str) {
    let body = json!({"channel": "cli", "topic": topic, "message_id": id, "text": format!("hello {id}")});
    let (status, answer) = post_json(addr, "/api/v1/agent/messages", &body);
    assert_eq!(status, 202, "{answer}");
}

/// The machine that replied to message `id` of `topic`, once it is sent.
fn replied_by(addr: &str, topic: &str, id: &str) -> Option<String> {
    topic_view(addr, topic).into_iter().find(|(m, stage, _, _)| m == id && stage == "sent").map(|(.., by)| by)
}

#[test]
fn thirty_topics_spread_by_capacity_and_move_on_request() {
    let root = tempfile::tempdir().unwrap();
    let names: Vec<&str> = MACHINES.iter().map(|(n, _)| *n).collect();
    let (homes, mut served) = chain_with(root.path(), &names, &[], enable_pool, |_| 0);
    let addrs: Vec<String> = served.iter().map(|s| s.addr.clone()).collect();
    until("every machine in the pool, online", || {
        let out = roost(&homes[0], &["pool", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|pool| {
                pool["machines"].as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["online"] == true))
            })
    });

    for i in 0..TOPICS {
        say(&addrs[i % 3], &format!("t{i}"), &format!("m{i}"));
    }
    let mut by_machine: BTreeMap<String, usize> = BTreeMap::new();
    let pool = json_of(roost(&homes[1], &["pool", "--json"]));
    let ids: BTreeMap<String, String> = pool["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["id"].as_str().unwrap().to_string()))
        .collect();
    for i in 0..TOPICS {
        let topic = format!("t{i}");
        until(&format!("{topic} answered"), || replied_by(&addrs[0], &topic, &format!("m{i}")).is_some());
        let by = replied_by(&addrs[0], &topic, &format!("m{i}")).unwrap();
        let placements: Vec<Value> =
            addrs.iter().map(|a| get_json(a, &format!("/api/v1/pool/placement?topic={topic}")).unwrap()).collect();
        assert!(placements.iter().all(|p| *p == placements[0]), "every machine says the same: {placements:?}");
        assert_eq!(placements[0]["machine"], by.as_str(), "{topic} was answered where it is placed");
        assert_eq!(placements[0]["reason"], "placed");
        *by_machine.entry(by).or_default() += 1;
    }
    let load = |name: &str| by_machine.get(&ids[name]).copied().unwrap_or(0);
    assert_eq!(load("home") + load("laptop") + load("pi"), TOPICS);
    assert!((14..=16).contains(&load("laptop")), "twice the capacity, twice the topics: {by_machine:?}");
    assert!((7..=8).contains(&load("home")) && (7..=8).contains(&load("pi")), "{by_machine:?}");

    // A transfer by the API, asked on a machine that is not the
    // coordinator: pinned, and the next message is answered there.
    let t0 = get_json(&addrs[0], "/api/v1/pool/placement?topic=t0").unwrap();
    let to = if t0["machine"] == ids["pi"].as_str() { "home" } else { "pi" };
    let (status, moved) = post_json(&addrs[1], "/api/v1/pool/transfer", &json!({"topic": "t0", "to": to}));
    assert_eq!(status, 200, "{moved}");
    assert_eq!((moved["moved"].clone(), moved["to"].clone()), (json!(true), json!(ids[to])));
    let placed = get_json(&addrs[2], "/api/v1/pool/placement?topic=t0").unwrap();
    assert_eq!((placed["machine"].clone(), placed["reason"].clone()), (json!(ids[to]), json!("pinned")));
    // The old owner finishes what it has in flight and releases the topic:
    // until then a message may still be answered there, once.
    until("the new machine holds t0", || {
        get_json(&addrs[0], "/api/v1/pool").is_some_and(|p| {
            p["topics"].as_array().into_iter().flatten().any(|t| t["topic"] == "t0" && t["owner"] == ids[to].as_str())
        })
    });
    say(&addrs[0], "t0", "m0-after");
    until("the moved topic answered", || replied_by(&addrs[0], "t0", "m0-after").is_some());
    assert_eq!(replied_by(&addrs[0], "t0", "m0-after").unwrap(), ids[to], "answered by the machine it moved to");
    let (again, answer) = post_json(&addrs[0], "/api/v1/pool/transfer", &json!({"topic": "t0", "to": to}));
    assert_eq!((again, answer["moved"].clone()), (200, json!(false)), "already there: {answer}");

    // A standby goes away: a move to it is refused until confirmed.
    let awake = |addr: &str| get_json(addr, "/health").is_some_and(|h| h["lease"]["role"] == "awake");
    let coordinator = (0..3).find(|&i| awake(&addrs[i])).expect("one machine is awake");
    let gone = (0..3).rev().find(|&i| i != coordinator).unwrap();
    let gone_name = names[gone];
    served.remove(gone).stop();
    let at = &addrs[coordinator];
    until("the stopped machine offline in the pool", || {
        get_json(at, &format!("/api/v1/pool/machines/{gone_name}")).is_some_and(|m| m["online"] == false)
    });
    let topic = (1..TOPICS).map(|i| format!("t{i}")).find(|t| {
        get_json(at, &format!("/api/v1/pool/placement?topic={t}")).unwrap()["machine"] != ids[gone_name].as_str()
    });
    let topic = topic.unwrap();
    let (refused, why) = post_json(at, "/api/v1/pool/transfer", &json!({"topic": topic, "to": gone_name}));
    assert_eq!(refused, 409, "{why}");
    assert!(why["error"].as_str().unwrap().contains("offline"), "{why}");
    let body = json!({"topic": topic, "to": gone_name, "confirm": true});
    let (confirmed, moved) = post_json(at, "/api/v1/pool/transfer", &body);
    assert_eq!((confirmed, moved["moved"].clone()), (200, json!(true)), "{moved}");
}

/// With the pool off (the default), every pool endpoint answers 503 with
/// the reason and how to turn it on, and `roost pool` says the same.
#[test]
fn with_the_pool_off_its_endpoints_answer_503_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("solo");
    succeeded(roost(&home, &["init", "--name", "solo"]));
    let served = Served::start(&home);
    let reason = "set [pool] enabled = true in config.toml";
    for path in ["/api/v1/pool", "/api/v1/pool/machines/solo", "/api/v1/pool/placement?topic=t"] {
        let (status, body) = get_text(&served.addr, path, "").unwrap();
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    let (status, body) = post_json(&served.addr, "/api/v1/pool/transfer", &json!({"topic": "t", "to": "solo"}));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    let out = roost(&home, &["pool"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(reason), "{out:?}");
}
