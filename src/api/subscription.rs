//! `paygate.v1.SubscriptionService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ApiSettings, cancel_to_pb, deadline_of, run};
use crate::accounts::Accounts;
use crate::error::{ErrorContext, GatewayError};
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;
use crate::providers::{CallContext, call_resolving};
use crate::validate;

/// The subscription service.
#[derive(Debug, Clone)]
pub struct SubscriptionApi {
    accounts: Arc<Accounts>,
    settings: ApiSettings,
}

impl SubscriptionApi {
    /// Serves cancellations for these accounts.
    pub fn new(accounts: Arc<Accounts>, settings: ApiSettings) -> Self {
        Self { accounts, settings }
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn cancel(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let deadline = deadline_of(&request, &self.settings);
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(
            "SubscriptionService.Cancel",
            deadline,
            ctx.clone(),
            true,
            async {
                let (account, cmd) = validate::cancel_subscription(&req, &self.accounts)?;
                let call = CallContext::new(deadline);
                let provider = &account.provider;
                // A repeated cancel asks for the state the first one already reached, so the
                // identical request is resent to settle an unknown outcome.
                let outcome =
                    call_resolving(&call, true, || provider.cancel_subscription(&cmd, &call))
                        .await
                        .map_err(|e| GatewayError::provider(e, ctx.with_account(&account)))?;
                Ok(cancel_to_pb(&cmd, &outcome))
            },
        )
        .await
    }
}
