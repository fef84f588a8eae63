//! The Machines page: every machine of the chain with its part in the role,
//! and what a person does to them here: mint a pairing code for a new one,
//! register a running one by its URL, rename this one, revoke one. Each
//! action is the same call the CLI makes (`roost pair`, `roost instance
//! register|revoke`, `roost rename`), then the running gateway takes the
//! change at once.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use roost_identity::pairing::{MAX_ATTEMPTS, Offer};
use roost_instance::{Instance, InstanceError, unix_now};

use super::login::SignedForm;
use super::session::Visitor;
use super::templates::{MachinesPage, OfferView, page};
use super::{PageError, chrome};
use crate::AppState;
use crate::api::ApiError;
use crate::machines_api::{machine_rows, reload_identity};

/// How long a step on disk (the instance files, the store) may take.
const STEP_WAIT: Duration = Duration::from_secs(10);
/// How long the machine being registered has to send its certificate.
const FETCH_WAIT: Duration = Duration::from_secs(10);

fn back(state: &AppState, visitor: &Visitor, message: String) -> Response {
    state.nest.sessions.flash(&visitor.id, message);
    Redirect::to("/nest/machines").into_response()
}

/// A person's mistake (a bad name, a machine of another chain) is 400;
/// what the store says keeps its status; the rest is 500.
fn failed(e: InstanceError) -> PageError {
    match e {
        InstanceError::BadName | InstanceError::Refused(_) | InstanceError::NoSeed => {
            PageError(StatusCode::BAD_REQUEST, e.to_string())
        }
        InstanceError::Store(e) => ApiError::from(e).into(),
        e => PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs `step` on this machine's instance, opened afresh from disk, off the
/// async threads and bounded.
async fn on_instance<T: Send + 'static>(
    state: &AppState,
    what: &'static str,
    step: impl FnOnce(&mut Instance, &roost_store::Store) -> Result<T, InstanceError> + Send + 'static,
) -> Result<T, PageError> {
    let home = state.instance.home.clone();
    let store = state.store.clone();
    let done = roost_tasks::blocking(what, STEP_WAIT, move || {
        let mut instance = Instance::open(&home)?;
        step(&mut instance, &store)
    })
    .await
    .map_err(ApiError::from)?;
    done.map_err(failed)
}

fn offer_view(offer: Offer, join_url: String, now: i64) -> OfferView {
    let usable = offer.check(now);
    let open = offer.joined.is_none() && usable.is_ok();
    let state = match (&offer.joined, usable) {
        (Some(name), _) => format!("used: {name} joined"),
        (None, Ok(())) => "open".to_string(),
        (None, Err(refusal)) => refusal.to_string(),
    };
    OfferView {
        join: format!("roost join {join_url} --code {}", offer.code),
        code: offer.code,
        open,
        state,
        minutes_left: (offer.expires_at - now).max(0) / 60,
        attempts_left: MAX_ATTEMPTS.saturating_sub(offer.attempts),
        sas: offer.sas,
    }
}

pub(crate) async fn list(State(state): State<Arc<AppState>>, visitor: Visitor) -> Result<Response, PageError> {
    let rows = machine_rows(&state).await?;
    let join_url = state.instance.advertised_urls().into_iter().next().unwrap_or_default();
    // The offer is a file in the home: no need to open the instance afresh.
    let instance = state.instance.clone();
    let offer = roost_tasks::blocking("reading the pairing offer", STEP_WAIT, move || instance.load_offer())
        .await
        .map_err(ApiError::from)?
        .map_err(failed)?;
    let offer = offer.map(|o| offer_view(o, join_url, unix_now()));
    let can_certify = state.instance.seed.is_some();
    let chrome = chrome(&state, &visitor, "machines");
    Ok(page(StatusCode::OK, &MachinesPage { chrome, rows, offer, can_certify }))
}

/// Mints a pairing code, as `roost pair --no-wait` does; the page shows it
/// with the command to run on the new machine.
pub(crate) async fn pair(State(state): State<Arc<AppState>>, form: SignedForm) -> Result<Response, PageError> {
    let code = on_instance(&state, "minting a pairing code", |instance, _| instance.offer_pairing_code()).await?;
    Ok(back(
        &state,
        &form.visitor,
        format!("Pairing code {} is on offer: run the command below on the new machine.", code.display()),
    ))
}

/// Registers a running machine of this chain by its gateway URL, as
/// `roost instance register URL` does: its certificate must be from this
/// chain's identity.
pub(crate) async fn register(State(state): State<Arc<AppState>>, form: SignedForm) -> Result<Response, PageError> {
    let url = form.field("url").unwrap_or_default().trim().trim_end_matches('/').to_string();
    let web = url.starts_with("http://") || url.starts_with("https://");
    if !web || roost_instance::addresses::host_and_port(&url).is_none_or(|(host, _)| host.is_empty()) {
        let message = format!("{url:?} is not a gateway URL: give one like http://laptop.lan:7151");
        return Err(PageError(StatusCode::BAD_REQUEST, message));
    }
    let text = fetch_certificate(&url).await?;
    let registering = url.clone();
    let cert = on_instance(&state, "registering a machine", move |instance, store| {
        instance.register_reached(store, &text, &registering)
    })
    .await?;
    if let Some(sync) = state.sync() {
        sync.registry_changed();
    }
    Ok(back(&state, &form.visitor, format!("Registered {} at {url}.", cert.claims.name)))
}

/// The certificate the gateway at `url` serves, bounded by [`FETCH_WAIT`].
async fn fetch_certificate(url: &str) -> Result<String, PageError> {
    let unreachable = |why: String| PageError(StatusCode::BAD_GATEWAY, format!("{url} did not answer: {why}"));
    let client = reqwest::Client::builder().timeout(FETCH_WAIT).build().map_err(|e| unreachable(e.to_string()))?;
    let answer = client
        .get(format!("{url}/api/v1/certificate"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| unreachable(e.to_string()))?;
    let body: serde_json::Value = answer.json().await.map_err(|e| unreachable(e.to_string()))?;
    body["certificate"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| PageError(StatusCode::BAD_GATEWAY, format!("{url} sent no certificate: is it a Roost gateway?")))
}

/// Renames this machine, as `roost rename NAME` does: a new certificate
/// the others take the next time they hear from it.
pub(crate) async fn rename(State(state): State<Arc<AppState>>, form: SignedForm) -> Result<Response, PageError> {
    let name = form.field("name").unwrap_or_default().to_string();
    let renamed = on_instance(&state, "renaming this machine", move |instance, store| {
        instance.rename(store, &name)?;
        Ok(instance.config.name.clone())
    })
    .await?;
    reload_identity(&state).await?;
    Ok(back(&state, &form.visitor, format!("This machine is now named {renamed}.")))
}

/// Revokes a machine for good, as `roost instance revoke` does, and moves
/// the chain to an identity the revoked machine never sees. The form must
/// say so: a revocation cannot be undone.
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    form: SignedForm,
) -> Result<Response, PageError> {
    if form.field("confirm") != Some("revoke") {
        let message = "A revocation is permanent: tick the box that says so, then revoke; nothing was done.";
        return Err(PageError(StatusCode::BAD_REQUEST, message.into()));
    }
    if id == state.instance.id {
        let message = "This machine cannot revoke itself here: run `roost leave` on it instead; nothing was done.";
        return Err(PageError(StatusCode::BAD_REQUEST, message.into()));
    }
    let (revoked, before) =
        on_instance(&state, "revoking a machine", move |instance, store| instance.revoke_and_rotate(store, &id))
            .await?;
    reload_identity(&state).await?;
    Ok(back(
        &state,
        &form.visitor,
        format!("Revoked {} for good; the chain's Roost ID moved on from {before}.", revoked.name),
    ))
}
