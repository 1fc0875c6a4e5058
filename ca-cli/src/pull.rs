//! `ca-cli crl pull`: the gateway-side CRL fetcher. Fetching and files here;
//! the verification is `ca_core::verify_crl`.

use std::path::Path;
use std::time::{Duration, Instant};

use ca_core::{compare_crl, fsutil, verify_crl, CrlUpdate, Error, Result, VerifiedCrl};
use serde_json::json;

use crate::cli::PullArgs;

/// What the CA's server said about the copy we have (sent back as
/// If-None-Match / If-Modified-Since; kept between pulls in --interval mode).
#[derive(Default, Clone)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// How long a `--watch` long-poll asks the server to hold it (RFC 7240
/// `Prefer: wait`); the server's own limit is the same 55 s.
const WATCH_WAIT: Duration = Duration::from_secs(55);
/// In `--watch` mode, requests that come back without news start at most
/// this often: the fallback against a server that does not hold requests
/// (or has no long-poll slot free), and a guard against one that answers at once.
const WATCH_MIN_SPACING: Duration = Duration::from_secs(1);
/// Retry delays after a failed pull in `--watch` mode: doubling up to this.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one pull did.
struct Outcome {
    changed: bool,
    crl: Option<VerifiedCrl>,
    ran_on_change: bool,
}

