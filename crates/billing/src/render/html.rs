//! The HTML page (maud: every interpolated value is escaped).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::view::{DocView, PartyView};

const STYLE: &str = r#"
@page { size: A4; margin: 16mm; }
* { box-sizing: border-box; }
body { font-family: Helvetica, Arial, sans-serif; color: #1f2328; font-size: 10.5pt;
       margin: 0; background: #fff; }
.page { max-width: 190mm; margin: 0 auto; padding: 12mm 0; position: relative; }
header { display: flex; justify-content: space-between; align-items: flex-start;
         border-bottom: 2px solid #1f2328; padding-bottom: 6mm; }
.issuer .name { font-size: 15pt; font-weight: bold; }
.muted { color: #59636e; }
.party div, .issuer div { line-height: 1.45; }
h1 { font-size: 22pt; margin: 0; text-align: right; letter-spacing: 0.5px; }
.number { text-align: right; font-size: 11pt; margin-top: 1mm; }
.parties { display: flex; justify-content: space-between; margin: 7mm 0; gap: 10mm; }
.label { font-size: 8pt; text-transform: uppercase; letter-spacing: 0.6px; color: #59636e;
         margin-bottom: 1.5mm; }
.party .name { font-weight: bold; }
table.meta td { padding: 0.6mm 0; }
table.meta td:first-child { color: #59636e; padding-right: 6mm; }
table.meta td:last-child { text-align: right; }
table.lines { width: 100%; border-collapse: collapse; margin-top: 2mm; }
table.lines th { background: #f0f2f4; font-size: 8.5pt; text-transform: uppercase;
                 letter-spacing: 0.4px; text-align: left; padding: 2mm; color: #3d444d; }
table.lines td { padding: 2.2mm 2mm; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
table.lines .num { text-align: right; white-space: nowrap; }
.detail { font-size: 8.5pt; color: #59636e; margin-top: 0.8mm; }
table.totals { margin-left: auto; margin-top: 5mm; border-collapse: collapse; min-width: 80mm; }
table.totals td { padding: 1.2mm 2mm; }
table.totals td.num { text-align: right; white-space: nowrap; }
table.totals tr.strong td { font-weight: bold; border-top: 1px solid #1f2328; }
.notes { margin-top: 9mm; color: #3d444d; }
.notes p { margin: 1mm 0; }
.watermark { position: fixed; top: 42%; left: 0; right: 0; text-align: center;
             font-size: 96pt; font-weight: bold; color: rgba(200, 30, 30, 0.13);
             transform: rotate(-30deg); pointer-events: none; z-index: 10; }
footer { margin-top: 10mm; font-size: 8pt; color: #59636e; text-align: center; }
"#;

pub(super) fn render(doc: &DocView) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (doc.title) " " (doc.number) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                @if let Some(mark) = &doc.watermark {
                    div.watermark aria-hidden="true" { (mark) }
                }
                div.page {
                    header {
                        div.issuer {
                            div.name { (doc.issuer.name) }
                            @for line in &doc.issuer.lines { div.muted { (line) } }
                        }
                        div {
                            h1 { (doc.title.to_uppercase()) }
                            div.number { (doc.number) }
                        }
                    }
                    div.parties {
                        (party("Bill to", &doc.bill_to))
                        table.meta {
                            @for (label, value) in &doc.meta {
                                tr { td { (label) } td { (value) } }
                            }
                        }
                    }
                    (lines(doc))
                    table.totals {
                        @for t in &doc.totals {
                            tr class=[t.strong.then_some("strong")] {
                                td { (t.label) }
                                td.num { (t.value) }
                            }
                        }
                    }
                    @if !doc.notes.is_empty() {
                        div.notes {
                            @for note in &doc.notes { p { (note) } }
                        }
                    }
                    footer { (doc.issuer.name) " · " (doc.title) " " (doc.number)
                             " · amounts in " (doc.currency) }
                }
            }
        }
    };
    page.into_string()
}

fn party(label: &str, p: &PartyView) -> Markup {
    html! {
        div.party {
            div.label { (label) }
            div.name { (p.name) }
            @for line in &p.lines { div { (line) } }
        }
    }
}

fn lines(doc: &DocView) -> Markup {
    html! {
        table.lines {
            thead {
                tr {
                    th { "Description" }
                    th.num { "Qty" }
                    th.num { "Unit price" }
                    @if doc.tax_column { th.num { "Tax" } }
                    th.num { "Amount (" (doc.currency) ")" }
                }
            }
            tbody {
                @for row in &doc.rows {
                    tr {
                        td {
                            div { (row.description) }
                            @for d in &row.details { div.detail { (d) } }
                        }
                        td.num { (row.quantity) }
                        td.num { (row.unit_price) }
                        @if doc.tax_column { td.num { (row.tax) } }
                        td.num { (row.amount) }
                    }
                }
            }
        }
    }
}
