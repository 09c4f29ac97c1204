//! Who may write: API tokens (`Authorization: Bearer TOKEN`).
//!
//! Invariants:
//! - with tokens configured, a write needs one of them (else 401); the token's name is what the
//!   review records as "who";
//! - with no token configured the server is read-only (writes get 403 saying how to enable
//!   them) unless the operator passed `--open-writes`, in which case writes are anonymous;
//! - tokens are compared as SHA-256 digests, every configured one, without an early exit: the
//!   time taken tells neither a token's length nor how much of it matched; secrets are never
//!   logged, and only their digests are kept in memory after start-up;
//! - tokens come from `--token` / `TTPMAP_TOKEN` or, so that they do not show in `ps`, from
//!   a file (`--token-file` / `TTPMAP_TOKEN_FILE`, one `NAME:SECRET` per line).

use std::path::Path;

use axum::http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};

/// A configured token: the name recorded as reviewer, and the secret's SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <secret>)", self.name)
    }
}

impl Token {
    /// `NAME:SECRET`, or `SECRET` alone (recorded as `token`). The secret must be at least 8
    /// characters.
    pub fn parse(s: &str) -> Result<Token, String> {
        let s = s.trim();
        let (name, secret) = match s.split_once(':') {
            Some((n, sec))
                if !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) =>
            {
                (n.to_string(), sec.to_string())
            }
            _ => ("token".to_string(), s.to_string()),
        };
        if secret.chars().count() < 8 {
            return Err(format!(
                "API token for {name:?} is shorter than 8 characters; use a long random secret"
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("API token for {name:?} contains whitespace"));
        }
        Ok(Token {
            name,
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Tokens from a file: one `NAME:SECRET` (or `SECRET`) per line; blank lines and lines
    /// starting with `#` are skipped. Errors name the file and the line, never the secret.
    pub fn parse_file(path: &Path) -> Result<Vec<Token>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the token file: {e}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let t = Token::parse(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            out.push(t);
        }
        if out.is_empty() {
            return Err(format!(
                "{}: no token in the file (expected NAME:SECRET lines)",
                path.display()
            ));
        }
        Ok(out)
    }
}

/// The write policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub tokens: Vec<Token>,
    /// Anonymous writes when no token is configured (`--open-writes`).
    pub open_writes: bool,
}

impl Auth {
    /// Who is writing, or the error to answer.
    pub fn writer(&self, headers: &HeaderMap) -> ApiResult<String> {
        if self.tokens.is_empty() {
            if self.open_writes {
                return Ok("anonymous".to_string());
            }
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this server is read-only: start it with --token-file FILE (or TTPMAP_TOKEN) \
                 and send `Authorization: Bearer SECRET`, or with --open-writes to allow \
                 anonymous writes",
            ));
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let Some(given) = given else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint writes: send `Authorization: Bearer TOKEN` with an API token",
            ));
        };
        // Digests have one length whatever the secret's, and every token is checked (no early
        // exit), so timing tells neither the length nor which prefix matched.
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(&t.digest, &given) && found.is_none() {
                found = Some(t.name.clone());
            }
        }
        found.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid API token",
            )
        })
    }

    /// Whether writes are possible at all (for `/health` and the UI).
    pub fn writes_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.open_writes
    }
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn token_policy() {
        let read_only = Auth::default();
        assert_eq!(
            read_only.writer(&HeaderMap::new()).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let open = Auth {
            tokens: vec![],
            open_writes: true,
        };
        assert_eq!(open.writer(&HeaderMap::new()).unwrap(), "anonymous");
        let auth = Auth {
            tokens: vec![
                Token::parse("alice:s3cret-token").unwrap(),
                Token::parse("plainsecret").unwrap(),
            ],
            open_writes: false,
        };
        assert_eq!(
            auth.writer(&headers("Bearer s3cret-token")).unwrap(),
            "alice"
        );
        assert_eq!(
            auth.writer(&headers("bearer plainsecret")).unwrap(),
            "token"
        );
        assert_eq!(
            auth.writer(&headers("Bearer wrong-token"))
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth.writer(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(Token::parse("bob:short").is_err());
        assert!(!format!("{:?}", auth.tokens[0]).contains("s3cret"));
        // A prefix or an extension of a secret is no match.
        for wrong in ["Bearer s3cret-toke", "Bearer s3cret-token-", "Bearer "] {
            assert!(auth.writer(&headers(wrong)).is_err(), "{wrong}");
        }
    }

    #[test]
    fn tokens_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(
            &p,
            "# analysts\nalice:s3cret-token\n\n  bob:another-secret  \n",
        )
        .unwrap();
        let t = Token::parse_file(&p).unwrap();
        assert_eq!(
            t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        std::fs::write(&p, "alice:s3cret-token\nbob:short\n").unwrap();
        let e = Token::parse_file(&p).unwrap_err();
        assert!(
            e.contains("tokens:2:") && e.contains("shorter than 8"),
            "{e}"
        );
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(Token::parse_file(&p).unwrap_err().contains("no token"));
        assert!(Token::parse_file(&dir.path().join("missing"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
