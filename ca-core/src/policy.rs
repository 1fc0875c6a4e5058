//! Certificate profiles (`policies/*.toml`): raw files are parsed once into a
//! validated [`Policy`]; nothing else in the CA reads raw policy text.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::duration::Duration;
use crate::error::{Error, Result};
use crate::ids::{AdminId, TenantId};
use crate::keys::KeyAlgorithm;
use crate::tokens::Role;

/// The profiles shipped in `policies/`, built in so a fresh data directory works
/// without copying files; `init` writes them out for the operator to edit.
pub const SHIPPED: [(&str, &str); 6] = [
    (
        "portal-admin.toml",
        include_str!("../../policies/portal-admin.toml"),
    ),
    (
        "portal-admin-legacy.toml",
        include_str!("../../policies/portal-admin-legacy.toml"),
    ),
    (
        "automation-csr.toml",
        include_str!("../../policies/automation-csr.toml"),
    ),
    (
        "ocsp-responder.toml",
        include_str!("../../policies/ocsp-responder.toml"),
    ),
    (
        "automation-renewer.toml",
        include_str!("../../policies/automation-renewer.toml"),
    ),
    (
        "tls-server.toml",
        include_str!("../../policies/tls-server.toml"),
    ),
];

/// What a policy issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Server-generated key delivered as a PKCS#12 bundle (`issue`, `reissue`).
    Pkcs12,
    /// The client sends a CSR and keeps its key (`sign-csr`).
    Csr,
    /// The CA's own delegated OCSP responder certificate.
    OcspResponder,
    /// A TLS server certificate for ca-server itself (`server-cert`): the key
    /// is generated here and written as PEM, the names come from the request.
    TlsServer,
}

/// How a PKCS#12 bundle is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs12Profile {
    /// PBES2 AES-256-CBC with PBKDF2-HMAC-SHA256; MAC SHA-256.
    Modern,
    /// PBE-SHA1-3DES for key and certificates; MAC SHA-1 (Windows before 10 1709, macOS Keychain).
    Legacy,
}

/// An extended key usage a policy may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendedKeyUsage {
    /// id-kp-clientAuth (TLS client).
    ClientAuth,
    /// id-kp-emailProtection (S/MIME).
    EmailProtection,
    /// id-kp-OCSPSigning (only for the responder profile).
    OcspSigning,
    /// id-kp-serverAuth (only for `kind = "tls-server"`).
    ServerAuth,
}

impl ExtendedKeyUsage {
    const NAMES: [(&'static str, ExtendedKeyUsage); 4] = [
        ("client-auth", Self::ClientAuth),
        ("email-protection", Self::EmailProtection),
        ("ocsp-signing", Self::OcspSigning),
        ("server-auth", Self::ServerAuth),
    ];
}

/// A text with `{tenant}` and `{admin}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

/// The placeholders a template may use.
pub(crate) const TEMPLATE_VARIABLES: &str = "{tenant}, {admin}";

impl Template {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| {
                format!("unclosed '{{' in \"{text}\"; allowed variables: {TEMPLATE_VARIABLES}")
            })?;
            let variable = &after[..close];
            if variable != "tenant" && variable != "admin" {
                return Err(format!(
                    "unknown template variable {{{variable}}}; allowed variables: {TEMPLATE_VARIABLES}"
                ));
            }
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!(
                "stray '}}' in \"{text}\"; allowed variables: {TEMPLATE_VARIABLES}"
            ));
        }
        if text.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Template(text.to_owned()))
    }

    /// Fills in the placeholders.
    pub fn render(&self, tenant: &TenantId, admin: &AdminId) -> String {
        self.0
            .replace("{tenant}", tenant.as_str())
            .replace("{admin}", admin.as_str())
    }
}

/// The subject a policy gives its certificates (it replaces any CSR subject).
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    /// CN.
    pub common_name: Template,
    /// OU.
    pub organizational_unit: Option<Template>,
    /// O.
    pub organization: Option<Template>,
    /// C (two letters).
    pub country: Option<String>,
}

