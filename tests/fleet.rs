//! A fleet of lb replicas acting as one: cluster rate limits counted in a
//! real `redis-server` (Debian's, on a free loopback port) and shared by
//! three lb processes; what a replica does when that Redis dies or goes
//! silent; and every replica following its config file as it changes (an
//! edit, a Kubernetes ConfigMap swap, a bad file) under keep-alive load.
//!
//! Without `redis-server` the Redis tests are reported ignored with the
//! reason (see build.rs), never passed.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::keepalive::{keep_alive_load, KeepAliveClient};
use common::*;

/// A `redis-server` on 127.0.0.1 without persistence, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts it on `port` and waits until it answers PING.
    fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let answers = wait_until(START_TIMEOUT, || redis.cli(&["PING"]).trim() == "PONG");
        assert!(answers, "redis-server on {port} did not answer PING");
        redis
    }

    /// `redis-cli` against it: its output.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One lb replica: the shared config file, its own listener, admin
/// listener, pid file and upgrade socket (given as flags, as replicas on
/// one host must), its log in its own directory.
struct Replica {
    _proc: Proc,
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
}

impl Replica {
    fn start(config: &Path) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("lb.log")).unwrap();
        let proc = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_lb"))
                .arg("-c")
                .arg(config)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .arg("--pid-file")
                .arg(dir.path().join("lb.pid"))
                .arg("--upgrade-sock")
                .arg(dir.path().join("upgrade.sock"))
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let replica = Replica {
            _proc: proc,
            port,
            admin,
            dir,
        };
        let up = wait_until(START_TIMEOUT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
        });
        assert!(up, "replica did not start:\n{}", replica.log());
        replica
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lb.log")).unwrap_or_default()
    }

    /// `GET /api/status` on its admin listener.
    fn status(&self) -> serde_json::Value {
        let response = get(self.admin, "/api/status");
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).unwrap()
    }

    /// Waits until its cluster limits are `shared` (or `local`).
    fn wait_for_cluster_limits(&self, state: &str) {
        let reached = wait_until(Duration::from_secs(15), || {
            self.status()["cluster_limits"] == state
        });
        assert!(reached, "cluster limits never {state}:\n{}", self.log());
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&scrape(self.admin), name, labels)
    }
}

/// The config of a fleet in front of `backend`, limited by a cluster rate
/// limit of 20/s (burst 10) per client address on every path.
fn limited_fleet_config(redis_url: &str, backend: u16, replicas: u32) -> String {
    format!(
        "server: {{threads: 2, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1}}\n\
         backends: [127.0.0.1:{backend}]\n\
         health_check: {{path: /health, interval: 200ms, timeout: 500ms}}\n\
         cluster: {{redis: \"{redis_url}\", timeout: 25ms, prefix: \"lbtest:\", replicas: {replicas}}}\n\
         policies:\n  api_limit:\n    rate_limit: {{rate: 20/s, burst: 10, key: client_ip, scope: cluster}}\n\
         routes:\n  - {{upstream: default, policies: [api_limit]}}\n"
    )
}

/// Sends `per_second` requests a second for `seconds`, the i-th to
/// `ports[i % len]` on one keep-alive connection each; counts 200s and
/// 429s and fails on anything else. Also returns how long sending took,
/// plus one interval (the window the last request closed).
fn paced_over(ports: &[u16], per_second: u32, seconds: u32) -> (u32, u32, f64) {
    let mut clients: Vec<_> = ports.iter().map(|p| KeepAliveClient::new(*p)).collect();
    let start = Instant::now();
    let (mut accepted, mut limited) = (0, 0);
    for i in 0..per_second * seconds {
        let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(per_second));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let n = clients.len();
        match clients[i as usize % n].get() {
            Ok(200) => accepted += 1,
            Ok(429) => limited += 1,
            other => panic!("request {i}: {other:?}"),
        }
    }
    let took = start.elapsed().as_secs_f64() + 1.0 / f64::from(per_second);
    (accepted, limited, took)
}

