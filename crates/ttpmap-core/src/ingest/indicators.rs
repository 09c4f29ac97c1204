//! Sentences that are lists of indicators rather than prose: IOC table rows and lines of
//! hashes, addresses and numbers.
//!
//! Owns [`carries_no_technique`]. Such a line names *what* was seen, not *how* it was done, so
//! the pipeline does not score it: a row `URL | hxxps://cdn[.]example/lib.png | Second-stage
//! download` would otherwise be tagged T1105 (Ingress Tool Transfer) for its note's one word
//! "download", and `Domain | invoices-portal[.]net | Phishing sender domain` T1566.
//!
//! A token is an *indicator* when, refanged, it is a URL, an IPv4 or IPv6 address, an e-mail
//! address, a hex hash (32 or more hex digits) or a domain; a *file* when it is a Windows path or
//! a file name with a known extension (`lnt64.dll`); a *number* when it has digits and no
//! letters. A sentence carries no technique when
//! - it has no word that is none of these (a line of hashes, addresses, file names, counts), or
//! - it is a table row with at least one indicator (a file name counts only in a typed IOC
//!   table, whose first cell is a type such as "File" or "SHA256": a "tool | what it was used
//!   for" row is evidence), no cell longer than [`MAX_NOTE_WORDS`] words, and no ATT&CK
//!   technique id (a mapping table's rows are evidence).
//!
//! Work is linear in the sentence.

use crate::types::Block;

/// Longest cell (in words other than indicators and numbers) of an indicator table row: notes
/// such as "Phishing sender domain" are short; a procedure description is longer.
pub const MAX_NOTE_WORDS: usize = 4;

/// First cells (lower case) that mark a row of a typed IOC table.
const IOC_TYPES: &[&str] = &[
    "file",
    "filename",
    "file name",
    "path",
    "hash",
    "md5",
    "sha1",
    "sha-1",
    "sha256",
    "sha-256",
    "url",
    "uri",
    "domain",
    "hostname",
    "host",
    "ip",
    "ipv4",
    "ipv6",
    "ip address",
    "email",
    "e-mail",
    "mutex",
    "registry",
    "registry key",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Indicator,
    File,
    Number,
    Word,
}

fn classify(raw: &str) -> Option<Token> {
    let t = raw.trim_matches(|c: char| {
        matches!(
            c,
            ',' | ';' | ':' | '(' | ')' | '"' | '\'' | '`' | '<' | '>' | '|'
        )
    });
    let t = t.strip_suffix('.').unwrap_or(t);
    if t.is_empty() || !t.chars().any(char::is_alphanumeric) {
        return None;
    }
    let r = super::refang(t);
    let r = r.as_str();
    let lower = r.to_ascii_lowercase();
    let hex = r.len() >= 32 && r.bytes().all(|b| b.is_ascii_hexdigit());
    let url = lower.contains("://");
    let email = r
        .split_once('@')
        .is_some_and(|(a, d)| !a.is_empty() && d.contains('.'));
    let win_path = r.len() > 3 && r.as_bytes()[1] == b':' && r.as_bytes()[2] == b'\\';
    let ipv6 = r.matches(':').count() >= 2
        && r.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '/');
    let dotted = {
        let parts: Vec<&str> = r.split('.').collect();
        parts.len() >= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            && parts
                .last()
                .is_some_and(|p| p.chars().any(|c| c.is_ascii_alphabetic()))
    };
    let file = win_path
        || (dotted
            && lower
                .rsplit('.')
                .next()
                .is_some_and(|ext| crate::retrieve::FILE_EXTENSIONS.contains(&ext)));
    if file && !url {
        return Some(Token::File);
    }
    if hex || url || email || ipv6 || dotted {
        return Some(Token::Indicator);
    }
    if !r.chars().any(char::is_alphabetic) {
        // Digits with separators: counts, dates, IPv4 addresses, ports.
        return Some(if r.split('.').count() == 4 {
            Token::Indicator
        } else {
            Token::Number
        });
    }
    Some(Token::Word)
}

