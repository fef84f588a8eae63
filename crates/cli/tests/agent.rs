//! The awake agent through real `roost serve` processes: messages posted to
//! any machine are answered once, from the awake one, through a fenced
//! outbox, across a kill -9 of the holder; the handler is any program;
//! secrets never reach the replicated log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{FakeTelegram, Served, Webhook, configure, configure_agent, lease, post_json, roost, succeeded, until};
use serde_json::{Value, json};

/// The one machine awake, once every running machine names it holder.
fn holder(served: &[&Served]) -> usize {
    let mut found = None;
    until("one agreed holder", || {
        let leases: Vec<Value> = served.iter().map(|s| lease(s)).collect();
        let awake: Vec<usize> = (0..served.len()).filter(|i| leases[*i]["role"] == "awake").collect();
        let agreed = awake.len() == 1 && leases.iter().all(|l| l["holder"]["id"] == leases[awake[0]]["holder"]["id"]);
        found = agreed.then(|| awake[0]);
        agreed
    });
    found.unwrap()
}

fn ledger_of(s: &Served, topic: &str) -> Vec<Value> {
    common::topic_messages(&s.addr, topic)
}

fn post(s: &Served, channel: &str, topic: &str, id: &str, text: &str) -> Value {
    let body = json!({"channel": channel, "topic": topic, "message_id": id, "sender": "ann", "text": text});
    let (status, answer) = post_json(&s.addr, "/api/v1/agent/messages", &body);
    assert_eq!(status, 202, "{answer}");
    answer
}

fn chain_with_agent(root: &Path, names: &[&str], agent: &str) -> (Vec<PathBuf>, Vec<Served>) {
    let (h, served) = common::chain_with(
        root,
        names,
        &[],
        |homes| {
            for home in homes {
                configure(home, "ttl_ms", "2000");
                configure_agent(home, agent);
            }
        },
        |_| 0,
    );
    let n = names.len();
    common::until_every_voter_heard(&served, n);
    (h, served)
}

