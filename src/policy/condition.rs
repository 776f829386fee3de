//! CEL conditions (`when = "..."`) on policy rules: compiled once when the
//! policy is loaded, evaluated per call with `params` (the call's JSON
//! parameters), `tool` (the tool name), `server` (the MCP server's name, or
//! null) and `annotations` (the tool's MCP annotations, `{}` when none) in scope.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::Map;
use cel::{Context, Env, Program, Value};

use crate::policy::Call;

/// Variables a condition may reference; anything else is a typo that would
/// fail on every call, so it is rejected at load time instead.
const VARIABLES: [&str; 4] = ["params", "tool", "server", "annotations"];

/// Built-in type identifiers, usable as in `type(params.x) == string`.
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// Longest error text kept in a note: CEL errors can embed whole values.
const MAX_ERROR_CHARS: usize = 300;

/// The standard CEL environment, built once: `Env::stdlib()` registers every
/// function, which is too much work to repeat on each evaluation.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// A compiled `when` expression.
#[derive(Clone)]
pub struct Condition {
    source: String,
    // `Program` is not `Clone`; the `Arc` lets `Policy` be cloned cheaply.
    program: Arc<Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Condition {
    /// Compiles `source`, returning a one-line reason on failure: a syntax error, a
    /// reference to a variable other than `params`, `tool`, `server` and
    /// `annotations`, or a call of a function the environment does not declare. The
    /// last two would fail on every call, which the classification takes as "might
    /// have matched": a typo would put every call before people, never the ones meant.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("condition is empty".to_string());
        }
        let program = env().compile(source).map_err(|errors| {
            let details: Vec<String> = errors
                .errors
                .iter()
                // `pos` is 1-based (line, column) within the expression.
                .map(|e| match e.pos {
                    (line, column) if line > 1 => {
                        format!(
                            "{} at line {line}, column {column} of the expression",
                            e.msg
                        )
                    }
                    (_, column) => format!("{} at column {column} of the expression", e.msg),
                })
                .collect();
            format!("CEL does not compile: {}", details.join("; "))
        })?;
        let mut free = BTreeSet::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        let unknown: Vec<String> = free
            .into_iter()
            .filter(|name| {
                !VARIABLES.contains(&name.as_str()) && !TYPE_NAMES.contains(&name.as_str())
            })
            .map(|name| format!("`{name}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown variable {}; only `params`, `tool`, `server` and `annotations` are available",
                unknown.join(", ")
            ));
        }
        let mut called = BTreeSet::new();
        functions_called(program.expression(), &mut called);
        let unknown: Vec<String> = called
            .into_iter()
            .filter(|name| !declared(name))
            .map(|name| format!("`{name}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown function {}; conditions have CEL's standard functions (such as \
                 size, contains, startsWith, endsWith, matches, int, string) and macros \
                 (has, all, exists, exists_one, map, filter), but not timestamp or duration",
                unknown.join(", ")
            ));
        }
        Ok(Condition {
            source: source.to_string(),
            program: Arc::new(program),
        })
    }

    /// The expression as written in the policy file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition for one call, in its [`Scope`] (which every condition
    /// evaluated for the call shares). An error (missing field, wrong type, non-bool
    /// result) comes back as a short one-line reason.
    pub fn evaluate_in(&self, scope: &Scope) -> Result<bool, String> {
        match self.program.execute(&scope.0) {
            Ok(Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!("result is {} instead of bool", other.type_of())),
            Err(error) => Err(truncate(&crate::policy::error::one_line(
                &error.to_string(),
            ))),
        }
    }
}

/// A call's variables as conditions read them (`params`, `tool`, `server`,
/// `annotations`), converted from JSON once for every rule's condition that reads
/// them: a large body, classified against many rules with a `when`, is not converted
/// again for each.
pub struct Scope(Context<'static, 'static>);

impl Scope {
    pub fn of(call: &Call<'_>) -> Scope {
        let mut context = Context::with_env(Arc::clone(env()));
        context.add_variable_from_value("params", json_to_cel(call.params));
        context.add_variable_from_value("tool", Value::from(call.tool));
        context.add_variable_from_value("server", call.server.map_or(Value::Null, Value::from));
        let annotations = match call.annotations {
            Some(value @ serde_json::Value::Object(_)) => json_to_cel(value),
            _ => Value::Map(Map::from(HashMap::<String, Value>::new())),
        };
        context.add_variable_from_value("annotations", annotations);
        Scope(context)
    }
}

