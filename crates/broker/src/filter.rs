//! Record filters: RocketMQ's two subscription expression types over a Kafka record's headers,
//! key and timestamp, evaluated by the broker (filtered views; share groups can take the same
//! filter).
//!
//! - **SQL92** (RocketMQ's subset of JMS selectors): comparisons `=`, `<>`, `<`, `<=`, `>`,
//!   `>=`, `[NOT] IN (…)`, `[NOT] BETWEEN … AND …`, `IS [NOT] NULL`, joined by `AND`, `OR`,
//!   `NOT` and parentheses. Keywords are case-insensitive.
//! - **TAG**: `TagA || TagB` matches a record whose `TAGS` header is one of the tags; `*`
//!   matches every record.
//!
//! Operands are string literals (`'eu'`, a quote doubled inside), numbers (`100`, `-2.5`),
//! and names: a header name (bare, `[A-Za-z_$][A-Za-z0-9_$.]*`, or double-quoted for any
//! other text, e.g. `"x-region"`; with repeated headers the last one counts, as Kafka's
//! `Headers.lastHeader`), or one of the record's own fields `__key` (the key as UTF-8 text)
//! and `__timestamp` (epoch ms).
//!
//! Evaluation is SQL's three-valued logic: a missing header, a null value, or a value that
//! is not a number where a number is compared is *unknown*, and a record matches only when
//! the whole expression is true. So a filter on a missing header is false, and so is its
//! `NOT`.
//!
//! Parsing is bounded (expression length, nesting depth, `IN` list length) because filters
//! arrive from clients; a bad expression is refused with the column where it goes wrong.

use std::cmp::Ordering;

use rill_storage::records::Headers;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8 * 1024;
/// Deepest nesting of parentheses and `NOT`s.
pub const MAX_DEPTH: usize = 64;
/// Most values in one `IN` list (TAG filters included).
pub const MAX_IN_VALUES: usize = 1024;

/// The header a TAG filter reads, as RocketMQ names a message's tag property.
pub const TAGS_HEADER: &str = "TAGS";
/// The record key, as a name in an expression.
pub const KEY_FIELD: &str = "__key";
/// The record timestamp (epoch ms), as a name in an expression.
pub const TIMESTAMP_FIELD: &str = "__timestamp";

/// Why an expression was refused: `column` is 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter expression error at column {column}: {message}")]
pub struct FilterError {
    pub column: usize,
    pub message: String,
}

/// The expression types, as RocketMQ's `ExpressionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterType {
    Sql92,
    Tag,
}

impl FilterType {
    pub fn parse(name: &str) -> Option<FilterType> {
        match name.to_ascii_uppercase().as_str() {
            "SQL92" => Some(FilterType::Sql92),
            "TAG" => Some(FilterType::Tag),
            _ => None,
        }
    }
}

/// A parsed filter, ready to evaluate against records.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

/// What a filter sees of a record.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    pub key: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: Headers<'a>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Const(bool),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Operand, CompareOp, Operand),
    In {
        operand: Operand,
        values: Vec<Literal>,
        negated: bool,
    },
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Name(Name),
    Literal(Literal),
}

