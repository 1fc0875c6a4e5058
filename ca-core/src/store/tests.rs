use super::*;

fn crl(number: u64, len: usize) -> PublishedCrl {
    let now = crate::now();
    PublishedCrl {
        number,
        this_update: now,
        next_update: now + time::Duration::days(1),
        der: (0..len).map(|i| (i * 7 + number as usize) as u8).collect(),
        pieces: Vec::new(),
        revision: number,
        entries: 0,
        issuer: 1,
    }
}

/// A PostgreSQL database of its own for one test, from `CA_TEST_POSTGRES_URL`
/// (see the README); `None` outside CI when the variable is unset.
async fn postgres_store(tag: &str) -> Option<(SqlStore, PgScratch)> {
    use sqlx::{Connection as _, Executor as _};
    let Ok(admin_url) = std::env::var("CA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CA_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tests"
        );
        eprintln!("skipping PostgreSQL: set CA_TEST_POSTGRES_URL=postgres://…");
        return None;
    };
    sqlx::any::install_default_drivers();
    // A fixed name: a database left by a failed run is dropped by the next.
    let name = format!("ca_store_{tag}");
    let mut admin = AnyConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL unreachable at {admin_url}: {e}"));
    let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    admin
        .execute(AssertSqlSafe(drop_sql.clone()))
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let (server, _) = admin_url
        .split('?')
        .next()
        .unwrap()
        .rsplit_once('/')
        .unwrap();
    let store = SqlStore::connect(&format!("{server}/{name}"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some((store, PgScratch { admin, drop_sql }))
}

/// Drops the test's database when the test is done with it.
struct PgScratch {
    admin: AnyConnection,
    drop_sql: String,
}

impl PgScratch {
    async fn drop_database(mut self, store: SqlStore) {
        use sqlx::Executor as _;
        store.pool.close().await;
        self.admin
            .execute(AssertSqlSafe(self.drop_sql))
            .await
            .unwrap();
    }
}

/// A migrated SQLite store in a temp directory (kept while the guard lives).
async fn sqlite_store() -> (tempfile::TempDir, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_published_crl_is_stored_in_pieces_and_read_back_whole() {
    let (_dir, store) = sqlite_store().await;
    crl_pieces(&store).await;
}

#[tokio::test]
async fn a_published_crl_is_stored_in_pieces_on_postgres_too() {
    if let Some((store, scratch)) = postgres_store("crl_pieces").await {
        crl_pieces(&store).await;
        scratch.drop_database(store).await;
    }
}

#[tokio::test]
async fn console_sessions_are_bounded_expire_and_end() {
    let (_dir, store) = sqlite_store().await;
    console_sessions(&store).await;
}

#[tokio::test]
async fn console_sessions_are_bounded_expire_and_end_on_postgres_too() {
    if let Some((store, scratch)) = postgres_store("console_sessions").await {
        console_sessions(&store).await;
        scratch.drop_database(store).await;
    }
}

async fn console_sessions(store: &SqlStore) {
    let now = crate::now();
    let session = |n: i64, credential: &str, life: i64| ConsoleSession {
        id_hash: format!("{credential}-{n:03}"),
        credential: credential.into(),
        created_at: now + time::Duration::seconds(n),
        expires_at: now + time::Duration::seconds(n + life),
    };
    let draft = || AuditDraft::new("token:t", "console-sign-in", "console");
    // An expired session of another credential is swept by the next sign-in.
    store
        .insert_console_session(&session(0, "token:old", -1), draft(), now)
        .await
        .unwrap();
    let limit = CONSOLE_SESSIONS_PER_CREDENTIAL;
    for n in 1..=limit + 5 {
        store
            .insert_console_session(&session(n, "token:a", 1800), draft(), now)
            .await
            .unwrap();
    }
    assert!(store
        .console_session("token:old-000")
        .await
        .unwrap()
        .is_none());
    // Only the newest `limit` of one credential stay.
    for n in 1..=5 {
        let gone = session(n, "token:a", 1800).id_hash;
        assert!(
            store.console_session(&gone).await.unwrap().is_none(),
            "{gone}"
        );
    }
    let newest = session(limit + 5, "token:a", 1800);
    assert_eq!(
        store.console_session(&newest.id_hash).await.unwrap(),
        Some(newest.clone())
    );
    let kept = store
        .console_session(&session(6, "token:a", 1800).id_hash)
        .await
        .unwrap();
    assert!(kept.is_some());
    // Sign-out deletes; a second one changes nothing.
    let out = || AuditDraft::new("token:a", "console-sign-out", "console");
    assert!(store
        .delete_console_session(&newest.id_hash, out(), now)
        .await
        .unwrap());
    let head = store.audit_head().await.unwrap();
    assert!(!store
        .delete_console_session(&newest.id_hash, out(), now)
        .await
        .unwrap());
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "a no-op sign-out was audited"
    );
    assert!(store
        .console_session(&newest.id_hash)
        .await
        .unwrap()
        .is_none());
}

async fn crl_pieces(store: &SqlStore) {
    assert!(store.latest_crl(1).await.unwrap().is_none());

    // Larger than two pieces, not a multiple of the piece size.
    let first = crl(1, 2 * CRL_DER_CHUNK + 12_345);
    let draft = || AuditDraft::new("test", "crl", "crl");
    assert!(store.publish_crl(&first, draft()).await.unwrap());
    assert_eq!(store.latest_crl(1).await.unwrap().unwrap().der, first.der);

    let second = crl(2, CRL_DER_CHUNK / 3);
    assert!(store.publish_crl(&second, draft()).await.unwrap());
    let latest = store.latest_crl(1).await.unwrap().unwrap();
    assert_eq!((latest.number, latest.der), (2, second.der.clone()));
    // The first CRL's pieces are gone; an older number is refused.
    assert_eq!(count(store, "crl_blobs").await, 1);
    assert_eq!(count(store, "crl_layouts").await, 1);
    assert!(!store.publish_crl(&first, draft()).await.unwrap());
    assert_eq!(store.latest_crl(1).await.unwrap().unwrap().der, second.der);

    // CRLs cut into pieces by content share the pieces they have in common:
    // one changed piece is one new row, and the rows no CRL lists go.
    let part = |tag: u8, len: usize| -> Vec<u8> { (0..len).map(|i| tag ^ (i as u8)).collect() };
    let made_of = |number: u64, parts: &[&Vec<u8>]| {
        let mut crl = crl(number, 0);
        for part in parts {
            crl.der.extend_from_slice(part);
            crl.pieces.push(CrlPiece {
                end: crl.der.len(),
                hash: crate::hash::sha256(part),
            });
        }
        crl
    };
    let (head, a, b, b2, tail) = (
        part(1, 300),
        part(2, 25_000),
        part(3, 25_000),
        part(4, 25_040),
        part(5, 200),
    );
    let third = made_of(3, &[&head, &a, &b, &tail]);
    assert!(store.publish_crl(&third, draft()).await.unwrap());
    let read = store.latest_crl(1).await.unwrap().unwrap();
    assert_eq!(
        (read.number, &read.der, &read.pieces),
        (3, &third.der, &third.pieces)
    );
    assert_eq!(count(store, "crl_blobs").await, 4);
    // The next one differs in one piece and the headers: read back through
    // the pieces kept from the last read, it is still byte for byte itself.
    let (head4, tail4) = (part(6, 300), part(7, 200));
    let fourth = made_of(4, &[&head4, &a, &b2, &tail4]);
    assert!(store.publish_crl(&fourth, draft()).await.unwrap());
    assert_eq!(count(store, "crl_blobs").await, 4);
    let read = store.latest_crl(1).await.unwrap().unwrap();
    assert_eq!((read.number, &read.der), (4, &fourth.der));
    assert_eq!(count(store, "crl_layouts").await, 1);
}

async fn count(store: &SqlStore, table: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!("SELECT count(*) AS n FROM {table}")))
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .one()
        .unwrap()
        .try_get("n")
        .unwrap()
}

