//! Join expressions (part of the API: RunConfigurations declare them in `triggers.join`,
//! admission validates them, the trigger engine evaluates them): a boolean expression over the
//! RunConfigurations a RunConfiguration waits for.
//!
//! # Grammar
//!
//! ```text
//! expression = ws? or ws? EOF
//! or         = and (ws? "||" ws? and)*          -- `&&` binds tighter than `||`
//! and        = term (ws? "&&" ws? term)*
//! term       = "(" ws? or ws? ")" | dependency
//! dependency = name ("/" name)?                 -- `namespace/name`, or `name` in the RC's namespace
//! name       = [a-z0-9] [a-z0-9.-]*             -- a Kubernetes object name (DNS subdomain)
//! ```
//!
//! A dependency is *satisfied* or not; the expression is true when its satisfied dependencies
//! make it so. Parentheses nest at most [`MAX_NESTING`] deep and an expression names at most
//! [`MAX_DEPENDENCIES`] dependencies, so parsing and evaluation are bounded on any input and
//! never panic. Errors name the 1-based column where the expression stops making sense.

use std::fmt;

use jiff::Timestamp;

use super::common::NamespacedName;

/// How deep parentheses may nest.
pub const MAX_NESTING: usize = 32;

/// How many dependency occurrences one expression may hold.
pub const MAX_DEPENDENCIES: usize = 512;

/// Why a join expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("triggers.join.expression {expression:?} does not parse at column {column}: {message}")]
pub struct JoinError {
    pub expression: String,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// A parsed join expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinExpression {
    source: String,
    root: Node,
    /// Every dependency once, in first-seen order, with the column where it first appears.
    dependencies: Vec<(NamespacedName, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// An index into `dependencies`.
    Dependency(usize),
    All(Vec<Node>),
    Any(Vec<Node>),
}

/// Parses `source`; see the module docs for the grammar.
pub fn parse(source: &str) -> Result<JoinExpression, JoinError> {
    Parser::new(source).expression()
}

/// [`parse`], remembering the last few expressions parsed on this thread: one evaluation of a
/// RunConfiguration reads its join in several places, and a join over many dependencies is
/// worth parsing once.
pub fn parse_shared(source: &str) -> Result<std::sync::Arc<JoinExpression>, JoinError> {
    const REMEMBERED: usize = 8;
    thread_local! {
        static PARSED: std::cell::RefCell<Vec<std::sync::Arc<JoinExpression>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let known = PARSED.with(|parsed| parsed.borrow().iter().find(|join| join.source == source).cloned());
    if let Some(join) = known {
        return Ok(join);
    }
    let join = std::sync::Arc::new(parse(source)?);
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if parsed.len() >= REMEMBERED {
            parsed.remove(0);
        }
        parsed.push(join.clone());
    });
    Ok(join)
}

impl std::str::FromStr for JoinExpression {
    type Err = JoinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl JoinExpression {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every dependency once (as written), in first-seen order.
    pub fn dependencies(&self) -> impl Iterator<Item = &NamespacedName> {
        self.dependencies.iter().map(|(name, _)| name)
    }

    /// Every dependency once (as written) with the 1-based column where it first appears.
    pub fn dependencies_with_columns(&self) -> &[(NamespacedName, usize)] {
        &self.dependencies
    }

    /// Whether the expression holds when exactly the dependencies `satisfied` accepts are
    /// satisfied. `satisfied` is asked at most once per dependency.
    pub fn evaluate(&self, satisfied: impl Fn(&NamespacedName) -> bool) -> bool {
        let values: Vec<bool> = self.dependencies.iter().map(|(name, _)| satisfied(name)).collect();
        self.root.evaluate(&values)
    }

    /// The unsatisfied dependencies that could still make the expression true (those in a
    /// branch not already false for good), in first-seen order: what the join waits for.
    pub fn waiting_for(&self, satisfied: impl Fn(&NamespacedName) -> bool) -> Vec<&NamespacedName> {
        let values: Vec<bool> = self.dependencies.iter().map(|(name, _)| satisfied(name)).collect();
        let mut wanted = vec![false; values.len()];
        self.root.wanted(&values, &mut wanted);
        self.dependencies.iter().zip(wanted).filter(|(_, want)| *want).map(|((name, _), _)| name).collect()
    }
}

impl Node {
    fn evaluate(&self, values: &[bool]) -> bool {
        match self {
            Self::Dependency(index) => values.get(*index).copied().unwrap_or(false),
            Self::All(nodes) => nodes.iter().all(|n| n.evaluate(values)),
            Self::Any(nodes) => nodes.iter().any(|n| n.evaluate(values)),
        }
    }

