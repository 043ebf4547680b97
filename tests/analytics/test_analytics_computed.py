"""Computed tags against a real Modbus server: every operator and function, every error path."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.load import ConfigErrors, parse_site
from agent.sdk.expressions import compile_expr, evaluate
from drivers.modbus.simserver import SimServer
from tests.analytics.helpers_analytics import HOLE, TAGS, rig, set_floats, set_ints

# a=7.5 b=2.0 c=-4.0 i=-3 j=4 (int16): hand-computed results.
CASES: list[tuple[str, Any]] = [
    ("a + b", 9.5),
    ("a - b", 5.5),
    ("a * b", 15.0),
    ("a / b", 3.75),
    ("a // b", 3.0),
    ("a % b", 1.5),
    ("a ** b", 56.25),
    ("j ** 2", 16),
    ("i // j", -1),
    ("i % j", 1),
    ("-a", -7.5),
    ("+c", -4.0),
    ("a > b", True),
    ("a < b", False),
    ("a >= 7.5", True),
    ("a <= 7", False),
    ("i == -3", True),
    ("i != -3", False),
    ("b < a < 10", True),
    ("a > b and c > 0", False),
    ("a > b or c > 0", True),
    ("not c > 0", True),
    ("a if c > 0 else b", 2.0),
    ("abs(c)", 4.0),
    ("min(a, b, c)", -4.0),
    ("max(a, b, j)", 7.5),
    ("round(a)", 8),
    ("round(a / 7, 2)", 1.07),
    ("sqrt(j)", 2.0),
    ("log(exp(b))", 2.0),
    ("log(8, b)", 3.0),
    ("exp(0 * a)", 1.0),
    ("floor(a)", 7),
    ("ceil(a)", 8),
    ("clamp(a, 0, 5)", 5),
    ("clamp(c, 0, 5)", 0),
    ("clamp(b, 0, 5)", 2.0),
    ("a * 1e3 / 1000", 7.5),
    ("tag('a') + 1", 8.5),
]


async def test_every_operator_and_function(server: SimServer) -> None:
    computed = [{"name": f"x{n}", "expr": expr} for n, (expr, _) in enumerate(CASES)]
    set_floats(server, a=7.5, b=2.0, c=-4.0)
    set_ints(server, i=-3, j=4)
    async with rig(server, computed=computed) as r:
        [sample] = await r.run()
    assert not sample.bad, sample.bad
    for n, (expr, want) in enumerate(CASES):
        got = sample.values[f"x{n}"]
        assert got == pytest.approx(want), f"{expr}: {got!r}"
        assert type(got) is type(want) or isinstance(want, float), f"{expr}: {got!r}"
    # The raw tags are untouched.
    assert sample.values["a"] == 7.5


async def test_computed_tags_use_each_other_in_any_order(server: SimServer) -> None:
    set_floats(server, a=230.0, b=4.0)
    computed = [
        {"name": "energy_rate", "expr": "power_kw * 3600", "unit": "kJ/h"},
        {"name": "power_kw", "expr": "a * b / 1000", "unit": "kW"},
    ]
    async with rig(server, computed=computed) as r:
        [sample] = await r.run()
    assert sample.values["power_kw"] == pytest.approx(0.92)
    assert sample.values["energy_rate"] == pytest.approx(3312.0)


async def test_run_time_errors_make_the_tag_bad_with_a_reason(server: SimServer) -> None:
    set_floats(server, a=1000.0, b=0.0, c=-1.0)
    set_ints(server, i=9, j=0)
    computed = [
        {"name": "div", "expr": "a / b"},
        {"name": "idiv", "expr": "i // j"},
        {"name": "mod", "expr": "i % j"},
        {"name": "inf", "expr": "a * 1e306"},
        {"name": "over", "expr": "exp(a)"},
        {"name": "domain", "expr": "sqrt(c)"},
        {"name": "logz", "expr": "log(b)"},
        {"name": "cplx", "expr": "c ** 0.5"},
        {"name": "dig", "expr": "round(a, i * 1000000)"},
        {"name": "clamp", "expr": "clamp(a, 5, c)"},
        {"name": "text", "expr": "s * 2"},
        {"name": "fine", "expr": "a + 1"},
    ]
    async with rig(server, [*TAGS], computed=computed) as r:
        [sample] = await r.run()
    assert sample.bad == {
        "div": "division by zero",
        "idiv": "division by zero",
        "mod": "division by zero",
        "inf": "not a finite number",
        "over": "overflow",
        "domain": "math domain error",
        "logz": "math domain error",
        "cplx": "not a real number",
        "dig": "round: digits must be an integer from -15 to 15",
        "clamp": "clamp: low is above high",
        "text": "input s: not a number",
    }
    assert all(sample.values[name] is None for name in sample.bad)
    assert sample.values["fine"] == 1001.0


async def test_bad_input_is_named_and_uncertain_input_carries_over(server: SimServer) -> None:
    set_floats(server, a=3.0, b=2.0)
    computed = [
        {"name": "from_hole", "expr": "a + hole"},
        {"name": "chained", "expr": "from_hole * 2"},
        {"name": "sum_ab", "expr": "a + b"},
    ]
    async with rig(server, [*TAGS, HOLE], computed=computed) as r:
        sample = await r.read()
        assert "hole" in sample.bad, "the server's map must make HR105 fail"
        sample.uncertain["b"] = "sensor drift"  # no Modbus reading is uncertain by itself
        [out] = r.chain.process([sample])
    assert out.bad["from_hole"] == f"input hole: {sample.bad['hole']}"
    assert out.bad["chained"].startswith("input from_hole: input hole:")
    assert out.values["sum_ab"] == 5.0
    assert out.uncertain["sum_ab"] == "input b: sensor drift"


async def test_push_samples_reuse_the_last_reading_of_missing_inputs(server: SimServer) -> None:
    set_floats(server, a=2.0, b=3.0)
    async with rig(server, computed=[{"name": "p", "expr": "a * b"}]) as r:
        await r.run()
        # An OPC UA-style change sample carries only the tag that changed.
        sample = await r.read()
        partial = type(sample)(ts=sample.ts, values={"a": 10.0})
        [out] = r.chain.process([partial])
    assert out.values["p"] == 30.0


def site_with(expr: str) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw", "site": "s"},
        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1883"}},
        "devices": [{"name": "d", "driver": "modbus",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 502},
                     "tags": [{"name": "a", "address": "HR0"}],
                     "computed": [{"name": "x", "expr": expr}]}],
    }, sort_keys=False)


HOSTILE = {
    "__import__('os').system('touch /tmp/pwned')": "attribute access not allowed",
    "__import__('os')": "unknown function '__import__'",
    "a.__class__.__mro__": "attribute access not allowed",
    "().__class__": "attribute access not allowed",
    "(lambda: 1)()": "lambda not allowed",
    "[x for x in (1, 2)]": "comprehensions not allowed",
    "max(x for x in (1, 2))": "comprehensions not allowed",
    "9**9**9": "constant part fails: overflow",
    "10 ** 400.0": "constant part fails: overflow",
    "eval('1')": "unknown function 'eval'",
    "open('/etc/passwd')": "unknown function 'open'",
    "a[0]": "subscripts not allowed",
    "(y := 3)": "assignment (:=) not allowed",
    "f'{a}'": "f-strings not allowed",
    "abs": "'abs' is a function",
    "max(*a)": "unpacking not allowed",
    "round(a, ndigits=2)": "round: keyword arguments not allowed",
    "'a' * 1000000000": "text is only allowed in tag(\"name\")",
    "a" + " + a" * 600: "longer than 1000 characters",
    "-" * 300 + "a": "nested deeper than 40 levels",
    "abs(" * 60 + "a" + ")" * 60: "nested deeper than 40 levels",
}


@pytest.mark.parametrize("expr", list(HOSTILE))
def test_hostile_expressions_are_refused_at_load(expr: str) -> None:
    with pytest.raises(ConfigErrors) as err:
        parse_site(site_with(expr), "site.yaml")
    [problem] = err.value.problems
    assert problem.path == "devices[0].computed[0].expr"
    lines = site_with(expr).splitlines()
    assert problem.line == 1 + next(n for n, t in enumerate(lines) if t.strip().startswith("expr:"))
    assert HOSTILE[expr] in problem.message, problem.message
    assert not Path("/tmp/pwned").exists()


def test_huge_powers_are_bounded_at_run_time() -> None:
    env: dict[str, int]
    for expr, env in [("a ** b", {"a": 9, "b": 9**9}), ("a ** b ** b", {"a": 9, "b": 9}),
                      ("a ** b", {"a": 2, "b": 10**6})]:
        compiled = compile_expr(expr)
        started = time.process_time()
        with pytest.raises(Exception, match="overflow"):
            evaluate(compiled, env)
        assert time.process_time() - started < 0.5, expr
    # Small integer powers stay exact integers.
    assert evaluate(compile_expr("a ** b"), {"a": 3, "b": 40}) == 3**40


def test_the_compiler_never_evaluates_text() -> None:
    source = Path(compile_expr.__code__.co_filename).read_text()
    for forbidden in ("eval(", "exec(", "compile(", "__import__", "getattr("):
        assert forbidden not in source.replace("compile_expr(", "").replace(
            "_eval(", ""), forbidden


def test_constant_parts_are_folded_at_load() -> None:
    compiled = compile_expr("a * (2 ** 10 + sqrt(16))")
    assert evaluate(compiled, {"a": 1}) == 1028.0
    assert math.isclose(evaluate(compile_expr("a / 3"), {"a": 1.0}), 1 / 3)
