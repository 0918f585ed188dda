//! The PDF: A4 pages drawn with printpdf in Helvetica (a base-14 font, so no font
//! file is embedded). Text widths come from the font's metrics, so amounts are
//! right-aligned and long descriptions wrap; the lines table continues on new
//! pages (header repeated) when it does not fit.

use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Op, PaintMode, ParsedFont, PdfDocument, PdfFontHandle,
    PdfPage, PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem, TextMatrix,
};

use super::RenderError;
use super::view::{DocView, PartyView};

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const LEFT: f32 = 48.0;
const RIGHT: f32 = PAGE_W - 48.0;
const TOP: f32 = PAGE_H - 48.0;
const BOTTOM: f32 = 60.0;

const INK: (f32, f32, f32) = (0.12, 0.14, 0.16);
const MUTED: (f32, f32, f32) = (0.35, 0.39, 0.43);
const RULE: (f32, f32, f32) = (0.85, 0.87, 0.89);
const BAND: (f32, f32, f32) = (0.94, 0.95, 0.96);
const MARK: (f32, f32, f32) = (0.97, 0.82, 0.82);

/// Widths of the two faces used, from the fonts' own metrics.
struct Metrics {
    regular: Option<ParsedFont>,
    bold: Option<ParsedFont>,
}

impl Metrics {
    fn load() -> Metrics {
        Metrics {
            regular: BuiltinFont::Helvetica.get_parsed_font(),
            bold: BuiltinFont::HelveticaBold.get_parsed_font(),
        }
    }

    /// Width of `text` at `size` points.
    fn width(&self, text: &str, size: f32, bold: bool) -> f32 {
        let font = if bold { &self.bold } else { &self.regular };
        let Some(font) = font else {
            // Metrics unavailable: Helvetica's average advance.
            return text.chars().count() as f32 * size * 0.55;
        };
        let upem = f32::from(font.units_per_em.max(1));
        let units: u32 = text
            .chars()
            .map(|c| {
                font.lookup_glyph_index(u32::from(c))
                    .and_then(|g| font.get_glyph_width(g))
                    .map_or(556, u32::from)
            })
            .sum();
        units as f32 / upem * size
    }

    /// Splits `text` into lines no wider than `max` (long words are kept whole).
    fn wrap(&self, text: &str, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut current = String::new();
        for word in text.split_whitespace() {
            let candidate = if current.is_empty() {
                word.to_string()
            } else {
                format!("{current} {word}")
            };
            if !current.is_empty() && self.width(&candidate, size, false) > max {
                lines.push(std::mem::take(&mut current));
                current = word.to_string();
            } else {
                current = candidate;
            }
        }
        if !current.is_empty() || lines.is_empty() {
            lines.push(current);
        }
        lines
    }
}

/// Pages being drawn, top to bottom.
struct Canvas {
    metrics: Metrics,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
}

fn rgb((r, g, b): (f32, f32, f32)) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

fn point(x: f32, y: f32) -> Point {
    Point { x: Pt(x), y: Pt(y) }
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            metrics: Metrics::load(),
            pages: Vec::new(),
            ops: Vec::new(),
            y: TOP,
        }
    }

    fn text(&mut self, x: f32, y: f32, text: &str, size: f32, bold: bool, color: (f32, f32, f32)) {
        let font = if bold {
            BuiltinFont::HelveticaBold
        } else {
            BuiltinFont::Helvetica
        };
        self.ops.extend([
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::SetFillColor { col: rgb(color) },
            Op::SetTextCursor { pos: point(x, y) },
            Op::ShowText {
                items: vec![TextItem::Text(text.to_string())],
            },
            Op::EndTextSection,
        ]);
    }

    /// Text whose right edge is at `right`.
    fn text_right(
        &mut self,
        right: f32,
        y: f32,
        text: &str,
        size: f32,
        bold: bool,
        color: (f32, f32, f32),
    ) {
        let w = self.metrics.width(text, size, bold);
        self.text(right - w, y, text, size, bold, color);
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32, thickness: f32, color: (f32, f32, f32)) {
        self.ops.extend([
            Op::SetOutlineColor { col: rgb(color) },
            Op::SetOutlineThickness { pt: Pt(thickness) },
            Op::DrawLine {
                line: Line {
                    points: vec![
                        LinePoint {
                            p: point(x1, y),
                            bezier: false,
                        },
                        LinePoint {
                            p: point(x2, y),
                            bezier: false,
                        },
                    ],
                    is_closed: false,
                },
            },
        ]);
    }

    fn band(&mut self, x: f32, y: f32, w: f32, h: f32, color: (f32, f32, f32)) {
        let mut rect = Rect::from_xywh(Pt(x), Pt(y), Pt(w), Pt(h));
        rect.mode = Some(PaintMode::Fill);
        self.ops.extend([
            Op::SetFillColor { col: rgb(color) },
            Op::DrawRectangle { rectangle: rect },
        ]);
    }

    fn new_page(&mut self) {
        let ops = std::mem::take(&mut self.ops);
        self.pages.push(ops);
        self.y = TOP;
    }
}

