//! Delivery commands: issue/reissue `--pickup`, `pickup list|resend`,
//! `bulk-issue`, and `completions`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ca_core::{
    fsutil, now, Ca, CertificateStatus, CertificateView, Error, IssueRequest, ListFilter,
    PickupIssuance, PickupRecord, PickupRequest, PreparedIssuance, Result, Serial,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::cli::{BulkIssueArgs, Cli, PickupCommand};
use crate::commands::Context;

/// Prints completions for `shell` to stdout.
pub(crate) fn completions(shell: clap_complete::Shell) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "ca-cli", &mut std::io::stdout());
}

fn pickup_url(ca: &Ca, id: &str) -> String {
    format!("{}/pickup/{id}", ca.endpoints().base_url)
}

/// Mail is sent by a running ca-server (it picks up pending mail within
/// seconds); the CLI only marks it pending when `smtp.url` is configured.
fn mail_request(ctx: &Context, email: Option<String>) -> PickupRequest {
    PickupRequest {
        mail: ctx.config.smtp.is_some(),
        email,
    }
}

fn pickup_value(ca: &Ca, issuance: &PickupIssuance, reissue: bool, mail: bool) -> Value {
    let view = CertificateView::new(&issuance.record, now());
    let mut value = serde_json::to_value(&view).expect("serialisable");
    value["pickup"] = json!({
        "id": issuance.id,
        "url": pickup_url(ca, &issuance.id),
        "expires_at": ca_core::rfc3339(issuance.expires_at),
        "email": issuance.email,
        "mail": if mail && issuance.email.is_some() { "pending" } else { "none" },
    });
    value["code"] = json!(issuance.code.as_str());
    if reissue {
        value["revoked"] = json!(issuance
            .revoked
            .iter()
            .map(Serial::to_hex)
            .collect::<Vec<_>>());
    }
    value
}

fn pickup_text(ca: &Ca, issuance: &PickupIssuance, what: &str) -> String {
    let mut text = format!(
        "{what} certificate for {}/{} under policy {}\n  serial:    {}\n  not after: {}\n  pickup:    {}\n  expires:   {}\n  code:      {}\n  (give the code to the admin by phone or SMS, never by mail; it is shown only this once)",
        issuance.record.tenant,
        issuance.record.admin,
        issuance.record.policy,
        issuance.record.serial,
        ca_core::rfc3339(issuance.record.not_after),
        pickup_url(ca, &issuance.id),
        ca_core::rfc3339(issuance.expires_at),
        issuance.code.as_str(),
    );
    if let Some(email) = &issuance.email {
        text.push_str(&format!("\n  mail to:   {email}"));
    }
    if !issuance.revoked.is_empty() {
        let revoked: Vec<_> = issuance.revoked.iter().map(Serial::to_hex).collect();
        text.push_str(&format!("\n  revoked:   {}", revoked.join(", ")));
    }
    text
}

/// `issue`/`reissue --pickup`: commits with the bundle sealed for pickup.
pub(crate) async fn commit_pickup(
    ctx: &Context,
    ca: &Ca,
    prepared: PreparedIssuance,
    email: Option<String>,
    reissue: bool,
) -> Result<()> {
    let request = mail_request(ctx, email);
    let issuance = ca.commit_pickup(prepared, &request, &ctx.actor).await?;
    if !issuance.revoked.is_empty() {
        ca.publish_stale_crls(&ctx.actor).await?;
    }
    let what = if reissue { "reissued" } else { "issued" };
    ctx.print(pickup_value(ca, &issuance, reissue, request.mail), || {
        pickup_text(ca, &issuance, what)
    });
    Ok(())
}

fn record_value(ca: &Ca, r: &PickupRecord) -> Value {
    json!({
        "id": r.id,
        "url": pickup_url(ca, &r.id),
        "serial": r.serial,
        "tenant": r.tenant,
        "admin": r.admin,
        "policy": r.policy,
        "state": r.state_at(now()).name(),
        "email": r.email,
        "failures": r.failures,
        "created_at": ca_core::rfc3339(r.created_at),
        "expires_at": ca_core::rfc3339(r.expires_at),
        "closed_at": r.closed_at.map(ca_core::rfc3339),
        "mail": r.mail.name(),
        "mail_error": r.mail_error,
    })
}

