//! Bearer tokens of the API. A token file has one token per line, optionally named:
//! `NAME TOKEN` (the name is recorded as the actor of what the token does) or just `TOKEN`
//! (named `token-N` after its line). Blank lines and `#` comments are skipped. The file must not
//! be readable by group or others, since its tokens are the API's passwords.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The tokens the daemon accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<(String, String)>,
}

impl Tokens {
    /// Reads a token file (see the module docs).
    pub fn load(path: &Path) -> Result<Tokens> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            bail!(
                "token file {} is readable or writable by group or others (mode {:o}): `chmod 600 {}`",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the token file {}", path.display()))
    }

    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<Tokens> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match fields[..] {
                [token] => (format!("token-{}", i + 1), token),
                [name, token] => (name.to_string(), token),
                _ => bail!(
                    "line {}: expected `NAME TOKEN` or `TOKEN`, found {} fields",
                    i + 1,
                    fields.len()
                ),
            };
            if token.len() < 16 {
                bail!(
                    "line {}: token of {name} is {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
                    i + 1,
                    token.len()
                );
            }
            entries.push((name, token.to_string()));
        }
        if entries.is_empty() {
            bail!("no tokens in it: add a line `NAME TOKEN`");
        }
        Ok(Tokens { entries })
    }

    /// The name of the token `given`, comparing in constant time per token.
    pub fn check(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.entries {
            if ct_eq(token.as_bytes(), given.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_bare_tokens() {
        let t = Tokens::parse(
            "# orchestrator\norch 0123456789abcdef0123\n\n  fedcba9876543210fedc  \n",
        )
        .unwrap();
        assert_eq!(t.check("0123456789abcdef0123"), Some("orch"));
        assert_eq!(t.check("fedcba9876543210fedc"), Some("token-4"));
        assert_eq!(t.check("0123456789abcdef012"), None);
        assert_eq!(t.check(""), None);
    }

    #[test]
    fn rejects_bad_files_naming_the_line() {
        let e = Tokens::parse("a b c\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "line 1: expected `NAME TOKEN` or `TOKEN`, found 3 fields"
        );
        let e = Tokens::parse("\nshort abc\n").unwrap_err().to_string();
        assert!(
            e.starts_with("line 2: token of short is 3 characters"),
            "{e}"
        );
        assert!(Tokens::parse("# nothing\n").is_err());
    }
}
