//! The access log: one line per request, as text or JSON, to stdout or a
//! file, written by a thread of its own so the request path only formats
//! the line and hands it over.
//!
//! The hand-over is a bounded channel: if the writer falls behind (a full
//! disk, a blocked pipe), lines are dropped and counted rather than
//! slowing requests. A file is reopened on `SIGUSR1`, for logrotate.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};

/// Lines waiting for the writer at most; beyond it lines are dropped.
const QUEUE_LINES: usize = 64 * 1024;

/// The running access log.
pub struct AccessLog {
    format: AccessLogFormat,
    lines: SyncSender<String>,
    /// Set by `SIGUSR1`: the writer reopens its file.
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// The access log, when one is configured.
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

/// Starts the writer thread for `config`; its file must open now.
pub fn start(config: &AccessLogConfig) -> io::Result<()> {
    let (sender, receiver) = sync_channel(QUEUE_LINES);
    let reopen = Arc::new(AtomicBool::new(false));
    let output = Output::open(&config.target)?;
    let writer_reopen = Arc::clone(&reopen);
    std::thread::Builder::new()
        .name("access log".into())
        .spawn(move || write_lines(receiver, output, writer_reopen))?;
    let log = AccessLog {
        format: config.format,
        lines: sender,
        reopen,
        dropped: AtomicU64::new(0),
    };
    if ACCESS_LOG.set(log).is_err() {
        log::warn!("the access log was already started");
    }
    Ok(())
}

impl AccessLog {
    /// The configured format.
    pub fn format(&self) -> AccessLogFormat {
        self.format
    }

    /// Hands a finished line (without its newline) to the writer.
    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            let dropped = self.dropped.fetch_add(1, Relaxed) + 1;
            if dropped.is_power_of_two() {
                log::warn!("access log writer is behind: {dropped} line(s) dropped so far");
            }
        }
    }
}

/// Bytes the writer buffers before writing.
const BUFFER_BYTES: usize = 256 * 1024;

/// Where lines go.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        path: PathBuf,
        file: BufWriter<File>,
    },
}

impl Output {
    fn open(target: &AccessLogTarget) -> io::Result<Output> {
        match target {
            AccessLogTarget::Stdout => Ok(Output::Stdout(BufWriter::with_capacity(
                BUFFER_BYTES,
                io::stdout(),
            ))),
            AccessLogTarget::File(path) => Ok(Output::File {
                path: path.clone(),
                file: BufWriter::with_capacity(
                    BUFFER_BYTES,
                    OpenOptions::new().create(true).append(true).open(path)?,
                ),
            }),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { file, .. } => file,
        }
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            let _ = file.flush();
            match OpenOptions::new().create(true).append(true).open(&*path) {
                Ok(new) => {
                    *file = BufWriter::with_capacity(BUFFER_BYTES, new);
                    log::info!("access log {} reopened", path.display());
                }
                Err(e) => log::error!("cannot reopen the access log {}: {e}", path.display()),
            }
        }
    }
}

/// How often the writer wakes to write what arrived and flush it.
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// The writer thread. It wakes on its own every [`WRITE_EVERY`] rather than
/// on each line: a request handing over a line never wakes a thread (no
/// syscall), and lines go out in large writes. A line is at most about
/// 100 ms late.
fn write_lines(lines: Receiver<String>, mut output: Output, reopen: Arc<AtomicBool>) {
    loop {
        std::thread::sleep(WRITE_EVERY);
        let out = output.writer();
        loop {
            match lines.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        if reopen.swap(false, Relaxed) {
            output.reopen();
        }
    }
}

/// A background service that asks the writer to reopen its file on `SIGUSR1`.
pub struct ReopenOnUsr1;

#[async_trait]
impl BackgroundService for ReopenOnUsr1 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(log) = access_log() else {
            return;
        };
        let mut signals =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(signals) => signals,
                Err(e) => {
                    log::error!(
                        "cannot listen for SIGUSR1; the access log will not be reopened: {e}"
                    );
                    return;
                }
            };
        loop {
            tokio::select! {
                received = signals.recv() => {
                    if received.is_none() {
                        return;
                    }
                    log.reopen.store(true, Relaxed);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// What one access line says about a request. Serialized as the JSON
/// line by serde's derive: no intermediate map, one allocation.
#[derive(serde::Serialize)]
pub struct Entry<'a> {
    #[serde(skip)]
    pub time: Option<SystemTime>,
    pub client: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    /// The TLS version, when the client came over TLS.
    pub tls_version: Option<&'a str>,
    /// The name the client asked for in its TLS handshake.
    pub sni: Option<&'a str>,
    /// The route that matched, when the config has routes.
    pub route: Option<&'a str>,
    /// The upstream (pool) it went to, when the config has routes.
    pub upstream_name: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: usize,
    #[serde(serialize_with = "optional_display")]
    pub backend: Option<std::net::SocketAddr>,
    #[serde(rename = "upstream_connect_ms", serialize_with = "optional_millis")]
    pub connect: Option<Duration>,
    #[serde(rename = "upstream_response_ms", serialize_with = "optional_millis")]
    pub upstream: Option<Duration>,
    #[serde(rename = "total_ms", serialize_with = "millis_of")]
    pub total: Duration,
    pub retries: usize,
    pub request_id: &'a str,
    /// The W3C trace id, with `headers.trace_context`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
}

fn optional_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_some(&millis(*d))
}

fn millis_of<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_some(&millis(Some(*d)))
}

