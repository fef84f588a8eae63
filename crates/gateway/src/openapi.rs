//! The API's OpenAPI 3.1 description, generated from the handlers' typed
//! requests and answers (each handler's `#[utoipa::path]`), served at
//! `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{AppState, agent_api, api, federation_api, lease_api, machines_api, pair, pool_api, sync_api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roost",
        description = "One person's agent installation on several machines. Loopback callers naming a \
                       loopback host need no token; other machines of the chain send a single-use token \
                       (`Authorization: Bearer`). Every error is `{\"error\": \"...\"}`.",
    ),
    paths(
        api::health,
        api::certificate,
        api::instance,
        api::search,
        api::memory,
        api::instances,
        sync_api::status,
        sync_api::list,
        sync_api::show,
        sync_api::resolve,
        lease_api::status,
        lease_api::wakeup,
        lease_api::leave,
        machines_api::machines,
        machines_api::reload,
        agent_api::status,
        agent_api::receive,
        agent_api::topics,
        agent_api::topic,
        pool_api::status,
        pool_api::machine,
        pool_api::nickname,
        pool_api::placement,
        pool_api::transfer,
        federation_api::forward,
        federation_api::search,
        pair::start,
        pair::finish,
    ),
    modifiers(&TokenScheme, &LayerAnswers)
)]
struct ApiDoc;

/// Declares the `token` scheme the protected operations name.
struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some("A single-use token signed by a machine of this chain".into());
        components.add_security_scheme("token", SecurityScheme::Http(bearer));
    }
}

/// Adds the answers the gateway's layers give before any handler runs to
/// every operation they guard, so no handler repeats them: 401 from the
/// token check to each operation that names a security scheme, and from
/// the cross-site guard 403 (a web page's request) and 415 (a body not sent
/// as JSON) to each POST. An operation's own wording of one is kept.
struct LayerAnswers;

impl Modify for LayerAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                if operation.security.is_some() {
                    answers(operation, "401", "No valid token");
                }
            }
            if let Some(operation) = &mut item.post {
                answers(operation, "403", "A cross-site request");
                answers(operation, "415", "The body is not JSON");
            }
        }
    }
}

/// Declares that `operation` may answer `status` with an error body.
fn answers(operation: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
    let answer = ResponseBuilder::new().description(description).content("application/json", body).build();
    operation.responses.responses.entry(status.to_string()).or_insert(RefOr::T(answer));
}

/// The document, with this build's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// `/api/v1/openapi.json`: public, like `/health`; it describes, it holds
/// nothing of the store.
pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let doc = Arc::new(document());
    Router::new()
        .route("/api/v1/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .with_state(state)
}