/// Collects identifiers that are not bound by an enclosing comprehension
/// (`all`, `exists`, `map`, `filter` introduce their own loop variables,
/// which cel's own `references()` wrongly reports as free).
fn free_variables<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut BTreeSet<String>) {
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            // `@`-names are the macro expansion's internal accumulators.
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                out.insert(name.clone());
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        Expr::Select(select) => free_variables(&select.operand, bound, out),
        Expr::List(list) => {
            for element in &list.elements {
                free_variables(element, bound, out);
            }
        }
        Expr::Map(map) => entries(&map.entries, bound, out),
        Expr::Struct(structure) => entries(&structure.entries, bound, out),
        Expr::Comprehension(comp) => {
            // The range and initial value are evaluated outside the loop.
            free_variables(&comp.iter_range, bound, out);
            free_variables(&comp.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&comp.iter_var);
            bound.extend(comp.iter_var2.as_deref());
            bound.push(&comp.accu_var);
            for inner in [&comp.loop_cond, &comp.loop_step, &comp.result] {
                free_variables(inner, bound, out);
            }
            bound.truncate(depth);
        }
    }
}

/// Collects the names of the functions `expr` calls, globally (`size(x)`) or as members
/// (`x.startsWith(y)`). Operators are calls too, named with symbols (`_&&_`, `@in`),
/// which the interpreter handles itself: they are left out. So are macros, which the
/// parser has expanded already (unless called wrongly, as `xs.all(true)`: then they are
/// plain calls of functions nobody declares, and refused as such).
fn functions_called(expr: &IdedExpr, out: &mut BTreeSet<String>) {
    let inner: Vec<&IdedExpr> = match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => Vec::new(),
        Expr::Call(call) => {
            let named = call
                .func_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if named && !call.func_name.is_empty() {
                out.insert(call.func_name.clone());
            }
            call.target
                .iter()
                .map(AsRef::as_ref)
                .chain(&call.args)
                .collect()
        }
        Expr::Select(select) => vec![&select.operand],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => {
            map.entries.iter().for_each(|entry| entry_calls(entry, out));
            Vec::new()
        }
        Expr::Struct(structure) => {
            structure
                .entries
                .iter()
                .for_each(|entry| entry_calls(entry, out));
            Vec::new()
        }
        Expr::Comprehension(comp) => vec![
            &comp.iter_range,
            &comp.accu_init,
            &comp.loop_cond,
            &comp.loop_step,
            &comp.result,
        ],
    };
    for expr in inner {
        functions_called(expr, out);
    }
}

/// [`functions_called`] for a map or struct literal entry.
fn entry_calls(entry: &cel::common::ast::IdedEntryExpr, out: &mut BTreeSet<String>) {
    match &entry.expr {
        EntryExpr::StructField(field) => functions_called(&field.value, out),
        EntryExpr::MapEntry(pair) => {
            functions_called(&pair.key, out);
            functions_called(&pair.value, out);
        }
    }
}

/// Whether the environment declares `name`, as a function or a member function. The
/// crate answers this publicly only by refusing a context function that an overload
/// would shadow (see `cel::Context::add_function`), so that is asked: the answer
/// follows what the crate registers with the features enabled, not a list kept here.
fn declared(name: &str) -> bool {
    let mut probe = Context::with_env(Arc::clone(env()));
    probe.add_function(name, |a: i64| a).is_err()
}

/// [`free_variables`] for map and struct literal entries.
fn entries<'e>(
    entries: &'e [cel::common::ast::IdedEntryExpr],
    bound: &mut Vec<&'e str>,
    out: &mut BTreeSet<String>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(field) => free_variables(&field.value, bound, out),
            EntryExpr::MapEntry(pair) => {
                free_variables(&pair.key, bound, out);
                free_variables(&pair.value, bound, out);
            }
        }
    }
}

/// Converts JSON to a CEL value by hand rather than through serde, because
/// serde maps every non-negative integer to CEL `uint`, and `uint + int`
/// is an error in CEL; policy authors write plain int literals.
fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            Value::Map(Map::from(map))
        }
    }
}

