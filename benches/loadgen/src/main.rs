//! `ca-loadgen`: the benchmark harness's keep-alive HTTP/1.1 load generator.
//!
//! wrk measures most rows of BENCHMARKS.md. Over TLS it uses OpenSSL 3.0 as
//! its client, which costs about twice per request what our rustls listener
//! costs the server, on the same two cores; the rate ratio "over TLS ÷ over
//! HTTP" then says more about wrk than about the server. This generator does
//! what wrk does for one fixed request (N connections kept alive, each sending
//! the next request when the answer is in, for a fixed time) with rustls as
//! its TLS client, so that both rates are measured with a client whose TLS is
//! as cheap as the server's. It reports its own CPU per request, so a reader
//! can see what the client took from the shared cores.
//!
//! Output: one line `JSON {...}` with the fields of the harness's wrk script
//! (`requests`, `duration_us`, `errors`, `non2xx`, `p50_us`, `p99_us`) plus
//! `cpu_us` (this process, user + system) and `tls` (the negotiated suite).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head or body accepted; a larger one is an error.
const MAX_RESPONSE: usize = 64 << 20;

/// Keep-alive HTTP/1.1 load for a fixed time, over plain TCP or rustls.
///
/// Example: `ca-loadgen --url https://127.0.0.1:8443/ocsp --cacert ca.pem
/// --body-file req.der --header 'Content-Type: application/ocsp-request'
/// --connections 32 --threads 2 --duration 5`
#[derive(Parser)]
#[command(version)]
struct Args {
    /// `http://host:port/path` or `https://…`; `{n}` in the path is replaced
    /// by a number unique to each request (e.g. a new admin per issuance).
    #[arg(long)]
    url: String,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// File whose bytes are sent as the body of every request.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Extra request header, `Name: value`; may be repeated.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Name of an environment variable holding a bearer token (kept out of
    /// argv, where other users of the machine could read it).
    #[arg(long)]
    bearer_env: Option<String>,
    /// PEM file of the CA that issued the server's certificate (https only).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// Connections kept open, spread over the threads.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Threads, each running its own event loop.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds before a request without an answer counts as an error.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// Where to connect and what to send.
struct Target {
    addr: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The request up to the path, the rest after it; the path may hold `{n}`.
    head: String,
    path: String,
    tail: Vec<u8>,
}

impl Target {
    fn from_args(args: &Args) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = args.url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = args.url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "--url {}: must start with http:// or https://",
                args.url
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if https { 443 } else { 80 };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("--url {}: cannot resolve {with_port}: {e}", args.url))?
            .next()
            .ok_or_else(|| format!("--url {}: {with_port} has no address", args.url))?;
        let host = with_port.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = if https {
            Some(connector(args, host)?)
        } else {
            None
        };
        let body = match &args.body_file {
            Some(path) => {
                std::fs::read(path).map_err(|e| format!("--body-file {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        let head = format!("{} ", args.method);
        let mut tail = format!(
            " HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for header in &args.headers {
            if !header.contains(':') || header.contains('\r') || header.contains('\n') {
                return Err(format!("--header {header:?}: expected `Name: value`"));
            }
            tail.push_str(header);
            tail.push_str("\r\n");
        }
        if let Some(var) = &args.bearer_env {
            let token = std::env::var(var)
                .map_err(|_| format!("--bearer-env {var}: the variable is not set"))?;
            tail.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        tail.push_str("\r\n");
        let mut tail = tail.into_bytes();
        tail.extend_from_slice(&body);
        Ok(Target {
            addr,
            tls,
            head,
            path: path.to_string(),
            tail,
        })
    }

    /// The bytes of one request; `n` names it when the path asks for `{n}`.
    fn request(&self, n: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.path.len() + self.tail.len());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(self.path.replace("{n}", n).as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

fn connector(
    args: &Args,
    host: &str,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let path = args
        .cacert
        .as_ref()
        .ok_or("an https:// --url needs --cacert (the CA that issued the server's certificate)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--cacert {}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| format!("--url host {host:?}: {e}"))?,
    };
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// What one thread measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    non2xx: u64,
    suite: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.non2xx += other.non2xx;
        self.suite = self.suite.take().or(other.suite);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.connections == 0
        || args.threads == 0
        || !positive(args.duration)
        || !positive(args.timeout)
    {
        eprintln!(
            "ca-loadgen: --connections, --threads, --duration and --timeout must be above zero"
        );
        return ExitCode::from(2);
    }
    let target = match Target::from_args(&args) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("ca-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = args.threads.min(args.connections);
    let timeout = Duration::from_secs_f64(args.timeout);
    let cpu_before = cpu_us();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.duration);
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let target = Arc::clone(&target);
                // Connections spread evenly: thread t gets every `threads`-th.
                let conns = (t..args.connections).step_by(threads).count();
                scope.spawn(move || run_thread(t, conns, target, until, timeout))
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(tally) => total.merge(tally),
                Err(_) => total.errors += 1,
            }
        }
    });
    let elapsed = start.elapsed();
    let cpu = cpu_us().saturating_sub(cpu_before);
    total.latencies_us.sort_unstable();
    let requests = total.latencies_us.len() as u64;
    println!(
        "JSON {{\"requests\":{},\"duration_us\":{},\"errors\":{},\"non2xx\":{},\"p50_us\":{},\"p99_us\":{},\"cpu_us\":{},\"tls\":\"{}\"}}",
        requests,
        elapsed.as_micros(),
        total.errors,
        total.non2xx,
        percentile(&total.latencies_us, 50.0),
        percentile(&total.latencies_us, 99.0),
        cpu,
        total.suite.as_deref().unwrap_or("none"),
    );
    if requests == 0 {
        eprintln!(
            "ca-loadgen: no request was answered ({} errors); is the server up at {}?",
            total.errors, args.url
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// This process's user + system CPU time, in microseconds.
fn cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

fn run_thread(
    thread: usize,
    conns: usize,
    target: Arc<Target>,
    until: Instant,
    timeout: Duration,
) -> Tally {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ca-loadgen: cannot start an event loop: {e}");
            return Tally {
                errors: 1,
                ..Tally::default()
            };
        }
    };
    runtime.block_on(async move {
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let target = Arc::clone(&target);
                tokio::spawn(connection(format!("{thread}-{c}"), target, until, timeout))
            })
            .collect();
        let mut tally = Tally::default();
        for task in tasks {
            match task.await {
                Ok(t) => tally.merge(t),
                Err(_) => tally.errors += 1,
            }
        }
        tally
    })
}

/// One connection's loop: connect, send, read the answer, repeat until
/// `until`; any failure is counted and the connection opened again.
async fn connection(name: String, target: Arc<Target>, until: Instant, timeout: Duration) -> Tally {
    let mut tally = Tally::default();
    let fixed = (!target.path.contains("{n}")).then(|| target.request(""));
    let mut counter = 0u64;
    while Instant::now() < until {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                tally.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let result = match &target.tls {
            None => {
                let mut conn = Conn::new(stream);
                conn.serve(
                    &target,
                    fixed.as_deref(),
                    &name,
                    &mut counter,
                    until,
                    timeout,
                    &mut tally,
                )
                .await
            }
            Some((connector, server_name)) => {
                match tokio::time::timeout(timeout, connector.connect(server_name.clone(), stream))
                    .await
                {
                    Ok(Ok(tls)) => {
                        if tally.suite.is_none() {
                            let session = tls.get_ref().1;
                            tally.suite = session
                                .negotiated_cipher_suite()
                                .map(|s| format!("{:?}", s.suite()));
                        }
                        let mut conn = Conn::new(tls);
                        conn.serve(
                            &target,
                            fixed.as_deref(),
                            &name,
                            &mut counter,
                            until,
                            timeout,
                            &mut tally,
                        )
                        .await
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )),
                }
            }
        };
        if result.is_err() {
            tally.errors += 1;
        }
    }
    tally
}

