//! The idempotency layer's cost per request, first call and replay, for SQLite and
//! PostgreSQL. Run: `cargo bench --bench store` (PostgreSQL from PAYGATE_TEST_POSTGRES_URL,
//! default postgres://postgres@127.0.0.1:5432/postgres). Prints a table; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate::domain::{CancelOutcome, CancellationStatus, ProviderResult};
use paygate::error::ErrorContext;
use paygate::idempotency::{self, FnOperation, Idempotency, Keyed};
use paygate::providers::{ProviderError, Resolution};
use paygate::store::{self, Key, Store};
use sqlx::Connection;

const N: usize = 2_000;

fn outcome() -> CancelOutcome {
    CancelOutcome {
        status: CancellationStatus::Accepted,
        result: ProviderResult {
            provider: "antom".into(),
            code: "SUCCESS".into(),
            status: "S".into(),
            message: "success".into(),
        },
        effect: None,
        subscription_state: None,
        cancel_time: None,
        cancel_reason: None,
    }
}

fn key(i: usize) -> Key {
    Key {
        caller: String::new(),
        method: "SubscriptionService.Cancel",
        request_id: format!("bench-{i}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn measure(idem: &Idempotency, replay: bool) -> (Vec<Duration>, f64) {
    let ctx = ErrorContext::default();
    let fp = "f".repeat(64);
    let mut samples = Vec::with_capacity(N);
    let cpu0 = cpu_seconds();
    for i in 0..N {
        let k = key(i);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let t = Instant::now();
        let r = idem
            .run(
                &Keyed {
                    key: &k,
                    fingerprint: &fp,
                    account: "main",
                    deadline,
                    ctx: &ctx,
                    refund: None,
                },
                &FnOperation {
                    settle: |_| async { Ok(Resolution::Resend) },
                    send: || async { Ok::<_, ProviderError>(outcome()) },
                },
            )
            .await
            .expect("run");
        samples.push(t.elapsed());
        assert_eq!(r.replayed, replay);
    }
    let cpu = (cpu_seconds() - cpu0) / N as f64 * 1e3;
    samples.sort();
    (samples, cpu)
}

/// User + system CPU time of this process, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn bench(name: &str, store: Arc<dyn Store>) {
    let idem = Idempotency::new(store, idempotency::DEFAULT_RETENTION);
    for (path, replay) in [("first call", false), ("replay", true)] {
        let (s, cpu) = measure(&idem, replay).await;
        println!(
            "| {name:<8} | {path:<10} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} |",
            percentile(&s, 0.5),
            percentile(&s, 0.99),
            s.iter().sum::<Duration>().as_secs_f64() * 1e3 / N as f64,
            cpu
        );
    }
}

#[tokio::main]
async fn main() {
    println!("idempotency layer cost per request, {N} requests each, sequential");
    println!("| store    | path       | p50 ms   | p99 ms   | mean ms  | CPU ms   |");
    println!("|----------|------------|----------|----------|----------|----------|");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("sqlite", store::open(&url).await.unwrap()).await;

    let admin = std::env::var("PAYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("paygate_bench_{}", std::process::id());
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut c) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            let store = store::open(&format!("{base}/{name}")).await.unwrap();
            bench("postgres", store).await;
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
        Err(e) => println!("| postgres | unavailable: {e} |"),
    }
    println!(
        "CPU ms = this process's user+system time per request (client side of the store; PostgreSQL's own CPU not included)"
    );
}
