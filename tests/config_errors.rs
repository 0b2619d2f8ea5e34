//! Bad configuration: lb exits non-zero with a message naming the key and
//! value, never a panic; `lb -t` passes on the shipped demo config.

mod common;

use common::*;

/// Writes `yaml` to a file, runs `lb -c FILE` (with `-t` when `test_only`),
/// and returns the exit status and stderr.
fn run_with_config(yaml: &str, test_only: bool) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.yaml");
    std::fs::write(&path, yaml).unwrap();
    let path = path.to_str().unwrap();
    if test_only {
        run_lb(&["-t", "-c", path])
    } else {
        run_lb(&["-c", path])
    }
}

const GOOD_BACKENDS: &str = "backends: [127.0.0.1:9]\nlisteners: [127.0.0.1:0]\n";

#[test]
fn each_bad_config_is_rejected_with_its_key_and_value() {
    let cases = [
        (
            format!("{GOOD_BACKENDS}helth_check: {{path: /}}\n"),
            "helth_check",
        ),
        (
            format!("{GOOD_BACKENDS}server: {{threds: 2}}\n"),
            "server.threds",
        ),
        (
            format!("{GOOD_BACKENDS}health_check: {{interval: 10 parsecs}}\n"),
            "health_check.interval",
        ),
        (
            format!("{GOOD_BACKENDS}health_check: {{timeout: fast}}\n"),
            "health_check.timeout",
        ),
        (
            "backends: [127.0.0.1]\n".to_string(),
            "backends[0].address: \"127.0.0.1\": missing port",
        ),
        (
            "backends: ['bad host!:80']\n".to_string(),
            "backends[0].address: \"bad host!:80\"",
        ),
        (
            "backends: [{address: 127.0.0.1:1, weight: 0}]\n".to_string(),
            "backends[0].weight: 0",
        ),
        (
            "backends: [{address: 127.0.0.1:1, weight: -3}]\n".to_string(),
            "backends[0].weight: -3",
        ),
        ("backends: []\n".to_string(), "backends: the list is empty"),
        (
            "listeners: [127.0.0.1:8000]\n".to_string(),
            "backends: the list is empty",
        ),
        (
            "backends: [127.0.0.1:1]\nlisteners: [':eighty']\n".to_string(),
            "listeners[0]",
        ),
        ("backends: [127.0.0.1:1\n".to_string(), "config file"),
        (
            "backends: [127.0.0.1:9]\nlisteners: [{address: 127.0.0.1:1, http2: maybe}]\n".to_string(),
            "listeners[0].http2: invalid type: string \"maybe\"",
        ),
        (
            "backends: [127.0.0.1:9]\nlisteners: [{address: 127.0.0.1:1, tls: {min_version: 1.4, certificates: []}}]\n".to_string(),
            "listeners[0].tls.min_version: \"1.4\": write \"1.2\" or \"1.3\"",
        ),
    ];
    for (yaml, expected) in &cases {
        for test_only in [true, false] {
            let (status, stderr) = run_with_config(yaml, test_only);
            assert!(
                !status.success(),
                "accepted (test_only={test_only}):\n{yaml}"
            );
            assert_eq!(
                status.code(),
                Some(1),
                "not a clean exit for:\n{yaml}\n{stderr}"
            );
            assert!(
                stderr.contains(expected),
                "{expected:?} missing for:\n{yaml}\nstderr:\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "panic for:\n{yaml}\n{stderr}");
        }
    }
}

#[test]
fn every_error_in_a_file_is_reported() {
    let (status, stderr) = run_with_config(
        "backends: [127.0.0.1, {address: 127.0.0.1:1, weight: 0}]\nlisteners: [nowhere]\n",
        true,
    );
    assert!(!status.success());
    for expected in ["backends[0]", "backends[1].weight", "listeners[0]"] {
        assert!(stderr.contains(expected), "{expected:?} missing:\n{stderr}");
    }
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let (status, stderr) = run_lb(&["-c", "/nonexistent/lb.yaml"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot read config file /nonexistent/lb.yaml"),
        "{stderr}"
    );
}

#[test]
fn a_listener_in_use_is_an_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (status, stderr) = run_with_config(
        &format!("backends: [127.0.0.1:9]\nlisteners: [127.0.0.1:{port}]\n"),
        false,
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn the_demo_config_passes_test_mode() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/lb.yaml");
    let (status, stderr) = run_lb(&["-t", "-c", path]);
    assert!(status.success(), "{stderr}");
}

#[test]
fn test_mode_warns_when_the_grace_period_leaves_no_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.yaml");
    let write = |grace: u32| {
        let yaml = format!("{GOOD_BACKENDS}server: {{grace_period_seconds: {grace}}}\n");
        std::fs::write(&path, yaml).expect("write config");
    };
    let test_mode = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run lb -t");
        assert!(out.status.success(), "lb -t failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    write(0);
    let table = test_mode();
    assert!(
        table.contains("grace_period_seconds: 0 leaves no time to drain"),
        "{table}"
    );
    write(1);
    let table = test_mode();
    assert!(!table.contains("leaves no time to drain"), "{table}");
}

#[test]
fn an_unquoted_tls_version_means_what_it_says() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/certs/demo-localhost");
    // YAML reads 1.3 without quotes as a number; it is the same setting.
    let yaml = format!(
        "backends: [127.0.0.1:9]\nlisteners:\n  - {{address: 127.0.0.1:0, tls: {{min_version: 1.3, \
         certificates: [{{cert: {certs}.pem, key: {certs}.key}}]}}}}\n"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.yaml");
    std::fs::write(&path, yaml).expect("write the config");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", path.to_str().expect("a UTF-8 path")])
        .output()
        .expect("run lb -t");
    let output = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{output}");
    assert!(output.contains("(TLS 1.3+, h2)"), "{output}");
}

#[test]
fn test_mode_names_the_runtime_the_thread_count_chose() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.yaml");
    let summary = |server: &str| {
        std::fs::write(&path, format!("{GOOD_BACKENDS}server: {server}\n")).expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["-t", "-c", path.to_str().expect("a UTF-8 path")])
            .output()
            .expect("run lb -t");
        assert!(out.status.success(), "lb -t failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let one = summary("{threads: 1}");
    assert!(
        one.contains("one single-threaded runtime per worker thread (1)"),
        "{one}"
    );
    let two = summary("{threads: 2}");
    assert!(two.contains("work-stealing, 2 worker threads"), "{two}");
    let chosen = summary("{threads: 2, work_stealing: false}");
    assert!(
        chosen.contains("one single-threaded runtime per worker thread (2)"),
        "{chosen}"
    );
}
