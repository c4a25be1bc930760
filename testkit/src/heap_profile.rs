//! Reading heap profiles in the tests: the counts of a gperftools-format
//! profile's header or stack line, and the rows of `google-pprof --text`.

use std::process::Command;

/// The heap profile reader installed here: `google-pprof` (Debian's
/// `google-perftools`) or `pprof`, or `None` (the tests that need one skip,
/// with a message).
pub fn reader() -> Option<&'static str> {
    ["google-pprof", "pprof"].into_iter().find(|tool| {
        Command::new(tool).arg("--help").output().is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains("heap")
                || String::from_utf8_lossy(&o.stderr).contains("heap")
        })
    })
}

/// The live sample count and bytes of a profile's header (`heap profile:
/// N: BYTES [N: BYTES] @ heap_v2/INTERVAL`) or of one of its stack lines
/// (`N: BYTES [N: BYTES] @ 0x.. 0x..`); `None` if `line` is neither.
pub fn counts(line: &str) -> Option<(usize, usize)> {
    let line = line.strip_prefix("heap profile:").unwrap_or(line);
    let (n, rest) = line.split_once(':')?;
    let bytes = rest.split(['[', '@']).next()?;
    Some((n.trim().parse().ok()?, bytes.trim().parse().ok()?))
}

/// One row of `google-pprof --text`: `flat flat% sum% cum cum% name`, the
/// bytes in MB (pprof's MB are MiB).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub flat: f64,
    pub cum: f64,
    pub name: String,
}

/// The rows of a `google-pprof --text` report, in its order (by flat
/// bytes); the header lines are left out.
pub fn rows(report: &str) -> Vec<Row> {
    report
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Row {
                flat: f.first()?.parse().ok()?,
                cum: f.get(3)?.parse().ok()?,
                name: f.get(5..)?.join(" "),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_header_lines_and_rows() {
        assert_eq!(
            counts("heap profile: 632: 2588672 [632: 2588672] @ heap_v2/65536"),
            Some((632, 2588672))
        );
        assert_eq!(counts("3: 12000 [3: 12000] @ 0x55 0x56"), Some((3, 12000)));
        assert_eq!(counts("MAPPED_LIBRARIES:"), None);
        let r = rows("Total: 40.7 MB\n    40.7 100.0% 100.0%     40.7 100.0% leak_here\n     0.0   0.0% 100.0%     39.7  97.5% alloc::alloc (inline)\n");
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].flat, r[0].cum, r[0].name.as_str()),
            (40.7, 40.7, "leak_here")
        );
        assert_eq!(r[1].name, "alloc::alloc (inline)");
    }
}
