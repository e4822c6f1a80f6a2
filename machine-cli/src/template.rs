//! A subset of Go's `text/template`, evaluated over [`serde_json::Value`], for
//! `machine ls --format` and `machine inspect --format`.
//!
//! Docker Machine passed these flags straight to Go's `text/template`, so
//! users have scripts full of `{{.Name}}`, `{{json .Driver}}` and
//! `{{range .Labels}}`. This module implements the parts those scripts use:
//!
//! * Text outside `{{ }}` is copied verbatim, except that the two-character
//!   sequences `\t` and `\n` become a tab and a newline (shells hand
//!   `--format "{{.Name}}\t{{.State}}"` over with a literal backslash).
//! * Operands: `.` (the current data), `.Field`, `.A.B.C`, `$` (the root
//!   data), variables `$x` and `$x.Field`, string literals (`"..."` with Go
//!   escapes, or raw `` `...` ``), numbers, `true`, `false`, `nil`, and
//!   parenthesised pipelines such as `(len .List)` or `(index .M "k").Field`.
//! * Functions: `json`, `upper`, `lower`, `join`, `split`, `len`, `index`,
//!   `printf` (`%s %v %d %q %%` with `-`, `+`, `0` flags, width and
//!   precision), `print`, `println`, `eq`, `ne`, `not`, `and`, `or`.
//! * Pipelines: `{{.X | json}}`; the value on the left becomes the last
//!   argument of the function on the right.
//! * `{{if}}`, `{{else if}}`, `{{else}}`, `{{with}}`, `{{range}}` (over
//!   lists, objects in key order, and whole numbers, with optional
//!   `$i, $e :=` variables), `{{end}}`, variable declarations
//!   `{{$x := .Name}}`, comments `{{/* ... */}}` and the trim markers `{{- `
//!   and ` -}}`.
//!
//! Values render the way Go prints them: strings raw, numbers as-is, `true` /
//! `false`, a missing field or `null` as `<no value>`, lists as `[a b c]` and
//! objects as `map[k:v k2:v2]` with keys sorted (a `null` inside a list or
//! object prints `<nil>`). Truthiness follows Go: `false`, `0`, `""`,
//! `null`, empty lists and empty objects are false.
//!
//! Deliberate differences from Go, all in the direction of leniency: field
//! access on `null` (such as `.A.B` when `.A` is missing) yields `<no
//! value>` instead of failing, `len` of `null` is 0 and counts the characters
//! (not bytes) of a string, `join` accepts its two arguments in either order
//! (so `{{.List | join ","}}` works), and `printf` with the wrong number of
//! arguments is an error instead of `%!s(MISSING)` in the output.
//!
//! [`parse_table`] handles Docker's `table` prefix.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// Names of the functions templates may call, in the order error messages
/// list them.
pub const FUNCTIONS: &[&str] = &[
    "and", "eq", "index", "join", "json", "len", "lower", "ne", "not", "or", "print", "printf",
    "println", "split", "upper",
];

/// A problem parsing or executing a template. Offsets are byte offsets into
/// the template source as given to [`Template::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error(
        "template: action opened at byte {offset} is never closed: add \"}}}}\" after it \
         (write {{{{\"{{{{\"}}}} to print a literal \"{{{{\")"
    )]
    UnclosedAction {
        /// Offset of the `{{`.
        offset: usize,
    },
    /// A quoted string inside an action without its closing quote.
    #[error(
        "template: string starting at byte {offset} is never closed: add the closing quote \
         (write \\\" for a quote inside the string)"
    )]
    UnterminatedString {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// `{{end}}` or `{{else}}` where no block is open, or in the wrong place.
    #[error("template: unexpected {{{{{keyword}}}}} at byte {offset}: {hint}")]
    UnexpectedKeyword {
        /// `end`, `else` or `else if`.
        keyword: String,
        /// Offset of the action's `{{`.
        offset: usize,
        /// What to do about it.
        hint: String,
    },
    /// `{{if}}`, `{{range}}` or `{{with}}` without its `{{end}}`.
    #[error(
        "template: {{{{{keyword}}}}} at byte {offset} has no matching {{{{end}}}}: \
         add {{{{end}}}} after its body"
    )]
    UnclosedBlock {
        /// `if`, `range` or `with`.
        keyword: String,
        /// Offset of the block's `{{`.
        offset: usize,
    },
    /// A function name that is not one of [`FUNCTIONS`].
    #[error("template: unknown function \"{name}\" at byte {offset}: known functions are {known}")]
    UnknownFunction {
        /// The name as written.
        name: String,
        /// Offset of the name.
        offset: usize,
        /// The known functions, comma-separated.
        known: String,
    },
    /// A function called with the wrong number of arguments.
    #[error(
        "template: {function} at byte {offset} takes {expected} but was given {given} \
         (a value piped in with | counts as its last argument)"
    )]
    Arity {
        /// The function's name.
        function: String,
        /// Offset of the call.
        offset: usize,
        /// How many it takes, in words.
        expected: String,
        /// How many it got.
        given: usize,
    },
    /// `printf` whose format's verbs do not match its arguments.
    #[error(
        "template: printf at byte {offset} has {verbs} verb(s) in its format but {args} \
         argument(s) after it: give one argument per %s, %v, %d or %q (write %% for a \
         literal percent sign)"
    )]
    PrintfArity {
        /// Offset of the call.
        offset: usize,
        /// Verbs in the format.
        verbs: usize,
        /// Arguments after the format, including a piped-in value.
        args: usize,
    },
    /// Any other malformed action.
    #[error("template: {message} at byte {offset}: {hint}")]
    Syntax {
        /// Offset of the offending token or action.
        offset: usize,
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// A failure while rendering, such as a field lookup on a string.
    #[error("template: executing the action at byte {offset}: {message}")]
    Exec {
        /// Offset of the command that failed.
        offset: usize,
        /// What failed and what to do.
        message: String,
    },
}

fn syntax(offset: usize, message: impl Into<String>, hint: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        offset,
        message: message.into(),
        hint: hint.into(),
    }
}

fn exec_err(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError::Exec {
        offset,
        message: message.into(),
    }
}

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `src`; see the module documentation for the supported syntax.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let items = scan(src)?;
        let mut parser = BlockParser {
            items: items.into_iter(),
        };
        let (nodes, stop) = parser.list()?;
        match stop {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End { offset } => Err(TemplateError::UnexpectedKeyword {
                keyword: "end".into(),
                offset,
                hint: "there is no open {{if}}, {{range}} or {{with}} for it to close; remove it"
                    .into(),
            }),
            Stop::Else { offset } => Err(TemplateError::UnexpectedKeyword {
                keyword: "else".into(),
                offset,
                hint: "{{else}} belongs between {{if}}, {{range}} or {{with}} and its {{end}}"
                    .into(),
            }),
            Stop::ElseIf { offset, .. } => Err(TemplateError::UnexpectedKeyword {
                keyword: "else if".into(),
                offset,
                hint: "{{else if}} belongs between {{if}} and its {{end}}".into(),
            }),
        }
    }

    /// Renders the template with `data` as `.` (and `$`).
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut exec = Exec {
            vars: vec![("$".to_owned(), data.clone())],
            out: String::new(),
        };
        exec.walk(&self.nodes, data)?;
        Ok(exec.out)
    }

    /// The field paths (`Name`, `Engine.Version`: without the leading dot,
    /// joined with `.`) that the template reads from the top-level data, in
    /// source order, repeats included. Fields read inside `{{range}}` and
    /// `{{with}}` bodies, where `.` is something else, are left out; fields in
    /// `{{if}}` conditions and bodies and in function arguments are included.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_fields(&self.nodes, &mut out);
        out
    }
}

/// Parses a Docker-style table format: `table {{.Name}}\t{{.State}}`.
///
/// Returns `None` when `src` does not start with the word `table` (followed
/// by whitespace or nothing). Otherwise returns the template for one row, the
/// text after `table` with leading whitespace removed, together with
/// [`Template::fields`]: the field paths the row reads, in order (for
/// `table {{.Name}}\t{{.DriverName}}`, `["Name", "DriverName"]`), so the caller
/// can map each to a column header. A caller that wants the header line laid
/// out exactly like the rows can instead render the returned template over an
/// object mapping each field to its header, which is what Docker Machine did.
///
/// `table` alone yields an empty field list and an empty template; callers
/// usually take that to mean "the default columns".
///
/// Also returns `None` when the text after `table` does not parse; call
/// [`Template::parse`] on the whole of `src` to get the error, whose offsets
/// then point into `src` as the user typed it.
pub fn parse_table(src: &str) -> Option<(Vec<String>, Template)> {
    let rest = src.strip_prefix("table")?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let template = Template::parse(rest.trim_start()).ok()?;
    Some((template.fields(), template))
}

// ---------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        value: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared with `:=` (at most two, and two only in range).
    decl: Vec<String>,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
struct Command {
    offset: usize,
    kind: CmdKind,
}

#[derive(Debug, Clone)]
enum CmdKind {
    Call {
        func: Func,
        args: Vec<Operand>,
        /// The parsed format of a `printf` whose format is a literal.
        format: Option<Vec<Piece>>,
    },
    Operand(Operand),
}

#[derive(Debug, Clone)]
enum Operand {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Sub(Box<Pipeline>, Vec<String>),
}

