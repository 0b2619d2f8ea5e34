//! Helpers for the TLS and HTTP/2 tests: certificates made at test time
//! with the `openssl` CLI, and the real clients (`openssl s_client`, `curl`,
//! `h2load`) run with a time limit, their output returned for the test to
//! judge. Every external command runs under coreutils' `timeout`, so a
//! client that hangs fails its test instead of stalling the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How long one client command may run, in seconds.
const COMMAND_LIMIT: &str = "30";

/// Whether `tool` can be run (`tool` with `version_arg` starts).
fn installed(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// True when every tool in `tools` is installed; otherwise prints
/// `skipped: TOOL is not installed` and returns false, for the test to
/// return early.
pub fn tools_installed(tools: &[&str]) -> bool {
    for tool in tools {
        let version_arg = if *tool == "openssl" {
            "version"
        } else {
            "--version"
        };
        if !installed(tool, version_arg) {
            let package = match *tool {
                "h2load" => "nghttp2-client",
                other => other,
            };
            super::skip_without(&format!(
                "{tool} is not installed (apt-get install {package})"
            ));
            return false;
        }
    }
    true
}

/// Runs `program` with `args` under `timeout`, stdin empty, and returns
/// what it printed and how it ended.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", COMMAND_LIMIT, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Stdout and stderr of `output`, for assertions and failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `openssl` with `args` and asserts it succeeded; returns its stdout.
fn openssl(args: &[&str]) -> String {
    let output = run("openssl", args);
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Makes a self-signed ECDSA P-256 certificate valid for 30 days, with
/// subject `CN=name` and the DNS names `sans`, as `dir/name.pem` and
/// `dir/name.key`. Each call gets a new key and a random serial.
pub fn make_cert(dir: &Path, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let san = sans
        .iter()
        .map(|s| format!("DNS:{s}"))
        .collect::<Vec<_>>()
        .join(",");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        &format!("subjectAltName={san}"),
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
    ]);
    (cert, key)
}

/// A certificate and the CA of its own that signed it, made by
/// [`make_ca_signed_cert`].
pub struct SignedCert {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA (`dir/NAME-ca.pem`, key `NAME-ca.key`) and a P-256
/// certificate it signed for `CN=name` with the subject alternative names
/// `san` (`DNS:backend.test`, `IP:127.0.0.1`), serial `serial` (hex, for
/// an OCSP index to name it): `dir/NAME.pem`, key `NAME.key`. Both are
/// valid for 30 days.
pub fn make_ca_signed_cert(dir: &Path, name: &str, san: &str, serial: &str) -> SignedCert {
    let file = |suffix: &str| dir.join(format!("{name}{suffix}"));
    let signed = SignedCert {
        ca: file("-ca.pem"),
        ca_key: file("-ca.key"),
        cert: file(".pem"),
        key: file(".key"),
    };
    let (csr, ext) = (file(".csr"), file(".ext"));
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_subject = format!("/CN={name}-ca");
    let ca_args = [
        "-days",
        "30",
        "-subj",
        &ca_subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign,cRLSign",
        "-keyout",
        path(&signed.ca_key),
        "-out",
        path(&signed.ca),
    ];
    openssl(&[&["req", "-x509"][..], &new_key, &ca_args].concat());
    let subject = format!("/CN={name}");
    let csr_args = [
        "-subj",
        &subject,
        "-keyout",
        path(&signed.key),
        "-out",
        path(&csr),
    ];
    openssl(&[&["req", "-new"][..], &new_key, &csr_args].concat());
    std::fs::write(&ext, format!("subjectAltName={san}\n")).expect("write the extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        path(&csr),
        "-CA",
        path(&signed.ca),
        "-CAkey",
        path(&signed.ca_key),
        "-set_serial",
        &format!("0x{serial}"),
        "-days",
        "30",
        "-extfile",
        path(&ext),
        "-out",
        path(&signed.cert),
    ]);
    signed
}

