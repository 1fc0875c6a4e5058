//! CRL state per issuer: reserved numbers, the revoked-entry pages a CRL is
//! built from, and the published CRL, stored as content-addressed pieces
//! that consecutive CRLs share (migration 0013).

use super::*;

/// Where CRL publication stands, read cheaply by publishers in any process.
#[derive(Debug, Clone, Copy)]
pub struct CrlStatus {
    /// Bumped by every revoking transaction.
    pub revision: u64,
    /// The revision the published CRL was built from.
    pub published_revision: u64,
    /// Published CRL number (0: none yet).
    pub published_number: u64,
    /// thisUpdate of the published CRL.
    pub this_update: Option<OffsetDateTime>,
    /// nextUpdate of the published CRL.
    pub next_update: Option<OffsetDateTime>,
}

/// The CRL currently published.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// Signed DER.
    pub der: Vec<u8>,
    /// The pieces `der` is stored in (see [`CrlPiece`]); empty: the store
    /// cuts it into pieces of [`CRL_DER_CHUNK`] itself.
    pub pieces: Vec<CrlPiece>,
    /// The revocation revision it reflects.
    pub revision: u64,
    /// How many revoked certificates it lists.
    pub entries: u64,
    /// The number of the issuer that signed it.
    pub issuer: u64,
}

impl PublishedCrl {
    /// Its pieces: those it was built with, else pieces of [`CRL_DER_CHUNK`].
    fn pieces_or_fixed(&self) -> std::borrow::Cow<'_, [CrlPiece]> {
        if self.pieces.last().is_some_and(|p| p.end == self.der.len()) {
            return std::borrow::Cow::Borrowed(&self.pieces);
        }
        let ends = (1..)
            .map(|i| i * CRL_DER_CHUNK)
            .take_while(|end| *end < self.der.len());
        std::borrow::Cow::Owned(crate::pki::crl::pieces_at(&self.der, ends))
    }
}

/// The pieces of one issuer's CRL that this process last read back, by hash.
#[derive(Default)]
pub(super) struct CrlPieceCache(std::collections::HashMap<[u8; 32], Arc<[u8]>>);

/// Hashes a statement names at a time (bind parameters).
const HASHES_PER_STATEMENT: usize = 500;

/// Revoked entries read per query when building a CRL.
pub(super) const CRL_CHUNK: i64 = 20_000;

/// Size of the pieces a published CRL's DER is stored in when it comes
/// without pieces of its own (and was, whole, before migration 0013).
pub(super) const CRL_DER_CHUNK: usize = 1 << 20;

/// One page of revoked entries as [`Store::revoked_entries`] reads it: the
/// serials back to back (32 hex digits each), and the other fields as
/// comma-separated lists in the same order (-1 for none).
pub(super) struct RevokedPage {
    pub(super) serials: String,
    pub(super) revoked_at: String,
    pub(super) reasons: String,
    pub(super) invalidity_dates: String,
    pub(super) not_afters: String,
}

impl RevokedPage {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(RevokedPage {
            serials: row.try_get("serials")?,
            revoked_at: row.try_get("revoked_at")?,
            reasons: row.try_get("reasons")?,
            invalidity_dates: row.try_get("invalidity_dates")?,
            not_afters: row.try_get("not_afters")?,
        })
    }

    pub(super) fn visit(
        &self,
        n: usize,
        visit: &mut (dyn FnMut(RevokedEntry, OffsetDateTime) + Send),
    ) -> Result<()> {
        let bad = || Error::Store("bad page of revoked entries in the store".into());
        let number = |text: &str| text.parse::<i64>().map_err(|_| bad());
        if self.serials.len() != n * 32 {
            return Err(bad());
        }
        let mut revoked_at = self.revoked_at.split(',');
        let mut reasons = self.reasons.split(',');
        let mut invalidity_dates = self.invalidity_dates.split(',');
        let mut not_afters = self.not_afters.split(',');
        for hex_serial in self.serials.as_bytes().chunks(32) {
            let mut serial = [0u8; 16];
            hex::decode_to_slice(hex_serial, &mut serial).map_err(|_| bad())?;
            let serial = Serial::from_bytes(&serial).ok_or_else(bad)?;
            let at = number(revoked_at.next().ok_or_else(bad)?)?;
            let reason = number(reasons.next().ok_or_else(bad)?)?;
            let invalidity = number(invalidity_dates.next().ok_or_else(bad)?)?;
            let not_after = number(not_afters.next().ok_or_else(bad)?)?;
            visit(
                RevokedEntry {
                    serial,
                    revoked_at: from_ts(at)?,
                    reason: RevocationReason::from_code(reason)
                        .unwrap_or(RevocationReason::Unspecified),
                    invalidity_date: (invalidity >= 0).then(|| from_ts(invalidity)).transpose()?,
                },
                from_ts(not_after)?,
            );
        }
        Ok(())
    }
}