#[test]
#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
fn three_replicas_share_a_cluster_limit_through_redis() {
    let redis = Redis::start();
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    std::fs::write(&config, limited_fleet_config(&redis.url(), be_port, 3)).unwrap();
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&config)).collect();
    for replica in &replicas {
        replica.wait_for_cluster_limits("shared");
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    // Twice the limit for 10 s, spread over the three replicas.
    let (accepted, limited, took) = paced_over(&ports, 40, 10);
    let expected = 20.0 * took.max(10.0) + 10.0;
    let off = (f64::from(accepted) - expected).abs() / expected;
    assert!(
        off <= 0.10,
        "accepted {accepted}, limited {limited} over {took:.1} s: {off:.3} off {expected}"
    );
    // Each replica refused some: the one count was shared, not split.
    for replica in &replicas {
        let refused = replica.metric(
            "lb_policy_decisions_total",
            &[("policy", "api_limit"), ("outcome", "limited")],
        );
        assert!(refused > 0.0, "a replica refused nothing");
        let errors = replica.metric("lb_rate_limit_store_errors_total", &[]);
        assert_eq!(errors, 0.0, "{}", replica.log());
    }
    let keys = redis.cli(&["--scan", "--pattern", "lbtest:api_limit:*"]);
    assert_eq!(keys.lines().count(), 1, "one key, the client's: {keys:?}");
}

#[test]
#[cfg_attr(
    lb_no_redis_server,
    ignore = "redis-server is not installed (apt-get install redis-server)"
)]
fn redis_killed_mid_run_falls_back_to_the_local_share_and_comes_back_by_itself() {
    let redis = Redis::start();
    let redis_port = redis.port;
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    // Two replicas share it: alone, this one allows half (10/s, burst 5).
    std::fs::write(&config, limited_fleet_config(&redis.url(), be_port, 2)).unwrap();
    let replica = Replica::start(&config);
    replica.wait_for_cluster_limits("shared");
    let (shared_accepted, _, _) = paced_over(&[replica.port], 40, 2);
    assert!(shared_accepted >= 40, "shared: {shared_accepted}");

    drop(redis);
    // No request fails while Redis is gone; the local share decides.
    let (accepted, limited, took) = paced_over(&[replica.port], 40, 5);
    let local = 10.0 * took + 5.0;
    assert!(
        f64::from(accepted) <= local * 1.25 && f64::from(accepted) >= local * 0.6,
        "with Redis gone: accepted {accepted}, limited {limited}; the local share allows {local}"
    );
    assert!(replica.metric("lb_rate_limit_store_errors_total", &[]) > 0.0);
    replica.wait_for_cluster_limits("local");
    assert!(
        replica.log().contains("cluster limits decide locally"),
        "{}",
        replica.log()
    );

    // Back on the same port: shared again without restarting lb.
    let redis = Redis::start_on(redis_port);
    replica.wait_for_cluster_limits("shared");
    let (accepted, _, _) = paced_over(&[replica.port], 40, 1);
    assert!(accepted > 0);
    let keys = redis.cli(&["--scan", "--pattern", "lbtest:api_limit:*"]);
    assert_eq!(keys.lines().count(), 1, "counted in Redis again: {keys:?}");
}

#[test]
fn a_redis_that_never_answers_costs_no_client_error() {
    // Accepts connections and never reads or answers: the store's calls
    // time out and every request is decided locally. Needs no Redis.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            silent.set_nonblocking(true).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match silent.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    let url = format!("redis://127.0.0.1:{silent_port}/0");
    let text =
        limited_fleet_config(&url, be_port, 1).replace("20/s, burst: 10", "1000/s, burst: 100");
    std::fs::write(&config, text).unwrap();
    let replica = Replica::start(&config);
    let mut client = KeepAliveClient::new(replica.port);
    for i in 0..200 {
        assert_eq!(client.get(), Ok(200), "request {i}");
    }
    assert_eq!(replica.status()["cluster_limits"], "local");
    assert!(replica.metric("lb_rate_limit_store_errors_total", &[("reason", "timeout")]) > 0.0);
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
}

