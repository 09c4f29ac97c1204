//! `ttpmap attack` (being written).

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct AttackArgs {}

pub fn run(_assets: &Assets, _args: AttackArgs) -> anyhow::Result<()> {
    anyhow::bail!("ttpmap attack is not available yet")
}