/// Three machines; 150 messages over 6 topics posted to every machine in
/// turn, standbys included. After the first 30 the holder is killed with -9
/// (30 more go to the others while nobody is awake, and it comes back once
/// another machine holds the role); after 90 the holder is stopped with
/// SIGSTOP for three lease TTLs while 30 more arrive, then continued. Every
/// message gets exactly one distinct reply at the webhook, no idempotency
/// key carries two different bodies, each topic's replies arrive in message
/// order, and every machine holds the same ledger.
#[test]
fn every_message_is_answered_once_from_the_awake_machine_through_a_kill_and_a_pause_of_the_holder() {
    const MESSAGES: usize = 150;
    let hook = Webhook::start();
    let root = tempfile::tempdir().unwrap();
    let (h, mut served) =
        chain_with_agent(root.path(), &["a", "b", "c"], &format!("[agent.webhook]\nurl = \"{}\"", hook.url));
    let topics: Vec<String> = (0..6).map(|t| format!("topic-{t}")).collect();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut n = 0;
    let mut post_round = |served: &[Served], alive: &[usize]| {
        for _ in 0..30 {
            let topic = &topics[n % topics.len()];
            let id = format!("m{n}");
            let at = &served[alive[n % alive.len()]];
            let answer = post(at, "webhook", topic, &id, &format!("message {n}"));
            assert_eq!(answer["duplicate"], false);
            order.entry(topic.clone()).or_default().push(id);
            n += 1;
        }
    };
    post_round(&served, &[0, 1, 2]);
    let killed = holder(&served.iter().collect::<Vec<_>>());
    served[killed].child.kill().unwrap();
    served[killed].child.wait().unwrap();
    let alive: Vec<usize> = (0..3).filter(|i| *i != killed).collect();
    post_round(&served, &alive);
    holder(&alive.iter().map(|i| &served[*i]).collect::<Vec<_>>());
    served[killed] = Served::start(&h[killed]);
    post_round(&served, &[0, 1, 2]);

    let paused = holder(&served.iter().collect::<Vec<_>>());
    common::signal(&served[paused].child, "STOP");
    let others: Vec<usize> = (0..3).filter(|i| *i != paused).collect();
    post_round(&served, &others);
    std::thread::sleep(Duration::from_secs(6));
    common::signal(&served[paused].child, "CONT");
    post_round(&served, &[0, 1, 2]);
    // A message delivered twice to one machine is recorded once.
    assert_eq!(post(&served[0], "webhook", &topics[0], "m0", "message 0")["duplicate"], true);
    let killed_and_paused = (killed, paused);

    until("a reply to every message at the webhook", || {
        let answered: BTreeSet<String> =
            hook.deliveries().iter().filter_map(|d| d.body["message_id"].as_str().map(String::from)).collect();
        answered.len() == MESSAGES
    });
    let re_sends = common::one_reply_each_in_order(&hook.deliveries(), &order, &BTreeSet::new(), |topic| {
        let ledger = common::ledger_lines(&served[0].addr, topic);
        let ids: Vec<String> =
            h.iter().map(|home| std::fs::read_to_string(home.join("instance-id")).unwrap()).collect();
        format!("killed, paused {killed_and_paused:?}, machines {ids:?}\n{ledger:#?}")
    });
    println!("re-sends under the same key: {re_sends}");

    let settled = |s: &Served, topic: &str| {
        topic_view(s, topic).into_iter().map(|(id, stage, reply, _)| (id, stage, reply)).collect::<Vec<_>>()
    };
    until("every machine holds the same ledger, every reply sent", || {
        topics.iter().all(|t| {
            let first = settled(&served[0], t);
            first.len() == order[t].len()
                && first.iter().all(|(_, stage, _)| stage == "sent")
                && served.iter().all(|s| settled(s, t) == first)
        })
    });
    // Each reply names the machine and epoch that committed it.
    let machines: BTreeSet<String> =
        topics.iter().flat_map(|t| topic_view(&served[0], t)).map(|(_, _, _, by)| by).collect();
    assert!(!machines.is_empty());
}

