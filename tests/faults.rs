//! Fault injection against the simulator: for each fault, what the caller sees, how many
//! provider calls were made and how many refunds executed, and that a retry with the same
//! request_id (after the fault clears) ends with exactly one refund. Prints the table.

mod common;

use std::time::Duration;

use common::*;
use paygate::server::GuardSettings;
use paygate::sim::Simulator as _;
use paygate::sim::antom::{Fault, FaultKind};
use tonic::Code;

struct Case {
    name: &'static str,
    faults: Vec<Fault>,
    deadline: Duration,
    /// Expected first answer: gRPC code and ErrorInfo reason ("" for OK).
    expect: (Code, &'static str),
    /// Expected refunds executed after the first call.
    executed: u64,
}

fn f(kind: FaultKind, times: u32) -> Vec<Fault> {
    vec![Fault::on("refund", kind).times(times)]
}

fn u(code: &str, status: &str) -> FaultKind {
    FaultKind::Result {
        code: code.into(),
        status: status.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_table() {
    let s = Duration::from_secs(3);
    let cases = vec![
        Case {
            name: "latency spike within the deadline (200 ms)",
            faults: f(FaultKind::Latency { ms: 200 }, 1),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "latency beyond the deadline (5 s every time, deadline 1 s)",
            faults: f(FaultKind::Latency { ms: 5_000 }, 50),
            deadline: Duration::from_secs(1),
            expect: (Code::DeadlineExceeded, "OUTCOME_UNKNOWN"),
            executed: 0,
        },
        Case {
            name: "one HTTP 503",
            faults: f(FaultKind::HttpStatus { status: 503 }, 1),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "HTTP 5xx storm",
            faults: f(FaultKind::HttpStatus { status: 502 }, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 0,
        },
        Case {
            name: "connection reset mid-answer, once",
            faults: f(FaultKind::LoseAnswer, 1),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "connection reset mid-answer, every time",
            faults: f(FaultKind::LoseAnswer, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "answer never finishes, once (attempt cap 500 ms)",
            faults: f(FaultKind::NeverFinish, 1),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "answer never finishes, every time",
            faults: f(FaultKind::NeverFinish, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "bad answer signature, every time",
            faults: f(FaultKind::BadSignature, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "missing answer signature, every time",
            faults: f(FaultKind::NoSignature, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "malformed answer body, every time",
            faults: f(FaultKind::MalformedBody, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "2 MiB answer, every time",
            faults: f(FaultKind::HugeBody { bytes: 2 << 20 }, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
        Case {
            name: "U streak of 3 (UNKNOWN_EXCEPTION)",
            faults: f(u("UNKNOWN_EXCEPTION", "U"), 3),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "U streak longer than the settling attempts",
            faults: f(u("UNKNOWN_EXCEPTION", "U"), 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 0,
        },
        Case {
            name: "quota answer REQUEST_TRAFFIC_EXCEED_LIMIT",
            faults: f(u("REQUEST_TRAFFIC_EXCEED_LIMIT", "U"), 1),
            deadline: s,
            expect: (Code::ResourceExhausted, "REQUEST_TRAFFIC_EXCEED_LIMIT"),
            executed: 0,
        },
        Case {
            name: "HTTP 429",
            faults: f(FaultKind::HttpStatus { status: 429 }, 1),
            deadline: s,
            expect: (Code::ResourceExhausted, "PROVIDER_RATE_LIMITED"),
            executed: 0,
        },
        Case {
            name: "answer after the refund executed arrives late (4 s), once",
            faults: f(FaultKind::SlowAnswer { ms: 4_000 }, 1),
            deadline: s,
            expect: (Code::Ok, ""),
            executed: 1,
        },
        Case {
            name: "answer after the refund executed arrives late (4 s), every time",
            faults: f(FaultKind::SlowAnswer { ms: 4_000 }, 50),
            deadline: s,
            expect: (Code::Unavailable, "OUTCOME_UNKNOWN"),
            executed: 1,
        },
    ];
    let mut table = vec![
        "| fault | caller sees | provider calls | refunds executed | after a retry with the same request_id |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for case in cases {
        let mut env = start_with(Options {
            attempt_timeout: Duration::from_millis(500),
            guard: GuardSettings {
                breaker_threshold: 100,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        for fault in case.faults {
            env.sim().inject(fault);
        }
        let got = env
            .refunds
            .create(with_timeout(
                refund_req("fault-1", "PAY_USD_100", 500),
                case.deadline,
            ))
            .await;
        let (code, why, retry) = match &got {
            Ok(_) => (Code::Ok, String::new(), None),
            Err(e) => (e.code(), reason(e), retry_delay(e)),
        };
        assert_eq!((code, why.as_str()), case.expect, "{}: {got:?}", case.name);
        // Let late simulator work (slow answers) land before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let calls = env.sim().calls("refund");
        let executed = env.sim().stats().refunds_executed;
        assert_eq!(executed, case.executed, "{}", case.name);

        env.sim().clear_faults();
        let mut after = "already done".to_string();
        if code != Code::Ok {
            if code == Code::DeadlineExceeded {
                tokio::time::sleep(Duration::from_millis(4_500)).await;
            } else if let Some(d) = retry {
                tokio::time::sleep(d).await;
            }
            let r = env
                .refunds
                .create(with_timeout(refund_req("fault-1", "PAY_USD_100", 500), s))
                .await
                .unwrap_or_else(|e| panic!("{}: retry failed: {e:?}", case.name));
            after = format!("OK, refund {}", r.into_inner().refund_id);
        }
        let refunds = env.sim().refunds_of("PAY_USD_100");
        assert_eq!(refunds.len(), 1, "{}: exactly one refund", case.name);
        let sees = if code == Code::Ok {
            "OK (SUCCEEDED)".to_string()
        } else {
            format!(
                "{code:?} `{why}`{}",
                retry.map_or(String::new(), |d| format!(
                    " + RetryInfo {} ms",
                    d.as_millis()
                ))
            )
        };
        table.push(format!(
            "| {} | {sees} | {calls} | {executed} | {after}; 1 refund in total |",
            case.name
        ));
    }
    println!("\n{}\n", table.join("\n"));
}
