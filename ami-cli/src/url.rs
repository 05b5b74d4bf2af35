//! `ami://USER:SECRET@HOST:PORT` (and `amis://` for TLS), parsed by the `url` crate.
//!
//! The secret never reaches a message: `Display` and `Debug` leave it out, and a URL that
//! does not parse is shown with its secret replaced by `***` (or not at all when the secret
//! cannot be told apart from the rest).

use ami_proto::Secret;
use std::fmt;
use url::{Host, Url};

/// Port when the URL names none: Asterisk's `manager.conf` defaults.
const PLAIN_PORT: u16 = 5038;
const TLS_PORT: u16 = 5039;

/// A parsed server URL. `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    pub(crate) tls: bool,
    pub(crate) user: String,
    pub(crate) secret: Secret,
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl ServerUrl {
    /// `host:port` as a socket address string (IPv6 in brackets).
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amis" } else { "ami" };
        write!(f, "{scheme}://{}@{}", self.user, self.authority())
    }
}

/// What is wrong with a server URL. Nothing here holds text from the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlProblem {
    /// Nothing at all: `--server ''`, or an empty entry of a list (`a,b,`, `a,,b`).
    #[error("it is empty (in a list: a comma at its start or end, or two in a row)")]
    Empty,
    /// The `url` crate refused it (bad port, bad IPv6 literal, no scheme...).
    #[error(transparent)]
    Syntax(#[from] url::ParseError),
    /// Not `ami` or `amis`.
    #[error("the scheme must be ami:// or amis://")]
    Scheme,
    /// No `USER:SECRET@`.
    #[error("it needs USER:SECRET@ before the host")]
    NoCredentials,
    /// A `%` not followed by two hex digits in the user or the secret.
    #[error("a % in the user or secret must be followed by two hex digits (write %25 for %)")]
    BadEscape,
    /// The user or secret decode to bytes that are not UTF-8.
    #[error("the user or secret is not UTF-8 once %-decoded")]
    NotUtf8,
    /// `ami://u:p@:5038`.
    #[error("it has no host")]
    NoHost,
    /// A path other than `/`, a query or a fragment.
    #[error("it has a path, query or fragment; an AMI URL ends after HOST:PORT")]
    Extra,
}

/// A server URL that cannot be used, with the URL shown without its secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad server URL{}: {problem}{}", shown.as_ref().map(|s| format!(" {s}")).unwrap_or_default(), if *cut { COMMA_HINT } else { "" })]
pub(crate) struct UrlError {
    /// The URL with the secret replaced by `***`; `None` when the secret's place cannot be
    /// found (then nothing of the URL is shown).
    pub(crate) shown: Option<String>,
    /// What is wrong.
    pub(crate) problem: UrlProblem,
    /// It looks like a piece of a URL cut at a comma (`--server` and `AMI_URL` are lists):
    /// `SCHEME://...` with a port that is not one and no `@` to end a secret, which is what
    /// a raw comma in a secret leaves of `ami://user:pa,ss@host` (its user read as the host,
    /// the start of its secret as the port). Not a bare host name, a bad IPv6 literal or any
    /// other syntax error a cut cannot make.
    pub(crate) cut: bool,
}

/// Said after a [`UrlError`] whose URL looks cut at a comma.
const COMMA_HINT: &str =
    " (a comma splits a list of URLs: a comma in a user or secret is written %2C)";

/// The raw URL with the text between `USER:` and the last `@` replaced by `***`. The last
/// `@` because a secret may hold `@`, `/`, `?` or `#` (badly escaped) itself.
fn redact(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    let (userinfo, host) = rest.rsplit_once('@')?;
    match userinfo.split_once(':') {
        Some((user, _)) => Some(format!("{scheme}://{user}:***@{host}")),
        // No secret given: nothing to hide, and `***` would suggest one.
        None => Some(format!("{scheme}://{userinfo}@{host}")),
    }
}

fn has_bad_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn decode(s: &str) -> Result<String, UrlProblem> {
    if has_bad_escape(s) {
        return Err(UrlProblem::BadEscape);
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| UrlProblem::NotUtf8)
}

