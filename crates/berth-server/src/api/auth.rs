//! Who is asking: the project a request's token opens.
//!
//! IronWorker clients send the token as `Authorization: OAuth <token>`;
//! some send `Bearer <token>`, and webhooks (where no header can be set)
//! put it in the `oauth` query parameter. All three are accepted.
//!
//! The secret is never compared here: the store looks it up by its
//! SHA-256, so no comparison's timing depends on it. The project id in the
//! path is public and compared plainly.

use super::error::ApiError;
use super::extract::{path_param, query_pairs};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

/// The caller's project: the request's token opens the project named in
/// its path. Every project route takes this first, so that nothing else
/// (not even reading the body) happens for an unauthenticated request.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub project_id: String,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Tenant, ApiError> {
        let path_project = path_param(parts, "project_id").await?;
        let secret = token(&parts.headers, parts.uri.query())?;
        let Some(project_id) = state.store.authenticate(&secret).await? else {
            return Err(ApiError::Unauthorized(
                "invalid or revoked token".to_owned(),
            ));
        };
        if project_id != path_project {
            // The same answer whether or not the other project exists.
            return Err(ApiError::Forbidden(
                "token does not grant access to this project".to_owned(),
            ));
        }
        Ok(Tenant { project_id })
    }
}

/// The secret a request presents, from its `Authorization` header or its
/// `oauth` query parameter.
fn token(headers: &HeaderMap, query: Option<&str>) -> Result<String, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".to_owned()))?;
        let (scheme, secret) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !(scheme.eq_ignore_ascii_case("oauth") || scheme.eq_ignore_ascii_case("bearer")) {
            return Err(ApiError::Unauthorized(
                "use Authorization: OAuth <token>".to_owned(),
            ));
        }
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(ApiError::Unauthorized(
                "the Authorization header has no token".to_owned(),
            ));
        }
        return Ok(secret.to_owned());
    }
    let from_query = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "oauth")
        .map(|(_, v)| v);
    match from_query {
        Some(secret) if !secret.is_empty() => Ok(secret),
        _ => Err(ApiError::Unauthorized(
            "a token is required: Authorization: OAuth <token> (or ?oauth=<token>)".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        assert_eq!(token(&with("OAuth abc"), None).unwrap(), "abc");
        assert_eq!(token(&with("oauth  abc "), None).unwrap(), "abc");
        assert_eq!(token(&with("Bearer abc"), None).unwrap(), "abc");
        assert_eq!(
            token(&HeaderMap::new(), Some("a=1&oauth=x%2By")).unwrap(),
            "x+y"
        );
        assert!(token(&with("Basic abc"), None).is_err());
        assert!(token(&with("OAuth"), None).is_err());
        assert!(token(&HeaderMap::new(), None).is_err());
        assert!(token(&HeaderMap::new(), Some("oauth=")).is_err());
    }
}
