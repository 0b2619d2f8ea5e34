//! Running as `server.user` and `server.group` once the listeners are
//! bound, in the foreground as in daemon mode.
//!
//! Pingora switches users only when it daemonizes, and then before any
//! listener is bound (its daemon forks first, its services bind later, in
//! `run_forever`): in the foreground lb kept uid 0 and every capability,
//! silently, and a daemon could not bind a port below 1024. Pingora has no
//! hook after binding, but each service gets the table of listening
//! sockets a graceful upgrade fills, and a listening service takes a
//! socket found there instead of binding its own. So lb takes `user` and
//! `group` away from Pingora and runs [`DropPrivileges`] first: it binds
//! every listener address missing from that table (an upgrade's new
//! process finds them all inherited), puts the sockets there, switches
//! group and user, and only then lets the listening services start, which
//! depend on it. No client connection is ever served as root.

use std::ffi::CString;
use std::os::fd::IntoRawFd;

use async_trait::async_trait;
use nix::unistd::{Gid, Group, Uid, User};
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::config::{ConfigError, Problem};

/// The user and group to run as, looked up.
#[derive(Debug, Clone)]
pub struct Target {
    /// `server.user`: its uid, its name (for its supplementary groups).
    user: Option<User>,
    /// The group: `server.group`, else the user's primary group.
    gid: Gid,
    group_name: String,
}

/// Takes `server.user` and `server.group` out of `server` (so that
/// Pingora's daemon does not switch before binding) and looks them up.
/// `None` when neither is set, or when lb already runs as them. An error
/// names the key when one does not exist, or when lb is not root and so
/// cannot switch: lb refuses to start rather than run as someone else
/// than the file says.
pub fn take(server: &mut ServerConf) -> Result<Option<Target>, ConfigError> {
    let (user_name, group_name) = (server.user.take(), server.group.take());
    if user_name.is_none() && group_name.is_none() {
        return Ok(None);
    }
    let problem = |key: &str, message: String| {
        ConfigError::Invalid(vec![Problem {
            key: key.into(),
            message,
        }])
    };
    let user = match &user_name {
        Some(name) => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| problem("server.user", format!("{name}: no such user")))?,
        ),
        None => None,
    };
    let group = match &group_name {
        Some(name) => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| problem("server.group", format!("{name}: no such group")))?,
        ),
        None => None,
    };
    let (gid, shown_group) = match (&group, &user) {
        (Some(group), _) => (group.gid, group.name.clone()),
        (None, Some(user)) => (user.gid, user.gid.to_string()),
        (None, None) => return Ok(None),
    };
    let target = Target {
        user,
        gid,
        group_name: shown_group,
    };
    if target.is_current() {
        return Ok(None);
    }
    if !Uid::effective().is_root() {
        let key = if user_name.is_some() {
            "server.user"
        } else {
            "server.group"
        };
        let name = user_name.or(group_name).unwrap_or_default();
        return Err(problem(
            key,
            format!(
                "{name}: lb runs as uid {}, not root, and cannot switch to it; start lb as \
                 root or leave server.user and server.group out",
                Uid::effective()
            ),
        ));
    }
    Ok(Some(target))
}

impl Target {
    /// Whether lb already runs as this user and group.
    fn is_current(&self) -> bool {
        let uid_matches = self
            .user
            .as_ref()
            .is_none_or(|u| u.uid == Uid::effective() && u.uid == Uid::current());
        uid_matches && self.gid == Gid::effective() && self.gid == Gid::current()
    }

    /// Sets the supplementary groups (the user's, with the group), the
    /// group, then the user; then checks that root cannot be taken back.
    fn switch(&self) -> Result<(), String> {
        let fail = |what: &str, e: nix::Error| format!("{what}: {e}");
        match &self.user {
            Some(user) => {
                let name = CString::new(user.name.as_str())
                    .map_err(|e| format!("user name {:?}: {e}", user.name))?;
                nix::unistd::initgroups(&name, self.gid).map_err(|e| fail("initgroups", e))?;
            }
            None => nix::unistd::setgroups(&[self.gid]).map_err(|e| fail("setgroups", e))?,
        }
        nix::unistd::setgid(self.gid).map_err(|e| fail("setgid", e))?;
        if let Some(user) = &self.user {
            nix::unistd::setuid(user.uid).map_err(|e| fail("setuid", e))?;
            if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
                return Err("root could be taken back after setuid".into());
            }
        }
        Ok(())
    }

    /// `user nobody (uid 65534), group nogroup (gid 65534)`.
    fn describe(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("user {} (uid {}), ", u.name, u.uid))
            .unwrap_or_default();
        format!("{user}group {} (gid {})", self.group_name, self.gid)
    }
}

/// The Pingora service that binds the listeners and then switches to the
/// [`Target`]; the listening services depend on it.
pub struct DropPrivileges {
    /// The target to switch to.
    pub target: Target,
    /// Every address a listening service will ask for, as it writes it
    /// (`SocketAddr`'s text): the key of the socket table.
    pub addrs: Vec<String>,
}

impl DropPrivileges {
    /// Binds each address not in `fds` and adds its socket there, for the
    /// listening service of that address to take.
    fn bind_missing(&self, fds: &ListenFds) -> Result<(), String> {
        let mut fds = fds.lock();
        for addr in &self.addrs {
            if fds.get(addr).is_some() {
                continue;
            }
            // Non-blocking, as the sockets an upgrade hands over are:
            // Pingora gives them to tokio as they are.
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            fds.add(addr.clone(), listener.into_raw_fd());
        }
        Ok(())
    }
}

#[async_trait]
impl ServiceWithDependents for DropPrivileges {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let bound = match &fds {
            Some(fds) => self.bind_missing(fds),
            None => Err("Pingora gave no socket table".into()),
        };
        if let Err(e) = bound.and_then(|()| self.target.switch()) {
            // Never serve as root when the file says otherwise.
            log::error!("cannot run as {}: {e}; exiting", self.target.describe());
            std::process::exit(1);
        }
        log::info!("running as {}", self.target.describe());
        ready.notify_ready();
        let _ = shutdown.changed().await;
    }

    fn name(&self) -> &str {
        "drop privileges"
    }
}