/// PKCS#12 settings of a [`PolicyKind::Pkcs12`] policy.
#[derive(Debug, Clone)]
pub struct Pkcs12Settings {
    /// Encryption profile.
    pub profile: Pkcs12Profile,
    /// Length of generated passwords.
    pub password_length: usize,
    /// The friendly name (`Bag Attributes: friendlyName`) shown by certificate stores.
    pub friendly_name: Template,
    /// PBKDF2 / MAC iteration count.
    pub iterations: u32,
    /// Shortest bundle password a caller may choose (characters); generated
    /// passwords are `password_length` long.
    pub min_password_length: usize,
}

/// A validated certificate profile.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Unique name (equals the file stem).
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it issues.
    pub kind: PolicyKind,
    /// Key types: the generated type for PKCS#12 policies (one), the accepted ones for CSR policies.
    pub keys: Vec<KeyAlgorithm>,
    /// Certificate lifetime.
    pub validity: Duration,
    /// Subject.
    pub subject: SubjectTemplate,
    /// EKUs.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// PKCS#12 settings (PKCS#12 policies only).
    pub pkcs12: Option<Pkcs12Settings>,
    /// The API role a TLS client certificate of this policy logs in with
    /// (`api_role`; renewer, operator or auditor — never admin).
    pub api_role: Option<Role>,
    /// The tenant that login is limited to (`api_tenant`, e.g. `"{tenant}"`).
    pub api_tenant: Option<Template>,
    /// How a bundle is handed over when the caller does not say (`delivery`;
    /// PKCS#12 policies only). A caller's explicit choice still wins.
    pub delivery: Delivery,
}

/// How an issued PKCS#12 bundle reaches its admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// The bundle and its password in the answer (or the CLI's `--out` file).
    #[default]
    Direct,
    /// The bundle waits, sealed under a one-time code, for a single download.
    Pickup,
}

impl Delivery {
    /// Parses `direct` or `pickup`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "direct" => Some(Self::Direct),
            "pickup" => Some(Self::Pickup),
            _ => None,
        }
    }

    /// The name used in policies and request bodies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Pickup => "pickup",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    kind: Option<Spanned<String>>,
    key: Spanned<RawKeys>,
    validity: Spanned<String>,
    subject: RawSubject,
    extended_key_usage: Option<Spanned<Vec<String>>>,
    max_active_per_admin: Option<Spanned<i64>>,
    pkcs12: Option<RawPkcs12>,
    api_role: Option<Spanned<String>>,
    api_tenant: Option<Spanned<String>>,
    delivery: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawKeys {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    common_name: Spanned<String>,
    organizational_unit: Option<Spanned<String>>,
    organization: Option<Spanned<String>>,
    country: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs12 {
    profile: Option<Spanned<String>>,
    password_length: Option<Spanned<i64>>,
    friendly_name: Option<Spanned<String>>,
    iterations: Option<Spanned<i64>>,
    min_password_length: Option<Spanned<i64>>,
}

/// Where in which file a problem is.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(&self, span: Range<usize>, message: impl std::fmt::Display) -> String {
        format!("{}:{}: {message}", self.file, self.line(span))
    }
}