impl Operand {
    fn describe(&self) -> String {
        match self {
            Operand::Dot => ".".to_owned(),
            Operand::Field(path) => format!(".{}", path.join(".")),
            Operand::Var(name, path) => {
                let mut s = name.clone();
                for p in path {
                    s.push('.');
                    s.push_str(p);
                }
                s
            }
            Operand::Lit(v) => serde_json::to_string(v).unwrap_or_default(),
            Operand::Sub(..) => "a parenthesised value".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    And,
    Eq,
    Index,
    Join,
    Json,
    Len,
    Lower,
    Ne,
    Not,
    Or,
    Print,
    Printf,
    Println,
    Split,
    Upper,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "and" => Func::And,
            "eq" => Func::Eq,
            "index" => Func::Index,
            "join" => Func::Join,
            "json" => Func::Json,
            "len" => Func::Len,
            "lower" => Func::Lower,
            "ne" => Func::Ne,
            "not" => Func::Not,
            "or" => Func::Or,
            "print" => Func::Print,
            "printf" => Func::Printf,
            "println" => Func::Println,
            "split" => Func::Split,
            "upper" => Func::Upper,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::And => "and",
            Func::Eq => "eq",
            Func::Index => "index",
            Func::Join => "join",
            Func::Json => "json",
            Func::Len => "len",
            Func::Lower => "lower",
            Func::Ne => "ne",
            Func::Not => "not",
            Func::Or => "or",
            Func::Print => "print",
            Func::Printf => "printf",
            Func::Println => "println",
            Func::Split => "split",
            Func::Upper => "upper",
        }
    }

    /// Minimum and maximum argument counts, and the same in words.
    fn arity(self) -> (usize, Option<usize>, &'static str) {
        match self {
            Func::Json | Func::Upper | Func::Lower | Func::Len | Func::Not => {
                (1, Some(1), "1 argument")
            }
            Func::Join => (2, Some(2), "2 arguments (a list and a separator)"),
            Func::Split => (2, Some(2), "2 arguments (a string and a separator)"),
            Func::Ne => (2, Some(2), "2 arguments"),
            Func::Eq => (2, None, "at least 2 arguments"),
            Func::Index => (1, None, "a list or object and then keys"),
            Func::And | Func::Or => (1, None, "at least 1 argument"),
            Func::Print | Func::Println => (0, None, "any number of arguments"),
            Func::Printf => (1, None, "a format string and then its arguments"),
        }
    }
}

/// A piece of a `printf` format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Verb(Spec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
    verb: char,
}

fn parse_format(fmt: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(digits(&mut chars).unwrap_or(0));
        }
        match chars.next() {
            Some('%') => lit.push('%'),
            Some(v @ ('s' | 'v' | 'd' | 'q')) => {
                spec.verb = v;
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Verb(spec));
            }
            Some(v) => return Err(format!("unsupported printf verb %{v}")),
            None => return Err("printf format ends with a lone %".to_owned()),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    n
}

fn count_verbs(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .filter(|p| matches!(p, Piece::Verb(_)))
        .count()
}

const FORMAT_HINT: &str = "supported verbs are %s, %v, %d and %q (with -, + and 0 flags, \
                           width and precision); write %% for a literal percent sign";

// ---------------------------------------------------------------------------
// Scanning: split the source into text and actions

#[derive(Debug)]
enum Item {
    Text(String),
    Action { offset: usize, kind: ActionKind },
}

#[derive(Debug)]
enum ActionKind {
    Output(Pipeline),
    If(Pipeline),
    ElseIf(Pipeline),
    Else,
    End,
    Range(Pipeline),
    With(Pipeline),
    Comment,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Turns the two-character sequences `\t` and `\n` into tab and newline.
fn unescape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('t') => {
                    out.push('\t');
                    chars.next();
                    continue;
                }
                Some('n') => {
                    out.push('\n');
                    chars.next();
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

fn scan(src: &str) -> Result<Vec<Item>, TemplateError> {
    let b = src.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    loop {
        let open = src[pos..].find("{{").map(|rel| pos + rel);
        let text_end = open.unwrap_or(src.len());
        let mut text = unescape_text(&src[pos..text_end]);
        if trim_next {
            text = text.trim_start_matches([' ', '\t', '\r', '\n']).to_owned();
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        let Some(open) = open else { break };

        let mut start = open + 2;
        if b.get(start) == Some(&b'-') && !b.get(start + 1).is_some_and(u8::is_ascii_digit) {
            if let Some(Item::Text(t)) = items.last_mut() {
                let kept = t.trim_end_matches([' ', '\t', '\r', '\n']).len();
                t.truncate(kept);
                if t.is_empty() {
                    items.pop();
                }
            }
            start += 1;
        }

        let (kind, content_end, close) = scan_action(src, open, start)?;
        trim_next = content_end > start && b[content_end - 1] == b'-';
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let end = if trim_next {
                    content_end - 1
                } else {
                    content_end
                };
                parse_action(src, open, start, end)?
            }
        };
        items.push(Item::Action { offset: open, kind });
        pos = close;
    }
    Ok(items)
}

/// Finds the end of the action whose content starts at `start`. Returns the
/// action kind if it is a comment, the end of its content (before `}}`) and
/// the offset just after `}}`.
fn scan_action(
    src: &str,
    open: usize,
    start: usize,
) -> Result<(Option<ActionKind>, usize, usize), TemplateError> {
    let b = src.as_bytes();
    let mut i = start;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    if src[i..].starts_with("/*") {
        let Some(rel) = src[i + 2..].find("*/") else {
            return Err(TemplateError::UnclosedAction { offset: open });
        };
        let mut j = i + 2 + rel + 2;
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        if src[j..].starts_with("-}}") {
            return Ok((Some(ActionKind::Comment), j + 1, j + 3));
        }
        if src[j..].starts_with("}}") {
            return Ok((Some(ActionKind::Comment), j, j + 2));
        }
        return Err(syntax(
            j,
            "text after a comment",
            "a comment must fill its whole action: {{/* like this */}}",
        ));
    }
    while i < b.len() {
        match b[i] {
            b'"' => {
                let quote = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(TemplateError::UnterminatedString { offset: quote }),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'`' => match src[i + 1..].find('`') {
                Some(rel) => i += rel + 1,
                None => return Err(TemplateError::UnterminatedString { offset: i }),
            },
            b'}' if b.get(i + 1) == Some(&b'}') => return Ok((None, i, i + 2)),
            _ => {}
        }
        i += 1;
    }
    Err(TemplateError::UnclosedAction { offset: open })
}

// ---------------------------------------------------------------------------
// Lexing and parsing one action

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Pipe,
    LParen,
    RParen,
    Declare,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
    end: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn lex(src: &str, start: usize, end: usize) -> Result<Vec<Token>, TemplateError> {
    let b = &src.as_bytes()[..end];
    let mut i = start;
    let mut toks = Vec::new();
    let read_ident = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && is_ident_char(b[*i]) {
            *i += 1;
        }
        src[s..*i].to_owned()
    };
    let read_fields = |i: &mut usize| -> Result<Vec<String>, TemplateError> {
        let mut fields = Vec::new();
        while *i < b.len() && b[*i] == b'.' {
            if !b.get(*i + 1).copied().is_some_and(is_ident_start) {
                return Err(syntax(
                    *i,
                    "field name missing after '.'",
                    "write a field path like .Driver.IPAddress, or use index for keys \
                     that are not plain names: {{index . \"my-key\"}}",
                ));
            }
            *i += 1;
            fields.push(read_ident(i));
        }
        Ok(fields)
    };
    while i < b.len() {
        let c = b[i];
        if is_space(c) {
            i += 1;
            continue;
        }
        let offset = i;
        let next = b.get(i + 1).copied();
        let tok = match c {
            b'|' => {
                i += 1;
                Tok::Pipe
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b':' if next == Some(b'=') => {
                i += 2;
                Tok::Declare
            }
            b'=' => {
                return Err(syntax(
                    i,
                    "assignment with = is not supported",
                    "declare a new variable instead: {{$x := .Name}}",
                ));
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                Tok::Lit(lex_number(src, b, &mut i)?)
            }
            b'.' if next.is_some_and(is_ident_start) => Tok::Field(read_fields(&mut i)?),
            b'.' => {
                i += 1;
                if i < b.len() && !is_space(b[i]) && !matches!(b[i], b'|' | b')' | b',') {
                    return Err(syntax(
                        i,
                        format!("unexpected {:?} after '.'", char_at(src, i)),
                        "write . on its own or a field path like .Name",
                    ));
                }
                Tok::Dot
            }
            b'$' => {
                i += 1;
                let name = format!("${}", read_ident(&mut i));
                Tok::Var(name, read_fields(&mut i)?)
            }
            b'"' => {
                let (s, after) = lex_string(src, i, b.len())?;
                i = after;
                Tok::Lit(Value::String(s))
            }
            b'`' => {
                let Some(rel) = src[i + 1..b.len()].find('`') else {
                    return Err(TemplateError::UnterminatedString { offset: i });
                };
                let s = src[i + 1..i + 1 + rel].to_owned();
                i += rel + 2;
                Tok::Lit(Value::String(s))
            }
            b'\'' => {
                return Err(syntax(
                    i,
                    "character literals are not supported",
                    "use a string in double quotes: \"a\"",
                ));
            }
            b'0'..=b'9' => Tok::Lit(lex_number(src, b, &mut i)?),
            b'-' | b'+' if next.is_some_and(|n| n.is_ascii_digit() || n == b'.') => {
                Tok::Lit(lex_number(src, b, &mut i)?)
            }
            c if is_ident_start(c) => {
                let word = read_ident(&mut i);
                match word.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    _ => Tok::Ident(word),
                }
            }
            _ => {
                return Err(syntax(
                    i,
                    format!("unexpected {:?} in action", char_at(src, i)),
                    "actions hold fields (.Name), variables ($x), literals (\"text\", 42) \
                     and functions (upper .Name); use | to pipe",
                ));
            }
        };
        toks.push(Token {
            tok,
            offset,
            end: i,
        });
    }
    Ok(toks)
}

fn char_at(src: &str, i: usize) -> char {
    src[i..].chars().next().unwrap_or(' ')
}

fn lex_number(src: &str, b: &[u8], i: &mut usize) -> Result<Value, TemplateError> {
    let start = *i;
    if matches!(b[*i], b'-' | b'+') {
        *i += 1;
    }
    while *i < b.len() {
        let c = b[*i];
        let exp_sign = matches!(c, b'+' | b'-') && matches!(b[*i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
            *i += 1;
        } else {
            break;
        }
    }
    let text = src[start..*i].replace('_', "");
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Value::from(n));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Value::from(n));
    }
    if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Ok(Value::Number(n));
    }
    Err(syntax(
        start,
        format!("bad number {:?}", &src[start..*i]),
        "write a decimal number such as 3, -1 or 2.5",
    ))
}

