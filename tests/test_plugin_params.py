"""Plug-ins own their parameters: a new defense in one file gets its CLI flag, TOML key, help
line, validation and `slsec list` entry with no edit anywhere else; every option of
`slsec evaluate --help` shows its type, its default and a help line."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TOY = '''
"""A toy defense: scales the smashed data by a public factor (no DP claim)."""
from slsec.defenses.base import DEFENSES, Defense
from slsec.params import Param


@DEFENSES.register("toy-scale")
class ToyScale(Defense):
    """Multiply the smashed data by a public factor."""

    name = "toy-scale"
    protocols = frozenset({"vanilla"})
    point = "cut"
    params = (Param("toy_factor", "float", 0.25, "toy: factor the smashed data is scaled by",
                    check=("positive",), unused="scales --defense toy-scale"),)

    def __init__(self, *, toy_factor: float = 0.25) -> None:
        self.factor = toy_factor

    def smashed(self, h, *, train, gen):
        return h * self.factor
'''

SCRIPT = '''
import contextlib, io, json, sys
from slsec.cli import main
from slsec.config import merged_config
from slsec.run.setup import build_defense

def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()

res = {}
res["help"] = run("evaluate", "--help")[1]
res["list"] = run("list")[1]
cfg = merged_config(sys.argv[1], {})
res["toml"] = [cfg.defense, cfg.toy_factor, build_defense(cfg).defenses[0].factor]
res["bad"] = run("train", "--defense", "toy-scale", "--toy-factor", "-1", "--out", sys.argv[2])
res["unused"] = run("train", "--toy-factor", "0.5", "--out", sys.argv[2])
res["protocol"] = run("train", "--protocol", "ushaped", "--defense", "toy-scale",
                      "--out", sys.argv[2])
res["train"] = run("train", "--defense", "toy-scale", "--toy-factor", "0.5", "--max-train",
                   "128", "--aux-size", "64", "--probe-size", "4", "--out", sys.argv[2],
                   "--json")
print(json.dumps(res))
'''


def test_a_toy_defense_in_one_file_gets_flag_toml_help_and_checks(tmp_path):
    import json
    plugin = tmp_path / "toy_scale.py"
    plugin.write_text(textwrap.dedent(TOY))
    toml = tmp_path / "toy.toml"
    toml.write_text('defense = ["toy-scale"]\ntoy_factor = 0.5\n')
    env = {**os.environ, "SLSEC_PLUGINS": str(plugin)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(toml), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    text = " ".join(res["help"].split())
    line = text[text.index("--toy-factor"):].split(" --")[0]   # the option's entry, unwrapped
    assert "FLOAT" in line and "toy: factor the smashed data is scaled by" in line
    assert "[default: 0.25]" in line
    assert "toy-scale" in res["list"]
    assert res["toml"] == [["toy-scale"], 0.5, 0.5]
    rc, _, err = res["bad"]
    assert rc == 2 and err == "error: --toy-factor must be a finite number > 0, got -1.0\n"
    rc, _, err = res["unused"]
    assert rc == 2 and "--toy-factor scales --defense toy-scale; it does not apply" in err
    rc, _, err = res["protocol"]
    assert rc == 2 and "defense 'toy-scale' does not apply to protocol 'ushaped'" in err
    rc, out, err = res["train"]
    assert rc == 0, err
    assert json.loads(out)["config"]["toy_factor"] == 0.5


def test_without_the_plugin_path_the_toy_is_unknown():
    from slsec.config import PARAMS
    assert "toy_factor" not in PARAMS


def test_every_evaluate_option_shows_type_default_and_help():
    import typer

    from slsec.cli import app
    cmd = typer.main.get_command(app).commands["evaluate"]   # type: ignore[attr-defined]
    for p in cmd.params:
        if p.name == "help":
            continue
        assert p.help and "[default: " in p.help, p.name
        assert p.is_flag or p.metavar, p.name       # a value's form: its type or choices
        assert p.help.split("[default:")[0].strip(), p.name


def test_each_plugin_declares_its_own_parameters():
    from slsec import plugins
    owners = {p.name: d.name for d in plugins.declarations() for p in d.params}
    assert owners["sigma"] == "dp" and owners["label_epsilon"] == "label-rr"
    assert owners["async_every"] == "splitfed-async" and owners["variant"] == "splitfed"
    assert owners["nopeek_weight"] == "nopeek" and owners["noise_multiplier"] == "dpsgd"


def test_a_parameter_shared_through_the_base_module_is_read_without_importing(tmp_path):
    """Two plug-ins may share one declaration kept in their package's base module: the source
    reader resolves the imported constant (dp and dpsgd share target_epsilon this way)."""
    from slsec import plugins
    path = tmp_path / "shared_param.py"
    path.write_text(textwrap.dedent('''
        from slsec.defenses.base import DEFENSES, TARGET_EPSILON as T, Defense

        @DEFENSES.register("toy-shared")
        class ToyShared(Defense):
            name = "toy-shared"
            protocols = frozenset({"vanilla"})
            point = "cut"
            params = (T,)
    '''))
    (declared,) = plugins.read_file(path)
    assert [p.name for p in declared.params] == ["target_epsilon"]
    assert declared.params[0].unused == "calibrates --defense dp or dpsgd"
    own = {d.name: [p.name for p in d.params] for d in plugins.declarations("defense")}
    assert "target_epsilon" in own["dp"] and "target_epsilon" in own["dpsgd"]


# a value each rule refuses (slsec.params.RULES), of the parameter's type
REFUSED = {"positive": -1.0, "non_negative": -1.0, "at_least_one": 0, "zero_or_more": -1,
           "positive_or_inf": 0.0, "below_one": 1.5, "at_most_one": 1.5, "unit_interval": 0.0,
           "at_most_1024": 2000, "at_most_32": 40}


def test_a_plugin_constructor_checks_a_parameter_by_its_declaration():
    """A declared parameter has one check, its Param's: a plug-in built directly in Python
    refuses a bad value with the very message (naming the flag) the config gives."""
    import inspect

    import slsec.attacks  # noqa: F401  (registration)
    import slsec.run.setup  # noqa: F401  (registers defenses)
    from slsec.attacks.base import ATTACKS
    from slsec.config import make_config
    from slsec.defenses.base import DEFENSES
    from slsec.errors import UserError
    checked = []
    for _, cls in [*DEFENSES, *ATTACKS]:
        keywords = inspect.signature(cls.__init__).parameters
        for p in cls.params:
            if p.keyword not in keywords or not (p.check or p.choices):
                continue
            bad = "bogus" if p.choices else REFUSED[p.check[0]]
            bad = int(bad) if p.type == "int" else bad
            with pytest.raises(UserError) as by_config:
                make_config({p.name: bad})
            with pytest.raises(UserError, match=".") as by_constructor:
                cls(**{p.keyword: bad})
                raise AssertionError(f"{cls.name}({p.keyword}={bad!r}) was accepted")
            assert str(by_constructor.value) == str(by_config.value), (cls.name, p.name)
            assert p.flag in str(by_config.value)
            checked.append(p.name)
    assert {"sigma", "clip", "mechanism", "compress_bits", "grad_keep", "splitguard_p_fake",
            "li_aux_labels", "nopeek_weight"} <= set(checked)
