//! Operations that must not cost a request: a graceful upgrade under
//! keep-alive load from clients that do not retry, and a graceful stop.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::keepalive::keep_alive_load;
use common::*;

/// Starts lb with a grace period long enough to drain, in front of three `be`.
fn lb_with_grace(ports: &[u16]) -> Lb {
    spawn_lb_edited(ports, |base| base.server.grace_period_seconds = 3, "")
}

#[test]
fn a_graceful_upgrade_under_keep_alive_load_loses_no_request() {
    let (ports, _backends) = backends_named_after_their_ports(3);
    let mut old = lb_with_grace(&ports);
    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_alive_load(old.port, 16, stop.clone());
    std::thread::sleep(Duration::from_millis(500));

    // The shipped one-command upgrade: new process, SIGQUIT, wait, report.
    let new_log = old.dir.path().join("new.log");
    let upgrade = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lb-upgrade"))
        .arg("-c")
        .arg(old.config_path())
        .args(["--lb", env!("CARGO_BIN_EXE_lb"), "--timeout", "30", "--log"])
        .arg(&new_log)
        .output()
        .expect("run scripts/lb-upgrade");
    let report = String::from_utf8_lossy(&upgrade.stdout).to_string()
        + &String::from_utf8_lossy(&upgrade.stderr);
    assert!(upgrade.status.success(), "lb-upgrade failed: {report}");
    assert!(report.contains("done"), "{report}");
    assert!(
        old.proc.wait_exit(Duration::from_secs(5)).is_some(),
        "the old lb is still running"
    );
    let new_pid: u32 = std::fs::read_to_string(old.dir.path().join("lb.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The new lb is not our child: stop it when the test ends.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
    let _new = KillOnDrop(new_pid);
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
    let (_slow, port) = BeBuilder::named("slow")
        .args(&["--fault", "drip", "--drip-interval", "20ms"])
        .start();
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
