//! `ttpmap data` (being written).

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct DataArgs {}

pub fn run(_assets: &Assets, _args: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("ttpmap data is not available yet")
}
