//! `paygate.v1.SubscriptionService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Rpc, Shared, cancel_to_pb, subscription_to_pb};
use crate::error::ErrorContext;
use crate::idempotency::Reply;
use crate::ops::{self, CANCEL_SUBSCRIPTION, GET_SUBSCRIPTION};
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;
use crate::validate;

/// The subscription service.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionApi {
    shared: Arc<Shared>,
}

impl SubscriptionApi {
    /// Serves cancellations.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn cancel(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, CANCEL_SUBSCRIPTION, request);
        let ctx = ErrorContext::for_request(&req.request_id);
        rpc.respond(ctx.clone(), true, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            let (account, cmd) = validate::cancel_subscription(&req, &rpc.shared.accounts)?;
            let call = rpc.enter(&caller, &account, Some(&req.request_id), &ctx)?;
            let s = rpc.shared;
            let reply = ops::subscription::cancel(&s.idempotency, &s.events, &call, &cmd).await?;
            Ok(Reply {
                value: cancel_to_pb(&account.name, &cmd, &reply.value),
                replayed: reply.replayed,
            })
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, GET_SUBSCRIPTION, request);
        let ctx = ErrorContext::default();
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            let account = validate::get_subscription(&req, &rpc.shared.accounts)?;
            let call = rpc.enter(&caller, &account, None, &ctx)?;
            let (id, request_id) = (&req.subscription_id, &req.subscription_request_id);
            let (record, updated) =
                ops::subscription::get(&rpc.shared.events, &call, id, request_id).await?;
            Ok(Reply::fresh(subscription_to_pb(
                &account.name,
                &record,
                updated,
            )))
        })
        .await
    }
}
