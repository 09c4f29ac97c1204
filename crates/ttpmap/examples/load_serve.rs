//! Bounded load test of `POST /v1/extract` on a running `ttpmap serve` (loopback).
//!
//! ```sh
//! ttpmap serve --addr 127.0.0.1:8080 --queue 4 &
//! cargo run -p ttpmap --example load_serve -- --url http://127.0.0.1:8080 \
//!     --concurrency 1,2,8,32 --requests 200 --duration-s 30
//! ```
//!
//! For each concurrency level: at most `--requests` requests and `--duration-s` seconds
//! (whichever ends first), `C` client threads each sending one request at a time. Prints
//! throughput (answered requests per second, and 200s per second), p50/p99 latency of the
//! 200s, and counts by status. 429 (queue full) is the expected answer beyond saturation and
//! is not a failure; any other status or a transport error is, and makes the exit status 1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    concurrency: Vec<usize>,
    requests: usize,
    duration: Duration,
    file: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        concurrency: vec![1, 2, 8, 32],
        requests: 200,
        duration: Duration::from_secs(30),
        file: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/reports/operation-glass-lantern.md"
        )
        .into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--concurrency" => {
                a.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse().map_err(|e| format!("--concurrency: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--requests" => {
                a.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?
            }
            "--duration-s" => {
                a.duration = Duration::from_secs_f64(
                    value()?.parse().map_err(|e| format!("--duration-s: {e}"))?,
                )
            }
            "--file" => a.file = value()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.concurrency.contains(&0) || a.requests == 0 {
        return Err("--concurrency and --requests must be positive".into());
    }
    Ok(a)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let body = std::fs::read(&args.file).unwrap_or_else(|e| {
        eprintln!("error: {}: {e}", args.file);
        std::process::exit(2);
    });
    let content_type = if args.file.ends_with(".md") {
        "text/markdown"
    } else {
        "text/plain"
    };
    let url = format!("{}/v1/extract", args.url.trim_end_matches('/'));
    println!(
        "POST {url} ({} bytes, {content_type}); at most {} requests and {:.0} s per level",
        body.len(),
        args.requests,
        args.duration.as_secs_f64()
    );
    println!("concurrency  answered  req/s   ok/s   p50 ms   p99 ms  statuses");
    let mut failed = false;
    for &c in &args.concurrency {
        let issued = Arc::new(AtomicUsize::new(0));
        let results: Arc<Mutex<Vec<(u16, f64)>>> = Arc::default();
        let errors = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let threads: Vec<_> = (0..c)
            .map(|_| {
                let (issued, results, errors, url, body) = (
                    issued.clone(),
                    results.clone(),
                    errors.clone(),
                    url.clone(),
                    body.clone(),
                );
                let (limit, duration) = (args.requests, args.duration);
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(120)))
                        .build()
                        .into();
                    while start.elapsed() < duration
                        && issued.fetch_add(1, Ordering::SeqCst) < limit
                    {
                        let t = Instant::now();
                        match agent.post(&url).content_type(content_type).send(&body[..]) {
                            Ok(mut resp) => {
                                let _ = resp.body_mut().read_to_vec();
                                let ms = t.elapsed().as_secs_f64() * 1000.0;
                                results.lock().unwrap().push((resp.status().as_u16(), ms));
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        let wall = start.elapsed().as_secs_f64();
        let results = results.lock().unwrap();
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for (s, _) in results.iter() {
            *by_status.entry(*s).or_default() += 1;
        }
        let mut ok: Vec<f64> = results
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, ms)| *ms)
            .collect();
        ok.sort_by(f64::total_cmp);
        let errors = errors.load(Ordering::SeqCst);
        let statuses: Vec<String> = by_status
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .chain((errors > 0).then(|| format!("transport-error:{errors}")))
            .collect();
        println!(
            "{c:>11}  {:>8}  {:>5.1}  {:>5.1}  {:>7.1}  {:>7.1}  {}",
            results.len(),
            results.len() as f64 / wall,
            ok.len() as f64 / wall,
            percentile(&ok, 50.0),
            percentile(&ok, 99.0),
            statuses.join(" ")
        );
        let bad = by_status.keys().filter(|&&s| s != 200 && s != 429).count();
        if bad > 0 || errors > 0 || ok.is_empty() {
            failed = true;
        }
    }
    if failed {
        eprintln!("FAILED: statuses other than 200/429, transport errors, or no 200 at some level");
        std::process::exit(1);
    }
}
