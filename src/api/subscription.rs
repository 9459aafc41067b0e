//! `paygate.v1.SubscriptionService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Shared, cancel_to_pb, deadline_of, record_call, run, subscription_to_pb};
use crate::domain::{CancelSubscription, SubscriptionRecord};
use crate::error::{ErrorContext, GatewayError, reason};
use crate::idempotency::{self, Reply};
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;
use crate::providers::{Attempt, CallContext, Resolution};
use crate::retry::call_resolving;
use crate::telemetry;
use crate::validate;

/// The subscription service.
#[derive(Debug, Clone)]
pub struct SubscriptionApi {
    shared: Arc<Shared>,
}

impl SubscriptionApi {
    /// Serves cancellations.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

const CANCEL: &str = "SubscriptionService.Cancel";
const GET: &str = "SubscriptionService.Get";

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn cancel(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let s = &self.shared;
        let deadline = deadline_of(&request, &s.settings);
        let caller = s.auth.authenticate(&request);
        let span = telemetry::rpc_span(CANCEL, request.metadata());
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(s, CANCEL, deadline, ctx.clone(), true, async {
            let caller = caller?;
            let _admitted = s.admit(&caller, CANCEL, deadline, &ctx).await?;
            let (account, cmd) = validate::cancel_subscription(&req, &s.accounts)?;
            let ctx = account.context(&ctx);
            record_call(&account.name, &caller, &req.request_id);
            s.auth.authorize_account(&caller, &account.name, &ctx)?;
            let blanked = CancelSubscription {
                request_id: String::new(),
                ..cmd.clone()
            };
            let (key, fingerprint) =
                idempotency::keyed(caller, CANCEL, &cmd.request_id, &account.name, &blanked);
            let provider = &account.provider;
            let call = CallContext::new(deadline);
            // A repeated cancel asks for the state the first one already reached, so the
            // identical request is resent to settle an unknown outcome.
            let reply = s
                .idempotency
                .run(
                    &key,
                    &fingerprint,
                    &account.name,
                    deadline,
                    &ctx,
                    None,
                    |_| async { Ok(Resolution::Resend) },
                    || {
                        call_resolving(
                            &call,
                            true,
                            Attempt {
                                provider: provider.name(),
                                account: &account.name,
                                endpoint: "cancel",
                            },
                            || {
                                account
                                    .guard
                                    .call(deadline, (provider.name(), "cancel"), || {
                                        provider.cancel_subscription(&cmd, &call)
                                    })
                            },
                        )
                    },
                )
                .await?;
            if !reply.replayed
                && let Some(subscription_id) = &cmd.subscription_id
            {
                let known = SubscriptionRecord {
                    subscription_id: subscription_id.clone(),
                    subscription_request_id: cmd.subscription_request_id.clone(),
                    cancellation: Some(reply.value.status),
                    cancellation_type: Some(cmd.cancellation_type),
                    state: reply.value.subscription_state.clone(),
                    last_notification_type: None,
                    end_time: reply.value.cancel_time,
                };
                s.events.record_cancel(&account.name, &known).await;
            }
            Ok(Reply {
                value: cancel_to_pb(&cmd, &reply.value),
                replayed: reply.replayed,
            })
        })
        .instrument(span)
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let s = &self.shared;
        let deadline = deadline_of(&request, &s.settings);
        let caller = s.auth.authenticate(&request);
        let span = telemetry::rpc_span(GET, request.metadata());
        let req = request.into_inner();
        let ctx = ErrorContext::default();
        run(s, GET, deadline, ctx.clone(), false, async {
            let caller = caller?;
            let _admitted = s.admit(&caller, GET, deadline, &ctx).await?;
            let account = validate::get_subscription(&req, &s.accounts)?;
            let ctx = account.context(&ctx);
            s.auth.authorize_account(&caller, &account.name, &ctx)?;
            let found = s
                .events
                .subscription(
                    &account.name,
                    &req.subscription_id,
                    &req.subscription_request_id,
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot read a subscription's state");
                    GatewayError::StoreUnavailable(ctx.clone())
                })?;
            let Some((record, updated)) = found else {
                return Err(GatewayError::NotFound {
                    reason: reason::SUBSCRIPTION_NOT_RECORDED,
                    message: format!(
                        "the gateway has recorded nothing about this subscription on account {:?}: no Cancel through the gateway and no notification",
                        account.name
                    ),
                    ctx,
                });
            };
            Ok(Reply::fresh(subscription_to_pb(
                &account.name,
                &record,
                updated,
            )))
        })
        .instrument(span)
        .await
    }
}
