//! Certificate building: the self-signed CA certificate and the profiles' leaf
//! certificates (RFC 5280). Pure functions of their inputs and a signer.

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids::{AdminId, Serial, TenantId};
use crate::keys::PublicKey;
use crate::policy::{ExtendedKeyUsage, Policy};
use crate::signer::{RcgenSigner, Signer};

/// A DER certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateDer(pub Vec<u8>);

impl CertificateDer {
    /// PEM armour.
    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.0)
    }
}

/// PEM-armours DER bytes with the given label.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// How long before "now" a new certificate becomes valid, so that a gateway
/// whose clock runs a little behind still accepts it at once.
pub(crate) const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Parses `CN=Portal Admin CA,O=Example,C=DE` (also `/`-separated, as `openssl req -subj` takes).
pub(crate) fn parse_subject(text: &str) -> Result<DistinguishedName> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "invalid subject \"{}\": {why} (expected e.g. \"CN=Portal Admin CA,O=Example Corp,C=DE\"; attributes CN, O, OU, C, ST, L)",
            text.escape_debug()
        ))
    };
    let separator = if text.starts_with('/') { '/' } else { ',' };
    let mut dn = DistinguishedName::new();
    let mut has_cn = false;
    for part in text
        .split(separator)
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| bad("each part must be KEY=VALUE"))?;
        let value = value.trim();
        if value.is_empty() || value.len() > 64 {
            return Err(bad("values must be 1 to 64 characters"));
        }
        let kind = match key.trim().to_ascii_uppercase().as_str() {
            "CN" => {
                has_cn = true;
                DnType::CommonName
            }
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            "C" => {
                if value.len() != 2 || !value.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(bad("C must be a two-letter upper-case country code"));
                }
                dn.push(
                    DnType::CountryName,
                    DnValue::PrintableString(value.try_into().map_err(|_| bad("bad C"))?),
                );
                continue;
            }
            other => return Err(bad(&format!("unknown attribute {other}"))),
        };
        dn.push(kind, DnValue::Utf8String(value.to_owned()));
    }
    if !has_cn {
        return Err(bad("a CN is required"));
    }
    Ok(dn)
}

fn rcgen_serial(serial: &Serial) -> SerialNumber {
    SerialNumber::from_slice(serial.as_bytes())
}

/// A self-signed CA certificate (one day) for `key`, and its signer: unit tests' issuer.
#[cfg(test)]
pub(crate) fn test_certificate(
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    subject: &str,
) -> (CertificateDer, crate::signer::FileSigner) {
    let signer = crate::signer::FileSigner::new(key).unwrap();
    let der = build_ca_certificate(
        parse_subject(subject).unwrap(),
        &signer,
        crate::now(),
        time::Duration::days(1),
    )
    .unwrap();
    (der, signer)
}

/// Builds the self-signed CA certificate: critical basicConstraints CA:TRUE
/// pathLen 0 (it only issues end-entity certificates), keyCertSign + cRLSign.
pub(crate) fn build_ca_certificate(
    subject: DistinguishedName,
    signer: &dyn Signer,
    not_before: OffsetDateTime,
    validity: time::Duration,
) -> Result<CertificateDer> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(rcgen_serial(&Serial::random()?));
    params.not_before = not_before;
    params.not_after = not_before + validity;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::PreSpecified(signer.public_key().key_identifier());
    let cert = crate::signer::rcgen_result(params.self_signed(&RcgenSigner(signer)))?;
    Ok(CertificateDer(cert.der().to_vec()))
}

/// The CA certificate with what issuing needs from it.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    der: CertificateDer,
    public_key: PublicKey,
    subject_der: Vec<u8>,
    subject: DistinguishedName,
    not_after: OffsetDateTime,
}

