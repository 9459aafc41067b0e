//! The `paygate` binary itself: dev mode answers the example it prints, `sim` + `serve` work
//! from the environment contract alone, configuration errors exit non-zero with one line
//! naming the setting, and SIGTERM drains and exits cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::free_port;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::pb::subscription_service_client::SubscriptionServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_paygate");

/// Kills the child when dropped, so a failing test leaves nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads stdout lines until one contains `marker`; returns everything read.
fn read_until(child: &mut Child, marker: &str) -> String {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            text.push_str(&line);
            text.push('\n');
            if line.contains(marker) {
                // Drain the rest of the banner.
                while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                    text.push_str(&l);
                    text.push('\n');
                }
                return text;
            }
        }
    }
    panic!("{marker:?} never printed; got:\n{text}");
}

/// The JSON after `-d '` on the banner line that calls `method`.
fn example_json(banner: &str, method: &str) -> serde_json::Value {
    let line = banner
        .lines()
        .find(|l| l.contains("grpcurl") && l.ends_with(method))
        .unwrap_or_else(|| panic!("no grpcurl example for {method}"));
    let start = line.find("-d '").unwrap() + 4;
    let end = start + line[start..].find('\'').unwrap();
    serde_json::from_str(&line[start..end]).unwrap()
}

fn s(v: &serde_json::Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `paygate dev` on `data_dir`, serving on `port`, once it printed its banner (returned).
fn spawn_dev(data_dir: &std::path::Path, port: u16) -> (Proc, String) {
    let (proc, banner, _) = dev_on(data_dir, port, &[]);
    (proc, banner)
}

/// The binary under test (another build's with `PAYGATE_TEST_BINARY`).
fn bin() -> String {
    std::env::var("PAYGATE_TEST_BINARY").unwrap_or_else(|_| BIN.into())
}

#[tokio::test]
async fn a_second_dev_mode_never_touches_the_first_ones_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_first, _) = spawn_dev(dir.path(), port);
    let mut refunds = RefundServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let req = pb::CreateRefundRequest {
        request_id: "kept-1".into(),
        payment_id: "PAY_DEMO_0001".into(),
        amount: Some(pb::Money {
            currency: "USD".into(),
            value: 100,
        }),
        ..Default::default()
    };
    let done = refunds.create(req.clone()).await.unwrap().into_inner();
    let store = dir.path().join("paygate.db");
    assert!(store.exists());
    // A second dev mode on the same data directory (on the same port, or another).
    for second_port in [port, free_port()] {
        let out = Command::new(bin())
            .args(["dev", "--data-dir"])
            .arg(dir.path())
            .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{second_port}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second dev mode started");
        assert!(
            store.exists(),
            "the running dev mode's store was deleted: {stderr}"
        );
        assert!(
            stderr.contains("another paygate dev is running"),
            "{stderr}"
        );
    }
    // The first one still holds its refund: a replay, not a new refund.
    let again = refunds.create(req).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().refund_id, done.refund_id);
}

