//! The hash-chained audit log. Each event's hash covers its fields and the hash
//! of the event before it, so an edited, deleted or reordered event breaks the
//! chain at that point; the stored chain head catches a truncated tail.

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// The hash that stands before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a state change records, before the store numbers and chains it.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    /// Who: `cli:<user>` or `token:<id>`.
    pub actor: String,
    /// What: `init`, `issue`, `reissue`, `revoke`, `crl`, `sign-csr`, `token-create`, ...
    pub action: String,
    /// On what: `tenant/admin`, a serial, a CRL number.
    pub subject: String,
    /// Serials involved (new first).
    pub serials: Vec<String>,
    /// Extra facts, `key=value` separated by spaces.
    pub details: String,
}

impl AuditDraft {
    /// A draft with no serials or details.
    pub fn new(actor: &str, action: &str, subject: impl Into<String>) -> Self {
        AuditDraft {
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.into(),
            serials: Vec::new(),
            details: String::new(),
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// Serials involved.
    pub serials: Vec<String>,
    /// Extra facts.
    pub details: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of an event: SHA-256 over its fields, length-prefixed so no two
/// different events can serialise alike.
/// `fields` are actor, action, subject, comma-joined serials and details.
pub(crate) fn event_hash(prev_hash: &str, seq: u64, at: i64, fields: [&str; 5]) -> String {
    let mut h = openssl::sha::Sha256::new();
    let (seq, at) = (seq.to_string(), at.to_string());
    for field in [prev_hash, &seq, &at].into_iter().chain(fields) {
        h.update(&(field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finish())
}

impl AuditEvent {
    fn recompute(&self) -> String {
        let serials = self.serials.join(",");
        event_hash(
            &self.prev_hash,
            self.seq,
            self.at.unix_timestamp(),
            [
                &self.actor,
                &self.action,
                &self.subject,
                &serials,
                &self.details,
            ],
        )
    }
}

/// Verifies a chain read in `seq` order against the stored head `(seq, hash)`.
/// Returns the number of events checked, or names the first bad one.
pub fn verify_chain(events: &[AuditEvent], head: (u64, &str)) -> Result<u64> {
    let mut prev = GENESIS_HASH.to_owned();
    for (index, event) in events.iter().enumerate() {
        let expected_seq = index as u64 + 1;
        if event.seq != expected_seq {
            return Err(Error::AuditBroken(format!(
                "audit chain broken at event {expected_seq}: found event {} there (an event was deleted or reordered)",
                event.seq
            )));
        }
        if event.prev_hash != prev {
            return Err(Error::AuditBroken(format!(
                "audit chain broken at event {}: it does not follow event {} (an event was deleted, reordered or edited)",
                event.seq,
                expected_seq - 1
            )));
        }
        if event.recompute() != event.hash {
            return Err(Error::AuditBroken(format!(
                "audit chain broken at event {} ({} {}): its contents were edited",
                event.seq, event.action, event.subject
            )));
        }
        prev = event.hash.clone();
    }
    let count = events.len() as u64;
    if head.0 != count || head.1 != prev {
        return Err(Error::AuditBroken(format!(
            "audit chain broken after event {count}: the chain head records {} events (events at the end were deleted)",
            head.0
        )));
    }
    Ok(count)
}
