//! `paygate.admin.v1.AdminService`: operators list keys, read a key's history, settle a key
//! that needs a person, and read the audit trail. The use cases are the idempotency layer's
//! (`idempotency/operator.rs`); this edge checks who may call (a policy naming the method;
//! without authentication, only on a loopback-only gateway), validates, and converts.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use super::{Rpc, Shared, timestamp_ms};
use crate::error::{ErrorContext, GatewayError, StoreUse};
use crate::idempotency::Reply;
use crate::idempotency::operator::{Decision, KeyDetail, Reason, SettleResult};
use crate::pb::admin as apb;
use crate::pb::admin::admin_service_server::AdminService;
use crate::reason;
use crate::store::{
    Actor, AuditFilter, AuditRow, HistoryEntry, Key, KeyFilter, KeyState, KeyView, Settled,
};

/// `AdminService.ListKeys`.
pub(crate) const LIST_KEYS: &str = "AdminService.ListKeys";
/// `AdminService.GetKey`.
pub(crate) const GET_KEY: &str = "AdminService.GetKey";
/// `AdminService.SettleKey`.
pub(crate) const SETTLE_KEY: &str = "AdminService.SettleKey";
/// `AdminService.ListAuditEntries`.
pub(crate) const LIST_AUDIT_ENTRIES: &str = "AdminService.ListAuditEntries";

/// Page size when none is asked for, and the most a page holds.
const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 500;

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    shared: Arc<Shared>,
    /// The gateway listens on loopback only: without authentication, the service answers.
    loopback: bool,
}

impl AdminApi {
    /// Serves operators; `loopback`: the gRPC port listens on loopback only.
    pub(crate) fn new(shared: Arc<Shared>, loopback: bool) -> Self {
        Self { shared, loopback }
    }

    /// Who acts: the authenticated caller, or anonymous on a loopback-only gateway without
    /// authentication; anything else is refused.
    fn actor(&self, caller: &str) -> Result<Actor, GatewayError> {
        if self.shared.auth.enabled() {
            Ok(Actor::Caller(caller.to_owned()))
        } else if self.loopback {
            Ok(Actor::Anonymous)
        } else {
            Err(GatewayError::AdminDisabled)
        }
    }
}

/// A key's resource name: `keys/{caller}/{method}/{request_id}`, each segment
/// percent-encoded, an anonymous caller written `-` (a caller named `-` is `%2D`).
pub(crate) fn key_name(key: &Key) -> String {
    let caller = match key.caller.as_str() {
        "" => "-".to_owned(),
        "-" => "%2D".to_owned(),
        c => urlencoding::encode(c).into_owned(),
    };
    format!(
        "keys/{caller}/{}/{}",
        urlencoding::encode(key.method),
        urlencoding::encode(&key.request_id)
    )
}

/// The key a resource name names.
pub(crate) fn parse_key_name(name: &str) -> Option<Key> {
    let rest = name.strip_prefix("keys/")?;
    let mut parts = rest.split('/');
    let (caller, method, request_id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || request_id.is_empty() {
        return None;
    }
    let caller = match caller {
        "-" => String::new(),
        c => urlencoding::decode(c).ok()?.into_owned(),
    };
    Some(Key {
        caller,
        method: Key::method_named(&urlencoding::decode(method).ok()?)?,
        request_id: urlencoding::decode(request_id).ok()?.into_owned(),
    })
}

fn invalid(field: &str, why: impl Into<String>) -> GatewayError {
    GatewayError::InvalidArgument(vec![FieldViolation::new(field, why.into())])
}

fn key_of(field: &str, name: &str) -> Result<Key, GatewayError> {
    parse_key_name(name).ok_or_else(|| {
        invalid(
            field,
            "a key's name: keys/{caller}/{method}/{request_id}, as ListKeys gives it",
        )
    })
}

fn store_failed(e: &crate::store::StoreError) -> GatewayError {
    GatewayError::store(e, StoreUse::Read("the keys"), &ErrorContext::default())
}

fn page_size(asked: i32) -> Result<i64, GatewayError> {
    match asked {
        0 => Ok(i64::from(DEFAULT_PAGE)),
        n if n < 0 => Err(invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n.min(MAX_PAGE))),
    }
}

