//! Tells the tests whether `redis-server` is installed: without it, the
//! tests of cluster rate limits are reported ignored with the reason
//! (`cfg(lb_no_redis_server)`), never run against nothing and passed.
//! Under `LB_REQUIRE_TOOLS` (CI, which installs it) they always run, so a
//! missing server fails them.

use std::path::PathBuf;

/// Where Debian's redis-server package puts it: watched so that
/// installing it later makes the tests run.
const DEBIAN_PATH: &str = "/usr/bin/redis-server";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_no_redis_server)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=LB_REQUIRE_TOOLS");
    println!("cargo::rerun-if-changed={DEBIAN_PATH}");
    println!("cargo::rerun-if-changed=build.rs");
    let required = std::env::var_os("LB_REQUIRE_TOOLS").is_some();
    if !required && find_on_path("redis-server").is_none() {
        println!("cargo::rustc-cfg=lb_no_redis_server");
    }
}

/// `program` in a directory of `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
