//! Field rules: a protobuf request becomes a provider-neutral domain value, or every
//! violation of the request at once. Nothing leaves the gateway before this passes.

use std::sync::Arc;

use crate::accounts::{Account, Accounts};
use crate::domain::{
    CancelSubscription, CancellationType, CreateRefund, InquireRefund, Money, Violations,
};
use crate::error::GatewayError;
use crate::pb;

/// Longest provider identifier accepted (Antom's String(64)).
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest refund reason accepted (Antom's refundReason String(256)).
pub(crate) const MAX_REASON_LEN: usize = 256;

/// Checks an idempotency key: required, 1-64 characters of `[A-Za-z0-9._:-]` (AIP-155).
fn request_id(v: &mut Violations, field: &str, value: &str, required: bool) {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
    id_field(
        v,
        field,
        value,
        required,
        allowed,
        "only the characters A-Z a-z 0-9 . _ : - are allowed",
    );
}

/// Checks a provider identifier: at most 64 printable ASCII characters, no spaces.
fn identifier(v: &mut Violations, field: &str, value: &str, required: bool) {
    let allowed = |b: u8| b.is_ascii_graphic();
    id_field(
        v,
        field,
        value,
        required,
        allowed,
        "only printable ASCII characters without spaces are allowed",
    );
}

/// An id: empty (refused if `required`), or at most [`MAX_ID_LEN`] bytes each `allowed`.
fn id_field(
    v: &mut Violations,
    field: &str,
    value: &str,
    required: bool,
    allowed: impl Fn(u8) -> bool,
    not_allowed: &str,
) {
    if value.is_empty() {
        if required {
            v.add(field, "required");
        }
        return;
    }
    if value.len() > MAX_ID_LEN {
        v.add(field, format!("at most {MAX_ID_LEN} characters"));
    }
    if !value.bytes().all(allowed) {
        v.add(field, not_allowed);
    }
}

/// Checks free text: at most `max` characters, no control characters.
fn text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.add(field, format!("at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        v.add(field, "control characters are not allowed");
    }
}

/// Checks an amount: ISO 4217 currency, positive value in minor units.
fn money(v: &mut Violations, field: &str, value: Option<&pb::Money>) -> Option<Money> {
    let Some(m) = value else {
        v.add(field, "required");
        return None;
    };
    let mut ok = true;
    let currency_field = format!("{field}.currency");
    if m.currency.is_empty() {
        v.add(&currency_field, "required");
        ok = false;
    } else if m.currency.len() != 3 || !m.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        v.add(
            &currency_field,
            "must be an ISO 4217 alphabetic code of three upper-case letters, e.g. USD",
        );
        ok = false;
    } else if iso_currency::Currency::from_code(&m.currency).is_none() {
        v.add(&currency_field, "not an ISO 4217 currency code");
        ok = false;
    }
    if m.value <= 0 {
        v.add(
            &format!("{field}.value"),
            "must be greater than zero (minor units)",
        );
        ok = false;
    }
    ok.then(|| Money {
        currency: m.currency.clone(),
        value: m.value,
    })
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A subscription named by its id, its merchant id, or both.
fn subscription_ids(v: &mut Violations, id: &str, request_id: &str) {
    identifier(v, "subscription_id", id, false);
    identifier(v, "subscription_request_id", request_id, false);
    if id.is_empty() && request_id.is_empty() {
        v.add(
            "subscription_id",
            "give subscription_id or subscription_request_id",
        );
    }
}

/// The longest account name (the configuration allows no longer one).
pub(crate) const MAX_ACCOUNT_LEN: usize = 64;

/// Resolves the account name; an unknown name is a violation of `account`.
fn account(v: &mut Violations, accounts: &Accounts, name: &str) -> Option<Arc<Account>> {
    if name.len() > MAX_ACCOUNT_LEN {
        v.add("account", format!("at most {MAX_ACCOUNT_LEN} characters"));
        return None;
    }
    let found = accounts.resolve(name);
    if found.is_none() {
        if name.is_empty() {
            v.add("account", "no default account is configured; name one");
        } else {
            v.add("account", format!("unknown account {name:?}"));
        }
    }
    found
}

/// Every violation found, as the caller's error.
fn invalid(v: Violations) -> GatewayError {
    GatewayError::InvalidArgument(v.into_vec())
}

/// `value` when nothing was violated, else every violation.
fn checked<T>(v: Violations, value: T) -> Result<T, GatewayError> {
    if v.is_empty() {
        Ok(value)
    } else {
        Err(invalid(v))
    }
}

/// Validates a refund creation.
pub(crate) fn create_refund(
    req: &pb::CreateRefundRequest,
    accounts: &Accounts,
) -> Result<(Arc<Account>, CreateRefund), GatewayError> {
    let mut v = Violations::default();
    let acct = account(&mut v, accounts, &req.account);
    request_id(&mut v, "request_id", &req.request_id, true);
    identifier(&mut v, "payment_id", &req.payment_id, true);
    let amount = money(&mut v, "amount", req.amount.as_ref());
    text(&mut v, "reason", &req.reason, MAX_REASON_LEN);
    identifier(
        &mut v,
        "reference_refund_id",
        &req.reference_refund_id,
        false,
    );
    let (Some(acct), Some(amount)) = (acct, amount) else {
        return Err(invalid(v));
    };
    let cmd = CreateRefund {
        request_id: req.request_id.clone(),
        payment_id: req.payment_id.clone(),
        amount,
        reason: some(&req.reason),
        reference_refund_id: some(&req.reference_refund_id),
        cancel_subscription: req.cancel_subscription,
    };
    acct.provider.check_refund(&cmd, &mut v);
    checked(v, (acct, cmd))
}

/// Validates a refund inquiry.
pub(crate) fn inquire_refund(
    req: &pb::InquireRefundRequest,
    accounts: &Accounts,
) -> Result<(Arc<Account>, InquireRefund), GatewayError> {
    let mut v = Violations::default();
    let acct = account(&mut v, accounts, &req.account);
    identifier(&mut v, "refund_id", &req.refund_id, false);
    request_id(&mut v, "request_id", &req.request_id, false);
    if req.refund_id.is_empty() && req.request_id.is_empty() {
        v.add("refund_id", "give refund_id or request_id");
    }
    match acct {
        Some(acct) if v.is_empty() => Ok((
            acct,
            InquireRefund {
                refund_id: some(&req.refund_id),
                request_id: some(&req.request_id),
            },
        )),
        _ => Err(invalid(v)),
    }
}

/// Validates a subscription cancellation.
pub(crate) fn cancel_subscription(
    req: &pb::CancelSubscriptionRequest,
    accounts: &Accounts,
) -> Result<(Arc<Account>, CancelSubscription), GatewayError> {
    let mut v = Violations::default();
    let acct = account(&mut v, accounts, &req.account);
    request_id(&mut v, "request_id", &req.request_id, true);
    subscription_ids(&mut v, &req.subscription_id, &req.subscription_request_id);
    let kind = match pb::CancellationType::try_from(req.cancellation_type) {
        Ok(pb::CancellationType::Cancel) => Some(CancellationType::Cancel),
        Ok(pb::CancellationType::Terminate) => Some(CancellationType::Terminate),
        Ok(pb::CancellationType::Unspecified) => {
            v.add(
                "cancellation_type",
                "required: CANCELLATION_TYPE_CANCEL or CANCELLATION_TYPE_TERMINATE",
            );
            None
        }
        Err(_) => {
            v.add(
                "cancellation_type",
                format!("unknown value {}", req.cancellation_type),
            );
            None
        }
    };
    let cancel_reason = match req.cancel_reason {
        0 => None,
        r @ 1000..=1099 => Some(r as u16),
        r => {
            v.add(
                "cancel_reason",
                format!("{r} is not a merchant cancel reason (1000-1099)"),
            );
            None
        }
    };
    let (Some(acct), Some(cancellation_type)) = (acct, kind) else {
        return Err(invalid(v));
    };
    let cmd = CancelSubscription {
        request_id: req.request_id.clone(),
        subscription_id: some(&req.subscription_id),
        subscription_request_id: some(&req.subscription_request_id),
        cancellation_type,
        cancel_reason,
    };
    acct.provider.check_cancel(&cmd, &mut v);
    checked(v, (acct, cmd))
}

/// Validates a subscription read: the account and one of the two ids.
pub(crate) fn get_subscription(
    req: &pb::GetSubscriptionRequest,
    accounts: &Accounts,
) -> Result<Arc<Account>, GatewayError> {
    let mut v = Violations::default();
    let acct = account(&mut v, accounts, &req.account);
    subscription_ids(&mut v, &req.subscription_id, &req.subscription_request_id);
    match acct {
        Some(acct) if v.is_empty() => Ok(acct),
        _ => Err(invalid(v)),
    }
}

/// The most accounts one Watch may name.
pub(crate) const MAX_WATCHED_ACCOUNTS: usize = 100;

/// Validates a Watch: the cursor (empty = 0, from the start) and the named accounts.
pub(crate) fn watch_events(
    req: &pb::WatchEventsRequest,
    accounts: &Accounts,
) -> Result<(i64, Vec<String>, Vec<pb::EventKind>), GatewayError> {
    let mut v = Violations::default();
    let cursor = if req.after_cursor.is_empty() {
        0
    } else {
        match req.after_cursor.parse::<i64>() {
            Ok(c) if c >= 0 && req.after_cursor.bytes().all(|b| b.is_ascii_digit()) => c,
            _ => {
                v.add(
                    "after_cursor",
                    "not a cursor: pass the cursor of an event exactly as received, or nothing",
                );
                0
            }
        }
    };
    if req.accounts.len() > MAX_WATCHED_ACCOUNTS {
        v.add(
            "accounts",
            format!("at most {MAX_WATCHED_ACCOUNTS} accounts"),
        );
        return Err(invalid(v));
    }
    for (i, name) in req.accounts.iter().enumerate() {
        if name.len() > MAX_ACCOUNT_LEN {
            v.add(
                &format!("accounts[{i}]"),
                format!("at most {MAX_ACCOUNT_LEN} characters"),
            );
        } else if name.is_empty() || accounts.resolve(name).is_none() {
            v.add(
                &format!("accounts[{i}]"),
                format!("unknown account {name:?}"),
            );
        }
    }
    let mut kinds = Vec::new();
    for (i, k) in req.kinds.iter().enumerate() {
        match pb::EventKind::try_from(*k) {
            Ok(pb::EventKind::Unspecified) | Err(_) => v.add(
                &format!("kinds[{i}]"),
                "not an event kind: REFUND, SUBSCRIPTION or SUBSCRIPTION_PAYMENT",
            ),
            Ok(kind) => kinds.push(kind),
        }
    }
    checked(v, (cursor, req.accounts.clone(), kinds))
}

#[cfg(test)]
mod tests {
    //! Random requests through validation: no panic, INVALID_ARGUMENT with reason
    //! `INVALID_REQUEST` or a command that holds only valid fields.

    use std::time::Duration;

    use proptest::prelude::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::admission::{AccountGuard, GuardSettings};
    use crate::providers::antom::Antom;
    use crate::providers::antom::client::Settings;
    use crate::providers::antom::signing::{Signer, Verifier};

    const MERCHANT_PEM: &str = include_str!("../tests/fixtures/test_merchant_key.pem");

    fn public_of(private_pem: &str) -> Verifier {
        let der = Signer::from_bytes(private_pem.as_bytes())
            .unwrap()
            .public_key_der();
        Verifier::from_der(&der).unwrap()
    }

    fn reason(s: &tonic::Status) -> String {
        s.get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default()
    }

    fn accounts() -> &'static Accounts {
        static A: std::sync::OnceLock<Accounts> = std::sync::OnceLock::new();
        A.get_or_init(build_accounts)
    }

    fn build_accounts() -> Accounts {
        let settings = Settings {
            base_url: "http://127.0.0.1:9".into(),
            client_id: "C".into(),
            sandbox: false,
            timeout: Duration::from_secs(1),
            keys: crate::providers::antom::keys::Keys::fixed(
                crate::providers::antom::keys::KeyRing::single(
                    1,
                    Signer::from_bytes(MERCHANT_PEM.as_bytes()).unwrap(),
                    public_of(MERCHANT_PEM),
                ),
            ),
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
            match create_refund(&req, accounts) {
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
            if let Ok((_, c)) = cancel_subscription(&req, accounts) {
                prop_assert!(kind == 1 || kind == 2);
                prop_assert!(c.subscription_id.is_some() || c.subscription_request_id.is_some());
            }
        }
    }
}
