//! The OCSP responder's serving side: a cache of pre-signed responses keyed by
//! the request bytes (requests without a nonce are deterministic), live signing
//! for nonces from a cache of certificate states, and invalidation of both
//! whenever any certificate's status changes.
//!
//! Every map here can be reached by unauthenticated peers, so each is bounded:
//! pre-signed answers are kept only for requests in the one plain form
//! (`OcspQuery::plain`: a handful of encodings per real serial) and by bytes;
//! certificate states only for serials the store knows; unknown serials in a
//! short negative set, dropped whenever anything is issued.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use ca_core::ocsp::{parse_request_any, CertState, IssuerHashes, OcspFailure, OcspResponder};
use ca_core::{Ca, Serial};

/// Bound on remembered certificate states; past it the map starts over.
const MAX_ENTRIES: usize = 200_000;
/// Bound on the pre-signed answers, counting keys, answers and per-entry
/// overhead; past it the cache starts over. Plain requests for real serials
/// are the only keys, so a full cache means a very large CA, not an attack.
pub const MAX_CACHE_BYTES: usize = 64 << 20;
/// Bound on remembered unknown serials (16 bytes each, ~1 MiB with overhead).
const MAX_UNKNOWN: usize = 32_768;
/// What a cache entry costs beyond its key and answer (map slot, Arc, validators).
const ENTRY_OVERHEAD: usize = 160;

/// A signed answer ready to serve.
pub struct Answer {
    /// DER `OCSPResponse`.
    pub der: Bytes,
    /// thisUpdate / nextUpdate (unix seconds) for a signed response.
    pub validity: Option<(i64, i64)>,
    /// Strong validator for GET.
    pub etag: Option<String>,
    /// Whether an HTTP cache may keep it (signed, no nonce).
    pub cacheable: bool,
    /// `tryLater`: the responder key's token is unavailable (served as 503).
    pub try_later: bool,
}

struct Cached {
    answer: Arc<Answer>,
    /// Re-signed after half its validity.
    refresh_at: i64,
}

/// Pre-signed answers by request bytes, with the bytes they hold.
#[derive(Default)]
struct Presigned {
    entries: HashMap<Bytes, Cached>,
    bytes: usize,
}

impl Presigned {
    fn cost(request: &Bytes, answer: &Answer) -> usize {
        request.len() + answer.der.len() + ENTRY_OVERHEAD
    }

