//! The error model shared by every contract.

use std::fmt;

/// A stable, provider-neutral error code. New codes may be added; existing ones never
/// change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The provider or peer is not reachable right now.
    Unavailable,
    /// The operation did not finish in time.
    Timeout,
    /// The caller's identity could not be established.
    Unauthenticated,
    /// The caller is known but not allowed.
    PermissionDenied,
    /// A quota, rate limit or capacity is exhausted.
    ResourceExhausted,
    /// The input is invalid, whatever the state of the system.
    InvalidArgument,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create already exists, or a concurrent change won.
    Conflict,
    /// The system is not in a state where the operation can run.
    FailedPrecondition,
    /// The caller gave up.
    Cancelled,
    /// The operation is not implemented by this provider.
    Unimplemented,
    /// A bug or an unexpected condition.
    Internal,
}

/// One row of the code table: HTTP status, gRPC status code, and whether a retry may help.
struct Row {
    http: u16,
    grpc: u8,
    retryable: bool,
}

impl ErrorCode {
    /// The single table that maps codes to HTTP and gRPC (see `google.rpc.Code`).
    const fn row(self) -> Row {
        let (http, grpc, retryable) = match self {
            ErrorCode::Unavailable => (503, 14, true),
            ErrorCode::Timeout => (504, 4, true),
            ErrorCode::Unauthenticated => (401, 16, false),
            ErrorCode::PermissionDenied => (403, 7, false),
            ErrorCode::ResourceExhausted => (429, 8, true),
            ErrorCode::InvalidArgument => (400, 3, false),
            ErrorCode::NotFound => (404, 5, false),
            ErrorCode::Conflict => (409, 10, false),
            ErrorCode::FailedPrecondition => (412, 9, false),
            ErrorCode::Cancelled => (499, 1, false),
            ErrorCode::Unimplemented => (501, 12, false),
            ErrorCode::Internal => (500, 13, false),
        };
        Row {
            http,
            grpc,
            retryable,
        }
    }

    /// The HTTP status this code maps to.
    pub const fn http_status(self) -> u16 {
        self.row().http
    }

    /// The gRPC status code (`google.rpc.Code` number) this code maps to.
    pub const fn grpc_code(self) -> u8 {
        self.row().grpc
    }

    /// Whether a retry of the same call may succeed by default.
    pub const fn retryable_by_default(self) -> bool {
        self.row().retryable
    }

    /// The code's stable name, as used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a contract call: a stable code, whether retrying may help, a message,
/// the provider that produced it, and the underlying cause.
#[derive(Debug)]
pub struct Error {
    code: ErrorCode,
    retryable: bool,
    message: String,
    provider: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error with the code's default retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            retryable: code.retryable_by_default(),
            message: message.into(),
            provider: None,
            source: None,
        }
    }

    /// Names the provider that produced the error (e.g. `"sqlite"`, `"file"`).
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides the retry hint.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, without provider or cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The provider that produced the error, if known.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(p) = &self.provider {
            write!(f, " ({p})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_codes_to_http_and_grpc() {
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(ErrorCode::Unavailable.grpc_code(), 14);
        assert_eq!(ErrorCode::Timeout.http_status(), 504);
        assert_eq!(ErrorCode::Timeout.grpc_code(), 4);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::InvalidArgument.grpc_code(), 3);
        assert_eq!(ErrorCode::ResourceExhausted.http_status(), 429);
    }

    #[test]
    fn retry_hint_defaults_from_the_code_and_can_be_overridden() {
        assert!(Error::new(ErrorCode::Unavailable, "down").is_retryable());
        assert!(!Error::new(ErrorCode::InvalidArgument, "bad").is_retryable());
        assert!(
            !Error::new(ErrorCode::Unavailable, "down")
                .with_retryable(false)
                .is_retryable()
        );
    }

    #[test]
    fn display_names_code_provider_message_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::new(ErrorCode::NotFound, "config omnirelay.toml")
            .with_provider("file")
            .with_source(io);
        assert_eq!(
            e.to_string(),
            "not_found (file): config omnirelay.toml: no such file"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
