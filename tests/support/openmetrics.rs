//! The OpenMetrics text `/metrics` answers, parsed: the families it declares (`# TYPE`) and
//! its samples, each a name, labels and value.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every family and sample of one exposition.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub families: BTreeSet<String>,
    pub samples: Vec<Sample>,
}

impl Samples {
    /// Parses an exposition; panics on a line that is neither a comment nor a sample.
    pub fn parse(text: &str) -> Self {
        let mut parsed = Self::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let family = declaration.split_whitespace().next().unwrap_or_default();
                parsed.families.insert(family.to_owned());
            } else if !line.starts_with('#') {
                parsed.samples.push(parse_sample(line));
            }
        }
        parsed
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels.iter().all(|(key, value)| sample.labels.get(*key).is_some_and(|v| v == value))
        })
    }

    /// The sum of the values of [`Self::matching`].
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }

    /// The value of the one sample matching, if there is exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        (found.len() == 1).then(|| found[0].value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (name_and_labels, value) = match line.find('{') {
        Some(open) => {
            let close = closing_brace(line, open).unwrap_or_else(|| panic!("unclosed labels: {line}"));
            (&line[..=close], line[close + 1..].trim())
        }
        None => line.split_once(' ').unwrap_or_else(|| panic!("no value: {line}")),
    };
    let (name, labels) = match name_and_labels.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
        None => (name_and_labels, BTreeMap::new()),
    };
    let value = value.split_whitespace().next().unwrap_or_default();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|_| panic!("not a number in {line}")),
    };
    Sample { name: name.to_owned(), labels, value }
}

/// The `}` closing the labels opened at `open`, past quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (index, c) in line.char_indices().skip_while(|(index, _)| *index <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}
