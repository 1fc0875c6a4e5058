//! Backup and restore of a data directory (DESIGN §3, §6).
//!
//! `backup` writes one POSIX tar archive (ustar, readable by any `tar`):
//!
//! ```text
//!   manifest.json   format, time, store kind, audit head, every issuer's last
//!                   CRL number, and the SHA-256 of every other member
//!   ca.db           SQLite: a consistent snapshot (VACUUM INTO), taken while
//!                   the server runs; PostgreSQL: absent (pg_dump's job)
//!   ca.pem root.pem the active issuer's and the root's certificates
//!   *.key           keys, only ever encrypted (AES-256-GCM under scrypt):
//!                   every key file is checked to be one before it goes in
//!   *.token.json    which token key (no key material)
//!   issuer-*.csr    pending issuers' requests
//!   policies/*.toml the certificate profiles
//!   ca.toml         the configuration, when one was given
//! ```
//!
//! Nothing else of the data directory is archived: a file there that is not
//! one of these (for instance ca-server's TLS key from `server-cert`, a
//! plaintext PEM key) is left out and named in the report.
//!
//! `restore` rebuilds a data directory from an archive in a temporary
//! directory beside it, verifies every member's hash and the audit chain,
//! compares the store with any newer CRL it is shown, and only then moves it
//! into place: a refused restore leaves nothing behind. A restore never lets
//! CRL numbers go backwards and never revives a certificate a CRL it is shown
//! revokes (DESIGN §3): shown such a CRL it refuses, naming it, or with
//! `roll_forward` continues the CRL numbers above it and keeps its revocations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::audit::AuditDraft;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pki::crl::RevokedEntry;
use crate::store::{AuditStore, CertificateStore, CrlStore, IssuerStore, SqlStore, Store};

const FORMAT: &str = "portal-ca-backup/1";
const MANIFEST: &str = "manifest.json";
/// Largest member a restore reads (a store of millions of certificates fits;
/// a crafted archive cannot make the restore allocate without bound).
const MAX_MEMBER: u64 = 64 << 30;

/// What a backup recorded about the store it copied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Archive format.
    pub format: String,
    /// When it was taken, RFC 3339.
    pub created_at: String,
    /// `sqlite` (the database is in the archive) or `postgres` (it is not).
    pub store: String,
    /// Audit chain head of the copied store: sequence number.
    pub audit_seq: u64,
    /// Audit chain head of the copied store: hash.
    pub audit_hash: String,
    /// Every issuer's last reserved CRL number, by issuer number.
    pub crl_numbers: BTreeMap<u64, u64>,
    /// Member name → SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

/// The outcome of a backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// What was recorded.
    pub manifest: Manifest,
    /// Files of the data directory left out (not a known, safe member).
    pub skipped: Vec<String>,
}

/// The outcome of a restore.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The manifest of the archive.
    pub manifest: Manifest,
    /// Audit events verified.
    pub audit_events: u64,
    /// With roll-forward: revocations kept from newer CRLs.
    pub kept_revocations: u64,
    /// With roll-forward: (issuer number, CRL number the next CRL goes above).
    pub raised_crl_numbers: Vec<(u64, u64)>,
}

/// Whether a data directory file belongs in a backup (and may be restored).
fn is_member(name: &str) -> bool {
    let plain = |n: &str| {
        !n.is_empty()
            && n.len() <= 90
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !n.starts_with('.')
    };
    match name.split_once('/') {
        Some(("policies", file)) => plain(file) && file.ends_with(".toml"),
        Some(_) => false,
        None => {
            plain(name)
                && (matches!(name, "ca.db" | "ca.pem" | "root.pem" | "ca.toml" | "ca.key")
                    || (name.starts_with("issuer-")
                        && (name.ends_with(".key")
                            || name.ends_with(".csr")
                            || name.ends_with(".token.json")))
                    || name == "ca.token.json")
        }
    }
}

