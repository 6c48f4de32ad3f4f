//! Errors of the worker pool, each with the HTTP status a client receives.

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

/// Why a dispatch or the pool itself failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Every worker is at its in-flight limit and the wait queue is full.
    #[error("all workers are busy and the wait queue is full")]
    Overloaded,
    /// The request waited in the queue longer than the queue timeout.
    #[error("no worker became free within {0:?}")]
    QueueTimeout(Duration),
    /// The pool is shutting down and takes no new requests.
    #[error("the worker pool is shutting down")]
    ShuttingDown,
    /// The worker died (or dropped the connection) before answering.
    #[error("worker {worker} failed while handling the request: {detail}")]
    Crashed {
        /// Worker slot index.
        worker: usize,
        /// What the connection reported.
        detail: String,
    },
    /// No response headers arrived within the request timeout; the worker was killed.
    #[error("worker {worker} sent no response headers within {timeout:?}")]
    Timeout {
        /// Worker slot index.
        worker: usize,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// The client's request body failed while it was being forwarded.
    #[error("the request body could not be forwarded: {0}")]
    RequestBody(String),
    /// The invocation cannot be expressed on the wire (bad entry or meta).
    #[error("invalid invocation: {0}")]
    InvalidInvocation(String),
    /// The Node.js process could not be spawned.
    #[error("could not spawn worker {worker} ({node}): {source}")]
    Spawn {
        /// Worker slot index.
        worker: usize,
        /// The node binary used.
        node: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker exited before it became ready.
    #[error("worker {worker} exited during startup ({status})")]
    StartExited {
        /// Worker slot index.
        worker: usize,
        /// Exit status as text.
        status: String,
    },
    /// The worker did not answer its health check in time.
    #[error("worker {worker} did not become ready within {timeout:?}")]
    StartTimeout {
        /// Worker slot index.
        worker: usize,
        /// The configured startup timeout.
        timeout: Duration,
    },
    /// The run directory (sockets, bridge script) could not be prepared.
    #[error("could not prepare the worker run directory {path}: {source}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid worker pool configuration: {0}")]
    Config(String),
}

impl ferry_http::HttpError for WorkerError {
    fn status(&self) -> StatusCode {
        match self {
            WorkerError::Overloaded | WorkerError::QueueTimeout(_) | WorkerError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WorkerError::Crashed { .. } => StatusCode::BAD_GATEWAY,
            WorkerError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            WorkerError::RequestBody(_) => StatusCode::BAD_REQUEST,
            WorkerError::InvalidInvocation(_)
            | WorkerError::Spawn { .. }
            | WorkerError::StartExited { .. }
            | WorkerError::StartTimeout { .. }
            | WorkerError::RunDir { .. }
            | WorkerError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_http::HttpError;

    #[test]
    fn statuses() {
        assert_eq!(WorkerError::Overloaded.status(), 503);
        assert_eq!(WorkerError::ShuttingDown.status(), 503);
        let crashed = WorkerError::Crashed {
            worker: 0,
            detail: "x".into(),
        };
        assert_eq!(crashed.status(), 502);
        let timeout = WorkerError::Timeout {
            worker: 0,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.status(), 504);
        assert_eq!(WorkerError::Config("x".into()).status(), 500);
        // The client sees the reason phrase, never the internal detail.
        assert_eq!(crashed.public_message(), "Bad Gateway");
    }
}
