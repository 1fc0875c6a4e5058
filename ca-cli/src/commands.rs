//! One function per subcommand; each calls ca-core and prints the result.

use std::path::Path;

use ca_core::{
    fsutil, now, Ca, CertificateView, Config, Error, InitRequest, Issuance, IssueRequest,
    ListFilter, ListView, Policies, Result, RevocationReason, Serial,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::cli::{
    AuditCommand, Cli, Command, IssueArgs, OcspSignerCommand, PolicyCommand, TokenCommand,
};

pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) json: bool,
    pub(crate) passphrase: Option<Zeroizing<Vec<u8>>>,
    /// The token user PIN (`key.source = "pkcs11"`).
    pub(crate) pin: Option<Zeroizing<String>>,
    pub(crate) actor: String,
    /// The configuration file given (`--config`), archived by `backup`.
    pub(crate) config_file: Option<std::path::PathBuf>,
}

impl Context {
    pub(crate) fn print(&self, value: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    pub(crate) async fn open(&self, need_key: bool) -> Result<Ca> {
        if need_key {
            match self.config.token() {
                Some(token) if self.pin.is_none() => {
                    return Err(Error::Key(format!(
                        "this command needs the CA key in token \"{}\": set CA_PKCS11_PIN or key.pin_file",
                        token.token_label
                    )))
                }
                None if self.passphrase.is_none() => return Err(Error::Key(
                    "this command needs the CA key: set CA_KEY_PASSPHRASE or pass --passphrase-file"
                        .into(),
                )),
                _ => {}
            }
        }
        let secrets = ca_core::KeySecrets {
            passphrase: self.passphrase.clone(),
            pin: self.pin.clone(),
        };
        Ca::open_with(&self.config, &secrets).await
    }
}

pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidInput(format!("cannot read {what} file {}: {e}", path.display()))
    })?;
    let text = Zeroizing::new(text);
    Ok(Zeroizing::new(
        text.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let config_file = cli.config.clone();
    let mut config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    let passphrase = match cli
        .passphrase_file
        .as_ref()
        .or(config.passphrase_file.as_ref())
    {
        Some(file) => Some(Zeroizing::new(
            read_secret_file(file, "passphrase")?.as_bytes().to_vec(),
        )),
        None => ca_core::take_secret_env("CA_KEY_PASSPHRASE")
            .map(|p| Zeroizing::new(p.as_bytes().to_vec())),
    };
    // Read or not, it leaves the environment: `crl pull --on-change` runs hooks.
    std::env::remove_var("CA_KEY_PASSPHRASE");
    let pin = ca_core::read_pin(&config)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let ctx = Context {
        config,
        json: cli.json,
        passphrase,
        pin,
        actor: format!("cli:{user}"),
        config_file,
    };
    match cli.command {
        Command::Init(args) if args.issuing => crate::hierarchy::init_issuing(&ctx, args).await,
        Command::Init(args) => init(&ctx, args).await,
        Command::Root(command) => crate::hierarchy::root(&ctx, command).await,
        Command::Ca(command) => crate::hierarchy::ca(&ctx, command).await,
        Command::Backup { out } => crate::hierarchy::backup(&ctx, &out).await,
        Command::Restore {
            from,
            last_crl,
            roll_forward,
        } => crate::hierarchy::restore(&ctx, &from, &last_crl, roll_forward).await,
        Command::Issue(args) => issue(&ctx, args, None).await,
        Command::Reissue(args) => {
            let reason = RevocationReason::parse(&args.reason)?;
            issue(&ctx, args.issue, Some(reason)).await
        }
        Command::Revoke(args) => revoke(&ctx, args).await,
        Command::SignCsr(args) => sign_csr(&ctx, args).await,
        Command::List(args) => list(&ctx, args).await,
        Command::Show(args) => show(&ctx, args).await,
        Command::Crl(args) => crl(&ctx, args).await,
        Command::CaCert(args) => ca_cert(&ctx, args).await,
        Command::Token(command) => token(&ctx, command).await,
        Command::ServerCert(args) => server_cert(&ctx, args).await,
        Command::OcspSigner(command) => ocsp_signer(&ctx, command).await,
        Command::Policy(PolicyCommand::Check { dir }) => policy_check(&ctx, dir.as_deref()),
        Command::Audit(AuditCommand::List { since, limit }) => audit_list(&ctx, since, limit).await,
        Command::Audit(AuditCommand::Verify) => audit_verify(&ctx).await,
        Command::Pickup(command) => crate::delivery::pickup(&ctx, command).await,
        Command::BulkIssue(args) => crate::delivery::bulk_issue(&ctx, args).await,
        Command::Completions { .. } => unreachable!("answered before the configuration is read"),
    }
}

async fn init(ctx: &Context, args: crate::cli::InitArgs) -> Result<()> {
    let passphrase = match (&ctx.passphrase, ctx.config.needs_passphrase()) {
        (Some(p), _) => p.clone(),
        (None, false) => Zeroizing::new(Vec::new()),
        (None, true) if ctx.config.token().is_some() => return Err(Error::Key(
            "init with ocsp.key_source = \"file\" needs a passphrase to encrypt the OCSP responder key: set CA_KEY_PASSPHRASE or pass --passphrase-file".into(),
        )),
        (None, true) => return Err(Error::Key(
            "init needs a passphrase to encrypt the CA key: set CA_KEY_PASSPHRASE or pass --passphrase-file".into(),
        )),
    };
    let request = InitRequest {
        subject: args.subject,
        key: ca_core::KeyAlgorithm::parse(&args.key)?,
        validity: args.validity.parse().map_err(Error::InvalidInput)?,
        base_url: args.base_url,
        passphrase,
        pin: ctx.pin.clone(),
    };
    let ca = Ca::init(&ctx.config, request, &ctx.actor).await?;
    let layout = ca_core::Layout::new(&ctx.config.data_dir);
    let cert = openssl_subject(&ca.ca_certificate().der().0);
    let key_line = match ctx.config.token() {
        Some(token) => format!(
            "in token \"{}\" (not extractable; which key: {})",
            token.token_label,
            layout.token_key().display()
        ),
        None => format!("{} (encrypted)", layout.ca_key().display()),
    };
    ctx.print(
        json!({
            "data_dir": layout.dir(),
            "ca_cert": layout.ca_cert(),
            "key_source": if ctx.config.token().is_some() { "pkcs11" } else { "file" },
            "subject": cert,
            "base_url": ca.endpoints().base_url,
            "policies": ca.policies().names(),
        }),
        || {
            format!(
                "created CA \"{cert}\" in {}\n  certificate: {}\n  key:         {key_line}\n  base URL:    {}\n  policies:    {}",
                layout.dir().display(),
                layout.ca_cert().display(),
                ca.endpoints().base_url,
                ca.policies().names().join(", ")
            )
        },
    );
    Ok(())
}

fn openssl_subject(der: &[u8]) -> String {
    ca_core::subject_line(der)
}

async fn issue(ctx: &Context, args: IssueArgs, reissue: Option<RevocationReason>) -> Result<()> {
    let password = args
        .password_file
        .as_deref()
        .map(|f| read_secret_file(f, "password"))
        .transpose()?;
    let request = IssueRequest {
        tenant: args.tenant,
        admin: args.admin,
        policy: args.policy,
        password,
    };
    if let Some(email) = &args.email {
        ca_core::check_email(email)?;
    }
    if let Some(out) = args.out.as_deref().filter(|out| out.is_dir()) {
        return Err(Error::InvalidInput(format!(
            "--out {} is a directory: name the .p12 file to write",
            out.display()
        )));
    }
    let ca = ctx.open(true).await?;
    let prepared = match reissue {
        None => ca.prepare_issue(&request).await?,
        // The CLI is the CA operator: a reissue may also issue a first certificate.
        Some(reason) => {
            ca.prepare_reissue(&request, reason, ca_core::ReissueMode::ReplaceOrIssue)
                .await?
        }
    };
    // --out or --pickup, else the policy's `delivery`.
    let out = match args.out {
        Some(out) => out,
        None if args.pickup || ca.default_delivery(&prepared) == ca_core::Delivery::Pickup => {
            return crate::delivery::commit_pickup(ctx, &ca, prepared, args.email, reissue.is_some())
                .await;
        }
        None if args.email.is_some() => return Err(Error::InvalidInput(format!(
            "--email goes with pickup delivery (the link goes by mail), and policy {} delivers directly: add --pickup",
            prepared.record().policy
        ))),
        None => return Err(Error::InvalidInput(format!(
            "give --out FILE.p12 (write the bundle) or --pickup (leave it for a one-time download); policy {} delivers directly",
            prepared.record().policy
        ))),
    };
    let bundle = prepared
        .bundle
        .as_ref()
        .ok_or_else(|| Error::Crypto("no bundle was built".into()))?;
    // The bundle is staged under a temporary name and only moved to --out once
    // its record is committed; if the commit fails, it is removed.
    let staged = fsutil::StagedFile::write(&out, &bundle.0, true)?;
    let issuance = ca.commit(prepared, &ctx.actor).await?;
    staged.commit()?;
    let crl_number = if issuance.revoked.is_empty() {
        None
    } else {
        // The replaced certificate may come from a retired issuer: every
        // stale CRL is republished, and the active issuer's number shown.
        ca.publish_stale_crls(&ctx.actor).await?;
        ca.crl_status().await.ok().map(|s| s.published_number)
    };
    print_issuance(ctx, &issuance, &out, reissue.is_some(), crl_number);
    Ok(())
}

fn print_issuance(
    ctx: &Context,
    issuance: &Issuance,
    out: &Path,
    reissue: bool,
    crl_number: Option<u64>,
) {
    let view = CertificateView::new(&issuance.record, now());
    let password = issuance
        .password
        .as_ref()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let mut value = serde_json::to_value(&view).expect("serialisable");
    value["password"] = json!(password);
    value["out"] = json!(out);
    if reissue {
        value["revoked"] = json!(issuance
            .revoked
            .iter()
            .map(Serial::to_hex)
            .collect::<Vec<_>>());
    }
    ctx.print(value, || {
        let mut text = format!(
            "{} certificate for {}/{} under policy {}\n  serial:    {}\n  not after: {}\n  bundle:    {}\n  password:  {}\n  (the password is shown only this once: send it to the admin by a separate channel)",
            if reissue { "reissued" } else { "issued" },
            view.tenant,
            view.admin,
            view.policy,
            view.serial,
            view.not_after,
            out.display(),
            password
        );
        if reissue {
            let revoked: Vec<_> = issuance.revoked.iter().map(Serial::to_hex).collect();
            text.push_str(&format!(
                "\n  revoked:   {}",
                if revoked.is_empty() { "none (no active certificate)".to_owned() } else { revoked.join(", ") }
            ));
            if let Some(n) = crl_number {
                text.push_str(&format!("\n  CRL {n} published"));
            }
        }
        text
    });
}

async fn revoke(ctx: &Context, args: crate::cli::RevokeArgs) -> Result<()> {
    let serial = Serial::parse(&args.serial)?;
    let reason = RevocationReason::parse(&args.reason)?;
    let invalidity_date = args
        .invalidity_date
        .as_deref()
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|_| {
                Error::InvalidInput(format!("invalid --invalidity-date \"{t}\": use RFC 3339, e.g. 2026-11-25T08:00:00Z"))
            })
        })
        .transpose()?;
    let ca = ctx.open(false).await?;
    let record = ca
        .revoke(&serial, reason, invalidity_date, &ctx.actor)
        .await?;
    // The CRL to republish is the one of the certificate's own issuer.
    let crl = match ca.issuer_by_number(record.issuer) {
        Some(issuer) if issuer.can_sign() => {
            Some(ca.publish_crl_for(record.issuer, &ctx.actor).await?)
        }
        _ => None,
    };
    let mut value =
        serde_json::to_value(CertificateView::new(&record, now())).expect("serialisable");
    value["crl_number"] = json!(crl.as_ref().map(|c| c.number));
    ctx.print(value, || {
        let crl_line = match &crl {
            Some(c) => format!("CRL {} published", c.number),
            None => {
                "CRL not republished (no CA key given): run `ca-cli crl`, or let ca-server do it"
                    .into()
            }
        };
        format!(
            "revoked {serial} ({}/{}, reason {reason})\n  {crl_line}",
            record.tenant, record.admin
        )
    });
    Ok(())
}