/// Rebuilds an rcgen name from a parsed one, keeping each value's string type
/// so the issuer Name of what we sign matches the CA's subject byte for byte.
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attribute in name.iter_attributes() {
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(|| Error::Config("CA subject has an unreadable attribute type".into()))?
            .collect();
        let text = attribute
            .as_str()
            .map_err(|_| Error::Config("CA subject has a non-string attribute".into()))?
            .to_owned();
        let value = match attribute.attr_value().tag() {
            Tag::PrintableString => DnValue::PrintableString(
                text.as_str()
                    .try_into()
                    .map_err(|_| Error::Config("bad PrintableString in CA subject".into()))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.as_str()
                    .try_into()
                    .map_err(|_| Error::Config("bad IA5String in CA subject".into()))?,
            ),
            _ => DnValue::Utf8String(text),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

impl CaCertificate {
    /// Parses and checks a CA certificate: it must be a CA with keyCertSign and cRLSign.
    pub fn from_der(der: Vec<u8>) -> Result<Self> {
        use x509_parser::prelude::*;
        let bad = |why: String| Error::Config(format!("the CA certificate is unusable: {why}"));
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let usage = cert.key_usage().ok().flatten().map(|ku| ku.value);
        if !is_ca || !usage.is_some_and(|u| u.key_cert_sign() && u.crl_sign()) {
            return Err(bad(
                "it must have basicConstraints CA:TRUE and keyUsage keyCertSign, cRLSign".into(),
            ));
        }
        let public_key = PublicKey::from_spki_der(cert.public_key().raw)?;
        let subject_der = cert.subject().as_raw().to_vec();
        let subject = distinguished_name(cert.subject())?;
        let not_after = cert.validity().not_after.to_datetime();
        Ok(CaCertificate {
            public_key,
            subject_der,
            subject,
            not_after,
            der: CertificateDer(der),
        })
    }

    /// DER.
    pub fn der(&self) -> &CertificateDer {
        &self.der
    }

    /// The CA's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The DER of the subject Name (the issuer Name of everything it signs).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    pub(crate) fn issuer<'a>(
        &self,
        signer: &'a dyn Signer,
    ) -> Result<Issuer<'static, RcgenSigner<'a>>> {
        crate::signer::check_matches(signer, self.public_key.spki_der())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = self.subject.clone();
        params.key_identifier_method = KeyIdMethod::PreSpecified(self.public_key.key_identifier());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Issuer::new(params, RcgenSigner(signer)))
    }
}

/// Where relying parties find the CRL, OCSP and the CA certificate.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `<base_url>` without a trailing slash.
    pub base_url: String,
    /// Under a trust hierarchy, the id of the issuer whose certificates these
    /// are: its CRL and certificate then have URLs of their own, stable across
    /// rollovers (DESIGN §5). `None` for the single self-signed CA.
    pub issuer: Option<String>,
}

impl Endpoints {
    /// Checks and normalises a base URL.
    pub fn new(base_url: &str) -> Result<Self> {
        let trimmed = base_url.trim().trim_end_matches('/');
        let ok = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
            && trimmed.len() > "https://".len()
            && trimmed.is_ascii()
            && !trimmed.contains(char::is_whitespace);
        if !ok {
            return Err(Error::InvalidInput(format!(
                "invalid base URL \"{}\": expected http(s)://host[:port][/path], e.g. http://ca.example.com",
                base_url.escape_debug()
            )));
        }
        Ok(Endpoints {
            base_url: trimmed.to_owned(),
            issuer: None,
        })
    }

    /// The endpoints of issuer `id`'s certificates.
    pub fn for_issuer(&self, id: &str) -> Self {
        Endpoints {
            base_url: self.base_url.clone(),
            issuer: Some(id.to_owned()),
        }
    }

    /// CRL distribution point.
    pub fn crl(&self) -> String {
        match &self.issuer {
            Some(id) => format!("{}/crl/{id}", self.base_url),
            None => format!("{}/crl", self.base_url),
        }
    }

    /// OCSP responder.
    pub fn ocsp(&self) -> String {
        format!("{}/ocsp", self.base_url)
    }

    /// CA certificate (caIssuers).
    pub fn ca_cert(&self) -> String {
        match &self.issuer {
            Some(id) => format!("{}/ca/{id}.crt", self.base_url),
            None => format!("{}/ca.crt", self.base_url),
        }
    }
}

/// Authority Information Access (RFC 5280 §4.2.2.1): OCSP and caIssuers URIs.
/// rcgen has no field for it, so it is encoded here.
fn authority_info_access(endpoints: &Endpoints) -> CustomExtension {
    const OCSP: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 48, 1];
    const CA_ISSUERS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 48, 2];
    let der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (method, uri) in [(OCSP, endpoints.ocsp()), (CA_ISSUERS, endpoints.ca_cert())] {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(&method));
                    // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
                    w.next().write_tagged_implicit(yasna::Tag::context(6), |w| {
                        w.write_ia5_string(&uri)
                    });
                });
            }
        })
    });
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der)
}

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): NULL content.
fn ocsp_nocheck() -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 5], vec![0x05, 0x00])
}

/// Everything that varies between two leaf certificates of one policy.
#[derive(Debug, Clone)]
pub(crate) struct LeafRequest<'a> {
    /// The profile.
    pub policy: &'a Policy,
    /// Tenant.
    pub tenant: &'a TenantId,
    /// Admin.
    pub admin: &'a AdminId,
    /// The subject's public key.
    pub public_key: &'a PublicKey,
    /// Serial.
    pub serial: Serial,
    /// Issuance time.
    pub now: OffsetDateTime,
    /// subjectAltNames (TLS server certificates; empty for client certificates).
    pub alt_names: &'a [AltName],
}