/// A key file is archived only if it is one of ours, encrypted.
fn check_encrypted_key(name: &str, bytes: &[u8]) -> Result<()> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| {
        Error::Key(format!(
            "{name} is not an encrypted key file: refusing to put a key of unknown form in a backup"
        ))
    })?;
    let encrypted = value.get("cipher").and_then(|c| c.as_str()) == Some("aes-256-gcm")
        && value.get("ciphertext").is_some_and(|c| c.is_string())
        && value.get("kdf").and_then(|k| k.as_str()) == Some("scrypt");
    if !encrypted {
        return Err(Error::Key(format!(
            "{name} is not an encrypted key file: refusing to put a key of unknown form in a backup"
        )));
    }
    Ok(())
}

// --- ustar (POSIX.1-1988) -------------------------------------------------

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

fn tar_header(name: &str, size: u64, mode: u32, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

/// Writes one member: header, `size` bytes from `data`, padding to 512.
fn tar_write(
    out: &mut impl Write,
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    data: &mut impl Read,
) -> std::io::Result<()> {
    out.write_all(&tar_header(name, size, mode, mtime))?;
    let copied = std::io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(std::io::Error::other(format!(
            "{name} changed size while archived"
        )));
    }
    let pad = ((512 - size % 512) % 512) as usize;
    out.write_all(&[0u8; 512][..pad])
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).ok()
}

fn not_an_archive(why: String) -> Error {
    Error::InvalidInput(format!("not a backup archive of this CA: {why}"))
}

/// The next member's (name, size), `None` at the end marker. Anything but a
/// plain file with a known, safe name is refused.
fn tar_next(input: &mut impl Read) -> Result<Option<(String, u64)>> {
    let mut header = [0u8; 512];
    input
        .read_exact(&mut header)
        .map_err(|_| not_an_archive("it ends without its end marker (truncated)".into()))?;
    if header.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored =
        parse_octal(&header[148..156]).ok_or_else(|| not_an_archive("bad header".into()))?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored {
        return Err(not_an_archive(
            "a header checksum does not match (damaged archive)".into(),
        ));
    }
    let name: String = header[..100]
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    if header[156] != b'0' && header[156] != 0 {
        return Err(not_an_archive(format!("member {name} is not a plain file")));
    }
    if name != MANIFEST && !is_member(&name) {
        return Err(not_an_archive(format!(
            "unexpected member \"{}\"",
            name.escape_debug()
        )));
    }
    let size = parse_octal(&header[124..136]).ok_or_else(|| not_an_archive("bad size".into()))?;
    if size > MAX_MEMBER {
        return Err(not_an_archive(format!("member {name} is too large")));
    }
    Ok(Some((name, size)))
}

/// Copies the current member (of `size` bytes) to `out` and skips its
/// padding; returns its SHA-256 (hex).
fn tar_copy(input: &mut impl Read, name: &str, size: u64, out: &mut impl Write) -> Result<String> {
    let truncated = || not_an_archive(format!("member {name} is truncated"));
    let mut hasher = openssl::sha::Sha256::new();
    let mut left = size;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        input
            .read_exact(&mut buf[..want])
            .map_err(|_| truncated())?;
        hasher.update(&buf[..want]);
        out.write_all(&buf[..want]).map_err(|e| Error::Io {
            context: "cannot write",
            path: name.into(),
            source: e,
        })?;
        left -= want as u64;
    }
    let pad = ((512 - size % 512) % 512) as usize;
    input.read_exact(&mut buf[..pad]).map_err(|_| truncated())?;
    Ok(hex::encode(hasher.finish()))
}

/// SHA-256 (hex) of a file, read a piece at a time.
fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io("cannot read", path))?;
    let mut hasher = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(Error::io("cannot read", path))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finish()));
        }
        hasher.update(&buf[..n]);
    }
}

// --- backup ---------------------------------------------------------------

