//! The API server's word on a bearer token: a TokenReview (`authentication.k8s.io/v1`) for one
//! audience, within a deadline; an unanswered review is an outage, never an acceptance.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::events::auth::{Review, TokenReviewer};

/// How long a review may take before the caller is told to retry.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Reviews tokens with the operator's own client (which needs `create` on `tokenreviews`).
pub struct KubeTokenReviewer {
    client: kube::Client,
    timeout: Duration,
}

impl KubeTokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client, timeout: REVIEW_TIMEOUT }
    }
}

/// What a TokenReview's status says about the token.
pub fn review_of(review: TokenReview) -> Review {
    let status = review.status.unwrap_or_default();
    if status.authenticated == Some(true) {
        Review::Authenticated {
            username: status.user.and_then(|user| user.username).unwrap_or_default(),
            audiences: status.audiences.unwrap_or_default(),
        }
    } else {
        let reason = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
        Review::Rejected { reason }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> BoxFuture<'a, Result<Review, String>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let request = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: Some(vec![audience.to_owned()]),
                },
                ..TokenReview::default()
            };
            match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &request)).await {
                Err(_) => Err(format!("the TokenReview took longer than {:?}", self.timeout)),
                Ok(Err(error)) => Err(format!("the TokenReview failed: {error}")),
                Ok(Ok(answer)) => Ok(review_of(answer)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn answered(status: TokenReviewStatus) -> Review {
        review_of(TokenReview { status: Some(status), ..TokenReview::default() })
    }

    #[test]
    fn a_review_status_is_read_as_accepted_or_rejected() {
        let accepted = answered(TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["kfp-operator-events".into()]),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:ml:kfp".into()),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        });
        assert_eq!(
            accepted,
            Review::Authenticated {
                username: "system:serviceaccount:ml:kfp".into(),
                audiences: vec!["kfp-operator-events".into()]
            }
        );
        let expired = answered(TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token has expired".into()),
            ..TokenReviewStatus::default()
        });
        assert_eq!(expired, Review::Rejected { reason: "token has expired".into() });
        assert_eq!(
            review_of(TokenReview::default()),
            Review::Rejected { reason: "not authenticated".into() }
        );
    }
}