pub(crate) async fn run(json_output: bool, args: PullArgs) -> Result<()> {
    let parse = |flag: &str, value: &str| -> Result<Duration> {
        value
            .parse::<ca_core::Duration>()
            .map(|d| Duration::from_secs(d.as_secs()))
            .map_err(|e| Error::InvalidInput(format!("--{flag}: {e}")))
    };
    let timeout = parse("timeout", &args.timeout)?;
    let interval = args
        .interval
        .as_deref()
        .map(|v| parse("interval", v))
        .transpose()?;
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return Err(Error::InvalidInput(format!(
            "--url {}: expected an http:// or https:// URL",
            args.url
        )));
    }
    let ca = std::fs::read(&args.ca)
        .map_err(|e| Error::InvalidInput(format!("cannot read --ca {}: {e}", args.ca.display())))?;
    // A long-poll is held up to WATCH_WAIT before its answer starts.
    let request_timeout = match args.watch {
        true => timeout + WATCH_WAIT,
        false => timeout,
    };
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(timeout))
        .timeout_global(Some(request_timeout));
    if args.url.starts_with("https://") {
        // The CA serves its API with a certificate it issued itself
        // (`ca-cli server-cert`), so the CA certificate is the trust anchor
        // for the connection too, unless --tls-ca names another.
        let (path, bytes) = match &args.tls_ca {
            Some(path) => (
                path,
                std::fs::read(path).map_err(|e| {
                    Error::InvalidInput(format!("cannot read --tls-ca {}: {e}", path.display()))
                })?,
            ),
            None => (&args.ca, ca.clone()),
        };
        let anchor = ureq::tls::Certificate::from_pem(&bytes)
            .map(|c| c.to_owned())
            .unwrap_or_else(|_| ureq::tls::Certificate::from_der(&bytes).to_owned());
        if ca_core::certificate_serial_hex(anchor.der()).is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: not a PEM or DER certificate to trust for https",
                path.display()
            )));
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::NativeTls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[anchor]))
                .build(),
        );
    }
    let agent: ureq::Agent = config.build().into();
    let mut validators = Validators::default();
    if args.watch {
        return watch(json_output, &agent, &args, &ca, &mut validators).await;
    }
    let Some(interval) = interval else {
        let outcome = pull_once(&agent, &args, &ca, &mut validators, None).await?;
        report(json_output, &args, &outcome);
        return Ok(());
    };
    let mut stop = Box::pin(terminated());
    loop {
        match pull_once(&agent, &args, &ca, &mut validators, None).await {
            Ok(outcome) => report(json_output, &args, &outcome),
            Err(e) => eprintln!("error: {e} (retrying in {}s)", interval.as_secs()),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// `--watch`: long-poll until SIGTERM. Every CRL is verified and installed
/// exactly as by a single pull; only a change is reported (and runs
/// `--on-change`).
async fn watch(
    json_output: bool,
    agent: &ureq::Agent,
    args: &PullArgs,
    ca: &[u8],
    validators: &mut Validators,
) -> Result<()> {
    let mut stop = Box::pin(terminated());
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        let started = Instant::now();
        let pulled = tokio::select! {
            pulled = pull_once(agent, args, ca, validators, Some(WATCH_WAIT)) => pulled,
            // The fetch runs on a blocking thread and is abandoned; a CRL is
            // only ever installed by rename, so nothing is left half-written.
            _ = &mut stop => return Ok(()),
        };
        let pause = match pulled {
            Ok(outcome) => {
                backoff = Duration::from_secs(1);
                if outcome.changed || first {
                    report(json_output, args, &outcome);
                }
                first = false;
                match outcome.changed {
                    true => Duration::ZERO,
                    false => WATCH_MIN_SPACING.saturating_sub(started.elapsed()),
                }
            }
            Err(e) => {
                eprintln!("error: {e} (retrying in {}s)", backoff.as_secs());
                let pause = backoff;
                backoff = (backoff * 2).min(WATCH_MAX_BACKOFF);
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn read_installed(out: &Path, ca: &[u8]) -> Option<VerifiedCrl> {
    let bytes = std::fs::read(out).ok()?;
    // The installed CRL may be past its nextUpdate; only its signature and number matter here.
    verify_crl(&bytes, ca, ca_core::OffsetDateTime::UNIX_EPOCH).ok()
}

async fn pull_once(
    agent: &ureq::Agent,
    args: &PullArgs,
    ca: &[u8],
    validators: &mut Validators,
    wait: Option<Duration>,
) -> Result<Outcome> {
    let installed = read_installed(&args.out, ca);
    // Validators only make sense for the copy they were given with.
    let sent = if installed.is_some() {
        validators.clone()
    } else {
        Validators::default()
    };
    let fetched = fetch(agent.clone(), args.url.clone(), sent, wait).await?;
    let Some((body, new_validators)) = fetched else {
        let crl = match installed {
            Some(crl) => Some(crl),
            None => std::fs::read(&args.out)
                .ok()
                .and_then(|b| ca_core::split_crls(&b).ok())
                .and_then(|crls| crls.into_iter().next())
                .and_then(|der| verify_crl(&der, ca, ca_core::OffsetDateTime::UNIX_EPOCH).ok()),
        };
        return Ok(Outcome {
            changed: false,
            crl,
            ran_on_change: false,
        });
    };
    let crls = ca_core::split_crls(&body)?;
    if crls.len() > 1 {
        return pull_set(agent, args, ca, crls, validators, new_validators).await;
    }
    let crl = verify_crl(&body, ca, ca_core::now())?;
    if compare_crl(&crl, installed.as_ref())? == CrlUpdate::Unchanged {
        *validators = new_validators;
        return Ok(Outcome {
            changed: false,
            crl: Some(crl),
            ran_on_change: false,
        });
    }
    let bytes = if args.der {
        crl.der.clone()
    } else {
        crl.to_pem().into_bytes()
    };
    fsutil::write_file(&args.out, &bytes)?;
    *validators = new_validators;
    let ran_on_change = match &args.on_change {
        Some(command) => {
            run_on_change(command).await?;
            true
        }
        None => false,
    };
    Ok(Outcome {
        changed: true,
        crl: Some(crl),
        ran_on_change,
    })
}

/// A file of several CRLs (`GET /crls.pem` under a trust hierarchy): each
/// verified against its issuer, every issuer chaining to a root in `--ca`.
/// An issuer certificate `--ca` does not hold (a new issuing CA after a
/// rollover) is fetched from `<base>/ca/{issuer-id}.crt` next to the URL and
/// trusted only if it chains to that root — so a rollover needs no change on
/// the gateway. Per issuer, a CRL number may never go down.
async fn pull_set(
    agent: &ureq::Agent,
    args: &PullArgs,
    ca: &[u8],
    crls: Vec<Vec<u8>>,
    validators: &mut Validators,
    new_validators: Validators,
) -> Result<Outcome> {
    if args.der {
        return Err(Error::InvalidInput(
            "the URL serves several CRLs (one PEM file for ssl_crl): --der writes one CRL only; drop --der".into(),
        ));
    }
    let known = ca_core::certificate_key_ids(ca);
    let base = args
        .url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&args.url);
    let mut fetched = Vec::new();
    for crl in &crls {
        let Some(aki) = ca_core::crl_authority_key_id(crl) else {
            continue;
        };
        if known.contains(&aki) {
            continue;
        }
        let url = format!("{base}/ca/{}.crt", ca_core::issuer_id_of(&aki));
        // Not served (the root's own CRL, a foreign CRL): no candidate; the
        // verification below then says which CRL has no issuer.
        if let Ok(Some((der, _))) = fetch(agent.clone(), url, Validators::default(), None).await {
            fetched.push(der);
        }
    }
    let verified = ca_core::verify_crl_set(&crls, ca, &fetched, ca_core::now())?;
    let pem: String = verified.iter().map(VerifiedCrl::to_pem).collect();
    let installed = std::fs::read(&args.out).ok();
    if installed.as_deref() == Some(pem.as_bytes()) {
        *validators = new_validators;
        return Ok(Outcome {
            changed: false,
            crl: verified.into_iter().next(),
            ran_on_change: false,
        });
    }
    // Never a lower number for an issuer than the installed file has.
    if let Some(old) = installed.and_then(|b| ca_core::split_crls(&b).ok()) {
        for old in old {
            let (Some(aki), Ok(old)) = (
                ca_core::crl_authority_key_id(&old),
                verify_crl_set(&old, ca, &fetched),
            ) else {
                continue;
            };
            if let Some(new) = verified
                .iter()
                .find(|v| ca_core::crl_authority_key_id(&v.der).as_ref() == Some(&aki))
            {
                if new.number < old.number {
                    return Err(Error::InvalidInput(format!(
                        "fetched CRL number {} of issuer {} is older than the installed one ({}): a replayed or rolled-back CRL; keeping the installed file",
                        new.number,
                        ca_core::issuer_id_of(&aki),
                        old.number
                    )));
                }
            }
        }
    }
    fsutil::write_file(&args.out, pem.as_bytes())?;
    *validators = new_validators;
    let ran_on_change = match &args.on_change {
        Some(command) => {
            run_on_change(command).await?;
            true
        }
        None => false,
    };
    Ok(Outcome {
        changed: true,
        crl: verified.into_iter().next(),
        ran_on_change,
    })
}

/// Verifies one installed CRL of a set (expired is fine: only its number matters).
fn verify_crl_set(der: &[u8], ca: &[u8], fetched: &[Vec<u8>]) -> Result<VerifiedCrl> {
    ca_core::verify_crl_set(
        &[der.to_vec()],
        ca,
        fetched,
        ca_core::OffsetDateTime::UNIX_EPOCH,
    )
    .map(|mut v| v.remove(0))
}

/// GETs the CRL; `None` when the server says 304 Not Modified. With `wait`,
/// asks the server to hold a 304 until a newer CRL is published (RFC 7240 §4.3).
async fn fetch(
    agent: ureq::Agent,
    url: String,
    validators: Validators,
    wait: Option<Duration>,
) -> Result<Option<(Vec<u8>, Validators)>> {
    let fetch_error = |what: String| Error::Io {
        context: "cannot fetch the CRL from",
        path: url.clone().into(),
        source: std::io::Error::other(what),
    };
    let task_url = url.clone();
    let result = tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
        let mut request = agent.get(&task_url);
        if let Some(tag) = &validators.etag {
            request = request.header("If-None-Match", tag);
        }
        if let Some(date) = &validators.last_modified {
            request = request.header("If-Modified-Since", date);
        }
        if let (Some(wait), Some(_)) = (wait, &validators.etag) {
            request = request.header("Prefer", format!("wait={}", wait.as_secs()));
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if status == 304 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let new_validators = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        let body = response
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(Some((body, new_validators)))
    })
    .await
    .map_err(|e| fetch_error(e.to_string()))?;
    result.map_err(fetch_error)
}

async fn run_on_change(command: &str) -> Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .map_err(|e| Error::Io {
            context: "cannot run --on-change",
            path: command.into(),
            source: e,
        })?;
    if !status.success() {
        return Err(Error::Io {
            context: "the new CRL is installed, but --on-change failed:",
            path: command.into(),
            source: std::io::Error::other(format!("exit status {status}")),
        });
    }
    Ok(())
}

fn report(json_output: bool, args: &PullArgs, outcome: &Outcome) {
    let crl = outcome.crl.as_ref();
    if json_output {
        let value = json!({
            "changed": outcome.changed,
            "crl_number": crl.map(|c| c.number),
            "revoked": crl.map(|c| c.revoked),
            "next_update": crl.map(|c| ca_core::rfc3339(c.next_update)),
            "out": args.out,
            "on_change_ran": outcome.ran_on_change,
        });
        println!("{value}");
        return;
    }
    match (outcome.changed, crl) {
        (true, Some(c)) => println!(
            "installed CRL {} ({} revoked, next update {}) at {}{}",
            c.number,
            c.revoked,
            ca_core::rfc3339(c.next_update),
            args.out.display(),
            if outcome.ran_on_change {
                "; ran --on-change"
            } else {
                ""
            }
        ),
        (false, Some(c)) => println!(
            "CRL unchanged (number {}) at {}",
            c.number,
            args.out.display()
        ),
        _ => println!("CRL unchanged at {}", args.out.display()),
    }
}