fn parse(raw: &str) -> Result<ServerUrl, UrlProblem> {
    if raw.is_empty() {
        return Err(UrlProblem::Empty);
    }
    let url = Url::parse(raw)?;
    let tls = match url.scheme() {
        "ami" => false,
        "amis" => true,
        _ => return Err(UrlProblem::Scheme),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(UrlProblem::Extra);
    }
    let secret = url.password().ok_or(UrlProblem::NoCredentials)?;
    let (user, secret) = (decode(url.username())?, decode(secret)?);
    if user.is_empty() {
        return Err(UrlProblem::NoCredentials);
    }
    let host = match url.host() {
        Some(Host::Ipv6(a)) => a.to_string(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Domain(d)) if !d.is_empty() => d.to_string(),
        _ => return Err(UrlProblem::NoHost),
    };
    Ok(ServerUrl {
        tls,
        user,
        secret: Secret::new(secret),
        host,
        port: url
            .port()
            .unwrap_or(if tls { TLS_PORT } else { PLAIN_PORT }),
    })
}

impl std::str::FromStr for ServerUrl {
    type Err = UrlError;
    fn from_str(raw: &str) -> Result<Self, UrlError> {
        parse(raw).map_err(|problem| UrlError {
            shown: redact(raw),
            cut: problem == UrlProblem::Syntax(url::ParseError::InvalidPort)
                && raw.contains("://")
                && !raw.contains('@'),
            problem,
        })
    }
}

/// clap's parser for `--server` / `AMI_URL`. A plain `FromStr` parser would make clap echo
/// the whole value ("invalid value '…'"), secret included; this one reports only
/// [`UrlError`]'s text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerUrlParser;

impl clap::builder::TypedValueParser for ServerUrlParser {
    type Value = ServerUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ServerUrl, clap::Error> {
        let message = match value.to_str().map(str::parse::<ServerUrl>) {
            Some(Ok(url)) => return Ok(url),
            Some(Err(e)) => format!("{e} (from --server or AMI_URL)\n"),
            None => "the server URL (--server or AMI_URL) is not UTF-8\n".to_string(),
        };
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
    }
}

/// The environment variable that gives the servers when no `--server` is on the command
/// line.
pub(crate) const ENV: &str = "AMI_URL";