/// Makes a certificate for `name` that expired in 2020, signed by its own
/// key, as `dir/name.pem` and `dir/name.key`. `openssl req -days` cannot go
/// back in time and OpenSSL 3.0's `x509` has no `-not_after`, but `openssl
/// ca` takes explicit `-startdate`/`-enddate`, so it signs the request
/// with a throw-away CA database.
pub fn make_expired_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let ca = dir.join(format!("{name}-ca"));
    std::fs::create_dir_all(&ca).expect("create the CA directory");
    std::fs::write(ca.join("index.txt"), "").expect("write index.txt");
    let config = ca.join("ca.cnf");
    std::fs::write(
        &config,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndir = {}\ndatabase = $dir/index.txt\n\
             new_certs_dir = $dir\nrand_serial = yes\ndefault_md = sha256\n\
             policy = anything\ncopy_extensions = copy\n\
             [anything]\ncommonName = supplied\n",
            ca.display()
        ),
    )
    .expect("write the CA config");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        &format!("subjectAltName=DNS:{name}"),
        "-keyout",
        path(&key),
        "-out",
        path(&csr),
    ]);
    openssl(&[
        "ca",
        "-batch",
        "-notext",
        "-selfsign",
        "-config",
        path(&config),
        "-keyfile",
        path(&key),
        "-in",
        path(&csr),
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200201000000Z",
        "-out",
        path(&cert),
    ]);
    (cert, key)
}

/// Makes a new P-256 key (matching no certificate) at `dir/name.key`.
pub fn make_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&key),
    ]);
    key
}

/// The serial of the certificate in the PEM file `cert`, as `serial=HEX`.
pub fn serial_of_file(cert: &Path) -> String {
    openssl(&["x509", "-noout", "-serial", "-in", path(cert)])
        .trim()
        .to_string()
}

/// `path` as a `&str` (the test directories are UTF-8).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// What `openssl s_client` saw of one handshake.
#[derive(Debug)]
pub struct Handshake {
    /// Whether s_client exited 0 (the handshake completed).
    pub ok: bool,
    /// The server certificate's subject (`subject=CN = a.test`), when one
    /// came.
    pub subject: Option<String>,
    /// Its serial (`serial=HEX`), when one came.
    pub serial: Option<String>,
    /// The negotiated protocol (`TLSv1.3`), when the handshake completed.
    pub protocol: Option<String>,
    /// Everything s_client printed, for failure messages.
    pub output: String,
}

/// Connects to 127.0.0.1:`port` with `openssl s_client` and `args` (e.g.
/// `["-servername", "x.b.test"]`, `["-tls1_2"]`), closes at once, and
/// reports what the server sent. Without `-servername` in `args` no SNI is
/// sent.
pub fn s_client(port: u16, args: &[&str]) -> Handshake {
    let connect = format!("127.0.0.1:{port}");
    let mut all = vec!["s_client", "-connect", &connect];
    if !args.contains(&"-servername") {
        all.push("-noservername");
    }
    all.extend_from_slice(args);
    let output = run("openssl", &all);
    let out = text(&output);
    let (subject, serial) = match pem_block(&out) {
        Some(pem) => certificate_subject_and_serial(&pem),
        None => (None, None),
    };
    // "New, TLSv1.3, Cipher is ...", or "New, (NONE), ..." when the
    // handshake failed (the session's "Protocol :" line then names what
    // the client tried, so it is no evidence).
    let protocol = out
        .lines()
        .find_map(|l| l.strip_prefix("New, ")?.split(',').next())
        .map(str::trim)
        .filter(|p| p.starts_with("TLS"))
        .map(str::to_string);
    Handshake {
        ok: output.status.success(),
        subject,
        serial,
        protocol,
        output: out,
    }
}

/// The first PEM certificate in `text`.
fn pem_block(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[start..].find(end_marker)? + start + end_marker.len();
    Some(format!("{}\n", &text[start..end]))
}

/// The subject and serial of the PEM certificate `pem`.
fn certificate_subject_and_serial(pem: &str) -> (Option<String>, Option<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("peer.pem");
    std::fs::write(&file, pem).expect("write the peer certificate");
    let out = openssl(&["x509", "-noout", "-subject", "-serial", "-in", path(&file)]);
    let find = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.trim().to_string())
    };
    (find("subject="), find("serial="))
}

/// Runs `curl -sS --max-time 20` with `args`; returns its output.
pub fn curl(args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    run("curl", &all)
}