/// Three machines answer one Telegram bot (a local server speaking the Bot
/// API): only the awake machine polls, every message is answered in its
/// chat, in order, with its echo. The holder is killed with -9 twice while
/// messages come. Telegram takes no idempotency key, so a reply can go out
/// twice, but only when a kill fell between Telegram taking it and the
/// holder's commit that it was sent reaching another machine: the test
/// counts those window hits from the survivors' ledgers right after each
/// kill, and every duplicate must be one of them. `ROOST_TELEGRAM_KILLS=N`
/// runs N kills (default 2) for the longer count README reports.
#[test]
fn a_telegram_bot_is_answered_from_the_awake_machine_alone_through_kills_of_the_holder() {
    let kills: usize = std::env::var("ROOST_TELEGRAM_KILLS").map_or(2, |v| v.parse().expect("a number of kills"));
    let rounds = kills + 1;
    const PER_ROUND: usize = 24;
    let bot = FakeTelegram::start();
    let root = tempfile::tempdir().unwrap();
    let agent = format!("[agent.telegram]\ntoken = \"{}\"\napi_url = \"{}\"", bot.token, bot.url);
    let (h, mut served) = chain_with_agent(root.path(), &["a", "b", "c"], &agent);
    let chats = [101_i64, 202, -1_003];
    let mut said: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut texts: BTreeMap<(i64, i64), String> = BTreeMap::new();
    let (mut window_hits, mut only_on_the_dead) = (0, 0);
    for round in 0..rounds {
        for n in 0..PER_ROUND {
            let chat = chats[n % chats.len()];
            let text = format!("hello {round}.{n}");
            let id = bot.say(chat, &text);
            said.entry(chat).or_default().push(id);
            texts.insert((chat, id), text);
            std::thread::sleep(Duration::from_millis(40));
        }
        if round + 1 == rounds {
            break;
        }
        let (hits, saved) = kill_the_holder_counting_the_window(&h, &mut served, &bot, &chats);
        (window_hits, only_on_the_dead) = (window_hits + hits, only_on_the_dead + saved);
    }
    // Once more with Telegram's answer slowed down, and the kill inside it,
    // once every reply so far is committed as sent everywhere.
    until("every reply so far committed as sent on every machine", || all_sent(&served, &chats, &said));
    bot.slow_answers(Duration::from_millis(1500));
    let id = bot.say(chats[0], "caught in the window");
    said.entry(chats[0]).or_default().push(id);
    texts.insert((chats[0], id), "caught in the window".into());
    until("Telegram took the reply", || bot.sent().iter().any(|s| s.reply_to == Some(id)));
    let (caught, saved) = kill_the_holder_counting_the_window(&h, &mut served, &bot, &chats);
    assert_eq!(caught, 1, "the reply Telegram took and had not answered for");
    (window_hits, only_on_the_dead) = (window_hits + caught, only_on_the_dead + saved);
    bot.slow_answers(Duration::ZERO);

    let total: usize = said.values().map(Vec::len).sum();
    until("a reply to every Telegram message", || {
        bot.sent().iter().map(|s| (s.chat, s.reply_to)).collect::<BTreeSet<_>>().len() == total
    });
    // Every re-send done: each machine holds every reply as sent.
    until("every reply committed as sent on every machine", || all_sent(&served, &chats, &said));
    let sent = bot.sent();
    let mut replies: BTreeMap<(i64, i64), BTreeSet<&str>> = BTreeMap::new();
    for s in &sent {
        replies.entry((s.chat, s.reply_to.unwrap())).or_default().insert(&s.text);
    }
    for ((chat, id), bodies) in &replies {
        assert_eq!(bodies.len(), 1, "message {id} in chat {chat} got different replies: {bodies:?}");
        let text = &texts[&(*chat, *id)];
        assert!(bodies.first().unwrap().ends_with(&format!(" in {chat}: {text}")), "{bodies:?} to {text:?}");
    }
    for (chat, ids) in &said {
        let mut first_seen: Vec<i64> = Vec::new();
        for s in sent.iter().filter(|s| s.chat == *chat) {
            if !first_seen.contains(&s.reply_to.unwrap()) {
                first_seen.push(s.reply_to.unwrap());
            }
        }
        if &first_seen != ids {
            let ledger = common::ledger_lines(&served[0].addr, &chat.to_string());
            panic!("replies in chat {chat} left out of message order: {first_seen:?}\n{ledger:#?}");
        }
    }
    let duplicates = sent.len() - replies.len();
    println!(
        "Telegram: {total} messages, {} kills, {window_hits} replies taken by Telegram with their \"sent\" commit \
         on no machine when their holder died (the window), {only_on_the_dead} with it only on the dead machine's \
         disk, {duplicates} duplicates, {} polls cut by another",
        kills + 1,
        bot.conflicts()
    );
    // A reply committed only on the dead machine's disk is sent again unless
    // the machine is back before the new holder plans.
    assert!(
        (window_hits..=window_hits + only_on_the_dead).contains(&duplicates),
        "every duplicate is a reply caught in the window by a kill, and every such reply is one"
    );

    // One machine polls; every machine says which.
    until("exactly one machine polling Telegram", || {
        let polling: Vec<bool> = served
            .iter()
            .map(|s| s.get("/health").is_some_and(|h| h["agent"]["telegram"]["polling"] == true))
            .collect();
        polling.iter().filter(|p| **p).count() == 1
    });
    let awake = holder(&served.iter().collect::<Vec<_>>());
    // The poller is live: one more message is answered, and the poll that
    // brought it is seconds old.
    let id = bot.say(chats[1], "still there?");
    until("the reply to one more message", || bot.sent().iter().any(|s| s.reply_to == Some(id)));
    let health = served[awake].get("/health").unwrap();
    assert!(health["agent"]["telegram"]["last_poll_ms_ago"].as_u64().is_some_and(|ms| ms < 10_000), "{health}");
    let status = succeeded(roost(&h[awake], &["status"]));
    assert!(status.contains("Telegram polled here"), "{status}");
    let standby = succeeded(roost(&h[(awake + 1) % 3], &["status"]));
    assert!(standby.contains("Telegram polled by the awake machine"), "{standby}");

    // The webhook API does not take messages on the bot's channel.
    let body = json!({"channel": "telegram", "topic": "101", "message_id": "101:999", "text": "forged"});
    let (status, answer) = post_json(&served[0].addr, "/api/v1/agent/messages", &body);
    assert_eq!(status, 400, "{answer}");
}

