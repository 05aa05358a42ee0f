"""The layering of the repo, read from the source (every import, function-level ones included).

Layers, lowest first (a module may import only from its own layer or below):

0. ``utils``, ``options``, ``dataset_registry`` torch-free base: files, errors, the flags, the
                                                dataset sources
1. ``layers``, ``losses``, ``diagnostics``       geometry, image ops, loss functions
2. ``networks.*``, ``datasets.*``                models (with the ModelSpec), data loading
3. ``checkpointing``                             every file of a run folder
4. ``evaluation.*``                              metrics and protocols as a library
5. ``srd``, ``training_log``                     the model's training step, reporting
6. ``trainer``                                   the loop
7. entry points: CLIs, the demo, benches, the synthetic-scene generator, split fetcher

Below the model/trainer boundary (networks, layers, losses, checkpointing, the evaluation library)
nothing reads the options object: no parameter named ``opt`` and no ``opt.<flag>``.
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".venv", "__pycache__", ".git", "tests", "runs", "synthetic_kitti", ".ci"}

LAYERS = [
    ("utils", "options", "dataset_registry"),
    ("layers", "losses", "diagnostics"),
    ("networks", "datasets"),
    ("checkpointing",),
    ("evaluation",),
    ("srd", "training_log"),
    ("trainer",),
]
NO_OPTIONS_BELOW_TRAINER = ("networks", "layers", "losses", "checkpointing", "evaluation")


def repo_modules():
    """{dotted module name: path} of every repo module outside tests/ and generated folders."""
    mods = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                mods[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return mods


def imports_of(path, mods):
    """Repo modules imported anywhere in ``path`` (absolute imports; ``from a import b`` counts as
    ``a.b`` when that is a module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in mods)
    return found


def layer_of(module):
    top = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    return len(LAYERS)  # entry points


def test_every_import_goes_to_the_same_or_a_lower_layer():
    mods = repo_modules()
    upward = [f"{m} (layer {layer_of(m)}) imports {dep} (layer {layer_of(dep)})"
              for m, path in sorted(mods.items()) for dep in sorted(imports_of(path, mods))
              if layer_of(dep) > layer_of(m)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    mods = repo_modules()
    graph = {m: imports_of(p, mods) - {m} for m, p in mods.items()}
    # a package's __init__ importing its own submodules is how packages are built, not a cycle
    # unless a submodule imports the package back (that edge is kept)
    for m in graph:
        graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_nothing_below_the_trainer_reads_the_options():
    mods = repo_modules()
    offenders = []
    for module, path in sorted(mods.items()):
        if module.split(".")[0] not in NO_OPTIONS_BELOW_TRAINER:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.arg) and node.arg == "opt":
                offenders.append(f"{module}:{node.lineno} parameter 'opt'")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "opt":
                offenders.append(f"{module}:{node.lineno} opt.{node.attr}")
    assert offenders == []


def test_the_layer_table_knows_every_package():
    """A new top-level module must be placed deliberately (entry points are the default)."""
    mods = repo_modules()
    libraries = {m.split(".")[0] for m in mods if layer_of(m) < len(LAYERS)}
    assert libraries == {name for names in LAYERS for name in names}
