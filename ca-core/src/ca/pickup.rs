//! Delivery by one-time pickup (DESIGN §1, §3): the bundle and its password
//! are sealed under a random code (`pki::seal`) and stored with the
//! certificate in one transaction; the caller gets the code once, the admin
//! a link. Collection, wrong codes, expiry and resend are here; the HTTP
//! page and the mail are the front end's.

use super::*;
use crate::pki::seal::{self, OpenError, PickupCode};
use crate::policy::Delivery;
use crate::store::{MailState, NewPickup, PickupRecord, PickupState, WrongCode};

/// scrypt runs for pickup codes at once (each takes ~8 MiB and a few tens
/// of milliseconds): more wait, so a burst of guesses on the public page
/// cannot take the server's memory.
pub(crate) const PICKUP_SCRYPT_SLOTS: usize = 4;

/// How a caller wants an issuance delivered by pickup.
#[derive(Debug, Clone, Default)]
pub struct PickupRequest {
    /// Where the notification mail goes (checked: one `@`, no spaces).
    pub email: Option<String>,
    /// Whether a mail will be sent (an address and `smtp.url` configured).
    pub mail: bool,
}

/// A committed issuance whose bundle waits for pickup. The caller shows
/// `code` once (to the operator, for phone or SMS); the bundle itself is
/// not here.
pub struct PickupIssuance {
    /// The new certificate.
    pub record: CertificateRecord,
    /// Serials revoked in the same transaction (reissue, resend).
    pub revoked: Vec<Serial>,
    /// The pickup's id (the link is `<base_url>/pickup/<id>`).
    pub id: String,
    /// When the pickup expires.
    pub expires_at: OffsetDateTime,
    /// The one-time code.
    pub code: PickupCode,
    /// The notification address.
    pub email: Option<String>,
}

/// What a code typed on the pickup page did.
pub enum PickupOutcome {
    /// The right code: the bundle and its password, handed out once (the
    /// sealed copy is already destroyed).
    Opened {
        /// The pickup.
        record: PickupRecord,
        /// PKCS#12 DER and password.
        opened: seal::Opened,
    },
    /// Not a code of the printed form; nothing counted.
    Malformed(PickupRecord),
    /// A wrong code, counted; this many tries are left.
    WrongCode(PickupRecord, u32),
    /// That wrong code was the last try: locked.
    Locked(PickupRecord),
    /// Collected, expired, locked or replaced before this request.
    Gone(PickupRecord, PickupState),
}

/// Checks what a caller asked for before anything is generated: `email`
/// (a notification address, see [`check_email`]) goes with pickup delivery
/// only, so not with an explicit direct one.
pub fn check_delivery(requested: Option<Delivery>, email: Option<&str>) -> Result<()> {
    let Some(email) = email else {
        return Ok(());
    };
    if requested == Some(Delivery::Direct) {
        return Err(email_without_pickup());
    }
    check_email(email)
}

fn email_without_pickup() -> Error {
    Error::InvalidInput(
        "email goes with pickup delivery only (the link goes by mail; a direct answer or download carries the bundle)".into(),
    )
}

impl Ca {
    /// How `prepared`'s bundle is handed over: what the caller asked for
    /// (checked by [`check_delivery`]), else its policy's `delivery`.
    /// `None`: directly (in the answer); else by pickup, mailing `email`
    /// when `mail` (an SMTP server is configured).
    pub fn pickup_request(
        &self,
        prepared: &PreparedIssuance,
        requested: Option<Delivery>,
        email: Option<String>,
        mail: bool,
    ) -> Result<Option<PickupRequest>> {
        match requested.unwrap_or_else(|| self.default_delivery(prepared)) {
            Delivery::Direct if email.is_some() => Err(email_without_pickup()),
            Delivery::Direct => Ok(None),
            Delivery::Pickup => Ok(Some(PickupRequest { mail, email })),
        }
    }
}

/// Checks a notification address: one `@` with text either side, no
/// spaces or control characters, at most 254 bytes (RFC 5321 §4.5.3.1.3).
pub fn check_email(email: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "email \"{}\" {why}: give one address like admin@example.com",
            email.escape_debug()
        )))
    };
    if email.len() > 254 {
        return bad("is longer than 254 bytes");
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return bad("contains spaces, control characters or list separators");
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => bad("is not an address"),
    }
}