/// Item 7, liveness: the awake machine a and the standby b cannot reach the
/// webhook (their settings point nowhere) while c can, and each says so to
/// the others. With a message waiting and nothing done for
/// `stuck_after_ms`, a hands the role to c, the standby that can, says why
/// in its role log and its status, and stays eligible; c sends the reply a
/// committed, under the same key.
#[test]
fn a_holder_that_cannot_deliver_hands_the_role_to_a_standby_that_can() {
    let hook = Webhook::start();
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let root = tempfile::tempdir().unwrap();
    let (h, served) = common::chain_with(
        root.path(),
        &["a", "b", "c"],
        &[],
        |homes| {
            for (i, home) in homes.iter().enumerate() {
                configure(home, "ttl_ms", "2000");
                let url = if i < 2 { &nowhere } else { &hook.url };
                let agent = format!(
                    "[agent]\nhandler_timeout_ms = 1000\nstuck_after_ms = 2000\n[agent.webhook]\nurl = \"{url}\""
                );
                configure_agent(home, &agent);
            }
        },
        |_| 0,
    );
    common::until_every_voter_heard(&served, 3);
    if holder(&served.iter().collect::<Vec<_>>()) != 0 {
        succeeded(roost(&h[0], &["wakeup"]));
    }
    assert_eq!(holder(&served.iter().collect::<Vec<_>>()), 0);
    until("a hearing that b cannot reach the webhook and c can", || {
        let peers = lease(&served[0])["peers"].as_array().cloned().unwrap_or_default();
        let able = |name: &str| peers.iter().find(|p| p["name"] == name).map(|p| p["able"] == true);
        able("b") == Some(false) && able("c") == Some(true)
    });
    let posted = std::time::Instant::now();
    post(&served[0], "webhook", "support", "m1", "is anyone there?");
    until("the reply at the webhook", || !hook.deliveries().is_empty());
    let took = posted.elapsed();
    let next = holder(&served.iter().collect::<Vec<_>>());
    assert_eq!(next, 2, "the standby that reaches the webhook holds the role");
    assert_eq!(served[1].get("/health").unwrap()["agent"]["reaches_channels"], false);
    eprintln!("the reply arrived {:.1} s after the message, from the machine that took the role", took.as_secs_f64());

    let events = std::fs::read_to_string(h[0].join("lease-events.jsonl")).unwrap();
    let handed = events.lines().find(|l| l.contains("\"hand-over\"")).expect("a hand-over in a's role log");
    assert!(handed.contains("while 1 message waits"), "{handed}");
    let health = served[0].get("/health").unwrap();
    assert!(health["agent"]["last_error"].as_str().unwrap().contains("handing the role over"), "{health}");
    assert!(health["lease"]["not_eligible"].is_null(), "a stays eligible: {health}");
    let deliveries = hook.deliveries();
    let keys: BTreeSet<&str> = deliveries.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys.len(), 1, "one reply, under one key: {deliveries:?}");
    assert_eq!(deliveries[0].body["text"], "echo #1 in support: is anyone there?");
}

/// Whether every machine holds the reply to every message `said` as sent.
fn all_sent(served: &[Served], chats: &[i64], said: &BTreeMap<i64, Vec<i64>>) -> bool {
    let total: usize = said.values().map(Vec::len).sum();
    served.iter().all(|s| chats.iter().map(|chat| sent_in(s, *chat).len()).sum::<usize>() == total)
}

