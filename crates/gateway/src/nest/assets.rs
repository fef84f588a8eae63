//! The Nest's stylesheet and script, embedded in the binary: no CDN, no
//! external fonts, nothing fetched from elsewhere.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("static/nest.css");
const JS: &str = include_str!("static/nest.js");

pub(crate) async fn file(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "nest.css" => (CSS, "text/css; charset=utf-8"),
        "nest.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    ([(CONTENT_TYPE, kind), (CACHE_CONTROL, "max-age=300")], body).into_response()
}
