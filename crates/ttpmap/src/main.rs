//! The `ttpmap` binary: parses the command line, runs one command, maps the result to an exit
//! code (0 success, 1 error, 2 usage). Errors print their whole chain with `{:#}`; a broken
//! pipe (e.g. `ttpmap ... | head`) counts as success.

use std::process::ExitCode;

use clap::Parser;
use ttpmap::{cli, cmd};

fn main() -> ExitCode {
    tune_runtime();
    let cli = cli::Cli::parse();
    init_tracing(cli.global.verbose, cli.global.quiet);
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", cmd::error_chain(&err));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("TTPMAP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // With -v, each pipeline stage's span (ingest, candidates, score, aggregate, export) logs
    // its time when it closes.
    let spans = if verbose > 0 && !quiet {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    tracing_subscriber::fmt()
        .with_span_events(spans)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Process-wide settings measured to matter for candle on small CPUs (docs: CANDLE_NOTES.md):
/// candle's element-wise pool must not busy-wait, and glibc must keep large freed buffers.
fn tune_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called first thing in `main`, before any thread is started.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
