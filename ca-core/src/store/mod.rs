//! The `Store` seam: all durable state behind one trait, every state change one
//! transaction. [`SqlStore`] implements it for SQLite (embedded default) and
//! PostgreSQL with the same portable SQL through sqlx's `Any` driver.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::AnyConnection;
// Single-row reads use `fetch_all`: a SQLite statement left un-stepped by
// `fetch_one`/`fetch_optional` keeps its read transaction (and so a stale WAL
// snapshot) open on that pooled connection, hiding later commits from other
// processes.
//
// Dynamic SQL here only ever interpolates fixed column lists and `$n`
// placeholders; every value is bound.
use sqlx::{AnyPool, AssertSqlSafe, Row};
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use crate::audit::{event_hash, AuditDraft, AuditEvent};
use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::pki::crl::{CrlPiece, RevokedEntry};
use crate::reason::RevocationReason;
use crate::tokens::{Role, TokenRecord};

mod audit;
mod certificates;
mod console;
mod crl;
mod insert_queue;
mod issuers;
mod pickups;
#[cfg(test)]
mod tests;
mod tokens;

pub use audit::AuditStore;
use audit::*;
pub use certificates::*;
pub use console::*;
pub use crl::*;
use insert_queue::*;
pub use issuers::*;
pub use pickups::{
    MailState, NewPickup, PickupRecord, PickupState, PickupStore, ReminderDue, SealedPickup,
    WrongCode,
};
pub use tokens::TokenStore;

/// [`Store`] over SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    /// Write transactions of this process take turns here, so they never
    /// meet inside SQLite, whose busy handler backs off in whole milliseconds.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Queue of the group-committing certificate writer.
    inserts: tokio::sync::mpsc::Sender<InsertJob>,
    /// SQLite or PostgreSQL (the few statements that differ).
    sqlite: bool,
    /// The pieces of the CRL each issuer last read back (see
    /// [`CrlStore::latest_crl`]): at most one CRL per issuer.
    crl_pieces: std::sync::Mutex<std::collections::HashMap<u64, CrlPieceCache>>,
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| Error::Store(format!("bad timestamp {secs}: {e}")))
}

/// The single row a statement returns. (Reads use `fetch_all`; see the note at the top.)
trait OneRow {
    fn one(self) -> Result<AnyRow>;
}

