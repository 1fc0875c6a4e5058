//! Configuration (`ca.toml`), with every key overridable from `CA_…` environment
//! variables. Raw text becomes a validated [`Config`] once; start-up fails fast
//! naming the bad key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::Duration;
use crate::error::{Error, Result};

/// Where the CA key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An encrypted key file in the data directory.
    File,
    /// A PKCS#11 token (an HSM; SoftHSM2 for trials): the key is generated
    /// inside it and never leaves it.
    Pkcs11(TokenConfig),
}

/// Which PKCS#11 token holds the keys (`key.module`, `key.token_label`,
/// `key.pin_file`). The PIN itself is never part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The PKCS#11 module (shared library) of the HSM vendor.
    pub module: PathBuf,
    /// The label of the token inside that module.
    pub token_label: String,
    /// A file holding the user PIN (else `CA_PKCS11_PIN`).
    pub pin_file: Option<PathBuf>,
}

/// Where the delegated OCSP responder's key lives (`ocsp.key_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspKeySource {
    /// Encrypted with the CA key passphrase, in the store.
    File,
    /// Generated in the CA's PKCS#11 token (needs `key.source = "pkcs11"`).
    Pkcs11,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The server's own TLS certificate and key, and optionally the CAs whose
/// client certificates it asks for (DESIGN §7). Paths only: the server reads
/// and checks the files at start and on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (server certificate first).
    pub cert_file: PathBuf,
    /// PEM private key of the server certificate.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) for client-certificate login (requested, not required).
    pub client_ca_file: Option<PathBuf>,
}

/// Abuse limits of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed authentications one client address may make a minute before
    /// getting 429 (0: unlimited).
    pub auth_failures_per_minute: u32,
    /// Requests one token (or client certificate) may make a minute (0: unlimited).
    pub token_requests_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_failures_per_minute: 20,
            token_requests_per_minute: 0,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (store, CA certificate, encrypted key, policies).
    pub data_dir: PathBuf,
    /// Store URL; `sqlite://<data_dir>/ca.db` when unset.
    pub database_url: Option<String>,
    /// HTTP listen address.
    pub listen: String,
    /// Base URL for CDP/AIA; when unset, the one given at `init`.
    pub base_url: Option<String>,
    /// Policies directory; when unset, `<data_dir>/policies` if present, else the built-in ones.
    pub policies_dir: Option<PathBuf>,
    /// Policy used when a caller names none.
    pub default_policy: String,
    /// Key storage.
    pub key_source: KeySource,
    /// Where the OCSP responder key is kept; defaults to where the CA key is.
    pub ocsp_key_source: OcspKeySource,
    /// File holding the CA key passphrase (else `CA_KEY_PASSPHRASE`).
    pub passphrase_file: Option<PathBuf>,
    /// CRL lifetime (nextUpdate − thisUpdate).
    pub crl_validity: Duration,
    /// OCSP response lifetime.
    pub ocsp_validity: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// HTTPS instead of HTTP, when set.
    pub tls: Option<TlsFiles>,
    /// Abuse limits.
    pub limits: Limits,
    /// How long a bundle waits for pickup (`pickup.validity`, default 72h).
    pub pickup_validity: Duration,
    /// Notification mail, when `smtp.url` is set.
    pub smtp: Option<SmtpConfig>,
}

