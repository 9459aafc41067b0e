//! The notification port faces the internet, so strangers cannot starve the gateway through it
//! (through the binary): connections beyond the cap are closed at once and counted, slow
//! headers, idle keep-alive connections and slow bodies are closed within their timeouts, and
//! gRPC calls on new connections keep working meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::process::{GatewayProcess, antom_env, free_port, spawn_configured};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW: usize = 2_000;
const CAP: usize = 500;
/// Long enough that no slow connection's header timeout frees a slot before all of them are
/// open, however busy the machine is, so more than the cap are held at once.
const HEADER_TIMEOUT_MS: u64 = 3_000;

fn spawn(dir: &std::path::Path, antom_url: &str, notify: u16, metrics: u16) -> GatewayProcess {
    let config = dir.join("paygate.toml");
    std::fs::write(
        &config,
        format!(
            "notify_max_connections = {CAP}\n\
             notify_header_timeout_ms = {HEADER_TIMEOUT_MS}\n\
             notify_body_timeout_ms = 1000\n\
             notify_max_connection_ms = 6000\n"
        ),
    )
    .unwrap();
    let mut env = antom_env(dir, antom_url);
    env.push(("PAYGATE_NOTIFY_ADDR", format!("127.0.0.1:{notify}")));
    env.push(("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}")));
    let store = format!("sqlite://{}", dir.join("paygate.db").display());
    spawn_configured(&config, &store, &env)
}

/// True once the peer has closed the connection (EOF or reset), within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an answer; the close follows
            Err(_) => return false,
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn strangers_on_the_notification_port_cannot_starve_the_gateway() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (notify, metrics) = (free_port(), free_port());
    let mut gw = spawn(dir.path(), &sim.base_url(), notify, metrics);
    let pid = gw.child.id();
    gw.client().await;
    let fds_before = open_fds(pid);
    let addr = format!("127.0.0.1:{notify}");

    // Thousands of connections that send half a header and stall, opened many at a time
    // (opened one by one on a loaded machine, the first ones' header timeout freed slots
    // before the cap was met).
    let mut slow = Vec::new();
    for chunk in 0..SLOW / 250 {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..250 {
            let addr = addr.clone();
            opening.spawn(async move {
                let mut s = TcpStream::connect(&addr).await?;
                let _ = s
                    .write_all(b"POST /notify/antom/refund HTTP/1.1\r\nHost: x\r\n")
                    .await;
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(opened) = opening.join_next().await {
            match opened.unwrap() {
                Ok(s) => slow.push(s),
                // Say whether the gateway was still running, and on which ports.
                Err(e) => panic!(
                    "a connection of chunk {chunk} to the notification port {addr} failed: {e}; \
                     gateway on gRPC port {}, exit status {:?}",
                    gw.port,
                    gw.child.try_wait()
                ),
            }
        }
    }
    let held_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_held = open_fds(pid);
    // gRPC on new connections keeps working while they are held.
    for i in 0..5 {
        let mut c = paygate::pb::refund_service_client::RefundServiceClient::connect(gw.url())
            .await
            .unwrap();
        c.create(refund_req(&format!("during-{i}"), "PAY_USD_100", 100))
            .await
            .unwrap();
    }
    // Every slow connection is closed: those over the cap at once, the others at the
    // header timeout.
    let mut closed = 0;
    for s in &mut slow {
        if closed_within(
            s,
            Duration::from_millis(HEADER_TIMEOUT_MS + 1_500).saturating_sub(held_at.elapsed()),
        )
        .await
        {
            closed += 1;
        }
    }
    let took = held_at.elapsed();
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_after = open_fds(pid);
    println!(
        "{SLOW} slow connections: {closed} closed within {} ms; gateway fds {fds_before} before, {fds_held} while held, {fds_after} after",
        took.as_millis()
    );
    assert_eq!(closed, SLOW, "every slow connection is closed");
    assert!(fds_held < fds_before + CAP + 50, "at most the cap is held");

    // Refused connections are counted.
    let scrape = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: f64 = scrape
        .lines()
        .find(|l| l.starts_with("paygate_notify_connections_refused_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the refusal counter");
    // (Fewer than SLOW - CAP: slots freed by header timeouts while the rest were opening.)
    println!("{refused} connections refused over the cap of {CAP}");
    assert!(refused >= 1.0, "{refused}");

    // A kept-alive connection left idle is closed too.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(
        b"POST /notify/nobody/refund HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_millis(HEADER_TIMEOUT_MS + 1_500)).await);
    println!(
        "an idle kept-alive connection was closed after {} ms",
        start.elapsed().as_millis()
    );
    // A body that never arrives gets 408 and the connection is closed.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"POST /notify/antom/refund HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(start.elapsed() < Duration::from_millis(2_000));
}

/// The soft open-files limit of a process, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_server_raises_its_open_files_limit_at_start_even_without_notifications() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    if hard <= 1024 {
        panic!("this test needs a hard open-files limit above 1024 (it is {hard})");
    }
    let sim = shared_antom_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paygate.toml");
    std::fs::write(&config, "").unwrap();
    let mut env = antom_env(dir.path(), &sim.base_url());
    env.push(("PAYGATE_NOTIFY_ADDR", "off".to_string()));
    // The process starts with a soft limit of 1024 (prlimit, util-linux).
    let port = free_port();
    let store = format!("sqlite://{}", dir.path().join("paygate.db").display());
    let child = std::process::Command::new("prlimit")
        .arg(format!("--nofile=1024:{hard}"))
        .arg(common::process::gateway_binary())
        .arg("serve")
        .env("PAYGATE_CONFIG", &config)
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PAYGATE_STORE_URL", &store)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("prlimit is required (util-linux)");
    let gw = GatewayProcess { child, port };
    gw.client().await;
    assert_eq!(soft_nofile(gw.child.id()), hard);
}
