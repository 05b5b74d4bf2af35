//! Rust names from AMI names: snake_case accessors, PascalCase types and enum variants.

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield",
];

/// Splits `CallerIDNum` into `Caller`, `ID`, `Num`; `Cause-txt` into `Cause`, `txt`.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = if i > 0 { chars[i - 1] } else { ' ' };
        if c.is_ascii_uppercase() && !cur.is_empty() {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            // `IDnum`, `IDton`: Asterisk glues a lower-case word to `ID`.
            let after_id = cur.ends_with('I') && c == 'D';
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower && !after_id)
            {
                out.push(std::mem::take(&mut cur));
            }
        } else if c.is_ascii_lowercase() && cur.ends_with("ID") && prev == 'D' {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Names whose glued acronym no rule splits right.
const SNAKE_OVERRIDES: &[(&str, &str)] = &[
    ("AMIversion", "ami_version"),
    ("CoreCDRenabled", "core_cdr_enabled"),
    ("CoreHTTPenabled", "core_http_enabled"),
    // The header family `ChanVariable(<channel>)`: named as the snapshots' `ChanVariable`.
    ("ChanVariable(*)", "chan_variables"),
];

/// `CallerIDNum` -> `caller_id_num`; keywords get a trailing `_`; a leading digit gets `field_`.
pub fn snake(name: &str) -> String {
    if let Some((_, s)) = SNAKE_OVERRIDES.iter().find(|(n, _)| *n == name) {
        return s.to_string();
    }
    let s = words(name)
        .iter()
        .map(|w| w.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("_");
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("field_{s}")
    } else if KEYWORDS.contains(&s.as_str()) {
        format!("{s}_")
    } else {
        s
    }
}

/// A type name: `AOC-D` -> `AocD`, `NewCallerid` stays.
pub fn type_name(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
    {
        return name.to_string();
    }
    pascal(name)
}

/// An enum variant from a wire value: `Dialing Offhook` -> `DialingOffhook`,
/// `CHAN_START` -> `ChanStart`, `1/1000` -> `N1Over1000`.
pub fn pascal(value: &str) -> String {
    let value = value.replace('/', " Over ");
    let mut out = String::new();
    for w in words(&value) {
        let all_upper = w.chars().all(|c| !c.is_ascii_lowercase());
        let mut cs = w.chars();
        if let Some(first) = cs.next() {
            out.push(first.to_ascii_uppercase());
            let rest: String = cs.collect();
            if all_upper {
                out.push_str(&rest.to_ascii_lowercase());
            } else {
                out.push_str(&rest);
            }
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'N');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_names_follow_word_boundaries() {
        assert_eq!(snake("CallerIDNum"), "caller_id_num");
        assert_eq!(snake("Cause-txt"), "cause_txt");
        assert_eq!(snake("BridgeID"), "bridge_id");
        assert_eq!(snake("DNID"), "dnid");
        assert_eq!(snake("AMAFlags"), "ama_flags");
        assert_eq!(snake("CID-CallingPres"), "cid_calling_pres");
        assert_eq!(snake("T38UdptlEc"), "t38_udptl_ec");
        assert_eq!(snake("Type"), "type_");
        assert_eq!(snake("100rel"), "field_100rel");
        assert_eq!(snake("LocalOne"), "local_one");
        assert_eq!(snake("CallerIDnum"), "caller_id_num");
        assert_eq!(snake("MCallerIDton"), "m_caller_id_ton");
        assert_eq!(snake("ReportXSourceSSRC"), "report_x_source_ssrc");
        assert_eq!(snake("CoreCDRenabled"), "core_cdr_enabled");
    }

    #[test]
    fn variants_and_types_are_pascal_case() {
        assert_eq!(pascal("Dialing Offhook"), "DialingOffhook");
        assert_eq!(pascal("Pre-ring"), "PreRing");
        assert_eq!(pascal("CHAN_START"), "ChanStart");
        assert_eq!(pascal("InUse&Hold"), "InUseHold");
        assert_eq!(pascal("1/1000"), "N1Over1000");
        assert_eq!(pascal("200(SR)"), "N200Sr");
        assert_eq!(pascal("V.21"), "V21");
        assert_eq!(type_name("AOC-D"), "AocD");
        assert_eq!(type_name("NewCallerid"), "NewCallerid");
    }
}