/// Column layout of the lines table: right edges of the numeric columns.
struct Columns {
    description_width: f32,
    quantity: f32,
    unit_price: f32,
    tax: Option<f32>,
    amount: f32,
}

impl Columns {
    fn new(tax: bool) -> Columns {
        if tax {
            Columns {
                description_width: 215.0,
                quantity: 330.0,
                unit_price: 405.0,
                tax: Some(470.0),
                amount: RIGHT - 4.0,
            }
        } else {
            Columns {
                description_width: 260.0,
                quantity: 365.0,
                unit_price: 455.0,
                tax: None,
                amount: RIGHT - 4.0,
            }
        }
    }
}

pub(super) fn render(doc: &DocView) -> Result<Vec<u8>, RenderError> {
    let mut c = Canvas::new();
    header(&mut c, doc);
    let cols = Columns::new(doc.tax_column);
    table_header(&mut c, doc, &cols);
    for row in &doc.rows {
        let desc = c
            .metrics
            .wrap(&row.description, 9.5, cols.description_width);
        let details: Vec<String> = row
            .details
            .iter()
            .flat_map(|d| c.metrics.wrap(d, 7.5, cols.description_width - 6.0))
            .collect();
        let height = desc.len() as f32 * 12.0 + details.len() as f32 * 10.0 + 8.0;
        if c.y - height < BOTTOM {
            c.new_page();
            table_header(&mut c, doc, &cols);
        }
        let top = c.y - 12.0;
        let mut y = top;
        for line in &desc {
            c.text(LEFT + 4.0, y, line, 9.5, false, INK);
            y -= 12.0;
        }
        for line in &details {
            c.text(LEFT + 10.0, y + 1.0, line, 7.5, false, MUTED);
            y -= 10.0;
        }
        c.text_right(cols.quantity, top, &row.quantity, 9.5, false, INK);
        c.text_right(cols.unit_price, top, &row.unit_price, 9.5, false, INK);
        if let Some(x) = cols.tax {
            c.text_right(x, top, &row.tax, 9.5, false, INK);
        }
        c.text_right(cols.amount, top, &row.amount, 9.5, false, INK);
        c.y = y - 2.0;
        c.rule(LEFT, RIGHT, c.y, 0.5, RULE);
    }

    // Totals, right-aligned under the amount column.
    let totals_height = doc.totals.len() as f32 * 16.0 + 12.0;
    if c.y - totals_height < BOTTOM {
        c.new_page();
    }
    c.y -= 8.0;
    let label_x = RIGHT - 230.0;
    for t in &doc.totals {
        c.y -= 16.0;
        if t.strong {
            c.rule(label_x, RIGHT, c.y + 12.0, 0.8, INK);
        }
        c.text(label_x + 4.0, c.y, &t.label, 9.5, t.strong, INK);
        c.text_right(cols.amount, c.y, &t.value, 9.5, t.strong, INK);
    }

    // Notes.
    c.y -= 14.0;
    for note in &doc.notes {
        for line in c.metrics.wrap(note, 9.0, RIGHT - LEFT) {
            if c.y - 12.0 < BOTTOM {
                c.new_page();
            }
            c.y -= 12.0;
            c.text(LEFT, c.y, &line, 9.0, false, MUTED);
        }
    }
    c.new_page();

    // Footer, watermark and page numbers on every page.
    let count = c.pages.len();
    let footer = format!(
        "{} · {} {} · amounts in {}",
        doc.issuer.name, doc.title, doc.number, doc.currency
    );
    let pages: Vec<PdfPage> = std::mem::take(&mut c.pages)
        .into_iter()
        .enumerate()
        .map(|(i, content)| {
            let mut ops = Vec::new();
            if let Some(mark) = &doc.watermark {
                let size = if mark.len() > 6 { 64.0 } else { 110.0 };
                let w = c.metrics.width(mark, size, true);
                // Rotated 30° about the page centre, drawn first: under the content.
                let (sin, cos) = 30f32.to_radians().sin_cos();
                let x = PAGE_W / 2.0 - cos * w / 2.0;
                let y = PAGE_H / 2.0 - sin * w / 2.0 - 20.0;
                ops.extend([
                    Op::StartTextSection,
                    Op::SetFont {
                        font: PdfFontHandle::Builtin(BuiltinFont::HelveticaBold),
                        size: Pt(size),
                    },
                    Op::SetFillColor { col: rgb(MARK) },
                    Op::SetTextMatrix {
                        matrix: TextMatrix::TranslateRotate(Pt(x), Pt(y), 30.0),
                    },
                    Op::ShowText {
                        items: vec![TextItem::Text(mark.clone())],
                    },
                    Op::EndTextSection,
                ]);
            }
            c.ops = ops;
            c.rule(LEFT, RIGHT, 40.0, 0.5, RULE);
            c.text(LEFT, 28.0, &footer, 7.5, false, MUTED);
            let n = format!("Page {} of {count}", i + 1);
            c.text_right(RIGHT, 28.0, &n, 7.5, false, MUTED);
            let mut ops = std::mem::take(&mut c.ops);
            ops.extend(content);
            PdfPage::new(
                printpdf::Mm::from(Pt(PAGE_W)),
                printpdf::Mm::from(Pt(PAGE_H)),
                ops,
            )
        })
        .collect();

    let mut pdf = PdfDocument::new(&format!("{} {}", doc.title, doc.number));
    let mut warnings = Vec::new();
    let bytes = pdf
        .with_pages(pages)
        .save(&PdfSaveOptions::default(), &mut warnings);
    if bytes.is_empty() {
        return Err(RenderError::Pdf(format!("{warnings:?}")));
    }
    Ok(bytes)
}