fn pb_state(s: KeyState) -> apb::KeyState {
    match s {
        KeyState::InFlight => apb::KeyState::InFlight,
        KeyState::Unknown => apb::KeyState::Unknown,
        KeyState::Unresolved => apb::KeyState::Unresolved,
        KeyState::Done => apb::KeyState::Done,
    }
}

fn pb_state_named(name: &str) -> i32 {
    KeyState::parse(name).map_or(apb::KeyState::Unspecified, pb_state) as i32
}

fn key_to_pb(v: &KeyView, history: &[HistoryEntry]) -> apb::Key {
    apb::Key {
        name: key_name(&v.key),
        account: v.account.clone(),
        method: v.key.method.to_owned(),
        request_id: v.key.request_id.clone(),
        caller: v.key.caller.clone(),
        state: pb_state(v.state) as i32,
        payment_id: v.payment_id.clone().unwrap_or_default(),
        refund_id: v.refund_id.clone().unwrap_or_default(),
        create_time: Some(timestamp_ms(v.created_at)),
        update_time: Some(timestamp_ms(v.updated_at)),
        attempts: i32::try_from(v.attempts).unwrap_or(i32::MAX),
        last_failure_reason: v.last_failure.clone().unwrap_or_default(),
        lease_holder_alive: v.lease_live,
        blocks_payment: v.blocks_payment,
        history: history
            .iter()
            .map(|h| apb::KeyHistoryEntry {
                time: Some(timestamp_ms(h.at)),
                attempt: i32::try_from(h.attempt).unwrap_or(i32::MAX),
                kind: h.kind.clone(),
                detail: h.detail.clone(),
            })
            .collect(),
    }
}

fn audit_to_pb(a: &AuditRow) -> apb::AuditEntry {
    apb::AuditEntry {
        name: format!("auditEntries/{}", a.audit_id),
        time: Some(timestamp_ms(a.at)),
        actor: a.actor.clone(),
        action: a.action.clone(),
        key: key_name(&a.key),
        account: a.account.clone(),
        reason: a.reason.clone(),
        state_before: pb_state_named(&a.state_before),
        state_after: pb_state_named(&a.state_after),
        refund_id: a.refund_id.clone().unwrap_or_default(),
        outcome: match a.outcome.as_str() {
            "executed" => apb::SettleOutcome::Executed,
            "not_executed" => apb::SettleOutcome::NotExecuted,
            _ => apb::SettleOutcome::Unspecified,
        } as i32,
    }
}

/// A page token: the filters it was made under (so that a token is refused with others, as
/// AIP-158 asks), then where the page ended, base64url.
fn page_token(filters: &str, at: i64, parts: &[&str]) -> String {
    let mut fields = vec![
        crate::auth::hash_token(filters)[..16].to_owned(),
        at.to_string(),
    ];
    fields.extend(parts.iter().map(|p| (*p).to_owned()));
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&fields).unwrap_or_default())
}

/// Where the previous page ended: its time and the rest.
fn read_page_token(filters: &str, token: &str) -> Result<Option<(i64, Vec<String>)>, GatewayError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "page_token",
            "not a page token of this listing with these filters",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let fields: Vec<String> = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let [digest, at, rest @ ..] = fields.as_slice() else {
        return Err(bad());
    };
    if *digest != crate::auth::hash_token(filters)[..16] {
        return Err(bad());
    }
    Ok(Some((at.parse().map_err(|_| bad())?, rest.to_vec())))
}