/// A subjectAltName of a TLS server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AltName {
    /// dNSName, lower-case, checked by [`AltName::dns`].
    Dns(String),
    /// iPAddress.
    Ip(std::net::IpAddr),
}

impl AltName {
    /// A DNS host name (RFC 1123 labels: letters, digits, hyphens; no wildcards).
    pub(crate) fn dns(name: &str) -> Result<AltName> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if lower.is_empty() || lower.len() > 253 || !lower.split('.').all(label_ok) {
            return Err(Error::InvalidInput(format!(
                "invalid DNS name \"{}\": use letters, digits and hyphens in dot-separated labels (no wildcards)",
                name.chars().take(80).collect::<String>().escape_debug()
            )));
        }
        Ok(AltName::Dns(lower))
    }
}

/// A signed leaf with its validity.
#[derive(Debug, Clone)]
pub(crate) struct IssuedCertificate {
    /// DER.
    pub der: CertificateDer,
    /// Serial.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity (capped at the CA's own end).
    pub not_after: OffsetDateTime,
}

/// Builds and signs an end-entity certificate for `request` (DESIGN §5).
pub(crate) fn build_leaf(
    request: &LeafRequest<'_>,
    ca: &CaCertificate,
    signer: &dyn Signer,
    endpoints: &Endpoints,
) -> Result<IssuedCertificate> {
    let policy = request.policy;
    let mut dn = DistinguishedName::new();
    if let Some(country) = &policy.subject.country {
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString(
                country
                    .as_str()
                    .try_into()
                    .map_err(|_| Error::Policy("bad country".into()))?,
            ),
        );
    }
    if let Some(o) = &policy.subject.organization {
        dn.push(
            DnType::OrganizationName,
            o.render(request.tenant, request.admin),
        );
    }
    if let Some(ou) = &policy.subject.organizational_unit {
        dn.push(
            DnType::OrganizationalUnitName,
            ou.render(request.tenant, request.admin),
        );
    }
    dn.push(
        DnType::CommonName,
        policy
            .subject
            .common_name
            .render(request.tenant, request.admin),
    );

    let not_before = request.now - BACKDATE;
    let not_after = (request.now + policy.validity.to_time()).min(ca.not_after());
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen_serial(&request.serial));
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = policy
        .extended_key_usage
        .iter()
        .map(|eku| match eku {
            ExtendedKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
            ExtendedKeyUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
            ExtendedKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        })
        .collect();
    params.subject_alt_names = request
        .alt_names
        .iter()
        .map(|name| match name {
            AltName::Dns(dns) => dns
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| Error::InvalidInput(format!("invalid DNS name \"{dns}\""))),
            AltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_>>()?;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(request.public_key.key_identifier());
    if policy
        .extended_key_usage
        .contains(&ExtendedKeyUsage::OcspSigning)
    {
        // A responder certificate is not itself checked for revocation (RFC 6960 §4.2.2.2.1).
        params.custom_extensions.push(ocsp_nocheck());
    } else {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![endpoints.crl()],
        }];
        params
            .custom_extensions
            .push(authority_info_access(endpoints));
    }
    let issuer = ca.issuer(signer)?;
    let cert = crate::signer::rcgen_result(params.signed_by(request.public_key, &issuer))?;
    Ok(IssuedCertificate {
        der: CertificateDer(cert.der().to_vec()),
        serial: request.serial,
        not_before,
        not_after,
    })
}

/// Turns PEM or DER certificate bytes into DER.
pub(crate) fn certificate_der_from_pem_or_der(bytes: &[u8]) -> Result<Vec<u8>> {
    let cert = openssl::x509::X509::from_pem(bytes)
        .or_else(|_| openssl::x509::X509::from_der(bytes))
        .map_err(|_| Error::InvalidInput("not a PEM or DER X.509 certificate".into()))?;
    Ok(cert.to_der()?)
}

/// A one-line subject (`CN=…, O=…`) of a DER certificate, for messages.
pub fn subject_line(der: &[u8]) -> String {
    let Ok(cert) = openssl::x509::X509::from_der(der) else {
        return String::new();
    };
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            Some(format!("{key}={value}"))
        })
        .collect();
    parts.join(", ")
}

