//! The Pool page: every machine of the pool with its nickname, capacity,
//! load and health, and every conversation with where it is placed, whether
//! a move pinned it there and which machine runs it now; a move button per
//! conversation and a nickname form per machine. Each action is the same
//! operation `roost pool move` and `roost pool nickname` make, run on the
//! coordinator wherever the page is served.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};

use super::PageError;
use super::chrome;
use super::login::SignedForm;
use super::session::Visitor;
use super::templates::{PoolMachineView, PoolPage, PoolTopicView, page};
use crate::AppState;
use crate::pool_api;

pub(crate) async fn show(State(state): State<Arc<AppState>>, visitor: Visitor) -> Result<Response, PageError> {
    let chrome = chrome(&state, &visitor, "pool");
    let pool = match pool_api::run(&state, "status", Map::new()).await {
        Ok(pool) => pool,
        Err(e) if e.0 == StatusCode::SERVICE_UNAVAILABLE => {
            let page_of = PoolPage { chrome, off: Some(e.1), machines: Vec::new(), topics: Vec::new() };
            return Ok(page(StatusCode::OK, &page_of));
        }
        Err(e) => return Err(e.into()),
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let machines: Vec<PoolMachineView> = pool["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| PoolMachineView {
            id: text(&m["id"]),
            name: text(&m["name"]),
            nickname: text(&m["nickname"]),
            role: text(&m["role"]),
            capacity: m["capacity"].as_u64().map_or_else(|| "—".to_string(), |c| c.to_string()),
            load: m["load"].as_u64().unwrap_or(0),
            health: text(&m["health"]),
        })
        .collect();
    let nickname = |id: &Value| {
        let id = id.as_str()?;
        machines.iter().find(|m| m.id == id).map(|m| m.nickname.clone())
    };
    let topics = pool["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| PoolTopicView {
            topic: text(&t["topic"]),
            placed: nickname(&t["machine"]).unwrap_or_else(|| text(&t["machine"])),
            pinned: t["pinned"] == true,
            running: nickname(&t["owner"]),
        })
        .collect();
    Ok(page(StatusCode::OK, &PoolPage { chrome, off: None, machines, topics }))
}

/// Moves a conversation, as `roost pool move TOPIC MACHINE [--confirm]`.
pub(crate) async fn move_topic(State(state): State<Arc<AppState>>, form: SignedForm) -> Response {
    let mut args = Map::new();
    args.insert("topic".into(), form.field("topic").unwrap_or_default().into());
    args.insert("to".into(), form.field("to").unwrap_or_default().into());
    args.insert("confirm".into(), (form.field("confirm") == Some("yes")).into());
    let said = match pool_api::run(&state, "transfer", args).await {
        Ok(moved) => moved["said"].as_str().unwrap_or_default().to_string(),
        Err(e) => format!("Not moved: {}", e.1),
    };
    back(&state, &form, said)
}

/// Names a machine, as `roost pool nickname MACHINE NAME`.
pub(crate) async fn nickname(State(state): State<Arc<AppState>>, form: SignedForm) -> Response {
    let mut args = Map::new();
    args.insert("machine".into(), form.field("machine").unwrap_or_default().into());
    args.insert("nickname".into(), form.field("nickname").unwrap_or_default().into());
    let said = match pool_api::run(&state, "nickname", args).await {
        Ok(named) => format!("The machine is now called {}.", named["nickname"].as_str().unwrap_or_default()),
        Err(e) => format!("Not renamed: {}", e.1),
    };
    back(&state, &form, said)
}

fn back(state: &AppState, form: &SignedForm, message: String) -> Response {
    state.nest.sessions.flash(&form.visitor.id, message);
    Redirect::to("/nest/pool").into_response()
}
