//! The live table of `ami calls --watch` fitted to the terminal: a screen taller than the
//! terminal scrolls its top away at every redraw, and a line wider than it wraps, so a call
//! center's 200 calls on a 24-line terminal showed nothing readable. Each server keeps its
//! header and column names; the channel rows share what is left in turns (a server with few
//! calls is never hidden by a busy one), the recent news keeps its last lines, and a server
//! whose rows do not all fit says how many are not shown. On a narrow terminal the wide
//! columns give way first, so that each channel's state and age stay in view.

/// One server's part of the screen.
pub(super) struct Section {
    /// Lines shown whatever the size: the server's header and the column names.
    pub(super) head: Vec<String>,
    /// One line per channel, in table order.
    pub(super) rows: Vec<String>,
}

/// The table's column widths (linked ID, channel, state, caller ID, context/exten, age)
/// where the terminal is wide enough: 113 columns with the spaces between them.
pub(super) const FULL_WIDTHS: [usize; 6] = [18, 36, 8, 18, 22, 6];

/// How narrow each column may become, in the same order.
const NARROWEST: [usize; 6] = [14, 16, 8, 12, 10, 6];

/// Which columns give way first on a narrow terminal: channel, context/exten, caller ID,
/// linked ID. State and age never do.
const GIVE_WAY: [usize; 4] = [1, 4, 3, 0];

/// Column widths for a terminal `width` columns wide: the full table when it fits, else the
/// wide columns narrowed (each down to its floor, in [`GIVE_WAY`] order) so that the state
/// and the age stay in view; a terminal narrower than every floor cuts the lines.
pub(super) fn column_widths(width: usize) -> [usize; 6] {
    let mut widths = FULL_WIDTHS;
    let total = |w: &[usize; 6]| w.iter().sum::<usize>() + w.len() - 1;
    for ix in GIVE_WAY {
        let over = total(&widths).saturating_sub(width);
        if over == 0 {
            break;
        }
        let give = over.min(widths[ix] - NARROWEST[ix]);
        widths[ix] -= give;
    }
    widths
}

