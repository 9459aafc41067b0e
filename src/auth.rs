//! Caller authentication and authorization. A caller is identified by its TLS client
//! certificate (mutual TLS: the first URI SAN, else DNS SAN, else the subject CN) or by a bearer
//! token (only SHA-256 hashes of tokens are configured). A per-caller policy says which RPCs
//! and which accounts it may use. With nothing configured, every call is anonymous and allowed
//! (dev mode, or a mesh that authenticates), and the server warns at start. With callers
//! authenticated but no policy configured, every authenticated caller may do everything.

use crate::reason;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::reload::{Reload, Seen};

use tonic::Request;

use crate::error::{ErrorContext, GatewayError};

/// What a caller may do. `None` lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// RPCs it may call, as `Service.Method` (e.g. `RefundService.Create`); `None` = all.
    pub methods: Option<Vec<String>>,
    /// Accounts it may use; `None` = all.
    pub accounts: Option<Vec<String>>,
    /// It may read other callers' refunds and their events on its accounts (a support or
    /// finance tool). Off by default: a caller reads only what its own requests made.
    pub read_others: bool,
}

/// The operators' service (`paygate.admin.v1.AdminService`): its methods are granted only
/// by name (`AdminService.ListKeys`, ...) or by `AdminService.*`, never by `*` or by the
/// absence of a policy.
pub(crate) const ADMIN_SERVICE: &str = "AdminService";

impl Policy {
    fn allows_method(&self, method: &str) -> bool {
        let named = |x: &String| {
            x == method
                || x.strip_suffix(".*").is_some_and(|service| {
                    method.split_once('.').is_some_and(|(s, _)| s == service)
                })
        };
        if method
            .split_once('.')
            .is_some_and(|(s, _)| s == ADMIN_SERVICE)
        {
            return self.methods.as_ref().is_some_and(|m| m.iter().any(named));
        }
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == "*" || named(x)))
    }

    fn allows_account(&self, account: &str) -> bool {
        self.accounts
            .as_ref()
            .is_none_or(|a| a.iter().any(|x| x == "*" || x == account))
    }
}

/// The accepted bearer tokens: SHA-256 (lower-case hex) of each -> caller name. Clones share
/// one set, swapped whole when the tokens file changes (see [`TokensFile`]); once tokens are
/// configured, authentication stays on, whatever a reload reads.
#[derive(Debug, Clone)]
pub struct Tokens {
    live: Arc<ArcSwap<HashMap<String, String>>>,
    configured: bool,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            live: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            configured: false,
        }
    }
}

impl Tokens {
    /// Accepts the token whose SHA-256 is `hash` as `caller`'s.
    pub fn insert(&mut self, hash: String, caller: String) {
        self.configured = true;
        self.live.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(hash.clone(), caller.clone());
            m
        });
    }

    /// The caller whose token's SHA-256 is `hash`.
    pub fn caller(&self, hash: &str) -> Option<String> {
        self.live.load().get(hash).cloned()
    }

    /// How many tokens are accepted now.
    pub fn len(&self) -> usize {
        self.live.load().len()
    }

    /// No tokens were ever configured.
    pub fn is_empty(&self) -> bool {
        !self.configured
    }

    /// Accepts exactly `map` from now on.
    pub(crate) fn replace(&mut self, map: HashMap<String, String>) {
        self.configured = true;
        self.live.store(Arc::new(map));
    }
}

/// Parses a tokens file: one `CALLER SHA256HEX` per line (`#` comments), at least one.
pub(crate) fn parse_tokens(text: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(caller), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `CALLER SHA256HEX`", i + 1));
        };
        let hash = hash
            .strip_prefix("sha256:")
            .unwrap_or(hash)
            .to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: the hash must be 64 hex digits (SHA-256 of the token)",
                i + 1
            ));
        }
        map.insert(hash, caller.to_owned());
    }
    if map.is_empty() {
        return Err("no tokens in the file".into());
    }
    Ok(map)
}

/// The callers' tokens file, read again when it changes: a new token works and a removed one
/// stops working within seconds. A file that does not parse (or holds no token) changes
/// nothing.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    tokens: Tokens,
    seen: Seen,
}

impl TokensFile {
    /// Reads `path` into `tokens` now, and keeps reading it into them.
    pub fn load(path: &Path, tokens: &mut Tokens) -> Result<Arc<Self>, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        tokens.replace(parse_tokens(text)?);
        let seen = Seen::default();
        seen.changed(&bytes);
        Ok(Arc::new(Self {
            path: path.to_owned(),
            tokens: tokens.clone(),
            seen,
        }))
    }
}

