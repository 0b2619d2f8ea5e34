//! OCSP stapling: `site.pem.ocsp` beside `site.pem` (DER, as HAProxy reads
//! it) is stapled for clients that ask (`openssl s_client -status`), and a
//! reload reads it again. The responses are made with `openssl ocsp` by a
//! tiny CA made with the openssl CLI.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tls::{make_ca_signed_cert, make_cert, path, run, s_client, text};
use common::*;

/// Runs `openssl args` in `dir` and asserts it succeeded.
fn openssl_in(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        text(&output)
    );
}

/// A CA (`site-ca.pem`), and `site.pem`/`site.key` for localhost signed by
/// it (serial 0x1234), in `dir`.
fn ca_and_site(dir: &Path) -> (PathBuf, PathBuf) {
    let site = make_ca_signed_cert(dir, "site", "DNS:localhost", "1234");
    (site.cert, site.key)
}

/// Writes the CA's OCSP response for site.pem, `good` or revoked, as
/// `site.pem.ocsp` in `dir`.
fn ocsp_response(dir: &Path, good: bool) {
    let entry = if good {
        "V\t301231235959Z\t\t1234\tunknown\t/CN=site\n"
    } else {
        "R\t301231235959Z\t240101000000Z\t1234\tunknown\t/CN=site\n"
    };
    std::fs::write(dir.join("index.txt"), entry).expect("write index.txt");
    openssl_in(
        dir,
        &[
            "ocsp",
            "-issuer",
            "site-ca.pem",
            "-cert",
            "site.pem",
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    openssl_in(
        dir,
        &[
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "site-ca.pem",
            "-rkey",
            "site-ca.key",
            "-CA",
            "site-ca.pem",
            "-reqin",
            "req.der",
            "-respout",
            "site.pem.ocsp.new",
            "-ndays",
            "1",
        ],
    );
    // Renamed into place, as a renewal job would.
    std::fs::rename(dir.join("site.pem.ocsp.new"), dir.join("site.pem.ocsp")).expect("rename");
}

/// The `Cert Status:` s_client -status saw for `sni`, or "none" when no
/// response was stapled.
fn stapled_status(port: u16, sni: &str) -> String {
    let handshake = s_client(port, &["-status", "-servername", sni]);
    assert!(handshake.ok, "{}", handshake.output);
    if handshake.output.contains("OCSP response: no response sent") {
        return "none".into();
    }
    handshake
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Cert Status: "))
        .unwrap_or_else(|| panic!("no OCSP status in: {}", handshake.output))
        .to_string()
}

#[test]
fn an_ocsp_file_beside_a_certificate_is_stapled_and_reloaded() {
    // openssl is required (.ci/run installs it): without it this fails, never passes.
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (site, site_key) = ca_and_site(dir.path());
    ocsp_response(dir.path(), true);
    // A second certificate, chosen by SNI, with no response beside it.
    let (other, other_key) = make_cert(dir.path(), "other", &["other.test"]);
    let port = free_port();
    let listener = format!(
        "{{address: 127.0.0.1:{port}, tls: {{certificates: [{{cert: {}, key: {}}}, {{cert: {}, key: {}}}]}}}}",
        path(&site), path(&site_key), path(&other), path(&other_key)
    );
    let lb = spawn_lb_listening(&[(port, listener)], &backends_yaml(&[be_port]));
    assert_eq!(stapled_status(port, "localhost"), "good");
    assert_eq!(stapled_status(port, "other.test"), "none");
    let plain = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ],
    );
    assert!(
        !text(&plain).contains("OCSP Response Status"),
        "stapled to a client that did not ask: {}",
        text(&plain)
    );

    lb.wait_until_sighup_is_handled();
    ocsp_response(dir.path(), false);
    lb.proc.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || stapled_status(
            port,
            "localhost"
        ) == "revoked"),
        "the new response was never stapled:\n{}",
        lb.log()
    );
}

#[test]
fn a_malformed_ocsp_file_is_an_error_naming_it() {
    // openssl is required (.ci/run installs it): without it this fails, never passes.
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = make_cert(dir.path(), "site", &["localhost"]);
    let ocsp = dir.path().join("site.pem.ocsp");
    std::fs::write(&ocsp, b"not DER").expect("write");
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - {{address: 127.0.0.1:{}, tls: {{certificates: [{{cert: {}, key: {}}}]}}}}\nbackends: [127.0.0.1:9]\n",
            free_port(), path(&cert), path(&key)
        ),
    )
    .expect("write config");
    let (status, stderr) = run_lb(&["-t", "-c", path(&config)]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: not a DER OCSP response", ocsp.display())),
        "{stderr}"
    );
}