/// `text` in a column `width` characters wide: padded with spaces, or, when longer and
/// `cut`, cut in the middle and marked `~`: a channel's name keeps its technology and
/// its sequence number and leg (`PJSIP/pr~0002a;1`), which tell channels apart.
pub(super) fn column(text: &str, width: usize, cut: bool) -> String {
    let chars = text.chars().count();
    if chars <= width || !cut {
        let mut out = text.to_string();
        out.extend(std::iter::repeat_n(' ', width.saturating_sub(chars)));
        return out;
    }
    if width == 0 {
        return String::new();
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push('~');
    out.extend(text.chars().skip(chars - tail));
    out
}

/// News lines kept at most when the terminal is short.
const NEWS_AT_MOST: usize = 4;

/// The screen for a terminal of `height` lines and `width` columns: the sections, then
/// `news`, each line cut to `width`, at most `height - 1` lines (the cursor's line stays
/// free, so the terminal never scrolls).
pub(super) fn fit(sections: &[Section], news: &[String], height: usize, width: usize) -> String {
    let budget = height.saturating_sub(1);
    let fixed: usize = sections.iter().map(|s| s.head.len() + 1).sum();
    let rows_wanted: usize = sections.iter().map(|s| s.rows.len()).sum();
    // News gets what the rows leave, up to its last NEWS_AT_MOST lines when rows are cut.
    let room = budget.saturating_sub(fixed);
    // (Each section ends with a blank line, counted in `fixed`: the news needs no other.)
    let news_shown = if rows_wanted + news.len() <= room {
        news.len()
    } else {
        news.len().min(NEWS_AT_MOST).min(room / 4)
    };
    let mut left = room.saturating_sub(news_shown);
    // The rows in turns, one each per round: every server shows some while any can.
    let mut given = vec![0usize; sections.len()];
    while left > 0 {
        let mut gave = false;
        for (g, s) in given.iter_mut().zip(sections) {
            if left > 0 && *g < s.rows.len() {
                *g += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    let mut lines: Vec<String> = Vec::new();
    for (s, &g) in sections.iter().zip(&given) {
        lines.extend(s.head.iter().cloned());
        if g >= s.rows.len() {
            lines.extend(s.rows.iter().cloned());
        } else if g > 0 {
            // The last line it was given says what it could not show.
            lines.extend(s.rows[..g - 1].iter().cloned());
            lines.push(format!(
                "... {} more channel(s): a taller terminal, or a pipe (JSON lines), shows all",
                s.rows.len() - (g - 1)
            ));
        }
        lines.push(String::new());
    }
    if news_shown > 0 {
        lines.extend(news[news.len() - news_shown..].iter().cloned());
    }
    lines.truncate(budget);
    let mut screen = String::new();
    for line in &lines {
        screen.push_str(cut(line, width));
        screen.push('\n');
    }
    screen
}

/// `line` cut to `width` characters (the table is ASCII but for names; escapes are ASCII).
fn cut(line: &str, width: usize) -> &str {
    match line.char_indices().nth(width) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

/// The terminal's size as (lines, columns), when stdout is one that says.
pub(super) fn terminal_size() -> Option<(usize, usize)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_row > 0 && size.ws_col > 0)
        .then(|| (usize::from(size.ws_row), usize::from(size.ws_col)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, rows: usize) -> Section {
        Section {
            head: vec![
                format!("ami calls {name}"),
                String::new(),
                "CHANNEL".to_string(),
            ],
            rows: (0..rows).map(|i| format!("{name} row {i}")).collect(),
        }
    }

    fn news(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("news {i}")).collect()
    }

    #[test]
    fn a_narrow_terminal_narrows_the_wide_columns_and_keeps_state_and_age() {
        assert_eq!(column_widths(200), FULL_WIDTHS);
        assert_eq!(column_widths(113), FULL_WIDTHS);
        let at_80 = column_widths(80);
        assert_eq!(at_80.iter().sum::<usize>() + 5, 80, "{at_80:?}");
        assert_eq!((at_80[2], at_80[5]), (8, 6));
        assert_eq!(at_80[1], 16, "the channel gives way first");
        // Narrower than every floor: the floors, and fit() cuts the line.
        assert_eq!(column_widths(40), NARROWEST);
        assert_eq!(column("PJSIP/100-0000002a", 10, true), "PJSIP~002a");
        assert_eq!(
            column("Local/hold@ami-test-0000004c;1", 16, true),
            "Local/ho~0004c;1"
        );
        assert_eq!(
            column("PJSIP/100-0000002a", 10, false),
            "PJSIP/100-0000002a"
        );
        assert_eq!(column("Up", 4, true), "Up  ");
        assert_eq!(column("é".repeat(5).as_str(), 3, true), "é~é");
        assert_eq!(column("abc", 0, true), "");
    }

    #[test]
    fn a_screen_that_fits_is_shown_whole() {
        let screen = fit(&[section("a", 3)], &news(2), 24, 80);
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), 3 + 3 + 1 + 2);
        assert_eq!(lines[3], "a row 0");
        assert_eq!(lines.last(), Some(&"news 1"));
    }

    #[test]
    fn two_hundred_calls_on_24_lines_leave_the_cursor_line_free_and_say_what_is_hidden() {
        let screen = fit(&[section("a", 400)], &news(8), 24, 80);
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), 23, "{screen}");
        assert_eq!(lines[0], "ami calls a");
        let hidden = lines
            .iter()
            .find(|l| l.starts_with("... "))
            .unwrap_or_else(|| panic!("{screen}"));
        assert!(hidden.starts_with("... 386 more channel(s): "), "{hidden}");
        // The newest news is kept, the oldest gives way.
        assert_eq!(lines.last(), Some(&"news 7"));
        assert!(!screen.contains("news 0"));
    }

    #[test]
    fn a_busy_server_never_hides_a_quiet_one() {
        let screen = fit(&[section("busy", 500), section("quiet", 2)], &[], 30, 80);
        assert!(
            screen.contains("quiet row 0") && screen.contains("quiet row 1"),
            "{screen}"
        );
        assert!(screen.contains("busy row 0"));
        assert!(screen.contains("... "), "{screen}");
        assert_eq!(screen.lines().count(), 29);
    }

    #[test]
    fn lines_are_cut_to_the_width_and_a_tiny_terminal_still_gets_no_more_than_it_has() {
        let mut s = section("a", 1);
        s.rows[0] = "é".repeat(200);
        let screen = fit(&[s], &[], 24, 40);
        assert!(screen.lines().all(|l| l.chars().count() <= 40), "{screen}");
        let tiny = fit(&[section("a", 50), section("b", 50)], &news(8), 3, 80);
        assert_eq!(tiny.lines().count(), 2, "{tiny}");
    }
}
