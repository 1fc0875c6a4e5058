//! TLS client-certificate login to the API (DESIGN §7): a certificate this CA
//! issued, under a policy that declares `api_role`, authenticates like a token
//! of that role. Its status is read from the store on every request — not from
//! a CRL — so a revocation or expiry refuses it at once, on every replica.

use super::{now, Ca};
use crate::error::{Error, Result};
use crate::ids::{AdminId, Serial, TenantId};
use crate::tokens::{Credential, Principal};

impl Ca {
    /// Checks a client certificate (DER, as the TLS layer received it; the
    /// handshake proved possession of its key).
    pub async fn authenticate_certificate(&self, der: &[u8]) -> Result<Principal> {
        let refused =
            |why: String| Error::Unauthenticated(format!("client certificate refused: {why}"));
        let serial = openssl::x509::X509::from_der(der)
            .ok()
            .and_then(|c| c.serial_number().to_bn().ok())
            .and_then(|bn| Serial::from_bytes(&bn.to_vec()))
            .ok_or_else(|| refused("not a certificate issued by this CA".into()))?;
        let record = self
            .store
            .certificate(&serial)
            .await?
            // The same serial is not enough: the certificate must be the one we signed.
            .filter(|r| r.der == der)
            .ok_or_else(|| refused("not a certificate issued by this CA".into()))?;
        if let Some(at) = record.revoked_at {
            return Err(refused(format!(
                "{serial} was revoked at {}",
                crate::rfc3339(at)
            )));
        }
        let now = now();
        if now >= record.not_after || now < record.not_before {
            return Err(refused(format!(
                "{serial} is not valid now (valid {} to {})",
                crate::rfc3339(record.not_before),
                crate::rfc3339(record.not_after)
            )));
        }
        let policy = self.policies.get(&record.policy).map_err(|_| {
            refused(format!(
                "{serial}'s policy {} is no longer configured",
                record.policy
            ))
        })?;
        let role = policy.api_role.ok_or_else(|| {
            refused(format!(
                "policy {} grants no API role (set api_role in the policy)",
                policy.name
            ))
        })?;
        let tenant = match &policy.api_tenant {
            None => None,
            Some(template) => {
                let (tenant, admin) = (
                    TenantId::parse(&record.tenant)?,
                    AdminId::parse(&record.admin)?,
                );
                Some(TenantId::parse(&template.render(&tenant, &admin))?.to_string())
            }
        };
        Ok(Principal {
            credential: Credential::Certificate(serial),
            role,
            tenant,
        })
    }
}
