//! Revocation and the CRLs it publishes.

use std::sync::atomic::Ordering;

use super::revoked_list::{RevokedList, MAX_KEPT_ENTRIES};
use super::*;
use crate::pki::crl::CrlBuilder;

/// Most revocations a kept list is patched with at once; a larger window
/// (a bulk revocation, a restore) is read in full instead.
const MAX_WINDOW: usize = 50_000;

impl Ca {
    /// Revokes one certificate.
    pub async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        invalidity_date: Option<OffsetDateTime>,
        actor: &str,
    ) -> Result<CertificateRecord> {
        // The CA's own certificates (the OCSP responder, ca-server's TLS
        // certificate) change only through CA commands (`ocsp-signer rotate`,
        // `server-cert`), never through a revocation: a revoked responder
        // would make every OCSP answer unverifiable.
        let existing = self.certificate(serial).await?;
        if existing.tenant == crate::ids::RESERVED_TENANT {
            return Err(Error::Forbidden(format!(
                "certificate {serial} belongs to the CA itself (tenant {}); it is replaced by `ca-cli ocsp-signer rotate` (OCSP responder) or `ca-cli server-cert` (ca-server's TLS certificate), never revoked directly",
                crate::ids::RESERVED_TENANT
            )));
        }
        let draft = AuditDraft::new(actor, "revoke", serial.to_hex());
        let mut record = self
            .store
            .revoke(serial, reason, invalidity_date, draft, now())
            .await?;
        if record.revoked_at.is_none() {
            // The row was read inside the transaction after the update.
            record.revoked_at = Some(now());
            record.reason = Some(reason);
        }
        Ok(record)
    }

    /// From now on, keeps each issuer's revoked-entry list between CRLs and
    /// patches it with the revocations since the last one, instead of
    /// reading every revoked certificate for each CRL (long-running servers;
    /// a one-shot command reads them once anyway, and keeps nothing).
    pub fn keep_crl_lists(&self) {
        self.keep_crl_lists.store(true, Ordering::Relaxed);
    }

    /// Builds, signs and publishes a fresh CRL of issuer `number`.
    pub async fn publish_crl_for(&self, number: u64, actor: &str) -> Result<PublishedCrl> {
        let crl = self.sign_crl_for(number).await?;
        self.store_crl(&crl, actor).await?;
        Ok(crl)
    }

    /// Stores a CRL from [`Ca::sign_crl_for`] as the published one (unless
    /// a higher number is published already: false).
    pub async fn store_crl(&self, crl: &PublishedCrl, actor: &str) -> Result<bool> {
        let subject = match (self.is_hierarchy(), self.issuer_by_number(crl.issuer)) {
            (true, Some(issuer)) => format!("crl {} issuer {}", crl.number, issuer.id),
            _ => format!("crl {}", crl.number),
        };
        let draft = AuditDraft::new(actor, "crl", subject);
        self.store.publish_crl(crl, draft).await
    }

    /// Builds issuer `number`'s kept revoked-entry list now, once, if this
    /// process keeps lists and has none: a replica that so far only read
    /// the other one's CRLs back would otherwise pay a full read of the
    /// store (seconds at a million entries) inside the first revocation it
    /// publishes itself. Its later CRLs patch the list.
    pub async fn warm_crl_list(&self, number: u64) -> Result<()> {
        if !self.keep_crl_lists.load(Ordering::Relaxed)
            || !self
                .crl_lists_warmed
                .lock()
                .expect("warmed CRL lists")
                .insert(number)
        {
            return Ok(());
        }
        let mut lists = self.crl_lists.lock().await;
        if lists.contains_key(&number) {
            return Ok(());
        }
        let revision = self.store.crl_status(number).await?.revision;
        let list = self
            .updated_list(&mut lists, number, revision, crate::now())
            .await?;
        if list.len() > MAX_KEPT_ENTRIES {
            lists.remove(&number);
        }
        Ok(())
    }

    /// Builds and signs a fresh CRL of issuer `number` under a newly
    /// reserved number, listing every revocation committed before it; it
    /// is published by [`Ca::store_crl`]. Serving it before then is safe:
    /// the revocations it lists are durable and its number is never reused.
    pub async fn sign_crl_for(&self, number: u64) -> Result<PublishedCrl> {
        let issuer = self
            .issuer_by_number(number)
            .ok_or_else(|| Error::NotFound(format!("no issuer numbered {number}")))?;
        let signer = issuer.signer.clone().ok_or_else(|| {
            Error::Key(format!(
                "the CRL of issuer {} needs its key: {}",
                issuer.id, self.key_hint
            ))
        })?;
        let this_update = crate::now();
        let next_update = this_update + self.crl_validity.to_time();
        // One publisher at a time per process: the kept lists are patched
        // in revision order.
        let mut lists = self.crl_lists.lock().await;
        let (crl_number, revision) = self.store.begin_crl(number).await?;
        let mut builder = CrlBuilder::new(
            &issuer.certificate,
            &*signer,
            crl_number,
            this_update,
            next_update,
        )?;
        if self.keep_crl_lists.load(Ordering::Relaxed) {
            let list = self
                .updated_list(&mut lists, number, revision, this_update)
                .await?;
            list.write_into(&mut builder);
            if list.len() > MAX_KEPT_ENTRIES {
                lists.remove(&number);
            }
        } else {
            self.store
                .revoked_entries(number, this_update, &mut |entry, _| builder.push(&entry))
                .await?;
        }
        drop(lists);
        let count = builder.entries();
        let (der, pieces) = if signer.blocks() {
            blocking(move || builder.finish_in_pieces(&*signer)).await?
        } else {
            builder.finish_in_pieces(&*signer)?
        };
        Ok(PublishedCrl {
            number: crl_number,
            this_update,
            next_update,
            der: der.0,
            pieces,
            revision,
            entries: count,
            issuer: number,
        })
    }

    /// Issuer `number`'s kept list brought to `revision` at `now`: patched
    /// with the revocations of the revisions since its own, and cut of the
    /// entries expired by `now`. It is read in full from the store instead
    /// when there is none yet, when the store is behind it (a restore),
    /// when the window is too large, and when nothing was revoked since
    /// (a republish ahead of nextUpdate, every few hours): that last one
    /// also bounds how long any divergence from the store could last.
    async fn updated_list<'a>(
        &self,
        lists: &'a mut std::collections::HashMap<u64, RevokedList>,
        number: u64,
        revision: u64,
        now: OffsetDateTime,
    ) -> Result<&'a RevokedList> {
        let mut patched = false;
        if let Some(list) = lists.get_mut(&number) {
            if list.revision() < revision {
                let window = self
                    .store
                    .revoked_between(number, list.revision(), revision, MAX_WINDOW)
                    .await?;
                if let Some(window) = window {
                    for (entry, not_after) in &window {
                        if *not_after > now {
                            list.insert(entry, *not_after);
                        }
                    }
                    list.expire(now);
                    list.set_revision(revision);
                    patched = true;
                }
            }
        }
        if patched {
            return Ok(&lists[&number]);
        }
        lists.remove(&number);
        let mut list = RevokedList::new(revision);
        let mut in_order = true;
        self.store
            .revoked_entries(number, now, &mut |entry, not_after| {
                in_order &= list.push_sorted(&entry, not_after);
            })
            .await?;
        if !in_order {
            return Err(Error::Store(
                "the store returned revoked certificates out of serial order".into(),
            ));
        }
        Ok(lists.entry(number).or_insert(list))
    }

    /// Builds, signs and publishes a fresh CRL of the active issuer.
    pub async fn publish_crl(&self, actor: &str) -> Result<PublishedCrl> {
        self.publish_crl_for(self.active_issuer, actor).await
    }

    /// True when the active issuer's published CRL misses a revocation, or
    /// has passed half its validity (DESIGN §5: regenerated on revocation and
    /// ahead of nextUpdate).
    pub async fn crl_needs_refresh(&self) -> Result<bool> {
        self.crl_needs_refresh_for(self.active_issuer).await
    }

    /// A counter every state change moves, by any process (the audit
    /// chain's sequence): servers poll it to drop what an issuance elsewhere
    /// makes stale.
    pub async fn change_counter(&self) -> Result<u64> {
        Ok(self.store.audit_head().await?.0)
    }

    /// Cheap state of the active issuer's CRL publication (polled by
    /// servers; its revision moves on every revocation of any issuer).
    pub async fn crl_status(&self) -> Result<crate::store::CrlStatus> {
        self.store.crl_status(self.active_issuer).await
    }

    /// The active issuer's published CRL.
    pub async fn latest_crl(&self) -> Result<Option<PublishedCrl>> {
        self.store.latest_crl(self.active_issuer).await
    }
}
