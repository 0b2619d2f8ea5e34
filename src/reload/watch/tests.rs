//! The ways files really change, done to real files in temporary
//! directories, watched by real inotify. Every wait is bounded: a report
//! is awaited for [`REPORT_WITHIN`], and "no report" means none for
//! [`QUIET_FOR`].

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::timeout;

use super::*;

const DEBOUNCE: Duration = Duration::from_millis(300);
/// Generous for a loaded 2-core machine; a report normally takes DEBOUNCE.
const REPORT_WITHIN: Duration = Duration::from_secs(5);
const QUIET_FOR: Duration = Duration::from_millis(1500);

async fn next_change(watch: &mut FileWatch) -> Changed {
    timeout(REPORT_WITHIN, watch.changed())
        .await
        .expect("a change is reported")
}

async fn assert_quiet(watch: &mut FileWatch) {
    if let Ok(changed) = timeout(QUIET_FOR, watch.changed()).await {
        panic!("no change expected, got {changed}");
    }
}

fn watch(files: &[&Path]) -> FileWatch {
    FileWatch::new(files.iter().map(|f| f.to_path_buf()).collect(), DEBOUNCE).unwrap()
}

/// A volume the way the kubelet's atomic writer lays it out:
/// `dir/NAME -> ..data/NAME`, `..data -> ..<timestamp>`.
struct KubeletVolume {
    dir: PathBuf,
    generation: u32,
}

impl KubeletVolume {
    fn mount(dir: &Path, files: &[(&str, &str)]) -> KubeletVolume {
        let mut volume = KubeletVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        let first = volume.write_timestamped_dir(files);
        symlink(&first, dir.join("..data")).unwrap();
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        volume
    }

    fn write_timestamped_dir(&mut self, files: &[(&str, &str)]) -> PathBuf {
        self.generation += 1;
        let name = PathBuf::from(format!("..2026_12_07_10_00_0{}.12345", self.generation));
        fs::create_dir(self.dir.join(&name)).unwrap();
        for (file, content) in files {
            fs::write(self.dir.join(&name).join(file), content).unwrap();
        }
        name
    }

    /// The kubelet's update: new timestamped directory, `..data_tmp`
    /// link to it, renamed over `..data`, old directory removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        let old = fs::read_link(self.dir.join("..data")).unwrap();
        let new = self.write_timestamped_dir(files);
        symlink(&new, self.dir.join("..data_tmp")).unwrap();
        fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        fs::remove_dir_all(self.dir.join(old)).unwrap();
    }
}

#[tokio::test]
async fn an_in_place_write_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 1\n").unwrap();
    let mut watch = watch(&[&config]);
    fs::write(&config, "a: 2\n").unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config.clone()]);
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn an_editor_rename_over_the_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 1\n").unwrap();
    let mut watch = watch(&[&config]);
    let temporary = dir.path().join("lb.yaml.tmp");
    fs::write(&temporary, "a: 2\n").unwrap();
    fs::rename(&temporary, &config).unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config.clone()]);
    // The replaced inode is not what is watched: a second edit is seen too.
    fs::write(&config, "a: 3\n").unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config]);
}

#[tokio::test]
async fn a_configmap_swap_is_reported_and_the_next_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = KubeletVolume::mount(dir.path(), &[("lb.yaml", "a: 1\n")]);
    let config = dir.path().join("lb.yaml");
    let mut watch = watch(&[&config]);
    volume.update(&[("lb.yaml", "a: 2\n")]);
    assert_eq!(next_change(&mut watch).await.files, vec![config.clone()]);
    volume.update(&[("lb.yaml", "a: 3\n")]);
    assert_eq!(next_change(&mut watch).await.files, vec![config]);
}