/// Decodes a double-quoted Go string starting at `start`; returns it and the
/// offset after the closing quote.
fn lex_string(src: &str, start: usize, end: usize) -> Result<(String, usize), TemplateError> {
    let mut out = String::new();
    let mut chars = src[start + 1..end].char_indices();
    let unterminated = TemplateError::UnterminatedString { offset: start };
    while let Some((rel, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + rel + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return Err(unterminated);
                };
                let simple = match e {
                    'n' => Some('\n'),
                    't' => Some('\t'),
                    'r' => Some('\r'),
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    'f' => Some('\x0c'),
                    'v' => Some('\x0b'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let digits = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => {
                        return Err(syntax(
                            start + 1 + rel,
                            format!("unknown escape \\{e} in string"),
                            "known escapes are \\n \\t \\r \\\\ \\\" \\xHH \\uHHHH; \
                             write \\\\ for a backslash or use a `raw string`",
                        ));
                    }
                };
                let hex: String = chars.by_ref().take(digits).map(|(_, c)| c).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == digits => out.push(ch),
                    _ => {
                        return Err(syntax(
                            start + 1 + rel,
                            format!("bad escape \\{e}{hex} in string"),
                            format!("\\{e} needs exactly {digits} hex digits of a valid character"),
                        ));
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(unterminated)
}

fn parse_action(
    src: &str,
    open: usize,
    start: usize,
    end: usize,
) -> Result<ActionKind, TemplateError> {
    let toks = lex(src, start, end)?;
    let mut p = ActionParser {
        toks: &toks,
        pos: 0,
        end,
    };
    let keyword = match toks.first() {
        None => {
            return Err(syntax(
                open,
                "empty action",
                "put a field or function in it, for example {{.Name}}",
            ));
        }
        Some(Token {
            tok: Tok::Ident(w), ..
        }) => w.as_str(),
        Some(_) => "",
    };
    let kind = match keyword {
        "if" | "range" | "with" => {
            p.pos = 1;
            if p.at_end() {
                return Err(syntax(
                    open,
                    format!("{{{{{keyword}}}}} needs a value"),
                    format!("for example {{{{{keyword} .Name}}}}"),
                ));
            }
            let pipe = p.pipeline(if keyword == "range" { 2 } else { 1 })?;
            match keyword {
                "if" => ActionKind::If(pipe),
                "range" => ActionKind::Range(pipe),
                _ => ActionKind::With(pipe),
            }
        }
        "else" => {
            p.pos = 1;
            match toks.get(1).map(|t| &t.tok) {
                None => ActionKind::Else,
                Some(Tok::Ident(w)) if w == "if" => {
                    p.pos = 2;
                    if p.at_end() {
                        return Err(syntax(
                            open,
                            "{{else if}} needs a condition",
                            "for example {{else if .Active}}",
                        ));
                    }
                    ActionKind::ElseIf(p.pipeline(1)?)
                }
                Some(_) => {
                    return Err(syntax(
                        toks[1].offset,
                        "unexpected text after else",
                        "write {{else}} or {{else if CONDITION}}",
                    ));
                }
            }
        }
        "end" => {
            if let Some(t) = toks.get(1) {
                return Err(syntax(
                    t.offset,
                    "unexpected text after end",
                    "write {{end}} on its own",
                ));
            }
            p.pos = 1;
            ActionKind::End
        }
        "define" | "template" | "block" | "break" | "continue" => {
            return Err(syntax(
                open,
                format!("{{{{{keyword}}}}} is not supported"),
                "supported actions are values, functions, {{if}}, {{else}}, {{range}}, \
                 {{with}} and {{end}}",
            ));
        }
        _ => ActionKind::Output(p.pipeline(1)?),
    };
    if let Some(t) = toks.get(p.pos) {
        return Err(syntax(
            t.offset,
            format!("unexpected {:?} in action", &src[t.offset..t.end]),
            "check for an unmatched ')'",
        ));
    }
    Ok(kind)
}

#[derive(Debug)]
struct ActionParser<'t> {
    toks: &'t [Token],
    pos: usize,
    /// Offset just past the action's content, for errors at its end.
    end: usize,
}

impl<'t> ActionParser<'t> {
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    fn peek_tok(&self, ahead: usize) -> Option<&'t Tok> {
        self.toks.get(self.pos + ahead).map(|t| &t.tok)
    }

    fn pipeline(&mut self, max_decl: usize) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let decl_offset = self.peek().map_or(self.end, |t| t.offset);
        match (
            self.peek_tok(0),
            self.peek_tok(1),
            self.peek_tok(2),
            self.peek_tok(3),
        ) {
            (Some(Tok::Var(a, fa)), Some(Tok::Declare), ..) if fa.is_empty() => {
                decl.push(a.clone());
                self.pos += 2;
            }
            (
                Some(Tok::Var(a, fa)),
                Some(Tok::Comma),
                Some(Tok::Var(b, fb)),
                Some(Tok::Declare),
            ) if fa.is_empty() && fb.is_empty() => {
                decl.push(a.clone());
                decl.push(b.clone());
                self.pos += 4;
            }
            _ => {}
        }
        if decl.len() > max_decl {
            return Err(syntax(
                decl_offset,
                if max_decl == 0 {
                    "variables cannot be declared here".to_owned()
                } else {
                    "only {{range}} can declare two variables".to_owned()
                },
                "declare one variable: {{$x := .Name}}, or two in a range: \
                 {{range $k, $v := .Labels}}",
            ));
        }
        if decl.iter().any(|d| d == "$") {
            return Err(syntax(
                decl_offset,
                "cannot declare $",
                "$ always means the top-level data; pick a name like $x",
            ));
        }
        let mut cmds = vec![self.command()?];
        while let Some(Tok::Pipe) = self.peek_tok(0) {
            let pipe_offset = self.toks[self.pos].offset;
            self.pos += 1;
            if matches!(self.peek_tok(0), None | Some(Tok::Pipe | Tok::RParen)) {
                return Err(syntax(
                    pipe_offset,
                    "missing function after |",
                    "put a function after the pipe, for example {{.Name | upper}}",
                ));
            }
            cmds.push(self.command()?);
        }
        for (i, cmd) in cmds.iter_mut().enumerate() {
            let piped = usize::from(i > 0);
            match &mut cmd.kind {
                CmdKind::Operand(op) if piped == 1 => {
                    return Err(syntax(
                        cmd.offset,
                        format!("cannot pipe into {}", op.describe()),
                        "only functions can follow |, for example {{.Name | upper}}",
                    ));
                }
                CmdKind::Operand(_) => {}
                CmdKind::Call { func, args, format } => {
                    let given = args.len() + piped;
                    let (min, max, words) = func.arity();
                    if given < min || max.is_some_and(|m| given > m) {
                        return Err(TemplateError::Arity {
                            function: func.name().to_owned(),
                            offset: cmd.offset,
                            expected: words.to_owned(),
                            given,
                        });
                    }
                    if *func == Func::Printf
                        && let Some(Operand::Lit(Value::String(f))) = args.first()
                    {
                        let pieces = parse_format(f)
                            .map_err(|message| syntax(cmd.offset, message, FORMAT_HINT))?;
                        let verbs = count_verbs(&pieces);
                        if verbs != given - 1 {
                            return Err(TemplateError::PrintfArity {
                                offset: cmd.offset,
                                verbs,
                                args: given - 1,
                            });
                        }
                        *format = Some(pieces);
                    }
                }
            }
        }
        Ok(Pipeline { decl, cmds })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let Some(first) = self.peek().cloned() else {
            return Err(syntax(
                self.end,
                "missing value",
                "put a field or function here, for example .Name",
            ));
        };
        if let Tok::Ident(name) = &first.tok {
            self.pos += 1;
            let func = lookup_func(name, first.offset)?;
            let mut args = Vec::new();
            while let Some(op) = self.maybe_operand()? {
                args.push(op);
            }
            return Ok(Command {
                offset: first.offset,
                kind: CmdKind::Call {
                    func,
                    args,
                    format: None,
                },
            });
        }
        let Some(op) = self.maybe_operand()? else {
            return Err(syntax(
                first.offset,
                format!("expected a value, found {}", describe_tok(&first.tok)),
                "put a field or function here, for example .Name",
            ));
        };
        if let Some(t) = self.peek()
            && !matches!(t.tok, Tok::Pipe | Tok::RParen)
        {
            return Err(syntax(
                t.offset,
                format!(
                    "{} is not a function, so it cannot take arguments",
                    op.describe()
                ),
                "put the function first, as in {{printf \"%s\" .Name}}, or pipe into it, \
                 as in {{.Name | upper}}",
            ));
        }
        Ok(Command {
            offset: first.offset,
            kind: CmdKind::Operand(op),
        })
    }

    /// Parses one operand, or returns `None` at `|`, `)` or the end.
    fn maybe_operand(&mut self) -> Result<Option<Operand>, TemplateError> {
        let Some(t) = self.peek().cloned() else {
            return Ok(None);
        };
        let op = match t.tok {
            Tok::Pipe | Tok::RParen => return Ok(None),
            Tok::Dot => Operand::Dot,
            Tok::Field(path) => Operand::Field(path),
            Tok::Var(name, path) => Operand::Var(name, path),
            Tok::Lit(v) => Operand::Lit(v),
            Tok::LParen => {
                self.pos += 1;
                let inner = self.pipeline(0)?;
                let Some(close) = self.peek().cloned() else {
                    return Err(syntax(t.offset, "unclosed '('", "add the matching ')'"));
                };
                if close.tok != Tok::RParen {
                    return Err(syntax(
                        close.offset,
                        format!("expected ')', found {}", describe_tok(&close.tok)),
                        "add the matching ')'",
                    ));
                }
                let mut fields = Vec::new();
                if let Some(Token {
                    tok: Tok::Field(path),
                    offset,
                    ..
                }) = self.toks.get(self.pos + 1)
                    && *offset == close.end
                {
                    fields.clone_from(path);
                    self.pos += 1;
                }
                Operand::Sub(Box::new(inner), fields)
            }
            Tok::Ident(name) => {
                let func = lookup_func(&name, t.offset)?;
                return Err(syntax(
                    t.offset,
                    format!("function {} used as an argument", func.name()),
                    format!(
                        "wrap the call in parentheses, for example ({} .Name)",
                        func.name()
                    ),
                ));
            }
            Tok::Declare | Tok::Comma => {
                return Err(syntax(
                    t.offset,
                    format!("unexpected {}", describe_tok(&t.tok)),
                    "variables are declared at the start of an action: {{$x := .Name}}",
                ));
            }
        };
        self.pos += 1;
        Ok(Some(op))
    }
}

