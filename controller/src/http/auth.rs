//! The write guard: every request that is not GET or HEAD must carry the configured bearer token.
//!
//! The check runs before routing, so a write to any path, known or not, is refused the same way
//! without the token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::warn;

use super::error::error_response;

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// The token of an `Authorization: Bearer <token>` header, or what is wrong with the header.
fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers.get(header::AUTHORIZATION).ok_or(
        "this request changes something and needs an `Authorization: Bearer <token>` header",
    )?;
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not plain text")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("the Authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must use the Bearer scheme");
    }
    Ok(token.trim())
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

pub(super) async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(expected) = token.as_deref() else {
        warn!(%method, %path, "write refused: no write token is configured");
        return error_response(
            StatusCode::FORBIDDEN,
            "writes are disabled: this controller has no write token configured",
        );
    };
    match bearer(request.headers()) {
        Ok(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Ok(_) => {
            warn!(%method, %path, "write refused: wrong bearer token");
            unauthorized(
                "the bearer token is not the one configured",
                "Bearer error=\"invalid_token\"",
            )
        }
        Err(why) => {
            warn!(%method, %path, "write refused: no bearer token");
            unauthorized(why, "Bearer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_compare_equal_and_others_do_not() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        // A prefix padded with NUL bytes must not pass for the token.
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn bearer_header_is_parsed_and_mistakes_are_named() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).unwrap_err().contains("Authorization"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&h).unwrap_err().contains("Bearer"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(bearer(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok"),
        );
        assert_eq!(bearer(&h), Ok("tok"));
    }
}