/// Kills the awake machine with -9 and starts it again. Of the replies
/// Telegram had taken, how many had their "sent" commit on no machine just
/// after the kill (the kill hit Telegram's window for those), and how many
/// only on the dead machine's own disk.
fn kill_the_holder_counting_the_window(
    h: &[PathBuf],
    served: &mut [Served],
    bot: &FakeTelegram,
    chats: &[i64],
) -> (usize, usize) {
    let killed = holder(&served.iter().collect::<Vec<_>>());
    served[killed].child.kill().unwrap();
    served[killed].child.wait().unwrap();
    // Less than a lease TTL: nobody has taken over yet, and whatever the
    // dead machine had on the wire has arrived.
    std::thread::sleep(Duration::from_millis(400));
    let taken: BTreeSet<(i64, i64)> = bot.sent().iter().map(|s| (s.chat, s.reply_to.unwrap())).collect();
    let survivors = (0..served.len()).filter(|i| *i != killed).map(|i| &served[i]);
    let committed: BTreeSet<(i64, i64)> =
        survivors.flat_map(|s| chats.iter().flat_map(move |chat| sent_in(s, *chat))).collect();
    let store = roost_instance::Instance::open(&h[killed]).unwrap().open_store().unwrap();
    let on_its_disk: BTreeSet<(i64, i64)> = store
        .ledger(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.reply.as_ref().is_some_and(|(r, _)| r.stage == roost_agent::Stage::Sent))
        .filter_map(|e| {
            let (chat, id) = e.message.message_id.split_once(':')?;
            Some((chat.parse().ok()?, id.parse().ok()?))
        })
        .collect();
    drop(store);
    served[killed] = Served::start(&h[killed]);
    let uncommitted: BTreeSet<&(i64, i64)> = taken.difference(&committed).collect();
    let only_there = uncommitted.iter().filter(|r| on_its_disk.contains(**r)).count();
    (uncommitted.len() - only_there, only_there)
}

/// The Telegram messages of `chat` whose reply `s` holds as sent: (chat,
/// message id).
fn sent_in(s: &Served, chat: i64) -> Vec<(i64, i64)> {
    ledger_of(s, &chat.to_string())
        .iter()
        .filter(|m| m["stage"] == "sent")
        .map(|m| {
            let id = m["message_id"].as_str().unwrap().rsplit_once(':').unwrap().1;
            (chat, id.parse().unwrap())
        })
        .collect()
}

/// (message id, stage, reply, replied by) of each message of `topic`.
fn topic_view(s: &Served, name: &str) -> Vec<(String, String, String, String)> {
    common::topic_view(&s.addr, name)
}