fn describe_tok(t: &Tok) -> String {
    match t {
        Tok::Dot => "'.'".to_owned(),
        Tok::Field(p) => format!(".{}", p.join(".")),
        Tok::Var(n, _) => n.clone(),
        Tok::Ident(n) => n.clone(),
        Tok::Lit(v) => serde_json::to_string(v).unwrap_or_default(),
        Tok::Pipe => "'|'".to_owned(),
        Tok::LParen => "'('".to_owned(),
        Tok::RParen => "')'".to_owned(),
        Tok::Declare => "':='".to_owned(),
        Tok::Comma => "','".to_owned(),
    }
}

fn lookup_func(name: &str, offset: usize) -> Result<Func, TemplateError> {
    Func::from_name(name).ok_or_else(|| TemplateError::UnknownFunction {
        name: name.to_owned(),
        offset,
        known: FUNCTIONS.join(", "),
    })
}

// ---------------------------------------------------------------------------
// Block structure

#[derive(Debug)]
enum Stop {
    Eof,
    Else { offset: usize },
    ElseIf { offset: usize, cond: Pipeline },
    End { offset: usize },
}

#[derive(Debug)]
struct BlockParser {
    items: std::vec::IntoIter<Item>,
}

impl BlockParser {
    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (offset, kind) = match item {
                Item::Text(s) => {
                    nodes.push(Node::Text(s));
                    continue;
                }
                Item::Action { offset, kind } => (offset, kind),
            };
            match kind {
                ActionKind::Output(p) => nodes.push(Node::Output(p)),
                ActionKind::Comment => {}
                ActionKind::If(cond) => nodes.push(self.if_tail(cond, offset)?),
                ActionKind::With(value) => {
                    let (body, otherwise) = self.body_and_else("with", offset)?;
                    nodes.push(Node::With {
                        value,
                        body,
                        otherwise,
                    });
                }
                ActionKind::Range(over) => {
                    let (body, otherwise) = self.body_and_else("range", offset)?;
                    nodes.push(Node::Range {
                        over,
                        body,
                        otherwise,
                    });
                }
                ActionKind::Else => return Ok((nodes, Stop::Else { offset })),
                ActionKind::ElseIf(cond) => return Ok((nodes, Stop::ElseIf { offset, cond })),
                ActionKind::End => return Ok((nodes, Stop::End { offset })),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// Parses the rest of an `{{if}}` or `{{else if}}`; `origin` is the offset
    /// of the chain's first `{{if}}`, which errors point at.
    fn if_tail(&mut self, cond: Pipeline, origin: usize) -> Result<Node, TemplateError> {
        let (then, stop) = self.list()?;
        let otherwise = match stop {
            Stop::End { .. } => Vec::new(),
            Stop::Eof => {
                return Err(TemplateError::UnclosedBlock {
                    keyword: "if".into(),
                    offset: origin,
                });
            }
            Stop::ElseIf { cond, .. } => vec![self.if_tail(cond, origin)?],
            Stop::Else { .. } => self.final_else("if", origin)?,
        };
        Ok(Node::If {
            cond,
            then,
            otherwise,
        })
    }

    fn body_and_else(
        &mut self,
        keyword: &str,
        origin: usize,
    ) -> Result<(Vec<Node>, Vec<Node>), TemplateError> {
        let (body, stop) = self.list()?;
        let otherwise = match stop {
            Stop::End { .. } => Vec::new(),
            Stop::Eof => {
                return Err(TemplateError::UnclosedBlock {
                    keyword: keyword.into(),
                    offset: origin,
                });
            }
            Stop::ElseIf { offset, .. } => {
                return Err(TemplateError::UnexpectedKeyword {
                    keyword: "else if".into(),
                    offset,
                    hint: format!(
                        "{{{{{keyword}}}}} takes only a plain {{{{else}}}}; \
                         put an {{{{if}}}} inside it"
                    ),
                });
            }
            Stop::Else { .. } => self.final_else(keyword, origin)?,
        };
        Ok((body, otherwise))
    }

    /// Parses the body after a block's last `{{else}}`, up to `{{end}}`.
    fn final_else(&mut self, keyword: &str, origin: usize) -> Result<Vec<Node>, TemplateError> {
        let (nodes, stop) = self.list()?;
        match stop {
            Stop::End { .. } => Ok(nodes),
            Stop::Eof => Err(TemplateError::UnclosedBlock {
                keyword: keyword.into(),
                offset: origin,
            }),
            Stop::Else { offset } => Err(TemplateError::UnexpectedKeyword {
                keyword: "else".into(),
                offset,
                hint: format!("{{{{{keyword}}}}} can have only one {{{{else}}}}"),
            }),
            Stop::ElseIf { offset, .. } => Err(TemplateError::UnexpectedKeyword {
                keyword: "else if".into(),
                offset,
                hint: "{{else if}} must come before the final {{else}}".into(),
            }),
        }
    }
}

fn collect_fields(nodes: &[Node], out: &mut Vec<String>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Output(p) => pipeline_fields(p, out),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                pipeline_fields(cond, out);
                collect_fields(then, out);
                collect_fields(otherwise, out);
            }
            Node::With {
                value: p,
                otherwise,
                ..
            }
            | Node::Range {
                over: p, otherwise, ..
            } => {
                pipeline_fields(p, out);
                collect_fields(otherwise, out);
            }
        }
    }
}

fn pipeline_fields(p: &Pipeline, out: &mut Vec<String>) {
    fn operand(op: &Operand, out: &mut Vec<String>) {
        match op {
            Operand::Field(path) => out.push(path.join(".")),
            Operand::Sub(p, _) => pipeline_fields(p, out),
            Operand::Dot | Operand::Var(..) | Operand::Lit(_) => {}
        }
    }
    for cmd in &p.cmds {
        match &cmd.kind {
            CmdKind::Operand(op) => operand(op, out),
            CmdKind::Call { args, .. } => args.iter().for_each(|a| operand(a, out)),
        }
    }
}

// ---------------------------------------------------------------------------
// Execution

static NULL: Value = Value::Null;

#[derive(Debug)]
struct Exec {
    vars: Vec<(String, Value)>,
    out: String,
}

