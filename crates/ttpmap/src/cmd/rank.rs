//! `ttpmap rank` (being written).

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct RankArgs {}

pub fn run(_assets: &Assets, _args: RankArgs) -> anyhow::Result<()> {
    anyhow::bail!("ttpmap rank is not available yet")
}
