//! Who may report completions to `POST /events`. With `serviceAccountToken`, a caller sends
//! `Authorization: Bearer <token>`; the token is reviewed by the API server (a TokenReview,
//! behind the [`TokenReviewer`] port) for the configured audience, the answer is cached briefly
//! by a hash of the token, and the authenticated user must be the ServiceAccount of the Provider
//! the completion names. The decisions are pure: [`bearer_token`], [`verdict`] and
//! [`authorize`]; [`Authenticator`] ties them to the port and the cache ([`ReviewCache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::api::NamespacedName;

/// Why a caller is not let in: it proved no identity (401), another one than the Provider's
/// (403), or its proof could not be checked (503, try again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    ServiceAccountMismatch(String),
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::ServiceAccountMismatch(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "Unauthenticated",
            Self::ServiceAccountMismatch(_) => "ServiceAccountMismatch",
            Self::Unavailable(_) => "AuthenticationUnavailable",
        }
    }
}

/// What the API server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// The token is valid for `audiences` and belongs to `username`.
    Authenticated { username: String, audiences: Vec<String> },
    /// The token is not valid (malformed, expired, revoked, or for another audience).
    Rejected { reason: String },
}

/// Reviews bearer tokens. An `Err` means the review could not be made (API server unreachable,
/// timeout, refusal to review): the caller is then told to retry, never let in.
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> BoxFuture<'a, Result<Review, String>>;
}

/// The ServiceAccount a caller proved to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub username: String,
}

/// The Kubernetes user name of a ServiceAccount: `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The bearer token of a request, if it sent one.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        AuthError::Unauthenticated(
            "no bearer token; send Authorization: Bearer <ServiceAccount token>".into(),
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(AuthError::Unauthenticated(
            "the Authorization header is not a bearer token; send Authorization: Bearer <ServiceAccount token>"
                .into(),
        )),
    }
}

/// Who a review says the caller is: 401 for a rejected token or another audience, 503 when
/// the review could not be made.
pub fn verdict(review: &Result<Review, String>, audience: &str) -> Result<Caller, AuthError> {
    match review {
        Err(error) => {
            Err(AuthError::Unavailable(format!("the token could not be reviewed ({error}); retry later")))
        }
        Ok(Review::Rejected { reason }) => {
            Err(AuthError::Unauthenticated(format!("the token is not valid: {reason}")))
        }
        Ok(Review::Authenticated { audiences, .. }) if !audiences.iter().any(|a| a == audience) => {
            Err(AuthError::Unauthenticated(format!(
                "the token is not issued for the audience {audience:?} (it is for {audiences:?})"
            )))
        }
        Ok(Review::Authenticated { username, .. }) => Ok(Caller { username: username.clone() }),
    }
}

/// Whether `caller` may report for `provider`, whose service runs as `expected` (the user name
/// of its ServiceAccount; `None` when the Provider does not exist): 403 otherwise.
pub fn authorize(
    caller: &Caller,
    provider: &NamespacedName,
    expected: Option<&str>,
) -> Result<(), AuthError> {
    match expected {
        Some(expected) if expected == caller.username => Ok(()),
        Some(expected) => Err(AuthError::ServiceAccountMismatch(format!(
            "{} may not report completions of Provider {provider}; only its ServiceAccount {expected} may",
            caller.username
        ))),
        None => Err(AuthError::ServiceAccountMismatch(format!(
            "Provider {provider} does not exist, so {} may not report completions for it",
            caller.username
        ))),
    }
}

/// Reviews answered lately, by the SHA-256 of the token; only definite answers (accepted or
/// rejected) are kept, for `ttl`, and at most `capacity` of them.
pub struct ReviewCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Instant, Review)>>,
}

impl ReviewCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    pub fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The review of `key` if it was made less than `ttl` before `now`.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Review> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, r)| r.clone())
    }

    /// Keeps `review`, made at `now`; when full, expired entries go first, then all of them.
    pub fn put(&self, key: [u8; 32], review: Review, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (now, review));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|entries| entries.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a review is trusted.
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(30);
/// How many reviews are remembered.
pub const REVIEW_CACHE_CAPACITY: usize = 1024;

/// Authenticates `/events` callers with reviewed bearer tokens.
pub struct Authenticator {
    reviewer: Arc<dyn TokenReviewer>,
    audience: String,
    cache: ReviewCache,
}

impl Authenticator {
    pub fn new(reviewer: Arc<dyn TokenReviewer>, audience: impl Into<String>) -> Self {
        Self {
            reviewer,
            audience: audience.into(),
            cache: ReviewCache::new(REVIEW_CACHE_TTL, REVIEW_CACHE_CAPACITY),
        }
    }

