//! Test support: a throwaway `redis-server` on a free loopback port, killed on drop, and a
//! server that accepts connections and never answers.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on `127.0.0.1:port` without persistence.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// Starts one on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = RedisServer {
            child: Some(child),
            port,
        };
        wait_until_it_answers(port);
        server
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain synchronous connection for assertions.
    pub fn admin(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_connection().unwrap()
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGSTOP (`pause = true`) or SIGCONT: a stopped Redis keeps its connections
    /// open and answers nothing, like one stuck in a long command.
    pub fn pause(&self, pause: bool) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process only dies of SIGKILL, which `kill` sends; CONT anyway for tidiness.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls PING until `+PONG` (readiness, not timing), for at most 10 s.
fn wait_until_it_answers(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ping(port) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} never answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Accepts connections on a free loopback port and never reads or answers; returns its URL.
pub fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("redis://127.0.0.1:{port}/0")
}

/// Log lines captured by [`capture_logs`], from every test of the process.
static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A `log` backend that keeps every line, so tests can count a store's state changes.
struct CapturingLogger;

impl log::Log for CapturingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOG_LINES.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per process).
pub fn capture_logs() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CapturingLogger).expect("no other logger in the unit tests");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Captured lines that mention `needle` (tests use their server's URL: one port per test).
pub fn log_lines_with(needle: &str) -> Vec<String> {
    let lines = LOG_LINES.lock().unwrap();
    lines
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}
