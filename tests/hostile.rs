//! Hostile input, property-based: random requests through validation, and random provider
//! answers (random JSON, wrong types, truncated bodies, invalid UTF-8, odd headers) through the
//! real HTTP path. No panic, a clear gRPC error with ErrorInfo, and never a success that the
//! answer does not support.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use paygate::accounts::{Account, Accounts};
use paygate::admission::{AccountGuard, GuardSettings};
use paygate::pb;
use paygate::providers::antom::Antom;
use paygate::providers::antom::client::Settings;
use paygate::providers::antom::signing::{Signer, parse_signature_header};
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use paygate::validate;
use proptest::prelude::*;
use serde_json::{Value, json};
use tonic::Code;

fn accounts() -> &'static Accounts {
    static A: std::sync::OnceLock<Accounts> = std::sync::OnceLock::new();
    A.get_or_init(build_accounts)
}

fn build_accounts() -> Accounts {
    let settings = Settings {
        base_url: "http://127.0.0.1:9".into(),
        client_id: "C".into(),
        sandbox: false,
        key_version: 1,
        timeout: Duration::from_secs(1),
        signer: Signer::from_bytes(merchant_pem().as_bytes()).unwrap(),
        verifier: public_of(merchant_pem()),
        notify_url: None,
    };
    Accounts::new(
        vec![Account {
            name: "main".into(),
            provider: Arc::new(Antom::new(settings).unwrap()),
            guard: AccountGuard::new("main", &GuardSettings::default()),
        }],
        Some("main".into()),
    )
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[A-Za-z0-9._:-]{0,70}",
        "[\\x00-\\x1f\\x7f]{0,5}",
        "\\PC{0,300}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn validation_never_panics_and_accepts_only_valid_refunds(
        account in prop_oneof![Just(String::new()), Just("main".to_string()), any_text()],
        request_id in any_text(),
        payment_id in any_text(),
        currency in prop_oneof![Just("USD".to_string()), Just("IDR".to_string()), "[A-Za-z]{0,4}", any_text()],
        value in any::<i64>(),
        has_amount in any::<bool>(),
        why in any_text(),
        reference in any_text(),
    ) {
        let accounts = accounts();
        let req = pb::CreateRefundRequest {
            account,
            request_id: request_id.clone(),
            payment_id,
            amount: has_amount.then(|| pb::Money { currency: currency.clone(), value }),
            reason: why,
            reference_refund_id: reference,
            cancel_subscription: false,
        };
        match validate::create_refund(&req, accounts) {
            Ok((_, cmd)) => {
                prop_assert!(!cmd.request_id.is_empty() && cmd.request_id.len() <= 64);
                prop_assert!(cmd.request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)));
                prop_assert!(cmd.amount.value > 0);
                prop_assert!(cmd.amount.currency.len() == 3);
                prop_assert!(cmd.payment_id.len() <= 64 && !cmd.payment_id.is_empty());
            }
            Err(e) => {
                let status = tonic::Status::from(e);
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert_eq!(reason(&status), "INVALID_REQUEST");
            }
        }
    }

    #[test]
    fn cancel_validation_never_panics(
        request_id in any_text(),
        sid in any_text(),
        srid in any_text(),
        kind in any::<i32>(),
    ) {
        let accounts = accounts();
        let req = pb::CancelSubscriptionRequest {
            request_id, subscription_id: sid, subscription_request_id: srid,
            cancellation_type: kind, ..Default::default()
        };
        if let Ok((_, c)) = validate::cancel_subscription(&req, accounts) {
            prop_assert!(kind == 1 || kind == 2);
            prop_assert!(c.subscription_id.is_some() || c.subscription_request_id.is_some());
        }
    }

    #[test]
    fn signature_headers_never_panic(h in "\\PC{0,400}") {
        let _ = parse_signature_header(&h);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("S"),
            Just("F"),
            Just("U"),
            Just("SUCCESS"),
            Just("REFUND_IN_PROCESS")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("result".to_string()),
                        Just("resultCode".to_string()),
                        Just("resultStatus".to_string()),
                        Just("refundId".to_string()),
                        Just("refundAmount".to_string()),
                        Just("value".to_string()),
                        "[a-zA-Z]{1,8}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn answer_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| {
            json!({"result": v, "refundId": "X"})
                .to_string()
                .into_bytes()
        }),
        (json_value(), 0usize..40).prop_map(|(v, cut)| {
            let mut b = v.to_string().into_bytes();
            b.truncate(b.len().saturating_sub(cut));
            b
        }),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn odd_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("signature".to_string()),
                Just("response-time".to_string()),
                Just("client-id".to_string()),
                Just("content-type".to_string())
            ],
            prop_oneof![
                Just("algorithm=RSA256,keyVersion=1,signature=".to_string()),
                Just("signature=%ZZ".to_string()),
                Just("signature=====".to_string()),
                "[ -~]{0,60}",
            ],
        ),
        0..3,
    )
}

