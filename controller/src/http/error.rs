//! Errors as JSON: every 4xx and 5xx answer carries `{"status": N, "error": "what is wrong"}`.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    status: u16,
    error: &'a str,
}

/// An error answer with a sentence saying what is wrong.
pub(super) fn error_response(status: StatusCode, message: impl AsRef<str>) -> Response {
    let body = ErrorBody {
        status: status.as_u16(),
        error: message.as_ref(),
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A path shown in a message, cut short so a long request line is not echoed back whole.
fn shown_path(path: &str) -> String {
    const MAX: usize = 120;
    match path.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_owned(),
    }
}

pub(super) async fn not_found(request: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!(
            "no such page or endpoint: {} {}",
            request.method(),
            shown_path(request.uri().path())
        ),
    )
}

/// Largest plain-text error body turned into JSON; longer ones are replaced by the status text.
const MAX_TEXT_ERROR: usize = 16 * 1024;

/// Turns the error answers axum writes itself (an empty 405, a plain-text extractor rejection in
/// a merged route) into JSON error bodies. JSON answers pass through untouched.
pub(super) async fn explain_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = shown_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let status_text = || {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    };
    let message = match content_type {
        None if status == StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty())
                .map(|a| format!(" (allowed: {a})"))
                .unwrap_or_default();
            format!("{method} is not allowed on {path}{allowed}")
        }
        None => status_text(),
        Some(t) if t.starts_with("text/plain") => axum::body::to_bytes(body, MAX_TEXT_ERROR)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(status_text),
        Some(_) => return Response::from_parts(parts, body),
    };
    let mut json = error_response(status, message);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            json.headers_mut().insert(name, v.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_in_messages() {
        let long = "/x".repeat(200);
        let shown = shown_path(&long);
        assert_eq!(shown.chars().count(), 121);
        assert!(shown.ends_with('…'));
        assert_eq!(shown_path("/api/nope"), "/api/nope");
    }
}