    fn insert(&mut self, request: Bytes, cached: Cached) {
        let cost = Self::cost(&request, &cached.answer);
        if self.bytes + cost > MAX_CACHE_BYTES {
            self.clear();
        }
        if let Some(old) = self.entries.insert(request.clone(), cached) {
            self.bytes -= Self::cost(&request, &old.answer);
        }
        self.bytes += cost;
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// How responses were produced, for metrics.
#[derive(Default)]
pub struct OcspCounters {
    /// Served from the pre-signed cache.
    pub cache_hits: AtomicU64,
    /// Signed for the cache.
    pub presigned: AtomicU64,
    /// Signed live (nonce, or unknown serial).
    pub live: AtomicU64,
    /// malformedRequest answers.
    pub malformed: AtomicU64,
    /// unauthorized answers.
    pub unauthorized: AtomicU64,
    /// internalError answers.
    pub internal: AtomicU64,
    /// tryLater answers (the store unreachable, or the responder key's token).
    pub try_later: AtomicU64,
    /// Certificate states read from the store.
    pub store_reads: AtomicU64,
}

/// The responder state shared by all requests.
#[derive(Default)]
pub struct OcspService {
    /// Each issuer's delegated responder, by issuer number (after a rollover
    /// the retired issuer answers for its certificates with its own).
    responders: RwLock<HashMap<u64, Arc<OcspResponder>>>,
    fingerprints: Mutex<HashMap<u64, String>>,
    /// The active issuer's number (for metrics).
    active: AtomicU64,
    cache: RwLock<Presigned>,
    /// Good and revoked states read from the store, so a nonce request (signed
    /// live every time) costs no store read.
    states: RwLock<HashMap<(u64, Serial), CertState>>,
    /// Serials the store did not know: a flood of random serials costs one
    /// store read each, once. Dropped on any issuance (see [`OcspService::issued`]).
    unknown: RwLock<HashSet<(u64, Serial)>>,
    /// The store's change counter (audit sequence) the unknown set reflects.
    changes: AtomicU64,
    /// Bumped on every invalidation: an answer or state read before a change
    /// is not cached after it.
    generation: AtomicU64,
    /// The store's revocation revision the cache reflects.
    revision: AtomicU64,
    /// Counters.
    pub counters: OcspCounters,
}

impl OcspService {
    /// Notes the store's revocation revision; a change made by any process
    /// (ca-cli, another replica) drops the pre-signed responses.
    pub fn observe_revision(&self, revision: u64) {
        if self.revision.swap(revision, Ordering::SeqCst) != revision {
            self.invalidate();
        }
    }

    /// Drops every pre-signed response (a certificate's status changed, or the responder rotated).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.write().unwrap().clear();
        self.states.write().unwrap().clear();
        self.unknown.write().unwrap().clear();
    }

    /// A certificate was issued through this server: serials remembered as
    /// unknown may now be known.
    pub fn issued(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.unknown.write().unwrap().clear();
    }

    /// Notes the store's change counter (every state change, by any
    /// process, moves it); a change drops the unknown serials.
    pub fn observe_changes(&self, counter: u64) {
        if self.changes.swap(counter, Ordering::SeqCst) != counter {
            self.issued();
        }
    }

    /// Prometheus lines for the responder.
    pub fn render_metrics(&self, now: i64) -> String {
        use std::fmt::Write as _;
        let c = &self.counters;
        let mut out = String::from("# HELP ca_ocsp_responses_total OCSP responses by how they were produced.\n# TYPE ca_ocsp_responses_total counter\n");
        for (kind, counter) in [
            ("cache_hit", &c.cache_hits),
            ("presigned", &c.presigned),
            ("live", &c.live),
            ("malformed_request", &c.malformed),
            ("unauthorized", &c.unauthorized),
            ("internal_error", &c.internal),
            ("try_later", &c.try_later),
        ] {
            let _ = writeln!(
                out,
                "ca_ocsp_responses_total{{kind=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let (entries, bytes) = {
            let cache = self.cache.read().unwrap();
            (cache.entries.len(), cache.bytes)
        };
        let _ = writeln!(
            out,
            "# HELP ca_ocsp_cache_entries Pre-signed OCSP responses held.\n# TYPE ca_ocsp_cache_entries gauge\nca_ocsp_cache_entries {entries}"
        );
        let _ = writeln!(
            out,
            "# HELP ca_ocsp_cache_bytes Bytes the pre-signed OCSP responses hold (bounded by {MAX_CACHE_BYTES}).\n# TYPE ca_ocsp_cache_bytes gauge\nca_ocsp_cache_bytes {bytes}"
        );
        let _ = writeln!(
            out,
            "# HELP ca_ocsp_store_reads_total Certificate states the OCSP responder read from the store.\n# TYPE ca_ocsp_store_reads_total counter\nca_ocsp_store_reads_total {}",
            c.store_reads.load(Ordering::Relaxed)
        );
        if let Some(not_after) = self.responder_not_after() {
            let _ = writeln!(
                out,
                "# HELP ca_ocsp_responder_expires_in_seconds Time left on the delegated OCSP responder certificate.\n# TYPE ca_ocsp_responder_expires_in_seconds gauge\nca_ocsp_responder_expires_in_seconds {}",
                not_after - now
            );
        }
        out
    }

    /// The responder certificate's notAfter (unix seconds), for metrics.
    pub fn responder_not_after(&self) -> Option<i64> {
        self.responder_not_after_for(self.active.load(Ordering::Relaxed))
    }

    /// When issuer `number`'s loaded responder certificate expires (Unix seconds).
    pub fn responder_not_after_for(&self, number: u64) -> Option<i64> {
        self.responders
            .read()
            .unwrap()
            .get(&number)
            .map(|r| r.not_after().unix_timestamp())
    }

    /// Loads every issuer's stored responder, rotating one when missing or
    /// past half-life; picks up a rotation made by another process.
    pub async fn refresh_responder(&self, ca: &Ca) -> ca_core::Result<()> {
        if let Some(active) = ca.issuers().first() {
            self.active.store(active.number(), Ordering::Relaxed);
        }
        for issuer in ca.issuers() {
            let number = issuer.number();
            if !issuer.can_sign() {
                continue;
            }
            let stored = ca.ocsp_responder_fingerprint_for(number).await?;
            let current = self.fingerprints.lock().unwrap().get(&number).cloned();
            let due = self
                .responders
                .read()
                .unwrap()
                .get(&number)
                .map(|r| ca.ocsp_rotation_due(r))
                .unwrap_or(true);
            if stored.is_some() && stored == current && !due {
                continue;
            }
            let responder = ca.ensure_ocsp_responder_for(number, "server").await?;
            tracing::info!(issuer = %issuer.id(), not_after = %ca_core::rfc3339(responder.not_after()), "OCSP responder certificate loaded");
            self.responders
                .write()
                .unwrap()
                .insert(number, Arc::new(responder));
            if let Some(fingerprint) = ca.ocsp_responder_fingerprint_for(number).await? {
                self.fingerprints
                    .lock()
                    .unwrap()
                    .insert(number, fingerprint);
            }
            self.invalidate();
        }
        Ok(())
    }

    /// Answers one DER request.
    pub async fn answer(&self, ca: &Ca, request: Bytes) -> Arc<Answer> {
        let now = ca_core::now().unix_timestamp();
        if let Some(hit) = self.cache.read().unwrap().entries.get(&request) {
            if now < hit.refresh_at {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Arc::clone(&hit.answer);
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        match self.sign(ca, &request).await {
            Ok((answer, cacheable)) => {
                let answer = Arc::new(answer);
                if cacheable {
                    self.counters.presigned.fetch_add(1, Ordering::Relaxed);
                    let (this_update, next_update) = answer.validity.unwrap_or((now, now));
                    let mut cache = self.cache.write().unwrap();
                    // A status change since we read it must not be overwritten by this answer.
                    if self.generation.load(Ordering::SeqCst) == generation {
                        let refresh_at = this_update + (next_update - this_update) / 2;
                        cache.insert(
                            request,
                            Cached {
                                answer: Arc::clone(&answer),
                                refresh_at,
                            },
                        );
                    }
                } else {
                    self.counters.live.fetch_add(1, Ordering::Relaxed);
                }
                answer
            }
            Err(failure) => {
                let counter = match failure {
                    OcspFailure::Malformed => &self.counters.malformed,
                    OcspFailure::Unauthorized => &self.counters.unauthorized,
                    OcspFailure::Internal => &self.counters.internal,
                    OcspFailure::TryLater => &self.counters.try_later,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Arc::new(Answer {
                    der: Bytes::from(failure.response()),
                    validity: None,
                    etag: None,
                    cacheable: false,
                    try_later: failure == OcspFailure::TryLater,
                })
            }
        }
    }

    /// One certificate's state, from memory when a store read since the last
    /// status change has seen it.
    async fn state(
        &self,
        ca: &Ca,
        issuer: u64,
        serial: Option<&Serial>,
    ) -> Result<CertState, OcspFailure> {
        let Some(serial) = serial else {
            return Ok(CertState::Unknown);
        };
        let key = (issuer, *serial);
        if let Some(state) = self.states.read().unwrap().get(&key).copied() {
            return Ok(state);
        }
        if self.unknown.read().unwrap().contains(&key) {
            return Ok(CertState::Unknown);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        self.counters.store_reads.fetch_add(1, Ordering::Relaxed);
        let state = ca.ocsp_state_for(issuer, Some(serial)).await?;
        // Remembered only if nothing was issued or changed meanwhile.
        if state == CertState::Unknown {
            let mut unknown = self.unknown.write().unwrap();
            if self.generation.load(Ordering::SeqCst) == generation {
                if unknown.len() >= MAX_UNKNOWN {
                    unknown.clear();
                }
                unknown.insert(key);
            }
        } else {
            let mut states = self.states.write().unwrap();
            if self.generation.load(Ordering::SeqCst) == generation {
                if states.len() >= MAX_ENTRIES {
                    states.clear();
                }
                states.insert(key, state);
            }
        }
        Ok(state)
    }

    async fn sign(&self, ca: &Ca, request: &[u8]) -> Result<(Answer, bool), OcspFailure> {
        let hashes: Vec<&IssuerHashes> = ca.issuers().iter().map(|i| i.hashes()).collect();
        let (which, query) = parse_request_any(request, &hashes)?;
        let issuer = ca.issuers()[which].number();
        let mut states = Vec::with_capacity(query.serials.len());
        for serial in &query.serials {
            states.push(self.state(ca, issuer, serial.as_ref()).await?);
        }
        let responder = self
            .responders
            .read()
            .unwrap()
            .get(&issuer)
            .cloned()
            .ok_or(OcspFailure::Internal)?;
        let now = ca_core::now();
        // Answers for unknown serials are not kept: the pre-signed cache is
        // dropped on revocations, not on issuance. Only plain requests are
        // kept (`OcspQuery::plain`), so padding cannot mint cache keys.
        let cacheable =
            query.plain && query.nonce.is_none() && !states.contains(&CertState::Unknown);
        let validity = ca.ocsp_validity().to_time();
        let der = if responder.blocks() {
            // A token signs on a blocking thread, never on an async worker.
            tokio::task::spawn_blocking(move || responder.sign(&query, &states, now, validity))
                .await
                .map_err(|_| OcspFailure::Internal)??
        } else {
            responder.sign(&query, &states, now, validity)?
        };
        let this_update = now.unix_timestamp();
        let next_update = this_update + ca.ocsp_validity().as_secs() as i64;
        let etag = ca_core::ocsp::etag(&der);
        Ok((
            Answer {
                der: Bytes::from(der),
                validity: Some((this_update, next_update)),
                etag: Some(etag),
                cacheable,
                try_later: false,
            },
            cacheable,
        ))
    }
}