    /// Marks the unsatisfied dependencies under a node that is not yet true.
    fn wanted(&self, values: &[bool], wanted: &mut [bool]) {
        if self.evaluate(values) {
            return;
        }
        match self {
            Self::Dependency(index) => {
                if let Some(slot) = wanted.get_mut(*index) {
                    *slot = true;
                }
            }
            Self::All(nodes) | Self::Any(nodes) => nodes.iter().for_each(|n| n.wanted(values, wanted)),
        }
    }

    fn render(
        &self,
        names: &[(NamespacedName, usize)],
        top: bool,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let (nodes, operator) = match self {
            Self::Dependency(index) => {
                return match names.get(*index) {
                    Some((name, _)) => write!(f, "{name}"),
                    None => Ok(()),
                };
            }
            Self::All(nodes) => (nodes, " && "),
            Self::Any(nodes) => (nodes, " || "),
        };
        if !top {
            f.write_str("(")?;
        }
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(operator)?;
            }
            node.render(names, false, f)?;
        }
        if !top {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The expression in a normal form: single spaces around operators, parentheses only where a
/// group holds more than one term.
impl fmt::Display for JoinExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.render(&self.dependencies, true, f)
    }
}

struct Parser<'s> {
    source: &'s str,
    chars: Vec<char>,
    at: usize,
    dependencies: Vec<(NamespacedName, usize)>,
    /// Where each dependency is in `dependencies`.
    positions: std::collections::HashMap<NamespacedName, usize>,
    occurrences: usize,
}

impl<'s> Parser<'s> {
    fn new(source: &'s str) -> Self {
        Self {
            source,
            chars: source.chars().collect(),
            at: 0,
            dependencies: Vec::new(),
            positions: std::collections::HashMap::new(),
            occurrences: 0,
        }
    }

    fn error(&self, at: usize, message: impl Into<String>) -> JoinError {
        JoinError { expression: self.source.to_owned(), column: at + 1, message: message.into() }
    }

