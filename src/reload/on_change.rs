//! Reload when the config file or a file it names changes: the way a
//! Kubernetes ConfigMap or Secret mount changes (an atomic swap of its
//! `..data` symlink), an editor saves (a new file renamed over the old)
//! or a deploy tool writes in place.
//!
//! [`watch::FileWatch`] says when the content of a watched file differs
//! from what it was; this service then reloads as `SIGHUP` does: a file
//! that fails its checks is logged and counted
//! (`lb_config_reloads_total{outcome="failure"}`) and the running config
//! stays. After each reload the watched set follows the config now
//! running (a certificate added or removed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::watch::FileWatch;
use super::Reloader;

/// Events closer together than this are one change: an editor's
/// write-rename-chmod, kubelet's swap of `..data`.
const SETTLE: Duration = Duration::from_millis(500);

/// The background service that reloads on a change of the config file
/// or of a file it names.
pub struct ReloadOnChange {
    reloader: Arc<Reloader>,
    /// The config file, then the files it names, at start.
    files: Vec<PathBuf>,
}

impl ReloadOnChange {
    /// Watches `config` and `named` (the certificates, CA and users files
    /// of the config running) for `reloader`.
    pub fn new(reloader: Arc<Reloader>, config: PathBuf, named: Vec<PathBuf>) -> Self {
        let files = std::iter::once(config).chain(named).collect();
        ReloadOnChange { reloader, files }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnChange {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watch = match FileWatch::new(self.files.clone(), SETTLE) {
            Ok(watch) => watch,
            Err(e) => {
                log::error!(
                    "cannot watch the config for changes ({e}); reload by SIGHUP or POST /api/reload"
                );
                return;
            }
        };
        log::info!(
            "watching {} file(s) for changes: the config {} and the files it names",
            self.files.len(),
            self.files[0].display()
        );
        loop {
            let changed = tokio::select! {
                changed = watch.changed() => changed,
                _ = shutdown.changed() => return,
            };
            log::info!("{changed}: reloading the config");
            let reloader = Arc::clone(&self.reloader);
            let reloaded = tokio::task::spawn_blocking(move || reloader.reload()).await;
            if let Ok(Ok(reloaded)) = reloaded {
                let files = std::iter::once(self.files[0].clone())
                    .chain(reloaded.files_named)
                    .collect();
                if let Err(e) = watch.set_files(files) {
                    log::warn!("cannot watch the files the new config names: {e}");
                }
            }
        }
    }
}
