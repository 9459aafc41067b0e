//! Keys and secrets rotate without a restart and without a failed call, through the `paygate`
//! binary. The secrets are laid out as the kubelet lays out a mounted Secret (a timestamped
//! directory, a `..data` symlink renamed over the old one, one symlink per key through it),
//! and a client refunds every 50 ms throughout: Antom's own key rotates (the operator adds
//! Antom's new public key, then Antom switches), the merchant key rotates (Antom trusts the new
//! public key, the operator mounts the new private key, Antom drops the old one), then a key
//! file that does not load arrives; the callers' tokens and the PayXpert password rotate the
//! same way. Every call succeeds, the process never restarts, and
//! `paygate_secret_reloads_total` counts each reload.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::process::{GatewayProcess, PX_ORIGINATOR, free_port, spawn_configured};
use common::{CLIENT_ID, antom_pem, merchant_pem, metric_value, money, public_of, scrape};
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::providers::antom::signing::Signer;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{AntomSim, Payment, PaymentStatus};
use paygate::sim::payxpert::PayXpertSim;
use tonic::transport::Channel;

/// Publishes `files` in `mount` as the kubelet updates a mounted Secret: a new timestamped
/// directory, `..data` renamed over to it, a symlink per file through `..data`, and what is
/// gone removed.
fn publish(mount: &Path, files: &[(&str, &[u8])]) {
    static N: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(mount).unwrap();
    let ts = format!("..2026_12_05_{}", N.fetch_add(1, Ordering::Relaxed));
    let dir = mount.join(&ts);
    std::fs::create_dir(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let old = std::fs::read_link(mount.join("..data")).ok();
    let tmp = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
    for (name, _) in files {
        let link = mount.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    for entry in std::fs::read_dir(mount).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(mount.join(old));
    }
}

fn refund(request_id: &str) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        request_id: request_id.into(),
        payment_id: "PAY_ROTATE".into(),
        amount: money("USD", 1),
        ..Default::default()
    }
}

/// A client that calls every 50 ms until stopped, counting answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start<F, Fut>(call: F) -> Self
    where
        F: Fn(u64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    i += 1;
                    match call(i).await {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("call {i}: {e}")),
                    }
                }
            }
        });
        Self {
            stop,
            ok,
            failures,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.failures.clone();
        self.task.await.unwrap();
        let failures = failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// Stops `load`: every call succeeded (at least `min`), and the gateway is the process it was
/// (`pid`), still running. How many calls there were.
async fn none_failed(load: Load, gw: &mut GatewayProcess, pid: u32, min: u64) -> u64 {
    let (ok, failures) = load.finish().await;
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    assert!(ok >= min, "{ok} calls");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway is still running"
    );
    assert_eq!(gw.child.id(), pid);
    ok
}

