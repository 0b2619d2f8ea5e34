//! Watches the config file and the certificate files it names, and says
//! when their content changed, so lb can reload without a `SIGHUP`.
//!
//! Files are changed in place (`>` or an editor that truncates), by a
//! rename over them (most editors, `install`, `mv`), or, in a Kubernetes
//! ConfigMap or Secret volume, by the kubelet renaming a new `..data` link
//! over the old one, two links away from the name lb was given. So the
//! watch is on directories, never on a file's inode: the directory of
//! every name on the way from the path to the file ([`chain`]), each
//! non-recursive. Following a link's target directory too is what makes a
//! link like `/etc/lb/lb.yaml -> /srv/lb/lb.yaml` work when the target is
//! edited in place; in a ConfigMap it only adds a watch on the current
//! timestamped directory, which is re-armed at every swap.
//!
//! Events only wake the watch; what counts is content. Once events settle
//! (no relevant event for the debounce time, but never waiting more than
//! [`MAX_WAIT_FACTOR`] times that under a constant stream), each file is
//! read and its fingerprint compared with the last one seen. A touch, or a
//! swap to identical content, reports nothing; a file that is missing or
//! unreadable is a state of its own, reported once (the reload then fails
//! and says why, and the running config stays).
//!
//! The debounce is a few lines of tokio rather than `notify-debouncer-mini`
//! or `-full`: both emit a path only once it has been quiet for the
//! timeout, with no upper bound under a constant stream of events, and both
//! keep a per-path event list where lb only needs "something relevant
//! happened". Here notify's thread filters each event against the watched
//! names and sends a wake-up on a tokio channel of one slot; a full slot
//! already says "wake up", so a storm costs no memory and no reads.

mod chain;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{Event, EventKindMask, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Under a constant stream of events, a burst is read after at most this
/// many debounce times (2 s for the 500 ms lb uses).
pub const MAX_WAIT_FACTOR: u32 = 4;

/// Names whose events matter: every link and final path of every watched
/// file. Shared with notify's thread, which holds the lock for one look-up
/// per event path (a `std` mutex: never held across an `.await`).
type Relevant = Arc<Mutex<HashSet<PathBuf>>>;

/// Watches files and tells when their content changed.
pub struct FileWatch {
    files: Vec<WatchedFile>,
    /// Quiet time after the last relevant event before files are read.
    debounce: Duration,
    watcher: RecommendedWatcher,
    /// Directories currently given to the watcher.
    watched_dirs: HashSet<PathBuf>,
    relevant: Relevant,
    /// One slot: full means "a relevant event came since the last read".
    wakeups: mpsc::Receiver<()>,
    /// A wake-up was taken but its burst not yet compared (kept across a
    /// cancelled [`FileWatch::changed`], so no change is lost).
    pending: bool,
    /// Times the files were read, for the tests of read storms.
    #[cfg(test)]
    reads: usize,
}

/// One watched file and the last state of it that was reported.
struct WatchedFile {
    /// As given, for [`Changed`].
    path: PathBuf,
    /// Absolute (not canonical: links are resolved by [`chain::resolve`]).
    absolute: PathBuf,
    last: Fingerprint,
}

/// A file's state, compared to tell a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fingerprint {
    /// The content's length and 64-bit SipHash (std's hasher; an
    /// accidental collision between two edits is a 2^-64 chance).
    Content { len: u64, hash: u64 },
    /// The file could not be read, for this reason.
    Unreadable(io::ErrorKind),
}

/// Which watched files changed, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The files whose content (or readability) differs from the last
    /// report, as they were given to [`FileWatch::new`] or
    /// [`FileWatch::set_files`]. Never empty.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, file) in self.files.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", file.display())?;
        }
        Ok(())
    }
}

/// Why files cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The inotify instance could not be made (for example the per-user
    /// limit `fs.inotify.max_user_instances` is reached).
    #[error("cannot start watching files")]
    Start(#[source] Box<notify::Error>),
    /// The directory a file is in cannot be watched (it does not exist,
    /// or `fs.inotify.max_user_watches` is reached).
    #[error("cannot watch directory {} for {}", dir.display(), file.display())]
    Directory {
        /// The directory that is not watched.
        dir: PathBuf,
        /// The file (or the first link to it) that lives there.
        file: PathBuf,
        /// What inotify said (boxed: notify's error is large, and every
        /// `Result` here would carry it).
        #[source]
        source: Box<notify::Error>,
    },
    /// A relative path was given and the current directory is unknown.
    #[error("cannot watch {}: the current directory is unknown", file.display())]
    CurrentDir {
        /// The relative path.
        file: PathBuf,
        /// Why the current directory is unknown.
        #[source]
        source: io::Error,
    },
}

