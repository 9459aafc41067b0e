//! `paygate.v1.SubscriptionService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{ApiSettings, caller_of, cancel_to_pb, deadline_of, run};
use crate::accounts::Accounts;
use crate::domain::CancelSubscription;
use crate::error::ErrorContext;
use crate::idempotency::{self, Idempotency, Key, Reply};
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;
use crate::providers::{CallContext, call_resolving};
use crate::validate;

/// The subscription service.
#[derive(Debug, Clone)]
pub struct SubscriptionApi {
    accounts: Arc<Accounts>,
    idempotency: Idempotency,
    settings: ApiSettings,
}

impl SubscriptionApi {
    /// Serves cancellations for these accounts.
    pub fn new(accounts: Arc<Accounts>, idempotency: Idempotency, settings: ApiSettings) -> Self {
        Self {
            accounts,
            idempotency,
            settings,
        }
    }
}

const CANCEL: &str = "SubscriptionService.Cancel";

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn cancel(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let deadline = deadline_of(&request, &self.settings);
        let caller = caller_of(&request);
        let req = request.into_inner();
        let ctx = ErrorContext::for_request(&req.request_id);
        run(CANCEL, deadline, ctx.clone(), true, async {
            let (account, cmd) = validate::cancel_subscription(&req, &self.accounts)?;
            let ctx = ctx.with_account(&account);
            let key = Key {
                caller,
                method: CANCEL,
                request_id: cmd.request_id.clone(),
            };
            let fingerprint = idempotency::fingerprint(
                &account.name,
                &CancelSubscription {
                    request_id: String::new(),
                    ..cmd.clone()
                },
            );
            let provider = &account.provider;
            let call = CallContext::new(deadline);
            // A repeated cancel asks for the state the first one already reached, so the
            // identical request is resent to settle an unknown outcome.
            let reply = self
                .idempotency
                .run(&key, &fingerprint, deadline, &ctx, true, || {
                    call_resolving(&call, true, || provider.cancel_subscription(&cmd, &call))
                })
                .await?;
            Ok(Reply {
                value: cancel_to_pb(&cmd, &reply.value),
                replayed: reply.replayed,
            })
        })
        .await
    }
}
