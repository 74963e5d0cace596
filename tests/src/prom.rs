//! A strict parser of the Prometheus text exposition format (0.0.4), which also accepts
//! `OpenMetrics` 1.0 text (`# UNIT`, `# EOF`). It refuses: a line that is not a comment, a
//! `HELP`/`TYPE`/`UNIT` line or a well-formed sample; an unknown metric type; a second
//! `TYPE` or `HELP` for one family; a `TYPE` after that family's samples; a sample whose name
//! does not fit its declared type (e.g. a gauge with a suffix); a label twice in a sample; the
//! same series twice; a bad escape; anything after `# EOF`; a missing final newline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as written (with any `_total` etc. suffix).
    pub name: String,
    /// Labels in order of appearance.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Declared families and their types.
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Sum of every sample named exactly `name`, over all labels (0 when none).
    pub fn sum(&self, name: &str) -> f64 {
        self.sum_where(name, |_| true)
    }

    /// Sum of the samples named `name` for which `keep` holds.
    pub fn sum_where(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && keep(s))
            .map(|s| s.value)
            .sum()
    }

    /// Sum of the samples named `name` with `label="value"`, over other labels.
    pub fn sum_label(&self, name: &str, label: &str, value: &str) -> f64 {
        self.sum_where(name, |s| s.label(label) == Some(value))
    }

    /// Whether the exposition has the metric `name`: a sample of it, or a `TYPE` for it or
    /// for its family (`name` less a `_total` suffix), as a family with no label set yet
    /// has no sample.
    pub fn has(&self, name: &str) -> bool {
        let family = name.strip_suffix("_total").unwrap_or(name);
        self.samples.iter().any(|s| s.name == name)
            || self.types.contains_key(name)
            || self.types.contains_key(family)
    }

    /// Every sample named `name`, one per line, for failure messages.
    pub fn show(&self, name: &str) -> String {
        let mut out = String::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let _ = writeln!(out, "{} {:?} {}", s.name, s.labels, s.value);
        }
        if out.is_empty() {
            out = format!("(no {name} samples)");
        }
        out
    }
}

const TYPES: [&str; 9] = [
    "counter",
    "gauge",
    "histogram",
    "summary",
    "untyped",
    "unknown",
    "info",
    "stateset",
    "gaugehistogram",
];

/// Parses `text` strictly (see the module doc).
///
/// # Errors
/// The first problem, with its line number.
pub fn parse(text: &str) -> Result<Metrics, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut m = Metrics::default();
    let mut helps = BTreeSet::new();
    let mut sampled_families = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if eof {
            return Err(at("content after # EOF".into()));
        }
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["EOF"] => eof = true,
                ["TYPE", name, kind] => {
                    check_name(name).map_err(at)?;
                    if !TYPES.contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if sampled_families.contains(*name) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if m.types
                        .insert((*name).to_owned(), (*kind).to_owned())
                        .is_some()
                    {
                        return Err(at("a second TYPE for this family".into()));
                    }
                }
                ["HELP", name, ..] => {
                    check_name(name).map_err(at)?;
                    if !helps.insert((*name).to_owned()) {
                        return Err(at("a second HELP for this family".into()));
                    }
                }
                ["UNIT", name, ..] => check_name(name).map_err(at)?,
                ["TYPE" | "HELP" | "UNIT", ..] => return Err(at("incomplete".into())),
                _ => {} // a plain comment
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = family_of(&m.types, &sample.name).map_err(at)?;
        sampled_families.insert(family);
        let mut key = sample.labels.clone();
        key.sort();
        if !series.insert((sample.name.clone(), key)) {
            return Err(at("the same series twice".into()));
        }
        m.samples.push(sample);
    }
    Ok(m)
}

/// The declared family a sample belongs to, checking its suffix fits the family's type.
fn family_of(types: &BTreeMap<String, String>, name: &str) -> Result<String, String> {
    if let Some(kind) = types.get(name) {
        return match kind.as_str() {
            "counter" if !name.ends_with("_total") => {
                // Prometheus 0.0.4 declares a counter by its full sample name.
                Ok(name.to_owned())
            }
            "histogram" | "summary" | "gaugehistogram" => {
                Err(format!("a {kind} sample without a suffix"))
            }
            _ => Ok(name.to_owned()),
        };
    }
    let suffixes: &[(&str, &[&str])] = &[
        ("_total", &["counter"]),
        ("_created", &["counter", "histogram", "summary"]),
        ("_bucket", &["histogram", "gaugehistogram"]),
        ("_count", &["histogram", "summary"]),
        ("_sum", &["histogram", "summary"]),
        ("_gcount", &["gaugehistogram"]),
        ("_gsum", &["gaugehistogram"]),
        ("_info", &["info"]),
    ];
    for (suffix, kinds) in suffixes {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
        {
            if !kinds.contains(&kind.as_str()) {
                return Err(format!("suffix {suffix} on a {kind}"));
            }
            return Ok(base.to_owned());
        }
    }
    Ok(name.to_owned()) // undeclared: untyped
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

/// Labels after `{`; returns them and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = &s[..eq];
        let name_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("label {name} twice"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        s = &s[end + 1..];
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && !v.is_empty() => {
            v.parse().map_err(|_| format!("bad value {v:?}"))
        }
        _ => Err(format!("bad value {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    const GOOD: &str = concat!(
        "# HELP a_total A.\n# TYPE a counter\n",
        "a_total{core=\"0\",k=\"x\\\"y\"} 3\n",
        "a_total{core=\"1\",k=\"x\\\"y\"} 4\n",
        "# TYPE g gauge\ng 1.5e3\n# EOF\n",
    );

    #[test]
    fn sums_over_labels_and_reads_escapes() {
        let m = parse(GOOD).expect("valid");
        assert!((m.sum("a_total") - 7.0).abs() < 1e-9);
        assert!((m.sum_label("a_total", "core", "1") - 4.0).abs() < 1e-9);
        assert_eq!(m.samples[0].label("k"), Some("x\"y"));
        assert!(m.has("a_total") && m.has("g") && !m.has("b_total"));
    }

    #[test]
    fn refuses_what_prometheus_would_refuse() {
        for bad in [
            "a 1",                              // no final newline
            "a 1\na 2\n",                       // the same series twice
            "a{x=\"1\",x=\"2\"} 1\n",           // a label twice
            "a{x=1} 1\n",                       // unquoted label value
            "a{x=\"\\q\"} 1\n",                 // bad escape
            "a one\n",                          // bad value
            "a 1 2 3\n",                        // trailing junk
            "a 1\n# TYPE a gauge\n",            // TYPE after samples
            "# TYPE a gauge\n# TYPE a gauge\n", // TYPE twice
            "# TYPE a thing\n",                 // unknown type
            "# TYPE g gauge\ng_total 1\n",      // a suffix on a gauge
            "# EOF\na 1\n",                     // after EOF
            "1a 1\n",                           // bad name
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
