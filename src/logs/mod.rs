//! Logs: every app's stdout/stderr, framed into whole lines, formatted, and written by one
//! writer that owns the runtime's stdout and stderr. The runtime's own events take the same path.

pub mod datefmt;
pub mod file;
pub mod format;
pub mod framer;
#[cfg(test)]
mod fuzz;
pub mod hub;
pub mod layer;
pub mod recent;
pub mod safe_open;

pub use format::{AppTag, Decoration, Event, Formatter, Level, OutputFormat, Stamp, Stream};
pub use framer::Framer;
pub use hub::LogHub;
