//! The simulator's HTTP side: request signature checks, queued faults, signed answers, and
//! the control endpoints of `paygate sim`.

use super::*;
use crate::sim::control::common_control;

pub(super) fn endpoint_of(path: &str) -> Option<&'static str> {
    let rest = path
        .strip_prefix("/ams/api")
        .or_else(|| path.strip_prefix("/ams/sandbox/api"))?;
    match rest {
        "/v1/payments/refund" => Some("refund"),
        "/v1/payments/inquiryRefund" => Some("inquiryRefund"),
        "/v1/subscriptions/cancel" => Some("cancel"),
        _ => None,
    }
}

pub(super) async fn handle(
    State(sim): State<Arc<AntomSim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let path = uri.path();
    if path.starts_with("/sim/") {
        return control(&sim, &method, path, &body);
    }
    let Some(endpoint) = endpoint_of(path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    if let Some(fast) = &sim.fast {
        if !fast.delay.is_zero() {
            tokio::time::sleep(fast.delay).await;
        }
        return sim.canned(fast, endpoint, path, &body);
    }
    if method != Method::POST {
        return sim.unsigned(json!({"result": result("METHOD_NOT_SUPPORTED", "F", "POST only")}));
    }
    let signed_uri = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.to_owned());
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if h("client-id") != Some(sim.client_id.as_str()) {
        sim.state().controls.stats.rejected_signatures += 1;
        return sim.unsigned(json!({"result": result("INVALID_CLIENT", "F", "unknown client id")}));
    }
    let verified = match (h("request-time"), h("signature")) {
        (Some(t), Some(s)) => {
            sim.verify_merchant(s, &signing::content(&signed_uri, &sim.client_id, t, &body))
        }
        _ => None,
    };
    let Some(version) = verified else {
        sim.state().controls.stats.rejected_signatures += 1;
        return sim.unsigned(
            json!({"result": result("INVALID_SIGNATURE", "F", "signature does not verify")}),
        );
    };
    {
        let mut st = sim.state();
        *st.controls
            .stats
            .merchant_key_versions
            .entry(version)
            .or_default() += 1;
        st.call_times
            .push((endpoint.into(), std::time::Instant::now()));
        if let Some(tp) = h("traceparent") {
            st.traceparents.push(tp.to_owned());
        }
    }

    let fault = sim.state().controls.call(endpoint);
    match &fault {
        Some(FaultKind::Latency { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        Some(FaultKind::HttpStatus { status }) => {
            return empty(StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY));
        }
        _ => {}
    }
    if let Some(FaultKind::Raw {
        body: raw,
        sign,
        headers: extra,
    }) = &fault
    {
        return raw_answer(&sim, &signed_uri, raw, *sign, extra);
    }
    let answer = match &fault {
        Some(FaultKind::Result { code, status }) => {
            // Antom's refund answers echo the request's ids and amount.
            let mut a = json!({"result": result(code, status, "injected")});
            if let (Ok(req), "refund") = (serde_json::from_slice::<Value>(&body), endpoint) {
                for field in ["refundRequestId", "paymentId", "refundAmount"] {
                    if let Some(v) = req.get(field) {
                        a[field] = v.clone();
                    }
                }
            }
            a
        }
        _ => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => sim.execute(endpoint, &v),
            _ => param_illegal("body is not a JSON object"),
        },
    };
    if let Some(FaultKind::SlowAnswer { ms }) = &fault {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
    let mut bytes = answer.to_string().into_bytes();
    if fault == Some(FaultKind::MalformedBody) {
        bytes.truncate(bytes.len() / 2);
    }
    if let Some(FaultKind::HugeBody { bytes: n }) = &fault {
        bytes = vec![b' '; *n];
    }
    if let Some(r) = cut_answer(&bytes, fault.as_ref()) {
        return r;
    }
    signed_answer(&sim, &signed_uri, bytes, fault.as_ref())
}

/// A raw fault's answer: `raw` as the body, signed when `sign`, with `extra` headers.
fn raw_answer(
    sim: &AntomSim,
    signed_uri: &str,
    raw: &[u8],
    sign: bool,
    extra: &[(String, String)],
) -> Answer {
    let mut r = Response::new(Body::from(raw.to_vec()));
    if sign {
        let (time, signature) = sim.sign_answer(signed_uri, raw);
        for (k, v) in [("response-time", time), ("signature", signature)] {
            if let Ok(v) = v.parse() {
                r.headers_mut().insert(k, v);
            }
        }
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// An answer cut short by a fault: half of it and then nothing (`never_finish`), or a
/// connection aborted mid-answer (`lose_answer`).
fn cut_answer(bytes: &[u8], fault: Option<&FaultKind>) -> Option<Answer> {
    let body = match fault {
        Some(FaultKind::NeverFinish) => {
            let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
            Body::from_stream(tokio_stream::StreamExt::chain(
                tokio_stream::once(Ok::<_, std::io::Error>(half)),
                tokio_stream::pending(),
            ))
        }
        Some(FaultKind::LoseAnswer) => Body::from_stream(broken_stream()),
        _ => return None,
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    Some(r)
}

/// The answer `bytes`, signed as Antom signs (or with a wrong or no signature, as `fault` says).
fn signed_answer(
    sim: &AntomSim,
    signed_uri: &str,
    bytes: Vec<u8>,
    fault: Option<&FaultKind>,
) -> Answer {
    let (time, mut signature) = sim.sign_answer(signed_uri, &bytes);
    if fault == Some(&FaultKind::BadSignature) {
        // Sign something else: a well-formed signature that does not match this body.
        signature = sim.sign_answer(signed_uri, b"{}").1;
    }
    let mut r = Response::new(Body::from(bytes));
    let hm = r.headers_mut();
    hm.insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    if let Ok(v) = sim.client_id.parse() {
        hm.insert("client-id", v);
    }
    if fault != Some(&FaultKind::NoSignature) {
        if let Ok(v) = time.parse() {
            hm.insert("response-time", v);
        }
        if let Ok(v) = signature.parse() {
            hm.insert("signature", v);
        }
    }
    r
}

/// A body stream that fails at once: the server aborts the connection mid-answer.
pub(super) fn broken_stream() -> impl tokio_stream::Stream<Item = Result<Bytes, std::io::Error>> {
    tokio_stream::once(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "answer lost",
    )))
}

pub(super) fn control(sim: &AntomSim, method: &Method, path: &str, body: &[u8]) -> Answer {
    let ok = |v: Value| {
        let mut r = Response::new(Body::from(v.to_string()));
        r.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        r
    };
    let bad = |m: String| {
        let mut r = Response::new(Body::from(m));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    if let Some(done) = common_control(sim, method, path, body) {
        return done.map_or_else(|e| bad(e.to_string()), ok);
    }
    match (method.as_str(), path) {
        ("POST", "/sim/payments") => match serde_json::from_slice::<Payment>(body) {
            Ok(p) => {
                sim.add_payment(p);
                ok(json!({}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("POST", "/sim/subscriptions") => match serde_json::from_slice::<Subscription>(body) {
            Ok(s) => {
                sim.add_subscription(s);
                ok(json!({}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("GET", "/sim/refunds") => {
            let mut all: Vec<SimRefund> = sim.state().refunds.values().cloned().collect();
            all.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
            ok(serde_json::to_value(all).unwrap_or_default())
        }
        ("GET", "/sim/deliveries") => {
            ok(serde_json::to_value(sim.deliveries()).unwrap_or_default())
        }
        ("POST", "/sim/settle") => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Settle {
                refund_id: String,
                success: bool,
            }
            match serde_json::from_slice::<Settle>(body) {
                Ok(s) if sim.settle_refund(&s.refund_id, s.success) => ok(json!({})),
                Ok(_) => bad("no such PROCESSING refund".into()),
                Err(e) => bad(e.to_string()),
            }
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}
