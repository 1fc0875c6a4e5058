//! The group-commit queue: concurrent issuances are written by one writer task,
//! many per transaction, each still answered only after its commit.

use super::*;

/// Most rows one multi-row INSERT carries (9 values each, well inside the
/// bind limits of SQLite and PostgreSQL).
pub(super) const ROWS_PER_INSERT: usize = 128;

/// How a statement names its bound values.
#[derive(Clone, Copy)]
pub(super) enum Placeholders {
    /// `$1, $2, …`: both databases.
    Numbered,
    /// `?, ?, …` in binding order: SQLite only. SQLite looks a numbered
    /// parameter's name up by a linear scan, once per value bound, which
    /// made binding a 128-row batch quadratic; an anonymous one has no name.
    Anonymous,
}

/// `($1, $2, …), ($n+1, …)…` for `rows` rows of `columns` values.
pub(super) fn values_list(rows: usize, columns: usize) -> String {
    values_list_as(rows, columns, Placeholders::Numbered)
}

/// [`values_list`] with the given placeholders.
pub(super) fn values_list_as(rows: usize, columns: usize, style: Placeholders) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match style {
                Placeholders::Numbered => sql.push_str(&format!("${}", row * columns + column + 1)),
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// One certificate insertion waiting for the group commit.
pub(super) struct InsertJob {
    pub(super) record: CertificateRecord,
    pub(super) supersede: Option<Supersede>,
    pub(super) idempotency: Option<IdempotencyKey>,
    pub(super) audit: AuditDraft,
    pub(super) now: OffsetDateTime,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<Vec<Serial>>>,
    /// The sealed bundle to keep for pickup, in the same transaction.
    pub(super) pickup: Option<NewPickup>,
}

/// Most insertions committed together.
pub(super) const MAX_BATCH: usize = 128;

/// Issuances waiting for the writer at most (each a certificate record and
/// its audit event, a few KiB): beyond it a new one waits for room before it
/// is queued, so a flood of requests costs bounded memory here.
pub(super) const MAX_QUEUED: usize = 1024;

/// Group commit: insertions queued while a commit is in progress go into the
/// next transaction together, each inside its own savepoint (one failing —
/// say, a conflict — leaves the others alone), and share one fsync. Nobody is
/// answered before the transaction holding their row has committed.
pub(super) async fn run_inserts(
    pool: AnyPool,
    writer: Arc<tokio::sync::Mutex<()>>,
    mut jobs: tokio::sync::mpsc::Receiver<InsertJob>,
    sqlite: bool,
) {
    // SQLite: the writer keeps one connection from batch to batch. Taking
    // whichever the pool hands out (it rotates them) met a page cache gone
    // stale — another connection had written since — so every commit first
    // re-read its index pages; the pool also rolled the connection back on
    // each return, a round trip more. A connection that failed is returned
    // (the pool rolls it back) and the next batch takes another.
    let mut held: Option<sqlx::pool::PoolConnection<sqlx::Any>> = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let _writer = Arc::clone(&writer).lock_owned().await;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match sqlite {
            true => commit_sqlite(&pool, &mut held, &mut batch).await,
            false => match pool.acquire().await {
                Ok(mut conn) => commit_batch(&mut conn, &mut batch).await,
                Err(e) => Err(e.into()),
            },
        };
        if outcomes.is_err() {
            held = None;
        }
        match outcomes {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in batch {
                    let again = match &e {
                        Error::Unavailable(m) => Error::Unavailable(m.clone()),
                        Error::StorageFull(m) => Error::StorageFull(m.clone()),
                        other => Error::Store(other.to_string()),
                    };
                    let _ = job.reply.send(Err(again));
                }
            }
        }
    }
}

/// SQLite: one batch on the writer's connection (taken if it has none).
async fn commit_sqlite(
    pool: &AnyPool,
    held: &mut Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    batch: &mut [InsertJob],
) -> Result<Vec<Result<Vec<Serial>>>> {
    let conn = match held {
        Some(conn) => conn,
        None => held.insert(pool.acquire().await?),
    };
    match sqlite_plain_batch(conn, batch).await? {
        Some(results) => Ok(results),
        None => commit_batch(conn, batch).await,
    }
}

