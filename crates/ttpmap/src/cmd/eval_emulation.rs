//! `ttpmap eval --dataset emulation` (any method but rerank): each emulation-plan step's name
//! and description is a query ranked by the method; P@1, Hit@3, Hit@5, MRR overall and per
//! actor, exact id and parent-collapsed (`ttpmap_core::protocol::rank_queries`).

use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset;
use ttpmap_core::pipeline::ScoreOptions;
use ttpmap_core::protocol;

use crate::assets::Assets;
use crate::cmd::eval::EvalArgs;

pub fn run(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<protocol::EmulationReport> {
    let dir = assets.data_dir().join("emulation");
    let mut steps = dataset::load_emulation(&dir)?.steps;
    let report = dataset::remap_steps(&mut steps, |id| catalog.resolve(id).current().cloned());
    if !report.unknown.is_empty() {
        tracing::warn!(
            "emulation steps with ids not in ATT&CK {}: {:?}",
            catalog.version(),
            report.unknown
        );
    }
    use crate::rerank::QuerySplitName;
    let steps = if args.emulation_split == QuerySplitName::All {
        steps
    } else {
        let split = dataset::split_queries(
            &steps,
            ttpmap_core::rerank_data::SPLIT_FRACTIONS,
            args.rerank.split_seed,
        )?;
        match args.emulation_split {
            QuerySplitName::Train => split.train,
            QuerySplitName::Validation => split.dev,
            _ => split.test,
        }
    };
    let mut scorer = crate::methods::build(assets, catalog, &args.method)?;
    if scorer.name() == crate::methods::trained::SPEC.name
        && args.emulation_split != QuerySplitName::Test
    {
        tracing::warn!(
            "the default model was trained on the training part of the emulation query split \
             (seed 42): only --emulation-split test is an honest score"
        );
    }
    scorer.configure(&ScoreOptions {
        top_k: args.top_k,
        with_evidence: false,
        label_space: None,
    });
    let pb = crate::progress::bar(
        steps.len() as u64,
        "ranking emulation steps",
        assets.quiet(),
    );
    let report = protocol::rank_queries(
        &steps,
        scorer.as_ref(),
        args.top_k,
        catalog.version(),
        &mut |d| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    Ok(report)
}
