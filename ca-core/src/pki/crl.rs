//! CRL building (RFC 5280 §5): a pure function of issuer, entries and time.
//!
//! The DER is written straight into one buffer — entries first, then the
//! headers, whose lengths are only known afterwards, into space reserved in
//! front — so a CRL of a million entries is held once (~50 MB), not as a tree
//! of parameters and then again as bytes.

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids::Serial;
use crate::pki::derw::{
    header, header_len, push_extension, push_generalized_time, push_len, push_time, push_uint,
    signature_algorithm, tlv,
};
use crate::pki::x509::CaCertificate;
use crate::reason::RevocationReason;
use crate::signer::Signer;

/// One revoked certificate as listed on a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial.
    pub serial: Serial,
    /// When the CA processed the revocation.
    pub revoked_at: OffsetDateTime,
    /// Reason code (omitted from the entry when `unspecified`, per RFC 5280 §5.3.1).
    pub reason: RevocationReason,
    /// When the key was known or suspected compromised, if the operator said.
    pub invalidity_date: Option<OffsetDateTime>,
}

/// One stored piece of a signed CRL's DER: it ends at `end` (it starts where
/// the previous one ends) and `hash` is the SHA-256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlPiece {
    /// Offset just past its last byte.
    pub end: usize,
    /// SHA-256 of its bytes.
    pub hash: [u8; 32],
}

/// True when a stored CRL piece ends after the entry of `serial`: one in
/// 512 random serials (their low 9 bits zero). Where the pieces fall thus
/// depends only on which certificates a CRL lists, not on who built it or
/// how: a CRL one revocation away from the previous one differs from it in
/// one piece of ~512 entries (plus the headers and the signature), whichever
/// process built either, so the store writes ~25 KB instead of the whole CRL.
pub(crate) fn ends_piece(serial: &Serial) -> bool {
    let b = serial.as_bytes();
    u16::from_be_bytes([b[14], b[15]]) & 0x1ff == 0
}

/// The pieces of `der` (a CRL's DER) as [`CrlPiece`]s, cut at `ends` (in
/// order, each inside `der`); the last piece runs to the end.
pub(crate) fn pieces_at(der: &[u8], ends: impl IntoIterator<Item = usize>) -> Vec<CrlPiece> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for end in ends.into_iter().chain([der.len()]) {
        if end > start && end <= der.len() {
            pieces.push(CrlPiece {
                end,
                hash: crate::hash::sha256(&der[start..end]),
            });
            start = end;
        }
    }
    pieces
}

/// A signed DER CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlDer(pub Vec<u8>);

impl CrlDer {
    /// PEM armour.
    pub fn to_pem(&self) -> String {
        crate::pki::x509::pem_encode("X509 CRL", &self.0)
    }
}

// OIDs, DER-encoded content octets.
const OID_REASON_CODE: &[u8] = &[0x55, 0x1d, 0x15]; // 2.5.29.21
const OID_INVALIDITY_DATE: &[u8] = &[0x55, 0x1d, 0x18]; // 2.5.29.24
const OID_CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14]; // 2.5.29.20
const OID_AKI: &[u8] = &[0x55, 0x1d, 0x23]; // 2.5.29.35

/// Appends one `revokedCertificates` entry; `scratch` is reused between
/// calls. The kept revoked-entry list (`ca/revoked_list.rs`) encodes with
/// this too, so its bytes are exactly what a full build writes.
pub(crate) fn push_entry(out: &mut Vec<u8>, scratch: &mut Vec<u8>, entry: &RevokedEntry) {
    scratch.clear();
    push_uint(scratch, entry.serial.as_bytes());
    push_time(scratch, entry.revoked_at);
    let body_len = scratch.len();
    if entry.reason != RevocationReason::Unspecified {
        push_extension(scratch, OID_REASON_CODE, &[0x0a, 0x01, entry.reason.code()]);
    }
    if let Some(at) = entry.invalidity_date {
        let mut value = Vec::with_capacity(17);
        push_generalized_time(&mut value, at);
        push_extension(scratch, OID_INVALIDITY_DATE, &value);
    }
    let extensions_len = scratch.len() - body_len;
    let mut entry_len = scratch.len();
    if extensions_len > 0 {
        entry_len += header_len(extensions_len);
    }
    out.push(0x30);
    push_len(out, entry_len);
    out.extend_from_slice(&scratch[..body_len]);
    if extensions_len > 0 {
        out.push(0x30);
        push_len(out, extensions_len);
        out.extend_from_slice(&scratch[body_len..]);
    }
}