impl OneRow for Vec<AnyRow> {
    fn one(self) -> Result<AnyRow> {
        self.into_iter()
            .next()
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Run after each SQLite connection is opened ([`on_sqlite_connection`]).
static SQLITE_CONNECTED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets a function to run after each SQLite connection is opened, on the
/// task that opened it; the connection's own thread exists by then. The
/// server uses it to let those threads run on any CPU (ca-server's
/// `affinity`). Set once; later calls are ignored.
pub fn on_sqlite_connection(hook: fn()) {
    let _ = SQLITE_CONNECTED.set(hook);
}
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

impl SqlStore {
    /// Connects to `url` (`sqlite://path`, `postgres://…`). SQLite runs in WAL
    /// mode with `synchronous=FULL`: a commit is on disk when it returns.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid database_url: {e}")))?;
        if is_sqlite {
            check_writable_dir(url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 16 })
            // A ping before each use finds a dropped PostgreSQL connection; a
            // SQLite file cannot drop, and the ping was a round trip to the
            // connection's thread on every acquire.
            .test_before_acquire(!is_sqlite)
            // A database that went away must fail requests fast (503), not
            // hold them: PostgreSQL gets 3 s. SQLite waits longer for its
            // few connections under a burst of writes, never for a network.
            .acquire_timeout(StdDuration::from_secs(if is_sqlite { 15 } else { 3 }))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 15000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        if let Some(hook) = SQLITE_CONNECTED.get() {
                            hook();
                        }
                    }
                    Ok(())
                })
            })
            // A COMMIT that SQLite refused (disk full, I/O error) leaves its
            // transaction open on the connection, and sqlx then hands the
            // connection out again inside it: later writes fail with
            // SQLITE_BUSY_SNAPSHOT on its stale snapshot. A connection
            // coming back to the pool is therefore always rolled back (an
            // error here just means there was nothing to roll back).
            .after_release(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| Error::Store(format!("cannot open database: {e}")))?;
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let (inserts, jobs) = tokio::sync::mpsc::channel(MAX_QUEUED);
        tokio::spawn(run_inserts(
            pool.clone(),
            Arc::clone(&writer),
            jobs,
            is_sqlite,
        ));
        Ok(SqlStore {
            pool,
            writer,
            inserts,
            sqlite: is_sqlite,
            crl_pieces: Default::default(),
        })
    }

    /// Starts an audited transaction: locks the chain head first, which takes
    /// the write lock (SQLite) or the head row lock (PostgreSQL) and so
    /// serialises all state changes.
    async fn begin(&self, draft: AuditDraft, now: OffsetDateTime) -> Result<(Tx, OpenAudit)> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let mut tx = self.pool.begin().await?;
        let head = lock_audit_head(&mut tx).await?;
        let open = OpenAudit {
            _writer: writer,
            head,
            at: ts(now),
            draft,
        };
        Ok((tx, open))
    }

    /// The DER of published CRL `number`, read a piece at a time into one
    /// buffer of the right size; `None` if a piece is gone (superseded).
    async fn crl_der(&self, issuer: i64, number: i64) -> Result<Option<Vec<u8>>> {
        let sizes = sqlx::query(
            "SELECT count(*) AS n, coalesce(sum(length(data)), 0) AS len FROM crl_pieces WHERE issuer = $2 AND number = $1",
        )
        .bind(number)
        .bind(issuer)
        .fetch_all(&self.pool)
        .await?
        .one()?;
        let pieces: i64 = sizes.try_get("n")?;
        let len: i64 = sizes.try_get("len")?;
        if pieces == 0 {
            return Ok(None);
        }
        let mut der = Vec::with_capacity(len as usize);
        for idx in 0..pieces {
            let row = sqlx::query(
                "SELECT data FROM crl_pieces WHERE number = $1 AND idx = $2 AND issuer = $3",
            )
            .bind(number)
            .bind(idx)
            .bind(issuer)
            .fetch_all(&self.pool)
            .await?;
            let Some(row) = row.first() else {
                return Ok(None);
            };
            der.extend_from_slice(&row.try_get::<Vec<u8>, _>("data")?);
        }
        Ok(Some(der))
    }

    /// Appends the event, moves the head, commits.
    async fn commit(&self, mut tx: Tx, mut open: OpenAudit) -> Result<()> {
        let event = open.head.append(&open.draft, open.at);
        insert_events(&mut tx, &[event]).await?;
        store_audit_head(&mut tx, &open.head).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// SQLite in WAL mode writes beside its database file (`-wal`, `-shm`) even
/// to read; on a full or read-only file system the pool would only time out
/// ("pool timed out while waiting for an open connection") after its 15 s.
/// A probe file says at once what is wrong, naming the directory.
fn check_writable_dir(url: &str) -> Result<()> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(()); // in memory
    }
    let dir = match std::path::Path::new(path).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Ok(()); // the open reports the missing directory itself
    }
    let probe = dir.join(format!(".ca-write-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // EROFS, ENOSPC, EDQUOT: the disk, not the request.
        Err(e) if matches!(e.raw_os_error(), Some(30 | 28 | 122)) => Err(Error::StorageFull(
            format!("cannot write in {}: {e}", dir.display()),
        )),
        Err(_) => Ok(()), // permissions and the rest: the open names them
    }
}

/// Durable state. Implementations make each method one transaction; the
/// methods are grouped by aggregate in the supertraits (one file each).
#[async_trait]
pub trait Store:
    CertificateStore
    + CrlStore
    + IssuerStore
    + AuditStore
    + TokenStore
    + ConsoleSessionStore
    + PickupStore
{
    /// Creates or upgrades the schema.
    async fn migrate(&self) -> Result<()>;

    /// A consistent copy of the whole database in the file `path` while other
    /// processes go on writing (SQLite `VACUUM INTO`). PostgreSQL: refused,
    /// naming `pg_dump`, which does the same for a server database.
    async fn snapshot_into(&self, path: &std::path::Path) -> Result<()>;

    /// A named setting.
    async fn meta(&self, name: &str) -> Result<Option<String>>;

    /// Sets a named setting.
    async fn set_meta(&self, name: &str, value: &str) -> Result<()>;
}

#[async_trait]
impl Store for SqlStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| Error::Store(format!("schema migration failed: {e}")))
    }

    async fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        if !self.sqlite {
            return Err(Error::Conflict(
                "the store is PostgreSQL: back its database up with pg_dump (see the README, \"Backup and restore\"); `ca-cli backup` then archives the data directory and records where the database stood".into(),
            ));
        }
        let target = path.to_str().ok_or_else(|| {
            Error::InvalidInput(format!("backup path {} is not UTF-8", path.display()))
        })?;
        // VACUUM INTO reads in one transaction: the copy is the database as
        // of one commit, while writers carry on (WAL mode).
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn meta(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM ca_meta WHERE name = $1")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ca_meta WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO ca_meta (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