/// CRL numbers and published CRLs, per issuer: the part of [`Store`](super::Store) CRL publication goes through.
#[async_trait]
pub trait CrlStore: Send + Sync {
    /// Reserves the next CRL number (strictly increasing, never reused) and
    /// returns it with the revocation revision. Read the entries after this,
    /// so a higher number never lists fewer revocations.
    async fn begin_crl(&self, issuer: u64) -> Result<(u64, u64)>;

    /// Hands every revoked certificate not expired at `now` to `visit` with
    /// its notAfter, in serial order, a page at a time (a million are never
    /// held at once).
    async fn revoked_entries(
        &self,
        issuer: u64,
        now: OffsetDateTime,
        visit: &mut (dyn FnMut(RevokedEntry, OffsetDateTime) + Send),
    ) -> Result<()>;

    /// The certificates of `issuer` revoked at a revision in
    /// `(after, upto]` (see migration 0012), with their notAfter, expired or
    /// not; at most `limit` (more: `None`, and the caller reads everything
    /// with [`CrlStore::revoked_entries`] instead).
    async fn revoked_between(
        &self,
        issuer: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Option<Vec<(RevokedEntry, OffsetDateTime)>>>;

    /// Where CRL publication of `issuer` stands.
    async fn crl_status(&self, issuer: u64) -> Result<CrlStatus>;

    /// Publishes a signed CRL (of `crl.issuer`) unless a higher number is already published.
    async fn publish_crl(&self, crl: &PublishedCrl, audit: AuditDraft) -> Result<bool>;

    /// The published CRL of `issuer`.
    async fn latest_crl(&self, issuer: u64) -> Result<Option<PublishedCrl>>;

    /// Raises `issuer`'s CRL numbers so the next one is above `at_least`
    /// (restore, shown a CRL newer than the backup). Never lowers them.
    async fn raise_crl_number(
        &self,
        issuer: u64,
        at_least: u64,
        audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// The last CRL number `issuer` reserved (0: none yet).
    async fn last_crl_number(&self, issuer: u64) -> Result<u64>;
}

#[async_trait]
impl CrlStore for SqlStore {
    async fn begin_crl(&self, issuer: u64) -> Result<(u64, u64)> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let state = sqlx::query(
            "UPDATE crl_state SET last_number = last_number + 1 WHERE id = $1 RETURNING last_number, revision",
        )
        .bind(issuer as i64)
        .fetch_all(&mut *tx)
        .await?
        .one()?;
        tx.commit().await?;
        Ok((
            state.try_get::<i64, _>("last_number")? as u64,
            state.try_get::<i64, _>("revision")? as u64,
        ))
    }

    async fn revoked_entries(
        &self,
        issuer: u64,
        now: OffsetDateTime,
        visit: &mut (dyn FnMut(RevokedEntry, OffsetDateTime) + Send),
    ) -> Result<()> {
        // Rows come packed, thousands to a row: one row at a time through the
        // driver costs a thread hand-off each, which for a million entries
        // took seconds. One aggregate per column is cheaper for the database
        // than concatenating each row first. The covering index (migration
        // 0005) means the table, whose rows carry each certificate's DER, is
        // never read.
        let agg = |expr: &str, sep: &str| match self.sqlite {
            true => format!("group_concat({expr}, '{sep}')"),
            false => format!("string_agg(CAST({expr} AS TEXT), '{sep}' ORDER BY serial)"),
        };
        let sql = format!(
            "SELECT {} AS serials, {} AS revoked_at, {} AS reasons, {} AS invalidity_dates, {} AS not_afters, \
                    max(serial) AS last, count(*) AS n FROM ( \
               SELECT serial, revoked_at, coalesce(reason, -1) AS reason, coalesce(invalidity_date, -1) AS invalidity_date, not_after \
               FROM certificates WHERE revoked_at IS NOT NULL AND issuer = $3 AND not_after > $1 AND serial > $2 \
               ORDER BY serial LIMIT {CRL_CHUNK}) AS page",
            agg("serial", ""),
            agg("revoked_at", ","),
            agg("reason", ","),
            agg("invalidity_date", ","),
            agg("not_after", ","),
        );
        let page = |after: String| {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(ts(now))
                .bind(after)
                .bind(issuer as i64)
                .fetch_all(&self.pool)
        };
        let mut rows = page(String::new()).await?;
        loop {
            let row = rows.one()?;
            let n: i64 = row.try_get("n")?;
            if n == 0 {
                return Ok(());
            }
            let chunk = RevokedPage::from_row(&row)?;
            let last: String = row.try_get("last")?;
            let next = async {
                match n < CRL_CHUNK {
                    true => None,
                    false => Some(page(last).await),
                }
            };
            // This page is parsed while the database reads the next one.
            let parse = async { chunk.visit(n as usize, visit) };
            let (next, parsed) = tokio::join!(next, parse);
            parsed?;
            match next {
                Some(next) => rows = next?,
                None => return Ok(()),
            }
        }
    }

    async fn revoked_between(
        &self,
        issuer: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Option<Vec<(RevokedEntry, OffsetDateTime)>>> {
        if upto <= after {
            return Ok(Some(Vec::new()));
        }
        let rows = sqlx::query(
            "SELECT serial, revoked_at, reason, invalidity_date, not_after FROM certificates \
             WHERE issuer = $1 AND revoked_rev > $2 AND revoked_rev <= $3 AND revoked_at IS NOT NULL \
             ORDER BY serial LIMIT $4",
        )
        .bind(issuer as i64)
        .bind(after as i64)
        .bind(upto as i64)
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await?;
        if rows.len() > limit {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let serial: String = row.try_get("serial")?;
            let entry = RevokedEntry {
                serial: Serial::parse(&serial)
                    .map_err(|_| Error::Store(format!("bad serial in store: {serial}")))?,
                revoked_at: from_ts(row.try_get("revoked_at")?)?,
                reason: row
                    .try_get::<Option<i64>, _>("reason")?
                    .and_then(RevocationReason::from_code)
                    .unwrap_or(RevocationReason::Unspecified),
                invalidity_date: row
                    .try_get::<Option<i64>, _>("invalidity_date")?
                    .map(from_ts)
                    .transpose()?,
            };
            entries.push((entry, from_ts(row.try_get("not_after")?)?));
        }
        Ok(Some(entries))
    }

    async fn crl_status(&self, issuer: u64) -> Result<CrlStatus> {
        let row = sqlx::query(
            "SELECT revision, published_revision, published_number, this_update, next_update FROM crl_state WHERE id = $1",
        )
        .bind(issuer as i64)
        .fetch_all(&self.pool).await?.one()?;
        Ok(CrlStatus {
            revision: row.try_get::<i64, _>("revision")? as u64,
            published_revision: row.try_get::<i64, _>("published_revision")? as u64,
            published_number: row.try_get::<i64, _>("published_number")? as u64,
            this_update: row
                .try_get::<Option<i64>, _>("this_update")?
                .map(from_ts)
                .transpose()?,
            next_update: row
                .try_get::<Option<i64>, _>("next_update")?
                .map(from_ts)
                .transpose()?,
        })
    }

    async fn publish_crl(&self, crl: &PublishedCrl, mut audit: AuditDraft) -> Result<bool> {
        audit.details = format!(
            "crl_number={} next_update={} sha256={}",
            crl.number,
            crate::rfc3339(crl.next_update),
            hex::encode(crate::hash::sha256(&crl.der))
        );
        // A newer CRL already published: nothing to write.
        if self.crl_status(crl.issuer).await?.published_number >= crl.number {
            return Ok(false);
        }
        let issuer = crl.issuer as i64;
        let pieces = crl.pieces_or_fixed();
        let starts = std::iter::once(0).chain(pieces.iter().map(|p| p.end));
        let spans: Vec<(&[u8; 32], &[u8])> = pieces
            .iter()
            .zip(starts)
            .map(|(p, start)| (&p.hash, &crl.der[start..p.end]))
            .collect();
        // The pieces the store lacks go in first, in a transaction of their
        // own: nothing refers to them until a layout does. The audited
        // transaction that publishes the CRL is then short; on PostgreSQL it
        // holds the audit head and the crl_state row, which every revocation
        // needs, for milliseconds, not for writing 50 MB after a restart.
        {
            let _writer = match self.sqlite {
                true => Some(self.writer.lock().await),
                false => None,
            };
            let stored = stored_piece_hashes(&self.pool, issuer).await?;
            let mut tx = self.pool.begin().await?;
            insert_missing_pieces(&mut tx, issuer, &spans, &stored).await?;
            tx.commit().await?;
        }
        let (mut tx, open) = self.begin(audit, crl.this_update).await?;
        let changed = sqlx::query(
            "UPDATE crl_state SET published_number = $1, this_update = $2, next_update = $3, published_revision = $4, entries = $5 \
             WHERE id = $6 AND published_number < $1",
        )
        .bind(crl.number as i64)
        .bind(ts(crl.this_update))
        .bind(ts(crl.next_update))
        .bind(crl.revision as i64)
        .bind(crl.entries as i64)
        .bind(issuer)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            // A newer CRL won meanwhile; its publish deletes what only this
            // one would have listed.
            tx.rollback().await?;
            return Ok(false);
        }
        // Publishers of this issuer take turns from here (the crl_state row
        // is locked): what another one deleted before is put back, and what
        // no CRL lists any more goes.
        let stored = stored_piece_hashes(&mut *tx, issuer).await?;
        insert_missing_pieces(&mut tx, issuer, &spans, &stored).await?;
        let hashes: Vec<u8> = pieces.iter().flat_map(|p| p.hash).collect();
        sqlx::query("INSERT INTO crl_layouts (issuer, number, hashes) VALUES ($1, $2, $3)")
            .bind(issuer)
            .bind(crl.number as i64)
            .bind(hashes)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM crl_layouts WHERE issuer = $1 AND number <> $2")
            .bind(issuer)
            .bind(crl.number as i64)
            .execute(&mut *tx)
            .await?;
        let listed: std::collections::HashSet<&[u8; 32]> = pieces.iter().map(|p| &p.hash).collect();
        let unlisted: Vec<&[u8; 32]> = stored.iter().filter(|h| !listed.contains(h)).collect();
        for batch in unlisted.chunks(HASHES_PER_STATEMENT) {
            let marks = (0..batch.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("DELETE FROM crl_blobs WHERE issuer = $1 AND hash IN ({marks})");
            let mut delete = sqlx::query(AssertSqlSafe(sql)).bind(issuer);
            for hash in batch {
                delete = delete.bind(hash.as_slice());
            }
            delete.execute(&mut *tx).await?;
        }
        // The CRL stored whole before migration 0013.
        sqlx::query("DELETE FROM crl_pieces WHERE issuer = $1")
            .bind(issuer)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, open).await?;
        Ok(true)
    }

    async fn latest_crl(&self, issuer: u64) -> Result<Option<PublishedCrl>> {
        // A piece missing from a layout means a newer CRL won the race
        // (its publish deleted what only the older one listed): read that one.
        for _ in 0..5 {
            let row = sqlx::query(
                "SELECT published_number, published_revision, entries, this_update, next_update FROM crl_state WHERE id = $1",
            )
            .bind(issuer as i64)
            .fetch_all(&self.pool).await?.one()?;
            let number: i64 = row.try_get("published_number")?;
            if number == 0 {
                return Ok(None);
            }
            let read = match self.crl_layout(issuer as i64, number).await? {
                Some(hashes) => self.crl_from_pieces(issuer, &hashes).await?,
                // Stored whole, before migration 0013.
                None => self
                    .crl_der(issuer as i64, number)
                    .await?
                    .map(|der| (der, Vec::new())),
            };
            let Some((der, pieces)) = read else {
                continue;
            };
            return Ok(Some(PublishedCrl {
                number: number as u64,
                this_update: from_ts(row.try_get("this_update")?)?,
                next_update: from_ts(row.try_get("next_update")?)?,
                der,
                pieces,
                revision: row.try_get::<i64, _>("published_revision")? as u64,
                entries: row.try_get::<i64, _>("entries")? as u64,
                issuer,
            }));
        }
        Err(Error::Store(
            "the published CRL kept changing while it was read; try again".into(),
        ))
    }

    async fn raise_crl_number(
        &self,
        issuer: u64,
        at_least: u64,
        mut audit: AuditDraft,
        now: OffsetDateTime,
    ) -> Result<()> {
        audit.details = format!("issuer_number={issuer} crl_number_at_least={at_least}");
        let (mut tx, open) = self.begin(audit, now).await?;
        sqlx::query(
            "UPDATE crl_state SET last_number = $1, revision = revision + 1 WHERE id = $2 AND last_number < $1",
        )
        .bind(at_least as i64)
        .bind(issuer as i64)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, open).await
    }

