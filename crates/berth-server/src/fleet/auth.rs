//! Who is asking: a host joining (the join token), a host heartbeating
//! (its own heartbeat token, checked by the store with the host's id), or
//! an operator (an operator token).

use super::error::FleetError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// A caller presenting the fleet's join token.
pub struct Joiner;

/// A caller presenting an operator token.
pub struct Operator;

/// The bearer token of a request (checked by the handler against the
/// host it names: the store matches id and token together).
pub struct Bearer(pub String);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = FleetError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Bearer, FleetError> {
        bearer(&parts.headers).map(Bearer)
    }
}

impl FromRequestParts<AppState> for Joiner {
    type Rejection = FleetError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Joiner, FleetError> {
        let presented = bearer(&parts.headers)?;
        let Some(expected) = &state.config.fleet.join_token else {
            return Err(FleetError::unauthorized(
                "this server takes no joins: start it with --join-token-file",
            ));
        };
        // Compared as hashes, so the time taken says nothing about the secret.
        if Sha256::digest(presented.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return Err(FleetError::unauthorized("wrong join token"));
        }
        Ok(Joiner)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = FleetError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Operator, FleetError> {
        let presented = bearer(&parts.headers)?;
        if state.store.authenticate_operator(&presented).await? {
            Ok(Operator)
        } else {
            Err(FleetError::unauthorized(
                "an operator token is required (berth token create --operator)",
            ))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<String, FleetError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            FleetError::unauthorized("a token is required: Authorization: Bearer <token>")
        })?
        .to_str()
        .map_err(|_| FleetError::unauthorized("malformed Authorization header"))?;
    match value.trim().split_once(' ') {
        Some((scheme, secret))
            if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() =>
        {
            Ok(secret.trim().to_owned())
        }
        _ => Err(FleetError::unauthorized(
            "use Authorization: Bearer <token>",
        )),
    }
}
