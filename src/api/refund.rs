//! `paygate.v1.RefundService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ApiSettings, caller_of, deadline_of, refund_to_pb, run};
use crate::accounts::Accounts;
use crate::domain::CreateRefund;
use crate::error::{ErrorContext, GatewayError};
use crate::idempotency::{self, Idempotency, Key, Reply};
use crate::pb;
use crate::pb::refund_service_server::RefundService;
use crate::providers::{CallContext, call_resolving};
use crate::validate;

/// The refund service.
#[derive(Debug, Clone)]
pub struct RefundApi {
    accounts: Arc<Accounts>,
    idempotency: Idempotency,
    settings: ApiSettings,
}

impl RefundApi {
    /// Serves refunds for these accounts.
    pub fn new(accounts: Arc<Accounts>, idempotency: Idempotency, settings: ApiSettings) -> Self {
        Self {
            accounts,
            idempotency,
            settings,
        }
    }
}

const CREATE: &str = "RefundService.Create";

#[tonic::async_trait]
impl RefundService for RefundApi {
    async fn create(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let deadline = deadline_of(&request, &self.settings);
        let caller = caller_of(&request);
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(CREATE, deadline, ctx.clone(), true, async {
            let (account, cmd) = validate::create_refund(&req, &self.accounts)?;
            let ctx = ctx.with_account(&account);
            let key = Key {
                caller,
                method: CREATE,
                request_id: cmd.request_id.clone(),
            };
            let fingerprint = idempotency::fingerprint(
                &account.name,
                &CreateRefund {
                    request_id: String::new(),
                    ..cmd.clone()
                },
            );
            let provider = &account.provider;
            let dedup = provider.deduplicates_requests();
            let call = CallContext::new(deadline);
            let reply = self
                .idempotency
                .run(&key, &fingerprint, deadline, &ctx, dedup, || {
                    call_resolving(&call, dedup, || provider.create_refund(&cmd, &call))
                })
                .await?;
            let record = if reply.replayed {
                // A replay reports the latest state the gateway learned (e.g. by Inquire).
                match self
                    .idempotency
                    .latest_refund(&account.name, &cmd.request_id)
                    .await
                {
                    Some(latest) => latest,
                    None => reply.value,
                }
            } else {
                self.idempotency
                    .record_refund(&account.name, &reply.value)
                    .await;
                reply.value
            };
            Ok(Reply {
                value: refund_to_pb(&record),
                replayed: reply.replayed,
            })
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
                self.idempotency.record_refund(&account.name, &record).await;
                Ok(Reply::fresh(refund_to_pb(&record)))
            },
        )
        .await
    }
}
