//! The JSON shapes shared by `ca-cli --json` and the HTTP API (DESIGN §6).

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::CertificateRecord;

/// A certificate as scripts and API clients see it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateView {
    /// Lower-case hex serial.
    pub serial: String,
    /// Tenant.
    pub tenant: String,
    /// Admin.
    pub admin: String,
    /// Policy.
    pub policy: String,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// RFC 3339 UTC, when revoked.
    pub revoked_at: Option<String>,
    /// Reason name, when revoked.
    pub reason: Option<&'static str>,
}

impl CertificateView {
    /// The view of `record` at `now`.
    pub fn new(record: &CertificateRecord, now: OffsetDateTime) -> Self {
        CertificateView {
            serial: record.serial.to_hex(),
            tenant: record.tenant.clone(),
            admin: record.admin.clone(),
            policy: record.policy.clone(),
            status: record.status(now).name(),
            not_before: crate::rfc3339(record.not_before),
            not_after: crate::rfc3339(record.not_after),
            revoked_at: record.revoked_at.map(crate::rfc3339),
            reason: record
                .revoked_at
                .map(|_| record.reason.map(|r| r.name()).unwrap_or("unspecified")),
        }
    }
}

/// A page of certificates.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListView {
    /// The page.
    pub items: Vec<CertificateView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl ListView {
    /// Builds a page; `limit` is the page size that was asked for.
    pub fn new(records: &[CertificateRecord], limit: u32, now: OffsetDateTime) -> Self {
        let next_cursor = (records.len() as u32 >= limit && limit > 0)
            .then(|| records.last().map(|r| r.serial.to_hex()))
            .flatten();
        ListView {
            items: records
                .iter()
                .map(|r| CertificateView::new(r, now))
                .collect(),
            next_cursor,
        }
    }
}

/// An error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorView {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorView`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine code.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The serial concerned, where one is (e.g. `already_delivered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl ErrorView {
    /// The view of a CA error, with the serial of an already-done request.
    pub fn from_error(error: &crate::Error) -> Self {
        let mut view = ErrorView::new(error.code(), error.to_string());
        if let crate::Error::AlreadyDone { serial, .. } = error {
            view.error.serial = Some(serial.clone());
        }
        view
    }

    /// From a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorView {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                serial: None,
            },
        }
    }
}