/// Inserts `n` certificate rows straight into the table; row `i` is
/// revoked unless `i % 7 == 6`, and expired when `i % 13 == 12`.
async fn fill(store: &SqlStore, n: usize, now: i64) {
    const ROWS: usize = 400;
    for start in (0..n).step_by(ROWS) {
        let end = (start + ROWS).min(n);
        let values: Vec<String> = (start..end)
            .map(|k| {
                let b = (k - start) * 12;
                let p: Vec<String> = (1..=12).map(|j| format!("${}", b + j)).collect();
                format!("({})", p.join(","))
            })
            .collect();
        let sql = format!(
            "INSERT INTO certificates (serial, tenant, admin, policy, state, not_before, not_after, \
             revoked_at, reason, invalidity_date, created_at, der) VALUES {}",
            values.join(",")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for i in start..end {
            let revoked = i % 7 != 6;
            let not_after = if i % 13 == 12 { now - 10 } else { now + 86_400 };
            query = query
                .bind(format!("{:032x}", (1u128 << 124) + i as u128))
                .bind("bulk")
                .bind(format!("a{i}"))
                .bind("portal-admin")
                .bind(if revoked { 1i64 } else { 0 })
                .bind(now - 3600)
                .bind(not_after)
                .bind(revoked.then_some(now - i as i64))
                .bind((revoked && i % 3 != 0).then_some(if i % 3 == 1 { 1i64 } else { 4 }))
                .bind((revoked && i % 5 == 0).then_some(now - 7200 - i as i64))
                .bind(now - 3600)
                .bind(vec![0x30u8, 0x00]);
        }
        query.execute(&store.pool).await.unwrap();
    }
}

/// More than two pages of entries, with every optional field present and
/// absent, come back complete, in serial order, and without expired ones.
async fn revoked_pages(store: &SqlStore) {
    let now = crate::now();
    let n = 2 * CRL_CHUNK as usize + 500;
    fill(store, n, now.unix_timestamp()).await;
    let mut seen = Vec::new();
    store
        .revoked_entries(1, now, &mut |entry, _| seen.push(entry))
        .await
        .unwrap();
    let expected: Vec<usize> = (0..n).filter(|i| i % 7 != 6 && i % 13 != 12).collect();
    assert_eq!(seen.len(), expected.len());
    for (entry, &i) in seen.iter().zip(&expected) {
        let serial = format!("{:032x}", (1u128 << 124) + i as u128);
        assert_eq!(entry.serial.to_hex(), serial);
        assert_eq!(
            entry.revoked_at.unix_timestamp(),
            now.unix_timestamp() - i as i64
        );
        let reason = match i % 3 {
            0 => RevocationReason::Unspecified,
            1 => RevocationReason::KeyCompromise,
            _ => RevocationReason::Superseded,
        };
        assert_eq!(entry.reason, reason, "{serial}");
        assert_eq!(
            entry.invalidity_date.map(|t| t.unix_timestamp()),
            (i % 5 == 0).then_some(now.unix_timestamp() - 7200 - i as i64),
            "{serial}"
        );
    }
}

#[tokio::test]
async fn revoked_entries_come_in_pages_complete_and_in_order() {
    let (_dir, store) = sqlite_store().await;
    revoked_pages(&store).await;
}

#[tokio::test]
async fn revoked_entries_come_in_pages_on_postgres_too() {
    if let Some((store, scratch)) = postgres_store("revoked_pages").await {
        revoked_pages(&store).await;
        scratch.drop_database(store).await;
    }
}

/// Each revoking transaction records the revision it moved its issuer's CRL
/// state to, so a publisher reads the entries of a window of revisions.
async fn revocation_windows(store: &SqlStore) {
    let now = crate::now();
    fill(store, 50, now.unix_timestamp()).await;
    let serial = |i: usize| Serial::parse(&format!("{:032x}", (1u128 << 124) + i as u128)).unwrap();
    let revoke = |i: usize| async move {
        let draft = AuditDraft::new("test", "revoke", serial(i).to_hex());
        store
            .revoke(
                &serial(i),
                RevocationReason::KeyCompromise,
                None,
                draft,
                now,
            )
            .await
            .unwrap();
    };
    let revision = || async { store.crl_status(1).await.unwrap().revision };
    let window = |after: u64, upto: u64, limit: usize| async move {
        store
            .revoked_between(1, after, upto, limit)
            .await
            .unwrap()
            .map(|w| w.into_iter().map(|(e, _)| e.serial).collect::<Vec<_>>())
    };
    let r0 = revision().await;
    revoke(20).await;
    let r1 = revision().await;
    revoke(13).await;
    revoke(6).await;
    let r2 = revision().await;
    assert_eq!((r1, r2), (r0 + 1, r0 + 3));
    assert_eq!(window(r0, r1, 10).await, Some(vec![serial(20)]));
    assert_eq!(window(r1, r2, 10).await, Some(vec![serial(6), serial(13)]));
    assert_eq!(
        window(r0, r2, 10).await,
        Some(vec![serial(6), serial(13), serial(20)])
    );
    assert_eq!(window(r2, r2, 10).await, Some(vec![]));
    // Rows revoked before the column existed (NULL) are in no window.
    assert_eq!(window(0, r0, 10).await, Some(vec![]));
    // Past the limit: none, the caller reads everything instead.
    assert_eq!(window(r1, r2, 1).await, None);
    let (entry, not_after) = store
        .revoked_between(1, r0, r1, 10)
        .await
        .unwrap()
        .unwrap()
        .remove(0);
    assert_eq!(entry.reason, RevocationReason::KeyCompromise);
    assert_eq!(entry.revoked_at, now);
    assert_eq!(not_after.unix_timestamp(), now.unix_timestamp() + 86_400);
}

#[tokio::test]
async fn revocations_are_found_by_revision_window() {
    let (_dir, store) = sqlite_store().await;
    revocation_windows(&store).await;
}

#[tokio::test]
async fn revocations_are_found_by_revision_window_on_postgres_too() {
    if let Some((store, scratch)) = postgres_store("revocation_windows").await {
        revocation_windows(&store).await;
        scratch.drop_database(store).await;
    }
}
