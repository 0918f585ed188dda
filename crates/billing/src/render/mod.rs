//! Invoice documents: an [`Invoice`] (or a [`CreditNote`]) as a printable HTML
//! page ([`to_html`]) and as a PDF ([`to_pdf`]).
//!
//! Both renderers draw the same [`view::DocView`], built once from the document:
//! what is printed (labels, formatted amounts, tier rows, totals, watermark) is
//! decided in one place, so the HTML and the PDF always say the same thing.
//!
//! Amounts are printed as stored: invoice amounts are already rounded once per
//! line by `tollgate_core::money::round_line`; renderers never round. They are
//! shown with the currency's minor unit (`1,234.50` USD, `1,235` JPY, `1.250`
//! KWD); unit prices and tier rows keep their full precision (`0.0004`).

mod html;
mod pdf;
pub mod view;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tollgate_core::billing::Invoice;
use tollgate_core::billing::credit::CreditNote;

/// How a document is rendered.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Dates are printed in this time zone (UTC by default).
    pub time_zone: TimeZone,
    /// "Now", to mark an open invoice past its due date as overdue. `None`:
    /// never marked.
    pub now: Option<Timestamp>,
}

impl Default for RenderOptions {
    fn default() -> RenderOptions {
        RenderOptions {
            time_zone: TimeZone::UTC,
            now: None,
        }
    }
}

/// Rendering failed (only the PDF writer can fail).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the PDF could not be written: {0}")]
    Pdf(String),
}

/// The invoice as a complete, printable HTML page (UTF-8, no external
/// resources). Every text from the invoice is HTML-escaped.
pub fn to_html(invoice: &Invoice, options: &RenderOptions) -> String {
    html::render(&view::DocView::invoice(invoice, options))
}

/// The invoice as a one- or multi-page A4 PDF, in Helvetica (a PDF base-14
/// font: nothing is embedded).
pub fn to_pdf(invoice: &Invoice, options: &RenderOptions) -> Result<Vec<u8>, RenderError> {
    pdf::render(&view::DocView::invoice(invoice, options))
}

/// A credit note as HTML; `invoice` is the invoice it credits (issuer,
/// customer and number are printed from it).
pub fn credit_note_to_html(
    note: &CreditNote,
    invoice: &Invoice,
    options: &RenderOptions,
) -> String {
    html::render(&view::DocView::credit_note(note, invoice, options))
}

/// A credit note as PDF.
pub fn credit_note_to_pdf(
    note: &CreditNote,
    invoice: &Invoice,
    options: &RenderOptions,
) -> Result<Vec<u8>, RenderError> {
    pdf::render(&view::DocView::credit_note(note, invoice, options))
}
