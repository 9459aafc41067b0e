//! Antom result codes -> gRPC code and disposition. One table, read top to bottom; codes not
//! in it are classified by their S/F/U status. The README's error catalogue mirrors it.

use std::time::Duration;

use tonic::Code;

pub use crate::providers::Meaning;
use Meaning::*;

/// Antom's throttling answer; back off this long before repeating.
pub const TRAFFIC_RETRY: Duration = Duration::from_secs(1);
/// A payment still in process cannot be refunded yet; check again after this.
pub const PAYMENT_IN_PROCESS_RETRY: Duration = Duration::from_secs(5);

/// The table: result code -> meaning. Unconfirmed rows are marked in `../shared/spec`.
pub const TABLE: &[(&str, Meaning)] = &[
    ("SUCCESS", Success),
    ("REFUND_IN_PROCESS", Processing),
    ("PARAM_ILLEGAL", Definitive(Code::InvalidArgument)),
    ("REPEAT_REQ_INCONSISTENT", Definitive(Code::InvalidArgument)),
    ("ORDER_NOT_EXIST", Definitive(Code::NotFound)),
    ("REFUND_NOT_EXIST", Definitive(Code::NotFound)),
    ("SUBSCRIPTION_NOT_EXIST", Definitive(Code::NotFound)),
    ("REFUND_AMOUNT_EXCEED", Definitive(Code::FailedPrecondition)),
    ("REFUND_WINDOW_EXCEED", Definitive(Code::FailedPrecondition)),
    ("ORDER_STATUS_INVALID", Definitive(Code::FailedPrecondition)),
    ("ORDER_IS_CANCELED", Definitive(Code::FailedPrecondition)),
    ("CURRENCY_NOT_SUPPORT", Definitive(Code::FailedPrecondition)),
    (
        "MULTIPLE_REFUNDS_NOT_SUPPORTED",
        Definitive(Code::FailedPrecondition),
    ),
    (
        "MERCHANT_BALANCE_NOT_ENOUGH",
        Definitive(Code::FailedPrecondition),
    ),
    ("RISK_REJECT", Definitive(Code::FailedPrecondition)),
    ("PROCESS_FAIL", Definitive(Code::FailedPrecondition)),
    ("ACCESS_DENIED", Definitive(Code::PermissionDenied)),
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
        Retryable(Code::ResourceExhausted, TRAFFIC_RETRY),
    ),
    (
        "PAYMENT_IN_PROCESS",
        Retryable(Code::Unavailable, PAYMENT_IN_PROCESS_RETRY),
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
        "F" => Definitive(Code::FailedPrecondition),
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
            Definitive(Code::FailedPrecondition)
        );
        assert_eq!(classify("SOMETHING_NEW", "U"), Unknown);
        assert_eq!(classify("SOMETHING_NEW", ""), Unknown);
    }
}