/// A CRL being written: entries are pushed one at a time, straight into
/// the DER buffer, so no list of entries is held beside it.
pub struct CrlBuilder {
    /// `reserve` bytes kept free for the headers, then the entries.
    buf: Vec<u8>,
    reserve: usize,
    /// version, signature, issuer, thisUpdate, nextUpdate.
    head: Vec<u8>,
    algorithm: Vec<u8>,
    aki: Vec<u8>,
    number: u64,
    entries: u64,
    scratch: Vec<u8>,
    /// Where stored pieces end inside the entries (see [`ends_piece`]).
    piece_ends: Vec<usize>,
}

impl CrlBuilder {
    /// Starts CRL `number` of `ca`, to be signed by `signer` (its key must be
    /// the CA certificate's).
    pub fn new(
        ca: &CaCertificate,
        signer: &dyn Signer,
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Self> {
        crate::signer::check_matches(signer, ca.public_key().spki_der())?;
        if next_update <= this_update {
            return Err(Error::Crypto(
                "CRL nextUpdate must follow thisUpdate".into(),
            ));
        }
        let algorithm = signature_algorithm(signer.public_key().algorithm());
        let issuer = ca.subject_der();
        let mut head = Vec::with_capacity(issuer.len() + 64);
        head.extend_from_slice(&[0x02, 0x01, 0x01]); // v2
        head.extend_from_slice(&algorithm);
        head.extend_from_slice(issuer);
        push_time(&mut head, this_update);
        push_time(&mut head, next_update);
        // Outer SEQUENCE, TBS SEQUENCE and revokedCertificates headers: at
        // most 6 bytes each for any length that fits in memory.
        let reserve = head.len() + 3 * 8;
        Ok(CrlBuilder {
            buf: vec![0; reserve],
            reserve,
            head,
            algorithm,
            aki: ca.public_key().key_identifier(),
            number,
            entries: 0,
            scratch: Vec::with_capacity(96),
            piece_ends: Vec::new(),
        })
    }

    /// Lists one revoked certificate (callers push in serial order).
    pub fn push(&mut self, entry: &RevokedEntry) {
        push_entry(&mut self.buf, &mut self.scratch, entry);
        self.entries += 1;
        if ends_piece(&entry.serial) {
            self.piece_ends.push(self.entries_len());
        }
    }

    /// Bytes of entries pushed so far.
    pub(crate) fn entries_len(&self) -> usize {
        self.buf.len() - self.reserve
    }

    /// A stored piece ends `at` bytes into the entries (after an entry that
    /// [`ends_piece`]; callers of [`CrlBuilder::push_encoded`] mark them).
    pub(crate) fn end_piece_at(&mut self, at: usize) {
        self.piece_ends.push(at);
    }

    /// Lists `count` revoked certificates already encoded by [`push_entry`]
    /// (callers push in serial order, continuing any pushed before).
    pub(crate) fn push_encoded(&mut self, der: &[u8], count: usize) {
        self.buf.extend_from_slice(der);
        self.entries += count as u64;
    }

    /// Reserves room for `bytes` more bytes of entries.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds the CRL extensions, signs, and returns the DER.
    pub fn finish(self, signer: &dyn Signer) -> Result<CrlDer> {
        Ok(self.finish_in_pieces(signer)?.0)
    }

    /// [`CrlBuilder::finish`], and the pieces the DER is stored in: the
    /// headers, the entries cut after each entry that [`ends_piece`], and
    /// the extensions with the signature.
    pub fn finish_in_pieces(self, signer: &dyn Signer) -> Result<(CrlDer, Vec<CrlPiece>)> {
        let CrlBuilder {
            mut buf,
            reserve,
            head,
            algorithm,
            aki,
            number,
            piece_ends,
            ..
        } = self;
        let entries_len = buf.len() - reserve;

        // crlExtensions [0]: authorityKeyIdentifier, cRLNumber.
        let mut extensions = Vec::new();
        let mut key_id = Vec::new();
        tlv(&mut key_id, 0x80, &aki);
        let mut aki_value = Vec::new();
        tlv(&mut aki_value, 0x30, &key_id);
        push_extension(&mut extensions, OID_AKI, &aki_value);
        let mut crl_number = Vec::new();
        push_uint(&mut crl_number, &number.to_be_bytes());
        push_extension(&mut extensions, OID_CRL_NUMBER, &crl_number);
        let mut explicit = Vec::new();
        tlv(&mut explicit, 0x30, &extensions);
        buf.extend_from_slice(&header(0xa0, explicit.len()));
        buf.extend_from_slice(&explicit);

        // An empty list is omitted, not encoded empty (RFC 5280 §5.1.2.6).
        let mut front = head;
        if entries_len > 0 {
            front.extend_from_slice(&header(0x30, entries_len));
        }
        let tbs_len = front.len() + (buf.len() - reserve);
        let mut tbs_front = header(0x30, tbs_len);
        tbs_front.extend_from_slice(&front);
        let tbs_start = reserve - tbs_front.len();
        buf[tbs_start..reserve].copy_from_slice(&tbs_front);

        let signature = signer.sign(&buf[tbs_start..])?;
        buf.extend_from_slice(&algorithm);
        buf.push(0x03);
        push_len(&mut buf, signature.len() + 1);
        buf.push(0x00);
        buf.extend_from_slice(&signature);

        let outer = header(0x30, buf.len() - tbs_start);
        let start = tbs_start
            .checked_sub(outer.len())
            .ok_or_else(|| Error::Crypto("CRL header space".into()))?;
        buf[start..tbs_start].copy_from_slice(&outer);
        buf.drain(..start);
        // The entries begin at `reserve` before the drain.
        let entries_start = reserve - start;
        let ends = std::iter::once(entries_start)
            .chain(piece_ends.iter().map(|end| entries_start + end))
            .chain([entries_start + entries_len]);
        let pieces = pieces_at(&buf, ends);
        Ok((CrlDer(buf), pieces))
    }
}

/// Builds and signs a CRL listing `entries` (in serial order).
pub fn build_crl(
    ca: &CaCertificate,
    signer: &dyn Signer,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<CrlDer> {
    let mut builder = CrlBuilder::new(ca, signer, number, this_update, next_update)?;
    for entry in entries {
        builder.push(entry);
    }
    builder.finish(signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::signer::FileSigner;

    fn ca(algorithm: KeyAlgorithm) -> (CaCertificate, FileSigner) {
        let (der, signer) = crate::pki::x509::test_certificate(
            algorithm.generate().unwrap(),
            "CN=Test CA,O=Example,C=DE",
        );
        (CaCertificate::from_der(der.0).unwrap(), signer)
    }

    #[test]
    fn crls_verify_with_openssl_and_carry_every_entry() {
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let (ca, signer) = ca(algorithm);
            let now = crate::now();
            let entries: Vec<RevokedEntry> = (0..300)
                .map(|i| RevokedEntry {
                    serial: Serial::random().unwrap(),
                    revoked_at: now - time::Duration::minutes(i),
                    reason: RevocationReason::ALL[i as usize % RevocationReason::ALL.len()],
                    invalidity_date: (i % 3 == 0).then(|| now - time::Duration::days(1)),
                })
                .collect();
            for list in [&entries[..0], &entries[..1], &entries[..]] {
                let der = build_crl(
                    &ca,
                    &signer,
                    0x80_0000 + list.len() as u64,
                    now,
                    now + time::Duration::hours(24),
                    list,
                )
                .unwrap();
                let crl = openssl::x509::X509Crl::from_der(&der.0).unwrap();
                let key = openssl::x509::X509::from_der(&ca.der().0)
                    .unwrap()
                    .public_key()
                    .unwrap();
                assert!(crl.verify(&key).unwrap(), "{algorithm}");
                assert_eq!(crl.get_revoked().map(|r| r.len()).unwrap_or(0), list.len());
                let parsed = crate::gateway::verify_crl(&der.0, &ca.der().0, now).unwrap();
                assert_eq!(parsed.number, 0x80_0000 + list.len() as u64);
                assert_eq!(parsed.revoked, list.len());
            }
        }
    }
}
