//! The inference worker: one dedicated OS thread that runs the extraction pipeline, fed by a
//! bounded queue, so model work never blocks the async runtime.
//!
//! Invariants:
//! - at most `capacity` jobs wait; a submission to a full queue fails at once with 429
//!   (`ApiError::overloaded`), it never waits for room;
//! - a job whose requester has gone (timed out, disconnected) before the worker picks it up is
//!   skipped, not run; a running extraction asks between batches of
//!   [`pipeline::CANCEL_CHECK_SENTENCES`] sentences and stops once its requester has gone, so
//!   abandoned work costs at most one batch;
//! - the queue depth gauge counts waiting jobs (not the one running);
//! - every run's wall time goes into the inference latency histogram;
//! - jobs are closures over the [`Engine`], so extraction and reranking share one queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::{self, ExtractOptions, SentenceScorer};
use ttpmap_core::{Document, Extraction};

use super::error::ApiError;
use super::metrics::Metrics;

/// What the worker runs: a scorer, the catalog it reports against, and its default threshold.
pub struct Engine {
    pub scorer: Box<dyn SentenceScorer>,
    pub catalog: Arc<Catalog>,
    pub default_threshold: f32,
    /// The cross-encoder behind `POST /v1/rerank`, when one is loaded.
    pub reranker: Option<Arc<dyn super::rerank::RerankService>>,
}

impl Engine {
    /// Extracts techniques from one document (the CLI `extract` pipeline), stopping between
    /// batches once `cancelled` says so (`Ok(None)`).
    pub fn extract(
        &self,
        doc: &Document,
        options: &ExtractOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> ttpmap_core::Result<Option<Extraction>> {
        let lookup = |id: &ttpmap_core::TechniqueId| self.catalog.technique(id);
        pipeline::extract_cancellable(
            doc,
            self.scorer.as_ref(),
            &lookup,
            self.catalog.version(),
            options,
            cancelled,
        )
    }
}

type Job = Box<dyn FnOnce(&Engine, &Metrics) + Send>;

/// Handle to the worker thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Worker {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

impl Worker {
    /// Starts the worker thread with room for `capacity` waiting jobs (at least 1).
    pub fn spawn(engine: Arc<Engine>, capacity: usize, metrics: Arc<Metrics>) -> Worker {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel::<Job>(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let d = depth.clone();
        std::thread::Builder::new()
            .name("ttpmap-inference".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    d.fetch_sub(1, Ordering::SeqCst);
                    // A panic in a model (a bug) fails that request with 500, not the worker:
                    // the job's reply channel is dropped while unwinding.
                    let run = std::panic::AssertUnwindSafe(|| job(&engine, &metrics));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("an inference job panicked; the worker keeps serving");
                    }
                }
            })
            .expect("spawning the inference thread");
        Worker {
            tx,
            depth,
            capacity,
        }
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Runs `f` on the worker and waits for its result. Full queue -> 429 at once; a dead
    /// worker -> 503. When the caller has gone (time-out, disconnect) before the job starts, it
    /// is skipped; `f` gets a callback that turns true once the caller has gone, to stop early.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, &dyn Fn() -> bool) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |engine: &Engine, metrics: &Metrics| {
            if reply.is_closed() {
                metrics.count_cancelled();
                return;
            }
            let t = Instant::now();
            let cancelled = || reply.is_closed();
            let out = f(engine, &cancelled);
            // Recorded before the reply, so a client that got its answer sees it counted.
            metrics.observe_inference(t.elapsed().as_secs_f64());
            if reply.is_closed() {
                metrics.count_cancelled();
            }
            let _ = reply.send(out);
        });
        self.depth.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.try_send(job) {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(match e {
                TrySendError::Full(_) => ApiError::overloaded(format!(
                    "inference queue full: {} of {} jobs waiting",
                    self.depth(),
                    self.capacity
                )),
                TrySendError::Disconnected(_) => worker_gone(),
            });
        }
        rx.await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the inference job failed (see the server log)",
            )
        })
    }

    /// Extracts techniques from `doc` on the worker and hands the document back with the
    /// result (no copy of it is kept meanwhile); a pipeline error is 422 (see
    /// [`ApiError::from_core`]).
    pub async fn extract(
        &self,
        doc: Document,
        options: ExtractOptions,
    ) -> Result<(Document, Extraction), ApiError> {
        let (doc, out) = self
            .run(move |e, cancelled| {
                let out = e.extract(&doc, &options, cancelled);
                (doc, out)
            })
            .await?;
        match out {
            Ok(Some(x)) => Ok((doc, x)),
            // Only seen by a caller that is still there, so never in practice.
            Ok(None) => Err(ApiError::internal("the extraction was cancelled")),
            Err(e) => Err(ApiError::from_core(&e)),
        }
    }
}

fn worker_gone() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the inference worker stopped; restart the server",
    )
}
