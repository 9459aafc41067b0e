//! `paygate.v1.RefundService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ApiSettings, deadline_of, refund_to_pb, run};
use crate::accounts::Accounts;
use crate::error::{ErrorContext, GatewayError};
use crate::pb;
use crate::pb::refund_service_server::RefundService;
use crate::providers::{CallContext, call_resolving};
use crate::validate;

/// The refund service.
#[derive(Debug, Clone)]
pub struct RefundApi {
    accounts: Arc<Accounts>,
    settings: ApiSettings,
}

impl RefundApi {
    /// Serves refunds for these accounts.
    pub fn new(accounts: Arc<Accounts>, settings: ApiSettings) -> Self {
        Self { accounts, settings }
    }
}

#[tonic::async_trait]
impl RefundService for RefundApi {
    async fn create(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let deadline = deadline_of(&request, &self.settings);
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run("RefundService.Create", deadline, ctx.clone(), true, async {
            let (account, cmd) = validate::create_refund(&req, &self.accounts)?;
            let call = CallContext::new(deadline);
            let provider = &account.provider;
            let record = call_resolving(&call, provider.deduplicates_requests(), || {
                provider.create_refund(&cmd, &call)
            })
            .await
            .map_err(|e| GatewayError::provider(e, ctx.with_account(&account)))?;
            Ok(refund_to_pb(&record))
        })
        .await
    }

    async fn inquire(
        &self,
        request: Request<pb::InquireRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let deadline = deadline_of(&request, &self.settings);
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(
            "RefundService.Inquire",
            deadline,
            ctx.clone(),
            false,
            async {
                let (account, query) = validate::inquire_refund(&req, &self.accounts)?;
                let call = CallContext::new(deadline);
                let provider = &account.provider;
                let record = call_resolving(&call, true, || provider.inquire_refund(&query, &call))
                    .await
                    .map_err(|e| GatewayError::provider(e, ctx.with_account(&account)))?;
                Ok(refund_to_pb(&record))
            },
        )
        .await
    }
}
