//! Key material and tokens never reach logs or errors: a gateway process runs with debug
//! logging through successful calls, refused tokens, validation errors and unverifiable
//! answers, and its whole output is scanned for the private key and the tokens.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::process::{spawn_gateway_with, write_keys};
use common::*;
use paygate::config::Config;
use paygate::providers::antom::signing::Signer;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{AntomSim, Fault, FaultKind};

const TOKEN: &str = "tok-Very-Secret-9f8e7d6c5b4a";
const WRONG_TOKEN: &str = "tok-Guessed-Secret-0a1b2c3d";

fn key_lines() -> Vec<String> {
    merchant_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn logs_and_errors_never_show_keys_or_tokens() {
    let sim = AntomSim::new(
        CLIENT_ID,
        public_of(merchant_pem()),
        Signer::from_bytes(antom_pem().as_bytes()).unwrap(),
    );
    seed(&sim);
    let sim = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("billing {}\n", paygate::server::hash_token(TOKEN)),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut gw = spawn_gateway_with(
        dir.path(),
        &sim.base_url(),
        &store,
        &[
            ("RUST_LOG", "debug".into()),
            ("PAYGATE_AUTH_TOKENS_FILE", tokens.display().to_string()),
        ],
        Stdio::piped(),
    );
    let mut client = gw.client().await;
    let t = Duration::from_secs(5);
    let mut errors = String::new();
    client
        .create(authed(refund_req("s-ok", "PAY_USD_100", 100), TOKEN, t))
        .await
        .unwrap();
    for r in [
        client
            .create(authed(
                refund_req("s-1", "PAY_USD_100", 100),
                WRONG_TOKEN,
                t,
            ))
            .await,
        client
            .create(authed(refund_req("bad id", "PAY_USD_100", -1), TOKEN, t))
            .await,
        {
            sim.sim
                .inject(Fault::on("refund", FaultKind::BadSignature).times(10));
            client
                .create(authed(refund_req("s-2", "PAY_USD_100", 100), TOKEN, t))
                .await
        },
    ] {
        let e = r.unwrap_err();
        errors.push_str(&format!("{e:?}\n"));
    }
    gw.sigterm_and_wait();
    let mut logs = String::new();
    gw.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.len() > 1000, "debug logging produced output");
    assert!(
        logs.contains("signature does not verify"),
        "the failure paths were logged"
    );
    for haystack in [&logs, &errors] {
        for line in key_lines() {
            assert!(!haystack.contains(&line), "private key material leaked");
        }
        assert!(!haystack.contains(TOKEN), "token leaked");
        assert!(!haystack.contains(WRONG_TOKEN), "presented token leaked");
    }
}

#[test]
fn debug_output_of_the_configuration_redacts_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let env = |k: &str| -> Option<String> {
        match k {
            "PAYGATE_ANTOM_BASE_URL" => Some("https://open-sea-global.alipay.com".into()),
            "PAYGATE_ANTOM_CLIENT_ID" => Some("C".into()),
            "PAYGATE_ANTOM_PRIVATE_KEY_FILE" => {
                Some(dir.path().join("merchant.pem").display().to_string())
            }
            "PAYGATE_ANTOM_PUBLIC_KEY_FILE" => {
                Some(dir.path().join("antom_public.pem").display().to_string())
            }
            _ => None,
        }
    };
    let c = Config::load(None, &env).unwrap();
    let shown = format!("{c:?} {c:#?}");
    assert!(shown.contains("redacted"));
    for line in key_lines() {
        assert!(!shown.contains(&line));
    }
}
