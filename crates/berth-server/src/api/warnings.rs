//! Warnings about a request that was accepted: fields berth does not know
//! or does not act on. They travel in `Warning` response headers, the way
//! Kubernetes reports unknown fields by default (`Warning: 299 - "unknown
//! field \"x\""`), so that clients written for IronWorker, which send
//! fields of their own, keep working while a person reading the headers
//! (or a client that prints them) learns what was not used.
//!
//! One middleware ([`layer`]) gives every request a [`Warnings`]
//! collector and writes what was collected into the response, whatever
//! the handler; request readers ([`Fields`](super::wire::Fields)) add to
//! it. So every endpoint reports the same way.

use super::error::ApiError;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, Mutex};

/// Most `Warning` headers on one response; the rest are counted in a last
/// one. A request of 100 tasks each with an unknown field must not make a
/// response with 100 header lines.
pub const MAX_WARNINGS: usize = 16;
/// Longest warning text, in characters (a field name can be as long as the
/// body allows).
pub const MAX_WARNING_CHARS: usize = 200;

/// The warnings of one request. Cheap to clone: clones share one list.
#[derive(Debug, Clone, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Adds a warning; one already given is not repeated.
    pub fn add(&self, text: impl Into<String>) {
        let text = text.into();
        // A panic while the lock was held left a list that is still a
        // list: keep using it.
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !list.contains(&text) {
            list.push(text);
        }
    }

    /// The warnings so far, in the order given.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Appends one `Warning` header per warning (at most [`MAX_WARNINGS`]).
    fn write_headers(&self, headers: &mut HeaderMap) {
        let list = self.list();
        if list.is_empty() {
            return;
        }
        tracing::debug!(warnings = ?list, "request accepted with warnings");
        let shown = if list.len() > MAX_WARNINGS {
            MAX_WARNINGS - 1
        } else {
            list.len()
        };
        let mut texts: Vec<String> = list[..shown].to_vec();
        if list.len() > shown {
            texts.push(format!("{} more warnings not shown", list.len() - shown));
        }
        for text in texts {
            // header_value only emits visible ASCII, so this cannot fail.
            if let Ok(value) = HeaderValue::from_str(&header_value(&text)) {
                headers.append(HeaderName::from_static("warning"), value);
            }
        }
    }
}

/// `299 - "TEXT"` (RFC 7234 §5.5: code 299, "miscellaneous persistent
/// warning"; no agent, `-`), with TEXT cut to [`MAX_WARNING_CHARS`],
/// characters outside visible ASCII written as `\u{…}`, and `"` and `\`
/// escaped as a quoted-string needs.
pub fn header_value(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 12);
    quoted.push_str("299 - \"");
    let mut chars = text.chars();
    for c in chars.by_ref().take(MAX_WARNING_CHARS) {
        let visible = c.is_ascii_graphic() || c == ' ';
        let escaped = if visible {
            c.to_string()
        } else {
            c.escape_unicode().to_string()
        };
        for e in escaped.chars() {
            if e == '"' || e == '\\' {
                quoted.push('\\');
            }
            quoted.push(e);
        }
    }
    if chars.next().is_some() {
        quoted.push_str("...");
    }
    quoted.push('"');
    quoted
}

/// The collector of the current request, put there by [`layer`].
impl<S: Send + Sync> FromRequestParts<S> for Warnings {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Warnings, ApiError> {
        parts
            .extensions
            .get::<Warnings>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("the API router has no warnings layer".to_owned()))
    }
}

/// The middleware: a fresh collector per request, its warnings written
/// into the response (errors included, where they explain the refusal's
/// neighbours).
pub async fn layer(mut req: Request, next: Next) -> Response {
    let warnings = Warnings::default();
    req.extensions_mut().insert(warnings.clone());
    let mut response = next.run(req).await;
    warnings.write_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_quoted_visible_ascii() {
        assert_eq!(
            header_value("unknown field \"tasks[0].x\""),
            r#"299 - "unknown field \"tasks[0].x\"""#
        );
        assert_eq!(header_value("a\\b"), r#"299 - "a\\b""#);
        // A newline or a non-ASCII name can neither split nor break the
        // header.
        assert_eq!(
            header_value("field \"é\nx\""),
            r#"299 - "field \"\\u{e9}\\u{a}x\"""#
        );
        let long = header_value(&"y".repeat(1000));
        assert!(long.len() < MAX_WARNING_CHARS + 20, "{long}");
        assert!(long.ends_with("...\""), "{long}");
        for text in ["é", "\u{0}", "\"", "\r\n", &"z".repeat(5000)] {
            assert!(
                HeaderValue::from_str(&header_value(text)).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn warnings_are_deduplicated_and_bounded() {
        let warnings = Warnings::default();
        warnings.add("a");
        warnings.add("a");
        warnings.add("b");
        assert_eq!(warnings.list(), vec!["a", "b"]);
        let mut headers = HeaderMap::new();
        warnings.write_headers(&mut headers);
        assert_eq!(headers.get_all("warning").iter().count(), 2);

        let many = Warnings::default();
        for i in 0..100 {
            many.add(format!("w{i}"));
        }
        let mut headers = HeaderMap::new();
        many.write_headers(&mut headers);
        let values: Vec<_> = headers.get_all("warning").iter().collect();
        assert_eq!(values.len(), MAX_WARNINGS);
        assert_eq!(
            values.last().and_then(|v| v.to_str().ok()),
            Some("299 - \"85 more warnings not shown\"")
        );
    }
}
