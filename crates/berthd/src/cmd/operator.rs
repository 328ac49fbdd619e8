//! What the operator commands (`project`, `token`, `stack`) share: the
//! control plane's store, opened directly for one command.

use crate::cli::DatabaseArgs;
use crate::cmd::database_url;
use berth::cli::Global;
use berth::CliError;
use berth_core::{ErrorCode, ErrorReport};
use berth_store::{Store, StoreError};
use std::future::Future;

/// Opens the store, runs `f` on it in a current-thread runtime, and closes it.
pub fn with_store<T, F, Fut>(global: &Global, db: &DatabaseArgs, f: F) -> Result<T, CliError>
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let url = database_url(global, db);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CliError(ErrorReport::new(
                ErrorCode::Internal,
                format!("starting the async runtime: {e}"),
            ))
        })?;
    runtime.block_on(async {
        let store = Store::open(&url).await.map_err(|e| {
            let mut err = store_error(e);
            err.0.message = format!("opening the database {}: {}", redact(&url), err.0.message);
            err
        })?;
        let result = f(store.clone()).await;
        store.close().await;
        result.map_err(store_error)
    })
}

/// A store error with the code that fits it.
pub fn store_error(e: StoreError) -> CliError {
    let code = match &e {
        StoreError::UnsupportedUrl(_) => ErrorCode::InvalidArgument,
        StoreError::UnknownCode(_) | StoreError::UnknownProject(_) => ErrorCode::NotFound,
        StoreError::Conflict(_) => ErrorCode::InvalidState,
        StoreError::Corrupt { .. } => ErrorCode::StoreCorrupt,
        StoreError::Database(_) => ErrorCode::HostIo,
        _ => ErrorCode::Internal,
    };
    CliError(ErrorReport::new(code, e.to_string()))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Milliseconds since the epoch → "3m ago".
pub fn ago(ms: i64) -> String {
    berth::when::relative(ms / 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://berth:pw@db/berth"),
            "postgres://berth:***@db/berth"
        );
        assert_eq!(super::redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }
}
