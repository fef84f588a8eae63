//! Everything `roost` prints, and how it survives stored text and closed pipes.
//!
//! Stored text comes from every MCP client and every machine of the chain, so
//! it may hold terminal control sequences: ESC starts the ones that clear the
//! screen, retitle the window or, with OSC 52, write the clipboard. Human
//! output therefore shows every control character (C0, DEL, C1) as a visible
//! escape such as `\u{1b}`, keeping only newline and tab where a multi-line
//! text is printed whole ([`say!`]); a value shown as one line or table cell
//! escapes newline and tab too ([`field`]). This is done always, not only when
//! stdout is a terminal: output saved to a file or piped through a pager
//! reaches a terminal later, and the raw bytes are what `--json` is for. JSON
//! escapes C0 itself; [`json`] also writes DEL and C1 as `\u007f`…`\u009f`,
//! which parse back to the very same string.
//!
//! A reader that goes away early (`roost memory get ID | head -1`) closes the
//! pipe, and the next write fails with EPIPE. That becomes [`Closed`], which
//! `main` turns into a quiet exit with status 0: the reader took what it
//! wanted, which is no failure of `roost` (and scripts under
//! `set -o pipefail` keep working, as they would not with 141). Writes to
//! stderr never fail a command: there is nowhere left to report that.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

/// Standard output was closed by its reader; `main` exits quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct Closed;

/// Prints one line of human output to stdout, control characters escaped
/// (newline and tab kept). Fails with [`Closed`] when the reader has gone.
macro_rules! say {
    () => {
        $crate::out::line("")
    };
    ($($arg:tt)*) => {
        $crate::out::line(&format!($($arg)*))
    };
}

/// Prints one line to stderr, control characters escaped; never fails.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::out::to_stderr(&format!($($arg)*))
    };
}

pub(crate) use {note, say};

/// `text` and a newline on stdout, control characters but newline and tab escaped.
pub fn line(text: &str) -> anyhow::Result<()> {
    write(format!("{}\n", escape(text, &['\n', '\t'])).as_bytes())
}

/// `text` on stdout, control characters but newline and tab escaped, with no
/// newline added, flushed: a prompt, or an export file.
pub fn text(text: &str) -> anyhow::Result<()> {
    write(escape(text, &['\n', '\t']).as_bytes())
}

/// `value` as pretty JSON on stdout: faithful (it parses back to `value`),
/// with no raw control character in it.
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write(format!("{}\n", json_escape(&text)).as_bytes())
}

/// `text` and a newline on stderr, control characters but newline and tab
/// escaped. A failure to write is ignored: there is nowhere left to report it.
pub fn to_stderr(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", escape(text, &['\n', '\t']));
}

/// A stored value shown on one line: every control character escaped,
/// newline and tab too.
pub fn field(text: &str) -> Cow<'_, str> {
    escape(text, &[])
}

/// A table on stdout: the header and one row per entry, columns sized to
/// their widest cell (by display width), wrapped to the terminal's width on
/// a terminal only. Each cell is shown as [`field`] shows a value: every
/// control character escaped, newline and tab too. No rows, no table.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header(header.iter().copied());
    if std::io::stdout().is_terminal() {
        table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    }
    for row in rows {
        table.add_row(row.iter().map(|cell| field(cell).into_owned()));
    }
    let text: String = table.lines().map(|line| format!("{}\n", line.trim())).collect();
    write(text.as_bytes())
}

/// Bytes of `roost`'s own making (completions, the manual page) on stdout, as they are.
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    write(bytes)
}

fn write(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Closed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// `text` with each control character not in `keep` written as `\u{HEX}`.
fn escape<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    let shown = |c: char| !c.is_control() || keep.contains(&c);
    if text.chars().all(shown) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if shown(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// Serialised JSON with DEL and C1 controls (which JSON allows raw) written
/// as `\u00XX` escapes. Outside strings JSON holds no such character, so
/// every one replaced is inside a string, where the escape means the same.
fn json_escape(json: &str) -> Cow<'_, str> {
    if !json.chars().any(char::is_control) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '\n' => out.push(c),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7}b\0c\u{7f}d\u{9b}31me\r\n\tf";

    #[test]
    fn human_output_shows_every_control_character_as_an_escape() {
        let shown = escape(HOSTILE, &['\n', '\t']);
        assert_eq!(shown, "a\\u{1b}[2J\\u{1b}]52;c;cHduZWQ=\\u{7}b\\u{0}c\\u{7f}d\\u{9b}31me\\u{d}\n\tf");
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert_eq!(field("x\ty\nz"), "x\\u{9}y\\u{a}z");
        assert!(matches!(field("plain Café text"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_output_is_faithful_and_holds_no_raw_control_character() {
        let value = serde_json::json!({"content": HOSTILE, "list": ["\u{85}"]});
        let text = json_escape(&serde_json::to_string_pretty(&value).unwrap()).into_owned();
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value);
    }
}
