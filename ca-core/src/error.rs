//! The one error type of the CA. Every variant has a stable machine code
//! ([`Error::code`]); the wire mapping (HTTP status, exit code) lives in the
//! front ends, each in exactly one place.

use std::path::PathBuf;

/// Everything that can go wrong in the CA, worded for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied value is malformed (name, serial, duration, reason, CSR, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// A policy file, or the policy a caller named, is not usable.
    #[error("{0}")]
    Policy(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (an active certificate exists,
    /// a certificate is already revoked, a CA already exists, ...).
    #[error("{0}")]
    Conflict(String),
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The presented API token was valid but has passed its expiry time.
    #[error("{0}")]
    TokenExpired(String),
    /// The caller's role or tenant scope does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// An idempotent request was already carried out; its result cannot be delivered again.
    #[error("{message}")]
    AlreadyDone {
        /// What happened and what to do.
        message: String,
        /// The serial issued the first time.
        serial: String,
    },
    /// The CA key could not be unlocked, or the command needs it and none was given.
    #[error("{0}")]
    Key(String),
    /// The CA key's device cannot be reached now (a PKCS#11 token removed,
    /// an HSM down): nothing was changed, and the same request may succeed
    /// once it is back.
    #[error("{0}")]
    SignerUnavailable(String),
    /// Configuration is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The durable store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store cannot be reached right now (database down, connection cut,
    /// pool exhausted): nothing was changed, retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store cannot write: its disk is full or read-only. Nothing was
    /// changed; it works again once space is freed (or the file system is
    /// writable again).
    #[error("the store cannot write ({0}): the file system holding the data directory (or the database's disk) is full or read-only; nothing was changed — free space or remount it read-write, then retry")]
    StorageFull(String),
    /// A cryptographic operation failed (never caused by caller input).
    #[error("crypto: {0}")]
    Crypto(String),
    /// A file could not be read or written.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The audit chain does not verify.
    #[error("{0}")]
    AuditBroken(String),
    /// The CA cannot sign yet: an issuing CA waits for the certificate its
    /// root signs (`ca import-cert`). Nothing was changed.
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    /// A stable, machine-readable code for scripts and API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::Policy(_) => "invalid_policy",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::TokenExpired(_) => "token_expired",
            Error::Forbidden(_) => "forbidden",
            Error::AlreadyDone { .. } => "already_delivered",
            Error::Key(_) => "key_unavailable",
            Error::SignerUnavailable(_) => "signer_unavailable",
            Error::Config(_) => "invalid_config",
            Error::Store(_) => "store_error",
            Error::Unavailable(_) => "unavailable",
            Error::StorageFull(_) => "storage_full",
            Error::Crypto(_) => "crypto_error",
            Error::Io { .. } => "io_error",
            Error::AuditBroken(_) => "audit_broken",
            Error::NotReady(_) => "not_ready",
        }
    }

    /// True for errors caused by the server side, whose details must not reach a remote caller.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Store(_)
                | Error::Unavailable(_)
                | Error::StorageFull(_)
                | Error::Crypto(_)
                | Error::Io { .. }
                | Error::Config(_)
        )
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Crypto(e.to_string())
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Crypto(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Errors of reaching the database, as opposed to errors of a statement.
        let unreachable = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL: class 08 (connection exception), 57P01-57P03
            // (admin shutdown, crash shutdown, cannot connect now).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        };
        // SQLite's primary result codes (the low byte of the extended code):
        // 13 SQLITE_FULL, 8 SQLITE_READONLY, 10 SQLITE_IOERR (a write or fsync
        // that failed, e.g. ENOSPC); PostgreSQL 53100 disk_full, 25006
        // read_only_sql_transaction.
        let storage = match &e {
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                matches!(c.parse::<i64>().map(|n| n & 0xff), Ok(13 | 8 | 10))
                    || matches!(&*c, "53100" | "25006")
            }),
            sqlx::Error::Io(io) => io.raw_os_error() == Some(28) || io.raw_os_error() == Some(30),
            _ => false,
        };
        if storage {
            Error::StorageFull(e.to_string())
        } else if unreachable {
            Error::Unavailable(e.to_string())
        } else {
            Error::Store(e.to_string())
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