fn key_filter(req: &apb::ListKeysRequest) -> Result<(KeyFilter, String), GatewayError> {
    let mut states = Vec::new();
    for s in &req.states {
        states.push(match apb::KeyState::try_from(*s) {
            Ok(apb::KeyState::InFlight) => KeyState::InFlight,
            Ok(apb::KeyState::Unknown) => KeyState::Unknown,
            Ok(apb::KeyState::Unresolved) => KeyState::Unresolved,
            Ok(apb::KeyState::Done) => KeyState::Done,
            _ => return Err(invalid("states", format!("{s} is not a key state"))),
        });
    }
    if states.is_empty() {
        states = vec![KeyState::Unknown, KeyState::Unresolved];
    }
    if req.min_age_seconds < 0 {
        return Err(invalid("min_age_seconds", "must not be negative"));
    }
    let filters = format!(
        "{states:?}|{}|{}|{}",
        req.account, req.payment_id, req.min_age_seconds
    );
    let after = match read_page_token(&filters, &req.page_token)? {
        None => None,
        Some((at, rest)) => {
            let [caller, method, request_id] = rest.as_slice() else {
                return Err(invalid("page_token", "not a page token of ListKeys"));
            };
            let method = Key::method_named(method)
                .ok_or_else(|| invalid("page_token", "not a page token of ListKeys"))?;
            Some((
                at,
                Key {
                    caller: caller.clone(),
                    method,
                    request_id: request_id.clone(),
                },
            ))
        }
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let filter = KeyFilter {
        states,
        account: nonempty(&req.account),
        payment_id: nonempty(&req.payment_id),
        min_age_ms: req.min_age_seconds.saturating_mul(1000),
        after,
        limit: page_size(req.page_size)?,
    };
    Ok((filter, filters))
}

fn decision_of(req: &apb::SettleKeyRequest, key: &Key) -> Result<Decision, GatewayError> {
    let refund_id = req.refund_id.trim();
    match apb::SettleOutcome::try_from(req.outcome) {
        Ok(apb::SettleOutcome::Executed) => {
            if refund_id.is_empty() && key.method == crate::ops::CREATE_REFUND {
                return Err(invalid(
                    "refund_id",
                    "required with SETTLE_OUTCOME_EXECUTED: the provider's refund id, from its back office",
                ));
            }
            Ok(Decision::Executed {
                refund_id: (!refund_id.is_empty()).then(|| refund_id.to_owned()),
                amount: None,
            })
        }
        Ok(apb::SettleOutcome::NotExecuted) if refund_id.is_empty() => Ok(Decision::NotExecuted),
        Ok(apb::SettleOutcome::NotExecuted) => {
            Err(invalid("refund_id", "only with SETTLE_OUTCOME_EXECUTED"))
        }
        _ => Err(invalid(
            "outcome",
            "SETTLE_OUTCOME_EXECUTED (with refund_id) or SETTLE_OUTCOME_NOT_EXECUTED",
        )),
    }
}

impl AdminApi {
    /// The key `name` names, with its history, if the caller may see its account.
    async fn detail(
        &self,
        caller: &str,
        field: &str,
        name: &str,
    ) -> Result<KeyDetail, GatewayError> {
        let key = key_of(field, name)?;
        let s = &self.shared;
        let detail = s
            .idempotency
            .key_detail(&key)
            .await
            .map_err(|e| store_failed(&e))?;
        let not_found = || GatewayError::NotFound {
            reason: reason::KEY_NOT_FOUND,
            message: format!("no key {name}"),
            ctx: ErrorContext::default(),
        };
        let detail = detail.ok_or_else(not_found)?;
        s.auth
            .authorize_account(caller, &detail.view.account, &ErrorContext::default())?;
        Ok(detail)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_keys(
        &self,
        request: Request<apb::ListKeysRequest>,
    ) -> Result<Response<apb::ListKeysResponse>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, LIST_KEYS, request);
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            self.actor(&caller)?;
            let s = rpc.shared;
            let (filter, filters) = key_filter(&req)?;
            if let Some(a) = &filter.account {
                s.auth.authorize_account(&caller, a, &ctx)?;
            }
            let rows = s
                .idempotency
                .list_keys(&filter)
                .await
                .map_err(|e| store_failed(&e))?;
            let next_page_token = match rows.last() {
                Some(last) if rows.len() as i64 == filter.limit => page_token(
                    &filters,
                    last.updated_at,
                    &[&last.key.caller, last.key.method, &last.key.request_id],
                ),
                _ => String::new(),
            };
            let keys = rows
                .iter()
                .filter(|v| s.auth.authorize_account(&caller, &v.account, &ctx).is_ok())
                .map(|v| key_to_pb(v, &[]))
                .collect();
            Ok(Reply::fresh(apb::ListKeysResponse {
                keys,
                next_page_token,
            }))
        })
        .await
    }

    async fn get_key(
        &self,
        request: Request<apb::GetKeyRequest>,
    ) -> Result<Response<apb::Key>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, GET_KEY, request);
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            self.actor(&caller)?;
            let d = self.detail(&caller, "name", &req.name).await?;
            Ok(Reply::fresh(key_to_pb(&d.view, &d.history)))
        })
        .await
    }

    async fn settle_key(
        &self,
        request: Request<apb::SettleKeyRequest>,
    ) -> Result<Response<apb::Key>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, SETTLE_KEY, request);
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            let actor = self.actor(&caller)?;
            let key = key_of("name", &req.name)?;
            let decision = decision_of(&req, &key)?;
            let reason = Reason::new(&req.reason).ok_or_else(|| {
                invalid(
                    "reason",
                    format!(
                        "required: why (what you checked), at most {} characters",
                        Reason::MAX_CHARS
                    ),
                )
            })?;
            self.detail(&caller, "name", &req.name).await?;
            let s = rpc.shared;
            let settled = s
                .idempotency
                .settle(&key, &decision, &reason, &actor)
                .await
                .map_err(|e| GatewayError::store(&e, StoreUse::Keys, &ctx))?;
            if let Some(why) = settled.refusal() {
                if settled == SettleResult::Store(Settled::NotFound) {
                    return Err(GatewayError::NotFound {
                        reason: reason::KEY_NOT_FOUND,
                        message: format!("no key {}", req.name),
                        ctx: ctx.clone(),
                    });
                }
                return Err(GatewayError::KeyNotSettleable { message: why });
            }
            let d = self.detail(&caller, "name", &req.name).await?;
            Ok(Reply::fresh(key_to_pb(&d.view, &d.history)))
        })
        .await
    }

    async fn list_audit_entries(
        &self,
        request: Request<apb::ListAuditEntriesRequest>,
    ) -> Result<Response<apb::ListAuditEntriesResponse>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, LIST_AUDIT_ENTRIES, request);
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            self.actor(&caller)?;
            let s = rpc.shared;
            let key = match req.key.as_str() {
                "" => None,
                name => Some(key_of("key", name)?),
            };
            let filters = format!("audit|{}", req.key);
            let after = match read_page_token(&filters, &req.page_token)? {
                None => None,
                Some((at, rest)) => match rest.as_slice() {
                    [id] => Some((at, id.clone())),
                    _ => {
                        return Err(invalid(
                            "page_token",
                            "not a page token of ListAuditEntries",
                        ));
                    }
                },
            };
            let filter = AuditFilter {
                key,
                after,
                limit: page_size(req.page_size)?,
            };
            let rows = s
                .idempotency
                .audit_entries(&filter)
                .await
                .map_err(|e| store_failed(&e))?;
            let next_page_token = match rows.last() {
                Some(last) if rows.len() as i64 == filter.limit => {
                    page_token(&filters, last.at, &[&last.audit_id])
                }
                _ => String::new(),
            };
            let audit_entries = rows
                .iter()
                .filter(|a| s.auth.authorize_account(&caller, &a.account, &ctx).is_ok())
                .map(audit_to_pb)
                .collect();
            Ok(Reply::fresh(apb::ListAuditEntriesResponse {
                audit_entries,
                next_page_token,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_round_trip_whatever_the_caller() {
        for caller in ["", "-", "spiffe://prod/ns/billing/sa/api", "a b%c"] {
            let key = Key {
                caller: caller.into(),
                method: crate::ops::CREATE_REFUND,
                request_id: "r-1:2.3".into(),
            };
            let name = key_name(&key);
            assert_eq!(name.matches('/').count(), 3, "{name}");
            assert_eq!(parse_key_name(&name), Some(key));
        }
        assert_eq!(
            key_name(&Key {
                caller: String::new(),
                method: crate::ops::CREATE_REFUND,
                request_id: "r1".into()
            }),
            "keys/-/RefundService.Create/r1"
        );
        for bad in [
            "",
            "keys/",
            "keys/-/Nope.Create/r1",
            "keys/-/RefundService.Create/",
            "keys/-/RefundService.Create/r1/x",
        ] {
            assert_eq!(parse_key_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn page_tokens_are_refused_under_other_filters() {
        let t = page_token("a", 7, &["x"]);
        assert_eq!(
            read_page_token("a", &t).unwrap(),
            Some((7, vec!["x".into()]))
        );
        assert!(read_page_token("b", &t).is_err());
        assert!(read_page_token("a", "!!").is_err());
    }
}
