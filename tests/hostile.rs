//! Hostile input, property-based: random signature headers, and random provider answers
//! (random JSON, wrong types, truncated bodies, invalid UTF-8, odd headers) through the real
//! HTTP path. No panic, a clear gRPC error with ErrorInfo, and never a success that the
//! answer does not support. Random requests through validation are tested in
//! `src/validate.rs`.

mod common;

use std::time::Duration;

use common::*;
use paygate::pb;
use paygate::providers::antom::signing::parse_signature_header;
use paygate::server::GuardSettings;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use proptest::prelude::*;
use serde_json::{Value, json};
use tonic::Code;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

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
