//! Notification mail (DESIGN §1): the pickup link at issue, reissue and
//! resend (never the code: that goes by the other channel), and a reminder
//! before a certificate expires. Sent through `lettre` over SMTP
//! (`smtp.url`); TLS through native-tls, i.e. the OpenSSL already linked:
//! `smtps://` is implicit TLS, `smtp://…?tls=required` STARTTLS, both with
//! the system's roots, or only those of `smtp.ca_file` (a mail server under
//! a private CA). The server's name is always checked.
//!
//! A failed mail never undoes anything: the certificate and its pickup
//! stand, the failure is recorded on the pickup (`pickup list` shows it),
//! audited (`pickup.mail_failed`) and counted (`ca_mail_failed_total`), and
//! `pickup resend` sends again.
//!
//! Templates: the built-in texts below, each replaceable by a file of the
//! same name in `<data_dir>/mail/` (read at start): `pickup.subject`,
//! `pickup.txt`, `pickup.html`, `reminder.subject`, `reminder.txt`,
//! `reminder.html`. Placeholders: `{{tenant}}`, `{{admin}}`, `{{url}}`,
//! `{{expires_at}}` (pickup), `{{serial}}`, `{{not_after}}` (reminder);
//! values are HTML-escaped in the `.html` templates.

use std::path::Path;
use std::time::Duration as StdDuration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// One message kind's three templates.
struct Template {
    subject: String,
    text: String,
    html: String,
}

const PICKUP_SUBJECT: &str = "Your login certificate for {{tenant}} is ready to collect";
const PICKUP_TEXT: &str = "Hello {{admin}},

a login certificate for your administrator account at {{tenant}} is ready.
Collect it here before {{expires_at}}:

  {{url}}

The page asks for a one-time code. You get that code separately from the
support desk (by phone or SMS), never by mail. The page then lets you
download the certificate once and shows its password once.

If you did not expect this, ignore this mail and tell your support desk.
";
const PICKUP_HTML: &str = "<!DOCTYPE html><html><body>
<p>Hello {{admin}},</p>
<p>a login certificate for your administrator account at {{tenant}} is ready.
Collect it before {{expires_at}}:</p>
<p><a href=\"{{url}}\">{{url}}</a></p>
<p>The page asks for a one-time code. You get that code separately from the
support desk (by phone or SMS), never by mail. The page then lets you
download the certificate once and shows its password once.</p>
<p>If you did not expect this, ignore this mail and tell your support desk.</p>
</body></html>
";
const REMINDER_SUBJECT: &str = "Your login certificate for {{tenant}} expires on {{not_after}}";
const REMINDER_TEXT: &str = "Hello {{admin}},

your login certificate for {{tenant}} (serial {{serial}}) expires on
{{not_after}}. Ask your support desk for a new one before then, or you will
not be able to sign in.
";
const REMINDER_HTML: &str = "<!DOCTYPE html><html><body>
<p>Hello {{admin}},</p>
<p>your login certificate for {{tenant}} (serial {{serial}}) expires on
{{not_after}}. Ask your support desk for a new one before then, or you will
not be able to sign in.</p>
</body></html>
";