/// A connection and the bytes read from it but not yet consumed.
struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    len: usize,
}

/// What the harness needs to know of an answer.
struct Answer {
    status: u16,
    close: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Conn {
            io,
            buf: vec![0; 16 << 10],
            len: 0,
        }
    }

    /// Sends requests on this connection until `until`, or until it fails or
    /// the server closes it (`Ok` then: the caller reconnects).
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        target: &Target,
        fixed: Option<&[u8]>,
        name: &str,
        counter: &mut u64,
        until: Instant,
        timeout: Duration,
        tally: &mut Tally,
    ) -> io::Result<()> {
        loop {
            let sent = Instant::now();
            if sent >= until {
                return Ok(());
            }
            let built;
            let request = match fixed {
                Some(bytes) => bytes,
                None => {
                    *counter += 1;
                    built = target.request(&format!("{name}-{counter}"));
                    &built
                }
            };
            let answer = tokio::time::timeout(timeout, async {
                self.io.write_all(request).await?;
                self.io.flush().await?;
                self.answer().await
            })
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
            let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
            tally.latencies_us.push(micros);
            if !(200..300).contains(&answer.status) {
                tally.non2xx += 1;
            }
            if answer.close {
                return Ok(());
            }
        }
    }

    /// Reads more bytes; an end of stream here is an error (an answer was due).
    async fn fill(&mut self) -> io::Result<()> {
        if self.len == self.buf.len() {
            if self.buf.len() >= MAX_RESPONSE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "answer too large",
                ));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.io.read(&mut self.buf[self.len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.len += n;
        Ok(())
    }

    /// Reads one answer (Content-Length or chunked body) and drops its bytes.
    async fn answer(&mut self) -> io::Result<Answer> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[..self.len], b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| bad("answer head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad("answer has no status code"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let end = if chunked {
            self.chunked_end(head_end).await?
        } else {
            let length =
                length.ok_or_else(|| bad("answer has neither Content-Length nor chunks"))?;
            if length > MAX_RESPONSE {
                return Err(bad("answer too large"));
            }
            while self.len < head_end + length {
                self.fill().await?;
            }
            head_end + length
        };
        self.buf.copy_within(end..self.len, 0);
        self.len -= end;
        Ok(Answer { status, close })
    }

    /// The offset just past a chunked body that starts at `at` (no trailers).
    async fn chunked_end(&mut self, mut at: usize) -> io::Result<usize> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf[at..self.len], b"\r\n") {
                    break at + i;
                }
                self.fill().await?;
            };
            let size_text =
                std::str::from_utf8(&self.buf[at..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            if size > MAX_RESPONSE {
                return Err(bad("answer too large"));
            }
            at = line_end + 2 + size + 2;
            while self.len < at {
                self.fill().await?;
            }
            if size == 0 {
                return Ok(at);
            }
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Feeds `parts` to a connection one write at a time, so answers arrive
    /// split at awkward places, and reads `n` answers from it.
    async fn answers(parts: &[&[u8]], n: usize) -> io::Result<Vec<(u16, bool)>> {
        let (client, mut server) = tokio::io::duplex(64);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for part in parts {
                server.write_all(&part).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut conn = Conn::new(client);
        let mut out = Vec::new();
        for _ in 0..n {
            let a = conn.answer().await?;
            out.push((a.status, a.close));
        }
        writer.await.unwrap();
        assert_eq!(conn.len, 0, "bytes left over after the answers");
        Ok(out)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn content_length_answers_split_anywhere_are_read_whole() {
        let got = answers(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\n\r\nhel",
                b"loHTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            ],
            2,
        )
        .await
        .unwrap();
        assert_eq!(got, vec![(200, false), (503, false)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chunked_answers_and_connection_close_are_understood() {
        let got = answers(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n",
                b"5;ext=1\r\npedia\r\n0\r\n\r\n",
                b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
            ],
            2,
        )
        .await
        .unwrap();
        assert_eq!(got, vec![(200, false), (401, true)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn malformed_or_cut_answers_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                answers(&[bad], 1).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn percentiles_pick_the_rank_that_covers_the_share() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
