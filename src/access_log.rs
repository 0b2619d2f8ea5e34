//! The access log: one line per request, as text or JSON, to stdout or a
//! file, written by a thread of its own so the request path only formats
//! the line and hands it over.
//!
//! The hand-over is a bounded channel: if the writer falls behind (a full
//! disk, a blocked pipe), lines are dropped and counted rather than
//! slowing requests. A file is reopened on `SIGUSR1`, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// Where lines go.
enum Output {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        file: BufWriter<File>,
    },
}

impl Output {
    fn open(target: &AccessLogTarget) -> io::Result<Output> {
        match target {
            AccessLogTarget::Stdout => Ok(Output::Stdout(io::stdout())),
            AccessLogTarget::File(path) => Ok(Output::File {
                path: path.clone(),
                file: BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?),
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
                    *file = BufWriter::new(new);
                    log::info!("access log {} reopened", path.display());
                }
                Err(e) => log::error!("cannot reopen the access log {}: {e}", path.display()),
            }
        }
    }
}

/// The writer thread: writes what arrives, flushes when the queue is empty.
fn write_lines(lines: Receiver<String>, mut output: Output, reopen: Arc<AtomicBool>) {
    loop {
        match lines.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let out = output.writer();
                let _ = writeln!(out, "{line}");
                while let Ok(line) = lines.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
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

/// What one access line says about a request.
pub struct Entry<'a> {
    pub client: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_sent: usize,
    pub backend: Option<std::net::SocketAddr>,
    pub connect: Option<Duration>,
    pub upstream: Option<Duration>,
    pub total: Duration,
    pub retries: usize,
    pub request_id: &'a str,
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
}

impl Entry<'_> {
    /// The line in `format`, stamped with the current time.
    pub fn line(&self, format: AccessLogFormat) -> String {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        match format {
            AccessLogFormat::Json => serde_json::json!({
                "time": time.to_string(),
                "client": self.client,
                "method": self.method,
                "path": self.path,
                "protocol": self.protocol,
                "status": self.status,
                "bytes_sent": self.bytes_sent,
                "backend": self.backend.map(|b| b.to_string()),
                "upstream_connect_ms": millis(self.connect),
                "upstream_response_ms": millis(self.upstream),
                "total_ms": millis(Some(self.total)),
                "retries": self.retries,
                "request_id": self.request_id,
            })
            .to_string(),
            AccessLogFormat::Text => {
                let ms = |d: Option<Duration>| {
                    millis(d).map_or_else(|| "-".to_string(), |m| m.to_string())
                };
                format!(
                    "{time} {} \"{} {} {}\" {} {} backend={} connect_ms={} upstream_ms={} total_ms={} retries={} request_id={}",
                    self.client,
                    self.method,
                    self.path,
                    self.protocol,
                    self.status,
                    self.bytes_sent,
                    self.backend.map_or_else(|| "-".to_string(), |b| b.to_string()),
                    ms(self.connect),
                    ms(self.upstream),
                    ms(Some(self.total)),
                    self.retries,
                    self.request_id
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: "127.0.0.1",
            method: "GET",
            path: "/a?b=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_sent: 31,
            backend: Some("127.0.0.1:8080".parse().unwrap()),
            connect: Some(Duration::from_micros(150)),
            upstream: Some(Duration::from_micros(1500)),
            total: Duration::from_micros(2000),
            retries: 1,
            request_id: "abc",
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
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_read_left_to_right() {
        let line = entry().line(AccessLogFormat::Text);
        assert!(line.contains(" 127.0.0.1 \"GET /a?b=1 HTTP/1.1\" 200 31 backend=127.0.0.1:8080 connect_ms=0.15 upstream_ms=1.5 total_ms=2 retries=1 request_id=abc"), "{line}");
    }
}
