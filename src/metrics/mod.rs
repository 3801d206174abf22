//! Metrics for readers outside the runtime.
//!
//! Resource numbers are not read here: the one /proc reader is `process::tree`, and the one
//! sampler is `supervisor::sampler`, whose numbers land in the status table that every reader
//! (this module included) shares. Nothing here can stop or restart anything.
