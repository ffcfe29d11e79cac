//! Artifact filter expressions (part of the API: specs declare them, admission validates them,
//! completions evaluate them): the boolean language of HashiCorp go-bexpr, which the
//! reference evaluates against an artifact instance's `metadata` (`Pusher:pushed_model[pushed == 1]`).
//!
//! # Grammar (go-bexpr's PEG, ordered choice)
//!
//! ```text
//! filter     = ws? or ws? EOF
//! or         = and (ws "or" ws and)*            -- `and` binds tighter than `or`
//! and        = not (ws "and" ws not)*
//! not        = "not" ws not | group             -- `not not x` is `x`
//! group      = "(" ws? or ws? ")" | match
//! match      = selector ("==" | "!=" | ">=" | "<=" | ">" | "<"
//!                        | "contains" | "not contains" | "matches" | "not matches") value
//!            | selector ("is empty" | "is not empty")
//!            | value ("in" | "not in") selector
//! selector   = ident ("." ident | "." digits | "[" ws? string ws? "]")*
//! ident      = [a-zA-Z] [a-zA-Z0-9_/]*
//! value      = selector (taken as the string it spells) | number | string
//! number     = "-"? ("0" | [1-9][0-9]*) ("." [0-9]+)?  followed by whitespace, ")" or the end
//! string     = "\"" Go-escaped chars "\"" | "`" raw chars "`"
//! ```
//!
//! `==`/`!=` and the comparisons `>`, `>=`, `<`, `<=` may go without spaces; every keyword operator (`and`, `or`, `not`, `in`,
//! `contains`, `matches`, `is empty`) needs whitespace around it, as in go-bexpr.
//!
//! # Evaluation
//!
//! A selector is a path into the metadata object (array elements by number). The literal is
//! coerced to the type of the value found, as go-bexpr does: a metadata number `1` equals
//! the literals `1`, `1.0` and `"1"`; a boolean accepts `true`/`false`/`1`/`0`/`t`/`f`/…; a
//! string compares as a string. The comparisons (an extension of go-bexpr's grammar, for
//! conditions such as `accuracy > 0.9`) need a number literal and a metadata number, or a
//! string that reads as one (`"0.95"`). `in`/`contains` test a key of an object, an element of an
//! array (each element coerced in turn; elements the literal cannot be coerced to are
//! skipped) or a substring of a string. `matches` is an unanchored RE2-style regular
//! expression match on a string. A missing field, a value of a type the operator does not
//! apply to, or a literal that cannot be coerced is an [`EvalError`].
//!
//! Deviations from go-bexpr, all on inputs where go-bexpr errors or panics: a regular
//! expression is compiled when the filter is parsed (a bad one is a [`FilterError`], not an
//! evaluation error); `null` counts as empty for `is empty`, and `null` elements never match
//! in `in`; parentheses nest at most [`MAX_NESTING`] deep. go-bexpr ≥ 0.1.12's JSON-pointer
//! selectors (`"/a/b"`) and inline lists are not supported: a quoted string is always a string.
//!
//! Parsing and evaluation never panic and use bounded recursion on any input.

use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde_json::{Map, Value};

/// How deep parentheses may nest. Deeper filters are rejected so parsing and evaluation can
/// never exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Upper bound on the compiled size of a `matches` regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a filter expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is not in the grammar.
    #[error("filter {expression:?} does not parse at column {column}: {message}")]
    Syntax { expression: String, column: usize, message: String },
    /// The pattern of a `matches` operator is not a valid regular expression.
    #[error("filter {expression:?} has an invalid regular expression at column {column}: {message}")]
    Regex { expression: String, column: usize, message: String },
    /// Parentheses nest deeper than [`MAX_NESTING`].
    #[error("filter {expression:?} nests parentheses deeper than {MAX_NESTING} at column {column}")]
    TooDeep { expression: String, column: usize },
}

impl FilterError {
    /// A stable, low-cardinality name for the kind of error (for metrics and logs).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "filter_syntax",
            Self::Regex { .. } => "filter_regex",
            Self::TooDeep { .. } => "filter_too_deep",
        }
    }

    /// The 1-based column (in characters) where the problem was found.
    pub fn column(&self) -> usize {
        match self {
            Self::Syntax { column, .. } | Self::Regex { column, .. } | Self::TooDeep { column, .. } => {
                *column
            }
        }
    }
}

/// Why a filter could not be evaluated against a particular metadata object. The reference
/// treats every such error as "this artifact instance does not match".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The selector names a field (or array element) that is not there.
    #[error("no field {path:?} in the metadata")]
    MissingField { path: String },
    /// The selector goes through a value that has no fields.
    #[error("cannot select {path:?}: the value before it is {kind}, not an object or array")]
    NotSelectable { path: String, kind: &'static str },
    /// The operator does not apply to the type of value the selector found.
    #[error("operator {operator} does not apply to {kind} (at {path:?})")]
    Unsupported { operator: &'static str, path: String, kind: &'static str },
    /// The literal cannot be coerced to the type of value the selector found.
    #[error("literal {literal:?} cannot be compared with {kind} (at {path:?})")]
    InvalidLiteral { literal: String, path: String, kind: &'static str },
}

impl EvalError {
    /// A stable, low-cardinality name for the kind of error (for metrics and logs).
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingField { .. } => "missing_field",
            Self::NotSelectable { .. } => "not_selectable",
            Self::Unsupported { .. } => "unsupported_operator",
            Self::InvalidLiteral { .. } => "invalid_literal",
        }
    }
}

