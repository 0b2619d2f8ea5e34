//! The pid file. Pingora writes it only in daemon mode; lb writes it at
//! start in every mode (`scripts/lb-upgrade` and operators find lb through
//! it), and refuses to start while it names another running lb: two
//! instances sharing the default `/tmp/lb.pid` would otherwise leave it
//! naming only the second. `lb -u` is the exception: the new process of a
//! graceful upgrade shares the file with the old one by design.

use crate::config::{ConfigError, Problem};

/// An error when the pid file at `path` names a running lb other than this
/// process; `Ok` when it is missing, unreadable, stale, or names another
/// program.
pub fn refuse_if_taken(path: &str) -> Result<(), ConfigError> {
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    if pid == std::process::id() || !is_running_lb(pid) {
        return Ok(());
    }
    Err(ConfigError::Invalid(vec![Problem {
        key: "server.pid_file".into(),
        message: format!(
            "{path}: names lb process {pid}, which is running; give this instance its own \
             pid file (--pid-file or server.pid_file) and upgrade socket (--upgrade-sock or \
             server.upgrade_sock), or replace the running one with `lb -u` (scripts/lb-upgrade)"
        ),
    }]))
}

/// Whether process `pid` runs (a zombie does not) the same program as this
/// one, by their command names in /proc.
fn is_running_lb(pid: u32) -> bool {
    let ours = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| name_and_state(&stat).map(|(name, _)| name.to_string()));
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    match (ours, theirs.as_deref().and_then(name_and_state)) {
        (Some(ours), Some((name, state))) => name == ours && state != 'Z',
        _ => false,
    }
}

/// The command name and state of a /proc/PID/stat line: `1234 (lb) S ...`.
/// The name may hold spaces and parentheses; it ends at the last `)`.
fn name_and_state(stat: &str) -> Option<(&str, char)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    Some((name, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_gives_name_and_state() {
        assert_eq!(name_and_state("12 (lb) S 1 2"), Some(("lb", 'S')));
        assert_eq!(name_and_state("12 (a) b) Z 1"), Some(("a) b", 'Z')));
        assert_eq!(name_and_state("garbage"), None);
    }

    #[test]
    fn a_stale_or_foreign_pid_file_is_no_obstacle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.pid");
        let path = path.to_str().expect("utf-8 path");
        assert!(refuse_if_taken(path).is_ok(), "a missing file");
        std::fs::write(path, "not a pid\n").expect("write");
        assert!(refuse_if_taken(path).is_ok(), "an unreadable pid");
        std::fs::write(path, format!("{}\n", std::process::id())).expect("write");
        assert!(refuse_if_taken(path).is_ok(), "this very process");
        std::fs::write(path, "1\n").expect("write");
        assert!(refuse_if_taken(path).is_ok(), "pid 1 runs another program");
    }
}