#[derive(Debug, Clone, PartialEq)]
enum Name {
    Key,
    Timestamp,
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(Num),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn parse(text: &str) -> Option<Num> {
        let text = text.trim();
        if let Ok(i) = text.parse::<i64>() {
            return Some(Num::Int(i));
        }
        // Only plain decimal notation: "inf", "NaN" and the like are text, not numbers.
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        match text.parse::<f64>() {
            Ok(f) if plain && f.is_finite() => Some(Num::Float(f)),
            _ => None,
        }
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// An operand's value for one record.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    /// Header text or key (bytes, compared as they are).
    Text(&'a [u8]),
    /// A number known to be one (a numeric literal or the timestamp).
    Num(Num),
}

impl<'a> Value<'a> {
    fn as_num(self) -> Option<Num> {
        match self {
            Value::Num(n) => Some(n),
            Value::Text(t) => Num::parse(std::str::from_utf8(t).ok()?),
        }
    }
}

impl Filter {
    /// Parses an expression of the given type.
    pub fn parse(kind: FilterType, text: &str) -> Result<Filter, FilterError> {
        match kind {
            FilterType::Sql92 => Filter::parse_sql92(text),
            FilterType::Tag => Filter::parse_tags(text),
        }
    }

    /// Parses a SQL92 expression.
    pub fn parse_sql92(text: &str) -> Result<Filter, FilterError> {
        check_length(text)?;
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            text,
        };
        let expr = parser.expr(0)?;
        if let Some(t) = parser.peek() {
            return Err(parser.error_at(t.start, format!("unexpected {}", t.describe())));
        }
        Ok(Filter { expr })
    }

    /// Parses a TAG expression: `*`, or tags separated by `||`.
    pub fn parse_tags(text: &str) -> Result<Filter, FilterError> {
        check_length(text)?;
        if text.trim() == "*" {
            return Ok(Filter {
                expr: Expr::Const(true),
            });
        }
        let mut values = Vec::new();
        let mut column = 1;
        for part in text.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(FilterError {
                    column,
                    message: "empty tag".into(),
                });
            }
            if values.len() == MAX_IN_VALUES {
                return Err(FilterError {
                    column,
                    message: format!("more than {MAX_IN_VALUES} tags"),
                });
            }
            values.push(Literal::Str(tag.to_string()));
            column += part.chars().count() + 2;
        }
        Ok(Filter {
            expr: Expr::In {
                operand: Operand::Name(Name::Header(TAGS_HEADER.to_string())),
                values,
                negated: false,
            },
        })
    }

    /// Whether the record matches (the expression is true, not false or unknown).
    pub fn matches(&self, record: &RecordFields<'_>) -> bool {
        eval(&self.expr, record) == Some(true)
    }
}

