//! The Nest in a real headless Chromium, driven over WebDriver, against three
//! real `roost serve` processes sharing one identity: login, the instances
//! panel going red for a stopped machine, resolving a conflict that then
//! closes on the other machine, a merge typed into the form, memory search,
//! CSRF and the login limit.
//! Screenshots of every page land in `target/nest-screenshots/`.

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use common::{Served, add, configure, conflicts, content, edit, json_of, roost, succeeded, until};

const PASSWORD: &str = "nest password 1";
const WAIT: Duration = Duration::from_secs(30);

/// `name` on PATH, or a failure that says how to install it.
fn required_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} is not installed: run ./scripts/install-test-deps"))
}

/// A chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let program = required_program("chromedriver");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver { child, port };
        until("chromedriver listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = required_program("chromium");
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": chromium, "args": args},
    });
    let Value::Object(capabilities) = capabilities else { unreachable!() };
    let client = ClientBuilder::rustls()
        .expect("TLS roots for the WebDriver client")
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session from chromedriver");
    client.set_window_size(1280, 900).await.unwrap();
    client
}

/// Polls `check` until it holds, failing after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("nest-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots_dir().join(name), png).unwrap();
}

/// The text of the first element matching `css`; empty while there is none
/// (a page may still be loading when `eventually` asks).
async fn text_of(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The status dot of one row of the instances panel, as its data attribute says.
async fn status_of(browser: &Client, instance: &str) -> Option<String> {
    let row = browser.find(Locator::Css(&format!(r#"tr[data-instance="{instance}"]"#))).await.ok()?;
    row.attr("data-status").await.ok()?
}

/// The text of one cell (by its column label) of an instance's row.
async fn cell_of(browser: &Client, instance: &str, label: &str) -> String {
    text_of(browser, &format!(r#"tr[data-instance="{instance}"] td[data-label="{label}"]"#)).await
}

async fn log_in(browser: &Client, password: &str) {
    let field = browser.find(Locator::Css("#password")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(password).await.unwrap();
    browser.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
}

async fn path_is(browser: &Client, path: &str) -> bool {
    browser.current_url().await.is_ok_and(|url| url.path() == path)
}

fn set_password(home: &Path) {
    let out = Command::new(common::roost_bin())
        .arg("--home")
        .arg(home)
        .args(["nest", "password"])
        .env("ROOST_NEST_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    succeeded(out);
}

async fn open_conflicts_on(http: &reqwest::Client, served: &Served) -> u64 {
    let answer: Value =
        http.get(served.url("/api/v1/conflicts")).send().await.unwrap().json().await.expect("conflicts JSON");
    answer["count"].as_u64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nest_in_a_real_browser() {
    common::install_tls_provider();
    let driver = Driver::start();
    let dir = tempfile::tempdir().unwrap();
    // A refreshes its summaries of the others every second; B and C join
    // through A, which learns where their gateways are from the joins.
    let setup = |h: &[std::path::PathBuf]| {
        configure(&h[0], "summary_interval_secs", "1");
        configure(&h[0], "health_interval_secs", "1");
    };
    let (h, served) = common::chain_with(dir.path(), &["alpha", "bravo", "charlie"], &[], setup, |_| 0);
    let [a, b, c]: [Served; 3] = served.try_into().unwrap_or_else(|_| unreachable!());
    let penguin = json_of(roost(
        &h[2],
        &["memory", "add", "The penguin colony lives on charlie only", "--local", "--json"],
    ))["id"]
        .as_str()
        .unwrap()
        .to_string();
    set_password(&h[0]);
    let walrus = add(&h[0], "The walrus colony meets at the northern beach at dawn");
    add(&h[0], "Prefers tea over coffee in the afternoon");
    until("b has a's memories", || content(&h[1], &walrus).is_some());

    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path()).await;
    let browser = &browser;

    // Login: unauthenticated pages lead to it; a wrong password is refused.
    browser.goto(&a.url("/nest")).await.unwrap();
    eventually("the login page", || path_is(browser, "/nest/login")).await;
    screenshot(browser, "01-login.png").await;
    log_in(browser, "not the password").await;
    eventually("the refusal", || async { text_of(browser, ".error").await.contains("Wrong password") }).await;
    let cookies = browser.get_all_cookies().await.unwrap();
    assert!(cookies.iter().all(|c| c.name() != "roost_nest"), "no session after a wrong password");
    screenshot(browser, "02-login-refused.png").await;
    log_in(browser, PASSWORD).await;
    eventually("the instances page", || path_is(browser, "/nest")).await;
    let session = browser.get_named_cookie("roost_nest").await.expect("a session cookie").value().to_string();

    // The panel: all three, then C goes red on its own refresh while B stays green.
    eventually("b and c connected", || async {
        browser.refresh().await.unwrap();
        status_of(browser, "bravo").await.as_deref() == Some("connected")
            && status_of(browser, "charlie").await.as_deref() == Some("connected")
    })
    .await;
    assert_eq!(status_of(browser, "alpha").await.as_deref(), Some("connected"));
    // Counts from each machine's cached summary: C also holds its own memory.
    eventually("the summaries on the panel", || async {
        browser.refresh().await.unwrap();
        cell_of(browser, "bravo", "Memories").await == "2" && cell_of(browser, "charlie", "Memories").await == "3"
    })
    .await;
    c.stop();
    eventually("c shown unreachable without a reload", || async {
        status_of(browser, "charlie").await.as_deref() == Some("unreachable")
    })
    .await;
    eventually("c's summary shown stale", || async {
        cell_of(browser, "charlie", "Projects").await.contains("(stale)")
    })
    .await;
    assert_eq!(cell_of(browser, "charlie", "Memories").await, "3", "the last known count stays");
    assert_eq!(status_of(browser, "bravo").await.as_deref(), Some("connected"));
    screenshot(browser, "03-instances-one-unreachable.png").await;
    browser.set_window_size(390, 844).await.unwrap();
    screenshot(browser, "07-instances-phone.png").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // A conflict: B (which holds the memory) stops, both edit it, B comes back.
    b.stop();
    edit(&h[0], &walrus, "The walrus colony meets at the northern beach at dawn, on Sundays");
    edit(&h[1], &walrus, "The walrus colony moved to the southern cove");
    let b = Served::start(&h[1]);
    until("one conflict on each", || conflicts(&h[0]).len() == 1 && conflicts(&h[1]).len() == 1);
    let conflict = conflicts(&h[0])[0]["id"].as_str().unwrap().to_string();

    browser.goto(&a.url("/nest/conflicts")).await.unwrap();
    let row = format!(r#"tr[data-conflict="{conflict}"]"#);
    eventually("the conflict listed", || async { browser.find(Locator::Css(&row)).await.is_ok() }).await;
    screenshot(browser, "04-conflicts.png").await;
    browser.find(Locator::Css(&format!("{row} a"))).await.unwrap().click().await.unwrap();
    let detail = format!("/nest/conflicts/{conflict}");
    eventually("the conflict page", || path_is(browser, &detail)).await;
    let differing = r#"tr.differs[data-differs="content"]"#;
    assert!(text_of(browser, &format!("{differing} td.local")).await.contains("on Sundays"));
    assert!(text_of(browser, &format!("{differing} td.remote")).await.contains("southern cove"));
    screenshot(browser, "05-conflict-detail.png").await;

    // A form without its CSRF token is refused and changes nothing.
    let http = reqwest::Client::new();
    let forged = http
        .post(a.url(&format!("/nest/conflicts/{conflict}/resolve")))
        .header("Cookie", format!("roost_nest={session}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("keep=local")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.text().await.unwrap().contains("security token"));
    assert_eq!(conflicts(&h[0]).len(), 1, "the forged form resolved nothing");

    // Keep remote: gone here, then on B, with B's version kept on both.
    browser.find(Locator::Css("#keep-remote")).await.unwrap().click().await.unwrap();
    eventually("back on the list", || path_is(browser, "/nest/conflicts")).await;
    assert!(text_of(browser, ".flash").await.contains("kept the remote version"));
    assert!(browser.find(Locator::Css(&row)).await.is_err(), "the conflict left the list");
    let kept = "The walrus colony moved to the southern cove";
    assert_eq!(content(&h[0], &walrus).as_deref(), Some(kept));
    eventually("the resolution reaches b", || async { open_conflicts_on(&http, &b).await == 0 }).await;
    until("b keeps its version", || content(&h[1], &walrus).as_deref() == Some(kept));

    // A second conflict on the same memory (B holds the resolution, so both
    // edits follow it), resolved with a merge typed into the form.
    b.stop();
    edit(&h[0], &walrus, "The colony meets at dawn");
    edit(&h[1], &walrus, "The colony meets at dusk");
    let b = Served::start(&h[1]);
    until("a second conflict on each", || conflicts(&h[0]).len() == 1 && conflicts(&h[1]).len() == 1);
    let second = conflicts(&h[0])[0]["id"].as_str().unwrap().to_string();
    browser.goto(&a.url(&format!("/nest/conflicts/{second}"))).await.unwrap();
    browser.find(Locator::Css("details.merge summary")).await.unwrap().click().await.unwrap();
    let merged = "The colony meets at dawn, and again at dusk";
    let field = browser.find(Locator::Css("#field-content")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(merged).await.unwrap();
    browser.find(Locator::Css("#merge")).await.unwrap().click().await.unwrap();
    eventually("back on the list after the merge", || path_is(browser, "/nest/conflicts")).await;
    assert!(text_of(browser, ".flash").await.contains("saved the merged version"));
    assert_eq!(content(&h[0], &walrus).as_deref(), Some(merged));
    eventually("the merge reaches b", || async { open_conflicts_on(&http, &b).await == 0 }).await;
    until("b has the merged text", || content(&h[1], &walrus).as_deref() == Some(merged));

    // Memory search finds the memory.
    browser.goto(&a.url("/nest/memories")).await.unwrap();
    let search = browser.find(Locator::Css("input[name=q]")).await.unwrap();
    search.send_keys("colony").await.unwrap();
    browser.find(Locator::Css("form.search button")).await.unwrap().click().await.unwrap();
    let hit = format!(r#"li.result[data-memory="{walrus}"]"#);
    eventually("the search result", || async { browser.find(Locator::Css(&hit)).await.is_ok() }).await;
    assert!(text_of(browser, ".searched").await.contains("searched: this instance"));
    screenshot(browser, "06-memories-search.png").await;

    // All instances: C is back. B and C run on new ports and tell A where
    // they are when they reconnect. C's own memory shows up, readable here.
    let c = Served::start(&h[2]);
    browser.goto(&a.url("/nest/memories?q=colony&all=1")).await.unwrap();
    let from_c = format!(r#"li.result[data-memory="{penguin}"]"#);
    eventually("charlie's memory among the results", || async {
        browser.goto(&a.url("/nest/memories?q=colony&all=1")).await.unwrap();
        browser.find(Locator::Css(&from_c)).await.is_ok()
            && text_of(browser, &format!("{hit} .holders")).await.split(", ").count() == 3
    })
    .await;
    assert_eq!(text_of(browser, &format!("{from_c} .holders")).await, "charlie");
    screenshot(browser, "08-memories-all-instances.png").await;
    browser.find(Locator::Css(&format!("{from_c} a"))).await.unwrap().click().await.unwrap();
    let page_of_c = format!("/nest/memories/{penguin}");
    eventually("charlie's memory page", || path_is(browser, &page_of_c)).await;
    assert_eq!(text_of(browser, ".held-on").await, "charlie");
    assert!(text_of(browser, "dl.fields").await.contains("The penguin colony lives on charlie only"));
    screenshot(browser, "09-memory-on-another-instance.png").await;

    // The agent: a message said on bravo is answered by whichever machine is
    // awake; alpha's Agent page lists the topic and shows the reply, its
    // stage, the machine that sent it and its epoch.
    let said = roost(&h[1], &["agent", "say", "nest-tour", "hello from bravo"]);
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
    browser.goto(&a.url("/nest/agent")).await.unwrap();
    eventually("the topic on alpha's Agent page", || async {
        browser.goto(&a.url("/nest/agent")).await.unwrap();
        browser.find(Locator::Css(r#"tr[data-topic="nest-tour"] a"#)).await.is_ok()
    })
    .await;
    assert!(!text_of(browser, ".agent-status").await.is_empty());
    // The awake role beside it: who holds it, at which epoch, whether the
    // others could fail over, and when this machine took it.
    let holder = text_of(browser, ".role-panel .holder").await;
    assert!(
        ["alpha", "bravo", "charlie"].iter().any(|n| holder.starts_with(n)) && holder.contains("epoch"),
        "{holder}"
    );
    assert!(["awake", "standby"].contains(&text_of(browser, ".role-panel .role").await.as_str()));
    assert!(!text_of(browser, ".role-panel .failover").await.is_empty());
    screenshot(browser, "11-agent.png").await;
    browser.find(Locator::Css(r#"tr[data-topic="nest-tour"] a"#)).await.unwrap().click().await.unwrap();
    eventually("the topic's page", || path_is(browser, "/nest/agent/topics/nest-tour")).await;
    eventually("the reply marked sent", || async {
        browser.refresh().await.unwrap();
        text_of(browser, "li.message .stage").await == "sent"
    })
    .await;
    assert_eq!(text_of(browser, "li.message .said").await, "hello from bravo");
    assert!(text_of(browser, "li.message .reply").await.contains("hello from bravo"));
    let by = text_of(browser, "li.message .replied-by").await;
    assert!(["alpha", "bravo", "charlie"].contains(&by.as_str()), "replied by {by:?}");
    assert!(text_of(browser, "li.message .epoch").await.parse::<u64>().is_ok_and(|e| e >= 1));
    screenshot(browser, "12-agent-topic.png").await;

    // The Machines page: every machine with its part in the role.
    browser.goto(&a.url("/nest/machines")).await.unwrap();
    for name in ["alpha", "bravo", "charlie"] {
        let row = browser.find(Locator::Css(&format!(r#"tr[data-machine="{name}"]"#))).await;
        assert!(row.is_ok(), "{name} is not on the Machines page");
    }
    let roles: Vec<String> = {
        let mut roles = Vec::new();
        for cell in browser.find_all(Locator::Css("table.machines td.role")).await.unwrap() {
            roles.push(cell.text().await.unwrap());
        }
        roles
    };
    assert!(roles.iter().any(|r| r == "awake"), "no awake machine listed: {roles:?}");

    // A pairing code minted in the browser lets a new machine join with
    // `roost join`, as the page says to run it.
    browser.find(Locator::Css("section.pairing form button")).await.unwrap().click().await.unwrap();
    eventually("the code on offer", || async { !text_of(browser, ".offer .code").await.is_empty() }).await;
    let code = text_of(browser, ".offer .code").await;
    let join = text_of(browser, ".offer .join").await;
    assert!(join.starts_with("roost join http") && join.ends_with(&format!("--code {code}")), "{join}");
    screenshot(browser, "13-machines-pairing-code.png").await;
    let delta = dir.path().join("delta");
    succeeded(roost(&delta, &["init", "--name", "delta"]));
    let url = join.split_whitespace().nth(2).unwrap().to_string();
    succeeded(roost(&delta, &["join", &url, "--code", &code, "--yes"]));
    browser.refresh().await.unwrap();
    assert!(browser.find(Locator::Css(r#"tr[data-machine="delta"]"#)).await.is_ok(), "delta is not listed");
    assert!(text_of(browser, ".offer").await.contains("delta joined"));

    // Renaming this machine: the row follows.
    let name = browser.find(Locator::Css(r#"section.rename input[name="name"]"#)).await.unwrap();
    name.clear().await.unwrap();
    name.send_keys("alpha-home").await.unwrap();
    browser.find(Locator::Css("section.rename button")).await.unwrap().click().await.unwrap();
    eventually("the renamed row", || async {
        browser.find(Locator::Css(r#"tr[data-machine="alpha-home"]"#)).await.is_ok()
    })
    .await;
    assert!(text_of(browser, ".flash").await.contains("alpha-home"), "no word of the rename");
    assert_eq!(json_of(roost(&h[0], &["whoami", "--json"]))["name"], "alpha-home");

    // Revoking charlie from the page rotates the chain's identity; the
    // revoke button needs its box ticked.
    let first_id = json_of(roost(&h[0], &["whoami", "--json"]))["roost_id"].as_str().unwrap().to_string();
    let charlie_form = r#"tr[data-machine="charlie"] form.revoke"#;
    browser.find(Locator::Css(&format!("{charlie_form} input[name=confirm]"))).await.unwrap().click().await.unwrap();
    screenshot(browser, "14-machines-revoke.png").await;
    browser.find(Locator::Css(&format!("{charlie_form} button"))).await.unwrap().click().await.unwrap();
    eventually("charlie marked revoked", || async {
        browser.find(Locator::Css(r#"tr[data-machine="charlie"][data-status="revoked"]"#)).await.is_ok()
    })
    .await;
    let rotated_id = json_of(roost(&h[0], &["whoami", "--json"]))["roost_id"].as_str().unwrap().to_string();
    assert_ne!(rotated_id, first_id);
    browser.goto(&a.url("/nest")).await.unwrap();
    assert!(text_of(browser, ".roost-id").await.contains(&rotated_id));
    assert!(text_of(browser, ".earlier-id").await.contains(&first_id));
    screenshot(browser, "10-instances-after-a-revocation.png").await;

    // Log out: the session is gone.
    browser.goto(&a.url("/nest")).await.unwrap();
    browser.find(Locator::Css("form.logout button")).await.unwrap().click().await.unwrap();
    eventually("the login page again", || path_is(browser, "/nest/login")).await;
    let after = http.get(a.url("/nest")).header("Cookie", format!("roost_nest={session}")).send().await.unwrap();
    assert_eq!(after.url().path(), "/nest/login", "the old session no longer admits");

    browser.clone().close().await.unwrap();
    drop((a, b, c));
}

/// The double-submit token of a fresh login form: the cookie and the field carry the same value.
async fn login_token(http: &reqwest::Client, served: &Served) -> String {
    let page = http.get(served.url("/nest/login")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let token = cookie.strip_prefix("roost_nest_login=").and_then(|rest| rest.split(';').next()).unwrap();
    assert!(page.text().await.unwrap().contains(&format!(r#"name="csrf" value="{token}""#)));
    token.to_string()
}

#[tokio::test]
async fn logins_are_limited_and_need_their_form_token() {
    common::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("alpha");
    succeeded(roost(&home, &["init", "--name", "alpha"]));
    let served = Served::start(&home);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |token: &str, password: &str| {
        http.post(served.url("/nest/login"))
            .header("Cookie", format!("roost_nest_login={token}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("csrf={token}&password={}", password.replace(' ', "+")))
            .send()
    };

    let unset = http.get(served.url("/nest/login")).send().await.unwrap().text().await.unwrap();
    assert!(unset.contains("roost nest password"), "says how to set a password");
    set_password(&home);
    let token = login_token(&http, &served).await;

    let without_token = http
        .post(served.url("/nest/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 403, "no double-submit cookie, no login");

    for attempt in 1..=5 {
        let refused = login(&token, "wrong password").await.unwrap();
        assert_eq!(refused.status(), 401, "attempt {attempt}");
    }
    let limited = login(&token, "wrong password").await.unwrap();
    assert_eq!(limited.status(), 429, "the sixth wrong attempt in a minute");
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let right_but_limited = login(&token, PASSWORD).await.unwrap();
    assert_eq!(right_but_limited.status(), 429, "even the right password waits");
}

/// The Pool page in a real browser, on three machines with `[pool]
/// enabled`: every machine and conversation is listed, and the move button
/// moves a conversation to the machine chosen, pinned there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_page_moves_a_conversation_in_a_real_browser() {
    common::install_tls_provider();
    let driver = Driver::start();
    let dir = tempfile::tempdir().unwrap();
    let pool_on = |h: &[PathBuf]| {
        for home in h {
            let config = home.join("config.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(&config, format!("{text}\n[pool]\nenabled = true\n")).unwrap();
        }
    };
    let (h, served) = common::chain_with(dir.path(), &["alpha", "bravo", "charlie"], &[], pool_on, |_| 0);
    set_password(&h[0]);
    let a = &served[0];
    until("three machines online in the pool", || {
        common::get_json(&a.addr, "/api/v1/pool").is_some_and(|p| {
            p["machines"].as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["online"] == true))
        })
    });
    for topic in ["garden", "travel", "books"] {
        let body = json!({"channel": "cli", "topic": topic, "message_id": topic, "text": "hello"});
        let (status, answer) = common::post_json(&a.addr, "/api/v1/agent/messages", &body);
        assert_eq!(status, 202, "{answer}");
    }
    until("three conversations placed", || {
        common::get_json(&a.addr, "/api/v1/pool").is_some_and(|p| p["topics"].as_array().is_some_and(|t| t.len() == 3))
    });

    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path()).await;
    let browser = &browser;
    browser.goto(&a.url("/nest/pool")).await.unwrap();
    eventually("the login page", || path_is(browser, "/nest/login")).await;
    log_in(browser, PASSWORD).await;
    eventually("the instances page", || path_is(browser, "/nest")).await;
    browser.goto(&a.url("/nest/pool")).await.unwrap();
    for nickname in ["alpha", "bravo", "charlie"] {
        let row = format!(r#"table.pool-machines tr[data-machine="{nickname}"][data-health="ok"]"#);
        assert!(browser.find(Locator::Css(&row)).await.is_ok(), "{nickname} is not listed healthy");
    }
    let row = r#"table.pool-topics tr[data-topic="garden"]"#;
    let placed = browser.find(Locator::Css(row)).await.unwrap().attr("data-placed").await.unwrap().unwrap();
    let to = ["alpha", "bravo", "charlie"].into_iter().find(|n| *n != placed).unwrap();
    let select = browser.find(Locator::Css(&format!("{row} select[name=to]"))).await.unwrap();
    let to_id =
        json_of(roost(&h[["alpha", "bravo", "charlie"].iter().position(|n| *n == to).unwrap()], &["whoami", "--json"]))
            ["instance_id"]
            .as_str()
            .unwrap()
            .to_string();
    select.select_by_value(&to_id).await.unwrap();
    screenshot(browser, "15-pool.png").await;
    browser.find(Locator::Css(&format!("{row} button"))).await.unwrap().click().await.unwrap();
    eventually("word of the move", || async { text_of(browser, ".flash").await == format!("moved garden to {to}") })
        .await;
    let moved = format!(r#"table.pool-topics tr[data-topic="garden"][data-placed="{to}"]"#);
    assert!(browser.find(Locator::Css(&moved)).await.is_ok(), "the row does not show the move");
    assert!(text_of(browser, &format!("{moved} td.placed")).await.contains("pinned"));
    let placement = common::get_json(&served[1].addr, "/api/v1/pool/placement?topic=garden").unwrap();
    assert_eq!((placement["machine"].as_str(), placement["reason"].as_str()), (Some(to_id.as_str()), Some("pinned")));
    // The same conversation again, to where it is: nothing moves, and the page says so.
    let select = browser.find(Locator::Css(&format!("{row} select[name=to]"))).await.unwrap();
    select.select_by_value(&to_id).await.unwrap();
    browser.find(Locator::Css(&format!("{row} button"))).await.unwrap().click().await.unwrap();
    eventually("word that it is there already", || async {
        text_of(browser, ".flash").await == format!("garden already runs on {to}")
    })
    .await;
    screenshot(browser, "16-pool-moved.png").await;
    // A nickname typed on the page is the machine's from then on.
    let form = r#"table.pool-machines tr[data-machine="bravo"] form.nickname"#;
    let field = browser.find(Locator::Css(&format!("{form} input[name=nickname]"))).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("bravo-box").await.unwrap();
    browser.find(Locator::Css(&format!("{form} button"))).await.unwrap().click().await.unwrap();
    eventually("word of the nickname", || async {
        text_of(browser, ".flash").await == "The machine is now called bravo-box."
    })
    .await;
    assert!(browser.find(Locator::Css(r#"table.pool-machines tr[data-machine="bravo-box"]"#)).await.is_ok());
    let bravo = common::get_json(&served[2].addr, "/api/v1/pool/machines/bravo-box").unwrap();
    assert_eq!(bravo["name"], "bravo");
    browser.clone().close().await.unwrap();
}