async fn sign_csr(ctx: &Context, args: crate::cli::SignCsrArgs) -> Result<()> {
    let csr = std::fs::read(&args.csr).map_err(|e| {
        Error::InvalidInput(format!("cannot read CSR file {}: {e}", args.csr.display()))
    })?;
    let ca = ctx.open(true).await?;
    let prepared = ca
        .prepare_sign_csr(&args.tenant, &args.admin, &args.policy, &csr)
        .await?;
    let pem = ca_core::pem_encode("CERTIFICATE", &prepared.record().der);
    let staged = fsutil::StagedFile::write(&args.out, pem.as_bytes(), false)?;
    let issuance = ca.commit(prepared, &ctx.actor).await?;
    staged.commit()?;
    let view = CertificateView::new(&issuance.record, now());
    let mut value = serde_json::to_value(&view).expect("serialisable");
    value["out"] = json!(args.out);
    ctx.print(value, || {
        format!(
            "signed CSR for {}/{} under policy {}\n  serial:    {}\n  not after: {}\n  written:   {}",
            view.tenant,
            view.admin,
            view.policy,
            view.serial,
            view.not_after,
            args.out.display()
        )
    });
    Ok(())
}

async fn list(ctx: &Context, args: crate::cli::ListArgs) -> Result<()> {
    if !(1..=1000).contains(&args.limit) {
        return Err(Error::InvalidInput(
            "--limit must be between 1 and 1000".into(),
        ));
    }
    let filter = ListFilter {
        tenant: args
            .tenant
            .as_deref()
            .map(ca_core::TenantId::parse)
            .transpose()?
            .map(|t| t.to_string()),
        admin: args
            .admin
            .as_deref()
            .map(ca_core::AdminId::parse)
            .transpose()?
            .map(|a| a.to_string()),
        policy: args.policy,
        status: args
            .status
            .as_deref()
            .map(ca_core::CertificateStatus::parse)
            .transpose()?,
        expiring_within_secs: args
            .expiring_within
            .as_deref()
            .map(|d| {
                d.parse::<ca_core::Duration>()
                    .map(|d| d.as_secs())
                    .map_err(Error::InvalidInput)
            })
            .transpose()?,
        limit: args.limit,
        cursor: args.cursor.as_deref().map(Serial::parse).transpose()?,
    };
    let ca = ctx.open(false).await?;
    let records = ca.list(&filter).await?;
    let view = ListView::new(&records, filter.limit, now());
    ctx.print(serde_json::to_value(&view).expect("serialisable"), || {
        let mut text = format!(
            "{:<32}  {:<8}  {:<20}  {:<20}  {:<20}  TENANT/ADMIN",
            "SERIAL", "STATUS", "POLICY", "NOT AFTER", "REVOKED"
        );
        for c in &view.items {
            text.push_str(&format!(
                "\n{:<32}  {:<8}  {:<20}  {:<20}  {:<20}  {}/{}",
                c.serial,
                c.status,
                c.policy,
                c.not_after,
                c.revoked_at.as_deref().unwrap_or("-"),
                c.tenant,
                c.admin
            ));
        }
        if let Some(cursor) = &view.next_cursor {
            text.push_str(&format!("\n(more: --cursor {cursor})"));
        }
        text
    });
    Ok(())
}