    async fn last_crl_number(&self, issuer: u64) -> Result<u64> {
        let row = sqlx::query("SELECT last_number FROM crl_state WHERE id = $1")
            .bind(issuer as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("last_number")? as u64,
            None => 0,
        })
    }
}

/// The hashes of the pieces stored for `issuer`.
async fn stored_piece_hashes<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    issuer: i64,
) -> Result<std::collections::HashSet<[u8; 32]>> {
    let rows = sqlx::query("SELECT hash FROM crl_blobs WHERE issuer = $1")
        .bind(issuer)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            let hash: Vec<u8> = row.try_get("hash")?;
            <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| Error::Store("a CRL piece's hash in the store is not 32 bytes".into()))
        })
        .collect()
}

/// Inserts the pieces of `spans` (hash, bytes) that `stored` lacks.
async fn insert_missing_pieces(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    issuer: i64,
    spans: &[(&[u8; 32], &[u8])],
    stored: &std::collections::HashSet<[u8; 32]>,
) -> Result<()> {
    let mut written = std::collections::HashSet::new();
    for (hash, data) in spans {
        if stored.contains(*hash) || !written.insert(*hash) {
            continue;
        }
        sqlx::query(
            "INSERT INTO crl_blobs (issuer, hash, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(issuer)
        .bind(hash.as_slice())
        .bind(*data)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl SqlStore {
    /// The piece hashes of published CRL `number`, if stored by layout.
    async fn crl_layout(&self, issuer: i64, number: i64) -> Result<Option<Vec<[u8; 32]>>> {
        let rows = sqlx::query("SELECT hashes FROM crl_layouts WHERE issuer = $1 AND number = $2")
            .bind(issuer)
            .bind(number)
            .fetch_all(&self.pool)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let hashes: Vec<u8> = row.try_get("hashes")?;
        if !hashes.len().is_multiple_of(32) {
            return Err(Error::Store(
                "a CRL layout in the store is not a list of hashes".into(),
            ));
        }
        Ok(Some(
            hashes
                .chunks_exact(32)
                .map(|h| <[u8; 32]>::try_from(h).expect("32-byte chunks"))
                .collect(),
        ))
    }

    /// The DER of the CRL made of the pieces `hashes`, reading only those
    /// not kept from the last read; `None` if one is gone (superseded).
    /// Keeps exactly these pieces for the next read.
    async fn crl_from_pieces(
        &self,
        issuer: u64,
        hashes: &[[u8; 32]],
    ) -> Result<Option<(Vec<u8>, Vec<CrlPiece>)>> {
        let mut found: std::collections::HashMap<[u8; 32], Arc<[u8]>> = {
            let kept = self.crl_pieces.lock().expect("CRL piece cache");
            let kept = kept.get(&issuer);
            hashes
                .iter()
                .filter_map(|h| Some((*h, Arc::clone(kept?.0.get(h)?))))
                .collect()
        };
        let missing: Vec<&[u8; 32]> = {
            let mut seen = std::collections::HashSet::new();
            hashes
                .iter()
                .filter(|h| !found.contains_key(*h) && seen.insert(*h))
                .collect()
        };
        for batch in missing.chunks(HASHES_PER_STATEMENT) {
            let marks = (0..batch.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql =
                format!("SELECT hash, data FROM crl_blobs WHERE issuer = $1 AND hash IN ({marks})");
            let mut select = sqlx::query(AssertSqlSafe(sql)).bind(issuer as i64);
            for hash in batch {
                select = select.bind(hash.as_slice());
            }
            for row in select.fetch_all(&self.pool).await? {
                let hash: Vec<u8> = row.try_get("hash")?;
                let data: Vec<u8> = row.try_get("data")?;
                if crate::hash::sha256(&data)[..] != hash[..] {
                    return Err(Error::Store(format!(
                        "CRL piece {} of issuer {issuer} in the store does not match its hash: the database is damaged; restore it from a backup",
                        hex::encode(&hash)
                    )));
                }
                if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                    found.insert(hash, Arc::from(data));
                }
            }
        }
        let mut der = Vec::with_capacity(
            hashes
                .iter()
                .filter_map(|h| found.get(h))
                .map(|d| d.len())
                .sum(),
        );
        let mut pieces = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let Some(data) = found.get(hash) else {
                return Ok(None);
            };
            der.extend_from_slice(data);
            pieces.push(CrlPiece {
                end: der.len(),
                hash: *hash,
            });
        }
        self.crl_pieces
            .lock()
            .expect("CRL piece cache")
            .insert(issuer, CrlPieceCache(found));
        Ok(Some((der, pieces)))
    }
}