fn optional_display<S: serde::Serializer>(
    addr: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => s.collect_str(addr),
        None => s.serialize_none(),
    }
}

/// RFC 3339 time with milliseconds. The calendar part is computed once a
/// second per thread; the rest is the milliseconds.
fn rfc3339_millis(time: SystemTime, out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        // (whole seconds since the epoch, "2026-11-25T13:39:17")
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let full = humantime::format_rfc3339_seconds(time).to_string();
            cached.1 = full.trim_end_matches('Z').to_string();
            cached.0 = seconds;
        }
        out.push_str(&cached.1);
    });
    let _ = write!(out, ".{:03}Z", since_epoch.subsec_millis());
}

impl Entry<'_> {
    /// The line in `format`, stamped with `self.time` (now when unset).
    pub fn line(&self, format: AccessLogFormat) -> String {
        let mut line = String::with_capacity(320);
        let mut time = String::with_capacity(24);
        rfc3339_millis(self.time.unwrap_or_else(SystemTime::now), &mut time);
        match format {
            AccessLogFormat::Json => {
                // {"time":"...", then the serialized fields without their opening brace.
                let fields = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
                let _ = write!(line, "{{\"time\":\"{time}\"");
                if fields.len() > 2 {
                    line.push(',');
                }
                line.push_str(&fields[1..]);
            }
            AccessLogFormat::Text => {
                line.push_str(&time);
                line.push(' ');
                self.write_text_fields(&mut line);
            }
        }
        line
    }

    /// The text format without its time: what goes through `RUST_LOG`
    /// (target `lb::access`), whose logger stamps its own time.
    pub fn text_without_time(&self) -> String {
        let mut line = String::with_capacity(300);
        self.write_text_fields(&mut line);
        line
    }

    /// The text format's fields, left to right: the one place they are
    /// written.
    fn write_text_fields(&self, line: &mut String) {
        let ms = |d: Option<Duration>, out: &mut String| match millis(d) {
            Some(m) => {
                let _ = write!(out, "{m}");
            }
            None => out.push('-'),
        };
        line.push_str(self.client);
        line.push_str(" \"");
        push_quoted(line, self.method);
        line.push(' ');
        push_quoted(line, self.path);
        let _ = write!(
            line,
            " {}\" {} {} backend=",
            self.protocol, self.status, self.bytes_sent
        );
        match self.backend {
            Some(b) => {
                let _ = write!(line, "{b}");
            }
            None => line.push('-'),
        }
        line.push_str(" connect_ms=");
        ms(self.connect, line);
        line.push_str(" upstream_ms=");
        ms(self.upstream, line);
        line.push_str(" total_ms=");
        ms(Some(self.total), line);
        let _ = write!(
            line,
            " retries={} request_id={}",
            self.retries, self.request_id
        );
        // Only TLS requests carry these, so plain HTTP lines stay as they were.
        if let Some(version) = self.tls_version {
            let _ = write!(line, " tls={version} sni={}", self.sni.unwrap_or("-"));
        }
        if let Some(trace_id) = self.trace_id {
            let _ = write!(line, " trace_id={trace_id}");
        }
        // Likewise only configs with routes.
        if let Some(route) = self.route {
            let _ = write!(
                line,
                " route={route} upstream={}",
                self.upstream_name.unwrap_or("-")
            );
        }
    }
}

