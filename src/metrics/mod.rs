//! Resource sampling of app process trees, read straight from /proc.
//!
//! Cheap by construction: a tree is walked from its root through
//! `/proc/<pid>/task/<tid>/children`, so a sample costs a few small reads per process of the
//! app, never a scan of the whole system. Nothing here can stop or restart anything: callers
//! decide what a number means.

pub mod proc;
