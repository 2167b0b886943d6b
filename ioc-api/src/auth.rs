//! Bearer tokens with roles (CONTRACT.md §5).
//!
//! Tokens are compared in constant time (`subtle`) against every configured token, and
//! never logged: only the token's name appears in logs and in the SQL audit log.

use std::fmt;

use subtle::ConstantTimeEq;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Analyst,
    Ingest,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "analyst" => Some(Role::Analyst),
            "ingest" => Some(Role::Ingest),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Ingest => "ingest",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` stands for.
    pub fn allows(self, needed: Permission) -> bool {
        matches!(
            (self, needed),
            (Role::Admin, _)
                | (Role::Viewer | Role::Analyst, Permission::Read)
                | (Role::Analyst, Permission::Sql)
                | (Role::Ingest, Permission::Ingest)
                | (_, Permission::Metrics)
        )
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Dashboards, KPIs, alerts, the websocket.
    Read,
    /// Ad-hoc SQL.
    Sql,
    /// Posting events.
    Ingest,
    /// `/metrics`: any valid token (Prometheus scrapes with one).
    Metrics,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("entry {index} must be `role:token` or `role@province:token`")]
    Shape { index: usize },
    #[error("entry {index}: `{role}` is not one of viewer, analyst, ingest, admin")]
    Role { index: usize, role: String },
    #[error("token `{name}` is empty")]
    Empty { name: String },
    #[error("token `{name}`: province `{province}` is not 2 digits")]
    Province { name: String, province: String },
    #[error("token `{name}` has a character that cannot travel in an HTTP header: use printable ASCII without spaces")]
    Characters { name: String },
}

#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// A province-scoped token sees only that province.
    pub province: Option<String>,
    secret: Vec<u8>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("province", &self.province)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    pub fn new(name: String, role: Role, province: Option<String>, secret: String) -> Result<Self, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::Empty { name });
        }
        // Any printable ASCII but spaces (CONTRACT.md §7.2): what a bearer header and a
        // percent-encoded `?token=` carry unchanged.
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters { name });
        }
        if let Some(p) = &province
            && !ioc_core::admin::is_digits(p, 2)
        {
            return Err(TokenError::Province { name, province: p.clone() });
        }
        Ok(Self { name, role, province, secret: secret.into_bytes() })
    }

    /// Short tokens are allowed (the contract sets no minimum) but warned about.
    pub fn is_weak(&self) -> bool {
        self.secret.len() < 16
    }
}

/// Parses `IOC_AUTH_TOKENS`: `role:token,role@province:token,...`. Tokens are named
/// `<role>-<n>` (1-based position), which is what logs show.
pub fn parse_tokens(spec: &str) -> Result<Vec<Token>, TokenError> {
    let mut out = Vec::new();
    for (i, entry) in spec.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let index = i + 1;
        let (scope, secret) = entry.split_once(':').ok_or(TokenError::Shape { index })?;
        let (role_name, province) = match scope.split_once('@') {
            Some((r, p)) => (r, Some(p.to_string())),
            None => (scope, None),
        };
        let role = Role::parse(role_name).ok_or_else(|| TokenError::Role { index, role: role_name.to_string() })?;
        out.push(Token::new(format!("{}-{index}", role.as_str()), role, province, secret.to_string())?);
    }
    Ok(out)
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub province: Option<String>,
}

impl Principal {
    /// The caller when no tokens are configured (loopback only).
    pub fn local() -> Self {
        Self { name: "local".into(), role: Role::Admin, province: None }
    }
}

/// Finds the token matching `presented`, comparing in constant time against all.
pub fn authenticate(tokens: &[Token], presented: &str) -> Option<Principal> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.secret.as_slice().ct_eq(presented.as_bytes())) {
            found = Some(Principal { name: t.name.clone(), role: t.role, province: t.province.clone() });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_roles_names_and_province_scope() {
        let t = parse_tokens("viewer:aaaaaaaa, analyst@01:bbbbbbbb,admin:cccccccc").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!((t[1].name.as_str(), t[1].role, t[1].province.as_deref()), ("analyst-2", Role::Analyst, Some("01")));
        assert!(!format!("{t:?}").contains("bbbbbbbb"), "secrets never appear in Debug output");
        assert_eq!(parse_tokens("boss:aaaaaaaa").unwrap_err(), TokenError::Role { index: 1, role: "boss".into() });
        assert_eq!(parse_tokens("viewer").unwrap_err(), TokenError::Shape { index: 1 });
        assert!(matches!(parse_tokens("viewer:").unwrap_err(), TokenError::Empty { .. }));
        assert!(parse_tokens("viewer:short").unwrap()[0].is_weak());
        // Any printable ASCII but `,` (the separator) and spaces.
        let odd = parse_tokens("viewer:vw+a/b=c%d-41f7:x@y!~\"'").unwrap();
        assert_eq!(authenticate(&odd, "vw+a/b=c%d-41f7:x@y!~\"'").map(|p| p.role), Some(Role::Viewer));
        for bad in ["viewer:with space", "viewer:tab\there", "viewer:đồng-token"] {
            assert!(matches!(parse_tokens(bad), Err(TokenError::Characters { .. })), "{bad}");
        }
    }

    #[test]
    fn authentication_finds_the_matching_token_only() {
        let t = parse_tokens("viewer:aaaaaaaa,ingest:bbbbbbbb").unwrap();
        assert_eq!(authenticate(&t, "bbbbbbbb").unwrap().role, Role::Ingest);
        assert!(authenticate(&t, "bbbbbbb").is_none());
        assert!(authenticate(&t, "").is_none());
    }

    #[test]
    fn roles_allow_what_the_contract_says() {
        use Permission::*;
        assert!(Role::Viewer.allows(Read) && !Role::Viewer.allows(Sql) && !Role::Viewer.allows(Ingest));
        assert!(Role::Analyst.allows(Read) && Role::Analyst.allows(Sql) && !Role::Analyst.allows(Ingest));
        assert!(Role::Ingest.allows(Ingest) && !Role::Ingest.allows(Read) && !Role::Ingest.allows(Sql));
        assert!(Role::Admin.allows(Read) && Role::Admin.allows(Sql) && Role::Admin.allows(Ingest));
    }
}
