//! PayXpert `errorCode`s -> gRPC code and disposition, compared as strings (leading zeros
//! matter). Codes not in the table are definitive refusals (FAILED_PRECONDITION), reason
//! `PAYXPERT_<code>`. The README's error catalogue mirrors it.

use std::time::Duration;

use tonic::Code;

pub use crate::providers::Meaning;
use Meaning::*;

/// The table: errorCode -> meaning. Classifications are ours: PayXpert publishes none.
pub const TABLE: &[(&str, Meaning)] = &[
    ("000", Success),
    ("001", Definitive(Code::FailedPrecondition)),
    ("002", Definitive(Code::FailedPrecondition)),
    ("003", Misconfigured),
    ("004", Definitive(Code::FailedPrecondition)),
    ("005", Definitive(Code::FailedPrecondition)),
    ("006", Definitive(Code::FailedPrecondition)),
    ("007", Definitive(Code::InvalidArgument)),
    ("012", Definitive(Code::FailedPrecondition)),
    ("013", Definitive(Code::InvalidArgument)),
    ("014", Definitive(Code::FailedPrecondition)),
    ("015", Definitive(Code::FailedPrecondition)),
    ("030", Definitive(Code::InvalidArgument)),
    ("034", Definitive(Code::FailedPrecondition)),
    ("051", Definitive(Code::FailedPrecondition)),
    ("057", Definitive(Code::FailedPrecondition)),
    ("058", Misconfigured),
    ("064", Definitive(Code::FailedPrecondition)),
    ("080", Definitive(Code::FailedPrecondition)),
    ("082", Misconfigured),
    ("091", Retryable(Code::Unavailable, Duration::from_secs(5))),
    ("094", Unknown),
    ("096", Unknown),
    ("674", Definitive(Code::FailedPrecondition)),
    ("678", Definitive(Code::NotFound)),
];

/// The meaning of `code`; unknown codes are definitive refusals.
pub fn classify(code: &str) -> Meaning {
    TABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(Definitive(Code::FailedPrecondition), |(_, m)| *m)
}

/// The ErrorInfo reason for `code` (AIP-193 reasons are UPPER_SNAKE_CASE, so digits are
/// prefixed).
pub fn reason(code: &str) -> String {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect::<String>()
        .to_ascii_uppercase();
    format!(
        "PAYXPERT_{}",
        if clean.is_empty() { "UNKNOWN" } else { &clean }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_found_and_unique() {
        for (i, (code, meaning)) in TABLE.iter().enumerate() {
            assert_eq!(classify(code), *meaning);
            assert!(
                TABLE[i + 1..].iter().all(|(c, _)| c != code),
                "{code} twice"
            );
            assert_eq!(code.len(), 3);
        }
    }

    #[test]
    fn unknown_codes_are_definitive_with_the_code_as_reason() {
        assert_eq!(classify("999"), Definitive(Code::FailedPrecondition));
        assert_eq!(reason("064"), "PAYXPERT_064");
        assert_eq!(reason("x-\u{1}"), "PAYXPERT_X");
        assert_eq!(reason(""), "PAYXPERT_UNKNOWN");
    }
}