/// Where notification mail goes (`smtp.url`, `smtp.from`,
/// `smtp.reminder_before`). The URL may carry credentials
/// (`smtps://user:pass@host`); it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, or STARTTLS with `?tls=required`),
    /// `smtps://host:port` (implicit TLS).
    pub url: String,
    /// The From address.
    pub from: String,
    /// How long before a certificate expires its reminder goes out (0: never).
    pub reminder_before: Duration,
    /// PEM certificates trusted for the mail server's TLS (`smtp.ca_file`),
    /// instead of the system's roots: a mail server under a private CA.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &"<redacted>")
            .field("from", &self.from)
            .field("reminder_before", &self.reminder_before)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("ca-data"),
            database_url: None,
            listen: "127.0.0.1:8080".into(),
            base_url: None,
            policies_dir: None,
            default_policy: "portal-admin".into(),
            key_source: KeySource::File,
            ocsp_key_source: OcspKeySource::File,
            passphrase_file: None,
            crl_validity: Duration::from_secs(24 * 3600),
            ocsp_validity: Duration::from_secs(3600),
            log_format: LogFormat::Text,
            tls: None,
            limits: Limits::default(),
            pickup_validity: Duration::from_secs(72 * 3600),
            smtp: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<String>,
    database_url: Option<String>,
    listen: Option<String>,
    base_url: Option<String>,
    policies_dir: Option<String>,
    default_policy: Option<String>,
    key: Option<RawKey>,
    crl: Option<RawValidity>,
    ocsp: Option<RawOcsp>,
    log: Option<RawLog>,
    tls: Option<RawTls>,
    limits: Option<RawLimits>,
    pickup: Option<RawValidity>,
    smtp: Option<RawSmtp>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    url: Option<String>,
    from: Option<String>,
    reminder_before: Option<String>,
    ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    auth_failures_per_minute: Option<toml::Value>,
    token_requests_per_minute: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKey {
    source: Option<String>,
    passphrase_file: Option<String>,
    module: Option<String>,
    token_label: Option<String>,
    pin_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOcsp {
    validity: Option<String>,
    key_source: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawValidity {
    validity: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
}

impl Config {
    /// Reads `file` (if any), then applies `CA_…` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Config::load_str(&text, &path.display().to_string(), env)
            }
            None => Config::from_raw(RawConfig::default(), env),
        }
    }

    /// Parses `text` as the contents of a `ca.toml` named `origin` (in error
    /// messages), then applies `CA_…` variables from `env`: what [`Config::load`]
    /// does once it has read the file.
    pub fn load_str(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let raw = toml::from_str::<RawConfig>(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(1);
            Error::Config(format!("{origin}:{line}: {}", e.message().trim()))
        })?;
        Config::from_raw(raw, env)
    }

    fn from_raw(raw: RawConfig, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::default();
        let pick = |env_name: &str, file_value: Option<String>| {
            env(env_name).filter(|v| !v.is_empty()).or(file_value)
        };
        let key = raw.key.unwrap_or_default();
        if let Some(v) = pick("CA_DATA_DIR", raw.data_dir) {
            c.data_dir = PathBuf::from(v);
        }
        c.database_url = pick("CA_DATABASE_URL", raw.database_url);
        if let Some(v) = pick("CA_LISTEN", raw.listen) {
            c.listen = v;
        }
        c.base_url = pick("CA_BASE_URL", raw.base_url);
        c.policies_dir = pick("CA_POLICIES_DIR", raw.policies_dir).map(PathBuf::from);
        if let Some(v) = pick("CA_DEFAULT_POLICY", raw.default_policy) {
            c.default_policy = v;
        }
        let module = pick("CA_KEY_MODULE", key.module);
        let token_label = pick("CA_KEY_TOKEN_LABEL", key.token_label);
        let pin_file = pick("CA_KEY_PIN_FILE", key.pin_file);
        match pick("CA_KEY_SOURCE", key.source).as_deref() {
            None | Some("file") => {
                // Token settings without a token are a mistake, not a no-op.
                for (name, value) in [
                    ("key.module", &module),
                    ("key.token_label", &token_label),
                    ("key.pin_file", &pin_file),
                ] {
                    if value.is_some() {
                        return Err(Error::Config(format!(
                            "{name} is set but key.source is \"file\": set key.source = \"pkcs11\" to use a token"
                        )));
                    }
                }
            }
            Some("pkcs11") => {
                let module = module.ok_or_else(|| {
                    Error::Config(
                        "key.module: required with key.source = \"pkcs11\" (the path of the HSM's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so)".into(),
                    )
                })?;
                let token_label = token_label.ok_or_else(|| {
                    Error::Config(
                        "key.token_label: required with key.source = \"pkcs11\" (the label of the token holding the CA key)".into(),
                    )
                })?;
                if token_label.len() > 32 {
                    return Err(Error::Config(format!(
                        "key.token_label: \"{}\" is longer than the 32 bytes a PKCS#11 token label holds",
                        token_label.escape_debug()
                    )));
                }
                c.key_source = KeySource::Pkcs11(TokenConfig {
                    module: PathBuf::from(module),
                    token_label,
                    pin_file: pin_file.map(PathBuf::from),
                });
                c.ocsp_key_source = OcspKeySource::Pkcs11;
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "key.source: unsupported value \"{}\": use \"file\" or \"pkcs11\"",
                    other.escape_debug()
                )))
            }
        }
        c.passphrase_file = pick("CA_KEY_PASSPHRASE_FILE", key.passphrase_file).map(PathBuf::from);
        let duration = |name: &str, value: Option<String>, default: Duration| -> Result<Duration> {
            match value {
                None => Ok(default),
                Some(v) => v.parse().map_err(|e| Error::Config(format!("{name}: {e}"))),
            }
        };
        c.crl_validity = duration(
            "crl.validity",
            pick("CA_CRL_VALIDITY", raw.crl.and_then(|r| r.validity)),
            c.crl_validity,
        )?;
        let ocsp = raw.ocsp.unwrap_or_default();
        c.ocsp_validity = duration(
            "ocsp.validity",
            pick("CA_OCSP_VALIDITY", ocsp.validity),
            c.ocsp_validity,
        )?;
        match pick("CA_OCSP_KEY_SOURCE", ocsp.key_source).as_deref() {
            None => {}
            Some("file") => c.ocsp_key_source = OcspKeySource::File,
            Some("pkcs11") if matches!(c.key_source, KeySource::Pkcs11(_)) => {
                c.ocsp_key_source = OcspKeySource::Pkcs11
            }
            Some("pkcs11") => {
                return Err(Error::Config(
                    "ocsp.key_source: \"pkcs11\" needs key.source = \"pkcs11\" (the responder key goes into the CA's token)".into(),
                ))
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "ocsp.key_source: unsupported value \"{}\": use \"file\" or \"pkcs11\"",
                    other.escape_debug()
                )))
            }
        }
        if let Some(v) = pick("CA_LOG_FORMAT", raw.log.and_then(|l| l.format)) {
            c.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(Error::Config(format!(
                        "log.format: unknown value \"{other}\": use text or json"
                    )))
                }
            };
        }
        let tls = raw.tls.unwrap_or_default();
        let cert_file = pick("CA_TLS_CERT_FILE", tls.cert_file).map(PathBuf::from);
        let key_file = pick("CA_TLS_KEY_FILE", tls.key_file).map(PathBuf::from);
        let client_ca_file = pick("CA_TLS_CLIENT_CA_FILE", tls.client_ca_file).map(PathBuf::from);
        c.tls = match (cert_file, key_file, client_ca_file) {
            (None, None, None) => None,
            (Some(cert_file), Some(key_file), client_ca_file) => Some(TlsFiles {
                cert_file,
                key_file,
                client_ca_file,
            }),
            (None, _, _) => {
                return Err(Error::Config(
                    "tls.cert_file: missing; HTTPS needs tls.cert_file and tls.key_file (tls.client_ca_file needs both)".into(),
                ))
            }
            (_, None, _) => {
                return Err(Error::Config(
                    "tls.key_file: missing; HTTPS needs tls.cert_file and tls.key_file".into(),
                ))
            }
        };
        let limits = raw.limits.unwrap_or_default();
        let count = |name: &str, env_name: &str, value: Option<toml::Value>, default: u32| {
            let text = match env(env_name).filter(|v| !v.is_empty()) {
                Some(v) => v,
                None => match value {
                    None => return Ok(default),
                    Some(toml::Value::Integer(n)) => n.to_string(),
                    Some(other) => other.to_string(),
                },
            };
            text.trim().parse::<u32>().map_err(|_| {
                Error::Config(format!(
                    "{name}: \"{}\" is not a whole number from 0 (off) to {}",
                    text.escape_debug(),
                    u32::MAX
                ))
            })
        };
        c.limits = Limits {
            auth_failures_per_minute: count(
                "limits.auth_failures_per_minute",
                "CA_LIMITS_AUTH_FAILURES_PER_MINUTE",
                limits.auth_failures_per_minute,
                c.limits.auth_failures_per_minute,
            )?,
            token_requests_per_minute: count(
                "limits.token_requests_per_minute",
                "CA_LIMITS_TOKEN_REQUESTS_PER_MINUTE",
                limits.token_requests_per_minute,
                c.limits.token_requests_per_minute,
            )?,
        };
        if let Some(url) = &c.base_url {
            crate::pki::x509::Endpoints::new(url)
                .map_err(|e| Error::Config(format!("base_url: {e}")))?;
        }
        c.pickup_validity = duration(
            "pickup.validity",
            pick("CA_PICKUP_VALIDITY", raw.pickup.and_then(|p| p.validity)),
            c.pickup_validity,
        )?;
        if c.pickup_validity.as_secs() == 0 || c.pickup_validity.as_secs() > 90 * 86_400 {
            return Err(Error::Config(
                "pickup.validity: must be between 1s and 90d (default 72h)".into(),
            ));
        }
        let smtp = raw.smtp.unwrap_or_default();
        let from = pick("CA_SMTP_FROM", smtp.from);
        let reminder_before = match pick("CA_SMTP_REMINDER_BEFORE", smtp.reminder_before) {
            Some(v) if matches!(v.trim(), "0" | "0s" | "off") => Duration::from_secs(0),
            other => duration(
                "smtp.reminder_before",
                other,
                Duration::from_secs(14 * 86_400),
            )?,
        };
        let ca_file = pick("CA_SMTP_CA_FILE", smtp.ca_file).map(PathBuf::from);
        c.smtp = match pick("CA_SMTP_URL", smtp.url) {
            None => {
                if ca_file.is_some() {
                    return Err(Error::Config(
                        "smtp.ca_file is set but smtp.url is not: set smtp.url (smtps://host:port, or smtp://host:port?tls=required for STARTTLS)".into(),
                    ));
                }
                if from.is_some() {
                    return Err(Error::Config(
                        "smtp.from is set but smtp.url is not: set smtp.url (smtp://host:port or smtps://host:port) to send mail".into(),
                    ));
                }
                None
            }
            Some(url) => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(Error::Config(
                        "smtp.url: must start with smtp:// (plain or STARTTLS with ?tls=required) or smtps:// (TLS)".into(),
                    ));
                }
                let from = from.ok_or_else(|| {
                    Error::Config(
                        "smtp.from: required with smtp.url (the sender address, e.g. \"CA <ca@example.com>\")".into(),
                    )
                })?;
                if ca_file.is_some()
                    && url.starts_with("smtp://")
                    && !url.contains("tls=required")
                    && !url.contains("tls=opportunistic")
                {
                    return Err(Error::Config(
                        "smtp.ca_file: the smtp.url speaks no TLS; use smtps://host:port, or smtp://host:port?tls=required for STARTTLS".into(),
                    ));
                }
                Some(SmtpConfig {
                    url,
                    from,
                    reminder_before,
                    ca_file,
                })
            }
        };
        if c.crl_validity.as_secs() < 60 {
            return Err(Error::Config("crl.validity: must be at least 60s".into()));
        }
        Ok(c)
    }

    /// The token holding the keys, when `key.source = "pkcs11"`.
    pub fn token(&self) -> Option<&TokenConfig> {
        match &self.key_source {
            KeySource::Pkcs11(token) => Some(token),
            KeySource::File => None,
        }
    }

    /// Whether opening the CA's keys needs the passphrase: always for a key
    /// file, and with a token only when the OCSP responder key is a file.
    pub fn needs_passphrase(&self) -> bool {
        self.token().is_none() || self.ocsp_key_source == OcspKeySource::File
    }

    /// The store URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ca.db").display()
            ),
        }
    }
}

