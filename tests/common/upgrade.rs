//! A graceful upgrade under keep-alive load, the way users run one: the
//! shipped `scripts/lb-upgrade` replaces a running lb while clients that do
//! not retry keep sending requests.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::keepalive::keep_alive_load;
use super::Lb;

/// Kills the process `pid` (not the test's child) when dropped.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

/// What the clients saw across an upgrade.
pub struct Upgrade {
    /// Requests answered 200.
    pub ok: usize,
    /// Every error a client saw.
    pub errors: Vec<String>,
    /// The new lb, killed when this is dropped.
    _new: KillOnDrop,
}

impl Upgrade {
    /// Checks that the clients sent enough to test anything and that none
    /// of them saw an error; `old_log` is shown when one did.
    pub fn assert_no_client_error(&self, old_log: &str) {
        assert!(
            self.ok > 100,
            "too little load to test anything: {}",
            self.ok
        );
        assert!(
            self.errors.is_empty(),
            "{} client-visible errors, e.g. {:?}\nold lb log:\n{old_log}",
            self.errors.len(),
            &self.errors[..self.errors.len().min(5)],
        );
    }
}

/// Replaces `old` with the shipped one-command upgrade
/// (`scripts/lb-upgrade`: new process, SIGQUIT, wait, report); checks that
/// it reported success and that the old lb exited within
/// `old_exits_within`. Returns the new lb and the script's report.
pub fn run_lb_upgrade(old: &mut Lb, old_exits_within: Duration) -> (KillOnDrop, String) {
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
    // The new lb is not our child: stop it when the test ends, even when it fails.
    let new_pid: Option<u32> = std::fs::read_to_string(old.dir.path().join("lb.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok());
    let new = new_pid.map(KillOnDrop);
    assert!(upgrade.status.success(), "lb-upgrade failed: {report}");
    assert!(
        old.proc.wait_exit(old_exits_within).is_some(),
        "the old lb is still running"
    );
    (new.expect("no pid of the new lb in lb.pid"), report)
}

/// Runs 16 keep-alive clients against `old`, replaces it with
/// `scripts/lb-upgrade`, and checks that the upgrade reported success, that
/// the old lb exited within `old_exits_within` and that a new one runs.
/// Returns what the clients saw.
pub fn upgrade_under_load(old: &mut Lb, old_exits_within: Duration) -> Upgrade {
    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_alive_load(old.port, 16, stop.clone());
    // The clients are under way on the old lb.
    load.wait_for_answers(100);

    let (new, report) = run_lb_upgrade(old, old_exits_within);
    assert!(report.contains("done"), "{report}");
    // The old lb has exited: these answers all come from the new one.
    load.wait_for_answers(100);
    stop.store(true, Relaxed);
    let (ok, errors) = load.join().expect("the load thread");
    eprintln!("{ok} requests succeeded, {} failed", errors.len());
    Upgrade {
        ok,
        errors,
        _new: new,
    }
}
