"""mutation.py - mutation testing of the lab's own verdict code: does a test fail when the code is wrong?

For every mutable spot of a module (a comparison or boolean operator flipped,
a constant changed, a condition negated, a statement dropped), write the
mutant over the module, run the tests that cover it, and count the mutant
killed if they fail.  The module is restored after every mutant, whatever
happens.  Usage:

    python tools/mutation.py lab/checker.py -- tests/test_checker.py tests/test_models.py -k "not 50_seeds"

prints one line per surviving mutant and the kill rate.  Deterministic: the
mutants are taken in source order; --limit N takes every k-th to N.
"""
from __future__ import annotations

import argparse
import ast
import pathlib
import subprocess
import sys

_SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
         ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


def mutants(tree):
    """(description, mutate(tree) -> None) for every spot, in source order."""
    spots = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _SWAP:
                    spots.append((line, f"line {line}: {type(op).__name__} -> {_SWAP[type(op)].__name__}",
                                  (node, "cmp", i)))
        elif isinstance(node, ast.BoolOp):
            spots.append((line, f"line {line}: {type(node.op).__name__} -> the other", (node, "bool", None)))
        elif isinstance(node, ast.If):
            spots.append((line, f"line {line}: if condition negated", (node, "if", None)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            spots.append((line, f"line {line}: {node.value} -> {node.value + 1}", (node, "int", None)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            spots.append((line, f"line {line}: {node.value} -> {not node.value}", (node, "bool-const", None)))
        elif isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Return)) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            spots.append((line, f"line {line}: {type(node).__name__} statement dropped", (node, "drop", None)))
    spots.sort(key=lambda s: s[0])
    return [(desc, target) for _line, desc, target in spots]


def apply(tree, target):
    node, kind, i = target
    if kind == "cmp":
        node.ops[i] = _SWAP[type(node.ops[i])]()
    elif kind == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "if":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "int":
        node.value = node.value + 1
    elif kind == "bool-const":
        node.value = not node.value
    elif kind == "drop":
        for parent in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(parent, field, None)
                if isinstance(block, list) and node in block:
                    block[block.index(node)] = ast.Pass()
                    return


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module")
    p.add_argument("--limit", type=int, default=0, help="at most N mutants, spread over the module")
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after `--` goes to pytest as it is
    tests = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    path = pathlib.Path(args.module)
    source = path.read_text()
    spots = mutants(ast.parse(source))
    picked = list(range(len(spots)))
    if args.limit and len(picked) > args.limit:
        step = len(picked) / args.limit
        picked = [int(i * step) for i in range(args.limit)]
    killed, survived = 0, []
    baseline = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              capture_output=True, text=True)
    if baseline.returncode != 0:
        print(f"the tests fail on the unmutated {path}; fix them first:\n{baseline.stdout[-2000:]}")
        return 2
    try:
        for n in picked:
            tree = ast.parse(source)
            desc, target = mutants(tree)[n]
            apply(tree, target)
            try:
                path.write_text(ast.unparse(tree))
            except Exception:
                continue
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                killed += 1
            else:
                survived.append(desc)
                print(f"survived: {path}: {desc}", flush=True)
    finally:
        path.write_text(source)
    total = killed + len(survived)
    print(f"{path}: {killed} of {total} mutants killed ({100 * killed / max(total, 1):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
