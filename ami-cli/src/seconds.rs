//! A number of seconds given on the command line.

/// Most seconds any option takes (about 31 years): far enough to mean "run until stopped",
/// near enough that `now` plus it is a valid instant.
const MAX_SECONDS: f64 = 1e9;

/// Parses seconds for clap: a finite, non-negative number up to [`MAX_SECONDS`]. `nan`,
/// `inf` and negative numbers are usage errors here, not a panic when a duration is made.
pub(crate) fn parse(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(format!(
            "`{text}` seconds is out of range: give a number from 0 to {MAX_SECONDS}"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_non_negative_seconds_are_accepted() {
        assert_eq!(parse("2.5"), Ok(2.5));
        assert_eq!(parse("0"), Ok(0.0));
        for bad in ["nan", "NaN", "inf", "-inf", "-1", "1e10", "", "five"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
