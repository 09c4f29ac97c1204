//! Command-line definition (clap). Parsing only: every command's work is in `cmd`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd;

/// Map cyber threat intelligence reports to MITRE ATT&CK techniques.
#[derive(Debug, Parser)]
#[command(name = "ttpmap", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts. In a command's `--help` they are listed apart, under
/// "Global options", after the command's own options.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// ATT&CK Enterprise STIX bundle (enterprise-attack.json). Default: $TTPMAP_ATTACK, then
    /// the cache folder; downloaded from MITRE's ATT&CK STIX data when missing.
    #[arg(long, global = true, env = "TTPMAP_ATTACK", value_name = "FILE")]
    pub attack: Option<PathBuf>,
    /// Cache folder for downloaded assets and derived indexes. Default: $TTPMAP_CACHE, then
    /// $XDG_CACHE_HOME/ttpmap, then ~/.cache/ttpmap.
    #[arg(long, global = true, env = "TTPMAP_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Folder with the datasets (tram2/, annoctr/, emulation/). Default: $TTPMAP_DATA, then
    /// $TTPMAP_SHARED/data, then ../shared/data.
    #[arg(long, global = true, env = "TTPMAP_DATA", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never touch the network (a missing asset is an error instead of a download).
    #[arg(long, global = true, env = "TTPMAP_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub offline: bool,
    /// More log output (-v info, -vv debug). TTPMAP_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Extract ATT&CK techniques from reports (txt, md, html, pdf, or URLs).
    Extract(cmd::extract::ExtractArgs),
    /// Rank ATT&CK techniques for a piece of text.
    Rank(cmd::rank::RankArgs),
    /// Inspect, search and update the ATT&CK catalog.
    Attack(cmd::attack::AttackArgs),
    /// Datasets: statistics and conversions.
    Data(cmd::data::DataArgs),
    /// Score a method on a dataset with the published metrics.
    Eval(cmd::eval::EvalArgs),
    /// Train a model (the label-attention classifier).
    Train(cmd::train::TrainArgs),
    /// Run the analyst service: HTTP API and review web UI.
    Serve(cmd::serve::ServeArgs),
}
