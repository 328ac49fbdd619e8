//! The store's errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no database berth supports.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// A task or schedule names a code the project does not have.
    #[error("unknown code {0:?}")]
    UnknownCode(String),
    /// The project (for tokens) does not exist.
    #[error("unknown project {0:?}")]
    UnknownProject(String),
    /// The operation does not fit the row's current state (for example a
    /// retry of a task that has not ended).
    #[error("{0}")]
    Conflict(String),
    /// A code upload would take the project's packages over its limit;
    /// nothing was stored.
    #[error(
        "this upload would bring the project's code packages to {would_use} bytes unpacked, \
         over the project's limit of {limit} bytes ({in_use} bytes in use now); delete codes \
         the project no longer needs, or ask the operator to raise the limit"
    )]
    QuotaExceeded {
        limit: i64,
        in_use: i64,
        would_use: i64,
    },
    /// The schema in the database is newer than this binary knows.
    #[error("database schema version {found} is newer than this berth ({known}); upgrade berth")]
    SchemaTooNew { found: i64, known: i64 },
    /// A stored value could not be read back (a corrupted row).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// A dispatch write of a server whose term of the dispatch lease is
    /// over (another server leads now, or the lease expired): nothing was
    /// written, and the caller must stop dispatching.
    #[error("this server no longer holds the dispatch lease (term {token}): write refused")]
    Fenced { token: i64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
