//! The audit log as the CA reads it: events and chain verification.

use super::*;

/// The outcome of `audit verify`.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// Events checked.
    pub events: u64,
    /// Hash of the last event.
    pub head: String,
}

/// Verifies the audit chain of `store` (see [`Ca::verify_audit`]); also run
/// on a backup's snapshot, which has no `Ca`.
pub(crate) async fn verify_store_audit(store: &dyn Store) -> Result<AuditReport> {
    let head = store.audit_head().await?;
    let mut events = Vec::new();
    loop {
        let after = events.last().map(|e: &AuditEvent| e.seq).unwrap_or(0);
        if after >= head.0 {
            break;
        }
        let page = store.audit_events(after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    events.truncate(events.partition_point(|e| e.seq <= head.0));
    let count = verify_chain(&events, (head.0, &head.1))?;
    Ok(AuditReport {
        events: count,
        head: head.1,
    })
}

impl Ca {
    /// Audit events after `after_seq`.
    pub async fn audit_events(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        self.store.audit_events(after_seq, limit).await
    }

    /// Reads the whole chain and verifies it.
    ///
    /// The head is read first and the events up to it are verified: a running
    /// server appends events (each with its head) meanwhile, and those are
    /// covered by the next run, not mistaken for a broken chain.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        verify_store_audit(&*self.store).await
    }
}
