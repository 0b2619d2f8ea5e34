//! What a new user trips over (issue 20): two instances on one machine,
//! the daemon's log, the upgrade script without `lb` on the PATH, the
//! README's examples, and the user lb runs as.

mod common;

use std::process::Command;

use common::*;

/// `lb ARGS` to completion: exit status, stdout and stderr.
fn lb_output(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(args)
        .output()
        .expect("run lb");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_second_lb_with_the_same_pid_file_is_refused_and_names_the_first() {
    let (ports, _backends) = backends_named_after_their_ports(1);
    let first = spawn_lb(&ports, "");
    let pid_file = first.dir.path().join("lb.pid");
    let dir = tempfile::tempdir().expect("temp dir");
    let second = dir.path().join("lb.yaml");
    std::fs::write(
        &second,
        format!(
            "server: {{pid_file: {}}}\nlisteners: [127.0.0.1:{}]\nbackends: [127.0.0.1:9]\n",
            pid_file.display(),
            free_port()
        ),
    )
    .expect("write config");
    let (status, stderr) = run_lb(&["-c", second.to_str().expect("utf-8 path")]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: server.pid_file: {}: names lb process {}, which is running",
            pid_file.display(),
            first.proc.pid()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .expect("the pid file")
            .trim(),
        first.proc.pid().to_string(),
        "the refused lb overwrote the first's pid file"
    );
}

#[test]
fn pid_file_and_upgrade_sock_flags_replace_the_file_values() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/lb.yaml");
    let (status, stdout, stderr) = lb_output(&[
        "-t",
        "-c",
        config,
        "--pid-file",
        "/run/lb/a.pid",
        "--upgrade-sock",
        "/run/lb/a.sock",
    ]);
    assert!(status.success(), "{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
    };
    assert_eq!(
        row("pid file").as_deref(),
        Some("/run/lb/a.pid"),
        "{stdout}"
    );
    assert_eq!(
        row("upgrade socket").as_deref(),
        Some("/run/lb/a.sock"),
        "{stdout}"
    );
}

#[test]
fn a_daemon_without_error_log_logs_beside_its_pid_file_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!("{}backends: [127.0.0.1:9]\n", base_config(dir.path(), port)),
    )
    .expect("write config");
    let (status, stderr) = run_lb(&["-d", "-c", config.to_str().expect("utf-8 path")]);
    let pid_file = dir.path().join("lb.pid");
    wait_for_port(port);
    let _daemon = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .map(common::upgrade::KillOnDrop)
        .expect("the daemon's pid in its pid file");
    assert!(status.success(), "{stderr}");
    let log = dir.path().join("lb.log");
    assert!(
        stderr.contains(&format!("log: {}", log.display())),
        "lb -d did not say where it logs: {stderr}"
    );
    let lb = Lb {
        proc: Proc::spawn(&mut Command::new("true")),
        port,
        dir,
    };
    assert!(
        lb.wait_for_log(
            &format!("Starting service: lb proxy 127.0.0.1:{port}"),
            std::time::Duration::from_secs(10)
        ),
        "the daemon's log {}: {:?}",
        log.display(),
        lb.log()
    );
}

#[test]
fn lb_upgrade_without_lb_on_the_path_names_what_is_missing() {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lb-upgrade"))
        .args(["-c", concat!(env!("CARGO_MANIFEST_DIR"), "/conf/lb.yaml")])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run scripts/lb-upgrade");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no lb command on the PATH (/usr/bin:/bin); give the new binary with --lb PATH"),
        "{stderr}"
    );
}
