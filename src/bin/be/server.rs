//! `be`: a small async HTTP/1.1 backend for demos and tests.
//!
//! It answers every request with `200 Hello From Backend Server NAME`,
//! `GET /health` with `200 ok`, and `GET /headers` with the request's own
//! headers (so tests can see what lb forwarded). It logs each request the way
//! the original challenge shows. Requests are parsed with `httparse`; the
//! socket handling is plain tokio so tests keep full control of the wire.
//!
//! # Faults
//! To test how lb copes with a misbehaving backend, `be` can be told to show
//! one [`Fault`] on every request except `GET /health`, which always answers
//! `200 ok` so health checks pass and the fault reaches clients: reset the
//! connection before or in the middle of the response, never answer, answer
//! one byte at a time or late, answer 500, or close a connection it said it
//! would keep open. With `fault_after_sigusr1` it answers normally until the
//! process gets SIGUSR1, then shows its fault: a backend that turns bad on
//! the same address, with the connections lb keeps to it, for tests that
//! must not free its port by restarting it.
//!
//! # Recording
//! With a record file, `be` appends one `METHOD PATH` line for each request it
//! parses (again except `GET /health`) before answering it, so a test can
//! read exactly which requests reached the backend (for example, that a
//! request smuggled inside another's body never did).
//!
//! The normal path stays cheap: the hello and health responses are built once
//! at start-up, and nothing is formatted per request unless logging or
//! recording is on.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::wire::{
    head_bytes, read_body, read_head, respond, response_bytes, route, Head, RequestHead,
};

/// How to run `be`.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// Name in the hello message; the port when `None`.
    pub name: Option<String>,
    /// Skip the per-request log lines (for load tests).
    pub quiet: bool,
    /// The misbehaviour shown on every request but `GET /health`.
    pub fault: Fault,
    /// Pause between the bytes of a response under [`Fault::Drip`].
    pub drip_interval: Duration,
    /// Wait before answering under [`Fault::Delay`].
    pub delay: Duration,
    /// Answer normally until SIGUSR1, then show `fault`.
    pub fault_after_sigusr1: bool,
    /// File to append `METHOD PATH` to for every request but `GET /health`.
    pub record: Option<PathBuf>,
}

/// A misbehaviour `be` shows on every request but `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Read the whole request, then reset the connection (TCP RST) without
    /// sending a byte.
    Reset,
    /// Send the status line, the headers and half the body, then reset the
    /// connection.
    ResetMid,
    /// Read the request and never answer; keep the connection open until the
    /// peer closes it.
    Hang,
    /// Send a correct response one byte at a time, `--drip-interval` apart.
    Drip,
    /// Wait `--delay`, then answer normally.
    Delay,
    /// Answer `500 Internal Server Error` with the body `error from NAME`.
    #[value(name = "status-500")]
    Status500,
    /// Answer normally with `Connection: keep-alive`, then close the
    /// connection anyway.
    CloseEarly,
}

impl std::fmt::Display for Fault {
    /// The name the command line knows this fault by.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => Ok(()),
        }
    }
}

/// A whole response built once, in its keep-alive and close variants.
struct Canned {
    keep_alive: Vec<u8>,
    close: Vec<u8>,
}

impl Canned {
    fn new(body: &[u8]) -> Self {
        Canned {
            keep_alive: response_bytes(200, "OK", body, true, false),
            close: response_bytes(200, "OK", body, false, false),
        }
    }

    fn get(&self, keep_alive: bool) -> &[u8] {
        if keep_alive {
            &self.keep_alive
        } else {
            &self.close
        }
    }
}

/// Appends one line per request to the record file.
struct Recorder {
    file: Mutex<File>,
}

impl Recorder {
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open record file {}: {e}", path.display()),
                )
            })?;
        Ok(Recorder {
            file: Mutex::new(file),
        })
    }

    /// Appends `METHOD PATH`. One small `write` on an unbuffered local file:
    /// done inline rather than on a blocking thread, and visible to other
    /// processes as soon as it returns.
    fn record(&self, head: &RequestHead) -> io::Result<()> {
        let line = format!("{} {}\n", head.method, head.path);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())?;
        file.flush()
    }
}

