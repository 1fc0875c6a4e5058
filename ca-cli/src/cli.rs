//! Command-line definitions. Help text here is what operators read first, so it
//! says what each command does to the CA and shows an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Environment:
  CA_DATA_DIR          data directory (same as --data-dir)
  CA_KEY_PASSPHRASE    passphrase of the CA key (or --passphrase-file)
  CA_PKCS11_PIN        user PIN of the token holding the CA key, with key.source = \"pkcs11\"
                       (or key.pin_file); read once, never logged
  CA_DATABASE_URL, CA_BASE_URL, CA_POLICIES_DIR, CA_DEFAULT_POLICY, CA_CRL_VALIDITY
                       override the matching ca.toml keys

Exit codes:
  0 success · 1 internal or I/O error · 2 invalid input or usage · 3 conflict (e.g. an
  active certificate exists: use reissue) · 4 not found · 5 CA key unavailable, wrong passphrase or PIN, or its token removed
  · 6 audit chain broken (audit verify found an edited, deleted or reordered event)

Example day:
  ca-cli init --subject \"CN=Portal Admin CA,O=Example Corp\" --base-url https://ca.example.com
  ca-cli issue --tenant acme --admin alice --out alice.p12
  ca-cli reissue --tenant acme --admin alice --reason key-compromise --out alice-new.p12
  ca-cli crl --out ca.crl --pem
  ca-cli token create --role operator --tenant acme --name support-desk";

