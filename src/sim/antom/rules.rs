//! Antom's rules as the simulator applies them: refund validation, the refund window and
//! amount, refundRequestId idempotency, inquiries and subscription cancellation.

use super::*;

pub(super) fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

pub(super) fn result(code: &str, status: &str, message: &str) -> Value {
    json!({"resultCode": code, "resultStatus": status, "resultMessage": message})
}

pub(super) fn param_illegal(message: &str) -> Value {
    json!({"result": result("PARAM_ILLEGAL", "F", message)})
}

/// Reads an optional string field; numbers, booleans and empty strings are illegal (Antom
/// wants strings, and an empty optional field must be omitted).
pub(super) fn text(v: &Value, name: &str, max: usize) -> Result<Option<String>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is empty")),
        Some(Value::String(s)) if s.chars().count() > max => Err(format!("{name} too long")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

pub(super) fn required(v: &Value, name: &str, max: usize) -> Result<String, String> {
    text(v, name, max)?.ok_or_else(|| format!("{name} is required"))
}

pub(super) fn amount(v: &Value, name: &str) -> Result<(String, i64), String> {
    let a = v.get(name).ok_or_else(|| format!("{name} is required"))?;
    let currency = required(a, "currency", 3)?;
    let value = required(a, "value", 20)?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{name}.currency is not an ISO code"));
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name}.value is not an integer string"));
    }
    let value: i64 = value
        .parse()
        .map_err(|_| format!("{name}.value out of range"))?;
    if value <= 0 {
        return Err(format!("{name}.value must be positive"));
    }
    Ok((currency, value))
}

