//! Bearer-token auth with two roles (DESIGN §5, §9): operators hold `STUDIO_ADMIN_TOKEN`,
//! publishing services hold `STUDIO_EXECUTOR_SECRET`. Each endpoint accepts exactly one of them:
//! no usable token is 401, the other role's token is 403.
//!
//! Other crates protect their routes the same way, with the [`AdminAuth`] extractor (their state
//! implements `FromRef<State> for Tokens`) or the [`require_admin`] middleware.

use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::fmt;
use std::sync::Arc;
use subtle::{Choice, ConstantTimeEq};

/// Who a request's bearer token says it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An operator: `STUDIO_ADMIN_TOKEN`. Reads the log, uses `/admin/studio/*`.
    Admin,
    /// A publishing service: `STUDIO_EXECUTOR_SECRET`. Publishes to `/v1/events`.
    Executor,
}

impl Role {
    fn variable(self) -> &'static str {
        match self {
            Role::Admin => "STUDIO_ADMIN_TOKEN",
            Role::Executor => "STUDIO_EXECUTOR_SECRET",
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Role::Admin => "admin endpoints (GET /v1/events, /admin/studio/*)",
            Role::Executor => "publishing (POST /v1/events)",
        }
    }
}

/// Why a pair of tokens cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{0} is empty; set it to a long random string")]
    Empty(&'static str),
    #[error("{0} must be printable ASCII without spaces, so it can travel in an HTTP header")]
    NotHeaderSafe(&'static str),
    #[error("STUDIO_ADMIN_TOKEN and STUDIO_EXECUTOR_SECRET are the same; give each role its own")]
    Same,
}

/// The two bearer tokens. Cheap to clone; never printed.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<TokenPair>,
}

struct TokenPair {
    admin: Box<[u8]>,
    executor: Box<[u8]>,
}

impl Tokens {
    pub fn new(admin_token: &str, executor_secret: &str) -> Result<Self, TokenError> {
        check_token(Role::Admin, admin_token)?;
        check_token(Role::Executor, executor_secret)?;
        // With equal tokens a request's role would be ambiguous.
        if bool::from(admin_token.as_bytes().ct_eq(executor_secret.as_bytes())) {
            return Err(TokenError::Same);
        }
        Ok(Self {
            inner: Arc::new(TokenPair {
                admin: admin_token.as_bytes().into(),
                executor: executor_secret.as_bytes().into(),
            }),
        })
    }

    /// The role a presented token belongs to. Both tokens are always compared, each in time
    /// that depends only on the presented token's length.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let admin = secret_matches(presented, &self.inner.admin);
        let executor = secret_matches(presented, &self.inner.executor);
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(executor) {
            Some(Role::Executor)
        } else {
            None
        }
    }

    /// Checks a request's `Authorization` header against the one role an endpoint accepts.
    pub fn authorize(&self, headers: &HeaderMap, required: Role) -> Result<(), ApiError> {
        let hint = format!("send `Authorization: Bearer ${}`", required.variable());
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(format!(
                "the Authorization header is missing; {hint}"
            )));
        };
        let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "the Authorization header is not `Bearer <token>`; {hint}"
            ))
        })?;
        match self.role_of(token.as_bytes()) {
            Some(role) if role == required => Ok(()),
            Some(role) => Err(ApiError::forbidden(format!(
                "the {} token is not allowed here (it is for {}); {hint}",
                role.variable(),
                role.allowed(),
            ))),
            None => Err(ApiError::unauthorized(format!(
                "the bearer token is not recognised; {hint}"
            ))),
        }
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

fn check_token(role: Role, token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty(role.variable()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotHeaderSafe(role.variable()));
    }
    Ok(())
}

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit: every byte of `presented` is compared (with the secret's
/// bytes cycled when it is longer), so timing reveals neither where the two first differ nor
/// the secret's length. `secret` is never empty ([`Tokens::new`] refuses that).
fn secret_matches(presented: &[u8], secret: &[u8]) -> Choice {
    let mut same = presented.len().ct_eq(&secret.len());
    for (i, byte) in presented.iter().enumerate() {
        same &= byte.ct_eq(&secret[i % secret.len()]);
    }
    same
}

/// Proof that the request carried the admin token. Rejects with 401/403 [`ApiError`]s.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl<S> FromRequestParts<S> for AdminAuth
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Tokens::from_ref(state).authorize(&parts.headers, Role::Admin)?;
        Ok(AdminAuth)
    }
}

/// Proof that the request carried the executor secret. Rejects with 401/403 [`ApiError`]s.
#[derive(Debug, Clone, Copy)]
pub struct ExecutorAuth;

impl<S> FromRequestParts<S> for ExecutorAuth
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Tokens::from_ref(state).authorize(&parts.headers, Role::Executor)?;
        Ok(ExecutorAuth)
    }
}

/// Middleware for a whole router of admin routes:
/// `router.route_layer(axum::middleware::from_fn_with_state(tokens, ingest::require_admin))`.
pub async fn require_admin(
    State(tokens): State<Tokens>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    tokens.authorize(request.headers(), Role::Admin)?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn tokens() -> Tokens {
        Tokens::new("admin-token-1", "executor-secret-1").unwrap()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn each_token_maps_to_its_role() {
        let tokens = tokens();
        assert_eq!(tokens.role_of(b"admin-token-1"), Some(Role::Admin));
        assert_eq!(tokens.role_of(b"executor-secret-1"), Some(Role::Executor));
    }

    #[test]
    fn prefixes_extensions_and_other_strings_match_nothing() {
        let tokens = tokens();
        for presented in [
            &b""[..],
            b"admin-token",
            b"admin-token-12",
            b"admin-token-1admin-token-1",
            b"ADMIN-TOKEN-1",
            b"executor-secret-2",
        ] {
            assert_eq!(tokens.role_of(presented), None, "{presented:?}");
        }
    }

    #[test]
    fn a_longer_presented_token_cycling_the_secret_does_not_match() {
        assert!(!bool::from(secret_matches(b"abab", b"ab")));
        assert!(bool::from(secret_matches(b"ab", b"ab")));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn the_other_roles_token_is_forbidden_and_an_unknown_one_unauthorized() {
        let tokens = tokens();
        assert!(tokens
            .authorize(&headers("Bearer executor-secret-1"), Role::Executor)
            .is_ok());
        let err = tokens
            .authorize(&headers("Bearer admin-token-1"), Role::Executor)
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        let err = tokens
            .authorize(&headers("Bearer executor-secret-1"), Role::Admin)
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert!(err.message().contains("STUDIO_ADMIN_TOKEN"), "{err}");
        let err = tokens
            .authorize(&headers("Bearer nope"), Role::Admin)
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_missing_or_malformed_header_is_unauthorized() {
        let tokens = tokens();
        for headers in [HeaderMap::new(), headers("Token admin-token-1")] {
            let err = tokens.authorize(&headers, Role::Admin).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(err.code(), "unauthorized");
        }
    }

    #[test]
    fn unusable_token_pairs_are_refused_at_start_up() {
        assert_eq!(
            Tokens::new("", "x").unwrap_err(),
            TokenError::Empty("STUDIO_ADMIN_TOKEN")
        );
        assert_eq!(
            Tokens::new("a b", "x").unwrap_err(),
            TokenError::NotHeaderSafe("STUDIO_ADMIN_TOKEN")
        );
        assert_eq!(Tokens::new("same", "same").unwrap_err(), TokenError::Same);
    }

    #[test]
    fn tokens_never_print_themselves() {
        assert!(!format!("{:?}", tokens()).contains("admin-token-1"));
    }
}
