//! `paygate.v1.RefundService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Rpc, Shared, refund_to_pb};
use crate::error::ErrorContext;
use crate::idempotency::Reply;
use crate::ops::{self, CREATE_REFUND, INQUIRE_REFUND};
use crate::pb;
use crate::pb::refund_service_server::RefundService;
use crate::validate;

/// The refund service.
#[derive(Debug, Clone)]
pub(crate) struct RefundApi {
    shared: Arc<Shared>,
}

impl RefundApi {
    /// Serves refunds.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl RefundService for RefundApi {
    async fn create(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, CREATE_REFUND, request);
        let ctx = ErrorContext::for_request(&req.request_id);
        rpc.respond(ctx.clone(), true, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            let (account, cmd) = validate::create_refund(&req, &rpc.shared.accounts)?;
            let call = rpc.enter(&caller, &account, Some(&req.request_id), &ctx)?;
            let reply = ops::refund::create(&rpc.shared.idempotency, &call, &cmd).await?;
            Ok(Reply {
                value: refund_to_pb(&account.name, &reply.value),
                replayed: reply.replayed,
            })
        })
        .await
    }

    async fn inquire(
        &self,
        request: Request<pb::InquireRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let (rpc, req) = Rpc::begin(&self.shared, INQUIRE_REFUND, request);
        let ctx = ErrorContext::for_request(&req.request_id);
        rpc.respond(ctx.clone(), false, async {
            let (caller, _admitted) = rpc.admit(&ctx).await?;
            let (account, query) = validate::inquire_refund(&req, &rpc.shared.accounts)?;
            let call = rpc.enter(&caller, &account, Some(&req.request_id), &ctx)?;
            let s = rpc.shared;
            let record = ops::refund::inquire(&s.idempotency, &s.auth, &call, query).await?;
            Ok(Reply::fresh(refund_to_pb(&account.name, &record)))
        })
        .await
    }
}
