"""The import rules docs/ARCHITECTURE.md states, checked on the modules' own imports (function-level
imports included), and the size limit of the analysis layer's functions."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hpc_es")
CORE = {"kernels", "layers", "nets", "es", "noise", "limited", "optim", "analysis", "stats", "drift"}
ANALYSIS = {"runs", "report", "claims", "paper_claims", "reproduction", "dose", "proxy_gap", "plots"}
MPI_SIDE = {"comm", "train", "steps", "experiments"}


def _tree(module):
    with open(os.path.join(PACKAGE, module + ".py")) as f:
        return ast.parse(f.read())


def _imports(module):
    """Top-level names imported anywhere in ``module``: hpc_es modules by their short name, others whole."""
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "hpc_es":
                found |= {a.name for a in node.names}
            elif node.module.startswith("hpc_es."):
                found.add(node.module.split(".")[1])
            else:
                found.add(node.module)
    return found


def _modules():
    return sorted(f[:-3] for f in os.listdir(PACKAGE) if f.endswith(".py") and not f.startswith("__"))


@pytest.mark.parametrize("module", _modules())
def test_only_comm_imports_mpi4py(module):
    if module != "comm":
        assert not any(name.split(".")[0] == "mpi4py" for name in _imports(module)), module


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_compute_core_knows_neither_the_analysis_layer_nor_mpi(module):
    assert not _imports(module) & (ANALYSIS | MPI_SIDE), module


@pytest.mark.parametrize("module", sorted(ANALYSIS))
def test_the_analysis_layer_does_not_reach_mpi_or_training(module):
    assert not _imports(module) & MPI_SIDE, module


@pytest.mark.parametrize("module", sorted(MPI_SIDE))
def test_training_and_the_experiments_do_not_import_the_analysis_layer(module):
    assert not _imports(module) & ANALYSIS, module


@pytest.mark.parametrize("module", sorted(ANALYSIS))
def test_no_function_of_the_analysis_layer_is_over_60_lines(module):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(_tree(module))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, f"{module}: {', '.join(long)}"