/// Writes a backup of the data directory of `config` to `out` (mode 0600),
/// while a server may run. `config_file` is archived as `ca.toml`.
pub async fn backup(
    config: &Config,
    out: &Path,
    config_file: Option<&Path>,
) -> Result<BackupReport> {
    let dir = config.data_dir.clone();
    if !dir.join("ca.pem").exists()
        && !dir.join("ca.key").exists()
        && !dir.join("ca.token.json").exists()
    {
        return Err(Error::NotFound(format!(
            "no CA in {} to back up",
            dir.display()
        )));
    }
    let url = config.database_url();
    let sqlite = url.starts_with("sqlite:");
    let live = SqlStore::connect(&url).await?;
    live.migrate().await?;
    let scratch = tempfile::Builder::new()
        .prefix(".ca-backup-")
        .tempdir_in(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(Error::io("cannot create a scratch directory beside", out))?;
    // Small members in memory; the database snapshot streamed from its file.
    let mut members: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let snapshot = scratch.path().join("ca.db");
    let mut snapshot_hash = None;
    // The snapshot is the store as of one commit; the manifest describes the
    // snapshot, read back from it, not the live store.
    let described: Box<dyn Store> = if sqlite {
        live.snapshot_into(&snapshot).await?;
        // The archived bytes are the snapshot as VACUUM INTO wrote it: kept
        // aside before anything opens it; then it is opened to be described.
        let archived = scratch.path().join("ca.db.archived");
        std::fs::copy(&snapshot, &archived).map_err(Error::io("cannot copy", &snapshot))?;
        snapshot_hash = Some(file_sha256(&archived)?);
        let copy = SqlStore::connect(&format!("sqlite://{}?mode=rwc", snapshot.display())).await?;
        Box::new(copy)
    } else {
        Box::new(live)
    };
    let report = crate::ca::verify_store_audit(&*described).await?;
    let (audit_seq, _) = described.audit_head().await?;
    let mut crl_numbers = BTreeMap::new();
    let mut numbers: Vec<u64> = described
        .issuers()
        .await?
        .iter()
        .map(|r| r.number)
        .collect();
    if numbers.is_empty() {
        numbers.push(1);
    }
    for number in numbers {
        crl_numbers.insert(number, described.last_crl_number(number).await?);
    }
    drop(described);
    let mut skipped = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(Error::io("cannot read", &dir))? {
        let entry = entry.map_err(Error::io("cannot read", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "policies" && entry.path().is_dir() {
            for policy in
                std::fs::read_dir(entry.path()).map_err(Error::io("cannot read", entry.path()))?
            {
                let policy = policy.map_err(Error::io("cannot read", entry.path()))?;
                let member = format!("policies/{}", policy.file_name().to_string_lossy());
                match is_member(&member) {
                    true => names.push(member),
                    false => skipped.push(member),
                }
            }
            continue;
        }
        if name == "ca.db" || name.starts_with("ca.db-") {
            continue; // the snapshot stands for the live database and its WAL
        }
        match is_member(&name) && name != "ca.toml" {
            true => names.push(name),
            false => skipped.push(name),
        }
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(Error::io("cannot read", &path))?;
        let private = name.ends_with(".key");
        if private {
            check_encrypted_key(&name, &bytes)?;
        }
        members.push((name, bytes, if private { 0o600 } else { 0o644 }));
    }
    if let Some(file) = config_file {
        let bytes = std::fs::read(file).map_err(Error::io("cannot read", file))?;
        members.push(("ca.toml".into(), bytes, 0o600));
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: crate::rfc3339(crate::now()),
        store: if sqlite { "sqlite" } else { "postgres" }.into(),
        audit_seq,
        audit_hash: report.head.clone(),
        crl_numbers,
        files: members
            .iter()
            .map(|(name, bytes, _)| (name.clone(), hex::encode(crate::hash::sha256(bytes))))
            .chain(snapshot_hash.clone().map(|h| ("ca.db".to_owned(), h)))
            .collect(),
    };
    let mtime = crate::now().unix_timestamp().max(0) as u64;
    let manifest_text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Crypto(e.to_string()))?;
    // Written in the scratch directory (beside `out`, so the rename stays on
    // one file system), synced, then renamed into place.
    let staged = scratch.path().join("archive.tar");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&staged)?;
        let mut out = std::io::BufWriter::new(file);
        let m = manifest_text.len() as u64;
        tar_write(&mut out, MANIFEST, m, 0o644, mtime, &mut &manifest_text[..])?;
        if snapshot_hash.is_some() {
            let archived = scratch.path().join("ca.db.archived");
            let size = std::fs::metadata(&archived)?.len();
            let mut db = std::fs::File::open(&archived)?;
            tar_write(&mut out, "ca.db", size, 0o600, mtime, &mut db)?;
        }
        for (name, bytes, mode) in &members {
            tar_write(
                &mut out,
                name,
                bytes.len() as u64,
                *mode,
                mtime,
                &mut &bytes[..],
            )?;
        }
        out.write_all(&[0u8; 1024])?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    write().map_err(Error::io("cannot write the backup", out))?;
    std::fs::rename(&staged, out).map_err(Error::io("cannot write the backup", out))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(BackupReport { manifest, skipped })
}

// --- restore --------------------------------------------------------------

/// Restores the archive at `from` into the (new) data directory of `config`.
/// `newer_crls` are CRLs (PEM or DER) published after the backup may have
/// been taken; see the module documentation for what is done with them.
pub async fn restore(
    config: &Config,
    from: &Path,
    newer_crls: &[(PathBuf, Vec<u8>)],
    roll_forward: bool,
    actor: &str,
) -> Result<RestoreReport> {
    let target = config.data_dir.clone();
    if target.join("ca.pem").exists()
        || target.join("ca.key").exists()
        || target.join("ca.db").exists()
        || target.join("ca.token.json").exists()
    {
        return Err(Error::Conflict(format!(
            "{} already holds a CA: restore only into a new data directory",
            target.display()
        )));
    }
    let file = std::fs::File::open(from).map_err(Error::io("cannot read the backup", from))?;
    let mut input = std::io::BufReader::new(file);
    let manifest = match tar_next(&mut input)? {
        Some((name, size)) if name == MANIFEST && size <= 1 << 20 => {
            let mut text = Vec::new();
            tar_copy(&mut input, &name, size, &mut text)?;
            serde_json::from_slice::<Manifest>(&text).map_err(|e| {
                Error::InvalidInput(format!("the backup's manifest is damaged: {e}"))
            })?
        }
        _ => {
            return Err(Error::InvalidInput(
                "not a backup archive of this CA: it does not start with manifest.json".into(),
            ))
        }
    };
    if manifest.format != FORMAT {
        return Err(Error::InvalidInput(format!(
            "unknown backup format \"{}\" (this version reads {FORMAT})",
            manifest.format.escape_debug()
        )));
    }
    let sqlite_target = config.database_url.is_none();
    match (manifest.store.as_str(), sqlite_target) {
        ("sqlite", false) => {
            return Err(Error::Config(
                "the backup holds a SQLite store, but database_url names another database: unset CA_DATABASE_URL / database_url to restore it into the data directory".into(),
            ))
        }
        ("postgres", true) => {
            return Err(Error::Config(
                "the backup was taken of a PostgreSQL store: pg_restore its pg_dump first and set database_url (CA_DATABASE_URL) to that database; restore then checks it against the backup".into(),
            ))
        }
        _ => {}
    }

    // Build it beside the target, then move it into place.
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(Error::io("cannot create", &parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".ca-restore-")
        .tempdir_in(&parent)
        .map_err(Error::io("cannot create a staging directory in", &parent))?;
    std::fs::create_dir_all(staging.path().join("policies"))
        .map_err(Error::io("cannot create", staging.path()))?;
    // Every member streams into the staging directory, hashed on the way.
    let mut seen = std::collections::BTreeSet::new();
    while let Some((name, size)) = tar_next(&mut input)? {
        let Some(expected) = manifest.files.get(&name) else {
            return Err(Error::InvalidInput(format!(
                "the backup holds {name}, which its manifest does not list"
            )));
        };
        if !seen.insert(name.clone()) {
            return Err(Error::InvalidInput(format!(
                "the backup holds {name} twice"
            )));
        }
        let path = staging.path().join(&name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let private = name.ends_with(".key") || name == "ca.db" || name == "ca.toml";
            options.mode(if private { 0o600 } else { 0o644 });
        }
        let mut out = options
            .open(&path)
            .map_err(Error::io("cannot write", &path))?;
        let hash = tar_copy(&mut input, &name, size, &mut out)?;
        out.sync_all().map_err(Error::io("cannot sync", &path))?;
        if hash != *expected {
            return Err(Error::InvalidInput(format!(
                "{name} in the backup does not match its manifest's SHA-256 (damaged or altered archive)"
            )));
        }
    }
    if let Some(missing) = manifest.files.keys().find(|n| !seen.contains(*n)) {
        return Err(Error::InvalidInput(format!(
            "the backup lacks {missing}, which its manifest lists"
        )));
    }
    let mut staged = config.clone();
    staged.data_dir = staging.path().to_owned();
    let store = SqlStore::connect(&staged.database_url()).await?;
    store.migrate().await?;
    let audit = crate::ca::verify_store_audit(&store).await?;
    let (seq, _) = store.audit_head().await?;
    if seq < manifest.audit_seq {
        return Err(Error::Conflict(format!(
            "the database holds audit events up to {seq}, older than the backup ({}): for PostgreSQL, pg_dump after `ca-cli backup`, not before",
            manifest.audit_seq
        )));
    }
    let event = store
        .audit_events(manifest.audit_seq.saturating_sub(1), 1)
        .await?;
    if manifest.audit_seq > 0
        && event.first().map(|e| e.hash.as_str()) != Some(&manifest.audit_hash)
    {
        return Err(Error::AuditBroken(format!(
            "the database's audit event {} is not the backup's (another CA's database, or a rewritten one)",
            manifest.audit_seq
        )));
    }

    // Newer CRLs: each must be one of our issuers'; none may be ahead of the store.
    let issuers = issuer_certificates(&store, staging.path()).await?;
    let mut kept = 0u64;
    let mut raised = Vec::new();
    for (path, crl) in newer_crls {
        let (number, verified, not_after) = issuers
            .iter()
            .find_map(|(n, der, not_after)| {
                let long_ago = crate::now() - time::Duration::days(36_500);
                crate::gateway::verify_crl(crl, der, long_ago)
                    .ok()
                    .map(|v| (*n, v, *not_after))
            })
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} is not a CRL of any issuer in this backup (its signature verifies against none of them)",
                    path.display()
                ))
            })?;
        let last = store.last_crl_number(number).await?;
        let entries = crl_entries(&verified.der)?;
        let mut revived = Vec::new();
        for entry in &entries {
            let record = store.certificate(&entry.serial).await?;
            if record.is_none_or(|r| r.revoked_at.is_none()) {
                revived.push(entry.clone());
            }
        }
        if verified.number <= last && revived.is_empty() {
            continue;
        }
        if !roll_forward {
            let mut why = Vec::new();
            if verified.number > last {
                why.push(format!(
                    "its number {} is above the backup's last CRL number {last} of that issuer, so CRL numbers would go backwards",
                    verified.number
                ));
            }
            if let Some(first) = revived.first() {
                why.push(format!(
                    "it revokes {} certificate(s) the backup has as not revoked (e.g. serial {}), which would be answered as good",
                    revived.len(),
                    first.serial
                ));
            }
            return Err(Error::Conflict(format!(
                "{} (CRL {}) is newer than the backup: {}. Restore a newer backup, or pass --roll-forward to continue above it and keep its revocations",
                path.display(),
                verified.number,
                why.join("; and ")
            )));
        }
        for entry in &revived {
            let draft = AuditDraft::new(actor, "restore-keep-revocation", entry.serial.to_hex());
            if store
                .keep_revocation(number, entry, not_after, draft)
                .await?
            {
                kept += 1;
            }
        }
        if verified.number > last {
            let draft = AuditDraft::new(
                actor,
                "restore-raise-crl-number",
                format!("issuer {number}"),
            );
            store
                .raise_crl_number(number, verified.number, draft, crate::now())
                .await?;
            raised.push((number, verified.number));
        }
    }
    let mut draft = AuditDraft::new(actor, "restore", from.display().to_string());
    draft.details = format!(
        "backup_created_at={} audit_seq={} kept_revocations={kept}",
        manifest.created_at, manifest.audit_seq
    );
    store.audit(draft, crate::now()).await?;
    drop(store);
    let staging = staging.keep();
    if target.exists() {
        // An empty directory (nothing of a CA, checked above) is replaced.
        std::fs::remove_dir(&target).map_err(|e| {
            Error::Conflict(format!(
                "{} exists and is not empty ({e}): restore into a new directory",
                target.display()
            ))
        })?;
    }
    std::fs::rename(&staging, &target)
        .map_err(Error::io("cannot move the restored directory to", &target))?;
    Ok(RestoreReport {
        manifest,
        audit_events: audit.events,
        kept_revocations: kept,
        raised_crl_numbers: raised,
    })
}

