//! Prometheus metrics, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::http::Method;

use crate::crl::CrlCache;

/// Latency buckets (seconds).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The method label: the methods of RFC 9110, and `other` for anything else.
/// hyper accepts any token as a method, so the raw method would let any
/// unauthenticated peer add a series per request.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// What one route has answered: counts by (method, status) and a latency histogram.
#[derive(Default)]
struct RouteStats {
    /// A handful of entries per route, bounded by the fixed method labels
    /// times the status codes a route answers; scanned, not hashed.
    responses: Vec<(&'static str, u16, u64)>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and histograms of the server.
#[derive(Default)]
pub struct Metrics {
    /// By route. A request takes one lock and allocates nothing once its
    /// route has been seen.
    routes: Mutex<BTreeMap<String, RouteStats>>,
    issued: Mutex<BTreeMap<(String, String), u64>>,
    revocations: AtomicU64,
    crls_published: AtomicU64,
    pickups_created: AtomicU64,
    mail_sent: AtomicU64,
    mail_failed: AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock().unwrap();
        if !routes.contains_key(route) {
            routes.insert(route.to_owned(), RouteStats::default());
        }
        let stats = routes.get_mut(route).expect("inserted above");
        let method = method_label(method);
        match stats
            .responses
            .iter_mut()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => stats.responses.push((method, status, 1)),
        }
        for (count, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        stats.count += 1;
        stats.sum += seconds;
    }

    /// Records an issuance (`issue`, `reissue`, `sign-csr`).
    pub fn issued(&self, operation: &str, policy: &str) {
        *self
            .issued
            .lock()
            .unwrap()
            .entry((operation.to_owned(), policy.to_owned()))
            .or_default() += 1;
    }

    /// Records revocations.
    pub fn revoked(&self, count: usize) {
        self.revocations.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Records a bundle left for pickup.
    pub fn pickup_created(&self) {
        self.pickups_created.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a notification mail sent (`true`) or failed.
    pub fn mail(&self, sent: bool) {
        let counter = if sent {
            &self.mail_sent
        } else {
            &self.mail_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a CRL this server published.
    pub fn crl_published(&self) {
        self.crls_published.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `crl` is (number, this_update, next_update) as unix seconds.
    pub fn render(&self, crl: Option<(u64, i64, i64)>, now: i64) -> String {
        let mut out = String::new();
        out.push_str("# HELP ca_http_requests_total HTTP requests by method, route and status.\n# TYPE ca_http_requests_total counter\n");
        let routes = self.routes.lock().unwrap();
        for (route, h) in routes.iter() {
            let mut responses = h.responses.clone();
            responses.sort_unstable();
            for (method, status, n) in responses {
                let _ = writeln!(out, "ca_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP ca_http_request_duration_seconds Request latency by route.\n# TYPE ca_http_request_duration_seconds histogram\n");
        for (route, h) in routes.iter() {
            for (bound, count) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "ca_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "ca_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ca_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ca_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        drop(routes);
        out.push_str("# HELP ca_certificates_issued_total Certificates issued by this server.\n# TYPE ca_certificates_issued_total counter\n");
        for ((operation, policy), n) in self.issued.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "ca_certificates_issued_total{{operation=\"{operation}\",policy=\"{policy}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ca_revocations_total Certificates revoked through this server.\n# TYPE ca_revocations_total counter\nca_revocations_total {}",
            self.revocations.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ca_crls_published_total CRLs published by this server.\n# TYPE ca_crls_published_total counter\nca_crls_published_total {}",
            self.crls_published.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ca_pickups_created_total Bundles left for one-time pickup by this server.\n# TYPE ca_pickups_created_total counter\nca_pickups_created_total {}",
            self.pickups_created.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ca_mail_sent_total Notification mails accepted by the SMTP server.\n# TYPE ca_mail_sent_total counter\nca_mail_sent_total {}",
            self.mail_sent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ca_mail_failed_total Notification mails that could not be sent (the pickup waits; resend retries).\n# TYPE ca_mail_failed_total counter\nca_mail_failed_total {}",
            self.mail_failed.load(Ordering::Relaxed)
        );
        if let Some((number, this_update, next_update)) = crl {
            let _ = writeln!(out, "# HELP ca_crl_number CRL number being served.\n# TYPE ca_crl_number gauge\nca_crl_number {number}");
            let _ = writeln!(out, "# HELP ca_crl_age_seconds Age of the CRL being served.\n# TYPE ca_crl_age_seconds gauge\nca_crl_age_seconds {}", now - this_update);
            let _ = writeln!(
                out,
                "# HELP ca_crl_next_update_seconds Seconds until the served CRL's nextUpdate.\n# TYPE ca_crl_next_update_seconds gauge\nca_crl_next_update_seconds {}",
                next_update - now
            );
        }
        out
    }
}

/// `ca_crl_bytes{issuer}`: the DER size of the CRL served for each issuer
/// (the active one's at `/crl`, a retired one's at `/crl/{id}`). A CRL that
/// keeps growing means revoked certificates are not expiring off it.
pub fn render_crl_bytes(ca: &ca_core::Ca, crl: &CrlCache) -> String {
    let mut out = String::from(
        "# HELP ca_crl_bytes Bytes (DER) of the CRL served, by issuer.\n# TYPE ca_crl_bytes gauge\n",
    );
    for issuer in ca.issuers() {
        if let Some(served) = crl.of_issuer(issuer.number()) {
            let _ = writeln!(
                out,
                "ca_crl_bytes{{issuer=\"{}\"}} {}",
                label_value(issuer.id()),
                served.der.len()
            );
        }
    }
    out
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
