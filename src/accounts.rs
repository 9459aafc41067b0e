//! Account name -> the provider handle that serves it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::admission::AccountGuard;
use crate::error::ErrorContext;
use crate::providers::Provider;

/// A configured provider account.
pub struct Account {
    /// The account's name, as callers give it in `account`.
    pub name: String,
    /// The provider client for this account.
    pub provider: Arc<dyn Provider>,
    /// Rate limit, in-flight cap and circuit breaker in front of the provider.
    pub guard: AccountGuard,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("provider", &self.provider.name())
            .finish()
    }
}

impl Account {
    /// The context of a request (`ctx`) once it is known to be for this account.
    pub fn context(&self, ctx: &ErrorContext) -> ErrorContext {
        ErrorContext {
            provider: Some(self.provider.name().to_owned()),
            account: Some(self.name.clone()),
            request_id: ctx.request_id.clone(),
        }
    }
}

/// All configured accounts and the default one.
#[derive(Debug, Default)]
pub struct Accounts {
    by_name: HashMap<String, Arc<Account>>,
    default: Option<String>,
}

impl Accounts {
    /// Builds the registry; `default` names the account used when a request names none.
    pub fn new(accounts: Vec<Account>, default: Option<String>) -> Self {
        let by_name = accounts
            .into_iter()
            .map(|a| (a.name.clone(), Arc::new(a)))
            .collect();
        Self { by_name, default }
    }

    /// The account called `name`, or the default account when `name` is empty.
    pub fn resolve(&self, name: &str) -> Option<Arc<Account>> {
        let name = if name.is_empty() {
            self.default.as_deref()?
        } else {
            name
        };
        self.by_name.get(name).cloned()
    }

    /// Account names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }
}
