//! Invoice documents: the HTML escapes what it prints and the PDF carries the
//! invoice number and totals. `TOLLGATE_RENDER_DIR=DIR` also writes the files
//! (scripts/render-invoice-images.sh turns them into PNGs).

mod sample;

use tollgate_billing::render::{self, RenderOptions};
use tollgate_core::billing::InvoiceStatus;
use tollgate_core::money::Currency;

fn pdf_text(bytes: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
    let doc = lopdf::Document::load_mem(bytes)?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    Ok(doc.extract_text(&pages)?)
}

fn write_out(name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if let Ok(dir) = std::env::var("TOLLGATE_RENDER_DIR") {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(std::path::Path::new(&dir).join(name), bytes)?;
    }
    Ok(())
}

#[test]
fn html_prints_the_invoice_escaped() -> Result<(), Box<dyn std::error::Error>> {
    let invoice = sample::invoice()?;
    let html = render::to_html(&invoice, &RenderOptions::default());
    write_out("invoice.html", html.as_bytes())?;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("INV-000042"));
    // The customer's name has markup characters: escaped, never raw.
    assert!(html.contains("Smith &amp; Sons &lt;Ltd&gt;"));
    assert!(!html.contains("<Ltd>"));
    // Lines, tier rows, discount, tax and totals (20 % VAT, per line).
    assert!(html.contains("Pro plan"));
    assert!(html.contains("Tier 2 (1,000 – 10,000): 9,000 × 0.002 = 18.00"));
    assert!(html.contains("1,000 included, 11,500 billable"));
    assert!(html.contains("VAT (20 %)"));
    assert!(html.contains("USD 1,309.77"));
    assert!(html.contains("Amount due"));
    // Open: no watermark.
    assert!(!html.contains("class=\"watermark\""));
    Ok(())
}

#[test]
fn paid_and_void_invoices_carry_a_watermark() -> Result<(), Box<dyn std::error::Error>> {
    let mut invoice = sample::invoice()?;
    invoice.status = InvoiceStatus::Paid;
    invoice.totals.amount_paid = invoice.totals.total;
    invoice.totals.amount_due = rust_decimal::Decimal::ZERO;
    invoice.paid_at = invoice.due_at;
    let html = render::to_html(&invoice, &RenderOptions::default());
    assert!(html.contains("<div class=\"watermark\" aria-hidden=\"true\">PAID</div>"));
    let pdf = render::to_pdf(&invoice, &RenderOptions::default())?;
    write_out("invoice-paid.pdf", &pdf)?;
    assert!(pdf_text(&pdf)?.contains("PAID"));

    invoice.status = InvoiceStatus::Void;
    let html = render::to_html(&invoice, &RenderOptions::default());
    assert!(html.contains(">VOID</div>"));
    Ok(())
}

#[test]
fn pdf_has_the_number_lines_and_totals() -> Result<(), Box<dyn std::error::Error>> {
    let invoice = sample::invoice()?;
    let pdf = render::to_pdf(&invoice, &RenderOptions::default())?;
    write_out("invoice.pdf", &pdf)?;
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf)?;
    for needle in [
        "INV-000042",
        "Smith & Sons <Ltd>",
        "Pro plan",
        "1,108.78",
        "-17.31",
        "VAT (20 %)",
        "218.30",
        "USD 1,309.77",
        "Amount due",
        "Page 1 of 1",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the PDF text:\n{text}"
        );
    }
    Ok(())
}

#[test]
fn long_invoices_continue_on_new_pages() -> Result<(), Box<dyn std::error::Error>> {
    let mut invoice = sample::invoice()?;
    let line = invoice.lines[0].clone();
    for i in 0..80 {
        let mut l = line.clone();
        l.description = format!("Adjustment {i}");
        invoice.lines.push(l);
    }
    let pdf = render::to_pdf(&invoice, &RenderOptions::default())?;
    write_out("invoice-long.pdf", &pdf)?;
    let doc = lopdf::Document::load_mem(&pdf)?;
    let pages = doc.get_pages().len();
    assert!(pages >= 3, "80 more lines fit on {pages} page(s)");
    let text = pdf_text(&pdf)?;
    assert!(text.contains("Adjustment 79"));
    assert!(text.contains(&format!("Page {pages} of {pages}")));
    Ok(())
}

#[test]
fn zero_decimal_currencies_print_without_decimals() -> Result<(), Box<dyn std::error::Error>> {
    let invoice = sample::jpy_invoice()?;
    assert_eq!(invoice.currency, Currency::JPY);
    let html = render::to_html(&invoice, &RenderOptions::default());
    assert!(html.contains("JPY 12,100"));
    let pdf = render::to_pdf(&invoice, &RenderOptions::default())?;
    assert!(pdf_text(&pdf)?.contains("JPY 12,100"));
    Ok(())
}

#[test]
fn credit_notes_render_too() -> Result<(), Box<dyn std::error::Error>> {
    let invoice = sample::invoice()?;
    let note = sample::credit_note(&invoice)?;
    let html = render::credit_note_to_html(&note, &invoice, &RenderOptions::default());
    write_out("credit-note.html", html.as_bytes())?;
    assert!(html.contains("CREDIT NOTE"));
    assert!(html.contains("CN-000007"));
    assert!(html.contains("INV-000042"));
    let pdf = render::credit_note_to_pdf(&note, &invoice, &RenderOptions::default())?;
    write_out("credit-note.pdf", &pdf)?;
    let text = pdf_text(&pdf)?;
    assert!(text.contains("CN-000007"));
    assert!(text.contains("USD 120.00"));
    Ok(())
}
