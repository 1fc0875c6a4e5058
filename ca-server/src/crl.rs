//! The CRL as served to gateways, and the background task that keeps it fresh:
//! republished after every revocation (debounced) and at half its validity,
//! and reloaded when another process (`ca-cli`, another replica) publishes.
//!
//! Gateways may also long-poll (`crl pull --watch`): a conditional GET that
//! would be answered 304 is held until a newer CRL is served here or its wait
//! (RFC 7240 `Prefer: wait`) runs out. The number of requests held is capped
//! in total and per client address, so an unauthenticated peer cannot pin
//! more than a fixed share of tasks and memory; past the cap a request gets
//! its 304 at once, without `Preference-Applied`, and its client polls instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use ca_core::{Ca, PublishedCrl};

use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;

/// How often the store is polled for changes made by other processes.
const POLL: Duration = Duration::from_millis(250);
/// After a revocation, wait this long for more before publishing...
const QUIET: Duration = Duration::from_millis(50);
/// ...but never longer than this, so a burst yields one CRL a second.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// PEM armour of a DER CRL.
fn crl_pem(der: &[u8]) -> String {
    ca_core::CrlDer(der.to_vec()).to_pem()
}

/// One CRL ready to serve.
pub struct CachedCrl {
    /// CRL number.
    pub number: u64,
    /// DER.
    pub der: Bytes,
    /// PEM, made on first use (or just after the CRL is served): armouring
    /// 50 MB takes ~0.1 s, which gateways fetching DER need not wait for.
    pem: std::sync::OnceLock<Bytes>,
    /// thisUpdate, unix seconds.
    pub this_update: i64,
    /// nextUpdate, unix seconds.
    pub next_update: i64,
    /// Strong validator.
    pub etag: String,
}

impl CachedCrl {
    /// PEM.
    pub fn pem(&self) -> Bytes {
        self.pem
            .get_or_init(|| Bytes::from(crl_pem(&self.der)))
            .clone()
    }

    fn new(crl: &PublishedCrl, der: Bytes) -> Self {
        CachedCrl {
            number: crl.number,
            pem: std::sync::OnceLock::new(),
            der,
            this_update: crl.this_update.unix_timestamp(),
            next_update: crl.next_update.unix_timestamp(),
            etag: format!("\"crl-{}\"", crl.number),
        }
    }
}

/// The longest a long-poll is held (RFC 7240 §4.3 `wait`). Below the 60 s
/// that proxies commonly allow an idle upstream read (nginx's
/// `proxy_read_timeout`), so a held request is not cut by a proxy in between.
pub const MAX_WAIT: Duration = Duration::from_secs(55);
/// Long-polls held at once, in all. Each costs its connection's task and
/// buffers (a few KiB), so this bounds what they pin to a few MiB.
const MAX_WAITERS: usize = 1024;
/// Long-polls held at once for one client address (IPv6 by /64), so one peer
/// cannot take all the slots. Gateways behind one NAT beyond this still get
/// their answers, by polling.
const MAX_WAITERS_PER_ADDRESS: usize = 8;

/// The served CRLs (the active issuer's, and after a rollover each retired
/// issuer's) and the wake-up for revocations made through this server.
pub struct CrlCache {
    /// The active issuer's CRL, served at `/crl`; long-polls watch it for a newer one.
    current: watch::Sender<Option<Arc<CachedCrl>>>,
    /// Every issuer's CRL, by issuer number (the active one's included);
    /// after a rollover the retired issuers' stay here until their last
    /// certificate expires.
    by_issuer: RwLock<HashMap<u64, Arc<CachedCrl>>>,
    changed: Notify,
    /// Set at shutdown: held long-polls are answered at once.
    closing: watch::Sender<bool>,
    waiters: Mutex<Waiters>,
}

impl Default for CrlCache {
    fn default() -> Self {
        CrlCache {
            current: watch::Sender::new(None),
            by_issuer: RwLock::default(),
            changed: Notify::new(),
            closing: watch::Sender::new(false),
            waiters: Mutex::default(),
        }
    }
}

/// Who holds long-poll slots.
#[derive(Default)]
struct Waiters {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One held long-poll; the slot is given back when it is dropped (answered,
/// or the client went away and hyper dropped the request's future).
pub struct WaitSlot<'a> {
    cache: &'a CrlCache,
    address: IpAddr,
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        let mut waiters = self.cache.waiters.lock().unwrap();
        waiters.total -= 1;
        if let Some(n) = waiters.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                waiters.by_address.remove(&self.address);
            }
        }
    }
}

impl CrlCache {
    /// The CRL being served.
    pub fn current(&self) -> Option<Arc<CachedCrl>> {
        self.current.borrow().clone()
    }

