//! `ami://USER:SECRET@HOST:PORT` (and `amis://` for TLS).

use std::fmt;

/// A parsed server URL. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    pub(crate) tls: bool,
    pub(crate) user: String,
    pub(crate) secret: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amis" } else { "ami" };
        write!(f, "{scheme}://{}@{}:{}", self.user, self.host, self.port)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad %-escape in URL".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URL credentials are not UTF-8".to_string())
}

impl std::str::FromStr for ServerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("ami://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("amis://") {
            (true, r)
        } else {
            return Err("URL must start with ami:// or amis://".into());
        };
        let rest = rest.trim_end_matches('/');
        let (cred, hostport) = rest
            .rsplit_once('@')
            .ok_or("URL needs USER:SECRET@ before the host")?;
        let (user, secret) = cred.split_once(':').ok_or("URL needs USER:SECRET")?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (hostport, if tls { 5039 } else { 5038 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        Ok(ServerUrl {
            tls,
            user: percent_decode(user)?,
            secret: percent_decode(secret)?,
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tls_with_default_ports() {
        let u: ServerUrl = "ami://admin:amp111@127.0.0.1:5038".parse().unwrap();
        assert_eq!(
            (u.user.as_str(), u.secret.as_str(), u.port),
            ("admin", "amp111", 5038)
        );
        let t: ServerUrl = "amis://a:b@pbx.example".parse().unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 5039);
    }

    #[test]
    fn secret_with_reserved_characters_is_percent_decoded() {
        let u: ServerUrl = "ami://admin:p%40ss%3Aw@[::1]:6000".parse().unwrap();
        assert_eq!(u.secret, "p@ss:w");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 6000);
    }

    #[test]
    fn display_and_debug_hide_the_secret() {
        let u: ServerUrl = "ami://admin:amp111@h:1".parse().unwrap();
        assert!(!format!("{u} {u:?}").contains("amp111"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "http://a:b@h",
            "ami://h:5038",
            "ami://a@h",
            "ami://a:b@h:notaport",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
    }
}
