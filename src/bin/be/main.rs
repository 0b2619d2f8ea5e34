//! `be`: the demo backend. Parses the command line and runs
//! [`server::serve`]. Not part of the `lb` library: only this binary and
//! the tests use it.

mod server;
mod wire;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use server::{BackendOptions, Fault};

/// A small HTTP backend that answers `Hello From Backend Server NAME`.
///
/// `GET /health` answers `200 ok` and `GET /headers` echoes the request's
/// headers. `--fault` makes every other request misbehave, for testing how a
/// proxy copes (from the start, or from SIGUSR1 on with
/// `--fault-after-sigusr1`); `--record` lists the requests that reached `be`.
#[derive(Debug, Parser)]
#[command(name = "be", version, about)]
struct Args {
    /// Port to listen on.
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// Name in the hello message (default: the port).
    #[arg(short, long)]
    name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Do not log each request.
    #[arg(short, long)]
    quiet: bool,
    /// Misbehave this way on every request except `GET /health`, which
    /// always answers `200 ok` so health checks pass and the fault reaches
    /// clients.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Fault::None)]
    fault: Fault,
    /// Pause between bytes with `--fault drip` (e.g. `100ms`, `1s`).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    drip_interval: Duration,
    /// Wait before answering with `--fault delay` (e.g. `50ms`).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Answer normally until the process gets SIGUSR1, then show `--fault`:
    /// a backend that turns bad while lb keeps its connections.
    #[arg(long)]
    fault_after_sigusr1: bool,
    /// Append a `METHOD PATH` line to FILE for every request except
    /// `GET /health`, written before the request is answered.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

fn main() {
    lb::telemetry::logging::init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let options = BackendOptions {
        bind: args.bind,
        port: args.port,
        name: args.name,
        quiet: args.quiet,
        fault: args.fault,
        drip_interval: args.drip_interval,
        delay: args.delay,
        fault_after_sigusr1: args.fault_after_sigusr1,
        record: args.record,
    };
    if let Err(e) = runtime.block_on(server::serve(options)) {
        eprintln!("error: be on port {}: {e}", args.port);
        std::process::exit(1);
    }
}