    /// A long-poll slot for a client at `address`, or `None` when the total
    /// or this address's share is taken.
    pub fn wait_slot(&self, address: IpAddr) -> Option<WaitSlot<'_>> {
        let address = crate::limits::address_key(address);
        let mut waiters = self.waiters.lock().unwrap();
        if *self.closing.borrow() || waiters.total >= MAX_WAITERS {
            return None;
        }
        let held = waiters.by_address.entry(address).or_insert(0);
        if *held >= MAX_WAITERS_PER_ADDRESS {
            return None;
        }
        *held += 1;
        waiters.total += 1;
        Some(WaitSlot {
            cache: self,
            address,
        })
    }

    /// Long-polls held now.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().unwrap().total
    }

    /// Waits (holding `slot`) until a CRL other than the one tagged `etag` is
    /// served, at most `wait`; returns it, or `None` when the wait ran out or
    /// the server is shutting down.
    pub async fn newer_than(
        &self,
        etag: &str,
        wait: Duration,
        slot: WaitSlot<'_>,
    ) -> Option<Arc<CachedCrl>> {
        let mut current = self.current.subscribe();
        let mut closing = self.closing.subscribe();
        let newer = async {
            current
                .wait_for(|c| c.as_ref().is_some_and(|c| c.etag != etag))
                .await
                .ok()
                .and_then(|c| c.clone())
        };
        let result = tokio::select! {
            newer = tokio::time::timeout(wait.min(MAX_WAIT), newer) => newer.ok().flatten(),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        drop(slot);
        result
    }

    /// Shutdown: answers every held long-poll now (so graceful shutdown does
    /// not wait out their 55 s) and holds no new ones.
    pub fn close(&self) {
        self.closing.send_replace(true);
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
    /// published ones. The active issuer's is the one `/crl` serves (and
    /// long-polls watch).
    pub async fn refresh(&self, ca: &Ca, metrics: &Metrics) -> ca_core::Result<()> {
        // This process publishes for as long as it runs: the CA keeps each
        // issuer's encoded revoked-entry list between CRLs and patches it.
        ca.keep_crl_lists();
        for issuer in ca.issuers() {
            let number = issuer.number();
            let served = || self.of_issuer(number).map(|c| c.number).unwrap_or(0);
            let publish = issuer.can_sign() && ca.crl_needs_refresh_for(number).await?;
            if publish {
                let crl = ca.sign_crl_for(number).await?;
                // Served as soon as it is signed, then stored: storing a
                // 50 MB CRL (and reading it back) would add its time to
                // every revocation's. What it lists is durable already.
                let mut stored = crl;
                if stored.number > served() {
                    let der = Bytes::from(std::mem::take(&mut stored.der));
                    self.serve(number, &stored, der.clone());
                    self.wake_watchers(ca);
                    stored.der = der.to_vec();
                }
                ca.store_crl(&stored, "server").await?;
                metrics.crl_published();
                tracing::info!(crl_number = stored.number, entries = stored.entries, issuer = %issuer.id(), "published CRL");
            }
            let status = ca.crl_status_for(number).await?;
            if status.published_number > served() {
                if let Some(mut crl) = ca.latest_crl_for(number).await? {
                    let der = Bytes::from(std::mem::take(&mut crl.der));
                    self.serve(number, &crl, der);
                }
            }
            if issuer.can_sign() && !publish {
                // Another replica publishes for now; be ready to patch.
                ca.warm_crl_list(number).await?;
            }
        }
        self.wake_watchers(ca);
        Ok(())
    }

    /// Serves the active issuer's CRL at `/crl`, waking long-polls when it
    /// is another one.
    fn wake_watchers(&self, ca: &Ca) {
        if let Some(active) = ca
            .issuers()
            .first()
            .and_then(|a| self.of_issuer(a.number()))
        {
            // Replaced (and long-polls woken) only when it is another CRL.
            self.current.send_if_modified(|current| {
                let changed = current.as_ref().is_none_or(|c| c.etag != active.etag);
                if changed {
                    *current = Some(active);
                }
                changed
            });
        }
    }

    fn serve(&self, number: u64, crl: &PublishedCrl, der: Bytes) {
        let cached = Arc::new(CachedCrl::new(crl, der));
        let armour = Arc::clone(&cached);
        tokio::task::spawn_blocking(move || armour.pem());
        let mut by_issuer = self.by_issuer.write().unwrap();
        // Another task may have loaded a newer one meanwhile.
        if by_issuer
            .get(&number)
            .is_none_or(|c| c.number < cached.number)
        {
            by_issuer.insert(number, cached);
        }
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
