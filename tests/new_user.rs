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
        stderr.contains(
            "no lb command on the PATH (/usr/bin:/bin); give the new binary with --lb PATH"
        ),
        "{stderr}"
    );
}

/// lb's top-level keys: a YAML block of the README with one of them is an
/// lb config (the others, such as Prometheus's scrape config, are not).
const LB_KEYS: &[&str] = &[
    "server",
    "listeners",
    "backends",
    "upstreams",
    "routes",
    "health_check",
    "admin",
    "cluster",
];

/// The ```yaml blocks of `markdown` that are lb configs.
fn lb_configs_in(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
        .into_iter()
        .filter(|block| {
            block.lines().any(|line| {
                LB_KEYS
                    .iter()
                    .any(|key| line.starts_with(&format!("{key}:")))
            })
        })
        .collect()
}

/// `config` with each file named by a `cert:`, `key:` or `ca:` key replaced
/// by a real one in `dir`: one self-signed certificate and key per file
/// stem (`/etc/lb/site.pem` and `/etc/lb/site.key` become a matching pair);
/// and each `users_file:` by an htpasswd file.
fn with_placeholder_files(config: &str, dir: &std::path::Path) -> String {
    let tokens: Vec<&str> = config
        .split(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ','))
        .filter(|t| !t.is_empty())
        .collect();
    let mut config = config.to_string();
    for pair in tokens.windows(2) {
        let [name, file] = pair else { continue };
        if *name == "users_file:" && file.starts_with('/') {
            // An htpasswd file with one bcrypt entry (cost 4), made by the
            // bcrypt crate lb itself uses.
            let users = dir.join("htpasswd");
            let hash = bcrypt::hash("demo", 4).expect("a bcrypt hash");
            std::fs::write(&users, format!("demo:{hash}\n")).expect("write the users file");
            config = config.replace(file, users.to_str().expect("a UTF-8 path"));
            continue;
        }
        if !matches!(*name, "cert:" | "key:" | "ca:") || !file.starts_with('/') {
            continue;
        }
        let file = std::path::Path::new(file);
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name");
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        if !cert.exists() {
            common::tls::make_cert(dir, stem, &["localhost"]);
        }
        let placeholder = if file.extension().is_some_and(|e| e == "key") {
            key
        } else {
            cert
        };
        config = config.replace(
            file.to_str().expect("a UTF-8 path"),
            placeholder.to_str().expect("a UTF-8 path"),
        );
    }
    config
}