impl Policy {
    /// Parses and validates one policy file. `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Policy> {
        let src = Source { file, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| src.line(s)).unwrap_or(1);
            Error::Policy(format!("{file}:{line}: {}", e.message().trim()))
        })?;
        Self::validate(&src, raw).map_err(Error::Policy)
    }

    fn validate(src: &Source<'_>, raw: RawPolicy) -> std::result::Result<Policy, String> {
        let name = raw.name.get_ref();
        if crate::ids::TenantId::parse(name).is_err() {
            return Err(src.error(
                raw.name.span(),
                format!("invalid policy name \"{name}\": use letters, digits, . _ @ -"),
            ));
        }
        let stem = Path::new(src.file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(name);
        if stem != name && src.file.ends_with(".toml") {
            return Err(src.error(
                raw.name.span(),
                format!("policy name \"{name}\" must match its file name \"{stem}.toml\""),
            ));
        }
        let kind = match raw.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("pkcs12") => PolicyKind::Pkcs12,
            Some("csr") => PolicyKind::Csr,
            Some("ocsp-responder") => PolicyKind::OcspResponder,
            Some("tls-server") => PolicyKind::TlsServer,
            Some(other) => {
                let span = raw.kind.as_ref().map(|k| k.span()).unwrap_or_default();
                return Err(src.error(
                    span,
                    format!(
                        "unknown kind \"{other}\": use pkcs12, csr, ocsp-responder or tls-server"
                    ),
                ));
            }
        };
        let key_names = match raw.key.get_ref() {
            RawKeys::One(one) => vec![one.clone()],
            RawKeys::Many(many) => many.clone(),
        };
        if key_names.is_empty() || (kind != PolicyKind::Csr && key_names.len() != 1) {
            return Err(src.error(
                raw.key.span(),
                "key must name exactly one key type (a list is allowed only for kind = \"csr\")",
            ));
        }
        let keys = key_names
            .iter()
            .map(|k| KeyAlgorithm::parse(k).map_err(|e| src.error(raw.key.span(), e)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let validity: Duration = raw
            .validity
            .get_ref()
            .parse()
            .map_err(|e| src.error(raw.validity.span(), e))?;

        let template = |field: &Spanned<String>, what: &str| {
            Template::parse(field.get_ref())
                .map_err(|e| src.error(field.span(), format!("{what}: {e}")))
        };
        let optional = |field: &Option<Spanned<String>>, what: &str| {
            field.as_ref().map(|f| template(f, what)).transpose()
        };
        let country =
            match &raw.subject.country {
                Some(c)
                    if c.get_ref().len() == 2
                        && c.get_ref().chars().all(|ch| ch.is_ascii_uppercase()) =>
                {
                    Some(c.get_ref().clone())
                }
                Some(c) => return Err(src.error(
                    c.span(),
                    "subject.country must be a two-letter upper-case ISO 3166 code, e.g. \"DE\"",
                )),
                None => None,
            };
        let subject = SubjectTemplate {
            common_name: template(&raw.subject.common_name, "subject.common_name")?,
            organizational_unit: optional(
                &raw.subject.organizational_unit,
                "subject.organizational_unit",
            )?,
            organization: optional(&raw.subject.organization, "subject.organization")?,
            country,
        };

        let default_eku = match kind {
            PolicyKind::OcspResponder => vec!["ocsp-signing".to_owned()],
            PolicyKind::TlsServer => vec!["server-auth".to_owned()],
            _ => vec!["client-auth".to_owned()],
        };
        let (eku_names, eku_span) = match &raw.extended_key_usage {
            Some(list) => (list.get_ref().clone(), list.span()),
            None => (default_eku, 0..0),
        };
        let mut extended_key_usage = Vec::new();
        for name in &eku_names {
            let eku = ExtendedKeyUsage::NAMES.iter().find(|(n, _)| n == name).map(|(_, e)| *e).ok_or_else(|| {
                src.error(eku_span.clone(), format!("unknown extended_key_usage \"{name}\": use client-auth, email-protection, ocsp-signing or server-auth"))
            })?;
            extended_key_usage.push(eku);
        }
        let ocsp_only = extended_key_usage == [ExtendedKeyUsage::OcspSigning];
        if (kind == PolicyKind::OcspResponder) != ocsp_only {
            return Err(src.error(eku_span, "extended_key_usage = [\"ocsp-signing\"] is required for kind = \"ocsp-responder\" and allowed nowhere else"));
        }
        let server_auth = extended_key_usage.contains(&ExtendedKeyUsage::ServerAuth);
        if (kind == PolicyKind::TlsServer) != server_auth {
            return Err(src.error(eku_span, "extended_key_usage must include \"server-auth\" for kind = \"tls-server\", and may include it nowhere else"));
        }
        let api_role = match &raw.api_role {
            None => None,
            Some(r) if !matches!(kind, PolicyKind::Pkcs12 | PolicyKind::Csr) => {
                return Err(src.error(r.span(), "api_role applies only to kind = \"pkcs12\" or \"csr\" policies (client certificates)"));
            }
            Some(r) => match Role::parse(r.get_ref()) {
                Ok(Role::Admin) => return Err(src.error(r.span(), "api_role = \"admin\" is not allowed: a certificate cannot manage tokens; use renewer, operator or auditor")),
                Ok(role) if extended_key_usage.contains(&ExtendedKeyUsage::ClientAuth) => Some(role),
                Ok(_) => return Err(src.error(r.span(), "api_role needs extended_key_usage to include \"client-auth\"")),
                Err(_) => return Err(src.error(r.span(), format!("unknown api_role \"{}\": use renewer, operator or auditor", r.get_ref().escape_debug()))),
            },
        };
        let api_tenant = match &raw.api_tenant {
            None => None,
            Some(t) if api_role.is_none() => {
                return Err(src.error(t.span(), "api_tenant needs api_role"));
            }
            Some(t) => Some(template(t, "api_tenant")?),
        };
        let delivery = match &raw.delivery {
            None => Delivery::Direct,
            Some(d) if kind != PolicyKind::Pkcs12 => {
                return Err(src.error(d.span(), "delivery applies only to kind = \"pkcs12\" policies (the CA holds a bundle only when it generated the key)"));
            }
            Some(d) => Delivery::parse(d.get_ref()).ok_or_else(|| {
                src.error(d.span(), format!("unknown delivery \"{}\": use \"direct\" (bundle in the answer) or \"pickup\" (one-time download by code)", d.get_ref().escape_debug()))
            })?,
        };
        if let Some(max) = &raw.max_active_per_admin {
            // The store enforces one active certificate per (tenant, admin, policy)
            // with a unique index; more would need a different constraint.
            if *max.get_ref() != 1 {
                return Err(src.error(max.span(), "max_active_per_admin must be 1 (one active certificate per admin and policy; reissue replaces it)"));
            }
        }

        let pkcs12 = match (kind, raw.pkcs12) {
            (PolicyKind::Pkcs12, raw_p12) => Some(Self::pkcs12_settings(src, raw_p12)?),
            (_, Some(p)) => {
                let span = p.profile.as_ref().map(|s| s.span()).unwrap_or_default();
                return Err(src.error(
                    span,
                    "pkcs12.* settings apply only to kind = \"pkcs12\" policies",
                ));
            }
            (_, None) => None,
        };
        Ok(Policy {
            name: name.clone(),
            description: raw.description,
            kind,
            keys,
            validity,
            subject,
            extended_key_usage,
            pkcs12,
            api_role,
            api_tenant,
            delivery,
        })
    }

    fn pkcs12_settings(
        src: &Source<'_>,
        raw: Option<RawPkcs12>,
    ) -> std::result::Result<Pkcs12Settings, String> {
        let raw = raw.unwrap_or(RawPkcs12 {
            profile: None,
            password_length: None,
            friendly_name: None,
            iterations: None,
            min_password_length: None,
        });
        let profile = match &raw.profile {
            None => Pkcs12Profile::Modern,
            Some(p) => match p.get_ref().as_str() {
                "modern" => Pkcs12Profile::Modern,
                "legacy" => Pkcs12Profile::Legacy,
                other => {
                    return Err(src.error(
                        p.span(),
                        format!("unknown pkcs12.profile \"{other}\": use modern or legacy"),
                    ))
                }
            },
        };
        let password_length = match &raw.password_length {
            None => 20,
            Some(l) if (12..=128).contains(l.get_ref()) => *l.get_ref() as usize,
            Some(l) => {
                return Err(src.error(
                    l.span(),
                    "pkcs12.password_length must be between 12 and 128",
                ))
            }
        };
        let iterations = match &raw.iterations {
            None => 2048,
            Some(i) if (1000..=1_000_000).contains(i.get_ref()) => *i.get_ref() as u32,
            Some(i) => {
                return Err(src.error(
                    i.span(),
                    "pkcs12.iterations must be between 1000 and 1000000",
                ))
            }
        };
        // A caller-chosen password meets a PBKDF2 of a few thousand
        // iterations: at 8 characters that is cheap to search offline.
        let min_password_length = match &raw.min_password_length {
            None => 12,
            Some(l) if (12..=128).contains(l.get_ref()) => *l.get_ref() as usize,
            Some(l) => {
                return Err(src.error(
                    l.span(),
                    "pkcs12.min_password_length must be between 12 and 128",
                ))
            }
        };
        let friendly_name = match &raw.friendly_name {
            None => Template("{admin} ({tenant})".into()),
            Some(f) => Template::parse(f.get_ref())
                .map_err(|e| src.error(f.span(), format!("pkcs12.friendly_name: {e}")))?,
        };
        Ok(Pkcs12Settings {
            profile,
            password_length,
            friendly_name,
            iterations,
            min_password_length,
        })
    }

    /// The key type generated for this policy's certificates.
    pub fn generated_key(&self) -> KeyAlgorithm {
        self.keys[0]
    }
}

/// The loaded set of policies, by name.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_name: BTreeMap<String, Policy>,
    /// Where they came from, for messages.
    pub source: String,
}