impl Exec {
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        let scope = self.vars.len();
        for node in nodes {
            match node {
                Node::Text(s) => self.out.push_str(s),
                Node::Output(p) => {
                    let v = self.pipeline(p, dot)?;
                    if let Some(name) = p.decl.first() {
                        self.vars.push((name.clone(), v));
                    } else {
                        render_top(&v, &mut self.out);
                    }
                }
                Node::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let inner = self.vars.len();
                    let v = self.pipeline(cond, dot)?;
                    let truth = truthy(&v);
                    if let Some(name) = cond.decl.first() {
                        self.vars.push((name.clone(), v));
                    }
                    self.walk(if truth { then } else { otherwise }, dot)?;
                    self.vars.truncate(inner);
                }
                Node::With {
                    value,
                    body,
                    otherwise,
                } => {
                    let inner = self.vars.len();
                    let v = self.pipeline(value, dot)?;
                    if let Some(name) = value.decl.first() {
                        self.vars.push((name.clone(), v.clone()));
                    }
                    if truthy(&v) {
                        self.walk(body, &v)?;
                    } else {
                        self.walk(otherwise, dot)?;
                    }
                    self.vars.truncate(inner);
                }
                Node::Range {
                    over,
                    body,
                    otherwise,
                } => self.range(over, body, otherwise, dot)?,
            }
        }
        self.vars.truncate(scope);
        Ok(())
    }

    fn range(
        &mut self,
        over: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
    ) -> Result<(), TemplateError> {
        let v = self.pipeline(over, dot)?;
        let offset = over.cmds[0].offset;
        let pairs: Vec<(Value, Value)> = match v {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, e)| (Value::from(i), e))
                .collect(),
            Value::Object(m) => {
                let mut pairs: Vec<(Value, Value)> =
                    m.into_iter().map(|(k, v)| (Value::String(k), v)).collect();
                pairs.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
                pairs
            }
            Value::Number(n) if n.as_i64().is_some() => {
                let n = n.as_i64().unwrap_or(0).max(0);
                (0..n).map(|i| (Value::from(i), Value::from(i))).collect()
            }
            other => {
                return Err(exec_err(
                    offset,
                    format!(
                        "range cannot iterate over {} {}; range needs a list, an object or \
                         a whole number",
                        type_name(&other),
                        short_json(&other)
                    ),
                ));
            }
        };
        if pairs.is_empty() {
            return self.walk(otherwise, dot);
        }
        let scope = self.vars.len();
        for (key, value) in pairs {
            match over.decl.as_slice() {
                [v] => self.vars.push((v.clone(), value.clone())),
                [k, v] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((v.clone(), value.clone()));
                }
                _ => {}
            }
            self.walk(body, &value)?;
            self.vars.truncate(scope);
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut last = None;
        for cmd in &p.cmds {
            last = Some(self.command(cmd, dot, last.take())?);
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn command(
        &mut self,
        cmd: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        match &cmd.kind {
            CmdKind::Operand(op) => self.operand(op, dot, cmd.offset),
            CmdKind::Call { func, args, format } => {
                let mut values = Vec::with_capacity(args.len() + 1);
                for a in args {
                    values.push(self.operand(a, dot, cmd.offset)?);
                }
                values.extend(piped);
                call(*func, &values, format.as_deref(), cmd.offset)
            }
        }
    }

    fn operand(
        &mut self,
        op: &Operand,
        dot: &Value,
        offset: usize,
    ) -> Result<Value, TemplateError> {
        match op {
            Operand::Dot => Ok(dot.clone()),
            Operand::Field(path) => lookup(dot, path, ".", offset).cloned(),
            Operand::Var(name, path) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(exec_err(
                        offset,
                        format!(
                            "undefined variable {name}; declare it first, as in \
                             {{{{{name} := .Name}}}}, or use $ for the top-level data"
                        ),
                    ));
                };
                lookup(v, path, name, offset).cloned()
            }
            Operand::Lit(v) => Ok(v.clone()),
            Operand::Sub(p, path) => {
                let v = self.pipeline(p, dot)?;
                lookup(&v, path, "(...)", offset).cloned()
            }
        }
    }
}

/// Follows a field path; missing fields and fields of `null` are `null`.
fn lookup<'v>(
    v: &'v Value,
    path: &[String],
    base: &str,
    offset: usize,
) -> Result<&'v Value, TemplateError> {
    let mut cur = v;
    for (i, name) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get(name).unwrap_or(&NULL),
            Value::Null => &NULL,
            other => {
                let mut so_far = base.trim_end_matches('.').to_owned();
                for p in &path[..i] {
                    so_far.push('.');
                    so_far.push_str(p);
                }
                if so_far.is_empty() {
                    so_far.push('.');
                }
                return Err(exec_err(
                    offset,
                    format!(
                        "cannot read field {name}: {so_far} is {} {}, not an object; \
                         check the field path (machine inspect shows the data)",
                        a_type_name(other),
                        short_json(other)
                    ),
                ));
            }
        };
    }
    Ok(cur)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn a_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON of a value, cut short for error messages.
fn short_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.chars().count() > 40 {
        let mut cut: String = s.chars().take(37).collect();
        cut.push_str("...");
        cut
    } else {
        s
    }
}

/// Go truthiness: false, 0, "", null and empty lists and objects are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Renders a value as an action's output: `null` is `<no value>`.
fn render_top(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<no value>"),
        other => render_inner(other, out),
    }
}

/// Renders a value the way Go's fmt prints it with `%v`.
fn render_inner(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                render_inner(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                render_inner(&m[k], out);
            }
            out.push(']');
        }
    }
}

fn inner_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let mut s = String::new();
            render_inner(other, &mut s);
            s
        }
    }
}

fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                i == j
            } else if let (Some(i), Some(j)) = (x.as_u64(), y.as_u64()) {
                i == j
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

fn call(
    func: Func,
    args: &[Value],
    format: Option<&[Piece]>,
    offset: usize,
) -> Result<Value, TemplateError> {
    Ok(match func {
        Func::Json => Value::String(serde_json::to_string(&args[0]).unwrap_or_default()),
        Func::Upper | Func::Lower => match &args[0] {
            Value::Null => Value::Null,
            v => {
                let s = inner_text(v);
                Value::String(if func == Func::Upper {
                    s.to_uppercase()
                } else {
                    s.to_lowercase()
                })
            }
        },
        Func::Len => Value::from(match &args[0] {
            Value::Null => 0,
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            other => {
                return Err(exec_err(
                    offset,
                    format!(
                        "len of {} {}; len takes a string, a list or an object",
                        type_name(other),
                        short_json(other)
                    ),
                ));
            }
        }),
        Func::Join => {
            let (list, sep) = match (&args[0], &args[1]) {
                (l @ (Value::Array(_) | Value::Null), Value::String(s))
                | (Value::String(s), l @ (Value::Array(_) | Value::Null)) => (l, s),
                (a, b) => {
                    return Err(exec_err(
                        offset,
                        format!(
                            "join was given {} and {}; it needs a list and a separator \
                             string, as in {{{{join .Labels \",\"}}}}",
                            a_type_name(a),
                            a_type_name(b)
                        ),
                    ));
                }
            };
            let parts: Vec<String> = match list {
                Value::Array(a) => a.iter().map(inner_text).collect(),
                _ => Vec::new(),
            };
            Value::String(parts.join(sep))
        }
        Func::Split => match (&args[0], &args[1]) {
            (Value::Null, Value::String(_)) => Value::Array(Vec::new()),
            (Value::String(s), Value::String(sep)) => Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            ),
            (a, b) => {
                return Err(exec_err(
                    offset,
                    format!(
                        "split was given {} and {}; it needs a string and a separator \
                         string, as in {{{{split .URL \":\"}}}}",
                        a_type_name(a),
                        a_type_name(b)
                    ),
                ));
            }
        },
        Func::Index => index(&args[0], &args[1..], offset)?,
        Func::Eq => Value::Bool(args[1..].iter().any(|b| values_eq(&args[0], b))),
        Func::Ne => Value::Bool(!values_eq(&args[0], &args[1])),
        Func::Not => Value::Bool(!truthy(&args[0])),
        Func::And => args
            .iter()
            .find(|v| !truthy(v))
            .unwrap_or(&args[args.len() - 1])
            .clone(),
        Func::Or => args
            .iter()
            .find(|v| truthy(v))
            .unwrap_or(&args[args.len() - 1])
            .clone(),
        Func::Print => {
            let mut s = String::new();
            for (i, v) in args.iter().enumerate() {
                if i > 0 && !v.is_string() && !args[i - 1].is_string() {
                    s.push(' ');
                }
                render_inner(v, &mut s);
            }
            Value::String(s)
        }
        Func::Println => {
            let parts: Vec<String> = args.iter().map(inner_text).collect();
            Value::String(parts.join(" ") + "\n")
        }
        Func::Printf => {
            let parsed;
            let pieces = match format {
                Some(p) => p,
                None => {
                    let Value::String(f) = &args[0] else {
                        return Err(exec_err(
                            offset,
                            format!(
                                "printf's format must be a string, not {}",
                                a_type_name(&args[0])
                            ),
                        ));
                    };
                    parsed = parse_format(f)
                        .map_err(|m| exec_err(offset, format!("{m}; {FORMAT_HINT}")))?;
                    let verbs = count_verbs(&parsed);
                    if verbs != args.len() - 1 {
                        return Err(TemplateError::PrintfArity {
                            offset,
                            verbs,
                            args: args.len() - 1,
                        });
                    }
                    &parsed
                }
            };
            Value::String(sprintf(pieces, &args[1..], offset)?)
        }
    })
}

fn index(v: &Value, keys: &[Value], offset: usize) -> Result<Value, TemplateError> {
    let mut cur = v;
    for key in keys {
        cur = match (cur, key) {
            (Value::Null, _) => &NULL,
            (Value::Array(a), Value::Number(n)) => {
                let i = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
                match i
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| a.get(i))
                {
                    Some(e) => e,
                    None => {
                        return Err(exec_err(
                            offset,
                            format!(
                                "index {n} is out of range for a list of {} item(s); \
                                 indexes start at 0",
                                a.len()
                            ),
                        ));
                    }
                }
            }
            (Value::Object(m), Value::String(k)) => m.get(k).unwrap_or(&NULL),
            (Value::Array(_), k) => {
                return Err(exec_err(
                    offset,
                    format!(
                        "a list is indexed by a whole number, not {} {}",
                        a_type_name(k),
                        short_json(k)
                    ),
                ));
            }
            (Value::Object(_), k) => {
                return Err(exec_err(
                    offset,
                    format!(
                        "an object is indexed by a string key, not {} {}",
                        a_type_name(k),
                        short_json(k)
                    ),
                ));
            }
            (other, _) => {
                return Err(exec_err(
                    offset,
                    format!(
                        "cannot index {} {}; index takes a list or an object",
                        a_type_name(other),
                        short_json(other)
                    ),
                ));
            }
        };
    }
    Ok(cur.clone())
}

