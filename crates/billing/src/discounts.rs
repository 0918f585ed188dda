//! Discounts attached to customers: attach (validated against the customer's
//! currency), list, remove. The invoice run applies each one to the period
//! closes it covers (`CustomerDiscount::applies_to`, in the core). Rules with
//! worked numbers: `docs/billing.md`, "Discounts".

use jiff::Timestamp;
use tollgate_core::billing::discount::{CustomerDiscount, DiscountDuration, DiscountValue};

use crate::Billing;
use crate::changes::mint;
use crate::run::{InvoiceError, Result, currency_of};

/// A discount as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscountRequest {
    pub value: DiscountValue,
    pub duration: DiscountDuration,
    pub ends_at: Option<Timestamp>,
    /// Default: "10 % off", "5.00 USD off".
    pub description: Option<String>,
}

impl Billing {
    /// The discount a request would attach now to `customer` (`dsc_…`), and
    /// every invalid field (`(field, message)`, empty when it is valid).
    pub fn discount_of(
        &self,
        customer: &str,
        req: DiscountRequest,
    ) -> Result<(CustomerDiscount, Vec<(&'static str, String)>)> {
        let record = self
            .engine
            .customer(customer)
            .ok_or_else(|| InvoiceError::NotFound {
                what: "customer",
                id: customer.to_string(),
            })?;
        let description = req
            .description
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| CustomerDiscount::default_description(&req.value));
        let discount = CustomerDiscount {
            id: mint("dsc"),
            customer_id: customer.to_string(),
            value: req.value,
            duration: req.duration,
            ends_at: req.ends_at,
            description,
            created_at: self.engine.now(),
        };
        let errors = discount.validate(currency_of(&record)?);
        Ok((discount, errors))
    }

    /// Attaches a discount to a customer from now (see [`Billing::discount_of`];
    /// the first invalid field is refused).
    pub async fn add_discount(
        &self,
        customer: &str,
        req: DiscountRequest,
    ) -> Result<CustomerDiscount> {
        let (discount, errors) = self.discount_of(customer, req)?;
        if let Some((field, message)) = errors.into_iter().next() {
            return Err(InvoiceError::Invalid { field, message });
        }
        self.store.billing().insert_discount(&discount).await?;
        Ok(discount)
    }

    /// A customer's discounts, oldest first.
    pub async fn customer_discounts(&self, customer: &str) -> Result<Vec<CustomerDiscount>> {
        if self.engine.customer(customer).is_none() {
            return Err(InvoiceError::NotFound {
                what: "customer",
                id: customer.to_string(),
            });
        }
        Ok(self.store.billing().discounts(customer).await?)
    }

    /// Removes a customer's discount: later closes no longer apply it
    /// (invoices already closed keep their discount lines).
    pub async fn remove_discount(&self, customer: &str, id: &str) -> Result<()> {
        if !self.store.billing().delete_discount(customer, id).await? {
            return Err(InvoiceError::NotFound {
                what: "discount",
                id: id.to_string(),
            });
        }
        Ok(())
    }
}
