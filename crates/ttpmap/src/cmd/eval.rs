//! `ttpmap eval` (being written).

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

pub fn run(_assets: &Assets, _args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("ttpmap eval is not available yet")
}