fn header(c: &mut Canvas, doc: &DocView) {
    // Issuer, top left.
    let mut y = TOP - 14.0;
    c.text(LEFT, y, &doc.issuer.name, 16.0, true, INK);
    for line in &doc.issuer.lines {
        y -= 12.0;
        c.text(LEFT, y, line, 8.5, false, MUTED);
    }
    // Title and number, top right.
    c.text_right(
        RIGHT,
        TOP - 18.0,
        &doc.title.to_uppercase(),
        22.0,
        true,
        INK,
    );
    c.text_right(RIGHT, TOP - 34.0, &doc.number, 11.0, false, INK);
    let rule_y = y.min(TOP - 44.0) - 14.0;
    c.rule(LEFT, RIGHT, rule_y, 1.5, INK);

    // Bill to (left) and the meta table (right).
    let top = rule_y - 24.0;
    let end_left = party(c, "BILL TO", &doc.bill_to, LEFT, top);
    let mut y = top;
    let label_x = RIGHT - 230.0;
    for (label, value) in &doc.meta {
        for (i, line) in c.metrics.wrap(value, 9.0, 140.0).iter().enumerate() {
            if i == 0 {
                c.text(label_x, y, label, 9.0, false, MUTED);
            }
            c.text_right(RIGHT, y, line, 9.0, false, INK);
            y -= 13.0;
        }
    }
    c.y = end_left.min(y) - 16.0;
}

/// Draws a party block; returns the y below it.
fn party(c: &mut Canvas, label: &str, p: &PartyView, x: f32, top: f32) -> f32 {
    c.text(x, top + 12.0, label, 7.5, false, MUTED);
    let mut y = top;
    c.text(x, y, &p.name, 10.5, true, INK);
    for line in &p.lines {
        y -= 12.5;
        c.text(x, y, line, 9.0, false, INK);
    }
    y
}

fn table_header(c: &mut Canvas, doc: &DocView, cols: &Columns) {
    let h = 20.0;
    c.band(LEFT, c.y - h, RIGHT - LEFT, h, BAND);
    let y = c.y - 13.5;
    c.text(LEFT + 4.0, y, "DESCRIPTION", 7.5, true, MUTED);
    c.text_right(cols.quantity, y, "QTY", 7.5, true, MUTED);
    c.text_right(cols.unit_price, y, "UNIT PRICE", 7.5, true, MUTED);
    if let Some(x) = cols.tax {
        c.text_right(x, y, "TAX", 7.5, true, MUTED);
    }
    let amount = format!("AMOUNT ({})", doc.currency);
    c.text_right(cols.amount, y, &amount, 7.5, true, MUTED);
    c.y -= h;
}
