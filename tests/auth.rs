//! Caller authentication and authorization: bearer tokens, mutual TLS, per-caller policies,
//! and idempotency keys scoped by caller.

mod common;

use std::time::Duration;

use common::*;
use paygate::pb;
use paygate::pb::refund_service_client::RefundServiceClient;
use paygate::server::Policy;
use paygate::sim::Simulator as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

const T: Duration = Duration::from_secs(5);

fn policies() -> paygate::server::Auth {
    token_auth(&[
        ("billing", Policy::default()),
        (
            "support",
            Policy {
                methods: Some(vec!["RefundService.Inquire".into()]),
                accounts: None,
                read_others: true,
            },
        ),
        (
            "eu-only",
            Policy {
                methods: None,
                accounts: Some(vec!["eu".into()]),
                read_others: false,
            },
        ),
    ])
}

#[tokio::test]
async fn tokens_and_policies() {
    let mut env = start_with(Options {
        auth: policies(),
        ..Default::default()
    })
    .await;
    let req = || refund_req("auth-1", "PAY_USD_100", 100);

    let e = env.refunds.create(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(reason(&e), "MISSING_CREDENTIALS");

    let e = env
        .refunds
        .create(authed(req(), "wrong-token", T))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(reason(&e), "INVALID_TOKEN");

    let e = env
        .refunds
        .create(authed(req(), "support-token", T))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e), "CALLER_NOT_ALLOWED");

    let e = env
        .refunds
        .create(authed(req(), "eu-only-token", T))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "account main is not allowed"
    );

    assert_eq!(
        env.sim().stats().calls.len(),
        0,
        "nothing reached the provider"
    );

    let r = env
        .refunds
        .create(authed(req(), "billing-token", T))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
    let q = env
        .refunds
        .inquire(authed(
            pb::InquireRefundRequest {
                request_id: "auth-1".into(),
                ..Default::default()
            },
            "support-token",
            T,
        ))
        .await
        .unwrap();
    assert_eq!(q.into_inner().status(), pb::RefundStatus::Succeeded);
}