#[tokio::test]
async fn a_secret_swap_reports_the_certificate_files_that_differ() {
    let configmap = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    KubeletVolume::mount(configmap.path(), &[("lb.yaml", "a: 1\n")]);
    let mut volume = KubeletVolume::mount(
        secret.path(),
        &[("tls.crt", "cert 1"), ("tls.key", "key 1")],
    );
    let config = configmap.path().join("lb.yaml");
    let cert = secret.path().join("tls.crt");
    let key = secret.path().join("tls.key");
    let mut watch = watch(&[&config, &cert, &key]);
    volume.update(&[("tls.crt", "cert 2"), ("tls.key", "key 2")]);
    assert_eq!(next_change(&mut watch).await.files, vec![cert, key.clone()]);
    volume.update(&[("tls.crt", "cert 2"), ("tls.key", "key 3")]);
    assert_eq!(next_change(&mut watch).await.files, vec![key]);
}

#[tokio::test]
async fn a_swap_to_the_same_content_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = KubeletVolume::mount(dir.path(), &[("lb.yaml", "a: 1\n")]);
    let mut watch = watch(&[&dir.path().join("lb.yaml")]);
    volume.update(&[("lb.yaml", "a: 1\n")]);
    assert_quiet(&mut watch).await;
    assert!(watch.reads >= 1, "the swap was looked at");
}

#[tokio::test]
async fn a_touch_without_a_content_change_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 1\n").unwrap();
    let mut watch = watch(&[&config]);
    let file = fs::File::options().write(true).open(&config).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn a_burst_of_writes_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 0\n").unwrap();
    let mut watch = watch(&[&config]);
    for i in 1..=20 {
        fs::write(&config, format!("a: {i}\n")).unwrap();
    }
    assert_eq!(next_change(&mut watch).await.files, vec![config]);
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn a_constant_stream_of_writes_is_reported_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 0\n").unwrap();
    let mut watch = watch(&[&config]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, config) = (Arc::clone(&stop), config.clone());
        // Pacing the workload, not synchronization: a write every 50 ms
        // never leaves the 300 ms debounce quiet, so only the cap reports.
        std::thread::spawn(move || {
            for i in 1..400 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                fs::write(&config, format!("a: {i}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let changed = timeout(REPORT_WITHIN, watch.changed()).await;
    let still_writing = !writer.is_finished();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(changed.expect("a report").files, vec![config]);
    assert!(still_writing, "the report came while writes went on");
}

#[tokio::test]
async fn a_write_to_another_file_in_the_directory_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 1\n").unwrap();
    let mut watch = watch(&[&config]);
    for i in 0..20 {
        fs::write(dir.path().join("access.log"), format!("line {i}\n")).unwrap();
    }
    assert_quiet(&mut watch).await;
    assert_eq!(watch.reads, 0);
}

#[tokio::test]
async fn deletion_then_recreation_is_reported_as_two_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    fs::write(&config, "a: 1\n").unwrap();
    let mut watch = watch(&[&config]);
    fs::remove_file(&config).unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config.clone()]);
    fs::write(&config, "a: 1\n").unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config.clone()]);
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn a_link_target_edited_in_place_is_reported() {
    let etc = tempfile::tempdir().unwrap();
    let srv = tempfile::tempdir().unwrap();
    let target = srv.path().join("cert.pem");
    fs::write(&target, "cert 1").unwrap();
    let cert = etc.path().join("cert.pem");
    symlink(&target, &cert).unwrap();
    let mut watch = watch(&[&cert]);
    fs::write(&target, "cert 2").unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![cert]);
}

#[tokio::test]
async fn set_files_watches_a_new_certificate_and_keeps_pending_changes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.yaml");
    let cert = certs.path().join("cert.pem");
    fs::write(&config, "a: 1\n").unwrap();
    fs::write(&cert, "cert 1").unwrap();
    let mut watch = watch(&[&config]);
    fs::write(&config, "a: 2\n").unwrap();
    watch.set_files(vec![config.clone(), cert.clone()]).unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![config]);
    fs::write(&cert, "cert 2").unwrap();
    assert_eq!(next_change(&mut watch).await.files, vec![cert]);
}

#[tokio::test]
async fn a_missing_directory_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let Err(error) = FileWatch::new(vec![missing.join("lb.yaml")], DEBOUNCE) else {
        panic!("watching a missing directory fails");
    };
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}