/// A parsed filter expression, ready to evaluate against artifact metadata.
#[derive(Debug, Clone)]
pub struct Filter {
    source: String,
    expr: Expr,
}

/// Parses a go-bexpr filter expression.
pub fn parse(expression: &str) -> Result<Filter, FilterError> {
    Parser::new(expression).parse()
}

impl Filter {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the filter against a JSON value (normally the metadata object).
    pub fn evaluate(&self, datum: &Value) -> Result<bool, EvalError> {
        self.expr.evaluate(Datum::Value(datum))
    }

    /// Evaluates the filter against a metadata map.
    pub fn evaluate_map(&self, datum: &Map<String, Value>) -> Result<bool, EvalError> {
        self.expr.evaluate(Datum::Map(datum))
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree and evaluation

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone)]
struct Match {
    selector: Vec<String>,
    operator: Operator,
    /// The literal as go-bexpr keeps it: the unquoted string, the number's text, or the
    /// selector path a bare word spells.
    literal: String,
}

#[derive(Debug, Clone)]
enum Operator {
    Equal,
    NotEqual,
    /// `>`, `>=`, `<`, `<=`: numbers only.
    Compare(Comparison),
    /// `literal in selector`, or `selector contains literal`.
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches(Regex),
    NotMatches(Regex),
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
        }
    }

    fn holds(self, value: f64, literal: f64) -> bool {
        match self {
            Self::Greater => value > literal,
            Self::GreaterOrEqual => value >= literal,
            Self::Less => value < literal,
            Self::LessOrEqual => value <= literal,
        }
    }
}

impl Operator {
    fn name(&self) -> &'static str {
        match self {
            Self::Equal => "==",
            Self::NotEqual => "!=",
            Self::Compare(comparison) => comparison.symbol(),
            Self::In => "in",
            Self::NotIn => "not in",
            Self::IsEmpty => "is empty",
            Self::IsNotEmpty => "is not empty",
            Self::Matches(_) => "matches",
            Self::NotMatches(_) => "not matches",
        }
    }
}