#[tokio::test]
async fn callers_cannot_replay_each_others_keys() {
    let mut env = start_with(Options {
        auth: token_auth(&[
            ("a", Policy::default()),
            ("b", Policy::default()),
            ("c", Policy::default()),
        ]),
        ..Default::default()
    })
    .await;
    let r = env
        .refunds
        .create(authed(
            refund_req("shared-id", "PAY_USD_100", 100),
            "b-token",
            T,
        ))
        .await
        .unwrap();
    assert!(r.metadata().get("idempotent-replayed").is_none());
    // B's own retry is a replay.
    let again = env
        .refunds
        .create(authed(
            refund_req("shared-id", "PAY_USD_100", 100),
            "b-token",
            T,
        ))
        .await
        .unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(env.sim().calls("refund"), 1);
    // A using B's request id never reaches the provider (Antom deduplicates refundRequestId
    // per merchant, so it would answer B's refund to A): the id is B's on this account.
    let e = env
        .refunds
        .create(authed(
            refund_req("shared-id", "PAY_USD_100", 100),
            "a-token",
            T,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(reason(&e), "REQUEST_ID_CLAIMED");
    assert_eq!(retry_delay(&e), None);
    // C with other parameters: refused the same way, before the provider.
    let e = env
        .refunds
        .create(authed(
            refund_req("shared-id", "PAY_USD_100", 999),
            "c-token",
            T,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "REQUEST_ID_CLAIMED", "{e:?}");
    assert_eq!(env.sim().calls("refund"), 1, "only B's refund was sent");
    // A cannot read B's refund, by B's request id or by its refund id.
    let b_refund = r.into_inner().refund_id;
    for q in [
        pb::InquireRefundRequest {
            request_id: "shared-id".into(),
            ..Default::default()
        },
        pb::InquireRefundRequest {
            refund_id: b_refund.clone(),
            ..Default::default()
        },
    ] {
        let e = env
            .refunds
            .inquire(authed(q, "a-token", T))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(reason(&e), "REFUND_NOT_RECORDED");
    }
    let own = env
        .refunds
        .inquire(authed(
            pb::InquireRefundRequest {
                request_id: "shared-id".into(),
                ..Default::default()
            },
            "b-token",
            T,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.refund_id, b_refund);
    // A's own new request id works as ever.
    env.refunds
        .create(authed(
            refund_req("a-own", "PAY_USD_100", 100),
            "a-token",
            T,
        ))
        .await
        .unwrap();
    assert_eq!(env.sim().calls("refund"), 2);
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    rogue_cert: String,
    rogue_key: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    (p, key, cert.pem())
}

fn leaf(sans: &[&str], cn: &str, issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (ca_params, ca_key, ca_pem) = ca("paygate test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let (server_cert, server_key) = leaf(&["localhost"], "paygate", &issuer);
    let (client_cert, client_key) = leaf(&[], "billing", &issuer);
    let (rogue_params, rogue_ca_key, _) = ca("someone else's CA");
    let rogue_issuer = Issuer::new(rogue_params, rogue_ca_key);
    let (rogue_cert, rogue_key) = leaf(&[], "billing", &rogue_issuer);
    Pki {
        ca_pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

async fn tls_channel(
    url: &str,
    pki: &Pki,
    client: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(url.replace("http://", "https://"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
}

#[tokio::test]
async fn mutual_tls_identifies_callers_and_refuses_unknown_cas() {
    let pki = pki();
    let mut auth = token_auth(&[]);
    auth.mtls = true;
    auth.policies.insert("billing".into(), Policy::default());
    let env = start_with(Options {
        auth,
        tls: Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
                .client_ca_root(Certificate::from_pem(&pki.ca_pem)),
        ),
        ..Default::default()
    })
    .await;
    let url = env.gateway().url();

    let ch = tls_channel(&url, &pki, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    let r = RefundServiceClient::new(ch)
        .create(refund_req("mtls-1", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);

    // A certificate from a CA the gateway does not trust: the handshake (or the first call)
    // fails and nothing reaches the provider.
    let rogue = match tls_channel(&url, &pki, Some((&pki.rogue_cert, &pki.rogue_key))).await {
        Err(_) => true,
        Ok(ch) => RefundServiceClient::new(ch)
            .create(refund_req("mtls-2", "PAY_USD_100", 100))
            .await
            .is_err(),
    };
    assert!(rogue, "an unknown CA is refused");
    // No client certificate at all (client certificates are required without tokens).
    let none = match tls_channel(&url, &pki, None).await {
        Err(_) => true,
        Ok(ch) => RefundServiceClient::new(ch)
            .create(refund_req("mtls-3", "PAY_USD_100", 100))
            .await
            .is_err(),
    };
    assert!(none, "no certificate is refused");
    // Plaintext against the TLS port fails too.
    let plain = RefundServiceClient::connect(url.clone()).await;
    let plain_failed = match plain {
        Err(_) => true,
        Ok(mut c) => c
            .create(refund_req("mtls-4", "PAY_USD_100", 100))
            .await
            .is_err(),
    };
    assert!(plain_failed);
    assert_eq!(env.sim().calls("refund"), 1);
}

/// The binary with PAYGATE_TLS_* and a tokens file: TLS on, client certificates optional
/// because tokens are configured, and a token still required without a certificate.
#[tokio::test]
async fn the_binary_serves_tls_from_its_environment() {
    use common::process::spawn_gateway_with;
    use paygate::providers::antom::signing::Signer;
    use paygate::sim::antom::AntomSim;
    let pki = pki();
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cert = write("server.pem", &pki.server_cert);
    let key = write("server.key", &pki.server_key);
    let ca = write("ca.pem", &pki.ca_pem);
    let tokens = write(
        "tokens",
        &format!("billing {}\n", paygate::server::hash_token("billing-token")),
    );
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[
            ("PAYGATE_TLS_CERT_FILE", cert),
            ("PAYGATE_TLS_KEY_FILE", key),
            ("PAYGATE_TLS_CLIENT_CA_FILE", ca),
            ("PAYGATE_AUTH_TOKENS_FILE", tokens),
        ],
        std::process::Stdio::null(),
    );
    let url = gw.url();
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(ch) = tls_channel(&url, &pki, None).await {
            channel = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = RefundServiceClient::new(channel.expect("TLS gateway came up"));
    let e = client
        .create(refund_req("bin-tls-1", "PAY_USD_100", 100))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unauthenticated,
        "no certificate and no token"
    );
    let r = client
        .create(authed(
            refund_req("bin-tls-1", "PAY_USD_100", 100),
            "billing-token",
            T,
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
    // With a client certificate instead of a token.
    let ch = tls_channel(&url, &pki, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    let r = RefundServiceClient::new(ch)
        .create(refund_req("bin-tls-2", "PAY_USD_100", 100))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
}