#[test]
fn random_provider_answers_never_crash_the_gateway_or_pass_as_success() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(start_with(Options {
        guard: GuardSettings {
            breaker_threshold: u32::MAX,
            ..Default::default()
        },
        ..Default::default()
    }));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let n = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(
            &(answer_body(), any::<bool>(), odd_headers()),
            |(body, sign, headers)| {
                let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // An odd content-type changes nothing the gateway reads.
                let has_odd_headers = headers.iter().any(|(k, _)| k != "content-type");
                env.sim().clear_faults();
                env.sim().inject(
                    Fault::on(
                        "refund",
                        FaultKind::Raw {
                            body: body.clone(),
                            sign,
                            headers,
                        },
                    )
                    .times(10),
                );
                let mut c = env.refunds.clone();
                let got = rt.block_on(c.create(with_timeout(
                    refund_req(&format!("hostile-{n}"), "PAY_USD_100", 1),
                    // Short enough that the gateway does not resend to settle (each resend would
                    // only meet the same random answer again).
                    Duration::from_millis(150),
                )));
                match got {
                    Ok(r) => {
                        // Only a verified answer that says success may pass.
                        prop_assert!(sign && !has_odd_headers, "unsigned answer passed: {body:?}");
                        let v: Value = serde_json::from_slice(&body).expect("a success parsed");
                        let status = v["result"]["resultStatus"].as_str().unwrap_or_default();
                        let code = v["result"]["resultCode"].as_str().unwrap_or_default();
                        prop_assert!(
                            status == "S" || code == "REFUND_IN_PROCESS" || code == "SUCCESS"
                        );
                        prop_assert!(r.into_inner().provider_result.is_some());
                    }
                    Err(e) => {
                        let _ = reason(&e); // every error carries ErrorInfo
                        prop_assert!(e.code() != Code::Unknown, "{e:?}");
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    // Still healthy afterwards, and nothing was executed by the random answers.
    env.sim().clear_faults();
    let mut c = env.refunds.clone();
    let r = rt
        .block_on(c.create(refund_req("after-hostile", "PAY_USD_100", 1)))
        .unwrap();
    assert_eq!(r.into_inner().status(), pb::RefundStatus::Succeeded);
    assert_eq!(env.sim().stats().refunds_executed, 1);
}

/// Found by the property above: a signed answer whose `result` is an array was read field by
/// field as `{"resultCode": .., "resultStatus": "S"}`, a success.
#[tokio::test]
async fn a_signed_answer_with_an_array_for_result_is_not_a_success() {
    let env = start().await;
    for body in [
        r#"{"refundId":"X","result":["SUCCESS","S","F"]}"#,
        r#"[{"resultCode":"SUCCESS","resultStatus":"S"},"X"]"#,
    ] {
        env.sim().clear_faults();
        env.sim().inject(
            Fault::on(
                "refund",
                FaultKind::Raw {
                    body: body.as_bytes().to_vec(),
                    sign: true,
                    headers: vec![],
                },
            )
            .times(10),
        );
        let mut c = env.refunds.clone();
        let e = c
            .create(with_timeout(
                refund_req(&format!("array-{}", body.len()), "PAY_USD_100", 1),
                Duration::from_millis(150),
            ))
            .await
            .expect_err(body);
        assert_ne!(e.code(), Code::Unknown, "{e:?}");
    }
    assert_eq!(env.sim().stats().refunds_executed, 0);
}
