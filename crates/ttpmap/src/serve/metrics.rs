//! Prometheus metrics of the service, rendered in the text exposition format (version 0.0.4).
//!
//! Owns three series families:
//! - `ttpmap_http_requests_total{method, route, status}`: a counter per matched route template
//!   (`/v1/reports/{id}`, not the concrete path, so cardinality stays bounded; unmatched paths
//!   count under `route="unmatched"`);
//! - `ttpmap_inference_queue_depth` / `ttpmap_inference_queue_capacity`: gauges of the
//!   inference queue (jobs waiting, not the one running);
//! - `ttpmap_inference_seconds`: a histogram of the worker's wall time per extraction;
//! - `ttpmap_cancelled_jobs_total`: worker jobs skipped or stopped early because their
//!   requester had gone (time-out, disconnect).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the inference latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, plus one for +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Counters shared by the request middleware, the worker and `/metrics`.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    inference: Mutex<Histogram>,
    cancelled: AtomicU64,
}

impl Metrics {
    /// Counts one finished request.
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Records one inference run of `secs` seconds.
    pub fn observe_inference(&self, secs: f64) {
        let mut h = self.inference.lock().unwrap_or_else(|e| e.into_inner());
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// Counts one worker job abandoned by its requester (skipped, or stopped between batches).
    pub fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }

    /// Worker jobs abandoned so far.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Requests counted so far for (method, route, status).
    #[cfg(test)]
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(method.to_string(), route.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// The exposition text.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP ttpmap_http_requests_total HTTP requests by method, route template and status.\n");
        out.push_str("# TYPE ttpmap_http_requests_total counter\n");
        {
            let m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "ttpmap_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(method),
                    escape(route)
                );
            }
        }
        out.push_str(
            "# HELP ttpmap_inference_queue_depth Extraction jobs waiting for the worker.\n",
        );
        out.push_str("# TYPE ttpmap_inference_queue_depth gauge\n");
        let _ = writeln!(out, "ttpmap_inference_queue_depth {queue_depth}");
        out.push_str(
            "# HELP ttpmap_inference_queue_capacity Jobs that may wait before requests get 429.\n",
        );
        out.push_str("# TYPE ttpmap_inference_queue_capacity gauge\n");
        let _ = writeln!(out, "ttpmap_inference_queue_capacity {queue_capacity}");
        out.push_str(
            "# HELP ttpmap_inference_seconds Wall time of one extraction on the worker.\n",
        );
        out.push_str("# TYPE ttpmap_inference_seconds histogram\n");
        let h = self.inference.lock().unwrap_or_else(|e| e.into_inner());
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(out, "ttpmap_inference_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += h.counts[LATENCY_BUCKETS.len()];
        let _ = writeln!(out, "ttpmap_inference_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "ttpmap_inference_seconds_sum {}", h.sum);
        let _ = writeln!(out, "ttpmap_inference_seconds_count {}", h.count);
        out.push_str(
            "# HELP ttpmap_cancelled_jobs_total Worker jobs skipped or stopped because their requester had gone.\n",
        );
        out.push_str("# TYPE ttpmap_cancelled_jobs_total counter\n");
        let _ = writeln!(out, "ttpmap_cancelled_jobs_total {}", self.cancelled());
        out
    }
}

/// Label value escaping of the exposition format: backslash, quote, newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_inference(0.003); // bucket 0.005
        m.observe_inference(0.2); // bucket 0.25
        m.observe_inference(100.0); // +Inf only
        m.count_request("GET", "/health", 200);
        m.count_request("GET", "/health", 200);
        let text = m.render(2, 8);
        assert!(
            text.contains("ttpmap_inference_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("ttpmap_inference_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("ttpmap_inference_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("ttpmap_inference_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("ttpmap_inference_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ttpmap_inference_seconds_count 3\n"));
        assert!(text.contains(
            "ttpmap_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("ttpmap_inference_queue_depth 2\n"));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
