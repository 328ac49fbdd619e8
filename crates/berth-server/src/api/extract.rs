//! Request extraction whose every failure is an [`ApiError`], so that bad
//! JSON, wrong content types, oversized bodies and bad query values are
//! answered as `{"msg": …}` like everything else, never with axum's
//! plain-text rejections.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use berth_store::Page;
use serde_json::Value;
use std::collections::BTreeMap;

/// Default and largest `per_page` of listings (IronWorker: 30 and 100).
pub const DEFAULT_PER_PAGE: i64 = 30;
pub const MAX_PER_PAGE: i64 = 100;

/// The `{id}` of the matched route.
pub struct IdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<IdParam, ApiError> {
        path_param(parts, "id").await.map(IdParam)
    }
}

/// A path parameter of the matched route, without axum's plain-text
/// rejections.
pub async fn path_param(parts: &mut Parts, name: &str) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::bad("the request path is not valid UTF-8"))?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::Internal(format!("route has no {{{name}}} parameter")))
}

/// `application/x-www-form-urlencoded` pairs of a query string, decoded.
/// Decoding never fails: invalid escapes are kept as they are, invalid
/// UTF-8 is replaced (the values are then refused by whoever reads them).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a request. Parameters nobody reads are ignored
/// (unlike JSON fields): IronWorker clients add their own, `oauth` first
/// of all.
#[derive(Debug, Default)]
pub struct QueryMap(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryMap, ApiError> {
        // A repeated parameter keeps its last value, as most frameworks do.
        Ok(QueryMap(
            query_pairs(parts.uri.query()).into_iter().collect(),
        ))
    }
}

impl QueryMap {
    /// A non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ApiError::bad(format!(
                        "query parameter {key} must be an integer, not {v:?}"
                    ))
                })
            })
            .transpose()
    }

    pub fn int_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.int(key)? {
            Some(i) if !range.contains(&i) => Err(ApiError::bad(format!(
                "query parameter {key} must be between {} and {}, not {i}",
                range.start(),
                range.end()
            ))),
            other => Ok(other),
        }
    }

    /// A boolean flag: `1`/`true` (or present without a value) set,
    /// `0`/`false` unset.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.0.get(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if matches!(&*v, "" | "1" | "true" | "yes") => Ok(true),
            Some(v) if matches!(&*v, "0" | "false" | "no") => Ok(false),
            Some(v) => Err(ApiError::bad(format!(
                "query parameter {key} must be 1/true or 0/false, not {v:?}"
            ))),
        }
    }

    /// `page` (from 0) and `per_page` (1–100, default 30).
    pub fn page(&self) -> Result<Page, ApiError> {
        let page = self.int("page")?.unwrap_or(0);
        if page < 0 {
            return Err(ApiError::bad(format!(
                "query parameter page must be 0 or more, not {page}"
            )));
        }
        let per_page = self.int("per_page")?.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::bad(format!(
                "query parameter per_page must be between 1 and {MAX_PER_PAGE}, not {per_page}"
            )));
        }
        // So that page * per_page cannot overflow in the store.
        if page > i64::MAX / MAX_PER_PAGE / 2 {
            return Err(ApiError::bad("query parameter page is too large"));
        }
        Ok(Page { page, per_page })
    }
}

/// The media type of a request, lower-cased and without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next().unwrap_or_default().trim();
    Some(media.to_ascii_lowercase())
}

/// Whether a media type is JSON (`application/json` or `…+json`).
pub fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Reads a whole body under the route's limit; too large → 413 saying
/// what the limit is.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("the request body is larger than {limit} bytes"))
        } else {
            ApiError::bad(format!(
                "could not read the request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// Parses JSON, answering 400 with the parser's explanation.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

/// A JSON request body, as a value to be read with
/// [`Fields`](super::wire::Fields). Requires a JSON content type (415
/// otherwise, so that a form post is not misread); the body limit is the
/// router's `max_json_bytes`.
pub struct JsonValue(pub Value);

impl FromRequest<crate::AppState> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<JsonValue, ApiError> {
        match media_type(req.headers()) {
            Some(media) if is_json(&media) => {}
            Some(media) => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, not {media}"
                )))
            }
            None => {
                return Err(ApiError::UnsupportedMediaType(
                    "expected Content-Type: application/json".to_owned(),
                ))
            }
        }
        let bytes = read_body(req, state.config.max_json_bytes).await?;
        parse_json(&bytes).map(JsonValue)
    }
}

/// An optional JSON body: an empty body is `None` whatever its content
/// type (clients post actions such as retry without one); a non-empty one
/// must be JSON.
pub struct OptionalJson(pub Option<Value>);

impl FromRequest<crate::AppState> for OptionalJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<OptionalJson, ApiError> {
        let media = media_type(req.headers());
        let bytes = read_body(req, state.config.max_json_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        match media {
            Some(media) if is_json(&media) => parse_json(&bytes).map(|v| OptionalJson(Some(v))),
            _ => Err(ApiError::UnsupportedMediaType(
                "a request body must be sent with Content-Type: application/json".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            query_pairs(Some("a=1&b=x%20y+z&c&&d=%zz&e=%e2%82%ac")),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz".into()),
                ("e".into(), "€".into()),
            ]
        );
        assert!(query_pairs(None).is_empty());
    }

    #[test]
    fn pages_are_bounded() {
        let q = |s: &str| QueryMap(query_pairs(Some(s)).into_iter().collect());
        assert_eq!(
            q("").page().unwrap(),
            Page {
                page: 0,
                per_page: 30
            }
        );
        assert_eq!(q("page=2&per_page=100").page().unwrap().page, 2);
        assert!(q("per_page=101").page().is_err());
        assert!(q("per_page=0").page().is_err());
        assert!(q("page=-1").page().is_err());
        assert!(q("page=x").page().is_err());
        assert!(q("flag=2").flag("flag").is_err());
        assert!(q("flag=TRUE").flag("flag").unwrap());
        assert!(!q("flag=0").flag("flag").unwrap());
    }
}