/// Shared, read-only state of a running `be`.
struct Backend {
    hello: String,
    hello_response: Canned,
    health_response: Canned,
    /// The body of a `status-500` answer.
    error_body: String,
    quiet: bool,
    fault: Fault,
    /// Whether `fault` shows now: from the start, or once SIGUSR1 came.
    faulty: AtomicBool,
    drip_interval: Duration,
    delay: Duration,
    recorder: Option<Recorder>,
}

/// What becomes of a connection after a request was answered.
enum After {
    /// Read the next request.
    KeepOpen,
    /// Close it normally (FIN).
    Close,
    /// Close it with a TCP RST.
    Reset,
}

impl After {
    /// Keep the connection open if the client asked to, close it otherwise.
    fn keep_open_if(keep_alive: bool) -> After {
        if keep_alive {
            After::KeepOpen
        } else {
            After::Close
        }
    }
}

/// Listens and serves until the process is stopped.
pub async fn serve(options: BackendOptions) -> io::Result<()> {
    let recorder = options.record.as_deref().map(Recorder::open).transpose()?;
    // Before the listening line a test waits for: a SIGUSR1 sent after it
    // finds the handler in place, not the default action (exit).
    let sigusr1 = if options.fault_after_sigusr1 {
        use tokio::signal::unix::{signal, SignalKind};
        Some(signal(SignalKind::user_defined1())?)
    } else {
        None
    };
    let listener = TcpListener::bind(SocketAddr::new(options.bind, options.port)).await?;
    // With `--port 0`, the port the kernel picked.
    let port = listener.local_addr()?.port();
    let name = options.name.unwrap_or_else(|| port.to_string());
    let hello = format!("Hello From Backend Server {name}\n");
    let backend = Arc::new(Backend {
        hello_response: Canned::new(hello.as_bytes()),
        health_response: Canned::new(b"ok\n"),
        hello,
        error_body: format!("error from {name}\n"),
        quiet: options.quiet,
        fault: options.fault,
        faulty: AtomicBool::new(sigusr1.is_none()),
        drip_interval: options.drip_interval,
        delay: options.delay,
        recorder,
    });
    let when = if sigusr1.is_some() {
        " after SIGUSR1"
    } else {
        ""
    };
    if options.fault == Fault::None {
        log::info!("be {name} listening on {}", listener.local_addr()?);
    } else {
        log::info!(
            "be {name} listening on {} with fault {}{when}",
            listener.local_addr()?,
            options.fault
        );
    }
    if let Some(mut sigusr1) = sigusr1 {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            while sigusr1.recv().await.is_some() {
                backend.faulty.store(true, Relaxed);
                log::info!("be {name} got SIGUSR1: fault {} from now on", backend.fault);
            }
        });
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            if let Err(e) = backend.serve_connection(stream, peer).await {
                log::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}