    /// Who the request's bearer token proves the caller to be.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        let key = ReviewCache::key(token);
        if let Some(review) = self.cache.get(&key, Instant::now()) {
            return verdict(&Ok(review), &self.audience);
        }
        let review = self.reviewer.review(token, &self.audience).await;
        if let Ok(review) = &review {
            self.cache.put(key, review.clone(), Instant::now());
        }
        verdict(&review, &self.audience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    const AUDIENCE: &str = "kfp-operator-events";

    fn authenticated(username: &str, audiences: &[&str]) -> Result<Review, String> {
        Ok(Review::Authenticated {
            username: username.into(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        })
    }

    fn status(result: Result<impl Sized, AuthError>) -> StatusCode {
        result.err().map_or(StatusCode::OK, |error| error.status())
    }

    #[test]
    fn a_request_without_a_bearer_token_is_unauthenticated() {
        let mut headers = HeaderMap::new();
        assert_eq!(status(bearer_token(&headers)), StatusCode::UNAUTHORIZED);
        for value in ["Basic dXNlcjpwdw==", "Bearer ", "Bearer", "token"] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(status(bearer_token(&headers)), StatusCode::UNAUTHORIZED, "{value}");
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc.def"));
        assert_eq!(bearer_token(&headers).ok(), Some("abc.def"));
    }

    #[test]
    fn a_review_decides_401_503_or_the_caller() {
        let user = service_account_user("ml", "kfp-vai");
        assert_eq!(
            verdict(&authenticated(&user, &[AUDIENCE]), AUDIENCE),
            Ok(Caller { username: user.clone() })
        );
        assert_eq!(status(verdict(&authenticated(&user, &["api"]), AUDIENCE)), StatusCode::UNAUTHORIZED);
        assert_eq!(status(verdict(&authenticated(&user, &[]), AUDIENCE)), StatusCode::UNAUTHORIZED);
        let rejected = Ok(Review::Rejected { reason: "token expired".into() });
        let error = verdict(&rejected, AUDIENCE).unwrap_err();
        assert_eq!((error.status(), error.category()), (StatusCode::UNAUTHORIZED, "Unauthenticated"));
        assert!(error.to_string().contains("token expired"), "{error}");
        let error = verdict(&Err("connection refused".into()), AUDIENCE).unwrap_err();
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.category(), "AuthenticationUnavailable");
    }

    #[test]
    fn only_the_providers_service_account_may_report_for_it() {
        let provider = NamespacedName::new("ml", "vai");
        let own = service_account_user("ml", "kfp-vai");
        let caller = Caller { username: own.clone() };
        assert_eq!(authorize(&caller, &provider, Some(&own)), Ok(()));
        let stranger = Caller { username: service_account_user("other", "kfp-vai") };
        let error = authorize(&stranger, &provider, Some(&own)).unwrap_err();
        assert_eq!((error.status(), error.category()), (StatusCode::FORBIDDEN, "ServiceAccountMismatch"));
        let message = error.to_string();
        assert!(
            message.contains("system:serviceaccount:other:kfp-vai") && message.contains(&own),
            "{message}"
        );
        assert_eq!(status(authorize(&caller, &provider, None)), StatusCode::FORBIDDEN);
    }

    #[test]
    fn cached_reviews_expire_and_the_cache_stays_bounded() {
        let cache = ReviewCache::new(Duration::from_secs(30), 2);
        let start = Instant::now();
        let review = Review::Rejected { reason: "bad".into() };
        let key = ReviewCache::key("token-a");
        assert_ne!(key, ReviewCache::key("token-b"));
        cache.put(key, review.clone(), start);
        assert_eq!(cache.get(&key, start + Duration::from_secs(29)), Some(review.clone()));
        assert_eq!(cache.get(&key, start + Duration::from_secs(30)), None);

        cache.put(ReviewCache::key("token-b"), review.clone(), start + Duration::from_secs(1));
        cache.put(ReviewCache::key("token-c"), review.clone(), start + Duration::from_secs(40));
        assert_eq!(cache.len(), 1, "the expired entries made room");
        cache.put(ReviewCache::key("token-d"), review.clone(), start + Duration::from_secs(41));
        cache.put(ReviewCache::key("token-e"), review, start + Duration::from_secs(42));
        assert!(cache.len() <= 2);
    }

    struct Counting {
        calls: Mutex<usize>,
        answer: Result<Review, String>,
    }

    impl TokenReviewer for Counting {
        fn review<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Review, String>> {
            if let Ok(mut calls) = self.calls.lock() {
                *calls += 1;
            }
            Box::pin(async move { self.answer.clone() })
        }
    }

    fn bearer(token: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        headers
    }

    #[tokio::test]
    async fn definite_reviews_are_cached_and_outages_are_not() {
        let user = service_account_user("ml", "kfp-vai");
        let reviewer = Arc::new(Counting { calls: Mutex::new(0), answer: authenticated(&user, &[AUDIENCE]) });
        let authenticator = Authenticator::new(reviewer.clone(), AUDIENCE);
        for _ in 0..3 {
            assert_eq!(authenticator.authenticate(&bearer("t")).await.unwrap().username, user);
        }
        assert_eq!(*reviewer.calls.lock().unwrap(), 1);

        let down = Arc::new(Counting { calls: Mutex::new(0), answer: Err("timed out".into()) });
        let authenticator = Authenticator::new(down.clone(), AUDIENCE);
        for _ in 0..2 {
            let error = authenticator.authenticate(&bearer("t")).await.unwrap_err();
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(*down.calls.lock().unwrap(), 2);
    }
}
