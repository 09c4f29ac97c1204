//! Progress bars (indicatif) on stderr: hidden with --quiet or when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items with rate and ETA, e.g. for indexing or evaluation.
pub fn bar(len: u64, message: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A byte-count bar for downloads (total may be unknown).
pub fn bytes_bar(total: Option<u64>, message: &str, quiet: bool) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    if quiet || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})"
    } else {
        "{msg} {spinner} {bytes} ({bytes_per_sec})"
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// Prints a status line above `pb`; when the bar is hidden because stderr is not a terminal
/// (a log file, CI), the line goes to stderr plainly so long runs stay visible in logs.
/// Nothing with `quiet`.
pub fn line(pb: &ProgressBar, quiet: bool, msg: &str) {
    if quiet {
        return;
    }
    if pb.is_hidden() {
        eprintln!("{msg}");
    } else {
        pb.println(msg);
    }
}

/// Moves a training bar to `step` with the loss as its message. The bar is hidden without a
/// terminal (a log file, CI), so then `status()` is printed every 5% of `total` steps and the
/// log still shows progress and an ETA.
pub fn training_step(
    pb: &ProgressBar,
    quiet: bool,
    step: usize,
    total: usize,
    loss: f64,
    status: impl FnOnce() -> String,
) {
    pb.set_position(step as u64);
    pb.set_message(format!("loss {loss:.4}"));
    if pb.is_hidden() && step.is_multiple_of((total / 20).max(1)) {
        line(pb, quiet, &status());
    }
}

/// Scores every sentence of `ds` with a progress bar.
pub fn score_dataset(
    ds: &ttpmap_core::dataset::Dataset,
    scorer: &dyn ttpmap_core::pipeline::SentenceScorer,
    quiet: bool,
) -> ttpmap_core::Result<Vec<ttpmap_core::eval::ScoredSentence>> {
    let n = ds
        .documents
        .iter()
        .map(|d| d.sentences.len())
        .sum::<usize>();
    let pb = bar(
        n as u64,
        &format!("scoring {} {}", ds.name, ds.split),
        quiet,
    );
    let out =
        ttpmap_core::protocol::score_dataset(ds, scorer, &mut |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    Ok(out)
}