impl Reload for TokensFile {
    fn name(&self) -> String {
        "auth tokens file".into()
    }

    fn watched(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn reload(&self) -> Result<bool, String> {
        let bytes =
            std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if !self.seen.changed(&bytes) {
            return Ok(false);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let map = parse_tokens(text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.tokens.clone().replace(map);
        Ok(true)
    }
}

/// The authentication and authorization settings.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The accepted bearer tokens.
    pub token_hashes: Tokens,
    /// Client certificates are verified (mutual TLS is on).
    pub mtls: bool,
    /// Policies by caller name; `*` applies to callers without their own.
    pub policies: HashMap<String, Policy>,
    /// The tokens file the tokens come from, read again when it changes.
    pub tokens_file: Option<Arc<TokensFile>>,
}

/// SHA-256 of a token, lower-case hex, as the tokens file holds it.
pub fn hash_token(token: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The identity in a DER client certificate: first URI SAN, else first DNS SAN, else CN.
pub(crate) fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        for want_uri in [true, false] {
            for n in names {
                match n {
                    GeneralName::URI(u) if want_uri => return Some((*u).to_owned()),
                    GeneralName::DNSName(d) if !want_uri => return Some((*d).to_owned()),
                    _ => {}
                }
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

impl Auth {
    /// True when callers must authenticate.
    pub fn enabled(&self) -> bool {
        self.mtls || !self.token_hashes.is_empty()
    }

    /// Who is calling: the certificate's or the token's caller, or `""` when authentication
    /// is off.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<String, GatewayError> {
        if !self.enabled() {
            return Ok(String::new());
        }
        if self.mtls
            && let Some(certs) = req.peer_certs()
            && let Some(first) = certs.first()
        {
            return certificate_identity(first.as_ref()).ok_or(GatewayError::Unauthenticated {
                reason: reason::CERTIFICATE_WITHOUT_IDENTITY,
                message: "the client certificate names no URI SAN, DNS SAN or CN",
            });
        }
        let mut headers = req.metadata().get_all("authorization").iter();
        let Some(header) = headers.next() else {
            return Err(GatewayError::Unauthenticated {
                reason: reason::MISSING_CREDENTIALS,
                message: "send a client certificate or an `authorization: Bearer <token>` header",
            });
        };
        if headers.next().is_some() {
            return Err(GatewayError::Unauthenticated {
                reason: reason::INVALID_TOKEN,
                message: "send exactly one authorization header",
            });
        }
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let caller = token.and_then(|t| self.token_hashes.caller(&hash_token(t)));
        caller.ok_or(GatewayError::Unauthenticated {
            reason: reason::INVALID_TOKEN,
            message: "the bearer token is not valid",
        })
    }

    /// The caller's policy: its own, else `*`. With no policies configured at all, every
    /// authenticated caller may do everything; once any is configured, a caller without one
    /// (and without `*`) may do nothing.
    fn policy(&self, caller: &str) -> Option<&Policy> {
        static ALLOW_ALL: Policy = Policy {
            methods: None,
            accounts: None,
            read_others: false,
        };
        if self.policies.is_empty() {
            return Some(&ALLOW_ALL);
        }
        self.policies.get(caller).or_else(|| self.policies.get("*"))
    }

    /// May `caller` call `method` at all?
    pub fn authorize_method(
        &self,
        caller: &str,
        method: &str,
        ctx: &ErrorContext,
    ) -> Result<(), GatewayError> {
        if !self.enabled() || self.policy(caller).is_some_and(|p| p.allows_method(method)) {
            return Ok(());
        }
        Err(GatewayError::PermissionDenied {
            message: format!("caller {caller:?} may not call {method}"),
            ctx: ctx.clone(),
        })
    }

    /// May `caller` read what `owner` (another caller, or nobody known) made? Always with
    /// authentication off.
    pub fn may_read(&self, caller: &str, owner: Option<&str>) -> bool {
        !self.enabled()
            || owner == Some(caller)
            || self.policy(caller).is_some_and(|p| p.read_others)
    }

    /// May `caller` use `account`?
    pub fn authorize_account(
        &self,
        caller: &str,
        account: &str,
        ctx: &ErrorContext,
    ) -> Result<(), GatewayError> {
        if !self.enabled()
            || self
                .policy(caller)
                .is_some_and(|p| p.allows_account(account))
        {
            return Ok(());
        }
        Err(GatewayError::PermissionDenied {
            message: format!("caller {caller:?} may not use account {account:?}"),
            ctx: ctx.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let mut a = Auth::default();
        a.token_hashes
            .insert(hash_token("s3cret"), "billing".into());
        a.token_hashes.insert(hash_token("other"), "support".into());
        a.policies.insert(
            "billing".into(),
            Policy {
                methods: None,
                accounts: Some(vec!["main".into()]),
                read_others: false,
            },
        );
        a.policies.insert(
            "support".into(),
            Policy {
                methods: Some(vec!["RefundService.Inquire".into()]),
                accounts: None,
                read_others: true,
            },
        );
        a
    }

    fn req(h: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = h {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_map_to_callers_and_policies_apply() {
        let a = auth();
        let ctx = ErrorContext::default();
        assert_eq!(
            a.authenticate(&req(Some("Bearer s3cret"))).unwrap(),
            "billing"
        );
        assert!(matches!(
            a.authenticate(&req(None)),
            Err(GatewayError::Unauthenticated {
                reason: "MISSING_CREDENTIALS",
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&req(Some("Bearer nope"))),
            Err(GatewayError::Unauthenticated {
                reason: "INVALID_TOKEN",
                ..
            })
        ));
        assert!(
            a.authorize_method("billing", "RefundService.Create", &ctx)
                .is_ok()
        );
        assert!(a.authorize_account("billing", "main", &ctx).is_ok());
        assert!(a.authorize_account("billing", "eu", &ctx).is_err());
        assert!(
            a.authorize_method("support", "RefundService.Create", &ctx)
                .is_err()
        );
        assert!(
            a.authorize_method("support", "RefundService.Inquire", &ctx)
                .is_ok()
        );
        assert!(
            a.authorize_method("nobody", "RefundService.Inquire", &ctx)
                .is_err()
        );
    }

    /// Admin methods are granted by name or `AdminService.*` only: not by `*`, not by an
    /// absent policy list, not by authentication alone.
    #[test]
    fn admin_methods_are_granted_only_by_name() {
        let mut a = auth();
        let ctx = ErrorContext::default();
        for (caller, methods) in [
            ("ops", vec!["AdminService.ListKeys".to_owned()]),
            ("lead", vec!["AdminService.*".to_owned()]),
            ("all", vec!["*".to_owned()]),
        ] {
            a.policies.insert(
                caller.into(),
                Policy {
                    methods: Some(methods),
                    ..Policy::default()
                },
            );
        }
        let may = |c: &str, m: &str| a.authorize_method(c, m, &ctx).is_ok();
        assert!(may("ops", "AdminService.ListKeys"));
        assert!(!may("ops", "AdminService.SettleKey"));
        assert!(may("lead", "AdminService.SettleKey"));
        assert!(!may("lead", "RefundService.Create"));
        assert!(!may("all", "AdminService.ListKeys"));
        assert!(may("all", "RefundService.Create"));
        assert!(!may("billing", "AdminService.ListKeys"), "methods: any");
        let mut open = Auth::default();
        open.token_hashes.insert(hash_token("t"), "x".into());
        assert!(
            open.authorize_method("x", "AdminService.ListKeys", &ctx)
                .is_err(),
            "no policies: every method but the admin ones"
        );
        assert!(
            open.authorize_method("x", "RefundService.Create", &ctx)
                .is_ok()
        );
    }

    #[test]
    fn without_configuration_everyone_is_anonymous_and_allowed() {
        let a = Auth::default();
        assert_eq!(a.authenticate(&req(None)).unwrap(), "");
        assert!(
            a.authorize_method("", "RefundService.Create", &ErrorContext::default())
                .is_ok()
        );
    }

    #[test]
    fn certificate_identity_prefers_uri_then_dns_then_cn() {
        let mut p = rcgen::CertificateParams::new(vec!["billing.svc".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "billing-cn");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.clone().self_signed(&key).unwrap();
        assert_eq!(
            certificate_identity(cert.der()).as_deref(),
            Some("billing.svc")
        );
        p.subject_alt_names.insert(
            0,
            rcgen::SanType::URI("spiffe://corp/billing".try_into().unwrap()),
        );
        let cert = p.clone().self_signed(&key).unwrap();
        assert_eq!(
            certificate_identity(cert.der()).as_deref(),
            Some("spiffe://corp/billing")
        );
        p.subject_alt_names.clear();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            certificate_identity(cert.der()).as_deref(),
            Some("billing-cn")
        );
        assert_eq!(certificate_identity(b"garbage"), None);
    }
}