async fn show(ctx: &Context, args: crate::cli::ShowArgs) -> Result<()> {
    let serial = Serial::parse(&args.serial)?;
    let ca = ctx.open(false).await?;
    let record = ca.certificate(&serial).await?;
    let view = CertificateView::new(&record, now());
    let pem = ca_core::pem_encode("CERTIFICATE", &record.der);
    let mut value = serde_json::to_value(&view).expect("serialisable");
    if args.pem {
        value["pem"] = json!(pem);
    }
    ctx.print(value, || {
        let mut text = format!(
            "serial:     {}\ntenant:     {}\nadmin:      {}\npolicy:     {}\nsubject:    {}\nstatus:     {}\nnot before: {}\nnot after:  {}",
            view.serial,
            view.tenant,
            view.admin,
            view.policy,
            openssl_subject(&record.der),
            view.status,
            view.not_before,
            view.not_after
        );
        if let Some(at) = &view.revoked_at {
            text.push_str(&format!("\nrevoked at: {at}\nreason:     {}", view.reason.unwrap_or("unspecified")));
        }
        if args.pem {
            text.push('\n');
            text.push_str(pem.trim_end());
        }
        text
    });
    Ok(())
}

async fn crl(ctx: &Context, args: crate::cli::CrlArgs) -> Result<()> {
    if let Some(crate::cli::CrlAction::Pull(pull)) = args.action {
        return crate::pull::run(ctx.json, pull).await;
    }
    let ca = ctx.open(true).await?;
    let crl = ca.publish_crl(&ctx.actor).await?;
    // Retired issuers (after a rollover) keep publishing their own CRLs.
    for issuer in ca.issuers().iter().skip(1) {
        if issuer.can_sign() {
            ca.publish_crl_for(issuer.number(), &ctx.actor).await?;
        }
    }
    if let Some(out) = &args.out {
        if args.pem {
            fsutil::write_file(out, ca_core::pem_encode("X509 CRL", &crl.der).as_bytes())?;
        } else {
            fsutil::write_file(out, &crl.der)?;
        }
    }
    let entries = crl.entries;
    ctx.print(
        json!({
            "crl_number": crl.number,
            "this_update": ca_core::rfc3339(crl.this_update),
            "next_update": ca_core::rfc3339(crl.next_update),
            "revoked": entries,
            "out": args.out,
        }),
        || {
            let mut text = format!(
                "published CRL {} with {entries} revoked certificate(s); next update {}",
                crl.number,
                ca_core::rfc3339(crl.next_update)
            );
            if let Some(out) = &args.out {
                text.push_str(&format!("\n  written: {}", out.display()));
            }
            text
        },
    );
    Ok(())
}