impl Backend {
    async fn serve_connection(&self, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY for {peer}: {e}");
        }
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let head = match read_head(&mut stream, &mut buf).await? {
                Head::Request(head) => head,
                Head::Closed => return Ok(()),
                Head::Bad(status) => return answer_bad_head(&mut stream, status).await,
            };
            buf.advance(head.len);
            let health = head.is_health_check();
            if let (Some(recorder), false) = (&self.recorder, health) {
                recorder.record(&head)?;
            }
            if !read_body(&mut stream, &mut buf, &head).await? {
                respond(&mut stream, 400, "Bad Request", b"", false, false).await?;
                return Ok(());
            }
            if !self.quiet {
                log_request(peer, &head);
            }
            let after = if health || !self.faulty.load(Relaxed) {
                self.answer_normally(&mut stream, &head).await?
            } else {
                self.answer_with_fault(&mut stream, &head).await?
            };
            match after {
                After::KeepOpen => {}
                After::Close => return Ok(()),
                After::Reset => return stream.set_zero_linger(), // dropping it sends the RST
            }
        }
    }

    /// The body of the normal answer to `head`.
    fn body(&self, head: &RequestHead) -> Cow<'_, [u8]> {
        match route(&head.path) {
            "/health" => Cow::Borrowed(b"ok\n"),
            "/headers" => Cow::Owned(
                head.headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {v}\n"))
                    .collect::<String>()
                    .into_bytes(),
            ),
            _ => Cow::Borrowed(self.hello.as_bytes()),
        }
    }

    /// The whole normal answer to `head`; prebuilt for the common requests.
    fn normal_response(&self, head: &RequestHead, keep_alive: bool) -> Cow<'_, [u8]> {
        match route(&head.path) {
            _ if head.head_only() => Cow::Owned(response_bytes(
                200,
                "OK",
                &self.body(head),
                keep_alive,
                true,
            )),
            "/health" => Cow::Borrowed(self.health_response.get(keep_alive)),
            "/headers" => Cow::Owned(response_bytes(
                200,
                "OK",
                &self.body(head),
                keep_alive,
                false,
            )),
            _ => Cow::Borrowed(self.hello_response.get(keep_alive)),
        }
    }

    async fn answer_normally(
        &self,
        stream: &mut TcpStream,
        head: &RequestHead,
    ) -> io::Result<After> {
        let keep_alive = head.keep_alive();
        stream
            .write_all(&self.normal_response(head, keep_alive))
            .await?;
        if !self.quiet {
            log::log!(level_of(head), "Replied with a hello message");
        }
        Ok(After::keep_open_if(keep_alive))
    }

    async fn answer_with_fault(
        &self,
        stream: &mut TcpStream,
        head: &RequestHead,
    ) -> io::Result<After> {
        match self.fault {
            Fault::None => self.answer_normally(stream, head).await,
            Fault::Reset => Ok(After::Reset),
            Fault::ResetMid => self.answer_half_then_reset(stream, head).await,
            Fault::Hang => {
                hang(stream).await?;
                Ok(After::Close)
            }
            Fault::Drip => {
                let keep_alive = head.keep_alive();
                let response = self.normal_response(head, keep_alive);
                drip(stream, &response, self.drip_interval).await?;
                Ok(After::keep_open_if(keep_alive))
            }
            Fault::Delay => {
                tokio::time::sleep(self.delay).await;
                self.answer_normally(stream, head).await
            }
            Fault::Status500 => {
                let keep_alive = head.keep_alive();
                let body = self.error_body.as_bytes();
                let reason = "Internal Server Error";
                respond(stream, 500, reason, body, keep_alive, head.head_only()).await?;
                Ok(After::keep_open_if(keep_alive))
            }
            Fault::CloseEarly => {
                stream.write_all(&self.normal_response(head, true)).await?;
                Ok(After::Close)
            }
        }
    }

    /// Sends the head (announcing the whole body) and half the body.
    async fn answer_half_then_reset(
        &self,
        stream: &mut TcpStream,
        head: &RequestHead,
    ) -> io::Result<After> {
        let body = self.body(head);
        let mut response = head_bytes(200, "OK", body.len(), head.keep_alive());
        if !head.head_only() {
            response.extend_from_slice(&body[..body.len() / 2]);
        }
        stream.write_all(&response).await?;
        Ok(After::Reset)
    }
}

/// Answers a request head that could not be parsed, and closes.
async fn answer_bad_head(stream: &mut TcpStream, status: u16) -> io::Result<()> {
    let reason = if status == 431 {
        "Request Header Fields Too Large"
    } else {
        "Bad Request"
    };
    respond(stream, status, reason, b"", false, false).await
}

/// Reads and discards whatever the peer sends until it closes the connection.
async fn hang(stream: &mut TcpStream) -> io::Result<()> {
    let mut scratch = [0u8; 4096];
    while stream.read(&mut scratch).await? != 0 {}
    Ok(())
}

/// Writes `bytes` one at a time, `interval` apart.
async fn drip(stream: &mut TcpStream, bytes: &[u8], interval: Duration) -> io::Result<()> {
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        stream.write_all(std::slice::from_ref(byte)).await?;
    }
    Ok(())
}

/// The challenge's view of a request: who sent it, the request line, the headers.
fn log_request(peer: SocketAddr, head: &RequestHead) {
    let version = if head.http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    let mut text = format!(
        "Received request from {}\n{} {} {version}",
        peer.ip(),
        head.method,
        head.path
    );
    for (name, value) in &head.headers {
        text.push_str(&format!("\n{name}: {value}"));
    }
    log::log!(level_of(head), "{text}");
}

/// Requests are logged at info, health checks at debug: one every interval
/// from every lb would bury the requests.
fn level_of(head: &RequestHead) -> log::Level {
    if head.is_probe() {
        log::Level::Debug
    } else {
        log::Level::Info
    }
}