fn pickup_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

impl Ca {
    /// How long a pickup waits (`pickup.validity`).
    pub fn pickup_validity(&self) -> Duration {
        self.pickup_validity
    }

    /// Makes a prepared issuance durable with its bundle sealed for pickup
    /// (one transaction: the certificate, the revocations of a reissue, the
    /// pickup, and their audit events). The bundle and password in
    /// `prepared` are wiped here; only the sealed copy is kept.
    pub async fn commit_pickup(
        &self,
        prepared: PreparedIssuance,
        request: &PickupRequest,
        actor: &str,
    ) -> Result<PickupIssuance> {
        self.commit_pickup_inner(prepared, request, actor, false)
            .await
    }

    async fn commit_pickup_inner(
        &self,
        mut prepared: PreparedIssuance,
        request: &PickupRequest,
        actor: &str,
        resend: bool,
    ) -> Result<PickupIssuance> {
        if let Some(email) = &request.email {
            check_email(email)?;
        }
        let (Some(bundle), Some(password)) = (prepared.bundle.take(), prepared.password.take())
        else {
            return Err(Error::InvalidInput(
                "only bundles (issue, reissue) can be delivered by pickup; a CSR's certificate is public: fetch it directly".into(),
            ));
        };
        let mut record = prepared.record;
        if record.issuer == 0 {
            record.issuer = self.active_issuer;
        }
        let id = pickup_id()?;
        let serial = record.serial.to_hex();
        let (seal_id, seal_serial) = (id.clone(), serial.clone());
        let _slot = self.pickup_slots.acquire().await;
        let (code, sealed) = tokio::task::spawn_blocking(move || -> Result<_> {
            let code = PickupCode::generate()?;
            let sealed = seal::seal(&code, &seal_id, &seal_serial, &bundle.0, &password)?;
            Ok((code, sealed))
        })
        .await
        .map_err(|e| Error::Crypto(format!("sealing worker failed: {e}")))??;
        drop(_slot);
        let expires_at = now() + time::Duration::seconds(self.pickup_validity.as_secs() as i64);
        let mut draft = AuditDraft::new(
            actor,
            prepared.action,
            format!("{}/{}", record.tenant, record.admin),
        );
        draft.details = format!(
            "policy={} not_after={} delivery=pickup",
            record.policy,
            crate::rfc3339(record.not_after)
        );
        let pickup = NewPickup {
            id: id.clone(),
            email: request.email.clone(),
            expires_at,
            sealed,
            mail: if request.mail && request.email.is_some() {
                MailState::Pending
            } else {
                MailState::None
            },
            resend,
        };
        let revoked = self
            .store
            .insert_certificate_with_pickup(&record, prepared.supersede, pickup, draft, now())
            .await?;
        Ok(PickupIssuance {
            record,
            revoked,
            id,
            expires_at,
            code,
            email: request.email.clone(),
        })
    }