impl FileWatch {
    /// Starts watching `files` (the config file first, then certificate
    /// and key files), each reported changed when its content differs from
    /// what it is now. Events settle for `debounce` (lb: 500 ms) before the
    /// files are read.
    ///
    /// Errors name the directory that cannot be watched; every file's own
    /// directory must exist. The files need not. Reads the files once, here
    /// (a few small files: fine on an async worker).
    pub fn new(files: Vec<PathBuf>, debounce: Duration) -> Result<FileWatch, WatchError> {
        let (wake, wakeups) = mpsc::channel(1);
        let relevant = Relevant::default();
        let names = Arc::clone(&relevant);
        let handler = move |event: notify::Result<Event>| {
            let touches = match &event {
                Ok(event) => touches_watched(event, &names),
                Err(e) => {
                    // Such as a lost inotify queue: read, to be sure.
                    log::warn!("watching the config files: {e}");
                    true
                }
            };
            if touches {
                // Full: a wake-up is already waiting. Closed: the watch is
                // being dropped. Neither needs another.
                let _ = wake.try_send(());
            }
        };
        // CORE leaves out open and close events: reading the files after a
        // burst would otherwise start the next burst.
        let config = notify::Config::default().with_event_kinds(EventKindMask::CORE);
        let watcher =
            RecommendedWatcher::new(handler, config).map_err(|e| WatchError::Start(Box::new(e)))?;
        let mut watch = FileWatch {
            files: Vec::new(),
            debounce,
            watcher,
            watched_dirs: HashSet::new(),
            relevant,
            wakeups,
            pending: false,
            #[cfg(test)]
            reads: 0,
        };
        watch.set_files(files)?;
        Ok(watch)
    }

    /// Waits until a watched file's content changed since the last report
    /// (or since [`FileWatch::new`]), and says which.
    ///
    /// Cancel safe: a change seen by a dropped call is reported by the
    /// next. Only relevant events wake it; reading the files happens on the
    /// blocking pool, once per settled burst.
    pub async fn changed(&mut self) -> Changed {
        loop {
            if !self.pending {
                if self.wakeups.recv().await.is_none() {
                    // The watcher holds the sender and lives as long as
                    // `self`: this cannot happen, and must not spin if it did.
                    return std::future::pending().await;
                }
                self.pending = true;
            }
            self.settle().await;
            let paths: Vec<PathBuf> = self.files.iter().map(|f| f.absolute.clone()).collect();
            let chains = off_the_runtime(paths.clone(), resolve_all).await;
            // Arm before reading: whatever changes after the read is seen.
            if let Some(error) = self.arm(&chains) {
                log::warn!("config files: {}", super::error_chain(&error));
            }
            let now = off_the_runtime(paths, fingerprint_all).await;
            self.pending = false;
            #[cfg(test)]
            {
                self.reads += 1;
            }
            let files = self.take_changes(&now);
            if !files.is_empty() {
                return Changed { files };
            }
        }
    }

    /// Replaces the set of files (after a reload the certificates named
    /// may differ) and re-arms the directories. A file watched before keeps
    /// its last reported state, so a change not yet reported still is; a
    /// new file is compared from its content now.
    ///
    /// On an error the new set is in place, but the named directory is not
    /// watched: changes there go unnoticed until it can be.
    pub fn set_files(&mut self, files: Vec<PathBuf>) -> Result<(), WatchError> {
        let mut seen = HashSet::new();
        let mut absolutes = Vec::new();
        for path in files {
            let absolute = absolute(&path)?;
            if seen.insert(absolute.clone()) {
                absolutes.push((path, absolute));
            }
        }
        let mut known: HashMap<PathBuf, Fingerprint> = self
            .files
            .drain(..)
            .map(|file| (file.absolute, file.last))
            .collect();
        let chains = resolve_all(absolutes.iter().map(|(_, a)| a.clone()).collect());
        let unwatched = self.arm(&chains);
        self.files = absolutes
            .into_iter()
            .map(|(path, absolute)| {
                let last = known
                    .remove(&absolute)
                    .unwrap_or_else(|| fingerprint(&absolute));
                WatchedFile {
                    path,
                    absolute,
                    last,
                }
            })
            .collect();
        unwatched.map_or(Ok(()), Err)
    }

