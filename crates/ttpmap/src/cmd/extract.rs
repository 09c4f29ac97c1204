//! `ttpmap extract` (being written).

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct ExtractArgs {}

pub fn run(_assets: &Assets, _args: ExtractArgs) -> anyhow::Result<()> {
    anyhow::bail!("ttpmap extract is not available yet")
}