/// The serial of a DER certificate as lower-case hex (empty if it cannot be parsed).
pub fn certificate_serial_hex(der: &[u8]) -> String {
    openssl::x509::X509::from_der(der)
        .ok()
        .and_then(|c| c.serial_number().to_bn().ok())
        .and_then(|bn| bn.to_hex_str().ok())
        .map(|h| h.to_lowercase())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Trust hierarchy: the offline root, the issuing CAs it signs, their CSRs.
// ---------------------------------------------------------------------------

/// Builds a self-signed root CA certificate: critical basicConstraints CA:TRUE
/// with no path length (RFC 5280 §4.2.1.9: the root may sign issuing CAs),
/// keyCertSign + cRLSign only (RFC 5280 §4.2.1.3: a root signs nothing else).
pub(crate) fn build_root_certificate(
    subject: DistinguishedName,
    signer: &dyn Signer,
    not_before: OffsetDateTime,
    validity: time::Duration,
) -> Result<CertificateDer> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(rcgen_serial(&Serial::random()?));
    params.not_before = not_before;
    params.not_after = not_before + validity;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::PreSpecified(signer.public_key().key_identifier());
    let cert = crate::signer::rcgen_result(params.self_signed(&RcgenSigner(signer)))?;
    Ok(CertificateDer(cert.der().to_vec()))
}

/// What `root sign-ca` puts into an issuing CA certificate.
pub(crate) struct IssuingCaRequest<'a> {
    /// The issuing CA's subject, from its CSR (kept byte for byte).
    pub subject_der: &'a [u8],
    /// Its key, from the CSR (whose signature was verified).
    pub public_key: &'a PublicKey,
    /// Serial.
    pub serial: Serial,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end (never beyond the root's).
    pub not_after: OffsetDateTime,
    /// basicConstraints pathLenConstraint: 0 = it issues only end-entity certificates.
    pub path_len: u8,
    /// The root's CRL URL, as a CRL distribution point (RFC 5280 §4.2.1.13).
    pub crl_url: Option<&'a str>,
}

/// Signs an issuing CA certificate with the root's key.
pub(crate) fn build_issuing_certificate(
    request: &IssuingCaRequest<'_>,
    root: &CaCertificate,
    signer: &dyn Signer,
) -> Result<CertificateDer> {
    use x509_parser::prelude::FromDer;
    let (_, name) = x509_parser::x509::X509Name::from_der(request.subject_der)
        .map_err(|_| Error::InvalidInput("the CSR's subject cannot be read".into()))?;
    let subject = distinguished_name(&name)?;
    if name.iter_common_name().next().is_none() {
        return Err(Error::InvalidInput(
            "the CSR's subject has no CN: an issuing CA needs a name (init --issuing --subject \"CN=…\")".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(rcgen_serial(&request.serial));
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(request.path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(request.public_key.key_identifier());
    if let Some(url) = request.crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_owned()],
        }];
    }
    let issuer = root.issuer(signer)?;
    let cert = crate::signer::rcgen_result(params.signed_by(request.public_key, &issuer))?;
    Ok(CertificateDer(cert.der().to_vec()))
}

/// A PKCS#10 request for an issuing CA's key (signed through the `Signer`, so a
/// token key works as a file key does). Only the subject and the key are in
/// it: the root decides the extensions.
pub(crate) fn build_ca_csr(subject: DistinguishedName, signer: &dyn Signer) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    let csr = crate::signer::rcgen_result(params.serialize_request(&RcgenSigner(signer)))?;
    crate::signer::rcgen_result(csr.pem())
}

/// The subject (DER) and verified key of a CSR (PEM or DER).
pub(crate) fn csr_subject_and_key(csr: &[u8]) -> Result<(Vec<u8>, PublicKey)> {
    let public_key = crate::pki::csr::verified_public_key(csr, |_| Ok(()))?;
    let der = match openssl::x509::X509Req::from_pem(csr) {
        Ok(req) => req.to_der()?,
        Err(_) => csr.to_vec(),
    };
    let req = openssl::x509::X509Req::from_der(&der)
        .map_err(|_| Error::InvalidInput("not a PEM or DER PKCS#10 certificate request".into()))?;
    Ok((req.subject_name().to_der()?, public_key))
}

/// The id of an issuer: the first 8 bytes of its key identifier (RFC 5280
/// §4.2.1.2 method 1), in hex. Stable for the life of the key, short enough
/// for a URL, and the same on every replica.
pub(crate) fn issuer_id(ca: &CaCertificate) -> String {
    let key_id = ca.public_key().key_identifier();
    hex::encode(&key_id[..key_id.len().min(8)])
}

/// Parses every certificate of a PEM file, in order.
pub(crate) fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let stack = openssl::x509::X509::stack_from_pem(pem)
        .map_err(|_| Error::InvalidInput("not a PEM file of certificates".into()))?;
    if stack.is_empty() {
        return Err(Error::InvalidInput(
            "no PEM CERTIFICATE block in the file".into(),
        ));
    }
    stack
        .iter()
        .map(|c| c.to_der().map_err(Error::from))
        .collect()
}