#[derive(Clone, Copy)]
enum Datum<'a> {
    Value(&'a Value),
    Map(&'a Map<String, Value>),
}

impl Expr {
    /// Recursion depth is bounded by the parser: only parentheses nest.
    fn evaluate(&self, datum: Datum<'_>) -> Result<bool, EvalError> {
        match self {
            // go-bexpr evaluates left to right and stops at the first decisive operand; an
            // error in an operand it reaches is the result.
            Self::And(operands) => {
                for operand in operands {
                    if !operand.evaluate(datum)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Self::Or(operands) => {
                for operand in operands {
                    if operand.evaluate(datum)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Self::Not(operand) => Ok(!operand.evaluate(datum)?),
            Self::Match(m) => m.evaluate(datum),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Close to Go's `strconv.ParseFloat(raw, 64)` (decimal forms, `inf`, `nan`).
fn parse_go_float(raw: &str) -> Option<f64> {
    raw.parse::<f64>().ok()
}

/// Equality of a literal with a scalar, after coercing the literal to the scalar's type.
/// `None` when the literal cannot be coerced; `Err(())` when the value is not a scalar.
fn scalar_equals(literal: &str, value: &Value) -> Result<Option<bool>, ()> {
    match value {
        Value::Bool(b) => Ok(parse_go_bool(literal).map(|l| l == *b)),
        Value::Number(n) => Ok(parse_go_float(literal).map(|l| n.as_f64() == Some(l))),
        Value::String(s) => Ok(Some(literal == s)),
        Value::Null | Value::Array(_) | Value::Object(_) => Err(()),
    }
}

impl Match {
    fn path(&self) -> String {
        self.selector.join(".")
    }

    fn resolve<'a>(&self, datum: Datum<'a>) -> Result<&'a Value, EvalError> {
        let mut segments = self.selector.iter();
        let mut current = match datum {
            Datum::Map(map) => {
                let first = segments.next().map(String::as_str).unwrap_or_default();
                map.get(first).ok_or_else(|| EvalError::MissingField { path: self.path() })?
            }
            Datum::Value(value) => value,
        };
        for segment in segments {
            current = match current {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                other => {
                    return Err(EvalError::NotSelectable { path: self.path(), kind: kind_of(other) });
                }
            }
            .ok_or_else(|| EvalError::MissingField { path: self.path() })?;
        }
        Ok(current)
    }

    fn unsupported(&self, value: &Value) -> EvalError {
        EvalError::Unsupported { operator: self.operator.name(), path: self.path(), kind: kind_of(value) }
    }

    fn invalid_literal(&self, value: &Value) -> EvalError {
        EvalError::InvalidLiteral { literal: self.literal.clone(), path: self.path(), kind: kind_of(value) }
    }

    fn equals(&self, value: &Value) -> Result<bool, EvalError> {
        match scalar_equals(&self.literal, value) {
            Ok(Some(equal)) => Ok(equal),
            Ok(None) => Err(self.invalid_literal(value)),
            Err(()) => Err(self.unsupported(value)),
        }
    }

    fn compare(&self, comparison: Comparison, value: &Value) -> Result<bool, EvalError> {
        let found = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => Some(parse_go_float(s.trim()).ok_or_else(|| self.unsupported(value))?),
            other => return Err(self.unsupported(other)),
        };
        let literal = parse_go_float(&self.literal).ok_or_else(|| self.invalid_literal(value))?;
        Ok(found.is_some_and(|found| comparison.holds(found, literal)))
    }

    fn contains(&self, value: &Value) -> Result<bool, EvalError> {
        match value {
            Value::Object(map) => Ok(map.contains_key(&self.literal)),
            Value::Array(items) => {
                for item in items {
                    match item {
                        // go-bexpr would crash on a nil element; it can never equal a literal.
                        Value::Null => {}
                        Value::Array(_) | Value::Object(_) => return Err(self.unsupported(item)),
                        scalar => {
                            // Elements the literal cannot be coerced to are skipped.
                            if let Ok(Some(true)) = scalar_equals(&self.literal, scalar) {
                                return Ok(true);
                            }
                        }
                    }
                }
                Ok(false)
            }
            Value::String(s) => Ok(s.contains(self.literal.as_str())),
            Value::Null | Value::Bool(_) | Value::Number(_) => Err(self.unsupported(value)),
        }
    }

    fn is_empty(&self, value: &Value) -> Result<bool, EvalError> {
        match value {
            Value::Null => Ok(true),
            Value::String(s) => Ok(s.is_empty()),
            Value::Array(items) => Ok(items.is_empty()),
            Value::Object(map) => Ok(map.is_empty()),
            Value::Bool(_) | Value::Number(_) => Err(self.unsupported(value)),
        }
    }

    fn matches(&self, regex: &Regex, value: &Value) -> Result<bool, EvalError> {
        match value {
            Value::String(s) => Ok(regex.is_match(s)),
            other => Err(self.unsupported(other)),
        }
    }

    fn evaluate(&self, datum: Datum<'_>) -> Result<bool, EvalError> {
        let value = self.resolve(datum)?;
        match &self.operator {
            Operator::Equal => self.equals(value),
            Operator::NotEqual => self.equals(value).map(|b| !b),
            Operator::Compare(comparison) => self.compare(*comparison, value),
            Operator::In => self.contains(value),
            Operator::NotIn => self.contains(value).map(|b| !b),
            Operator::IsEmpty => self.is_empty(value),
            Operator::IsNotEmpty => self.is_empty(value).map(|b| !b),
            Operator::Matches(regex) => self.matches(regex, value),
            Operator::NotMatches(regex) => self.matches(regex, value).map(|b| !b),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser: a hand-written PEG parser that follows go-bexpr's grammar. Alternatives that the
// original grammar would re-parse are factored so every input is parsed in near-linear time.

struct Parser<'s> {
    source: &'s str,
    chars: Vec<char>,
    pos: usize,
    /// The farthest position where a token was expected, and what was expected there.
    farthest: usize,
    expected: Vec<&'static str>,
    /// A specific complaint (unterminated string, bad number…) and where it was made.
    complaint: Option<(usize, String)>,
    /// An error that ends parsing at once (nesting too deep, bad regex).
    fatal: Option<FilterError>,
}

type Parsed<T> = Option<T>;

impl<'s> Parser<'s> {
    fn new(source: &'s str) -> Self {
        Self {
            source,
            chars: source.chars().collect(),
            pos: 0,
            farthest: 0,
            expected: Vec::new(),
            complaint: None,
            fatal: None,
        }
    }

    fn parse(mut self) -> Result<Filter, FilterError> {
        self.ws();
        let expr = self.or(0);
        if let Some(fatal) = self.fatal.take() {
            return Err(fatal);
        }
        if let Some(expr) = expr {
            self.ws();
            if self.at_end() {
                return Ok(Filter { source: self.source.to_owned(), expr });
            }
            self.expect_failed("end of filter");
        }
        Err(self.syntax_error())
    }

    fn syntax_error(&self) -> FilterError {
        let (position, message) = match &self.complaint {
            Some((at, message)) if *at >= self.farthest => (*at, message.clone()),
            _ => {
                let expected = match self.expected.as_slice() {
                    [] => "a filter expression".to_owned(),
                    [one] => (*one).to_owned(),
                    [init @ .., last] => format!("{} or {last}", init.join(", ")),
                };
                (self.farthest, format!("expected {expected}, found {}", self.describe_at(self.farthest)))
            }
        };
        FilterError::Syntax { expression: self.source.to_owned(), column: position + 1, message }
    }

    fn describe_at(&self, position: usize) -> String {
        let rest: String = self.chars.iter().skip(position).take(12).collect();
        if rest.is_empty() {
            "the end of the filter".to_owned()
        } else if self.chars.len() > position + 12 {
            format!("{rest:?}…")
        } else {
            format!("{rest:?}")
        }
    }

    fn expect_failed(&mut self, what: &'static str) {
        if self.pos > self.farthest {
            self.farthest = self.pos;
            self.expected.clear();
        }
        if self.pos == self.farthest && !self.expected.contains(&what) {
            self.expected.push(what);
        }
    }

    fn complain(&mut self, at: usize, message: impl Into<String>) {
        if self.complaint.as_ref().is_none_or(|(previous, _)| at >= *previous) {
            self.complaint = Some((at, message.into()));
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// `[ \t\r\n]*`; true when at least one character was consumed.
    fn ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Mandatory whitespace before or after `label`; a failure is reported as `label` missing.
    fn ws1(&mut self, label: &'static str) -> bool {
        if self.ws() {
            true
        } else {
            self.expect_failed(label);
            false
        }
    }

    fn literal(&mut self, token: &'static str, label: &'static str) -> bool {
        let matches = token.chars().enumerate().all(|(i, c)| self.chars.get(self.pos + i) == Some(&c));
        if matches {
            self.pos += token.chars().count();
        } else {
            self.expect_failed(label);
        }
        matches
    }

    /// Runs `f`; on failure restores the position.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        let start = self.pos;
        let result = f(self);
        if result.is_none() {
            self.pos = start;
        }
        result
    }

    /// `ws keyword ws` as one unit.
    fn keyword_between_spaces(&mut self, keyword: &'static str, label: &'static str) -> bool {
        self.attempt(|p| (p.ws1(label) && p.literal(keyword, label) && p.ws1("an operand")).then_some(()))
            .is_some()
    }

    fn or(&mut self, depth: usize) -> Parsed<Expr> {
        let first = self.and(depth)?;
        let mut operands = vec![first];
        while let Some(next) =
            self.attempt(|p| if p.keyword_between_spaces("or", "\"or\"") { p.and(depth) } else { None })
        {
            operands.push(next);
        }
        Some(if operands.len() == 1 { operands.pop()? } else { Expr::Or(operands) })
    }

    fn and(&mut self, depth: usize) -> Parsed<Expr> {
        let first = self.not(depth)?;
        let mut operands = vec![first];
        while let Some(next) =
            self.attempt(|p| if p.keyword_between_spaces("and", "\"and\"") { p.not(depth) } else { None })
        {
            operands.push(next);
        }
        Some(if operands.len() == 1 { operands.pop()? } else { Expr::And(operands) })
    }

    fn not(&mut self, depth: usize) -> Parsed<Expr> {
        if self.fatal.is_some() {
            return None;
        }
        // Consume `not ` prefixes iteratively; like the PEG, fall back to fewer of them when
        // the operand fails (then `not` may be a selector, as in `not == 1`).
        let mut starts = vec![self.pos];
        while self.attempt(|p| (p.literal("not", "\"not\"") && p.ws1("whitespace")).then_some(())).is_some() {
            starts.push(self.pos);
        }
        while let Some(start) = starts.pop() {
            self.pos = start;
            if let Some(expr) = self.group(depth) {
                return Some(if starts.len() % 2 == 1 { Expr::Not(Box::new(expr)) } else { expr });
            }
            if self.fatal.is_some() {
                return None;
            }
        }
        None
    }

    fn group(&mut self, depth: usize) -> Parsed<Expr> {
        if self.peek() != Some('(') {
            return self.attempt(Self::match_expression);
        }
        if depth >= MAX_NESTING {
            self.fatal =
                Some(FilterError::TooDeep { expression: self.source.to_owned(), column: self.pos + 1 });
            return None;
        }
        self.attempt(|p| {
            p.pos += 1;
            p.ws();
            let inner = p.or(depth + 1)?;
            p.ws();
            if p.literal(")", "\")\"") {
                Some(inner)
            } else {
                p.complain(p.pos, format!("unmatched parenthesis, found {}", p.describe_at(p.pos)));
                None
            }
        })
    }

    fn match_expression(&mut self) -> Parsed<Expr> {
        if let Some(m) = self.attempt(Self::selector_operator_value) {
            return Some(Expr::Match(m));
        }
        if self.fatal.is_some() {
            return None;
        }
        if let Some(m) = self.attempt(Self::selector_operator) {
            return Some(Expr::Match(m));
        }
        self.attempt(Self::value_operator_selector).map(Expr::Match)
    }

    fn selector_operator_value(&mut self) -> Parsed<Match> {
        let selector = self.selector()?;
        #[derive(Clone, Copy)]
        enum Op {
            Equal,
            NotEqual,
            Compare(Comparison),
            In,
            NotIn,
            Matches,
            NotMatches,
        }
        let op = if self.symbol("==") {
            Op::Equal
        } else if self.symbol("!=") {
            Op::NotEqual
        } else if let Some(comparison) = self.comparison() {
            Op::Compare(comparison)
        } else if self.keyword_between_spaces("contains", "\"contains\"") {
            Op::In
        } else if self.not_keyword("contains") {
            Op::NotIn
        } else if self.keyword_between_spaces("matches", "\"matches\"") {
            Op::Matches
        } else if self.not_keyword("matches") {
            Op::NotMatches
        } else {
            return None;
        };
        let value_start = self.pos;
        let literal = self.value()?;
        let operator = match op {
            Op::Equal => Operator::Equal,
            Op::NotEqual => Operator::NotEqual,
            Op::Compare(comparison) => {
                if parse_go_float(&literal).is_none() {
                    self.fatal = Some(FilterError::Syntax {
                        expression: self.source.to_owned(),
                        column: value_start + 1,
                        message: format!(
                            "\"{}\" compares numbers: expected a number, found {literal:?}",
                            comparison.symbol()
                        ),
                    });
                    return None;
                }
                Operator::Compare(comparison)
            }
            Op::In => Operator::In,
            Op::NotIn => Operator::NotIn,
            Op::Matches => Operator::Matches(self.regex(&literal, value_start)?),
            Op::NotMatches => Operator::NotMatches(self.regex(&literal, value_start)?),
        };
        Some(Match { selector, operator, literal })
    }

    /// `ws? symbol ws?`.
    fn symbol(&mut self, symbol: &'static str) -> bool {
        let label = if symbol == "==" { "\"==\"" } else { "\"!=\"" };
        self.attempt(|p| {
            p.ws();
            let found = p.literal(symbol, label);
            p.ws();
            found.then_some(())
        })
        .is_some()
    }

    /// `ws? (">=" | "<=" | ">" | "<") ws?`.
    fn comparison(&mut self) -> Option<Comparison> {
        [Comparison::GreaterOrEqual, Comparison::LessOrEqual, Comparison::Greater, Comparison::Less]
            .into_iter()
            .find(|comparison| {
                let symbol = comparison.symbol();
                self.attempt(|p| {
                    p.ws();
                    let found = p.literal(symbol, comparison_label(*comparison));
                    p.ws();
                    found.then_some(())
                })
                .is_some()
            })
    }

    /// `ws "not" ws keyword ws`.
    fn not_keyword(&mut self, keyword: &'static str) -> bool {
        let label = match keyword {
            "in" => "\"not in\"",
            "contains" => "\"not contains\"",
            _ => "\"not matches\"",
        };
        self.attempt(|p| {
            (p.ws1(label)
                && p.literal("not", label)
                && p.ws1("whitespace")
                && p.literal(keyword, label)
                && p.ws1("an operand"))
            .then_some(())
        })
        .is_some()
    }

    fn regex(&mut self, pattern: &str, at: usize) -> Parsed<Regex> {
        match regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build() {
            Ok(regex) => Some(regex),
            Err(error) => {
                self.fatal = Some(FilterError::Regex {
                    expression: self.source.to_owned(),
                    column: at + 1,
                    message: error.to_string(),
                });
                None
            }
        }
    }

    fn selector_operator(&mut self) -> Parsed<Match> {
        let selector = self.selector()?;
        let is_empty = |p: &mut Self| {
            (p.ws1("\"is empty\"")
                && p.literal("is", "\"is empty\"")
                && p.ws1("whitespace")
                && p.literal("empty", "\"empty\""))
            .then_some(())
        };
        let is_not_empty = |p: &mut Self| {
            (p.ws1("\"is not empty\"")
                && p.literal("is", "\"is not empty\"")
                && p.ws1("whitespace")
                && p.literal("not", "\"not\"")
                && p.ws1("whitespace")
                && p.literal("empty", "\"empty\""))
            .then_some(())
        };
        let operator = if self.attempt(is_empty).is_some() {
            Operator::IsEmpty
        } else if self.attempt(is_not_empty).is_some() {
            Operator::IsNotEmpty
        } else {
            return None;
        };
        Some(Match { selector, operator, literal: String::new() })
    }

    fn value_operator_selector(&mut self) -> Parsed<Match> {
        let literal = self.value()?;
        let operator = if self.keyword_between_spaces("in", "\"in\"") {
            Operator::In
        } else if self.not_keyword("in") {
            Operator::NotIn
        } else {
            return None;
        };
        let at = self.pos;
        match self.selector() {
            Some(selector) => Some(Match { selector, operator, literal }),
            None => {
                self.complain(
                    at,
                    format!("expected a selector after \"in\", found {}", self.describe_at(at)),
                );
                None
            }
        }
    }

    fn identifier(&mut self) -> Parsed<String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => {}
            _ => {
                self.expect_failed("a selector");
                return None;
            }
        }
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '/') {
            self.pos += 1;
        }
        Some(self.chars.get(start..self.pos).unwrap_or_default().iter().collect())
    }

    fn selector(&mut self) -> Parsed<Vec<String>> {
        let mut path = vec![self.identifier()?];
        loop {
            let segment = self.attempt(|p| {
                if !p.literal(".", "\".\"") {
                    return None;
                }
                if matches!(p.peek(), Some(c) if c.is_ascii_digit()) {
                    let start = p.pos;
                    while matches!(p.peek(), Some(c) if c.is_ascii_digit()) {
                        p.pos += 1;
                    }
                    return Some(p.chars.get(start..p.pos).unwrap_or_default().iter().collect());
                }
                p.identifier()
            });
            let segment = match segment {
                Some(segment) => Some(segment),
                None if self.peek() == Some('[') => Some(self.index()?),
                None => None,
            };
            match segment {
                Some(segment) => path.push(segment),
                None => return Some(path),
            }
        }
    }

    /// `"[" ws? string ws? "]"`; a malformed index fails the whole selector.
    fn index(&mut self) -> Parsed<String> {
        let open = self.pos;
        self.pos += 1;
        self.ws();
        if !matches!(self.peek(), Some('"' | '`')) {
            self.complain(
                self.pos,
                format!("invalid index, expected a quoted string, found {}", self.describe_at(self.pos)),
            );
            self.pos = open;
            return None;
        }
        let Some(key) = self.string() else {
            self.pos = open;
            return None;
        };
        self.ws();
        if self.literal("]", "\"]\"") {
            Some(key)
        } else {
            self.complain(self.pos, "unclosed index expression");
            self.pos = open;
            None
        }
    }

    fn value(&mut self) -> Parsed<String> {
        if let Some(path) = self.attempt(Self::selector) {
            return Some(path.join("."));
        }
        if let Some(number) = self.attempt(Self::number) {
            return Some(number);
        }
        self.attempt(Self::string)
    }

    fn number(&mut self) -> Parsed<String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        match self.peek() {
            Some('0') => self.pos += 1,
            Some('1'..='9') => {
                while matches!(self.peek(), Some('0'..='9')) {
                    self.pos += 1;
                }
            }
            _ => {
                self.expect_failed("a number");
                return None;
            }
        }
        if self.peek() == Some('.') && matches!(self.chars.get(self.pos + 1), Some('0'..='9')) {
            self.pos += 1;
            while matches!(self.peek(), Some('0'..='9')) {
                self.pos += 1;
            }
        }
        if !matches!(self.peek(), None | Some(' ' | '\t' | '\r' | '\n' | ')')) {
            self.complain(start, format!("invalid number literal {}", self.describe_at(start)));
            return None;
        }
        Some(self.chars.get(start..self.pos).unwrap_or_default().iter().collect())
    }

    fn string(&mut self) -> Parsed<String> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '`')) => q,
            _ => {
                self.expect_failed("a string");
                return None;
            }
        };
        self.pos += 1;
        let body_start = self.pos;
        while matches!(self.peek(), Some(c) if c != quote) {
            self.pos += 1;
        }
        if self.at_end() {
            self.complain(start, "unterminated string literal");
            return None;
        }
        let body = self.chars.get(body_start..self.pos).unwrap_or_default();
        self.pos += 1;
        if quote == '`' {
            // Go drops carriage returns from raw strings.
            return Some(body.iter().filter(|&&c| c != '\r').collect());
        }
        match unquote_go(body) {
            Ok(text) => Some(text),
            Err(message) => {
                self.complain(start, format!("invalid string literal: {message}"));
                None
            }
        }
    }
}

