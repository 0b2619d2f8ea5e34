//! `lb`: the load balancer's command. Parses the command line and hands off
//! to the library; prints errors once, with their causes, and exits non-zero.

use clap::Parser;

/// mimalloc instead of the system allocator: a proxy allocates and frees
/// small buffers on every request, and glibc's malloc took about 12% of
/// lb's CPU under load in `perf` (see bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes mimalloc return the free memory whose purge delay has passed
/// (`lb::process::memory` calls it once a second).
fn return_free_memory() {
    // SAFETY: mi_collect takes no pointer and may be called from any thread
    // at any time; `false` asks only for what is already free.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

fn main() {
    lb::process::memory::set_collector(return_free_memory);
    lb::telemetry::logging::init();
    let cli = lb::cli::Cli::parse();
    let config = match lb::app::load_config(&cli) {
        Ok(config) => config,
        Err(e) => exit_with(&e),
    };
    if cli.pingora.test {
        let certificates = match lb::app::check(&config) {
            Ok(certificates) => certificates,
            Err(e) => exit_with(&e),
        };
        let summary = lb::summary::Summary {
            config: &config,
            certificates: &certificates,
        };
        // A closed pipe (`lb -t | head`) is the reader's choice, not an error.
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "configuration OK\n{summary}");
        let _ = writeln!(std::io::stdout(), "{}", open_files(&config));
        return;
    }
    if let Err(e) = lb::app::run(cli, config) {
        exit_with(&e);
    }
}

/// What `lb -t` says of the open-file limit: judged by this shell's hard
/// limit, which lb raises its soft limit to at start.
fn open_files(config: &lb::config::Config) -> String {
    use lb::connection::descriptors;
    let requested = config.limits.max_connections;
    match descriptors::hard_limit() {
        None => "open files: no limit in this shell".to_string(),
        Some(limit) => match descriptors::fit(limit, requested, config.descriptors_per_connection()).lowered {
            None => format!(
                "open files: this shell's hard limit {limit} fits limits.max_connections {requested}"
            ),
            Some(warning) => format!("warning: in this shell, {warning}"),
        },
    }
}

/// Prints `error: ...` for each line of `e`, its causes following on the same
/// line (`error: cannot read config file x.yaml: No such file or directory`),
/// then exits 1.
fn exit_with(e: &dyn std::error::Error) -> ! {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    for line in message.lines() {
        eprintln!("error: {line}");
    }
    std::process::exit(1);
}