/// Reads a secret from the environment and removes it there, so child
/// processes (an `--on-change` hook, a shell) never inherit it and a later
/// `std::env::vars()` dump cannot show it. The process's initial
/// environment block (`/proc/PID/environ`, readable by the same user and
/// root) still holds the original bytes: prefer a file (`key.passphrase_file`)
/// where that matters. Call it before any thread is started.
pub fn take_secret_env(name: &str) -> Option<zeroize::Zeroizing<String>> {
    let value = std::env::var(name).ok().map(zeroize::Zeroizing::new);
    std::env::remove_var(name);
    value.filter(|v| !v.is_empty())
}

/// The token user PIN, when the CA key is in a PKCS#11 token: from
/// `key.pin_file`, else `CA_PKCS11_PIN`. The variable leaves the environment
/// either way (see [`take_secret_env`]); call it before any thread is started.
/// Read once: a running server keeps it in memory (wiped on exit) to log in
/// again after the token comes back.
pub fn read_pin(config: &Config) -> Result<Option<zeroize::Zeroizing<String>>> {
    let from_env = take_secret_env("CA_PKCS11_PIN");
    let Some(token) = config.token() else {
        return Ok(None);
    };
    match &token.pin_file {
        Some(file) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(file)
                    .map_err(|e| Error::Config(format!("key.pin_file {}: {e}", file.display())))?,
            );
            Ok(Some(zeroize::Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        None => Ok(from_env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ca.toml");
        let c = Config::load(Some(&example), |_| None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.crl_validity.as_secs(), 86_400);
        assert_eq!(c.limits, Limits::default());
        assert!(c.tls.is_none());
    }

    #[test]
    fn env_overrides_file_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9\"\n[crl]\nvalidity = \"12h\"\n").unwrap();
        let c = Config::load(Some(&file), |k| {
            (k == "CA_LISTEN").then(|| "127.0.0.1:1".to_owned())
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.crl_validity.as_secs(), 12 * 3600);
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), |_| None).unwrap_err().to_string();
        assert!(e.contains("lisen") && e.contains(":1:"), "{e}");
        let e = Config::load(None, |k| {
            (k == "CA_CRL_VALIDITY").then(|| "soon".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("crl.validity"), "{e}");
    }

    #[test]
    fn tls_files_come_in_pairs_and_limits_are_numbers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.limits, Limits::default());
        let c = Config::load(
            None,
            env(&[("CA_TLS_CERT_FILE", "s.pem"), ("CA_TLS_KEY_FILE", "s.key")]),
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().cert_file, PathBuf::from("s.pem"));
        let e = Config::load(None, env(&[("CA_TLS_CERT_FILE", "s.pem")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        let e = Config::load(None, env(&[("CA_TLS_CLIENT_CA_FILE", "ca.pem")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.cert_file"), "{e}");
        let c = Config::load(None, env(&[("CA_LIMITS_TOKEN_REQUESTS_PER_MINUTE", "600")])).unwrap();
        assert_eq!(c.limits.token_requests_per_minute, 600);
        let e = Config::load(None, env(&[("CA_LIMITS_AUTH_FAILURES_PER_MINUTE", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.auth_failures_per_minute"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.toml");
        std::fs::write(&file, "[limits]\nauth_failures_per_minute = -1\n").unwrap();
        let e = Config::load(Some(&file), |_| None).unwrap_err().to_string();
        assert!(e.contains("limits.auth_failures_per_minute"), "{e}");
    }

    #[test]
    fn pickup_and_smtp_keys_are_validated() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.pickup_validity.as_secs(), 72 * 3600);
        assert!(c.smtp.is_none());
        let e = |pairs| Config::load(None, env(pairs)).unwrap_err().to_string();
        assert!(e(&[("CA_PICKUP_VALIDITY", "soon")]).starts_with("pickup.validity"));
        assert!(e(&[("CA_PICKUP_VALIDITY", "1y")]).starts_with("pickup.validity"));
        assert!(e(&[("CA_SMTP_URL", "http://x")]).starts_with("smtp.url"));
        assert!(e(&[("CA_SMTP_URL", "smtp://127.0.0.1:25")]).starts_with("smtp.from"));
        assert!(e(&[("CA_SMTP_FROM", "ca@example.com")]).starts_with("smtp.from is set"));
        assert!(e(&[("CA_SMTP_CA_FILE", "mail-ca.pem")]).starts_with("smtp.ca_file is set"));
        assert!(e(&[
            ("CA_SMTP_URL", "smtp://127.0.0.1:25"),
            ("CA_SMTP_FROM", "ca@example.com"),
            ("CA_SMTP_CA_FILE", "mail-ca.pem")
        ])
        .contains("speaks no TLS"));
        let c = Config::load(
            None,
            env(&[
                ("CA_SMTP_URL", "smtps://user:secret@mail.example.com"),
                ("CA_SMTP_FROM", "ca@example.com"),
                ("CA_SMTP_REMINDER_BEFORE", "off"),
            ]),
        )
        .unwrap();
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.reminder_before.as_secs(), 0);
        // The URL's credentials never reach a log line through Debug.
        assert!(!format!("{smtp:?}").contains("secret"));
    }

    #[test]
    fn token_keys_are_validated_naming_the_key() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = |pairs| Config::load(None, env(pairs)).unwrap_err().to_string();
        assert!(e(&[("CA_KEY_SOURCE", "pkcs11")]).starts_with("key.module"));
        assert!(
            e(&[("CA_KEY_SOURCE", "pkcs11"), ("CA_KEY_MODULE", "/m.so")])
                .starts_with("key.token_label")
        );
        assert!(e(&[("CA_KEY_SOURCE", "hsm")]).starts_with("key.source"));
        assert!(e(&[("CA_KEY_MODULE", "/m.so")]).starts_with("key.module is set"));
        assert!(e(&[("CA_OCSP_KEY_SOURCE", "pkcs11")]).starts_with("ocsp.key_source"));
        let token = &[
            ("CA_KEY_SOURCE", "pkcs11"),
            ("CA_KEY_MODULE", "/m.so"),
            ("CA_KEY_TOKEN_LABEL", "ca"),
        ];
        let c = Config::load(None, env(token)).unwrap();
        assert_eq!(c.token().unwrap().token_label, "ca");
        // The responder key follows the CA key into the token unless told otherwise.
        assert_eq!(c.ocsp_key_source, OcspKeySource::Pkcs11);
        assert!(!c.needs_passphrase());
        let file_responder = &[
            ("CA_KEY_SOURCE", "pkcs11"),
            ("CA_KEY_MODULE", "/m.so"),
            ("CA_KEY_TOKEN_LABEL", "ca"),
            ("CA_OCSP_KEY_SOURCE", "file"),
        ];
        let c = Config::load(None, env(file_responder)).unwrap();
        assert_eq!(c.ocsp_key_source, OcspKeySource::File);
        assert!(c.needs_passphrase());
    }
}