/// The escapes of a Go double-quoted string literal (`strconv.Unquote`).
fn comparison_label(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Greater => "\">\"",
        Comparison::GreaterOrEqual => "\">=\"",
        Comparison::Less => "\"<\"",
        Comparison::LessOrEqual => "\"<=\"",
    }
}

fn unquote_go(body: &[char]) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(body.len());
    let mut chars = body.iter().copied();
    let push_char = |bytes: &mut Vec<u8>, c: char| {
        let mut buffer = [0; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
    };
    let hex_digits = |chars: &mut dyn Iterator<Item = char>, n: usize| -> Result<u32, String> {
        let mut value = 0u32;
        for _ in 0..n {
            let digit = chars.next().and_then(|c| c.to_digit(16)).ok_or("malformed hex escape")?;
            value = value * 16 + digit;
        }
        Ok(value)
    };
    while let Some(c) = chars.next() {
        if c == '\n' {
            return Err("newline in string".into());
        }
        if c != '\\' {
            push_char(&mut bytes, c);
            continue;
        }
        let escape = chars.next().ok_or("trailing backslash")?;
        match escape {
            'a' => bytes.push(0x07),
            'b' => bytes.push(0x08),
            'f' => bytes.push(0x0c),
            'n' => bytes.push(b'\n'),
            'r' => bytes.push(b'\r'),
            't' => bytes.push(b'\t'),
            'v' => bytes.push(0x0b),
            '\\' => bytes.push(b'\\'),
            'x' => bytes.push(u8::try_from(hex_digits(&mut chars, 2)?).map_err(|_| "bad \\x escape")?),
            'u' | 'U' => {
                let code = hex_digits(&mut chars, if escape == 'u' { 4 } else { 8 })?;
                let c = char::from_u32(code).ok_or("escape is not a Unicode scalar value")?;
                push_char(&mut bytes, c);
            }
            '0'..='7' => {
                let mut value = escape.to_digit(8).unwrap_or_default();
                for _ in 0..2 {
                    let digit = chars.next().and_then(|c| c.to_digit(8)).ok_or("malformed octal escape")?;
                    value = value * 8 + digit;
                }
                bytes.push(u8::try_from(value).map_err(|_| "octal escape above \\377")?);
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    String::from_utf8(bytes).map_err(|_| "escapes do not form valid UTF-8".to_owned())
}

/// The first declared artifact whose filter does not parse, as a message.
pub fn invalid_artifact_filter(artifacts: &[super::OutputArtifact]) -> Option<String> {
    artifacts.iter().filter(|a| !a.path.filter.is_empty()).find_map(|artifact| {
        parse(&artifact.path.filter).err().map(|error| format!("artifact {:?}: {error}", artifact.name))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn eval(filter: &str, datum: &Value) -> Result<bool, EvalError> {
        parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")).evaluate(datum)
    }

    #[test]
    fn documented_forms() {
        let metadata = json!({
            "pushed": 1,
            "a": "x",
            "b": 3,
            "list": ["v", "w", 7, true],
            "z": [],
            "f": "model-v12",
            "nested": {"c": {"d": "deep"}, "key-with-dash": 2},
            "flag": true,
            "s": "1",
        });
        let cases = [
            ("pushed == 1", true),
            ("pushed == 1.0", true),
            ("pushed == \"1\"", true),
            ("pushed != 1", false),
            ("pushed == 2", false),
            ("pushed==1", true),
            ("a == \"x\" and b != 2", true),
            ("a == x and b != 3", false),
            ("a == `x`", true),
            ("\"v\" in list", true),
            ("\"u\" in list", false),
            ("7 in list", true),
            ("true in list", true),
            ("\"u\" not in list", true),
            ("list contains \"w\"", true),
            ("list not contains \"w\"", false),
            ("z is empty", true),
            ("z is not empty", false),
            ("list is not empty", true),
            ("f matches \"v[0-9]+$\"", true),
            ("f matches \"^v\"", false),
            ("f not matches \"^v\"", true),
            ("nested.c.d == deep", true),
            ("nested[\"key-with-dash\"] == 2", true),
            ("list.0 == v", true),
            ("c in nested", true),
            ("\"x\" in a", true),
            ("flag == true", true),
            ("flag == 1", true),
            ("flag == f", false),
            ("s == 1", true),
            ("not pushed == 2", true),
            ("not not pushed == 2", false),
            ("(pushed == 1)", true),
            ("( pushed == 1 )", true),
            // and binds tighter than or; not tighter than and
            ("pushed == 2 and a == x or b == 3", true),
            ("pushed == 2 and (a == x or b == 3)", false),
            ("pushed == 1 or pushed == 2 and a == y", true),
            ("(pushed == 1 or pushed == 2) and a == y", false),
            ("not pushed == 1 and a == x", false),
            ("not (pushed == 1 and a == y)", true),
            ("\n pushed == 1\t", true),
        ];
        for (filter, expected) in cases {
            assert_eq!(eval(filter, &metadata), Ok(expected), "{filter}");
        }
    }

    #[test]
    fn evaluation_errors() {
        let metadata = json!({"n": 1, "s": "x", "o": {"k": 1}, "l": [[1]], "nul": null, "b": true});
        let cases = [
            ("missing == 1", "missing_field"),
            ("o.missing == 1", "missing_field"),
            ("s.x == 1", "not_selectable"),
            ("n == abc", "invalid_literal"),
            ("b == yes", "invalid_literal"),
            ("o == 1", "unsupported_operator"),
            ("nul == 1", "unsupported_operator"),
            ("n contains 1", "unsupported_operator"),
            ("n matches \"1\"", "unsupported_operator"),
            ("n is empty", "unsupported_operator"),
            ("1 in l", "unsupported_operator"),
        ];
        for (filter, category) in cases {
            let result = eval(filter, &metadata);
            assert_eq!(result.map_err(|e| e.category()), Err(category), "{filter}");
        }
        assert_eq!(eval("nul is empty", &metadata), Ok(true));
        // Short-circuit: the failing operand is never reached.
        assert_eq!(eval("n == 2 and missing == 1", &metadata), Ok(false));
        assert_eq!(eval("n == 1 or missing == 1", &metadata), Ok(true));
        assert!(eval("n == 1 and missing == 1", &metadata).is_err());
    }

    #[test]
    fn numbers_compare() {
        let metrics = json!({"accuracy": 0.95, "loss": "0.2", "name": "m", "nested": {"auc": 0.85}});
        assert_eq!(eval("accuracy > 0.9", &metrics), Ok(true));
        assert_eq!(eval("accuracy>0.95", &metrics), Ok(false));
        assert_eq!(eval("accuracy >= 0.95", &metrics), Ok(true));
        assert_eq!(eval("nested.auc < 0.9 and accuracy <= 1", &metrics), Ok(true));
        assert_eq!(eval("loss < 0.5", &metrics), Ok(true), "a string that reads as a number");
        assert_eq!(eval("not accuracy > 0.9", &metrics), Ok(false));
        assert!(matches!(eval("name > 1", &metrics), Err(EvalError::Unsupported { .. })));
        assert!(matches!(eval("missing > 1", &metrics), Err(EvalError::MissingField { .. })));
        let error = parse("accuracy > high").unwrap_err();
        assert_eq!(error.column(), 12);
        assert!(error.to_string().contains("\">\" compares numbers"), "{error}");
        assert_eq!(parse("accuracy > 0.9").unwrap().source(), "accuracy > 0.9");
    }

    #[test]
    fn evaluates_a_map_like_a_value() {
        let value = json!({"pushed": 1});
        let Value::Object(map) = &value else { panic!("object") };
        let filter = parse("pushed == 1").unwrap();
        assert_eq!(filter.evaluate_map(map), Ok(true));
        assert_eq!(filter.evaluate(&value), Ok(true));
        assert_eq!(filter.to_string(), "pushed == 1");
        assert_eq!(filter.source(), "pushed == 1");
    }

    #[test]
    fn syntax_errors_name_the_column() {
        let cases = [
            ("", 1),
            ("pushed", 7),
            ("pushed = 1", 8),
            ("pushed == ", 11),
            ("pushed == 1 and", 16),
            ("pushed == 1 xor b == 2", 13),
            ("(pushed == 1", 13),
            ("pushed == 01", 11),
            ("pushed == \"abc", 11),
            ("pushed == 1)", 12),
            ("a==1and b==2", 4),
            ("not(a == 1)", 4),
            ("1 in 2", 6),
            ("a[b] == 1", 3),
            ("a == \"\\q\"", 6),
        ];
        for (filter, column) in cases {
            let error = parse(filter).err().unwrap_or_else(|| panic!("{filter:?} parsed"));
            assert_eq!(error.category(), "filter_syntax", "{filter:?}: {error}");
            assert_eq!(error.column(), column, "{filter:?}: {error}");
            assert!(error.to_string().contains(&format!("{filter:?}")), "{error}");
        }
        let message = parse("pushed = 1").unwrap_err().to_string();
        assert!(message.contains("expected") && message.contains("\"==\""), "{message}");
    }

    #[test]
    fn keywords_can_be_selectors() {
        let metadata = json!({"not": 1, "in": [1], "and": "x"});
        assert_eq!(eval("not == 1", &metadata), Ok(true));
        assert_eq!(eval("1 in in", &metadata), Ok(true));
        assert_eq!(eval("and == x", &metadata), Ok(true));
    }

    #[test]
    fn strings_unquote_like_go() {
        let metadata = json!({"s": "a\tb\u{e9}", "r": "raw\\n"});
        assert_eq!(eval("s == \"a\\tb\\u00e9\"", &metadata), Ok(true));
        assert_eq!(eval("s == \"a\\x09b\\303\\251\"", &metadata), Ok(true));
        assert_eq!(eval("r == `raw\\n`", &metadata), Ok(true));
        assert!(parse("s == \"\\xff\"").is_err());
    }

    #[test]
    fn invalid_regex_is_a_parse_error() {
        let error = parse("f matches \"(\"").unwrap_err();
        assert_eq!(error.category(), "filter_regex");
        assert_eq!(error.column(), 11);
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}a == 1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(parse(&ok).unwrap().evaluate(&json!({"a": 1})), Ok(true));
        let deep = format!("{}a == 1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse(&deep).unwrap_err().category(), "filter_too_deep");
        let long_and = vec!["a == 1"; 50_000].join(" and ");
        assert_eq!(parse(&long_and).unwrap().evaluate(&json!({"a": 1})), Ok(true));
        let many_nots = format!("{}a == 1", "not ".repeat(50_001));
        assert_eq!(parse(&many_nots).unwrap().evaluate(&json!({"a": 1})), Ok(false));
        assert!(parse(&"not ".repeat(20_000)).is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9 ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-e]{1,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn filter_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("a"),
            Just("b.c"),
            Just("d[\"e\"]"),
            Just("a.0"),
            Just("=="),
            Just("!="),
            Just("and"),
            Just("or"),
            Just("not"),
            Just("in"),
            Just("contains"),
            Just("matches"),
            Just("is"),
            Just("empty"),
            Just("("),
            Just(")"),
            Just("1"),
            Just("-2.5"),
            Just("\"x\""),
            Just("`y`"),
            Just("\"[a-\""),
            Just("true"),
            Just(" "),
        ];
        prop::collection::vec(token, 0..16).prop_map(|tokens| tokens.join(" "))
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(input in any::<String>()) {
            let _ = parse(&input);
        }

        #[test]
        fn parsing_arbitrary_ascii_never_panics(input in "[ -~\t\n]{0,64}") {
            let _ = parse(&input);
        }

        #[test]
        fn evaluating_arbitrary_filters_never_panics(input in filter_soup(), datum in json_value()) {
            if let Ok(filter) = parse(&input) {
                let _ = filter.evaluate(&datum);
                if let Value::Object(map) = &datum {
                    let _ = filter.evaluate_map(map);
                }
            }
        }

        #[test]
        fn well_formed_equalities_parse(key in "[a-z][a-z0-9_]{0,8}", n in any::<i32>()) {
            let filter = parse(&format!("{key} == {n}")).unwrap();
            prop_assert_eq!(filter.evaluate(&json!({ key.clone(): n })), Ok(true));
            let text = format!("{key} == \"{n}\"");
            prop_assert_eq!(parse(&text).unwrap().evaluate(&json!({ key: n.to_string() })), Ok(true));
        }
    }
}
