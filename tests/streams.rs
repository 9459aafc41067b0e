//! `EventService.Watch` streams are bounded, through the binary: in total and per caller they
//! shed with RESOURCE_EXHAUSTED `OVERLOADED` and RetryInfo, their slots come back when they
//! end, and a cursor beyond the newest event is OUT_OF_RANGE instead of a silent wait.

mod common;

use std::time::{Duration, Instant};

use common::process::{GatewayProcess, antom_env, spawn_configured};
use common::*;
use paygate::pb;
use paygate::pb::event_service_client::EventServiceClient;
use tonic::Code;
use tonic::transport::Channel;

fn spawn(dir: &std::path::Path, antom_url: &str, toml: &str, auth: bool) -> GatewayProcess {
    let config = dir.join("paygate.toml");
    std::fs::write(&config, toml).unwrap();
    let d = |f: &str| dir.join(f).display().to_string();
    let mut env = antom_env(dir, antom_url);
    if auth {
        let tokens: String = ["alpha", "beta"]
            .iter()
            .map(|c| {
                format!(
                    "{c} {}\n",
                    paygate::server::hash_token(&format!("{c}-token"))
                )
            })
            .collect();
        std::fs::write(dir.join("tokens"), tokens).unwrap();
        env.push(("PAYGATE_AUTH_TOKENS_FILE", d("tokens")));
    }
    spawn_configured(&config, &format!("sqlite://{}", d("paygate.db")), &env)
}

async fn open(
    channel: &Channel,
    token: Option<&str>,
    cursor: &str,
) -> Result<tonic::Streaming<pb::Event>, tonic::Status> {
    let req = pb::WatchEventsRequest {
        after_cursor: cursor.into(),
        accounts: vec![],
        ..Default::default()
    };
    let req = match token {
        Some(t) => authed(req, t, Duration::from_secs(60)),
        None => tonic::Request::new(req),
    };
    EventServiceClient::new(channel.clone())
        .watch(req)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn streams_are_capped_in_total_and_per_caller_and_come_back() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(
        dir.path(),
        &sim.base_url(),
        "max_event_streams = 15\nmax_event_streams_per_caller = 10\n",
        true,
    );
    gw.client().await;
    let ch = Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let shed = |e: tonic::Status| {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(reason(&e), "OVERLOADED");
        assert!(retry_delay(&e).is_some(), "RetryInfo");
    };
    let mut alpha = Vec::new();
    for _ in 0..10 {
        alpha.push(open(&ch, Some("alpha-token"), "").await.unwrap());
    }
    shed(open(&ch, Some("alpha-token"), "").await.unwrap_err());
    let mut beta = Vec::new();
    for _ in 0..5 {
        beta.push(open(&ch, Some("beta-token"), "").await.unwrap());
    }
    shed(open(&ch, Some("beta-token"), "").await.unwrap_err());
    // Alpha's streams end: their slots come back.
    drop(alpha);
    let start = Instant::now();
    let again = loop {
        match open(&ch, Some("beta-token"), "").await {
            Ok(s) => break s,
            Err(e) if start.elapsed() < Duration::from_secs(3) => {
                shed(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slots never came back: {e:?}"),
        }
    };
    drop((again, beta));
    // A cursor beyond the newest event is refused at once.
    let start = Instant::now();
    let e = open(&ch, Some("alpha-token"), "999").await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert_eq!(reason(&e), "CURSOR_AHEAD");
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Measures (prints) what idle watchers cost; most of it must be given back after they end,
/// and their slots must come back.
#[tokio::test]
async fn memory_of_idle_watchers_returns_when_they_end() {
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(
        dir.path(),
        &sim.base_url(),
        "max_event_streams = 3000\n",
        false,
    );
    gw.client().await;
    let pid = gw.child.id();
    let before = rss_kib(pid);
    // At most 100 streams per connection and 32 connections per client: 94 on each of 32.
    let mut channels = Vec::new();
    for _ in 0..32 {
        channels.push(
            Channel::from_shared(gw.url())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut streams = Vec::new();
    for i in 0..3000 {
        streams.push(open(&channels[i % 32], None, "").await.unwrap());
    }
    shed_one_more(&channels[0]).await;
    let open_rss = rss_kib(pid);
    drop(streams);
    drop(channels);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    println!(
        "3000 idle watchers: gateway RSS {before} KiB before, {open_rss} KiB open ({} bytes each), {after} KiB 5 s after they ended",
        (open_rss.saturating_sub(before)) * 1024 / 3000
    );
    // Most of what they held is given back to the system (glibc kept it all before).
    assert!(
        after.saturating_sub(before) < open_rss.saturating_sub(before) / 2,
        "{after} KiB after, {before} KiB before, {open_rss} KiB open"
    );
    // Their slots are back.
    let ch = Channel::from_shared(gw.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    open(&ch, None, "").await.unwrap();
}

async fn shed_one_more(ch: &Channel) {
    let e = open(ch, None, "").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}
