//! Which `Host` a request may name: the defence against DNS rebinding, where a web page on a
//! name the attacker controls re-points that name at 127.0.0.1 (or the pod's address) and
//! reads the API from a developer's browser, as its own origin.
//!
//! A rebinding request always carries the attacker's host name, never an address. So: an IP
//! address (any; clients that connect by address, kubelet and Prometheus included), `localhost`
//! and `*.localhost` (loopback by definition, RFC 6761), and the names an operator lists in
//! `PM_RUNTIME_WEB_HOSTS` (comma-separated; `*` allows any) are accepted; a request without a
//! `Host` (HTTP/1.0) too. The probes skip the check (they reveal nothing).

use std::net::IpAddr;

/// The names `PM_RUNTIME_WEB_HOSTS` allows (lower case, no trailing dot).
pub fn parse_allow_list(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).filter(|h| !h.is_empty()).collect()
}

/// Whether a request naming `host` (the `Host` header as sent, port included) is served.
pub fn allowed(host: Option<&str>, allow: &[String]) -> bool {
    let Some(host) = host.map(str::trim) else { return true };
    if allow.iter().any(|a| a == "*") {
        return true;
    }
    // `[v6]:port`, `[v6]`, `name:port`, `v4:port`, `name`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    !name.is_empty() && allow.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_loopback_names_pass_other_names_must_be_listed() {
        let none: Vec<String> = Vec::new();
        let listed = parse_allow_list(Some(" Metrics.Example.com , app.svc.cluster.local.,"));
        assert_eq!(listed, ["metrics.example.com", "app.svc.cluster.local"]);
        for (host, with_none, with_listed) in [
            (None, true, true),
            (Some("127.0.0.1:9615"), true, true),
            (Some("127.0.0.1"), true, true),
            (Some("10.1.2.3:9615"), true, true),
            (Some("[::1]:9615"), true, true),
            (Some("[::1]"), true, true),
            (Some("localhost:9615"), true, true),
            (Some("LOCALHOST"), true, true),
            (Some("web.localhost:1"), true, true),
            (Some("evil.example:9615"), false, false),
            (Some("evil.example"), false, false),
            (Some("127.0.0.1.evil.example"), false, false),
            (Some("localhost.evil.example"), false, false),
            (Some("metrics.example.com:9615"), false, true),
            (Some("METRICS.example.com."), false, true),
            (Some("app.svc.cluster.local"), false, true),
            (Some("[evil]:1"), false, false),
            (Some("[::1]x"), false, false),
            (Some(""), false, false),
            (Some(":9615"), false, false),
        ] {
            assert_eq!(allowed(host, &none), with_none, "{host:?}");
            assert_eq!(allowed(host, &listed), with_listed, "{host:?} listed");
        }
        assert!(allowed(Some("anything.example"), &parse_allow_list(Some("*"))));
    }
}