/// `pickup list` and `pickup resend`.
pub(crate) async fn pickup(ctx: &Context, command: PickupCommand) -> Result<()> {
    match command {
        PickupCommand::List { tenant, all, limit } => {
            if !(1..=1000).contains(&limit) {
                return Err(Error::InvalidInput(
                    "--limit must be between 1 and 1000".into(),
                ));
            }
            let ca = ctx.open(false).await?;
            let records = ca.pickups(tenant.as_deref(), all, limit).await?;
            let items: Vec<Value> = records.iter().map(|r| record_value(&ca, r)).collect();
            ctx.print(json!({ "items": items }), || {
                if records.is_empty() {
                    return "nothing waits for pickup".into();
                }
                let mut text = format!(
                    "{:<20} {:<20} {:<9} {:<8} {:<20} {}",
                    "TENANT", "ADMIN", "STATE", "MAIL", "EXPIRES", "ID"
                );
                for r in &records {
                    text.push_str(&format!(
                        "\n{:<20} {:<20} {:<9} {:<8} {:<20} {}",
                        r.tenant,
                        r.admin,
                        r.state_at(now()).name(),
                        r.mail.name(),
                        ca_core::rfc3339(r.expires_at),
                        r.id
                    ));
                    if let Some(error) = &r.mail_error {
                        text.push_str(&format!("\n    mail failed: {error}"));
                    }
                }
                text
            });
            Ok(())
        }
        PickupCommand::Resend {
            tenant,
            admin,
            email,
        } => {
            if let Some(email) = &email {
                ca_core::check_email(email)?;
            }
            let ca = ctx.open(true).await?;
            let mail = ctx.config.smtp.is_some();
            let issuance = ca
                .resend_pickup(
                    &tenant,
                    &admin,
                    email,
                    mail,
                    ca_core::ReissueMode::ReplaceOrIssue,
                    &ctx.actor,
                )
                .await?;
            ca.publish_stale_crls(&ctx.actor).await?;
            ctx.print(pickup_value(&ca, &issuance, true, mail), || {
                pickup_text(&ca, &issuance, "resent (reissued)")
            });
            Ok(())
        }
    }
}

/// One CSV row.
struct Row {
    line: usize,
    tenant: String,
    admin: String,
    email: Option<String>,
}

/// A line that is not `tenant,admin[,email]`: (line, first field, message).
type BadRow = (usize, String, String);

/// Reads the CSV: `tenant,admin[,email]`; blank lines and `#` comments
/// skipped, an optional header. A malformed line becomes an error item.
fn read_rows(path: &Path) -> Result<Vec<std::result::Result<Row, BadRow>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read --csv {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if index == 0
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("tenant"))
        {
            continue;
        }
        match fields.as_slice() {
            [tenant, admin] | [tenant, admin, ""] => rows.push(Ok(Row {
                line: index + 1,
                tenant: tenant.to_string(),
                admin: admin.to_string(),
                email: None,
            })),
            [tenant, admin, email] => rows.push(Ok(Row {
                line: index + 1,
                tenant: tenant.to_string(),
                admin: admin.to_string(),
                email: Some(email.to_string()),
            })),
            _ => rows.push(Err((
                index + 1,
                fields.first().unwrap_or(&"").to_string(),
                format!(
                    "line {}: expected tenant,admin[,email] ({} fields found)",
                    index + 1,
                    fields.len()
                ),
            ))),
        }
    }
    Ok(rows)
}

/// A file of secrets that grows a line at a time, rewritten atomically
/// (temp + rename, mode 0600) after every line, keeping what an earlier run
/// wrote.
struct SecretsFile {
    path: PathBuf,
    text: Zeroizing<String>,
}

impl SecretsFile {
    fn open(path: PathBuf, header: &str) -> Result<Self> {
        let text = match std::fs::read_to_string(&path) {
            Ok(existing) => Zeroizing::new(existing),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Zeroizing::new(format!("{header}\n"))
            }
            Err(source) => {
                return Err(Error::Io {
                    context: "cannot read",
                    path,
                    source,
                })
            }
        };
        Ok(SecretsFile { path, text })
    }

    fn append(&mut self, line: &str) -> Result<()> {
        self.text.push_str(line);
        self.text.push('\n');
        fsutil::write_private_file(&self.path, self.text.as_bytes())
    }
}