/// Offline administration of the client-certificate CA: works directly on the
/// data directory (store + encrypted key), no server needed.
#[derive(Debug, Parser)]
#[command(name = "ca-cli", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Data directory holding the store, CA certificate, encrypted CA key and policies.
    #[arg(long, global = true, env = "CA_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Configuration file (ca.toml); every key can also come from a CA_… variable.
    #[arg(long, global = true, env = "CA_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Machine-readable JSON on stdout (errors as {"error":{"code","message"}} on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Read the CA key passphrase from this file instead of CA_KEY_PASSPHRASE.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new CA: data directory, store, encrypted CA key and self-signed CA certificate.
    ///
    /// Refuses to touch a data directory that already holds a CA. The key is
    /// encrypted with the passphrase from CA_KEY_PASSPHRASE or --passphrase-file
    /// (at least 12 characters); keep that passphrase safe, nothing can recover it.
    ///
    /// Example: ca-cli init --subject "CN=Portal Admin CA,O=Example Corp" --base-url https://ca.example.com
    Init(InitArgs),

    /// Issue the first certificate for an admin, as a PKCS#12 bundle.
    ///
    /// Generates the key, signs the certificate under the policy, and writes the
    /// bundle only after its record is durably stored. The generated password is
    /// printed once: send it to the admin by a separate channel. Fails with a
    /// conflict if the admin already has an active certificate under the policy.
    ///
    /// Example: ca-cli issue --tenant acme --admin alice --out alice.p12
    Issue(IssueArgs),

    /// Replace an admin's certificate (device lost or wiped): issue a new one and
    /// revoke every active one of the same policy in the same transaction.
    ///
    /// Without --policy, the policy of the admin's active certificate is used.
    /// The CRL is republished at once. Use --reason key-compromise for a lost device.
    ///
    /// Example: ca-cli reissue --tenant acme --admin alice --reason key-compromise --out alice.p12
    Reissue(ReissueArgs),

    /// Revoke one certificate and republish the CRL (when the CA key is available).
    ///
    /// Example: ca-cli revoke 3f2a…e1 --reason key-compromise
    Revoke(RevokeArgs),

    /// Issue a certificate for a key the client keeps, from its CSR.
    ///
    /// The CSR's signature must verify; its subject is replaced by the policy's.
    ///
    /// Example: ca-cli sign-csr --tenant acme --admin robot --policy automation-csr --csr robot.csr --out robot.pem
    SignCsr(SignCsrArgs),

    /// List certificates, newest filters first; pages with --cursor.
    ///
    /// Example: ca-cli list --tenant acme --status active --expiring-within 30d
    List(ListArgs),

    /// Show one certificate.
    ///
    /// Example: ca-cli show 3f2a…e1 --pem
    Show(ShowArgs),

    /// Build, sign and publish a fresh CRL (and write it with --out); or, on a
    /// gateway, `crl pull` it from the CA.
    ///
    /// Example: ca-cli crl --out ca.crl --pem
    /// Example: ca-cli crl pull --url https://ca.example.com/crl --ca ca.pem --out /etc/nginx/portal/crl.pem --on-change "nginx -s reload"
    Crl(CrlArgs),

    /// Write the CA certificate (PEM by default), for gateways and trust stores.
    ///
    /// Example: ca-cli ca-cert --out ca.pem
    CaCert(CaCertArgs),

    /// Manage API tokens for ca-server (shown once, stored hashed).
    ///
    /// Example: ca-cli token create --role renewer --name nightly-renewal
    #[command(subcommand)]
    Token(TokenCommand),

    /// Issue ca-server's own HTTPS certificate from this CA (policy tls-server):
    /// writes the key (PEM, mode 0600) and the certificate followed by the CA
    /// certificate, only after the record is committed.
    ///
    /// Issuing again for the same first name replaces the previous certificate
    /// (revoked as superseded); send the server SIGHUP to load the new files.
    ///
    /// Example: ca-cli server-cert --dns ca.example.com --ip 10.0.0.5 --out-cert server.pem --out-key server.key
    ServerCert(ServerCertArgs),

    /// Manage the delegated OCSP responder certificate (rotated automatically by ca-server).
    #[command(subcommand)]
    OcspSigner(OcspSignerCommand),

    /// Check policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Bundles waiting for one-time pickup: list them, or resend (new link and code).
    ///
    /// Example: ca-cli pickup list --tenant acme
    /// Example: ca-cli pickup resend --tenant acme --admin alice
    #[command(subcommand)]
    Pickup(PickupCommand),

    /// Onboard many admins from a CSV file (`tenant,admin[,email]` per line;
    /// a header line `tenant,admin,email` is optional).
    ///
    /// Each row is issued on its own: a bad row (bad name, already active) is
    /// reported and skipped, never stopping the rest; running the same file
    /// again is safe (rows already active are reported as such, nothing is
    /// issued twice). --out-dir gets `<tenant>-<admin>.p12` and one
    /// `passwords.csv` (mode 0600); --pickup leaves each bundle for pickup and
    /// writes `codes.csv` (mode 0600) into --out-dir if given. Exit 0 when every
    /// row was issued or already active, 1 otherwise.
    ///
    /// Example: ca-cli bulk-issue --csv admins.csv --policy portal-admin --out-dir bundles/
    BulkIssue(BulkIssueArgs),

    /// Print shell completions (bash, zsh or fish) to stdout.
    ///
    /// Example: ca-cli completions bash > /etc/bash_completion.d/ca-cli
    Completions {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },

    /// Read and verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Offline root CA ceremonies (own directory, own key; no store, no server).
    ///
    /// Example: ca-cli root init --root-dir /media/root --subject "CN=Portal Root CA,O=Example Corp"
    /// Example: ca-cli root sign-ca --root-dir /media/root --csr issuing.csr --out issuing.pem
    #[command(subcommand)]
    Root(crate::hierarchy::RootCommand),

    /// The issuing side of a hierarchy: install the root-signed certificate,
    /// roll over to a new issuing CA, give it the root's CRL.
    ///
    /// Example: ca-cli ca import-cert issuing.pem --chain root.pem
    /// Example: ca-cli ca rollover --subject "CN=Portal Issuing CA 2,O=Example Corp" --csr-out new.csr
    #[command(subcommand)]
    Ca(crate::hierarchy::CaCommand),

    /// Write a consistent snapshot of the data directory as a tar archive
    /// (store, encrypted keys, certificates, policies, config), while ca-server
    /// runs. Never a plaintext key: a key file that is not encrypted stops the
    /// backup; other files (ca-server's TLS key) are left out and named.
    ///
    /// Example: ca-cli backup --out /backup/ca-$(date +%F).tar
    Backup {
        /// Where to write the archive (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },

    /// Rebuild a data directory (--data-dir, which must not hold a CA) from a
    /// backup; verifies every file's hash and the audit chain. Shown a CRL
    /// newer than the backup (--last-crl, repeatable), it refuses, naming it,
    /// unless --roll-forward: then CRL numbers continue above it and its
    /// revocations are kept.
    ///
    /// Example: ca-cli --data-dir ca-data restore --from ca.tar --last-crl /etc/nginx/portal/crls.pem
    Restore {
        /// The archive written by `backup`.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// A CRL published by this CA, perhaps after the backup (PEM, several
        /// in one file allowed, or DER).
        #[arg(long, value_name = "FILE")]
        last_crl: Vec<PathBuf>,
        /// Continue above a newer CRL and keep its revocations instead of refusing.
        #[arg(long)]
        roll_forward: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServerCertArgs {
    /// DNS name of the server (repeatable); the first one is also the CN.
    #[arg(long, value_name = "NAME")]
    pub(crate) dns: Vec<String>,
    /// IP address of the server (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) ip: Vec<std::net::IpAddr>,
    /// Policy of kind tls-server (default: the shipped tls-server).
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// Where to write the certificate chain (PEM: server certificate, then the CA's) — tls.cert_file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out_cert: PathBuf,
    /// Where to write the private key (PEM, mode 0600) — tls.key_file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out_key: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Subject of the CA certificate, e.g. "CN=Portal Admin CA,O=Example Corp,C=DE".
    #[arg(long)]
    pub(crate) subject: String,
    /// CA key type: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256")]
    pub(crate) key: String,
    /// CA certificate lifetime (e.g. 10y, 3650d).
    #[arg(long, default_value = "10y")]
    pub(crate) validity: String,
    /// Public URL of this CA; certificates point to <URL>/crl, <URL>/ocsp and <URL>/ca.crt
    /// (under a root: <URL>/crl/{issuer-id} and <URL>/ca/{issuer-id}.crt).
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: String,
    /// Create an issuing CA under an offline root: the store, the key and a
    /// CSR (--csr-out), no certificate. Nothing is issued until
    /// `ca import-cert` installs the certificate the root signs (--validity is the root's choice then).
    #[arg(long, requires = "csr_out")]
    pub(crate) issuing: bool,
    /// With --issuing: where to write the CSR for `root sign-ca`.
    #[arg(long, value_name = "FILE", requires = "issuing")]
    pub(crate) csr_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// Tenant id (1-64 of A-Z a-z 0-9 . _ @ -, not only dots).
    #[arg(long)]
    pub(crate) tenant: String,
    /// Admin id (1-64 of A-Z a-z 0-9 . _ @ -, not only dots).
    #[arg(long)]
    pub(crate) admin: String,
    /// Policy (default: default_policy from the config, else portal-admin).
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// Where to write the PKCS#12 bundle (not with --pickup). Needed unless
    /// --pickup is given or the policy says `delivery = "pickup"`.
    #[arg(long, value_name = "FILE", conflicts_with = "pickup")]
    pub(crate) out: Option<PathBuf>,
    /// Use the password in this file instead of generating one.
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// Leave the bundle sealed for a one-time download at <base_url>/pickup/<id>
    /// instead of writing it: prints the link and a one-time code (give the
    /// code to the admin by phone or SMS; never mail it). The default, without
    /// --out, for a policy with `delivery = "pickup"`.
    #[arg(long)]
    pub(crate) pickup: bool,
    /// With pickup delivery: the admin's address; a running ca-server with smtp.url mails the link there.
    #[arg(long, conflicts_with = "out")]
    pub(crate) email: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReissueArgs {
    #[command(flatten)]
    pub(crate) issue: IssueArgs,
    /// Revocation reason for the replaced certificates.
    #[arg(long, default_value = "superseded")]
    pub(crate) reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// Serial number (hex, as `list` prints it).
    pub(crate) serial: String,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation, certificate-hold, privilege-withdrawn.
    #[arg(long, default_value = "unspecified")]
    pub(crate) reason: String,
    /// When the key was (suspected) compromised, RFC 3339 (goes into the CRL as invalidity date).
    #[arg(long, value_name = "TIME")]
    pub(crate) invalidity_date: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SignCsrArgs {
    /// Tenant id.
    #[arg(long)]
    pub(crate) tenant: String,
    /// Admin (or automation client) id.
    #[arg(long)]
    pub(crate) admin: String,
    /// Policy (kind = "csr" policies, e.g. automation-csr).
    #[arg(long)]
    pub(crate) policy: String,
    /// The CSR, PEM or DER.
    #[arg(long, value_name = "FILE")]
    pub(crate) csr: PathBuf,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this tenant.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Only this admin.
    #[arg(long)]
    pub(crate) admin: Option<String>,
    /// Only this policy.
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// active, revoked or expired.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only active certificates expiring within this time (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub(crate) expiring_within: Option<String>,
    /// Page size (1-1000).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    /// Continue after this serial (next_cursor of the previous page).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Serial number (hex).
    pub(crate) serial: String,
    /// Print the certificate PEM too.
    #[arg(long)]
    pub(crate) pem: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct CrlArgs {
    #[command(subcommand)]
    pub(crate) action: Option<CrlAction>,
    /// Also write the CRL to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Write PEM instead of DER.
    #[arg(long)]
    pub(crate) pem: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CaCertArgs {
    /// Write DER instead of PEM.
    #[arg(long)]
    pub(crate) der: bool,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PickupCommand {
    /// What waits for collection (waiting, locked or expired), newest first; --all adds collected and replaced ones.
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Also collected and replaced pickups.
        #[arg(long)]
        all: bool,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// A new link and code for a bundle not yet collected: reissues (the
    /// uncollected certificate is revoked as superseded) and the old link dies.
    /// Refused once the bundle was collected: reissue then.
    Resend {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Admin id.
        #[arg(long)]
        admin: String,
        /// A new address for the notification mail (default: the last one).
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct BulkIssueArgs {
    /// The CSV file: `tenant,admin[,email]` per line.
    #[arg(long, value_name = "FILE")]
    pub(crate) csv: PathBuf,
    /// Policy to issue under.
    #[arg(long)]
    pub(crate) policy: String,
    /// Write `<tenant>-<admin>.p12` and `passwords.csv` here (with --pickup: `codes.csv`).
    #[arg(long, value_name = "DIR", required_unless_present = "pickup")]
    pub(crate) out_dir: Option<PathBuf>,
    /// Leave each bundle for one-time pickup instead of writing it.
    #[arg(long)]
    pub(crate) pickup: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate every *.toml in DIR (default: the policies in effect) and report all problems with file and line.
    Check {
        /// Directory of policy files.
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print audit events, oldest first.
    List {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Verify the hash chain; names the first edited, deleted or reordered event.
    Verify,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it once (keep it in a secret store; only its hash is kept here).
    Create {
        /// admin (everything), operator (issue/reissue/csr/revoke/read), renewer (reissue + read), auditor (read + audit).
        #[arg(long)]
        role: String,
        /// Limit an operator or renewer token to one tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// A name to recognise it by.
        #[arg(long, default_value = "")]
        name: String,
        /// Make it stop working after this long (e.g. 90d, 12h); never expires when absent.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; running servers refuse it within a second (they poll the store every 250 ms).
    Revoke {
        /// Token id (from `token list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CrlAction {
    /// Gateway side: fetch the CRL, verify it against the CA certificate, and
    /// install it atomically; run --on-change only when it changed.
    ///
    /// Needs no data directory and no CA key. A CRL that does not verify, is
    /// expired, or is older (lower CRL number) than the installed one is refused
    /// and the installed file is left alone.
    ///
    /// Exit codes: 0 installed or unchanged · 1 fetch, write or --on-change failed ·
    /// 2 CRL refused or bad arguments. With --interval it keeps running (errors are
    /// logged and retried) until SIGTERM or Ctrl-C, then exits 0.
    ///
    /// Example: ca-cli crl pull --url http://ca.internal:8080/crl --ca /etc/nginx/portal/ca.pem --out /etc/nginx/portal/crl.pem --on-change "nginx -s reload" --interval 60s
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Where the CA serves its CRL (`<base_url>/crl`).
    #[arg(long)]
    pub(crate) url: String,
    /// The CA certificate (PEM or DER) the CRL must be signed by (`ca-cli ca-cert`, `GET /ca.pem`).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: std::path::PathBuf,
    /// Trust anchor for an https --url (default: the --ca certificate, which
    /// issued ca-server's own TLS certificate when made with `server-cert`).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// The CRL file the gateway reads (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: std::path::PathBuf,
    /// Shell command run after a changed CRL was installed, e.g. "nginx -s reload".
    #[arg(long, value_name = "CMD")]
    pub(crate) on_change: Option<String>,
    /// Keep pulling at this interval (e.g. 60s) until SIGTERM.
    #[arg(long, value_name = "DURATION", conflicts_with = "watch")]
    pub(crate) interval: Option<String>,
    /// Keep the CRL current until SIGTERM by long-polling the CA (`Prefer:
    /// wait=55` with `If-None-Match`): the server answers the moment a newer
    /// CRL is published, so a revocation reaches the gateway within about a
    /// second and an idle gateway costs one request a minute. Servers that do
    /// not hold the request are polled once a second; errors are retried with
    /// backoff (1 s doubling to 30 s).
    #[arg(long)]
    pub(crate) watch: bool,
    /// Write DER instead of PEM.
    #[arg(long)]
    pub(crate) der: bool,
    /// Give up on one fetch after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub(crate) timeout: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OcspSignerCommand {
    /// Issue a new responder certificate and key now (the old one is superseded);
    /// running servers pick it up within seconds.
    ///
    /// Example: ca-cli ocsp-signer rotate
    Rotate,
    /// Show the current responder certificate.
    Show,
}
