//! ca-server's own TLS certificate (`ca-cli server-cert`): a server-generated
//! key and a certificate under the `tls-server` policy with the requested
//! subjectAltNames, recorded under the CA's reserved tenant.
//!
//! Decision: the record's admin is the first name asked for, so issuing again
//! for the same name *replaces* the active certificate (it is revoked as
//! superseded in the same transaction, like `reissue`) instead of hitting the
//! one-active rule; certificates for other names live side by side.

use std::net::IpAddr;

use zeroize::Zeroizing;

use super::{generate_and_sign_with_names, Ca, PreparedIssuance};
use crate::error::{Error, Result};
use crate::ids::{AdminId, TenantId, RESERVED_TENANT};
use crate::pki::x509::AltName;
use crate::policy::PolicyKind;
use crate::reason::RevocationReason;
use crate::store::Supersede;

/// What `server-cert` asks for.
#[derive(Debug, Clone, Default)]
pub struct ServerCertRequest {
    /// DNS names (subjectAltName dNSName); the first is also the CN.
    pub dns: Vec<String>,
    /// IP addresses (subjectAltName iPAddress).
    pub ips: Vec<IpAddr>,
    /// Policy (kind `tls-server`); the first such policy when `None`.
    pub policy: Option<String>,
}

/// A signed, not yet committed server certificate and its key.
pub struct PreparedServerCertificate {
    /// Commit with [`Ca::commit`]; only then hand out the files.
    pub issuance: PreparedIssuance,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The certificate followed by the CA certificate, PEM.
    pub chain_pem: String,
}

/// The record's admin name for a server certificate: its first name, with
/// IPv6 colons made legal for the name rule.
fn record_name(names: &[AltName]) -> Result<AdminId> {
    let first = match names.first() {
        Some(AltName::Dns(dns)) => dns.clone(),
        Some(AltName::Ip(ip)) => ip.to_string().replace(':', "-"),
        None => {
            return Err(Error::InvalidInput(
                "a server certificate needs at least one --dns or --ip name".into(),
            ))
        }
    };
    AdminId::parse(&first)
}

impl Ca {
    /// Generates a key and signs a TLS server certificate for `request`'s names;
    /// committing it revokes (superseded) the active one for the same first name.
    pub async fn prepare_server_certificate(
        &self,
        request: &ServerCertRequest,
    ) -> Result<PreparedServerCertificate> {
        let mut names = Vec::new();
        for dns in &request.dns {
            names.push(AltName::dns(dns)?);
        }
        names.extend(request.ips.iter().copied().map(AltName::Ip));
        names.dedup();
        if names.len() > 100 {
            return Err(Error::InvalidInput(
                "at most 100 names in one server certificate".into(),
            ));
        }
        let admin = record_name(&names)?;
        let policy = match &request.policy {
            Some(name) => self.policy_of_kind(name, PolicyKind::TlsServer)?,
            None => self
                .policies
                .iter()
                .find(|p| p.kind == PolicyKind::TlsServer)
                .ok_or_else(|| {
                    Error::Policy(format!(
                        "no policy with kind = \"tls-server\" in {}",
                        self.policies.source
                    ))
                })?,
        }
        .clone();
        let tenant = TenantId::parse(RESERVED_TENANT)?;
        let signer = self.shared_signer()?;
        let (ca_cert, endpoints) = (self.ca_cert.clone(), self.endpoints.clone());
        let ca_pem = ca_cert.der().to_pem();
        let (key, record) = tokio::task::spawn_blocking(move || {
            generate_and_sign_with_names(
                &policy,
                &tenant,
                &admin,
                &names,
                signer.as_ref(),
                &ca_cert,
                &endpoints,
            )
        })
        .await
        .map_err(|e| Error::Crypto(format!("issuance worker failed: {e}")))??;
        let key_pem = Zeroizing::new(
            String::from_utf8(key.private_key_to_pem_pkcs8()?)
                .map_err(|_| Error::Crypto("key PEM is not text".into()))?,
        );
        let chain_pem = format!(
            "{}{ca_pem}",
            crate::pki::x509::pem_encode("CERTIFICATE", &record.der)
        );
        Ok(PreparedServerCertificate {
            issuance: PreparedIssuance {
                record,
                supersede: Some(Supersede {
                    reason: RevocationReason::Superseded,
                    require_active: false,
                }),
                action: "server-cert",
                bundle: None,
                password: None,
            },
            key_pem,
            chain_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_name_names_the_record() {
        let names = [AltName::dns("CA.Example.com.").unwrap()];
        assert_eq!(record_name(&names).unwrap().as_str(), "ca.example.com");
        let ip = [AltName::Ip("::1".parse().unwrap())];
        assert_eq!(record_name(&ip).unwrap().as_str(), "--1");
        assert!(record_name(&[]).is_err());
        assert!(AltName::dns("*.example.com").is_err());
        assert!(AltName::dns("-bad.example").is_err());
    }
}
