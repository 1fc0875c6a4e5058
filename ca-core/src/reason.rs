//! Revocation reasons, numbered as in RFC 5280 §5.3.1.

use std::fmt;

use crate::error::{Error, Result};

/// Why a certificate was revoked. Discriminants are the `CRLReason` values of
/// [RFC 5280 §5.3.1](https://www.rfc-editor.org/rfc/rfc5280#section-5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RevocationReason {
    /// No reason given.
    Unspecified = 0,
    /// The private key (the device) was lost or stolen.
    KeyCompromise = 1,
    /// The CA key was compromised.
    CaCompromise = 2,
    /// The subject's affiliation changed.
    AffiliationChanged = 3,
    /// Replaced by a newer certificate (the default for reissue).
    Superseded = 4,
    /// The subject no longer needs the certificate.
    CessationOfOperation = 5,
    /// Temporarily on hold.
    CertificateHold = 6,
    /// The subject's privileges were withdrawn.
    PrivilegeWithdrawn = 9,
}

impl RevocationReason {
    /// Every reason a caller may name, in RFC order.
    pub const ALL: [RevocationReason; 8] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::CertificateHold,
        Self::PrivilegeWithdrawn,
    ];

    /// The name used on the CLI and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::CaCompromise => "ca-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
            Self::CertificateHold => "certificate-hold",
            Self::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses a reason name (`key-compromise`; `key_compromise` and `keyCompromise` are accepted too).
    pub fn parse(text: &str) -> Result<Self> {
        let wanted: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Self::ALL
            .into_iter()
            .find(|r| r.name().replace('-', "") == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|r| r.name()).collect();
                Error::InvalidInput(format!(
                    "unknown revocation reason \"{}\": use one of {}",
                    text.escape_debug(),
                    names.join(", ")
                ))
            })
    }

    /// From the stored RFC code.
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| i64::from(r.code()) == code)
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(r.name()).unwrap(), r);
            assert_eq!(RevocationReason::from_code(r.code().into()), Some(r));
        }
        assert_eq!(
            RevocationReason::parse("keyCompromise").unwrap(),
            RevocationReason::KeyCompromise
        );
        let err = RevocationReason::parse("lost").unwrap_err().to_string();
        assert!(err.contains("key-compromise"), "{err}");
    }
}