fn as_integer(v: &Value) -> Option<i128> {
    let Value::Number(n) = v else { return None };
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18)
                .map(|f| f as i128)
        })
}

fn sprintf(pieces: &[Piece], args: &[Value], offset: usize) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut args = args.iter();
    for piece in pieces {
        let spec = match piece {
            Piece::Lit(s) => {
                out.push_str(s);
                continue;
            }
            Piece::Verb(spec) => spec,
        };
        let arg = args.next().unwrap_or(&NULL);
        let body = match spec.verb {
            'd' => {
                let Some(n) = as_integer(arg) else {
                    return Err(exec_err(
                        offset,
                        format!(
                            "printf %d needs a whole number, got {} {}; use %v to print \
                             any value",
                            a_type_name(arg),
                            short_json(arg)
                        ),
                    ));
                };
                let sign = if n < 0 {
                    "-"
                } else if spec.plus {
                    "+"
                } else {
                    ""
                };
                let mut digits = n.unsigned_abs().to_string();
                if let Some(w) = spec.width
                    && spec.zero
                    && !spec.minus
                {
                    let len = sign.len() + digits.len();
                    if w > len {
                        digits.insert_str(0, &"0".repeat(w - len));
                    }
                }
                format!("{sign}{digits}")
            }
            'q' => {
                let mut t = inner_text(arg);
                if let Some(p) = spec.prec {
                    t = t.chars().take(p).collect();
                }
                go_quote(&t)
            }
            _ => {
                let mut t = inner_text(arg);
                if let Some(p) = spec.prec {
                    t = t.chars().take(p).collect();
                }
                t
            }
        };
        let len = body.chars().count();
        let pad = spec.width.map_or(0, |w| w.saturating_sub(len));
        if spec.minus {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&body);
        }
    }
    Ok(out)
}

