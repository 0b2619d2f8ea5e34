//! `be`: the demo backend. Parses the command line and runs
//! [`lb::demo_backend::serve`].

use std::net::IpAddr;

use clap::Parser;

/// A small HTTP backend that answers `Hello From Backend Server NAME`.
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
}

fn main() {
    lb::logging::init();
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
    let options = lb::demo_backend::BackendOptions {
        bind: args.bind,
        port: args.port,
        name: args.name,
        quiet: args.quiet,
    };
    if let Err(e) = runtime.block_on(lb::demo_backend::serve(options)) {
        eprintln!("error: be on port {}: {e}", args.port);
        std::process::exit(1);
    }
}