/// `bulk-issue`.
pub(crate) async fn bulk_issue(ctx: &Context, args: BulkIssueArgs) -> Result<()> {
    let rows = read_rows(&args.csv)?;
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: "cannot create",
            path: dir.clone(),
            source,
        })?;
    }
    let ca = ctx.open(true).await?;
    ca.policies().get(&args.policy)?;
    let mut secrets = match (&args.out_dir, args.pickup) {
        (Some(dir), false) => Some(SecretsFile::open(
            dir.join("passwords.csv"),
            "tenant,admin,serial,file,password",
        )?),
        (Some(dir), true) => Some(SecretsFile::open(
            dir.join("codes.csv"),
            "tenant,admin,serial,pickup_url,code,expires_at",
        )?),
        (None, _) => None,
    };
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(rows.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut items, mut issued, mut active, mut failed) = (Vec::new(), 0u64, 0u64, 0u64);
    for row in rows {
        let item = match row {
            Err((line, tenant, message)) => {
                json!({ "line": line, "tenant": tenant, "status": "failed", "error": message })
            }
            Ok(row) => {
                bar.set_message(format!("{}/{}", row.tenant, row.admin));
                match bulk_row(ctx, &ca, &args, &row, secrets.as_mut()).await {
                    Ok(item) => item,
                    Err(e) => json!({
                        "line": row.line, "tenant": row.tenant, "admin": row.admin,
                        "status": "failed", "error": format!("line {}: {e}", row.line),
                    }),
                }
            }
        };
        match item["status"].as_str() {
            Some("issued") => issued += 1,
            Some("already_active") => active += 1,
            _ => {
                failed += 1;
                if let Some(error) = item["error"].as_str() {
                    bar.suspend(|| eprintln!("skipped: {error}"));
                }
            }
        }
        items.push(item);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = json!({
        "items": items, "issued": issued, "already_active": active, "failed": failed,
    });
    ctx.print(summary, || {
        let mut text = format!("{issued} issued, {active} already active, {failed} failed");
        if let Some(secrets) = &secrets {
            text.push_str(&format!(
                "\n{} written (mode 0600): keep it safe, then delete it",
                secrets.path.display()
            ));
        }
        text
    });
    if failed > 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    Ok(())
}

/// Issues one row (or reports its active certificate).
async fn bulk_row(
    ctx: &Context,
    ca: &Ca,
    args: &BulkIssueArgs,
    row: &Row,
    secrets: Option<&mut SecretsFile>,
) -> Result<Value> {
    let tenant = ca_core::TenantId::parse_customer(&row.tenant)?;
    let admin = ca_core::AdminId::parse(&row.admin)?;
    if let Some(email) = &row.email {
        ca_core::check_email(email)?;
    }
    let filter = ListFilter {
        tenant: Some(tenant.to_string()),
        admin: Some(admin.to_string()),
        policy: Some(args.policy.clone()),
        status: Some(CertificateStatus::Active),
        limit: 1,
        ..Default::default()
    };
    if let Some(existing) = ca.list(&filter).await?.first() {
        return Ok(json!({
            "line": row.line, "tenant": row.tenant, "admin": row.admin,
            "serial": existing.serial.to_hex(), "status": "already_active",
        }));
    }
    let request = IssueRequest {
        tenant: row.tenant.clone(),
        admin: row.admin.clone(),
        policy: Some(args.policy.clone()),
        password: None,
    };
    let prepared = ca.prepare_issue(&request).await?;
    if args.pickup {
        let issuance = ca
            .commit_pickup(prepared, &mail_request(ctx, row.email.clone()), &ctx.actor)
            .await?;
        let url = pickup_url(ca, &issuance.id);
        let expires_at = ca_core::rfc3339(issuance.expires_at);
        if let Some(secrets) = secrets {
            secrets.append(&format!(
                "{},{},{},{url},{},{expires_at}",
                row.tenant,
                row.admin,
                issuance.record.serial,
                issuance.code.as_str()
            ))?;
        }
        return Ok(json!({
            "line": row.line, "tenant": row.tenant, "admin": row.admin,
            "serial": issuance.record.serial.to_hex(), "status": "issued",
            "pickup": { "id": issuance.id, "url": url, "expires_at": expires_at, "email": issuance.email },
            "code": issuance.code.as_str(),
        }));
    }
    let dir = args
        .out_dir
        .as_ref()
        .expect("clap requires --out-dir or --pickup");
    let file = dir.join(format!("{}-{}.p12", row.tenant, row.admin));
    let bundle = prepared
        .bundle
        .as_ref()
        .ok_or_else(|| Error::Crypto("no bundle was built".into()))?;
    let staged = fsutil::StagedFile::write(&file, &bundle.0, true)?;
    let issuance = ca.commit(prepared, &ctx.actor).await?;
    staged.commit()?;
    let password = issuance
        .password
        .as_ref()
        .map(|p| p.as_str())
        .unwrap_or_default();
    if let Some(secrets) = secrets {
        secrets.append(&format!(
            "{},{},{},{},{password}",
            row.tenant,
            row.admin,
            issuance.record.serial,
            file.display()
        ))?;
    }
    Ok(json!({
        "line": row.line, "tenant": row.tenant, "admin": row.admin,
        "serial": issuance.record.serial.to_hex(), "status": "issued", "out": file,
    }))
}
