//! Antom result codes -> what they mean: success, refused for good (and why), not executed
//! (why, and after how long), misconfigured, or unknown. One table, read top to bottom; codes
//! not in it are classified by their S/F/U status. `error.rs` turns a meaning into a gRPC
//! code; the README's error catalogue mirrors both.

use std::time::Duration;

pub use crate::providers::Meaning;
use crate::providers::{NotExecuted, Refusal};
use Meaning::*;

/// Antom's throttling answer; back off this long before repeating.
pub const TRAFFIC_RETRY: Duration = Duration::from_secs(1);
/// A payment still in process cannot be refunded yet; check again after this.
pub const PAYMENT_IN_PROCESS_RETRY: Duration = Duration::from_secs(5);

/// The table: result code -> meaning. Unconfirmed rows are marked in `../shared/spec`.
pub const TABLE: &[(&str, Meaning)] = &[
    ("SUCCESS", Success),
    ("REFUND_IN_PROCESS", Processing),
    ("PARAM_ILLEGAL", Definitive(Refusal::InvalidRequest)),
    (
        "REPEAT_REQ_INCONSISTENT",
        Definitive(Refusal::InvalidRequest),
    ),
    ("ORDER_NOT_EXIST", Definitive(Refusal::NotFound)),
    ("REFUND_NOT_EXIST", Definitive(Refusal::NotFound)),
    ("SUBSCRIPTION_NOT_EXIST", Definitive(Refusal::NotFound)),
    ("REFUND_AMOUNT_EXCEED", Definitive(Refusal::Precondition)),
    ("REFUND_WINDOW_EXCEED", Definitive(Refusal::Precondition)),
    ("ORDER_STATUS_INVALID", Definitive(Refusal::Precondition)),
    ("ORDER_IS_CANCELED", Definitive(Refusal::Precondition)),
    ("CURRENCY_NOT_SUPPORT", Definitive(Refusal::Precondition)),
    (
        "MULTIPLE_REFUNDS_NOT_SUPPORTED",
        Definitive(Refusal::Precondition),
    ),
    (
        "MERCHANT_BALANCE_NOT_ENOUGH",
        Definitive(Refusal::Precondition),
    ),
    ("RISK_REJECT", Definitive(Refusal::Precondition)),
    ("PROCESS_FAIL", Definitive(Refusal::Precondition)),
    ("ACCESS_DENIED", Definitive(Refusal::PermissionDenied)),
    ("INVALID_SIGNATURE", Misconfigured),
    ("INVALID_CLIENT", Misconfigured),
    ("KEY_NOT_FOUND", Misconfigured),
    ("INVALID_API", Misconfigured),
    ("NO_INTERFACE_DEF", Misconfigured),
    ("MEDIA_TYPE_NOT_ACCEPTABLE", Misconfigured),
    ("METHOD_NOT_SUPPORTED", Misconfigured),
    ("INVALID_ACCESS_TOKEN", Misconfigured),
    (
        "REQUEST_TRAFFIC_EXCEED_LIMIT",
        Retryable(NotExecuted::Throttled, TRAFFIC_RETRY),
    ),
    (
        "PAYMENT_IN_PROCESS",
        Retryable(NotExecuted::NotReady, PAYMENT_IN_PROCESS_RETRY),
    ),
    ("UNKNOWN_EXCEPTION", Unknown),
];

/// The meaning of `code` with `status`: the table first, then the status (`S` success,
/// `F` definitive FAILED_PRECONDITION, anything else unknown).
pub fn classify(code: &str, status: &str) -> Meaning {
    if let Some((_, m)) = TABLE.iter().find(|(c, _)| *c == code) {
        return *m;
    }
    match status {
        "S" => Success,
        "F" => Definitive(Refusal::Precondition),
        _ => Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_found_and_unique() {
        for (i, (code, meaning)) in TABLE.iter().enumerate() {
            assert_eq!(classify(code, "?"), *meaning, "{code}");
            assert!(
                TABLE[i + 1..].iter().all(|(c, _)| c != code),
                "{code} listed twice"
            );
            assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
    }

    #[test]
    fn unknown_codes_follow_their_status() {
        assert_eq!(classify("SOMETHING_NEW", "S"), Success);
        assert_eq!(
            classify("SOMETHING_NEW", "F"),
            Definitive(Refusal::Precondition)
        );
        assert_eq!(classify("SOMETHING_NEW", "U"), Unknown);
        assert_eq!(classify("SOMETHING_NEW", ""), Unknown);
    }
}