    fn found(&self) -> String {
        match self.chars.get(self.at) {
            None => "the end".to_owned(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn ws(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn token(&mut self, token: &str) -> bool {
        let matches = token.chars().enumerate().all(|(i, c)| self.chars.get(self.at + i) == Some(&c));
        if matches {
            self.at += token.chars().count();
        }
        matches
    }

    fn expression(mut self) -> Result<JoinExpression, JoinError> {
        self.ws();
        if self.at >= self.chars.len() {
            return Err(self.error(self.at, "the expression is empty; name at least one RunConfiguration"));
        }
        let root = self.or(0)?;
        self.ws();
        if self.at < self.chars.len() {
            let message = format!("expected \"&&\", \"||\" or the end, found {}", self.found());
            return Err(self.error(self.at, message));
        }
        Ok(JoinExpression { source: self.source.to_owned(), root, dependencies: self.dependencies })
    }

    fn or(&mut self, depth: usize) -> Result<Node, JoinError> {
        self.chain(depth, "||", Self::and, Node::Any)
    }

    fn and(&mut self, depth: usize) -> Result<Node, JoinError> {
        self.chain(depth, "&&", Self::term, Node::All)
    }

    /// `operand (ws? operator ws? operand)*`, one node when there is one operand.
    fn chain(
        &mut self,
        depth: usize,
        operator: &str,
        operand: fn(&mut Self, usize) -> Result<Node, JoinError>,
        group: fn(Vec<Node>) -> Node,
    ) -> Result<Node, JoinError> {
        let mut terms = vec![operand(self, depth)?];
        loop {
            let before = self.at;
            self.ws();
            if self.token(operator) {
                self.ws();
                terms.push(operand(self, depth)?);
            } else {
                self.at = before;
                break;
            }
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { group(terms) })
    }

    fn term(&mut self, depth: usize) -> Result<Node, JoinError> {
        let open = self.at;
        if self.token("(") {
            if depth >= MAX_NESTING {
                return Err(self.error(open, format!("parentheses nest deeper than {MAX_NESTING}")));
            }
            self.ws();
            let inner = self.or(depth + 1)?;
            self.ws();
            if !self.token(")") {
                let message = format!(
                    "expected \"&&\", \"||\" or \")\" closing the \"(\" at column {}, found {}",
                    open + 1,
                    self.found()
                );
                return Err(self.error(self.at, message));
            }
            return Ok(inner);
        }
        self.dependency()
    }

    fn dependency(&mut self) -> Result<Node, JoinError> {
        let start = self.at;
        let first = self.name()?;
        let name = if self.token("/") {
            NamespacedName::new(first, self.name()?)
        } else {
            NamespacedName::name_only(first)
        };
        self.occurrences += 1;
        if self.occurrences > MAX_DEPENDENCIES {
            return Err(self.error(start, format!("more than {MAX_DEPENDENCIES} dependencies")));
        }
        let index = match self.positions.get(&name) {
            Some(index) => *index,
            None => {
                let index = self.dependencies.len();
                self.positions.insert(name.clone(), index);
                self.dependencies.push((name, start + 1));
                index
            }
        };
        Ok(Node::Dependency(index))
    }

    fn name(&mut self) -> Result<String, JoinError> {
        let start = self.at;
        let is_start = |c: &char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !self.chars.get(self.at).is_some_and(is_start) {
            let message = match self.chars.get(self.at) {
                Some(c) if c.is_ascii_uppercase() => format!(
                    "expected a RunConfiguration name, found {c:?}: names are lower case (a-z, 0-9, '-', '.')"
                ),
                _ => format!("expected a RunConfiguration name or \"(\", found {}", self.found()),
            };
            return Err(self.error(self.at, message));
        }
        while self.chars.get(self.at).is_some_and(|c| is_start(c) || *c == '-' || *c == '.') {
            self.at += 1;
        }
        if let Some(c) = self.chars.get(self.at).filter(|c| c.is_ascii_uppercase() || **c == '_') {
            return Err(self.error(
                self.at,
                format!("{c:?} cannot be part of a RunConfiguration name (a-z, 0-9, '-', '.')"),
            ));
        }
        let name: String = self.chars[start..self.at].iter().collect();
        if name.len() > 253 || name.ends_with(['-', '.']) {
            return Err(self.error(start, format!("{name:?} is not a valid RunConfiguration name")));
        }
        Ok(name)
    }
}

/// When a reset is due for a partial join that began at `since`.
pub fn reset_deadline(reset: &str, since: Timestamp) -> Result<Option<Timestamp>, String> {
    let reset = reset.trim();
    if reset.is_empty() {
        return Ok(None);
    }
    if reset.split_whitespace().count() >= 5 {
        let cron: croner::Cron = reset
            .parse()
            .map_err(|e| format!("triggers.join.reset {reset:?} is not a cron expression: {e}"))?;
        let start =
            chrono::DateTime::from_timestamp(since.as_second(), since.subsec_nanosecond().max(0) as u32)
                .ok_or_else(|| format!("{since} is out of range"))?;
        let next = cron
            .find_next_occurrence(&start, false)
            .map_err(|e| format!("triggers.join.reset {reset:?} never fires after {since}: {e}"))?;
        return Timestamp::from_second(next.timestamp()).map(Some).map_err(|e| e.to_string());
    }
    let duration = super::duration::parse(reset).map_err(|e| {
        format!(
            "triggers.join.reset: {e}; write a duration such as 30m or a cron expression such as 0 0 * * *"
        )
    })?;
    if duration.is_zero() {
        return Err("triggers.join.reset must be longer than 0".into());
    }
    let span = jiff::SignedDuration::try_from(duration).map_err(|e| e.to_string())?;
    since.checked_add(span).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn satisfied<'a>(names: &'a [&str]) -> impl Fn(&NamespacedName) -> bool + 'a {
        move |name| names.contains(&name.to_string().as_str())
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let join = parse("ns-a/features && (ns-b/train-xgb || ns-b/train-lgbm)").unwrap();
        assert_eq!(
            join.dependencies().map(ToString::to_string).collect::<Vec<_>>(),
            ["ns-a/features", "ns-b/train-xgb", "ns-b/train-lgbm"]
        );
        assert!(!join.evaluate(satisfied(&["ns-a/features"])));
        assert!(join.evaluate(satisfied(&["ns-a/features", "ns-b/train-lgbm"])));
        assert!(!join.evaluate(satisfied(&["ns-b/train-xgb", "ns-b/train-lgbm"])));
        assert_eq!(join.to_string(), "ns-a/features && (ns-b/train-xgb || ns-b/train-lgbm)");

        let loose = parse("a && b || c").unwrap();
        assert!(loose.evaluate(satisfied(&["c"])));
        assert!(!loose.evaluate(satisfied(&["a"])));
        assert_eq!(loose.to_string(), "(a && b) || c");
        assert_eq!(parse("  ((a))  ").unwrap().to_string(), "a");
        assert_eq!(parse("a&&b").unwrap().to_string(), "a && b");
    }

    #[test]
    fn a_repeated_dependency_is_one_dependency() {
        let join = parse("a && (a || b)").unwrap();
        assert_eq!(join.dependencies().count(), 2);
        assert!(join.evaluate(satisfied(&["a"])));
    }

    #[test]
    fn the_join_says_what_it_waits_for() {
        let join = parse("features && (xgb || lgbm)").unwrap();
        let names = |s: &[&str]| {
            join.waiting_for(satisfied(s)).into_iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(names(&["features"]), ["xgb", "lgbm"]);
        assert_eq!(names(&["xgb"]), ["features"]);
        assert_eq!(names(&[]), ["features", "xgb", "lgbm"]);
        assert!(names(&["features", "xgb"]).is_empty());
    }

    #[test]
    fn errors_name_the_column() {
        let column = |s: &str| parse(s).unwrap_err().column;
        let message = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(column(""), 1);
        assert_eq!(column("a &&"), 5);
        assert_eq!(column("a && (b || c"), 13);
        assert!(
            message("a && (b || c").contains("closing the \"(\" at column 6"),
            "{}",
            message("a && (b || c")
        );
        assert_eq!(column("a & b"), 3);
        assert_eq!(column("a || Train"), 6);
        assert!(message("a || Train").contains("lower case"));
        assert_eq!(column("a/b/c"), 4);
        assert_eq!(column("a/"), 3);
        assert_eq!(column("a_b"), 2);
        assert_eq!(column("a b"), 3);
        assert_eq!(column("a- && b"), 1);
        assert_eq!(
            message("x && "),
            "triggers.join.expression \"x && \" does not parse at column 6: expected a RunConfiguration name or \"(\", found the end"
        );
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let deep = format!("{}a{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        assert!(parse(&deep).unwrap_err().message.contains("nest deeper"));
        let ok = format!("{}a{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(parse(&ok).is_ok());
        let wide = vec!["a"; MAX_DEPENDENCIES + 1].join(" || ");
        assert!(parse(&wide).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet = ['a', 'Z', '/', '(', ')', '&', '|', ' ', '-', '.', '0', 'é', '_'];
        let mut seed = 0x2545_f491_u64;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let mut text = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Ok(join) = parse(&text) {
                let again = parse(&join.to_string()).unwrap();
                assert_eq!(again.to_string(), join.to_string(), "{text:?}");
                let _ = join.evaluate(|_| true);
            }
        }
    }

    #[test]
    fn resets_are_durations_or_cron_times() {
        let since: Timestamp = "2026-12-02T10:15:00Z".parse().unwrap();
        assert_eq!(reset_deadline("", since), Ok(None));
        assert_eq!(reset_deadline("5s", since), Ok(Some("2026-12-02T10:15:05Z".parse().unwrap())));
        assert_eq!(reset_deadline("1h30m", since), Ok(Some("2026-12-02T11:45:00Z".parse().unwrap())));
        assert_eq!(reset_deadline("0 0 * * *", since), Ok(Some("2026-12-03T00:00:00Z".parse().unwrap())));
        assert_eq!(reset_deadline("*/30 * * * *", since), Ok(Some("2026-12-02T10:30:00Z".parse().unwrap())));
        assert!(reset_deadline("soon", since).unwrap_err().contains("a duration such as 30m"));
        assert!(reset_deadline("0", since).is_err());
        assert!(reset_deadline("99 * * * *", since).unwrap_err().contains("not a cron expression"));
    }
}
