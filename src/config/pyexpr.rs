//! Just enough of Python to evaluate nanoGPT config values and `--key=value` overrides:
//! literals and simple arithmetic. Anything else (calls, attributes, conditions) is reported as
//! "not a literal" rather than guessed at: vramplan never runs the user's Python.

pub(crate) use super::pylex::{tokenize, Line, Tok};
use super::value::Value;
use std::collections::HashMap;

/// Names a config expression may refer to: keys assigned so far (None = assigned a value we
/// could not evaluate) and train.py's defaults.
pub(crate) type Env = HashMap<String, Option<Value>>;

/// Evaluate tokens as a Python expression. `literal_only` follows `ast.literal_eval` (what
/// nanoGPT applies to `--key=value`): literals and signs only, no arithmetic, no names.
/// Err is why the expression is not something we evaluate.
pub(crate) fn eval(toks: &[Tok], env: &Env, literal_only: bool) -> Result<Value, String> {
    let mut p = Parser {
        toks,
        pos: 0,
        env,
        literal_only,
        depth: 0,
    };
    let v = p.expr()?;
    if p.pos != toks.len() {
        return Err(not_literal());
    }
    Ok(v)
}

fn calls() -> String {
    "calls a function or reads an attribute".to_string()
}

fn not_literal() -> String {
    "is not a literal or simple arithmetic".to_string()
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    env: &'a Env,
    literal_only: bool,
    depth: usize,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<&'static str> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(o)) => Some(o),
            _ => None,
        }
    }

    fn expr(&mut self) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("is nested too deeply".to_string());
        }
        let mut v = self.term()?;
        while let Some(op @ ("+" | "-")) = self.peek_op() {
            if self.literal_only {
                return Err(not_literal());
            }
            self.pos += 1;
            let r = self.term()?;
            v = binary(op, v, r)?;
        }
        self.depth -= 1;
        Ok(v)
    }

    fn term(&mut self) -> Result<Value, String> {
        let mut v = self.factor()?;
        while let Some(op @ ("*" | "/" | "//" | "%")) = self.peek_op() {
            if self.literal_only {
                return Err(not_literal());
            }
            self.pos += 1;
            let r = self.factor()?;
            v = binary(op, v, r)?;
        }
        Ok(v)
    }

    fn factor(&mut self) -> Result<Value, String> {
        // Unary signs and `**` recurse here: bound the depth so "----…1" cannot overflow the stack.
        self.depth += 1;
        if self.depth > 64 {
            return Err("is nested too deeply".to_string());
        }
        let v = self.signed_power();
        self.depth -= 1;
        v
    }

    fn signed_power(&mut self) -> Result<Value, String> {
        if let Some(op @ ("+" | "-")) = self.peek_op() {
            self.pos += 1;
            let v = self.factor()?;
            if self.literal_only && !matches!(v, Value::Int(_) | Value::Float(_)) {
                return Err(not_literal());
            }
            return if op == "-" {
                binary("-", Value::Int(0), v)
            } else {
                binary("+", Value::Int(0), v)
            };
        }
        let base = self.atom()?;
        if self.peek_op() == Some("**") {
            if self.literal_only {
                return Err(not_literal());
            }
            self.pos += 1;
            let exp = self.factor()?;
            return binary("**", base, exp);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Value, String> {
        let tok = self.toks.get(self.pos).ok_or_else(not_literal)?;
        self.pos += 1;
        let v = match tok {
            Tok::Int(i) => Value::Int(*i),
            Tok::Float(x) => Value::Float(*x),
            Tok::Str(s) => {
                // Adjacent literals concatenate at compile time: 'a' 'b' == 'ab'.
                let mut s = s.clone();
                while let Some(Tok::Str(more)) = self.toks.get(self.pos) {
                    s.push_str(more);
                    self.pos += 1;
                }
                Value::Str(s)
            }
            Tok::Opaque(what) => {
                return Err(format!("contains {what}, which vramplan does not evaluate"))
            }
            Tok::Name(n) => match n.as_str() {
                "True" => Value::Bool(true),
                "False" => Value::Bool(false),
                "None" => Value::None,
                _ if self.literal_only => return Err(not_literal()),
                _ if matches!(self.peek_op(), Some("(" | "." | "[")) => return Err(calls()),
                _ => match self.env.get(n) {
                    Some(Some(v)) => v.clone(),
                    Some(None) => return Err(format!("uses {n}, which could not be evaluated")),
                    None => return Err(format!("refers to {n}, which is not a config key")),
                },
            },
            Tok::Op("(") => {
                let v = self.expr()?;
                if self.peek_op() != Some(")") {
                    return Err(not_literal());
                }
                self.pos += 1;
                v
            }
            Tok::Op(_) => return Err(not_literal()),
        };
        // A call, attribute or subscript follows: `str(time.time())`, `os.environ[...]`.
        if matches!(self.peek_op(), Some("(" | "." | "[")) {
            return Err(calls());
        }
        Ok(v)
    }
}

/// Python's arithmetic on the values we know, with checked integer overflow.
fn binary(op: &str, a: Value, b: Value) -> Result<Value, String> {
    let num = |v: Value| match v {
        Value::Bool(b) => Value::Int(b.into()),
        v => v,
    };
    let too_big = || "makes an integer too large to hold".to_string();
    match (num(a), num(b)) {
        (Value::Str(x), Value::Str(y)) if op == "+" => Ok(Value::Str(x + &y)),
        (Value::Int(x), Value::Int(y)) => match op {
            "+" => x.checked_add(y).map(Value::Int).ok_or_else(too_big),
            "-" => x.checked_sub(y).map(Value::Int).ok_or_else(too_big),
            "*" => x.checked_mul(y).map(Value::Int).ok_or_else(too_big),
            "/" if y == 0 => Err("divides by zero".to_string()),
            "/" => Ok(Value::Float(x as f64 / y as f64)),
            "//" | "%" if y == 0 => Err("divides by zero".to_string()),
            "//" => x
                .checked_div_euclid(y)
                .map(|_| Value::Int(floor_div(x, y)))
                .ok_or_else(too_big),
            "%" => x
                .checked_rem(y)
                .map(|r| {
                    Value::Int(if r != 0 && (r < 0) != (y < 0) {
                        r + y
                    } else {
                        r
                    })
                })
                .ok_or_else(too_big),
            "**" if y < 0 => float_op(op, x as f64, y as f64),
            "**" => u32::try_from(y)
                .ok()
                .and_then(|e| x.checked_pow(e))
                .map(Value::Int)
                .ok_or_else(too_big),
            _ => Err(not_literal()),
        },
        (Value::Int(x), Value::Float(y)) => float_op(op, x as f64, y),
        (Value::Float(x), Value::Int(y)) => float_op(op, x, y as f64),
        (Value::Float(x), Value::Float(y)) => float_op(op, x, y),
        _ => Err("combines values Python would refuse to".to_string()),
    }
}

fn floor_div(x: i128, y: i128) -> i128 {
    let q = x / y;
    if (x % y != 0) && ((x < 0) != (y < 0)) {
        q - 1
    } else {
        q
    }
}

fn float_op(op: &str, x: f64, y: f64) -> Result<Value, String> {
    if y == 0.0 && matches!(op, "/" | "//" | "%") {
        return Err("divides by zero".to_string());
    }
    let r = match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" => x / y,
        "//" => (x / y).floor(),
        "%" => x - y * (x / y).floor(),
        "**" => x.powf(y),
        _ => return Err(not_literal()),
    };
    Ok(Value::Float(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Result<Value, String> {
        let lines = tokenize(src).map_err(|e| e.1)?;
        eval(&lines[0].toks, &Env::new(), false)
    }

    #[test]
    fn arithmetic_as_python_does_it() {
        assert_eq!(ev("5 * 8"), Ok(Value::Int(40)));
        assert_eq!(ev("1024 * 12"), Ok(Value::Int(12288)));
        assert_eq!(ev("2e-4"), Ok(Value::Float(2e-4)));
        assert_eq!(ev("(1 + 2) * 3"), Ok(Value::Int(9)));
        assert_eq!(ev("7 // 2"), Ok(Value::Int(3)));
        assert_eq!(ev("-7 // 2"), Ok(Value::Int(-4)));
        assert_eq!(ev("-7 % 3"), Ok(Value::Int(2)));
        assert_eq!(ev("7 / 2"), Ok(Value::Float(3.5)));
        assert_eq!(ev("2 ** 10"), Ok(Value::Int(1024)));
        assert_eq!(ev("-2 ** 2"), Ok(Value::Int(-4)));
        assert_eq!(ev("1_000"), Ok(Value::Int(1000)));
        assert_eq!(ev("0x10"), Ok(Value::Int(16)));
        assert_eq!(ev("'a' 'b' + \"c\""), Ok(Value::Str("abc".into())));
        assert!(ev("2 ** 200").is_err());
        assert!(ev("1 / 0").is_err());
        assert!(ev("'ft-' + str(time.time())").is_err());
    }

    #[test]
    fn logical_lines_span_brackets_and_strings() {
        let src = "\"\"\"doc\nstring\"\"\"\nx = (1 +\n  2) # c\ny = 3 \\\n + 1\n";
        let lines = tokenize(src).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[1].line, lines[2].line), (3, 5));
        assert_eq!(
            eval(&lines[1].toks[2..], &Env::new(), false),
            Ok(Value::Int(3))
        );
        assert_eq!(
            eval(&lines[2].toks[2..], &Env::new(), false),
            Ok(Value::Int(4))
        );
    }

    #[test]
    fn literal_only_refuses_arithmetic_like_literal_eval() {
        let t = |s: &str| eval(&tokenize(s).unwrap()[0].toks, &Env::new(), true);
        assert_eq!(t("-3"), Ok(Value::Int(-3)));
        assert_eq!(t("'x'"), Ok(Value::Str("x".into())));
        assert!(t("5*8").is_err());
        assert!(t("gpt2").is_err());
    }
}