pub(super) fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl AntomSim {
    pub(super) fn execute(&self, endpoint: &str, req: &Value) -> Value {
        match endpoint {
            "refund" => self.refund(req),
            "inquiryRefund" => self.inquiry(req),
            _ => self.cancel(req),
        }
    }

    fn refund(&self, req: &Value) -> Value {
        let parsed = (|| {
            Ok::<_, String>((
                required(req, "refundRequestId", 64)?,
                required(req, "paymentId", 64)?,
                amount(req, "refundAmount")?,
                text(req, "refundReason", 256)?,
                text(req, "referenceRefundId", 64)?,
                text(req, "refundNotifyUrl", 1024)?,
            ))
        })();
        let (rrid, payment_id, (currency, value), _reason, _reference, notify_url) = match parsed {
            Ok(p) => p,
            Err(m) => return param_illegal(&m),
        };
        let mut st = self.state();
        if let Some(prev) = st.by_request_id.get(&rrid).cloned() {
            if prev.payment_id != payment_id || prev.currency != currency || prev.value != value {
                return json!({"result": result("REPEAT_REQ_INCONSISTENT", "F",
                    "the same refundRequestId was used with different fields")});
            }
            if let Some((code, message)) = prev.failure {
                return json!({"result": result(&code, "F", &message)});
            }
            if let Some(id) = prev.refund_id
                && let Some(r) = st.refunds.get(&id)
            {
                return refund_answer(r);
            }
        }
        let refusal = match st.payments.get(&payment_id) {
            None => Some(("ORDER_NOT_EXIST", "payment not found")),
            Some(p) if p.status != PaymentStatus::Success => Some((
                "ORDER_STATUS_INVALID",
                "payment is not in a refundable state",
            )),
            Some(p) if p.currency != currency => Some((
                "CURRENCY_NOT_SUPPORT",
                "refund currency differs from payment currency",
            )),
            Some(p) if time::Duration::days(p.paid_days_ago) > REFUND_WINDOW => {
                Some(("REFUND_WINDOW_EXCEED", "refund window has passed"))
            }
            Some(p)
                if !p.multiple_refunds
                    && st.refunds.values().any(|r| r.payment_id == payment_id) =>
            {
                Some((
                    "MULTIPLE_REFUNDS_NOT_SUPPORTED",
                    "only one refund is allowed",
                ))
            }
            Some(p) => {
                let refunded: i64 = st
                    .refunds
                    .values()
                    .filter(|r| r.payment_id == payment_id && r.status != "FAIL")
                    .map(|r| r.value)
                    .sum();
                (refunded + value > p.amount).then_some((
                    "REFUND_AMOUNT_EXCEED",
                    "refunds would exceed the amount paid",
                ))
            }
        };
        // What a refundRequestId did, so its repeats answer the same.
        let key = |refund_id, failure| RefundKey {
            payment_id: payment_id.clone(),
            currency: currency.clone(),
            value,
            refund_id,
            failure,
        };
        if let Some((code, message)) = refusal {
            let failure = Some((code.into(), message.into()));
            st.by_request_id.insert(rrid, key(None, failure));
            return json!({"result": result(code, "F", message)});
        }
        let is_async = st
            .payments
            .get(&payment_id)
            .is_some_and(|p| p.async_refunds);
        st.next_id += 1;
        let refund_id = format!("2026{:016}", st.next_id);
        let r = SimRefund {
            refund_id: refund_id.clone(),
            refund_request_id: rrid.clone(),
            payment_id: payment_id.clone(),
            currency: currency.clone(),
            value,
            status: if is_async { "PROCESSING" } else { "SUCCESS" }.into(),
            time: now(),
            notify_url,
        };
        let answer = refund_answer(&r);
        if is_async
            && let (Some(after), Some(me)) =
                (self.target().and_then(|t| t.auto_settle), self.me.upgrade())
        {
            let id = refund_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.settle_refund(&id, true);
            });
        }
        st.by_request_id
            .insert(rrid, key(Some(refund_id.clone()), None));
        st.refunds.insert(refund_id, r);
        st.controls.stats.refunds_executed += 1;
        answer
    }

    fn inquiry(&self, req: &Value) -> Value {
        let ids = (|| {
            Ok::<_, String>((
                text(req, "refundId", 64)?,
                text(req, "refundRequestId", 64)?,
            ))
        })();
        let (refund_id, rrid) = match ids {
            Ok((None, None)) => return param_illegal("refundId or refundRequestId is required"),
            Ok(v) => v,
            Err(m) => return param_illegal(&m),
        };
        let st = self.state();
        let id = refund_id.or_else(|| {
            rrid.and_then(|k| st.by_request_id.get(&k).and_then(|e| e.refund_id.clone()))
        });
        match id.and_then(|i| st.refunds.get(&i)) {
            Some(r) => {
                let mut a = json!({
                    "result": result("SUCCESS", "S", "success"),
                    "refundId": r.refund_id,
                    "refundRequestId": r.refund_request_id,
                    "refundAmount": {"currency": r.currency, "value": r.value.to_string()},
                    "refundStatus": r.status,
                });
                if r.status == "SUCCESS" {
                    a["refundTime"] = json!(r.time);
                }
                a
            }
            None => json!({"result": result("REFUND_NOT_EXIST", "F", "refund not found")}),
        }
    }

    fn cancel(&self, req: &Value) -> Value {
        let parsed = (|| {
            Ok::<_, String>((
                text(req, "subscriptionId", 64)?,
                text(req, "subscriptionRequestId", 64)?,
                required(req, "cancellationType", 32)?,
            ))
        })();
        let (sid, srid, kind) = match parsed {
            Ok((None, None, _)) => {
                return param_illegal("subscriptionId or subscriptionRequestId is required");
            }
            Ok(p) => p,
            Err(m) => return param_illegal(&m),
        };
        let new_status = match kind.as_str() {
            "CANCEL" => "CANCELLED",
            "TERMINATE" => "TERMINATED",
            _ => return param_illegal("cancellationType must be CANCEL or TERMINATE"),
        };
        let mut st = self.state();
        let found = st.subscriptions.iter_mut().find(|s| {
            sid.as_deref().is_none_or(|i| i == s.subscription_id)
                && srid
                    .as_deref()
                    .is_none_or(|i| i == s.subscription_request_id)
        });
        let Some(sub) = found else {
            return json!({"result": result("SUBSCRIPTION_NOT_EXIST", "F", "subscription not found")});
        };
        // Terminated is final; cancelling again answers success without changing it.
        let changed = sub.status != "TERMINATED" && sub.status != new_status;
        if sub.status != "TERMINATED" {
            sub.status = new_status.into();
        }
        let t = OffsetDateTime::now_utc();
        let end = if kind == "CANCEL" {
            t + time::Duration::days(30)
        } else {
            t
        };
        let notice = json!({
            "subscriptionRequestId": sub.subscription_request_id,
            "subscriptionId": sub.subscription_id,
            "subscriptionStatus": sub.status,
            "subscriptionNotificationType": kind,
            "subscriptionStartTime": (t - time::Duration::days(60)).format(&Rfc3339).unwrap_or_default(),
            "subscriptionEndTime": end.format(&Rfc3339).unwrap_or_default(),
        });
        st.controls.stats.cancels_executed += 1;
        drop(st);
        if changed {
            self.notify("subscription", notice);
        }
        json!({"result": result("SUCCESS", "S", "success")})
    }
}

pub(super) fn refund_answer(r: &SimRefund) -> Value {
    let (code, status) = match r.status.as_str() {
        "SUCCESS" => ("SUCCESS", "S"),
        "PROCESSING" => ("REFUND_IN_PROCESS", "U"),
        _ => ("PROCESS_FAIL", "F"),
    };
    let mut a = json!({
        "result": result(code, status, if status == "S" { "success" } else { "refund is processing" }),
        "refundRequestId": r.refund_request_id,
        "paymentId": r.payment_id,
        "refundAmount": {"currency": r.currency, "value": r.value.to_string()},
        "refundTime": r.time,
    });
    if status == "S" {
        a["refundId"] = json!(r.refund_id);
    }
    a
}
