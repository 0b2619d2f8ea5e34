//! `lb`: the load balancer's command. Parses the command line and hands off
//! to the library; prints errors once, with their causes, and exits non-zero.

use clap::Parser;

fn main() {
    lb::logging::init();
    let cli = lb::cli::Cli::parse();
    let config = match lb::app::load_config(&cli) {
        Ok(config) => config,
        Err(e) => exit_with(&e),
    };
    if cli.pingora.test {
        println!("configuration OK\n{config}");
        return;
    }
    if let Err(e) = lb::app::run(cli, config) {
        exit_with(&e);
    }
}

/// Prints `error: ...` for each line of `e` and of its causes, then exits 1.
fn exit_with(e: &dyn std::error::Error) -> ! {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
    let mut cause = e.source();
    while let Some(c) = cause {
        eprintln!("  caused by: {c}");
        cause = c.source();
    }
    std::process::exit(1);
}
