//! The rules for text a guest hands the host: which characters are refused,
//! how markup is kept out of the editor, and how an offending value is quoted
//! in an error message.

/// Characters of an offending value quoted in an error message.
const QUOTED_CHARS: usize = 80;

/// `value` for an error message: at most [`QUOTED_CHARS`] characters, control
/// and bidi characters shown escaped, so a message cannot be used to forge
/// log lines or reorder text.
pub(crate) fn quote(value: &str) -> String {
    let mut quoted = String::from("'");
    for (i, c) in value.chars().enumerate() {
        if i == QUOTED_CHARS {
            quoted.push('…');
            break;
        }
        if is_forbidden(c) {
            quoted.extend(c.escape_unicode());
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Control characters (C0, DEL, C1), bidi controls and line separators: they
/// forge lines in logs and reorder what the editor shows.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// Refuses `value` (named `what`) if it is longer than `max_bytes` or holds a
/// forbidden character, or (with `plain`) markup.
pub(crate) fn check_text(
    what: &str,
    value: &str,
    max_bytes: usize,
    plain: bool,
) -> Result<(), String> {
    if value.len() > max_bytes {
        return Err(format!(
            "the {what} {} is {} bytes long, more than {max_bytes}",
            quote(value),
            value.len()
        ));
    }
    let refused = |c: char| is_forbidden(c) || (plain && matches!(c, '<' | '>'));
    if let Some(c) = value.chars().find(|c| refused(*c)) {
        return Err(format!("the {what} {} contains {c:?}", quote(value)));
    }
    Ok(())
}

/// `text` with HTML's special characters escaped: what the editor receives of
/// a guest's descriptions and tooltips, so it never renders a guest's markup.
pub(crate) fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_at_most_80_characters_with_controls_escaped() {
        let long = "x".repeat(200);
        assert_eq!(quote(&long).chars().count(), 80 + 3);
        assert_eq!(quote("a\u{202E}b\n"), "'a\\u{202e}b\\u{a}'");
    }

    #[test]
    fn refuses_controls_bidi_and_markup_where_plain() {
        assert!(check_text("name", "ok name", 64, true).is_ok());
        for bad in ["a\0", "a\u{1b}[31m", "a\r\nb", "\u{202E}evil", "\u{2066}x"] {
            assert!(
                check_text("description", bad, 64, false).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_text("description", "a < b", 64, false).is_ok());
        let err = check_text("display name", "<script>", 64, true).unwrap_err();
        assert_eq!(err, "the display name '<script>' contains '<'");
        let err = check_text("description", &"y".repeat(65), 64, false).unwrap_err();
        assert!(err.ends_with("is 65 bytes long, more than 64"), "{err}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html("<img src=x onerror='a&b'>\""),
            "&lt;img src=x onerror=&#39;a&amp;b&#39;&gt;&quot;"
        );
    }
}
