//! A throw-away PostgreSQL database per test.
//!
//! `scripts/test.sh` starts the local cluster (`scripts/postgres.sh`) and
//! exports `BERTH_TEST_POSTGRES_URL`, a URL of a role that may create
//! databases. Each [`TestDatabase`] creates a uniquely named database and
//! drops it (with any connection still open) when dropped.

use std::process::Command;

/// The server URL tests use, or `None` when PostgreSQL tests are not set
/// up here. Under `CI=true` a missing URL is a failure, not a skip: CI must
/// run the PostgreSQL half of every suite.
pub fn server_url() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            // psql takes anything else for a database name and silently
            // falls back to the local socket as the current user.
            assert!(
                url.starts_with("postgres://") && !url.contains(char::is_whitespace),
                "BERTH_TEST_POSTGRES_URL must be one postgres://… URL, got {url:?}"
            );
            Some(url)
        }
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but BERTH_TEST_POSTGRES_URL is unset: run the suite through scripts/test.sh")
        }
        _ => None,
    }
}

/// A database that exists for the life of this value.
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh database on the test server; `None` when PostgreSQL
    /// tests are not set up (see [`server_url`]).
    pub fn create() -> Option<TestDatabase> {
        let server = server_url()?;
        let name = crate::unique("berth_test").replace('-', "_");
        psql(&server, &format!("CREATE DATABASE {name}"));
        let base = server
            .rsplit_once('/')
            .map(|(base, _)| base)
            .expect("BERTH_TEST_POSTGRES_URL must end in /DATABASE");
        let url = format!("{base}/{name}");
        Some(TestDatabase { server, name, url })
    }

    /// `postgres://…/<this database>`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // WITH (FORCE) ends sessions a test left open (PostgreSQL ≥ 13).
        psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql (Debian's postgresql-client) is required for PostgreSQL tests");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
