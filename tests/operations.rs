//! Operations that must not cost a request: a graceful upgrade under
//! keep-alive load from clients that do not retry, and a graceful stop.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::keepalive::KeepAliveClient;
use common::*;

/// Starts lb with a grace period long enough to drain, in front of three `be`.
fn lb_with_grace(ports: &[u16]) -> Lb {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "{}{}",
        base_config(dir.path(), port).replace("grace_period_seconds: 1", "grace_period_seconds: 3"),
        backends_yaml(ports)
    );
    spawn_lb_with_config(dir, port, &config)
}

/// Runs `clients` keep-alive clients against `port` until `stop` is set;
/// returns the successes and every error a client saw.
fn keep_alive_load(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut client = KeepAliveClient::new(port);
                    let (mut ok, mut errors) = (0usize, Vec::new());
                    for _ in 0..500_000 {
                        if stop.load(Relaxed) {
                            break;
                        }
                        match client.get() {
                            Ok(200) => ok += 1,
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
        let mut total = 0;
        let mut all_errors = Vec::new();
        for worker in workers {
            let (ok, errors) = worker.join().expect("client thread");
            total += ok;
            all_errors.extend(errors);
        }
        (total, all_errors)
    })
}

fn wait_for_file(path: &std::path::Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_graceful_upgrade_under_keep_alive_load_loses_no_request() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<Proc> = ports.iter().map(|&p| spawn_be(p, &p.to_string())).collect();
    let mut old = lb_with_grace(&ports);
    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_alive_load(old.port, 16, stop.clone());
    std::thread::sleep(Duration::from_millis(500));

    let new_log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let _new = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_lb"))
            .arg("-u")
            .arg("-c")
            .arg(old.config_path())
            .stdout(Stdio::null())
            .stderr(new_log),
    );
    wait_for_file(&old.dir.path().join("upgrade.sock"));
    old.proc.signal("QUIT");
    let status = old.proc.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "the old lb did not exit after SIGQUIT");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);

    let (ok, errors) = load.join().unwrap();
    eprintln!("{ok} requests succeeded, {} failed", errors.len());
    assert!(ok > 100, "too little load to test anything: {ok}");
    assert!(
        errors.is_empty(),
        "{} client-visible errors, e.g. {:?}\nold lb log:\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        old.log()
    );
    assert!(
        old.log().contains("all client connections drained"),
        "{}",
        old.log()
    );
    assert_eq!(get(old.port, "/").status, 200, "the new lb does not serve");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let port = free_port();
    let _slow = spawn_be_with(
        port,
        "slow",
        &["--fault", "drip", "--drip-interval", "20ms"],
    );
    let mut lb = lb_with_grace(&[port]);
    let lb_port = lb.port;
    let in_flight = std::thread::spawn(move || get(lb_port, "/"));
    std::thread::sleep(Duration::from_millis(200)); // the dripping response is under way
    lb.proc.signal("TERM");
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello From Backend Server slow\n");
    let status = lb.proc.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "lb did not exit after SIGTERM");
}
