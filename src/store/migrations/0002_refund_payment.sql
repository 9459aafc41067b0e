-- The payment each recorded refund belongs to, so an unknown outcome can be reconciled
-- against the provider's refunds of that payment.
ALTER TABLE refunds ADD COLUMN payment_id TEXT;
CREATE INDEX IF NOT EXISTS refunds_payment ON refunds (account, payment_id);
