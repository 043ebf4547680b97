"""Safe expressions for computed tags: parsed once, never ``eval``-ed.

The text goes through :func:`ast.parse` and every node is checked against a
whitelist (numbers, names, arithmetic, comparisons, ``and``/``or``/``not``,
``a if c else b`` and a fixed table of functions).  The checked tree is then
turned into a tree of small Python closures: nothing of the text is ever
compiled or executed, so there is no way to reach attributes, builtins,
imports or the interpreter.  What can still cost time or memory at run time
is bounded: ``**`` on integers falls back to float arithmetic (which
overflows cleanly) past a few thousand bits, ``round`` takes at most 15
digits, and only numbers (never strings or lists) enter an expression.
Constant parts are folded at load, so ``9**9**9`` is refused there.

It lives in the sdk because the device model validates expressions (with
their line) and the processing stage runs them; both import it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FUNCTIONS", "Compiled", "EvalError", "ExprError", "compile_expr", "evaluate", "names_in"]

#: Longest expression text accepted; bounds parse time and tree depth.
MAX_TEXT = 1000
#: Deepest nesting of operations accepted (evaluation recurses once per level).
MAX_DEPTH = 40
#: An integer ``**`` whose result would exceed this many bits is done in floats.
MAX_INT_BITS = 4096

Env = Mapping[str, Any]
Node = Callable[[Env], Any]


class ExprError(ValueError):
    """The expression is not acceptable (found at load)."""


class EvalError(Exception):
    """A run-time failure; ``str`` is the reason a computed tag gets in ``bad``."""


def _pow(base: Any, exp: Any) -> Any:
    if (isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1
            and abs(base).bit_length() * exp > MAX_INT_BITS):
        # A float overflows at ~1e308 with an error instead of building a huge int.
        return float(base) ** exp
    result = base ** exp
    if isinstance(result, complex):
        raise EvalError("not a real number")
    return result


def _round(x: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(x)  # an integer, as in Python
    if not isinstance(digits, int) or abs(digits) > 15:
        raise EvalError("round: digits must be an integer from -15 to 15")
    return round(x, digits)


def _clamp(x: Any, low: Any, high: Any) -> Any:
    if low > high:
        raise EvalError("clamp: low is above high")
    return min(max(x, low), high)


def _log(x: Any, base: Any = math.e) -> float:
    return math.log(x, base)


#: name -> (function, fewest arguments, most arguments or None for any)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "abs": (abs, 1, 1),
    "min": (min, 2, None),
    "max": (max, 2, None),
    "round": (_round, 1, 2),  # round(x) or round(x, digits)
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),  # natural log, or log(x, base)
    "exp": (math.exp, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "clamp": (_clamp, 3, 3),  # clamp(x, low, high)
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}

# What the user wrote, in words, for the constructs most often tried.
_REFUSED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment (:=)",
    ast.Starred: "unpacking",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
}


def _refused(node: ast.AST) -> ExprError:
    what = _REFUSED.get(type(node))
    if what is None:
        what = type(node).__name__
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            what = f"operator {type(node.op).__name__}"
        elif isinstance(node, ast.Compare):
            what = "operator " + ", ".join(type(op).__name__ for op in node.ops)
    return ExprError(f"{what} not allowed (numbers, tag names, operators and "
                     f"{', '.join(FUNCTIONS)} only)")


def _tag_ref(node: ast.Call) -> str | None:
    """``tag("name")``: how a tag whose name is not an identifier is used."""
    if (isinstance(node.func, ast.Name) and node.func.id == "tag" and len(node.args) == 1
            and not node.keywords and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def _parse(text: str) -> ast.expr:
    if len(text) > MAX_TEXT:
        raise ExprError(f"longer than {MAX_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ExprError(f"syntax error: {err.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError("too deeply nested") from None
    # Evaluation recurses once per level: bound it here, not at run time.
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree.body


def names_in(text: str) -> list[str]:
    """The tag names an expression uses, in order of appearance; checks the syntax.

    Raises :class:`ExprError` for anything outside the whitelist.
    """
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id in FUNCTIONS or node.id == "tag":
                raise ExprError(f"{node.id!r} is a function; call it: {node.id}(...)")
            if node.id not in found:
                found.append(node.id)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                raise ExprError("text is only allowed in tag(\"name\")")
            if not isinstance(node.value, int | float) or isinstance(node.value, complex):
                raise ExprError(f"constant {node.value!r} not allowed")
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise _refused(node)
            visit(node.left)
            visit(node.right)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise _refused(node)
            visit(node.operand)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                visit(value)
        elif isinstance(node, ast.Compare):
            if any(type(op) not in _COMPARE for op in node.ops):
                raise _refused(node)
            visit(node.left)
            for comp in node.comparators:
                visit(comp)
        elif isinstance(node, ast.IfExp):
            visit(node.test)
            visit(node.body)
            visit(node.orelse)
        elif isinstance(node, ast.Call):
            ref = _tag_ref(node)
            if ref is not None:
                if ref not in found:
                    found.append(ref)
                return
            if not isinstance(node.func, ast.Name):
                raise _refused(node.func)  # (lambda: ...)(), f()(), obj.method()
            if node.func.id not in FUNCTIONS:
                raise ExprError(f"unknown function {node.func.id!r} "
                                f"(known: {', '.join(FUNCTIONS)})")
            for arg in node.args:
                visit(arg)
            if node.keywords:
                raise ExprError(f"{node.func.id}: keyword arguments not allowed")
            _, low, high = FUNCTIONS[node.func.id]
            if len(node.args) < low or (high is not None and len(node.args) > high):
                want = f"{low}" if low == high else f"{low} to {high}" if high else f"{low}+"
                noun = "argument" if want == "1" else "arguments"
                raise ExprError(f"{node.func.id} takes {want} {noun}, not {len(node.args)}")
        else:
            raise _refused(node)

    try:
        visit(_parse(text))
    except RecursionError:
        raise ExprError("too deeply nested") from None
    return found


@dataclass(frozen=True)
class Compiled:
    """A checked expression: ``run(env)`` with ``env`` mapping each of ``inputs`` to a number."""

    text: str
    inputs: tuple[str, ...]
    run: Node


def _const(value: Any) -> Node:
    def node(env: Env) -> Any:
        return value

    node.constant = value  # type: ignore[attr-defined]
    return node


def _name(name: str) -> Node:
    def node(env: Env) -> Any:
        return env[name]

    node.name = name  # type: ignore[attr-defined]
    return node


def _fold(node: Node, *parts: Node) -> Node:
    """Evaluate a node whose parts are all constant now, at load."""
    if not all(hasattr(p, "constant") for p in parts):
        return node
    try:
        value = node({})
    except (ArithmeticError, ValueError, TypeError, EvalError) as err:
        raise ExprError(f"constant part fails: {_reason(err)}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("constant part is not a finite number")
    return _const(value)


def _reason(err: BaseException) -> str:
    if isinstance(err, ZeroDivisionError):
        return "division by zero"
    if isinstance(err, OverflowError):
        return "overflow"
    return str(err) or type(err).__name__


def _binary(op: Callable[[Any, Any], Any], left: Node, right: Node) -> Node:
    # Leaves (a tag, a constant) are read inline: one call per operator
    # instead of three, which is most of the cost of a short expression.
    a, b = left.__dict__.get("name"), right.__dict__.get("name")
    if a is not None and b is not None:
        return lambda env: op(env[a], env[b])
    if a is not None and hasattr(right, "constant"):
        c = right.constant
        return lambda env: op(env[a], c)
    if b is not None and hasattr(left, "constant"):
        c = left.constant
        return lambda env: op(c, env[b])
    if hasattr(right, "constant"):
        c = right.constant
        return _fold(lambda env: op(left(env), c), left, right)
    if hasattr(left, "constant"):
        c = left.constant
        return lambda env: op(c, right(env))
    return lambda env: op(left(env), right(env))


def _build(node: ast.AST) -> Node:
    if isinstance(node, ast.Constant):
        return _const(node.value)
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.Call) and (ref := _tag_ref(node)) is not None:
        return _name(ref)
    if isinstance(node, ast.BinOp):
        return _binary(_BINARY[type(node.op)], _build(node.left), _build(node.right))
    if isinstance(node, ast.UnaryOp):
        op1 = _UNARY[type(node.op)]
        operand = _build(node.operand)
        return _fold(lambda env: op1(operand(env)), operand)
    if isinstance(node, ast.BoolOp):
        values = [_build(v) for v in node.values]
        if isinstance(node.op, ast.And):
            def all_of(env: Env) -> Any:
                result: Any = True
                for v in values:
                    result = v(env)
                    if not result:
                        return result
                return result
            return _fold(all_of, *values)

        def any_of(env: Env) -> Any:
            result: Any = False
            for v in values:
                result = v(env)
                if result:
                    return result
            return result
        return _fold(any_of, *values)
    if isinstance(node, ast.Compare):
        first = _build(node.left)
        pairs = [(_COMPARE[type(op)], _build(c))
                 for op, c in zip(node.ops, node.comparators, strict=True)]
        if len(pairs) == 1:
            return _binary(pairs[0][0], first, pairs[0][1])

        def chain(env: Env) -> bool:
            left = first(env)
            for cmp_, right_node in pairs:
                right = right_node(env)
                if not cmp_(left, right):
                    return False
                left = right
            return True
        return _fold(chain, first, *(p[1] for p in pairs))
    if isinstance(node, ast.IfExp):
        test, body, orelse = (_build(n) for n in (node.test, node.body, node.orelse))
        return _fold(lambda env: body(env) if test(env) else orelse(env), test, body, orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fn = FUNCTIONS[node.func.id][0]
        args = [_build(a) for a in node.args]
        if len(args) == 1:
            only = args[0]
            return _fold(lambda env: fn(only(env)), only)
        return _fold(lambda env: fn(*[a(env) for a in args]), *args)
    raise _refused(node)  # unreachable after names_in


def compile_expr(text: str) -> Compiled:
    """Check and compile ``text``; raises :class:`ExprError`.

    Whether the names exist is the caller's business (it knows the device).
    """
    inputs = names_in(text)
    try:
        run = _build(_parse(text))
    except RecursionError:
        raise ExprError("too deeply nested") from None
    return Compiled(text=text, inputs=tuple(inputs), run=run)


def evaluate(compiled: Compiled, env: Env) -> Any:
    """Run ``compiled``; every failure is an :class:`EvalError` with a reason."""
    try:
        value = compiled.run(env)
    except EvalError:
        raise
    except (ArithmeticError, ValueError, TypeError) as err:
        raise EvalError(_reason(err)) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError("not a finite number")
    return value
