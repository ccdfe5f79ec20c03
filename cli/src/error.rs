//! The command line's one error type: a message for the operator and the
//! exit code that goes with it.

use std::fmt;

/// What went wrong, said so an operator can act on it.
#[derive(Debug)]
pub struct Failure {
    /// One line (or a few) for stderr, without the `kafka-retry:` prefix.
    pub message: String,
    /// Process exit code: 2 for bad arguments, 1 for everything else.
    pub code: i32,
}

impl Failure {
    /// Bad input from the command line (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    /// A broker, topic or data problem (exit code 1).
    pub fn run(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    /// `context: error` from a library error.
    pub fn kafka(context: impl fmt::Display, e: kafka_retry::Error) -> Self {
        Failure::run(format!("{context}: {e}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::run(format!("writing output: {e}"))
    }
}

/// The command line's result type.
pub type Result<T> = std::result::Result<T, Failure>;
