//! Revocation and the CRLs it publishes.

use super::*;

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
