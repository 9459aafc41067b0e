//! PayXpert `errorCode`s -> what they mean, compared as strings (leading zeros matter).
//! Codes not in the table are refusals for good (a precondition: FAILED_PRECONDITION), reason
//! `PAYXPERT_<code>`. `error.rs` turns a meaning into a gRPC code; the README's error
//! catalogue mirrors both.

use std::time::Duration;

pub use crate::providers::Meaning;
use crate::providers::{NotExecuted, Refusal};
use Meaning::*;

/// errorCode 091 (temporarily unavailable): not executed; try again after this.
pub const TEMPORARILY_UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The table: errorCode -> meaning. Classifications are ours: PayXpert publishes none.
pub const TABLE: &[(&str, Meaning)] = &[
    ("000", Success),
    ("001", Definitive(Refusal::Precondition)),
    ("002", Definitive(Refusal::Precondition)),
    ("003", Misconfigured),
    ("004", Definitive(Refusal::Precondition)),
    ("005", Definitive(Refusal::Precondition)),
    ("006", Definitive(Refusal::Precondition)),
    ("007", Definitive(Refusal::InvalidRequest)),
    ("012", Definitive(Refusal::Precondition)),
    ("013", Definitive(Refusal::InvalidRequest)),
    ("014", Definitive(Refusal::Precondition)),
    ("015", Definitive(Refusal::Precondition)),
    ("030", Definitive(Refusal::InvalidRequest)),
    ("034", Definitive(Refusal::Precondition)),
    ("051", Definitive(Refusal::Precondition)),
    ("057", Definitive(Refusal::Precondition)),
    ("058", Misconfigured),
    ("064", Definitive(Refusal::Precondition)),
    ("080", Definitive(Refusal::Precondition)),
    ("082", Misconfigured),
    (
        "091",
        Retryable(NotExecuted::NotReady, TEMPORARILY_UNAVAILABLE_RETRY),
    ),
    ("094", Unknown),
    ("096", Unknown),
    ("674", Definitive(Refusal::Precondition)),
    ("678", Definitive(Refusal::NotFound)),
];

/// The meaning of `code`; unknown codes are definitive refusals.
pub fn classify(code: &str) -> Meaning {
    TABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(Definitive(Refusal::Precondition), |(_, m)| *m)
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
        assert_eq!(classify("999"), Definitive(Refusal::Precondition));
        assert_eq!(reason("064"), "PAYXPERT_064");
        assert_eq!(reason("x-\u{1}"), "PAYXPERT_X");
        assert_eq!(reason(""), "PAYXPERT_UNKNOWN");
    }
}
