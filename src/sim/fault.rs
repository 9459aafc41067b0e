//! Faults a test queues on a simulator: the next matching requests misbehave this way.

use serde::{Deserialize, Serialize};

/// One way to misbehave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer this result (signed) without executing anything.
    Result {
        /// Result code.
        code: String,
        /// `S`, `F` or `U`.
        status: String,
    },
    /// Wait this long, then behave normally.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer this HTTP status with no body and execute nothing.
    HttpStatus {
        /// HTTP status code.
        status: u16,
    },
    /// Execute, then answer with a signature that does not verify.
    BadSignature,
    /// Execute, then answer without a signature.
    NoSignature,
    /// Execute, then answer a signed body that is not valid JSON.
    MalformedBody,
    /// Execute, then break the connection instead of answering.
    LoseAnswer,
    /// Wait this long, then execute even if the caller has hung up meanwhile (a provider that
    /// keeps processing a request whose connection closed), then answer if anyone listens.
    /// PayXpert simulator only.
    ExecuteLate {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer this HTTP status with this body, executing nothing. PayXpert simulator only.
    StatusWithBody {
        /// HTTP status code.
        status: u16,
        /// The body (JSON, normally).
        body: String,
    },
    /// Execute, then wait this long before answering.
    SlowAnswer {
        /// Milliseconds.
        ms: u64,
    },
    /// Execute, then send the headers and half the body, and never finish.
    NeverFinish,
    /// Execute, then answer a body of this many bytes.
    HugeBody {
        /// Bytes.
        bytes: usize,
    },
    /// Answer these bytes without executing anything, signed or not, with extra headers
    /// (which replace the simulator's own of the same name).
    Raw {
        /// The body.
        body: Vec<u8>,
        /// Sign it properly.
        #[serde(default)]
        sign: bool,
        /// Extra or replacement headers.
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
}

/// A fault that applies to the next `times` matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fault {
    /// `refund`, `inquiryRefund`, `cancel`; `None` matches any.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How many requests it applies to.
    #[serde(default = "one")]
    pub times: u32,
    /// What to do.
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault for the next request to `endpoint`.
    pub fn on(endpoint: &str, kind: FaultKind) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            times: 1,
            kind,
        }
    }

    /// Applies to the next `n` requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }
}
