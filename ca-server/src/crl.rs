//! The CRL as served to gateways, and the background task that keeps it fresh:
//! republished after every revocation (debounced) and at half its validity,
//! and reloaded when another process (`ca-cli`, another replica) publishes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use ca_core::{Ca, PublishedCrl};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// How often the store is polled for changes made by other processes.
const POLL: Duration = Duration::from_millis(250);
/// After a revocation, wait this long for more before publishing...
const QUIET: Duration = Duration::from_millis(100);
/// ...but never longer than this, so a burst yields one CRL a second.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// One CRL ready to serve.
pub struct CachedCrl {
    /// CRL number.
    pub number: u64,
    /// DER.
    pub der: Bytes,
    /// PEM.
    pub pem: Bytes,
    /// thisUpdate, unix seconds.
    pub this_update: i64,
    /// nextUpdate, unix seconds.
    pub next_update: i64,
    /// Strong validator.
    pub etag: String,
}

impl CachedCrl {
    fn new(crl: &PublishedCrl) -> Self {
        let der = ca_core::CrlDer(crl.der.clone());
        CachedCrl {
            number: crl.number,
            pem: Bytes::from(der.to_pem()),
            der: Bytes::from(crl.der.clone()),
            this_update: crl.this_update.unix_timestamp(),
            next_update: crl.next_update.unix_timestamp(),
            etag: format!("\"crl-{}\"", crl.number),
        }
    }
}

/// The served CRLs (the active issuer's, and after a rollover each retired
/// issuer's) and the wake-up for revocations made through this server.
#[derive(Default)]
pub struct CrlCache {
    current: RwLock<Option<Arc<CachedCrl>>>,
    /// Every issuer's CRL, by issuer number (the active one's included).
    by_issuer: RwLock<HashMap<u64, Arc<CachedCrl>>>,
    changed: Notify,
}

impl CrlCache {
    /// The CRL being served.
    pub fn current(&self) -> Option<Arc<CachedCrl>> {
        self.current.read().unwrap().clone()
    }

    /// The CRL of issuer `number`.
    pub fn of_issuer(&self, number: u64) -> Option<Arc<CachedCrl>> {
        self.by_issuer.read().unwrap().get(&number).cloned()
    }

    /// Tells the refresher that something was revoked.
    pub fn revoked(&self) {
        self.changed.notify_one();
    }

    /// Publishes every issuer's CRL that is stale, then serves the newest
    /// published ones. The active issuer's is the one `/crl` serves.
    pub async fn refresh(&self, ca: &Ca, metrics: &Metrics) -> ca_core::Result<()> {
        for issuer in ca.issuers() {
            let number = issuer.number();
            if issuer.can_sign() && ca.crl_needs_refresh_for(number).await? {
                let crl = ca.publish_crl_for(number, "server").await?;
                metrics.crl_published();
                tracing::info!(crl_number = crl.number, issuer = %issuer.id(), "published CRL");
            }
            let status = ca.crl_status_for(number).await?;
            let served = self.of_issuer(number).map(|c| c.number).unwrap_or(0);
            if status.published_number > served {
                if let Some(crl) = ca.latest_crl_for(number).await? {
                    self.by_issuer
                        .write()
                        .unwrap()
                        .insert(number, Arc::new(CachedCrl::new(&crl)));
                }
            }
        }
        if let Some(active) = ca.issuers().first() {
            *self.current.write().unwrap() = self.of_issuer(active.number());
        }
        Ok(())
    }

    /// Returns after a revocation through this server (debounced), or after
    /// the poll interval.
    pub async fn wait_for_change(&self) {
        let woken = tokio::time::timeout(POLL, self.changed.notified())
            .await
            .is_ok();
        if woken {
            // Debounce: let a burst of revocations settle into one CRL.
            let start = Instant::now();
            while start.elapsed() < MAX_DELAY
                && tokio::time::timeout(QUIET, self.changed.notified())
                    .await
                    .is_ok()
            {}
        }
    }
}