impl Policies {
    /// The built-in copies of the shipped profiles.
    pub fn shipped() -> Policies {
        let mut by_name = BTreeMap::new();
        for (file, text) in SHIPPED {
            let policy = Policy::parse(file, text).expect("shipped policies are valid (tested)");
            by_name.insert(policy.name.clone(), policy);
        }
        Policies {
            by_name,
            source: "built-in policies".into(),
        }
    }

    /// Loads every `*.toml` in `dir`. All problems are reported together, one per line.
    pub fn load_dir(dir: &Path) -> Result<Policies> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::Policy(format!(
                "cannot read policies directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut by_name = BTreeMap::new();
        let mut problems = Vec::new();
        for path in files {
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            match Policy::parse(&shown, &text) {
                Ok(p) => {
                    by_name.insert(p.name.clone(), p);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Policy(problems.join("\n")));
        }
        if by_name.is_empty() {
            return Err(Error::Policy(format!(
                "no policy files (*.toml) in {}",
                dir.display()
            )));
        }
        Ok(Policies {
            by_name,
            source: dir.display().to_string(),
        })
    }

    /// Looks a policy up by name.
    pub fn get(&self, name: &str) -> Result<&Policy> {
        self.by_name.get(name).ok_or_else(|| {
            Error::Policy(format!(
                "unknown policy \"{}\": known policies are {} (from {})",
                name.chars().take(80).collect::<String>().escape_debug(),
                self.names().join(", "),
                self.source
            ))
        })
    }

    /// All names.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// All policies.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_name.values()
    }

    /// The responder profile, if one is loaded.
    pub fn ocsp_responder(&self) -> Option<&Policy> {
        self.iter().find(|p| p.kind == PolicyKind::OcspResponder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policies_are_valid() {
        let p = Policies::shipped();
        assert_eq!(
            p.names(),
            [
                "automation-csr",
                "automation-renewer",
                "ocsp-responder",
                "portal-admin",
                "portal-admin-legacy",
                "tls-server"
            ]
        );
        let renewer = p.get("automation-renewer").unwrap();
        assert_eq!(renewer.api_role, Some(Role::Renewer));
        assert_eq!(renewer.kind, PolicyKind::Csr);
        let server = p.get("tls-server").unwrap();
        assert_eq!(server.kind, PolicyKind::TlsServer);
        assert_eq!(server.extended_key_usage, [ExtendedKeyUsage::ServerAuth]);
        assert!(server.api_role.is_none());
        let legacy = p.get("portal-admin-legacy").unwrap();
        assert_eq!(legacy.generated_key(), KeyAlgorithm::Rsa2048);
        assert_eq!(
            legacy.pkcs12.as_ref().unwrap().profile,
            Pkcs12Profile::Legacy
        );
        assert_eq!(p.get("automation-csr").unwrap().keys.len(), 5);
    }

    fn err(text: &str) -> String {
        Policy::parse("p.toml", text).unwrap_err().to_string()
    }

    const BASE: &str = "name = \"p\"\nkey = \"ecdsa-p256\"\nvalidity = \"30d\"\nsubject.common_name = \"{admin}\"\n";

    #[test]
    fn bad_files_name_file_line_and_fix() {
        assert!(Policy::parse("p.toml", BASE).is_ok());
        let e = err(&format!("{BASE}colour = \"red\"\n"));
        assert!(e.starts_with("p.toml:5:") && e.contains("colour"), "{e}");
        let e = err(&BASE.replace("30d", "30 days"));
        assert!(e.starts_with("p.toml:3:") && e.contains("397d"), "{e}");
        let e = err(&BASE.replace("ecdsa-p256", "dsa-1024"));
        assert!(e.starts_with("p.toml:2:") && e.contains("rsa-2048"), "{e}");
        let e = err(&BASE.replace("{admin}", "{user}"));
        assert!(
            e.starts_with("p.toml:4:") && e.contains("{tenant}, {admin}"),
            "{e}"
        );
        let e = err(&format!("{BASE}pkcs12.profile = \"rc2\"\n"));
        assert!(
            e.starts_with("p.toml:5:") && e.contains("modern or legacy"),
            "{e}"
        );
        let e = err(&format!("{BASE}max_active_per_admin = 3\n"));
        assert!(e.contains("must be 1"), "{e}");
        let e = err("name = \"p\"\n");
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn api_roles_are_checked() {
        let p = Policy::parse(
            "p.toml",
            &format!("{BASE}api_role = \"renewer\"\napi_tenant = \"{{tenant}}\"\n"),
        )
        .unwrap();
        assert_eq!(p.api_role, Some(Role::Renewer));
        let e = err(&format!("{BASE}api_role = \"admin\"\n"));
        assert!(
            e.starts_with("p.toml:5:") && e.contains("not allowed"),
            "{e}"
        );
        let e = err(&format!("{BASE}api_role = \"root\"\n"));
        assert!(e.contains("renewer, operator or auditor"), "{e}");
        let e = err(&format!("{BASE}api_tenant = \"{{tenant}}\"\n"));
        assert!(e.contains("api_tenant needs api_role"), "{e}");
        let e = err(&format!(
            "{BASE}kind = \"tls-server\"\napi_role = \"renewer\"\n"
        ));
        assert!(e.contains("api_role applies only"), "{e}");
        let e = err(&format!("{BASE}extended_key_usage = [\"server-auth\"]\n"));
        assert!(e.contains("tls-server"), "{e}");
    }

    #[test]
    fn delivery_defaults_to_direct_and_is_checked() {
        assert_eq!(
            Policy::parse("p.toml", BASE).unwrap().delivery,
            Delivery::Direct
        );
        let p = Policy::parse("p.toml", &format!("{BASE}delivery = \"pickup\"\n")).unwrap();
        assert_eq!(p.delivery, Delivery::Pickup);
        let e = err(&format!("{BASE}delivery = \"mail\"\n"));
        assert!(
            e.starts_with("p.toml:5:") && e.contains("\"pickup\""),
            "{e}"
        );
        let e = err(&format!("{BASE}kind = \"csr\"\ndelivery = \"pickup\"\n"));
        assert!(e.contains("delivery applies only"), "{e}");
    }

    #[test]
    fn templates_render() {
        let t = Template::parse("{admin} ({tenant})").unwrap();
        let (tenant, admin) = (
            TenantId::parse("acme").unwrap(),
            AdminId::parse("alice").unwrap(),
        );
        assert_eq!(t.render(&tenant, &admin), "alice (acme)");
    }
}