/// `roost agent say` on a standby: the awake machine runs the handler, a
/// program that gets the message, the topic's history and the MCP URL as
/// JSON on stdin and the topic and epoch in its environment; the reply is
/// printed where it was asked.
#[test]
fn roost_agent_say_on_a_standby_is_answered_by_the_handler_program_on_the_awake_machine() {
    let root = tempfile::tempdir().unwrap();
    let seen = root.path().join("seen.json");
    let script =
        format!("cat > {}; printf 'handled in %s at epoch %s' \"$ROOST_TOPIC\" \"$ROOST_EPOCH\"", seen.display());
    let handler = format!("[agent]\nhandler = [\"sh\", \"-c\", {}]", toml_string(&script));
    let (h, served) = chain_with_agent(root.path(), &["a", "b"], &handler);
    let awake = holder(&served.iter().collect::<Vec<_>>());
    let standby = 1 - awake;
    let epoch = lease(&served[awake])["epoch"].as_u64().unwrap();

    let first = succeeded(roost(&h[standby], &["agent", "say", "plans", "what is on today?"]));
    assert_eq!(first.trim(), format!("handled in plans at epoch {epoch}"));
    let second = succeeded(roost(&h[standby], &["agent", "say", "plans", "and tomorrow?"]));
    assert_eq!(second.trim(), format!("handled in plans at epoch {epoch}"));
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(input["message"]["text"], "and tomorrow?");
    assert_eq!(input["message"]["channel"], "cli");
    assert_eq!(input["epoch"], epoch);
    assert_eq!(input["mcp_url"], format!("http://{}/mcp", served[awake].addr));
    let history: Vec<(&str, &str)> = input["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["role"].as_str().unwrap(), t["text"].as_str().unwrap()))
        .collect();
    assert_eq!(history, [("message", "what is on today?"), ("reply", first.trim())]);

    let tail = succeeded(roost(&h[standby], &["agent", "tail", "plans"]));
    assert!(tail.contains("> cli: what is on today?") && tail.contains("< handled in plans"), "{tail}");
    let topics = succeeded(roost(&h[awake], &["agent", "topics"]));
    assert!(topics.starts_with("plans  2 messages"), "{topics}");
    let status = succeeded(roost(&h[standby], &["status"]));
    assert!(status.contains("agent      standing by; handler sh -c"), "{status}");
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A handler that fails is run again up to `attempts` times, then the
/// message is marked failed with why, and `roost agent say` says so; one
/// that hangs is killed at its timeout.
#[test]
fn a_failing_or_hanging_handler_is_retried_a_bounded_number_of_times_then_marked_failed() {
    for (program, expected) in [
        (r#"["sh", "-c", "echo out of tokens >&2; exit 3"]"#, "exited with exit status: 3: out of tokens"),
        (r#"["sleep", "10"]"#, "no reply within 300ms; the handler was killed"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("solo");
        succeeded(roost(&home, &["init", "--name", "solo"]));
        configure_agent(&home, &format!("[agent]\nhandler = {program}\nhandler_timeout_ms = 300\nattempts = 2"));
        let _served = Served::start(&home);
        let out = roost(&home, &["agent", "say", "t", "hello", "--wait", "30"]);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("the agent could not answer") && said.contains(expected), "{said}");
        let entry =
            &serde_json::from_str::<Value>(&succeeded(roost(&home, &["agent", "tail", "t", "--json"]))).unwrap();
        assert_eq!((entry["stage"].as_str(), entry["attempts"].as_u64()), (Some("failed"), Some(2)), "{entry}");
    }
}

/// A secret in a message is redacted before the message is written: no
/// byte of it reaches the database (or its write-ahead log), the ledger, the
/// reply or the webhook.
#[test]
fn secrets_in_a_message_never_reach_the_replicated_log() {
    let hook = Webhook::start();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("solo");
    succeeded(roost(&home, &["init", "--name", "solo"]));
    configure_agent(&home, &format!("[agent.webhook]\nurl = \"{}\"", hook.url));
    let served = Served::start(&home);
    let secret = "sk-ant-api03-Zq8RkT2mW9vLxN4pY7sB";
    post(&served, "webhook", "keys", "k1", &format!("my key is {secret} and Authorization: Bearer abcDEF123456789"));
    until("the reply at the webhook", || !hook.deliveries().is_empty());
    let reply = hook.deliveries()[0].body["text"].as_str().unwrap().to_string();
    assert_eq!(reply, "echo #1 in keys: my key is [REDACTED] and Authorization: Bearer [REDACTED]");
    let stored = ledger_of(&served, "keys");
    assert_eq!(stored[0]["text"], "my key is [REDACTED] and Authorization: Bearer [REDACTED]");
    for file in ["roost.db", "roost.db-wal"] {
        let bytes = std::fs::read(home.join(file)).unwrap_or_default();
        for needle in [secret, "abcDEF123456789"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} is in {file}");
        }
    }
    // Bad input is refused in one line and records nothing.
    let (status, answer) = post_json(
        &served.addr,
        "/api/v1/agent/messages",
        &json!({"channel": "Web Hook", "topic": "t", "message_id": "1", "text": "x"}),
    );
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("is not a channel name"), "{answer}");
    let (status, answer) = post_json(&served.addr, "/api/v1/agent/messages", &json!({"topic": "t"}));
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("missing field"), "{answer}");
    assert_eq!(ledger_of(&served, "t").len(), 0);
}
