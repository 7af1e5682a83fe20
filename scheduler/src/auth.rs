//! [`Guard`]: with `SCHEDULER_AUTH_TOKEN` set, a call without `authorization: Bearer <token>`
//! is refused with UNAUTHENTICATED (reason `unauthenticated`) before it reaches any service.
//! The scheduler port is then no back door around the gateway's keys and limits.

use llmgw_proto::SchedulerToken;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::SchedulerError;

/// The interceptor; without a token it lets everything through.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Option<SchedulerToken>,
}

impl Guard {
    pub fn new(token: Option<SchedulerToken>) -> Self {
        Self { token }
    }
}

impl Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if token.accepts(presented) {
            Ok(request)
        } else {
            Err(Status::from(SchedulerError::Unauthenticated))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_missing_and_wrong_tokens_with_unauthenticated() {
        let mut guard = Guard::new(Some("t0ken".parse().unwrap()));
        let refused = guard.call(Request::new(())).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            refused.metadata().get("x-llmgw-reason").unwrap(),
            "unauthenticated"
        );
        let mut wrong = Request::new(());
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert!(guard.call(wrong).is_err());
        let mut right = Request::new(());
        right
            .metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        assert!(guard.call(right).is_ok());
        assert!(Guard::new(None).call(Request::new(())).is_ok());
    }
}
