"""slsec.catalog: the torch-free declaration of the registries, and the fast precheck.

The catalog must match the live registries exactly, and for every bad name the precheck must
raise the very message the full path (check_attack, check_defenses, prepare) raises, or none
where the full path accepts the config.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import slsec.attacks  # noqa: F401  (registration)
import slsec.defenses  # noqa: F401
import slsec.protocols  # noqa: F401
from slsec import catalog
from slsec.attacks.base import ATTACKS
from slsec.config import make_config, run_defaults
from slsec.data import DATASETS, load_dataset
from slsec.defenses.base import DEFENSES
from slsec.errors import UserError
from slsec.run.harness import DEFAULT_KNOWLEDGE, check_attack
from slsec.data.models import MODELS, build_model
from slsec.protocols.base import PROTOCOLS
from slsec.run.setup import check_defenses, prepare


def test_catalog_matches_the_live_registries():
    assert {n: (p.cuts_needed, p.labels_to_server) for n, p in PROTOCOLS} == catalog.PROTOCOLS
    live = {n: dict(roles=a.roles, methods=a.methods, default_order=a.default_order,
                    contenders=a.contenders, method_protocols=a.method_protocols)
            for n, a in ATTACKS}
    assert live == catalog.ATTACKS
    assert all(a.run_defaults == run_defaults(n) for n, a in ATTACKS)
    assert {n: list(a.methods) for n, a in ATTACKS} == \
        {n: list(a["methods"]) for n, a in catalog.ATTACKS.items()}   # listing order too
    assert {n: (d.point, d.protocols) for n, d in DEFENSES} == catalog.DEFENSES
    assert DATASETS.names() == sorted(catalog.DATASETS)
    assert DEFAULT_KNOWLEDGE == catalog.DEFAULT_KNOWLEDGE
    shapes = {"cnn": dict(input_shape=(1, 28, 28)), "resnet18": dict(input_shape=(3, 32, 32)),
              "gin": dict(num_features=7), "mlp": dict(num_features=8)}
    assert {n: tuple(build_model(n, num_classes=10, **shapes[n]).cut_points) for n, _ in MODELS} \
        == catalog.MODELS
    for name, n in catalog.EMBEDDED_TRAIN.items():
        assert len(load_dataset(name).train) == n
        assert (load_dataset(name).kind == "graph") == (name in catalog.GRAPH_DATASETS)


BAD = [
    "--protocol bogus", "--dataset nope", "--model nope", "--cut nope", "--cut2 fc1",
    "--protocol ushaped --cut fc1 --cut2 conv1", "--protocol ushaped --cut2 nope",
    "--defense nope", "--defense dpsgd", "--protocol fedavg --defense dp",
    "--defense dp,nope", "--defense nopeek,dpsgd --cut nope",
    "--attack nope", "--attack gradient-inversion", "--attack inversion --method nope",
    "--attack inversion --method decoder --knowledge architecture",
    "--attack inversion --knowledge bogus", "--attack inversion --knowledge architecture",
    "--attack label-inference --protocol vanilla --knowledge head_weights",
    "--attack label-inference --protocol ushaped --method completion --knowledge architecture",
    "--attack label-inference --protocol vanilla --method sdar",
    "--attack inversion --defense dp --sigma 1 --target-epsilon 2 --cut nope",
    "--protocol fedavg --defense dpsgd --noise-multiplier 1 --target-epsilon 2",
    "--defense label-rr --label-epsilon 0.5 --cut nope", "--defense dp --sigma 0.5 --cut nope",
    "--defense dp --target-epsilon 3 --cut nope",
    "--attack inversion --model gin --cut gin9", "--dataset mutag --cut nope",
    "--dataset mutag --aux-size 50 --cut nope",
    "--dataset mutag --aux-size 50 --clients 200 --cut nope",
    "--partition dirichlet --clients 400 --cut nope", "--partition dirichlet --cut nope",
    "--max-train 3 --clients 4 --cut nope", "--protocol fedavg --cut nope --max-train 64",
    "--protocol ushaped --model resnet18 --cut layer9", "--dataset tu:NOPE --protocol bogus",
    "--max-train 64", "--dataset foo:bar --cut nope", "--model my.py:make --cut nope",
]


def _full_path(cfg) -> str | None:
    """The message the training path raises first (None: it accepts the config)."""
    try:
        check_attack(cfg)
        check_defenses(cfg)
        prepare(cfg)
    except UserError as e:
        return str(e)
    return None


def _precheck(cfg) -> str | None:
    try:
        catalog.precheck(cfg)
    except UserError as e:
        return str(e)
    return None


@pytest.mark.parametrize("flags", BAD)
def test_precheck_says_what_the_full_path_says(flags, tmp_path):
    args = flags.split()
    cfg = make_config(dict(zip((a[2:] for a in args[::2]), args[1::2])) | {"out": str(tmp_path)})
    fast, full = _precheck(cfg), _full_path(cfg)
    # either the same message, or the precheck leaves it to the full path (never a wrong one)
    assert fast is None or fast == full, (fast, full)
    if full is None:
        assert fast is None


def test_precheck_catches_the_names():
    """Names the catalog decides are caught up front (not just left to the full path)."""
    for flags in ("--protocol bogus", "--cut nope", "--attack nope", "--defense nope",
                  "--attack inversion --method nope", "--dataset mutag --aux-size 50 --cut x"):
        args = flags.split()
        cfg = make_config(dict(zip((a[2:] for a in args[::2]), args[1::2])))
        assert _precheck(cfg) is not None, flags


@pytest.mark.parametrize("argv", [["list"], ["train", "--protocol", "bogus"],
                                  ["evaluate", "--attack", "inversion", "--cut", "nope"]])
def test_list_and_bad_names_do_not_import_torch(argv, tmp_path):
    code = ("import sys\nfrom slsec.cli import main\n"
            f"rc = main({argv + ['--out', str(tmp_path)] if argv != ['list'] else argv!r})\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('rc', rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == ("rc 0" if argv == ["list"] else "rc 2")
    if argv != ["list"]:
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