/// A ConfigMap as kubelet lays it out in `dir`: `lb.yaml -> ..data/lb.yaml`,
/// `..data -> ..<version>`; [`ConfigMap::publish`] swaps `..data` atomically.
struct ConfigMap {
    dir: PathBuf,
    version: u32,
}

impl ConfigMap {
    fn new(dir: &Path, text: &str) -> ConfigMap {
        let mut map = ConfigMap {
            dir: dir.to_path_buf(),
            version: 0,
        };
        map.publish(text);
        std::os::unix::fs::symlink("..data/lb.yaml", dir.join("lb.yaml")).unwrap();
        map
    }

    fn path(&self) -> PathBuf {
        self.dir.join("lb.yaml")
    }

    /// Writes `text` into a new timestamped directory, points `..data_tmp`
    /// at it, renames that over `..data` and removes the old directory.
    fn publish(&mut self, text: &str) {
        self.version += 1;
        let new = format!("..2026_12_07_00_00_0{}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("lb.yaml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            let old = format!("..2026_12_07_00_00_0{}", self.version - 1);
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// A config whose responses carry `X-Config: <label>`.
fn labelled_config(backend: u16, label: &str) -> String {
    format!(
        "server: {{threads: 2, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1}}\n\
         backends: [127.0.0.1:{backend}]\n\
         health_check: {{path: /health, interval: 200ms, timeout: 500ms}}\n\
         policies:\n  label:\n    response_headers: {{set: {{X-Config: {label}}}}}\n\
         routes:\n  - {{upstream: default, policies: [label]}}\n"
    )
}

/// The hash lb should show for `file`: the first 12 hex digits of its
/// SHA-256, by `sha256sum`.
fn sha256_prefix(file: &Path) -> String {
    let output = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8_lossy(&output.stdout)[..12].to_string()
}

/// The `X-Config` header of a response from `port`.
fn label_of(port: u16) -> Option<String> {
    let reply = raw_exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    reply
        .text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-config: ")
                .or(l.strip_prefix("X-Config: "))
        })
        .map(str::to_string)
}

/// Waits until every replica answers with `label` and shows `hash`.
fn wait_for_fleet(replicas: &[Replica], label: &str, hash: &str) {
    for replica in replicas {
        let reached = wait_until(Duration::from_secs(15), || {
            label_of(replica.port).as_deref() == Some(label)
                && replica.status()["config_hash"] == hash
        });
        assert!(
            reached,
            "a replica did not take {label} ({hash}):\n{}",
            replica.log()
        );
    }
}

#[test]
fn every_replica_follows_an_edit_a_configmap_swap_and_keeps_its_config_on_a_bad_file() {
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut map = ConfigMap::new(dir.path(), &labelled_config(be_port, "v1"));
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&map.path())).collect();
    for replica in &replicas {
        assert!(wait_until(Duration::from_secs(10), || replica
            .log()
            .contains("watching")));
    }
    wait_for_fleet(&replicas, "v1", &sha256_prefix(&map.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = replicas
        .iter()
        .map(|r| keep_alive_load(r.port, 2, Arc::clone(&stop)))
        .collect();

    // An edit in place of the file the symlinks lead to.
    let target = dir.path().join("..data/lb.yaml");
    std::fs::write(&target, labelled_config(be_port, "v2")).unwrap();
    wait_for_fleet(&replicas, "v2", &sha256_prefix(&map.path()));
    // A ConfigMap update: the atomic swap of ..data.
    map.publish(&labelled_config(be_port, "v3"));
    let v3 = sha256_prefix(&map.path());
    wait_for_fleet(&replicas, "v3", &v3);
    // A bad file: rejected and counted; v3 stays.
    map.publish("backends: [127.0.0.1:notaport]\n");
    for replica in &replicas {
        let counted = wait_until(Duration::from_secs(15), || {
            replica.metric("lb_config_reloads_total", &[("outcome", "failure")]) >= 1.0
        });
        assert!(counted, "{}", replica.log());
        assert_eq!(label_of(replica.port).as_deref(), Some("v3"));
        assert_eq!(replica.status()["config_hash"], v3.as_str());
        assert_eq!(
            replica.metric("lb_config_info", &[("hash", v3.as_str())]),
            1.0
        );
    }
    for load in &loads {
        load.wait_for_answers(20);
    }
    stop.store(true, Ordering::Relaxed);
    for (i, load) in loads.into_iter().enumerate() {
        let (answered, errors) = load.join().unwrap();
        assert!(answered > 0);
        assert!(errors.is_empty(), "replica {i}: {errors:?}");
    }
    for replica in &replicas {
        let reloads = replica.metric("lb_config_reloads_total", &[("outcome", "success")]);
        assert!(reloads >= 2.0, "{reloads}: {}", replica.log());
    }
}

#[test]
fn the_fleet_keys_are_checked_and_lb_t_shows_the_hash_sha256sum_gives() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    std::fs::write(
        &config,
        "backends: [127.0.0.1:9]\ncluster: {redis: \"http://127.0.0.1:6379\", timeout: 5s, replicas: 0}\n\
         policies:\n  a: {rate_limit: {rate: 10/s, scope: everywhere, fallback_share: 1.5}}\n",
    )
    .unwrap();
    let (status, stderr) = run_lb(&["-t", "-c", config.to_str().unwrap()]);
    assert!(!status.success(), "{stderr}");
    for expected in [
        "cluster.redis: \"http://127.0.0.1:6379\"",
        "cluster.timeout: 5s",
        "cluster.replicas",
        "policies.a.rate_limit.scope: \"everywhere\": write local or cluster",
        "policies.a.rate_limit.fallback_share: 1.5",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    std::fs::write(
        &config,
        "backends: [127.0.0.1:9]\npolicies:\n  a: {rate_limit: {rate: 10/s, scope: cluster}}\n",
    )
    .unwrap();
    let (status, stderr) = run_lb(&["-t", "-c", config.to_str().unwrap()]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("policies.a.rate_limit.scope: \"cluster\" needs a top-level cluster:"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "backends: [127.0.0.1:9]\ncluster: {redis: \"redis://u:secret@127.0.0.1:6379/0\", replicas: 3}\n\
         policies:\n  a: {rate_limit: {rate: 10/s, scope: cluster}}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-t", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(&sha256_prefix(&config)), "{stdout}");
    assert!(
        stdout.contains("redis://u:***@127.0.0.1:6379/0"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
    assert!(stdout.contains("rate_limit (cluster)"), "{stdout}");
}

#[test]
fn a_daemon_started_with_a_relative_config_path_follows_its_file() {
    // A daemon changes its directory to / after it forks: the file must
    // still be found by the reload its change starts.
    let (_be, be_port) = spawn_be_on_any_port("one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = |label: &str| {
        format!(
            "{}{}policies:\n  label:\n    response_headers: {{set: {{X-Config: {label}}}}}\n\
             routes:\n  - {{upstream: default, policies: [label]}}\n",
            base_config(dir.path(), port),
            backends_yaml(&[be_port])
        )
    };
    std::fs::write(dir.path().join("lb.yaml"), config("v1")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["-d", "-c", "lb.yaml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_port(port);
    let _daemon = std::fs::read_to_string(dir.path().join("lb.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .map(common::upgrade::KillOnDrop)
        .expect("the daemon's pid in its pid file");
    let log = || std::fs::read_to_string(dir.path().join("lb.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || log().contains("watching")),
        "{}",
        log()
    );
    assert_eq!(label_of(port).as_deref(), Some("v1"));
    // An editor's save: a new file renamed over the old.
    let next = dir.path().join("lb.yaml.new");
    std::fs::write(&next, config("v2")).unwrap();
    std::fs::rename(&next, dir.path().join("lb.yaml")).unwrap();
    let followed = wait_until(Duration::from_secs(15), || {
        label_of(port).as_deref() == Some("v2")
    });
    assert!(followed, "the daemon did not follow its file:\n{}", log());
}