/// Waits until `cond` holds; how long that took.
async fn until(what: &str, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn reloads(scrape: &str, result: &str) -> f64 {
    metric_value(
        scrape,
        "paygate_secret_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

/// `paygate serve` with `env` (which names the store) and its metrics on `metrics`, logging
/// its reloads.
fn spawn(dir: &Path, env: &[(&str, String)], metrics: u16) -> GatewayProcess {
    let config = dir.join("paygate.toml");
    std::fs::write(&config, "").unwrap();
    let store = env
        .iter()
        .find(|(k, _)| *k == "PAYGATE_STORE_URL")
        .map(|(_, v)| v.clone())
        .expect("a store");
    let mut env = env.to_vec();
    env.push(("PAYGATE_METRICS_ADDR", format!("127.0.0.1:{metrics}")));
    env.push(("RUST_LOG", "warn,paygate::reload=info".into()));
    spawn_configured(&config, &store, &env)
}

fn pem(s: &Signer) -> (Vec<u8>, Vec<u8>) {
    (
        s.private_key_pem().into_bytes(),
        s.public_key_pem().into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn antom_keys_rotate_both_ways_without_a_failed_call_or_a_restart() {
    let antom_v1 = Signer::from_bytes(antom_pem().as_bytes()).unwrap();
    let sim = AntomSim::new(CLIENT_ID, public_of(merchant_pem()), antom_v1);
    sim.add_payment(Payment {
        payment_id: "PAY_ROTATE".into(),
        currency: "USD".into(),
        amount: 1_000_000,
        status: PaymentStatus::Success,
        paid_days_ago: 1,
        multiple_refunds: true,
        async_refunds: false,
    });
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("merchant"), dir.path().join("antom"));
    let antom_public_v1 = Signer::from_bytes(antom_pem().as_bytes())
        .unwrap()
        .public_key_pem();
    publish(&private, &[("1.pem", merchant_pem().as_bytes())]);
    publish(&public, &[("1.pem", antom_public_v1.as_bytes())]);
    let metrics = free_port();
    let d = |p: &PathBuf| p.display().to_string();
    let store = format!("sqlite://{}", dir.path().join("k.db").display());
    let mut gw = spawn(
        dir.path(),
        &[
            ("PAYGATE_ANTOM_BASE_URL", sim.base_url()),
            ("PAYGATE_ANTOM_CLIENT_ID", CLIENT_ID.into()),
            ("PAYGATE_ANTOM_PRIVATE_KEYS_DIR", d(&private)),
            ("PAYGATE_ANTOM_PUBLIC_KEYS_DIR", d(&public)),
            ("PAYGATE_STORE_URL", store),
        ],
        metrics,
    );
    let client: RefundServiceClient<Channel> = gw.client().await;
    let pid = gw.child.id();
    let load = Load::start(move |i| {
        let mut c = client.clone();
        async move {
            let mut req = tonic::Request::new(refund(&format!("rot-{i}")));
            req.set_timeout(Duration::from_secs(5));
            c.create(req)
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    });
    let seen = |v: u32| {
        sim.sim
            .stats()
            .merchant_key_versions
            .get(&v)
            .copied()
            .unwrap_or(0)
    };
    until("calls flow", || load.ok.load(Ordering::Relaxed) >= 5).await;
    assert_eq!(reloads(&scrape(metrics).await, "ok"), 0.0);

    // Antom rotates its key: the operator adds Antom's new public key, then Antom switches.
    let antom_v2 = Signer::generate().unwrap();
    let (_, antom_public_v2) = pem(&antom_v2);
    publish(
        &public,
        &[
            ("1.pem", antom_public_v1.as_bytes()),
            ("2.pem", &antom_public_v2),
        ],
    );
    let mut loaded = 0.0;
    for _ in 0..400 {
        loaded = reloads(&scrape(metrics).await, "ok");
        if loaded >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(loaded, 1.0, "the new Antom public key was loaded");
    sim.sim.sign_with(2, antom_v2);
    let before = load.ok.load(Ordering::Relaxed);
    until("answers signed with Antom's key 2 verify", || {
        load.ok.load(Ordering::Relaxed) >= before + 5
    })
    .await;

    // The merchant rotates: Antom trusts the new public key, the operator mounts the new
    // private key (the highest version signs), Antom drops the old one.
    let merchant_v2 = Signer::generate().unwrap();
    let (merchant_private_v2, _) = pem(&merchant_v2);
    sim.sim
        .trust_merchant_key(2, public_of(&merchant_v2.private_key_pem()));
    publish(
        &private,
        &[
            ("1.pem", merchant_pem().as_bytes()),
            ("2.pem", &merchant_private_v2),
        ],
    );
    let latency = until("Antom sees requests signed with merchant key 2", || {
        seen(2) > 0
    })
    .await;
    println!(
        "merchant key 2: from the Secret's update to the first request signed with it: {latency:?}"
    );
    sim.sim.distrust_merchant_key(1);
    publish(&private, &[("2.pem", &merchant_private_v2)]);
    let v1_calls = seen(1);
    let before = load.ok.load(Ordering::Relaxed);
    until("calls go on with key 2 alone", || {
        load.ok.load(Ordering::Relaxed) >= before + 10
    })
    .await;
    assert_eq!(seen(1), v1_calls, "nothing was signed with the retired key");

    // A key file that does not load: the previous keys stay, the error is counted.
    let errors_before = reloads(&scrape(metrics).await, "error");
    publish(
        &private,
        &[("2.pem", &merchant_private_v2), ("3.pem", b"not a key")],
    );
    let mut errors = errors_before;
    for _ in 0..400 {
        errors = reloads(&scrape(metrics).await, "error");
        if errors > errors_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(errors, errors_before + 1.0, "the bad key file is counted");
    let before = load.ok.load(Ordering::Relaxed);
    until("calls go on with key 2", || {
        load.ok.load(Ordering::Relaxed) >= before + 10
    })
    .await;
    assert_eq!(seen(3), 0);

    let ok = none_failed(load, &mut gw, pid, 30).await;
    println!(
        "{ok} refunds during the rotations, none failed; reloads: {}",
        reloads(&scrape(metrics).await, "ok")
    );
}

/// The callers' tokens and the PayXpert password rotate the same way: a new token works and
/// a removed one stops working within seconds; PayXpert takes the new password without a
/// failed call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_payxpert_password_rotate_without_a_restart() {
    let px = PayXpertSim::new(PX_ORIGINATOR, "password-1");
    px.add_sale("1001", 10_000_000, "EUR", None);
    let px = px.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (auth, password) = (dir.path().join("auth"), dir.path().join("px"));
    let tokens = |names: &[&str]| {
        names
            .iter()
            .map(|n| {
                format!(
                    "{n} {}\n",
                    paygate::server::hash_token(&format!("{n}-token"))
                )
            })
            .collect::<String>()
    };
    publish(&auth, &[("tokens", tokens(&["old"]).as_bytes())]);
    publish(&password, &[("password", b"password-1\n")]);
    let metrics = free_port();
    let d = |p: PathBuf| p.display().to_string();
    let mut gw = spawn(
        dir.path(),
        &[
            ("PAYGATE_PAYXPERT_BASE_URL", px.base_url()),
            ("PAYGATE_PAYXPERT_ORIGINATOR_ID", PX_ORIGINATOR.into()),
            (
                "PAYGATE_PAYXPERT_PASSWORD_FILE",
                d(password.join("password")),
            ),
            ("PAYGATE_AUTH_TOKENS_FILE", d(auth.join("tokens"))),
            (
                "PAYGATE_STORE_URL",
                format!("sqlite://{}", dir.path().join("t.db").display()),
            ),
        ],
        metrics,
    );
    let client: RefundServiceClient<Channel> = gw.client().await;
    let pid = gw.child.id();
    let token = Arc::new(std::sync::Mutex::new("old-token".to_owned()));
    let call = {
        let (client, token) = (client.clone(), token.clone());
        move |i: u64| {
            let mut c = client.clone();
            let t = token.lock().unwrap().clone();
            async move {
                let mut req = tonic::Request::new(pb::CreateRefundRequest {
                    request_id: format!("pw-{i}"),
                    payment_id: "1001".into(),
                    amount: money("EUR", 1),
                    ..Default::default()
                });
                req.set_timeout(Duration::from_secs(5));
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
                c.create(req)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }
        }
    };
    let load = Load::start(call);
    until("calls flow", || load.ok.load(Ordering::Relaxed) >= 5).await;

    // The new token is added, the caller switches to it, the old one is removed.
    publish(&auth, &[("tokens", tokens(&["old", "new"]).as_bytes())]);
    let probe = |t: &str| {
        let mut c = client.clone();
        let t = t.to_owned();
        async move {
            let mut req = tonic::Request::new(pb::InquireRefundRequest {
                request_id: "none".into(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            c.inquire(req).await.err().map(|e| e.code())
        }
    };
    let start = Instant::now();
    while probe("new-token").await == Some(tonic::Code::Unauthenticated) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new token never worked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "a new token works {:?} after the Secret's update",
        start.elapsed()
    );
    *token.lock().unwrap() = "new-token".into();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&auth, &[("tokens", tokens(&["new"]).as_bytes())]);
    let start = Instant::now();
    while probe("old-token").await != Some(tonic::Code::Unauthenticated) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the old token kept working"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "a removed token stops working {:?} after the Secret's update",
        start.elapsed()
    );

    // PayXpert takes a new password (both work for a while), the Secret follows, the old one
    // is retired.
    px.sim.accept_passwords(&["password-1", "password-2"]);
    let before = reloads(&scrape(metrics).await, "ok");
    publish(&password, &[("password", b"password-2\n")]);
    let start = Instant::now();
    while reloads(&scrape(metrics).await, "ok") <= before {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the password was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    px.sim.accept_passwords(&["password-2"]);
    let before = load.ok.load(Ordering::Relaxed);
    until("calls go on with the new password", || {
        load.ok.load(Ordering::Relaxed) >= before + 10
    })
    .await;

    none_failed(load, &mut gw, pid, 20).await;
}

/// A renewed TLS certificate serves every connection opened after the Secret's update, with
/// no failed call (a new connection, so a new handshake, every 50 ms) and no restart; a
/// certificate that does not load keeps the previous one and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_certificate_renews_without_a_failed_handshake() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rotation test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    };
    let (der1, cert1, key1) = leaf("paygate 1");
    let (der2, cert2, key2) = leaf("paygate 2");

    let px = PayXpertSim::new(PX_ORIGINATOR, "pw")
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tls, secrets) = (dir.path().join("tls"), dir.path().join("px"));
    publish(
        &tls,
        &[("tls.crt", cert1.as_bytes()), ("tls.key", key1.as_bytes())],
    );
    publish(&secrets, &[("password", b"pw")]);
    let metrics = free_port();
    let d = |p: PathBuf| p.display().to_string();
    let mut gw = spawn(
        dir.path(),
        &[
            ("PAYGATE_PAYXPERT_BASE_URL", px.base_url()),
            ("PAYGATE_PAYXPERT_ORIGINATOR_ID", PX_ORIGINATOR.into()),
            (
                "PAYGATE_PAYXPERT_PASSWORD_FILE",
                d(secrets.join("password")),
            ),
            ("PAYGATE_TLS_CERT_FILE", d(tls.join("tls.crt"))),
            ("PAYGATE_TLS_KEY_FILE", d(tls.join("tls.key"))),
            (
                "PAYGATE_STORE_URL",
                format!("sqlite://{}", dir.path().join("tls.db").display()),
            ),
        ],
        metrics,
    );
    let pid = gw.child.id();
    let port = gw.port;
    // The certificate a new connection is served.
    let served = {
        let ca_pem = ca_pem.clone();
        move || {
            let ca_pem = ca_pem.clone();
            async move {
                use rustls_pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(
                        rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
                            .unwrap(),
                    )
                    .unwrap();
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec()];
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())?;
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
                Ok::<_, String>(der)
            }
        }
    };
    let start = Instant::now();
    while served().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the gateway never served TLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served().await.unwrap(), der1);
    let ca_for_calls = ca_pem.clone();
    let load = Load::start(move |_| {
        let ca = ca_for_calls.clone();
        async move {
            // A new connection each time: a new handshake.
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .unwrap()
                .tls_config(tls)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let r = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map_err(|e| format!("{e:?}"))?;
            (r.into_inner().status == 1)
                .then_some(())
                .ok_or_else(|| "not serving".to_string())
        }
    });
    until("calls flow", || load.ok.load(Ordering::Relaxed) >= 5).await;

    publish(
        &tls,
        &[("tls.crt", cert2.as_bytes()), ("tls.key", key2.as_bytes())],
    );
    let start = Instant::now();
    while served().await.ok().as_deref() != Some(der2.as_slice()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "the renewed certificate serves new connections {:?} after the Secret's update",
        start.elapsed()
    );

    let errors_before = reloads(&scrape(metrics).await, "error");
    publish(
        &tls,
        &[
            ("tls.crt", b"not a certificate"),
            ("tls.key", key2.as_bytes()),
        ],
    );
    let start = Instant::now();
    while reloads(&scrape(metrics).await, "error") <= errors_before {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bad certificate was not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served().await.unwrap(),
        der2,
        "the previous certificate stays"
    );
    let before = load.ok.load(Ordering::Relaxed);
    until("calls go on", || {
        load.ok.load(Ordering::Relaxed) >= before + 5
    })
    .await;

    none_failed(load, &mut gw, pid, 10).await;
}