/// SQLite, a batch of plain issuances (no reissue, idempotency key or
/// pickup; no conflict): the transaction of [`commit_batch`] in two round
/// trips to SQLite's worker thread instead of seven. Each statement sent
/// alone is a hand-off between threads, and under load those hand-offs, not
/// SQLite's work, were most of a commit's time — and the writer is the one
/// serial stage every issuance waits for.
///
/// `None` when the batch is not plain or a row met a conflict: nothing was
/// written (rolled back), and [`commit_batch`] does it the general way.
async fn sqlite_plain_batch(
    conn: &mut AnyConnection,
    batch: &[InsertJob],
) -> Result<Option<Vec<Result<Vec<Serial>>>>> {
    if batch.len() > ROWS_PER_INSERT || !batch.iter().all(InsertJob::is_plain) {
        return Ok(None);
    }
    let outcome = sqlite_plain_transaction(conn, batch).await;
    if !matches!(outcome, Ok(Some(_))) {
        // Also after a refused COMMIT, which leaves the transaction open.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    outcome
}

async fn sqlite_plain_transaction(
    conn: &mut AnyConnection,
    batch: &[InsertJob],
) -> Result<Option<Vec<Result<Vec<Serial>>>>> {
    // Round trip 1: take the write lock, read the chain head, insert the rows.
    //
    // `OR IGNORE` rather than `ON CONFLICT DO NOTHING`: a row it would skip
    // for any reason is missing from RETURNING and sends the batch down the
    // general path, and with no way left for the statement to abort halfway,
    // SQLite keeps no statement journal for it (with the other form it
    // copied every page the rows touched into one, spilling to a temporary
    // file on each commit).
    let sql = format!(
        "BEGIN IMMEDIATE; {LOCK_AUDIT_HEAD}; INSERT OR IGNORE INTO certificates {CERTIFICATE_COLUMNS} VALUES {} RETURNING serial",
        values_list_as(batch.len(), 10, Placeholders::Anonymous)
    );
    let jobs: Vec<&InsertJob> = batch.iter().collect();
    let rows = bind_rows(sqlx::query(AssertSqlSafe(sql)), &jobs)
        .fetch_all(&mut *conn)
        .await?;
    let mut rows = rows.into_iter();
    let mut head = ChainHead::from_row(&rows.next().ok_or(sqlx::Error::RowNotFound)?)?;
    // The INSERT returns the rows that went in: one fewer is a conflict.
    if rows.len() != batch.len() {
        return Ok(None);
    }
    // Round trip 2: the audit events, the new head, the commit.
    let events: Vec<ChainedEvent> = batch
        .iter()
        .map(|job| head.append(&job.draft(Vec::new(), ""), ts(job.now)))
        .collect();
    let sql = format!(
        "{}; UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1; COMMIT",
        insert_events_sql(events.len(), Placeholders::Anonymous),
    );
    bind_events(sqlx::query(AssertSqlSafe(sql)), &events)
        .bind(head.seq as i64)
        .bind(&head.hash)
        .execute(&mut *conn)
        .await?;
    Ok(Some(batch.iter().map(|_| Ok(Vec::new())).collect()))
}

pub(super) async fn commit_batch(
    conn: &mut AnyConnection,
    batch: &mut [InsertJob],
) -> Result<Vec<Result<Vec<Serial>>>> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let mut head = lock_audit_head(&mut tx).await?;
    let mut events = Vec::with_capacity(batch.len());
    let mut results: Vec<Option<Result<Vec<Serial>>>> = batch.iter().map(|_| None).collect();

    // Plain issuances (no reissue, no idempotency key) share one INSERT;
    // a row that meets a conflict is skipped there and retried alone below,
    // where an expired-but-active predecessor is retired first.
    let plain: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].is_plain()).collect();
    let plain_jobs: Vec<&InsertJob> = plain.iter().map(|&i| &batch[i]).collect();
    let inserted = insert_rows(&mut tx, &plain_jobs).await?;
    for &i in &plain {
        let job = &batch[i];
        if inserted.contains(&job.record.serial) {
            let draft = job.draft(Vec::new(), "");
            events.push(head.append(&draft, ts(job.now)));
            results[i] = Some(Ok(Vec::new()));
        }
    }

    // The rest one at a time, each in a savepoint: one failing (a conflict,
    // say) leaves the others alone.
    for (job, result) in batch.iter_mut().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let outcome = insert_one(&mut tx, job).await;
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT job")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT job")
            .execute(&mut *tx)
            .await?;
        *result = Some(outcome.map(|(revoked, drafts)| {
            for draft in &drafts {
                events.push(head.append(draft, ts(job.now)));
            }
            revoked
        }));
    }

    insert_events(&mut tx, &events).await?;
    store_audit_head(&mut tx, &head).await?;
    tx.commit().await?;
    Ok(results.into_iter().flatten().collect())
}