/// What h2load reported.
#[derive(Debug, Default)]
pub struct H2loadReport {
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses with a 2xx status.
    pub status_2xx: u64,
    /// Everything h2load printed.
    pub output: String,
}

impl H2loadReport {
    /// Asserts that every request h2load sent was answered with a 2xx:
    /// nothing it put on the wire was lost. (Requests it never sent, such
    /// as those it had left when a server's GOAWAY ended its connection,
    /// are h2load's "failed" without being started.)
    pub fn assert_every_started_request_succeeded(&self) {
        assert!(
            self.started == self.done
                && self.done == self.succeeded
                && self.succeeded == self.status_2xx,
            "requests sent but not answered 2xx (started {}, done {}, succeeded {}, 2xx {}):\n{}",
            self.started,
            self.done,
            self.succeeded,
            self.status_2xx,
            self.output
        );
    }

    /// Asserts h2load got what it asked for: `expected` requests (or, with
    /// None, more than 100) succeeded with 2xx, none failed, errored or
    /// timed out.
    pub fn assert_clean(&self, expected: Option<u64>) {
        match expected {
            Some(n) => assert_eq!(self.succeeded, n, "succeeded:\n{}", self.output),
            None => assert!(
                self.succeeded > 100,
                "too little load to test anything:\n{}",
                self.output
            ),
        }
        assert_eq!(
            (self.failed, self.errored, self.timeout),
            (0, 0, 0),
            "failed, errored, timeout:\n{}",
            self.output
        );
        assert_eq!(self.status_2xx, self.succeeded, "2xx:\n{}", self.output);
    }
}

/// Parses h2load's summary: the `requests:` and `status codes:` lines.
pub fn parse_h2load(output: &str) -> H2loadReport {
    let mut report = H2loadReport {
        output: output.to_string(),
        ..Default::default()
    };
    // "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout"
    let Some(requests) = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("requests:"))
    else {
        panic!("no requests line in h2load's output:\n{output}");
    };
    for part in requests.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        match what {
            "total" => report.total = n,
            "started" => report.started = n,
            "done" => report.done = n,
            "succeeded" => report.succeeded = n,
            "failed" => report.failed = n,
            "errored" => report.errored = n,
            "timeout" => report.timeout = n,
            _ => {}
        }
    }
    // "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx"
    if let Some(codes) = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("status codes:"))
    {
        report.status_2xx = codes
            .split(',')
            .find_map(|p| p.trim().strip_suffix(" 2xx"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
    }
    report
}

/// Runs h2load with `args` to completion and parses its report. Use `-n`,
/// not `-D`: in timing-based mode (`-D`) h2load reports every client it
/// stopped after a failure as 0 failed (its final count sets the requests
/// to do to those done), so only `-n` counts are evidence.
pub fn h2load(args: &[&str]) -> H2loadReport {
    let output = run("h2load", args);
    parse_h2load(&text(&output))
}

/// A client (h2load, curl) running in the background, under `timeout`
/// like [`run`], its stdout and stderr going to a file.
pub struct Background {
    proc: super::Proc,
    out: PathBuf,
}

/// Starts `program` with `args` in the background, writing its output to
/// `dir/name.out`.
pub fn in_background<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    name: &str,
    program: &str,
    args: &[S],
) -> Background {
    let out = dir.join(format!("{name}.out"));
    let file = std::fs::File::create(&out).expect("create the output file");
    let proc = super::Proc::spawn(
        Command::new("timeout")
            .args(["-k", "5", "60", program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the output file"))
            .stderr(file),
    );
    Background { proc, out }
}

/// Starts h2load with `args` in the background ([`in_background`]).
pub fn h2load_in_background<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Background {
    in_background(dir, "h2load", "h2load", args)
}

impl Background {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    /// Waits up to `limit` for it to finish; returns its exit status and
    /// output.
    pub fn wait(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let status = self.proc.wait_exit(limit);
        let output = std::fs::read_to_string(&self.out).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("the client did not finish:\n{output}"));
        (status, output)
    }

    /// Waits up to `limit` for h2load to finish and parses its report.
    pub fn finish(self, limit: std::time::Duration) -> H2loadReport {
        parse_h2load(&self.wait(limit).1)
    }
}