#[test]
fn settle_never_creates_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-the-gateways.db");
    let out = Command::new(bin())
        .args(["settle", "--store-url"])
        .arg(format!("sqlite://{}", missing.display()))
        .args(["--account", "payxpert", "--request-id", "r-1", "--failed"])
        .args(["--reason", "checked"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!missing.exists(), "settle created a store: {stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("no store at"), "{stderr}");
}

/// `settle` reads the store settings from `--config` (or PAYGATE_CONFIG) and the environment as
/// `serve` does, and says which store it opened.
#[tokio::test]
async fn settle_reads_the_store_from_the_configuration_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let (dev, _) = spawn_dev(&data, free_port());
    drop(dev);
    let store = data.join("paygate.db");
    assert!(store.is_file());
    let cfg = dir.path().join("paygate.toml");
    std::fs::write(
        &cfg,
        format!("store_url = \"sqlite://{}\"\n", store.display()),
    )
    .unwrap();
    let settle = |how: &dyn Fn(&mut Command)| {
        let mut cmd = Command::new(bin());
        // From an empty folder, so the default store (./data/paygate.db) is not there.
        cmd.current_dir(dir.path()).env_remove("PAYGATE_STORE_URL");
        how(&mut cmd);
        cmd.args([
            "--account",
            "antom",
            "--request-id",
            "no-such-key",
            "--failed",
            "--reason",
            "OPS-7: checked the back office",
        ]);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (label, err) in [
        (
            "settle --config",
            settle(&|c| {
                c.arg("settle").arg("--config").arg(&cfg);
            }),
        ),
        (
            "--config before the command",
            settle(&|c| {
                c.arg("--config").arg(&cfg).arg("settle");
            }),
        ),
        (
            "PAYGATE_CONFIG",
            settle(&|c| {
                c.env("PAYGATE_CONFIG", &cfg).arg("settle");
            }),
        ),
    ] {
        assert!(
            err.contains(&format!(
                "settle: store sqlite (sqlite://{})",
                store.display()
            )),
            "{label}: {err}"
        );
        assert!(err.contains("no such key"), "{label}: {err}");
    }
    // The environment overrides the file, as for serve; a missing store is refused.
    let missing = dir.path().join("missing.db");
    let err = settle(&|c| {
        c.env(
            "PAYGATE_STORE_URL",
            format!("sqlite://{}", missing.display()),
        )
        .arg("settle")
        .arg("--config")
        .arg(&cfg);
    });
    assert!(err.contains("no store at"), "{err}");
    assert!(err.contains("PAYGATE_STORE_URL"), "{err}");
    assert!(!missing.exists());
}

/// `settle` says why or does nothing: without `--reason` (or with a blank one) it is a usage
/// error, before any store is opened.
#[test]
fn settle_requires_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("none.db").display());
    for reason in [None, Some("   ")] {
        let mut cmd = Command::new(bin());
        cmd.args(["settle", "--store-url", &store]).args([
            "--account",
            "payxpert",
            "--request-id",
            "r-1",
            "--failed",
        ]);
        if let Some(r) = reason {
            cmd.args(["--reason", r]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{reason:?}: {stderr}");
        assert!(stderr.contains("--reason"), "{reason:?}: {stderr}");
        assert!(
            !stderr.contains("no store at"),
            "refused before the store: {stderr}"
        );
    }
}

/// Each command's help shows only the options it reads.
#[test]
fn help_shows_only_the_options_a_command_reads() {
    let help = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (cmd, shown, hidden) in [
        ("serve", &["--config", "--log-format"][..], &[][..]),
        ("check-config", &["--config"], &["--log-format"]),
        ("settle", &["--config", "--store-url"], &["--log-format"]),
        ("dev", &["--log-format", "--keep"], &["--config"]),
        ("sim", &["--log-format"], &["--config"]),
        ("healthcheck", &["--addr"], &["--config", "--log-format"]),
        ("hash-token", &[], &["--config", "--log-format"]),
    ] {
        let text = help(&[cmd]);
        for o in shown {
            assert!(text.contains(o), "{cmd} --help lacks {o}:\n{text}");
        }
        for o in hidden {
            assert!(
                !text.contains(o),
                "{cmd} --help shows {o}, which it ignores:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn dev_mode_answers_its_own_examples() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_guard, banner) = spawn_dev(dir.path(), port);
    assert!(
        dir.path()
            .join("dev-keys/merchant_private_key.pem")
            .exists()
    );

    let url = format!("http://127.0.0.1:{port}");
    let mut refunds = RefundServiceClient::connect(url.clone()).await.unwrap();
    let create = example_json(&banner, "paygate.v1.RefundService/Create");
    for k in create.as_object().unwrap().keys() {
        assert!(
            ["request_id", "payment_id", "amount"].contains(&k.as_str()),
            "{k}"
        );
    }
    let r = refunds
        .create(create_request(&create))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);

    let q = refunds
        .inquire(inquire_request(&banner))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.refund_id, r.refund_id);

    // The PayXpert examples (the second Create and Cancel lines).
    let px_lines: Vec<&str> = banner
        .lines()
        .filter(|l| l.contains("\"account\":\"payxpert\""))
        .collect();
    assert_eq!(px_lines.len(), 2, "{banner}");
    let px_refund = example_json(px_lines[0], "paygate.v1.RefundService/Create");
    let r = refunds
        .create(pb::CreateRefundRequest {
            account: s(&px_refund, "account"),
            request_id: s(&px_refund, "request_id"),
            payment_id: s(&px_refund, "payment_id"),
            amount: Some(pb::Money {
                currency: s(&px_refund["amount"], "currency"),
                value: s(&px_refund["amount"], "value").parse().unwrap(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.provider_result.unwrap().provider, "payxpert");
    let px_cancel = example_json(px_lines[1], "paygate.v1.SubscriptionService/Cancel");

    let cancel = example_json(&banner, "paygate.v1.SubscriptionService/Cancel");
    assert_eq!(s(&cancel, "cancellation_type"), "CANCELLATION_TYPE_CANCEL");
    let mut subs = SubscriptionServiceClient::connect(url).await.unwrap();
    let c = subs
        .cancel(pb::CancelSubscriptionRequest {
            request_id: s(&cancel, "request_id"),
            subscription_id: s(&cancel, "subscription_id"),
            cancellation_type: pb::CancellationType::Cancel as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.status(), pb::CancellationStatus::Accepted);
    let c = subs
        .cancel(pb::CancelSubscriptionRequest {
            account: s(&px_cancel, "account"),
            request_id: s(&px_cancel, "request_id"),
            subscription_id: s(&px_cancel, "subscription_id"),
            cancellation_type: pb::CancellationType::Cancel as i32,
            cancel_reason: px_cancel["cancel_reason"].as_i64().unwrap() as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.effect(), pb::CancellationEffect::EndOfPeriod);
}

#[tokio::test]
async fn serve_runs_from_the_environment_contract_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let mut sim = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--keys-dir",
        ])
        .arg(dir.path())
        .args(["--client-id", "SANDBOX_CLI_TEST"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = read_until(&mut sim, "paygate serve");
    let _sim = Proc(sim);
    assert!(printed.contains("PAYGATE_ANTOM_PRIVATE_KEY_FILE="));

    let port = free_port();
    let mut gw = Command::new(BIN)
        .env("PAYGATE_NOTIFY_ADDR", "127.0.0.1:0")
        .arg("serve")
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "PAYGATE_ANTOM_BASE_URL",
            format!("http://127.0.0.1:{sim_port}"),
        )
        .env("PAYGATE_ANTOM_CLIENT_ID", "SANDBOX_CLI_TEST")
        .env(
            "PAYGATE_ANTOM_PRIVATE_KEY_FILE",
            dir.path().join("merchant_private_key.pem"),
        )
        .env(
            "PAYGATE_ANTOM_PUBLIC_KEY_FILE",
            dir.path().join("antom_public_key.pem"),
        )
        .env("PAYGATE_LOG_FORMAT", "json")
        .env("PAYGATE_SHUTDOWN_GRACE_MS", "2000")
        .env(
            "PAYGATE_STORE_URL",
            format!("sqlite://{}", dir.path().join("paygate.db").display()),
        )
        .env_remove("PAYGATE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = RefundServiceClient::connect(url.clone()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("gateway came up");
    let r = client
        .create(pb::CreateRefundRequest {
            request_id: "cli-1".into(),
            payment_id: "PAY_DEMO_0001".into(),
            amount: Some(pb::Money {
                currency: "USD".into(),
                value: 100,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), pb::RefundStatus::Succeeded);

    // The client stays connected: shutdown must still end within the grace period.
    common::provision::sigterm(gw.id());
    let status = wait_with_timeout(&mut gw, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "clean exit after SIGTERM");
    let mut logs = String::new();
    std::io::Read::read_to_string(gw.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "JSON logs:\n{logs}"
    );
    assert!(logs.contains("shutting down"));
    let key = std::fs::read_to_string(dir.path().join("merchant_private_key.pem")).unwrap();
    let body_line = key.lines().nth(1).unwrap();
    assert!(!logs.contains(body_line), "key material in logs");
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < until, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_error(envs: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PAYGATE_CONFIG")
        .env("PAYGATE_LISTEN_ADDR", "127.0.0.1:0")
        .env("PAYGATE_NOTIFY_ADDR", "127.0.0.1:0");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_non_zero_with_one_line_naming_the_setting() {
    let (code, err) = config_error(&[], &["serve"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("paygate: configuration error: accounts:"),
        "{err}"
    );

    let (code, err) = config_error(
        &[
            (
                "PAYGATE_ANTOM_BASE_URL",
                "https://open-sea-global.alipay.com",
            ),
            ("PAYGATE_ANTOM_CLIENT_ID", "C"),
            ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
            ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", "/nonexistent/pub.pem"),
        ],
        &["serve"],
    );
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PAYGATE_ANTOM_PRIVATE_KEY_FILE"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("k.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (code, err) = config_error(
        &[
            ("PAYGATE_ANTOM_BASE_URL", "ftp://x"),
            ("PAYGATE_ANTOM_CLIENT_ID", "C"),
            ("PAYGATE_ANTOM_PRIVATE_KEY_FILE", garbage.to_str().unwrap()),
            ("PAYGATE_ANTOM_PUBLIC_KEY_FILE", garbage.to_str().unwrap()),
        ],
        &["serve"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("PAYGATE_ANTOM_BASE_URL"), "{err}");

    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[accounts.a]\nprovider = \"stripe\"\n").unwrap();
    let (code, err) = config_error(&[], &["--config", cfg.to_str().unwrap(), "serve"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("accounts.a.provider"), "{err}");
    assert!(!err.contains("not a key"));
}

#[test]
fn a_listen_address_in_use_is_a_configuration_error_and_host_names_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "secret").unwrap();
    let pw = dir.path().join("pw").display().to_string();
    let px = [
        ("PAYGATE_PAYXPERT_BASE_URL", "http://127.0.0.1:9"),
        ("PAYGATE_PAYXPERT_ORIGINATOR_ID", "ORIG1"),
        ("PAYGATE_PAYXPERT_PASSWORD_FILE", pw.as_str()),
    ];
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    // In use: exit 2 with one line naming the setting, like every configuration error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut envs = px.to_vec();
    envs.push(("PAYGATE_STORE_URL", store.as_str()));
    envs.push(("PAYGATE_LISTEN_ADDR", addr.as_str()));
    let (code, err) = config_error(&envs, &["serve"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PAYGATE_LISTEN_ADDR"), "{err}");
    // A host name is a valid listen address.
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_remove("PAYGATE_CONFIG")
        .envs(px.iter().copied())
        .env("PAYGATE_STORE_URL", &store)
        .env("PAYGATE_LISTEN_ADDR", format!("localhost:{port}"))
        .env("PAYGATE_NOTIFY_ADDR", "off")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the start-up line");
        if line.contains("paygate listening") {
            break line;
        }
    };
    assert!(started.contains(env!("CARGO_PKG_VERSION")), "{started}");
    assert!(started.contains("sqlite"), "{started}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn hash_token_prints_the_sha256_the_tokens_file_wants() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my-token\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        paygate::server::hash_token("my-token")
    );
    assert_eq!(paygate::server::hash_token("my-token").len(), 64);
}

fn antom_env() -> Vec<(&'static str, String)> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    vec![
        (
            "PAYGATE_ANTOM_BASE_URL",
            "https://open-sea-global.alipay.com".into(),
        ),
        ("PAYGATE_ANTOM_CLIENT_ID", "C".into()),
        (
            "PAYGATE_ANTOM_PRIVATE_KEY_FILE",
            fixtures.join("test_merchant_key.pem").display().to_string(),
        ),
        (
            "PAYGATE_ANTOM_PUBLIC_KEY_FILE",
            fixtures
                .join("test_merchant_public_key.pem")
                .display()
                .to_string(),
        ),
    ]
}

#[test]
fn an_unreachable_store_names_its_host_and_fails_within_5_s() {
    let mut env = antom_env();
    // A server that takes the connection and never answers, and a port nobody listens on.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = free_port();
    for (port, expect) in [
        (silent_port, "no answer within 5 s"),
        (closed_port, "refused"),
    ] {
        let url = format!("postgres://paygate:hunter2@127.0.0.1:{port}/payments");
        env.push(("PAYGATE_STORE_URL", url));
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let (code, err) = config_error(&envs, &["serve"]);
        let took = started.elapsed();
        env.pop();
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("PAYGATE_STORE_URL"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
        assert!(took < Duration::from_secs(7), "{took:?}: {err}");
        eprintln!("{took:?}: {err}");
    }
    drop(silent);
}

#[test]
fn check_config_validates_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let env = antom_env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The store is not opened: a PostgreSQL nobody runs is fine for check-config.
    let mut with_store = envs.clone();
    with_store.push(("PAYGATE_STORE_URL", "postgres://u@127.0.0.1:1/x"));
    let out = Command::new(BIN)
        .arg("check-config")
        .env_remove("PAYGATE_CONFIG")
        .envs(with_store.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("configuration OK: accounts antom"), "{said}");
    assert!(said.contains("store postgres"), "{said}");

    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[accounts.a]\nprovider = \"antom\"\nburst = 10.0\n").unwrap();
    let (code, err) = config_error(&[], &["--config", cfg.to_str().unwrap(), "check-config"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("c.toml:3"), "{err}");
}

/// `check-config` lists the key versions each Antom account would use: from key directories
/// (the highest merchant version signs), or from today's one-file settings; a key directory
/// with the file setting as well, or a `key_version` beside a directory, is refused.
#[test]
fn check_config_lists_the_key_versions() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("merchant"), dir.path().join("antom"));
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(&public).unwrap();
    let key = std::fs::read(fixtures.join("test_merchant_key.pem")).unwrap();
    let pubkey = std::fs::read(fixtures.join("test_merchant_public_key.pem")).unwrap();
    for v in ["1", "2"] {
        std::fs::write(private.join(format!("{v}.pem")), &key).unwrap();
    }
    std::fs::write(public.join("7.pem"), &pubkey).unwrap();
    let base = [
        (
            "PAYGATE_ANTOM_BASE_URL",
            "https://open-sea-global.alipay.com".to_owned(),
        ),
        ("PAYGATE_ANTOM_CLIENT_ID", "C".to_owned()),
    ];
    let check = |extra: &[(&str, String)]| {
        let out = Command::new(BIN)
            .arg("check-config")
            .env_remove("PAYGATE_CONFIG")
            .envs(base.iter().chain(extra).map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let dirs = [
        (
            "PAYGATE_ANTOM_PRIVATE_KEYS_DIR",
            private.display().to_string(),
        ),
        (
            "PAYGATE_ANTOM_PUBLIC_KEYS_DIR",
            public.display().to_string(),
        ),
    ];
    let (code, said) = check(&dirs);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(
            "antom: signs with merchant key version 2 (holds 1, 2); verifies Antom key versions 7"
        ),
        "{said}"
    );
    let mut both = dirs.to_vec();
    both.push((
        "PAYGATE_ANTOM_PRIVATE_KEY_FILE",
        fixtures.join("test_merchant_key.pem").display().to_string(),
    ));
    let (code, said) = check(&both);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("PAYGATE_ANTOM_PRIVATE_KEYS_DIR") && said.contains("not both"),
        "{said}"
    );
    let (code, said) = check(&antom_env());
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("signs with merchant key version 1 (holds 1)"),
        "{said}"
    );
}

/// Starts `paygate dev` on `dir`; answers its process, banner and gRPC URL.
fn start_dev(dir: &std::path::Path, extra: &[&str]) -> (Proc, String, String) {
    dev_on(dir, free_port(), extra)
}

/// `paygate dev` on `dir` with `extra` options, serving on `port`, once it printed its whole
/// banner; its process, banner and gRPC URL.
fn dev_on(dir: &std::path::Path, port: u16, extra: &[&str]) -> (Proc, String, String) {
    let mut child = Command::new(bin())
        .args(["dev", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("PAYGATE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = read_until(&mut child, "Stop with Ctrl-C");
    (Proc(child), banner, format!("http://127.0.0.1:{port}"))
}

/// The banner's Inquire example.
fn inquire_request(banner: &str) -> pb::InquireRefundRequest {
    let example = example_json(banner, "paygate.v1.RefundService/Inquire");
    pb::InquireRefundRequest {
        request_id: s(&example, "request_id"),
        ..Default::default()
    }
}

/// The Create request of a banner example.
fn create_request(example: &serde_json::Value) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: s(example, "request_id"),
        payment_id: s(example, "payment_id"),
        amount: Some(pb::Money {
            currency: s(&example["amount"], "currency"),
            value: s(&example["amount"], "value").parse().unwrap(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn dev_mode_starts_fresh_on_each_run_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut refund_ids = Vec::new();
    for run in 0..2 {
        let (proc, banner, url) = start_dev(dir.path(), &[]);
        assert!(banner.contains("fresh: reset at each start"), "{banner}");
        assert!(banner.contains("@bufbuild/buf curl"), "{banner}");
        assert!(banner.contains("examples/python/quickstart.py"), "{banner}");
        let mut refunds = RefundServiceClient::connect(url).await.unwrap();
        let create = example_json(&banner, "paygate.v1.RefundService/Create");
        let r = refunds.create(create_request(&create)).await.unwrap();
        assert!(
            r.metadata().get("idempotent-replayed").is_none(),
            "run {run}: the refund was replayed from an earlier run"
        );
        let r = r.into_inner();
        // The README's second example answers on every run.
        let q = refunds
            .inquire(inquire_request(&banner))
            .await
            .unwrap_or_else(|e| panic!("run {run}: the second example failed: {e:?}"))
            .into_inner();
        assert_eq!(q.refund_id, r.refund_id);
        refund_ids.push(r.refund_id);
        drop(proc);
    }
    let (_proc, banner, url) = start_dev(dir.path(), &["--keep"]);
    assert!(banner.contains("kept from earlier runs"), "{banner}");
    let create = example_json(&banner, "paygate.v1.RefundService/Create");
    let r = RefundServiceClient::connect(url)
        .await
        .unwrap()
        .create(create_request(&create))
        .await
        .unwrap();
    assert!(r.metadata().get("idempotent-replayed").is_some());
    assert_eq!(r.into_inner().refund_id, refund_ids[1]);
}

fn refund(
    request_id: &str,
    payment_id: &str,
    currency: &str,
    value: i64,
) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: payment_id.into(),
        amount: Some(pb::Money {
            currency: currency.into(),
            value,
        }),
        ..Default::default()
    }
}

/// `--keep` keeps the simulators' data with the store, and no id repeats across runs: a refund
/// of a kept run never collides with one an earlier run made (the defect: the simulators started
/// afresh, gave the earlier run's refund ids again, and the new refund ended "unresolved").
#[tokio::test]
async fn dev_keep_keeps_the_simulators_data_and_ids_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, url) = start_dev(dir.path(), &[]);
    let mut refunds = RefundServiceClient::connect(url).await.unwrap();
    let antom_1 = refunds
        .create(refund("keep-antom-1", "PAY_DEMO_0001", "USD", 9_000))
        .await
        .unwrap()
        .into_inner();
    let mut px = refund("keep-px-1", "1000002", "EUR", 100);
    px.account = "payxpert".into();
    let px_1 = refunds.create(px).await.unwrap().into_inner();
    // Left PROCESSING: the simulator settles it 5 s later, unless it is stopped first.
    let processing = refunds
        .create(refund("keep-async-1", "PAY_DEMO_ASYNC", "EUR", 1_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(processing.status(), pb::RefundStatus::Processing);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first); // SIGKILL: no orderly stop

    let (_second, banner, url) = start_dev(dir.path(), &["--keep"]);
    assert!(banner.contains("kept from earlier runs"), "{banner}");
    let mut refunds = RefundServiceClient::connect(url).await.unwrap();
    let antom_2 = refunds
        .create(refund("keep-antom-2", "PAY_DEMO_0001", "USD", 500))
        .await
        .expect("a new Antom refund after --keep")
        .into_inner();
    assert_eq!(antom_2.status(), pb::RefundStatus::Succeeded);
    assert_ne!(antom_2.refund_id, antom_1.refund_id, "a refund id repeated");
    let mut px = refund("keep-px-2", "1000002", "EUR", 100);
    px.account = "payxpert".into();
    let px_2 = refunds
        .create(px)
        .await
        .expect("a new PayXpert refund after --keep")
        .into_inner();
    assert_eq!(px_2.status(), pb::RefundStatus::Succeeded);
    assert_ne!(px_2.refund_id, px_1.refund_id, "a transaction id repeated");
    // The Antom simulator remembers the first run's USD 90.00: USD 10.00 more exceeds the
    // payment.
    let over = refunds
        .create(refund("keep-antom-3", "PAY_DEMO_0001", "USD", 1_000))
        .await;
    assert!(
        over.is_err(),
        "the simulator forgot the earlier run's refunds: {over:?}"
    );
    // The refund left PROCESSING is settled by the kept simulator, as it would have been.
    let mut status = pb::RefundStatus::Processing;
    for _ in 0..100 {
        status = refunds
            .inquire(pb::InquireRefundRequest {
                request_id: "keep-async-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status != pb::RefundStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, pb::RefundStatus::Succeeded);
}

#[tokio::test]
async fn healthcheck_asks_grpc_health_like_a_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, _banner, url) = start_dev(dir.path(), &[]);
    let addr = url.trim_start_matches("http://").to_owned();
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .arg("healthcheck")
            .args(args)
            .env_remove("PAYGATE_LISTEN_ADDR")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // As in the image: the port from PAYGATE_LISTEN_ADDR, on loopback.
    let port = addr.rsplit(':').next().unwrap();
    let (code, said) = check(&[], &[("PAYGATE_LISTEN_ADDR", &format!("0.0.0.0:{port}"))]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(said.trim(), "SERVING");
    let (code, said) = check(
        &["--addr", &addr, "--service", "paygate.v1.RefundService"],
        &[],
    );
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = check(&["--addr", &addr, "--service", "no.such.Service"], &[]);
    assert_eq!(code, Some(1), "{said}");
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, said) = check(&["--addr", &closed, "--timeout-ms", "500"], &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&closed), "{said}");
}
