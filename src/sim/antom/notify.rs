//! The notifications the simulator sends, signed like Antom's, and their resends until the
//! exact acknowledgement comes back.

use super::*;

/// Antom's resending of an unacknowledged notification: the waits before each of the up to
/// 8 resends (0 s, 2 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h).
pub const ANTOM_RESEND_SCHEDULE: [Duration; 8] = [
    Duration::from_secs(0),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
    Duration::from_secs(21600),
    Duration::from_secs(54000),
];

/// Where and how the simulator sends notifications.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    /// `http://host:port/notify/<account>`; the kind (`refund`, `subscription`, `payment`) is
    /// appended.
    pub base_url: String,
    /// Waits before each resend of an unacknowledged notification.
    pub resend: Vec<Duration>,
    /// Settle PROCESSING refunds as succeeded after this long (dev mode).
    pub auto_settle: Option<Duration>,
}

/// One notification the simulator sent, and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `refund`, `subscription` or `payment`.
    pub kind: String,
    /// The JSON body.
    pub body: String,
    /// POSTs made so far.
    pub attempts: u32,
    /// Whether the exact acknowledgement came back.
    pub acked: bool,
    /// The HTTP status of each attempt (0 = no answer).
    pub statuses: Vec<u16>,
}

impl AntomSim {
    /// Sends notifications to `target` from now on.
    pub fn notify_to(&self, target: NotifyTarget) {
        *self.notify.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    /// Every notification sent so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// Charges a subscription period and sends notifyPayment.
    pub fn charge_period(
        &self,
        subscription_id: &str,
        payment_id: &str,
        (currency, value): (&str, i64),
        success: bool,
    ) -> Option<usize> {
        let srid = self
            .state()
            .subscriptions
            .iter()
            .find(|s| s.subscription_id == subscription_id)?
            .subscription_request_id
            .clone();
        let t = now();
        let mut body = json!({
            "notifyType": "PAYMENT_RESULT",
            "result": if success { result("SUCCESS", "S", "success") } else { result("PAYMENT_FAIL", "F", "payment failed") },
            "paymentId": payment_id,
            "paymentAmount": {"currency": currency, "value": value.to_string()},
            "paymentCreateTime": t,
            "subscriptionRequestId": srid,
            "subscriptionId": subscription_id,
            "periodStartTime": t,
            "periodEndTime": t,
            "phaseNo": "2",
        });
        if success {
            body["paymentTime"] = json!(t);
        }
        self.notify("payment", body)
    }

    /// Sends notification `index` again, as Antom does when it did not see the
    /// acknowledgement (a new request time and signature, the same body).
    pub fn resend(&self, index: usize) -> bool {
        let Some(d) = self.state().deliveries.get(index).cloned() else {
            return false;
        };
        let (Some(me), Some(target)) = (self.me.upgrade(), self.target()) else {
            return false;
        };
        let url = format!("{}/{}", target.base_url.trim_end_matches('/'), d.kind);
        tokio::spawn(async move { me.deliver(index, url, d.body, Vec::new()).await });
        true
    }

    pub(super) fn target(&self) -> Option<NotifyTarget> {
        self.notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues a notification of `kind`, delivered in the background with Antom's resends;
    /// returns its index in [`Self::deliveries`]. Without a target nothing is sent.
    pub(super) fn notify(&self, kind: &str, body: Value) -> Option<usize> {
        let base = self.target()?.base_url;
        self.notify_at(format!("{}/{kind}", base.trim_end_matches('/')), kind, body)
    }

    /// Like [`Self::notify`], to `url` (a request's own notify URL), with the target's
    /// resends (Antom's schedule when there is no target).
    pub(super) fn notify_at(&self, url: String, kind: &str, body: Value) -> Option<usize> {
        let resend = self
            .target()
            .map_or_else(|| ANTOM_RESEND_SCHEDULE.to_vec(), |t| t.resend);
        let me = self.me.upgrade()?;
        let body = body.to_string();
        let index = {
            let mut st = self.state();
            st.deliveries.push(Delivery {
                kind: kind.into(),
                body: body.clone(),
                attempts: 0,
                acked: false,
                statuses: Vec::new(),
            });
            st.deliveries.len() - 1
        };
        tokio::spawn(async move { me.deliver(index, url, body, resend).await });
        Some(index)
    }

    /// POSTs a signed notification until the exact acknowledgement comes back or the resends
    /// run out.
    async fn deliver(&self, index: usize, url: String, body: String, resend: Vec<Duration>) {
        let path = match reqwest::Url::parse(&url) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            },
            Err(_) => return,
        };
        for wait in std::iter::once(Duration::ZERO).chain(resend) {
            tokio::time::sleep(wait).await;
            let t = now();
            let signature = self.sign(&signing::content(
                &path,
                &self.client_id,
                &t,
                body.as_bytes(),
            ));
            let sent = self
                .http
                .post(&url)
                .header("content-type", "application/json; charset=UTF-8")
                .header("client-id", &self.client_id)
                .header("request-time", &t)
                .header("signature", signature)
                .body(body.clone())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let (status, acked) = match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let answer: Option<Value> = r
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    let acked = status == 200
                        && answer.is_some_and(|a| {
                            a["result"]["resultCode"] == "SUCCESS"
                                && a["result"]["resultStatus"] == "S"
                        });
                    (status, acked)
                }
                Err(_) => (0, false),
            };
            {
                let mut st = self.state();
                if let Some(d) = st.deliveries.get_mut(index) {
                    d.attempts += 1;
                    d.statuses.push(status);
                    d.acked |= acked;
                }
            }
            if acked {
                return;
            }
        }
    }
}