impl Template {
    fn load(dir: &Path, name: &str, defaults: [&str; 3]) -> Result<Self, String> {
        let read = |ext: &str, default: &str| -> Result<String, String> {
            let path = dir.join(format!("{name}.{ext}"));
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(default.to_owned()),
                Err(e) => Err(format!("mail template {}: {e}", path.display())),
            }
        };
        Ok(Template {
            subject: read("subject", defaults[0])?.trim().to_owned(),
            text: read("txt", defaults[1])?,
            html: read("html", defaults[2])?,
        })
    }

    fn render(&self, values: &[(&str, &str)]) -> (String, String, String) {
        let fill = |template: &str, escape: bool| {
            let mut out = template.to_owned();
            for (name, value) in values {
                let value = if escape {
                    html_escape(value)
                } else {
                    (*value).to_owned()
                };
                out = out.replace(&format!("{{{{{name}}}}}"), &value);
            }
            out
        };
        // A subject is one line whatever a value holds.
        let subject = fill(&self.subject, false).replace(['\r', '\n'], " ");
        (subject, fill(&self.text, false), fill(&self.html, true))
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// TLS towards a mail server whose certificate chains to `ca_file` (PEM,
/// one or more certificates) and to nothing else; implicit TLS for
/// `smtps://`, STARTTLS otherwise (the configuration has checked that
/// an `smtp://` URL asks for it).
fn private_ca_tls(url: &str, ca_file: &Path) -> Result<Tls, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("smtp.url: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or("smtp.url: names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let pem = std::fs::read(ca_file)
        .map_err(|e| format!("smtp.ca_file: cannot read {}: {e}", ca_file.display()))?;
    let certificates = openssl::x509::X509::stack_from_pem(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            format!(
                "smtp.ca_file: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ca_file.display()
            )
        })?;
    let mut params =
        TlsParameters::builder(host.to_owned()).certificate_store(CertificateStore::None);
    for certificate in certificates {
        let der = certificate
            .to_der()
            .map_err(|e| format!("smtp.ca_file: {}: {e}", ca_file.display()))?;
        params = params.add_root_certificate(
            Certificate::from_der(der)
                .map_err(|e| format!("smtp.ca_file: {}: {e}", ca_file.display()))?,
        );
    }
    let params = params
        .build_native()
        .map_err(|e| format!("smtp.ca_file: {e}"))?;
    let opportunistic = parsed
        .query_pairs()
        .any(|(k, v)| k == "tls" && v == "opportunistic");
    Ok(match parsed.scheme() {
        "smtps" => Tls::Wrapper(params),
        _ if opportunistic => Tls::Opportunistic(params),
        _ => Tls::Required(params),
    })
}

/// The SMTP client and the templates.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pickup: Template,
    reminder: Template,
    /// How long before expiry the reminder goes (0: no reminders).
    pub reminder_before: ca_core::Duration,
}

impl Mailer {
    /// The mailer of `smtp` with the templates of `data_dir/mail/`;
    /// a bad address, URL or template file fails start-up, naming it.
    pub fn new(smtp: &ca_core::SmtpConfig, data_dir: &Path) -> Result<Self, ca_core::Error> {
        let config = |m: String| ca_core::Error::Config(m);
        let from: Mailbox = smtp.from.parse().map_err(|e| {
            config(format!(
                "smtp.from: \"{}\" is not a mail address ({e})",
                smtp.from.escape_debug()
            ))
        })?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url)
            .map_err(|e| config(format!("smtp.url: {e}")))?
            .timeout(Some(StdDuration::from_secs(10)));
        if let Some(ca_file) = &smtp.ca_file {
            builder = builder.tls(private_ca_tls(&smtp.url, ca_file).map_err(config)?);
        }
        let transport = builder.build();
        let dir = data_dir.join("mail");
        Ok(Mailer {
            transport,
            from,
            pickup: Template::load(&dir, "pickup", [PICKUP_SUBJECT, PICKUP_TEXT, PICKUP_HTML])
                .map_err(config)?,
            reminder: Template::load(
                &dir,
                "reminder",
                [REMINDER_SUBJECT, REMINDER_TEXT, REMINDER_HTML],
            )
            .map_err(config)?,
            reminder_before: smtp.reminder_before,
        })
    }

    async fn send(&self, to: &str, rendered: (String, String, String)) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("bad recipient address: {e}"))?;
        let (subject, text, html) = rendered;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }

    /// Mails the pickup link.
    pub async fn send_pickup(
        &self,
        to: &str,
        tenant: &str,
        admin: &str,
        url: &str,
        expires_at: &str,
    ) -> Result<(), String> {
        let rendered = self.pickup.render(&[
            ("tenant", tenant),
            ("admin", admin),
            ("url", url),
            ("expires_at", expires_at),
        ]);
        self.send(to, rendered).await
    }

    /// Mails an expiry reminder.
    pub async fn send_reminder(&self, due: &ca_core::ReminderDue) -> Result<(), String> {
        let not_after = ca_core::rfc3339(due.not_after);
        let rendered = self.reminder.render(&[
            ("tenant", &due.tenant),
            ("admin", &due.admin),
            ("serial", &due.serial),
            ("not_after", &not_after),
        ]);
        self.send(&due.email, rendered).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_escape() {
        let t = Template {
            subject: "for {{tenant}}".into(),
            text: "{{url}} {{admin}}".into(),
            html: "<b>{{admin}}</b>".into(),
        };
        let (s, text, html) =
            t.render(&[("tenant", "t\r\nBcc: x"), ("admin", "<a>"), ("url", "u")]);
        assert_eq!(s, "for t  Bcc: x");
        assert_eq!(text, "u <a>");
        assert_eq!(html, "<b>&lt;a&gt;</b>");
    }
}
