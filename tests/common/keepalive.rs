//! A keep-alive HTTP/1.1 client that does not retry: what many real
//! clients do, and what upgrade and failover tests must not break.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A keep-alive load running in the background.
pub struct Load {
    /// Requests answered `200` so far, by every client.
    answered: Arc<AtomicUsize>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    /// Waits until `more` further requests were answered: the load has run
    /// through what came before. Panics after 20 s.
    pub fn wait_for_answers(&self, more: usize) {
        let target = self.answered.load(Relaxed) + more;
        let reached = || self.answered.load(Relaxed) >= target;
        assert!(
            super::wait_until(Duration::from_secs(20), reached),
            "the load got {} of {target} answers in 20 s",
            self.answered.load(Relaxed)
        );
    }

    /// Waits for the clients to stop; the successes and every error.
    pub fn join(self) -> std::thread::Result<(usize, Vec<String>)> {
        self.handle.join()
    }
}

/// Runs `clients` keep-alive clients against `port` until `stop` is set (or
/// 500,000 requests each); its [`Load::join`] gives the successes and every
/// error a client saw. A client whose request failed reconnects and goes on.
pub fn keep_alive_load(port: u16, clients: usize, stop: Arc<AtomicBool>) -> Load {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let handle = std::thread::spawn(move || {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut client = KeepAliveClient::new(port);
                    let (mut ok, mut errors) = (0usize, Vec::new());
                    for _ in 0..500_000 {
                        if stop.load(Relaxed) {
                            break;
                        }
                        match client.get() {
                            Ok(200) => {
                                ok += 1;
                                counter.fetch_add(1, Relaxed);
                            }
                            Ok(status) => errors.push(format!("status {status}")),
                            Err(e) => {
                                errors.push(e);
                                client.reset();
                            }
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        workers
            .into_iter()
            .fold((0, Vec::new()), |(ok, mut errors), worker| {
                let (o, e) = worker.join().expect("client thread");
                errors.extend(e);
                (ok + o, errors)
            })
    });
    Load { answered, handle }
}

/// A keep-alive client: sends GETs on one connection, reconnecting only
/// when the server closed it after a complete response.
pub struct KeepAliveClient {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAliveClient {
    /// Drops the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    pub fn new(port: u16) -> Self {
        KeepAliveClient { port, conn: None }
    }

    /// One request; `Err` is a request the client saw fail.
    pub fn get(&mut self) -> Result<u16, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut status_line = String::new();
        conn.read_line(&mut status_line)
            .map_err(|e| format!("read: {e}"))?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {status_line:?}"))?;
        let mut length = 0;
        let mut close = false;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)
                .map_err(|e| format!("read header: {e}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| format!("bad length {line}"))?;
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}