    /// Waits until no wake-up came for the debounce time, or until
    /// [`MAX_WAIT_FACTOR`] debounce times passed.
    async fn settle(&mut self) {
        let cap = Instant::now() + self.debounce * MAX_WAIT_FACTOR;
        loop {
            let now = Instant::now();
            if now >= cap {
                return;
            }
            let quiet_until = (now + self.debounce).min(cap);
            match tokio::time::timeout_at(quiet_until, self.wakeups.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Watches the directory of every name in `chains` (one per file, in
    /// order), stops watching directories no longer named, and makes those
    /// names the relevant ones.
    ///
    /// Watching a directory already watched again is harmless and re-arms
    /// one that was deleted and made anew. Returns the first failure to
    /// watch a file's starting directory (the others are still armed). A
    /// link target's directory that cannot be watched is skipped: the link
    /// dangles and the file reads as missing.
    fn arm(&mut self, chains: &[Vec<PathBuf>]) -> Option<WatchError> {
        let mut first_error = None;
        let mut wanted = HashSet::new();
        let mut relevant = HashSet::new();
        for chain in chains {
            for (i, name) in chain.iter().enumerate() {
                relevant.insert(name.clone());
                let Some(dir) = name.parent() else { continue };
                if !wanted.insert(dir.to_path_buf()) {
                    continue;
                }
                match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    Err(source) if i == 0 => {
                        first_error.get_or_insert(WatchError::Directory {
                            dir: dir.to_path_buf(),
                            file: name.clone(),
                            source: Box::new(source),
                        });
                    }
                    Err(e) => log::debug!("not watching {}: {e}", dir.display()),
                }
            }
        }
        for gone in self.watched_dirs.difference(&wanted) {
            // Fails when the directory was deleted, and its watch with it.
            let _ = self.watcher.unwatch(gone);
        }
        self.watched_dirs = wanted;
        *self.relevant.lock().unwrap_or_else(PoisonError::into_inner) = relevant;
        first_error
    }

    /// Records `now` (one fingerprint per file, in order) as the last state
    /// and returns the files whose state differs.
    fn take_changes(&mut self, now: &[Fingerprint]) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for (file, now) in self.files.iter_mut().zip(now) {
            if file.last != *now {
                file.last = *now;
                changed.push(file.path.clone());
            }
        }
        changed
    }
}

/// Whether `event` may have changed a watched file: it names one of the
/// relevant paths, or cannot say (a lost queue asks for a rescan).
fn touches_watched(event: &Event, relevant: &Mutex<HashSet<PathBuf>>) -> bool {
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    if event.kind.is_access() {
        return false;
    }
    let relevant = relevant.lock().unwrap_or_else(PoisonError::into_inner);
    event.paths.iter().any(|path| relevant.contains(path))
}

/// Runs `work` on tokio's blocking pool, or here if the pool cannot take
/// it (the runtime is shutting down).
async fn off_the_runtime<T: Send + 'static>(paths: Vec<PathBuf>, work: fn(Vec<PathBuf>) -> T) -> T {
    let copy = paths.clone();
    match tokio::task::spawn_blocking(move || work(copy)).await {
        Ok(result) => result,
        Err(_) => work(paths),
    }
}

fn resolve_all(paths: Vec<PathBuf>) -> Vec<Vec<PathBuf>> {
    paths.iter().map(|path| chain::resolve(path)).collect()
}

fn fingerprint_all(paths: Vec<PathBuf>) -> Vec<Fingerprint> {
    paths.iter().map(|path| fingerprint(path)).collect()
}

/// The state of the file at `path`, following links. Reads it whole: the
/// config loader does the same a moment later.
fn fingerprint(path: &Path) -> Fingerprint {
    match std::fs::read(path) {
        Ok(content) => {
            let mut hasher = std::hash::DefaultHasher::new();
            hasher.write(&content);
            Fingerprint::Content {
                len: content.len() as u64,
                hash: hasher.finish(),
            }
        }
        Err(e) => Fingerprint::Unreadable(e.kind()),
    }
}

/// `path`, from the current directory if relative (links kept).
fn absolute(path: &Path) -> Result<PathBuf, WatchError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|source| WatchError::CurrentDir {
            file: path.to_path_buf(),
            source,
        })
}
