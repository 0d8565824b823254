//! Text from untrusted places (a volume's label, an EMD read from anyone's
//! disk) made safe for a terminal: control characters are shown escaped,
//! so that a label holding `\x1b[31m` cannot drive the terminal that prints
//! it. JSON output escapes them by itself.

use std::fmt::Write;

/// `text` with every control character (C0, DEL and C1) escaped as `\xNN`
/// or `\u{NNNN}`, and backslashes doubled so that the escape is unambiguous.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("payroll"), "payroll");
        assert_eq!(printable("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(printable("tab\tnl\ndel\x7f"), "tab\\x09nl\\x0adel\\x7f");
        assert_eq!(printable("c1\u{9b}x"), "c1\\u{009b}x");
        assert_eq!(printable("back\\slash"), "back\\\\slash");
        assert_eq!(printable("ünïcødé ✓"), "ünïcødé ✓");
    }
}
