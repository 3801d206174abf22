//! Integration tests: the real binary, real processes, real signals, real sockets on 127.0.0.1.
//! One test binary; one module per feature.

mod scenario;

mod cluster;
mod config_errors;
mod container;
mod control;
mod drop_in;
mod footprint;
mod hardening;
mod http;
mod interpreters;
mod layers;
mod lifecycle;
mod logs;
mod monit;
mod node_apps;
pub mod node_cluster;
mod node_versions;
mod npm;
mod order;
#[cfg(feature = "otel")]
mod otel;
#[cfg(feature = "plus")]
mod plus;
#[cfg(feature = "plus")]
mod plus_mock;
mod port_sharing;
mod readiness;
mod restart;
mod runtimes;
mod security;
mod serve;
mod ship;
mod stop;
mod triggers;
mod verbs;