impl InsertJob {
    /// A new certificate alone: no reissue, idempotency key or pickup.
    fn is_plain(&self) -> bool {
        self.supersede.is_none() && self.idempotency.is_none() && self.pickup.is_none()
    }

    /// The job's audit event: the new serial first, then those it revoked.
    pub(super) fn draft(&self, revoked: Vec<String>, extra: &str) -> AuditDraft {
        let mut draft = self.audit.clone();
        draft.serials = std::iter::once(self.record.serial.to_hex())
            .chain(revoked)
            .collect();
        draft.details.push_str(extra);
        draft
    }
}

/// Inserts the jobs' certificate rows with `ON CONFLICT DO NOTHING`;
/// returns the serials that went in (a missing one met a conflict).
pub(super) async fn insert_rows(
    conn: &mut AnyConnection,
    jobs: &[&InsertJob],
) -> Result<std::collections::HashSet<Serial>> {
    let mut inserted = std::collections::HashSet::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        let query = bind_rows(
            sqlx::query(AssertSqlSafe(insert_rows_sql(chunk.len()))),
            chunk,
        );
        for row in query.fetch_all(&mut *conn).await? {
            let serial: String = row.try_get("serial")?;
            inserted.insert(Serial::parse(&serial)?);
        }
    }
    Ok(inserted)
}

/// The INSERT of `rows` new certificates, bound by [`bind_rows`]; it
/// returns the serial of each row that went in.
fn insert_rows_sql(rows: usize) -> String {
    format!(
        "INSERT INTO certificates {CERTIFICATE_COLUMNS} VALUES {} ON CONFLICT DO NOTHING RETURNING serial",
        values_list(rows, 10)
    )
}

const CERTIFICATE_COLUMNS: &str =
    "(serial, tenant, admin, policy, state, not_before, not_after, created_at, der, issuer)";

fn bind_rows<'q>(mut query: AnyQuery<'q>, jobs: &[&InsertJob]) -> AnyQuery<'q> {
    for job in jobs {
        let (record, now) = (&job.record, job.now);
        query = query
            .bind(record.serial.to_hex())
            .bind(&record.tenant)
            .bind(&record.admin)
            .bind(&record.policy)
            .bind(0_i64)
            .bind(ts(record.not_before))
            .bind(ts(record.not_after))
            .bind(ts(now))
            .bind(&record.der)
            .bind(record.issuer as i64);
    }
    query
}

