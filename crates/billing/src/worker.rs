//! The billing worker: closes periods on time by the engine's (injected)
//! clock. Each tick applies the scheduled plan changes that are due
//! (`Billing::apply_due_changes`), then writes the invoices of plan changes
//! that a crash cut off (`Billing::recover_settlements`), then runs the
//! invoice run
//! ([`Billing::run_invoices`]) for every ended period without an invoice,
//! then writes the events that are due by time ([`Billing::notify_due`]).
//! A tick is idempotent, so ticking often is harmless; tests call
//! [`Billing::run_once`] after moving a `TestClock` instead of waiting.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Billing;
use crate::changes::DueReport;
use crate::run::{Result, RunOptions, RunReport};

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickReport {
    /// Scheduled changes applied (history entries written).
    pub changes_applied: usize,
    /// Scheduled changes that failed (retried on the next tick).
    pub changes_failed: usize,
    /// Invoices of plan changes a crash had cut off, written now
    /// ([`Billing::recover_settlements`]).
    #[serde(default)]
    pub settlements_recovered: usize,
    pub invoices: RunReport,
    /// New time-driven events written (`invoice.overdue`, `trial.ending`,
    /// `invoice.upcoming_above`, `usage.daily_summary`: [`Billing::notify_due`]).
    pub notices: usize,
}

impl Billing {
    /// One tick of the worker, on the engine's clock.
    pub async fn run_once(&self) -> Result<TickReport> {
        let now = self.engine.now();
        let mut report = TickReport::default();
        match self.apply_due_changes(now).await {
            Ok(DueReport {
                applied, failed, ..
            }) => {
                report.changes_applied = applied.len();
                report.changes_failed = failed.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled plan changes failed; retried next tick")
            }
        }
        // Invoices of plan changes cut off by a crash, before the run (a
        // final invoice is its period's cycle invoice).
        match self.recover_settlements().await {
            Ok(written) => report.settlements_recovered = written.len(),
            Err(e) => tracing::warn!(error = %e,
                "recovering missing plan-change invoices failed; retried next tick"),
        }
        report.invoices = self.run_invoices(&RunOptions::default(), &|_| {}).await?;
        match self.notify_due(now).await {
            Ok(n) => report.notices = n,
            Err(e) => tracing::warn!(error = %e, "billing notices failed; retried next tick"),
        }
        Ok(report)
    }
}

/// Starts the worker: a tick now, then every `every` of real time (the
/// clock that decides what is due is the engine's). Abort the handle to stop
/// it; a tick cut off in the middle is finished by the next run (runs are
/// idempotent and crash-safe).
pub fn start_worker(billing: Arc<Billing>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match billing.run_once().await {
                Ok(r) => {
                    let i = &r.invoices;
                    if i.created + i.resumed + i.issued + i.failed.len() + r.changes_applied > 0 {
                        tracing::info!(
                            changes = r.changes_applied,
                            created = i.created,
                            resumed = i.resumed,
                            issued = i.issued,
                            failed = i.failed.len(),
                            "billing worker tick"
                        );
                    }
                    for f in &i.failed {
                        tracing::warn!(customer = %f.customer_id, period_start = %f.period_start,
                            error = %f.error, "a billing period could not be closed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "billing run failed; retried next tick"),
            }
        }
    })
}
