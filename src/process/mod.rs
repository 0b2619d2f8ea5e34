//! The lb process itself, beside what it serves: its pid file, where its
//! log goes in daemon mode, the user it runs as once its listeners are
//! bound ([`privileges`]), and the free memory it returns ([`memory`]).

pub mod memory;
pub mod pid_file;
pub mod privileges;

use pingora::server::configuration::ServerConf;

/// Where the daemon's log goes when `server.error_log` is not set: beside
/// the pid file, with `.log` in place of `.pid` (`/tmp/lb.pid` gives
/// `/tmp/lb.log`, which is also `scripts/lb-upgrade`'s default log), so
/// instances with their own pid files get their own logs.
pub fn default_daemon_log(pid_file: &str) -> String {
    match pid_file.strip_suffix(".pid") {
        Some(stem) => format!("{stem}.log"),
        None => format!("{pid_file}.log"),
    }
}

/// In daemon mode without `server.error_log`, sets it to
/// [`default_daemon_log`] and says so on the terminal lb is leaving:
/// Pingora's daemon would keep writing to that terminal otherwise.
pub fn daemon_log(server: &mut ServerConf, daemon: bool) {
    if !daemon {
        return;
    }
    let log = server
        .error_log
        .get_or_insert_with(|| default_daemon_log(&server.pid_file));
    eprintln!(
        "lb: running in the background; log: {log}, pid file: {}",
        server.pid_file
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_log_sits_beside_the_pid_file() {
        assert_eq!(default_daemon_log("/tmp/lb.pid"), "/tmp/lb.log");
        assert_eq!(default_daemon_log("/run/lb/pid"), "/run/lb/pid.log");
    }
}