/// The servers `AMI_URL` names (`value`: its value, `None` when unset), for a command that
/// connects and was given no `--server`. Unset or empty is no server (a service file's
/// `Environment=AMI_URL=` clears it); otherwise a comma-separated list, each URL checked as
/// `--server` checks it. The error is one line that never holds a secret.
pub(crate) fn from_env(value: Option<&std::ffi::OsStr>) -> Result<Vec<ServerUrl>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let text = value
        .to_str()
        .ok_or_else(|| format!("the server URL ({ENV}) is not UTF-8"))?;
    text.split(',')
        .map(|one| {
            one.parse::<ServerUrl>()
                .map_err(|e| format!("{e} (from {ENV})"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ServerUrl {
        s.parse().unwrap()
    }

    fn err(s: &str) -> UrlError {
        match s.parse::<ServerUrl>() {
            Ok(u) => panic!("{s} parsed as {u}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_plain_and_tls_with_default_ports() {
        let u = ok("ami://admin:amp111@127.0.0.1:5038");
        assert_eq!(
            (u.user.as_str(), u.secret.expose(), u.host.as_str(), u.port),
            ("admin", "amp111", "127.0.0.1", 5038)
        );
        let t = ok("amis://a:b@pbx.example");
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("pbx.example", 5039));
        assert_eq!(ok("ami://a:b@h/").port, 5038);
    }

    #[test]
    fn ipv6_literals_keep_their_address_and_port() {
        let u = ok("ami://u:p@[::1]:6000");
        assert_eq!((u.host.as_str(), u.port), ("::1", 6000));
        assert_eq!(u.authority(), "[::1]:6000");
        assert_eq!(u.to_string(), "ami://u@[::1]:6000");
        assert_eq!(ok("ami://u:p@[2001:db8::7]").port, 5038);
    }

    #[test]
    fn unbracketed_ipv6_is_refused_not_misread() {
        let e = err("ami://u:p@::1");
        assert_eq!(e.to_string(), "bad server URL ami://u:***@::1: empty host");
        assert!(matches!(e.problem, UrlProblem::Syntax(_)), "{e}");
    }

    #[test]
    fn a_url_the_url_crate_refuses_names_its_reason_once_in_the_printed_chain() {
        let e = err("ami://u:p@::1");
        let problem: &dyn std::error::Error = &e.problem;
        let mut chain = vec![problem.to_string()];
        let mut next = problem.source();
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        assert_eq!(chain.join(": "), "empty host");
    }

    #[test]
    fn user_and_secret_are_percent_decoded() {
        let u = ok("ami://ad%20min:p%40ss%3Aw%2F@[::1]:6000");
        assert_eq!((u.user.as_str(), u.secret.expose()), ("ad min", "p@ss:w/"));
    }

    #[test]
    fn display_and_debug_hide_the_secret() {
        let u = ok("ami://admin:amp111@h:1");
        assert!(!format!("{u} {u:?}").contains("amp111"));
    }

    #[test]
    fn each_problem_is_named_and_no_error_shows_the_secret() {
        for (bad, problem) in [
            ("http://a:S3cr3t@h", UrlProblem::Scheme),
            ("ami://h:5038", UrlProblem::NoCredentials),
            ("ami://a@h", UrlProblem::NoCredentials),
            ("ami://:S3cr3t@h", UrlProblem::NoCredentials),
            ("ami://a:S3cr3t%zz@h", UrlProblem::BadEscape),
            ("ami://a:S3cr3t%@h", UrlProblem::BadEscape),
            ("ami://a:S3cr3t%ff@h", UrlProblem::NotUtf8),
            ("ami://a:S3cr3t@h/x", UrlProblem::Extra),
            ("ami://a:S3cr3t@h?q", UrlProblem::Extra),
            (
                "ami://a:S3cr3t@h:notaport",
                UrlProblem::Syntax(url::ParseError::InvalidPort),
            ),
        ] {
            let e = err(bad);
            assert_eq!(e.problem, problem, "{bad}");
            let text = e.to_string();
            assert!(!text.contains("S3cr3t"), "{text}");
        }
        assert_eq!(
            err("ami://a:S3cr3t@h:notaport").to_string(),
            "bad server URL ami://a:***@h:notaport: invalid port number"
        );
    }

    #[test]
    fn ami_url_unset_or_empty_names_no_server_and_a_list_is_split_at_commas() {
        use std::ffi::OsStr;
        assert!(from_env(None).unwrap().is_empty());
        assert!(from_env(Some(OsStr::new(""))).unwrap().is_empty());
        let two = from_env(Some(OsStr::new("ami://a:b@h:1,amis://c:d@k"))).unwrap();
        assert_eq!(
            two.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["ami://a@h:1", "amis://c@k:5039"]
        );
    }

    #[test]
    fn an_empty_entry_of_ami_url_is_named_and_the_others_secrets_stay_hidden() {
        use std::ffi::OsStr;
        for list in [
            "ami://a:S3cr3t@h,",
            ",ami://a:S3cr3t@h",
            "ami://a:S3cr3t@h,,x",
        ] {
            let e = from_env(Some(OsStr::new(list))).unwrap_err();
            assert!(e.contains("it is empty") && e.contains("AMI_URL"), "{e}");
            assert!(!e.contains("S3cr3t"), "{e}");
        }
        let e = from_env(Some(OsStr::new("ami://a:b@h,ami://a:S3cr3t@h:x"))).unwrap_err();
        assert_eq!(
            e,
            "bad server URL ami://a:***@h:x: invalid port number (from AMI_URL)"
        );
        assert_eq!(err("").problem, UrlProblem::Empty);
    }

    #[test]
    fn a_url_without_a_secret_is_shown_without_a_mask_for_one() {
        assert_eq!(
            err("ami://admin@pbx").to_string(),
            "bad server URL ami://admin@pbx: it needs USER:SECRET@ before the host"
        );
    }

    #[test]
    fn a_url_cut_at_a_comma_in_its_secret_is_said_to_need_2c() {
        use std::ffi::OsStr;
        let e = from_env(Some(OsStr::new("ami://admin:pa,ssXYZ@h"))).unwrap_err();
        assert!(e.contains("%2C") && !e.contains("ssXYZ"), "{e}");
        // A bad port in a whole URL is not that.
        assert!(!err("ami://a:S3cr3t@h:notaport").to_string().contains("%2C"));
        // Nor a host given without a scheme, or a bad IPv6 literal: no comma cut makes those.
        for not_cut in ["pbx.example.com", "pbx:5038", "ami://[::1", "ami//u:p@h"] {
            let e = err(not_cut).to_string();
            assert!(!e.contains("%2C"), "{not_cut}: {e}");
        }
        let e = from_env(Some(OsStr::new("ami://a:b@h1,pbx2"))).unwrap_err();
        assert!(!e.contains("%2C"), "{e}");
    }

    #[test]
    fn a_url_whose_secret_cannot_be_located_is_not_shown() {
        // Without '@' the "secret" may be read as a port: show nothing of the URL.
        let e = err("ami://admin:S3cr3t");
        assert_eq!(e.shown, None);
        assert!(!e.to_string().contains("S3cr3t"));
        // A secret holding an unescaped '@' or '/' is still replaced whole.
        let e = err("ami://a:S3/cr@3t@h:x");
        assert_eq!(e.shown.as_deref(), Some("ami://a:***@h:x"));
    }
}