fn has_technique_id(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .any(|w| crate::TechniqueId::parse(w.trim_end_matches('.')).is_ok())
}

/// True when `text` (a sentence on a line of kind `block`) is a list of indicators, not
/// evidence of a technique (see the module documentation).
pub fn carries_no_technique(text: &str, block: Block) -> bool {
    let tokens: Vec<Token> = text.split_whitespace().filter_map(classify).collect();
    if tokens.is_empty() {
        return false;
    }
    if !tokens.contains(&Token::Word) {
        return true;
    }
    if block != Block::TableRow || has_technique_id(text) {
        return false;
    }
    // A file name counts as an indicator only in a typed IOC table ("File | x.ps1 | ...").
    let typed = text
        .split(" | ")
        .next()
        .is_some_and(|c| IOC_TYPES.contains(&c.trim().to_ascii_lowercase().as_str()));
    if !tokens
        .iter()
        .any(|t| *t == Token::Indicator || (typed && *t == Token::File))
    {
        return false;
    }
    text.split(" | ").all(|cell| {
        cell.split_whitespace()
            .filter_map(classify)
            .filter(|t| *t == Token::Word)
            .count()
            <= MAX_NOTE_WORDS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioc_rows_and_indicator_lines_carry_no_technique() {
        let row = |t| carries_no_technique(t, Block::TableRow);
        // The Glass Lantern example's IOC table.
        assert!(row(
            "URL | hxxps://cdn-lantern[.]example/assets/lib.png | Second-stage download"
        ));
        assert!(row(
            "Domain | invoices-portal[.]net | Phishing sender domain"
        ));
        assert!(row("IPv4 | 185.243.115[.]42 | C2 and exfiltration"));
        assert!(row("File | lnt64.dll | SHA-256 9f2c1a7e4b0d3c8e6f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"));
        assert!(row(
            "Email | billing[@]invoices-portal[.]net | Sender address"
        ));
        // Any block: nothing but indicators and numbers.
        let para = |t| carries_no_technique(t, Block::Paragraph);
        assert!(para(
            "9f2c1a7e4b0d3c8e6f5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"
        ));
        assert!(para("185.243.115[.]42, 10.20.4.17:443 (2026-03-21)"));
        assert!(para("hxxps://cdn-lantern[.]example/assets/lib.png"));
    }

    #[test]
    fn prose_and_mapping_rows_are_scored() {
        // Prose naming indicators is evidence.
        assert!(!carries_no_technique(
            "The decoded script downloaded a second stage from hxxps://cdn-lantern[.]example/assets/lib.png.",
            Block::Paragraph
        ));
        assert!(!carries_no_technique(
            "Downloads lib.png from cdn[.]example",
            Block::ListItem
        ));
        // Short rows without indicators (a header row), mapping rows and long descriptions.
        assert!(!carries_no_technique(
            "Type | Indicator | Notes",
            Block::TableRow
        ));
        assert!(!carries_no_technique(
            "T1105 | Ingress Tool Transfer | lib.png",
            Block::TableRow
        ));
        assert!(!carries_no_technique(
            "lnt64.dll | The loader downloads a second stage over HTTPS and runs it with rundll32",
            Block::TableRow
        ));
        assert!(!carries_no_technique("", Block::Paragraph));
        // A typed IOC table's file row is an indicator row.
        assert!(carries_no_technique(
            "File | powershell-loader.ps1 | PowerShell scripts loader",
            Block::TableRow
        ));
        // A tool table: a file name and what it was used for is evidence.
        assert!(!carries_no_technique(
            "PsExec.exe | Lateral movement to servers",
            Block::TableRow
        ));
        assert!(!carries_no_technique(
            "rclone.exe | Exfiltration to Mega",
            Block::TableRow
        ));
    }
}