#[test]
fn every_config_in_the_readme_and_conf_passes_lb_t() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let mut configs: Vec<(String, String)> = lb_configs_in(&readme)
        .into_iter()
        .enumerate()
        .map(|(i, config)| (format!("README.md, lb config block {}", i + 1), config))
        .collect();
    assert!(configs.len() >= 2, "the README's lb configs were not found");
    for entry in std::fs::read_dir(format!("{root}/conf")).expect("conf/") {
        let path = entry.expect("a conf/ entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let config = std::fs::read_to_string(&path).expect("read the config");
            configs.push((path.display().to_string(), config));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (i, (name, config)) in configs.iter().enumerate() {
        let file = dir.path().join(format!("config{i}.yaml"));
        std::fs::write(&file, with_placeholder_files(config, dir.path())).expect("write");
        let (status, _, stderr) = lb_output(&["-t", "-c", file.to_str().expect("utf-8")]);
        if !status.success() {
            failures.push(format!("{name}:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn least_request_one_request_at_a_time_honours_weights() {
    let (light, light_port) = BeBuilder::named("light").start();
    let (heavy, heavy_port) = BeBuilder::named("heavy").start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = format!(
        "{}balance: least_request\nbackends:\n  - {{address: 127.0.0.1:{light_port}, weight: 1}}\n  \
         - {{address: 127.0.0.1:{heavy_port}, weight: 2}}\n",
        base_config(dir.path(), port)
    );
    let lb = spawn_lb_with_config(dir, port, &config);
    let light_count = (0..300)
        .filter(|_| served_by(&lb.get("/")) == "light")
        .count();
    // 100 expected; 60..=140 is about five standard deviations either way.
    assert!(
        (60..=140).contains(&light_count),
        "weight 1 got {light_count} of 300 requests, weight 2 the rest (expected about 100)"
    );
    drop((light, heavy));
}

#[test]
fn the_start_line_counts_the_backends_of_named_pools() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = format!(
        "{}upstreams:\n  api: {{backends: [127.0.0.1:9, 127.0.0.1:10]}}\n  web: {{backends: [127.0.0.1:11]}}\n\
         routes:\n  - {{match: {{path_prefix: /api/}}, upstream: api}}\n  - upstream: web\n",
        base_config(dir.path(), port)
    );
    let lb = spawn_lb_with_config(dir, port, &config);
    let line = lb.wait_for_log_line("lb listening on");
    assert!(
        line.ends_with(&format!(
            "lb listening on 127.0.0.1:{port} with 3 backend(s) in 2 pool(s) (api: 2, web: 1)"
        )),
        "{line}"
    );
}

#[test]
fn every_backend_down_gets_the_503_the_readme_names() {
    let lb = spawn_lb(&[free_port()], "");
    let readme = include_str!("../README.md");
    assert!(
        lb.wait_for_log("down:", std::time::Duration::from_secs(10)),
        "{}",
        lb.log()
    );
    let response = lb.get("/");
    let walkthrough = readme
        .split("## Walkthrough")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README's walkthrough");
    assert_eq!(response.status, 503, "{response:?}");
    let said = response.body.trim();
    assert!(
        walkthrough.contains(&format!("`{said}`")),
        "lb answered {said:?}; the walkthrough says otherwise"
    );
}

/// The `Uid:`, `Gid:` and `CapEff:` lines of /proc/PID/status.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (line("Uid:"), line("Gid:"), line("CapEff:"))
}

/// Whether this test runs as root: switching users needs it.
fn running_as_root() -> bool {
    credentials(std::process::id()).0.starts_with("0 ")
}

#[test]
fn in_the_foreground_lb_runs_as_server_user_once_it_listens() {
    if !running_as_root() {
        skip_without("switching users needs root");
        return;
    }
    let (ports, _backends) = backends_named_after_their_ports(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let admin = free_port();
    // A port below 1024 too: only root may bind it (unless
    // ip_unprivileged_port_start says otherwise), so lb serving on it as
    // nobody shows that it bound before it switched.
    let low = (900..1024)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let mut base = BaseConfig::new(dir.path(), port);
    base.listeners.push(format!("127.0.0.1:{low}"));
    let config = format!(
        "{}{}admin: {{listen: 127.0.0.1:{admin}}}\n",
        base.yaml()
            .replace("server:\n", "server:\n  user: nobody\n  group: nogroup\n"),
        backends_yaml(&ports)
    );
    let lb = spawn_lb_with_config(dir, port, &config);
    // The sockets accept (in the kernel's backlog) from their bind on; a
    // request is answered only once the services run, after the switch.
    assert_eq!(served_by(&lb.get("/")), ports[0].to_string());
    assert_eq!(served_by(&get(low, "/")), ports[0].to_string());
    assert_eq!(get(admin, "/healthz").status, 200);
    let nobody = "65534 65534 65534 65534";
    assert_eq!(
        credentials(lb.proc.pid()),
        (nobody.into(), nobody.into(), "0000000000000000".into()),
        "{}",
        lb.log()
    );
    assert!(
        lb.log()
            .contains("running as user nobody (uid 65534), group nogroup (gid 65534)"),
        "{}",
        lb.log()
    );
}

#[test]
fn a_private_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = common::tls::make_cert(dir.path(), "site", &["localhost"]);
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - address: 127.0.0.1:{}\n    tls: {{certificates: [{{cert: {}, key: {}}}]}}\nbackends: [127.0.0.1:9]\n",
            free_port(),
            cert.display(),
            key.display()
        ),
    )
    .expect("write config");
    let check = || {
        let (status, stdout, stderr) = lb_output(&["-t", "-c", config.to_str().expect("utf-8")]);
        assert!(status.success(), "{stderr}");
        stdout + &stderr
    };
    let set_mode = |mode| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    set_mode(0o644);
    let output = check();
    assert!(
        output.contains(&format!(
            "private key {} is readable by group and others (mode 0644); chmod 600 it",
            key.display()
        )),
        "{output}"
    );
    set_mode(0o600);
    let output = check();
    assert!(!output.contains("readable by"), "{output}");
}

#[test]
fn lb_t_names_a_server_user_or_group_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        "server: {user: no-such-lb-user, group: no-such-lb-group}\nbackends: [127.0.0.1:9]\n",
    )
    .expect("write config");
    let (status, _, stderr) = lb_output(&["-t", "-c", config.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: server.user: no-such-lb-user: no such user")
            && stderr.contains("error: server.group: no-such-lb-group: no such group"),
        "{stderr}"
    );
}
