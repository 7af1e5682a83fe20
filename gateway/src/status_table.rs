//! The one table from scheduler gRPC codes to HTTP statuses. Exhaustive on purpose: a new
//! code forces a decision here, and each row has its own test.

use axum::http::StatusCode;
use tonic::Code;

/// HTTP status for a scheduler call that ended with `code`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // The client went away; nobody reads this, but logs and metrics do (nginx's 499).
        Code::Cancelled => client_closed_request(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // The backend's answer was unusable: a bad gateway, not our failure.
        Code::Unknown | Code::DataLoss => StatusCode::BAD_GATEWAY,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// 499, used only for accounting of requests whose client left.
pub fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! row {
        ($name:ident, $code:expr, $status:expr) => {
            #[test]
            fn $name() {
                assert_eq!(http_status($code).as_u16(), $status);
            }
        };
    }

    row!(ok_is_200, Code::Ok, 200);
    row!(cancelled_is_499, Code::Cancelled, 499);
    row!(invalid_argument_is_400, Code::InvalidArgument, 400);
    row!(failed_precondition_is_400, Code::FailedPrecondition, 400);
    row!(out_of_range_is_400, Code::OutOfRange, 400);
    row!(unauthenticated_is_401, Code::Unauthenticated, 401);
    row!(permission_denied_is_403, Code::PermissionDenied, 403);
    row!(not_found_is_404, Code::NotFound, 404);
    row!(already_exists_is_409, Code::AlreadyExists, 409);
    row!(aborted_is_409, Code::Aborted, 409);
    row!(resource_exhausted_is_429, Code::ResourceExhausted, 429);
    row!(unknown_is_502, Code::Unknown, 502);
    row!(data_loss_is_502, Code::DataLoss, 502);
    row!(unavailable_is_503, Code::Unavailable, 503);
    row!(deadline_exceeded_is_504, Code::DeadlineExceeded, 504);
    row!(unimplemented_is_501, Code::Unimplemented, 501);
    row!(internal_is_500, Code::Internal, 500);
}