/// Keeps notes readable when an error message embeds a large value.
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, params: serde_json::Value) -> Result<bool, String> {
        Condition::compile(source)?.evaluate_in(&Scope::of(&Call::new("send_email", &params)))
    }

    #[test]
    fn size_of_a_list_parameter_can_be_compared() {
        let many: Vec<String> = (0..101).map(|i| format!("u{i}@x")).collect();
        assert_eq!(
            eval("size(params.recipients) > 100", json!({"recipients": many})),
            Ok(true)
        );
        assert_eq!(
            eval(
                "size(params.recipients) > 100",
                json!({"recipients": ["a"]})
            ),
            Ok(false)
        );
    }

    #[test]
    fn integers_mix_with_int_literals_in_arithmetic() {
        assert_eq!(
            eval("params.amount + 1 > 100", json!({"amount": 100})),
            Ok(true)
        );
        assert_eq!(eval("params.ratio > 0.5", json!({"ratio": 0.75})), Ok(true));
    }

    #[test]
    fn tool_name_is_in_scope() {
        assert_eq!(eval("tool.startsWith('send_')", json!({})), Ok(true));
        assert_eq!(eval("tool == 'other'", json!({})), Ok(false));
    }

    #[test]
    fn nested_fields_and_has_macro_work() {
        let params = json!({"target": {"env": "prod"}});
        assert_eq!(
            eval("params.target.env == 'prod'", params.clone()),
            Ok(true)
        );
        assert_eq!(
            eval("has(params.dry_run) && params.dry_run", params),
            Ok(false)
        );
    }

    #[test]
    fn comprehension_variables_are_not_mistaken_for_unknown_variables() {
        let params = json!({"hosts": ["a.prod", "b.prod"]});
        assert_eq!(
            eval("params.hosts.all(h, h.endsWith('.prod'))", params),
            Ok(true)
        );
    }

    #[test]
    fn nested_comprehensions_and_type_names_are_accepted() {
        let params = json!({"groups": [[1, 2], [3]], "n": 1});
        assert_eq!(
            eval("params.groups.all(g, g.exists(x, x > 0))", params.clone()),
            Ok(true)
        );
        assert_eq!(eval("type(params.n) == int", params.clone()), Ok(true));
        assert_eq!(
            eval("params.groups.map(g, size(g)).exists(s, s == 1)", params),
            Ok(true)
        );
    }

    #[test]
    fn comprehension_variables_do_not_leak_out_of_their_loop() {
        let err = Condition::compile("params.xs.all(x, x > 0) && x > 1").unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }

    #[test]
    fn missing_field_is_an_evaluation_error() {
        let err = eval("size(params.recipients) > 100", json!({})).unwrap_err();
        assert!(err.contains("recipients"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_evaluation_error() {
        assert!(eval("params.count > 3", json!({"count": "many"})).is_err());
    }

    #[test]
    fn non_bool_result_is_an_evaluation_error() {
        let err = eval("params.count + 1", json!({"count": 1})).unwrap_err();
        assert!(err.contains("instead of bool"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = Condition::compile("size(params.x) >").unwrap_err();
        assert!(err.starts_with("CEL does not compile"), "{err}");
        assert!(err.contains("at column 17 of the expression"), "{err}");
        let err = Condition::compile("params.x\n  )").unwrap_err();
        assert!(
            err.contains("at line 2, column 3 of the expression"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn regular_expressions_match_with_matches() {
        let params = json!({"b": "release-1"});
        assert_eq!(eval("params.b.matches('^r')", params.clone()), Ok(true));
        assert_eq!(eval("params.b.matches('^x')", params.clone()), Ok(false));
        assert_eq!(eval("matches(params.b, '[0-9]$')", params), Ok(true));
    }

    #[test]
    fn standard_functions_conversions_and_macros_compile() {
        for source in [
            "size(params.xs) > 0 && params.xs.size() > 0",
            "params.s.contains('a') || params.s.startsWith('a') || params.s.endsWith('a')",
            "int(params.n) + 1 > 0 && uint(1) > uint(0) && double(params.n) > 0.5",
            "string(params.n) == '1' && type(params.n) == int && dyn(params.n) == 1",
            "bool(true) && bytes('a') == b'a'",
            "params.xs.exists_one(x, x == 1) && params.xs.filter(x, x > 0) == [1]",
            "params.xs.map(x, x * 2) == [2] && params.xs.all(x, x in [1])",
            "has(params.s) ? params.s.size() == 1 : false",
        ] {
            if let Err(error) = Condition::compile(source) {
                panic!("{source}: {error}");
            }
        }
    }

    #[test]
    fn unknown_functions_are_reported_at_compile_time() {
        let err = Condition::compile("params.b.startWith('r')").unwrap_err();
        assert!(err.starts_with("unknown function `startWith`"), "{err}");
        let err = Condition::compile("sise(params.xs) > 1 || lenght(params.s) > 2").unwrap_err();
        assert!(err.contains("`lenght`, `sise`"), "{err}");
        // A macro called wrongly is no macro, and no function either.
        let err = Condition::compile("params.xs.all(true)").unwrap_err();
        assert!(err.contains("`all`"), "{err}");
        let err = Condition::compile("timestamp(params.at) > timestamp('2024-01-01T00:00:00Z')")
            .unwrap_err();
        assert!(err.contains("`timestamp`"), "{err}");
    }

    #[test]
    fn unknown_variables_are_reported_at_compile_time() {
        let err = Condition::compile("parms.x > 1").unwrap_err();
        assert!(err.contains("`parms`"), "{err}");
    }

    #[test]
    fn empty_condition_is_rejected() {
        assert!(Condition::compile("  ").is_err());
    }

    #[test]
    fn long_errors_are_truncated() {
        let long = "x".repeat(1000);
        assert_eq!(truncate(&long).chars().count(), MAX_ERROR_CHARS + 1);
    }
}
