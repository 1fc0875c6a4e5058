//! The trust hierarchy's commands: `root …` (offline ceremonies on the root's
//! own directory), `init --issuing`, `ca import-cert`, `ca import-crl`,
//! `ca rollover`, `ca issuers`. Each calls ca-core and prints the result.

use std::path::{Path, PathBuf};

use ca_core::{
    fsutil, Ca, Error, IssuingRequest, KeyAlgorithm, Result, RevocationReason, RootCa, RootInit,
    RootSecret, Serial,
};
use clap::Subcommand;
use serde_json::json;
use zeroize::Zeroizing;

use crate::commands::Context;

#[derive(Debug, Subcommand)]
pub(crate) enum RootCommand {
    /// Create the root: its key (encrypted with the passphrase, or generated in
    /// the PKCS#11 token with key.source = "pkcs11") and self-signed certificate
    /// (written to DIR/root.pem). Refuses an existing root.
    ///
    /// Example: ca-cli root init --root-dir /media/root --subject "CN=Portal Root CA,O=Example Corp" --validity 20y
    Init {
        /// The root's own directory (keep it offline).
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// Subject of the root certificate.
        #[arg(long)]
        subject: String,
        /// Key type: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
        #[arg(long, default_value = "ecdsa-p384")]
        key: String,
        /// Root certificate lifetime.
        #[arg(long, default_value = "20y")]
        validity: String,
        /// Where gateways will fetch the root's CRL (written as CRL distribution
        /// point into the issuing CA certificates it signs), e.g. https://ca.example.com/root.crl.
        #[arg(long, value_name = "URL")]
        crl_url: Option<String>,
    },
    /// Sign an issuing CA's CSR (from `init --issuing` or `ca rollover`).
    ///
    /// Example: ca-cli root sign-ca --root-dir /media/root --csr issuing.csr --out issuing.pem --validity 5y
    SignCa {
        /// The root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// The issuing CA's CSR (PEM or DER).
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Where to write the issuing CA certificate (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Its lifetime (never beyond the root's).
        #[arg(long, default_value = "5y")]
        validity: String,
        /// basicConstraints pathLenConstraint (0: it issues end-entity certificates only).
        #[arg(long, default_value_t = 0)]
        path_len: u8,
    },
    /// Sign the root's next CRL (gateways that check the whole chain need it;
    /// give it to the issuing side with `ca import-crl`).
    ///
    /// Example: ca-cli root crl --root-dir /media/root --out root.crl --pem
    Crl {
        /// The root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// PEM instead of DER.
        #[arg(long)]
        pem: bool,
        /// Its validity (nextUpdate − thisUpdate): the next ceremony must come before.
        #[arg(long, default_value = "30d")]
        next_update: String,
    },
    /// Revoke an issuing CA the root signed (it goes on the next `root crl`).
    ///
    /// Example: ca-cli root revoke-ca --root-dir /media/root 5c1e… --reason ca-compromise
    RevokeCa {
        /// The root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// Serial of the issuing CA certificate (hex, as `root list` prints it).
        serial: String,
        /// Reason (ca-compromise, superseded, cessation-of-operation, …).
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Print (or write) the root certificate, PEM.
    Cert {
        /// The root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// Write it here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The issuing CAs the root signed.
    List {
        /// The root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Install the certificate the root signed for the pending issuing CA; it
    /// becomes the active issuer. Refused, naming why, unless it matches the
    /// pending key and chains to the root in --chain.
    ///
    /// Example: ca-cli ca import-cert issuing.pem --chain root.pem
    ImportCert {
        /// The issuing CA certificate (PEM).
        file: PathBuf,
        /// The root certificate (PEM; the chain's last certificate is the root).
        #[arg(long, value_name = "ROOT.pem")]
        chain: PathBuf,
    },
    /// Give the issuing side the root's latest CRL, served in /crls.pem.
    ///
    /// Example: ca-cli ca import-crl root.crl
    ImportCrl {
        /// The root's CRL (PEM or DER).
        file: PathBuf,
    },
    /// Start a rollover: a new issuing CA key and its CSR. The current issuer
    /// keeps issuing until `ca import-cert` installs the new certificate; then
    /// it only serves its CRL and OCSP until its last certificate expires.
    ///
    /// Example: ca-cli ca rollover --subject "CN=Portal Issuing CA 2,O=Example Corp" --csr-out new.csr
    Rollover {
        /// Subject of the new issuing CA.
        #[arg(long)]
        subject: String,
        /// Key type.
        #[arg(long, default_value = "ecdsa-p256")]
        key: String,
        /// Where to write the CSR for `root sign-ca`.
        #[arg(long, value_name = "FILE")]
        csr_out: PathBuf,
    },
    /// The issuers: active, retired (still serving CRL and OCSP), pending.
    Issuers,
}

fn root_secret<'a>(ctx: &'a Context) -> Result<RootSecret<'a>> {
    match (ctx.config.token(), &ctx.pin, &ctx.passphrase) {
        (Some(token), Some(pin), _) => Ok(RootSecret::Token(token, pin.as_str())),
        (Some(token), None, _) => Err(Error::Key(format!(
            "the root key is in token \"{}\": set CA_PKCS11_PIN or key.pin_file",
            token.token_label
        ))),
        (None, _, Some(passphrase)) => Ok(RootSecret::Passphrase(passphrase)),
        (None, _, None) => Err(Error::Key(
            "this needs the root key: set CA_KEY_PASSPHRASE or pass --passphrase-file".into(),
        )),
    }
}

fn duration(text: &str) -> Result<ca_core::Duration> {
    text.parse().map_err(Error::InvalidInput)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read {what} {}: {e}", path.display())))
}

pub(crate) async fn root(ctx: &Context, command: RootCommand) -> Result<()> {
    match command {
        RootCommand::Init {
            root_dir,
            subject,
            key,
            validity,
            crl_url,
        } => {
            let request = RootInit {
                subject,
                key: KeyAlgorithm::parse(&key)?,
                validity: duration(&validity)?,
                crl_url,
            };
            let root = RootCa::init(&root_dir, &request, root_secret(ctx)?)?;
            let subject = ca_core::subject_line(&root.certificate().der().0);
            let cert_path = root_dir.join("root.pem");
            ctx.print(
                json!({
                    "root_dir": root_dir,
                    "certificate": cert_path,
                    "subject": subject,
                    "not_after": ca_core::rfc3339(root.certificate().not_after()),
                }),
                || {
                    format!(
                        "created root \"{subject}\" in {}\n  certificate: {} (distribute it to gateways and devices as the trust anchor)",
                        root_dir.display(),
                        cert_path.display()
                    )
                },
            );
        }
        RootCommand::SignCa {
            root_dir,
            csr,
            out,
            validity,
            path_len,
        } => {
            let csr = read(&csr, "CSR")?;
            let mut root = RootCa::open(&root_dir, Some(root_secret(ctx)?))?;
            let der = root.sign_ca(&csr, duration(&validity)?, path_len)?;
            fsutil::write_file(&out, der.to_pem().as_bytes())?;
            let subject = ca_core::subject_line(&der.0);
            let serial = ca_core::certificate_serial_hex(&der.0);
            ctx.print(
                json!({ "serial": serial, "subject": subject, "out": out }),
                || {
                    format!(
                        "signed issuing CA \"{subject}\" (serial {serial})\n  written: {}\n  next, on the issuing side: ca-cli ca import-cert {} --chain root.pem",
                        out.display(),
                        out.display()
                    )
                },
            );
        }
        RootCommand::Crl {
            root_dir,
            out,
            pem,
            next_update,
        } => {
            let mut root = RootCa::open(&root_dir, Some(root_secret(ctx)?))?;
            let (number, der) = root.crl(duration(&next_update)?)?;
            match pem {
                true => fsutil::write_file(&out, der.to_pem().as_bytes())?,
                false => fsutil::write_file(&out, &der.0)?,
            }
            ctx.print(json!({ "crl_number": number, "out": out }), || {
                format!("root CRL {number} written to {}", out.display())
            });
        }
        RootCommand::RevokeCa {
            root_dir,
            serial,
            reason,
        } => {
            let (serial, reason) = (Serial::parse(&serial)?, RevocationReason::parse(&reason)?);
            let mut root = RootCa::open(&root_dir, None)?;
            let revoked = root.revoke_ca(&serial, reason)?;
            ctx.print(serde_json::to_value(&revoked).expect("serialisable"), || {
                format!(
                    "revoked issuing CA {} (\"{}\"): run `ca-cli root crl` and give the CRL to the gateways and `ca import-crl`",
                    revoked.serial, revoked.subject
                )
            });
        }
        RootCommand::Cert { root_dir, out } => {
            let root = RootCa::open(&root_dir, None)?;
            let pem = root.certificate().der().to_pem();
            match out {
                Some(out) => {
                    fsutil::write_file(&out, pem.as_bytes())?;
                    ctx.print(json!({ "out": out }), || format!("wrote {}", out.display()));
                }
                None => ctx.print(json!({ "pem": pem }), || pem.trim_end().to_owned()),
            }
        }
        RootCommand::List { root_dir } => {
            let root = RootCa::open(&root_dir, None)?;
            ctx.print(json!({ "items": root.signed() }), || {
                root.signed()
                    .iter()
                    .map(|s| {
                        format!(
                            "{}  {}  not after {}{}",
                            s.serial,
                            s.subject,
                            s.not_after,
                            s.revoked_at
                                .as_ref()
                                .map(|at| format!("  revoked {at}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

fn issuing_request(
    ctx: &Context,
    subject: String,
    key: &str,
    base_url: Option<String>,
) -> Result<IssuingRequest> {
    let passphrase = match (&ctx.passphrase, ctx.config.token()) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => Zeroizing::new(Vec::new()),
        (None, None) => {
            return Err(Error::Key(
                "this needs a passphrase to encrypt the issuing CA key: set CA_KEY_PASSPHRASE or pass --passphrase-file".into(),
            ))
        }
    };
    Ok(IssuingRequest {
        subject,
        key: KeyAlgorithm::parse(key)?,
        base_url,
        passphrase,
        pin: ctx.pin.clone(),
    })
}

/// `init --issuing`.
pub(crate) async fn init_issuing(ctx: &Context, args: crate::cli::InitArgs) -> Result<()> {
    let csr_out = args
        .csr_out
        .ok_or_else(|| Error::InvalidInput("init --issuing needs --csr-out FILE".into()))?;
    let request = issuing_request(ctx, args.subject, &args.key, Some(args.base_url))?;
    let pending = Ca::init_issuing(&ctx.config, request, &ctx.actor).await?;
    fsutil::write_file(&csr_out, pending.csr_pem.as_bytes())?;
    print_pending(ctx, &pending, &csr_out);
    Ok(())
}

fn print_pending(ctx: &Context, pending: &ca_core::PendingIssuer, csr_out: &Path) {
    ctx.print(
        json!({ "issuer": pending.id, "number": pending.number, "state": "pending", "csr_out": csr_out }),
        || {
            format!(
                "issuing CA {} (number {}) waits for its certificate\n  CSR: {}\n  next, at the root: ca-cli root sign-ca --root-dir ROOT --csr {} --out issuing.pem\n  then here:        ca-cli ca import-cert issuing.pem --chain root.pem",
                pending.id,
                pending.number,
                csr_out.display(),
                csr_out.display()
            )
        },
    );
}

pub(crate) async fn ca(ctx: &Context, command: CaCommand) -> Result<()> {
    match command {
        CaCommand::ImportCert { file, chain } => {
            let (certificate, chain) = (read(&file, "certificate")?, read(&chain, "chain")?);
            let secrets = ca_core::KeySecrets {
                passphrase: ctx.passphrase.clone(),
                pin: ctx.pin.clone(),
            };
            let imported = Ca::import_issuer_certificate(
                &ctx.config,
                &secrets,
                &certificate,
                &chain,
                &ctx.actor,
            )
            .await?;
            // With the key at hand, the new issuer's first CRL is published
            // at once (gateways fetching /crl/{id} find one before anything is issued).
            let crl_number = match ctx.open(false).await {
                Ok(ca) if ca.can_sign() => Some(ca.publish_crl(&ctx.actor).await?.number),
                _ => None,
            };
            ctx.print(
                json!({
                    "issuer": imported.id,
                    "number": imported.number,
                    "state": "active",
                    "retired": imported.retired,
                    "not_after": ca_core::rfc3339(imported.not_after),
                    "crl_number": crl_number,
                }),
                || {
                    let mut text = format!(
                        "issuer {} (number {}) is active; new certificates come from it (restart ca-server to load it)",
                        imported.id, imported.number
                    );
                    if let Some(old) = imported.retired {
                        text.push_str(&format!(
                            "\n  issuer number {old} is retired: its certificates stay valid, revocable, on its own CRL and answered by OCSP"
                        ));
                    }
                    text
                },
            );
        }
        CaCommand::ImportCrl { file } => {
            let crl = read(&file, "CRL")?;
            let ca = ctx.open(false).await?;
            let number = ca.import_root_crl(&crl, &ctx.actor).await?;
            ctx.print(json!({ "crl_number": number }), || {
                format!("root CRL {number} imported; served in /crls.pem")
            });
        }
        CaCommand::Rollover {
            subject,
            key,
            csr_out,
        } => {
            let request = issuing_request(ctx, subject, &key, None)?;
            let pending = Ca::rollover(&ctx.config, request, &ctx.actor).await?;
            fsutil::write_file(&csr_out, pending.csr_pem.as_bytes())?;
            print_pending(ctx, &pending, &csr_out);
        }
        CaCommand::Issuers => {
            let ca = ctx.open(false).await?;
            let items: Vec<_> = ca
                .issuers()
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id(),
                        "number": i.number(),
                        "state": i.state().name(),
                        "subject": ca_core::subject_line(&i.certificate().der().0),
                        "not_after": ca_core::rfc3339(i.certificate().not_after()),
                    })
                })
                .collect();
            ctx.print(json!({ "items": items }), || {
                items
                    .iter()
                    .map(|i| {
                        format!(
                            "{}  #{}  {}  {}  not after {}",
                            i["id"].as_str().unwrap_or_default(),
                            i["number"],
                            i["state"].as_str().unwrap_or_default(),
                            i["subject"].as_str().unwrap_or_default(),
                            i["not_after"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

/// `backup --out F`.
pub(crate) async fn backup(ctx: &Context, out: &Path) -> Result<()> {
    let report = ca_core::backup::backup(&ctx.config, out, ctx.config_file.as_deref()).await?;
    let m = &report.manifest;
    ctx.print(
        json!({
            "out": out,
            "store": m.store,
            "audit_seq": m.audit_seq,
            "crl_numbers": m.crl_numbers,
            "files": m.files.keys().collect::<Vec<_>>(),
            "skipped": report.skipped,
        }),
        || {
            let mut text = format!(
                "backup written to {} ({} files; audit chain verified up to event {})",
                out.display(),
                m.files.len(),
                m.audit_seq
            );
            if m.store == "postgres" {
                text.push_str("\n  the PostgreSQL database is not in it: run pg_dump now (after this backup) and keep the two together");
            }
            if !report.skipped.is_empty() {
                text.push_str(&format!("\n  left out: {}", report.skipped.join(", ")));
            }
            text
        },
    );
    Ok(())
}

/// `restore --from F [--last-crl F]… [--roll-forward]`.
pub(crate) async fn restore(
    ctx: &Context,
    from: &Path,
    last_crls: &[PathBuf],
    roll_forward: bool,
) -> Result<()> {
    let mut crls = Vec::new();
    for path in last_crls {
        let bytes = read(path, "CRL")?;
        // A PEM file may hold several CRLs (GET /crls.pem).
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("-----BEGIN X509 CRL-----") {
            for block in text.split_inclusive("-----END X509 CRL-----") {
                if let Some(start) = block.find("-----BEGIN X509 CRL-----") {
                    crls.push((path.clone(), block.as_bytes()[start..].to_vec()));
                }
            }
        } else {
            crls.push((path.clone(), bytes));
        }
    }
    let report =
        ca_core::backup::restore(&ctx.config, from, &crls, roll_forward, &ctx.actor).await?;
    ctx.print(
        json!({
            "data_dir": ctx.config.data_dir,
            "backup_created_at": report.manifest.created_at,
            "audit_events": report.audit_events,
            "kept_revocations": report.kept_revocations,
            "raised_crl_numbers": report.raised_crl_numbers,
        }),
        || {
            format!(
                "restored {} from a backup of {}; audit chain of {} events verified{}",
                ctx.config.data_dir.display(),
                report.manifest.created_at,
                report.audit_events,
                if report.kept_revocations > 0 || !report.raised_crl_numbers.is_empty() {
                    format!(
                        "; rolled forward: {} revocation(s) kept, CRL numbers raised {:?}",
                        report.kept_revocations, report.raised_crl_numbers
                    )
                } else {
                    String::new()
                }
            )
        },
    );
    Ok(())
}
