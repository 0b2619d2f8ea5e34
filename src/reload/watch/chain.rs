//! Where a watched path really lives: every symbolic link met on the way
//! to the file, and the file itself, as paths with no link left in their
//! directory part.
//!
//! The watch needs these names because a file can change by a rename in
//! any of their directories: an editor renames over `lb.yaml` itself; the
//! kubelet renames a new `..data` link over the old one, two links away
//! from the `lb.yaml` that lb was given; an operator edits
//! `/srv/lb/lb.yaml` in place through a link `/etc/lb/lb.yaml` that points
//! there. Watching the directory of each name catches all three.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Links followed for one path before giving up, as Linux does (`ELOOP`
/// after 40). The read of the file then fails and says why.
const MAX_LINKS: usize = 40;

/// One step of a path still to walk.
enum Part {
    Root,
    Parent,
    Name(OsString),
}

fn parts(path: &Path) -> impl Iterator<Item = Part> + '_ {
    path.components().filter_map(|component| match component {
        Component::Prefix(_) | Component::RootDir => Some(Part::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Part::Parent),
        Component::Normal(name) => Some(Part::Name(name.to_owned())),
    })
}

/// The links met while resolving the absolute `path`, in the order met,
/// then the path it resolves to (the last element, always present).
///
/// Each returned path's directory part is link-free, so a watch on its
/// parent directory sees a rename or write of exactly that name. Where a
/// component is missing (the file was deleted, a link dangles) the rest of
/// the path is taken as written: that is where the file will appear.
pub(super) fn resolve(path: &Path) -> Vec<PathBuf> {
    let mut links = Vec::new();
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<Part> = parts(path).collect();
    // Once a component is missing nothing below it exists: stop asking.
    let mut missing = false;
    while let Some(part) = pending.pop_front() {
        let name = match part {
            Part::Root => {
                resolved = PathBuf::from("/");
                continue;
            }
            // `resolved` has no link in it, so `..` is its lexical parent.
            Part::Parent => {
                resolved.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let candidate = resolved.join(&name);
        if missing || links.len() >= MAX_LINKS {
            resolved = candidate;
            continue;
        }
        let target = match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => fs::read_link(&candidate).ok(),
            Ok(_) => None,
            Err(_) => {
                missing = true;
                None
            }
        };
        match target {
            Some(target) => {
                // A relative target starts from the link's directory,
                // which is `resolved`; an absolute one resets it.
                for part in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part);
                }
                links.push(candidate);
            }
            None => resolved = candidate,
        }
    }
    links.push(resolved);
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_plain_file_resolves_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::write(root.join("lb.yaml"), "a").unwrap();
        assert_eq!(resolve(&root.join("lb.yaml")), vec![root.join("lb.yaml")]);
    }

    #[test]
    fn a_configmap_mount_names_both_links_and_the_timestamped_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir(root.join("..2026_12_07_10_00_00.1")).unwrap();
        fs::write(root.join("..2026_12_07_10_00_00.1/lb.yaml"), "a").unwrap();
        symlink("..2026_12_07_10_00_00.1", root.join("..data")).unwrap();
        symlink("..data/lb.yaml", root.join("lb.yaml")).unwrap();
        assert_eq!(
            resolve(&root.join("lb.yaml")),
            vec![
                root.join("lb.yaml"),
                root.join("..data"),
                root.join("..2026_12_07_10_00_00.1/lb.yaml"),
            ]
        );
    }

    #[test]
    fn dot_dot_in_a_link_target_climbs_from_the_links_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("etc/lb")).unwrap();
        fs::create_dir_all(root.join("srv")).unwrap();
        fs::write(root.join("srv/cert.pem"), "a").unwrap();
        symlink("../../srv/cert.pem", root.join("etc/lb/cert.pem")).unwrap();
        assert_eq!(
            resolve(&root.join("etc/lb/./cert.pem")),
            vec![root.join("etc/lb/cert.pem"), root.join("srv/cert.pem")]
        );
    }

    #[test]
    fn a_missing_file_resolves_to_where_it_would_be() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            resolve(&root.join("gone/../lb.yaml")),
            vec![root.join("lb.yaml")]
        );
    }

    #[test]
    fn a_link_loop_ends() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let chain = resolve(&root.join("a"));
        assert_eq!(chain.len(), MAX_LINKS + 1);
    }
}