/// Quotes a string the way Go's `%q` does.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if c.is_control() => {
                let n = u32::from(c);
                let _ = if n < 0x80 {
                    write!(out, "\\x{n:02x}")
                } else {
                    write!(out, "\\u{n:04x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "Name": "dev",
            "State": "Running",
            "DriverName": "virtualbox",
            "Active": true,
            "Count": 3,
            "Zero": 0,
            "Ratio": 1.5,
            "Empty": "",
            "Nothing": null,
            "List": ["a", "b", "c"],
            "Nums": [1, 2],
            "EmptyList": [],
            "Labels": {"env": "prod", "az": "eu-1"},
            "Driver": {"IPAddress": "192.168.99.100", "Memory": 2048, "Nested": {"Deep": "x"}},
            "Machines": [
                {"Name": "m1", "State": "Running"},
                {"Name": "m2", "State": "Stopped"}
            ]
        })
    }

    fn render(src: &str) -> String {
        let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        t.render(&data())
            .unwrap_or_else(|e| panic!("render {src:?}: {e}"))
    }

    fn parse_err(src: &str) -> TemplateError {
        match Template::parse(src) {
            Ok(t) => panic!("{src:?} parsed: {t:?}"),
            Err(e) => e,
        }
    }

    fn render_err(src: &str) -> TemplateError {
        let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        match t.render(&data()) {
            Ok(s) => panic!("{src:?} rendered {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn text_is_copied_verbatim() {
        assert_eq!(render(""), "");
        assert_eq!(render("plain text } { }}"), "plain text } { }}");
        assert_eq!(render("ünïcode ✓"), "ünïcode ✓");
    }

    #[test]
    fn backslash_t_and_n_in_text_become_tab_and_newline() {
        assert_eq!(render(r"{{.Name}}\t{{.State}}\n"), "dev\tRunning\n");
        assert_eq!(render(r"a\b\\c"), r"a\b\\c");
        assert_eq!(render("trailing\\"), "trailing\\");
    }

    #[test]
    fn fields() {
        assert_eq!(render("{{.Name}}"), "dev");
        assert_eq!(render("{{ .Name }}"), "dev");
        assert_eq!(render("{{.Driver.IPAddress}}"), "192.168.99.100");
        assert_eq!(render("{{.Driver.Nested.Deep}}"), "x");
        assert_eq!(render("{{.Driver.Memory}}"), "2048");
        assert_eq!(render("{{.Ratio}}"), "1.5");
        assert_eq!(render("{{.Active}}"), "true");
        assert_eq!(render("{{.Missing}}"), "<no value>");
        assert_eq!(render("{{.Nothing}}"), "<no value>");
        assert_eq!(render("{{.Missing.Deeper}}"), "<no value>");
        assert_eq!(
            Template::parse("{{.}}")
                .unwrap()
                .render(&json!("hi"))
                .unwrap(),
            "hi"
        );
    }

    #[test]
    fn composite_values_render_like_go() {
        assert_eq!(render("{{.List}}"), "[a b c]");
        assert_eq!(render("{{.EmptyList}}"), "[]");
        assert_eq!(render("{{.Labels}}"), "map[az:eu-1 env:prod]");
        assert_eq!(
            render("{{.Machines}}"),
            "[map[Name:m1 State:Running] map[Name:m2 State:Stopped]]"
        );
        let t = Template::parse("{{.}}").unwrap();
        assert_eq!(
            t.render(&json!([null, 1, [true]])).unwrap(),
            "[<nil> 1 [true]]"
        );
        assert_eq!(t.render(&json!({})).unwrap(), "map[]");
    }

    #[test]
    fn json_function_and_pipe() {
        // Key order follows the data (serde_json may preserve insertion order).
        let labels: Value = serde_json::from_str(&render("{{json .Labels}}")).unwrap();
        assert_eq!(labels, json!({"az": "eu-1", "env": "prod"}));
        assert!(!render("{{json .Labels}}").contains(' '));
        assert_eq!(render("{{.Name | json}}"), r#""dev""#);
        assert_eq!(render("{{json .List}}"), r#"["a","b","c"]"#);
        assert_eq!(render("{{json .Missing}}"), "null");
        assert_eq!(render("{{json .Count}}"), "3");
    }

    #[test]
    fn upper_lower() {
        assert_eq!(render("{{upper .State}}"), "RUNNING");
        assert_eq!(render("{{.State | lower}}"), "running");
        assert_eq!(render("{{.State | lower | upper}}"), "RUNNING");
        assert_eq!(render("{{upper .Missing}}"), "<no value>");
        assert_eq!(render("{{upper .Active}}"), "TRUE");
    }

    #[test]
    fn join_and_split() {
        assert_eq!(render(r#"{{join .List ","}}"#), "a,b,c");
        assert_eq!(render(r#"{{.List | join ", "}}"#), "a, b, c");
        assert_eq!(render(r#"{{join .Nums "+"}}"#), "1+2");
        assert_eq!(render(r#"{{join .Missing ","}}"#), "");
        assert_eq!(render(r#"{{split "a:b" ":"}}"#), "[a b]");
        assert_eq!(
            render(r#"{{index (split .Driver.IPAddress ".") 3}}"#),
            "100"
        );
        let e = render_err(r#"{{join .Name ","}}"#);
        assert!(
            e.to_string().contains("needs a list and a separator"),
            "{e}"
        );
    }

    #[test]
    fn len() {
        assert_eq!(render("{{len .List}}"), "3");
        assert_eq!(render("{{len .Labels}}"), "2");
        assert_eq!(render("{{len .Name}}"), "3");
        assert_eq!(render("{{len \"ünï\"}}"), "3");
        assert_eq!(render("{{len .Missing}}"), "0");
        assert_eq!(render("{{.List | len}}"), "3");
        let e = render_err("{{len .Count}}");
        assert!(e.to_string().contains("len of number 3"), "{e}");
    }

    #[test]
    fn printf() {
        assert_eq!(render(r#"{{printf "%s-%v" .Name .State}}"#), "dev-Running");
        assert_eq!(render(r#"{{printf "%d%%" .Count}}"#), "3%");
        assert_eq!(render(r#"{{printf "%q" .Name}}"#), r#""dev""#);
        assert_eq!(render(r#"{{printf "%q" "a\"b\n"}}"#), r#""a\"b\n""#);
        assert_eq!(render(r#"{{printf "%v" .List}}"#), "[a b c]");
        assert_eq!(render(r#"{{printf "%v" .Missing}}"#), "<nil>");
        assert_eq!(render(r#"{{printf "no verbs"}}"#), "no verbs");
        assert_eq!(render(r#"{{.Name | printf "<%s>"}}"#), "<dev>");
        assert_eq!(render(r#"{{printf "[%-6s]" .Name}}"#), "[dev   ]");
        assert_eq!(render(r#"{{printf "[%6s]" .Name}}"#), "[   dev]");
        assert_eq!(render(r#"{{printf "[%.2s]" .State}}"#), "[Ru]");
        assert_eq!(render(r#"{{printf "%05d" .Count}}"#), "00003");
        assert_eq!(render(r#"{{printf "%+d" .Count}}"#), "+3");
        assert_eq!(render(r#"{{printf "%05d" -42}}"#), "-0042");
        assert_eq!(render(r#"{{printf "%d" 2.0}}"#), "2");
        assert_eq!(render(r#"{{printf "%s=%d" "n" (len .List)}}"#), "n=3");
        let e = render_err(r#"{{printf "%d" .Name}}"#);
        assert!(e.to_string().contains("%d needs a whole number"), "{e}");
    }

    #[test]
    fn printf_with_a_computed_format_is_checked_when_rendering() {
        assert_eq!(render(r#"{{"plain" | printf}}"#), "plain");
        assert!(matches!(
            render_err(r#"{{"<%s>" | printf}}"#),
            TemplateError::PrintfArity {
                verbs: 1,
                args: 0,
                ..
            }
        ));
        let t = Template::parse("{{printf .F .A}}").unwrap();
        assert_eq!(t.render(&json!({"F": "<%s>", "A": 1})).unwrap(), "<1>");
        let e = t.render(&json!({"F": "%s %s", "A": 1})).unwrap_err();
        assert_eq!(
            e,
            TemplateError::PrintfArity {
                offset: 2,
                verbs: 2,
                args: 1
            }
        );
    }

    #[test]
    fn index() {
        assert_eq!(render(r#"{{index .Labels "env"}}"#), "prod");
        assert_eq!(render(r#"{{index .Labels "nope"}}"#), "<no value>");
        assert_eq!(render("{{index .List 0}}"), "a");
        assert_eq!(render("{{index .List 2}}"), "c");
        assert_eq!(render(r#"{{index .Machines 1 "Name"}}"#), "m2");
        assert_eq!(render("{{index .List}}"), "[a b c]");
        assert_eq!(render(r#"{{(index .Machines 0).Name}}"#), "m1");
        assert_eq!(
            Template::parse(r#"{{index . "my-key"}}"#)
                .unwrap()
                .render(&json!({"my-key": 1}))
                .unwrap(),
            "1"
        );
        let e = render_err("{{index .List 3}}");
        assert!(
            e.to_string()
                .contains("index 3 is out of range for a list of 3"),
            "{e}"
        );
        let e = render_err("{{index .List -1}}");
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = render_err(r#"{{index .List "a"}}"#);
        assert!(e.to_string().contains("indexed by a whole number"), "{e}");
        let e = render_err("{{index .Labels 1}}");
        assert!(e.to_string().contains("indexed by a string key"), "{e}");
        let e = render_err("{{index .Name 1}}");
        assert!(e.to_string().contains("cannot index a string"), "{e}");
    }

    #[test]
    fn if_else() {
        assert_eq!(render("{{if .Active}}*{{end}}"), "*");
        assert_eq!(render("{{if .Missing}}*{{else}}-{{end}}"), "-");
        assert_eq!(
            render(
                r#"{{if eq .State "Stopped"}}s{{else if eq .State "Running"}}r{{else}}?{{end}}"#
            ),
            "r"
        );
        assert_eq!(
            render(r#"{{if eq .State "x"}}1{{else if .Zero}}2{{else if .Empty}}3{{end}}"#),
            ""
        );
        assert_eq!(
            render("{{if .Active}}{{if .Zero}}a{{else}}b{{end}}{{end}}"),
            "b"
        );
    }

    #[test]
    fn truthiness_follows_go() {
        let t = Template::parse("{{if .}}T{{else}}F{{end}}").unwrap();
        for (v, want) in [
            (json!(false), "F"),
            (json!(0), "F"),
            (json!(0.0), "F"),
            (json!(""), "F"),
            (json!(null), "F"),
            (json!([]), "F"),
            (json!({}), "F"),
            (json!(true), "T"),
            (json!(-1), "T"),
            (json!("0"), "T"),
            (json!([0]), "T"),
            (json!({"a": null}), "T"),
        ] {
            assert_eq!(t.render(&v).unwrap(), want, "{v}");
        }
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(render(r#"{{eq .Name "dev"}}"#), "true");
        assert_eq!(render(r#"{{eq .Name "a" "b" "dev"}}"#), "true");
        assert_eq!(render(r#"{{ne .Name "dev"}}"#), "false");
        assert_eq!(render("{{eq .Count 3}}"), "true");
        assert_eq!(render("{{eq .Driver.Memory 2048.0}}"), "true");
        assert_eq!(render("{{not .Active}}"), "false");
        assert_eq!(render("{{and .Active .Name}}"), "dev");
        assert_eq!(render("{{and .Zero .Name}}"), "0");
        assert_eq!(render(r#"{{or .Empty "default"}}"#), "default");
        assert_eq!(render(r#"{{or .Missing .Nothing}}"#), "<no value>");
        assert_eq!(render(r#"{{if and .Active (not .Zero)}}ok{{end}}"#), "ok");
        assert_eq!(render(r#"{{eq .Nothing nil}}"#), "true");
    }

    #[test]
    fn print_and_println() {
        assert_eq!(render(r#"{{print .Name "x" 1 2}}"#), "devx1 2");
        assert_eq!(render(r#"{{println .Name 1}}"#), "dev 1\n");
    }

    #[test]
    fn range() {
        assert_eq!(render("{{range .List}}<{{.}}>{{end}}"), "<a><b><c>");
        assert_eq!(render("{{range .Labels}}{{.}};{{end}}"), "eu-1;prod;");
        assert_eq!(
            render(r"{{range .Machines}}{{.Name}}={{.State}}\n{{end}}"),
            "m1=Running\nm2=Stopped\n"
        );
        assert_eq!(render("{{range .EmptyList}}x{{else}}none{{end}}"), "none");
        assert_eq!(render("{{range .Missing}}x{{else}}none{{end}}"), "none");
        assert_eq!(render("{{range .Missing}}x{{end}}"), "");
        assert_eq!(render("{{range .Count}}{{.}}{{end}}"), "012");
        assert_eq!(
            render("{{range $i, $e := .List}}{{$i}}:{{$e}} {{end}}"),
            "0:a 1:b 2:c "
        );
        assert_eq!(
            render("{{range $k, $v := .Labels}}{{$k}}={{$v}},{{end}}"),
            "az=eu-1,env=prod,"
        );
        assert_eq!(render("{{range $e := .List}}{{$e}}{{end}}"), "abc");
        assert_eq!(render("{{range .List}}{{$.Name}}{{end}}"), "devdevdev");
        assert_eq!(
            render("{{range .Machines}}{{range $.List}}{{.}}{{end}}|{{end}}"),
            "abc|abc|"
        );
        let e = render_err("{{range .Name}}x{{end}}");
        assert!(
            e.to_string().contains("range cannot iterate over string"),
            "{e}"
        );
    }

    #[test]
    fn with() {
        assert_eq!(
            render("{{with .Driver}}{{.IPAddress}}{{end}}"),
            "192.168.99.100"
        );
        assert_eq!(render("{{with .Missing}}x{{else}}{{.Name}}{{end}}"), "dev");
        assert_eq!(render("{{with $d := .Driver}}{{$d.Memory}}{{end}}"), "2048");
    }

    #[test]
    fn variables() {
        assert_eq!(render("{{$n := .Name}}[{{$n}}]"), "[dev]");
        assert!(render("{{$}}").starts_with("map["));
        assert_eq!(render("{{$.Driver.Memory}}"), "2048");
        assert_eq!(render("{{$d := .Driver}}{{$d.Nested.Deep}}"), "x");
        let e = render_err("{{if .Active}}{{$x := 1}}{{end}}{{$x}}");
        assert!(e.to_string().contains("undefined variable $x"), "{e}");
        let e = parse_err("{{$ := 1}}");
        assert!(e.to_string().contains("cannot declare $"), "{e}");
        let e = parse_err("{{$a, $b := .List}}");
        assert!(
            e.to_string().contains("only {{range}} can declare two"),
            "{e}"
        );
    }

    #[test]
    fn trim_markers() {
        assert_eq!(render("a  {{- .Name -}}  b"), "adevb");
        assert_eq!(render("a \n {{- .Name}} b"), "adev b");
        assert_eq!(render("{{.Name -}}\n\t x"), "devx");
        assert_eq!(render("{{range .List -}}\n  {{.}}\n{{- end}}"), "abc");
        assert_eq!(render("x {{-3}}"), "x -3");
        assert_eq!(render(r"{{.Name}} \t {{- .State}}"), "devRunning");
    }

    #[test]
    fn comments() {
        assert_eq!(render("a{{/* hi }} */}}b"), "ab");
        assert_eq!(render("a {{- /* hi */ -}} b"), "ab");
        let e = parse_err("{{/* hi */ .Name}}");
        assert!(e.to_string().contains("comment must fill"), "{e}");
    }

    #[test]
    fn strings_in_actions() {
        assert_eq!(render(r#"{{"}}"}}"#), "}}");
        assert_eq!(render(r#"{{"{{"}}"#), "{{");
        assert_eq!(render("{{`raw \\n`}}"), "raw \\n");
        assert_eq!(render(r#"{{"tab\there"}}"#), "tab\there");
        assert_eq!(render(r#"{{"\u00e9\x41"}}"#), "éA");
        assert_eq!(render("{{42}} {{-1.5}} {{true}}"), "42 -1.5 true");
        let e = parse_err(r#"{{"\q"}}"#);
        assert!(e.to_string().contains("unknown escape \\q"), "{e}");
    }

    #[test]
    fn unclosed_action_reports_offset() {
        let e = parse_err("name: {{.Name");
        assert_eq!(e, TemplateError::UnclosedAction { offset: 6 });
        assert!(e.to_string().contains("byte 6"), "{e}");
        assert!(e.to_string().contains("add \"}}\""), "{e}");
        assert_eq!(
            parse_err("{{/* x"),
            TemplateError::UnclosedAction { offset: 0 }
        );
        assert_eq!(
            parse_err(r#"ab{{printf "x}}"#),
            TemplateError::UnterminatedString { offset: 11 }
        );
    }

    #[test]
    fn misplaced_end_and_else() {
        let e = parse_err("x{{end}}");
        assert!(
            matches!(&e, TemplateError::UnexpectedKeyword { keyword, offset: 1, .. } if keyword == "end"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("unexpected {{end}} at byte 1"),
            "{e}"
        );
        assert!(e.to_string().contains("remove it"), "{e}");
        let e = parse_err("{{else}}");
        assert!(
            e.to_string().contains("unexpected {{else}} at byte 0"),
            "{e}"
        );
        let e = parse_err("{{if .A}}1{{else}}2{{else}}3{{end}}");
        assert!(e.to_string().contains("only one {{else}}"), "{e}");
        let e = parse_err("{{range .A}}1{{else if .B}}2{{end}}");
        assert!(e.to_string().contains("unexpected {{else if}}"), "{e}");
        let e = parse_err("{{if .A}}1{{else}}2{{else if .B}}3{{end}}");
        assert!(e.to_string().contains("before the final {{else}}"), "{e}");
    }

    #[test]
    fn unclosed_blocks() {
        assert_eq!(
            parse_err("ab{{if .A}}x"),
            TemplateError::UnclosedBlock {
                keyword: "if".into(),
                offset: 2
            }
        );
        assert_eq!(
            parse_err("{{if .A}}{{else if .B}}x"),
            TemplateError::UnclosedBlock {
                keyword: "if".into(),
                offset: 0
            }
        );
        let e = parse_err("{{range .A}}{{if .B}}{{end}}");
        assert_eq!(
            e,
            TemplateError::UnclosedBlock {
                keyword: "range".into(),
                offset: 0
            }
        );
        assert!(e.to_string().contains("add {{end}}"), "{e}");
        assert!(matches!(
            parse_err("{{with .A}}{{else}}"),
            TemplateError::UnclosedBlock { .. }
        ));
    }

    #[test]
    fn unknown_function_lists_known_ones() {
        let e = parse_err("abc {{title .Name}}");
        assert_eq!(
            e,
            TemplateError::UnknownFunction {
                name: "title".into(),
                offset: 6,
                known: FUNCTIONS.join(", "),
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("unknown function \"title\" at byte 6"),
            "{msg}"
        );
        assert!(msg.contains("json, len, lower"), "{msg}");
        let e = parse_err("{{.Name | title}}");
        assert!(
            matches!(e, TemplateError::UnknownFunction { offset: 10, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn printf_arity_is_checked_when_parsing() {
        assert_eq!(
            parse_err(r#"x{{printf "%s-%s" .Name}}"#),
            TemplateError::PrintfArity {
                offset: 3,
                verbs: 2,
                args: 1
            }
        );
        assert_eq!(
            parse_err(r#"{{printf "%s" .Name .State}}"#),
            TemplateError::PrintfArity {
                offset: 2,
                verbs: 1,
                args: 2
            }
        );
        assert!(matches!(
            parse_err(r#"{{.Name | printf "%s %s"}}"#),
            TemplateError::PrintfArity {
                verbs: 2,
                args: 1,
                ..
            }
        ));
        assert!(matches!(
            parse_err(r#"{{.Name | printf "%%"}}"#),
            TemplateError::PrintfArity {
                verbs: 0,
                args: 1,
                ..
            }
        ));
        let msg = parse_err(r#"{{printf "%s"}}"#).to_string();
        assert!(
            msg.contains("1 verb(s) in its format but 0 argument(s)"),
            "{msg}"
        );
        let e = parse_err(r#"{{printf "%x" 1}}"#);
        assert!(e.to_string().contains("unsupported printf verb %x"), "{e}");
        assert!(e.to_string().contains("supported verbs are"), "{e}");
        let e = parse_err(r#"{{printf "50%"}}"#);
        assert!(e.to_string().contains("lone %"), "{e}");
    }

    #[test]
    fn function_arity_is_checked_when_parsing() {
        let e = parse_err("{{len .A .B}}");
        assert!(
            matches!(&e, TemplateError::Arity { function, given: 2, .. } if function == "len"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("len at byte 2 takes 1 argument but was given 2")
        );
        assert!(matches!(
            parse_err("{{.A | upper .B}}"),
            TemplateError::Arity { given: 2, .. }
        ));
        assert!(matches!(
            parse_err("{{json}}"),
            TemplateError::Arity { given: 0, .. }
        ));
        assert!(matches!(
            parse_err("{{printf}}"),
            TemplateError::Arity { .. }
        ));
        assert!(matches!(
            parse_err(r#"{{join .List}}"#),
            TemplateError::Arity { .. }
        ));
    }

    #[test]
    fn other_syntax_errors() {
        for (src, needle) in [
            ("{{}}", "empty action"),
            ("{{ }}", "empty action"),
            ("{{.Name .State}}", "is not a function"),
            ("{{.Name | .State}}", "cannot pipe into .State"),
            ("{{.Name |}}", "missing function after |"),
            ("{{if}}x{{end}}", "{{if}} needs a value"),
            ("{{else if}}", "{{else if}} needs a condition"),
            ("{{end .X}}", "unexpected text after end"),
            ("{{define \"x\"}}", "{{define}} is not supported"),
            (
                "{{printf \"%d\" len .List}}",
                "wrap the call in parentheses",
            ),
            ("{{(len .List}}", "unclosed '('"),
            ("{{len .List)}}", "unexpected \")\""),
            ("{{.Name.}}", "field name missing"),
            ("{{$x = 1}}", "assignment with = is not supported"),
            ("{{'a'}}", "character literals"),
            ("{{#}}", "unexpected '#'"),
            ("{{12abc}}", "bad number"),
        ] {
            let e = parse_err(src);
            assert!(
                e.to_string().contains(needle),
                "{src:?}: {e} does not contain {needle:?}"
            );
        }
    }

    #[test]
    fn field_of_a_scalar_is_an_error() {
        let e = render_err("x {{.Name.First}}");
        assert_eq!(
            e.to_string(),
            "template: executing the action at byte 4: cannot read field First: .Name is \
             a string \"dev\", not an object; check the field path (machine inspect shows \
             the data)"
        );
        let e = render_err("{{range .List}}{{.X}}{{end}}");
        assert!(e.to_string().contains(": . is a string \"a\""), "{e}");
        let e = render_err("{{$n := .Name}}{{$n.X}}");
        assert!(e.to_string().contains(": $n is a string"), "{e}");
    }

    #[test]
    fn template_is_reusable() {
        let t = Template::parse("{{.Name}}:{{len .L}}").unwrap();
        assert_eq!(t.render(&json!({"Name": "a", "L": [1]})).unwrap(), "a:1");
        assert_eq!(t.render(&json!({"Name": "b", "L": []})).unwrap(), "b:0");
    }

    #[test]
    fn table_format() {
        let (fields, t) = parse_table(r"table {{.Name}}\t{{.DriverName}}\t{{.State}}").unwrap();
        assert_eq!(fields, ["Name", "DriverName", "State"]);
        assert_eq!(t.render(&data()).unwrap(), "dev\tvirtualbox\tRunning");

        let (fields, _) = parse_table(
            "table {{upper .Name}} {{.Driver.IPAddress}} {{if .Active}}*{{end}} \
             {{range .List}}{{.Ignored}}{{end}} {{printf \"%s\" (index .Labels \"env\")}}",
        )
        .unwrap();
        assert_eq!(
            fields,
            ["Name", "Driver.IPAddress", "Active", "List", "Labels"]
        );

        let (fields, t) = parse_table("table").unwrap();
        assert!(fields.is_empty());
        assert_eq!(t.render(&data()).unwrap(), "");

        // A header line can come from rendering over field-to-header names.
        let (_, t) = parse_table(r"table {{.Name}}\t{{.State}}").unwrap();
        let header = t
            .render(&json!({"Name": "NAME", "State": "STATE"}))
            .unwrap();
        assert_eq!(header, "NAME\tSTATE");

        assert!(parse_table("{{.Name}}").is_none());
        assert!(parse_table("tablet {{.Name}}").is_none());
        assert!(parse_table(" table {{.Name}}").is_none());

        // A bad table template yields None; parsing the whole source gives
        // the error with offsets into what the user typed.
        assert!(parse_table("table {{.Name").is_none());
        assert_eq!(
            Template::parse("table {{.Name").unwrap_err(),
            TemplateError::UnclosedAction { offset: 6 }
        );
    }

    #[test]
    fn fields_skips_rebound_dot() {
        let t = Template::parse(
            "{{with .Driver}}{{.IPAddress}}{{else}}{{.Name}}{{end}}{{$x := .State}}",
        )
        .unwrap();
        assert_eq!(t.fields(), ["Driver", "Name", "State"]);
    }

    #[test]
    fn error_messages_are_displayable() {
        let e = parse_err("{{if .A}}");
        assert_eq!(
            e.to_string(),
            "template: {{if}} at byte 0 has no matching {{end}}: add {{end}} after its body"
        );
        let e = parse_err("{{.A");
        assert_eq!(
            e.to_string(),
            "template: action opened at byte 0 is never closed: add \"}}\" after it \
             (write {{\"{{\"}} to print a literal \"{{\")"
        );
    }
}