/// The statements of one insertion (see [`Store::insert_certificate`]), and
/// its audit events (the issuance's, then the pickup's).
pub(super) async fn insert_one(
    conn: &mut AnyConnection,
    job: &mut InsertJob,
) -> Result<(Vec<Serial>, Vec<AuditDraft>)> {
    let (record, now) = (&job.record, job.now);
    let mut details = String::new();
    // A resend replaces a bundle nobody has collected: checked here, inside
    // the transaction, so a collection racing the resend is never revoked.
    let resent = match &job.pickup {
        Some(pickup) if pickup.resend => Some(pickups::check_resend(&mut *conn, record).await?),
        _ => None,
    };
    if let Some(idem) = &job.idempotency {
        // Keys expire after 24 h; an expired one may be used afresh.
        sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = $1 AND created_at <= $2")
            .bind(&idem.key)
            .bind(ts(now) - IDEMPOTENCY_WINDOW_SECS)
            .execute(&mut *conn)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (idem_key, request_hash, serial, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(record.serial.to_hex())
        .bind(ts(now))
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(
                    "this Idempotency-Key is being used by a concurrent request".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        details.push_str(&format!(
            " idempotency_key_sha256={}",
            hex::encode(crate::hash::sha256(idem.key.as_bytes()))
        ));
    }
    // An issued certificate past its not-after no longer counts as active.
    sqlx::query(
        "UPDATE certificates SET state = 2 WHERE tenant = $1 AND admin = $2 AND policy = $3 AND state = 0 AND not_after <= $4",
    )
    .bind(&record.tenant)
    .bind(&record.admin)
    .bind(&record.policy)
    .bind(ts(now))
    .execute(&mut *conn)
    .await?;
    let mut revoked = Vec::new();
    if let Some(supersede) = job.supersede {
        let rows = sqlx::query(
            "UPDATE certificates SET state = 1, revoked_at = $1, reason = $2 \
             WHERE tenant = $3 AND admin = $4 AND policy = $5 AND state = 0 RETURNING serial",
        )
        .bind(ts(now))
        .bind(i64::from(supersede.reason.code()))
        .bind(&record.tenant)
        .bind(&record.admin)
        .bind(&record.policy)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let serial: String = row.try_get("serial")?;
            revoked.push(Serial::parse(&serial)?);
        }
        revoked.sort();
        if supersede.require_active && revoked.is_empty() {
            return Err(crate::ca::not_replaceable(
                &record.tenant,
                &record.admin,
                &record.policy,
            ));
        }
        if !revoked.is_empty() {
            sqlx::query("UPDATE crl_state SET revision = revision + 1")
                .execute(&mut *conn)
                .await?;
            for serial in &revoked {
                mark_revoked_rev(&mut *conn, serial).await?;
            }
        }
        details.push_str(&format!(" reason={}", supersede.reason.name()));
    }
    if insert_rows(conn, &[&*job]).await?.is_empty() {
        let active = sqlx::query(
                "SELECT serial FROM certificates WHERE tenant = $1 AND admin = $2 AND policy = $3 AND state = 0",
            )
            .bind(&record.tenant)
            .bind(&record.admin)
            .bind(&record.policy)
            .fetch_all(&mut *conn)
            .await?;
        let serial = match active.first() {
            Some(row) => format!(" (serial {})", row.try_get::<String, _>("serial")?),
            None => String::new(),
        };
        return Err(Error::Conflict(format!(
                "{}/{} already has an active certificate under policy {}{serial}: use reissue to replace it",
                record.tenant, record.admin, record.policy
            )));
    }
    // Waiting bundles of the replaced certificates die with them (a reissue
    // with direct delivery included): their links answer "replaced".
    let replaced = if job.supersede.is_some() {
        pickups::replace_waiting(&mut *conn, record, ts(now)).await?
    } else {
        Vec::new()
    };
    let mut drafts = vec![job.draft(revoked.iter().map(Serial::to_hex).collect(), &details)];
    if let Some(pickup) = &job.pickup {
        pickups::insert_pickup(&mut *conn, record, pickup, ts(now)).await?;
        let action = if resent.is_some() {
            "pickup.resent"
        } else {
            "pickup.created"
        };
        let mut draft = AuditDraft::new(&job.audit.actor, action, pickup.id.clone());
        draft.serials = vec![record.serial.to_hex()];
        draft.details = format!(
            "{}/{} expires_at={} mail={}",
            record.tenant,
            record.admin,
            crate::rfc3339(pickup.expires_at),
            pickup.mail.name()
        );
        if !replaced.is_empty() {
            draft
                .details
                .push_str(&format!(" replaced={}", replaced.join(",")));
        }
        drafts.push(draft);
    } else if !replaced.is_empty() {
        let mut draft = AuditDraft::new(&job.audit.actor, "pickup.replaced", replaced.join(","));
        draft.serials = revoked.iter().map(Serial::to_hex).collect();
        drafts.push(draft);
    }
    Ok((revoked, drafts))
}
