//! `paygate.v1.RefundService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Shared, deadline_of, record_call, refund_to_pb, run};
use crate::domain::{CreateRefund, RefundState};
use crate::error::{ErrorContext, GatewayError};
use crate::idempotency::{self, Reply};
use crate::pb;
use crate::pb::refund_service_server::RefundService;
use crate::providers::{Attempt, CallContext};
use crate::retry::call_resolving;
use crate::telemetry;
use crate::validate;

/// The refund service.
#[derive(Debug, Clone)]
pub struct RefundApi {
    shared: Arc<Shared>,
}

impl RefundApi {
    /// Serves refunds.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

const CREATE: &str = "RefundService.Create";
const INQUIRE: &str = "RefundService.Inquire";

#[tonic::async_trait]
impl RefundService for RefundApi {
    async fn create(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let s = &self.shared;
        let deadline = deadline_of(&request, &s.settings);
        let caller = s.auth.authenticate(&request);
        let span = telemetry::rpc_span(CREATE, request.metadata());
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(s, CREATE, deadline, ctx.clone(), true, async {
            let caller = caller?;
            let _admitted = s.admit(&caller, CREATE, deadline, &ctx).await?;
            let (account, cmd) = validate::create_refund(&req, &s.accounts)?;
            let ctx = account.context(&ctx);
            record_call(&account.name, &caller, &req.request_id);
            s.auth.authorize_account(&caller, &account.name, &ctx)?;
            let blanked = CreateRefund {
                request_id: String::new(),
                ..cmd.clone()
            };
            let (key, fingerprint) =
                idempotency::keyed(caller, CREATE, &cmd.request_id, &account.name, &blanked);
            let provider = &account.provider;
            let dedup = provider.deduplicates_requests();
            let call = CallContext::new(deadline);
            let idem = &s.idempotency;
            // A provider without an idempotency key gets one unsettled attempt per payment.
            let scope = idempotency::RefundScope {
                payment_id: &cmd.payment_id,
                quiet: provider.quiet_period(),
            };
            // An earlier attempt with an unknown outcome is settled by the provider first
            // (Antom: resend; PayXpert: reconcile against its refunds of the payment).
            let (account_ref, cmd_ref, call_ref) = (&account, &cmd, &call);
            let resolve = move |reconcile: crate::domain::Reconcile| async move {
                let (account, cmd, call) = (account_ref, cmd_ref, call_ref);
                account
                    .guard
                    .call(deadline, (provider.name(), "resolve"), || {
                        provider.resolve_refund(cmd, &reconcile, call)
                    })
                    .await
            };
            let reply = idem
                .run(
                    &key,
                    &fingerprint,
                    &account.name,
                    deadline,
                    &ctx,
                    Some(scope),
                    resolve,
                    || {
                        call_resolving(
                            &call,
                            dedup,
                            Attempt {
                                provider: provider.name(),
                                account: &account.name,
                                endpoint: "refund",
                            },
                            || {
                                account
                                    .guard
                                    .call(deadline, (provider.name(), "refund"), || {
                                        provider.create_refund(&cmd, &call)
                                    })
                            },
                        )
                    },
                )
                .await?;
            // A replay of a refund that was still processing reports the latest state the
            // gateway has learned since (e.g. by Inquire). Final states never change.
            let record = if reply.replayed && reply.value.state == RefundState::Processing {
                s.idempotency
                    .latest_refund(&account.name, &cmd.request_id)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "idempotency store failed");
                        GatewayError::StoreUnavailable(ctx.clone())
                    })?
                    .unwrap_or(reply.value)
            } else {
                reply.value
            };
            Ok(Reply {
                value: refund_to_pb(&record),
                replayed: reply.replayed,
            })
        })
        .instrument(span)
        .await
    }

    async fn inquire(
        &self,
        request: Request<pb::InquireRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let s = &self.shared;
        let deadline = deadline_of(&request, &s.settings);
        let caller = s.auth.authenticate(&request);
        let span = telemetry::rpc_span(INQUIRE, request.metadata());
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(s, INQUIRE, deadline, ctx.clone(), false, async {
            let caller = caller?;
            let _admitted = s.admit(&caller, INQUIRE, deadline, &ctx).await?;
            let (account, mut query) = validate::inquire_refund(&req, &s.accounts)?;
            let ctx = account.context(&ctx);
            record_call(&account.name, &caller, &req.request_id);
            s.auth.authorize_account(&caller, &account.name, &ctx)?;
            let call = CallContext::new(deadline);
            let provider = &account.provider;
            let store_failed = |e: sqlx::Error| {
                tracing::error!(error = %e, "idempotency store failed");
                GatewayError::StoreUnavailable(ctx.clone())
            };
            let not_recorded = |request_id: &str| GatewayError::NotFound {
                reason: crate::error::reason::REFUND_NOT_RECORDED,
                message: format!(
                    "no refund with request_id {request_id:?} is recorded for this caller on account {:?}; give refund_id",
                    account.name
                ),
                ctx: ctx.clone(),
            };
            match (&query.refund_id, query.request_id.clone()) {
                (None, Some(request_id)) if provider.inquires_by_request_id() => {
                    // A request id names a refund of the caller that claimed it; another
                    // caller's needs its policy's read_others.
                    // (Without authentication every caller is the same anonymous one.)
                    if s.auth.enabled() {
                        let owner = s
                            .idempotency
                            .claimant(&account.name, CREATE, &request_id)
                            .await
                            .map_err(store_failed)?;
                        if !s.auth.may_read(&caller, owner.as_ref().map(|o| o.0.as_str())) {
                            return Err(not_recorded(&request_id));
                        }
                    }
                }
                (None, request_id) => {
                    // The provider knows refunds only by its own id: use the one attributed to
                    // the request id by its own Create; the caller's own, unless it may read
                    // other callers' refunds.
                    let request_id = request_id.unwrap_or_default();
                    let whose = (!s.auth.may_read(&caller, None)).then_some(caller.as_str());
                    query.refund_id = s
                        .idempotency
                        .attributed_refund(&account.name, whose, &request_id)
                        .await
                        .map_err(store_failed)?;
                    if query.refund_id.is_none() {
                        return Err(not_recorded(&request_id));
                    }
                }
                (Some(refund_id), _) if s.auth.enabled() => {
                    // A refund made through the gateway by another caller needs read_others.
                    let owner = s
                        .idempotency
                        .refund_owner(&account.name, refund_id)
                        .await
                        .map_err(store_failed)?;
                    if let Some(owner) = owner
                        && !s.auth.may_read(&caller, Some(&owner))
                    {
                        return Err(GatewayError::NotFound {
                            reason: crate::error::reason::REFUND_NOT_RECORDED,
                            message: format!(
                                "refund {refund_id:?} was made by another caller on account {:?}",
                                account.name
                            ),
                            ctx: ctx.clone(),
                        });
                    }
                }
                (Some(_), _) => {}
            }
            let record = call_resolving(&call, true, Attempt { provider: provider.name(), account: &account.name, endpoint: "inquire" }, || {
                account
                    .guard
                    .call(deadline, (provider.name(), "inquire"), || provider.inquire_refund(&query, &call))
            })
            .await
            .map_err(|e| GatewayError::provider(e, ctx.clone()))?;
            s.idempotency.refresh_refund(&account.name, &record).await;
            Ok(Reply::fresh(refund_to_pb(&record)))
        })
        .instrument(span)
        .await
    }
}
