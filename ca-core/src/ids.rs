//! Validated identifiers: tenant and admin names, certificate serials.

use std::fmt;

use crate::error::{Error, Result};

/// The tenant under which the CA records its own certificates (the OCSP
/// responder); operators cannot issue under it, and lists hide it unless asked.
pub const RESERVED_TENANT: &str = "_ca";

/// The rule every tenant and admin name obeys, as shown to callers.
pub const NAME_RULE: &str = "1 to 64 characters from A-Z a-z 0-9 . _ @ -, not only dots";

fn check_name(kind: &str, value: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    // Names made only of dots (`.`, `..`) are path segments that HTTP clients
    // and proxies normalise away (RFC 3986 §5.2.4): such an admin could never
    // be addressed reliably, so it is never created.
    let only_dots = value.bytes().all(|b| b == b'.');
    if value.is_empty() || value.len() > 64 || !value.chars().all(ok_char) || only_dots {
        let shown: String = value
            .chars()
            .take(80)
            .collect::<String>()
            .escape_debug()
            .to_string();
        return Err(Error::InvalidInput(format!(
            "invalid {kind} name \"{shown}\": it must be {NAME_RULE}"
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses a name, refusing anything outside [`NAME_RULE`].
            pub fn parse(value: &str) -> Result<Self> {
                check_name($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A customer tenant of the portal.
    TenantId,
    "tenant"
);
name_type!(
    /// An administrator account within a tenant.
    AdminId,
    "admin"
);

/// A certificate serial number: 16 bytes from the OS CSPRNG with the top bit
/// cleared (positive, RFC 5280 §4.1.2.2) and a non-zero first byte, so the DER
/// INTEGER is always exactly 16 octets and the hex form is always 32 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial([u8; 16]);

impl Serial {
    /// Draws a fresh random serial.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 16];
        loop {
            openssl::rand::rand_bytes(&mut bytes)?;
            bytes[0] &= 0x7f;
            if bytes[0] != 0 {
                return Ok(Serial(bytes));
            }
        }
    }

    /// Parses the hex form; accepts upper case and `:` separators (as `openssl x509 -serial` prints).
    pub fn parse(text: &str) -> Result<Self> {
        let cleaned: String = text.trim().chars().filter(|c| *c != ':').collect();
        let cleaned = cleaned.strip_prefix("0x").unwrap_or(&cleaned);
        let bad = || {
            Error::InvalidInput(format!(
                "invalid serial \"{}\": expected 32 hex digits as printed by `ca-cli list`",
                text.chars().take(80).collect::<String>().escape_debug()
            ))
        };
        let bytes = hex::decode(cleaned).map_err(|_| bad())?;
        Self::from_bytes(&bytes).ok_or_else(bad)
    }

    /// From the big-endian content octets of a DER INTEGER; `None` if it cannot be one of ours.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Serial)
    }

    /// The 16 big-endian bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, 32 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl TenantId {
    /// Like [`TenantId::parse`], and refuses the CA's reserved tenant.
    pub fn parse_customer(value: &str) -> Result<Self> {
        if value == RESERVED_TENANT {
            return Err(Error::InvalidInput(format!(
                "tenant \"{RESERVED_TENANT}\" is reserved for the CA's own certificates"
            )));
        }
        Self::parse(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in [
            "a",
            "alice@example.com",
            "Tenant-1_x.y",
            &"x".repeat(64),
            ".a",
            "a..",
        ] {
            assert!(AdminId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "ünï",
            "a/b",
            "x;drop",
            &"x".repeat(65),
            "a\n",
            ".",
            "..",
            "...",
        ] {
            let err = TenantId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("tenant") && err.contains(NAME_RULE), "{err}");
        }
    }

    #[test]
    fn serials_are_positive_and_round_trip() {
        for _ in 0..200 {
            let s = Serial::random().unwrap();
            assert!(s.as_bytes()[0] > 0 && s.as_bytes()[0] < 0x80);
            assert_eq!(Serial::parse(&s.to_hex()).unwrap(), s);
            assert_eq!(Serial::parse(&s.to_hex().to_uppercase()).unwrap(), s);
        }
        assert!(Serial::parse("xyz").is_err());
        assert!(Serial::parse("abcd").is_err());
    }
}
