//! QR codes of tickets and pairing addresses, for a phone's camera: as text for a terminal
//! and as SVG for the dashboard.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// Longest text put in a code (a QR code holds at most 2,953 bytes at the lowest correction).
pub const MAX_TEXT: usize = 2048;

fn code(text: &str) -> Result<QrCode, String> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(format!("a QR code holds 1 to {MAX_TEXT} bytes, not {}", text.len()));
    }
    // Medium correction where it fits, low for long tickets.
    QrCode::with_error_correction_level(text, EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(text, EcLevel::L))
        .map_err(|e| format!("cannot make a QR code: {e}"))
}

/// The code drawn with half blocks, two rows of modules per line, light on dark as terminal
/// cameras read best (with the quiet zone around it).
pub fn text(text: &str) -> Result<String, String> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The code as an SVG image.
pub fn svg(text: &str) -> Result<String, String> {
    Ok(code(text)?
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_becomes_a_code_and_too_much_text_an_error() {
        let ticket = format!("kithpool1{}", "a".repeat(600));
        let t = text(&ticket).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        // Square: twice as many module rows as lines, as many columns as modules.
        let width = lines[0].chars().count();
        assert!(width > 41, "a 600-byte ticket needs a version above 6: {width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        let s = svg(&ticket).unwrap();
        assert!(s.contains("<svg") && s.contains("</svg>"), "{}", &s[..80]);
        assert!(text("").is_err());
        assert!(svg(&"x".repeat(MAX_TEXT + 1)).is_err());
    }
}
