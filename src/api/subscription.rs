//! `paygate.v1.SubscriptionService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Shared, cancel_to_pb, deadline_of, record_call, run};
use crate::domain::CancelSubscription;
use crate::error::ErrorContext;
use crate::idempotency::{self, Reply};
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;
use crate::providers::{Attempt, CallContext, Resolution, call_resolving};
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
        run(CANCEL, deadline, ctx.clone(), true, async {
            let caller = caller?;
            let _admitted = s.admit(&caller, CANCEL, deadline, &ctx).await?;
            let (account, cmd) = validate::cancel_subscription(&req, &s.accounts)?;
            let ctx = ctx.with_account(&account);
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
                    || async { Ok(Resolution::Resend) },
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
            Ok(Reply {
                value: cancel_to_pb(&cmd, &reply.value),
                replayed: reply.replayed,
            })
        })
        .instrument(span)
        .await
    }
}