async fn ca_cert(ctx: &Context, args: crate::cli::CaCertArgs) -> Result<()> {
    let ca = ctx.open(false).await?;
    let der = ca.ca_certificate().der();
    let bytes = if args.der {
        der.0.clone()
    } else {
        der.to_pem().into_bytes()
    };
    match &args.out {
        Some(out) => {
            fsutil::write_file(out, &bytes)?;
            ctx.print(
                json!({ "out": out, "subject": openssl_subject(&der.0) }),
                || format!("wrote {}", out.display()),
            );
        }
        None if args.der && !ctx.json => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes).map_err(|e| Error::Io {
                context: "cannot write",
                path: "stdout".into(),
                source: e,
            })?;
        }
        None => ctx.print(
            json!({ "pem": der.to_pem(), "subject": openssl_subject(&der.0) }),
            || der.to_pem().trim_end().to_owned(),
        ),
    }
    Ok(())
}

fn policy_check(ctx: &Context, dir: Option<&Path>) -> Result<()> {
    let layout = ca_core::Layout::new(&ctx.config.data_dir);
    let policies = match dir
        .map(Path::to_path_buf)
        .or_else(|| ctx.config.policies_dir.clone())
    {
        Some(d) => Policies::load_dir(&d)?,
        None if layout.policies().is_dir() => Policies::load_dir(&layout.policies())?,
        None => Policies::shipped(),
    };
    let items: Vec<Value> = policies
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": format!("{:?}", p.kind).to_lowercase(),
                "key": p.keys.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "validity": p.validity.to_string(),
                "description": p.description,
            })
        })
        .collect();
    ctx.print(
        json!({ "source": policies.source, "policies": items }),
        || {
            let mut text = format!(
                "{} policies OK ({})",
                policies.names().len(),
                policies.source
            );
            for p in policies.iter() {
                text.push_str(&format!(
                    "\n  {:<22} {:<15} {:<12} {}",
                    p.name,
                    format!("{:?}", p.kind).to_lowercase(),
                    p.validity.to_string(),
                    p.keys
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            text
        },
    );
    Ok(())
}

async fn audit_list(ctx: &Context, since: u64, limit: u32) -> Result<()> {
    let ca = ctx.open(false).await?;
    let events = ca.audit_events(since, limit.clamp(1, 100_000)).await?;
    ctx.print(json!({ "items": events }), || {
        events
            .iter()
            .map(|e| {
                format!(
                    "{:>6}  {}  {:<14} {:<10} {:<30} {} {}",
                    e.seq,
                    ca_core::rfc3339(e.at),
                    e.actor,
                    e.action,
                    e.subject,
                    e.serials.join(","),
                    e.details
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

async fn audit_verify(ctx: &Context) -> Result<()> {
    let ca = ctx.open(false).await?;
    let report = ca.verify_audit().await?;
    ctx.print(
        json!({ "ok": true, "events": report.events, "head": report.head }),
        || {
            format!(
                "audit chain OK: {} events, head {}",
                report.events, report.head
            )
        },
    );
    Ok(())
}

async fn token(ctx: &Context, command: TokenCommand) -> Result<()> {
    let ca = ctx.open(false).await?;
    match command {
        TokenCommand::Create {
            role,
            tenant,
            name,
            expires_in,
        } => {
            let role = ca_core::Role::parse(&role)?;
            let expires_in = expires_in
                .as_deref()
                .map(|d| {
                    d.parse::<ca_core::Duration>()
                        .map_err(|e| Error::InvalidInput(format!("--expires-in: {e}")))
                })
                .transpose()?;
            let created = ca
                .create_token_expiring(role, tenant.as_deref(), &name, expires_in, &ctx.actor)
                .await?;
            let r = &created.record;
            let expires_at = r.expires_at.map(ca_core::rfc3339);
            ctx.print(
                json!({ "id": r.id, "role": r.role.name(), "tenant": r.tenant, "name": r.name, "expires_at": expires_at, "token": created.token.as_str() }),
                || {
                    format!(
                        "created {} token {}{}{}\n  token: {}\n  (shown only this once: store it in your secret manager)",
                        r.role,
                        r.id,
                        r.tenant.as_deref().map(|t| format!(" for tenant {t}")).unwrap_or_default(),
                        expires_at.as_deref().map(|t| format!(", expires {t}")).unwrap_or_default(),
                        created.token.as_str()
                    )
                },
            );
        }
        TokenCommand::List => {
            let tokens = ca.tokens().await?;
            ctx.print(json!({ "items": tokens }), || {
                let mut text = format!(
                    "{:<16}  {:<8}  {:<12}  {:<20}  {:<20}  {:<20}  NAME",
                    "ID", "ROLE", "TENANT", "CREATED", "EXPIRES", "REVOKED"
                );
                for t in &tokens {
                    text.push_str(&format!(
                        "\n{:<16}  {:<8}  {:<12}  {:<20}  {:<20}  {:<20}  {}",
                        t.id,
                        t.role.name(),
                        t.tenant.as_deref().unwrap_or("*"),
                        t.created_at,
                        t.expires_at
                            .map(ca_core::rfc3339)
                            .as_deref()
                            .unwrap_or("never"),
                        t.revoked_at.as_deref().unwrap_or("-"),
                        t.name
                    ));
                }
                text
            });
        }
        TokenCommand::Revoke { id } => {
            ca.revoke_token(&id, &ctx.actor).await?;
            ctx.print(json!({ "id": id, "revoked": true }), || {
                format!("revoked token {id}")
            });
        }
    }
    Ok(())
}

async fn server_cert(ctx: &Context, args: crate::cli::ServerCertArgs) -> Result<()> {
    for out in [&args.out_cert, &args.out_key] {
        if out.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} is a directory: name the file to write",
                out.display()
            )));
        }
    }
    let request = ca_core::ServerCertRequest {
        dns: args.dns,
        ips: args.ip,
        policy: args.policy,
    };
    let ca = ctx.open(true).await?;
    let prepared = ca.prepare_server_certificate(&request).await?;
    // Both files are staged and moved into place only once the record is
    // committed; the key is written owner-only.
    let key = fsutil::StagedFile::write(&args.out_key, prepared.key_pem.as_bytes(), true)?;
    let cert = fsutil::StagedFile::write(&args.out_cert, prepared.chain_pem.as_bytes(), false)?;
    let issuance = ca.commit(prepared.issuance, &ctx.actor).await?;
    key.commit()?;
    cert.commit()?;
    if !issuance.revoked.is_empty() {
        ca.publish_stale_crls(&ctx.actor).await?;
    }
    let view = CertificateView::new(&issuance.record, now());
    let mut value = serde_json::to_value(&view).expect("serialisable");
    value["out_cert"] = json!(args.out_cert);
    value["out_key"] = json!(args.out_key);
    value["revoked"] = json!(issuance
        .revoked
        .iter()
        .map(Serial::to_hex)
        .collect::<Vec<_>>());
    ctx.print(value, || {
        let mut text = format!(
            "issued TLS server certificate for {}\n  serial:    {}\n  not after: {}\n  cert:      {} (tls.cert_file)\n  key:       {} (tls.key_file, mode 0600)",
            ca_core::subject_line(&issuance.record.der),
            view.serial,
            view.not_after,
            args.out_cert.display(),
            args.out_key.display()
        );
        for serial in &issuance.revoked {
            text.push_str(&format!("\n  replaced:  {serial} (revoked, superseded)"));
        }
        text
    });
    Ok(())
}

async fn ocsp_signer(ctx: &Context, command: OcspSignerCommand) -> Result<()> {
    let ca = ctx.open(true).await?;
    let responder = match command {
        OcspSignerCommand::Rotate => ca.rotate_ocsp_responder(&ctx.actor).await?,
        OcspSignerCommand::Show => ca
            .load_ocsp_responder()
            .await?
            .ok_or_else(|| Error::NotFound("no OCSP responder certificate yet: ca-server issues one at start, or run `ca-cli ocsp-signer rotate`".into()))?,
    };
    let der = responder.certificate_der();
    let serial = ca_core::certificate_serial_hex(der);
    ctx.print(
        json!({
            "serial": serial,
            "subject": ca_core::subject_line(der),
            "not_after": ca_core::rfc3339(responder.not_after()),
            "pem": ca_core::pem_encode("CERTIFICATE", der),
        }),
        || {
            format!(
                "OCSP responder certificate {serial} ({}), valid until {}",
                ca_core::subject_line(der),
                ca_core::rfc3339(responder.not_after())
            )
        },
    );
    Ok(())
}
