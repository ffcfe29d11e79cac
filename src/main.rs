//! The `kfp-operator` binary. A failure ends the process with one line on standard error,
//! `error: <what failed>: <why>`, and exit status 1; never a backtrace.

use std::process::ExitCode;

use clap::Parser;

// The run-completion path allocates per event from many threads; glibc's allocator spends much
// of that time on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = kfp_operator::cli::Args::parse();
    if !args.is_operator() {
        std::panic::set_hook(Box::new(|info| eprintln!("error: {}", kfp_operator::tools::panic_line(info))));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(args.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", kfp_operator::tools::error_line(&error));
            ExitCode::FAILURE
        }
    }
}
