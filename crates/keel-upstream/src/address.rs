//! Whether an upstream's host is on this machine or network, or out on the internet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Name suffixes of hosts on a local network (mDNS, home routers, cloud-internal DNS, RFC 8375,
/// RFC 6761).
const LOCAL_SUFFIXES: [&str; 5] = [".local", ".lan", ".internal", ".home.arpa", ".localhost"];

/// Whether `host` (a name, an IP address, or a bracketed IPv6 literal) is outside loopback and
/// private networks.
///
/// Local: IPv4 loopback, RFC 1918 private, link-local, shared (CGNAT, `100.64.0.0/10`) and
/// unspecified addresses; IPv6 loopback, unique local (`fc00::/7`), link-local (`fe80::/10`),
/// unspecified and IPv4-mapped local addresses; the names `localhost`, single-label names (no
/// dot, e.g. `ollama` in Docker) and names ending in `.local`, `.lan`, `.internal`, `.home.arpa`
/// or `.localhost`. Every other address and name is remote.
pub fn is_remote_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => !is_local_v4(ip),
        Ok(IpAddr::V6(ip)) => !is_local_v6(ip),
        Err(_) => !is_local_name(bare),
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let [first, second, ..] = ip.octets();
    let shared = first == 100 && (second & 0xc0) == 64;
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || shared
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_local_v4(v4);
    }
    ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local() || ip.is_unspecified()
}

fn is_local_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || !name.contains('.') || LOCAL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_local_or_remote() {
        let table = [
            ("127.0.0.1", false),
            ("127.8.9.10", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("172.32.0.1", true),
            ("192.168.1.20", false),
            ("169.254.1.1", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("100.128.0.1", true),
            ("100.63.255.255", true),
            ("0.0.0.0", false),
            ("8.8.8.8", true),
            ("[::1]", false),
            ("::1", false),
            ("[fd12:3456::1]", false),
            ("[fc00::1]", false),
            ("[fe80::1]", false),
            ("[febf::1]", false),
            ("[fec0::1]", true),
            ("[::ffff:192.168.0.1]", false),
            ("[::ffff:8.8.8.8]", true),
            ("[2606:4700::1111]", true),
            ("localhost", false),
            ("LOCALHOST", false),
            ("ollama", false),
            ("gpu-box.local", false),
            ("nas.lan", false),
            ("vllm.internal", false),
            ("ollama.svc.cluster.internal", false),
            ("printer.home.arpa", false),
            ("app.localhost", false),
            ("api.openai.com", true),
            ("api.anthropic.com.", true),
            ("localhost.example.com", true),
            ("example.lan.com", true),
        ];
        for (host, remote) in table {
            assert_eq!(is_remote_host(host), remote, "{host}");
        }
    }
}