/// (issuer number, certificate PEM, notAfter) of every issuer in a restored directory.
async fn issuer_certificates(
    store: &SqlStore,
    dir: &Path,
) -> Result<Vec<(u64, Vec<u8>, time::OffsetDateTime)>> {
    let rows = store.issuers().await?;
    let mut out = Vec::new();
    for row in rows {
        if let (Some(der), Some(not_after)) = (row.der, row.not_after) {
            out.push((row.number, der, not_after));
        }
    }
    if out.is_empty() {
        let path = dir.join("ca.pem");
        let pem = std::fs::read(&path).map_err(Error::io("cannot read", &path))?;
        let der = crate::pki::x509::certificate_der_from_pem_or_der(&pem)?;
        let certificate = crate::pki::x509::CaCertificate::from_der(der.clone())?;
        out.push((1, der, certificate.not_after()));
    }
    Ok(out)
}

/// The revoked entries of a CRL (DER), as OpenSSL reads them.
fn crl_entries(der: &[u8]) -> Result<Vec<RevokedEntry>> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| Error::InvalidInput(format!("CRL does not parse: {e}")))?;
    let mut entries = Vec::new();
    for revoked in crl.iter_revoked_certificates() {
        let Some(serial) = crate::ids::Serial::from_bytes(revoked.raw_serial()) else {
            continue; // not one of our 16-byte serials
        };
        let reason = revoked
            .reason_code()
            .map(|(_, r)| i64::from(r.0))
            .and_then(crate::reason::RevocationReason::from_code)
            .unwrap_or(crate::reason::RevocationReason::Unspecified);
        entries.push(RevokedEntry {
            serial,
            revoked_at: revoked.revocation_date.to_datetime(),
            reason,
            invalidity_date: revoked.invalidity_date().map(|(_, t)| t.to_datetime()),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            tar_write(&mut out, name, data.len() as u64, 0o644, 1, &mut &data[..]).unwrap();
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut input = bytes;
        let mut members = Vec::new();
        while let Some((name, size)) = tar_next(&mut input)? {
            let mut data = Vec::new();
            tar_copy(&mut input, &name, size, &mut data)?;
            members.push((name, data));
        }
        Ok(members)
    }

    #[test]
    fn archives_round_trip_and_refuse_unsafe_members() {
        let big = [7u8; 700];
        let out = archive(&[(MANIFEST, b"{}"), ("policies/a.toml", &big)]);
        let members = read_all(&out).unwrap();
        assert_eq!(members[1].0, "policies/a.toml");
        assert_eq!(members[1].1, big.to_vec());
        for name in [
            "../ca.key",
            "/etc/passwd",
            "policies/../x.toml",
            "server.key",
            ".hidden",
        ] {
            assert!(read_all(&archive(&[(name, b"x")])).is_err(), "{name}");
        }
        // A flipped byte in a header is noticed; a cut archive too.
        let mut damaged = out.clone();
        damaged[10] ^= 1;
        assert!(read_all(&damaged).is_err());
        assert!(read_all(&out[..out.len() - 1100]).is_err());
    }

    #[test]
    fn only_encrypted_key_files_are_archived() {
        assert!(check_encrypted_key("ca.key", b"-----BEGIN PRIVATE KEY-----").is_err());
        assert!(check_encrypted_key(
            "ca.key",
            br#"{"cipher":"none","ciphertext":"x","kdf":"scrypt"}"#
        )
        .is_err());
        assert!(check_encrypted_key(
            "ca.key",
            br#"{"cipher":"aes-256-gcm","ciphertext":"x","kdf":"scrypt"}"#
        )
        .is_ok());
    }
}