    /// A new link and code for a bundle not yet collected (DESIGN §1): the
    /// server cannot re-seal the old bundle without its code, so a resend
    /// reissues — a new certificate replaces the uncollected one (reason
    /// superseded) and its bundle waits under a new pickup — in one
    /// transaction; the old link dies. Refused with 409 once collected.
    /// Without `email`, the last pickup's address is used.
    pub async fn resend_pickup(
        &self,
        tenant: &str,
        admin: &str,
        email: Option<String>,
        mail: bool,
        mode: ReissueMode,
        actor: &str,
    ) -> Result<PickupIssuance> {
        let (tenant, admin) = (TenantId::parse_customer(tenant)?, AdminId::parse(admin)?);
        let last = self
            .store
            .pickups(Some(tenant.as_str()), Some(admin.as_str()), true, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{tenant}/{admin} has no pickup to resend: issue or reissue with delivery \"pickup\" first"
                ))
            })?;
        if last.state == PickupState::Collected {
            return Err(Error::Conflict(format!(
                "already collected: the bundle of {tenant}/{admin} was downloaded at {}; a resend cannot bring it back: reissue",
                last.closed_at.map(crate::rfc3339).unwrap_or_default()
            )));
        }
        let request = IssueRequest {
            tenant: tenant.to_string(),
            admin: admin.to_string(),
            policy: Some(last.policy.clone()),
            password: None,
        };
        let prepared = self
            .prepare_reissue(&request, RevocationReason::Superseded, mode)
            .await?;
        let delivery = PickupRequest {
            email: email.or(last.email),
            mail,
        };
        self.commit_pickup_inner(prepared, &delivery, actor, true)
            .await
    }

    /// One pickup (never its sealed bundle).
    pub async fn pickup(&self, id: &str) -> Result<Option<PickupRecord>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self.store.pickup(id).await?.map(|(record, _)| record))
    }

    /// Pickups, newest first (see [`crate::PickupStore::pickups`]).
    pub async fn pickups(
        &self,
        tenant: Option<&str>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<PickupRecord>> {
        if let Some(t) = tenant {
            TenantId::parse(t)?;
        }
        self.store.pickups(tenant, None, all, limit).await
    }

    /// Tries `typed` on pickup `id`. A right code hands the bundle out once:
    /// the pickup is marked collected (its sealed copy destroyed) before
    /// this returns it. `None` when there is no such pickup.
    pub async fn open_pickup(&self, id: &str, typed: &str) -> Result<Option<PickupOutcome>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some((record, sealed)) = self.store.pickup(id).await? else {
            return Ok(None);
        };
        let at = now();
        if record.state_at(at) == PickupState::Expired && record.state == PickupState::Waiting {
            self.store.expire_pickups(at).await?;
            return Ok(Some(PickupOutcome::Gone(record, PickupState::Expired)));
        }
        let Some(sealed) = sealed else {
            let state = record.state;
            return Ok(Some(PickupOutcome::Gone(record, state)));
        };
        let typed = Zeroizing::new(typed.to_owned());
        let (salt, code_hash) = (sealed.salt.clone(), sealed.code_hash.clone());
        let slot = self.pickup_slots.acquire().await;
        let checked =
            tokio::task::spawn_blocking(move || seal::check_code(&typed, &salt, &code_hash))
                .await
                .map_err(|e| Error::Crypto(format!("pickup worker failed: {e}")))??;
        drop(slot);
        let key = match checked {
            Ok(key) => key,
            Err(OpenError::Malformed) => return Ok(Some(PickupOutcome::Malformed(record))),
            Err(OpenError::WrongCode) => {
                return Ok(Some(match self.store.pickup_wrong_code(id, at).await? {
                    WrongCode::Counted { left } => PickupOutcome::WrongCode(record, left),
                    WrongCode::Locked => PickupOutcome::Locked(record),
                    WrongCode::NotWaiting => {
                        let state = self.current_state(id).await?;
                        PickupOutcome::Gone(record, state)
                    }
                }))
            }
        };
        let opened = seal::open(&key, id, &record.serial, &sealed.nonce, &sealed.sealed)?;
        if !self.store.collect_pickup(id, at).await? {
            drop(opened);
            let state = self.current_state(id).await?;
            return Ok(Some(PickupOutcome::Gone(record, state)));
        }
        Ok(Some(PickupOutcome::Opened { record, opened }))
    }

    async fn current_state(&self, id: &str) -> Result<PickupState> {
        Ok(self
            .store
            .pickup(id)
            .await?
            .map(|(r, _)| r.state)
            .unwrap_or(PickupState::Replaced))
    }

    /// Expires the waiting pickups past their expiry (their sealed bundles
    /// destroyed, each audited); returns how many.
    pub async fn expire_pickups(&self) -> Result<usize> {
        Ok(self.store.expire_pickups(now()).await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn addresses_are_checked() {
        assert!(check_email("a@example.com").is_ok());
        for bad in ["", "a", "@x", "a@", "a b@x", "a@b@c", "a@x,b@y", "<a@x>"] {
            let e = check_email(bad).unwrap_err().to_string();
            assert!(e.starts_with("email"), "{bad}: {e}");
        }
    }
}
