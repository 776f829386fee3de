use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn every_internal_range_is_refused_and_public_addresses_pass() {
    let cases = [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("2002:c0a8:101::1", "private"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fd00:ec2::254", "metadata"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.255", "documentation"),
        ("2001:db8::1", "documentation"),
        ("2001:db8:ffff::1", "documentation"),
        ("168.63.129.16", "metadata"),
        ("::ffff:168.63.129.16", "metadata"),
        ("64:ff9b:1::a00:1", "NAT64 local-use"),
        ("64:ff9b:1:ffff::808:808", "NAT64 local-use"),
        ("::ffff:203.0.113.9", "documentation"),
        ("2002:c633:6401::1", "documentation"),
    ];
    for (address, why) in cases {
        let refusal = refused(ip(address)).unwrap_or_else(|| panic!("{address} passed"));
        assert!(refusal.contains(why), "{address}: {refusal}");
    }
    for public in [
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        // Next to the new ranges, and outside them.
        "192.0.3.1",
        "198.51.101.1",
        "203.0.114.1",
        "168.63.129.17",
        "2001:db9::1",
        "64:ff9b:2::1",
        "64:ff9b::808:808",
    ] {
        assert_eq!(refused(ip(public)), None, "{public}");
    }
}

#[test]
fn ipv4_spelled_as_inet_aton_reads_it_is_that_address() {
    let loopback = Some(Ipv4Addr::new(127, 0, 0, 1));
    for spelled in [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0x7f.0.0.1",
        "127.0.1",
    ] {
        assert_eq!(loose_ipv4(spelled), loopback, "{spelled}");
    }
    assert_eq!(loose_ipv4("hooks.example.com"), None);
    assert_eq!(loose_ipv4("256.0.0.1"), None);
    assert_eq!(loose_ipv4("1.2.3.4.5"), None);
    assert_eq!(loose_ipv4("4294967296"), None);
}

#[test]
fn urls_that_cannot_work_are_refused_with_the_reason() {
    let why = |url: &str| target(url).unwrap_err();
    assert!(why("ftp://example.com/").contains("http(s)"));
    assert!(why("https://user:pw@example.com/").contains("credentials"));
    assert!(why("https://example.com/a\nb").contains("control"));
    assert!(why("https:///path").contains("valid URL") || why("https:///path").contains("no host"));
    assert!(why("https://1.2.3.4.5/").contains("not a valid address"));
    let t = target("https://Hooks.Example.com:8443/cb").unwrap();
    assert_eq!(
        (t.host.as_str(), t.ip, t.port),
        ("hooks.example.com", None, 8443)
    );
    assert_eq!(target("http://[::1]/").unwrap().ip, Some(ip("::1")));
    assert_eq!(
        target("http://2130706433/").unwrap().ip,
        Some(ip("127.0.0.1"))
    );
    assert_eq!(target("http://0x7f.1:9/").unwrap().port, 9);
    // A port written must be one, not read as none (and the default used).
    for url in [
        "https://example.com:99999/",
        "https://example.com:0/",
        "http://[::1]:70000/",
    ] {
        assert!(
            why(url).contains("is not 1 to 65535"),
            "{url}: {}",
            why(url)
        );
    }
    assert_eq!(target("http://[::1]:8080/").unwrap().port, 8080);
    assert_eq!(target("http://[::1]/").unwrap().port, 80);
}

#[test]
fn the_allow_list_opens_hosts_and_ranges_only() {
    let allow =
        Allow::parse(&["hooks.internal".into(), "10.20.0.0/16".into(), "::1".into()]).unwrap();
    assert!(check("hooks.internal", ip("10.9.9.9"), &allow).is_ok());
    assert!(check("x", ip("10.20.3.4"), &allow).is_ok());
    assert!(check("x", ip("::1"), &allow).is_ok());
    let refusal = check("x", ip("10.21.0.1"), &allow).unwrap_err();
    assert!(
        refusal.contains("private") && refusal.contains("[callbacks] allow"),
        "{refusal}"
    );
    assert!(check("x", ip("127.0.0.1"), &Allow::default()).is_err());
    assert!(check("x", ip("93.184.216.34"), &Allow::default()).is_ok());
    // The ranges added later open the same way.
    let allow = Allow::parse(&[
        "192.0.2.0/24".into(),
        "2001:db8::/32".into(),
        "64:ff9b:1::/48".into(),
        "168.63.129.16".into(),
        "azure.internal".into(),
    ])
    .unwrap();
    for opened in ["192.0.2.9", "2001:db8::5", "64:ff9b:1::1", "168.63.129.16"] {
        assert!(check("x", ip(opened), &allow).is_ok(), "{opened}");
        assert!(
            check("x", ip(opened), &Allow::default()).is_err(),
            "{opened}"
        );
    }
    assert!(check("azure.internal", ip("168.63.129.16"), &allow).is_ok());
    assert!(check("x", ip("198.51.100.1"), &allow).is_err());
    for bad in ["10.0.0.0/33", "not a host", "10.0.0.0/x", ""] {
        assert!(
            Allow::parse(&[bad.into()])
                .unwrap_err()
                .contains("is neither a host name"),
            "{bad}"
        );
    }
}

#[test]
fn a_bad_allow_entry_is_a_policy_error_naming_it() {
    let error = crate::policy::Policy::from_toml_str("[callbacks]\nallow = [\"10.0.0.0/33\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("callbacks.allow") && error.contains("10.0.0.0/33"),
        "{error}"
    );
    let policy =
        crate::policy::Policy::from_toml_str("[callbacks]\nallow = [\"hooks.internal\"]\n")
            .unwrap();
    assert!(policy.callbacks.host("hooks.internal"));
}
