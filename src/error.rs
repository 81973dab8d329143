//! The one error type of the core, with whose fault it is.

use std::fmt;

/// Whose fault an error is, and so which JavaScript error class it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
  /// The caller passed a value of the wrong type (`TypeError`).
  Type,
  /// The caller passed a number out of range (`RangeError`).
  Range,
  /// Redis refused the command for this data (e.g. `WRONGTYPE`, not an integer).
  Command,
  /// A loader threw, rejected or timed out.
  Loader,
  /// The adapter was closed.
  Closed,
  /// Anything else: our fault or the environment's.
  Internal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheError {
  pub kind: ErrorKind,
  pub message: String,
}

impl CacheError {
  pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
    Self { kind, message: message.into() }
  }
}

impl fmt::Display for CacheError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&self.message)
  }
}

impl std::error::Error for CacheError {}