fn check_length(text: &str) -> Result<(), FilterError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(FilterError {
            column: 1,
            message: format!(
                "expression of {} bytes is longer than the limit of {MAX_EXPRESSION_BYTES}",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Err(FilterError {
            column: 1,
            message: "empty expression".into(),
        });
    }
    Ok(())
}

/// Evaluates in three-valued logic: `None` is unknown. Recursion is bounded by the parser's
/// depth limit.
fn eval(expr: &Expr, r: &RecordFields<'_>) -> Option<bool> {
    match expr {
        Expr::Const(b) => Some(*b),
        Expr::Not(e) => eval(e, r).map(|b| !b),
        Expr::And(a, b) => match (eval(a, r), eval(b, r)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval(a, r), eval(b, r)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Compare(a, op, b) => {
            let ordering = compare(value(a, r)?, value(b, r)?, *op)?;
            Some(match op {
                CompareOp::Eq => ordering == Ordering::Equal,
                CompareOp::Ne => ordering != Ordering::Equal,
                CompareOp::Lt => ordering == Ordering::Less,
                CompareOp::Le => ordering != Ordering::Greater,
                CompareOp::Gt => ordering == Ordering::Greater,
                CompareOp::Ge => ordering != Ordering::Less,
            })
        }
        Expr::In {
            operand,
            values,
            negated,
        } => {
            let v = value(operand, r)?;
            let mut unknown = false;
            for literal in values {
                match compare(v, literal_value(literal), CompareOp::Eq) {
                    Some(Ordering::Equal) => return Some(!negated),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                None
            } else {
                Some(*negated)
            }
        }
        Expr::Between {
            operand,
            low,
            high,
            negated,
        } => {
            let v = value(operand, r)?;
            let above = compare(v, value(low, r)?, CompareOp::Ge)? != Ordering::Less;
            let below = compare(v, value(high, r)?, CompareOp::Le)? != Ordering::Greater;
            Some((above && below) != *negated)
        }
        Expr::IsNull { operand, negated } => Some(value(operand, r).is_none() != *negated),
    }
}

fn literal_value(literal: &Literal) -> Value<'_> {
    match literal {
        Literal::Str(s) => Value::Text(s.as_bytes()),
        Literal::Num(n) => Value::Num(*n),
    }
}

fn value<'a>(operand: &'a Operand, r: &RecordFields<'a>) -> Option<Value<'a>> {
    match operand {
        Operand::Literal(l) => Some(literal_value(l)),
        Operand::Name(Name::Key) => r.key.map(Value::Text),
        Operand::Name(Name::Timestamp) => Some(Value::Num(Num::Int(r.timestamp))),
        Operand::Name(Name::Header(name)) => r
            .headers
            .iter()
            .filter(|(k, _)| *k == name.as_bytes())
            .last()
            .and_then(|(_, v)| v)
            .map(Value::Text),
    }
}

/// Orders two values: numerically when either is a number (unknown if the other is not
/// one), as bytes when both are text. Text orders only for `=` and `<>`; `<`/`>` on text is
/// unknown, as in RocketMQ, where they apply to numbers.
fn compare(a: Value<'_>, b: Value<'_>, op: CompareOp) -> Option<Ordering> {
    match (a, b) {
        (Value::Text(x), Value::Text(y)) => match op {
            CompareOp::Eq | CompareOp::Ne => Some(x.cmp(y)),
            _ => None,
        },
        (x, y) => x.as_num()?.cmp(y.as_num()?),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Name(String),
    Str(String),
    Num(Num),
    Keyword(Keyword),
    Op(CompareOp),
    LParen,
    RParen,
    Comma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    In,
    Between,
    Is,
    Null,
    True,
    False,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    /// Byte offset in the expression.
    start: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Name(n) => format!("name '{n}'"),
            TokenKind::Str(s) => format!("string '{s}'"),
            TokenKind::Num(_) => "number".into(),
            TokenKind::Keyword(k) => format!("{k:?}").to_uppercase(),
            TokenKind::Op(_) => "comparison operator".into(),
            TokenKind::LParen => "'('".into(),
            TokenKind::RParen => "')'".into(),
            TokenKind::Comma => "','".into(),
        }
    }
}

fn column(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].chars().count() + 1
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let err = |at: usize, message: String| FilterError {
        column: column(text, at),
        message,
    };
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Bounded: each iteration consumes at least one byte.
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                TokenKind::LParen
            }
            b')' => {
                i += 1;
                TokenKind::RParen
            }
            b',' => {
                i += 1;
                TokenKind::Comma
            }
            b'=' => {
                i += 1;
                TokenKind::Op(CompareOp::Eq)
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'>') => {
                    i += 2;
                    TokenKind::Op(CompareOp::Ne)
                }
                Some(b'=') => {
                    i += 2;
                    TokenKind::Op(CompareOp::Le)
                }
                _ => {
                    i += 1;
                    TokenKind::Op(CompareOp::Lt)
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    TokenKind::Op(CompareOp::Ge)
                } else {
                    i += 1;
                    TokenKind::Op(CompareOp::Gt)
                }
            }
            b'\'' | b'"' => {
                let quote = c;
                let mut s = Vec::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(err(start, "unterminated quoted text".into()));
                        }
                        Some(&b) if b == quote => {
                            if bytes.get(i + 1) == Some(&quote) {
                                s.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&b) => {
                            s.push(b);
                            i += 1;
                        }
                    }
                }
                // Slices of valid UTF-8 cut at ASCII quotes stay valid UTF-8.
                let s = String::from_utf8(s).map_err(|_| err(start, "invalid text".into()))?;
                if quote == b'\'' {
                    TokenKind::Str(s)
                } else if s.is_empty() {
                    return Err(err(start, "empty quoted name".into()));
                } else {
                    TokenKind::Name(s)
                }
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_digit()
                        || bytes[i] == b'.'
                        || ((bytes[i] == b'e' || bytes[i] == b'E')
                            && bytes
                                .get(i + 1)
                                .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+'))
                        || ((bytes[i] == b'-' || bytes[i] == b'+')
                            && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let literal = &text[start..i];
                match Num::parse(literal) {
                    Some(n) => TokenKind::Num(n),
                    None => return Err(err(start, format!("'{literal}' is not a number"))),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'$' | b'.'))
                {
                    i += 1;
                }
                let word = &text[start..i];
                match word.to_ascii_uppercase().as_str() {
                    "AND" => TokenKind::Keyword(Keyword::And),
                    "OR" => TokenKind::Keyword(Keyword::Or),
                    "NOT" => TokenKind::Keyword(Keyword::Not),
                    "IN" => TokenKind::Keyword(Keyword::In),
                    "BETWEEN" => TokenKind::Keyword(Keyword::Between),
                    "IS" => TokenKind::Keyword(Keyword::Is),
                    "NULL" => TokenKind::Keyword(Keyword::Null),
                    "TRUE" => TokenKind::Keyword(Keyword::True),
                    "FALSE" => TokenKind::Keyword(Keyword::False),
                    _ => TokenKind::Name(word.to_string()),
                }
            }
            _ => {
                let ch = text[start..].chars().next().unwrap_or('?');
                return Err(err(start, format!("unexpected character '{ch}'")));
            }
        };
        tokens.push(Token { kind, start });
    }
    Ok(tokens)
}

