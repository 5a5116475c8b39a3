//! Error types of the runtime. Each converts into `std::io::Error` carrying
//! the errno Linux gives for the same mistake.

use std::any::Any;
use std::fmt;
use std::io;

/// Why [`JoinHandle::join`](crate::JoinHandle::join) returned no value.
pub enum JoinError {
    /// The task panicked; the payload is the value passed to `panic!`.
    Panic(Box<dyn Any + Send + 'static>),
    /// The task was cancelled before it finished (the runtime shut down).
    Cancelled,
    /// The task was killed by a signal (SIGKILL, or a signal whose default
    /// action terminates): its stack was unwound.
    Killed(crate::signal::Signal),
}

impl JoinError {
    /// True if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panic(_))
    }

    /// True if the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// The panic payload, if the task panicked.
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            JoinError::Panic(p) => Some(p),
            JoinError::Cancelled | JoinError::Killed(_) => None,
        }
    }

    /// The panic message when the payload is a string (`panic!("..")`).
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panic(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            JoinError::Cancelled | JoinError::Killed(_) => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panic(_) => match self.panic_message() {
                Some(m) => write!(f, "JoinError::Panic({m:?})"),
                None => f.write_str("JoinError::Panic(..)"),
            },
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Killed(s) => write!(f, "JoinError::Killed({s:?})"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panic(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Killed(s) => write!(f, "task was killed by {s}"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        // A cancelled task is like a call interrupted by shutdown: ECANCELED.
        let errno = match e {
            JoinError::Panic(_) => libc::EIO,
            JoinError::Cancelled | JoinError::Killed(_) => libc::ECANCELED,
        };
        io::Error::from_raw_os_error(errno)
    }
}

/// An `io::Error` with Linux's errno and, for the reader, a message.
pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}
