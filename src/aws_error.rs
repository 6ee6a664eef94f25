//! Failed AWS SDK calls, described for an operator and classified for the
//! caller.
//!
//! The SDK's own `Display` of an error is one word ("service error",
//! "response error") and its source chain does not carry the HTTP status:
//! a wrong endpoint answering an empty 404 used to read `response error:
//! unhandled error: Error`. [`describe`] prints the whole chain with the
//! status in front (`HTTP 404 Not Found: response error: …`), and
//! [`AwsError`] keeps that text together with whether retrying can help.

use std::fmt;

use aws_config::retry::ErrorKind;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// Error codes that a retry can outlast, whatever their HTTP status:
/// throttling (Kinesis answers ListShards' 100/s limit with a 400
/// LimitExceededException), a stream still being created or updated
/// (ResourceInUseException), and the service's own transient failures.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "KMSThrottlingException",
    "ResourceInUseException",
    "ExpiredNextTokenException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// One failed AWS call: its description (with the HTTP status when there
/// was a response) and whether it is worth retrying.
#[derive(Debug, Clone)]
pub struct AwsError {
    description: String,
    code: Option<String>,
    http_status: Option<u16>,
    transient: bool,
}

impl AwsError {
    /// Describes and classifies an SDK error (any service's: `SdkError` is
    /// one type shared by every AWS SDK crate).
    pub fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        AwsError {
            description: describe(err),
            code: err.code().map(str::to_owned),
            http_status: err.raw_response().map(|r| r.status().as_u16()),
            transient: is_transient(err),
        }
    }

    /// True when the same call may succeed later: a timeout, a connection
    /// error, throttling, a 5xx. False for what only a change of settings,
    /// permissions or infrastructure fixes: a stream that does not exist,
    /// access denied, bad or missing credentials, a wrong endpoint.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The service's error code (e.g. `ResourceNotFoundException`), if it
    /// sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The HTTP status of the response, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

// No `source`: the description already holds the SDK's whole chain, and
// repeating it through `source` would print it twice in an anyhow chain.
impl std::error::Error for AwsError {}

/// The SDK error's whole source chain on one line, led by the HTTP status
/// when the SDK kept the response (service and response errors).
pub fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + 'static,
{
    let mut s = String::new();
    if let Some(raw) = err.raw_response() {
        let status = raw.status().as_u16();
        s.push_str(&format!("HTTP {status}"));
        if let Some(reason) = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
        {
            s.push(' ');
            s.push_str(reason);
        }
        s.push_str(": ");
    }
    s.push_str(&chain(err));
    s
}

/// `Display` of an error and of each of its sources, joined by ": ",
/// leaving out a source whose text its parent already showed (the SDK's
/// service errors display their inner error's message too).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut src = err.source();
    while let Some(e) = src {
        let text = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = e.source();
    }
    parts.join(": ")
}

fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        // The request could not even be built: no region, a bad endpoint
        // URL, an invalid parameter. The same request fails the same way.
        SdkError::ConstructionFailure(_) => false,
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => {
            if d.is_io() || d.is_timeout() {
                return true;
            }
            // Unclassified dispatch failures are transient only when the
            // connector says so; the others are what happens before a
            // request leaves: no credentials in the chain, an endpoint that
            // cannot be resolved.
            matches!(
                d.as_other(),
                Some(
                    ErrorKind::TransientError | ErrorKind::ThrottlingError | ErrorKind::ServerError
                )
            )
        }
        SdkError::ResponseError(_) | SdkError::ServiceError(_) => {
            if err.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
                return true;
            }
            match err.raw_response().map(|r| r.status().as_u16()) {
                Some(status) => status >= 500 || status == 429 || status == 408,
                None => false,
            }
        }
        // A variant added in a later SDK: retrying is the safe default,
        // the caller logs every attempt.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::list_shards::ListShardsError;
    use aws_sdk_kinesis::types::error::ResourceNotFoundException;
    use aws_smithy_types::body::SdkBody;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().expect("a valid status"), SdkBody::empty())
    }

    fn service(err: ListShardsError, status: u16) -> SdkError<ListShardsError, HttpResponse> {
        SdkError::service_error(err, response(status))
    }

    fn unhandled(code: Option<&str>, status: u16) -> SdkError<ListShardsError, HttpResponse> {
        let mut meta = aws_sdk_kinesis::error::ErrorMetadata::builder();
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let err = ListShardsError::generic(meta.build());
        service(err, status)
    }

    #[test]
    fn the_http_status_leads_the_description() {
        // What a wrong endpoint answering an empty 404 gives: no code, no
        // message, only the status to go by.
        let e = AwsError::from_sdk(&unhandled(None, 404));
        let text = e.to_string();
        assert!(text.starts_with("HTTP 404 Not Found: "), "{text}");
        assert_eq!(e.http_status(), Some(404));
        assert!(!e.is_transient(), "{text}");
    }

    #[test]
    fn a_service_error_names_its_code_and_message_once() {
        const MESSAGE: &str = "Stream nope under account 000000000000 not found.";
        // What the deserializer fills in for a real response.
        let nf = ResourceNotFoundException::builder()
            .message(MESSAGE)
            .meta(
                aws_sdk_kinesis::error::ErrorMetadata::builder()
                    .code("ResourceNotFoundException")
                    .message(MESSAGE)
                    .build(),
            )
            .build();
        let e = AwsError::from_sdk(&service(
            ListShardsError::ResourceNotFoundException(nf),
            400,
        ));
        let text = e.to_string();
        assert!(text.contains("HTTP 400 Bad Request"), "{text}");
        assert_eq!(
            text.matches("Stream nope under account").count(),
            1,
            "{text}"
        );
        assert_eq!(e.code(), Some("ResourceNotFoundException"));
        assert!(!e.is_transient());
    }

    #[test]
    fn throttling_timeouts_and_5xx_are_transient_the_rest_permanent() {
        for (code, status, transient) in [
            (Some("LimitExceededException"), 400, true),
            (Some("ResourceInUseException"), 400, true),
            (Some("ThrottlingException"), 400, true),
            (None, 500, true),
            (None, 503, true),
            (None, 429, true),
            (Some("AccessDeniedException"), 400, false),
            (Some("UnrecognizedClientException"), 400, false),
            (Some("InvalidSignatureException"), 403, false),
            (Some("ExpiredTokenException"), 400, false),
            (None, 403, false),
            (None, 404, false),
        ] {
            let e = AwsError::from_sdk(&unhandled(code, status));
            assert_eq!(e.is_transient(), transient, "{code:?} {status}: {e}");
        }
        let timeout: SdkError<ListShardsError, HttpResponse> =
            SdkError::timeout_error("operation timed out after 30s");
        assert!(AwsError::from_sdk(&timeout).is_transient());
        let io: SdkError<ListShardsError, HttpResponse> = SdkError::dispatch_failure(
            aws_sdk_kinesis::error::ConnectorError::io("connection refused".into()),
        );
        assert!(AwsError::from_sdk(&io).is_transient());
        let no_credentials: SdkError<ListShardsError, HttpResponse> =
            SdkError::dispatch_failure(aws_sdk_kinesis::error::ConnectorError::other(
                "no credentials in the provider chain".into(),
                None,
            ));
        assert!(!AwsError::from_sdk(&no_credentials).is_transient());
        let no_region: SdkError<ListShardsError, HttpResponse> =
            SdkError::construction_failure("a region must be set");
        let e = AwsError::from_sdk(&no_region);
        assert!(!e.is_transient());
        assert!(e.to_string().contains("a region must be set"), "{e}");
    }
}