struct Parser<'t> {
    tokens: Vec<Token>,
    at: usize,
    text: &'t str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn error_at(&self, byte: usize, message: String) -> FilterError {
        FilterError {
            column: column(self.text, byte),
            message,
        }
    }

    /// An error at the next token, or at the end.
    fn expected(&self, what: &str) -> FilterError {
        match self.peek() {
            Some(t) => self.error_at(t.start, format!("expected {what}, found {}", t.describe())),
            None => self.error_at(self.text.len(), format!("expected {what} at the end")),
        }
    }

    fn eat_keyword(&mut self, k: Keyword) -> bool {
        if self.peek().map(|t| &t.kind) == Some(&TokenKind::Keyword(k)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if self.peek().map(|t| &t.kind) == Some(kind) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth > MAX_DEPTH {
            return Err(self.expected(&format!("less than {MAX_DEPTH} levels of nesting")));
        }
        let mut left = self.and(depth)?;
        // Bounded by the token count.
        while self.eat_keyword(Keyword::Or) {
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.not(depth)?;
        // Bounded by the token count.
        while self.eat_keyword(Keyword::And) {
            let right = self.not(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if self.eat_keyword(Keyword::Not) {
            if depth + 1 > MAX_DEPTH {
                return Err(self.expected(&format!("less than {MAX_DEPTH} levels of nesting")));
            }
            return Ok(Expr::Not(Box::new(self.not(depth + 1)?)));
        }
        self.predicate(depth)
    }

    fn predicate(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if self.eat(&TokenKind::LParen) {
            let e = self.expr(depth + 1)?;
            if !self.eat(&TokenKind::RParen) {
                return Err(self.expected("')'"));
            }
            return Ok(e);
        }
        if self.eat_keyword(Keyword::True) {
            return Ok(Expr::Const(true));
        }
        if self.eat_keyword(Keyword::False) {
            return Ok(Expr::Const(false));
        }
        let operand = self.operand()?;
        if self.eat_keyword(Keyword::Is) {
            let negated = self.eat_keyword(Keyword::Not);
            if !self.eat_keyword(Keyword::Null) {
                return Err(self.expected("NULL"));
            }
            return Ok(Expr::IsNull { operand, negated });
        }
        let negated = self.eat_keyword(Keyword::Not);
        if self.eat_keyword(Keyword::In) {
            return self.in_list(operand, negated);
        }
        if self.eat_keyword(Keyword::Between) {
            let low = self.operand()?;
            if !self.eat_keyword(Keyword::And) {
                return Err(self.expected("AND"));
            }
            let high = self.operand()?;
            return Ok(Expr::Between {
                operand,
                low,
                high,
                negated,
            });
        }
        if negated {
            return Err(self.expected("IN or BETWEEN after NOT"));
        }
        let op = match self.peek().map(|t| &t.kind) {
            Some(TokenKind::Op(op)) => *op,
            _ => return Err(self.expected("a comparison (=, <>, <, <=, >, >=, IN, BETWEEN, IS)")),
        };
        self.at += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(operand, op, right))
    }

    fn in_list(&mut self, operand: Operand, negated: bool) -> Result<Expr, FilterError> {
        if !self.eat(&TokenKind::LParen) {
            return Err(self.expected("'(' after IN"));
        }
        let mut values = Vec::new();
        // Bounded by the token count and MAX_IN_VALUES.
        loop {
            let literal = match self.peek().map(|t| t.kind.clone()) {
                Some(TokenKind::Str(s)) => Literal::Str(s),
                Some(TokenKind::Num(n)) => Literal::Num(n),
                _ => return Err(self.expected("a string or number in the IN list")),
            };
            if values.len() == MAX_IN_VALUES {
                return Err(self.expected(&format!("at most {MAX_IN_VALUES} values in IN")));
            }
            self.at += 1;
            values.push(literal);
            if self.eat(&TokenKind::RParen) {
                break;
            }
            if !self.eat(&TokenKind::Comma) {
                return Err(self.expected("',' or ')'"));
            }
        }
        Ok(Expr::In {
            operand,
            values,
            negated,
        })
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let operand = match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Name(n)) => Operand::Name(match n.as_str() {
                KEY_FIELD => Name::Key,
                TIMESTAMP_FIELD => Name::Timestamp,
                _ => Name::Header(n),
            }),
            Some(TokenKind::Str(s)) => Operand::Literal(Literal::Str(s)),
            Some(TokenKind::Num(n)) => Operand::Literal(Literal::Num(n)),
            _ => return Err(self.expected("a name, string or number")),
        };
        self.at += 1;
        Ok(operand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        headers: &[(&str, Option<&str>)],
        key: Option<&'a str>,
        ts: i64,
        buf: &'a mut Vec<u8>,
    ) -> RecordFields<'a> {
        let pairs: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.map(str::as_bytes)))
            .collect();
        let headers = Headers::encode(&pairs, buf);
        RecordFields {
            key: key.map(str::as_bytes),
            timestamp: ts,
            headers,
        }
    }

    fn m(expr: &str, headers: &[(&str, Option<&str>)]) -> bool {
        let mut buf = Vec::new();
        let r = record(headers, Some("k1"), 1_000, &mut buf);
        Filter::parse_sql92(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(&r)
    }

    #[test]
    fn comparisons_on_text_and_numbers() {
        let h = [("region", Some("eu")), ("amount", Some("150"))];
        assert!(m("region = 'eu' AND amount > 100", &h));
        assert!(!m("region = 'eu' AND amount > 200", &h));
        assert!(m("region <> 'us'", &h));
        assert!(m("amount >= 150 AND amount <= 150", &h));
        assert!(!m("amount < 150", &h));
        assert!(m("amount = 150.0", &h), "numbers compare by value");
        assert!(m("amount > -1e3", &h));
        assert!(m("region = 'eu' OR amount < 0", &h));
        assert!(m("NOT (region = 'us')", &h));
        assert!(m(
            "(region = 'us' OR region = 'eu') AND NOT amount < 100",
            &h
        ));
        assert!(m("region IN ('us', 'eu')", &h));
        assert!(m("region NOT IN ('us', 'cn')", &h));
        assert!(m("amount IN (1, 150)", &h));
        assert!(m("amount BETWEEN 100 AND 200", &h));
        assert!(!m("amount NOT BETWEEN 100 AND 200", &h));
        assert!(m("amount BETWEEN 150 AND 150", &h), "inclusive");
        assert!(m("region IS NOT NULL AND other IS NULL", &h));
        assert!(m("and_field IS NULL", &h), "keywords only as whole words");
        assert!(
            m("REGION is null", &h),
            "names are case-sensitive, keywords not"
        );
        assert!(m("TRUE", &[]));
    }

    #[test]
    fn a_missing_header_or_a_non_number_is_unknown_and_never_matches() {
        let h = [("amount", Some("lots")), ("nul", None)];
        for expr in [
            "missing = 'x'",
            "NOT missing = 'x'",
            "missing <> 'x'",
            "amount > 1",
            "NOT amount > 1",
            "amount BETWEEN 1 AND 2",
            "amount NOT BETWEEN 1 AND 2",
            "missing IN ('a')",
            "missing NOT IN ('a')",
            "nul = 'x'",
            "'a' < 'b'",
        ] {
            assert!(!m(expr, &h), "{expr}");
        }
        assert!(m("nul IS NULL", &h), "a null header value is NULL");
        assert!(m("missing = 'x' OR TRUE", &h), "unknown OR true is true");
        assert!(!m("missing = 'x' AND TRUE", &h));
        assert!(!m("missing = 'x' OR FALSE", &h));
        assert!(
            m("NOT (missing = 'x' AND FALSE)", &h),
            "unknown AND false is false"
        );
    }

    #[test]
    fn key_timestamp_quoted_names_and_repeated_headers() {
        let h = [("x-region", Some("eu")), ("v", Some("1")), ("v", Some("2"))];
        assert!(m("\"x-region\" = 'eu'", &h));
        assert!(m("__key = 'k1' AND __timestamp = 1000", &h));
        assert!(m("__timestamp BETWEEN 999 AND 1001", &h));
        assert!(m("v = 2", &h), "the last of repeated headers counts");
        assert!(m("'it''s' = 'it''s'", &h), "a doubled quote is a quote");
        let mut buf = Vec::new();
        let keyless = record(&[], None, 5, &mut buf);
        let f = Filter::parse_sql92("__key IS NULL").unwrap();
        assert!(f.matches(&keyless));
    }

    #[test]
    fn tag_filters() {
        let f = Filter::parse(FilterType::Tag, "TagA || TagB").unwrap();
        let mut buf = Vec::new();
        assert!(f.matches(&record(&[("TAGS", Some("TagB"))], None, 0, &mut buf)));
        assert!(!f.matches(&record(&[("TAGS", Some("TagC"))], None, 0, &mut buf)));
        assert!(!f.matches(&record(&[], None, 0, &mut buf)));
        let all = Filter::parse(FilterType::Tag, " * ").unwrap();
        assert!(all.matches(&record(&[], None, 0, &mut buf)));
        let e = Filter::parse(FilterType::Tag, "TagA ||  || TagB").unwrap_err();
        assert_eq!(e.column, 8);
        assert_eq!(FilterType::parse("sql92"), Some(FilterType::Sql92));
        assert_eq!(FilterType::parse("regex"), None);
    }

    #[test]
    fn bad_expressions_name_the_column() {
        for (expr, column, needle) in [
            ("region = ", 10, "expected a name"),
            ("region = 'eu' AND", 18, "at the end"),
            ("region == 'eu'", 9, "expected a name"),
            ("region 'eu'", 8, "expected a comparison"),
            ("(a = 1", 7, "expected ')'"),
            ("a = 1)", 6, "unexpected ')'"),
            ("a = 'eu", 5, "unterminated"),
            ("a = 1 # b", 7, "unexpected character '#'"),
            ("a IN ()", 7, "IN list"),
            ("a IN (b)", 7, "IN list"),
            ("a BETWEEN 1 OR 2", 13, "expected AND"),
            ("a NOT = 1", 7, "IN or BETWEEN"),
            ("a IS 1", 6, "NULL"),
            ("a = 1.2.3", 5, "not a number"),
            ("é = 1", 1, "unexpected character 'é'"),
            ("x = 'é' AND ?", 13, "unexpected character '?'"),
            ("", 1, "empty"),
        ] {
            let e = Filter::parse_sql92(expr).unwrap_err();
            assert_eq!(e.column, column, "{expr}: {e}");
            assert!(e.to_string().contains(needle), "{expr}: {e}");
        }
    }

    #[test]
    fn parsing_is_bounded() {
        let long = format!("a = '{}'", "x".repeat(MAX_EXPRESSION_BYTES));
        assert!(Filter::parse_sql92(&long)
            .unwrap_err()
            .message
            .contains("longer"));
        let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(Filter::parse_sql92(&deep)
            .unwrap_err()
            .message
            .contains("nesting"));
        let nots = format!("{}a = 1", "NOT ".repeat(200));
        assert!(Filter::parse_sql92(&nots)
            .unwrap_err()
            .message
            .contains("nesting"));
        let list = (0..MAX_IN_VALUES + 1)
            .map(|i| i.to_string())
            .collect::<Vec<_>>();
        let big_in = format!("a IN ({})", list.join(","));
        assert!(Filter::parse_sql92(&big_in)
            .unwrap_err()
            .message
            .contains("at most"));
        // A long flat chain of ORs is fine: evaluation recursion follows the tree, which is
        // left-deep; the length limit bounds it.
        let chain = vec!["a = 1"; 800].join(" OR ");
        assert!(chain.len() < MAX_EXPRESSION_BYTES);
        assert!(m(&chain, &[("a", Some("1"))]));
    }
}
