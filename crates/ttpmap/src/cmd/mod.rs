//! One module per command: parse arguments (clap `Args`), call the library, render.

pub mod attack;
pub mod data;
pub mod eval;
pub mod eval_emulation;
pub mod eval_rerank;
pub mod extract;
pub mod pairs;
pub mod rank;
pub mod serve;
pub mod train;
pub mod train_classifier;
pub mod train_default;
pub mod train_reranker;

use crate::assets::Assets;
use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let assets = Assets::new(&cli.global);
    match cli.command {
        Command::Extract(args) => extract::run(&assets, args),
        Command::Rank(args) => rank::run(&assets, args),
        Command::Attack(args) => attack::run(&assets, args),
        Command::Data(args) => data::run(&assets, args),
        Command::Eval(args) => eval::run(&assets, args),
        Command::Train(args) => train::run(&assets, args),
        Command::Serve(args) => serve::run(&assets, args),
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message before it
/// already contains (library errors often show their source inline). What `main` prints.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