/// Whether a byte of a quoted text field is written as `\xHH`: `"`, `\`,
/// and every byte that is not printable ASCII (controls, DEL, each byte
/// of a non-ASCII character), as nginx escapes its log fields.
fn needs_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte)
}

/// Writes `field` (a client's method or path) into a quoted field of the
/// text format with [`needs_escape`] bytes as `\xHH`, so a client cannot
/// end the quotes and forge the fields after them. A field with none is
/// copied whole after one scan.
fn push_quoted(line: &mut String, field: &str) {
    if !field.bytes().any(needs_escape) {
        line.push_str(field);
        return;
    }
    for byte in field.bytes() {
        if needs_escape(byte) {
            let _ = write!(line, "\\x{byte:02X}");
        } else {
            line.push(char::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: Some(std::time::UNIX_EPOCH + Duration::from_millis(1_764_077_957_427)),
            client: "127.0.0.1",
            method: "GET",
            path: "/a?b=1",
            protocol: "HTTP/1.1",
            tls_version: None,
            sni: None,
            route: None,
            upstream_name: None,
            status: 200,
            bytes_sent: 31,
            backend: Some("127.0.0.1:8080".parse().unwrap()),
            connect: Some(Duration::from_micros(150)),
            upstream: Some(Duration::from_micros(1500)),
            total: Duration::from_micros(2000),
            retries: 1,
            request_id: "abc",
            trace_id: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let line: serde_json::Value =
            serde_json::from_str(&entry().line(AccessLogFormat::Json)).unwrap();
        assert_eq!(line["status"], 200);
        assert_eq!(line["backend"], "127.0.0.1:8080");
        assert_eq!(line["upstream_connect_ms"], 0.15);
        assert_eq!(line["total_ms"], 2.0);
        assert_eq!(line["request_id"], "abc");
        assert_eq!(line["time"], "2025-11-25T13:39:17.427Z");
        assert_eq!(line["upstream_response_ms"], 1.5);
    }

    #[test]
    fn tls_requests_name_their_version_and_sni() {
        let tls = Entry {
            protocol: "HTTP/2",
            tls_version: Some("TLSv1.3"),
            sni: Some("a.test"),
            ..entry()
        };
        assert!(tls
            .text_without_time()
            .ends_with("request_id=abc tls=TLSv1.3 sni=a.test"));
        let json: serde_json::Value =
            serde_json::from_str(&tls.line(AccessLogFormat::Json)).unwrap();
        assert_eq!(json["tls_version"], "TLSv1.3");
        assert_eq!(json["sni"], "a.test");
        assert_eq!(json["protocol"], "HTTP/2");
    }

    #[test]
    fn routed_requests_name_their_route_and_upstream() {
        let routed = Entry {
            route: Some("routes[1]"),
            upstream_name: Some("api"),
            ..entry()
        };
        assert!(routed
            .text_without_time()
            .ends_with("request_id=abc route=routes[1] upstream=api"));
        let json: serde_json::Value =
            serde_json::from_str(&routed.line(AccessLogFormat::Json)).unwrap();
        assert_eq!(json["route"], "routes[1]");
        assert_eq!(json["upstream_name"], "api");
    }

    #[test]
    fn quoted_fields_escape_what_could_forge_fields() {
        let forged = Entry {
            method: "GE\tT",
            path: "/a\" 200 0 backend=x \\ \r\n\u{7f}é",
            ..entry()
        };
        let line = forged.text_without_time();
        assert!(
            line.starts_with(
                "127.0.0.1 \"GE\\x09T /a\\x22 200 0 backend=x \\x5C \\x0D\\x0A\\x7F\\xC3\\xA9 HTTP/1.1\" 200 31 backend=127.0.0.1:8080"
            ),
            "{line}"
        );
        assert_eq!(line.matches('"').count(), 2, "{line}");
    }

    #[test]
    fn text_lines_read_left_to_right() {
        let line = entry().line(AccessLogFormat::Text);
        assert_eq!(
            line,
            "2025-11-25T13:39:17.427Z 127.0.0.1 \"GET /a?b=1 HTTP/1.1\" 200 31 backend=127.0.0.1:8080 connect_ms=0.15 upstream_ms=1.5 total_ms=2 retries=1 request_id=abc"
        );
    }
}
